//! Installs in Redis (`[store] kind = "redis"` or `"redis-cluster"`), shared by every replica: one hash per
//! install (version and sealed record), compare-and-swap and lock release in Lua, and
//! the refresh lock as `SET NX PX` with a random token.

use std::time::Duration;

use redis::{AsyncCommands, Script};

use super::install::{Install, InstallKey, InstallStore, LockToken};
use super::record;
use super::seal::SecretKey;
use crate::store::{Link, RedisSettings, StoreFuture};

/// Writes ARGV[2] (new version) and ARGV[3] (sealed record) if the stored version is
/// ARGV[1] ("" meaning: only if there is no install). 1 when written.
const PUT_IF: &str = r#"
local stored = redis.call('HGET', KEYS[1], 'v')
if ARGV[1] == '' then
  if stored then return 0 end
elseif stored ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'blob', ARGV[3])
return 1
"#;

/// Deletes the lock only if it still holds our token, so an expired holder cannot free
/// the next holder's lock.
const UNLOCK: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"#;

/// Installs in Redis under `[store] key_prefix`, sealed with the key.
pub struct SharedInstallStore {
    conn: Link,
    key: SecretKey,
    prefix: String,
    command_timeout: Duration,
    put_if: Script,
    unlock: Script,
}

impl std::fmt::Debug for SharedInstallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedInstallStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Every install key of one prefix shares the `{oauth}` hash tag, so a Redis Cluster keeps
/// them in one slot and the listing is one SCAN.
fn install_key(prefix: &str, key: InstallKey) -> String {
    format!("{prefix}:{{oauth}}:install:{}:{}", key.app_id, key.hub_id)
}

fn lock_key(prefix: &str, key: InstallKey) -> String {
    format!("{prefix}:{{oauth}}:lock:{}:{}", key.app_id, key.hub_id)
}

fn canary_key(prefix: &str) -> String {
    format!("{prefix}:{{oauth}}:canary")
}

/// The install a key names, from its text.
fn parse_install_key(prefix: &str, name: &str) -> Option<InstallKey> {
    let rest = name
        .strip_prefix(prefix)?
        .strip_prefix(":{oauth}:install:")?;
    let (app, hub) = rest.split_once(':')?;
    Some(InstallKey {
        app_id: app.parse().ok()?,
        hub_id: hub.parse().ok()?,
    })
}

impl SharedInstallStore {
    /// Connects and checks the key against the canary the first writer left (writing it
    /// if there is none): a replica with another key refuses to start.
    pub async fn open(settings: &RedisSettings, key: SecretKey) -> anyhow::Result<Self> {
        let store = SharedInstallStore {
            conn: settings.connection()?,
            key,
            prefix: settings.key_prefix.clone(),
            command_timeout: settings.command_timeout,
            put_if: Script::new(PUT_IF),
            unlock: Script::new(UNLOCK),
        };
        let canary = canary_key(&store.prefix);
        let mut conn = store.conn.clone();
        // SET NX: of two replicas starting at once with different keys, one loses here.
        let fresh = store.key.canary();
        let _: Option<String> = store
            .bounded(
                redis::cmd("SET")
                    .arg(&canary)
                    .arg(&fresh)
                    .arg("NX")
                    .query_async(&mut conn),
            )
            .await?;
        let stored: Option<Vec<u8>> = store.bounded(conn.get(&canary)).await?;
        if !stored.is_some_and(|blob| store.key.opens_canary(&blob)) {
            anyhow::bail!(
                "the OAuth installs in Redis (key prefix '{}') were written with another secret key than HUBGATE_SECRET_KEY or [oauth] key_file; give every replica the same key",
                store.prefix
            );
        }
        Ok(store)
    }

    /// How many installs Redis holds under `settings.key_prefix`, read without a key.
    pub async fn count_at(settings: &RedisSettings) -> anyhow::Result<usize> {
        let conn = settings.connection()?;
        let names = scan(conn, &settings.key_prefix, settings.command_timeout).await?;
        Ok(names.len())
    }

    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> anyhow::Result<T> {
        bounded(self.command_timeout, call).await
    }

    fn decode(
        &self,
        key: InstallKey,
        version: Option<String>,
        blob: Option<Vec<u8>>,
    ) -> anyhow::Result<Option<Install>> {
        let (Some(version), Some(blob)) = (version, blob) else {
            return Ok(None);
        };
        let version = version
            .parse()
            .map_err(|_| anyhow::anyhow!("the stored install {key} has no usable version"))?;
        record::open(&self.key, key, version, &blob).map(Some)
    }

    async fn read(&self, key: InstallKey) -> anyhow::Result<Option<Install>> {
        let mut conn = self.conn.clone();
        let (version, blob): (Option<String>, Option<Vec<u8>>) = self
            .bounded(
                redis::cmd("HMGET")
                    .arg(install_key(&self.prefix, key))
                    .arg("v")
                    .arg("blob")
                    .query_async(&mut conn),
            )
            .await?;
        self.decode(key, version, blob)
    }
}

/// `call`, or an error naming Redis once `limit` passes.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(anyhow::anyhow!("Redis refused an install command: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "Redis did not answer an install command within {} ms",
            limit.as_millis()
        )),
    }
}

/// Every install key under `prefix`, in key order.
async fn scan(mut conn: Link, prefix: &str, limit: Duration) -> anyhow::Result<Vec<InstallKey>> {
    let pattern = format!("{prefix}:{{oauth}}:install:*");
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let mut command = redis::cmd("SCAN");
        command
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500);
        // In a cluster the `{oauth}` slot's node alone holds installs; a keyless SCAN
        // would land on any node.
        let (next, names): (u64, Vec<String>) =
            bounded(limit, conn.query_on_node_of(&command, &pattern)).await?;
        keys.extend(names.iter().filter_map(|n| parse_install_key(prefix, n)));
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

impl InstallStore for SharedInstallStore {
    fn get(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<Option<Install>>> {
        Box::pin(self.read(key))
    }

    fn list(&self) -> StoreFuture<'_, anyhow::Result<Vec<Install>>> {
        Box::pin(async move {
            let keys = scan(self.conn.clone(), &self.prefix, self.command_timeout).await?;
            let mut all = Vec::with_capacity(keys.len());
            for key in keys {
                // Deleted between the SCAN and this read: not an install any more.
                if let Some(install) = self.read(key).await? {
                    all.push(install);
                }
            }
            Ok(all)
        })
    }

    fn put_if(
        &self,
        install: Install,
        expected: Option<u64>,
    ) -> StoreFuture<'_, anyhow::Result<bool>> {
        Box::pin(async move {
            let blob = record::seal(&self.key, &install);
            let mut invocation = self.put_if.prepare_invoke();
            invocation
                .key(install_key(&self.prefix, install.key))
                .arg(expected.map_or_else(String::new, |v| v.to_string()))
                .arg(expected.map_or(1, |v| v + 1))
                .arg(blob);
            let mut conn = self.conn.clone();
            let written: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
            Ok(written == 1)
        })
    }

    fn delete(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            let _: i64 = self
                .bounded(conn.del(install_key(&self.prefix, key)))
                .await?;
            Ok(())
        })
    }

    fn try_lock(
        &self,
        key: InstallKey,
        ttl: Duration,
    ) -> StoreFuture<'_, anyhow::Result<Option<LockToken>>> {
        Box::pin(async move {
            let token = LockToken::random();
            let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let mut conn = self.conn.clone();
            let taken: Option<String> = self
                .bounded(
                    redis::cmd("SET")
                        .arg(lock_key(&self.prefix, key))
                        .arg(token.0.to_string())
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(taken.map(|_| token))
        })
    }

    fn unlock(&self, key: InstallKey, token: LockToken) -> StoreFuture<'_, anyhow::Result<()>> {
        Box::pin(async move {
            let mut invocation = self.unlock.prepare_invoke();
            invocation
                .key(lock_key(&self.prefix, key))
                .arg(token.0.to_string());
            let mut conn = self.conn.clone();
            let _: i64 = self.bounded(invocation.invoke_async(&mut conn)).await?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_keys_read_back_as_the_installs_they_name() {
        let key = InstallKey {
            app_id: 7,
            hub_id: 123_456,
        };
        let name = install_key("hubgate", key);
        assert_eq!(parse_install_key("hubgate", &name), Some(key));
        assert_eq!(parse_install_key("other", &name), None);
        assert_eq!(
            parse_install_key("hubgate", "hubgate:{oauth}:lock:7:1"),
            None
        );
    }
}
