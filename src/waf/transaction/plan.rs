//! What a tenant's settings decide before any request arrives. The CRS spends a large part of
//! every request on rules that read nothing but TX variables the tenant's settings and the
//! set-up rules fixed: `REQUEST-901`'s defaults (`&TX:paranoia_level "@eq 0"` → set it), its
//! score resets, and the ~130 paranoia-level checks that jump over the rules of higher
//! levels. Their outcome is the same for every request of the tenant, so a `Plan` works it out
//! once, by evaluating them in a transaction of its own: the TX variables the leading set-up
//! rules leave (a request starts from a copy), and per phase and rule list entry the next entry
//! whose outcome depends on the request (evaluation steps from one to the next).
//!
//! A rule counts as fixed only when everything it reads is a TX variable that no rule whose
//! outcome varies may have written before it; a fixed rule further on must also write nothing,
//! log nothing and end in `pass`, so passing over it changes nothing but where evaluation goes
//! on. A request that changes what the plan assumed (a per-path exclusion, a `ctl` that
//! removes rules or targets) is evaluated rule by rule as without a plan. The plan also marks
//! chains that file TX keys no other rule reads (920450's `header_name_*`), which evaluation
//! then tests without filing them, and works out phase 5 (logging) for the requests that leave
//! the TX variables it reads as the plan has them. It must not know about requests or tenants:
//! the caller says which TX settings and exclusions apply.

use super::{ix, next_rule, Coll, Exclusions, Transaction};
use crate::waf::rules::{in_ranges, Disruptive, Entry, Piece, Rule, RuleSet, Sel, SetOp};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// The TX variables and jumps fixed by one tenant's settings for one rule set.
pub struct Plan {
    /// The rule set it was made for (a transaction on another set ignores it).
    pub(super) rules: u64,
    /// Unique per plan made (answers remembered per plan are told apart by it).
    pub(super) id: u64,
    /// TX after the leading set-up rules, in the order they were set, with its index and
    /// capture-key bits (copied, not rebuilt, per request).
    pub(super) tx: Vec<(String, Vec<u8>)>,
    tx_index: super::TxIndex,
    tx_digits: u16,
    /// Per phase (1–5) and entry: the first entry from there on whose outcome is not fixed
    /// (the list's length when there is none).
    pub(super) next: [Vec<u32>; 6],
    /// How many rules the plan passes over on a request that reaches them all, for
    /// `cong check` and tests.
    pub fixed_rules: usize,
    /// Per phase and entry: a chain that files TX keys no other rule reads (see
    /// `files_unread_keys`), tested without filing them.
    pub(super) unfiled: [Vec<bool>; 6],
    /// The TX key prefixes of those chains, whose keys a request may then lack.
    pub unfiled_prefixes: Vec<String>,
    /// Phase 5 (logging) when, evaluated from the plan's TX, it records and decides nothing
    /// (see `quiet_logging`).
    pub(super) quiet_logging: Option<QuietLogging>,
    /// Key selectors of other rules that may pick such a key by what it contains: a value
    /// whose key one of them selects is filed (the chain takes the general path).
    pub(super) unfiled_watch: Vec<Sel>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("tx", &self.tx.len())
            .field("fixed_rules", &self.fixed_rules)
            .finish()
    }
}

/// TX keys (lower-case) a rule reads or writes: some by name, some by the text they start
/// with (`tx.header_name_%{tx.0}`, `TX:/^HEADER_NAME_/`), or `all` when they cannot be told at
/// load (a whole-collection or regex-selected target, a name that starts with a macro).
#[derive(Default, Clone)]
struct Keys {
    all: bool,
    some: HashSet<String>,
    prefixes: Vec<String>,
}

impl Keys {
    fn add(&mut self, k: &str) {
        self.some.insert(k.to_ascii_lowercase());
    }

    fn add_prefix(&mut self, p: &str) {
        if p.is_empty() {
            self.all = true;
        } else {
            self.prefixes.push(p.to_ascii_lowercase());
        }
    }

    fn is_empty(&self) -> bool {
        !self.all && self.some.is_empty() && self.prefixes.is_empty()
    }

    fn meets(&self, other: &Keys) -> bool {
        if self.is_empty() || other.is_empty() {
            return false;
        }
        let under = |k: &str, ps: &[String]| ps.iter().any(|p| k.starts_with(p.as_str()));
        self.all
            || other.all
            || self
                .some
                .iter()
                .any(|k| other.some.contains(k) || under(k, &other.prefixes))
            || other.some.iter().any(|k| under(k, &self.prefixes))
            || self.prefixes.iter().any(|p| {
                other
                    .prefixes
                    .iter()
                    .any(|q| p.starts_with(q.as_str()) || q.starts_with(p.as_str()))
            })
    }

    fn extend(&mut self, other: Keys) {
        self.all |= other.all;
        self.some.extend(other.some);
        self.prefixes.extend(other.prefixes);
    }
}

/// What one chain link reads and writes, and whether it reads only TX.
struct Link {
    /// Whether it matches depends on TX alone (targets, operator parameter), and on which
    /// keys.
    test_tx_only: bool,
    test_reads: Keys,
    /// Reads TX alone (also its setvar and message macros).
    tx_only: bool,
    reads: Keys,
    writes: Keys,
    /// Setvars, `ctl`s or captures: effects beyond the match itself.
    acts: bool,
}

/// The TX key of a macro name (`tx.anomaly_score` → `anomaly_score`); `Ok(None)` for a macro
/// that reads no request data outside TX (the matched TX value, the rule's own fields).
fn macro_key(name: &str) -> Result<Option<String>, ()> {
    match name.split_once('.') {
        Some((c, k)) if c.eq_ignore_ascii_case("tx") => Ok(Some(k.to_ascii_lowercase())),
        Some((c, _)) if c.eq_ignore_ascii_case("rule") => Ok(None),
        None if name.eq_ignore_ascii_case("matched_var")
            || name.eq_ignore_ascii_case("matched_var_name") =>
        {
            Ok(None)
        }
        _ => Err(()),
    }
}

/// Adds the TX keys `text`'s macros read to `reads`; false when one reads anything else.
fn macros_tx_only(text: &str, reads: &mut Keys) -> bool {
    let mut only = true;
    crate::waf::rules::split_macros(text, |raw| {
        if let crate::waf::rules::Raw::Macro(name) = raw {
            match macro_key(name) {
                Ok(Some(k)) => reads.add(&k),
                Ok(None) => {}
                Err(()) => only = false,
            }
        }
    });
    only
}

fn link(r: &Rule, tx: usize) -> Link {
    let mut reads = Keys::default();
    let mut writes = Keys::default();
    let mut tx_only = true;
    for v in &r.targets {
        if v.coll != tx {
            tx_only = false;
            continue;
        }
        match &v.selector {
            Some(Sel::Key(k)) => reads.add(k),
            Some(Sel::Prefix(p)) => reads.add_prefix(&String::from_utf8_lossy(p)),
            _ => reads.all = true,
        }
    }
    if let Some(p) = r.op.param_with_macros() {
        tx_only &= macros_tx_only(p, &mut reads);
    }
    let (test_tx_only, test_reads) = (tx_only, reads.clone());
    for text in [&r.msg, &r.logdata].into_iter().flatten() {
        tx_only &= macros_tx_only(text, &mut reads);
    }
    for sv in &r.setvars {
        if !sv.coll.eq_ignore_ascii_case("tx") {
            tx_only = false;
            continue;
        }
        match (&sv.plain_name, sv.name_tpl.0.first()) {
            (Some(n), _) => writes.add(n),
            (None, first) => {
                match first {
                    Some(Piece::Text(t)) => writes.add_prefix(t),
                    _ => writes.all = true,
                }
                tx_only &= macros_tx_only(&sv.name, &mut reads);
            }
        }
        if let SetOp::Set(v) | SetOp::Add(v) | SetOp::Sub(v) = &sv.op {
            tx_only &= macros_tx_only(v, &mut reads);
        }
    }
    if r.capture {
        for d in 0..10 {
            writes.add(&d.to_string());
        }
    }
    Link {
        test_tx_only,
        test_reads,
        tx_only: tx_only && r.ctls.is_empty(),
        reads,
        writes,
        acts: !r.setvars.is_empty() || !r.ctls.is_empty() || r.capture,
    }
}

/// A chain's links put together, and its first link alone (when that one cannot match, the
/// rest never runs).
struct Effects {
    first_tx_only: bool,
    first_reads: Keys,
    all: Link,
}

fn effects(r: &Rule, tx: usize) -> Effects {
    let first = link(r, tx);
    let first_tx_only = first.test_tx_only;
    let first_reads = first.test_reads.clone();
    let mut all = first;
    for l in r.links().skip(1).map(|l| link(l, tx)) {
        all.tx_only &= l.tx_only;
        all.acts |= l.acts;
        all.reads.extend(l.reads);
        all.writes.extend(l.writes);
    }
    Effects {
        first_tx_only,
        first_reads,
        all,
    }
}

/// What phase 5 (logging) does to a request that wrote none of the TX variables its rules
/// read: the CRS's correlation rules (980xxx) read nothing but TX, and on the many requests no
/// rule matched (anomaly scores as the set-up left them) they record nothing and only set
/// `executing_anomaly_score`. The plan evaluates the phase once from its own TX; a request
/// whose TX still holds the plan's values under every key the phase reads gets the same
/// outcome by writing what the phase wrote.
pub(super) struct QuietLogging {
    /// The keys the phase reads: name, `tx_key_hash`, position in the plan's TX (`None`:
    /// absent there, and must be absent in the request's).
    pub(super) reads: Vec<(String, u64, Option<usize>)>,
    /// The TX variables the phase set, with their values.
    pub(super) writes: Vec<(String, u64, Vec<u8>)>,
}

/// Evaluates phase 5 in `t` (the plan's transaction, TX as the set-up left it) and returns
/// its outcome when every rule of the phase a request visits (`next`, the plan's steps:
/// the rules it passes over read what no request changes) reads TX alone, by name, and the
/// phase records, decides and removes nothing; `t`'s TX is left as it was.
fn quiet_logging(
    t: &mut Transaction,
    rules: &RuleSet,
    next: &[u32],
    txc: usize,
) -> Option<QuietLogging> {
    let list = &rules.phases[5];
    let mut reads = Keys::default();
    let mut at = 0;
    while at < list.len() {
        at = next.get(at).map_or(list.len(), |&n| n as usize);
        let Some(Entry::Rule(r)) = list.get(at) else {
            at += 1;
            continue;
        };
        at += 1;
        let e = effects(r, txc);
        if !e.all.tx_only || e.all.reads.all || !e.all.reads.prefixes.is_empty() {
            return None;
        }
        reads.extend(e.all.reads);
    }
    let before = t.colls[txc].clone();
    let records = t.matches.len();
    t.run_phase(5);
    let quiet = t.matches.len() == records
        && t.intervention.is_none()
        && t.would_block.is_none()
        && t.allow.is_none()
        && t.mode == crate::waf::rules::Mode::On;
    let after = std::mem::replace(&mut t.colls[txc], before);
    t.reindex_tx();
    t.matches.truncate(records);
    (t.intervention, t.would_block, t.allow) = (None, None, None);
    let coll = &t.colls[txc];
    let kept = coll.iter().all(|(k, _)| after.iter().any(|(a, _)| a == k));
    if !quiet || !kept {
        return None;
    }
    let writes = after
        .into_iter()
        .filter(|(k, v)| !coll.iter().any(|(b, w)| b == k && w == v))
        .map(|(k, v)| {
            let h = super::tx_key_hash(&k);
            (k, h, v)
        })
        .collect();
    let reads = reads
        .some
        .into_iter()
        .map(|k| {
            let (h, at) = (
                super::tx_key_hash(&k),
                coll.iter().position(|(b, _)| *b == k),
            );
            (k, h, at)
        })
        .collect();
    Some(QuietLogging { reads, writes })
}

/// A two-link chain that files each value of its targets under a TX key of its own, then
/// tests the keys it filed: the CRS's 920450 (`REQUEST_HEADERS_NAMES "@rx ^.*$"` capturing,
/// `setvar:'tx.header_name_%{tx.0}=/%{tx.0}/'`, chained to `TX:/^header_name_/ "@within
/// %{tx.restricted_headers}"`), which costs every request a TX variable per header. When no
/// other rule reads or writes keys under that prefix, the keys cannot be observed: the chain
/// matches exactly when its second link's operator matches one of the values the first
/// would file, which `Transaction::filed_keys_may_match` tests without filing them. Returns
/// the prefix, and the key selectors of other rules that pick keys by content or regex (a
/// key one of them picks must be filed after all).
fn files_unread_keys(
    rules: &RuleSet,
    r: &Rule,
    tx: usize,
    links: &[(&Rule, Link)],
    plan_tx: &[(String, Vec<u8>)],
    dirty: &Keys,
) -> Option<(String, Vec<Sel>)> {
    let second = r.chain.as_deref()?;
    let capture_key = |p: &Piece| matches!(p, Piece::Tx(k, _) if k == "0");
    let [sv] = r.setvars.as_slice() else {
        return None;
    };
    let prefix = match sv.name_tpl.0.as_slice() {
        [Piece::Text(p), k] if capture_key(k) && !p.is_empty() => p.to_ascii_lowercase(),
        _ => return None,
    };
    let first_ok = !r.targets.is_empty()
        && r.targets.iter().all(|v| v.coll != tx && !v.count)
        && r.op.captures_whole()
        && r.capture
        && !r.multi_match
        && r.ctls.is_empty()
        && sv.coll.eq_ignore_ascii_case("tx")
        && matches!(sv.op, SetOp::Set(_))
        && sv
            .value_tpl
            .0
            .iter()
            .all(|p| matches!(p, Piece::Text(_)) || capture_key(p));
    let second_ok = second.chain.is_none()
        && matches!(second.targets.as_slice(),
            [v] if v.coll == tx && !v.count
                && matches!(&v.selector, Some(Sel::Prefix(p)) if *p == prefix.as_bytes()))
        && second.exclusions.is_empty()
        && rules
            .chains
            .get(second.transforms as usize)
            .is_some_and(|c| c.is_empty())
        && !second.multi_match
        && !second.capture;
    if !first_ok || !second_ok {
        return None;
    }
    // The operator may read TX variables, but none this chain writes (TX:0, the keys), and
    // none a rule evaluated per request may have written before it: its answer per value is
    // then the same for every request of the plan, and is remembered.
    let mut param_ok = true;
    let mut param_keys = Keys::default();
    if let Some(p) = second.op.param_with_macros() {
        crate::waf::rules::split_macros(p, |raw| {
            if let crate::waf::rules::Raw::Macro(name) = raw {
                match macro_key(name) {
                    Ok(Some(k))
                        if !k.starts_with(&prefix) && !k.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        param_keys.add(&k)
                    }
                    _ => param_ok = false,
                }
            }
        });
    }
    param_ok &= !param_keys.meets(dirty);
    let mut keys = Keys::default();
    keys.add_prefix(&prefix);
    // Readers by name or prefix, and by macro, rule it out. A reader that selects keys by
    // what they contain or by regex (`TX:/paramcounter_.*/`) may see a key whose name came
    // from the request: those selectors are tested per key at evaluation.
    let mut watch = Vec::new();
    let mut unread = true;
    for (at, l) in links {
        if std::ptr::eq(*at, r) || std::ptr::eq(*at, second) {
            continue;
        }
        let mut named = l.reads.clone();
        if named.all {
            named.all = false;
            for v in at.targets.iter().filter(|v| v.coll == tx) {
                match &v.selector {
                    Some(s @ (Sel::Contains(_) | Sel::Regex(_))) => watch.push(s.clone()),
                    Some(_) => {}
                    None => unread = false,
                }
            }
        }
        unread &= !named.meets(&keys) && !l.writes.meets(&keys);
    }
    let unset = !plan_tx.iter().any(|(k, _)| k.starts_with(&prefix));
    (param_ok && unread && unset).then_some((prefix, watch))
}

/// How one entry's outcome is fixed.
#[derive(Clone, Copy, PartialEq)]
enum Fixed {
    /// Depends on the request: evaluation visits it.
    No,
    /// Never matches (or is removed, or is a marker): evaluation goes on at the next entry.
    Miss,
    /// Always matches, with no effect but where evaluation goes on.
    Jump,
}

impl Plan {
    /// Works out the plan of `rules` for requests that start with TX variables `tx` (the
    /// tenant's settings, as `Transaction::set_tx` takes them) and exclusions `excl`.
    pub fn build(rules: &Arc<RuleSet>, tx: &[(&str, &str)], excl: &Exclusions) -> Plan {
        let txc = ix().tx;
        let mut t = Transaction::new(rules.clone(), crate::waf::rules::Mode::On, "");
        for (k, v) in tx {
            t.set_tx(k, v);
        }
        t.exclude(excl);
        t.prepare_memos();
        let targets_removed = |t: &Transaction, r: &Rule| {
            t.removed_targets
                .iter()
                .any(|(ids, _)| in_ranges(ids, r.id))
                || t.removed_targets_tag
                    .iter()
                    .any(|(re, _)| r.tags.iter().any(|g| re.is_match(g)))
        };
        // Ends in `pass` without a record: matching changes nothing but TX and the next rule.
        let quiet = |r: &Rule, phase: u8| {
            let action = match &r.disruptive {
                Some(Disruptive::Block) | None => &rules.defaults[phase as usize].disruptive,
                Some(d) => d,
            };
            !r.log && *action == Disruptive::Pass
        };

        // The leading set-up rules of phase 1, evaluated as a request would evaluate them.
        let mut fixed_rules = 0;
        let list = &rules.phases[1];
        let mut at = 0;
        while at < list.len() {
            let Entry::Rule(r) = &list[at] else {
                at += 1;
                continue;
            };
            if t.removed(r) {
                at += 1;
                continue;
            }
            if targets_removed(&t, r) || !effects(r, txc).all.tx_only {
                break;
            }
            let before = (t.colls[txc].clone(), t.tx_digits);
            fixed_rules += 1;
            if !t.eval_chain(r) {
                at += 1;
                continue;
            }
            if !quiet(r, 1) {
                // It records or decides something: every request evaluates it, from the TX
                // as it was before it.
                t.colls[txc] = before.0;
                t.tx_digits = before.1;
                t.reindex_tx();
                fixed_rules -= 1;
                break;
            }
            at = next_rule(rules, 1, at, r);
        }
        let start = at;

        // From there on, entries whose outcome TX alone fixes: no rule evaluated per request
        // before them may have written what they read.
        let mut dirty = Keys::default();
        let mut next: [Vec<u32>; 6] = Default::default();
        let links: Vec<(&Rule, Link)> = rules
            .phases
            .iter()
            .flatten()
            .filter_map(|e| match e {
                Entry::Rule(r) => Some(r),
                Entry::Marker(_) => None,
            })
            .flat_map(|r| r.links())
            .map(|l| (l, link(l, txc)))
            .collect();
        let mut unfiled: [Vec<bool>; 6] = Default::default();
        let mut unfiled_prefixes = Vec::new();
        let mut unfiled_watch = Vec::new();
        for phase in 1..=5u8 {
            let list = &rules.phases[phase as usize];
            let from = if phase == 1 { start } else { 0 };
            let mut fixed = vec![Fixed::Miss; list.len()];
            for (at, e) in list.iter().enumerate().skip(from) {
                let Entry::Rule(r) = e else { continue };
                if t.removed(r) {
                    continue;
                }
                let e = effects(r, txc);
                let clean = !targets_removed(&t, r);
                if clean {
                    if let Some((p, w)) =
                        files_unread_keys(rules, r, txc, &links, &t.colls[txc], &dirty)
                    {
                        unfiled[phase as usize].resize(list.len(), false);
                        unfiled[phase as usize][at] = true;
                        unfiled_prefixes.push(p);
                        unfiled_watch.extend(w);
                    }
                }
                fixed[at] = if clean
                    && e.all.tx_only
                    && !e.all.acts
                    && quiet(r, phase)
                    && !e.all.reads.meets(&dirty)
                {
                    t.matched.clear();
                    if t.eval_chain(r) {
                        Fixed::Jump
                    } else {
                        Fixed::Miss
                    }
                } else if clean
                    && e.first_tx_only
                    && !e.first_reads.meets(&dirty)
                    && !link_matches(&mut t, r)
                {
                    Fixed::Miss
                } else {
                    Fixed::No
                };
                if fixed[at] == Fixed::No {
                    dirty.extend(e.all.writes);
                } else {
                    fixed_rules += 1;
                }
            }
            let mut n = vec![list.len() as u32; list.len() + 1];
            for at in (0..list.len()).rev() {
                n[at] = match (&list[at], fixed[at]) {
                    (_, Fixed::No) => at as u32,
                    (Entry::Rule(r), Fixed::Jump) => n[next_rule(rules, phase, at, r)],
                    _ => n[at + 1],
                };
            }
            if phase == 1 {
                // Never reached: a request starts after the set-up rules.
                let s = n[start];
                n[..start].iter_mut().for_each(|x| *x = s);
            }
            n.truncate(list.len());
            next[phase as usize] = n;
        }
        t.reindex_tx();
        let quiet_logging = quiet_logging(&mut t, rules, &next[5], txc);
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Plan {
            rules: rules.id,
            id: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            tx_index: std::mem::replace(&mut t.tx_index, super::TxIndex::empty()),
            tx_digits: t.tx_digits,
            tx: std::mem::take(&mut t.colls[txc]),
            next,
            fixed_rules,
            unfiled,
            unfiled_prefixes,
            unfiled_watch,
            quiet_logging,
        }
    }
}

/// Whether the first link of `r` matches, evaluated without running its actions.
fn link_matches(t: &mut Transaction, r: &Rule) -> bool {
    let mut found = std::mem::take(&mut t.found);
    found.clear();
    t.matched.clear();
    let hit = t.eval_link(r, r, &mut found);
    t.found = found;
    hit
}

impl Transaction {
    /// Starts the transaction from `plan` (made for its rule set): TX as the plan's set-up
    /// left it, and evaluation passing over the rules whose outcome the plan fixed. In place
    /// of the `set_tx` calls the plan was made with.
    pub fn follow(&mut self, plan: &Arc<Plan>) {
        if plan.rules != self.rules.id {
            return;
        }
        let txc = ix().tx;
        // Set before (`set_tx`): replaced by the plan's.
        self.recycle(txc);
        // The last request's TX entries are written over in place (no moves, no allocations
        // when the same plan ran before). When it started from this plan and no entry moved,
        // only the entries it wrote differ from the plan's.
        let kept = std::mem::take(&mut self.tx_old);
        let mut coll = kept.coll;
        let same = kept.plan.is_some_and(|p| Arc::ptr_eq(&p, plan)) && coll.len() >= plan.tx.len();
        let mut dirty = match kept.dirty {
            Some(bits) if same => {
                for (w, &bits) in bits.iter().enumerate() {
                    let mut b = bits;
                    while b != 0 {
                        let i = w * 64 + b.trailing_zeros() as usize;
                        b &= b - 1;
                        if let (Some(slot), Some((k, v))) = (coll.get_mut(i), plan.tx.get(i)) {
                            put(slot, k, v);
                        }
                    }
                }
                bits
            }
            other => {
                rewrite(&mut coll, &plan.tx, &mut self.spare);
                other.unwrap_or_default()
            }
        };
        super::to_spare(&mut self.spare, &mut coll, plan.tx.len());
        debug_assert!(
            coll.len() == plan.tx.len()
                && coll
                    .iter()
                    .zip(plan.tx.iter())
                    .all(|((sk, sv), (k, v))| sk == k && sv == v),
            "TX restored to the plan's values"
        );
        self.colls[txc] = coll;
        dirty.clear();
        dirty.resize(plan.tx.len().div_ceil(64), 0);
        self.tx_dirty = dirty;
        self.tx_moved = false;
        self.tx_index.map.clone_from(&plan.tx_index.map);
        self.tx_digits = plan.tx_digits;
        self.plan = Some(plan.clone());
    }

    /// Whether a plan steers evaluation (none, or one a `ctl` made void).
    pub fn planned(&self) -> bool {
        self.plan.is_some()
    }

    /// Rebuilds the TX index and capture-key bits from the stored TX variables.
    pub(super) fn reindex_tx(&mut self) {
        let coll = &self.colls[ix().tx];
        self.tx_index.map.clear();
        self.tx_digits = coll.iter().fold(0, |d, (k, _)| d | super::digit_bit(k));
        for (i, (k, _)) in coll.iter().enumerate() {
            let h = super::tx_key_hash(k);
            self.tx_index.map.entry(h).or_insert(i as u32);
        }
    }
}

/// Writes the plan's TX entries over `coll`'s first entries, adding those it lacks.
fn rewrite(coll: &mut Coll, tx: &[(String, Vec<u8>)], spare: &mut Vec<(String, Vec<u8>)>) {
    for (i, (k, v)) in tx.iter().enumerate() {
        match coll.get_mut(i) {
            Some(slot) => put(slot, k, v),
            None => coll.push(super::entry(spare, k, v)),
        }
    }
}

/// Writes TX entry `k`, `v` into `slot`, in its buffers unless they grew too large to keep.
fn put((sk, sv): &mut (String, Vec<u8>), k: &str, v: &[u8]) {
    if !super::fits_spare(sk, sv) {
        (*sk, *sv) = (String::new(), Vec::new());
    }
    sk.clear();
    sk.push_str(k);
    sv.clear();
    sv.extend_from_slice(v);
}

/// The plans of a configuration, shared by the tenants whose rule set, TX settings and
/// exclusions are the same (hundreds of portal tenants usually are).
#[derive(Debug, Default)]
pub struct Plans {
    made: HashMap<PlanKey, Arc<Plan>>,
}

/// Rule set id, TX settings, and the exclusions as their `Debug` text (ids, tag patterns,
/// targets: what `Exclusions` is made of, none of which has `Eq`).
type PlanKey = (u64, Vec<(String, String)>, String);

impl Plans {
    /// The plan for these settings, made on first use.
    pub fn get(
        &mut self,
        rules: &Arc<RuleSet>,
        tx: &[(&str, &str)],
        excl: &Exclusions,
    ) -> Arc<Plan> {
        let key = (
            rules.id,
            tx.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            format!("{excl:?}"),
        );
        self.made
            .entry(key)
            .or_insert_with(|| Arc::new(Plan::build(rules, tx, excl)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::crs;
    use super::*;
    use crate::waf::rules::Mode;

    /// One request's outcome, everything a caller or the SOC sees of it.
    #[derive(Debug, PartialEq)]
    struct Outcome {
        refused: Option<(u16, u64)>,
        would_block: Option<u64>,
        matches: Vec<(u64, u8, String, String, String)>,
        tx: Vec<(String, Vec<u8>)>,
    }

    struct Req<'a> {
        method: &'a str,
        uri: &'a str,
        headers: &'a [(&'a str, &'a str)],
        body: &'a str,
    }

    fn run(t: &mut Transaction, r: &Req) -> Outcome {
        t.set_connection(
            "192.0.2.7".parse().unwrap(),
            40_000,
            "127.0.0.1".parse().unwrap(),
            443,
        );
        t.set_request_line(r.method, r.uri, "HTTP/1.1");
        t.add_header("Host", b"so-tu-phap.tinh.gov.vn");
        t.add_header(
            "User-Agent",
            b"Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
        );
        for (k, v) in r.headers {
            t.add_header(k, v.as_bytes());
        }
        let refused = t.process_request_headers().or_else(|| {
            t.feed_body(r.body.as_bytes());
            t.process_request_body()
        });
        t.process_logging();
        let mut tx = t.colls[ix().tx].clone();
        tx.sort();
        Outcome {
            refused: refused.map(|i| (i.status, i.rule_id)),
            would_block: t.would_block,
            matches: t
                .matches
                .iter()
                .map(|m| (m.id, m.phase, m.msg.clone(), m.data.clone(), m.var.clone()))
                .collect(),
            tx,
        }
    }

    /// The outcome without the TX keys the plan proved no rule reads.
    fn unfiled(plan: &Plan, mut o: Outcome) -> Outcome {
        o.tx.retain(|(k, _)| !plan.unfiled_prefixes.iter().any(|p| k.starts_with(p)));
        o
    }

    #[test]
    fn keys_no_rule_reads_are_not_filed_and_the_verdicts_stay_the_same() {
        let chain = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.restricted=/proxy/ /if/"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:2,phase:2,deny,status:403,capture,t:none,t:lowercase,\
    setvar:'tx.hn_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^hn_/ "@within %{tx.restricted}" "setvar:tx.score=+5"
SecRule TX:0 "@streq x-last" "id:3,phase:2,deny,status:409"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:6,phase:2,deny,status:406,capture,t:none,t:lowercase,\
    setvar:'tx.hm_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^hm_/ "@within /x-other/"
"#;
        // Another rule picks keys by what they contain: a header name that makes such a key
        // is filed; one that reads all of TX rules the shortcut out.
        let watched =
            format!("{chain}SecRule TX:/name_x/ \"@rx .\" \"id:4,phase:2,deny,status:418\"\n");
        let whole =
            format!("{chain}SecRule TX \"@rx ^/x-whole/$\" \"id:5,phase:2,deny,status:410\"\n");
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<(u16, u64)>);
        let cases: [Case; 6] = [
            ("plain", &[("Accept", "*/*")], None),
            // Answers are remembered per rule: the same name, another chain's verdict.
            ("second chain", &[("X-Other", "1")], Some((406, 6))),
            ("restricted", &[("Proxy", "x")], Some((403, 2))),
            (
                "restricted, upper case",
                &[("IF", "x"), ("Accept", "*/*")],
                Some((403, 2)),
            ),
            ("TX:0 is the last name", &[("X-Last", "1")], Some((409, 3))),
            ("watched", &[("Name_X-Tra", "1")], None),
        ];
        for (rules, prefixes) in [(chain.to_string(), 2), (watched, 2), (whole, 0)] {
            let set = Arc::new(RuleSet::parse(&rules).expect("rules load"));
            let plan = Arc::new(Plan::build(&set, &[], &Exclusions::default()));
            assert_eq!(plan.unfiled_prefixes.len(), prefixes, "{rules}");
            for (what, headers, refused) in &cases {
                let r = Req {
                    method: "GET",
                    uri: "/",
                    headers,
                    body: "",
                };
                let mut plain = Transaction::new(set.clone(), Mode::On, "u1");
                let mut planned = Transaction::new(set.clone(), Mode::On, "u1");
                planned.follow(&plan);
                let (a, b) = (run(&mut plain, &r), run(&mut planned, &r));
                let want = match (*what, rules.contains("id:4")) {
                    ("watched", true) => Some((418, 4)),
                    _ => *refused,
                };
                assert_eq!(a.refused, want, "{what}");
                let filed = b.tx.iter().any(|(k, _)| k.starts_with("hn_"));
                // Filed when the chain may match (or a watcher may pick the key).
                let may = want.is_some_and(|(_, id)| id == 2 || id == 4);
                assert_eq!(filed, prefixes == 0 || may, "{what}: {rules}");
                assert_eq!(unfiled(&plan, a), unfiled(&plan, b), "{what}");
            }
        }
    }

    const SETTINGS: [(&str, &str); 4] = [
        ("paranoia_level", "1"),
        ("executing_paranoia_level", "1"),
        ("inbound_anomaly_score_threshold", "5"),
        ("outbound_anomaly_score_threshold", "4"),
    ];

    /// The same requests with and without the plan: same verdicts, records and TX.
    fn same_with_and_without(set: &Arc<RuleSet>, settings: &[(&str, &str)], excl: &Exclusions) {
        let plan = Arc::new(Plan::build(set, settings, excl));
        assert!(plan.fixed_rules > 0, "{plan:?}");
        let form = [("Content-Type", "application/x-www-form-urlencoded")];
        let json = [("Content-Type", "application/json")];
        let xml = [("Content-Type", "text/xml")];
        let reqs = [
            Req {
                method: "GET",
                uri: "/",
                headers: &[],
                body: "",
            },
            Req {
                method: "GET",
                uri: "/tin-tuc?id=1%27%20UNION%20SELECT%201,2--",
                headers: &[],
                body: "",
            },
            Req {
                method: "GET",
                uri: "/tai-ve?file=..%2F..%2Fetc%2Fpasswd",
                headers: &[],
                body: "",
            },
            Req {
                method: "POST",
                uri: "/gop-y",
                headers: &form,
                body: "ten=A&noi_dung=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            },
            Req {
                method: "POST",
                uri: "/gop-y",
                headers: &form,
                body: "ten=Tr%E1%BA%A7n+B%C3%ACnh&sdt=0912345678",
            },
            Req {
                method: "POST",
                uri: "/api",
                headers: &json,
                body: "{\"a\":\"b\",\"n\":[1,2]}",
            },
            Req {
                method: "POST",
                uri: "/api",
                headers: &xml,
                body: "<a>b</a>",
            },
            Req {
                method: "PROPFIND",
                uri: "/",
                headers: &[("Proxy", "x"), ("Content-Encoding", "gzip")],
                body: "",
            },
            Req {
                method: "GET",
                uri: "/x.bak?a=1&a=2",
                headers: &[("Range", "bytes=1-2,3-4,5-6,7-8,9-10,11-12")],
                body: "",
            },
            Req {
                method: "GET",
                uri: "/?q=<img src=x onerror=alert(1)>",
                headers: &[("Referer", "javascript:alert(1)")],
                body: "",
            },
        ];
        for mode in [Mode::On, Mode::DetectionOnly] {
            for r in &reqs {
                let mut plain = Transaction::new(set.clone(), mode, "u1");
                plain.exclude(excl);
                for (k, v) in settings {
                    plain.set_tx(k, v);
                }
                let mut planned = Transaction::new(set.clone(), mode, "u1");
                planned.exclude(excl);
                planned.follow(&plan);
                assert!(planned.planned());
                let (a, b) = (run(&mut plain, r), run(&mut planned, r));
                let (a, b) = (unfiled(&plan, a), unfiled(&plan, b));
                assert_eq!(a, b, "{} {} ({mode:?})", r.method, r.uri);
            }
        }
    }

    #[test]
    fn the_crs_with_a_plan_decides_and_records_as_without() {
        let Some(set) = crs() else { return };
        same_with_and_without(&set, &SETTINGS, &Exclusions::default());
        let pl4 = [("paranoia_level", "4"), ("executing_paranoia_level", "4")];
        same_with_and_without(&set, &pl4, &Exclusions::default());
        let excl = Exclusions {
            ids: vec![(942100, 942100), (901400, 901400)],
            tags: vec![regex::Regex::new("^attack-lfi$").unwrap()],
            targets: vec![],
        };
        same_with_and_without(&set, &SETTINGS, &excl);
    }

    #[test]
    fn the_crs_header_name_keys_are_tested_without_filing_them() {
        let Some(set) = crs() else { return };
        let plan = Arc::new(Plan::build(&set, &SETTINGS, &Exclusions::default()));
        assert_eq!(plan.unfiled_prefixes, ["header_name_"]);
    }

    #[test]
    fn a_list_a_request_may_rewrite_keeps_the_chain_on_the_general_path() {
        let rules = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.restricted=/proxy/"
SecRule REQUEST_URI "@beginsWith /admin" "id:7,phase:1,pass,nolog,setvar:tx.restricted=/x-other/"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:2,phase:2,deny,status:403,capture,t:none,t:lowercase,\
    setvar:'tx.hn_%{tx.0}=/%{tx.0}/',chain"
    SecRule TX:/^hn_/ "@within %{tx.restricted}" "setvar:tx.score=+5"
"#;
        let set = Arc::new(RuleSet::parse(rules).expect("rules load"));
        let plan = Arc::new(Plan::build(&set, &[], &Exclusions::default()));
        assert!(
            plan.unfiled_prefixes.is_empty(),
            "{:?}",
            plan.unfiled_prefixes
        );
        for (uri, refused) in [("/", None), ("/admin", Some((403, 2)))] {
            let r = Req {
                method: "GET",
                uri,
                headers: &[("X-Other", "1")],
                body: "",
            };
            let mut planned = Transaction::new(set.clone(), Mode::On, "u1");
            planned.follow(&plan);
            assert_eq!(run(&mut planned, &r).refused, refused, "{uri}");
        }
    }

    #[test]
    fn the_logging_phase_is_evaluated_only_when_the_request_changed_what_it_reads() {
        let rules = r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.score=0"
SecRule ARGS "@contains attack" "id:2,phase:2,pass,log,setvar:tx.score=+5"
SecAction "id:3,phase:5,pass,nolog,setvar:tx.total=%{tx.score}"
SecRule TX:SCORE "@ge 5" "id:4,phase:5,pass,log,msg:'score %{tx.score}'"
"#;
        let set = Arc::new(RuleSet::parse(rules).expect("rules load"));
        let plan = Arc::new(Plan::build(&set, &[], &Exclusions::default()));
        let q = plan.quiet_logging.as_ref().expect("phase 5 worked out");
        assert_eq!(
            q.writes,
            [(
                "total".to_string(),
                super::super::tx_key_hash("total"),
                b"0".to_vec()
            )]
        );
        for (uri, total, records, evaluated) in
            [("/?a=fine", "0", 0, false), ("/?a=attack", "5", 2, true)]
        {
            let r = Req {
                method: "GET",
                uri,
                headers: &[],
                body: "",
            };
            let mut plain = Transaction::new(set.clone(), Mode::On, "u1");
            let mut planned = Transaction::new(set.clone(), Mode::On, "u1");
            planned.follow(&plan);
            let a = run(&mut plain, &r);
            let chains = planned.chains;
            let b = run(&mut planned, &r);
            assert_eq!(a, b, "{uri}");
            assert_eq!(planned.tx("total"), Some(total.as_bytes()), "{uri}");
            assert_eq!(b.matches.len(), records, "{uri}");
            // Phase 1 and 2 evaluate rule 2 alone; phase 5 adds rules 3 and 4 when it runs.
            assert_eq!(planned.chains - chains > 1, evaluated, "{uri}");
        }
    }

    #[test]
    fn the_crs_logging_phase_is_worked_out_for_requests_that_leave_its_keys() {
        let Some(set) = crs() else { return };
        let plan = Arc::new(Plan::build(&set, &SETTINGS, &Exclusions::default()));
        let q = plan.quiet_logging.as_ref().expect("phase 5 worked out");
        let keys: Vec<&str> = q.reads.iter().map(|(k, _, _)| k.as_str()).collect();
        assert!(keys.contains(&"inbound_anomaly_score"), "{keys:?}");
        let writes: Vec<&str> = q.writes.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(writes, ["executing_anomaly_score"]);
    }

    #[test]
    fn the_crs_set_up_and_paranoia_jumps_are_fixed_by_the_settings() {
        let Some(set) = crs() else { return };
        let plan = Plan::build(&set, &SETTINGS, &Exclusions::default());
        let tx: HashMap<&str, &[u8]> = plan
            .tx
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_slice()))
            .collect();
        // crs-setup.conf and REQUEST-901's defaults and score resets.
        assert_eq!(tx.get("crs_setup_version"), Some(&&b"334"[..]));
        assert_eq!(tx.get("critical_anomaly_score"), Some(&&b"5"[..]));
        assert_eq!(tx.get("anomaly_score_pl1"), Some(&&b"0"[..]));
        assert_eq!(tx.get("executing_paranoia_level"), Some(&&b"1"[..]));
        // The rules of levels 2–4 and their ~130 checks are never visited at level 1; at
        // level 4 the checks are still stepped over, but the rules behind them run.
        let pl4 = Plan::build(
            &set,
            &[("paranoia_level", "4"), ("executing_paranoia_level", "4")],
            &Exclusions::default(),
        );
        let visited = |p: &Plan, phase: usize| {
            let n = &p.next[phase];
            let mut at = 0;
            let mut count = 0;
            while at < n.len() {
                at = n[at] as usize;
                if at < n.len() {
                    count += 1;
                    at += 1;
                }
            }
            count
        };
        let rules = |phase: usize| {
            set.phases[phase]
                .iter()
                .filter(|e| matches!(e, Entry::Rule(_)))
                .count()
        };
        eprintln!(
            "{plan:?} {pl4:?}: phase 1 {}/{} ({}), phase 2 {}/{} ({}) of {}",
            visited(&plan, 1),
            visited(&pl4, 1),
            rules(1),
            visited(&plan, 2),
            visited(&pl4, 2),
            rules(2),
            set.rule_count
        );
        assert!(visited(&plan, 1) < 20 && visited(&plan, 2) < visited(&pl4, 2));
        assert!(plan.fixed_rules > 100, "{plan:?}");
    }

    #[test]
    fn a_rule_fed_by_the_request_is_never_fixed() {
        // Rule 2 writes tx.flag from the request; rule 3 reads it and must run per request,
        // while rule 4 reads only the settings and is fixed (jump over 5).
        let set = Arc::new(
            RuleSet::parse(
                "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.flag=0,setvar:tx.level=1\"\n\
                 SecRule ARGS:x \"@streq on\" \"id:2,phase:1,pass,nolog,setvar:tx.flag=1\"\n\
                 SecRule TX:flag \"@eq 1\" \"id:3,phase:1,deny,status:403\"\n\
                 SecRule TX:level \"@lt 2\" \"id:4,phase:1,pass,nolog,skipAfter:END\"\n\
                 SecAction \"id:5,phase:1,deny,status:401\"\n\
                 SecMarker END\n",
            )
            .expect("rules load"),
        );
        let plan = Arc::new(Plan::build(&set, &[], &Exclusions::default()));
        assert_eq!(plan.fixed_rules, 2, "{plan:?}");
        let mut t = Transaction::new(set.clone(), Mode::On, "a");
        t.follow(&plan);
        t.set_request_line("GET", "/?x=on", "HTTP/1.1");
        assert_eq!(t.process_request_headers().map(|i| i.status), Some(403));
        let mut t = Transaction::new(set, Mode::On, "b");
        t.follow(&plan);
        t.set_request_line("GET", "/?x=off", "HTTP/1.1");
        assert!(t.process_request_headers().is_none());
    }

    #[test]
    fn each_request_starts_from_the_plans_tx_whatever_the_last_one_wrote() {
        // Rule 2 raises a plan variable, 3 captures into TX:0, 4 deletes a plan variable (the
        // entries after it move), 5 adds a variable the plan does not have.
        let set = Arc::new(
            RuleSet::parse(
                "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.score=0,setvar:tx.a=x,setvar:tx.b=y\"\n\
                 SecRule ARGS:up \"@streq 1\" \"id:2,phase:1,pass,nolog,setvar:tx.score=+5\"\n\
                 SecRule ARGS:cap \"@rx ^(.*)$\" \"id:3,phase:1,pass,nolog,capture\"\n\
                 SecRule ARGS:del \"@streq 1\" \"id:4,phase:1,pass,nolog,setvar:!tx.a\"\n\
                 SecRule ARGS:new \"@streq 1\" \"id:5,phase:1,pass,nolog,setvar:tx.extra=1\"\n",
            )
            .expect("rules load"),
        );
        let plan = Arc::new(Plan::build(&set, &[("level", "1")], &Exclusions::default()));
        let other = Arc::new(Plan::build(&set, &[("level", "2")], &Exclusions::default()));
        let tx = |p: &Plan| p.tx.clone();
        for (uri, p) in [
            ("/?up=1&cap=abc", &plan),
            ("/", &plan),
            ("/?up=1&new=1", &plan),
            ("/?del=1&up=1", &plan),
            ("/?del=1&new=1", &plan),
            ("/?cap=z", &plan),
            ("/?up=1", &other),
            ("/", &plan),
            ("/", &plan),
        ] {
            let mut t = Transaction::new(set.clone(), Mode::On, "r");
            t.follow(p);
            assert_eq!(t.colls[ix().tx], tx(p), "before {uri}");
            assert_eq!(t.tx("score"), Some(&b"0"[..]));
            t.set_request_line("GET", uri, "HTTP/1.1");
            assert!(t.process_request_headers().is_none());
        }
    }

    #[test]
    fn a_ctl_removal_voids_the_plan() {
        // Rule 2's ctl removes gate 3, so 4 must run: the plan (3 jumps over 4) no longer
        // holds for this request.
        let set = Arc::new(
            RuleSet::parse(
                "SecAction \"id:1,phase:1,pass,nolog,setvar:tx.level=1\"\n\
                 SecRule ARGS:off \"@streq 3\" \"id:2,phase:1,pass,nolog,ctl:ruleRemoveById=3\"\n\
                 SecRule TX:level \"@lt 2\" \"id:3,phase:1,pass,nolog,skipAfter:END\"\n\
                 SecAction \"id:4,phase:1,deny,status:401\"\n\
                 SecMarker END\n",
            )
            .expect("rules load"),
        );
        let plan = Arc::new(Plan::build(&set, &[], &Exclusions::default()));
        let mut t = Transaction::new(set.clone(), Mode::On, "a");
        t.follow(&plan);
        t.set_request_line("GET", "/?off=3", "HTTP/1.1");
        assert_eq!(t.process_request_headers().map(|i| i.status), Some(401));
        assert!(!t.planned());
        let mut t = Transaction::new(set, Mode::On, "b");
        t.follow(&plan);
        t.set_request_line("GET", "/?off=no", "HTTP/1.1");
        assert!(t.process_request_headers().is_none());
        assert!(t.planned());
    }
}
