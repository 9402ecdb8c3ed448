//! The page cache: keeps copies of public pages so traffic spikes do not reach the portals'
//! small CMS servers and the portal stays readable while they are down.
//!
//! Owns the HTTP caching decisions (RFC 9111 through pingora-cache: Cache-Control, Expires,
//! Age, Vary, validators, HEAD and Range from cache), the per-tenant policy (what may be
//! stored, default TTLs, path rules, stale windows), the cache key (tenant + scheme + host +
//! path + normalised query, plus Vary), the cache status headers, the storage tiers
//! (`storage`), purges (`purge`) and the cache metrics. Safety rules are here and nowhere
//! else: a request with `Authorization` or a session cookie is never answered from nor stored
//! in the cache, a response with `Set-Cookie` is never stored, only GET and HEAD are cached.
//! The pipeline (`proxy`) calls these functions from pingora's cache callbacks; this module
//! never writes a response itself and never chooses a backend.

pub mod cli;
pub mod metrics;
pub mod purge;
pub mod storage;

use crate::config::{CacheConfig, ConfigError, SourceFile, TenantCacheConfig};
use http::header;
use pingora::cache::cache_control::{
    CacheControl, Cacheable as CcCacheable, InterpretCacheControl,
};
use pingora::cache::filters::resp_cacheable;
use pingora::cache::key::HashBinary;
use pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora::cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CachePhase, HttpCache, NoCacheReason, RespCacheable,
    VarianceBuilder,
};
use pingora::http::{RequestHeader, ResponseHeader};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// Extensions given a default TTL when the origin says nothing.
const STATIC_EXTENSIONS: &[&str] = &[
    "css", "js", "mjs", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "woff", "woff2",
    "ttf", "otf", "eot", "pdf", "doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "mp4", "webm",
    "mp3", "zip",
];

/// Session cookies of common CMSs (a trailing `*` matches a prefix).
const SESSION_COOKIES: &[&str] = &[
    "PHPSESSID",
    "JSESSIONID",
    "ASP.NET_SessionId",
    ".ASPXAUTH",
    ".ASPXFORMSAUTH",
    "wordpress_logged_in_*",
    "wp-settings-*",
    "SESS*",
    "SSESS*",
    "laravel_session",
    "sessionid",
    "session",
];

/// Process-wide cache settings (`[cache]` in the main file); tier sizes take effect at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub tiers: storage::TierSettings,
    pub lock_timeout: Duration,
}

impl Settings {
    pub fn build(cfg: &crate::config::Config) -> Result<Settings, ConfigError> {
        let c: &CacheConfig = &cfg.main.cache;
        let src = &cfg.main_source;
        let mem = c.memory_size.get_ref().0;
        if mem < 1024 * 1024 {
            return Err(src.error_at(c.memory_size.span(), "cache.memory_size", "at least 1MB"));
        }
        let mem_obj = c.memory_max_object_size.get_ref().0;
        if mem_obj > 64 * 1024 * 1024 || mem_obj > mem {
            return Err(src.error_at(
                c.memory_max_object_size.span(),
                "cache.memory_max_object_size",
                "at most 64MB and at most cache.memory_size",
            ));
        }
        Ok(Settings {
            tiers: storage::TierSettings {
                memory_bytes: mem as usize,
                memory_max_object: mem_obj as usize,
                disk_dir: c.disk_dir.as_deref().map(|d| cfg.resolve(d)),
                disk_bytes: c.disk_size.get_ref().0,
                max_object: c.max_object_size.get_ref().0 as usize,
            },
            lock_timeout: c.lock_timeout.get(),
        })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            tiers: storage::TierSettings {
                memory_bytes: 256 << 20,
                memory_max_object: 4 << 20,
                disk_dir: None,
                disk_bytes: 0,
                max_object: 512 << 20,
            },
            lock_timeout: Duration::from_secs(10),
        }
    }
}

/// Write buffer of plain-HTTP listeners: the header and body of a cached page up to this size
/// go out in one send. Pages are mostly 10–30 KB; pingora's default (1,460 bytes) sends the
/// header on its own. The price: up to this much more memory per open connection (pingora's
/// read buffer is 64 KiB).
pub const LISTENER_WRITE_BUFFER: usize = 32 * 1024;

static LOCK: OnceLock<&'static CacheKeyLockImpl> = OnceLock::new();

/// Opens the storage tiers and the cache lock. Called once at start.
pub fn init(s: &Settings) -> Result<(), String> {
    storage::init(&s.tiers).map_err(|e| {
        format!(
            "cache.disk_dir {}: {e}",
            s.tiers
                .disk_dir
                .as_deref()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        )
    })?;
    LOCK.get_or_init(|| Box::leak(CacheLock::new_boxed(s.lock_timeout)));
    Ok(())
}

/// A path pattern of `bypass_paths`: `/quantri/**` (the prefix and below), `/a/*/b` (`*` is
/// one segment), or an exact path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathRule {
    Under(String),
    Glob(Vec<String>),
    Exact(String),
}

impl PathRule {
    fn parse(s: &str) -> Result<PathRule, String> {
        if !s.starts_with('/') {
            return Err(format!("`{s}` must start with `/`"));
        }
        if let Some(p) = s.strip_suffix("/**") {
            if p.contains('*') {
                return Err(format!("`{s}`: `**` only at the end"));
            }
            return Ok(PathRule::Under(p.to_string()));
        }
        if s.contains("**") {
            return Err(format!("`{s}`: `**` only at the end, as `/**`"));
        }
        if s.contains('*') {
            return Ok(PathRule::Glob(s.split('/').map(String::from).collect()));
        }
        Ok(PathRule::Exact(s.to_string()))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Under(p) => {
                path == p || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
            }
            PathRule::Exact(p) => path == p,
            PathRule::Glob(segs) => {
                let parts: Vec<&str> = path.split('/').collect();
                parts.len() == segs.len() && segs.iter().zip(parts).all(|(s, p)| glob_segment(s, p))
            }
        }
    }
}

fn glob_segment(pat: &str, s: &str) -> bool {
    match pat.split_once('*') {
        None => pat == s,
        Some((a, rest)) => match s.strip_prefix(a) {
            Some(s) => (0..=s.len())
                .filter(|i| s.is_char_boundary(*i))
                .any(|i| glob_segment(rest, &s[i..])),
            None => false,
        },
    }
}

/// A tenant's cache policy (from its `[cache]` section); off by default.
#[derive(Debug, Clone, Default)]
pub struct TenantPolicy {
    pub enabled: bool,
    static_ttl: u32,
    static_ext: Vec<String>,
    html_ttl: u32,
    session_cookies: Vec<String>,
    bypass: Vec<PathRule>,
    /// Request headers a response may vary on besides Accept-Encoding (lower case).
    vary: Vec<String>,
    stale_if_error: u32,
    stale_while_revalidate: u32,
    pub serve_in_maintenance: bool,
}

fn secs(d: Duration) -> u32 {
    d.as_secs().min(u32::MAX as u64) as u32
}

impl TenantPolicy {
    pub fn build(src: &SourceFile, c: &TenantCacheConfig) -> Result<TenantPolicy, ConfigError> {
        let mut bypass = Vec::new();
        for (i, p) in c.bypass_paths.iter().enumerate() {
            bypass.push(
                PathRule::parse(p.get_ref())
                    .map_err(|e| src.error_at(p.span(), format!("cache.bypass_paths[{i}]"), e))?,
            );
        }
        let mut cookies: Vec<String> = SESSION_COOKIES.iter().map(|s| s.to_string()).collect();
        for (i, n) in c.session_cookies.iter().enumerate() {
            let name = n.get_ref();
            let bare = name.strip_suffix('*').unwrap_or(name);
            if bare.is_empty()
                || !bare
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"=;,*".contains(&b))
            {
                return Err(src.error_at(
                    n.span(),
                    format!("cache.session_cookies[{i}]"),
                    format!("`{name}` is not a cookie name (a trailing `*` matches a prefix)"),
                ));
            }
            cookies.push(name.clone());
        }
        let mut vary = Vec::new();
        for (i, h) in c.vary_headers.iter().enumerate() {
            let name = h.get_ref().to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(src.error_at(
                    h.span(),
                    format!("cache.vary_headers[{i}]"),
                    format!("`{}` is not a header name", h.get_ref()),
                ));
            }
            if matches!(name.as_str(), "cookie" | "authorization") {
                return Err(src.error_at(
                    h.span(),
                    format!("cache.vary_headers[{i}]"),
                    "responses that vary on Cookie or Authorization are personal and never cached",
                ));
            }
            vary.push(name);
        }
        Ok(TenantPolicy {
            enabled: c.enabled,
            static_ttl: secs(c.static_ttl.get()),
            static_ext: match &c.static_extensions {
                Some(l) => l
                    .iter()
                    .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
                    .collect(),
                None => STATIC_EXTENSIONS.iter().map(|s| s.to_string()).collect(),
            },
            html_ttl: secs(c.html_ttl.get()),
            session_cookies: cookies,
            bypass,
            vary,
            stale_if_error: secs(c.stale_if_error.get()),
            stale_while_revalidate: secs(c.stale_while_revalidate.get()),
            serve_in_maintenance: c.serve_in_maintenance,
        })
    }

    fn is_session_cookie(&self, name: &str) -> bool {
        self.session_cookies
            .iter()
            .any(|c| match c.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name.eq_ignore_ascii_case(c),
            })
    }
}

/// Per-request cache state, kept in the pipeline's context.
#[derive(Default)]
pub struct ReqState {
    /// The tenant has caching on (so status headers and counts apply).
    pub on: bool,
    /// Why this request does not use the cache (`None`: it looks the cache up).
    pub bypass: Option<&'static str>,
    /// `scheme://host` of the request, for the key.
    origin: String,
    tenant: String,
    /// Planned maintenance with cached copies allowed: the maintenance page (and its
    /// Retry-After) for what is not in cache.
    pub maintenance: Option<(String, i64)>,
    counted: bool,
}

impl ReqState {
    /// The request step: decides whether this request may use the cache at all.
    pub fn decide(
        policy: &TenantPolicy,
        tenant: &str,
        req: &RequestHeader,
        scheme: &str,
        host: &str,
        norm_path: &str,
    ) -> ReqState {
        if !policy.enabled {
            return ReqState::default();
        }
        let bypass = bypass_reason(policy, req, norm_path);
        ReqState {
            on: true,
            bypass,
            origin: format!("{scheme}://{}", host.to_ascii_lowercase()),
            tenant: tenant.to_string(),
            maintenance: None,
            counted: false,
        }
    }

    /// Whether the cache is to be enabled for this request.
    pub fn lookup(&self) -> bool {
        self.on && self.bypass.is_none()
    }
}

fn bypass_reason(policy: &TenantPolicy, req: &RequestHeader, path: &str) -> Option<&'static str> {
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        return Some("method");
    }
    if req.headers.contains_key(header::AUTHORIZATION) {
        return Some("authorization");
    }
    for v in req.headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else {
            // A cookie header we cannot read could be a session: never share it.
            return Some("cookie");
        };
        for pair in v.split(';') {
            let name = pair.split('=').next().unwrap_or("").trim();
            if policy.is_session_cookie(name) {
                return Some("session_cookie");
            }
        }
    }
    if policy.bypass.iter().any(|r| r.matches(path)) {
        return Some("path_rule");
    }
    None
}

/// Turns the cache on for a request (pingora's `request_cache_filter`).
pub fn enable(cache: &mut HttpCache, st: &ReqState) {
    let (Some(storage), Some(lock)) = (storage::global(), LOCK.get()) else {
        return;
    };
    if !st.lookup() {
        return;
    }
    cache.enable(storage, None, None, Some(*lock), None);
    cache.set_max_file_size_bytes(storage.max_object);
}

/// `path?query` with the query's parameters sorted (empty ones dropped), so `?b=2&a=1` and
/// `?a=1&b=2` are one object.
pub fn normalise_path_query(path: &str, query: Option<&str>) -> String {
    let mut out = String::with_capacity(path.len() + query.map_or(0, |q| q.len() + 1));
    out.push_str(if path.is_empty() { "/" } else { path });
    if let Some(q) = query {
        let mut parts: Vec<&str> = q.split('&').filter(|p| !p.is_empty()).collect();
        if !parts.is_empty() {
            parts.sort_unstable();
            out.push('?');
            out.push_str(&parts.join("&"));
        }
    }
    out
}

/// The normalised form of a URL given to a purge (`scheme://host/path?query`), as the cache
/// key writes it; `None` when it is not such a URL.
pub fn key_url_from(url: &str) -> Option<String> {
    let uri: http::Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_ascii_lowercase();
    let host = uri.host()?.to_ascii_lowercase();
    Some(format!(
        "{scheme}://{host}{}",
        normalise_path_query(uri.path(), uri.query())
    ))
}

/// The path of a key URL (`scheme://host/path?query` → `/path`).
pub fn path_of_key_url(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
    path.split('?').next().unwrap_or(path)
}

/// The cache key: tenant + scheme + host + path + normalised query (Vary is added by
/// pingora from [`variance`]). The tenant is also the user tag, for purges and accounting.
pub fn cache_key(st: &ReqState, req: &RequestHeader) -> CacheKey {
    let pq = normalise_path_query(req.uri.path(), req.uri.query());
    // Tenant ids cannot contain a newline, so the two parts cannot run into each other.
    let primary = format!("{}\n{}{}", st.tenant, st.origin, pq);
    let hash = pingora::cache::key::hash_key(&primary);
    let mut key = CacheKey::new(primary, st.tenant.clone());
    // pingora asks for the hash several times per request: compute it once.
    key.set_primary_bin_override(hash);
    key
}

fn no_default_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

/// Decides whether a response may be stored (pingora's `response_cache_filter`).
pub fn response_cacheable(
    policy: &TenantPolicy,
    req: &RequestHeader,
    resp: &ResponseHeader,
) -> RespCacheable {
    use RespCacheable::Uncacheable;
    // One citizen's cookie must never be handed to another.
    if resp.headers.contains_key(header::SET_COOKIE) {
        return Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    let status = resp.status.as_u16();
    if !matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 410) {
        return Uncacheable(NoCacheReason::Custom("status"));
    }
    if let Some(reason) = vary_unsupported(policy, resp) {
        return Uncacheable(NoCacheReason::Custom(reason));
    }
    let cc = CacheControl::from_resp_headers(resp);
    let defaults = CacheMetaDefaults::new(
        no_default_ttl,
        policy.stale_while_revalidate,
        policy.stale_if_error,
    );
    match resp_cacheable(cc.as_ref(), resp.clone(), false, &defaults) {
        RespCacheable::Cacheable(m) => RespCacheable::Cacheable(m),
        Uncacheable(r) => {
            // The origin said nothing: the tenant's defaults for static files and HTML.
            let silent = cc
                .as_ref()
                .is_none_or(|c| c.is_cacheable() == CcCacheable::Default)
                && !resp.headers.contains_key(header::EXPIRES);
            if !silent || status != 200 {
                return Uncacheable(r);
            }
            let ttl = heuristic_ttl(policy, req.uri.path(), resp);
            if ttl == 0 {
                return Uncacheable(r);
            }
            let now = SystemTime::now();
            let mut header = resp.clone();
            if let Some(c) = &cc {
                c.strip_private_headers(&mut header);
            }
            RespCacheable::Cacheable(CacheMeta::new(
                now + Duration::from_secs(ttl as u64),
                now,
                policy.stale_while_revalidate,
                policy.stale_if_error,
                header,
            ))
        }
    }
}

fn heuristic_ttl(policy: &TenantPolicy, path: &str, resp: &ResponseHeader) -> u32 {
    let last = path.rsplit('/').next().unwrap_or("");
    if let Some((_, ext)) = last.rsplit_once('.') {
        let ext = ext.to_ascii_lowercase();
        if policy.static_ext.contains(&ext) {
            return policy.static_ttl;
        }
    }
    let html = resp
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if html {
        policy.html_ttl
    } else {
        0
    }
}

fn vary_names(resp: &ResponseHeader) -> impl Iterator<Item = String> + '_ {
    resp.headers
        .get_all(header::VARY)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
}

/// A `Vary` the cache cannot honour safely (`*`, Cookie, or a header not configured).
fn vary_unsupported(policy: &TenantPolicy, resp: &ResponseHeader) -> Option<&'static str> {
    for name in vary_names(resp) {
        if name == "accept-encoding" || policy.vary.contains(&name) {
            continue;
        }
        return Some(match name.as_str() {
            "*" => "vary *",
            "cookie" | "authorization" => "vary cookie",
            _ => "vary header not configured",
        });
    }
    None
}

/// The variance of a request for a stored response (pingora's `cache_vary_filter`).
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let names: Vec<String> = vary_names(meta.response_header()).collect();
    if names.is_empty() {
        return None;
    }
    let mut vb = VarianceBuilder::new();
    for name in &names {
        let mut values: Vec<String> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect();
        // Token order and spacing do not change what the origin sends.
        values.sort_unstable();
        values.dedup();
        vb.add_owned_name_value(name.clone(), values.join(",").into_bytes());
    }
    vb.finalize()
}

/// Whether a stale copy may be served: while revalidating (when the stored object allows it)
/// and when the origin failed or answered 5xx (within the stale-if-error window, checked by
/// pingora). Never for a fault of the client's own connection.
pub fn should_serve_stale(error: Option<&pingora::Error>) -> bool {
    match error {
        None => true,
        Some(e) => e.esource() != &pingora::ErrorSource::Downstream,
    }
}

/// The outcome of a request for the status headers and counts.
fn outcome(st: &ReqState, cache: &HttpCache) -> &'static str {
    if st.bypass.is_some() {
        return "bypass";
    }
    match cache.phase() {
        CachePhase::Hit => "hit",
        CachePhase::Stale | CachePhase::StaleUpdating => "stale",
        CachePhase::Expired => "expired",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "revalidated",
        CachePhase::Miss => "miss",
        CachePhase::Bypass => "bypass",
        CachePhase::Disabled(_) => "uncacheable",
        _ => "miss",
    }
}

/// Adds `X-Cache` and `Cache-Status` (RFC 9211) to a response and counts the outcome.
pub fn status_headers(st: &mut ReqState, cache: &HttpCache, resp: &mut ResponseHeader) {
    if !st.on {
        return;
    }
    let o = outcome(st, cache);
    // Static names and values: this runs on every hit.
    let (x, cs) = match o {
        "hit" => ("HIT", "cong; hit"),
        "stale" => ("STALE", "cong; hit; fwd=stale"),
        "expired" => ("EXPIRED", "cong; fwd=stale; stored"),
        "revalidated" => ("REVALIDATED", "cong; fwd=stale; fwd-status=304"),
        "miss" => ("MISS", "cong; fwd=uri-miss; stored"),
        "bypass" => (
            "BYPASS",
            match st.bypass {
                Some("method") => "cong; fwd=method",
                Some("path_rule") => "cong; fwd=bypass; detail=path_rule",
                Some(_) => "cong; fwd=request; detail=private",
                None => "cong; fwd=bypass",
            },
        ),
        _ => ("MISS", "cong; fwd=uri-miss"),
    };
    let _ = resp.insert_header(
        http::HeaderName::from_static("x-cache"),
        http::HeaderValue::from_static(x),
    );
    let _ = resp.insert_header(
        http::HeaderName::from_static("cache-status"),
        http::HeaderValue::from_static(cs),
    );
    if !st.counted {
        st.counted = true;
        metrics::request(&st.tenant, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> TenantPolicy {
        let src = SourceFile {
            path: "t.toml".into(),
            text: String::new(),
        };
        let c: TenantCacheConfig = toml::from_str(
            "enabled = true\nhtml_ttl = \"5s\"\nbypass_paths = [\"/quantri/**\"]\nsession_cookies = [\"cms_login\"]",
        )
        .expect("valid");
        TenantPolicy::build(&src, &c).expect("valid policy")
    }

    fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build(method, path.as_bytes(), None).expect("request");
        for (k, v) in headers {
            r.insert_header(k.to_string(), *v).expect("header");
        }
        r
    }

    #[test]
    fn safety_bypasses() {
        let p = policy();
        assert_eq!(bypass_reason(&p, &req("GET", "/", &[]), "/"), None);
        assert_eq!(
            bypass_reason(&p, &req("POST", "/", &[]), "/"),
            Some("method")
        );
        assert_eq!(
            bypass_reason(&p, &req("GET", "/", &[("Authorization", "Basic x")]), "/"),
            Some("authorization")
        );
        assert_eq!(
            bypass_reason(
                &p,
                &req("GET", "/", &[("Cookie", "_ga=1; cms_login=abc")]),
                "/"
            ),
            Some("session_cookie")
        );
        assert_eq!(
            bypass_reason(
                &p,
                &req("GET", "/", &[("Cookie", "wordpress_logged_in_ab=1")]),
                "/"
            ),
            Some("session_cookie")
        );
        assert_eq!(
            bypass_reason(&p, &req("GET", "/", &[("Cookie", "_ga=1")]), "/"),
            None
        );
        assert_eq!(
            bypass_reason(&p, &req("GET", "/quantri/x", &[]), "/quantri/x"),
            Some("path_rule")
        );
        assert_eq!(
            bypass_reason(&p, &req("GET", "/quantrix", &[]), "/quantrix"),
            None
        );
    }

    #[test]
    fn set_cookie_and_private_never_stored() {
        let p = policy();
        let r = req("GET", "/a.css", &[]);
        let mut resp = ResponseHeader::build(200, None).expect("resp");
        resp.insert_header("Cache-Control", "max-age=60")
            .expect("h");
        assert!(response_cacheable(&p, &r, &resp).is_cacheable());
        resp.insert_header("Set-Cookie", "a=b").expect("h");
        assert!(!response_cacheable(&p, &r, &resp).is_cacheable());
        let mut resp = ResponseHeader::build(200, None).expect("resp");
        resp.insert_header("Cache-Control", "private, max-age=60")
            .expect("h");
        assert!(!response_cacheable(&p, &r, &resp).is_cacheable());
        // Silent origin: static extension gets the default TTL, HTML the micro-cache.
        let resp = ResponseHeader::build(200, None).expect("resp");
        assert!(response_cacheable(&p, &r, &resp).is_cacheable());
        let mut resp = ResponseHeader::build(200, None).expect("resp");
        resp.insert_header("Content-Type", "text/html").expect("h");
        assert!(response_cacheable(&p, &req("GET", "/tin", &[]), &resp).is_cacheable());
        resp.insert_header("Vary", "Cookie").expect("h");
        assert!(!response_cacheable(&p, &req("GET", "/tin", &[]), &resp).is_cacheable());
    }

    #[test]
    fn keys_and_urls() {
        assert_eq!(normalise_path_query("/a", Some("b=2&&a=1")), "/a?a=1&b=2");
        assert_eq!(normalise_path_query("/a", Some("")), "/a");
        assert_eq!(
            key_url_from("HTTP://Portal.gov.vn/x?b=1&a=2").as_deref(),
            Some("http://portal.gov.vn/x?a=2&b=1")
        );
        assert_eq!(path_of_key_url("https://h/x/y?z=1"), "/x/y");
        assert_eq!(path_of_key_url("https://h"), "/");
        let r = PathRule::parse("/a/*/b").expect("rule");
        assert!(r.matches("/a/x/b") && !r.matches("/a/x/c"));
        assert!(PathRule::parse("quantri").is_err());
    }
}
