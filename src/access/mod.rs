//! Operator access rules: CIDR and country allow/deny lists, path-scoped rules (e.g.
//! `/quantri/**` only from the province network or Vietnam), method allow-lists, limits on
//! URI length, header count and size and body size, and user-agent deny patterns.
//!
//! A `RuleSet` is compiled once per configuration (global rules from the main file, one set
//! per tenant) and shared by all requests. Rules scoped to paths are indexed by their first
//! literal segment, so a request only looks at the rules that can apply to it. The pipeline
//! calls `check` once per request, before anything else looks at the request content.

pub mod path;

use crate::config::{AccessConfig, Config, ConfigError, RuleConfig, SourceFile};
use crate::events::{emit, Event, Severity};
use crate::forwarded::parse_cidr;
use crate::geoip::Country;
use crate::geoip::GeoIp;
use ipnet::IpNet;
use path::PathPattern;
use pingora::http::RequestHeader;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// What `check` looks at.
pub struct RequestFacts<'a> {
    pub ip: IpAddr,
    pub country: Country,
    pub method: &'a str,
    /// Normalised path (see `path::normalize`).
    pub path: &'a str,
    pub uri_len: usize,
    pub header_count: usize,
    pub header_bytes: usize,
    pub content_length: Option<u64>,
    pub user_agent: &'a str,
}

/// Why a request is refused: the rule's name, the status to answer and a short reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub rule: Arc<str>,
    pub status: u16,
    pub reason: &'static str,
}

#[derive(Debug)]
struct Rule {
    name: Arc<str>,
    paths: Vec<PathPattern>,
    allow_nets: Vec<IpNet>,
    allow_countries: Vec<Country>,
    deny_nets: Vec<IpNet>,
    deny_countries: Vec<Country>,
    methods: Vec<String>,
    user_agents: Option<Arc<regex::RegexSet>>,
    max_uri_length: Option<usize>,
    max_headers: Option<usize>,
    max_header_bytes: Option<usize>,
    max_body_bytes: Option<u64>,
}

impl Rule {
    fn applies(&self, segs: &[&str]) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| p.matches(segs))
    }

    fn judge(&self, r: &RequestFacts) -> Option<Denial> {
        let deny = |status, reason| {
            Some(Denial {
                rule: self.name.clone(),
                status,
                reason,
            })
        };
        if self.deny_nets.iter().any(|n| n.contains(&r.ip)) {
            return deny(403, "address");
        }
        if self.deny_countries.contains(&r.country) {
            return deny(403, "country");
        }
        if (!self.allow_nets.is_empty() || !self.allow_countries.is_empty())
            && !self.allow_nets.iter().any(|n| n.contains(&r.ip))
            && !self.allow_countries.contains(&r.country)
        {
            return deny(403, "not_allowed");
        }
        if !self.methods.is_empty() && !self.methods.iter().any(|m| m == r.method) {
            return deny(405, "method");
        }
        if self.max_uri_length.is_some_and(|m| r.uri_len > m) {
            return deny(414, "uri_length");
        }
        if self.max_headers.is_some_and(|m| r.header_count > m) {
            return deny(431, "header_count");
        }
        if self.max_header_bytes.is_some_and(|m| r.header_bytes > m) {
            return deny(431, "header_size");
        }
        if let (Some(m), Some(len)) = (self.max_body_bytes, r.content_length) {
            if len > m {
                return deny(413, "body_size");
            }
        }
        if let Some(set) = &self.user_agents {
            if set.is_match(r.user_agent) {
                return deny(403, "user_agent");
            }
        }
        None
    }
}

/// The compiled rules of one scope (global, or one tenant).
#[derive(Debug, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    /// Rules without paths, or whose patterns start with a wildcard.
    everywhere: Vec<u32>,
    by_first: HashMap<Box<str>, Vec<u32>, crate::limits::table::FastBuild>,
}

impl RuleSet {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first rule (in file order) that refuses the request.
    pub fn check(&self, r: &RequestFacts) -> Option<Denial> {
        if self.rules.is_empty() {
            return None;
        }
        let segs = path::segments(r.path);
        let scoped = segs
            .first()
            .and_then(|s| self.by_first.get(*s))
            .map(|v| v.as_slice())
            .unwrap_or(&[]);
        // Merge the two sorted index lists so rules are judged in file order.
        let (mut i, mut j) = (0, 0);
        while i < self.everywhere.len() || j < scoped.len() {
            let idx = match (self.everywhere.get(i), scoped.get(j)) {
                (Some(&a), Some(&b)) if a < b => {
                    i += 1;
                    a
                }
                (Some(_), Some(&b)) => {
                    j += 1;
                    b
                }
                (Some(&a), None) => {
                    i += 1;
                    a
                }
                (None, Some(&b)) => {
                    j += 1;
                    b
                }
                (None, None) => break,
            };
            let rule = &self.rules[idx as usize];
            if rule.applies(&segs) {
                if let Some(d) = rule.judge(r) {
                    return Some(d);
                }
            }
        }
        None
    }

    /// The smallest body limit of the rules that apply to a path (for bodies sent without
    /// `Content-Length`), with the rule's name.
    pub fn body_limit(&self, normalized_path: &str) -> Option<(u64, Arc<str>)> {
        let segs = path::segments(normalized_path);
        self.rules
            .iter()
            .filter(|r| r.max_body_bytes.is_some() && r.applies(&segs))
            .filter_map(|r| r.max_body_bytes.map(|m| (m, r.name.clone())))
            .min_by_key(|(m, _)| *m)
    }

    /// Compiles `[[access.rule]]` entries; `key` is the dotted prefix for errors
    /// (`access.rule`). `geoip` says whether a database is configured.
    pub fn build(
        src: &SourceFile,
        key: &str,
        rules: &[RuleConfig],
        geoip: bool,
    ) -> Result<RuleSet, ConfigError> {
        let mut set = RuleSet::default();
        let mut names: HashMap<String, usize> = HashMap::new();
        for (i, rc) in rules.iter().enumerate() {
            let k = |field: &str| format!("{key}[{i}].{field}");
            let name = rc.name.get_ref().trim();
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(src.error_at(
                    rc.name.span(),
                    k("name"),
                    "use letters, digits, `-`, `_` and `.`",
                ));
            }
            if let Some(prev) = names.insert(name.to_string(), i) {
                return Err(src.error_at(
                    rc.name.span(),
                    k("name"),
                    format!("rule name `{name}` is already used by {key}[{prev}]"),
                ));
            }
            let mut paths: Vec<PathPattern> = Vec::new();
            for p in &rc.paths {
                let pat = PathPattern::parse(p.get_ref())
                    .map_err(|e| src.error_at(p.span(), k("paths"), e))?;
                if paths.iter().any(|q| q.source == pat.source) {
                    return Err(src.error_at(
                        p.span(),
                        k("paths"),
                        format!("`{}` is listed twice", p.get_ref()),
                    ));
                }
                paths.push(pat);
            }
            let allow_nets = nets(src, &k("allow_cidrs"), &rc.allow_cidrs)?;
            let deny_nets = nets(src, &k("deny_cidrs"), &rc.deny_cidrs)?;
            for (n, s) in deny_nets.iter().zip(&rc.deny_cidrs) {
                if let Some(a) = allow_nets.iter().find(|a| a.contains(n) || n.contains(*a)) {
                    return Err(src.error_at(
                        s.span(),
                        k("deny_cidrs"),
                        format!("`{n}` overlaps `{a}` of allow_cidrs in the same rule"),
                    ));
                }
            }
            let allow_countries =
                countries(src, &k("allow_countries"), &rc.allow_countries, geoip)?;
            let deny_countries = countries(src, &k("deny_countries"), &rc.deny_countries, geoip)?;
            for (c, s) in deny_countries.iter().zip(&rc.deny_countries) {
                if allow_countries.contains(c) {
                    return Err(src.error_at(
                        s.span(),
                        k("deny_countries"),
                        format!("`{c}` is also in allow_countries of the same rule"),
                    ));
                }
            }
            let mut methods = Vec::new();
            for m in &rc.methods {
                let up = m.get_ref().trim().to_ascii_uppercase();
                if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(src.error_at(m.span(), k("methods"), "not an HTTP method"));
                }
                if methods.contains(&up) {
                    return Err(src.error_at(m.span(), k("methods"), "listed twice"));
                }
                methods.push(up);
            }
            let mut patterns = Vec::new();
            for u in &rc.deny_user_agents {
                regex::Regex::new(u.get_ref()).map_err(|e| {
                    src.error_at(u.span(), k("deny_user_agents"), format!("bad pattern: {e}"))
                })?;
                patterns.push(u.get_ref().clone());
            }
            let user_agents = if patterns.is_empty() {
                None
            } else {
                Some(shared_regex_set(patterns).map_err(|e| {
                    src.error_at(rc.name.span(), k("deny_user_agents"), e.to_string())
                })?)
            };
            let rule = Rule {
                name: Arc::from(name),
                paths,
                allow_nets,
                allow_countries,
                deny_nets,
                deny_countries,
                methods,
                user_agents,
                max_uri_length: rc.max_uri_length,
                max_headers: rc.max_headers,
                max_header_bytes: rc.max_header_bytes,
                max_body_bytes: rc.max_body_bytes,
            };
            if rule.allow_nets.is_empty()
                && rule.allow_countries.is_empty()
                && rule.deny_nets.is_empty()
                && rule.deny_countries.is_empty()
                && rule.methods.is_empty()
                && rule.user_agents.is_none()
                && rule.max_uri_length.is_none()
                && rule.max_headers.is_none()
                && rule.max_header_bytes.is_none()
                && rule.max_body_bytes.is_none()
            {
                return Err(src.error_at(rc.name.span(), k("name"), "the rule has no condition"));
            }
            let idx = set.rules.len() as u32;
            let firsts: Option<Vec<String>> = if rule.paths.is_empty() {
                None
            } else {
                rule.paths
                    .iter()
                    .map(|p| p.first_literal().map(str::to_string))
                    .collect()
            };
            match firsts {
                Some(mut f) => {
                    f.sort();
                    f.dedup();
                    for s in f {
                        set.by_first.entry(s.into()).or_default().push(idx);
                    }
                }
                None => set.everywhere.push(idx),
            }
            set.rules.push(rule);
        }
        Ok(set)
    }
}

/// Compiled user-agent pattern lists, shared by every rule (and tenant) with the same list:
/// tenants often copy one list, and one compiled set keeps memory and CPU caches small.
fn shared_regex_set(patterns: Vec<String>) -> Result<Arc<regex::RegexSet>, regex::Error> {
    type Cache = HashMap<Vec<String>, std::sync::Weak<regex::RegexSet>>;
    static CACHE: std::sync::LazyLock<std::sync::Mutex<Cache>> =
        std::sync::LazyLock::new(Default::default);
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(set) = c.get(&patterns).and_then(|w| w.upgrade()) {
        return Ok(set);
    }
    let set = Arc::new(regex::RegexSet::new(&patterns)?);
    // Forget sets no configuration uses any more, so reloads do not accumulate them.
    c.retain(|_, w| w.strong_count() > 0);
    c.insert(patterns, Arc::downgrade(&set));
    Ok(set)
}

/// CIDRs of one list; duplicates and one network inside another are errors.
pub fn nets(
    src: &SourceFile,
    key: &str,
    list: &[toml::Spanned<String>],
) -> Result<Vec<IpNet>, ConfigError> {
    let mut out: Vec<IpNet> = Vec::new();
    for s in list {
        let n = parse_cidr(s.get_ref()).map_err(|e| src.error_at(s.span(), key, e))?;
        if let Some(o) = out.iter().find(|o| o.contains(&n) || n.contains(*o)) {
            return Err(src.error_at(
                s.span(),
                key,
                format!("`{n}` overlaps `{o}` listed before it"),
            ));
        }
        out.push(n);
    }
    Ok(out)
}

fn countries(
    src: &SourceFile,
    key: &str,
    list: &[toml::Spanned<String>],
    geoip: bool,
) -> Result<Vec<Country>, ConfigError> {
    let mut out = Vec::new();
    for s in list {
        if !geoip {
            return Err(src.error_at(
                s.span(),
                key,
                "countries need a GeoIP database: set access.geoip_db in the main file",
            ));
        }
        let c = Country::parse(s.get_ref()).map_err(|e| src.error_at(s.span(), key, e))?;
        if out.contains(&c) {
            return Err(src.error_at(s.span(), key, format!("`{c}` is listed twice")));
        }
        out.push(c);
    }
    Ok(out)
}

/// The global side of access control: the main file's rules and the GeoIP database.
#[derive(Debug, Default)]
pub struct Global {
    pub rules: RuleSet,
    pub geoip: Option<Arc<GeoIp>>,
}

impl Global {
    pub fn build(cfg: &Config) -> Result<Global, ConfigError> {
        let src = &cfg.main_source;
        let geoip = match &cfg.main.access.geoip_db {
            Some(p) => Some(Arc::new(
                GeoIp::open(&cfg.resolve(p.get_ref()))
                    .map_err(|e| src.error_at(p.span(), "access.geoip_db", e))?,
            )),
            None => None,
        };
        let rules = RuleSet::build(src, "access.rule", &cfg.main.access.rule, geoip.is_some())?;
        Ok(Global { rules, geoip })
    }

    /// Rules of a tenant file (`geoip_db` belongs to the main file only).
    pub fn tenant_rules(&self, src: &SourceFile, a: &AccessConfig) -> Result<RuleSet, ConfigError> {
        if let Some(p) = &a.geoip_db {
            return Err(src.error_at(
                p.span(),
                "access.geoip_db",
                "the GeoIP database is set in the main file only",
            ));
        }
        RuleSet::build(src, "access.rule", &a.rule, self.geoip.is_some())
    }

    /// The client's country, `--` without a database or when it does not know the address.
    pub fn country(&self, ip: IpAddr) -> Country {
        match &self.geoip {
            Some(g) => g.country(ip),
            None => Country::UNKNOWN,
        }
    }
}

/// A body limit to enforce while the body streams in (it came without `Content-Length`).
#[derive(Debug, Clone)]
pub struct BodyLimit {
    pub max: u64,
    pub rule: Arc<str>,
}

impl BodyLimit {
    /// True (with the refusal counted and emitted) once `seen` bytes exceed the limit.
    pub fn exceeded(&self, seen: u64, tenant: &str, ip: IpAddr, country: Country) -> bool {
        if seen <= self.max {
            return false;
        }
        crate::metrics::get()
            .access_denied
            .with_label_values(&[tenant, &self.rule])
            .inc();
        emit(
            Event::new("access_denied", Severity::Notice)
                .tenant(tenant)
                .field("rule", &self.rule)
                .field("reason", "body_size")
                .field("client_ip", ip)
                .field("country", country)
                .field("status", 413),
        );
        true
    }
}

/// The access step of the pipeline: `Err(status)` when the request must be refused (the
/// refusal is counted and emitted); `Ok(Some(limit))` when its body, sent without a length,
/// must stay under a rule's `max_body_bytes`.
#[allow(clippy::too_many_arguments)]
pub fn enforce(
    g: &Global,
    t: &RuleSet,
    tenant: &str,
    req: &RequestHeader,
    ip: IpAddr,
    country: Country,
    norm_path: &str,
) -> Result<Option<BodyLimit>, u16> {
    if g.rules.is_empty() && t.is_empty() {
        return Ok(None);
    }
    let header_bytes = req
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    let facts = RequestFacts {
        ip: ip.to_canonical(),
        country,
        method: req.method.as_str(),
        path: norm_path,
        uri_len: req
            .uri
            .path_and_query()
            .map(|p| p.as_str().len())
            .unwrap_or(1),
        header_count: req.headers.len(),
        header_bytes,
        content_length: req
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
        user_agent: req
            .headers
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(""),
    };
    let Some(d) = check(&g.rules, t, &facts) else {
        if facts.content_length.is_some() {
            return Ok(None);
        }
        let limit = [g.rules.body_limit(norm_path), t.body_limit(norm_path)]
            .into_iter()
            .flatten()
            .min_by_key(|(m, _)| *m);
        return Ok(limit.map(|(max, rule)| BodyLimit { max, rule }));
    };
    crate::metrics::get()
        .access_denied
        .with_label_values(&[tenant, &d.rule])
        .inc();
    emit(
        Event::new("access_denied", Severity::Notice)
            .tenant(tenant)
            .field("rule", &d.rule)
            .field("reason", d.reason)
            .field("client_ip", facts.ip)
            .field("country", country)
            .field("method", facts.method)
            .field("path", req.uri.path())
            .field("status", d.status),
    );
    Err(d.status)
}

/// Global rules first, then the tenant's.
pub fn check(global: &RuleSet, tenant: &RuleSet, r: &RequestFacts) -> Option<Denial> {
    global.check(r).or_else(|| tenant.check(r))
}
