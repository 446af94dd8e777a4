//! The bounded, single-flight cache of what introspection said about each token, and the
//! bounded table of hapikeys HubSpot has accepted.
//!
//! # Bounds
//! Owners HubSpot named (`known`) and refusals and failures (`refused`) live in separate
//! tables, each with its own bound (`max_entries`, `max_refused_entries`), keyed by the
//! token's SHA-256 (raw tokens are never kept as keys). A flood of tokens HubSpot rejects
//! can fill only `refused`, so it never pushes out a real owner. When a table is full,
//! expired entries are dropped first; if that frees nothing, arbitrary entries of that table
//! (DashMap's iteration order, which follows the key hash and so is unrelated to age or use)
//! are dropped until a tenth of its capacity is free, so the O(n) sweep runs at most once per
//! `capacity / 10` new tokens. Lookups in flight (`pending`) are held apart and only while a
//! caller waits for them: single-flight needs them, and each has a caller holding it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

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

/// One lookup in flight: concurrent callers with the same token wait for it instead of
/// starting their own.
pub(super) type Slot = Arc<OnceCell<Settled>>;

type Digest = [u8; 32];

/// Verdicts by token digest.
#[derive(Debug, Default)]
pub(super) struct IdentityCache {
    known: BoundedTable<Settled>,
    refused: BoundedTable<Settled>,
    pending: DashMap<Digest, Slot, foldhash::fast::RandomState>,
}

impl IdentityCache {
    /// A verdict still fresh at `now`, from either table.
    pub(super) fn fresh(&self, key: &Digest, now: Instant) -> Option<Settled> {
        let fresh = |s: &Settled| (s.expires_at > now).then_some(*s);
        self.known
            .get(key)
            .and_then(|s| fresh(&s))
            .or_else(|| self.refused.get(key).and_then(|s| fresh(&s)))
    }

    /// The lookup in flight for `key`, joined or begun; left when the guard drops.
    pub(super) fn pending(&self, key: Digest) -> Joined<'_> {
        let slot = self.pending.entry(key).or_default().clone();
        Joined {
            cache: self,
            key,
            slot,
        }
    }

    /// Files a lookup's verdict in its table (a verdict already expired, from a lookup that
    /// never reached HubSpot, is not kept) and ends the lookup in flight.
    pub(super) fn settle(&self, key: Digest, settled: Settled, bounds: (usize, usize)) {
        if settled.expires_at > Instant::now() {
            match settled.verdict {
                Verdict::Known(_) => self.known.insert(key, settled, bounds.0),
                Verdict::Invalid | Verdict::Unreachable => {
                    self.refused.insert(key, settled, bounds.1)
                }
            }
        }
        self.pending.remove(&key);
    }

    /// Leaves the lookup in flight `slot`: it is dropped once settled, or once nobody waits
    /// for it any more (its callers went away before it settled), so it holds no memory.
    pub(super) fn leave(&self, key: &Digest, slot: &Slot) {
        // Only this caller's clone and the map's remain; the shard lock held by
        // `remove_if` keeps anyone from cloning it meanwhile.
        self.pending.remove_if(key, |_, held| {
            Arc::ptr_eq(held, slot) && (held.initialized() || Arc::strong_count(held) <= 2)
        });
    }

    /// Forgets a failed lookup, so the token's next call asks HubSpot again (HubSpot just
    /// accepted a call with it).
    pub(super) fn forget_failure(&self, key: &Digest) {
        self.refused
            .remove_if(key, |s| matches!(s.verdict, Verdict::Unreachable));
    }

    /// Owners remembered.
    pub(super) fn known_len(&self) -> usize {
        self.known.len()
    }

    /// Refusals and failures remembered.
    pub(super) fn refused_len(&self) -> usize {
        self.refused.len()
    }
}

/// A caller's hold on a lookup in flight; dropping it (done, or the caller went away)
/// leaves the lookup.
pub(super) struct Joined<'a> {
    cache: &'a IdentityCache,
    key: Digest,
    pub(super) slot: Slot,
}

impl Drop for Joined<'_> {
    fn drop(&mut self) {
        self.cache.leave(&self.key, &self.slot);
    }
}

/// What a bounded table holds: something that says when it expires.
pub(super) trait Expiring: Copy {
    fn expires_at(&self) -> Instant;
}

impl Expiring for Settled {
    fn expires_at(&self) -> Instant {
        self.expires_at
    }
}

impl Expiring for Instant {
    fn expires_at(&self) -> Instant {
        *self
    }
}

/// A digest-keyed table that never holds more than the capacity it is given; the policy is
/// in the module docs.
#[derive(Debug)]
pub(super) struct BoundedTable<V> {
    /// Keyed by SHA-256 digests, hashed again with foldhash: on every call, and the keys
    /// are uniformly random already.
    map: DashMap<Digest, V, foldhash::fast::RandomState>,
    /// Entries in `map`, kept beside it because `DashMap::len` locks every shard.
    entries: AtomicUsize,
    /// Only one task sweeps a full table at a time; the others find room when it is done.
    sweeping: Mutex<()>,
}

impl<V> Default for BoundedTable<V> {
    fn default() -> Self {
        BoundedTable {
            map: DashMap::default(),
            entries: AtomicUsize::new(0),
            sweeping: Mutex::new(()),
        }
    }
}

impl<V: Expiring> BoundedTable<V> {
    pub(super) fn get(&self, key: &Digest) -> Option<V> {
        self.map.get(key).map(|v| *v)
    }

    /// Stores `value` under `key`, making room first when the table holds `capacity`.
    pub(super) fn insert(&self, key: Digest, value: V, capacity: usize) {
        if self.entries.load(Ordering::Relaxed) >= capacity && !self.map.contains_key(&key) {
            self.make_room(capacity);
        }
        if self.entries.load(Ordering::Relaxed) >= capacity && !self.map.contains_key(&key) {
            // Another task filled the room just made; this value goes unremembered.
            return;
        }
        if self.map.insert(key, value).is_none() {
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn remove_if(&self, key: &Digest, drop: impl FnOnce(&V) -> bool) {
        if self.map.remove_if(key, |_, v| drop(v)).is_some() {
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    fn make_room(&self, capacity: usize) {
        let Ok(_sweep) = self.sweeping.lock() else {
            return;
        };
        if self.entries.load(Ordering::Relaxed) < capacity {
            return;
        }
        let now = Instant::now();
        self.map.retain(|_, v| {
            let keep = v.expires_at() > now;
            if !keep {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
            keep
        });
        let target = capacity - capacity.div_ceil(10);
        let excess = self.entries.load(Ordering::Relaxed).saturating_sub(target);
        if excess == 0 {
            return;
        }
        let victims: Vec<Digest> = self.map.iter().take(excess).map(|e| *e.key()).collect();
        for key in victims {
            if self.map.remove(&key).is_some() {
                self.entries.fetch_sub(1, Ordering::Relaxed);
            }
        }
        tracing::debug!(
            evicted = excess,
            capacity,
            "identity table full: dropped arbitrary entries"
        );
    }
}
