//! Wire formats: JSON lines with ECS field names, RFC 5424 syslog with structured data, and
//! ArcSight CEF. This module owns every escaping rule, so no field value (header, path, error
//! text) can start a new line, a new field or a new record in any format; Vietnamese text is
//! kept as UTF-8. It turns a `Record` into bytes and nothing else: no framing (that is the
//! sink's), no I/O.

use super::event::{event_category, AccessEvent, Body, Class, Record};
use crate::config::SinkFormat;
use crate::events::Event;
use std::fmt::Write;

/// Private enterprise number used in the structured-data id (`cong@32473`). 32473 is the
/// number RFC 5612 reserves for documentation; a province with its own number can change it
/// here.
pub const SD_ID: &str = "cong@32473";

/// What every format needs besides the record.
#[derive(Debug, Clone)]
pub struct Context {
    /// Gateway name (syslog HOSTNAME, `observer.name`, CEF `dvchost`), printable ASCII.
    pub host: String,
    /// Syslog facility number (16 = local0).
    pub facility: u8,
    /// Offset of written timestamps from UTC, in minutes.
    pub offset_min: i32,
    pub pid: u32,
}

impl Context {
    pub fn new(host: &str, facility: u8, offset_min: i32) -> Context {
        let host: String = host
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(255)
            .collect();
        Context {
            host: if host.is_empty() { "-".into() } else { host },
            facility,
            offset_min,
            pid: std::process::id(),
        }
    }
}

/// The record as one line in `fmt`, without a trailing newline. RFC 5424 is the whole syslog
/// message; JSON and CEF are the bare payload (sinks that speak syslog wrap them with
/// `syslog_header`).
pub fn encode(fmt: SinkFormat, r: &Record, cx: &Context) -> String {
    match fmt {
        SinkFormat::Json => json(r, cx),
        SinkFormat::Rfc5424 => rfc5424(r, cx),
        SinkFormat::Cef => cef(r, cx),
    }
}

/// The message as sent to a syslog collector: RFC 5424 as is, JSON and CEF as the MSG of an
/// RFC 5424 header without structured data.
pub fn encode_syslog(fmt: SinkFormat, r: &Record, cx: &Context) -> String {
    match fmt {
        SinkFormat::Rfc5424 => rfc5424(r, cx),
        _ => {
            let mut s = syslog_header(r, cx);
            s.push_str(" - ");
            s.push_str(&encode(fmt, r, cx));
            s
        }
    }
}

pub use crate::calendar::{civil_from_days, days_from_civil};

// ---------------------------------------------------------------------------------------------
// Time

/// `2026-11-22T14:03:05.123+07:00` (or `Z` for offset 0).
pub fn timestamp(ms: i64, offset_min: i32) -> String {
    let local = ms + offset_min as i64 * 60_000;
    let days = local.div_euclid(86_400_000);
    let in_day = local.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    let zone = if offset_min == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_min < 0 { '-' } else { '+' };
        let a = offset_min.abs();
        format!("{sign}{:02}:{:02}", a / 60, a % 60)
    };
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}{zone}")
}

/// The calendar date (local to the offset) of a time, as `YYYY-MM-DD`.
pub fn date(ms: i64, offset_min: i32) -> (i64, u32, u32) {
    civil_from_days((ms + offset_min as i64 * 60_000).div_euclid(86_400_000))
}

// ---------------------------------------------------------------------------------------------
// JSON

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Line and paragraph separators end lines in some readers.
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

struct Obj(String);

impl Obj {
    fn new() -> Obj {
        Obj(String::with_capacity(768))
    }
    fn key(&mut self, k: &str) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        json_str(&mut self.0, k);
        self.0.push(':');
    }
    fn s(&mut self, k: &str, v: &str) {
        self.key(k);
        json_str(&mut self.0, v);
    }
    fn os(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.s(k, v);
        }
    }
    fn n(&mut self, k: &str, v: impl std::fmt::Display) {
        self.key(k);
        let _ = write!(self.0, "{v}");
    }
    fn end(mut self) -> String {
        if self.0.is_empty() {
            self.0.push('{');
        }
        self.0.push('}');
        self.0
    }
}

fn level_name(sev: u8) -> &'static str {
    match sev {
        0 => "emergency",
        1 => "alert",
        2 => "critical",
        3 => "error",
        4 => "warning",
        5 => "notice",
        6 => "info",
        _ => "debug",
    }
}

fn common_json(o: &mut Obj, r: &Record, cx: &Context) {
    o.s("@timestamp", &timestamp(r.time_ms, cx.offset_min));
    o.n("event.sequence", r.seq);
    o.s("event.dataset", r.dataset());
    o.s(
        "event.kind",
        if r.class() == Class::Security {
            "alert"
        } else {
            "event"
        },
    );
    o.s("event.action", r.action());
    o.n("event.severity", r.syslog_severity());
    o.s("log.level", level_name(r.syslog_severity()));
    o.s("observer.name", &cx.host);
    o.s("observer.product", "cong");
    o.s("observer.type", "proxy");
}

fn json(r: &Record, cx: &Context) -> String {
    let mut o = Obj::new();
    common_json(&mut o, r, cx);
    match &r.body {
        Body::Access(a) => access_json(&mut o, a),
        Body::Event(e) => event_json(&mut o, e),
    }
    o.end()
}

fn access_json(o: &mut Obj, a: &AccessEvent) {
    o.s("event.category", "web");
    o.s(
        "event.outcome",
        if a.status > 0 && a.status < 400 {
            "success"
        } else {
            "failure"
        },
    );
    o.n("event.duration", a.duration_us * 1000);
    o.s("organization.id", &a.tenant);
    o.s("url.domain", &a.host);
    o.os("tls.client.server_name", a.sni.as_deref());
    if let Some(ip) = a.client_ip {
        o.s("source.ip", &ip.to_string());
        o.s("network.type", if ip.is_ipv4() { "ipv4" } else { "ipv6" });
    }
    if let Some(p) = a.client_port {
        o.n("source.port", p);
    }
    o.s("source.geo.country_iso_code", &a.country);
    o.s("http.request.method", &a.method);
    o.s("url.path", &a.path);
    o.os("url.query", a.query.as_deref());
    o.n("http.response.status_code", a.status);
    o.n("http.request.bytes", a.bytes_in);
    o.n("http.response.bytes", a.bytes_out);
    o.s("http.version", a.http_version);
    o.os("user_agent.original", a.user_agent.as_deref());
    o.os("http.request.referrer", a.referer.as_deref());
    o.s("http.request.id", &a.request_id);
    o.os("tls.version", a.tls_version.as_deref());
    o.os("tls.cipher", a.tls_cipher.as_deref());
    o.os("cong.upstream.address", a.upstream.as_deref());
    if let Some(ms) = a.upstream_ms {
        o.n("cong.upstream.time_ms", ms);
    }
    o.n("cong.upstream.tries", a.tries);
    o.os("cong.cache.status", a.cache.as_deref());
    if let Some(s) = a.waf_score {
        o.n("cong.waf.score", s);
    }
    if !a.waf_rules.is_empty() {
        o.key("rule.id");
        let list: Vec<String> = a.waf_rules.iter().map(|r| format!("\"{r}\"")).collect();
        o.0.push('[');
        o.0.push_str(&list.join(","));
        o.0.push(']');
    }
    o.os("cong.ratelimit.verdict", a.ratelimit.as_deref());
    o.os("error.type", a.error.as_deref());
}

/// Field names with a dot are ECS names and kept; plain names go under `cong.`.
fn event_field_name(k: &str) -> String {
    if k.contains('.') {
        k.to_string()
    } else {
        format!("cong.{k}")
    }
}

fn event_json(o: &mut Obj, e: &Event) {
    o.s("event.category", event_category(e.kind));
    o.os("organization.id", e.tenant.as_deref());
    o.s("message", &e.to_logfmt());
    for (k, v) in &e.fields {
        o.s(&event_field_name(k), v);
    }
}

// ---------------------------------------------------------------------------------------------
// RFC 5424

/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID` (no structured data, no message).
pub fn syslog_header(r: &Record, cx: &Context) -> String {
    let pri = cx.facility as u32 * 8 + r.syslog_severity() as u32;
    let msgid: String = r
        .action()
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(32)
        .collect();
    format!(
        "<{pri}>1 {} {} cong {} {}",
        timestamp(r.time_ms, cx.offset_min),
        cx.host,
        cx.pid,
        if msgid.is_empty() { "-" } else { &msgid }
    )
}

/// PARAM-VALUE escaping (RFC 5424 6.3.3: `"`, `\` and `]`), plus control characters written
/// as visible `\n`, `\r`, `\t`, `\xHH` so a value can never end the line.
fn sd_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => push_control(out, c),
            c => out.push(c),
        }
    }
}

fn push_control(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
    }
}

/// SD-NAME: printable ASCII except `=`, space, `]`, `"`, at most 32.
fn sd_name(k: &str) -> String {
    k.chars()
        .filter(|c| c.is_ascii_graphic() && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect()
}

struct Sd(String);

impl Sd {
    fn p(&mut self, k: &str, v: &str) {
        let name = sd_name(k);
        if name.is_empty() {
            return;
        }
        self.0.push(' ');
        self.0.push_str(&name);
        self.0.push_str("=\"");
        sd_value(&mut self.0, v);
        self.0.push('"');
    }
    fn op(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.p(k, v);
        }
    }
}

/// Free text with control characters made visible.
fn msg_text(out: &mut String, v: &str) {
    for c in v.chars() {
        if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            push_control(out, c);
        } else {
            out.push(c);
        }
    }
}

fn rfc5424(r: &Record, cx: &Context) -> String {
    let mut s = syslog_header(r, cx);
    let mut sd = Sd(String::with_capacity(512));
    sd.0.push(' ');
    sd.0.push('[');
    sd.0.push_str(SD_ID);
    sd.p("seq", &r.seq.to_string());
    sd.p("class", r.class().as_str());
    let mut msg = String::new();
    match &r.body {
        Body::Access(a) => {
            sd.p("tenant", &a.tenant);
            sd.p("host", &a.host);
            sd.op("sni", a.sni.as_deref());
            if let Some(ip) = a.client_ip {
                sd.p("src", &ip.to_string());
            }
            if let Some(p) = a.client_port {
                sd.p("spt", &p.to_string());
            }
            sd.p("country", &a.country);
            sd.p("method", &a.method);
            sd.p("path", &a.path);
            sd.op("query", a.query.as_deref());
            sd.p("status", &a.status.to_string());
            sd.p("in", &a.bytes_in.to_string());
            sd.p("out", &a.bytes_out.to_string());
            sd.p("dur_us", &a.duration_us.to_string());
            sd.op("upstream", a.upstream.as_deref());
            if let Some(ms) = a.upstream_ms {
                sd.p("upstream_ms", &ms.to_string());
            }
            sd.op("cache", a.cache.as_deref());
            sd.op("tls", a.tls_version.as_deref());
            sd.op("cipher", a.tls_cipher.as_deref());
            sd.p("http", a.http_version);
            sd.op("ua", a.user_agent.as_deref());
            sd.op("referer", a.referer.as_deref());
            sd.p("rid", &a.request_id);
            if let Some(w) = a.waf_score {
                sd.p("waf_score", &w.to_string());
            }
            if !a.waf_rules.is_empty() {
                let rules: Vec<String> = a.waf_rules.iter().map(u32::to_string).collect();
                sd.p("waf_rules", &rules.join(","));
            }
            sd.op("ratelimit", a.ratelimit.as_deref());
            sd.op("error", a.error.as_deref());
            msg_text(
                &mut msg,
                &format!("{} {}{} {}", a.method, a.host, a.path, a.status),
            );
        }
        Body::Event(e) => {
            sd.op("tenant", e.tenant.as_deref());
            sd.p("category", event_category(e.kind));
            for (k, v) in &e.fields {
                sd.p(k, v);
            }
            msg_text(&mut msg, &e.to_logfmt());
        }
    }
    sd.0.push(']');
    s.push_str(&sd.0);
    // RFC 5424 6.4: a UTF-8 MSG starts with the byte order mark.
    s.push_str(" \u{feff}");
    s.push_str(&msg);
    s
}

// ---------------------------------------------------------------------------------------------
// CEF

fn cef_header(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' | '|' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
}

struct Ext(String);

impl Ext {
    /// Extension values escape `\`, `=` and line breaks (CEF 0 rules); other control
    /// characters become spaces.
    fn p(&mut self, k: &str, v: &str) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(k);
        self.0.push('=');
        for c in v.chars() {
            match c {
                '\\' | '=' => {
                    self.0.push('\\');
                    self.0.push(c);
                }
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                c if c.is_control() || c == '\u{2028}' || c == '\u{2029}' => self.0.push(' '),
                c => self.0.push(c),
            }
        }
    }
    fn op(&mut self, k: &str, v: Option<&str>) {
        if let Some(v) = v {
            self.p(k, v);
        }
    }
}

fn cef_severity(syslog: u8) -> u8 {
    match syslog {
        0..=2 => 10,
        3 => 8,
        4 => 6,
        5 => 4,
        _ => 2,
    }
}

fn cef(r: &Record, cx: &Context) -> String {
    let mut s = String::with_capacity(768);
    s.push_str("CEF:0|cong|cong|");
    cef_header(&mut s, env!("CARGO_PKG_VERSION"));
    s.push('|');
    cef_header(&mut s, r.action());
    s.push('|');
    let name = match &r.body {
        Body::Access(_) => "HTTP request".to_string(),
        Body::Event(e) => e.kind.replace('_', " "),
    };
    cef_header(&mut s, &name);
    let _ = write!(s, "|{}|", cef_severity(r.syslog_severity()));
    let mut x = Ext(String::with_capacity(512));
    x.p("rt", &r.time_ms.to_string());
    x.p("dvchost", &cx.host);
    x.p("cn1Label", "sequence");
    x.p("cn1", &r.seq.to_string());
    x.p("cat", r.dataset());
    match &r.body {
        Body::Access(a) => {
            x.p("act", "access");
            x.p("cs1Label", "tenant");
            x.p("cs1", &a.tenant);
            if let Some(ip) = a.client_ip {
                x.p("src", &ip.to_string());
            }
            if let Some(p) = a.client_port {
                x.p("spt", &p.to_string());
            }
            x.p("dhost", &a.host);
            x.p("requestMethod", &a.method);
            let mut url = a.path.clone();
            if let Some(q) = &a.query {
                url.push('?');
                url.push_str(q);
            }
            x.p("request", &url);
            x.op("requestClientApplication", a.user_agent.as_deref());
            x.op("requestContext", a.referer.as_deref());
            x.p("cn2Label", "status");
            x.p("cn2", &a.status.to_string());
            x.p("cn3Label", "durationMs");
            x.p("cn3", &(a.duration_us / 1000).to_string());
            x.p("in", &a.bytes_in.to_string());
            x.p("out", &a.bytes_out.to_string());
            x.p("app", &format!("HTTP/{}", a.http_version));
            x.p("externalId", &a.request_id);
            x.p(
                "outcome",
                if a.status > 0 && a.status < 400 {
                    "success"
                } else {
                    "failure"
                },
            );
            x.p("cs2Label", "upstream");
            x.p("cs2", a.upstream.as_deref().unwrap_or("-"));
            x.p("cs3Label", "country");
            x.p("cs3", &a.country);
            if a.tls_version.is_some() {
                x.p("cs4Label", "tls");
                x.p(
                    "cs4",
                    &format!(
                        "{} {}",
                        a.tls_version.as_deref().unwrap_or(""),
                        a.tls_cipher.as_deref().unwrap_or("")
                    ),
                );
            }
            if !a.waf_rules.is_empty() {
                let rules: Vec<String> = a.waf_rules.iter().map(u32::to_string).collect();
                x.p("cs5Label", "wafRules");
                x.p("cs5", &rules.join(","));
            }
            x.op("reason", a.error.as_deref());
        }
        Body::Event(e) => {
            x.p("act", e.kind);
            if let Some(t) = &e.tenant {
                x.p("cs1Label", "tenant");
                x.p("cs1", t);
            }
            x.op("src", e.get("source.ip"));
            x.p("msg", &e.to_logfmt());
        }
    }
    s.push_str(&x.0);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Severity;

    fn access() -> Record {
        let mut r = Record::new(Body::Access(Box::new(AccessEvent {
            tenant: "quangninh".into(),
            host: "quangninh.gov.vn".into(),
            client_ip: Some("203.0.113.9".parse().unwrap()),
            client_port: Some(51000),
            country: "--".into(),
            method: "GET".into(),
            path: "/tin-tức".into(),
            query: Some("q=Hạ Long".into()),
            status: 200,
            http_version: "1.1",
            user_agent: Some("evil\nCEF:0|x|y=z]\"\\".into()),
            request_id: "r1".into(),
            ..Default::default()
        })));
        r.seq = 7;
        r.time_ms = 1_795_000_000_123;
        r
    }

    fn cx() -> Context {
        Context::new("gw1", 16, 420)
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(1_795_000_000_123, 420),
            "2026-11-18T18:06:40.123+07:00"
        );
        assert_eq!(days_from_civil(2026, 11, 18), 20_775);
        assert_eq!(civil_from_days(20_775), (2026, 11, 18));
    }

    #[test]
    fn json_is_one_line_and_parses() {
        let j = encode(SinkFormat::Json, &access(), &cx());
        assert!(!j.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&j).unwrap();
        assert_eq!(v["event.sequence"], 7);
        assert_eq!(v["url.path"], "/tin-tức");
        assert_eq!(v["user_agent.original"], "evil\nCEF:0|x|y=z]\"\\");
    }

    #[test]
    fn rfc5424_escapes() {
        let s = encode(SinkFormat::Rfc5424, &access(), &cx());
        assert!(s.starts_with("<134>1 2026-11-18T18:06:40.123+07:00 gw1 cong "));
        assert!(!s.contains('\n'));
        assert!(s.contains(r#" ua="evil\nCEF:0|x|y=z\]\"\\""#), "{s}");
        assert!(s.contains("path=\"/tin-tức\""));
        assert!(s.contains("\u{feff}GET quangninh.gov.vn/tin-tức 200"));
    }

    #[test]
    fn cef_escapes() {
        let s = encode(SinkFormat::Cef, &access(), &cx());
        assert!(s.starts_with("CEF:0|cong|cong|"));
        assert!(!s.contains('\n'));
        assert!(
            s.contains(r"requestClientApplication=evil\nCEF:0|x|y\=z]"),
            "{s}"
        );
        let e = Record::new(Body::Event(
            Event::new("waf_block", Severity::Warning).field("rule", "a|b"),
        ));
        let s = encode(SinkFormat::Cef, &e, &cx());
        assert!(s.contains("|waf_block|waf block|6|"), "{s}");
        assert!(s.contains(r"msg=event\=waf_block rule\=a|b"), "{s}");
    }
}
