//! PCRE (as libmodsecurity 3.0.9 compiles `@rx`: no UTF mode, `PCRE_DOTALL | PCRE_MULTILINE`,
//! C-locale character tables) to the `regex` crate's syntax in byte mode. Only spellings whose
//! meaning is the same are rewritten; anything the linear engine cannot express is left for
//! the bounded backtracking engine, which reads the same rewritten pattern in byte mode.
//!
//! Rewrites: a non-ASCII pattern byte becomes `\xHH` (PCRE matches bytes, not characters);
//! `{` that starts no quantifier is a literal; inside a class `[` (other than `[:name:]`),
//! `&`, `~` and a `-` that cannot form a range are literals; `\<` `\>` are literals (the crate
//! reads them as word boundaries); `\v` `\h` `\N` `\e` `\cX`, `\xH`, `\x{HH}`, octal and
//! `\o{}`, `\Q..\E`, `(?#...)` and `(?'name'...)` get their PCRE meaning spelled the crate's
//! way; `\R` (atomic) and `\Z` (a look-ahead) are spelled so that only the fallback runs them.
//!
//! Checked against libmodsecurity 3.0.9 (PCRE2 10.42) on every CRS 3.3.4 and 4.28 regex and on
//! 4,000 generated patterns. Known differences, none in the CRS: a multiline `^` reached by
//! consuming the newline that ends the value matches here, not in PCRE; and PCRE2's
//! auto-possessification treats `\v` and `\S` as disjoint although both hold 0x85, so
//! patterns like `\v?\S` miss a lone 0x85 there.

/// What PCRE2 (libmodsecurity 3.0.9 on Debian uses PCRE2 10.42) refuses to compile among
/// patterns the rewrite would otherwise accept: a range with a class escape or POSIX class
/// at either end (`[\w-.]`, `[a-\d]`), and a quantifier right after an assertion (`\b*`,
/// `^+`). libmodsecurity loads such a rule and it never matches; cong reports it.
pub(super) fn pcre2_rejects(pattern: &str) -> Option<&'static str> {
    let b = pattern.as_bytes();
    let is_set_escape = |e: u8| b"dDwWsShHvVpPN".contains(&e);
    let is_assertion_escape = |e: u8| b"bBAzZG".contains(&e);
    let mut i = 0;
    let mut after_assertion = false;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\\' => {
                let e = b.get(i + 1).copied().unwrap_or(0);
                if e == b'Q' {
                    i = b[i..]
                        .windows(2)
                        .position(|w| w == b"\\E")
                        .map_or(b.len(), |p| i + p + 2);
                    after_assertion = false;
                    continue;
                }
                after_assertion = is_assertion_escape(e);
                i += 2;
            }
            b'^' | b'$' => {
                after_assertion = true;
                i += 1;
            }
            b'*' | b'+' | b'?' if after_assertion => return Some("quantifier after an assertion"),
            b'{' if after_assertion && quantifier_end(b, i).is_some() => {
                return Some("quantifier after an assertion")
            }
            b'[' => {
                // Items of the class: (is a set, start index); a range needs single characters.
                i += 1;
                if b.get(i) == Some(&b'^') {
                    i += 1;
                }
                let mut first = true;
                let mut prev_set: Option<bool> = None;
                while i < b.len() && (first || b[i] != b']') {
                    first = false;
                    let (set, len) = if b[i] == b'\\' {
                        (is_set_escape(b.get(i + 1).copied().unwrap_or(0)), 2)
                    } else if let Some(end) = posix_class_end(b, i) {
                        (true, end - i)
                    } else {
                        (false, 1)
                    };
                    if b[i] == b'-'
                        && prev_set.is_some()
                        && b.get(i + 1).is_some_and(|&n| n != b']')
                    {
                        // A range: both ends must be single characters.
                        let next_set = if b[i + 1] == b'\\' {
                            is_set_escape(b.get(i + 2).copied().unwrap_or(0))
                        } else {
                            posix_class_end(b, i + 1).is_some()
                        };
                        if prev_set == Some(true) || next_set {
                            return Some("invalid range in character class");
                        }
                        // Skip the range's end.
                        i += 1;
                        i += if b[i] == b'\\' { 2 } else { 1 };
                        prev_set = None;
                        continue;
                    }
                    prev_set = Some(set);
                    i += len;
                }
                i += 1;
                after_assertion = false;
            }
            b'(' if b[i..].starts_with(b"(?#") => {
                i = b[i..]
                    .iter()
                    .position(|&x| x == b')')
                    .map_or(b.len(), |p| i + p + 1);
            }
            _ => {
                after_assertion = false;
                i += 1;
            }
        }
    }
    None
}

/// The rewritten pattern.
pub(super) fn translate(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(b.len() + 16);
    let mut i = 0;
    // Inside `[...]`: whether the last item can start a range (a single character that does
    // not itself end a range).
    let mut in_class = false;
    let mut last_was_char = false;
    let mut range_open = false;
    while i < b.len() {
        let c = b[i];
        if in_class {
            match c {
                b']' => {
                    in_class = false;
                    out.push(']');
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some(end) = posix_class_end(b, i) {
                        out.push_str(&pattern[i..end]);
                        i = end;
                        last_was_char = false;
                    } else {
                        out.push_str("\\[");
                        i += 1;
                        last_was_char = !range_open;
                    }
                }
                b'\\' => {
                    let (text, len, single) = class_escape(b, i);
                    out.push_str(&text);
                    i += len;
                    last_was_char = single && !range_open;
                }
                b'-' => {
                    // A range needs a character on both sides; otherwise '-' is literal.
                    let next_ok = b.get(i + 1).is_some_and(|&n| n != b']')
                        && !(b.get(i + 1) == Some(&b'\\')
                            && b.get(i + 2).is_some_and(|&e| b"dDwWsShHvVN".contains(&e)));
                    if last_was_char && next_ok {
                        out.push('-');
                        last_was_char = false;
                        range_open = true;
                        i += 1;
                        continue;
                    }
                    out.push_str("\\-");
                    last_was_char = !range_open;
                    i += 1;
                }
                b'&' | b'~' => {
                    out.push('\\');
                    out.push(c as char);
                    i += 1;
                    last_was_char = !range_open;
                }
                _ => {
                    push_byte(&mut out, c);
                    i += 1;
                    last_was_char = !range_open;
                }
            }
            range_open = false;
            continue;
        }
        match c {
            b'[' => {
                out.push('[');
                i += 1;
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                // A leading ']' is a member.
                if b.get(i) == Some(&b']') {
                    out.push_str("\\]");
                    i += 1;
                    last_was_char = true;
                } else {
                    last_was_char = false;
                }
                in_class = true;
                range_open = false;
            }
            b'\\' => {
                let (text, len) = escape(b, i);
                out.push_str(&text);
                i += len;
            }
            b'{' => {
                if let Some(end) = quantifier_end(b, i) {
                    out.push_str(&pattern[i..end]);
                    i = end;
                } else {
                    out.push_str("\\{");
                    i += 1;
                }
            }
            b'}' => {
                out.push_str("\\}");
                i += 1;
            }
            b'(' if b[i..].starts_with(b"(?#") => {
                // A comment group: dropped.
                i = b[i..]
                    .iter()
                    .position(|&x| x == b')')
                    .map_or(b.len(), |p| i + p + 1);
            }
            b'(' if b[i..].starts_with(b"(?'") => {
                out.push_str("(?P<");
                i += 3;
                while i < b.len() && b[i] != b'\'' {
                    push_byte(&mut out, b[i]);
                    i += 1;
                }
                out.push('>');
                i += 1;
            }
            _ => {
                push_byte(&mut out, c);
                i += 1;
            }
        }
    }
    out
}

/// For a translated pattern that uses `^` outside a class: the same pattern with every such
/// `^` unable to match. PCRE's multiline `^` does not match after a newline that ends the
/// subject, the `regex` crate's does; the caller uses this variant to re-check an empty
/// match at the very end of such a subject.
pub(super) fn without_caret(translated: &str) -> Option<String> {
    let b = translated.as_bytes();
    let mut out = String::with_capacity(b.len() + 16);
    let (mut i, mut in_class, mut found) = (0, false, false);
    while i < b.len() {
        match b[i] {
            b'\\' => {
                out.push_str(&translated[i..(i + 2).min(b.len())]);
                i += 2;
                continue;
            }
            b'[' if !in_class => {
                in_class = true;
                out.push('[');
                i += 1;
                // A '^' right after '[' negates the class.
                if b.get(i) == Some(&b'^') {
                    out.push('^');
                    i += 1;
                }
                continue;
            }
            b'[' if b[i..].starts_with(b"[:") => {
                let end = translated[i..].find(":]").map_or(b.len(), |e| i + e + 2);
                out.push_str(&translated[i..end]);
                i = end;
                continue;
            }
            b']' if in_class => in_class = false,
            b'^' if !in_class => {
                out.push_str("[^\\x00-\\xFF]");
                found = true;
                i += 1;
                continue;
            }
            _ => {}
        }
        out.push(b[i] as char);
        i += 1;
    }
    found.then_some(out)
}

fn push_byte(out: &mut String, c: u8) {
    if c.is_ascii() {
        out.push(c as char);
    } else {
        out.push_str(&format!("\\x{c:02X}"));
    }
}

/// `[:alpha:]` inside a class: the index after it.
fn posix_class_end(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i + 1) != Some(&b':') {
        return None;
    }
    let rest = &b[i + 2..];
    let n = rest.iter().position(|&x| x == b':')?;
    let name = &rest[..n];
    let name = name.strip_prefix(b"^").unwrap_or(name);
    (rest.get(n + 1) == Some(&b']') && !name.is_empty() && name.iter().all(u8::is_ascii_lowercase))
        .then_some(i + 2 + n + 2)
}

/// `{n}`, `{n,}` or `{n,m}` at `i`: the index after it.
fn quantifier_end(b: &[u8], i: usize) -> Option<usize> {
    let close = i + b[i..].iter().position(|&x| x == b'}')?;
    let inner = &b[i + 1..close];
    let (lo, hi) = match inner.iter().position(|&x| x == b',') {
        Some(p) => (&inner[..p], Some(&inner[p + 1..])),
        None => (inner, None),
    };
    let ok = !lo.is_empty()
        && lo.iter().all(u8::is_ascii_digit)
        && hi.is_none_or(|h| h.iter().all(u8::is_ascii_digit));
    ok.then_some(close + 1)
}

/// Octal digits after a backslash (`\0`, `\012`, or in a class `\12`): value and length.
fn octal(b: &[u8], from: usize, max: usize) -> (u32, usize) {
    let n = b[from..]
        .iter()
        .take(max)
        .take_while(|x| (b'0'..=b'7').contains(x))
        .count();
    let v = b[from..from + n]
        .iter()
        .fold(0u32, |v, &d| v * 8 + u32::from(d - b'0'));
    (v, n)
}

fn byte_escape(v: u32) -> String {
    format!("\\x{:02X}", v & 0xff)
}

/// Escapes that mean the same inside and outside a class, as `(text, consumed)`; `None` for
/// the ones that differ.
fn common_escape(b: &[u8], i: usize) -> Option<(String, usize)> {
    let e = *b.get(i + 1)?;
    Some(match e {
        b'e' => ("\\x1B".into(), 2),
        b'c' if b.get(i + 2).is_some_and(u8::is_ascii) => {
            // \cX: X's upper case with bit 6 flipped.
            let x = b[i + 2].to_ascii_uppercase() ^ 0x40;
            (byte_escape(u32::from(x)), 3)
        }
        b'o' if b.get(i + 2) == Some(&b'{') => {
            let close = i + 3 + b[i + 3..].iter().position(|&x| x == b'}')?;
            let (v, n) = octal(b, i + 3, close - i - 3);
            if n != close - i - 3 {
                return None;
            }
            (byte_escape(v), close + 1 - i)
        }
        b'x' if b.get(i + 2) == Some(&b'{') => {
            // \x{HH}: without UTF mode PCRE takes values up to 0xFF.
            let close = i + 3 + b[i + 3..].iter().position(|&x| x == b'}')?;
            let digits = std::str::from_utf8(&b[i + 3..close]).ok()?;
            let v = u32::from_str_radix(digits, 16)
                .ok()
                .filter(|&v| v <= 0xff)?;
            (byte_escape(v), close + 1 - i)
        }
        b'x' => {
            // \x with up to two hex digits (none is NUL).
            let n = b[i + 2..]
                .iter()
                .take(2)
                .take_while(|x| x.is_ascii_hexdigit())
                .count();
            let digits = std::str::from_utf8(&b[i + 2..i + 2 + n]).ok()?;
            let v = if n == 0 {
                0
            } else {
                u32::from_str_radix(digits, 16).ok()?
            };
            (byte_escape(v), 2 + n)
        }
        b'<' | b'>' => ((e as char).to_string(), 2),
        _ if !e.is_ascii() => (byte_escape(u32::from(e)), 2),
        _ => return None,
    })
}

/// An escape outside a class: `(text, consumed)`.
fn escape(b: &[u8], i: usize) -> (String, usize) {
    let Some(&e) = b.get(i + 1) else {
        return ("\\\\".into(), 1);
    };
    if let Some(r) = common_escape(b, i) {
        return r;
    }
    match e {
        b'v' => ("[\\x0A-\\x0D\\x85]".into(), 2),
        b'V' => ("[^\\x0A-\\x0D\\x85]".into(), 2),
        b'h' => ("[\\x09\\x20\\xA0]".into(), 2),
        b'H' => ("[^\\x09\\x20\\xA0]".into(), 2),
        // Atomic in PCRE (a CR LF pair is never split): only the fallback engine has that.
        b'R' => ("(?>\\x0D\\x0A|[\\x0A-\\x0D\\x85])".into(), 2),
        b'N' if b.get(i + 2) != Some(&b'{') => ("[^\\n]".into(), 2),
        // End, or before a final newline: a look-ahead, so only the fallback engine runs it.
        b'Z' => ("(?=\\n?\\z)".into(), 2),
        b'0' => {
            let (v, n) = octal(b, i + 2, 2);
            (byte_escape(v), 2 + n)
        }
        b'Q' => {
            let start = i + 2;
            let end = b[start..]
                .windows(2)
                .position(|w| w == b"\\E")
                .map_or(b.len(), |p| start + p);
            let mut s = String::new();
            for &x in &b[start..end] {
                if x.is_ascii_alphanumeric() || x == b' ' {
                    s.push(x as char);
                } else {
                    s.push_str(&byte_escape(u32::from(x)));
                }
            }
            (s, (end + 2).min(b.len()) - i)
        }
        b'E' => (String::new(), 2),
        // Everything else (\d \w \s \b \A \z \n \t \xHH, back-references, ...) reads the
        // same or is left for the engines to accept or refuse.
        _ => (format!("\\{}", e as char), 2),
    }
}

/// An escape inside a class: `(text, consumed, is a single character)`.
fn class_escape(b: &[u8], i: usize) -> (String, usize, bool) {
    let Some(&e) = b.get(i + 1) else {
        return ("\\\\".into(), 1, true);
    };
    if let Some((t, n)) = common_escape(b, i) {
        return (t, n, true);
    }
    match e {
        b'v' => ("\\x0A-\\x0D\\x85".into(), 2, false),
        b'h' => ("\\x09\\x20\\xA0".into(), 2, false),
        b'b' => ("\\x08".into(), 2, true),
        b'0'..=b'7' => {
            let (v, n) = octal(b, i + 1, 3);
            (byte_escape(v), 1 + n, true)
        }
        b'd' | b'D' | b'w' | b'W' | b's' | b'S' => (format!("\\{}", e as char), 2, false),
        b'E' | b'Q' => (String::new(), 2, false),
        _ => (format!("\\{}", e as char), 2, true),
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn rewrites() {
        for (pcre, want) in [
            ("a{", "a\\{"),
            ("a{2}b{,3}c{1,}", "a{2}b\\{,3\\}c{1,}"),
            ("[[a]", "[\\[a]"),
            ("[]a]", "[\\]a]"),
            ("[^]a]", "[^\\]a]"),
            ("[[:alpha:]_]", "[[:alpha:]_]"),
            ("[\\w-.]", "[\\w\\-.]"),
            ("[a-z-]", "[a-z\\-]"),
            ("[a-z-9]", "[a-z\\-9]"),
            ("[%-]", "[%\\-]"),
            ("[&&~~]", "[\\&\\&\\~\\~]"),
            ("\\<script\\>", "<script>"),
            ("é", "\\xC3\\xA9"),
            ("[é]", "[\\xC3\\xA9]"),
            ("\\v", "[\\x0A-\\x0D\\x85]"),
            ("\\Qa.b\\E+", "a\\x2Eb+"),
            ("\\012\\0", "\\x0A\\x00"),
            ("[\\12]", "[\\x0A]"),
            ("a(?#note)b", "ab"),
            (
                r"\x{e2}\x80[\x{98}-\x{ff}]\x7z",
                r"\xE2\x80[\x98-\xFF]\x07z",
            ),
            ("(?'n'x)", "(?P<n>x)"),
        ] {
            assert_eq!(translate(pcre), want, "{pcre}");
        }
        assert_eq!(
            super::without_caret("^a[^b]\\^|(?m:^)").as_deref(),
            Some("[^\\x00-\\xFF]a[^b]\\^|(?m:[^\\x00-\\xFF])")
        );
        assert_eq!(super::without_caret("a[^^]"), None);
    }

    #[test]
    fn what_pcre2_refuses() {
        use super::pcre2_rejects;
        for bad in [
            r"[\w-.]",
            r"[\d-z]",
            r"[a-\d]",
            r"[%-\w]",
            r"[[:alpha:]-z]",
            r"\b*",
            "^*",
            "$+",
            r"\z*?",
            r"\A{2}",
            r"\Z?",
        ] {
            assert!(pcre2_rejects(bad).is_some(), "{bad}");
        }
        for good in [
            r"[\w-]", r"[-\w]", r"[a-z-9]", r"(?:\b)*", "x{,2}", "^a*", r"[\]-a]", r"\Q\b*\E",
            "[]-a]", r"a\*",
        ] {
            assert_eq!(pcre2_rejects(good), None, "{good}");
        }
    }
}
