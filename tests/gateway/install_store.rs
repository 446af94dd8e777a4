//! OAuth installs at rest: the embedded database keeps them across a gateway's restart,
//! sealed (no token readable in the file or in Redis), a missing or wrong key stops the
//! gateway at start with a clear error, and the compare-and-swap writes and refresh locks
//! hold between replicas sharing one real Redis.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hubgate::oauth::{
    open_installs, EmbeddedInstallStore, Install, InstallKey, InstallStatus, InstallStore, Secret,
    SecretKey, SharedInstallStore,
};
use hubgate::store::RedisSettings;
use hubgate::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::*;

const KEY: &str = "5a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccddeeff0";
const OTHER_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00ffeeddccbbaa9988776655443322110";
const REFRESH: &str = "storetest-refresh-7c6b5a49382716";
const ACCESS: &str = "storetest-access-1a2b3c4d5e6f70";

fn install(app_id: u64, hub_id: u64) -> Install {
    Install {
        key: InstallKey { app_id, hub_id },
        scopes: vec!["crm.objects.contacts.read".into(), "oauth".into()],
        status: InstallStatus::Active,
        refresh_token: Secret::new(format!("{REFRESH}-{hub_id}")),
        access_token: Some(Secret::new(format!("{ACCESS}-{hub_id}"))),
        access_expires_at_unix_ms: 1_800_000_000_000,
        updated_at_unix_ms: 1_700_000_000_000,
        version: 0,
    }
}

fn key(hex: &str) -> SecretKey {
    SecretKey::from_hex(hex).unwrap()
}

fn config_with(store_path: &Path, key_file: Option<&Path>) -> Config {
    let mut config = Config::default();
    config.upstream.base_url = "http://127.0.0.1:9".into();
    config.oauth.store_path = store_path.display().to_string();
    config.oauth.key_file = key_file
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    config
}

/// Runs a gateway from `config` on fresh loopback listeners: `Err` with its start-up
/// error when it refuses to start, else its task once it answers `/healthz`.
async fn start(
    config: Config,
) -> Result<
    (
        tokio::task::JoinHandle<anyhow::Result<()>>,
        tokio::sync::oneshot::Sender<()>,
    ),
    String,
> {
    let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let listeners = hubgate::Listeners { proxy, admin };
    let task = tokio::spawn(hubgate::run(config, listeners, async move {
        let _ = stopped.await;
    }));
    wait_until(
        "the gateway starts or refuses to",
        Duration::from_secs(20),
        || {
            let finished = task.is_finished();
            async move { finished || healthy(admin_addr).await }
        },
    )
    .await;
    if task.is_finished() {
        let outcome = task.await.unwrap();
        return Err(format!(
            "{:#}",
            outcome.expect_err("a gateway that stopped by itself failed")
        ));
    }
    Ok((task, stop))
}

/// Whether `/healthz` answers 200 within a second (a refused or reset connection: no).
async fn healthy(admin: std::net::SocketAddr) -> bool {
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
        let request = b"GET /healthz HTTP/1.1\r\nhost: hubgate\r\nconnection: close\r\n\r\n";
        stream.write_all(request).await.ok()?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.ok()?;
        Some(answer.starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(1), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in [REFRESH, ACCESS, KEY, OTHER_KEY] {
        assert!(!text.contains(secret), "{what} holds a secret: {text}");
    }
}

#[tokio::test]
async fn installs_survive_a_gateway_restart_sealed_and_refuse_a_missing_or_wrong_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("installs.redb");
    let key_file = dir.path().join("secret.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let wrong_key_file = dir.path().join("other.key");
    std::fs::write(&wrong_key_file, OTHER_KEY).unwrap();

    // First life: the gateway opens (and creates) the database; installs are written into
    // the store it opened, as the broker would.
    let config = config_with(&db, Some(&key_file));
    let opened = open_installs(&config, false, |_| None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((opened.kind, opened.count), ("embedded", 0));
    for hub in [101, 102, 103] {
        assert!(opened.store.put_if(install(7, hub), None).await.unwrap());
    }
    let current = opened
        .store
        .get(InstallKey {
            app_id: 7,
            hub_id: 102,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(current.version, 1);
    let mut refreshed = current.clone();
    refreshed.access_token = Some(Secret::new(format!("{ACCESS}-second")));
    assert!(opened
        .store
        .put_if(refreshed.clone(), Some(1))
        .await
        .unwrap());
    // A second writer that read version 1 too loses, and its write is not kept.
    assert!(!opened.store.put_if(current, Some(1)).await.unwrap());
    // 16 writers that all read version 2 race on the database's one write transaction.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let store = opened.store.clone();
            let mut mine = refreshed.clone();
            mine.refresh_token = Secret::new(format!("{REFRESH}-racer-{i}"));
            tokio::spawn(async move { store.put_if(mine, Some(2)).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    println!("embedded compare-and-swap: {winners} of 16 racers on version 2 wrote");
    assert_eq!(winners, 1);
    drop(opened);

    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&db).unwrap().permissions());
    assert_eq!(
        mode & 0o077,
        0,
        "the database file is open to others: {mode:o}"
    );
    let raw = String::from_utf8_lossy(&std::fs::read(&db).unwrap()).into_owned();
    assert_no_secret("the database file", &raw);
    assert!(
        !raw.contains("storetest"),
        "a token prefix is readable in the file"
    );

    // The gateway itself: with the key it starts on the file; a second gateway on the same
    // file is refused while the first holds it.
    let (task, stop) = start(config_with(&db, Some(&key_file)))
        .await
        .expect("starts with its key");
    let busy = start(config_with(&db, Some(&key_file)))
        .await
        .expect_err("the file is held");
    assert!(busy.contains("already open in another hubgate"), "{busy}");
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();

    // Restart: every install is back as written, tokens and all.
    let reopened = EmbeddedInstallStore::open(&db, key(KEY)).unwrap();
    let all = reopened.list().await.unwrap();
    let hubs: Vec<u64> = all.iter().map(|i| i.key.hub_id).collect();
    assert_eq!(hubs, [101, 102, 103]);
    let second = all.iter().find(|i| i.key.hub_id == 102).unwrap();
    assert_eq!(second.version, 3);
    assert_eq!(
        second.access_token.as_ref().unwrap().expose(),
        format!("{ACCESS}-second")
    );
    assert!(second
        .refresh_token
        .expose()
        .starts_with(&format!("{REFRESH}-racer-")));
    assert_eq!(second.scopes, install(7, 102).scopes);
    drop(reopened);

    // No key, with installs stored: the gateway does not start, and says what to set.
    let missing = start(config_with(&db, None))
        .await
        .expect_err("no key, installs stored");
    assert!(missing.contains("3 OAuth installs are stored"), "{missing}");
    assert!(missing.contains("HUBGATE_SECRET_KEY"), "{missing}");
    assert_no_secret("the no-key error", &missing);

    // A wrong key is named as such: nothing is decrypted into garbage.
    let wrong = start(config_with(&db, Some(&wrong_key_file)))
        .await
        .expect_err("wrong key");
    assert!(
        wrong.contains("is not the one its installs were written with"),
        "{wrong}"
    );
    assert_no_secret("the wrong-key error", &wrong);
    println!(
        "restart: {} of 3 installs read back after the gateway's restart; no key and a wrong key: refused at start",
        hubs.len()
    );
}

#[tokio::test]
async fn replicas_sharing_redis_swap_and_lock_one_install_at_a_time() {
    let redis = RedisServer::start();
    let store_config = hubgate::config::StoreConfig {
        kind: "redis".into(),
        redis_url: redis.url(),
        command_timeout_ms: 2_000,
        ..Default::default()
    };
    let settings = RedisSettings::from_config(&store_config);
    let replicas: Vec<Arc<SharedInstallStore>> = vec![
        Arc::new(SharedInstallStore::open(&settings, key(KEY)).await.unwrap()),
        Arc::new(SharedInstallStore::open(&settings, key(KEY)).await.unwrap()),
    ];
    let wrong = SharedInstallStore::open(&settings, key(OTHER_KEY))
        .await
        .unwrap_err();
    let wrong = format!("{wrong:#}");
    assert!(wrong.contains("another secret key"), "{wrong}");
    assert_no_secret("the wrong-key error", &wrong);

    let target = InstallKey {
        app_id: 7,
        hub_id: 555,
    };
    assert!(replicas[0].put_if(install(7, 555), None).await.unwrap());
    assert!(
        !replicas[1].put_if(install(7, 555), None).await.unwrap(),
        "created twice"
    );
    let seen = replicas[1].get(target).await.unwrap().unwrap();
    assert_eq!(seen.refresh_token.expose(), format!("{REFRESH}-555"));

    // 16 contenders per replica race for one install's lock, as refreshes would.
    let contenders: Vec<_> = (0..32)
        .map(|i| {
            let store = replicas[i % 2].clone();
            tokio::spawn(async move {
                store
                    .try_lock(target, Duration::from_secs(30))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut tokens = Vec::new();
    for contender in contenders {
        tokens.extend(contender.await.unwrap());
    }
    println!(
        "lock: {} of 32 contenders on 2 replicas held it",
        tokens.len()
    );
    assert_eq!(tokens.len(), 1);
    let token = tokens.pop().unwrap();

    // The holder swaps the install in; a racer that read the same version loses.
    let mut rotated = seen.clone();
    rotated.refresh_token = Secret::new(format!("{REFRESH}-rotated"));
    assert!(replicas[0]
        .put_if(rotated, Some(seen.version))
        .await
        .unwrap());
    assert!(!replicas[1]
        .put_if(seen.clone(), Some(seen.version))
        .await
        .unwrap());
    // 16 writers on both replicas, all having read version 2.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let store = replicas[i % 2].clone();
            let mut mine = seen.clone();
            mine.refresh_token = Secret::new(format!("{REFRESH}-racer-{i}"));
            tokio::spawn(async move { store.put_if(mine, Some(2)).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for racer in racers {
        winners += usize::from(racer.await.unwrap());
    }
    println!("redis compare-and-swap: {winners} of 16 racers on version 2 wrote");
    assert_eq!(winners, 1);
    let after = replicas[1].get(target).await.unwrap().unwrap();
    assert_eq!(after.version, 3);
    assert!(after
        .refresh_token
        .expose()
        .starts_with(&format!("{REFRESH}-racer-")));

    replicas[1].unlock(target, token).await.unwrap();
    let short = replicas[1]
        .try_lock(target, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(short.is_some(), "released, the lock is free again");
    assert!(replicas[0]
        .try_lock(target, Duration::from_secs(30))
        .await
        .unwrap()
        .is_none());
    // Its holder died without unlocking: the lock frees itself after its ttl.
    wait_until("the lock expires", Duration::from_secs(10), || {
        let store = replicas[0].clone();
        async move {
            store
                .try_lock(target, Duration::from_secs(30))
                .await
                .unwrap()
                .is_some()
        }
    })
    .await;

    for hub in [556, 557] {
        assert!(replicas[1].put_if(install(7, hub), None).await.unwrap());
    }
    let listed: Vec<u64> = replicas[0]
        .list()
        .await
        .unwrap()
        .iter()
        .map(|i| i.key.hub_id)
        .collect();
    assert_eq!(listed, [555, 556, 557]);
    replicas[0]
        .delete(InstallKey {
            app_id: 7,
            hub_id: 556,
        })
        .await
        .unwrap();
    assert_eq!(replicas[1].list().await.unwrap().len(), 2);

    // What Redis holds is sealed: no token in any value.
    let keys = redis.command(&["KEYS", "*"]).unwrap();
    for name in keys.lines().filter(|l| l.starts_with("hubgate")) {
        let value = redis
            .command(&["HGETALL", name])
            .or_else(|| redis.command(&["GET", name]));
        assert_no_secret(name, &value.unwrap_or_default());
        assert!(
            !value_contains(&redis, name, "storetest"),
            "{name} is readable"
        );
    }

    // A gateway on this Redis with no key refuses while installs are stored there.
    let mut config = Config::default();
    config.upstream.base_url = "http://127.0.0.1:9".into();
    config.store = store_config;
    let refused = start(config).await.expect_err("installs in Redis, no key");
    assert!(
        refused.contains("2 OAuth installs are stored (in Redis"),
        "{refused}"
    );
}

fn value_contains(redis: &RedisServer, name: &str, text: &str) -> bool {
    redis
        .command(&["HGETALL", name])
        .is_some_and(|value| value.contains(text))
}
