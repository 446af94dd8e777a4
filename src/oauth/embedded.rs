//! Installs in an embedded database (redb) at `[oauth] store_path`: one file, kept across
//! restarts, each commit made durable before a write answers; records sealed with the key.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use redb::{
    Database, DatabaseError, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::install::{Install, InstallKey, InstallStore, LockToken};
use super::memory::LockTable;
use super::record;
use super::seal::SecretKey;
use crate::store::StoreFuture;

/// `(app_id, hub_id)` → 8 bytes of version (big-endian), then the sealed record.
const INSTALLS: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("installs");
/// "canary" → a blob sealed with the key the installs are written with.
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const CANARY_ROW: &str = "canary";

/// Installs in one redb file. The file admits one process at a time (redb locks it), so
/// the lock table of this process is every lock there is.
#[derive(Clone)]
pub struct EmbeddedInstallStore {
    db: Arc<Database>,
    key: SecretKey,
    path: PathBuf,
    locks: Arc<LockTable>,
}

impl std::fmt::Debug for EmbeddedInstallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedInstallStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn opening_error(path: &Path, error: DatabaseError) -> anyhow::Error {
    match error {
        DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
            "[oauth] store_path '{}' is already open in another hubgate; each needs a file of its own, and replicas share installs with [store] kind = \"redis\"",
            path.display()
        ),
        other => anyhow::anyhow!(
            "[oauth] store_path '{}' cannot be opened as an install database: {other}",
            path.display()
        ),
    }
}

impl EmbeddedInstallStore {
    /// Opens (or creates) the database at `path`. Refuses a key other than the one its
    /// installs were written with, before anything is read or written.
    pub fn open(path: &Path, key: SecretKey) -> anyhow::Result<EmbeddedInstallStore> {
        create_private(path)?;
        let db = Database::create(path).map_err(|e| opening_error(path, e))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let canary = meta.get(CANARY_ROW)?.map(|blob| blob.value().to_vec());
            match canary {
                Some(blob) if !key.opens_canary(&blob) => anyhow::bail!(
                    "[oauth] store_path '{}': the secret key (HUBGATE_SECRET_KEY or [oauth] key_file) is not the one its installs were written with; set that key, or move the file away to start with no installs",
                    path.display()
                ),
                Some(_) => {}
                None => {
                    meta.insert(CANARY_ROW, key.canary().as_slice())?;
                }
            }
            txn.open_table(INSTALLS)?;
        }
        txn.commit()?;
        Ok(EmbeddedInstallStore {
            db: Arc::new(db),
            key,
            path: path.to_path_buf(),
            locks: Arc::new(LockTable::default()),
        })
    }

    /// How many installs the file at `path` holds, read without a key (0 when there is no
    /// file): what start-up checks before refusing to run with installs and no key.
    pub fn count_at(path: &Path) -> anyhow::Result<usize> {
        if !path.exists() {
            return Ok(0);
        }
        let db = Database::create(path).map_err(|e| opening_error(path, e))?;
        let txn = db.begin_read()?;
        match txn.open_table(INSTALLS) {
            Ok(table) => Ok(usize::try_from(table.len()?).unwrap_or(usize::MAX)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `work` on the blocking pool: redb's commits wait for the disk.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EmbeddedInstallStore) -> anyhow::Result<T> + Send + 'static,
    ) -> StoreFuture<'static, anyhow::Result<T>> {
        let store = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&store))
                .await
                .map_err(|e| anyhow::anyhow!("the install database task failed: {e}"))?
        })
    }

    fn decode(&self, key: (u64, u64), row: &[u8]) -> anyhow::Result<Install> {
        let key = InstallKey {
            app_id: key.0,
            hub_id: key.1,
        };
        let (version, blob) = split_row(row)
            .ok_or_else(|| anyhow::anyhow!("the stored install {key} is truncated"))?;
        record::open(&self.key, key, version, blob)
    }
}

/// Creates the file, if there is none, readable by its owner alone: its records are
/// sealed, but which installs exist (app and hub ids) is not for every local user.
fn create_private(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "[oauth] store_path '{}' cannot be created: {e}",
            path.display()
        )),
    }
}

fn split_row(row: &[u8]) -> Option<(u64, &[u8])> {
    let (version, blob) = row.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*version), blob))
}

impl InstallStore for EmbeddedInstallStore {
    fn get(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<Option<Install>>> {
        self.blocking(move |store| {
            let txn = store.db.begin_read()?;
            let table = txn.open_table(INSTALLS)?;
            let row = table.get((key.app_id, key.hub_id))?;
            row.map(|row| store.decode((key.app_id, key.hub_id), row.value()))
                .transpose()
        })
    }

    fn list(&self) -> StoreFuture<'_, anyhow::Result<Vec<Install>>> {
        self.blocking(|store| {
            let txn = store.db.begin_read()?;
            let table = txn.open_table(INSTALLS)?;
            let mut all = Vec::new();
            for entry in table.iter()? {
                let (key, row) = entry?;
                all.push(store.decode(key.value(), row.value())?);
            }
            Ok(all)
        })
    }

    fn put_if(
        &self,
        install: Install,
        expected: Option<u64>,
    ) -> StoreFuture<'_, anyhow::Result<bool>> {
        self.blocking(move |store| {
            // One write transaction at a time: the version read here cannot change before
            // this commit, which is what makes the comparison a compare-and-swap.
            let txn = store.db.begin_write()?;
            let written = {
                let mut table = txn.open_table(INSTALLS)?;
                let id = (install.key.app_id, install.key.hub_id);
                let stored = match table.get(id)? {
                    Some(row) => Some(
                        split_row(row.value())
                            .ok_or_else(|| {
                                anyhow::anyhow!("the stored install {} is truncated", install.key)
                            })?
                            .0,
                    ),
                    None => None,
                };
                if stored == expected {
                    let version = expected.map_or(1, |v| v + 1);
                    let mut row = version.to_be_bytes().to_vec();
                    row.extend_from_slice(&record::seal(&store.key, &install));
                    table.insert(id, row.as_slice())?;
                    true
                } else {
                    false
                }
            };
            if written {
                txn.commit()?;
            } else {
                txn.abort()?;
            }
            Ok(written)
        })
    }

    fn delete(&self, key: InstallKey) -> StoreFuture<'_, anyhow::Result<()>> {
        self.blocking(move |store| {
            let txn = store.db.begin_write()?;
            txn.open_table(INSTALLS)?.remove((key.app_id, key.hub_id))?;
            txn.commit()?;
            Ok(())
        })
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
