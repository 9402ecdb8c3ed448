//! A bounded map for state keyed by client: sharded least-recently-used caches, so a flood
//! from millions of addresses evicts the coldest entries instead of growing without end.
//!
//! Bound: at most `capacity` entries in total (rounded up to a multiple of the shard count);
//! each entry costs the key, the value and about 48 bytes of list and hash overhead.

use lru::LruCache;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::Mutex;

/// Shards spread lock contention over the worker threads.
pub const SHARDS: usize = 64;

/// A fast multiplicative hasher for keys of fixed-size integers. Keys come from client
/// addresses, so a per-process random seed keeps an attacker from aiming at one shard or chain.
#[derive(Clone, Copy)]
pub struct FastHasher(u64);

static SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| fastrand::u64(..) | 1);

impl Default for FastHasher {
    fn default() -> Self {
        FastHasher(*SEED)
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_u128(&mut self, v: u128) {
        self.write_u64(v as u64);
        self.write_u64((v >> 64) as u64);
    }
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
    fn finish(&self) -> u64 {
        // Final mix so the low bits (shard index, bucket) depend on every input bit.
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}

pub type FastBuild = BuildHasherDefault<FastHasher>;

pub struct Table<K: Hash + Eq, V> {
    shards: Vec<Mutex<LruCache<K, V, FastBuild>>>,
}

fn per_shard(capacity: usize) -> NonZeroUsize {
    NonZeroUsize::new(capacity.div_ceil(SHARDS).max(1)).unwrap_or(NonZeroUsize::MIN)
}

impl<K: Hash + Eq + Clone, V> Table<K, V> {
    pub fn new(capacity: usize) -> Self {
        let n = per_shard(capacity);
        Table {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(LruCache::with_hasher(n, FastBuild::default())))
                .collect(),
        }
    }

    fn shard(&self, k: &K) -> std::sync::MutexGuard<'_, LruCache<K, V, FastBuild>> {
        let mut h = FastHasher::default();
        k.hash(&mut h);
        // High bits pick the shard; the map inside uses the low ones.
        let m = &self.shards[((h.finish() >> 40) as usize) % SHARDS];
        // A panic while holding the lock leaves plain data behind: keep using it.
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the bound; the coldest entries go if it shrinks.
    pub fn set_capacity(&self, capacity: usize) {
        let n = per_shard(capacity);
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|p| p.into_inner());
            if s.cap() != n {
                s.resize(n);
            }
        }
    }

    /// Runs `f` on the entry for `k`, creating it with `init` (which may evict the coldest).
    pub fn update<R>(&self, k: &K, init: impl FnOnce() -> V, f: impl FnOnce(&mut V) -> R) -> R {
        let mut s = self.shard(k);
        if let Some(v) = s.get_mut(k) {
            return f(v);
        }
        let mut v = init();
        let r = f(&mut v);
        s.put(k.clone(), v);
        r
    }

    /// Reads an entry without making it more recent.
    pub fn peek<R>(&self, k: &K, f: impl FnOnce(&V) -> R) -> Option<R> {
        self.shard(k).peek(k).map(f)
    }

    pub fn remove(&self, k: &K) -> Option<V> {
        self.shard(k).pop(k)
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).cap().get())
            .sum()
    }

    /// Every entry for which `keep` answers `Some`, shard by shard.
    pub fn collect<R>(&self, mut keep: impl FnMut(&K, &V) -> Option<R>) -> Vec<R> {
        let mut out = Vec::new();
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|p| p.into_inner());
            out.extend(s.iter().filter_map(|(k, v)| keep(k, v)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_bound() {
        let t: Table<u64, u64> = Table::new(1000);
        for k in 0..200_000u64 {
            t.update(&k, || 0, |v| *v += 1);
        }
        assert!(t.len() <= t.capacity());
        assert!(t.capacity() <= 1000 + SHARDS);
        // A hot key survives a flood of cold ones.
        for k in 0..50_000u64 {
            t.update(&7, || 0, |_| ());
            t.update(&(1_000_000 + k), || 0, |_| ());
        }
        assert!(t.peek(&7, |_| ()).is_some());
        t.set_capacity(100);
        assert!(t.len() <= 100 + SHARDS);
    }
}
