//! Host and path routing: which tenant and which of its pools a request goes to.
//!
//! Owns host-name normalisation (case, port, trailing dot, IPv6 literals, punycode) and the
//! route table: exact names in one hash map (O(1)), wildcards in another keyed by the suffix
//! they cover, looked up by walking the request host's label suffixes from the longest. Path
//! routes inside a tenant are longest-prefix on segment boundaries. Knows nothing about
//! upstreams, sockets or HTTP beyond the host string and path it is handed.

use std::borrow::Cow;
use std::collections::HashMap;

/// Index of a tenant in the snapshot's tenant list.
pub type TenantIdx = u32;

/// What a request's Host header (or `:authority`) names, after normalisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKey<'a> {
    /// A DNS name: lower-case ASCII (punycode), no port, no trailing dot.
    Name(Cow<'a, str>),
    /// An IP literal (bare IPv4 or bracketed IPv6): routed to the default tenant.
    Ip,
    /// No host at all.
    Missing,
}

/// Why a host could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    #[error("invalid host name")]
    Invalid,
}

/// Normalises a request host: strips the port and a trailing dot, lower-cases, recognises IP
/// literals, converts non-ASCII names to punycode. Allocation-free for the common case of an
/// already lower-case ASCII host.
pub fn normalize_request_host(raw: &str) -> Result<HostKey<'_>, HostError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(HostKey::Missing);
    }
    if raw.starts_with('[') {
        // IPv6 literal, possibly with a port.
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let inner = &raw[1..end];
        let rest = &raw[end + 1..];
        if inner.parse::<std::net::Ipv6Addr>().is_err() || !(rest.is_empty() || valid_port(rest)) {
            return Err(HostError::Invalid);
        }
        return Ok(HostKey::Ip);
    }
    let host = match raw.rfind(':') {
        Some(i) => {
            if !valid_port(&raw[i..]) {
                return Err(HostError::Invalid);
            }
            &raw[..i]
        }
        None => raw,
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(HostError::Invalid);
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(HostKey::Ip);
    }
    let simple = host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if simple {
        if host.len() > 253 || host.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(HostError::Invalid);
        }
        return Ok(HostKey::Name(Cow::Borrowed(host)));
    }
    // Plain ASCII in upper case: lower-case it without the IDNA machinery (4x cheaper).
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        let lower = host.to_ascii_lowercase();
        if lower.len() > 253 || lower.split('.').any(|l| l.is_empty() || l.len() > 63) {
            return Err(HostError::Invalid);
        }
        return Ok(HostKey::Name(Cow::Owned(lower)));
    }
    let ascii = idna::domain_to_ascii(host).map_err(|_| HostError::Invalid)?;
    if ascii.is_empty()
        || ascii.len() > 253
        || !ascii.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
        })
        || ascii.split('.').any(|l| l.is_empty() || l.len() > 63)
    {
        return Err(HostError::Invalid);
    }
    Ok(HostKey::Name(Cow::Owned(ascii)))
}

fn valid_port(with_colon: &str) -> bool {
    let p = &with_colon[1..];
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

/// A host pattern from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix` (one or more labels in place of the `*`).
    Wildcard(String),
}

/// Normalises a configured host name or wildcard; non-ASCII names become punycode.
pub fn parse_host_pattern(raw: &str) -> Result<HostPattern, String> {
    let raw = raw.trim();
    let (wild, name) = match raw.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    if name.contains('*') {
        return Err(format!(
            "`{raw}`: a wildcard must be the whole first label, as in `*.example.gov.vn`"
        ));
    }
    if name.contains(':') || name.contains('/') || name.contains('[') {
        return Err(format!(
            "`{raw}`: a host name takes no port, path or IP literal"
        ));
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    let ascii =
        idna::domain_to_ascii(name).map_err(|_| format!("`{raw}` is not a valid host name"))?;
    if ascii.is_empty()
        || ascii.split('.').any(|l| l.is_empty() || l.len() > 63)
        || ascii.len() > 253
    {
        return Err(format!("`{raw}` is not a valid host name"));
    }
    if !ascii.bytes().all(|b| {
        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'_'
    }) {
        return Err(format!("`{raw}` is not a valid host name"));
    }
    if ascii.parse::<std::net::Ipv4Addr>().is_ok() {
        return Err(format!(
            "`{raw}` is an IP address: use `server.default_tenant` for bare-IP requests"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(ascii)
    } else {
        HostPattern::Exact(ascii)
    })
}

/// Host name → tenant. Built once per configuration and shared read-only.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    exact: HashMap<Box<str>, TenantIdx>,
    wildcard: HashMap<Box<str>, TenantIdx>,
    default: Option<TenantIdx>,
    /// Number of labels in the shortest wildcard suffix, to stop the label walk early.
    min_wild_labels: usize,
}

impl RouteTable {
    pub fn new() -> Self {
        RouteTable {
            min_wild_labels: usize::MAX,
            ..Default::default()
        }
    }

    /// Adds a pattern; returns the tenant that already owns it, if any.
    pub fn insert(&mut self, pattern: &HostPattern, tenant: TenantIdx) -> Result<(), TenantIdx> {
        let (map, name) = match pattern {
            HostPattern::Exact(n) => (&mut self.exact, n),
            HostPattern::Wildcard(n) => {
                self.min_wild_labels = self.min_wild_labels.min(n.split('.').count());
                (&mut self.wildcard, n)
            }
        };
        match map.get(name.as_str()) {
            Some(&owner) => Err(owner),
            None => {
                map.insert(name.as_str().into(), tenant);
                Ok(())
            }
        }
    }

    pub fn set_default(&mut self, tenant: Option<TenantIdx>) {
        self.default = tenant;
    }

    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tenant for a normalised host key.
    pub fn lookup(&self, key: &HostKey<'_>) -> Option<TenantIdx> {
        match key {
            HostKey::Name(name) => self.lookup_name(name),
            HostKey::Ip | HostKey::Missing => self.default,
        }
    }

    /// Exact match first, then the most specific wildcard.
    pub fn lookup_name(&self, name: &str) -> Option<TenantIdx> {
        if let Some(&t) = self.exact.get(name) {
            return Some(t);
        }
        if self.wildcard.is_empty() {
            return None;
        }
        let labels = name.split('.').count();
        let mut rest = name;
        let mut remaining = labels;
        // The `*` stands for at least one label, so the suffix has fewer labels than the name.
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            remaining -= 1;
            if remaining < self.min_wild_labels {
                break;
            }
            if let Some(&t) = self.wildcard.get(rest) {
                return Some(t);
            }
        }
        None
    }
}

/// Longest-prefix path routes of one tenant, checked on segment boundaries.
#[derive(Debug, Clone, Default)]
pub struct PathRoutes<T> {
    /// Sorted by prefix length, longest first.
    routes: Vec<(String, T)>,
}

impl<T> PathRoutes<T> {
    pub fn new(mut routes: Vec<(String, T)>) -> Self {
        for (p, _) in routes.iter_mut() {
            if p.len() > 1 && p.ends_with('/') {
                p.pop();
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        PathRoutes { routes }
    }

    /// The route whose prefix is the longest one matching `path`, with that prefix.
    pub fn lookup(&self, path: &str) -> Option<(&str, &T)> {
        self.routes
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(p, t)| (p.as_str(), t))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// `/sites/en` matches `/sites/en`, `/sites/en/`, `/sites/en/x`, `/sites/en?q`, not `/sites/english`.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> HostKey<'_> {
        HostKey::Name(Cow::Borrowed(s))
    }

    #[test]
    fn normalises_hosts() {
        assert_eq!(
            normalize_request_host("Example.GOV.vn:8080").unwrap(),
            name("example.gov.vn")
        );
        assert_eq!(
            normalize_request_host("example.gov.vn.").unwrap(),
            name("example.gov.vn")
        );
        assert_eq!(
            normalize_request_host("example.gov.vn.:443").unwrap(),
            name("example.gov.vn")
        );
        assert_eq!(normalize_request_host("[::1]:8080").unwrap(), HostKey::Ip);
        assert_eq!(
            normalize_request_host("[2001:db8::1]").unwrap(),
            HostKey::Ip
        );
        assert_eq!(normalize_request_host("127.0.0.1:80").unwrap(), HostKey::Ip);
        assert_eq!(normalize_request_host("").unwrap(), HostKey::Missing);
        assert_eq!(
            normalize_request_host("hạlong.gov.vn").unwrap(),
            HostKey::Name(Cow::Owned("xn--hlong-j11b.gov.vn".into()))
        );
        assert!(normalize_request_host("[::1").is_err());
        assert!(normalize_request_host("a..b").is_err());
        assert!(normalize_request_host("host:port").is_err());
        assert!(normalize_request_host("bad host").is_err());
    }

    #[test]
    fn patterns() {
        assert_eq!(
            parse_host_pattern("*.CamPha.quangninh.gov.vn").unwrap(),
            HostPattern::Wildcard("campha.quangninh.gov.vn".into())
        );
        assert_eq!(
            parse_host_pattern("Hạlong.gov.vn.").unwrap(),
            HostPattern::Exact("xn--hlong-j11b.gov.vn".into())
        );
        assert!(parse_host_pattern("a.*.gov.vn").is_err());
        assert!(parse_host_pattern("example.gov.vn:80").is_err());
        assert!(parse_host_pattern("10.0.0.1").is_err());
    }

    #[test]
    fn exact_then_most_specific_wildcard() {
        let mut t = RouteTable::new();
        t.insert(&HostPattern::Exact("quangninh.gov.vn".into()), 0)
            .unwrap();
        t.insert(&HostPattern::Wildcard("quangninh.gov.vn".into()), 1)
            .unwrap();
        t.insert(&HostPattern::Wildcard("campha.quangninh.gov.vn".into()), 2)
            .unwrap();
        t.insert(
            &HostPattern::Exact("camson.campha.quangninh.gov.vn".into()),
            3,
        )
        .unwrap();
        assert_eq!(t.lookup_name("quangninh.gov.vn"), Some(0));
        assert_eq!(t.lookup_name("stttt.quangninh.gov.vn"), Some(1));
        assert_eq!(t.lookup_name("x.campha.quangninh.gov.vn"), Some(2));
        assert_eq!(t.lookup_name("a.b.campha.quangninh.gov.vn"), Some(2));
        assert_eq!(t.lookup_name("camson.campha.quangninh.gov.vn"), Some(3));
        assert_eq!(t.lookup_name("campha.quangninh.gov.vn"), Some(1));
        assert_eq!(t.lookup_name("gov.vn"), None);
        assert_eq!(t.lookup_name("other.vn"), None);
        assert_eq!(
            t.insert(&HostPattern::Exact("quangninh.gov.vn".into()), 9),
            Err(0)
        );
    }

    #[test]
    fn default_for_ip_hosts() {
        let mut t = RouteTable::new();
        assert_eq!(t.lookup(&HostKey::Ip), None);
        t.set_default(Some(7));
        assert_eq!(t.lookup(&HostKey::Ip), Some(7));
        assert_eq!(t.lookup(&HostKey::Missing), Some(7));
        assert_eq!(t.lookup(&name("unknown.vn")), None);
    }

    #[test]
    fn path_prefixes() {
        let r = PathRoutes::new(vec![
            ("/sites/en".to_string(), 1),
            ("/sites".to_string(), 2),
            ("/sites/en/docs/".to_string(), 3),
        ]);
        assert_eq!(r.lookup("/sites/en").map(|x| *x.1), Some(1));
        assert_eq!(r.lookup("/sites/en/page").map(|x| *x.1), Some(1));
        assert_eq!(r.lookup("/sites/en?x=1").map(|x| *x.1), Some(1));
        assert_eq!(r.lookup("/sites/english").map(|x| *x.1), Some(2));
        assert_eq!(r.lookup("/sites/en/docs/a").map(|x| *x.1), Some(3));
        assert_eq!(r.lookup("/other"), None);
    }
}
