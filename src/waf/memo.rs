//! What the engine remembers about a value between rules and between requests: its form after
//! each transformation chain, and which operators whose result depends on the value alone are
//! known not to match it. Portal traffic repeats most values (browser headers, cookie and
//! argument names, common arguments), so a value seen before skips its transformations and
//! most operator runs. A value's memo is found by content (rule set and bytes, always
//! compared in full, never trusted by hash alone) in a per-thread table bounded in bytes (two
//! generations, so that values that recur outlive the flow of values seen once); a
//! transaction keeps the memo of each stored value next to it, so rules reach it without a
//! lookup. "Does not match" is remembered as a bit per link; "matches" as the captures the
//! operator made, in a short list (few values match anything: attacks, which scanners send
//! again and again). It must not know about rule actions or collections: the transaction
//! decides which values and links qualify.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// Longer values are remembered within their request only (long values rarely repeat).
const SHARED_VALUE_MAX: usize = 1024;
/// Bytes of remembered values and results per thread. The table keeps two generations of
/// half of that: when the current one is full it becomes the old one (the older is dropped),
/// and a value found in the old one moves to the current one. Starting over from nothing
/// instead made every browser header and cookie name new again every few hundred requests
/// (each new argument value, URL and session cookie adds ~1 KiB), which cost the requests
/// after it a full evaluation. Bigger is slower: values that recur are read on every request,
/// and a table that outgrows a core's second-level cache spreads them among values seen once
/// (8 MiB cost the bench mix ~3 µs a request more than 2 MiB; 512 KiB was no faster).
const THREAD_BUDGET: usize = 2 << 20;

/// A value's result under one transformation chain: `None` inside when it is unchanged.
type ChainOut = OnceLock<Option<Box<[u8]>>>;

/// Matches remembered per value at most: an attack value matches a few dozen links.
const HITS_MAX: usize = 64;
/// Captures longer than this (in all) are not remembered: such a match runs again.
const HIT_CAPS_MAX: usize = 4096;

/// Miss words kept inside the memo itself: the CRS has ~13 (~800 memo slots). A rule set
/// with more keeps the rest in a separate allocation.
const INLINE_WORDS: usize = 16;

/// Everything remembered about one value. What every request reads of a value it has seen
/// (the rule set, the pre-filter bits, the miss words) comes first and in one piece: each
/// request reads them for dozens of values, and a separate allocation for the words cost a
/// cache miss more per value.
#[repr(C)]
pub struct ValueMemo {
    set: u64,
    /// One bit per pre-filter (`prefilter::Prefilters::filters`) this value went through.
    filtered: AtomicU64,
    /// Bit `slot % 64` set for every slot in `hits`: most values have none, and the bit
    /// spares them the lock.
    hit_bits: AtomicU64,
    /// Miss words in all (`miss`, then `miss_rest`).
    words: u32,
    shared: bool,
    /// The value's bytes when the memo is in the thread's table (else empty).
    raw: Box<[u8]>,
    /// One bit per memo slot (`Rule::memo_slot`): set when that link does not match.
    miss: [AtomicU64; INLINE_WORDS],
    miss_rest: Box<[AtomicU64]>,
    /// Per chain key (see `RuleSet::memo_widths`): the chain's result, `None` when it leaves
    /// the value unchanged (for a `multiMatch` key, the encoded intermediate results); made
    /// when a rule first needs it.
    outs: Box<[ChainOut]>,
    /// Links that match this value: (memo slot, the captures their operator made).
    hits: Mutex<Vec<(u32, Vec<Vec<u8>>)>>,
}

impl ValueMemo {
    fn new(set: u64, keys: usize, slots: u32, raw: &[u8], shared: bool) -> ValueMemo {
        let words = slots.div_ceil(64);
        ValueMemo {
            set,
            filtered: AtomicU64::new(0),
            hit_bits: AtomicU64::new(0),
            words,
            shared,
            raw: if shared { raw.into() } else { Box::default() },
            miss: std::array::from_fn(|_| AtomicU64::new(0)),
            miss_rest: (INLINE_WORDS..words as usize)
                .map(|_| AtomicU64::new(0))
                .collect(),
            outs: (0..keys).map(|_| OnceLock::new()).collect(),
            hits: Mutex::new(Vec::new()),
        }
    }

    /// Whether this is the memo of `raw` under rule set `set` (a memo kept for one request
    /// only, of a long value, is nobody else's).
    pub fn is(&self, set: u64, raw: &[u8]) -> bool {
        self.set == set && self.shared && *self.raw == *raw
    }

    /// The result of chain key `key`: `compute` gives it the first time, `None` when the
    /// chain leaves the value as it is. `None` outside the memo's keys.
    pub fn out(
        &self,
        key: usize,
        compute: impl FnOnce() -> Option<Vec<u8>>,
    ) -> Option<Option<&[u8]>> {
        let cell = self.outs.get(key)?;
        Some(
            cell.get_or_init(|| {
                let out = compute().map(Vec::into_boxed_slice);
                BYTES.with(|b| b.set(b.get() + out.as_ref().map_or(0, |o| o.len())));
                out
            })
            .as_deref(),
        )
    }

    /// Miss word `w` (none past the rule set's).
    fn miss_cell(&self, w: usize) -> Option<&AtomicU64> {
        if w >= self.words as usize {
            return None;
        }
        match self.miss.get(w) {
            Some(m) => Some(m),
            None => self.miss_rest.get(w - INLINE_WORDS),
        }
    }

    pub fn known_miss(&self, slot: u32) -> bool {
        self.miss_cell(slot as usize / 64)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << (slot % 64)) != 0)
    }

    /// Clears in `and` the slots this value is not known to miss.
    pub fn and_miss(&self, and: &mut [u64]) {
        for (n, a) in and.iter_mut().enumerate() {
            *a &= self.miss_word(n);
        }
    }

    /// The slots of miss word `w` this value is known to miss (none past the end).
    pub fn miss_word(&self, w: usize) -> u64 {
        self.miss_cell(w).map_or(0, |m| m.load(Ordering::Relaxed))
    }

    /// Load and store, not an atomic or: a bit lost to a racing writer only means that link
    /// runs again for this value some day.
    pub fn set_miss(&self, slot: u32) {
        self.set_miss_bits(slot as usize / 64, 1 << (slot % 64));
    }

    /// Sets the slots `bits` of miss word `w`.
    pub fn set_miss_bits(&self, w: usize, bits: u64) {
        if let Some(m) = self.miss_cell(w) {
            m.store(m.load(Ordering::Relaxed) | bits, Ordering::Relaxed);
        }
    }

    /// The captures of link `slot` when it is known to match this value (empty when that link
    /// does not capture).
    pub fn known_hit(&self, slot: u32) -> Option<Vec<Vec<u8>>> {
        if self.hit_bits.load(Ordering::Relaxed) & (1 << (slot % 64)) == 0 {
            return None;
        }
        let hits = self.hits.lock().ok()?;
        hits.iter().find(|h| h.0 == slot).map(|h| h.1.clone())
    }

    /// Remembers that link `slot` matches this value, with the captures its operator made.
    pub fn set_hit(&self, slot: u32, caps: &[Vec<u8>]) {
        let size: usize = caps.iter().map(Vec::len).sum();
        if size > HIT_CAPS_MAX {
            return;
        }
        let Ok(mut hits) = self.hits.lock() else {
            return;
        };
        if hits.len() >= HITS_MAX || hits.iter().any(|h| h.0 == slot) {
            return;
        }
        hits.push((slot, caps.to_vec()));
        BYTES.with(|b| b.set(b.get() + size + 32));
        self.hit_bits.fetch_or(1 << (slot % 64), Ordering::Relaxed);
    }

    /// The pre-filters this value went through (their misses are in its slots).
    pub fn filtered(&self) -> u64 {
        self.filtered.load(Ordering::Relaxed)
    }

    /// Notes that the value went through the pre-filters of `mask` (after their misses are
    /// set; a racing writer can only lose bits, and the filters then run again).
    pub fn set_filtered(&self, mask: u64) {
        self.filtered
            .store(self.filtered() | mask, Ordering::Relaxed);
    }

    fn size(&self) -> usize {
        let outs: usize = self
            .outs
            .iter()
            .filter_map(|o| o.get()?.as_ref().map(|o| o.len()))
            .sum();
        self.raw.len()
            + outs
            + self.outs.len() * 24
            + INLINE_WORDS.max(self.words as usize) * 8
            + 64
    }
}

struct Table {
    map: HashMap<u64, Arc<ValueMemo>, foldhash::fast::FixedState>,
    old: HashMap<u64, Arc<ValueMemo>, foldhash::fast::FixedState>,
    /// Seeded per thread: chosen collisions can cost an attacker's requests a lookup, no more.
    hasher: foldhash::fast::RandomState,
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table {
        map: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
        old: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
        hasher: foldhash::fast::RandomState::default(),
    });
    /// Bytes remembered in this thread's current generation.
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

/// The memo of `raw` for rule set `set` (with `keys` chain keys and `slots` memo slots): the
/// thread's, or a new one.
pub fn value(set: u64, keys: usize, slots: u32, raw: &[u8]) -> Arc<ValueMemo> {
    if raw.len() > SHARED_VALUE_MAX {
        return Arc::new(ValueMemo::new(set, keys, slots, raw, false));
    }
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let h = t.hasher.hash_one((set, raw));
        if let Some(m) = t.map.get(&h) {
            if m.set == set && *m.raw == *raw {
                return m.clone();
            }
            // A different value with the same hash: this one goes unshared.
            return Arc::new(ValueMemo::new(set, keys, slots, raw, false));
        }
        let m = match t.old.remove(&h) {
            Some(m) if m.set == set && *m.raw == *raw => m,
            _ => Arc::new(ValueMemo::new(set, keys, slots, raw, true)),
        };
        let size = m.size();
        if BYTES.with(|b| b.get()) + size > THREAD_BUDGET / 2 {
            t.old = std::mem::take(&mut t.map);
            BYTES.with(|b| b.set(0));
        }
        BYTES.with(|b| b.set(b.get() + size));
        t.map.insert(h, m.clone());
        m
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_content_shares_a_memo_and_its_verdicts() {
        let a = b"gia tri".to_vec();
        let b = b"gia tri".to_vec();
        let m = value(7, 4, 70, &a);
        assert_eq!(
            m.out(3, || Some(a.to_ascii_uppercase())),
            Some(Some(&b"GIA TRI"[..]))
        );
        assert!(!m.known_miss(65));
        m.set_miss(65);
        // Another request's value with the same bytes finds what the first learnt.
        let m2 = value(7, 4, 70, &b);
        assert_eq!(
            m2.out(3, || panic!("not computed again")),
            Some(Some(&b"GIA TRI"[..]))
        );
        assert!(m2.known_miss(65));
        assert!(!m2.known_miss(64));
        // Another chain key leaves the value as it is; another rule set is another memo.
        assert_eq!(m2.out(2, || None), Some(None));
        let m4 = value(8, 4, 70, &b);
        assert!(!m4.known_miss(65));
        assert_eq!(m4.out(9, || panic!("no such key")), None);
    }

    #[test]
    fn values_that_recur_outlive_a_flow_of_values_seen_once() {
        let recurring = b"Mozilla/5.0 (X11; Linux x86_64)";
        value(11, 4, 70, recurring).set_miss(3);
        value(11, 4, 70, b"seen once").set_miss(3);
        // Several generations' worth of new values, the recurring one among them.
        let each = value(11, 4, 70, b"0000000000").size();
        for n in 0..(3 * THREAD_BUDGET / each) {
            value(11, 4, 70, format!("{n:010}").as_bytes());
            if n % 1000 == 0 {
                assert!(value(11, 4, 70, recurring).known_miss(3));
            }
        }
        assert!(value(11, 4, 70, recurring).known_miss(3));
        assert!(!value(11, 4, 70, b"seen once").known_miss(3));
    }

    #[test]
    fn matches_are_remembered_with_their_captures_within_bounds() {
        let m = value(12, 2, 70, b"1' or 1=1--");
        assert_eq!(m.known_hit(5), None);
        m.set_hit(5, &[b"or 1=1".to_vec()]);
        m.set_hit(69, &[]);
        let m2 = value(12, 2, 70, b"1' or 1=1--");
        assert_eq!(m2.known_hit(5), Some(vec![b"or 1=1".to_vec()]));
        assert_eq!(m2.known_hit(69), Some(vec![]));
        // Slot 5 + 128 shares slot 5's bit, not its entry.
        assert_eq!(m2.known_hit(133), None);
        assert_eq!(m2.known_hit(6), None);
        // Captures over the bound are not kept; nor are hits past the count bound.
        m2.set_hit(7, &[vec![b'x'; HIT_CAPS_MAX + 1]]);
        assert_eq!(m2.known_hit(7), None);
        for s in 0..(HITS_MAX as u32 + 10) {
            m2.set_hit(100 + s, &[]);
        }
        assert_eq!(m2.known_hit(100 + HITS_MAX as u32 + 5), None);
    }

    #[test]
    fn miss_words_past_the_inline_ones_are_kept_too() {
        let slots = 64 * (INLINE_WORDS as u32 + 4);
        let m = value(13, 1, slots, b"many slots");
        for slot in [
            0,
            64 * INLINE_WORDS as u32 - 1,
            64 * INLINE_WORDS as u32,
            slots - 1,
        ] {
            assert!(!m.known_miss(slot));
            m.set_miss(slot);
            assert!(m.known_miss(slot), "slot {slot}");
        }
        assert_eq!(m.miss_word(INLINE_WORDS), 1);
        assert_eq!(m.miss_word(INLINE_WORDS + 3), 1 << 63);
        // Past the rule set's slots nothing is kept, and nothing is known.
        m.set_miss(slots);
        assert!(!m.known_miss(slots));
        let small = value(13, 1, 70, b"few slots");
        small.set_miss(200);
        assert!(!small.known_miss(200));
        assert_eq!(small.miss_word(3), 0);
    }

    #[test]
    fn long_values_are_not_shared() {
        let v = vec![b'a'; SHARED_VALUE_MAX + 1];
        value(9, 2, 10, &v).set_miss(1);
        assert!(!value(9, 2, 10, &v).known_miss(1));
    }
}
