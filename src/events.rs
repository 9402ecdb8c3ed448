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
        let mut s = format!("event={}", self.kind);
        if let Some(t) = &self.tenant {
            let _ = write!(s, " tenant={}", logfmt_value(t));
        }
        for (k, v) in &self.fields {
            let _ = write!(s, " {k}={}", logfmt_value(v));
        }
        s
    }
}

fn logfmt_value(v: &str) -> String {
    let plain = !v.is_empty()
        && v.chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
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
