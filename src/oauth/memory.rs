//! Installs in this process's memory (tests, and the lock table the embedded store shares).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::install::{Install, InstallKey, InstallStore, LockToken};
use crate::store::StoreFuture;

/// Installs in memory, gone when the process ends.
#[derive(Debug, Default)]
pub struct MemoryInstallStore {
    installs: Mutex<BTreeMap<InstallKey, Install>>,
    locks: LockTable,
}

impl MemoryInstallStore {
    pub fn new() -> MemoryInstallStore {
        MemoryInstallStore::default()
    }

    fn installs(&self) -> MutexGuard<'_, BTreeMap<InstallKey, Install>> {
        // Each write replaces a whole entry, so a panic elsewhere cannot leave one half-made.
        self.installs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl InstallStore for MemoryInstallStore {
    fn get(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<Option<Install>>> {
        let found = self.installs().get(&key).cloned();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn list(&self) -> StoreFuture<'_, anyhow::Result<Vec<Install>>> {
        let all = self.installs().values().cloned().collect();
        Box::pin(std::future::ready(Ok(all)))
    }

    fn put_if(
        &self,
        mut install: Install,
        expected: Option<u64>,
    ) -> StoreFuture<'_, anyhow::Result<bool>> {
        let mut installs = self.installs();
        let stored = installs.get(&install.key).map(|held| held.version);
        let written = stored == expected;
        if written {
            install.version = expected.map_or(1, |v| v + 1);
            installs.insert(install.key, install);
        }
        Box::pin(std::future::ready(Ok(written)))
    }

    fn delete(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<()>> {
        self.installs().remove(&key);
        Box::pin(std::future::ready(Ok(())))
    }

    fn try_lock(
        &self,
        key: InstallKey,
        ttl: Duration,
    ) -> StoreFuture<'_, anyhow::Result<Option<LockToken>>> {
        Box::pin(std::future::ready(Ok(self.locks.try_lock(key, ttl))))
    }

    fn unlock(&self, key: InstallKey, token: LockToken) -> StoreFuture<'_, anyhow::Result<()>> {
        self.locks.unlock(key, &token);
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Per-install locks of one process, each expiring on its own so a holder that died
/// (a panicked task) blocks its install for `ttl` at most.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    held: Mutex<HashMap<InstallKey, (LockToken, Instant)>>,
}

impl LockTable {
    fn held(&self) -> MutexGuard<'_, HashMap<InstallKey, (LockToken, Instant)>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn try_lock(&self, key: InstallKey, ttl: Duration) -> Option<LockToken> {
        let now = Instant::now();
        let mut held = self.held();
        if held.get(&key).is_some_and(|(_, until)| *until > now) {
            return None;
        }
        // Drop other expired entries now and then so the table cannot grow with old keys.
        held.retain(|_, (_, until)| *until > now);
        let token = LockToken::random();
        held.insert(key, (token.clone(), now + ttl));
        Some(token)
    }

    pub(crate) fn unlock(&self, key: InstallKey, token: &LockToken) {
        let mut held = self.held();
        if held.get(&key).is_some_and(|(ours, _)| ours == token) {
            held.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::{InstallStatus, Secret};

    fn install(hub_id: u64) -> Install {
        Install {
            key: InstallKey { app_id: 1, hub_id },
            scopes: Vec::new(),
            status: InstallStatus::Active,
            refresh_token: Secret::new("r"),
            access_token: None,
            access_expires_at_unix_ms: 0,
            updated_at_unix_ms: 0,
            version: 99,
        }
    }

    #[tokio::test]
    async fn writes_swap_on_the_version_they_read() {
        let store = MemoryInstallStore::new();
        assert!(store.put_if(install(5), None).await.unwrap());
        assert!(!store.put_if(install(5), None).await.unwrap());
        let stored = store.get(install(5).key).await.unwrap().unwrap();
        assert_eq!(stored.version, 1);
        assert!(store.put_if(install(5), Some(1)).await.unwrap());
        assert!(!store.put_if(install(5), Some(1)).await.unwrap());
        store.delete(install(5).key).await.unwrap();
        assert!(store.list().await.unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_is_held_once_until_released_or_expired() {
        let store = MemoryInstallStore::new();
        let key = install(5).key;
        let ttl = Duration::from_secs(10);
        let token = store.try_lock(key, ttl).await.unwrap().unwrap();
        assert!(store.try_lock(key, ttl).await.unwrap().is_none());
        store.unlock(key, LockToken::random()).await.unwrap();
        assert!(
            store.try_lock(key, ttl).await.unwrap().is_none(),
            "not our token"
        );
        store.unlock(key, token).await.unwrap();
        let _expiring = store.try_lock(key, ttl).await.unwrap().unwrap();
        tokio::time::advance(ttl + Duration::from_millis(1)).await;
        assert!(store.try_lock(key, ttl).await.unwrap().is_some());
    }
}
