//! The one event model shipped to the SOC: an access event per request and the security/ops
//! events of `crate::events`, each wrapped in a `Record` with its time and sequence number.
//! This module owns the fields, their ECS names and their length caps; it knows nothing about
//! wire formats (`format`) or destinations (`sink`), and must not do I/O.

use crate::events::{Event, Severity};
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

/// Longest path, query, user agent and referer kept; longer values are cut on a character
/// boundary and marked with `…`, so one request cannot produce a giant log line.
pub const MAX_PATH: usize = 2048;
pub const MAX_QUERY: usize = 1024;
pub const MAX_HEADER: usize = 512;

/// One access event: what the gateway saw of one request.
#[derive(Debug, Clone, Default)]
pub struct AccessEvent {
    pub tenant: String,
    pub host: String,
    /// SNI of a TLS connection; None on plain listeners.
    pub sni: Option<String>,
    pub client_ip: Option<IpAddr>,
    pub client_port: Option<u16>,
    /// ISO country code; `--` until GeoIP exists.
    pub country: String,
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration_us: u64,
    pub upstream: Option<String>,
    /// Time from choosing the backend to its response header.
    pub upstream_ms: Option<u64>,
    pub tries: u32,
    pub cache: Option<String>,
    pub tls_version: Option<String>,
    pub tls_cipher: Option<String>,
    /// `1.0`, `1.1`, `2`.
    pub http_version: &'static str,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    pub request_id: String,
    pub waf_score: Option<i32>,
    pub waf_rules: Vec<u32>,
    /// Rate-limit or ban verdict (`limited`, `banned`), when one applied.
    pub ratelimit: Option<String>,
    /// Why the request failed, when it did (pingora error type).
    pub error: Option<String>,
}

/// Which stream an event belongs to; sinks filter on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Access,
    Security,
    Ops,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Access => "access",
            Class::Security => "security",
            Class::Ops => "ops",
        }
    }
    pub fn parse(s: &str) -> Option<Class> {
        match s {
            "access" => Some(Class::Access),
            "security" => Some(Class::Security),
            "ops" => Some(Class::Ops),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Body {
    Access(Box<AccessEvent>),
    Event(Event),
}

/// An event as shipped: body, creation time and the gateway-wide sequence number.
#[derive(Debug, Clone)]
pub struct Record {
    /// Assigned by the dispatcher in queue order; 0 until then.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub time_ms: i64,
    pub body: Body,
}

impl Record {
    pub fn new(body: Body) -> Record {
        let time_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Record {
            seq: 0,
            time_ms,
            body,
        }
    }

    pub fn class(&self) -> Class {
        match &self.body {
            Body::Access(_) => Class::Access,
            Body::Event(e) => event_class(e.kind),
        }
    }

    /// Syslog severity (0 emergency … 7 debug).
    pub fn syslog_severity(&self) -> u8 {
        match &self.body {
            Body::Access(a) => match a.status {
                500.. => 4,
                400..=499 => 5,
                _ => 6,
            },
            Body::Event(e) => match e.severity {
                Severity::Critical => 2,
                Severity::Error => 3,
                Severity::Warning => 4,
                Severity::Notice => 5,
                Severity::Info => 6,
            },
        }
    }

    /// `access` or the event kind (`backend_down`, `waf_block`…).
    pub fn action(&self) -> &str {
        match &self.body {
            Body::Access(_) => "access",
            Body::Event(e) => e.kind,
        }
    }

    /// `cong.access`, `cong.security` or `cong.ops` (ECS `event.dataset`).
    pub fn dataset(&self) -> &'static str {
        match self.class() {
            Class::Access => "cong.access",
            Class::Security => "cong.security",
            Class::Ops => "cong.ops",
        }
    }
}

/// Security events are the ones the SOC acts on: attacks, denials, bans, certificate trouble,
/// administration, and the loss of log events itself. Everything else is operations.
pub fn event_class(kind: &str) -> Class {
    const SECURITY_PREFIXES: &[&str] = &["waf_", "deny", "rate_limit", "ban", "acme_", "cert_"];
    const SECURITY: &[&str] = &["admin_action", "log_events_dropped", "too_many_requests"];
    if SECURITY.contains(&kind) || SECURITY_PREFIXES.iter().any(|p| kind.starts_with(p)) {
        Class::Security
    } else {
        Class::Ops
    }
}

/// ECS `event.category` of an event kind.
pub fn event_category(kind: &str) -> &'static str {
    if kind.starts_with("waf_") || kind.starts_with("deny") {
        "intrusion_detection"
    } else if kind.starts_with("rate_limit")
        || kind.starts_with("ban")
        || kind == "too_many_requests"
    {
        "network"
    } else if kind.starts_with("acme_") || kind.starts_with("cert_") {
        "configuration"
    } else if kind == "admin_action" {
        "iam"
    } else {
        "host"
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut with `…`.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl AccessEvent {
    /// `rid=… tenant=… client=…` line kept on standard error for operators (same layout as
    /// before the SOC pipeline existed).
    pub fn to_logline(&self) -> String {
        let mut uri = self.path.clone();
        if let Some(q) = &self.query {
            uri.push('?');
            uri.push_str(q);
        }
        let mut s = format!(
            "rid={} tenant={} client={} country={} host={} sni={} method={} uri={} proto={} status={} bytes={} ms={} upstream={} tries={}",
            self.request_id,
            self.tenant,
            self.client_ip.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
            self.country,
            if self.host.is_empty() { "-" } else { &self.host },
            self.sni.as_deref().unwrap_or("-"),
            self.method,
            uri.escape_debug(),
            if self.http_version == "2" { "h2" } else { "http/1.1" },
            self.status,
            self.bytes_out,
            self.duration_us / 1000,
            self.upstream.as_deref().unwrap_or("-"),
            self.tries,
        );
        if let Some(e) = &self.error {
            s.push_str(&format!(" error=\"{}\"", e.escape_debug()));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_keeps_whole_characters() {
        assert_eq!(cap("abc", 10), "abc");
        let s = "Quảng Ninh Quảng Ninh";
        let c = cap(s, 10);
        assert!(c.len() <= 10, "{c}");
        assert!(c.ends_with('…'));
    }

    #[test]
    fn classes() {
        assert_eq!(event_class("waf_block"), Class::Security);
        assert_eq!(event_class("log_events_dropped"), Class::Security);
        assert_eq!(event_class("backend_down"), Class::Ops);
    }
}
