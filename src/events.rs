//! The gateway's event stream: every security or operations fact worth telling an operator or
//! the SOC (backend down/up, DNS failures, configuration changes, certificate and WAF events…)
//! is one `Event` handed to `emit`. Producers only build events; where they go (a log line on
//! standard error, and the SOC pipeline in `crate::soc` when configured) is decided here,
//! never by the producer. `emit` must not block. Field names with a dot are taken as Elastic
//! Common Schema names (`source.ip`, `rule.id`); plain names are shipped as `cong.NAME`.

use std::cell::RefCell;
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

/// What a byte asks of a logfmt value: `QUOTE` (white space, `=`) puts it in quotes,
/// `ESCAPE` (quote, backslash, ASCII controls) also escapes the byte, `WIDE` starts a
/// multi-byte character, checked as a character; `C1` marks 0xC2, which leads the C1 controls
/// (U+0080 to U+009F) in UTF-8. One table look-up a byte: a WAF refusal logs a line per rule
/// match, with the matched data, on the request path.
const QUOTE: u8 = 1;
const ESCAPE: u8 = 2;
const WIDE: u8 = 4;
const C1: u8 = 8;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = if b == 0xc2 {
            WIDE | C1
        } else if b >= 0x80 {
            WIDE
        } else if b < 0x20 || b == 0x7f || b == b'"' as usize || b == b'\\' as usize {
            QUOTE | ESCAPE
        } else if b == b' ' as usize || b == b'=' as usize {
            QUOTE
        } else {
            0
        };
        b += 1;
    }
    t
};

/// The classes of `v`'s bytes, or-ed.
fn classes(v: &str) -> u8 {
    v.bytes().fold(0, |m, b| m | CLASS[b as usize])
}

/// Whether `v` (with byte classes `m`) goes out unquoted: not empty, no white space, control
/// character, quote, `=` or backslash.
fn logfmt_plain(v: &str, m: u8) -> bool {
    !v.is_empty()
        && m & QUOTE == 0
        && (m & WIDE == 0
            || v.chars()
                .all(|c| c.is_ascii() || !(c.is_whitespace() || c.is_control())))
}

/// Appends `v` as a logfmt value: as it is when plain, else quoted with `"`, `\\`, line breaks
/// and other control characters escaped.
fn push_logfmt_value(out: &mut String, v: &str) {
    let m = classes(v);
    if logfmt_plain(v, m) {
        out.push_str(v);
        return;
    }
    out.push('"');
    let mut rest = v;
    // Bytes that may need an escape (none in most values: no search for them then).
    let escapes = |b: u8| CLASS[b as usize] & (ESCAPE | C1) != 0;
    if m & (ESCAPE | C1) != 0 {
        while let Some(i) = rest.bytes().position(escapes) {
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
    }
    out.push_str(rest);
    out.push('"');
}

/// Standard error as the log's output (`env_logger`'s target), holding the lines a thread
/// writes while it runs `batch`.
pub struct LogOutput;

thread_local! {
    /// Whether `batch` holds this thread's lines, and the lines held.
    static HELD: RefCell<(bool, Vec<u8>)> = const { RefCell::new((false, Vec::new())) };
}

impl LogOutput {
    /// Keeps `buf` for the end of the batch; false outside one.
    fn hold(buf: &[u8]) -> bool {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if h.0 {
                h.1.extend_from_slice(buf);
            }
            h.0
        })
    }
}

impl std::io::Write for LogOutput {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if Self::hold(buf) {
            return Ok(buf.len());
        }
        std::io::stderr().write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        if Self::hold(buf) {
            return Ok(());
        }
        std::io::stderr().write_all(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Runs `f` with the log lines this thread writes held, then writes them at once: a WAF
/// refusal logs a line per rule match, and a system call per line cost more than making the
/// line. Lines are written when `f` returns or unwinds; a batch inside a batch joins it.
pub fn batch<R>(f: impl FnOnce() -> R) -> R {
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            HELD.with(|h| {
                let mut h = h.borrow_mut();
                h.0 = false;
                if !h.1.is_empty() {
                    use std::io::Write;
                    let _ = std::io::stderr().write_all(&h.1);
                    h.1.clear();
                }
            })
        }
    }
    let outer = HELD.with(|h| !std::mem::replace(&mut h.borrow_mut().0, true));
    // Not `then_some`: its argument is made (and dropped, writing the lines) either way.
    let _release = if outer { Some(Release) } else { None };
    f()
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

    #[test]
    fn a_batch_holds_its_lines_until_it_ends_and_nests() {
        use std::io::Write;
        let held = || HELD.with(|h| h.borrow().1.clone());
        batch(|| {
            LogOutput
                .write_all(b"[t WARN  event] event=waf_match\n")
                .unwrap();
            batch(|| {
                LogOutput
                    .write_all(b"[t WARN  event] event=waf_block\n")
                    .unwrap()
            });
            // The inner batch joined the outer one: nothing written yet.
            assert_eq!(
                held(),
                b"[t WARN  event] event=waf_match\n[t WARN  event] event=waf_block\n"
            );
        });
        assert!(held().is_empty());
        assert!(!HELD.with(|h| h.borrow().0));
        // Outside a batch a line is not held.
        LogOutput.write_all(b"[t INFO  cong] unbatched\n").unwrap();
        assert!(held().is_empty());
        // A batch that unwinds still lets its lines go.
        let r = std::panic::catch_unwind(|| {
            batch(|| {
                LogOutput
                    .write_all(b"[t WARN  event] event=waf_match\n")
                    .unwrap();
                panic!("rule evaluation failed");
            })
        });
        assert!(r.is_err());
        assert!(held().is_empty());
        assert!(!HELD.with(|h| h.borrow().0));
    }
}
