//! Web application firewall: ModSecurity rule sets (the OWASP Core Rule Set, unmodified) with
//! linear-time regexes, per tenant.
//!
//! Owns the rule language (`seclang`: loading and checking rule files), operators
//! (`operators`) and the literal pre-filters across them (`prefilter`), transformations
//! (`transforms`), request body parsing (`body`), the compiled rule set (`rules`), what is
//! remembered of values between requests (`memo`) and the evaluation for one request
//! (`transaction`); here, the per-tenant settings built from the configuration, starting a
//! transaction from a request, and turning its matches into security events and metrics. It must not send responses, touch routing,
//! limits or the cache itself: the pipeline in `proxy` acts on its verdicts.

pub mod body;
mod memo;
pub mod operators;
mod prefilter;
pub mod response;
pub mod rules;
pub mod seclang;
pub mod transaction;
pub mod transforms;

use crate::config::{Config, ConfigError, IdSpec, SourceFile, TenantWafConfig};
use crate::events::{emit, Event, Severity};
use rules::{Mode, RuleSet};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
pub use transaction::{BodyLimits, Exclusions, Intervention, Plan, Plans, Transaction};

/// A value reachable only through `&mut`, and so shareable between threads by reference
/// whatever it holds: a transaction keeps its memo cells in single-threaded
/// `OnceCell`s (an atomic `OnceLock` cost two atomic operations per value and request), and
/// this is how it sits in the proxy's per-request context, which pingora wants `Sync`.
pub struct Exclusive<T>(T);

// SAFETY: `&Exclusive<T>` gives no access to the `T` (`get_mut` takes `&mut self`), so
// sharing one between threads shares nothing of the `T`.
unsafe impl<T: Send> Sync for Exclusive<T> {}

impl<T> Exclusive<T> {
    pub fn new(v: T) -> Exclusive<T> {
        Exclusive(v)
    }

    pub fn get_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// The rule files used when `[waf] rules` is not set: CRS as Debian installs it.
pub const DEFAULT_RULES: &str = "/usr/share/modsecurity-crs/owasp-crs.load";

/// What the WAF does for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantMode {
    Off,
    Detect,
    Block,
}

fn parse_mode(s: &str) -> Option<TenantMode> {
    match s {
        "off" => Some(TenantMode::Off),
        "detect" => Some(TenantMode::Detect),
        "block" => Some(TenantMode::Block),
        _ => None,
    }
}

/// A tenant's WAF: its rule set (shared with tenants that load the same files), mode and
/// exclusions.
#[derive(Debug, Clone)]
pub struct TenantWaf {
    pub mode: TenantMode,
    pub paranoia: u8,
    pub threshold: u32,
    rules: Option<Arc<RuleSet>>,
    /// Response phases (3 and 4) run for this tenant, with these settings.
    response: Option<Arc<ResponseInspection>>,
    pub response_threshold: u32,
    always: Exclusions,
    /// Exclusions that apply under a path prefix (normalised path).
    by_path: Vec<(String, Exclusions)>,
    limits: BodyLimits,
    /// What these settings fix before any request (TX set-up, paranoia-level jumps).
    plan: Option<Arc<Plan>>,
}

impl Default for TenantWaf {
    fn default() -> Self {
        TenantWaf {
            mode: TenantMode::Off,
            paranoia: 1,
            threshold: 5,
            rules: None,
            response: None,
            response_threshold: 4,
            always: Exclusions::default(),
            by_path: Vec::new(),
            limits: BodyLimits::default(),
            plan: None,
        }
    }
}

/// How response bodies are inspected (main `[waf]` settings).
#[derive(Debug, Clone)]
pub struct ResponseInspection {
    /// Body bytes inspected at most (decompressed).
    pub limit: usize,
    /// Lower-case media types (`text/html`) whose body phase 4 reads.
    pub types: Vec<String>,
}

impl Default for ResponseInspection {
    fn default() -> Self {
        ResponseInspection {
            limit: 512 * 1024,
            types: ["text/html", "text/plain", "text/xml"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl ResponseInspection {
    /// Whether phase 4 reads a body of this `Content-Type`.
    pub fn wants(&self, content_type: &str) -> bool {
        let media = content_type.split(';').next().unwrap_or("").trim();
        self.types.iter().any(|t| t.eq_ignore_ascii_case(media))
    }
}

/// Rule sets loaded for one configuration, by file list (loaded once, shared by tenants).
#[derive(Debug, Default)]
pub struct Global {
    main_rules: Vec<PathBuf>,
    default_mode: Option<TenantMode>,
    limits: BodyLimits,
    response: Arc<ResponseInspection>,
    sets: HashMap<Vec<PathBuf>, Arc<RuleSet>>,
    plans: Plans,
}

impl Global {
    pub fn build(cfg: &Config) -> Result<Global, ConfigError> {
        let src = &cfg.main_source;
        let w = &cfg.main.waf;
        let main_rules = match &w.rules {
            Some(list) => list.iter().map(|r| cfg.resolve(r.get_ref())).collect(),
            None => vec![PathBuf::from(DEFAULT_RULES)],
        };
        let default_mode = match &w.mode {
            Some(m) => Some(parse_mode(m.get_ref()).ok_or_else(|| {
                src.error_at(m.span(), "waf.mode", "must be `off`, `detect` or `block`")
            })?),
            None => None,
        };
        // Inspection sizes: at least 1KB, so a typo cannot switch inspection off.
        let size = |v: &Option<toml::Spanned<crate::config::Size>>, key: &str, into: &mut usize| {
            if let Some(s) = v {
                *into = usize::try_from(s.get_ref().0).unwrap_or(usize::MAX);
                if *into < 1024 {
                    return Err(src.error_at(s.span(), key, "at least 1KB"));
                }
            }
            Ok(())
        };
        let mut limits = BodyLimits::default();
        size(
            &w.inspect_body,
            "waf.inspect_body",
            &mut limits.inspect_bytes,
        )?;
        if let Some(n) = &w.max_args {
            limits.max_args = *n.get_ref();
        }
        if let Some(n) = &w.max_json_depth {
            limits.max_json_depth = *n.get_ref();
        }
        if let Some(a) = &w.body_limit_action {
            limits.reject_oversize = match a.get_ref().as_str() {
                "reject" => true,
                "partial" => false,
                _ => {
                    return Err(src.error_at(
                        a.span(),
                        "waf.body_limit_action",
                        "must be `reject` or `partial`",
                    ))
                }
            };
        }
        let mut response = ResponseInspection::default();
        size(
            &w.inspect_response_body,
            "waf.inspect_response_body",
            &mut response.limit,
        )?;
        if let Some(types) = &w.response_body_types {
            response.types.clear();
            for t in types {
                let v = t.get_ref().trim().to_ascii_lowercase();
                if v.is_empty() || !v.contains('/') || v.contains(';') {
                    return Err(src.error_at(
                        t.span(),
                        "waf.response_body_types",
                        "a media type such as `text/html`, without parameters",
                    ));
                }
                response.types.push(v);
            }
        }
        Ok(Global {
            main_rules,
            default_mode,
            limits,
            response: Arc::new(response),
            sets: HashMap::new(),
            plans: Plans::default(),
        })
    }

    fn rule_set(
        &mut self,
        files: Vec<PathBuf>,
        src: &SourceFile,
        span: std::ops::Range<usize>,
        key: &str,
    ) -> Result<Arc<RuleSet>, ConfigError> {
        if let Some(s) = self.sets.get(&files) {
            return Ok(s.clone());
        }
        for f in &files {
            if !f.exists() {
                return Err(src.error_at(
                    span,
                    key,
                    format!(
                        "rule file {} does not exist (Debian: apt install modsecurity-crs)",
                        f.display()
                    ),
                ));
            }
        }
        let set = RuleSet::load(&files)
            .map_err(|e| src.error_at(span.clone(), key, format!("rules: {e}")))?;
        for w in &set.warnings {
            log::debug!(target: "waf", "{w}");
        }
        if !set.backtracking.is_empty() {
            log::info!(
                target: "waf",
                "{} rules loaded; rules on the bounded backtracking regex engine: {:?}",
                set.rule_count,
                set.backtracking
            );
        }
        let set = Arc::new(set);
        self.sets.insert(files, set.clone());
        Ok(set)
    }

    /// The tenant's WAF from its `[waf]` table.
    pub fn tenant(
        &mut self,
        cfg: &Config,
        src: &SourceFile,
        c: &TenantWafConfig,
    ) -> Result<TenantWaf, ConfigError> {
        let mode = match &c.mode {
            Some(m) => parse_mode(m.get_ref()).ok_or_else(|| {
                src.error_at(m.span(), "waf.mode", "must be `off`, `detect` or `block`")
            })?,
            None => self.default_mode.unwrap_or(TenantMode::Off),
        };
        let paranoia = match &c.paranoia {
            Some(p) if !(1..=4).contains(p.get_ref()) => {
                return Err(src.error_at(p.span(), "waf.paranoia", "must be 1, 2, 3 or 4"))
            }
            Some(p) => *p.get_ref(),
            None => 1,
        };
        let threshold = match &c.threshold {
            Some(t) if *t.get_ref() == 0 => {
                return Err(src.error_at(t.span(), "waf.threshold", "must be at least 1"))
            }
            Some(t) => *t.get_ref(),
            None => 5,
        };
        let response_threshold = match &c.response_threshold {
            Some(t) if *t.get_ref() == 0 => {
                return Err(src.error_at(t.span(), "waf.response_threshold", "must be at least 1"))
            }
            Some(t) => *t.get_ref(),
            None => 4,
        };
        let response = c
            .inspect_response
            .as_ref()
            .is_some_and(|b| *b.get_ref())
            .then(|| self.response.clone());
        let ranges = |ids: &[toml::Spanned<IdSpec>]| -> Vec<(u64, u64)> {
            ids.iter().map(|s| (s.get_ref().0, s.get_ref().1)).collect()
        };
        let mut always = Exclusions {
            ids: ranges(&c.exclude_rules),
            ..Exclusions::default()
        };
        for t in &c.exclude_tags {
            let re = regex::RegexBuilder::new(&format!("^{}$", regex::escape(t.get_ref())))
                .case_insensitive(true)
                .build()
                .map_err(|e| src.error_at(t.span(), "waf.exclude_tags", e.to_string()))?;
            always.tags.push(re);
        }
        let mut by_path = Vec::new();
        for (i, e) in c.exclusions.iter().enumerate() {
            let ids = if e.rules.is_empty() {
                vec![(0, u64::MAX)]
            } else {
                ranges(&e.rules)
            };
            let mut ex = Exclusions::default();
            if e.targets.is_empty() {
                if e.rules.is_empty() {
                    let span = e.path.as_ref().map(|p| p.span()).unwrap_or(0..0);
                    return Err(src.error_at(
                        span,
                        format!("waf.exclusions[{i}]"),
                        "needs `rules`, `targets` or both (use mode = \"off\" to switch the WAF off)",
                    ));
                }
                ex.ids = ids.clone();
            }
            for t in &e.targets {
                let key = format!("waf.exclusions[{i}].targets");
                let parsed = seclang::parse_targets(t.get_ref())
                    .map_err(|m| src.error_at(t.span(), &key, m))?;
                for p in parsed {
                    let var = rules::resolve_target(&p)
                        .map_err(|m| src.error_at(t.span(), &key, m))?
                        .ok_or_else(|| {
                            src.error_at(
                                t.span(),
                                &key,
                                format!("unknown variable {}", p.collection),
                            )
                        })?;
                    ex.targets.push((ids.clone(), var));
                }
            }
            match &e.path {
                Some(p) => {
                    if !p.get_ref().starts_with('/') {
                        return Err(src.error_at(
                            p.span(),
                            format!("waf.exclusions[{i}].path"),
                            "must start with /",
                        ));
                    }
                    by_path.push((p.get_ref().clone(), ex));
                }
                None => {
                    always.ids.extend(ex.ids);
                    always.targets.extend(ex.targets);
                }
            }
        }
        let rules = if mode == TenantMode::Off {
            None
        } else {
            let mut files = self.main_rules.clone();
            let (span, key) = match &c.rules_file {
                Some(f) => {
                    let base = std::path::Path::new(&src.path)
                        .parent()
                        .map(|p| p.to_path_buf())
                        .unwrap_or_default();
                    let p = std::path::Path::new(f.get_ref());
                    files.push(if p.is_absolute() {
                        p.to_path_buf()
                    } else {
                        base.join(p)
                    });
                    (f.span(), "waf.rules_file")
                }
                None => match (&c.mode, &cfg.main.waf.rules) {
                    (Some(m), _) => (m.span(), "waf.mode"),
                    _ => (0..0, "waf.rules"),
                },
            };
            let main_src = &cfg.main_source;
            let err_src = if c.rules_file.is_some() || c.mode.is_some() {
                src
            } else {
                main_src
            };
            Some(self.rule_set(files, err_src, span, key)?)
        };
        let settings = tx_settings(paranoia, threshold, response_threshold);
        let plan = rules
            .as_ref()
            .map(|r| self.plans.get(r, &settings_ref(&settings), &always));
        Ok(TenantWaf {
            mode,
            paranoia,
            threshold,
            rules,
            response,
            response_threshold,
            always,
            by_path,
            limits: self.limits,
            plan,
        })
    }
}

/// The TX variables a tenant's settings give every request before the rules run.
fn tx_settings(
    paranoia: u8,
    threshold: u32,
    response_threshold: u32,
) -> [(&'static str, String); 4] {
    [
        ("paranoia_level", paranoia.to_string()),
        ("executing_paranoia_level", paranoia.to_string()),
        ("inbound_anomaly_score_threshold", threshold.to_string()),
        (
            "outbound_anomaly_score_threshold",
            response_threshold.to_string(),
        ),
    ]
}

fn settings_ref<'a>(s: &'a [(&'static str, String); 4]) -> [(&'static str, &'a str); 4] {
    [0, 1, 2, 3].map(|i| (s[i].0, s[i].1.as_str()))
}

/// Path segment-boundary prefix match (`/admin` matches `/admin/x`, not `/administrator`).
fn under(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path == prefix
        || (path.starts_with(prefix)
            && (prefix.ends_with('/') || path.as_bytes().get(prefix.len()) == Some(&b'/')))
}

/// What the pipeline knows of a request when the WAF starts on it.
pub struct RequestFacts<'a> {
    pub request_id: &'a str,
    pub method: &'a str,
    /// Request target as received (`/path?query`).
    pub uri: &'a str,
    pub protocol: &'a str,
    pub headers: &'a http::HeaderMap,
    pub client: IpAddr,
    pub client_port: u16,
    pub server: Option<SocketAddr>,
    /// Normalised path (for path exclusions).
    pub norm_path: &'a str,
}

impl TenantWaf {
    /// The compiled rule set this tenant uses (`None` when the WAF is off for it).
    pub fn rule_set(&self) -> Option<&Arc<RuleSet>> {
        self.rules.as_ref()
    }

    pub fn enabled(&self) -> bool {
        self.mode != TenantMode::Off && self.rules.is_some()
    }

    /// How this tenant's responses are inspected (`None`: phases 3 and 4 do not run).
    pub fn response(&self) -> Option<&Arc<ResponseInspection>> {
        self.response.as_ref().filter(|_| self.enabled())
    }

    /// Starts a transaction and runs phase 1. `None` when the WAF is off for the tenant.
    pub fn begin(&self, f: &RequestFacts) -> Option<Transaction> {
        let rules = self.rules.clone()?;
        if self.mode == TenantMode::Off {
            return None;
        }
        let mode = match self.mode {
            TenantMode::Block => Mode::On,
            _ => Mode::DetectionOnly,
        };
        let mut t = Transaction::new(rules, mode, f.request_id);
        t.set_body_limits(self.limits);
        t.exclude(&self.always);
        let mut by_path = false;
        for (prefix, ex) in &self.by_path {
            if under(f.norm_path, prefix) {
                t.exclude(ex);
                by_path = true;
            }
        }
        // The plan was made with the tenant's own exclusions: a path's may remove rules it
        // counted on.
        match self.plan.as_ref().filter(|_| !by_path) {
            Some(plan) => t.follow(plan),
            None => {
                let settings = tx_settings(self.paranoia, self.threshold, self.response_threshold);
                for (k, v) in settings_ref(&settings) {
                    t.set_tx(k, v);
                }
            }
        }
        let server = f
            .server
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        t.set_connection(f.client, f.client_port, server.ip(), server.port());
        t.set_request_line(f.method, f.uri, f.protocol);
        for (name, value) in f.headers.iter() {
            t.add_header(name.as_str(), value.as_bytes());
        }
        t.process_request_headers();
        Some(t)
    }
}

/// `cong check`'s lines about the WAF: tenants per mode, and for each rule set its size, the
/// rules on the backtracking regex engine and what it loaded but does not run.
pub fn check_summary(tenants: &[&TenantWaf]) -> Vec<String> {
    let mut out = Vec::new();
    let count = |m: TenantMode| tenants.iter().filter(|t| t.mode == m).count();
    let (block, detect) = (count(TenantMode::Block), count(TenantMode::Detect));
    if block + detect == 0 {
        return out;
    }
    out.push(format!(
        "waf: {block} tenants block, {detect} detect, {} off",
        count(TenantMode::Off)
    ));
    let mut seen: Vec<*const RuleSet> = Vec::new();
    for t in tenants {
        let Some(set) = t.rule_set() else { continue };
        if seen.contains(&Arc::as_ptr(set)) {
            continue;
        }
        seen.push(Arc::as_ptr(set));
        out.push(format!(
            "waf: rule set of {} rules; on the bounded backtracking regex engine: {:?}",
            set.rule_count, set.backtracking
        ));
        for w in &set.warnings {
            out.push(format!("waf: not run: {w}"));
        }
    }
    out
}

/// Whether a request announces a body (so phase 2 waits for it).
pub fn has_body(headers: &http::HeaderMap) -> bool {
    if headers.contains_key(http::header::TRANSFER_ENCODING) {
        return true;
    }
    headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|n| n > 0)
}

/// Who the verdict concerns (for events).
pub struct Subject<'a> {
    pub tenant: &'a str,
    pub client_ip: IpAddr,
    pub request_id: &'a str,
    pub paranoia: u8,
}

/// The inbound anomaly score CRS computed (0 when the rules keep none).
pub fn anomaly_score(t: &Transaction) -> i32 {
    ["anomaly_score", "inbound_anomaly_score"]
        .iter()
        .filter_map(|k| t.tx(k))
        .filter_map(|v| std::str::from_utf8(v).ok()?.trim().parse::<i32>().ok())
        .max()
        .unwrap_or(0)
}

/// What of a transaction has been reported already (it is reported after the request
/// phases and again after each response phase).
#[derive(Debug, Default)]
pub struct Reported {
    matches: usize,
    verdict: bool,
}

/// Emits a `waf_match` event per logged rule match not reported yet, then `waf_block` or
/// `waf_detect` for the verdict (once), and counts them; their log lines are written at once.
pub fn report(t: &Transaction, s: &Subject, done: &mut Reported) {
    crate::events::batch(|| report_events(t, s, done));
}

fn report_events(t: &Transaction, s: &Subject, done: &mut Reported) {
    let fresh = t.matches.get(done.matches..).unwrap_or_default();
    let verdict = !done.verdict && (t.intervention.is_some() || t.would_block.is_some());
    if fresh.is_empty() && !verdict {
        return;
    }
    done.matches = t.matches.len();
    // Written into every event: formatted once (an address's `Display` is slow).
    let client_ip = s.client_ip.to_string();
    let client_ip = client_ip.as_str();
    let m = crate::metrics::get();
    let score = anomaly_score(t);
    for x in fresh {
        m.waf_rule_matches
            .with_label_values(&[&(x.id / 1000).to_string()])
            .inc();
        let sev = match x.severity {
            Some(0..=2) => Severity::Warning,
            _ => Severity::Notice,
        };
        emit(
            Event::new("waf_match", sev)
                .tenant(s.tenant)
                .field("rule_id", x.id)
                .field("msg", &x.msg)
                .field("data", &x.data)
                .field("var", &x.var)
                .field("severity", x.severity.map(severity_name).unwrap_or("-"))
                .field("tags", x.tags.join(","))
                .field("score", score)
                .field("phase", x.phase)
                .field("paranoia", s.paranoia)
                .field("client_ip", client_ip)
                .field("request_id", s.request_id),
        );
    }
    if !verdict {
        return;
    }
    done.verdict = true;
    let rules: Vec<String> = t.matches.iter().map(|x| x.id.to_string()).collect();
    let reason = match (t.oversize(), t.phase_done()) {
        (true, _) => "request body over waf.inspect_body",
        (false, 3) => "response headers",
        (false, 4) => "response body",
        _ => "request",
    };
    if let Some(i) = &t.intervention {
        m.waf_blocks.with_label_values(&[s.tenant]).inc();
        emit(
            Event::new("waf_block", Severity::Warning)
                .tenant(s.tenant)
                .field("rule_id", i.rule_id)
                .field("rules", rules.join(","))
                .field("score", score)
                .field("status", i.status)
                .field("phase", t.phase_done())
                .field("reason", reason)
                .field("client_ip", client_ip)
                .field("request_id", s.request_id),
        );
    } else if let Some(id) = t.would_block {
        m.waf_detections.with_label_values(&[s.tenant]).inc();
        emit(
            Event::new("waf_detect", Severity::Notice)
                .tenant(s.tenant)
                .field("rule_id", id)
                .field("rules", rules.join(","))
                .field("score", score)
                .field("phase", t.phase_done())
                .field("reason", reason)
                .field("client_ip", client_ip)
                .field("request_id", s.request_id),
        );
    }
}

fn severity_name(s: u8) -> &'static str {
    rules::SEVERITIES
        .get(s as usize)
        .copied()
        .unwrap_or("DEBUG")
}
