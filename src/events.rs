//! The gateway's event stream: every security or operations fact worth telling an operator or
//! the SOC (backend down/up, DNS failures, configuration changes, certificate and WAF events…)
//! is one `Event` handed to `emit`. Producers only build events; where they go (a log line on
//! standard error, and the SOC pipeline in `crate::soc` when configured) is decided here,
//! never by the producer. `emit` must not block. Field names with a dot are taken as Elastic
//! Common Schema names (`source.ip`, `rule.id`); plain names are shipped as `cong.NAME`.

use std::fmt::Write;

/// How bad it is, in syslog terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Notice,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        }
    }
}

/// One event: a kind (`backend_down`), a severity, the tenant it concerns, and named fields.
#[derive(Debug, Clone)]
pub struct Event {
    pub kind: &'static str,
    pub severity: Severity,
    pub tenant: Option<String>,
    pub fields: Vec<(&'static str, String)>,
}

impl Event {
    pub fn new(kind: &'static str, severity: Severity) -> Self {
        Event {
            kind,
            severity,
            tenant: None,
            fields: Vec::new(),
        }
    }

    pub fn tenant(mut self, t: impl Into<String>) -> Self {
        self.tenant = Some(t.into());
        self
    }

    pub fn field(mut self, name: &'static str, value: impl ToString) -> Self {
        self.fields.push((name, value.to_string()));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `event=KIND tenant=T key=value key="value with spaces"`, with quotes and control
    /// characters escaped so a field cannot forge another line or field.
    pub fn to_logfmt(&self) -> String {
        // One buffer, no formatting machinery: a WAF refusal logs a dozen of these lines,
        // with rule messages and matched data, on the request path.
        let len = self.tenant.as_ref().map_or(0, |t| t.len() + 10)
            + self
                .fields
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>();
        let mut s = String::with_capacity(self.kind.len() + 6 + len);
        s.push_str("event=");
        s.push_str(self.kind);
        if let Some(t) = &self.tenant {
            s.push_str(" tenant=");
            push_logfmt_value(&mut s, t);
        }
        for (k, v) in &self.fields {
            s.push(' ');
            s.push_str(k);
            s.push('=');
            push_logfmt_value(&mut s, v);
        }
        s
    }
}

/// Whether `v` goes out unquoted: not empty, no white space, control character, quote,
/// `=` or backslash.
fn logfmt_plain(v: &str) -> bool {
    let ascii_ok = |b: u8| b > b' ' && b != 0x7f && b != b'"' && b != b'=' && b != b'\\';
    !v.is_empty()
        && v.bytes().all(|b| b >= 0x80 || ascii_ok(b))
        && (v.is_ascii()
            || v.chars()
                .all(|c| c.is_ascii() || !(c.is_whitespace() || c.is_control())))
}

/// Appends `v` as a logfmt value: as it is when plain, else quoted with `"`, `\\`, line breaks
/// and other control characters escaped.
fn push_logfmt_value(out: &mut String, v: &str) {
    if logfmt_plain(v) {
        out.push_str(v);
        return;
    }
    out.push('"');
    let mut rest = v;
    // Bytes that may need an escape: quote, backslash, ASCII controls, and 0xC2, which leads
    // the C1 controls (U+0080 to U+009F) in UTF-8.
    while let Some(i) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20 || b == 0x7f || b == 0xc2)
    {
        out.push_str(&rest[..i]);
        let Some(c) = rest[i..].chars().next() else {
            break;
        };
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
        rest = &rest[i + c.len_utf8()..];
    }
    out.push_str(rest);
    out.push('"');
}

/// Hands an event to the gateway's outputs.
pub fn emit(ev: Event) {
    crate::metrics::get()
        .events
        .with_label_values(&[ev.kind, ev.severity.as_str()])
        .inc();
    let level = match ev.severity {
        Severity::Critical | Severity::Error => log::Level::Error,
        Severity::Warning => log::Level::Warn,
        Severity::Notice | Severity::Info => log::Level::Info,
    };
    log::log!(target: "event", level, "{}", ev.to_logfmt());
    crate::soc::submit_event(ev);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The escaping as first written, one char at a time: the fast path must agree with it.
    fn reference(v: &str) -> String {
        let plain = !v.is_empty()
            && v.chars().all(|c| {
                !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\'
            });
        if plain {
            return v.to_string();
        }
        let mut out = String::from("\"");
        for c in v.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn logfmt_values_escape_as_char_by_char() {
        let cases = [
            "",
            "plain",
            "a=b",
            "two words",
            "tab\there",
            "quote\"d",
            "back\\slash",
            "nul\0x",
            "del\u{7f}",
            "c1\u{85}next\u{9f}",
            "nbsp\u{a0}x",
            "Nguyễn Văn Â",
            "Cán bộ, thủ tục",
            "line\u{2028}sep",
            "ideo\u{3000}space",
            "\u{c2}\u{a9} copyright",
            "<script>alert(\"x\")</script>\r\nevent=forged",
        ];
        for v in cases {
            let mut got = String::new();
            push_logfmt_value(&mut got, v);
            assert_eq!(got, reference(v), "{v:?}");
        }
    }

    #[test]
    fn logfmt_escapes_injection() {
        let e = Event::new("backend_down", Severity::Warning)
            .tenant("quangninh")
            .field("addr", "10.0.0.1:80")
            .field("cause", "status 503\nevent=forged x=\"y\"");
        assert_eq!(
            e.to_logfmt(),
            "event=backend_down tenant=quangninh addr=10.0.0.1:80 cause=\"status 503\\nevent=forged x=\\\"y\\\"\""
        );
        assert_eq!(e.get("addr"), Some("10.0.0.1:80"));
    }
}
