//! One request's pass through a rule set: the variables rules inspect (filled from the request
//! line, headers and body), the transaction collections (TX and the per-request IP, GLOBAL,
//! SESSION, USER and RESOURCE collections), macro expansion, phase evaluation with chains,
//! skips, `ctl` and `setvar`, and the verdict. Transformed values are cached per value and
//! transformation chain across rules. It must not do I/O or know about the proxy: the pipeline
//! feeds it request facts and acts on its verdict.

use super::body::{self, Processor};
use super::memo::{self, ValueMemo};
use super::operators::Macros;
use super::rules::{
    in_ranges, macro_at, split_macros, AllowScope, Ctl, Disruptive, Entry, KeyPat, Mode, Piece,
    Raw, Rule, RuleSet, Sel, SetOp, Template, Var,
};
use super::seclang::VARIABLES;
use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Matched data is cut to this many bytes in match records.
pub const MATCH_DATA_MAX: usize = 200;

mod plan;
pub use plan::{Plan, Plans};

/// A rule (chain) that matched and logs.
#[derive(Debug, Clone)]
pub struct Match {
    pub id: u64,
    pub phase: u8,
    pub msg: String,
    /// `logdata`, expanded and cut to `MATCH_DATA_MAX` bytes.
    pub data: String,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    /// The variable that matched last (`ARGS:q`).
    pub var: String,
    /// Whether this rule's action would disrupt the request (deny/drop/redirect).
    pub disruptive: bool,
}

/// What the rules decided for the request.
#[derive(Debug, Clone)]
pub struct Intervention {
    pub status: u16,
    pub rule_id: u64,
    pub drop: bool,
    pub redirect: Option<String>,
}

/// Body inspection bounds applied by the transaction.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub inspect_bytes: usize,
    pub max_args: usize,
    pub max_json_depth: usize,
    /// Refuse (413) a body without file uploads that is longer than `inspect_bytes`
    /// (`SecRequestBodyLimitAction Reject`); otherwise its tail streams on uninspected.
    pub reject_oversize: bool,
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            inspect_bytes: 128 * 1024,
            max_args: 1000,
            max_json_depth: 64,
            reject_oversize: true,
        }
    }
}

/// Per-tenant exclusions applied on top of the rule set (as `ctl` would).
#[derive(Debug, Clone, Default)]
pub struct Exclusions {
    pub ids: Vec<(u64, u64)>,
    pub tags: Vec<regex::Regex>,
    pub targets: Vec<(Vec<(u64, u64)>, Var)>,
}

pub(super) type Coll = Vec<(String, Vec<u8>)>;
pub struct Transaction {
    rules: Arc<RuleSet>,
    mode: Mode,
    colls: Vec<Coll>,
    /// MATCHED_VARS of the rule being evaluated (name, value).
    matched: Hits,
    /// The current link's hits (kept for their buffers).
    found: Hits,
    removed_ids: Vec<(u64, u64)>,
    removed_tags: Vec<regex::Regex>,
    removed_targets: Vec<(Vec<(u64, u64)>, Var)>,
    removed_targets_tag: Vec<(regex::Regex, Var)>,
    body_kind: Option<body::Kind>,
    body_access: bool,
    force_body_var: bool,
    body_limits: BodyLimits,
    content_type: String,
    processor: Option<Box<dyn Processor>>,
    raw_body: Vec<u8>,
    body_seen: usize,
    started: Instant,
    allow: Option<AllowScope>,
    done_phases: u8,
    /// Memo cells of stored values and of their keys, by collection and position (made ready
    /// per phase, kept until their collection changes: see `forget_memos`).
    vmemo: Vec<Vec<MemoCell>>,
    kmemo: Vec<Vec<MemoCell>>,
    /// The last request's cells on this thread: a value at the same position with the same
    /// bytes takes its memo from there instead of the thread's table (browsers send the same
    /// headers in the same order on every request), sparing the hash, the table look-up and
    /// a reference count's increment and decrement.
    prev_vmemo: Vec<Vec<MemoCell>>,
    prev_kmemo: Vec<Vec<MemoCell>>,
    /// Per target collection, made when a rule first needs it and kept while the collection
    /// does not change: the memo slots known not to match any of the collection's values (the
    /// AND of their miss bits). A link whose bit is set there cannot match that target,
    /// whatever its selector and exclusions keep, so it is passed over without visiting the
    /// values one by one.
    all_miss: Vec<OnceCell<Box<[u64]>>>,
    /// The same per target set (`RuleSet::hot_sets`), `words` u64s each from
    /// `set_miss[set * words]`, each made when a rule first needs it in a phase (`set_ready`,
    /// one per word).
    set_miss: Vec<u64>,
    set_ready: Vec<bool>,
    /// TX positions by key hash (CRS rules read TX by key hundreds of times a request).
    tx_index: TxIndex,
    /// Setvar names and values with macros are rendered here (a few dozen a request).
    scratch: [String; 2],
    /// Emptied entries to fill before allocating new ones (see `Buffers`).
    spare: Vec<(String, Vec<u8>)>,
    /// TX of an earlier request, kept whole for `follow` to bring back to a plan's values.
    tx_old: KeptTx,
    /// Positions of TX (below the followed plan's length) written since `follow`, one bit
    /// each, and whether entries may have moved (a variable deleted): what the next request's
    /// `follow` must restore.
    tx_dirty: Vec<u64>,
    tx_moved: bool,
    /// Bit d set when TX has the key `d` (a capture): a rule that captures fewer groups than
    /// an earlier one clears the rest, and most captures are of one group.
    tx_digits: u16,
    pub matches: Vec<Match>,
    pub intervention: Option<Intervention>,
    /// True when a disruptive rule matched while the engine only detects.
    pub would_block: Option<u64>,
    /// A body over the inspection limit was refused (or would have been).
    oversize: bool,
    /// What the tenant's settings fixed before the request (see `plan`); dropped when a
    /// `ctl` changes what it assumed.
    plan: Option<Arc<Plan>>,
    /// Bit c set when collection c changed since the last `prepare_memos`, which then
    /// looks at those alone (most of the 85 are empty or unchanged in every phase).
    touched: u128,
    /// Chains evaluated in full (tests tell a rule passed over from one that ran).
    #[cfg(test)]
    chains: u32,
}

const _: () = assert!(VARIABLES.len() <= 128, "touched holds one bit per variable");

/// The index of variable `name` in `VARIABLES`, for names known at run time only (the body
/// processors' variables). Hashed: a scan of the table costs more than filling them.
fn vi(name: &str) -> usize {
    find_variable(name).unwrap_or_else(|| panic!("variable {name} missing from VARIABLES"))
}

/// `vi` at compile time (a name missing from `VARIABLES` fails the build): the request
/// set-up fills a dozen scalars per request by index.
const fn var_index(name: &str) -> usize {
    let mut i = 0;
    while i < VARIABLES.len() {
        let v = VARIABLES[i].as_bytes();
        let n = name.as_bytes();
        if v.len() == n.len() {
            let mut j = 0;
            while j < n.len() && v[j] == n[j] {
                j += 1;
            }
            if j == n.len() {
                return i;
            }
        }
        i += 1;
    }
    panic!("variable missing from VARIABLES")
}

/// The index of a variable named in the engine's code, worked out at compile time.
macro_rules! v {
    ($name:literal) => {
        const { var_index($name) }
    };
}

/// An entry (key, value) filled from an emptied one of an earlier request when there is one.
pub(super) fn entry(
    spare: &mut Vec<(String, Vec<u8>)>,
    key: &str,
    value: &[u8],
) -> (String, Vec<u8>) {
    match spare.pop() {
        Some((mut k, mut v)) => {
            k.push_str(key);
            v.extend_from_slice(value);
            (k, v)
        }
        None => (key.to_string(), value.to_vec()),
    }
}

/// `vi` for a name that may not be a variable (upper-case, as `VARIABLES` spells them).
fn find_variable(name: &str) -> Option<usize> {
    // Names come from the engine and the rule files, not from requests: a fixed seed.
    type ByName = HashMap<&'static str, usize, foldhash::fast::FixedState>;
    static BY_NAME: std::sync::OnceLock<ByName> = std::sync::OnceLock::new();
    let by_name = BY_NAME.get_or_init(|| {
        let mut m = ByName::with_hasher(foldhash::fast::FixedState::with_seed(0));
        m.extend(VARIABLES.iter().enumerate().map(|(i, v)| (*v, i)));
        m
    });
    by_name.get(name).copied()
}

/// Indexes of the variables the transaction treats specially, and per-variable properties,
/// looked up once.
struct Ix {
    args: usize,
    args_get: usize,
    args_post: usize,
    args_names: usize,
    tx: usize,
    headers: usize,
    cookies: usize,
    files: usize,
    files_sizes: usize,
    response_headers: usize,
    part_headers: usize,
    xml: usize,
    matched_var: usize,
    matched_var_name: usize,
    matched_vars: usize,
    matched_vars_names: usize,
    duration: usize,
    rule: usize,
    /// Not stored as they are: unions, names, matched values, times, TX looked up by key.
    computed: Vec<bool>,
    /// `TIME*` variables.
    time: Vec<bool>,
    /// Each variable's own index (for slices of one).
    own: Vec<usize>,
    /// ARGS_GET and ARGS_POST, which ARGS and ARGS_NAMES are made of.
    args_both: [usize; 2],
    /// For a `*_NAMES` collection of one stored collection: that collection.
    names_of: Vec<Option<usize>>,
    /// Per stored collection, the computed ones made of it (ARGS and ARGS_NAMES of
    /// ARGS_GET, REQUEST_HEADERS_NAMES of REQUEST_HEADERS), and whether there are any.
    unions: Vec<Vec<usize>>,
    has_union: Vec<bool>,
    /// Values that stay at their address for a phase (cacheable by address): everything
    /// but the collections rules write to and the matched values.
    stable: Vec<bool>,
}

impl Ix {
    /// The stored collections whose values (`false`) or keys (`true`) collection `c`
    /// resolves to: itself when stored as it is, ARGS_GET and ARGS_POST for ARGS and
    /// ARGS_NAMES, the named collection for the other `*_NAMES`. `None` for the rest of the
    /// computed ones.
    fn stored(&self, c: usize) -> Option<(&[usize], bool)> {
        if !self.computed[c] {
            Some((std::slice::from_ref(&self.own[c]), false))
        } else if c == self.args {
            Some((&self.args_both, false))
        } else if c == self.args_names {
            Some((&self.args_both, true))
        } else {
            self.names_of[c]
                .as_ref()
                .map(|b| (std::slice::from_ref(b), true))
        }
    }
}

fn ix() -> &'static Ix {
    static IX: std::sync::OnceLock<Ix> = std::sync::OnceLock::new();
    IX.get_or_init(|| {
        let table = |f: &dyn Fn(&str) -> bool| VARIABLES.iter().map(|v| f(v)).collect();
        let names_of: Vec<Option<usize>> = VARIABLES
            .iter()
            .map(|v| match *v {
                "ARGS_GET_NAMES" => Some(vi("ARGS_GET")),
                "ARGS_POST_NAMES" => Some(vi("ARGS_POST")),
                "REQUEST_HEADERS_NAMES" => Some(vi("REQUEST_HEADERS")),
                "REQUEST_COOKIES_NAMES" => Some(vi("REQUEST_COOKIES")),
                "FILES_NAMES" => Some(vi("FILES")),
                "RESPONSE_HEADERS_NAMES" => Some(vi("RESPONSE_HEADERS")),
                _ => None,
            })
            .collect();
        let unions: Vec<Vec<usize>> = (0..VARIABLES.len())
            .map(|c| {
                let mut u = Vec::new();
                if c == vi("ARGS_GET") || c == vi("ARGS_POST") {
                    u.extend([vi("ARGS"), vi("ARGS_NAMES")]);
                }
                u.extend((0..VARIABLES.len()).filter(|&d| names_of[d] == Some(c)));
                u
            })
            .collect();
        let has_union = unions.iter().map(|u| !u.is_empty()).collect();
        Ix {
            args: vi("ARGS"),
            args_get: vi("ARGS_GET"),
            args_post: vi("ARGS_POST"),
            args_names: vi("ARGS_NAMES"),
            tx: vi("TX"),
            headers: vi("REQUEST_HEADERS"),
            cookies: vi("REQUEST_COOKIES"),
            files: vi("FILES"),
            files_sizes: vi("FILES_SIZES"),
            response_headers: vi("RESPONSE_HEADERS"),
            part_headers: vi("MULTIPART_PART_HEADERS"),
            xml: vi("XML"),
            matched_var: vi("MATCHED_VAR"),
            matched_var_name: vi("MATCHED_VAR_NAME"),
            matched_vars: vi("MATCHED_VARS"),
            matched_vars_names: vi("MATCHED_VARS_NAMES"),
            duration: vi("DURATION"),
            rule: vi("RULE"),
            computed: table(&|v| {
                matches!(
                    v,
                    "ARGS"
                        | "ARGS_NAMES"
                        | "ARGS_GET_NAMES"
                        | "ARGS_POST_NAMES"
                        | "REQUEST_HEADERS_NAMES"
                        | "REQUEST_COOKIES_NAMES"
                        | "FILES_NAMES"
                        | "RESPONSE_HEADERS_NAMES"
                        | "MATCHED_VARS"
                        | "MATCHED_VARS_NAMES"
                        | "MATCHED_VAR"
                        | "MATCHED_VAR_NAME"
                        | "DURATION"
                        | "RULE"
                        | "TX"
                ) || v.starts_with("TIME")
            }),
            time: table(&|v| v.starts_with("TIME")),
            own: (0..VARIABLES.len()).collect(),
            args_both: [vi("ARGS_GET"), vi("ARGS_POST")],
            unions,
            has_union,
            names_of,
            stable: table(&|v| {
                !matches!(
                    v,
                    "TX" | "MATCHED_VAR"
                        | "MATCHED_VARS"
                        | "MATCHED_VAR_NAME"
                        | "MATCHED_VARS_NAMES"
                        | "IP"
                        | "GLOBAL"
                        | "SESSION"
                        | "USER"
                        | "RESOURCE"
                        | "DURATION"
                        | "RULE"
                ) && !v.starts_with("TIME")
            }),
        }
    })
}

/// Where evaluation goes on after the matched rule at `at` of `phase`: its `skipAfter`
/// marker, past `skip:N` rules (a chain is one, markers do not count), or the next entry.
fn next_rule(rules: &RuleSet, phase: u8, at: usize, rule: &Rule) -> usize {
    let list = &rules.phases[phase as usize];
    if rule.skip_after.is_some() {
        return rules.jumps[phase as usize][at] as usize;
    }
    let mut at = at + 1;
    let mut left = rule.skip;
    while at < list.len() && left > 0 {
        if matches!(list[at], Entry::Rule(_)) {
            left -= 1;
        }
        at += 1;
    }
    at
}

/// Whether a target of collection `coll` (counted or not) resolves to stored values, or their
/// keys, that keep their memos through a phase: what `RuleSet::hot` may pass over.
pub(super) fn quickable(coll: usize) -> bool {
    let i = ix();
    i.stable.get(coll).copied().unwrap_or(false) && i.stored(coll).is_some()
}

/// The containers of a finished transaction, kept per thread for the next one: a request
/// would otherwise allocate a hundred TX variables, the memo tables and the hit buffers
/// afresh, and free them all at its end.
#[derive(Default)]
struct Buffers {
    colls: Vec<Coll>,
    /// Entries of earlier requests (TX variables, headers, scalars), emptied: a request fills
    /// them instead of allocating ~200 keys and values and freeing them at its end.
    spare: Vec<(String, Vec<u8>)>,
    /// The TX entries of the last request, as they were: the next one's `follow` writes the
    /// plan's ~150 variables over them in place, or only those the request wrote.
    tx_old: KeptTx,
    matched: Hits,
    found: Hits,
    /// The cells of the request that gave the buffers back, for the next one's `prev_vmemo`
    /// and `prev_kmemo`; and emptied vectors for its own.
    vmemo: Vec<Vec<MemoCell>>,
    kmemo: Vec<Vec<MemoCell>>,
    spare_vmemo: Vec<Vec<MemoCell>>,
    spare_kmemo: Vec<Vec<MemoCell>>,
    all_miss: Vec<OnceCell<Box<[u64]>>>,
    set_miss: Vec<u64>,
    set_ready: Vec<bool>,
    tx_index: TxIndex,
    scratch: [String; 2],
}

/// A request's TX kept for the next request's `follow`, with what it needs to restore only the
/// entries that request wrote: most of the plan's ~150 variables are never written, and
/// rewriting them all touched ~300 cache lines per request.
#[derive(Default)]
pub(super) struct KeptTx {
    pub(super) coll: Coll,
    /// The plan that TX was started from (`None`: rewrite everything).
    pub(super) plan: Option<Arc<Plan>>,
    /// The positions written since (`Transaction::tx_dirty`); `None` when entries may have
    /// moved.
    pub(super) dirty: Option<Vec<u64>>,
}

thread_local! {
    static BUFFERS: std::cell::RefCell<Vec<Buffers>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Emptied entries kept per buffer set: a CRS request holds ~150 TX variables and a few dozen
/// headers, scalars and arguments.
const SPARE_ENTRIES: usize = 512;

/// Whether an entry's buffers are worth keeping: large ones (a copied body, a huge header)
/// are let go rather than pinned to the thread.
pub(super) fn fits_spare(k: &String, v: &Vec<u8>) -> bool {
    k.capacity() <= 256 && v.capacity() <= 4096
}

/// Moves the entries of `coll` from `from` on into `spare`, emptied, as far as it keeps them.
pub(super) fn to_spare(spare: &mut Vec<(String, Vec<u8>)>, coll: &mut Coll, from: usize) {
    for (mut k, mut v) in coll.drain(from.min(coll.len())..) {
        if spare.len() < SPARE_ENTRIES && fits_spare(&k, &v) {
            k.clear();
            v.clear();
            spare.push((k, v));
        }
    }
}

/// Transactions in flight on one thread at a time are few; more are not worth keeping.
const KEPT_BUFFERS: usize = 8;

impl Buffers {
    fn take() -> Buffers {
        let mut b = BUFFERS
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default();
        if b.colls.len() != VARIABLES.len() {
            b.colls = vec![Vec::new(); VARIABLES.len()];
        }
        b
    }

    /// Empties everything (values, memos) and keeps the allocations.
    fn give_back(mut self) {
        if self.tx_old.coll.is_empty() {
            self.tx_old.coll = std::mem::take(&mut self.colls[ix().tx]);
        }
        for coll in self.colls.iter_mut().filter(|c| !c.is_empty()) {
            to_spare(&mut self.spare, coll, 0);
            // A request with thousands of arguments does not pin their slots to the thread.
            coll.shrink_to(1024);
        }
        // The cells of two requests ago go; the last request's stay for the next one.
        self.spare_vmemo.iter_mut().for_each(Vec::clear);
        self.spare_kmemo.iter_mut().for_each(Vec::clear);
        self.all_miss.clear();
        self.tx_index.map.clear();
        self.matched.clear();
        self.found.clear();
        let _ = BUFFERS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEPT_BUFFERS {
                p.push(self);
            }
        });
    }
}

/// A stored value as text: borrowed when it is UTF-8 (the check is much faster than the
/// lossy conversion's chunk walk), else with replacement characters.
fn text_of(v: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(v) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(v),
    }
}

/// The TX keys of a match's capture groups.
const CAPTURE_KEYS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The `tx_digits` bit of TX key `key`: set for the capture keys `0`..`9`.
fn digit_bit(key: &str) -> u16 {
    match key.as_bytes() {
        [d @ b'0'..=b'9'] => 1 << (d - b'0'),
        _ => 0,
    }
}

/// Where a stored value's memo is kept once a rule needs it.
type MemoCell = OnceCell<Arc<ValueMemo>>;

/// A cell for the value at position `n` of collection `c`: holding the memo the last
/// request's value there had, when that value had the same bytes (and rule set).
fn reuse(prev: &mut [Vec<MemoCell>], c: usize, n: usize, set: u64, value: &[u8]) -> MemoCell {
    prev.get_mut(c)
        .and_then(|p| p.get_mut(n))
        .and_then(OnceCell::take)
        .filter(|m| m.is(set, value))
        .map_or_else(OnceCell::new, OnceCell::from)
}

/// Receives each value a target resolves to: key, value, and the value's memo cell when it
/// has one.
type ValueSink<'a> = dyn FnMut(&str, &[u8], Option<&MemoCell>) + 'a;

/// TX positions by key hash, seeded per process (a colliding key costs a scan, no more).
struct TxIndex {
    /// `tx_key_hash` of a key → its position.
    map: HashMap<u64, u32, foldhash::fast::FixedState>,
}

impl TxIndex {
    /// An index that has not allocated (what a dropped transaction is left with).
    fn empty() -> TxIndex {
        TxIndex {
            map: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
        }
    }
}

/// The hash a transaction files TX variable `key` (lower-case) under; rules that know their
/// key compute it at load. The seed is random per process: keys may come from requests.
pub(super) fn tx_key_hash(key: &str) -> u64 {
    static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let seed = *SEED.get_or_init(|| {
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u64)
    });
    std::hash::BuildHasher::hash_one(&foldhash::fast::FixedState::with_seed(seed), key.as_bytes())
}

impl Default for TxIndex {
    fn default() -> Self {
        TxIndex {
            map: HashMap::with_capacity_and_hasher(128, foldhash::fast::FixedState::with_seed(0)),
        }
    }
}

/// A value a rule link matched: its name (`ARGS:q`), the value the operator saw, and the
/// operator's captures.
#[derive(Default)]
struct Hit {
    name: String,
    value: Vec<u8>,
    caps: Vec<Vec<u8>>,
}

/// Hits kept between rules, their buffers reused: most rules that match on clean traffic
/// (the paranoia-level jumps, the set-up rules) would otherwise allocate for every match.
#[derive(Default)]
struct Hits {
    v: Vec<Hit>,
    n: usize,
}

impl Hits {
    fn clear(&mut self) {
        self.n = 0;
    }

    /// A cleared hit at the end.
    fn next(&mut self) -> &mut Hit {
        if self.n == self.v.len() {
            self.v.push(Hit::default());
        }
        let h = &mut self.v[self.n];
        self.n += 1;
        h.name.clear();
        h.value.clear();
        h.caps.clear();
        h
    }

    fn is_empty(&self) -> bool {
        self.n == 0
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.v[..self.n]
            .iter()
            .map(|h| (h.name.as_str(), h.value.as_slice()))
    }

    fn last(&self) -> Option<(&str, &[u8])> {
        self.iter().last()
    }
}

/// An address as REMOTE_ADDR shows it (IPv4-mapped IPv6 as IPv4), written into `buf`.
fn ip_text(ip: IpAddr, buf: &mut [u8; 48]) -> &[u8] {
    use std::io::Write;
    let mut w = &mut buf[..];
    match ip.to_canonical() {
        // Every request: the octets without the formatting machinery.
        IpAddr::V4(v4) => {
            let mut n = itoa::Buffer::new();
            for (i, o) in v4.octets().iter().enumerate() {
                if i > 0 {
                    let _ = w.write_all(b".");
                }
                let _ = w.write_all(n.format(*o).as_bytes());
            }
        }
        v6 => {
            let _ = write!(w, "{v6}");
        }
    }
    let left = w.len();
    &buf[..48 - left]
}

fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            let h = |b: u8| (b as char).to_digit(16);
            if let (Some(a), Some(b)) = (h(s[i + 1]), h(s[i + 2])) {
                out.push((a * 16 + b) as u8);
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Macro context: the transaction and the rule whose actions are running.
struct Mx<'a> {
    tx: &'a Transaction,
    rule: Option<&'a Rule>,
}

impl Macros for Mx<'_> {
    fn expand<'b>(&'b self, text: &'b str) -> Cow<'b, str> {
        self.tx.expand(self.rule, text)
    }

    fn tx<'b>(&'b self, key: &str, hash: u64) -> &'b [u8] {
        match self.tx.tx_pos_hashed(hash, key) {
            Some(at) => &self.tx.colls[ix().tx][at].1,
            None => b"",
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // A TX started from a plan is kept with what this request wrote (`follow` took the
        // last one); any other is kept for a full rewrite, unless an older one is still here.
        let mut tx_old = std::mem::take(&mut self.tx_old);
        if tx_old.coll.is_empty() {
            tx_old = KeptTx {
                coll: std::mem::take(&mut self.colls[ix().tx]),
                plan: self.plan.take(),
                dirty: (!self.tx_moved).then(|| std::mem::take(&mut self.tx_dirty)),
            };
        }
        Buffers {
            colls: std::mem::take(&mut self.colls),
            spare: std::mem::take(&mut self.spare),
            tx_old,
            matched: std::mem::take(&mut self.matched),
            found: std::mem::take(&mut self.found),
            vmemo: std::mem::take(&mut self.vmemo),
            kmemo: std::mem::take(&mut self.kmemo),
            spare_vmemo: std::mem::take(&mut self.prev_vmemo),
            spare_kmemo: std::mem::take(&mut self.prev_kmemo),
            all_miss: std::mem::take(&mut self.all_miss),
            set_miss: std::mem::take(&mut self.set_miss),
            set_ready: std::mem::take(&mut self.set_ready),
            tx_index: std::mem::replace(&mut self.tx_index, TxIndex::empty()),
            scratch: std::mem::take(&mut self.scratch),
        }
        .give_back();
    }
}

impl Transaction {
    pub fn new(rules: Arc<RuleSet>, mode: Mode, unique_id: &str) -> Transaction {
        let mode = match (mode, rules.settings.engine) {
            (Mode::Off, _) | (_, Mode::Off) => Mode::Off,
            (Mode::DetectionOnly, _) | (_, Mode::DetectionOnly) => Mode::DetectionOnly,
            _ => Mode::On,
        };
        let body_access = rules.settings.body_access;
        let b = Buffers::take();
        let mut t = Transaction {
            rules,
            mode,
            colls: b.colls,
            matched: b.matched,
            found: b.found,
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            removed_targets: Vec::new(),
            removed_targets_tag: Vec::new(),
            body_kind: None,
            body_access,
            force_body_var: false,
            body_limits: BodyLimits::default(),
            content_type: String::new(),
            processor: None,
            raw_body: Vec::new(),
            body_seen: 0,
            started: Instant::now(),
            allow: None,
            done_phases: 0,
            vmemo: b.spare_vmemo,
            kmemo: b.spare_kmemo,
            prev_vmemo: b.vmemo,
            prev_kmemo: b.kmemo,
            all_miss: b.all_miss,
            set_miss: b.set_miss,
            set_ready: b.set_ready,
            tx_index: b.tx_index,
            scratch: b.scratch,
            spare: b.spare,
            tx_old: b.tx_old,
            tx_dirty: Vec::new(),
            tx_moved: false,
            tx_digits: 0,
            matches: Vec::new(),
            intervention: None,
            would_block: None,
            oversize: false,
            plan: None,
            touched: 0,
            #[cfg(test)]
            chains: 0,
        };
        t.set_scalar(v!("UNIQUE_ID"), unique_id.as_bytes());
        // Defined (empty) even without a body processor, so `!@rx` rules on it can match.
        t.set_scalar(v!("REQBODY_PROCESSOR"), b"");
        t
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn set_body_limits(&mut self, l: BodyLimits) {
        self.body_limits = l;
    }

    /// Applies tenant exclusions (rule ids, tags, targets).
    /// Voids a plan followed before (see `follow`).
    pub fn exclude(&mut self, e: &Exclusions) {
        if !(e.ids.is_empty() && e.tags.is_empty() && e.targets.is_empty()) {
            self.plan = None;
        }
        self.removed_ids.extend_from_slice(&e.ids);
        self.removed_tags.extend(e.tags.iter().cloned());
        self.removed_targets.extend(e.targets.iter().cloned());
    }

    /// Sets a TX variable before evaluation (e.g. `paranoia_level` from the tenant's config).
    pub fn set_tx(&mut self, name: &str, value: &str) {
        self.tx_put(name.to_ascii_lowercase(), value.as_bytes().to_vec());
    }

    pub fn tx(&self, name: &str) -> Option<&[u8]> {
        let pos = self.tx_pos(&name.to_ascii_lowercase())?;
        Some(&self.colls[ix().tx][pos].1)
    }

    /// Where the TX variable `key` (lower-case) is stored.
    fn tx_pos(&self, key: &str) -> Option<usize> {
        self.tx_pos_hashed(tx_key_hash(key), key)
    }

    /// `tx_pos` with the key's `tx_key_hash` known.
    fn tx_pos_hashed(&self, hash: u64, key: &str) -> Option<usize> {
        let coll = &self.colls[ix().tx];
        let at = *self.tx_index.map.get(&hash)? as usize;
        if coll.get(at).is_some_and(|(k, _)| k == key) {
            return Some(at);
        }
        // Another key with the same hash holds the slot.
        coll.iter().position(|(k, _)| k == key)
    }

    /// Sets TX variable `key` (lower-case), whose `tx_key_hash` is `hash`, reusing the old
    /// value's buffer. Setvar names are hashed at load: the CRS set-up rules create ~60 TX
    /// variables on every request.
    fn tx_set_hashed(&mut self, hash: u64, key: &str, value: &[u8]) {
        match self.tx_pos_hashed(hash, key) {
            Some(at) => {
                let v = self.tx_value_mut(at);
                v.clear();
                v.extend_from_slice(value);
            }
            None => {
                let (k, v) = entry(&mut self.spare, key, value);
                self.tx_push(hash, k, v);
            }
        }
    }

    /// Sets TX variable `key` (lower-case).
    fn tx_put(&mut self, key: String, value: Vec<u8>) {
        let hash = tx_key_hash(&key);
        match self.tx_pos_hashed(hash, &key) {
            Some(at) => *self.tx_value_mut(at) = value,
            None => self.tx_push(hash, key, value),
        }
    }

    /// The value of the TX variable at position `at`, to write: every write of an existing
    /// variable goes through here, which notes it for the next request's `follow` (see
    /// `tx_dirty`).
    fn tx_value_mut(&mut self, at: usize) -> &mut Vec<u8> {
        if let Some(w) = self.tx_dirty.get_mut(at / 64) {
            *w |= 1 << (at % 64);
        }
        &mut self.colls[ix().tx][at].1
    }

    /// Adds TX variable `key`, known to be absent, whose `tx_key_hash` is `hash`.
    fn tx_push(&mut self, hash: u64, key: String, value: Vec<u8>) {
        let coll = &mut self.colls[ix().tx];
        self.tx_index.map.entry(hash).or_insert(coll.len() as u32);
        self.tx_digits |= digit_bit(&key);
        coll.push((key, value));
    }

    /// Removes TX variables (rare: positions are indexed again).
    fn tx_retain(&mut self, keep: impl Fn(&str) -> bool) {
        let coll = &mut self.colls[ix().tx];
        let before = coll.len();
        coll.retain(|(k, _)| keep(k));
        if coll.len() != before {
            self.tx_moved = true;
            self.tx_index.map.clear();
            self.tx_digits = coll.iter().fold(0, |d, (k, _)| d | digit_bit(k));
            for (i, (k, _)) in coll.iter().enumerate() {
                let h = tx_key_hash(k);
                self.tx_index.map.entry(h).or_insert(i as u32);
            }
        }
    }

    /// Sets scalar variable `c` (see `v!`) to a copy of `value`, in the buffer it had.
    fn set_scalar(&mut self, c: usize, value: &[u8]) {
        self.scalar_mut(c).extend_from_slice(value);
    }

    /// Scalar variable `c`'s value, emptied, to be written in place.
    fn scalar_mut(&mut self, c: usize) -> &mut Vec<u8> {
        self.forget_memos(c);
        self.touched |= 1 << c;
        if !matches!(self.colls[c].as_slice(), [(k, _)] if k.is_empty()) {
            self.recycle(c);
            let e = entry(&mut self.spare, "", b"");
            self.colls[c].push(e);
        }
        let v = &mut self.colls[c][0].1;
        v.clear();
        v
    }

    /// `set_scalar` keeping `value` itself (a body, a value made anyway).
    fn put_scalar(&mut self, c: usize, value: Vec<u8>) {
        self.recycle(c);
        self.colls[c].push((String::new(), value));
        self.forget_memos(c);
        self.touched |= 1 << c;
    }

    /// Empties collection `c` into the spare entries.
    fn recycle(&mut self, c: usize) {
        to_spare(&mut self.spare, &mut self.colls[c], 0);
    }

    /// Collection `c` changed in place: its values' memo cells, and what was worked out from
    /// them, belong to the old values (a `ctl:requestBodyProcessor` rewrites
    /// REQBODY_PROCESSOR in the middle of phase 1; the body's collections are filled
    /// between phases 1 and 2).
    fn forget_memos(&mut self, c: usize) {
        if let Some(m) = self.vmemo.get_mut(c) {
            m.clear();
        }
        if let Some(m) = self.kmemo.get_mut(c) {
            m.clear();
        }
        self.forget_misses(c);
    }

    /// The `all_miss` words of collection `c` and of the collections made of it (ARGS and
    /// ARGS_NAMES of ARGS_GET and ARGS_POST, a `*_NAMES` of its collection).
    fn forget_misses(&mut self, c: usize) {
        if self.all_miss.get(c).is_none_or(|w| w.get().is_none()) && !ix().has_union[c] {
            return;
        }
        for &d in std::iter::once(&c).chain(&ix().unions[c]) {
            if let Some(w) = self.all_miss.get_mut(d) {
                *w = OnceCell::new();
            }
        }
        self.set_ready.fill(false);
    }

    /// Every memo cell and miss word: the phase's values are new (response phases).
    fn forget_all_memos(&mut self) {
        self.vmemo.iter_mut().for_each(Vec::clear);
        self.kmemo.iter_mut().for_each(Vec::clear);
        self.all_miss.clear();
    }

    /// The connection: client and server addresses.
    pub fn set_connection(&mut self, client: IpAddr, client_port: u16, server: IpAddr, port: u16) {
        let mut buf = [0u8; 48];
        self.set_scalar(v!("REMOTE_ADDR"), ip_text(client, &mut buf));
        let mut n = itoa::Buffer::new();
        self.set_scalar(v!("REMOTE_PORT"), n.format(client_port).as_bytes());
        self.set_scalar(v!("SERVER_ADDR"), ip_text(server, &mut buf));
        self.set_scalar(v!("SERVER_PORT"), n.format(port).as_bytes());
    }

    /// The request line as received: method, target (`/path?query` or absolute form), protocol.
    pub fn set_request_line(&mut self, method: &str, uri: &str, protocol: &str) {
        self.set_scalar(v!("REQUEST_METHOD"), method.as_bytes());
        self.set_scalar(v!("REQUEST_PROTOCOL"), protocol.as_bytes());
        let line = self.scalar_mut(v!("REQUEST_LINE"));
        line.extend_from_slice(method.as_bytes());
        line.push(b' ');
        line.extend_from_slice(uri.as_bytes());
        line.push(b' ');
        line.extend_from_slice(protocol.as_bytes());
        self.set_scalar(v!("REQUEST_URI_RAW"), uri.as_bytes());
        // REQUEST_URI drops scheme and authority of an absolute-form target.
        let rel = match uri.find("://") {
            Some(p) if !uri[..p].contains('/') => {
                let rest = &uri[p + 3..];
                match rest.find('/') {
                    Some(s) => &rest[s..],
                    None => "/",
                }
            }
            _ => uri,
        };
        self.set_scalar(v!("REQUEST_URI"), rel.as_bytes());
        let (path, query) = match rel.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rel, None),
        };
        let decoded = percent_decode(path.as_bytes());
        let base = match decoded.iter().rposition(|b| *b == b'/' || *b == b'\\') {
            Some(p) => &decoded[p + 1..],
            None => &decoded[..],
        };
        self.set_scalar(v!("REQUEST_FILENAME"), &decoded);
        self.set_scalar(v!("REQUEST_BASENAME"), base);
        if let Some(q) = query {
            self.set_scalar(v!("QUERY_STRING"), q.as_bytes());
            let mut p = body::processor(
                body::Kind::UrlEncoded,
                "",
                body::Limits {
                    inspect_bytes: usize::MAX,
                    max_args: self.body_limits.max_args,
                    max_json_depth: 1,
                },
            );
            p.feed(q.as_bytes());
            let parsed = p.finish();
            self.touched |= 1 << ix().args_get;
            self.colls[ix().args_get] = parsed
                .args
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
        } else {
            self.set_scalar(v!("QUERY_STRING"), b"");
        }
    }

    /// One request header, in order (repeated names are kept).
    pub fn add_header(&mut self, name: &str, value: &[u8]) {
        let i = ix();
        if name.eq_ignore_ascii_case("cookie") {
            for part in value.split(|b| *b == b';') {
                let part = part.trim_ascii_start();
                if part.is_empty() {
                    continue;
                }
                let (k, v) = match part.iter().position(|b| *b == b'=') {
                    Some(p) => (&part[..p], &part[p + 1..]),
                    None => (part, &b""[..]),
                };
                let e = entry(&mut self.spare, &String::from_utf8_lossy(k), v);
                self.colls[i.cookies].push(e);
                self.touched |= 1 << i.cookies;
            }
        } else if name.eq_ignore_ascii_case("content-type") {
            self.content_type = String::from_utf8_lossy(value).into_owned();
        } else if name.eq_ignore_ascii_case("host") {
            let host = String::from_utf8_lossy(value);
            let h = if host.starts_with('[') {
                host.split(']').next().unwrap_or("").trim_start_matches('[')
            } else {
                host.split(':').next().unwrap_or("")
            };
            self.set_scalar(v!("SERVER_NAME"), h.as_bytes());
        } else if name.eq_ignore_ascii_case("authorization") {
            let scheme = value.split(|b| *b == b' ').next().unwrap_or(b"");
            self.set_scalar(v!("AUTH_TYPE"), scheme);
        }
        let e = entry(&mut self.spare, name, value);
        self.colls[i.headers].push(e);
        self.touched |= 1 << i.headers;
    }

    /// Runs phase 1 (request headers). Returns the intervention, if any.
    pub fn process_request_headers(&mut self) -> Option<Intervention> {
        if let Some(k) = body::Kind::for_content_type(&self.content_type) {
            self.body_kind = Some(k);
            self.set_scalar(v!("REQBODY_PROCESSOR"), kind_name(k).as_bytes());
        }
        self.run_phase(1)
    }

    /// `SecRequestBodyLimitAction Reject` for a body of `len` bytes (announced, or seen so
    /// far): a body without file uploads longer than what is inspected is refused with 413
    /// (recorded as would-block while detecting). True when the request is to be refused.
    pub fn refuse_oversize(&mut self, len: u64) -> bool {
        if !self.body_limits.reject_oversize
            || !self.wants_body()
            || self.body_kind == Some(body::Kind::Multipart)
            || len <= self.body_limits.inspect_bytes as u64
            || self.oversize
        {
            return false;
        }
        self.oversize = true;
        match self.mode {
            Mode::On => {
                self.intervention = Some(Intervention {
                    status: 413,
                    rule_id: 0,
                    drop: false,
                    redirect: None,
                });
                true
            }
            _ => {
                self.would_block.get_or_insert(0);
                false
            }
        }
    }

    /// Whether the body was over the inspection limit under `reject` (refused, or would
    /// have been while detecting).
    pub fn oversize(&self) -> bool {
        self.oversize
    }

    /// Body bytes inspected at most.
    pub fn inspect_limit(&self) -> usize {
        self.body_limits.inspect_bytes
    }

    /// Whether phase 2 wants the request body.
    pub fn wants_body(&self) -> bool {
        self.mode != Mode::Off && self.body_access && self.intervention.is_none()
    }

    /// Feeds request body bytes (up to the inspection limit; the rest is not inspected).
    pub fn feed_body(&mut self, chunk: &[u8]) {
        if !self.wants_body() {
            return;
        }
        let room = self
            .body_limits
            .inspect_bytes
            .saturating_sub(self.body_seen);
        let chunk = &chunk[..chunk.len().min(room)];
        self.body_seen += chunk.len();
        if chunk.is_empty() {
            return;
        }
        if self.processor.is_none() {
            if let Some(k) = self.body_kind {
                self.processor = Some(body::processor(
                    k,
                    &self.content_type,
                    body::Limits {
                        inspect_bytes: self.body_limits.inspect_bytes,
                        max_args: self.body_limits.max_args,
                        max_json_depth: self.body_limits.max_json_depth,
                    },
                ));
            }
        }
        if let Some(p) = self.processor.as_mut() {
            p.feed(chunk);
        }
        self.raw_body.extend_from_slice(chunk);
    }

    /// Ends the body and runs phase 2 (request body; also for requests without one).
    pub fn process_request_body(&mut self) -> Option<Intervention> {
        if self.done_phases >= 2 {
            return self.intervention.clone();
        }
        let i = ix();
        if let Some(p) = self.processor.take() {
            let parsed = p.finish();
            for c in [i.args_post, i.files, i.files_sizes, i.part_headers, i.xml] {
                self.forget_memos(c);
                self.touched |= 1 << c;
            }
            self.colls[i.args_post] = parsed
                .args
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
            let mut combined = 0u64;
            for f in parsed.files {
                let field = String::from_utf8_lossy(&f.field).into_owned();
                combined += f.size;
                self.colls[i.files].push((field.clone(), f.filename));
                self.colls[i.files_sizes].push((field, f.size.to_string().into_bytes()));
            }
            self.set_scalar(
                v!("FILES_COMBINED_SIZE"),
                itoa::Buffer::new().format(combined).as_bytes(),
            );
            for (name, v) in parsed.vars {
                self.put_scalar(vi(name), v);
            }
            self.colls[i.part_headers] = parsed
                .part_headers
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
            self.colls[i.xml] = parsed
                .xml
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let (err, msg) = match parsed.error {
                Some(m) => (b"1", m.into_bytes()),
                None => (b"0", Vec::new()),
            };
            self.set_scalar(v!("REQBODY_ERROR"), err);
            self.set_scalar(v!("REQBODY_PROCESSOR_ERROR"), err);
            self.put_scalar(v!("REQBODY_ERROR_MSG"), msg);
        } else {
            self.set_scalar(v!("REQBODY_ERROR"), b"0");
            self.set_scalar(v!("REQBODY_PROCESSOR_ERROR"), b"0");
        }
        let mut n = itoa::Buffer::new();
        self.set_scalar(
            v!("REQUEST_BODY_LENGTH"),
            n.format(self.body_seen).as_bytes(),
        );
        let body = std::mem::take(&mut self.raw_body);
        let headers_len: usize = self.colls[i.headers]
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let line_len = self.first(v!("REQUEST_LINE")).len() + 2;
        self.set_scalar(
            v!("FULL_REQUEST_LENGTH"),
            n.format(line_len + headers_len + 2 + body.len()).as_bytes(),
        );
        // REQUEST_BODY holds the raw body for the urlencoded processor, or when a rule forces
        // it (the CRS is written for these ModSecurity semantics).
        if self.body_kind == Some(body::Kind::UrlEncoded) || self.force_body_var {
            self.put_scalar(v!("REQUEST_BODY"), body);
        }
        let combined: usize = [i.args_get, i.args_post]
            .iter()
            .flat_map(|c| self.colls[*c].iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        self.set_scalar(v!("ARGS_COMBINED_SIZE"), n.format(combined).as_bytes());
        // The memo cells of phase 1's values stay (headers, cookies, query arguments): those
        // collections did not change, and the ones that did were forgotten as they changed.
        self.run_phase(2)
    }

    /// Runs phase 3 on the backend's response status line and headers. Returns the
    /// intervention, if any (also one from an earlier phase).
    pub fn process_response_headers<'h>(
        &mut self,
        status: u16,
        protocol: &str,
        headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    ) -> Option<Intervention> {
        if self.done_phases >= 3 {
            return self.intervention.clone();
        }
        let i = ix();
        self.set_scalar(
            v!("RESPONSE_STATUS"),
            itoa::Buffer::new().format(status).as_bytes(),
        );
        self.set_scalar(v!("RESPONSE_PROTOCOL"), protocol.as_bytes());
        let mut stored = Vec::new();
        for (name, value) in headers {
            if name.eq_ignore_ascii_case("content-type") {
                self.set_scalar(v!("RESPONSE_CONTENT_TYPE"), value);
            } else if name.eq_ignore_ascii_case("content-length") {
                self.set_scalar(v!("RESPONSE_CONTENT_LENGTH"), value);
            }
            stored.push((name.to_string(), value.to_vec()));
        }
        self.colls[i.response_headers] = stored;
        self.touched |= 1 << i.response_headers;
        self.forget_all_memos();
        self.run_phase(3)
    }

    /// Ends the response body (the bytes given, already cut to the inspection limit) and runs
    /// phase 4.
    pub fn process_response_body(&mut self, body: Vec<u8>) -> Option<Intervention> {
        if self.done_phases >= 4 {
            return self.intervention.clone();
        }
        self.done_phases = self.done_phases.max(3);
        self.put_scalar(v!("RESPONSE_BODY"), body);
        self.forget_all_memos();
        self.run_phase(4)
    }

    /// Runs phase 5 (logging) once the other phases are done, whatever they decided: the CRS
    /// correlates the request's scores there (980130 "Inbound Anomaly Score Exceeded" with the
    /// score per attack type, the line security analysts look for). It comes too late to
    /// change anything, so a disruptive action in it is ignored and the earlier verdict
    /// stays.
    pub fn process_logging(&mut self) {
        if self.done_phases >= 5 || self.mode == Mode::Off {
            return;
        }
        let verdict = self.intervention.take();
        let allow = self.allow.take();
        if !self.quiet_logging() {
            self.run_phase(5);
        }
        self.done_phases = 5;
        self.intervention = verdict;
        self.allow = allow;
    }

    /// Phase 5 as the plan worked it out (`plan.rs`, `QuietLogging`), when this request
    /// wrote none of the TX variables the phase reads: its writes are made and true is
    /// returned; else false, and the phase is evaluated.
    fn quiet_logging(&mut self) -> bool {
        let Some(plan) = self.plan.clone() else {
            return false;
        };
        let Some(q) = &plan.quiet_logging else {
            return false;
        };
        let unchanged = !self.tx_moved
            && q.reads.iter().all(|(key, hash, at)| match at {
                Some(at) => self
                    .tx_dirty
                    .get(at / 64)
                    .is_some_and(|w| w & (1 << (at % 64)) == 0),
                None => self.tx_pos_hashed(*hash, key).is_none(),
            });
        if !unchanged {
            return false;
        }
        for (key, hash, value) in &q.writes {
            self.tx_set_hashed(*hash, key, value);
        }
        self.done_phases = 5;
        true
    }

    /// The highest phase run so far (0 before phase 1).
    pub fn phase_done(&self) -> u8 {
        self.done_phases
    }

    fn first(&self, coll: usize) -> &[u8] {
        self.colls[coll]
            .first()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(b"")
    }

    /// Expands `%{collection.key}` / `%{VARIABLE}` macros.
    pub fn expand<'b>(&self, rule: Option<&Rule>, text: &'b str) -> Cow<'b, str> {
        if macro_at(text).is_none() {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len() + 16);
        split_macros(text, |raw| match raw {
            Raw::Text(t) => out.push_str(t),
            Raw::Macro(name) => self.macro_into(rule, name, &mut out),
        });
        Cow::Owned(out)
    }

    /// A template (`rules::Template`) expanded, as `expand` expands its text.
    fn render(&self, rule: Option<&Rule>, t: &Template) -> String {
        // Sized once: macros mostly expand to short numbers and names.
        let mut out = String::with_capacity(t.len_hint());
        self.render_into(rule, t, &mut out);
        out
    }

    /// `render` appended to `out`.
    fn render_into(&self, rule: Option<&Rule>, t: &Template, out: &mut String) {
        for p in &t.0 {
            match p {
                Piece::Text(s) => out.push_str(s),
                Piece::Tx(k, h) => {
                    if let Some(at) = self.tx_pos_hashed(*h, k) {
                        out.push_str(&text_of(&self.colls[ix().tx][at].1));
                    }
                }
                Piece::Macro(name) => self.macro_into(rule, name, out),
            }
        }
    }

    /// `render` for a text used at once: one piece is borrowed, not copied.
    fn render_view<'s>(&'s self, rule: Option<&Rule>, t: &'s Template) -> Cow<'s, str> {
        match t.0.as_slice() {
            [] => Cow::Borrowed(""),
            [Piece::Text(s)] => Cow::Borrowed(s),
            [Piece::Tx(k, h)] => match self.tx_pos_hashed(*h, k) {
                Some(at) => text_of(&self.colls[ix().tx][at].1),
                None => Cow::Borrowed(""),
            },
            _ => Cow::Owned(self.render(rule, t)),
        }
    }

    fn macro_into(&self, rule: Option<&Rule>, name: &str, out: &mut String) {
        let (coll, key) = match name.split_once('.') {
            Some((c, k)) => (c, Some(k)),
            None => (name, None),
        };
        if let (true, Some(k)) = (coll.eq_ignore_ascii_case("tx"), key) {
            // The common macro (`%{tx.anomaly_score}`): TX keys are stored lower-case.
            let k: Cow<str> = if k.bytes().any(|b| b.is_ascii_uppercase()) {
                Cow::Owned(k.to_ascii_lowercase())
            } else {
                Cow::Borrowed(k)
            };
            if let Some(at) = self.tx_pos(&k) {
                out.push_str(&text_of(&self.colls[ix().tx][at].1));
            }
            return;
        }
        out.push_str(&self.macro_value(rule, coll, key));
    }

    fn macro_value(&self, rule: Option<&Rule>, coll: &str, key: Option<&str>) -> String {
        let upper = coll.to_ascii_uppercase();
        if upper == "RULE" {
            let Some(r) = rule else {
                return String::new();
            };
            return match key.map(|k| k.to_ascii_lowercase()).as_deref() {
                Some("id") => r.id.to_string(),
                Some("msg") => r
                    .msg
                    .as_deref()
                    .map(|m| self.expand(None, m).into_owned())
                    .unwrap_or_default(),
                Some("severity") => r.severity.map(|s| s.to_string()).unwrap_or_default(),
                Some("logdata") => r
                    .logdata
                    .as_deref()
                    .map(|m| self.expand(None, m).into_owned())
                    .unwrap_or_default(),
                _ => String::new(),
            };
        }
        let Some(ci) = find_variable(&upper) else {
            return String::new();
        };
        let var = Var {
            coll: ci,
            selector: key.map(|k| super::rules::Sel::Key(k.to_ascii_lowercase())),
            count: false,
        };
        let mut first = None;
        self.each_value(&var, rule, &[], &[], None, &mut |_, v, _| {
            if first.is_none() {
                first = Some(String::from_utf8_lossy(v).into_owned());
            }
        });
        first.unwrap_or_default()
    }

    /// Resolves one target into its values, minus exclusions, and hands each to `f` as
    /// (key, value, stable). `stable` says the value stays at its address for the phase, so
    /// its transformations may be cached by address. Selection happens as values are produced
    /// (TX holds a hundred values; most rules want one of them). Stored values whose memo
    /// says memo slot `known_miss` does not match them are left out (not when counting).
    fn each_value(
        &self,
        var: &Var,
        rule: Option<&Rule>,
        excl: &[Var],
        extra: &[&Var],
        known_miss: Option<u32>,
        f: &mut ValueSink<'_>,
    ) {
        if var.count {
            let n = match self.quick_count(var, excl, extra) {
                Some(n) => n,
                None => {
                    let mut n = 0usize;
                    self.select(var, rule, excl, extra, None, &mut |_, _, _| n += 1);
                    n
                }
            };
            // Counted on most requests (`&ARGS`, `&TX:x`): formatted without an allocation.
            let mut buf = itoa::Buffer::new();
            f("", buf.format(n).as_bytes(), None);
        } else {
            self.select(var, rule, excl, extra, known_miss, f);
        }
    }

    /// `&COLLECTION` and `&COLLECTION:key` of a stored collection (or of TX by key) that no
    /// exclusion touches, counted without walking values through `select` (the CRS counts
    /// `&REQUEST_HEADERS:Host`, `&ARGS` and the like on every request). `None`: the general
    /// path counts.
    fn quick_count(&self, var: &Var, excl: &[Var], extra: &[&Var]) -> Option<usize> {
        let c = var.coll;
        let i = ix();
        if excl.iter().any(|e| e.coll == c) || extra.iter().any(|e| e.coll == c) {
            return None;
        }
        if c == i.tx {
            return match &var.selector {
                Some(Sel::Key(k)) => Some(usize::from(self.tx_pos(k).is_some())),
                _ => None,
            };
        }
        if i.computed[c] {
            return None;
        }
        let coll = &self.colls[c];
        match &var.selector {
            None => Some(coll.len()),
            Some(s @ Sel::Key(_)) => Some(coll.iter().filter(|(k, _)| s.matches(k)).count()),
            Some(_) => None,
        }
    }

    /// `each_value` without counting. Collections are told apart by index (no string
    /// compares on this path).
    fn select(
        &self,
        var: &Var,
        rule: Option<&Rule>,
        excl: &[Var],
        extra: &[&Var],
        known_miss: Option<u32>,
        f: &mut ValueSink<'_>,
    ) {
        let c = var.coll;
        let i = ix();
        let excluding = excl.iter().any(|e| e.coll == c) || extra.iter().any(|e| e.coll == c);
        // TX keys are unique and stored lower-case: one comparison each, stop at the hit.
        if c == i.tx && !excluding {
            if let Some(Sel::Key(k)) = &var.selector {
                if let Some(at) = self.tx_pos(k) {
                    let (key, v) = &self.colls[c][at];
                    f(key, v, None);
                }
                return;
            }
        }
        let filtered = excluding || var.selector.is_some();
        let stable = i.stable[c];
        let mut emit = |k: &str, v: &[u8], st: Option<&MemoCell>| {
            if !filtered
                || (var.selector.as_ref().is_none_or(|s| s.matches(k))
                    && !excl
                        .iter()
                        .chain(extra.iter().copied())
                        .any(|e| e.coll == c && e.selector.as_ref().is_none_or(|s| s.matches(k))))
            {
                f(k, v, st)
            }
        };
        // Stored values carry their memo cell (values rules write to do not).
        fn cells(memos: &[Vec<MemoCell>], coll: usize, stable: bool) -> &[MemoCell] {
            match memos.get(coll) {
                Some(v) if stable => v,
                _ => &[],
            }
        }
        // Before the selector and exclusions: most values are known misses.
        let passed_over = |cell: Option<&MemoCell>| {
            known_miss.is_some_and(|slot| {
                cell.and_then(OnceCell::get)
                    .is_some_and(|m| m.known_miss(slot))
            })
        };
        let mut pairs = |coll: usize| {
            let memos = cells(&self.vmemo, coll, stable);
            for (n, (k, v)) in self.colls[coll].iter().enumerate() {
                let cell = memos.get(n);
                if !passed_over(cell) {
                    emit(k, v, cell);
                }
            }
        };
        if !i.computed[c] {
            pairs(c);
            return;
        }
        if c == i.args {
            i.args_both.iter().for_each(|&a| pairs(a));
            return;
        }
        if c == i.tx {
            pairs(c);
            return;
        }
        if c == i.matched_vars {
            for (k, v) in self.matched.iter() {
                emit(k, v, None);
            }
            return;
        }
        if let Some((names, true)) = i.stored(c) {
            for &coll in names {
                let memos = cells(&self.kmemo, coll, stable);
                for (n, (k, _)) in self.colls[coll].iter().enumerate() {
                    let cell = memos.get(n);
                    if !passed_over(cell) {
                        emit(k, k.as_bytes(), cell);
                    }
                }
            }
            return;
        }
        if c == i.matched_vars_names {
            for (k, _) in self.matched.iter() {
                emit(k, k.as_bytes(), None);
            }
            return;
        }
        if c == i.matched_var {
            if let Some((_, v)) = self.matched.last() {
                emit("", v, None);
            }
        } else if c == i.matched_var_name {
            if let Some((k, _)) = self.matched.last() {
                emit("", k.as_bytes(), None);
            }
        } else if c == i.duration {
            let d = self.started.elapsed().as_micros().to_string();
            emit("", d.as_bytes(), None);
        } else if c == i.rule {
            if let Some(r) = rule {
                emit("id", r.id.to_string().as_bytes(), None);
            }
        } else if i.time[c] {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            emit("", time_var(VARIABLES[c], now).as_bytes(), None);
        }
    }

    /// The memo of a stored value, made on first use.
    fn memo_of<'a>(&self, cell: &'a MemoCell, value: &[u8]) -> &'a Arc<ValueMemo> {
        cell.get_or_init(|| {
            memo::value(
                self.rules.id,
                self.rules.memo_widths.len(),
                self.rules.memo_slots,
                value,
            )
        })
    }

    /// `memo_of` for a value of collection `c`, through the pre-filters of the links reading
    /// `c` that its memo has not been through (a value seen before costs one load more).
    fn filtered_memo_of<'a>(&self, c: usize, cell: &'a MemoCell, value: &[u8]) -> &'a ValueMemo {
        let memo = self.memo_of(cell, value);
        self.prefilter(c, memo, value);
        memo
    }

    fn prefilter(&self, c: usize, memo: &ValueMemo, value: &[u8]) {
        let pf = &self.rules.prefilters;
        let want = pf.of_coll(c);
        let todo = want & !memo.filtered();
        if todo == 0 {
            return;
        }
        pf.run(
            todo,
            value,
            |key| {
                let chain = self.rules.chains.get(key)?;
                memo.out(key, || apply_chain(chain, value))
            },
            |w, bits| memo.set_miss_bits(w, bits),
        );
        memo.set_filtered(want);
    }

    /// Whether memo slot `slot` is known not to match any value `var` can resolve to (see
    /// `all_miss`). False for targets whose values rules write or the engine computes.
    fn known_miss_all(&self, var: &Var, slot: u32) -> bool {
        !var.count && self.known_miss_coll(var.coll, slot)
    }

    /// `known_miss_all` for every value of collection `c`.
    fn known_miss_coll(&self, c: usize, slot: u32) -> bool {
        self.coll_miss(c).is_some_and(|words| {
            words
                .get(slot as usize / 64)
                .is_some_and(|w| w & (1 << (slot % 64)) != 0)
        })
    }

    /// Collection `c`'s `all_miss` words, made on first use; `None` when it has none.
    fn coll_miss(&self, c: usize) -> Option<&[u64]> {
        let i = ix();
        let (sources, keys) = i.stored(c).filter(|_| i.stable[c])?;
        let cell = self.all_miss.get(c)?;
        let words = cell.get_or_init(|| {
            let mut and = vec![u64::MAX; (self.rules.memo_slots as usize).div_ceil(64)];
            for &coll in sources {
                let memos = if keys { &self.kmemo } else { &self.vmemo };
                let Some(memos) = memos.get(coll) else {
                    and.fill(0);
                    break;
                };
                for (n, (k, v)) in self.colls[coll].iter().enumerate() {
                    let Some(cell) = memos.get(n) else {
                        and.fill(0);
                        break;
                    };
                    let m = self.filtered_memo_of(c, cell, if keys { k.as_bytes() } else { v });
                    m.and_miss(&mut and);
                }
            }
            and.into_boxed_slice()
        });
        Some(words)
    }

    /// `known_miss_coll` for every target of target set `set` at once: the AND of their
    /// words (for a key-selected target, of the values under that key alone). Made word by
    /// word, the first time a rule of the phase asks for a slot in that word: a set's rules
    /// ask for a few of the ~13 words, and the AND stops at the first target that clears it.
    fn known_miss_set(&mut self, set: usize, slot: u32) -> bool {
        let words = (self.rules.memo_slots as usize).div_ceil(64);
        let w = slot as usize / 64;
        let at = set * words + w;
        if !self.set_ready[at] {
            // The words are filled outside `self`, so that the rules are read through a plain
            // borrow: an `Arc` clone here (an atomic add and subtract) ran ~60 times a request.
            let mut ready = std::mem::take(&mut self.set_ready);
            let mut miss = std::mem::take(&mut self.set_miss);
            let this = &*self;
            let rules = &*this.rules;
            let mut and = u64::MAX;
            for t in rules.hot_sets[set].iter() {
                let c = t.coll as usize;
                and &= match &t.key {
                    Some(key) => this.key_miss(c, key, w),
                    None if t.except > 0 => {
                        // Made once a phase per (collection, keys left out), after the sets.
                        let ex = (rules.hot_sets.len() + t.except as usize - 1) * words + w;
                        if !ready[ex] {
                            let except = &rules.hot_excepts[t.except as usize - 1].1;
                            // Only when a value is left out: else the collection's words
                            // (made once a phase) are the same.
                            miss[ex] = match this.coll_miss(c) {
                                Some(ws) if !this.excepts_any(c, except) => ws[w],
                                _ => this.except_miss(c, except, w),
                            };
                            ready[ex] = true;
                        }
                        miss[ex]
                    }
                    None => this.coll_miss(c).map_or(0, |ws| ws[w]),
                };
                if and == 0 {
                    break;
                }
            }
            miss[at] = and;
            ready[at] = true;
            self.set_ready = ready;
            self.set_miss = miss;
        }
        self.set_miss[at] & (1 << (slot % 64)) != 0
    }

    /// The memo slots of miss word `w` known to miss every value collection `c` holds under
    /// `key` (none when a value has no memo cell).
    fn key_miss(&self, c: usize, key: &str, w: usize) -> u64 {
        self.miss_where(
            c,
            |k| k.len() == key.len() && k.eq_ignore_ascii_case(key),
            w,
        )
    }

    /// `key_miss` for the values of collection `c` whose keys none of `except` matches.
    fn except_miss(&self, c: usize, except: &[KeyPat], w: usize) -> u64 {
        self.miss_where(c, |k| !except.iter().any(|p| p.matches(k)), w)
    }

    /// Whether one of `except` matches a key of collection `c`.
    fn excepts_any(&self, c: usize, except: &[KeyPat]) -> bool {
        let Some((sources, _)) = ix().stored(c) else {
            return true;
        };
        sources.iter().any(|&coll| {
            self.colls[coll]
                .iter()
                .any(|(k, _)| except.iter().any(|p| p.matches(k)))
        })
    }

    /// The memo slots of miss word `w` known to miss every value of collection `c` whose key
    /// `keep` keeps (none when such a value has no memo cell).
    fn miss_where(&self, c: usize, keep: impl Fn(&str) -> bool, w: usize) -> u64 {
        let i = ix();
        let Some((sources, keys)) = i.stored(c).filter(|_| i.stable[c]) else {
            return 0;
        };
        let mut and = u64::MAX;
        for &coll in sources {
            let memos = if keys { &self.kmemo } else { &self.vmemo };
            let memos = memos.get(coll).map(Vec::as_slice).unwrap_or_default();
            for (n, (k, v)) in self.colls[coll].iter().enumerate() {
                if !keep(k) {
                    continue;
                }
                let Some(cell) = memos.get(n) else {
                    return 0;
                };
                and &= self
                    .filtered_memo_of(c, cell, if keys { k.as_bytes() } else { v })
                    .miss_word(w);
            }
        }
        and
    }

    fn removed(&self, r: &Rule) -> bool {
        in_ranges(&self.removed_ids, r.id)
            || (!self.removed_tags.is_empty()
                && r.tags
                    .iter()
                    .any(|t| self.removed_tags.iter().any(|re| re.is_match(t))))
    }

    fn run_phase(&mut self, phase: u8) -> Option<Intervention> {
        self.done_phases = self.done_phases.max(phase);
        if self.mode == Mode::Off || self.intervention.is_some() {
            return self.intervention.clone();
        }
        // `allow` ends the request's inspection (`allow:request`: its request phases), and
        // `allow:phase` the phase it matched in.
        match self.allow {
            Some(AllowScope::All) => return None,
            Some(AllowScope::Request) if phase <= 2 => return None,
            _ => self.allow = None,
        }
        self.prepare_memos();
        let rules = self.rules.clone();
        let list = &rules.phases[phase as usize];
        let plan = self.plan.clone();
        let mut at = 0;
        while at < list.len() {
            // Entries whose outcome the tenant's settings fixed are stepped over.
            if let Some(p) = plan.as_ref().filter(|_| self.plan.is_some()) {
                at = p.next[phase as usize][at] as usize;
                if at >= list.len() {
                    break;
                }
            }
            // A first link that cannot match any value of its targets: the rule is passed over
            // on the packed table alone, without touching the rule (most rules of a phase are
            // passed over; each rule read is a cache miss).
            let hot = rules.hot[phase as usize][at];
            if hot.set > 0 && self.known_miss_set(hot.set as usize - 1, hot.slot) {
                self.matched.clear();
                at += 1;
                continue;
            }
            // A first link comparing a count the rule's targets cannot change: tested on the
            // count alone, the rule evaluated only when it passes.
            if hot.count > 0
                && self.removed_targets.is_empty()
                && self.removed_targets_tag.is_empty()
            {
                let g = &rules.counts[hot.count as usize - 1];
                if let Some(n) = self.quick_count(&g.var, &[], &[]) {
                    let mut buf = itoa::Buffer::new();
                    if !g.test.test(buf.format(n).as_bytes()) {
                        self.matched.clear();
                        at += 1;
                        continue;
                    }
                }
            }
            let Entry::Rule(rule) = &list[at] else {
                at += 1;
                continue;
            };
            if hot.gate > 0
                && self.removed_targets.is_empty()
                && self.removed_targets_tag.is_empty()
            {
                let g = &rules.gates[hot.gate as usize - 1];
                self.matched.clear();
                if self.removed(rule) {
                    at += 1;
                    continue;
                }
                let tx = &self.colls[ix().tx];
                let Some(v) = self
                    .tx_pos_hashed(g.hash, &g.key)
                    .map(|p| &tx[p].1)
                    .filter(|v| g.test.test(v))
                else {
                    at += 1;
                    continue;
                };
                // MATCHED_VAR as the general path leaves it; `pass` and `nolog` do nothing.
                let m = self.matched.next();
                m.name.push_str("TX:");
                m.name.push_str(&g.key);
                m.value.extend_from_slice(v);
                at = next_rule(&rules, phase, at, rule);
                continue;
            }
            if self.removed(rule) {
                at += 1;
                continue;
            }
            // A chain whose filed TX keys no other rule reads: tested without filing them.
            if self.plan.is_some()
                && plan
                    .as_ref()
                    .is_some_and(|p| p.unfiled[phase as usize].get(at).copied().unwrap_or(false))
                && self.removed_targets.is_empty()
                && self.removed_targets_tag.is_empty()
                && !self.filed_keys_may_match(rule)
            {
                at += 1;
                continue;
            }
            if !self.eval_chain(rule) {
                at += 1;
                continue;
            }
            self.act(rule, phase);
            if self.intervention.is_some() || self.allow.is_some() || self.mode == Mode::Off {
                break;
            }
            at = next_rule(&rules, phase, at, rule);
        }
        self.intervention.clone()
    }

    /// Evaluates every link of the chain; commits captures and MATCHED_VARS link by link (a
    /// later link may read them). True when all links match.
    fn eval_chain(&mut self, starter: &Rule) -> bool {
        #[cfg(test)]
        {
            self.chains += 1;
        }
        self.matched.clear();
        let mut found = std::mem::take(&mut self.found);
        let mut all = true;
        for link in starter.links() {
            found.clear();
            if !self.eval_link(starter, link, &mut found) {
                all = false;
                break;
            }
            // Each matched value sets its captures and MATCHED_VAR, then the link's actions
            // run for it (libmodsecurity 3 runs setvar once per matched value).
            self.matched.clear();
            for hit in &mut found.v[..found.n] {
                if link.capture && !hit.caps.is_empty() {
                    self.set_captures(&mut hit.caps);
                }
                let m = self.matched.next();
                m.name.push_str(&hit.name);
                m.value.extend_from_slice(&hit.value);
                self.link_actions(starter, link);
            }
        }
        self.found = found;
        all
    }

    /// For a chain the plan found to file TX keys no other rule reads (`plan.rs`,
    /// `files_unread_keys`): whether its second link may match one of the values the first
    /// would file. When it cannot, the chain's one lasting effect is made (TX:0, the first
    /// link's last value) and the keys are not filed; when it may, nothing is changed and the
    /// chain is evaluated as any other. The answer per value is remembered per thread and
    /// plan (requests repeat the same few header names).
    fn filed_keys_may_match(&mut self, starter: &Rule) -> bool {
        let (Some(second), [sv], Some(plan)) = (
            starter.chain.as_deref(),
            starter.setvars.as_slice(),
            self.plan.as_ref(),
        ) else {
            return true;
        };
        let Some(Piece::Text(prefix)) = sv.name_tpl.0.first() else {
            return true;
        };
        let chain = &self.rules.chains[starter.transforms as usize];
        let mx = Mx {
            tx: self,
            rule: Some(starter),
        };
        let mut may = false;
        let mut any = false;
        let mut last = Vec::new();
        let mut filed = Vec::new();
        let mut key = String::new();
        // Whether the second link may match the value filed for transformed value `v`.
        let mut verdict = |v: &[u8]| {
            // Setvar values are text: other bytes take the general path.
            let Ok(text) = std::str::from_utf8(v) else {
                return true;
            };
            // A key another rule's selector may pick is filed after all.
            if !plan.unfiled_watch.is_empty() {
                key.clear();
                key.push_str(prefix);
                key.push_str(text);
                key.make_ascii_lowercase();
                if plan.unfiled_watch.iter().any(|s| s.matches(&key)) {
                    return true;
                }
            }
            filed.clear();
            for p in &sv.value_tpl.0 {
                match p {
                    Piece::Text(t) => filed.extend_from_slice(t.as_bytes()),
                    _ => filed.extend_from_slice(v),
                }
            }
            second.op.matches(&filed, &mx, false, &mut Vec::new())
        };
        for var in &starter.targets {
            self.each_value(
                var,
                Some(starter),
                &starter.exclusions,
                &[],
                None,
                &mut |_, value, cell| {
                    if may {
                        return;
                    }
                    let memo = cell.map(|c| &**self.memo_of(c, value));
                    let (v, _) = transformed(memo, starter.memo_key(), chain, value);
                    any = true;
                    may = filed_verdict((plan.id, starter.id), value, || verdict(&v));
                    last.clear();
                    last.extend_from_slice(&v);
                },
            );
        }
        if may {
            return true;
        }
        self.matched.clear();
        if any {
            self.set_captures(&mut vec![last]);
        }
        false
    }

    /// TX:0..n-1 from one match's captures, and none left over from an earlier one.
    fn set_captures(&mut self, caps: &mut Vec<Vec<u8>>) {
        let n = caps.len().min(10);
        if self.tx_digits >> n != 0 {
            self.tx_retain(|k| {
                !(k.len() == 1 && k.as_bytes()[0].is_ascii_digit())
                    || usize::from(k.as_bytes()[0] - b'0') < n
            });
        }
        for (i, c) in caps.drain(..).take(10).enumerate() {
            match self.tx_pos(CAPTURE_KEYS[i]) {
                Some(at) => *self.tx_value_mut(at) = c,
                None => self.tx_put(CAPTURE_KEYS[i].to_string(), c),
            }
        }
    }

    fn eval_link(&self, starter: &Rule, link: &Rule, found: &mut Hits) -> bool {
        let mx = Mx {
            tx: self,
            rule: Some(starter),
        };
        if link.targets.is_empty() {
            // SecAction, or a rule whose every target is unsupported: the operator alone.
            let mut caps = Vec::new();
            let hit = link.op.matches(b"", &mx, false, &mut caps);
            if hit {
                found.next().caps = caps;
            }
            return hit;
        }
        // Targets the tenant or a `ctl` removed for this rule (rarely any: no allocation then).
        let mut extra: Vec<&Var> = Vec::new();
        for (ranges, v) in &self.removed_targets {
            if in_ranges(ranges, starter.id) {
                extra.push(v);
            }
        }
        for (re, v) in &self.removed_targets_tag {
            if starter.tags.iter().any(|t| re.is_match(t)) {
                extra.push(v);
            }
        }
        let chain = &self.rules.chains[link.transforms as usize];
        let mut local_caps = Vec::new();
        let memo_slot = link.memo_slot;
        for var in &link.targets {
            if memo_slot.is_some_and(|s| self.known_miss_all(var, s)) {
                continue;
            }
            self.each_value(
                var,
                Some(starter),
                &link.exclusions,
                &extra,
                memo_slot,
                &mut |key, value, cell| {
                    let mut caps = Vec::new();
                    let memo = cell.map(|c| self.memo_of(c, value));
                    let tv;
                    let hit_value = if link.multi_match {
                        self.multi_match(link, memo_slot, chain, value, memo, &mx, &mut caps)
                            .map(Cow::Owned)
                    } else {
                        let memoized;
                        (tv, memoized) =
                            transformed(memo.map(|m| &**m), link.memo_key(), chain, value);
                        let v: &[u8] = &tv;
                        let slot = memo_slot.filter(|_| memoized);
                        let memo = memo.filter(|_| memoized);
                        let known_miss =
                            slot.is_some_and(|s| memo.is_some_and(|m| m.known_miss(s)));
                        // A value this (pure) link matched before matches again, with the
                        // same captures: the operator does not run again.
                        let known = slot.zip(memo);
                        let hit = if known_miss {
                            false
                        } else if let Some(c) = known.and_then(|(s, m)| m.known_hit(s)) {
                            local_caps = c;
                            true
                        } else {
                            let hit = link.op.matches(v, &mx, link.capture, &mut local_caps);
                            if let (true, Some((s, m))) = (hit, known) {
                                m.set_hit(s, if link.capture { &local_caps } else { &[] });
                            }
                            hit
                        };
                        if hit {
                            if link.capture {
                                caps = std::mem::take(&mut local_caps);
                            }
                            Some(Cow::Borrowed(v))
                        } else {
                            if let (Some(s), Some(m)) = (slot, memo) {
                                m.set_miss(s);
                            }
                            None
                        }
                    };
                    if let Some(v) = hit_value {
                        let h = found.next();
                        h.name.push_str(VARIABLES[var.coll]);
                        if !key.is_empty() {
                            h.name.push(':');
                            h.name.push_str(key);
                        }
                        h.value.extend_from_slice(&v);
                        h.caps = caps;
                    }
                },
            );
        }
        !found.is_empty()
    }

    /// `multiMatch`: the operator sees the value and every different result along the
    /// transformation chain. The intermediate results are cached like final ones, and a match
    /// is remembered like any pure link's, with the form that matched.
    #[allow(clippy::too_many_arguments)]
    fn multi_match(
        &self,
        link: &Rule,
        memo_slot: Option<u32>,
        chain: &[super::transforms::Transform],
        value: &[u8],
        memo: Option<&Arc<ValueMemo>>,
        mx: &Mx<'_>,
        caps: &mut Vec<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        let steps = || {
            // Encoded as (length as u32 LE, bytes)*: one allocation per value and chain.
            let mut enc = Vec::new();
            let mut cur: Cow<[u8]> = Cow::Borrowed(value);
            for t in chain {
                if let Cow::Owned(v) = t.apply(&cur) {
                    cur = Cow::Owned(v);
                    enc.extend_from_slice(&(cur.len() as u32).to_le_bytes());
                    enc.extend_from_slice(&cur);
                }
            }
            Some(enc)
        };
        let key = link.memo_key();
        let out = memo.and_then(|m| m.out(key, steps));
        let memo = memo.filter(|_| out.is_some());
        let slot = memo_slot.filter(|_| out.is_some());
        if let (Some(s), Some(m)) = (slot, memo) {
            if m.known_miss(s) {
                return None;
            }
            // Remembered as the captures, then the form that matched.
            if let Some(mut c) = m.known_hit(s) {
                let hit = c.pop();
                if hit.is_some() {
                    *caps = c;
                    return hit;
                }
            }
        }
        let remember = |caps: &[Vec<u8>], hit: &[u8]| {
            if let (Some(s), Some(m)) = (slot, memo) {
                let mut c = caps.to_vec();
                c.push(hit.to_vec());
                m.set_hit(s, &c);
            }
        };
        if link.op.matches(value, mx, link.capture, caps) {
            remember(caps, value);
            return Some(value.to_vec());
        }
        let owned;
        let mut rest: &[u8] = match out {
            Some(out) => out.unwrap_or_default(),
            None => {
                owned = steps().unwrap_or_default();
                &owned
            }
        };
        while rest.len() >= 4 {
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let v = &rest[4..4 + n];
            rest = &rest[4 + n..];
            if link.op.matches(v, mx, link.capture, caps) {
                remember(caps, v);
                return Some(v.to_vec());
            }
        }
        if let (Some(s), Some(m)) = (slot, memo) {
            m.set_miss(s);
        }
        None
    }

    /// Gives every stored value (and key) that rules may remember things about a memo cell.
    fn prepare_memos(&mut self) {
        let i = ix();
        self.vmemo.resize_with(self.colls.len(), Vec::new);
        self.kmemo.resize_with(self.colls.len(), Vec::new);
        // Kept from the last phase for collections that did not change (the misses a value
        // is known for only grow, so the words stay true).
        self.all_miss.resize_with(self.colls.len(), OnceCell::new);
        let words = (self.rules.memo_slots as usize).div_ceil(64);
        self.set_ready.clear();
        // The sets' words, then those of the targets' excluded keys (`hot_excepts`).
        let sets = self.rules.hot_sets.len() + self.rules.hot_excepts.len();
        self.set_ready.resize(sets * words, false);
        self.set_miss.resize(sets * words, 0);
        let mut touched = std::mem::take(&mut self.touched);
        while touched != 0 {
            let c = touched.trailing_zeros() as usize;
            touched &= touched - 1;
            let len = self.colls[c].len();
            if i.stable[c] && !i.computed[c] && self.vmemo[c].len() != len {
                let from = self.vmemo[c].len().min(len);
                self.vmemo[c].truncate(from);
                self.kmemo[c].truncate(from);
                let set = self.rules.id;
                for (n, (k, v)) in self.colls[c].iter().enumerate().skip(from) {
                    self.vmemo[c].push(reuse(&mut self.prev_vmemo, c, n, set, v));
                    self.kmemo[c].push(reuse(&mut self.prev_kmemo, c, n, set, k.as_bytes()));
                }
                self.forget_misses(c);
            }
        }
    }

    /// The non-disruptive actions of one chain link (setvar, ctl): they run as soon as the
    /// link matches, before the next link is evaluated (a later link may read what they set),
    /// as libmodsecurity 3 does.
    fn link_actions(&mut self, starter: &Rule, link: &Rule) {
        // Names and values with macros are rendered into buffers kept between requests.
        let [mut name_buf, mut value_buf] = std::mem::take(&mut self.scratch);
        let mut number = itoa::Buffer::new();
        for sv in &link.setvars {
            let ci = match sv.coll.as_str() {
                "tx" => ix().tx,
                c => match VARIABLES.iter().position(|v| v.eq_ignore_ascii_case(c)) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let tx = ci == ix().tx;
            // Names are mostly plain lower-case text: no copy then, and hashed at load.
            let (name, hash) = match &sv.plain_name {
                Some(n) => (n.as_str(), sv.name_hash),
                None => {
                    name_buf.clear();
                    self.render_into(Some(starter), &sv.name_tpl, &mut name_buf);
                    name_buf.make_ascii_lowercase();
                    let h = if tx { tx_key_hash(&name_buf) } else { 0 };
                    (name_buf.as_str(), h)
                }
            };
            let value: &[u8] = match &sv.op {
                SetOp::Delete if tx => {
                    self.tx_retain(|k| k != name);
                    continue;
                }
                SetOp::Delete => {
                    self.touched |= 1 << ci;
                    self.colls[ci].retain(|(k, _)| *k != name);
                    continue;
                }
                SetOp::Set(v) if tx && sv.plain_value => {
                    self.tx_set_hashed(hash, name, v.as_bytes());
                    continue;
                }
                SetOp::Set(_) => {
                    value_buf.clear();
                    self.render_into(Some(starter), &sv.value_tpl, &mut value_buf);
                    value_buf.as_bytes()
                }
                SetOp::Add(_) | SetOp::Sub(_) => {
                    // Mostly one TX macro (`+%{tx.critical_anomaly_score}`): read in place.
                    let d: i64 = self
                        .render_view(Some(starter), &sv.value_tpl)
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    let cur = if tx {
                        self.tx_pos_hashed(hash, name).map(|at| &self.colls[ci][at])
                    } else {
                        self.colls[ci].iter().find(|(k, _)| *k == name)
                    };
                    let cur: i64 = cur
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    let n = if matches!(sv.op, SetOp::Add(_)) {
                        cur.saturating_add(d)
                    } else {
                        cur.saturating_sub(d)
                    };
                    // The anomaly scores are added to on every match: no `fmt` machinery.
                    number.format(n).as_bytes()
                }
            };
            if tx {
                self.tx_set_hashed(hash, name, value);
                continue;
            }
            self.touched |= 1 << ci;
            match self.colls[ci].iter().position(|(k, _)| *k == name) {
                Some(at) => {
                    let v = &mut self.colls[ci][at].1;
                    v.clear();
                    v.extend_from_slice(value);
                }
                None => {
                    let e = entry(&mut self.spare, name, value);
                    self.colls[ci].push(e);
                }
            }
        }
        self.scratch = [name_buf, value_buf];
        for c in &link.ctls {
            self.ctl(c);
        }
    }

    /// Runs the actions of a fully matched chain.
    fn act(&mut self, starter: &Rule, phase: u8) {
        let def = &self.rules.defaults[phase as usize];
        let action = match &starter.disruptive {
            Some(Disruptive::Block) | None => def.disruptive.clone(),
            Some(d) => d.clone(),
        };
        let status = starter.status.or(def.status);
        let disrupts = matches!(
            action,
            Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect(_)
        );
        if starter.log {
            let mx = self.matched.last();
            let var = mx.map(|(k, _)| k.to_string()).unwrap_or_default();
            let msg = starter
                .msg
                .as_deref()
                .map(|m| self.expand(Some(starter), m).into_owned())
                .unwrap_or_default();
            let data = starter
                .logdata
                .as_deref()
                .map(|m| self.expand(Some(starter), m).into_owned())
                .unwrap_or_default();
            self.matches.push(Match {
                id: starter.id,
                phase,
                msg,
                data: truncate(&data, MATCH_DATA_MAX),
                severity: starter.severity,
                tags: starter.tags.clone(),
                var,
                disruptive: disrupts,
            });
        }
        match action {
            Disruptive::Allow(scope) => self.allow = Some(scope),
            Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect(_) => {
                if self.mode == Mode::On {
                    self.intervention = Some(Intervention {
                        status: match &action {
                            Disruptive::Redirect(_) => status.unwrap_or(302),
                            _ => status.unwrap_or(403),
                        },
                        rule_id: starter.id,
                        drop: action == Disruptive::Drop,
                        redirect: match &action {
                            Disruptive::Redirect(u) => {
                                Some(self.expand(Some(starter), u).into_owned())
                            }
                            _ => None,
                        },
                    });
                } else if self.would_block.is_none() {
                    self.would_block = Some(starter.id);
                }
            }
            Disruptive::Pass | Disruptive::Block => {}
        }
    }

    fn ctl(&mut self, c: &Ctl) {
        match c {
            Ctl::RuleEngine(m) => {
                // A rule may relax the engine, never enable it past the tenant's mode.
                if *m != Mode::On || self.mode == Mode::On {
                    self.mode = *m;
                }
            }
            // A rule or target removed now may be one the plan counted on: from here on
            // every rule is evaluated.
            Ctl::RemoveById(r) => {
                self.plan = None;
                self.removed_ids.extend_from_slice(r)
            }
            Ctl::RemoveByTag(re) => {
                self.plan = None;
                self.removed_tags.push(re.clone())
            }
            Ctl::RemoveTargetById(r, v) => {
                self.plan = None;
                self.removed_targets.push((r.clone(), v.clone()))
            }
            Ctl::RemoveTargetByTag(re, v) => {
                self.plan = None;
                self.removed_targets_tag.push((re.clone(), v.clone()))
            }
            Ctl::BodyProcessor(k) => {
                self.body_kind = Some(*k);
                self.set_scalar(v!("REQBODY_PROCESSOR"), kind_name(*k).as_bytes());
            }
            Ctl::BodyAccess(b) => self.body_access = *b,
            Ctl::ForceBodyVariable(b) => self.force_body_var = *b,
            Ctl::Ignored => {}
        }
    }
}

/// Values remembered by `filed_verdict` per thread before it starts over.
const FILED_VERDICTS: usize = 4096;

thread_local! {
    /// `filed_verdict`'s answers: by hash of (plan and rule, value), with both kept to
    /// compare.
    static FILED: std::cell::RefCell<FiledVerdicts> = std::cell::RefCell::new(FiledVerdicts::default());
}

/// A remembered answer: (plan id, rule id), the value, and whether the chain may match.
type FiledVerdict = ((u64, u64), Box<[u8]>, bool);

#[derive(Default)]
struct FiledVerdicts {
    hasher: foldhash::fast::RandomState,
    map: HashMap<u64, FiledVerdict, foldhash::fast::FixedState>,
}

/// The answer of `compute` for `value` under `plan`'s rule `(plan id, rule id)`, remembered
/// per thread (bounded: header names from attackers only make it start over).
fn filed_verdict(plan: (u64, u64), value: &[u8], compute: impl FnOnce() -> bool) -> bool {
    if value.len() > 256 {
        return compute();
    }
    let h = FILED.with(|f| std::hash::BuildHasher::hash_one(&f.borrow().hasher, (plan, value)));
    let known = FILED.with(|f| {
        f.borrow()
            .map
            .get(&h)
            .filter(|(p, v, _)| *p == plan && **v == *value)
            .map(|e| e.2)
    });
    if let Some(may) = known {
        return may;
    }
    let may = compute();
    FILED.with(|f| {
        let mut f = f.borrow_mut();
        if f.map.len() >= FILED_VERDICTS {
            f.map.clear();
        }
        f.map.insert(h, (plan, value.into(), may));
    });
    may
}

/// `value` after `chain`: from its memo's cell `key` when it has a memo with that key (and
/// whether it did), else worked out now.
fn transformed<'v>(
    memo: Option<&'v ValueMemo>,
    key: usize,
    chain: &[super::transforms::Transform],
    value: &'v [u8],
) -> (Cow<'v, [u8]>, bool) {
    match memo.and_then(|m| m.out(key, || apply_chain(chain, value))) {
        Some(out) => (Cow::Borrowed(out.unwrap_or(value)), true),
        None => (
            apply_chain(chain, value).map_or(Cow::Borrowed(value), Cow::Owned),
            false,
        ),
    }
}

/// The chain applied to `value`; `None` when nothing changes it.
fn apply_chain(chain: &[super::transforms::Transform], value: &[u8]) -> Option<Vec<u8>> {
    let mut cur: Cow<[u8]> = Cow::Borrowed(value);
    for t in chain {
        if let Cow::Owned(v) = t.apply(&cur) {
            cur = Cow::Owned(v);
        }
    }
    match cur {
        Cow::Borrowed(_) => None,
        Cow::Owned(v) => Some(v),
    }
}

fn kind_name(k: body::Kind) -> &'static str {
    match k {
        body::Kind::UrlEncoded => "URLENCODED",
        body::Kind::Multipart => "MULTIPART",
        body::Kind::Json => "JSON",
        body::Kind::Xml => "XML",
    }
}

/// TIME* variables from a Unix time (UTC; the province runs one time zone, logs carry UTC).
fn time_var(name: &str, epoch: u64) -> String {
    let days = (epoch / 86_400) as i64;
    let secs = epoch % 86_400;
    let (y, m, d) = crate::calendar::civil_from_days(days);
    let wday = (days + 4).rem_euclid(7);
    match name {
        "TIME_EPOCH" => epoch.to_string(),
        "TIME_YEAR" => y.to_string(),
        "TIME_MON" => m.to_string(),
        "TIME_DAY" => d.to_string(),
        "TIME_HOUR" => (secs / 3600).to_string(),
        "TIME_MIN" => (secs / 60 % 60).to_string(),
        "TIME_SEC" => (secs % 60).to_string(),
        "TIME_WDAY" => wday.to_string(),
        _ => format!(
            "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn tx(rules: &str) -> Transaction {
        let set = RuleSet::parse(rules).expect("rules load");
        Transaction::new(Arc::new(set), Mode::On, "t1")
    }

    fn get(t: &mut Transaction, uri: &str) -> Option<Intervention> {
        t.set_connection(
            "192.0.2.1".parse().unwrap(),
            5555,
            "127.0.0.1".parse().unwrap(),
            80,
        );
        t.set_request_line("GET", uri, "HTTP/1.1");
        t.add_header("Host", b"example.gov.vn");
        t.add_header("User-Agent", b"test");
        t.process_request_headers()
            .or_else(|| t.process_request_body())
    }

    #[test]
    fn a_value_rewritten_by_ctl_is_not_judged_by_the_old_values_memo() {
        // Rule 3 misses the empty REQBODY_PROCESSOR of the first request, which the value
        // memo remembers; in the second, rule 1 reads the empty value first, then a ctl sets
        // it to JSON: rule 3 must see JSON, not the remembered miss of "".
        let set = Arc::new(
            RuleSet::parse(
                "SecRule REQBODY_PROCESSOR \"@streq nothing\" \"id:1,phase:1,pass,nolog\"\n\
                 SecRule REQUEST_HEADERS:X-Json \"@streq yes\" \
                 \"id:2,phase:1,pass,nolog,ctl:requestBodyProcessor=JSON\"\n\
                 SecRule REQBODY_PROCESSOR \"@streq JSON\" \"id:3,phase:1,deny,status:403\"\n",
            )
            .expect("rules load"),
        );
        let mut first = Transaction::new(set.clone(), Mode::On, "t1");
        assert!(get(&mut first, "/").is_none());
        drop(first);
        let mut second = Transaction::new(set, Mode::On, "t2");
        second.add_header("X-Json", b"yes");
        let refused = get(&mut second, "/").expect("rule 3 refuses");
        assert_eq!(refused.rule_id, 3);
    }

    /// The first match of rule 1 on `ARGS:q` in a request with `q=xAAB`: its data, variable
    /// and TX:cap.
    type Seen = (String, String, Option<Vec<u8>>);

    /// `rule` loaded, the memo slot of its (only) link, and a run of one request through it.
    fn remembered(rule: &str) -> (Arc<RuleSet>, u32, impl Fn(&str) -> Seen) {
        let set = Arc::new(RuleSet::parse(rule).expect("rules load"));
        let slot = match &set.phases[2][0] {
            Entry::Rule(r) => r.memo_slot.expect("a pure operator has a memo slot"),
            Entry::Marker(_) => panic!("rule expected"),
        };
        let rules = set.clone();
        let run = move |id: &str| {
            let mut t = Transaction::new(rules.clone(), Mode::On, id);
            assert!(get(&mut t, "/?q=xAAB&other=1").is_none());
            let m = t.matches.first().expect("rule 1 matches").clone();
            (m.data, m.var, t.tx("cap").map(<[u8]>::to_vec))
        };
        (set, slot, run)
    }

    #[test]
    fn a_remembered_match_gives_the_same_data_and_captures() {
        let (set, slot, run) = remembered(
            "SecRule ARGS:q \"@rx (a+)(b)\" \"id:1,phase:2,pass,log,capture,\
             t:lowercase,msg:'m',logdata:'%{TX.1}-%{TX.2} in %{MATCHED_VAR}',\
             setvar:tx.cap=%{TX.0}\"\n",
        );
        let first = run("t1");
        assert_eq!(first.0, "aa-b in xaab");
        assert_eq!(first.1, "ARGS:q");
        assert_eq!(first.2.as_deref(), Some(&b"aab"[..]));
        // The value's memo now knows the match and its captures.
        let memo = memo::value(set.id, set.memo_widths.len(), set.memo_slots, b"xAAB");
        assert_eq!(
            memo.known_hit(slot),
            Some(vec![b"aab".to_vec(), b"aa".to_vec(), b"b".to_vec()])
        );
        assert_eq!(
            memo::value(set.id, set.memo_widths.len(), set.memo_slots, b"1").known_hit(slot),
            None
        );
        // The next request with the value gets the same verdict, data and captures.
        assert_eq!(run("t2"), first);
    }

    #[test]
    fn a_remembered_multi_match_gives_the_form_that_matched_and_its_captures() {
        // The raw value misses; its lower-cased form matches. The next request with the value
        // must see that form as MATCHED_VAR, and the same captures, without the operator.
        let (set, slot, run) = remembered(
            "SecRule ARGS:q \"@rx (a+)(b)\" \"id:1,phase:2,pass,log,capture,multiMatch,\
             t:none,t:lowercase,msg:'m',logdata:'%{TX.1}-%{TX.2} in %{MATCHED_VAR}',\
             setvar:tx.cap=%{TX.0}\"\n",
        );
        let first = run("t1");
        assert_eq!(first.0, "aa-b in xaab");
        assert_eq!(first.1, "ARGS:q");
        assert_eq!(first.2.as_deref(), Some(&b"aab"[..]));
        let memo = memo::value(set.id, set.memo_widths.len(), set.memo_slots, b"xAAB");
        assert_eq!(
            memo.known_hit(slot),
            Some(vec![
                b"aab".to_vec(),
                b"aa".to_vec(),
                b"b".to_vec(),
                b"xaab".to_vec()
            ])
        );
        assert_eq!(run("t2"), first);
    }

    #[test]
    fn a_value_at_the_position_of_an_earlier_one_gets_its_own_memo() {
        // The last request's memo at the same position is taken only for the same bytes: a
        // new value there must not inherit the misses of the one before.
        let set = Arc::new(
            RuleSet::parse(
                "SecRule REQUEST_HEADERS:X-A \"@streq bad\" \"id:1,phase:1,deny,status:403\"\n",
            )
            .expect("rules load"),
        );
        let run = |id: &str, v: &[u8]| {
            let mut t = Transaction::new(set.clone(), Mode::On, id);
            t.add_header("X-A", v);
            get(&mut t, "/").map(|i| i.rule_id)
        };
        assert_eq!(run("t1", b"good"), None);
        assert_eq!(run("t2", b"good"), None);
        assert_eq!(run("t3", b"bad"), Some(1));
        assert_eq!(run("t4", b"bad"), Some(1));
        assert_eq!(run("t5", b"good"), None);
        assert_eq!(run("t6", b"bad"), Some(1));
    }

    #[test]
    fn a_key_selected_target_is_passed_over_only_on_its_own_keys_values() {
        // Rule 1 reads X-A alone. A value known not to match under X-A lets it be passed over;
        // the same text under another header says nothing about X-A's value.
        let set = Arc::new(
            RuleSet::parse(
                "SecRule REQUEST_HEADERS:X-A \"@streq bad\" \"id:1,phase:1,deny,status:403\"\n",
            )
            .expect("rules load"),
        );
        let run = |a: &str, b: &str| {
            let mut t = Transaction::new(set.clone(), Mode::On, "k");
            t.add_header("X-A", a.as_bytes());
            t.add_header("X-B", b.as_bytes());
            get(&mut t, "/").map(|i| i.rule_id)
        };
        assert_eq!(run("ok", "bad"), None);
        assert_eq!(run("ok", "bad"), None);
        assert_eq!(run("bad", "ok"), Some(1));
        assert_eq!(run("ok", "ok"), None);
        assert_eq!(run("bad", "bad"), Some(1));
    }

    #[test]
    fn values_a_rule_excludes_do_not_keep_it_from_being_passed_over() {
        // Rule 2 never reads `__utm*` cookies, so they are never known to miss it: they must
        // not count when the engine asks whether every value it reads is known to.
        let set = Arc::new(
            RuleSet::parse(
                "SecRule REQUEST_COOKIES|!REQUEST_COOKIES:/__utm/ \"@streq bad\" \
                 \"id:2,phase:1,deny,status:403\"\n",
            )
            .expect("rules load"),
        );
        let run = |cookie: &str| {
            let mut t = Transaction::new(set.clone(), Mode::On, "k");
            t.add_header("Cookie", cookie.as_bytes());
            let verdict = get(&mut t, "/").map(|i| i.rule_id);
            (verdict, t.chains)
        };
        assert_eq!(run("a=ok; __utma=bad"), (None, 1));
        // Seen before: `a`'s value is known to miss, `__utma`'s is left out.
        assert_eq!(run("a=ok; __utma=bad"), (None, 0));
        assert_eq!(run("__utmz=bad"), (None, 0));
        // A value it reads and has not judged, or one that matches, still runs it.
        assert_eq!(run("a=ok; __utma=bad; b=bad"), (Some(2), 1));
        assert_eq!(run("a=bad; __utma=ok"), (Some(2), 1));
        assert_eq!(run("a=ok; __utma=bad"), (None, 0));
    }

    #[test]
    fn a_new_value_without_a_rules_literals_passes_the_rule_over() {
        // Each query value is new to the engine. Rule 1's regex needs "select" and rule 2's
        // phrase list "passwd" or "shadow", after the chain's decoding: a value without them
        // is known to miss both without running them; one with them still runs and matches.
        let set = Arc::new(
            RuleSet::parse(
                "SecRule ARGS \"@rx (?i)union\\s+select\" \
                 \"id:1,phase:2,deny,status:403,t:none,t:urlDecodeUni\"\n\
                 SecRule ARGS \"@pm passwd shadow\" \"id:2,phase:2,deny,status:403,t:none\"\n",
            )
            .expect("rules load"),
        );
        let run = |uri: &str| {
            let mut t = Transaction::new(set.clone(), Mode::On, "p");
            let verdict = get(&mut t, uri).map(|i| i.rule_id);
            (verdict, t.chains)
        };
        assert_eq!(run("/?id=48213"), (None, 0));
        assert_eq!(run("/?q=hello+world&id=48214"), (None, 0));
        assert_eq!(run("/?q=1%20UNION%20%53ELECT%202"), (Some(1), 1));
        assert_eq!(run("/?f=/etc/PASSWD"), (Some(2), 1));
        // A value holding a literal without a match runs the rule and is then known.
        assert_eq!(run("/?q=please+select+a+plan"), (None, 1));
        assert_eq!(run("/?q=please+select+a+plan"), (None, 0));
    }

    #[test]
    fn a_count_that_fails_its_test_passes_the_rule_over() {
        let set = Arc::new(
            RuleSet::parse(
                "SecRule &REQUEST_HEADERS:Host \"@eq 0\" \"id:1,phase:1,deny,status:400\"\n\
                 SecRule &REQUEST_HEADERS:Transfer-Encoding \"!@eq 0\" \"id:2,phase:1,deny,status:401\"\n\
                 SecRule &ARGS_GET \"@gt 2\" \"id:3,phase:1,deny,status:402\"\n",
            )
            .expect("rules load"),
        );
        let run = |uri: &str, te: bool| {
            let mut t = Transaction::new(set.clone(), Mode::On, "c");
            if te {
                t.add_header("Transfer-Encoding", b"chunked");
            }
            let verdict = get(&mut t, uri).map(|i| i.rule_id);
            (verdict, t.chains)
        };
        // Each count fails its test: no rule goes through the general path.
        assert_eq!(run("/?a=1", false), (None, 0));
        // A count that passes runs its rule, which decides as before.
        assert_eq!(run("/?a=1", true), (Some(2), 1));
        assert_eq!(run("/?a=1&b=2&c=3", false), (Some(3), 1));
    }

    #[test]
    fn counts_by_key_whole_collection_tx_and_with_exclusions() {
        let mut t = tx(
            "SecRule &REQUEST_HEADERS:x-a \"@eq 2\" \"id:10,phase:1,pass,setvar:tx.a=1\"
SecRule &REQUEST_HEADERS \"@eq 4\" \"id:11,phase:1,pass,setvar:tx.b=1\"
SecRule &TX:a \"@eq 1\" \"id:12,phase:1,pass,setvar:tx.c=1\"
SecRule &TX:nope \"@eq 0\" \"id:13,phase:1,pass,setvar:tx.d=1\"
SecRule &REQUEST_HEADERS|!REQUEST_HEADERS:User-Agent \"@eq 3\" \"id:14,phase:1,pass,setvar:tx.e=1\"
SecRule &ARGS_GET:q \"@eq 1\" \"id:15,phase:1,pass,setvar:tx.f=1\"
",
        );
        t.add_header("X-A", b"1");
        t.add_header("x-a", b"2");
        assert!(get(&mut t, "/?q=1&r=2").is_none());
        for k in ["a", "b", "c", "d", "e", "f"] {
            assert_eq!(t.tx(k), Some(&b"1"[..]), "tx.{k}");
        }
    }

    #[test]
    fn numeric_tx_gates_jump_as_the_general_path_does() {
        // Rules 2, 4 and 6 are gates (evaluated without the general path). Expected: 2
        // matches and jumps over 3; 4 has no value to test (no TX:nope) and does not jump; 6
        // matches (1 is not 2) and skips 5; 7 denies.
        let rules = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.level=1"
SecRule TX:LEVEL "@lt 3" "id:2,phase:1,pass,nolog,skipAfter:END-2"
SecAction "id:3,phase:1,deny,status:401"
SecMarker END-2
SecRule TX:nope "!@eq 1" "id:4,phase:1,pass,nolog,skipAfter:END-4"
SecRule TX:level "!@eq 2" "id:6,phase:1,pass,nolog,skip:1"
SecAction "id:5,phase:1,deny,status:402"
SecAction "id:7,phase:1,deny,status:406"
SecMarker END-4
"#;
        let set = RuleSet::parse(rules).expect("rules load");
        assert_eq!(set.gates.len(), 3, "rules 2, 4 and 6 are gates");
        let mut t = Transaction::new(Arc::new(set), Mode::On, "t1");
        assert_eq!(
            get(&mut t, "/").map(|i| (i.status, i.rule_id)),
            Some((406, 7))
        );
    }

    #[test]
    fn chains_setvar_macros_and_deny() {
        let rules = r#"
SecRule ARGS:q "@rx ^(a+)$" "id:1,phase:2,pass,capture,setvar:tx.score=+5,setvar:'tx.seen=%{tx.1}',chain"
    SecRule REQUEST_METHOD "@streq GET" "setvar:tx.score=+1"
SecRule TX:score "@ge 6" "id:2,phase:2,deny,status:406,msg:'score %{tx.score} from %{tx.seen}'"
"#;
        let mut t = tx(rules);
        let i = get(&mut t, "/x?q=aaa").expect("denied");
        assert_eq!((i.status, i.rule_id), (406, 2));
        assert_eq!(t.tx("seen"), Some(&b"aaa"[..]));
        assert_eq!(
            t.matches.last().map(|m| m.msg.as_str()),
            Some("score 6 from aaa")
        );
        let mut t = tx(rules);
        assert!(get(&mut t, "/x?q=aab").is_none());
    }

    #[test]
    fn exclusions_counts_skip_after_and_ctl() {
        let rules = r#"
SecRule &ARGS "@eq 2" "id:10,phase:1,pass,nolog,setvar:tx.two=1"
SecRule REQUEST_FILENAME "@beginsWith /admin" "id:11,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20;ARGS:body"
SecRule ARGS|!ARGS:safe "@contains evil" "id:20,phase:2,deny"
SecRule ARGS "@contains skipme" "id:21,phase:2,pass,skipAfter:END"
SecRule ARGS "@contains skipme" "id:22,phase:2,deny"
SecMarker END
"#;
        let mut t = tx(rules);
        assert!(get(&mut t, "/p?safe=evil&x=1").is_none());
        assert_eq!(t.tx("two"), Some(&b"1"[..]));
        let mut t = tx(rules);
        assert_eq!(get(&mut t, "/p?other=evil").map(|i| i.rule_id), Some(20));
        let mut t = tx(rules);
        assert!(get(&mut t, "/admin/post?body=evil").is_none());
        let mut t = tx(rules);
        assert!(get(&mut t, "/p?a=skipme").is_none());
    }

    #[test]
    fn detection_only_records_but_never_disrupts() {
        let set = RuleSet::parse(r#"SecRule ARGS "@rx x" "id:5,phase:2,deny""#).unwrap();
        let mut t = Transaction::new(Arc::new(set), Mode::DetectionOnly, "t");
        assert!(get(&mut t, "/?a=x").is_none());
        assert_eq!(t.would_block, Some(5));
        assert_eq!(t.matches.len(), 1);
    }

    /// Debian's CRS as installed, or `None` (with a note) where it is not.
    pub(super) fn crs() -> Option<Arc<RuleSet>> {
        let load = PathBuf::from("/usr/share/modsecurity-crs/owasp-crs.load");
        if !load.exists() {
            eprintln!("modsecurity-crs not installed");
            return None;
        }
        Some(Arc::new(RuleSet::load(&[load]).expect("CRS loads")))
    }

    #[test]
    fn crs_blocks_sqli_and_passes_plain_requests() {
        let Some(set) = crs() else { return };
        assert!(set.rule_count > 500, "{} rules", set.rule_count);
        let mut t = Transaction::new(set.clone(), Mode::On, "a");
        t.set_tx("paranoia_level", "1");
        let i = get(&mut t, "/search?id=1%27%20or%201=1--").expect("SQLi blocked");
        assert_eq!(i.rule_id, 949110);
        let ids: Vec<u64> = t.matches.iter().map(|m| m.id).collect();
        assert!(ids.contains(&942100), "{ids:?}");
        let mut t = Transaction::new(set, Mode::On, "b");
        t.set_tx("paranoia_level", "1");
        let r = get(
            &mut t,
            "/tin-tuc/thong-bao?q=d%E1%BB%8Bch%20v%E1%BB%A5%20c%C3%B4ng",
        );
        assert!(r.is_none(), "{:?}", t.matches);
    }
}
