//! SecLang transformations (`t:lowercase`, `t:urlDecodeUni`, ...): pure functions from bytes to
//! bytes with ModSecurity v3's semantics, each linear in its input. Owns nothing but the
//! functions; caching of results per variable is the engine's job.

use std::borrow::Cow;

/// One transformation function, resolved from its SecLang name at rule load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    Lowercase,
    Uppercase,
    UrlDecode,
    UrlDecodeUni,
    UrlEncode,
    HtmlEntityDecode,
    JsDecode,
    CssDecode,
    EscapeSeqDecode,
    CmdLine,
    CompressWhitespace,
    RemoveWhitespace,
    RemoveNulls,
    ReplaceNulls,
    ReplaceComments,
    RemoveComments,
    RemoveCommentsChar,
    NormalisePath,
    NormalisePathWin,
    Base64Decode,
    Base64DecodeExt,
    Base64Encode,
    HexDecode,
    HexEncode,
    SqlHexDecode,
    Length,
    Utf8ToUnicode,
    Sha1,
    Trim,
    TrimLeft,
    TrimRight,
    ParityEven7bit,
    ParityOdd7bit,
    ParityZero7bit,
}

const NAMES: &[(&str, Transform)] = &[
    ("lowercase", Transform::Lowercase),
    ("uppercase", Transform::Uppercase),
    ("urlDecode", Transform::UrlDecode),
    ("urlDecodeUni", Transform::UrlDecodeUni),
    ("urlEncode", Transform::UrlEncode),
    ("htmlEntityDecode", Transform::HtmlEntityDecode),
    ("jsDecode", Transform::JsDecode),
    ("cssDecode", Transform::CssDecode),
    ("escapeSeqDecode", Transform::EscapeSeqDecode),
    ("cmdLine", Transform::CmdLine),
    ("compressWhitespace", Transform::CompressWhitespace),
    ("removeWhitespace", Transform::RemoveWhitespace),
    ("removeNulls", Transform::RemoveNulls),
    ("replaceNulls", Transform::ReplaceNulls),
    ("replaceComments", Transform::ReplaceComments),
    ("removeComments", Transform::RemoveComments),
    ("removeCommentsChar", Transform::RemoveCommentsChar),
    ("normalisePath", Transform::NormalisePath),
    ("normalizePath", Transform::NormalisePath),
    ("normalisePathWin", Transform::NormalisePathWin),
    ("normalizePathWin", Transform::NormalisePathWin),
    ("base64Decode", Transform::Base64Decode),
    ("base64DecodeExt", Transform::Base64DecodeExt),
    ("base64Encode", Transform::Base64Encode),
    ("hexDecode", Transform::HexDecode),
    ("hexEncode", Transform::HexEncode),
    ("sqlHexDecode", Transform::SqlHexDecode),
    ("length", Transform::Length),
    ("utf8toUnicode", Transform::Utf8ToUnicode),
    ("sha1", Transform::Sha1),
    ("trim", Transform::Trim),
    ("trimLeft", Transform::TrimLeft),
    ("trimRight", Transform::TrimRight),
    ("parityEven7bit", Transform::ParityEven7bit),
    ("parityOdd7bit", Transform::ParityOdd7bit),
    ("parityZero7bit", Transform::ParityZero7bit),
];

impl Transform {
    /// Looks a transformation up by its SecLang name (case-insensitive). `none` is not a
    /// transformation (the rule parser handles it by clearing the list), so it returns `None`,
    /// as does any unknown name.
    pub fn parse(name: &str) -> Option<Transform> {
        NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, t)| *t)
    }

    /// The SecLang name, as written in rules.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .unwrap_or("unknown")
    }

    /// Applies the transformation; borrows the input when nothing changes.
    pub fn apply(self, input: &[u8]) -> Cow<'_, [u8]> {
        use Transform::*;
        match self {
            Lowercase => map_if(
                input,
                |b| b.is_ascii_uppercase(),
                |b| b.to_ascii_lowercase(),
            ),
            Uppercase => map_if(
                input,
                |b| b.is_ascii_lowercase(),
                |b| b.to_ascii_uppercase(),
            ),
            UrlDecode => when(input, b"%+", || url_decode(input, false)),
            UrlDecodeUni => when(input, b"%+", || url_decode(input, true)),
            UrlEncode => Cow::Owned(url_encode(input)),
            HtmlEntityDecode => when(input, b"&", || html_entity_decode(input)),
            JsDecode => when(input, b"\\", || js_decode(input)),
            CssDecode => when(input, b"\\", || css_decode(input)),
            EscapeSeqDecode => when(input, b"\\", || escape_seq_decode(input)),
            CmdLine => Cow::Owned(cmd_line(input)),
            CompressWhitespace => Cow::Owned(compress_whitespace(input)),
            RemoveWhitespace => filter(input, |b| !is_space(b) && b != 0xa0),
            RemoveNulls => filter(input, |b| b != 0),
            ReplaceNulls => map_if(input, |b| b == 0, |b| if b == 0 { b' ' } else { b }),
            ReplaceComments => when(input, b"/", || replace_comments(input)),
            RemoveComments => Cow::Owned(remove_comments(input)),
            RemoveCommentsChar => Cow::Owned(remove_comments_char(input)),
            NormalisePath => Cow::Owned(normalise_path(input, false)),
            NormalisePathWin => Cow::Owned(normalise_path(input, true)),
            Base64Decode => Cow::Owned(base64_decode(input, false)),
            Base64DecodeExt => Cow::Owned(base64_decode(input, true)),
            Base64Encode => Cow::Owned(base64_encode(input)),
            HexDecode => Cow::Owned(hex_decode(input)),
            HexEncode => Cow::Owned(hex_encode(input)),
            SqlHexDecode => when(input, b"0", || sql_hex_decode(input)),
            Length => Cow::Owned(input.len().to_string().into_bytes()),
            Utf8ToUnicode => Cow::Owned(utf8_to_unicode(input)),
            Sha1 => Cow::Owned(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input)
                    .as_ref()
                    .to_vec(),
            ),
            Trim => Cow::Borrowed(trim_right(trim_left(input))),
            TrimLeft => Cow::Borrowed(trim_left(input)),
            TrimRight => Cow::Borrowed(trim_right(input)),
            ParityEven7bit => Cow::Owned(input.iter().map(|&b| parity(b, true)).collect()),
            ParityOdd7bit => Cow::Owned(input.iter().map(|&b| parity(b, false)).collect()),
            ParityZero7bit => map_if(input, |b| b & 0x80 != 0, |b| b & 0x7f),
        }
    }
}

/// Runs `f` only when the input holds one of the trigger bytes (the common clean value is
/// then returned borrowed, without a copy).
fn when<'a>(input: &'a [u8], triggers: &[u8], f: impl FnOnce() -> Vec<u8>) -> Cow<'a, [u8]> {
    if input.iter().any(|b| triggers.contains(b)) {
        Cow::Owned(f())
    } else {
        Cow::Borrowed(input)
    }
}

fn map_if(input: &[u8], hit: impl Fn(u8) -> bool, map: impl Fn(u8) -> u8) -> Cow<'_, [u8]> {
    if input.iter().any(|&b| hit(b)) {
        Cow::Owned(input.iter().map(|&b| map(b)).collect())
    } else {
        Cow::Borrowed(input)
    }
}

fn filter(input: &[u8], keep: impl Fn(u8) -> bool) -> Cow<'_, [u8]> {
    if input.iter().all(|&b| keep(b)) {
        Cow::Borrowed(input)
    } else {
        Cow::Owned(input.iter().copied().filter(|&b| keep(b)).collect())
    }
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hex_val(a)? << 4 | hex_val(b)?)
}

fn all_hex(s: &[u8]) -> bool {
    s.iter().all(|b| b.is_ascii_hexdigit())
}

/// Value of a `%uHHHH`-style code as one byte: full-width ASCII (U+FF01..U+FF5E) folds to
/// ASCII, typographic and Latin-1 characters to their best-fit ASCII (the US-ASCII code page
/// 20127 that ModSecurity deployments configure with `SecUnicodeMapFile`), anything else
/// to its low byte.
fn unicode_byte(code: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&code) {
        return (code - 0xfee0) as u8;
    }
    match code {
        0x2018 | 0x2019 | 0x201a | 0x2032 => b'\'',
        0x201c | 0x201d | 0x201e | 0x2033 => b'"',
        0x2010..=0x2015 | 0x2212 => b'-',
        0x2024 => b'.',
        0x2026 => b'.',
        0x2039 => b'<',
        0x203a => b'>',
        0x00a0 => b' ',
        0x00a1 => b'!',
        0x00a2 => b'c',
        0x00a4 => b'$',
        0x00a5 => b'Y',
        0x00a6 => b'|',
        0x00a9 => b'C',
        0x00aa => b'a',
        0x00ab => b'<',
        0x00ad => b'-',
        0x00ae => b'R',
        0x00b2 => b'2',
        0x00b3 => b'3',
        0x00b7 => b'.',
        0x00b8 => b',',
        0x00b9 => b'1',
        0x00ba => b'o',
        0x00bb => b'>',
        0x00d0 => b'D',
        0x00c0..=0x00c6 => b'A',
        0x00c7 => b'C',
        0x00c8..=0x00cb => b'E',
        0x00cc..=0x00cf => b'I',
        0x00d1 => b'N',
        0x00d2..=0x00d6 | 0x00d8 => b'O',
        0x00d9..=0x00dc => b'U',
        0x00dd => b'Y',
        0x00e0..=0x00e6 => b'a',
        0x00e7 => b'c',
        0x00e8..=0x00eb => b'e',
        0x00ec..=0x00ef => b'i',
        0x00f1 => b'n',
        0x00f2..=0x00f6 | 0x00f8 => b'o',
        0x00f9..=0x00fc => b'u',
        0x00fd | 0x00ff => b'y',
        _ => (code & 0xff) as u8,
    }
}

fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'+' {
            out.push(b' ');
            i += 1;
            continue;
        }
        if c != b'%' {
            out.push(c);
            i += 1;
            continue;
        }
        if uni
            && matches!(input.get(i + 1), Some(b'u' | b'U'))
            && i + 6 <= input.len()
            && all_hex(&input[i + 2..i + 6])
        {
            out.push(unicode_byte(hex_code(&input[i + 2..i + 6])));
            i += 6;
            continue;
        }
        match (input.get(i + 1), input.get(i + 2)) {
            (Some(&a), Some(&b)) if hex2(a, b).is_some() => {
                out.push(hex2(a, b).unwrap_or(0));
                i += 3;
            }
            // Not an escape: the '%' is kept and decoding goes on after it.
            _ => {
                out.push(b'%');
                i += 1;
            }
        }
    }
    out
}

fn url_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3);
    for &b in input {
        if b == b' ' {
            out.push(b'+');
        } else if b.is_ascii_alphanumeric() || b == b'*' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'&' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let rest = &input[i + 1..];
        if rest.first() == Some(&b'#') {
            let (hex, digits_at) = match rest.get(1) {
                Some(b'x' | b'X') => (true, 2),
                _ => (false, 1),
            };
            let digits = rest
                .get(digits_at..)
                .unwrap_or_default()
                .iter()
                .take_while(|b| {
                    if hex {
                        b.is_ascii_hexdigit()
                    } else {
                        b.is_ascii_digit()
                    }
                })
                .count();
            if digits > 0 {
                let text = &rest[digits_at..digits_at + digits];
                let value = text.iter().fold(0u32, |a, &b| {
                    let d = u32::from(hex_val(b).unwrap_or(0));
                    if hex {
                        a.wrapping_mul(16).wrapping_add(d)
                    } else {
                        a.wrapping_mul(10).wrapping_add(d)
                    }
                });
                out.push(value as u8);
                i += 1 + digits_at + digits;
                if input.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
        } else {
            let name_len = rest
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            let name = &rest[..name_len];
            let decoded = match name.to_ascii_lowercase().as_slice() {
                b"quot" => Some(b'"'),
                b"amp" => Some(b'&'),
                b"lt" => Some(b'<'),
                b"gt" => Some(b'>'),
                b"nbsp" => Some(0xa0),
                _ => None,
            };
            if let Some(d) = decoded {
                out.push(d);
                i += 1 + name_len;
                if input.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
        }
        out.push(b'&');
        i += 1;
    }
    out
}

/// The value of up to eight hex digits (callers pass at most six).
fn hex_code(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |a, &b| a << 4 | u32::from(hex_val(b).unwrap_or(0)))
}

/// A code point as one byte the way ModSecurity's JS/CSS decoders do: full-width ASCII
/// folds to ASCII, anything else keeps its low byte.
fn fold_wide(code: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&code) {
        (code - 0xfee0) as u8
    } else {
        (code & 0xff) as u8
    }
}

/// Reads up to `max` octal digits from `start`; returns the byte and where reading stopped.
fn octal(input: &[u8], start: usize, max: usize) -> (u8, usize) {
    let mut v: u32 = 0;
    let mut j = start;
    while j < input.len() && j < start + max && (b'0'..=b'7').contains(&input[j]) {
        v = v * 8 + u32::from(input[j] - b'0');
        j += 1;
    }
    (v as u8, j)
}

/// The C single-letter escapes (`\a \b \f \n \r \t \v`).
fn c_escape(n: u8) -> Option<u8> {
    Some(match n {
        b'a' => 0x07,
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        _ => return None,
    })
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        if matches!(n, b'u' | b'U') && i + 6 <= input.len() && all_hex(&input[i + 2..i + 6]) {
            out.push(fold_wide(hex_code(&input[i + 2..i + 6])));
            i += 6;
        } else if matches!(n, b'x' | b'X')
            && i + 4 <= input.len()
            && hex2(input[i + 2], input[i + 3]).is_some()
        {
            out.push(hex2(input[i + 2], input[i + 3]).unwrap_or(0));
            i += 4;
        } else if (b'0'..=b'7').contains(&n) {
            // Up to three octal digits, but never beyond one byte.
            let (v, end) = octal(input, i + 1, if n <= b'3' { 3 } else { 2 });
            out.push(v);
            i = end;
        } else {
            out.push(c_escape(n).unwrap_or(n));
            i += 2;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= input.len() {
            // A trailing backslash is dropped.
            i += 1;
            continue;
        }
        let digits = input[i + 1..]
            .iter()
            .take(6)
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        if digits > 0 {
            let h = &input[i + 1..i + 1 + digits];
            out.push(fold_wide(hex_code(h)));
            i += 1 + digits;
            // One whitespace character ends the escape and is consumed with it.
            if i < input.len() && is_space(input[i]) {
                i += 1;
            }
        } else if input[i + 1] == b'\n' {
            // An escaped newline is a line continuation.
            i += 2;
        } else {
            out.push(input[i + 1]);
            i += 2;
        }
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        let simple = match n {
            b'\\' | b'?' | b'\'' | b'"' => Some(n),
            _ => c_escape(n),
        };
        if let Some(c) = simple {
            out.push(c);
            i += 2;
        } else if matches!(n, b'x' | b'X') {
            match (input.get(i + 2), input.get(i + 3)) {
                (Some(&a), Some(&b)) if hex2(a, b).is_some() => {
                    out.push(hex2(a, b).unwrap_or(0));
                    i += 4;
                }
                _ => {
                    // Not an escape: kept as written.
                    out.extend_from_slice(&input[i..i + 2]);
                    i += 2;
                }
            }
        } else if (b'0'..=b'7').contains(&n) {
            let (v, end) = octal(input, i + 1, 3);
            out.push(v);
            i = end;
        } else {
            out.push(n);
            i += 2;
        }
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'"' | b'\'' | b'\\' | b'^' => {}
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | b',' | b';' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                // Spaces before a switch or a parenthesis are dropped.
                if space {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            _ => {
                space = false;
                out.push(b.to_ascii_lowercase());
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) || b == 0xa0 {
            if !in_space {
                out.push(b' ');
                in_space = true;
            }
        } else {
            in_space = false;
            out.push(b);
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'/' && input.get(i + 1) == Some(&b'*') {
            out.push(b' ');
            match find(&input[i + 2..], b"*/") {
                Some(end) => i = i + 2 + end + 2,
                None => break,
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let mut in_c = false;
    let mut in_html = false;
    while i < input.len() {
        if in_c {
            if input[i] == b'*' && input.get(i + 1) == Some(&b'/') {
                in_c = false;
                i += 2;
            } else {
                i += 1;
            }
            continue;
        }
        if in_html {
            if input[i..].starts_with(b"-->") {
                in_html = false;
                i += 3;
            } else {
                i += 1;
            }
            continue;
        }
        if input[i..].starts_with(b"/*") {
            in_c = true;
            i += 2;
        } else if input[i..].starts_with(b"<!--") {
            in_html = true;
            i += 4;
        } else if input[i..].starts_with(b"--") || input[i] == b'#' {
            // A line comment runs to the end of the value.
            break;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    if in_c || in_html {
        // ModSecurity leaves a space (or, for a value that was all comment, a NUL) where
        // an unterminated comment began.
        out.push(b' ');
    } else if out.is_empty() && !input.is_empty() {
        out.push(0);
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
            i += if rest.starts_with(b"-->") { 3 } else { 2 };
        } else if rest.starts_with(b"<!--") {
            i += 4;
        } else if rest[0] == b'#' {
            i += 1;
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn normalise_path(input: &[u8], win: bool) -> Vec<u8> {
    let owned;
    let input = if win {
        owned = input
            .iter()
            .map(|&b| if b == b'\\' { b'/' } else { b })
            .collect::<Vec<u8>>();
        &owned[..]
    } else {
        input
    };
    let absolute = input.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in input.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            // ".." climbs; above the root of an absolute path it is dropped, in a relative
            // path it stays.
            b".." => match parts.last() {
                Some(&last) if last != b".." => {
                    parts.pop();
                }
                _ if absolute => {}
                _ => parts.push(seg),
            },
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(input.len());
    if absolute {
        out.push(b'/');
    }
    for (n, p) in parts.iter().enumerate() {
        if n > 0 {
            out.push(b'/');
        }
        out.extend_from_slice(p);
    }
    if input.ends_with(b"/") && !parts.is_empty() {
        out.push(b'/');
    }
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_val(b: u8) -> Option<u32> {
    match b {
        b'A'..=b'Z' => Some(u32::from(b - b'A')),
        b'a'..=b'z' => Some(u32::from(b - b'a') + 26),
        b'0'..=b'9' => Some(u32::from(b - b'0') + 52),
        b'+' | b'-' => Some(62),
        b'/' | b'_' => Some(63),
        _ => None,
    }
}

/// Decodes base64; stops at the first character that is not base64 (or, for the `Ext`
/// variant, skips it), so junk never makes the whole value vanish.
fn base64_decode(input: &[u8], skip_invalid: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let mut acc: u32 = 0;
    let mut n = 0;
    for &b in input {
        if b == b'=' {
            break;
        }
        match b64_val(b) {
            Some(v) => {
                acc = acc << 6 | v;
                n += 1;
                if n == 4 {
                    out.extend_from_slice(&[(acc >> 16) as u8, (acc >> 8) as u8, acc as u8]);
                    acc = 0;
                    n = 0;
                }
            }
            None if skip_invalid => {}
            None => break,
        }
    }
    match n {
        2 => out.push((acc >> 4) as u8),
        3 => out.extend_from_slice(&[(acc >> 10) as u8, (acc >> 2) as u8]),
        _ => {}
    }
    out
}

fn base64_encode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        out.push(B64[(v >> 18) as usize & 63]);
        out.push(B64[(v >> 12) as usize & 63]);
        out.push(if chunk.len() > 1 {
            B64[(v >> 6) as usize & 63]
        } else {
            b'='
        });
        out.push(if chunk.len() > 2 {
            B64[v as usize & 63]
        } else {
            b'='
        });
    }
    out
}

/// Hex to bytes; odd-length or non-hex input decodes to nothing (as ModSecurity does).
fn hex_decode(input: &[u8]) -> Vec<u8> {
    if input.len() % 2 != 0 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(input.len() / 2);
    for pair in input.chunks(2) {
        match hex2(pair[0], pair[1]) {
            Some(b) => out.push(b),
            None => return Vec::new(),
        }
    }
    out
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for &b in input {
        out.push(H[usize::from(b >> 4)]);
        out.push(H[usize::from(b & 15)]);
    }
    out
}

/// `0x414243` → `ABC` wherever such a literal appears.
fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'0'
            && matches!(input.get(i + 1), Some(b'x' | b'X'))
            && input.get(i + 2).is_some_and(|b| b.is_ascii_hexdigit())
            && input.get(i + 3).is_some_and(|b| b.is_ascii_hexdigit())
        {
            i += 2;
            while i + 1 < input.len() {
                match hex2(input[i], input[i + 1]) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => break,
                }
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Multi-byte UTF-8 characters become `%uHHHH`; ASCII and invalid bytes stay as they are.
fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 1,
        };
        if len > 1 && i + len <= input.len() {
            if let Ok(s) = std::str::from_utf8(&input[i..i + len]) {
                if let Some(c) = s.chars().next() {
                    out.extend_from_slice(format!("%u{:04x}", u32::from(c)).as_bytes());
                    i += len;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn trim_left(input: &[u8]) -> &[u8] {
    let start = input
        .iter()
        .position(|&b| !is_space(b))
        .unwrap_or(input.len());
    &input[start..]
}

fn trim_right(input: &[u8]) -> &[u8] {
    let end = input
        .iter()
        .rposition(|&b| !is_space(b))
        .map_or(0, |p| p + 1);
    &input[..end]
}

fn parity(b: u8, even: bool) -> u8 {
    let b = b & 0x7f;
    let ones = b.count_ones();
    let set = if even { ones % 2 == 1 } else { ones % 2 == 0 };
    if set {
        b | 0x80
    } else {
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, t) in NAMES {
            assert_eq!(Transform::parse(name), Some(*t));
            assert_eq!(Transform::parse(&name.to_ascii_uppercase()), Some(*t));
        }
        assert_eq!(Transform::parse("none"), None);
        assert_eq!(Transform::parse("nosuch"), None);
    }

    #[test]
    fn clean_values_are_not_copied() {
        for t in [
            Transform::Lowercase,
            Transform::UrlDecodeUni,
            Transform::HtmlEntityDecode,
            Transform::JsDecode,
            Transform::RemoveNulls,
        ] {
            assert!(matches!(t.apply(b"plain text"), Cow::Borrowed(_)), "{t:?}");
        }
    }

    #[test]
    fn hostile_inputs_stay_linear_and_bounded() {
        let big = vec![b'%'; 1 << 20];
        assert_eq!(Transform::UrlDecodeUni.apply(&big).len(), big.len());
        let ents = b"&#".repeat(1 << 18);
        assert_eq!(Transform::HtmlEntityDecode.apply(&ents).len(), ents.len());
        let b64 = vec![b'A'; 1 << 20];
        assert_eq!(Transform::Base64Decode.apply(&b64).len(), (1 << 20) / 4 * 3);
        let open = [b"x/*".as_slice(), &vec![b'*'; 1 << 20]].concat();
        assert_eq!(Transform::ReplaceComments.apply(&open).as_ref(), b"x ");
    }
}

/// The shared SecLang transformation vectors (`../shared/seclang-vectors`), when present.
#[cfg(test)]
mod vectors {
    use super::Transform;
    use std::path::Path;

    /// The vector files write bytes as `\xHH` and `\uHHHH` escapes inside JSON strings.
    fn unescape(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' {
                let hex = |from: usize, n: usize| {
                    b.get(from..from + n)
                        .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                        .and_then(|h| u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok())
                };
                if b.get(i + 1) == Some(&b'x') {
                    if let Some(v) = hex(i + 2, 2) {
                        out.push(v as u8);
                        i += 4;
                        continue;
                    }
                }
                if b.get(i + 1) == Some(&b'u') {
                    if let Some(c) = hex(i + 2, 4).and_then(char::from_u32) {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                        i += 6;
                        continue;
                    }
                }
            }
            out.push(b[i]);
            i += 1;
        }
        out
    }

    /// Vectors whose expected output is not ModSecurity v3's behaviour, with the reason.
    const NOT_MODSECURITY: &[(&str, &str)] = &[
        (
            "md5",
            "md5 is not used by any rule set cong loads; not implemented",
        ),
        (
            "cssDecode",
            "the vectors expect code points above 0xFF as UTF-8; ModSecurity keeps the low byte",
        ),
    ];

    #[test]
    fn seclang_transformation_vectors() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/seclang-vectors/transformations");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            eprintln!("no vectors at {}", dir.display());
            return;
        };
        let (mut passed, mut failed) = (0, Vec::new());
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(cases) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
                continue;
            };
            for case in cases {
                // The file names the transformation; some entries name the case instead.
                let path = e.path();
                let name = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default()
                    .to_string();
                if NOT_MODSECURITY.iter().any(|(n, _)| *n == name) {
                    continue;
                }
                let Some(t) = Transform::parse(&name) else {
                    failed.push(format!("{name}: not implemented"));
                    continue;
                };
                let input = unescape(case["input"].as_str().unwrap_or_default());
                let want = unescape(case["output"].as_str().unwrap_or_default());
                let got = t.apply(&input);
                if got.as_ref() == want.as_slice() {
                    passed += 1;
                } else {
                    let at = got.iter().zip(&want).take_while(|(a, b)| a == b).count();
                    let show = |v: &[u8]| {
                        String::from_utf8_lossy(
                            &v[at.saturating_sub(8).min(v.len())..(at + 24).min(v.len())],
                        )
                        .into_owned()
                    };
                    failed.push(format!(
                        "{name}: differs at byte {at}: got {:?}, want {:?} (input {:?})",
                        show(&got),
                        show(&want),
                        String::from_utf8_lossy(&input[..input.len().min(60)])
                    ));
                }
            }
        }
        assert!(
            failed.is_empty(),
            "{passed} passed, failures:\n{}",
            failed.join("\n")
        );
        assert!(passed > 300, "only {passed} vectors ran");
    }
}
