//! SecLang operators (`@rx`, `@pm`, `@detectSQLi`, ...): compiled once at rule load, evaluated
//! against one transformed value at a time. Owns pattern compilation and matching; it knows
//! nothing of variables, rules or transactions beyond the `Macros` it is handed.
//!
//! Regexes use the linear-time `regex` crate in byte mode (as PCRE without UTF, with DOTALL
//! and MULTILINE as ModSecurity v3 compiles them); only patterns it cannot express
//! (look-around, back-references, possessive quantifiers) fall back to a backtracking engine
//! with a hard step limit, and `uses_backtracking` lets the loader list them.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use std::borrow::Cow;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Expands `%{tx.name}`-style macros in an operator parameter at evaluation time.
pub trait Macros {
    fn expand<'a>(&self, text: &'a str) -> Cow<'a, str>;
}

/// A compiled operator. `@!rx` style negation is part of it.
#[derive(Debug)]
pub struct Operator {
    pub name: &'static str,
    pub negated: bool,
    kind: Kind,
}

/// Backtracking steps a fallback regex may take on one value before it gives up (no match).
const BACKTRACK_LIMIT: usize = 100_000;
/// Regexes compiled at evaluation (parameters with macros) kept per operator.
const DYNAMIC_CACHE: usize = 16;

#[derive(Debug)]
enum Re {
    Linear(regex::bytes::Regex),
    Backtracking(fancy_regex::Regex),
}

#[derive(Debug)]
enum Kind {
    Rx(Re),
    /// `@rx` whose parameter holds macros: compiled per expanded value, cached.
    RxDynamic(String, Mutex<Vec<(String, Arc<Re>)>>),
    Pm(AhoCorasick, Vec<Vec<u8>>),
    Str(StrOp, String),
    Num(NumOp, String),
    IpMatch(Vec<ipnet::IpNet>),
    ByteRange([bool; 256]),
    ValidateUrlEncoding,
    ValidateUtf8Encoding,
    DetectSqli,
    DetectXss,
    Unconditional,
    NoMatch,
}

#[derive(Debug, Clone, Copy)]
enum StrOp {
    Streq,
    BeginsWith,
    EndsWith,
    Contains,
    ContainsWord,
    Within,
}

#[derive(Debug, Clone, Copy)]
enum NumOp {
    Eq,
    Ge,
    Gt,
    Le,
    Lt,
}

/// Why an operator could not be compiled (the loader adds file:line and rule id).
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error("unsupported operator @{0}")]
    Unsupported(String),
    #[error("@{op}: {msg}")]
    Invalid { op: String, msg: String },
}

fn invalid(op: &str, msg: impl ToString) -> OpError {
    OpError::Invalid {
        op: op.to_string(),
        msg: msg.to_string(),
    }
}

impl Operator {
    /// Compiles `@name param`. `base_dir` is the directory of the rule file, against which
    /// `@pmFromFile`/`@ipMatchFromFile` paths are resolved.
    pub fn compile(
        name: &str,
        param: &str,
        negated: bool,
        base_dir: &Path,
    ) -> Result<Operator, OpError> {
        let lower = name.to_ascii_lowercase();
        let (canonical, kind): (&'static str, Kind) = match lower.as_str() {
            "rx" if param.contains("%{") => (
                "rx",
                Kind::RxDynamic(param.to_string(), Mutex::new(Vec::new())),
            ),
            "rx" => (
                "rx",
                Kind::Rx(compile_regex(param).map_err(|e| invalid(name, e))?),
            ),
            "pm" => (
                "pm",
                pm(split_phrases(param)).map_err(|e| invalid(name, e))?,
            ),
            "pmf" | "pmfromfile" => {
                let mut phrases = Vec::new();
                for file in param.split_whitespace() {
                    let path = base_dir.join(file);
                    let text = std::fs::read(&path)
                        .map_err(|e| invalid(name, format!("{}: {e}", path.display())))?;
                    phrases.extend(
                        text.split(|&b| b == b'\n')
                            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                            .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
                            .map(<[u8]>::to_vec),
                    );
                }
                ("pmFromFile", pm(phrases).map_err(|e| invalid(name, e))?)
            }
            "streq" => ("streq", Kind::Str(StrOp::Streq, param.to_string())),
            "beginswith" => (
                "beginsWith",
                Kind::Str(StrOp::BeginsWith, param.to_string()),
            ),
            "endswith" => ("endsWith", Kind::Str(StrOp::EndsWith, param.to_string())),
            "contains" | "strmatch" => ("contains", Kind::Str(StrOp::Contains, param.to_string())),
            "containsword" => (
                "containsWord",
                Kind::Str(StrOp::ContainsWord, param.to_string()),
            ),
            "within" => ("within", Kind::Str(StrOp::Within, param.to_string())),
            "eq" => ("eq", Kind::Num(NumOp::Eq, param.to_string())),
            "ge" => ("ge", Kind::Num(NumOp::Ge, param.to_string())),
            "gt" => ("gt", Kind::Num(NumOp::Gt, param.to_string())),
            "le" => ("le", Kind::Num(NumOp::Le, param.to_string())),
            "lt" => ("lt", Kind::Num(NumOp::Lt, param.to_string())),
            "ipmatch" => (
                "ipMatch",
                Kind::IpMatch(parse_nets(param.split(',')).map_err(|e| invalid(name, e))?),
            ),
            "ipmatchfromfile" | "ipmatchf" => {
                let path = base_dir.join(param.trim());
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| invalid(name, format!("{}: {e}", path.display())))?;
                let lines = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'));
                (
                    "ipMatchFromFile",
                    Kind::IpMatch(parse_nets(lines).map_err(|e| invalid(name, e))?),
                )
            }
            "validatebyterange" => (
                "validateByteRange",
                Kind::ByteRange(byte_ranges(param).map_err(|e| invalid(name, e))?),
            ),
            "validateurlencoding" => ("validateUrlEncoding", Kind::ValidateUrlEncoding),
            "validateutf8encoding" => ("validateUtf8Encoding", Kind::ValidateUtf8Encoding),
            "detectsqli" => ("detectSQLi", Kind::DetectSqli),
            "detectxss" => ("detectXSS", Kind::DetectXss),
            "unconditionalmatch" => ("unconditionalMatch", Kind::Unconditional),
            "nomatch" => ("noMatch", Kind::NoMatch),
            _ => return Err(OpError::Unsupported(name.to_string())),
        };
        Ok(Operator {
            name: canonical,
            negated,
            kind,
        })
    }

    /// True for a regex only the bounded backtracking engine can run (listed at start-up).
    pub fn uses_backtracking(&self) -> bool {
        matches!(self.kind, Kind::Rx(Re::Backtracking(_)))
    }

    /// Evaluates against one value. With `capture`, `captures` receives TX:0..9 (group 0 the
    /// whole match); it is cleared first. Negation is applied here.
    pub fn matches(
        &self,
        input: &[u8],
        macros: &dyn Macros,
        capture: bool,
        captures: &mut Vec<Vec<u8>>,
    ) -> bool {
        if capture {
            captures.clear();
        }
        let hit = match &self.kind {
            Kind::Rx(re) => regex_match(re, input, capture, captures),
            Kind::RxDynamic(template, cache) => {
                let pattern = macros.expand(template).into_owned();
                match dynamic_regex(cache, pattern) {
                    Some(re) => regex_match(&re, input, capture, captures),
                    None => false,
                }
            }
            Kind::Pm(ac, phrases) => match ac.find(input) {
                Some(m) => {
                    if capture {
                        captures.push(phrases[m.pattern().as_usize()].clone());
                    }
                    true
                }
                None => false,
            },
            Kind::Str(op, param) => {
                let p = macros.expand(param);
                let hit = str_op(*op, input, p.as_bytes());
                if hit && capture {
                    captures.push(p.as_bytes().to_vec());
                }
                hit
            }
            Kind::Num(op, param) => {
                let (a, b) = (atoi(input), atoi(macros.expand(param).as_bytes()));
                match op {
                    NumOp::Eq => a == b,
                    NumOp::Ge => a >= b,
                    NumOp::Gt => a > b,
                    NumOp::Le => a <= b,
                    NumOp::Lt => a < b,
                }
            }
            Kind::IpMatch(nets) => std::str::from_utf8(input)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
                // An IPv4-mapped IPv6 address is the IPv4 client it carries.
                .map(|ip| ip.to_canonical())
                .is_some_and(|ip| nets.iter().any(|n| n.contains(&ip))),
            Kind::ByteRange(allowed) => input.iter().any(|&b| !allowed[usize::from(b)]),
            Kind::ValidateUrlEncoding => invalid_url_encoding(input),
            Kind::ValidateUtf8Encoding => std::str::from_utf8(input).is_err(),
            Kind::DetectSqli => {
                let r = libinjectionrs::detect_sqli(input);
                if r.is_injection() && capture {
                    if let Some(fp) = &r.fingerprint {
                        captures.push(fp.as_bytes().to_vec());
                    }
                }
                r.is_injection()
            }
            Kind::DetectXss => libinjectionrs::detect_xss(input).is_injection(),
            Kind::Unconditional => true,
            Kind::NoMatch => false,
        };
        hit != self.negated
    }
}

/// Compiles a SecLang regex: linear engine first, bounded backtracking only when needed.
fn compile_regex(pattern: &str) -> Result<Re, String> {
    let translated = pcre_to_regex(pattern);
    let pattern = translated.as_str();
    let linear = |unicode: bool| {
        regex::bytes::RegexBuilder::new(pattern)
            .unicode(unicode)
            .dot_matches_new_line(true)
            .multi_line(true)
            .size_limit(64 << 20)
            .build()
    };
    // Byte semantics first (PCRE without UTF); patterns with non-ASCII literals need
    // Unicode mode to be expressible at all.
    let linear_err = match linear(false).or_else(|_| linear(true)) {
        Ok(re) => return Ok(Re::Linear(re)),
        Err(e) => e,
    };
    fancy_regex::RegexBuilder::new(&format!("(?sm){pattern}"))
        .backtrack_limit(BACKTRACK_LIMIT)
        .build()
        .map(Re::Backtracking)
        .map_err(|e| format!("{e} ({linear_err})"))
}

/// Rewrites the PCRE spellings the `regex` crate reads differently: a `{` that does not
/// start a `{n}`, `{n,}` or `{n,m}` quantifier is a literal brace in PCRE.
fn pcre_to_regex(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => {
                // Copy the escape whole (it may be multi-byte UTF-8 after the backslash).
                let end = (i + 1..=b.len())
                    .skip(1)
                    .find(|&e| pattern.is_char_boundary(e))
                    .unwrap_or(b.len());
                out.push_str(&pattern[i..end]);
                i = end;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                // A leading `^` and a leading `]` belong to the class.
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                if b.get(i) == Some(&b']') {
                    out.push_str("\\]");
                    i += 1;
                }
                continue;
            }
            b'[' if in_class => {
                // POSIX classes stay; any other `[` inside a class is a literal.
                if b[i..].starts_with(b"[:") {
                    if let Some(end) = pattern[i + 2..].find(":]") {
                        out.push_str(&pattern[i..i + 2 + end + 2]);
                        i += 2 + end + 2;
                        continue;
                    }
                }
                out.push_str("\\[");
                i += 1;
                continue;
            }
            b']' if in_class => in_class = false,
            b'{' if !in_class && !is_quantifier(&b[i..]) => {
                out.push_str("\\{");
                i += 1;
                continue;
            }
            b'}' if !in_class => {
                // Only reached for a brace that closes no quantifier.
                out.push_str("\\}");
                i += 1;
                continue;
            }
            _ => {}
        }
        if c == b'{' && !in_class {
            // A real quantifier: copy it to its closing brace.
            let end = b[i..]
                .iter()
                .position(|&x| x == b'}')
                .map_or(b.len(), |p| i + p + 1);
            out.push_str(&pattern[i..end]);
            i = end;
            continue;
        }
        let end = (i + 1..=b.len())
            .find(|&e| pattern.is_char_boundary(e))
            .unwrap_or(b.len());
        out.push_str(&pattern[i..end]);
        i = end;
    }
    out
}

fn is_quantifier(s: &[u8]) -> bool {
    let Some(close) = s.iter().position(|&b| b == b'}') else {
        return false;
    };
    let inner = &s[1..close];
    let (lo, hi) = match inner.iter().position(|&b| b == b',') {
        Some(p) => (&inner[..p], Some(&inner[p + 1..])),
        None => (inner, None),
    };
    !lo.is_empty()
        && lo.iter().all(u8::is_ascii_digit)
        && hi.is_none_or(|h| h.iter().all(u8::is_ascii_digit))
}

fn dynamic_regex(cache: &Mutex<Vec<(String, Arc<Re>)>>, pattern: String) -> Option<Arc<Re>> {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, re)) = cache.iter().find(|(p, _)| *p == pattern) {
        return Some(re.clone());
    }
    let re = Arc::new(compile_regex(&pattern).ok()?);
    if cache.len() >= DYNAMIC_CACHE {
        cache.remove(0);
    }
    cache.push((pattern, re.clone()));
    Some(re)
}

fn regex_match(re: &Re, input: &[u8], capture: bool, captures: &mut Vec<Vec<u8>>) -> bool {
    match re {
        Re::Linear(re) if capture => match re.captures(input) {
            Some(c) => {
                for g in c.iter().take(10) {
                    captures.push(g.map(|m| m.as_bytes().to_vec()).unwrap_or_default());
                }
                true
            }
            None => false,
        },
        Re::Linear(re) => re.is_match(input),
        Re::Backtracking(re) => {
            // The backtracking engine works on text: invalid UTF-8 is matched lossily (a
            // replacement character where a byte was invalid).
            let text = String::from_utf8_lossy(input);
            if capture {
                match re.captures(text.as_ref()) {
                    Ok(Some(c)) => {
                        for g in c.iter().take(10) {
                            captures.push(
                                g.map(|m| m.as_str().as_bytes().to_vec())
                                    .unwrap_or_default(),
                            );
                        }
                        true
                    }
                    // Over the step limit counts as no match: bounded time wins.
                    _ => false,
                }
            } else {
                re.is_match(text.as_ref()).unwrap_or(false)
            }
        }
    }
}

/// `@pm` phrases: space-separated, a double-quoted phrase may hold spaces.
fn split_phrases(param: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let mut quoted = false;
    for &b in param.as_bytes() {
        match b {
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(b),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn pm(phrases: Vec<Vec<u8>>) -> Result<Kind, String> {
    if phrases.is_empty() {
        return Err("no phrases".into());
    }
    let ac = AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostFirst)
        .build(&phrases)
        .map_err(|e| e.to_string())?;
    Ok(Kind::Pm(ac, phrases))
}

fn str_op(op: StrOp, input: &[u8], p: &[u8]) -> bool {
    match op {
        StrOp::Streq => input == p,
        StrOp::BeginsWith => input.starts_with(p),
        StrOp::EndsWith => input.ends_with(p),
        StrOp::Contains => find(input, p).is_some(),
        StrOp::Within => input.is_empty() || find(p, input).is_some(),
        StrOp::ContainsWord => {
            if p.is_empty() {
                return true;
            }
            let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
            let mut from = 0;
            while let Some(at) = find(&input[from..], p) {
                let start = from + at;
                let end = start + p.len();
                let before = start == 0 || !word(input[start - 1]);
                let after = end == input.len() || !word(input[end]);
                if before && after {
                    return true;
                }
                from = start + 1;
            }
            false
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    memchr_find(hay, needle)
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    aho_corasick::packed::Searcher::new([needle])
        .and_then(|s| s.find(hay).map(|m| m.start()))
        .or_else(|| hay.windows(needle.len()).position(|w| w == needle))
}

/// C `atoi`: leading blanks, optional sign, digits; anything else ends the number (0 if none).
fn atoi(s: &[u8]) -> i64 {
    let s = match s.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(p) => &s[p..],
        None => return 0,
    };
    let (neg, digits) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut v: i64 = 0;
    for &b in digits.iter().take_while(|b| b.is_ascii_digit()) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

fn parse_nets<'a>(items: impl Iterator<Item = &'a str>) -> Result<Vec<ipnet::IpNet>, String> {
    let mut nets = Vec::new();
    for item in items.map(str::trim).filter(|s| !s.is_empty()) {
        let net = match item.parse::<ipnet::IpNet>() {
            Ok(n) => n,
            Err(_) => item
                .parse::<IpAddr>()
                .map(ipnet::IpNet::from)
                .map_err(|_| format!("not an address or network: {item}"))?,
        };
        nets.push(canonical_net(net));
    }
    Ok(nets)
}

/// IPv4-mapped IPv6 networks (`::ffff:a.b.c.d/n`, n ≥ 96) are the IPv4 networks they carry,
/// as the addresses matched against them are.
fn canonical_net(net: ipnet::IpNet) -> ipnet::IpNet {
    if let ipnet::IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return ipnet::IpNet::V4(n);
            }
        }
    }
    net
}

fn byte_ranges(param: &str) -> Result<[bool; 256], String> {
    let mut allowed = [false; 256];
    for part in param
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: u8 = lo.parse().map_err(|_| format!("bad byte range {part}"))?;
        let hi: u8 = hi.parse().map_err(|_| format!("bad byte range {part}"))?;
        if lo > hi {
            return Err(format!("bad byte range {part}"));
        }
        for b in lo..=hi {
            allowed[usize::from(b)] = true;
        }
    }
    Ok(allowed)
}

fn invalid_url_encoding(input: &[u8]) -> bool {
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' {
            let ok = input.len() > i + 2
                && input[i + 1].is_ascii_hexdigit()
                && input[i + 2].is_ascii_hexdigit();
            if !ok {
                return true;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tx;
    impl Macros for Tx {
        fn expand<'a>(&self, text: &'a str) -> Cow<'a, str> {
            Cow::Owned(text.replace("%{tx.allowed}", "GET HEAD POST"))
        }
    }

    fn op(name: &str, param: &str) -> Operator {
        Operator::compile(name, param, false, Path::new(".")).expect("compiles")
    }

    #[test]
    fn macros_are_expanded_at_evaluation() {
        let mut caps = Vec::new();
        assert!(op("within", "%{tx.allowed}").matches(b"POST", &Tx, false, &mut caps));
        assert!(!op("within", "%{tx.allowed}").matches(b"PUT", &Tx, false, &mut caps));
        assert!(op("rx", "^(?:%{tx.allowed})$").matches(b"GET HEAD POST", &Tx, false, &mut caps));
    }

    #[test]
    fn captures_and_negation() {
        let mut caps = Vec::new();
        assert!(op("rx", "(a+)(b)").matches(b"xaab", &Tx, true, &mut caps));
        assert_eq!(caps, vec![b"aab".to_vec(), b"aa".to_vec(), b"b".to_vec()]);
        let neg = Operator::compile("rx", "a", true, Path::new(".")).expect("compiles");
        assert!(neg.matches(b"b", &Tx, false, &mut caps));
    }

    #[test]
    fn backtracking_only_when_needed_and_bounded() {
        assert!(!op("rx", "(?i)union\\s+select").uses_backtracking());
        let look = op("rx", "a(?!b)");
        assert!(look.uses_backtracking());
        let mut caps = Vec::new();
        assert!(look.matches(b"ac", &Tx, false, &mut caps));
        assert!(!look.matches(b"ab", &Tx, false, &mut caps));
        // A catastrophic pattern gives up instead of running for ever.
        let evil = op("rx", "^(a+)+\\1$");
        let input = [vec![b'a'; 40], b"!".to_vec()].concat();
        assert!(!evil.matches(&input, &Tx, false, &mut caps));
    }

    #[test]
    fn unknown_operators_are_reported() {
        assert!(matches!(
            Operator::compile("rbl", "x", false, Path::new(".")),
            Err(OpError::Unsupported(_))
        ));
        assert!(matches!(
            Operator::compile("rx", "(", false, Path::new(".")),
            Err(OpError::Invalid { .. })
        ));
    }
}

/// The shared SecLang operator vectors (`../shared/seclang-vectors`), when present.
#[cfg(test)]
mod vectors {
    use super::*;

    struct NoMacros;
    impl Macros for NoMacros {
        fn expand<'a>(&self, text: &'a str) -> Cow<'a, str> {
            Cow::Borrowed(text)
        }
    }

    /// Operators of the vector set cong does not implement, with the reason.
    const NOT_IMPLEMENTED: &[(&str, &str)] = &[
        (
            "nids",
            "@validateNid: national-id checksums of other countries",
        ),
        (
            "verifyCC",
            "credit-card detection is data-leak prevention on responses, not used",
        ),
        ("verifycpf", "Brazilian tax ids"),
        ("verifyssn", "US social security numbers"),
        ("verifysvnr", "Austrian social insurance numbers"),
        (
            "validateSchema",
            "XML/JSON schema validation needs the schema files of the vector set",
        ),
    ];

    fn unescape(s: &str) -> Vec<u8> {
        // Same escape convention as the transformation vectors.
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'0') {
                out.push(0);
                i += 2;
                continue;
            }
            if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') {
                if let Some(v) = b
                    .get(i + 2..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        out
    }

    #[test]
    fn seclang_operator_vectors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seclang-vectors/operators");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no vectors at {}", dir.display());
            return;
        };
        let (mut passed, mut failed) = (0, Vec::new());
        for e in entries.flatten() {
            let path = e.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|x| x != "json")
                || NOT_IMPLEMENTED.iter().any(|(n, _)| *n == stem)
            {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let Ok(cases) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
                continue;
            };
            for case in cases {
                let name = case["name"].as_str().unwrap_or(stem);
                let param = case["param"].as_str().unwrap_or_default();
                let input = unescape(case["input"].as_str().unwrap_or_default());
                let want = case["ret"].as_i64() == Some(1);
                let op = match Operator::compile(name, param, false, &dir.join("op")) {
                    Ok(op) => op,
                    // A parameter cong refuses at load (e.g. `10.0.0.0/100`) can match
                    // nothing, which is what such vectors expect.
                    Err(_) if !want => {
                        passed += 1;
                        continue;
                    }
                    Err(e) => {
                        failed.push(format!("{name} {param:?}: {e}"));
                        continue;
                    }
                };
                let mut caps = Vec::new();
                if op.matches(&input, &NoMacros, false, &mut caps) == want {
                    passed += 1;
                } else {
                    failed.push(format!(
                        "@{name} {:?} on {:?}: want {want}",
                        &param[..param.len().min(60)],
                        String::from_utf8_lossy(&input[..input.len().min(60)])
                    ));
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{passed} passed, {} failures:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert!(passed > 3000, "only {passed} vectors ran");
    }
}

/// Every `@rx` of the OWASP Core Rule Set as Debian installs it compiles, and only a few need
/// the backtracking fallback.
#[cfg(test)]
mod crs {
    use super::*;

    const RULES: &str = "/usr/share/modsecurity-crs/rules";

    /// The operator strings of `SecRule VARIABLES "OPERATOR" ...` lines (continuations
    /// joined, `\"` unescaped as the rule language does).
    fn operators(text: &str) -> Vec<String> {
        let joined = text.replace("\\\n", " ");
        let mut out = Vec::new();
        for line in joined.lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("SecRule ") else {
                continue;
            };
            let Some(start) = rest.find('"') else {
                continue;
            };
            let mut op = String::new();
            let mut chars = rest[start + 1..].chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some('"') => op.push('"'),
                        Some(n) => {
                            op.push('\\');
                            op.push(n);
                        }
                        None => break,
                    },
                    '"' => break,
                    c => op.push(c),
                }
            }
            out.push(op);
        }
        out
    }

    #[test]
    fn every_crs_regex_compiles() {
        let Ok(dir) = std::fs::read_dir(RULES) else {
            eprintln!("{RULES} not installed");
            return;
        };
        let (mut linear, mut backtracking, mut failed) = (0, Vec::new(), Vec::new());
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            for op in operators(&text) {
                let Some(pattern) = op.strip_prefix("@rx ") else {
                    continue;
                };
                match Operator::compile("rx", pattern, false, Path::new(RULES)) {
                    Ok(o) if o.uses_backtracking() => backtracking.push(pattern.to_string()),
                    Ok(_) => linear += 1,
                    Err(err) => failed.push(format!("{}: {err}", e.path().display())),
                }
            }
        }
        eprintln!(
            "CRS regexes: {linear} linear, {} backtracking",
            backtracking.len()
        );
        for p in &backtracking {
            eprintln!("  backtracking: {}", &p[..p.len().min(120)]);
        }
        assert!(failed.is_empty(), "{}", failed.join("\n"));
        assert!(linear > 100, "only {linear} regexes found");
        assert!(
            backtracking.len() * 20 < linear,
            "too many need backtracking"
        );
    }
}
