//! The compiled rule set: SecLang directives turned into per-phase rule lists with operators,
//! transformation chains, targets and actions resolved once, at load. Owns rule removal and
//! target updates (`SecRuleRemoveBy*`, `SecRuleUpdateTargetBy*`), the engine settings the files
//! declare and the load report (unsupported pieces, rules on the backtracking regex engine). It
//! must not evaluate requests: `transaction` does that against a shared, immutable `RuleSet`.

use super::operators::{OpError, Operator};
use super::seclang::{self, Directive, Kind, Selector, SyntaxError, Warning};
use super::transforms::Transform;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `SecRuleEngine` and the per-tenant mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    DetectionOnly,
    On,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Some(Mode::On),
            "off" => Some(Mode::Off),
            "detectiononly" => Some(Mode::DetectionOnly),
            _ => None,
        }
    }
}

/// What a rule does when it (and its chain) matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disruptive {
    Pass,
    /// `block`: whatever the phase's `SecDefaultAction` says.
    Block,
    Deny,
    Drop,
    /// `allow` (all remaining request phases), `allow:phase`, `allow:request`.
    Allow(AllowScope),
    Redirect(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowScope {
    All,
    Phase,
    Request,
}

/// A variable a rule inspects, resolved at load.
#[derive(Debug, Clone)]
pub struct Var {
    /// Index into `seclang::VARIABLES`.
    pub coll: usize,
    pub selector: Option<Sel>,
    pub count: bool,
}

#[derive(Debug, Clone)]
pub enum Sel {
    /// Lower-cased key (collection keys compare case-insensitively).
    Key(String),
    Regex(regex::bytes::Regex),
    /// A `/regex/` that is plain text (`/__utm/`), lower-cased: found anywhere in the key.
    Contains(Vec<u8>),
    /// A `/^regex/` that is plain text after the `^` (`/^header_name_/`), lower-cased.
    Prefix(Vec<u8>),
}

impl Sel {
    /// A key selector given as `/regex/` (case-insensitive, as collection keys compare).
    /// Plain-text patterns, which most CRS exclusions are and which rules test against every
    /// key of a collection, are compared without a regex.
    pub fn regex(pattern: &str) -> Result<Sel, String> {
        let plain = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        // A trailing `.*` or `c*` may match nothing, so it adds nothing to an unanchored
        // search (`TX:/MULTIPART_HEADERS_CONTENT_TYPES_*/`, walked over every TX key).
        fn optional_tail(p: &str) -> Option<&str> {
            let b = p.as_bytes();
            match b {
                [.., b'.', b'*'] => Some(&p[..p.len() - 2]),
                [.., c, b'*'] if c.is_ascii_alphanumeric() || *c == b'_' || *c == b'-' => {
                    Some(&p[..p.len() - 2])
                }
                _ => None,
            }
        }
        let core = optional_tail(pattern).unwrap_or(pattern);
        if plain(core) {
            return Ok(Sel::Contains(core.to_ascii_lowercase().into_bytes()));
        }
        if let Some(rest) = core.strip_prefix('^').filter(|p| plain(p)) {
            return Ok(Sel::Prefix(rest.to_ascii_lowercase().into_bytes()));
        }
        regex::bytes::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .unicode(false)
            .build()
            .map(Sel::Regex)
            .map_err(|e| format!("target regex /{pattern}/: {e}"))
    }

    // Inlined: rules test every key of a collection against their selectors (hundreds of
    // calls a request), and most keys differ in length, which settles it at once.
    // Always inlined: called per key in `select`'s walk, which must not pay a call for it.
    #[inline(always)]
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Sel::Key(k) => KeyPat::key_is(k.as_bytes(), key.as_bytes()),
            Sel::Regex(r) => r.is_match(key.as_bytes()),
            Sel::Contains(p) => KeyPat::key_contains(p, key.as_bytes()),
            Sel::Prefix(p) => KeyPat::key_starts(p, key.as_bytes()),
        }
    }

    /// The selector as a text pattern (`None` for a regex).
    fn pattern(&self) -> Option<KeyPat> {
        match self {
            Sel::Key(k) => Some(KeyPat::Key(k.clone())),
            Sel::Regex(_) => None,
            Sel::Contains(p) => Some(KeyPat::Contains(p.clone())),
            Sel::Prefix(p) => Some(KeyPat::Prefix(p.clone())),
        }
    }
}

/// A key selector of plain text, comparable (hot sets are told apart by their targets).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KeyPat {
    Key(String),
    Contains(Vec<u8>),
    Prefix(Vec<u8>),
}

impl KeyPat {
    pub fn matches(&self, key: &str) -> bool {
        match self {
            KeyPat::Key(k) => KeyPat::key_is(k.as_bytes(), key.as_bytes()),
            KeyPat::Contains(p) => KeyPat::key_contains(p, key.as_bytes()),
            KeyPat::Prefix(p) => KeyPat::key_starts(p, key.as_bytes()),
        }
    }

    #[inline]
    fn key_is(k: &[u8], key: &[u8]) -> bool {
        k.len() == key.len() && k.eq_ignore_ascii_case(key)
    }

    #[inline]
    fn key_contains(p: &[u8], key: &[u8]) -> bool {
        p.len() <= key.len() && key.windows(p.len()).any(|w| w.eq_ignore_ascii_case(p))
    }

    #[inline]
    fn key_starts(p: &[u8], key: &[u8]) -> bool {
        key.len() >= p.len() && key[..p.len()].eq_ignore_ascii_case(p)
    }
}

/// `setvar:` — collection, name (may hold macros), operation.
#[derive(Debug, Clone)]
pub struct SetVar {
    pub coll: String,
    pub name: String,
    pub op: SetOp,
    /// The name as the transaction files it (lower-case) when it holds no macro, and whether
    /// a `Set` value holds none: the CRS set-up rules run ~100 setvars a request, nearly all
    /// of plain text, which then need no expansion pass.
    pub plain_name: Option<String>,
    pub plain_value: bool,
    /// `plain_name`'s `transaction::tx_key_hash`.
    pub name_hash: u64,
    /// The name and the value (of `Set`, `Add`, `Sub`) split into text and macros at load:
    /// expanding them then needs no scan and no hashing of TX keys.
    pub name_tpl: Template,
    pub value_tpl: Template,
}

/// A piece of a text with macros: text, or the name inside a `%{…}`.
pub enum Raw<'a> {
    Text(&'a str),
    Macro(&'a str),
}

/// Where the first `%{` of a macro starts. Setvar names and values are short, and a byte
/// scan answers before a substring searcher is even set up.
pub fn macro_at(text: &str) -> Option<usize> {
    let b = text.as_bytes();
    let mut from = 0;
    while let Some(i) = b[from..].iter().position(|&c| c == b'%') {
        let at = from + i;
        if b.get(at + 1) == Some(&b'{') {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Hands `f` the pieces of `text` in order, as macro expansion reads them: a `%{` without its
/// `}` is text. Empty text pieces are left out.
pub fn split_macros<'a>(text: &'a str, mut f: impl FnMut(Raw<'a>)) {
    let mut rest = text;
    while let Some(start) = macro_at(rest) {
        let after = &rest[start + 2..];
        // A byte scan: macro names are a few bytes long, too short for a searcher.
        let Some(end) = after.bytes().position(|b| b == b'}') else {
            break;
        };
        if start > 0 {
            f(Raw::Text(&rest[..start]));
        }
        f(Raw::Macro(&after[..end]));
        rest = &after[end + 1..];
    }
    if !rest.is_empty() {
        f(Raw::Text(rest));
    }
}

/// A text with macros, split at load (`setvar:'tx.%{rule.id}-x=%{tx.0}'`).
#[derive(Debug, Clone, Default)]
pub struct Template(pub Vec<Piece>);

#[derive(Debug, Clone)]
pub enum Piece {
    Text(String),
    /// `%{tx.key}`: the key lower-cased (as TX keys are stored) and its `tx_key_hash`.
    Tx(String, u64),
    /// Any other macro, by its name as written (`matched_var`, `rule.id`).
    Macro(String),
}

impl Template {
    /// A capacity for the expanded text: the text pieces, and 16 bytes per macro.
    pub fn len_hint(&self) -> usize {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Text(s) => s.len(),
                _ => 16,
            })
            .sum()
    }

    /// Splits `text` as `Transaction::expand` reads it: `%{name}`, and a `%{` without its
    /// `}` is text.
    pub fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        split_macros(text, |raw| match raw {
            Raw::Text(t) => lit.push_str(t),
            Raw::Macro(name) => {
                if !lit.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut lit)));
                }
                pieces.push(match name.split_once('.') {
                    Some((c, k)) if c.eq_ignore_ascii_case("tx") => {
                        let k = k.to_ascii_lowercase();
                        let h = super::transaction::tx_key_hash(&k);
                        Piece::Tx(k, h)
                    }
                    _ => Piece::Macro(name.to_string()),
                });
            }
        });
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Template(pieces)
    }
}

#[derive(Debug, Clone)]
pub enum SetOp {
    Set(String),
    Add(String),
    Sub(String),
    Delete,
}

/// `ctl:` actions cong applies to the running transaction.
#[derive(Debug, Clone)]
pub enum Ctl {
    RuleEngine(Mode),
    RemoveById(Vec<(u64, u64)>),
    RemoveByTag(regex::Regex),
    RemoveTargetById(Vec<(u64, u64)>, Var),
    RemoveTargetByTag(regex::Regex, Var),
    BodyProcessor(super::body::Kind),
    BodyAccess(bool),
    ForceBodyVariable(bool),
    /// Accepted and without effect here (audit logging is the SOC pipeline's job).
    Ignored,
}

/// One compiled rule (a chain's later links hang off `chain`).
#[derive(Debug)]
pub struct Rule {
    /// The rule's id; a chain's later links carry the chain starter's.
    pub id: u64,
    pub phase: u8,
    pub file: PathBuf,
    pub line: usize,
    pub targets: Vec<Var>,
    /// `!ARGS:foo` and targets removed by `SecRuleUpdateTargetBy*`.
    pub exclusions: Vec<Var>,
    pub op: Operator,
    /// Index into `RuleSet::chains` (transformation chains are shared for the cache).
    pub transforms: u32,
    pub multi_match: bool,
    pub capture: bool,
    pub disruptive: Option<Disruptive>,
    pub status: Option<u16>,
    pub setvars: Vec<SetVar>,
    pub ctls: Vec<Ctl>,
    pub skip: usize,
    pub skip_after: Option<String>,
    pub log: bool,
    pub msg: Option<String>,
    pub logdata: Option<String>,
    pub severity: Option<u8>,
    pub tags: Vec<String>,
    pub chain: Option<Box<Rule>>,
    /// This link's bit in a value's verdict memo (`memo::ValueMemo`), for links whose
    /// operator result depends on the value alone.
    pub memo_slot: Option<u32>,
    /// The chain key of this link's transformed value in a value memo: `transforms`, or for
    /// a `multiMatch` link a key past the chains (`memo_key`).
    memo_key: u32,
}

impl Rule {
    /// This link's chain key in a value memo (`RuleSet::memo_widths`).
    pub fn memo_key(&self) -> usize {
        self.memo_key as usize
    }

    /// Links of the chain from this rule on.
    pub fn links(&self) -> impl Iterator<Item = &Rule> {
        std::iter::successors(Some(self), |r| r.chain.as_deref())
    }
}

/// An entry of a phase's rule list.
#[derive(Debug)]
pub enum Entry {
    Rule(Box<Rule>),
    Marker(String),
}

/// Engine settings declared by the rule files.
#[derive(Debug, Clone)]
pub struct Settings {
    pub engine: Mode,
    pub body_access: bool,
    pub body_limit: usize,
    pub body_no_files_limit: usize,
    /// `SecRequestBodyLimitAction Reject` (otherwise ProcessPartial).
    pub body_limit_reject: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            engine: Mode::On,
            body_access: true,
            body_limit: 13_107_200,
            body_no_files_limit: 131_072,
            body_limit_reject: true,
        }
    }
}

/// Per-phase defaults from `SecDefaultAction`.
#[derive(Debug, Clone)]
pub struct PhaseDefault {
    pub disruptive: Disruptive,
    pub status: Option<u16>,
    pub log: bool,
}

/// A loaded, immutable rule set shared by every transaction that uses it.
#[derive(Debug)]
pub struct RuleSet {
    /// Phases 1–5 at indexes 1–5.
    pub phases: [Vec<Entry>; 6],
    pub defaults: [PhaseDefault; 6],
    pub chains: Vec<Vec<Transform>>,
    pub settings: Settings,
    pub warnings: Vec<Warning>,
    /// Ids of rules whose regex runs on the bounded backtracking engine.
    pub backtracking: Vec<u64>,
    pub rule_count: usize,
    /// Positions of each marker in each phase's list (for `skipAfter` without a scan).
    pub markers: [HashMap<String, Vec<usize>>; 6],
    /// Unique per compiled set in this process: verdicts remembered across requests are
    /// keyed by it.
    pub id: u64,
    /// Per chain key (a chain's index, then one per chain `multiMatch` links use): how many
    /// links hold a `memo_slot` under it.
    pub memo_widths: Vec<u32>,
    /// Links with a `memo_slot` in all.
    pub memo_slots: u32,
    /// Per phase and entry: where evaluation goes on after that rule's `skipAfter`.
    pub jumps: [Vec<u32>; 6],
    /// Per phase and entry: what evaluation needs to know to pass over a rule whose first
    /// link cannot match, packed densely (walking the rules themselves for that costs a
    /// cache miss or two per rule and request).
    pub hot: [Vec<Hot>; 6],
    /// The distinct sets of targets `Hot::set` names (sorted; the CRS has a few dozen), so
    /// that a transaction works out what a set cannot match once per phase.
    pub hot_sets: Vec<Box<[HotTarget]>>,
    /// The distinct (collection, excluded keys) of hot set targets (`HotTarget::except`): a
    /// hundred CRS rules leave out `__utm` cookies, so their words are made once a phase.
    pub hot_excepts: Vec<(u16, Box<[KeyPat]>)>,
    /// The rules `Hot::gate` points to.
    pub gates: Vec<Gate>,
    /// The first links `Hot::count` points to.
    pub counts: Vec<CountGate>,
    /// Literal scans that prove value-only regexes cannot match a value (`prefilter`).
    pub prefilters: super::prefilter::Prefilters,
}

/// A rule that only compares one TX variable with a constant and, when it matches, goes on
/// elsewhere: `SecRule TX:EXECUTING_PARANOIA_LEVEL "@lt 2" "pass,nolog,skipAfter:…"`, of
/// which the CRS runs about 130 per request. One chain link, no transformation, no action
/// but the jump: evaluation compares the stored value directly, without the general path.
#[derive(Debug)]
pub struct Gate {
    /// The TX key, lower-case, and its `transaction::tx_key_hash`.
    pub key: String,
    pub hash: u64,
    pub test: super::operators::NumTest,
}

/// The first link of `r` when it compares its one target, untransformed and with nothing
/// left out, with a constant (`@eq/@ge/@gt/@le/@lt`, `multiMatch` aside): the target and the
/// test, for `Gate` and `CountGate`.
fn numeric_link<'r>(
    r: &'r Rule,
    chains: &[Vec<Transform>],
) -> Option<(&'r Var, super::operators::NumTest)> {
    let [var] = r.targets.as_slice() else {
        return None;
    };
    let plain = r.exclusions.is_empty()
        && chains
            .get(r.transforms as usize)
            .is_some_and(|c| c.is_empty())
        && !r.multi_match;
    Some((var, r.op.num_test().filter(|_| plain)?))
}

impl Gate {
    fn of(r: &Rule, chains: &[Vec<Transform>]) -> Option<Gate> {
        let (var, test) = numeric_link(r, chains)?;
        let Some(Sel::Key(key)) = &var.selector else {
            return None;
        };
        let plain = r.chain.is_none()
            && seclang::VARIABLES.get(var.coll) == Some(&"TX")
            && !var.count
            && !r.capture
            && r.disruptive == Some(Disruptive::Pass)
            && r.setvars.is_empty()
            && r.ctls.is_empty()
            && !r.log;
        plain.then(|| Gate {
            key: key.clone(),
            hash: super::transaction::tx_key_hash(key),
            test,
        })
    }
}

/// A first link that compares one count with a constant: `&REQUEST_HEADERS:Host "@eq 0"`,
/// `&MULTIPART_PART_HEADERS "@gt 0"`, of which the CRS runs half a dozen per request. When
/// the count (as `Transaction::quick_count` makes it) fails the test, the rule cannot match
/// and is passed over without the general path; when it passes, the rule is evaluated as any
/// other. No transformation and no exclusion, so the count is what the operator would see.
#[derive(Debug)]
pub struct CountGate {
    pub var: Var,
    pub test: super::operators::NumTest,
}

impl CountGate {
    fn of(r: &Rule, chains: &[Vec<Transform>]) -> Option<CountGate> {
        let (var, test) = numeric_link(r, chains)?;
        var.count.then(|| CountGate {
            var: var.clone(),
            test,
        })
    }
}

/// One target of a hot set: a collection, and the key it selects when it names one
/// (`REQUEST_HEADERS:User-Agent`): only the values under that key count then. Other
/// selectors count as the whole collection (more values can only make fewer rules pass
/// over), less the keys the link excludes by plain text (`!REQUEST_COOKIES:/__utm/`,
/// `!REQUEST_HEADERS:Referer`): the link never runs on those values, so they would never
/// be known to miss it, and the rule could never be passed over while one is present.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HotTarget {
    pub coll: u16,
    /// Lower-case, as `Sel::Key` holds it.
    pub key: Option<String>,
    /// 1 + the index in `RuleSet::hot_excepts` of the keys left out (only without `key`;
    /// regex exclusions are not left out: their values count), 0 for none.
    pub except: u32,
}

/// See `RuleSet::hot`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hot {
    /// The first link's memo slot.
    pub slot: u32,
    /// 1 + the index in `RuleSet::hot_sets` of the first link's targets, when
    /// every one of them is a collection of stored values (`transaction::quickable`); 0
    /// otherwise, and for markers.
    pub set: u32,
    /// 1 + the rule's index in `RuleSet::gates` when it is a `Gate`, else 0.
    pub gate: u32,
    /// 1 + the index in `RuleSet::counts` when the first link is a `CountGate`, else 0.
    pub count: u32,
}

impl RuleSet {
    /// Where evaluation goes on after `skipAfter:marker` from position `at` of `phase`: just
    /// after the first such marker that follows, or the end of the phase.
    pub fn marker_after(&self, phase: u8, marker: &str, at: usize) -> usize {
        let p = phase as usize;
        self.markers[p]
            .get(marker)
            .and_then(|pos| pos.iter().find(|&&m| m > at))
            .map(|m| m + 1)
            .unwrap_or(self.phases[p].len())
    }
}

/// Loading failed: the first problem that makes the rule set meaningless, with its place.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub SyntaxError);

impl RuleSet {
    /// Loads rule files in order (each may `Include` others).
    pub fn load(files: &[PathBuf]) -> Result<RuleSet, LoadError> {
        let mut directives = Vec::new();
        for f in files {
            directives.extend(seclang::parse_file(f).map_err(LoadError)?);
        }
        Self::compile(&directives)
    }

    pub fn parse(text: &str) -> Result<RuleSet, LoadError> {
        let d = seclang::parse_str(text, Path::new("inline.conf")).map_err(LoadError)?;
        Self::compile(&d)
    }

    pub fn compile(directives: &[Directive]) -> Result<RuleSet, LoadError> {
        let warnings = seclang::check(directives).map_err(LoadError)?;
        let mut b = Builder {
            set: RuleSet {
                phases: Default::default(),
                defaults: std::array::from_fn(|_| PhaseDefault {
                    disruptive: Disruptive::Pass,
                    status: None,
                    log: true,
                }),
                chains: vec![Vec::new()],
                settings: Settings::default(),
                warnings,
                backtracking: Vec::new(),
                rule_count: 0,
                markers: Default::default(),
                id: {
                    static NEXT: std::sync::atomic::AtomicU64 =
                        std::sync::atomic::AtomicU64::new(1);
                    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                },
                memo_widths: Vec::new(),
                memo_slots: 0,
                jumps: Default::default(),
                hot: Default::default(),
                hot_sets: Vec::new(),
                hot_excepts: Vec::new(),
                gates: Vec::new(),
                counts: Vec::new(),
                prefilters: Default::default(),
            },
            chain_index: HashMap::new(),
            open_chain: None,
            removals: Vec::new(),
        };
        b.chain_index.insert(Vec::new(), 0);
        for d in directives {
            b.directive(d)?;
        }
        if let Some((_, d)) = b.open_chain.take() {
            return Err(err_at(&d.0, d.1, "chain without a following rule".into()));
        }
        b.apply_removals();
        // Slots grouped by chain key: the links that read one transformed value test
        // neighbouring bits.
        let chains = b.set.chains.len();
        let mut each_link = |pure: bool, f: &mut dyn FnMut(&mut Rule)| {
            for list in b.set.phases.iter_mut() {
                for e in list.iter_mut() {
                    let Entry::Rule(r) = e else { continue };
                    let mut link: Option<&mut Rule> = Some(r);
                    while let Some(l) = link {
                        if !pure || l.op.is_pure() {
                            f(l);
                        }
                        link = l.chain.as_deref_mut();
                    }
                }
            }
        };
        // Chain keys: a chain's index, then one per chain that `multiMatch` links use (a
        // handful), so that a value memo holds no cells for combinations no link has.
        let mut multi: Vec<Option<u32>> = vec![None; chains];
        let mut keys = chains as u32;
        each_link(false, &mut |l| {
            l.memo_key = if l.multi_match {
                *multi[l.transforms as usize].get_or_insert_with(|| {
                    keys += 1;
                    keys - 1
                })
            } else {
                l.transforms
            };
        });
        let mut widths = vec![0u32; keys as usize];
        each_link(true, &mut |l| widths[l.memo_key()] += 1);
        let mut next: Vec<u32> = widths
            .iter()
            .scan(0u32, |acc, w| {
                let start = *acc;
                *acc += w;
                Some(start)
            })
            .collect();
        each_link(true, &mut |l| {
            let key = l.memo_key();
            l.memo_slot = Some(next[key]);
            next[key] += 1;
        });
        b.set.memo_slots = widths.iter().sum();
        b.set.memo_widths = widths;
        b.set.prefilters = super::prefilter::Prefilters::build(
            &b.set.phases,
            &b.set.chains,
            b.set.memo_slots,
            super::seclang::VARIABLES.len(),
        );
        for (p, list) in b.set.phases.iter().enumerate() {
            for (i, e) in list.iter().enumerate() {
                if let Entry::Marker(m) = e {
                    b.set.markers[p].entry(m.clone()).or_default().push(i);
                }
            }
        }
        for p in 0..6 {
            let jumps = (0..b.set.phases[p].len())
                .map(|i| match &b.set.phases[p][i] {
                    Entry::Rule(r) => match &r.skip_after {
                        Some(m) => b.set.marker_after(p as u8, m, i) as u32,
                        None => 0,
                    },
                    Entry::Marker(_) => 0,
                })
                .collect();
            b.set.jumps[p] = jumps;
            let mut hot = Vec::with_capacity(b.set.phases[p].len());
            for e in &b.set.phases[p] {
                let mut h = Hot::default();
                if let Entry::Rule(r) = e {
                    let quick = r.memo_slot.is_some()
                        && !r.targets.is_empty()
                        && r.targets.iter().all(|v| {
                            !v.count && super::transaction::quickable(v.coll) && v.coll < 1 << 16
                        });
                    if let (true, Some(slot)) = (quick, r.memo_slot) {
                        let mut targets: Vec<HotTarget> = r
                            .targets
                            .iter()
                            .map(|v| {
                                let key = match &v.selector {
                                    Some(Sel::Key(k)) => Some(k.clone()),
                                    _ => None,
                                };
                                let mut except: Vec<KeyPat> = match key {
                                    Some(_) => Vec::new(),
                                    None => r
                                        .exclusions
                                        .iter()
                                        .filter(|e| e.coll == v.coll && !e.count)
                                        .filter_map(|e| e.selector.as_ref()?.pattern())
                                        .collect(),
                                };
                                except.sort_unstable();
                                except.dedup();
                                let except = if except.is_empty() {
                                    0
                                } else {
                                    let e = (v.coll as u16, except.into_boxed_slice());
                                    let ex = &mut b.set.hot_excepts;
                                    1 + match ex.iter().position(|x| *x == e) {
                                        Some(n) => n,
                                        None => {
                                            ex.push(e);
                                            ex.len() - 1
                                        }
                                    } as u32
                                };
                                HotTarget {
                                    coll: v.coll as u16,
                                    key,
                                    except,
                                }
                            })
                            .collect();
                        targets.sort_unstable();
                        targets.dedup();
                        let set = match b.set.hot_sets.iter().position(|s| **s == *targets) {
                            Some(n) => n,
                            None => {
                                b.set.hot_sets.push(targets.into_boxed_slice());
                                b.set.hot_sets.len() - 1
                            }
                        };
                        h = Hot {
                            slot,
                            set: set as u32 + 1,
                            gate: 0,
                            count: 0,
                        };
                    }
                    if let Some(g) = CountGate::of(r, &b.set.chains) {
                        b.set.counts.push(g);
                        h.count = b.set.counts.len() as u32;
                    }
                    if let Some(g) = Gate::of(r, &b.set.chains) {
                        b.set.gates.push(g);
                        h.gate = b.set.gates.len() as u32;
                    }
                }
                hot.push(h);
            }
            b.set.hot[p] = hot;
        }
        Ok(b.set)
    }
}

enum Removal {
    Ids(Vec<(u64, u64)>),
    Tag(regex::Regex),
    Msg(regex::Regex),
    TargetsById(Vec<(u64, u64)>, Vec<seclang::Target>),
    TargetsByTag(regex::Regex, Vec<seclang::Target>),
}

struct Builder {
    set: RuleSet,
    chain_index: HashMap<Vec<Transform>, u32>,
    /// The chain being built: its starter (with links so far) and where it was written.
    open_chain: Option<(Box<Rule>, (PathBuf, usize))>,
    removals: Vec<Removal>,
}

/// `1-100 200 300` / `1,2` → inclusive ranges.
pub fn parse_id_ranges(args: &[String]) -> Result<Vec<(u64, u64)>, String> {
    let mut out = Vec::new();
    for a in args {
        for part in a.split([',', ' ']).filter(|p| !p.trim().is_empty()) {
            let part = part.trim();
            let (lo, hi) = match part.split_once('-') {
                Some((l, h)) => (l.trim(), h.trim()),
                None => (part, part),
            };
            let lo: u64 = lo.parse().map_err(|_| format!("bad rule id {part:?}"))?;
            let hi: u64 = hi.parse().map_err(|_| format!("bad rule id {part:?}"))?;
            out.push((lo.min(hi), lo.max(hi)));
        }
    }
    Ok(out)
}

pub fn in_ranges(ranges: &[(u64, u64)], id: u64) -> bool {
    ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&id))
}

/// Resolves a parsed target to a variable (`None` for one cong does not provide: the loader
/// already warned about it).
pub fn resolve_target(t: &seclang::Target) -> Result<Option<Var>, String> {
    let Some(coll) = seclang::VARIABLES.iter().position(|v| *v == t.collection) else {
        return Ok(None);
    };
    let selector = match &t.selector {
        None => None,
        Some(Selector::Key(k)) => Some(Sel::Key(k.to_ascii_lowercase())),
        Some(Selector::Regex(r)) => Some(Sel::regex(r)?),
    };
    Ok(Some(Var {
        coll,
        selector,
        count: t.count,
    }))
}

fn tag_regex(s: &str) -> Result<regex::Regex, String> {
    regex::RegexBuilder::new(s)
        .case_insensitive(true)
        .build()
        .map_err(|e| format!("tag pattern {s:?}: {e}"))
}

fn parse_disruptive(name: &str, value: Option<&str>) -> Option<Disruptive> {
    Some(match name {
        "pass" => Disruptive::Pass,
        "block" => Disruptive::Block,
        "deny" => Disruptive::Deny,
        "drop" => Disruptive::Drop,
        "allow" => Disruptive::Allow(match value.map(|v| v.to_ascii_lowercase()).as_deref() {
            Some("phase") => AllowScope::Phase,
            Some("request") => AllowScope::Request,
            _ => AllowScope::All,
        }),
        "redirect" => Disruptive::Redirect(value.unwrap_or_default().to_string()),
        _ => return None,
    })
}

/// Severity names by number (`severity:2` is `CRITICAL`).
pub const SEVERITIES: [&str; 8] = [
    "EMERGENCY",
    "ALERT",
    "CRITICAL",
    "ERROR",
    "WARNING",
    "NOTICE",
    "INFO",
    "DEBUG",
];

fn parse_severity(v: &str) -> Option<u8> {
    let v = v.trim();
    if let Ok(n) = v.parse::<u8>() {
        return Some(n.min(7));
    }
    SEVERITIES
        .iter()
        .position(|n| n.eq_ignore_ascii_case(v))
        .map(|p| p as u8)
}

/// Parses `setvar:` values: `tx.a=1`, `tx.a=+%{x}`, `!tx.a`, `tx.a`.
fn parse_setvar(v: &str) -> Option<SetVar> {
    let v = v.trim();
    let (delete, v) = match v.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, v),
    };
    let (lhs, rhs) = match v.split_once('=') {
        Some((l, r)) => (l.trim(), Some(r)),
        None => (v, None),
    };
    let (coll, name) = lhs.split_once('.')?;
    let op = if delete {
        SetOp::Delete
    } else {
        match rhs {
            None => SetOp::Set("1".into()),
            Some(r) => {
                if let Some(x) = r.strip_prefix('+') {
                    SetOp::Add(x.to_string())
                } else if let Some(x) = r.strip_prefix('-') {
                    SetOp::Sub(x.to_string())
                } else {
                    SetOp::Set(r.to_string())
                }
            }
        }
    };
    let has_macro = |t: &str| t.contains("%{");
    let plain_name = (!has_macro(name)).then(|| name.to_ascii_lowercase());
    let value_tpl = match &op {
        SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) => Template::parse(v),
        SetOp::Delete => Template::default(),
    };
    Some(SetVar {
        coll: coll.to_ascii_lowercase(),
        name_hash: plain_name
            .as_deref()
            .map_or(0, super::transaction::tx_key_hash),
        plain_name,
        plain_value: matches!(&op, SetOp::Set(v) if !has_macro(v)),
        name_tpl: Template::parse(name),
        name: name.to_string(),
        value_tpl,
        op,
    })
}

fn parse_ctl(v: &str) -> Result<Ctl, String> {
    let (name, value) = v.split_once('=').unwrap_or((v, ""));
    let value = value.trim();
    let target_spec = |value: &str| -> Result<(String, Var), String> {
        let (who, target) = value
            .split_once(';')
            .ok_or_else(|| format!("ctl:{name} needs 'what;TARGET'"))?;
        let targets = seclang::parse_targets(target)?;
        let t = targets.first().ok_or("empty target")?;
        let var = resolve_target(t)?.ok_or_else(|| format!("unknown variable {}", t.collection))?;
        Ok((who.to_string(), var))
    };
    Ok(match name {
        "ruleEngine" => {
            Ctl::RuleEngine(Mode::parse(value).ok_or_else(|| format!("ruleEngine={value}"))?)
        }
        "ruleRemoveById" => Ctl::RemoveById(parse_id_ranges(&[value.to_string()])?),
        "ruleRemoveByTag" => Ctl::RemoveByTag(tag_regex(value)?),
        "ruleRemoveTargetById" => {
            let (who, var) = target_spec(value)?;
            Ctl::RemoveTargetById(parse_id_ranges(&[who])?, var)
        }
        "ruleRemoveTargetByTag" => {
            let (who, var) = target_spec(value)?;
            Ctl::RemoveTargetByTag(tag_regex(&who)?, var)
        }
        "requestBodyProcessor" => Ctl::BodyProcessor(match value.to_ascii_uppercase().as_str() {
            "URLENCODED" => super::body::Kind::UrlEncoded,
            "MULTIPART" => super::body::Kind::Multipart,
            "JSON" => super::body::Kind::Json,
            "XML" => super::body::Kind::Xml,
            other => return Err(format!("unknown body processor {other}")),
        }),
        "requestBodyAccess" => Ctl::BodyAccess(value.eq_ignore_ascii_case("on")),
        "forceRequestBodyVariable" => Ctl::ForceBodyVariable(value.eq_ignore_ascii_case("on")),
        _ => Ctl::Ignored,
    })
}

impl Builder {
    fn chain_id(&mut self, chain: Vec<Transform>) -> u32 {
        let next = self.set.chains.len() as u32;
        *self.chain_index.entry(chain.clone()).or_insert_with(|| {
            self.set.chains.push(chain);
            next
        })
    }

    fn directive(&mut self, d: &Directive) -> Result<(), LoadError> {
        let err = |m: String| err_at(&d.file, d.line, m);
        match &d.kind {
            Kind::Rule {
                variables,
                operator,
                actions,
            } => self.rule(d, Some(variables), Some(operator), actions),
            Kind::Action(actions) => self.rule(d, None, None, actions),
            Kind::Marker(name) => {
                if self.open_chain.is_some() {
                    return Err(err("SecMarker inside a chain".into()));
                }
                for p in 1..=5 {
                    self.set.phases[p].push(Entry::Marker(name.clone()));
                }
                Ok(())
            }
            Kind::DefaultAction(actions) => {
                let acts = seclang::parse_actions(actions).map_err(&err)?;
                let phase = acts
                    .iter()
                    .find(|a| a.name == "phase")
                    .and_then(|a| a.value.as_deref())
                    .map(parse_phase)
                    .unwrap_or(Some(2))
                    .ok_or_else(|| err("bad phase".into()))?;
                let def = &mut self.set.defaults[phase as usize];
                for a in &acts {
                    if let Some(dis) = parse_disruptive(&a.name, a.value.as_deref()) {
                        def.disruptive = dis;
                    }
                    match a.name.as_str() {
                        "status" => def.status = a.value.as_deref().and_then(|v| v.parse().ok()),
                        "log" => def.log = true,
                        "nolog" => def.log = false,
                        _ => {}
                    }
                }
                Ok(())
            }
            Kind::RemoveById(args) => {
                let r = parse_id_ranges(args).map_err(&err)?;
                self.removals.push(Removal::Ids(r));
                Ok(())
            }
            Kind::RemoveByTag(t) => {
                let r = tag_regex(t).map_err(&err)?;
                self.removals.push(Removal::Tag(r));
                Ok(())
            }
            Kind::RemoveByMsg(m) => {
                let r = tag_regex(m).map_err(&err)?;
                self.removals.push(Removal::Msg(r));
                Ok(())
            }
            Kind::UpdateTargetById { ids, targets } => {
                let r = parse_id_ranges(std::slice::from_ref(ids)).map_err(&err)?;
                let t = seclang::parse_targets(targets).map_err(&err)?;
                self.removals.push(Removal::TargetsById(r, t));
                Ok(())
            }
            Kind::UpdateTargetByTag { tag, targets } => {
                let r = tag_regex(tag).map_err(&err)?;
                let t = seclang::parse_targets(targets).map_err(&err)?;
                self.removals.push(Removal::TargetsByTag(r, t));
                Ok(())
            }
            Kind::UpdateActionById { .. } => Ok(()),
            Kind::Setting { name, args } => {
                let a0 = args.first().map(String::as_str).unwrap_or("");
                let s = &mut self.set.settings;
                match name.as_str() {
                    "SecRuleEngine" => {
                        s.engine = Mode::parse(a0).ok_or_else(|| err(format!("{name} {a0}")))?
                    }
                    "SecRequestBodyAccess" => s.body_access = a0.eq_ignore_ascii_case("on"),
                    "SecRequestBodyLimit" => {
                        s.body_limit = a0.parse().map_err(|_| err(format!("{name} {a0}")))?
                    }
                    "SecRequestBodyNoFilesLimit" => {
                        s.body_no_files_limit =
                            a0.parse().map_err(|_| err(format!("{name} {a0}")))?
                    }
                    "SecRequestBodyLimitAction" => {
                        s.body_limit_reject = a0.eq_ignore_ascii_case("reject")
                    }
                    _ => {}
                }
                Ok(())
            }
        }
    }

    fn rule(
        &mut self,
        d: &Directive,
        variables: Option<&String>,
        operator: Option<&String>,
        actions: &str,
    ) -> Result<(), LoadError> {
        let err = |m: String| err_at(&d.file, d.line, m);
        let acts = seclang::parse_actions(actions).map_err(&err)?;
        let chained_link = self.open_chain.is_some();
        let mut id = 0u64;
        let mut phase = 2u8;
        let mut transforms: Vec<Transform> = Vec::new();
        let mut rule_log: Option<bool> = None;
        let mut r = Rule {
            id: 0,
            phase: 2,
            file: d.file.clone(),
            line: d.line,
            targets: Vec::new(),
            exclusions: Vec::new(),
            op: Operator::compile("unconditionalMatch", "", false, Path::new("."))
                .map_err(|e| err(e.to_string()))?,
            transforms: 0,
            multi_match: false,
            capture: false,
            disruptive: None,
            status: None,
            setvars: Vec::new(),
            ctls: Vec::new(),
            skip: 0,
            skip_after: None,
            log: true,
            msg: None,
            logdata: None,
            severity: None,
            tags: Vec::new(),
            chain: None,
            memo_slot: None,
            memo_key: 0,
        };
        let mut chain = false;
        for a in &acts {
            let v = a.value.as_deref();
            if let Some(dis) = parse_disruptive(&a.name, v) {
                r.disruptive = Some(dis);
                continue;
            }
            match a.name.as_str() {
                "id" => {
                    id = v
                        .unwrap_or_default()
                        .trim()
                        .parse()
                        .map_err(|_| err(format!("bad id {v:?}")))?
                }
                "phase" => {
                    phase = parse_phase(v.unwrap_or_default())
                        .ok_or_else(|| err(format!("bad phase {v:?}")))?
                }
                "t" => match v.unwrap_or_default() {
                    n if n.eq_ignore_ascii_case("none") => transforms.clear(),
                    n => {
                        if let Some(t) = Transform::parse(n) {
                            transforms.push(t);
                        }
                    }
                },
                "chain" => chain = true,
                "capture" => r.capture = true,
                "multiMatch" => r.multi_match = true,
                "status" => r.status = v.and_then(|s| s.trim().parse().ok()),
                "setvar" => {
                    let sv = parse_setvar(v.unwrap_or_default())
                        .ok_or_else(|| err(format!("bad setvar {v:?}")))?;
                    r.setvars.push(sv);
                }
                "ctl" => r.ctls.push(parse_ctl(v.unwrap_or_default()).map_err(&err)?),
                "skip" => r.skip = v.and_then(|s| s.trim().parse().ok()).unwrap_or(0),
                "skipAfter" => r.skip_after = v.map(|s| s.trim().to_string()),
                "log" => rule_log = Some(true),
                "nolog" => rule_log = Some(false),
                "msg" => r.msg = v.map(str::to_string),
                "logdata" => r.logdata = v.map(str::to_string),
                "severity" => r.severity = v.and_then(parse_severity),
                "tag" => r.tags.extend(v.map(str::to_string)),
                _ => {}
            }
        }
        if let Some(vars) = variables {
            for t in seclang::parse_targets(vars).map_err(&err)? {
                let Some(var) = resolve_target(&t).map_err(&err)? else {
                    continue;
                };
                if t.negated {
                    r.exclusions.push(var);
                } else {
                    r.targets.push(var);
                }
            }
        }
        let mut unsupported_op = false;
        if let Some(op) = operator {
            let (negated, name, param) = seclang::split_operator(op);
            let base = d.file.parent().unwrap_or(Path::new("."));
            let param = unescape_backslashes(param);
            match Operator::compile(name, &param, negated, base) {
                Ok(o) => r.op = o,
                // Warned at check: a rule whose operator cong does not run never matches.
                Err(OpError::Unsupported(_)) => unsupported_op = true,
                Err(e) => return Err(err(e.to_string())),
            }
        }
        if unsupported_op {
            r.op = Operator::compile("noMatch", "", false, Path::new("."))
                .map_err(|e| err(e.to_string()))?;
        }
        r.transforms = self.chain_id(transforms);
        if let Some((starter, _)) = self.open_chain.as_mut() {
            // A later link of a chain: phase and id are the starter's.
            r.id = starter.id;
            r.phase = starter.phase;
            r.log = starter.log;
            if r.op.uses_backtracking() {
                self.set.backtracking.push(r.id);
            }
            let mut tail: &mut Rule = starter;
            while tail.chain.is_some() {
                tail = tail.chain.as_deref_mut().expect("checked is_some");
            }
            tail.chain = Some(Box::new(r));
            if !chain {
                let (starter, _) = self.open_chain.take().expect("checked is_some");
                self.push(starter);
            }
            return Ok(());
        }
        let _ = chained_link;
        r.id = id;
        r.phase = phase;
        r.log = rule_log.unwrap_or(self.set.defaults[phase as usize].log);
        if r.op.uses_backtracking() {
            self.set.backtracking.push(r.id);
        }
        if operator.is_none() {
            // SecAction: applies unconditionally.
            r.targets.clear();
        }
        if chain {
            self.open_chain = Some((Box::new(r), (d.file.clone(), d.line)));
        } else {
            self.push(Box::new(r));
        }
        Ok(())
    }

    fn push(&mut self, r: Box<Rule>) {
        self.set.rule_count += 1;
        let p = r.phase as usize;
        self.set.phases[p].push(Entry::Rule(r));
    }

    fn apply_removals(&mut self) {
        let removals = std::mem::take(&mut self.removals);
        for phase in self.set.phases.iter_mut() {
            phase.retain(|e| match e {
                Entry::Rule(r) => !removals.iter().any(|rm| match rm {
                    Removal::Ids(ranges) => in_ranges(ranges, r.id),
                    Removal::Tag(re) => r.tags.iter().any(|t| re.is_match(t)),
                    Removal::Msg(re) => r.msg.as_deref().is_some_and(|m| re.is_match(m)),
                    _ => false,
                }),
                Entry::Marker(_) => true,
            });
            for e in phase.iter_mut() {
                let Entry::Rule(r) = e else { continue };
                for rm in &removals {
                    let targets = match rm {
                        Removal::TargetsById(ranges, t) if in_ranges(ranges, r.id) => t,
                        Removal::TargetsByTag(re, t) if r.tags.iter().any(|x| re.is_match(x)) => t,
                        _ => continue,
                    };
                    for t in targets {
                        if let Ok(Some(var)) = resolve_target(t) {
                            if t.negated {
                                r.exclusions.push(var);
                            } else {
                                r.targets.push(var);
                            }
                        }
                    }
                }
            }
        }
        self.set.rule_count = self
            .set
            .phases
            .iter()
            .map(|p| p.iter().filter(|e| matches!(e, Entry::Rule(_))).count())
            .sum();
    }
}

/// `\\\\` → `\\` in a quoted operator argument, as ModSecurity's rule parser reads it (other
/// escapes are the operator's to interpret).
fn unescape_backslashes(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains("\\\\") {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                chars.next();
                if n != '\\' {
                    out.push(n);
                }
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

fn err_at(file: &Path, line: usize, message: String) -> LoadError {
    LoadError(SyntaxError {
        file: file.to_path_buf(),
        line,
        message,
    })
}

fn parse_phase(v: &str) -> Option<u8> {
    match v.trim().to_ascii_lowercase().as_str() {
        "request" => Some(2),
        "response" => Some(4),
        "logging" => Some(5),
        n => n.parse::<u8>().ok().filter(|p| (1..=5).contains(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::Sel;

    #[test]
    fn key_selectors_with_an_optional_tail_compare_as_text() {
        let keys = [
            "multipart_headers_content_types",
            "MULTIPART_HEADERS_CONTENT_TYPES_x",
            "multipart_headers_content_types__",
            "multipart_headers_content_type",
            "x_multipart_headers_content_types",
            "paramcounter_a",
            "paramcounter",
            "header_name_accept",
            "",
        ];
        for pattern in [
            "MULTIPART_HEADERS_CONTENT_TYPES_*",
            "paramcounter_.*",
            "^header_name_.*",
            "^paramcounter_*",
        ] {
            let sel = Sel::regex(pattern).unwrap();
            assert!(!matches!(sel, Sel::Regex(_)), "{pattern} compared as text");
            let re = regex::bytes::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .unwrap();
            for k in keys {
                assert_eq!(
                    sel.matches(k),
                    re.is_match(k.as_bytes()),
                    "{pattern} on {k}"
                );
            }
        }
        // Not a plain tail: still a regex.
        assert!(matches!(Sel::regex("abc\\d*").unwrap(), Sel::Regex(_)));
        assert!(matches!(Sel::regex("^.*").unwrap(), Sel::Regex(_)));
    }

    #[test]
    fn plain_text_key_selectors_match_like_their_regex() {
        let cases = [
            ("__utm", "__utmz", true),
            ("__utm", "x__UTMa", true),
            ("__utm", "_ga", false),
            ("^header_name_", "HEADER_NAME_cookie", true),
            ("^header_name_", "x_header_name_", false),
            ("^x-", "X-Forwarded-For", true),
            ("a.b", "axb", true),
            ("^(?:foo|bar)$", "BAR", true),
        ];
        for (pattern, key, want) in cases {
            let sel = Sel::regex(pattern).unwrap();
            assert_eq!(sel.matches(key), want, "/{pattern}/ on {key}");
            let re = regex::bytes::RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .unwrap();
            assert_eq!(
                re.is_match(key.as_bytes()),
                want,
                "reference /{pattern}/ on {key}"
            );
        }
        assert!(matches!(Sel::regex("__utm"), Ok(Sel::Contains(_))));
        assert!(matches!(Sel::regex("^x-"), Ok(Sel::Prefix(_))));
        assert!(matches!(Sel::regex("a.b"), Ok(Sel::Regex(_))));
        assert!(Sel::regex("(").is_err());
    }

    #[test]
    fn templates_split_as_expansion_reads_them() {
        use super::{Piece, Template};
        let t = Template::parse("/%{TX.Header_0}/-%{rule.id}%{tx}x %{unclosed");
        let shape: Vec<String> =
            t.0.iter()
                .map(|p| match p {
                    Piece::Text(s) => format!("text {s}"),
                    Piece::Tx(k, _) => format!("tx {k}"),
                    Piece::Macro(m) => format!("macro {m}"),
                })
                .collect();
        assert_eq!(
            shape,
            [
                "text /",
                "tx header_0",
                "text /-",
                "macro rule.id",
                "macro tx",
                "text x %{unclosed"
            ]
        );
        assert!(Template::parse("").0.is_empty());
    }
}
