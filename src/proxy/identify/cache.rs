//! The bounded, single-flight cache of what introspection said about each token.
//!
//! # Bound
//! At most `max_entries` tokens are remembered, keyed by the token's SHA-256 (raw tokens are
//! never kept as keys). When a new token finds the cache full, expired entries are dropped
//! first; if that frees nothing, arbitrary settled entries are dropped (DashMap's iteration
//! order, which follows the key hash and so is unrelated to age or use) until a tenth of the
//! capacity is free, so the O(n) sweep runs at most once per `max_entries / 10` new tokens.
//! Lookups still in flight are never dropped (that would break single-flight), except ones whose
//! callers have all gone away; if the cache is full of lookups in flight, the new token is
//! looked up without being cached.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dashmap::mapref::entry::Entry as MapEntry;
use dashmap::DashMap;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::hubspot::Owner;

/// What one lookup concluded, as cached.
#[derive(Debug, Clone, Copy)]
pub(super) enum Verdict {
    Known(Owner),
    Invalid,
    Unreachable,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Settled {
    pub(super) verdict: Verdict,
    pub(super) expires_at: Instant,
}

/// One cache slot: empty while its lookup is in flight, so that concurrent callers with the
/// same token wait for that lookup instead of starting their own.
pub(super) type Slot = Arc<OnceCell<Settled>>;

/// Verdicts by token digest.
#[derive(Debug, Default)]
pub(super) struct IdentityCache {
    /// Keyed by SHA-256 digests, hashed again with foldhash: on every call, and the keys are
    /// uniformly random already.
    map: DashMap<[u8; 32], Slot, foldhash::fast::RandomState>,
    /// Entries in `map`, kept beside it because `DashMap::len` locks every shard and so
    /// cannot be asked while an entry guard is held.
    entries: AtomicUsize,
    /// Only one task sweeps a full cache at a time; the others find room when it is done.
    sweeping: Mutex<()>,
}

impl IdentityCache {
    /// A fresh cached verdict (`Ok`), or the slot whose lookup to join or run (`Err`); `None`
    /// inside `Err` when the cache is full of lookups in flight and this one goes uncached.
    pub(super) fn slot(&self, key: [u8; 32], max_entries: usize) -> Result<Settled, Option<Slot>> {
        let now = Instant::now();
        if self.entries.load(Ordering::Relaxed) >= max_entries && !self.map.contains_key(&key) {
            self.make_room(now, max_entries);
        }
        match self.map.entry(key) {
            MapEntry::Occupied(mut occupied) => match occupied.get().get() {
                Some(settled) if settled.expires_at > now => Ok(*settled),
                Some(_) => {
                    let slot = Slot::default();
                    occupied.insert(slot.clone());
                    Err(Some(slot))
                }
                None => Err(Some(occupied.get().clone())),
            },
            MapEntry::Vacant(vacant) => {
                if self.entries.fetch_add(1, Ordering::Relaxed) >= max_entries {
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    return Err(None);
                }
                let slot = Slot::default();
                vacant.insert(slot.clone());
                Err(Some(slot))
            }
        }
    }

    /// Tokens remembered (settled or in flight).
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    /// Frees room for new tokens; the policy is in the module docs. Holds no guard on return.
    fn make_room(&self, now: Instant, max_entries: usize) {
        let Ok(_sweep) = self.sweeping.lock() else {
            return;
        };
        if self.entries.load(Ordering::Relaxed) < max_entries {
            return;
        }
        self.map.retain(|_, slot| {
            // A lookup nobody waits for any more (its callers went away) holds only the map's
            // reference; the shard lock held here keeps anyone from cloning it meanwhile.
            let keep = match slot.get() {
                Some(settled) => settled.expires_at > now,
                None => Arc::strong_count(slot) > 1,
            };
            if !keep {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        let target = max_entries - max_entries.div_ceil(10);
        let excess = self.entries.load(Ordering::Relaxed).saturating_sub(target);
        if excess == 0 {
            return;
        }
        let victims: Vec<[u8; 32]> = self
            .map
            .iter()
            .filter(|e| e.value().initialized())
            .take(excess)
            .map(|e| *e.key())
            .collect();
        for key in victims {
            if self
                .map
                .remove_if(&key, |_, slot| slot.initialized())
                .is_some()
            {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            evicted = excess,
            max_entries,
            "identity cache full: dropped arbitrary entries"
        );
    }
}
