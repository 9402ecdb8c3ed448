//! One request's pass through a rule set: the variables rules inspect (filled from the request
//! line, headers and body), the transaction collections (TX and the per-request IP, GLOBAL,
//! SESSION, USER and RESOURCE collections), macro expansion, phase evaluation with chains,
//! skips, `ctl` and `setvar`, and the verdict. Transformed values are cached per value and
//! transformation chain across rules. It must not do I/O or know about the proxy: the pipeline
//! feeds it request facts and acts on its verdict.

use super::body::{self, Processor};
use super::operators::Macros;
use super::rules::{
    in_ranges, AllowScope, Ctl, Disruptive, Entry, Mode, Rule, RuleSet, Sel, SetOp, Var,
};
use super::seclang::VARIABLES;
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

/// Matched data is cut to this many bytes in match records.
pub const MATCH_DATA_MAX: usize = 200;
/// Values a transformation result is cached for per transaction (bounds memory).
const CACHE_MAX: usize = 4096;
/// Marks a cache key as holding a `multiMatch` chain's intermediate results.
const MULTI: u32 = 1 << 31;

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
}

impl Default for BodyLimits {
    fn default() -> Self {
        BodyLimits {
            inspect_bytes: 128 * 1024,
            max_args: 1000,
            max_json_depth: 64,
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

type Coll = Vec<(String, Vec<u8>)>;
/// (value address, length, transformation chain) → result.
type TransformCache = HashMap<(usize, usize, u32), Arc<[u8]>, foldhash::fast::FixedState>;

pub struct Transaction {
    rules: Arc<RuleSet>,
    mode: Mode,
    colls: Vec<Coll>,
    /// MATCHED_VARS of the rule being evaluated (name, value).
    matched: Vec<(String, Vec<u8>)>,
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
    cache: TransformCache,
    pub matches: Vec<Match>,
    pub intervention: Option<Intervention>,
    /// True when a disruptive rule matched while the engine only detects.
    pub would_block: Option<u64>,
}

/// Whether a variable is computed by `collect_computed` rather than read as stored.
fn computed_variable(coll: usize) -> bool {
    static T: std::sync::OnceLock<Vec<bool>> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        VARIABLES
            .iter()
            .map(|v| {
                matches!(
                    *v,
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
            })
            .collect()
    })
    .get(coll)
    .copied()
    .unwrap_or(false)
}

fn vi(name: &str) -> usize {
    VARIABLES
        .iter()
        .position(|v| *v == name)
        .unwrap_or_else(|| panic!("variable {name} missing from VARIABLES"))
}

/// Indexes of the variables the transaction writes, looked up once.
struct Ix {
    args_get: usize,
    args_post: usize,
    tx: usize,
    headers: usize,
    cookies: usize,
    files: usize,
    files_sizes: usize,
    part_headers: usize,
    xml: usize,
}

fn ix() -> &'static Ix {
    static IX: std::sync::OnceLock<Ix> = std::sync::OnceLock::new();
    IX.get_or_init(|| Ix {
        args_get: vi("ARGS_GET"),
        args_post: vi("ARGS_POST"),
        tx: vi("TX"),
        headers: vi("REQUEST_HEADERS"),
        cookies: vi("REQUEST_COOKIES"),
        files: vi("FILES"),
        files_sizes: vi("FILES_SIZES"),
        part_headers: vi("MULTIPART_PART_HEADERS"),
        xml: vi("XML"),
    })
}

/// A value handed to an operator: borrowed from the request, or a transformation's result.
enum Val<'a> {
    B(&'a [u8]),
    O(Vec<u8>),
    S(Arc<[u8]>),
}

impl Val<'_> {
    fn bytes(&self) -> &[u8] {
        match self {
            Val::B(b) => b,
            Val::O(v) => v,
            Val::S(a) => a,
        }
    }
}

/// A value a rule link matched: its name (`ARGS:q`), the value the operator saw, and the
/// operator's captures.
struct Hit {
    name: String,
    value: Vec<u8>,
    caps: Vec<Vec<u8>>,
}

/// One resolved variable value.
struct Item<'a> {
    coll: &'static str,
    key: Cow<'a, str>,
    value: Cow<'a, [u8]>,
}

impl Item<'_> {
    fn name(&self) -> String {
        if self.key.is_empty() {
            self.coll.to_string()
        } else {
            format!("{}:{}", self.coll, self.key)
        }
    }
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
    fn expand<'b>(&self, text: &'b str) -> Cow<'b, str> {
        self.tx.expand(self.rule, text)
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
        let mut t = Transaction {
            rules,
            mode,
            colls: vec![Vec::new(); VARIABLES.len()],
            matched: Vec::new(),
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
            cache: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
            matches: Vec::new(),
            intervention: None,
            would_block: None,
        };
        t.set_scalar("UNIQUE_ID", unique_id.as_bytes().to_vec());
        // Defined (empty) even without a body processor, so `!@rx` rules on it can match.
        t.set_scalar("REQBODY_PROCESSOR", Vec::new());
        t
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn set_body_limits(&mut self, l: BodyLimits) {
        self.body_limits = l;
    }

    /// Applies tenant exclusions (rule ids, tags, targets).
    pub fn exclude(&mut self, e: &Exclusions) {
        self.removed_ids.extend_from_slice(&e.ids);
        self.removed_tags.extend(e.tags.iter().cloned());
        self.removed_targets.extend(e.targets.iter().cloned());
    }

    /// Sets a TX variable before evaluation (e.g. `paranoia_level` from the tenant's config).
    pub fn set_tx(&mut self, name: &str, value: &str) {
        let key = name.to_ascii_lowercase();
        let coll = &mut self.colls[ix().tx];
        match coll.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value.as_bytes().to_vec(),
            None => coll.push((key, value.as_bytes().to_vec())),
        }
    }

    pub fn tx(&self, name: &str) -> Option<&[u8]> {
        self.colls[ix().tx]
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    fn set_scalar(&mut self, name: &str, value: Vec<u8>) {
        self.colls[vi(name)] = vec![(String::new(), value)];
    }

    /// The connection: client and server addresses.
    pub fn set_connection(&mut self, client: IpAddr, client_port: u16, server: IpAddr, port: u16) {
        self.set_scalar(
            "REMOTE_ADDR",
            client.to_canonical().to_string().into_bytes(),
        );
        self.set_scalar("REMOTE_PORT", client_port.to_string().into_bytes());
        self.set_scalar(
            "SERVER_ADDR",
            server.to_canonical().to_string().into_bytes(),
        );
        self.set_scalar("SERVER_PORT", port.to_string().into_bytes());
    }

    /// The request line as received: method, target (`/path?query` or absolute form), protocol.
    pub fn set_request_line(&mut self, method: &str, uri: &str, protocol: &str) {
        self.set_scalar("REQUEST_METHOD", method.as_bytes().to_vec());
        self.set_scalar("REQUEST_PROTOCOL", protocol.as_bytes().to_vec());
        self.set_scalar(
            "REQUEST_LINE",
            format!("{method} {uri} {protocol}").into_bytes(),
        );
        self.set_scalar("REQUEST_URI_RAW", uri.as_bytes().to_vec());
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
        self.set_scalar("REQUEST_URI", rel.as_bytes().to_vec());
        let (path, query) = match rel.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rel, None),
        };
        let decoded = percent_decode(path.as_bytes());
        let base = match decoded.iter().rposition(|b| *b == b'/' || *b == b'\\') {
            Some(p) => decoded[p + 1..].to_vec(),
            None => decoded.clone(),
        };
        self.set_scalar("REQUEST_FILENAME", decoded);
        self.set_scalar("REQUEST_BASENAME", base);
        if let Some(q) = query {
            self.set_scalar("QUERY_STRING", q.as_bytes().to_vec());
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
            self.colls[ix().args_get] = parsed
                .args
                .into_iter()
                .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v))
                .collect();
        } else {
            self.set_scalar("QUERY_STRING", Vec::new());
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
                self.colls[i.cookies].push((String::from_utf8_lossy(k).into_owned(), v.to_vec()));
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
            self.set_scalar("SERVER_NAME", h.as_bytes().to_vec());
        } else if name.eq_ignore_ascii_case("authorization") {
            let scheme = value.split(|b| *b == b' ').next().unwrap_or(b"");
            self.set_scalar("AUTH_TYPE", scheme.to_vec());
        }
        self.colls[i.headers].push((name.to_string(), value.to_vec()));
    }

    /// Runs phase 1 (request headers). Returns the intervention, if any.
    pub fn process_request_headers(&mut self) -> Option<Intervention> {
        if let Some(k) = body::Kind::for_content_type(&self.content_type) {
            self.body_kind = Some(k);
            self.set_scalar("REQBODY_PROCESSOR", kind_name(k).as_bytes().to_vec());
        }
        self.run_phase(1)
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
            self.set_scalar("FILES_COMBINED_SIZE", combined.to_string().into_bytes());
            for (name, v) in parsed.vars {
                self.set_scalar(name, v);
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
                Some(m) => (b"1".to_vec(), m.into_bytes()),
                None => (b"0".to_vec(), Vec::new()),
            };
            self.set_scalar("REQBODY_ERROR", err.clone());
            self.set_scalar("REQBODY_PROCESSOR_ERROR", err);
            self.set_scalar("REQBODY_ERROR_MSG", msg);
        } else {
            self.set_scalar("REQBODY_ERROR", b"0".to_vec());
            self.set_scalar("REQBODY_PROCESSOR_ERROR", b"0".to_vec());
        }
        self.set_scalar(
            "REQUEST_BODY_LENGTH",
            self.body_seen.to_string().into_bytes(),
        );
        let body = std::mem::take(&mut self.raw_body);
        let headers_len: usize = self.colls[i.headers]
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum();
        let line_len = self.first(vi("REQUEST_LINE")).len() + 2;
        self.set_scalar(
            "FULL_REQUEST_LENGTH",
            (line_len + headers_len + 2 + body.len())
                .to_string()
                .into_bytes(),
        );
        // REQUEST_BODY holds the raw body for the urlencoded processor, or when a rule forces
        // it (the CRS is written for these ModSecurity semantics).
        if self.body_kind == Some(body::Kind::UrlEncoded) || self.force_body_var {
            self.set_scalar("REQUEST_BODY", body);
        }
        let combined: usize = [i.args_get, i.args_post]
            .iter()
            .flat_map(|c| self.colls[*c].iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        self.set_scalar("ARGS_COMBINED_SIZE", combined.to_string().into_bytes());
        // Values changed: cached transformations of the previous phase may not be reused.
        self.cache.clear();
        self.run_phase(2)
    }

    fn first(&self, coll: usize) -> &[u8] {
        self.colls[coll]
            .first()
            .map(|(_, v)| v.as_slice())
            .unwrap_or(b"")
    }

    /// Expands `%{collection.key}` / `%{VARIABLE}` macros.
    pub fn expand<'b>(&self, rule: Option<&Rule>, text: &'b str) -> Cow<'b, str> {
        if !text.contains("%{") {
            return Cow::Borrowed(text);
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                rest = "";
                break;
            };
            let name = &after[..end];
            out.push_str(&self.macro_value(rule, name));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Cow::Owned(out)
    }

    fn macro_value(&self, rule: Option<&Rule>, name: &str) -> String {
        let (coll, key) = match name.split_once('.') {
            Some((c, k)) => (c, Some(k)),
            None => (name, None),
        };
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
        let Some(ci) = VARIABLES.iter().position(|v| *v == upper) else {
            return String::new();
        };
        let var = Var {
            coll: ci,
            selector: key.map(|k| super::rules::Sel::Key(k.to_ascii_lowercase())),
            count: false,
        };
        let mut items = Vec::new();
        self.collect(&var, rule, &[], &mut items);
        items
            .first()
            .map(|i| String::from_utf8_lossy(&i.value).into_owned())
            .unwrap_or_default()
    }

    /// Resolves one target into values, minus exclusions. Selection happens as values are
    /// produced (TX holds a hundred values; most rules want one of them).
    fn collect<'a>(
        &'a self,
        var: &Var,
        rule: Option<&Rule>,
        exclusions: &[&Var],
        out: &mut Vec<Item<'a>>,
    ) {
        let name = VARIABLES[var.coll];
        let start = out.len();
        let keep = |key: &str| {
            var.selector.as_ref().is_none_or(|s| s.matches(key))
                && !exclusions.iter().any(|e| {
                    e.coll == var.coll && e.selector.as_ref().is_none_or(|s| s.matches(key))
                })
        };
        let filtered = var.selector.is_some() || !exclusions.is_empty();
        let mut push = |out: &mut Vec<Item<'a>>, item: Item<'a>| {
            if !filtered || keep(&item.key) {
                out.push(item);
            }
        };
        if !computed_variable(var.coll) {
            for (k, v) in &self.colls[var.coll] {
                if !filtered || keep(k) {
                    out.push(Item {
                        coll: name,
                        key: Cow::Borrowed(k),
                        value: Cow::Borrowed(v),
                    });
                }
            }
        } else {
            self.collect_computed(var, rule, exclusions, name, out, &mut push);
        }
        if var.count {
            let n = out.len() - start;
            out.truncate(start);
            out.push(Item {
                coll: name,
                key: Cow::Borrowed(""),
                value: Cow::Owned(n.to_string().into_bytes()),
            });
        }
    }

    /// Variables not stored as they are: unions, names, matched values, times, and TX looked
    /// up by key.
    fn collect_computed<'a>(
        &'a self,
        var: &Var,
        rule: Option<&Rule>,
        exclusions: &[&Var],
        name: &'static str,
        out: &mut Vec<Item<'a>>,
        push: &mut dyn FnMut(&mut Vec<Item<'a>>, Item<'a>),
    ) {
        let i = ix();
        let pairs = |c: &'a [(String, Vec<u8>)],
                     coll: &'static str,
                     out: &mut Vec<Item<'a>>,
                     push: &mut dyn FnMut(&mut Vec<Item<'a>>, Item<'a>)| {
            for (k, v) in c {
                push(
                    out,
                    Item {
                        coll,
                        key: Cow::Borrowed(k),
                        value: Cow::Borrowed(v),
                    },
                );
            }
        };
        let names = |c: &'a [(String, Vec<u8>)],
                     coll: &'static str,
                     out: &mut Vec<Item<'a>>,
                     push: &mut dyn FnMut(&mut Vec<Item<'a>>, Item<'a>)| {
            for (k, _) in c {
                push(
                    out,
                    Item {
                        coll,
                        key: Cow::Borrowed(k),
                        value: Cow::Borrowed(k.as_bytes()),
                    },
                );
            }
        };
        let scalar = |v: Cow<'a, [u8]>| Item {
            coll: name,
            key: Cow::Borrowed(""),
            value: v,
        };
        let mut push = |out: &mut Vec<Item<'a>>, item: Item<'a>| push(out, item);
        match name {
            "ARGS" => {
                pairs(&self.colls[i.args_get], "ARGS", out, &mut push);
                pairs(&self.colls[i.args_post], "ARGS", out, &mut push);
            }
            "ARGS_NAMES" => {
                names(&self.colls[i.args_get], "ARGS_NAMES", out, &mut push);
                names(&self.colls[i.args_post], "ARGS_NAMES", out, &mut push);
            }
            "ARGS_GET_NAMES" => names(&self.colls[i.args_get], name, out, &mut push),
            "ARGS_POST_NAMES" => names(&self.colls[i.args_post], name, out, &mut push),
            "REQUEST_HEADERS_NAMES" => names(&self.colls[i.headers], name, out, &mut push),
            "REQUEST_COOKIES_NAMES" => names(&self.colls[i.cookies], name, out, &mut push),
            "FILES_NAMES" => names(&self.colls[i.files], name, out, &mut push),
            "RESPONSE_HEADERS_NAMES" => {
                names(&self.colls[vi("RESPONSE_HEADERS")], name, out, &mut push)
            }
            "MATCHED_VARS" => pairs(&self.matched, name, out, &mut push),
            "MATCHED_VARS_NAMES" => names(&self.matched, name, out, &mut push),
            "MATCHED_VAR" => {
                if let Some((_, v)) = self.matched.last() {
                    push(out, scalar(Cow::Borrowed(v)));
                }
            }
            "MATCHED_VAR_NAME" => {
                if let Some((k, _)) = self.matched.last() {
                    push(out, scalar(Cow::Borrowed(k.as_bytes())));
                }
            }
            "DURATION" => push(
                out,
                scalar(Cow::Owned(
                    self.started.elapsed().as_micros().to_string().into_bytes(),
                )),
            ),
            "RULE" => {
                if let Some(r) = rule {
                    push(
                        out,
                        Item {
                            coll: "RULE",
                            key: Cow::Borrowed("id"),
                            value: Cow::Owned(r.id.to_string().into_bytes()),
                        },
                    );
                }
            }
            t if t.starts_with("TIME") => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                push(out, scalar(Cow::Owned(time_var(t, now).into_bytes())));
            }
            // TX keys are unique and stored lower-case: one comparison each, stop at the hit.
            "TX" if exclusions.is_empty() && matches!(var.selector, Some(Sel::Key(_))) => {
                if let Some(Sel::Key(k)) = &var.selector {
                    if let Some((key, v)) = self.colls[var.coll].iter().find(|(key, _)| key == k) {
                        out.push(Item {
                            coll: name,
                            key: Cow::Borrowed(key),
                            value: Cow::Borrowed(v),
                        });
                    }
                }
            }
            _ => pairs(&self.colls[var.coll], name, out, &mut push),
        }
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
        if matches!(
            self.allow,
            Some(AllowScope::All) | Some(AllowScope::Request)
        ) && phase <= 2
        {
            return None;
        }
        self.allow = None;
        let mut cache = std::mem::take(&mut self.cache);
        let rules = self.rules.clone();
        let list = &rules.phases[phase as usize];
        let mut at = 0;
        while at < list.len() {
            let Entry::Rule(rule) = &list[at] else {
                at += 1;
                continue;
            };
            if self.removed(rule) {
                at += 1;
                continue;
            }
            if !self.eval_chain(rule, &mut cache) {
                at += 1;
                continue;
            }
            self.act(rule, phase);
            if self.intervention.is_some() || self.allow.is_some() || self.mode == Mode::Off {
                break;
            }
            if let Some(marker) = &rule.skip_after {
                at = rules.marker_after(phase, marker, at);
            } else if rule.skip > 0 {
                // `skip:N` counts rules (a chain is one), not markers.
                let mut left = rule.skip;
                at += 1;
                while at < list.len() && left > 0 {
                    if matches!(list[at], Entry::Rule(_)) {
                        left -= 1;
                    }
                    at += 1;
                }
            } else {
                at += 1;
            }
        }
        self.cache = cache;
        self.intervention.clone()
    }

    /// Evaluates every link of the chain; commits captures and MATCHED_VARS link by link (a
    /// later link may read them). True when all links match.
    fn eval_chain(&mut self, starter: &Rule, cache: &mut TransformCache) -> bool {
        self.matched.clear();
        for link in starter.links() {
            let mut found = Vec::new();
            if !self.eval_link(starter, link, &mut found, cache) {
                return false;
            }
            // Each matched value sets its captures and MATCHED_VAR, then the link's actions
            // run for it (libmodsecurity 3 runs setvar once per matched value).
            self.matched.clear();
            for hit in found {
                if link.capture && !hit.caps.is_empty() {
                    let tx = ix().tx;
                    self.colls[tx]
                        .retain(|(k, _)| !(k.len() == 1 && k.as_bytes()[0].is_ascii_digit()));
                    for (n, c) in hit.caps.into_iter().take(10).enumerate() {
                        self.colls[tx].push((n.to_string(), c));
                    }
                }
                self.matched.push((hit.name, hit.value));
                self.link_actions(starter, link);
            }
        }
        true
    }

    fn eval_link(
        &self,
        starter: &Rule,
        link: &Rule,
        found: &mut Vec<Hit>,
        cache: &mut TransformCache,
    ) -> bool {
        let mx = Mx {
            tx: self,
            rule: Some(starter),
        };
        if link.targets.is_empty() {
            // SecAction, or a rule whose every target is unsupported: the operator alone.
            let mut caps = Vec::new();
            let hit = link.op.matches(b"", &mx, false, &mut caps);
            if hit {
                found.push(Hit {
                    name: String::new(),
                    value: Vec::new(),
                    caps,
                });
            }
            return hit;
        }
        let mut extra: Vec<&Var> = link.exclusions.iter().collect();
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
        let mut items = Vec::new();
        let mut local_caps = Vec::new();
        for var in &link.targets {
            items.clear();
            self.collect(var, Some(starter), &extra, &mut items);
            for item in &items {
                let name_prefix_stable = !matches!(
                    item.coll,
                    "TX" | "MATCHED_VAR"
                        | "MATCHED_VARS"
                        | "MATCHED_VAR_NAME"
                        | "MATCHED_VARS_NAMES"
                        | "IP"
                        | "GLOBAL"
                        | "SESSION"
                        | "USER"
                        | "RESOURCE"
                ) && matches!(item.value, Cow::Borrowed(_));
                let mut caps = Vec::new();
                let hit_value = if link.multi_match {
                    self.multi_match(
                        link,
                        chain,
                        &item.value,
                        name_prefix_stable,
                        cache,
                        &mx,
                        &mut caps,
                    )
                } else {
                    let v = transformed(
                        cache,
                        &item.value,
                        name_prefix_stable,
                        link.transforms,
                        chain,
                    );
                    if link
                        .op
                        .matches(v.bytes(), &mx, link.capture, &mut local_caps)
                    {
                        if link.capture {
                            caps = std::mem::take(&mut local_caps);
                        }
                        Some(v.bytes().to_vec())
                    } else {
                        None
                    }
                };
                if let Some(v) = hit_value {
                    found.push(Hit {
                        name: item.name(),
                        value: v,
                        caps,
                    });
                }
            }
        }
        !found.is_empty()
    }

    /// `multiMatch`: the operator sees the value and every different result along the
    /// transformation chain. The intermediate results are cached like final ones.
    #[allow(clippy::too_many_arguments)]
    fn multi_match(
        &self,
        link: &Rule,
        chain: &[super::transforms::Transform],
        value: &[u8],
        stable: bool,
        cache: &mut TransformCache,
        mx: &Mx<'_>,
        caps: &mut Vec<Vec<u8>>,
    ) -> Option<Vec<u8>> {
        if link.op.matches(value, mx, link.capture, caps) {
            return Some(value.to_vec());
        }
        let key = (
            value.as_ptr() as usize,
            value.len(),
            MULTI | link.transforms,
        );
        let steps: Arc<[u8]> = match cache.get(&key).filter(|_| stable) {
            Some(v) => v.clone(),
            None => {
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
                let a: Arc<[u8]> = Arc::from(enc);
                if stable && cache.len() < CACHE_MAX {
                    cache.insert(key, a.clone());
                }
                a
            }
        };
        let mut rest: &[u8] = &steps;
        while rest.len() >= 4 {
            let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let v = &rest[4..4 + n];
            rest = &rest[4 + n..];
            if link.op.matches(v, mx, link.capture, caps) {
                return Some(v.to_vec());
            }
        }
        None
    }

    /// The non-disruptive actions of one chain link (setvar, ctl): they run as soon as the
    /// link matches, before the next link is evaluated (a later link may read what they set),
    /// as libmodsecurity 3 does.
    fn link_actions(&mut self, starter: &Rule, link: &Rule) {
        for sv in &link.setvars {
            let name = self.expand(Some(starter), &sv.name).to_ascii_lowercase();
            let ci = match sv.coll.as_str() {
                "tx" => ix().tx,
                c => match VARIABLES.iter().position(|v| v.eq_ignore_ascii_case(c)) {
                    Some(i) => i,
                    None => continue,
                },
            };
            let value = match &sv.op {
                SetOp::Delete => {
                    self.colls[ci].retain(|(k, _)| *k != name);
                    continue;
                }
                SetOp::Set(v) => self.expand(Some(starter), v).into_owned(),
                SetOp::Add(v) | SetOp::Sub(v) => {
                    let d: i64 = self.expand(Some(starter), v).trim().parse().unwrap_or(0);
                    let cur: i64 = self.colls[ci]
                        .iter()
                        .find(|(k, _)| *k == name)
                        .and_then(|(_, v)| std::str::from_utf8(v).ok())
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                    let n = if matches!(sv.op, SetOp::Add(_)) {
                        cur.saturating_add(d)
                    } else {
                        cur.saturating_sub(d)
                    };
                    n.to_string()
                }
            };
            let coll = &mut self.colls[ci];
            match coll.iter_mut().find(|(k, _)| *k == name) {
                Some(e) => e.1 = value.into_bytes(),
                None => coll.push((name, value.into_bytes())),
            }
        }
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
            let var = mx.map(|(k, _)| k.clone()).unwrap_or_default();
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
            Ctl::RemoveById(r) => self.removed_ids.extend_from_slice(r),
            Ctl::RemoveByTag(re) => self.removed_tags.push(re.clone()),
            Ctl::RemoveTargetById(r, v) => self.removed_targets.push((r.clone(), v.clone())),
            Ctl::RemoveTargetByTag(re, v) => self.removed_targets_tag.push((re.clone(), v.clone())),
            Ctl::BodyProcessor(k) => {
                self.body_kind = Some(*k);
                self.set_scalar("REQBODY_PROCESSOR", kind_name(*k).as_bytes().to_vec());
            }
            Ctl::BodyAccess(b) => self.body_access = *b,
            Ctl::ForceBodyVariable(b) => self.force_body_var = *b,
            Ctl::Ignored => {}
        }
    }
}

fn transformed<'v>(
    cache: &mut TransformCache,
    value: &'v [u8],
    stable: bool,
    chain_id: u32,
    chain: &[super::transforms::Transform],
) -> Val<'v> {
    if chain.is_empty() {
        return Val::B(value);
    }
    let key = (value.as_ptr() as usize, value.len(), chain_id);
    if stable {
        if let Some(v) = cache.get(&key) {
            return Val::S(v.clone());
        }
    }
    let mut cur: Cow<[u8]> = Cow::Borrowed(value);
    for t in chain {
        if let Cow::Owned(v) = t.apply(&cur) {
            cur = Cow::Owned(v);
        }
    }
    match cur {
        Cow::Borrowed(b) => Val::B(b),
        Cow::Owned(v) => {
            if stable && cache.len() < CACHE_MAX {
                let a: Arc<[u8]> = Arc::from(v);
                cache.insert(key, a.clone());
                return Val::S(a);
            }
            Val::O(v)
        }
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

    fn crs() -> Option<Arc<RuleSet>> {
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
