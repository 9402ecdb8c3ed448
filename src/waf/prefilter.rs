//! Literal pre-filters across rules: for each transformation chain, one case-insensitive
//! Aho-Corasick automaton over the literals that every match of each value-only `@rx` under
//! that chain must contain (`Operator::required_literals`), and the phrases of each `@pm`.
//! One scan of a value's transformed form tells which of those operators cannot match it, so
//! a value seen for the first time is known to miss most of the ~60 CRS regexes that read it
//! without running them, and the rules are passed over as for a value seen before. It owns building the automata from a rule set
//! and the scan; the transaction decides which values are scanned, and the value memo keeps
//! the results. It must not run operators or know about actions: it only proves misses.

use super::rules::{Entry, Rule};
use super::transforms::{chain_keeps, ByteSet, Transform};
use aho_corasick::{AhoCorasick, MatchKind};

/// At most this many chains get a filter: a value memo marks the ones it went through in a
/// 64-bit word.
pub const MAX_FILTERS: usize = 64;

/// The filter of one transformation chain.
#[derive(Debug)]
pub struct Prefilter {
    /// The chain key (`Rule::memo_key`) whose transformed value is scanned.
    pub key: usize,
    /// The bytes the chain leaves as they are, up to ASCII case (`Transform::keeps`): a value
    /// made of them is scanned as it is, without working out the chain.
    keeps: ByteSet,
    scan: Scan,
    /// The memo slots this filter decides, as (word, bits) of the memo's miss words.
    slots: Box<[(u32, u64)]>,
}

/// An automaton over literals, and per literal (automaton pattern) the memo slots of the links
/// needing it.
#[derive(Debug)]
struct Scan {
    ac: AhoCorasick,
    needed_by: Vec<Box<[u32]>>,
}

impl Scan {
    fn new(links: &[&Link]) -> Option<Scan> {
        let mut literals: Vec<&[u8]> = links
            .iter()
            .flat_map(|(_, l, _)| l.iter().map(Vec::as_slice))
            .collect();
        literals.sort_unstable();
        literals.dedup();
        let ac = AhoCorasick::builder()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&literals)
            .ok()?;
        let mut needed_by: Vec<Vec<u32>> = vec![Vec::new(); literals.len()];
        for (slot, lits, _) in links {
            for l in lits {
                if let Ok(n) = literals.binary_search(&l.as_slice()) {
                    needed_by[n].push(*slot);
                }
            }
        }
        Some(Scan {
            ac,
            needed_by: needed_by.into_iter().map(Vec::into_boxed_slice).collect(),
        })
    }

    /// Sets in `found` (one bit per memo slot) the slots whose links need a literal `value`
    /// holds.
    fn run(&self, value: &[u8], found: &mut [u64]) {
        for m in self.ac.find_overlapping_iter(value) {
            for &s in &self.needed_by[m.pattern().as_usize()] {
                if let Some(w) = found.get_mut(s as usize / 64) {
                    *w |= 1 << (s % 64);
                }
            }
        }
    }
}

/// (memo slot, literals, collections read) of a link a filter decides.
type Link = (u32, Vec<Vec<u8>>, Vec<usize>);

/// The filters of a rule set, and per collection (`seclang::VARIABLES` index) the filters
/// that decide links reading it (bit `n` for `filters[n]`).
#[derive(Debug, Default)]
pub struct Prefilters {
    pub filters: Vec<Prefilter>,
    pub by_coll: Vec<u64>,
    /// Over every filter's literals: one pass serves all the chains that leave a value as
    /// it is (most new values are numbers, tokens and plain words).
    all: Option<Scan>,
    /// Memo slots in all (`RuleSet::memo_slots`).
    slots: u32,
}

impl Prefilters {
    /// Built once the links have their memo slots. A link qualifies when its result depends
    /// on the value alone (it has a slot), it is not negated (a regex that cannot match makes
    /// a negated link match), it is not `multiMatch` (the operator also sees intermediate
    /// forms) and its operator is a phrase list or a regex with required literals.
    pub fn build(
        phases: &[Vec<Entry>],
        chains: &[Vec<Transform>],
        slots: u32,
        collections: usize,
    ) -> Prefilters {
        let mut by_key: Vec<Vec<Link>> = chains.iter().map(|_| Vec::new()).collect();
        for list in phases {
            for e in list {
                let Entry::Rule(r) = e else { continue };
                for l in r.links() {
                    if let Some(q) = qualifies(l) {
                        by_key[l.memo_key()].push(q);
                    }
                }
            }
        }
        // The chains with the most links first, when there are more than a word can mark.
        let mut keys: Vec<usize> = (0..chains.len())
            .filter(|&k| !by_key[k].is_empty())
            .collect();
        keys.sort_by_key(|&k| std::cmp::Reverse(by_key[k].len()));
        keys.truncate(MAX_FILTERS);
        keys.sort_unstable();
        let mut out = Prefilters {
            filters: Vec::new(),
            by_coll: vec![0; collections],
            all: None,
            slots,
        };
        for key in keys {
            let links: Vec<&Link> = by_key[key].iter().collect();
            let Some(scan) = Scan::new(&links) else {
                continue;
            };
            let bit = 1u64 << out.filters.len();
            for (_, _, colls) in &links {
                for &c in colls {
                    out.by_coll[c] |= bit;
                }
            }
            let mut slots: Vec<(u32, u64)> = Vec::new();
            for (s, _, _) in &links {
                let (w, b) = (s / 64, 1u64 << (s % 64));
                match slots.iter_mut().find(|(x, _)| *x == w) {
                    Some((_, bits)) => *bits |= b,
                    None => slots.push((w, b)),
                }
            }
            out.filters.push(Prefilter {
                key,
                keeps: chain_keeps(&chains[key]),
                scan,
                slots: slots.into_boxed_slice(),
            });
        }
        let kept: Vec<&Link> = out
            .filters
            .iter()
            .flat_map(|f| by_key[f.key].iter())
            .collect();
        out.all = Scan::new(&kept);
        out
    }

    /// The filters deciding links that read collection `c`.
    pub fn of_coll(&self, c: usize) -> u64 {
        self.by_coll.get(c).copied().unwrap_or(0)
    }

    /// Runs the filters of `mask` on `value`. `out(key)` gives a chain key's result for the
    /// value (`Some(None)` when the chain leaves it as it is, `None` when it has none), and
    /// `miss(word, bits)` is called with the memo slots (bits of miss word `word`) of links
    /// known not to match it.
    pub fn run<'a>(
        &self,
        mask: u64,
        value: &'a [u8],
        mut out: impl FnMut(usize) -> Option<Option<&'a [u8]>>,
        mut miss: impl FnMut(usize, u64),
    ) {
        let found = &mut vec![0u64; (self.slots as usize).div_ceil(64)][..];
        let (mut todo, mut unchanged) = (mask, 0u64);
        let bytes = ByteSet::of(value);
        while todo != 0 {
            let n = todo.trailing_zeros() as usize;
            todo &= todo - 1;
            let Some(f) = self.filters.get(n) else { break };
            if bytes.is_subset(f.keeps) {
                unchanged |= 1 << n;
                continue;
            }
            match out(f.key) {
                Some(None) => unchanged |= 1 << n,
                // The scans ignore ASCII case: a chain that only changed case (`lowercase`
                // on `GA1.2…`, `GET /x HTTP/1.1`) finds what the value itself holds.
                Some(Some(v)) if v.eq_ignore_ascii_case(value) => unchanged |= 1 << n,
                Some(Some(v)) => {
                    f.scan.run(v, found);
                    f.decide(found, &mut miss);
                }
                None => {}
            }
        }
        if unchanged != 0 {
            if let Some(all) = &self.all {
                // The other filters' bits may be set from their own values: only slots of
                // filters that see `value` itself are decided from this pass.
                found.fill(0);
                all.run(value, found);
                while unchanged != 0 {
                    let n = unchanged.trailing_zeros() as usize;
                    unchanged &= unchanged - 1;
                    self.filters[n].decide(found, &mut miss);
                }
            }
        }
    }
}

impl Prefilter {
    /// Calls `miss` with this filter's slots not in `found`, a word at a time.
    fn decide(&self, found: &[u64], miss: &mut impl FnMut(usize, u64)) {
        for &(w, bits) in self.slots.iter() {
            let m = bits & !found.get(w as usize).copied().unwrap_or(u64::MAX);
            if m != 0 {
                miss(w as usize, m);
            }
        }
    }
}

fn qualifies(l: &Rule) -> Option<(u32, Vec<Vec<u8>>, Vec<usize>)> {
    let slot = l.memo_slot?;
    if l.op.negated || l.multi_match || l.targets.is_empty() {
        return None;
    }
    // A phrase list matches exactly when the value holds one of its phrases.
    let literals = match l.op.phrases() {
        Some(phrases) => phrases.to_vec(),
        None => l.op.required_literals()?,
    };
    let colls = l
        .targets
        .iter()
        .filter(|v| !v.count)
        .map(|v| v.coll)
        .collect();
    Some((slot, literals, colls))
}

#[cfg(test)]
mod tests {
    use super::super::rules::RuleSet;

    fn load(text: &str) -> RuleSet {
        RuleSet::parse(text).expect("rules parse")
    }

    fn misses(set: &RuleSet, value: &[u8]) -> Vec<u32> {
        misses_after(set, value, None)
    }

    /// `misses` when every chain turned `value` into `out` (`None`: left it as it was).
    fn misses_after<'a>(set: &RuleSet, value: &'a [u8], changed: Option<&'a [u8]>) -> Vec<u32> {
        let mut out = Vec::new();
        let mask = (1u64 << set.prefilters.filters.len()) - 1;
        set.prefilters.run(
            mask,
            value,
            |_| Some(changed),
            |w, bits| {
                out.extend(
                    (0..64)
                        .filter(|b| bits & 1 << b != 0)
                        .map(|b| w as u32 * 64 + b),
                )
            },
        );
        out.sort_unstable();
        out
    }

    #[test]
    fn links_whose_literals_are_absent_are_known_to_miss() {
        let set = load(
            "SecRule ARGS \"@rx (?i)union\\s+select\" \"id:1,phase:2,deny,t:none\"\n\
             SecRule ARGS \"@rx <script\" \"id:2,phase:2,deny,t:none\"\n\
             SecRule ARGS \"!@rx ^\\d+$\" \"id:3,phase:2,deny,t:none\"\n\
             SecRule ARGS \"@rx \\d+\" \"id:4,phase:2,deny,t:none\"\n\
             SecRule ARGS \"@pm passwd shadow\" \"id:5,phase:2,deny,t:none\"\n",
        );
        // Rules 3 (negated) and 4 (no required literal) are never decided by a filter.
        let all: u32 = set
            .prefilters
            .filters
            .iter()
            .flat_map(|f| f.slots.iter().map(|(_, b)| b.count_ones()))
            .sum();
        // (one chain, `t:none`: the value itself is scanned.)
        assert_eq!(all, 3);
        assert_eq!(misses(&set, b"48213").len(), 3);
        // Case does not matter; only the links whose literals are present are left to run.
        assert_eq!(misses(&set, b"1 UNION SELECT 2").len(), 2);
        assert_eq!(misses(&set, b"<SCRIPT>union select /etc/Passwd").len(), 0);
    }

    #[test]
    fn a_chain_that_only_changed_case_is_decided_from_the_value_itself() {
        let set = load(
            "SecRule ARGS \"@rx union\\s+select\" \"id:1,phase:2,deny,t:none,t:urlDecodeUni,t:lowercase\"\n\
             SecRule ARGS \"@rx <script\" \"id:2,phase:2,deny,t:none,t:urlDecodeUni,t:lowercase\"\n",
        );
        let run = |value: &'static [u8], out: &'static [u8]| misses_after(&set, value, Some(out));
        // Case only: what the value holds decides (rule 1's literals are there).
        assert_eq!(
            run(b"1%20UNION%20SELECT 2", b"1%20union%20select 2").len(),
            2
        );
        assert_eq!(run(b"%3Cscript%3E", b"%3cscript%3e").len(), 2);
        // Another change: the chain's own result is scanned.
        assert_eq!(run(b"%3Cscript%3E", b"<script>").len(), 1);
        assert_eq!(run(b"1%20UNION%20SELECT 2", b"1 union select 2").len(), 1);
    }

    #[test]
    fn a_value_of_bytes_its_chains_keep_is_scanned_without_working_them_out() {
        let set = load(
            "SecRule ARGS \"@rx union\\s+select\" \"id:1,phase:2,deny,t:none,t:urlDecodeUni,t:lowercase\"\n\
             SecRule ARGS \"@rx <script\" \"id:2,phase:2,deny,t:none,t:htmlEntityDecode\"\n",
        );
        let mask = (1u64 << set.prefilters.filters.len()) - 1;
        let misses = |value: &[u8]| {
            let mut n = 0;
            let mut asked = 0;
            set.prefilters.run(
                mask,
                value,
                |_| {
                    asked += 1;
                    Some(None)
                },
                |_, bits| n += bits.count_ones(),
            );
            (n, asked)
        };
        // No `%`, `+` or `&`: neither chain can change it beyond case.
        assert_eq!(misses(b"48213"), (2, 0));
        assert_eq!(misses(b"1 UNION SELECT 2"), (1, 0));
        assert_eq!(misses(b"Vi\xe1\xbb\x87t <Script>"), (1, 0));
        // A byte that starts an escape: that chain is worked out.
        assert_eq!(misses(b"a%20b"), (2, 1));
        assert_eq!(misses(b"a&amp;b%20c"), (2, 2));
    }
}
