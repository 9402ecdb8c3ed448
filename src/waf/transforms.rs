//! SecLang transformations (`t:lowercase`, `t:urlDecodeUni`, ...): pure functions from bytes to
//! bytes with libmodsecurity 3.0.9's exact output, each linear in its input. Owns nothing but
//! the functions; caching of results per variable is the engine's job, and it must not know
//! about rules or transactions.
//!
//! "Exact" includes ModSecurity's quirks, because CRS verdicts depend on them: `cssDecode`
//! and `sqlHexDecode` stop at the first NUL, `sqlHexDecode` drops the last byte,
//! `removeComments` keeps the byte after a closing `*/`, `base64DecodeExt` gives nothing for
//! input ending in `9`/`=` at a bad position, `%u` escapes fold through the code page 20127
//! best-fit map (`SecUnicodeMapFile unicode.mapping 20127`, as deployments configure it), and
//! so on. Each function says where it departs from the obvious. They were checked byte for
//! byte against libmodsecurity 3.0.9 on generated inputs (`transforms/modsecurity-3.0.9.tsv`
//! keeps a sample that the tests replay).

use std::borrow::Cow;

mod cp20127;
mod md5;

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
    Md5,
    Trim,
    TrimLeft,
    TrimRight,
    ParityEven7bit,
    ParityOdd7bit,
    ParityZero7bit,
}

/// SecLang names; the first spelling of a transformation is the one `name` returns.
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
    ("md5", Transform::Md5),
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

    /// Applies the transformation; borrows the input when nothing changes. Time and memory
    /// are linear in the input (the largest output is `utf8toUnicode`'s, under 8× the input).
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
            UrlDecode => when(input, hits::url, || url_decode(input)),
            UrlDecodeUni => when(input, hits::url, || url_decode_uni(input, true)),
            UrlEncode => when(input, hits::url_encode, || url_encode(input)),
            HtmlEntityDecode => when(input, hits::entity, || html_entity_decode(input)),
            JsDecode => when(input, hits::backslash, || js_decode(input)),
            CssDecode => when(input, hits::css, || css_decode(input)),
            EscapeSeqDecode => when(input, hits::backslash, || escape_seq_decode(input)),
            CmdLine => {
                if cmd_line_changes(input) {
                    Cow::Owned(cmd_line(input))
                } else {
                    Cow::Borrowed(input)
                }
            }
            CompressWhitespace => {
                let changes = input.iter().enumerate().any(|(i, &b)| {
                    is_space(b) && (b != b' ' || input.get(i + 1).copied().is_some_and(is_space))
                });
                if changes {
                    Cow::Owned(compress_whitespace(input))
                } else {
                    Cow::Borrowed(input)
                }
            }
            RemoveWhitespace => filter(input, |b| !hits::white(b)),
            RemoveNulls => filter(input, |b| b != 0),
            ReplaceNulls => map_if(input, |b| b == 0, |b| if b == 0 { b' ' } else { b }),
            ReplaceComments => when(input, hits::slash, || replace_comments(input)),
            RemoveComments => when(input, hits::comments, || remove_comments(input)),
            RemoveCommentsChar => when(input, hits::comments_char, || remove_comments_char(input)),
            NormalisePath => when(input, hits::path, || normalise_path(input, false)),
            NormalisePathWin => when(input, hits::path_win, || normalise_path(input, true)),
            Base64Decode => Cow::Owned(base64_decode(input)),
            Base64DecodeExt => Cow::Owned(base64_decode_ext(input)),
            Base64Encode => Cow::Owned(base64_encode(input)),
            HexDecode => Cow::Owned(hex_decode(input)),
            HexEncode => Cow::Owned(hex_encode(input)),
            SqlHexDecode => Cow::Owned(sql_hex_decode(input)),
            Length => Cow::Owned(input.len().to_string().into_bytes()),
            Utf8ToUnicode => when(input, hits::utf8, || utf8_to_unicode(input)),
            Sha1 => Cow::Owned(
                ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, input)
                    .as_ref()
                    .to_vec(),
            ),
            Md5 => Cow::Owned(md5::digest(input).to_vec()),
            Trim => Cow::Borrowed(trim_right(trim_left(input))),
            TrimLeft => Cow::Borrowed(trim_left(input)),
            TrimRight => Cow::Borrowed(trim_right(input)),
            ParityEven7bit => map_if(input, |b| parity(b, true) != b, |b| parity(b, true)),
            ParityOdd7bit => map_if(input, |b| parity(b, false) != b, |b| parity(b, false)),
            ParityZero7bit => map_if(input, |b| b & 0x80 != 0, |b| b & 0x7f),
        }
    }
}

/// A set of byte values, a bit each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSet([u64; 4]);

impl ByteSet {
    pub const ALL: ByteSet = ByteSet([u64::MAX; 4]);
    pub const NONE: ByteSet = ByteSet([0; 4]);

    /// The bytes `value` holds.
    pub fn of(value: &[u8]) -> ByteSet {
        let mut s = [0u64; 4];
        for &b in value {
            s[b as usize / 64] |= 1 << (b % 64);
        }
        ByteSet(s)
    }

    /// The bytes for which `keep` holds.
    fn from_fn(keep: impl Fn(u8) -> bool) -> ByteSet {
        let mut s = ByteSet::NONE;
        for b in 0..=255u8 {
            if keep(b) {
                s.0[b as usize / 64] |= 1 << (b % 64);
            }
        }
        s
    }

    pub fn contains(self, b: u8) -> bool {
        self.0[b as usize / 64] & (1 << (b % 64)) != 0
    }

    pub fn is_subset(self, of: ByteSet) -> bool {
        (0..4).all(|w| self.0[w] & !of.0[w] == 0)
    }

    pub fn intersection(self, other: ByteSet) -> ByteSet {
        ByteSet([
            self.0[0] & other.0[0],
            self.0[1] & other.0[1],
            self.0[2] & other.0[2],
            self.0[3] & other.0[3],
        ])
    }
}

impl Transform {
    /// The bytes that cannot make this transformation change a value beyond ASCII case: a
    /// value made of them alone comes out equal to it, ignoring ASCII case. The set holds a
    /// letter only with its other case, so a chain keeps the intersection of its
    /// transformations' sets (each step leaves the bytes the same up to case). Lets a new
    /// value skip the chains it goes through unchanged (most values are numbers, tokens and
    /// plain words); the tests check every transformation against it.
    pub fn keeps(self) -> ByteSet {
        use Transform::*;
        let changes = |b: u8| -> bool {
            match self {
                Lowercase | Uppercase => false,
                UrlDecode | UrlDecodeUni => hits::url(b),
                UrlEncode => hits::url_encode(b),
                HtmlEntityDecode => hits::entity(b),
                JsDecode | EscapeSeqDecode => hits::backslash(b),
                CssDecode => hits::css(b),
                // `cmd_line_changes` with the uppercase letters left out (case only).
                CmdLine => matches!(
                    b,
                    b' ' | b'"' | b'\'' | b'\\' | b'^' | b',' | b';' | b'\t' | b'\r' | b'\n'
                ),
                CompressWhitespace | Trim | TrimLeft | TrimRight => is_space(b),
                RemoveWhitespace => hits::white(b),
                RemoveNulls | ReplaceNulls => b == 0,
                ReplaceComments => hits::slash(b),
                RemoveComments => hits::comments(b),
                RemoveCommentsChar => hits::comments_char(b),
                NormalisePath => hits::path(b),
                NormalisePathWin => hits::path_win(b),
                Utf8ToUnicode => hits::utf8(b),
                ParityEven7bit => parity(b, true) != b,
                ParityOdd7bit => parity(b, false) != b,
                ParityZero7bit => b & 0x80 != 0,
                Base64Decode | Base64DecodeExt | Base64Encode | HexDecode | HexEncode
                | SqlHexDecode | Length | Sha1 | Md5 => true,
            }
        };
        let other_case = |b: u8| {
            if b.is_ascii_lowercase() {
                b.to_ascii_uppercase()
            } else {
                b.to_ascii_lowercase()
            }
        };
        ByteSet::from_fn(|b| !changes(b) && !changes(other_case(b)))
    }
}

/// What `chain` keeps (see `Transform::keeps`): the intersection of its transformations' sets.
pub fn chain_keeps(chain: &[Transform]) -> ByteSet {
    chain
        .iter()
        .fold(ByteSet::ALL, |k, t| k.intersection(t.keeps()))
}

/// The bytes that can make a transformation change a value: without one of them it returns
/// the value as it is. `apply` skips the work on them and `Transform::keeps` builds its sets
/// from them, so the two cannot disagree.
mod hits {
    pub fn url(b: u8) -> bool {
        b == b'%' || b == b'+'
    }

    pub fn url_encode(b: u8) -> bool {
        !(b.is_ascii_alphanumeric() || b == b'*')
    }

    pub fn entity(b: u8) -> bool {
        b == b'&'
    }

    pub fn backslash(b: u8) -> bool {
        b == b'\\'
    }

    pub fn css(b: u8) -> bool {
        b == b'\\' || b == 0
    }

    /// `removeWhitespace` also drops NBSP (0xA0, and 0xC2 leading it in UTF-8).
    pub fn white(b: u8) -> bool {
        super::is_space(b) || b == 0xa0 || b == 0xc2
    }

    pub fn slash(b: u8) -> bool {
        b == b'/'
    }

    pub fn comments(b: u8) -> bool {
        matches!(b, b'/' | b'<' | b'-' | b'#')
    }

    pub fn comments_char(b: u8) -> bool {
        matches!(b, b'/' | b'*' | b'<' | b'-' | b'#')
    }

    pub fn path(b: u8) -> bool {
        b == b'/' || b == b'.'
    }

    pub fn path_win(b: u8) -> bool {
        b == b'/' || b == b'.' || b == b'\\'
    }

    pub fn utf8(b: u8) -> bool {
        b >= 0x80 || b == 0
    }
}

/// Runs `f` only when some byte could change the value (the common clean value is then
/// returned borrowed, without a copy).
fn when<'a>(
    input: &'a [u8],
    hit: impl Fn(u8) -> bool,
    f: impl FnOnce() -> Vec<u8>,
) -> Cow<'a, [u8]> {
    if input.iter().any(|&b| hit(b)) {
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

/// C `isspace` in the "C" locale (the locale nginx and ModSecurity run in): bytes ≥ 0x80,
/// NBSP included, are not spaces.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn is_hex(b: u8) -> bool {
    b.is_ascii_hexdigit()
}

/// ModSecurity's `x2c`: two hex digits to a byte, with its arithmetic on anything else
/// (`hexDecode` feeds it unchecked bytes).
fn x2c(a: u8, b: u8) -> u8 {
    xdigit(a).wrapping_mul(16).wrapping_add(xdigit(b))
}

fn xdigit(c: u8) -> u8 {
    if c >= b'A' {
        ((c & 0xdf).wrapping_sub(b'A')).wrapping_add(10)
    } else {
        c.wrapping_sub(b'0')
    }
}

fn url_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'%' if i + 2 < input.len() && is_hex(input[i + 1]) && is_hex(input[i + 2]) => {
                out.push(x2c(input[i + 1], input[i + 2]));
                i += 3;
                continue;
            }
            // An invalid or short escape keeps its '%' and decoding goes on after it.
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `urlDecode` plus IIS `%uHHHH`. With `best_fit`, code points go through the code page
/// 20127 map; unmapped ones (and all of them without the map) keep their low byte, full-width
/// ASCII (U+FF01..U+FF5E) folding to ASCII.
fn url_decode_uni(input: &[u8], best_fit: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    let n = input.len();
    while i < n {
        let c = input[i];
        if c == b'%' && i + 1 < n && matches!(input[i + 1], b'u' | b'U') {
            if i + 5 < n && input[i + 2..i + 6].iter().all(|&b| is_hex(b)) {
                let code = u16::from(x2c(input[i + 2], input[i + 3])) << 8
                    | u16::from(x2c(input[i + 4], input[i + 5]));
                let mapped = if best_fit {
                    cp20127::lookup(code)
                } else {
                    None
                };
                out.push(mapped.unwrap_or_else(|| {
                    let low = code as u8;
                    if low > 0 && low < 0x5f && code >> 8 == 0xff {
                        low + 0x20
                    } else {
                        low
                    }
                }));
                i += 6;
            } else {
                // Not a valid %u escape: "%u" is kept as written.
                out.extend_from_slice(&input[i..i + 2]);
                i += 2;
            }
            continue;
        }
        match c {
            b'%' if i + 2 < n && is_hex(input[i + 1]) && is_hex(input[i + 2]) => {
                out.push(x2c(input[i + 1], input[i + 2]));
                i += 3;
                continue;
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn url_encode(input: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 3);
    for &b in input {
        if b == b' ' {
            out.push(b'+');
        } else if b.is_ascii_alphanumeric() || b == b'*' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', H[usize::from(b >> 4)], H[usize::from(b & 15)]]);
        }
    }
    out
}

/// Value of a run of digits as C `strtol` gives it, cast to a byte: overflow saturates at
/// `LONG_MAX`, whose low byte is 0xFF.
fn strtol_byte(digits: &[u8], radix: u32) -> u8 {
    let mut v: u64 = 0;
    for &d in digits {
        let x = u64::from(if radix == 16 { xdigit(d) } else { d - b'0' });
        v = match v
            .checked_mul(u64::from(radix))
            .and_then(|v| v.checked_add(x))
        {
            Some(v) if v <= i64::MAX as u64 => v,
            _ => return 0xff,
        };
    }
    v as u8
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if input[i] == b'&' && i + 1 < n {
            let mut j = i + 1;
            if input[j] == b'#' {
                // "&#" needs at least one more byte, "&#x" too.
                if j + 1 < n {
                    j += 1;
                    let hex = matches!(input[j], b'x' | b'X');
                    if !hex || j + 1 < n {
                        if hex {
                            j += 1;
                        }
                        let k = j;
                        while j < n
                            && (if hex {
                                is_hex(input[j])
                            } else {
                                input[j].is_ascii_digit()
                            })
                        {
                            j += 1;
                        }
                        if j > k {
                            out.push(strtol_byte(&input[k..j], if hex { 16 } else { 10 }));
                            i = if j < n && input[j] == b';' { j + 1 } else { j };
                            continue;
                        }
                    }
                }
            } else {
                let k = j;
                while j < n && input[j].is_ascii_alphanumeric() {
                    j += 1;
                }
                let decoded = match input[k..j].to_ascii_lowercase().as_slice() {
                    b"quot" => Some(b'"'),
                    b"amp" => Some(b'&'),
                    b"lt" => Some(b'<'),
                    b"gt" => Some(b'>'),
                    b"nbsp" => Some(0xa0),
                    _ => None,
                };
                if let Some(d) = decoded {
                    out.push(d);
                    i = if j < n && input[j] == b';' { j + 1 } else { j };
                    continue;
                }
            }
        }
        // Not an entity: the '&' is kept and decoding goes on after it (the bytes ModSecurity
        // copies along with it cannot start an entity themselves).
        out.push(input[i]);
        i += 1;
    }
    out
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

fn is_odigit(b: u8) -> bool {
    (b'0'..=b'7').contains(&b)
}

/// Up to three octal digits after `input[from - 1]`: their count.
fn octal_run(input: &[u8], from: usize) -> usize {
    input[from..]
        .iter()
        .take(3)
        .take_while(|&&b| is_odigit(b))
        .count()
}

fn octal_value(digits: &[u8]) -> u32 {
    digits
        .iter()
        .fold(0u32, |v, &d| v * 8 + u32::from(d - b'0'))
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 5 < n && input[i + 1] == b'u' && input[i + 2..i + 6].iter().all(|&b| is_hex(b)) {
            // Low byte only; full-width ASCII folds to ASCII.
            let low = x2c(input[i + 4], input[i + 5]);
            let wide = matches!(input[i + 2], b'f' | b'F') && matches!(input[i + 3], b'f' | b'F');
            out.push(if low > 0 && low < 0x5f && wide {
                low + 0x20
            } else {
                low
            });
            i += 6;
        } else if i + 3 < n && input[i + 1] == b'x' && is_hex(input[i + 2]) && is_hex(input[i + 3])
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if i + 1 < n && is_odigit(input[i + 1]) {
            // Up to three octal digits, two when three would not fit in a byte.
            let mut len = octal_run(input, i + 1);
            if len == 3 && input[i + 1] > b'3' {
                len = 2;
            }
            out.push(octal_value(&input[i + 1..i + 1 + len]) as u8);
            i += 1 + len;
        } else if i + 1 < n {
            out.push(c_escape(input[i + 1]).unwrap_or(input[i + 1]));
            i += 2;
        } else {
            // A trailing backslash stays.
            out.push(b'\\');
            i += 1;
        }
    }
    out
}

/// CSS 2 escapes. ModSecurity returns the decoded value only up to its first NUL (it builds
/// the result from a C string), so a NUL in the input or from `\0` ends the value.
fn css_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= n {
            // A trailing backslash is dropped.
            break;
        }
        i += 1;
        let j = input[i..]
            .iter()
            .take(6)
            .take_while(|&&b| is_hex(b))
            .count();
        if j > 0 {
            let h = &input[i..i + j];
            let low = if j == 1 {
                xdigit(h[0])
            } else {
                x2c(h[j - 2], h[j - 1])
            };
            // Four digits, or more with leading zeros, are checked for full-width ASCII.
            let full_check = match j {
                4 => true,
                5 => h[0] == b'0',
                6 => h[0] == b'0' && h[1] == b'0',
                _ => false,
            };
            let wide =
                full_check && matches!(h[j - 3], b'f' | b'F') && matches!(h[j - 4], b'f' | b'F');
            out.push(if wide && low > 0 && low < 0x5f {
                low + 0x20
            } else {
                low
            });
            i += j;
            // One whitespace after a hex escape belongs to it.
            if i < n && is_space(input[i]) {
                i += 1;
            }
        } else if input[i] == b'\n' {
            // An escaped newline is a line continuation.
            i += 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    }
    out
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        if input[i] != b'\\' || i + 1 >= n {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let e = input[i + 1];
        if let Some(c) = c_escape(e).or(match e {
            b'\\' | b'?' | b'\'' | b'"' => Some(e),
            _ => None,
        }) {
            out.push(c);
            i += 2;
        } else if matches!(e, b'x' | b'X')
            && i + 3 < n
            && is_hex(input[i + 2])
            && is_hex(input[i + 3])
        {
            out.push(x2c(input[i + 2], input[i + 3]));
            i += 4;
        } else if is_odigit(e) {
            // Up to three digits; the value is cut to a byte.
            let len = octal_run(input, i + 1);
            out.push(octal_value(&input[i + 1..i + 1 + len]) as u8);
            i += 1 + len;
        } else {
            // Unknown escape (or `\x` without two hex digits): the backslash goes.
            out.push(e);
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
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                // A space before a switch or a parenthesis is dropped.
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

/// Whether `cmd_line` would change the value (clean words separated by single spaces do not).
fn cmd_line_changes(input: &[u8]) -> bool {
    let mut space = false;
    for &b in input {
        match b {
            b' ' if space => return true,
            b' ' => space = true,
            b'/' | b'(' if space => return true,
            b'"' | b'\'' | b'\\' | b'^' | b',' | b';' | b'\t' | b'\r' | b'\n' => return true,
            b if b.is_ascii_uppercase() => return true,
            _ => space = false,
        }
    }
    false
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut in_space = false;
    for &b in input {
        if is_space(b) {
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
    let n = input.len();
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    let mut in_comment = false;
    while i < n {
        if !in_comment {
            if input[i] == b'/' && i + 1 < n && input[i + 1] == b'*' {
                in_comment = true;
                i += 2;
            } else {
                out.push(input[i]);
                i += 1;
            }
        } else if input[i] == b'*' && i + 1 < n && input[i + 1] == b'/' {
            in_comment = false;
            out.push(b' ');
            i += 2;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

/// Drops `/* */` and `<!-- -->` comments and everything from `--` or `#` on. As in
/// ModSecurity, the byte right after a comment's end is copied unexamined (a NUL when the
/// value ends there) and an unterminated comment leaves a space.
fn remove_comments(input: &[u8]) -> Vec<u8> {
    let n = input.len();
    let at = |k: usize| input.get(k).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    let mut in_comment = false;
    while i < n {
        if !in_comment {
            if input[i] == b'/' && at(i + 1) == b'*' {
                in_comment = true;
                i += 2;
            } else if input[i..].starts_with(b"<!--") {
                in_comment = true;
                i += 4;
            } else if input[i] == b'-' && at(i + 1) == b'-' || input[i] == b'#' {
                break;
            } else {
                out.push(input[i]);
                i += 1;
            }
        } else if input[i] == b'*' && at(i + 1) == b'/' {
            in_comment = false;
            out.push(at(i + 2));
            i += 3;
        } else if input[i..].starts_with(b"-->") {
            in_comment = false;
            out.push(at(i + 3));
            i += 4;
        } else {
            i += 1;
        }
    }
    if in_comment {
        out.push(b' ');
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        i += if rest.starts_with(b"/*") || rest.starts_with(b"*/") {
            2
        } else if rest.starts_with(b"<!--") {
            4
        } else if rest.starts_with(b"-->") {
            3
        } else if rest.starts_with(b"--") {
            2
        } else if rest[0] == b'#' {
            1
        } else {
            out.push(rest[0]);
            1
        };
    }
    out
}

/// ModSecurity's in-place path normaliser, step for step (its corner cases — `..` above the
/// root, relative paths, runs of slashes, the trailing slash — are what rules see).
fn normalise_path(input: &[u8], win: bool) -> Vec<u8> {
    let len = input.len();
    if len == 0 {
        return Vec::new();
    }
    let mut buf = input.to_vec();
    let is_sep = |b: u8| b == b'/' || (win && b == b'\\');
    let end = len - 1;
    let relative = !is_sep(buf[0]);
    let trailing = is_sep(buf[end]);
    let (mut src, mut dst) = (0usize, 0usize);
    let mut hitroot = false;
    let mut done = false;
    while !done && src <= end && dst <= end {
        if win {
            if buf[src] == b'\\' {
                buf[src] = b'/';
            }
            if src < end && buf[src + 1] == b'\\' {
                buf[src + 1] = b'/';
            }
        }
        // `skip_copy` is ModSecurity's jump past the copy to the next segment.
        let mut skip_copy = false;
        let mut normalise = true;
        if src == end {
            done = true;
        } else if buf[src + 1] != b'/' {
            normalise = false;
        }
        if normalise {
            if src != end && buf[src] == b'/' {
                // An empty segment: the copy below collapses it.
            } else if buf[src] == b'.' {
                if dst > 0 && buf[dst - 1] == b'.' {
                    if relative && (hitroot || dst <= 2) {
                        // No segment to remove: the back-reference stays.
                        hitroot = true;
                    } else {
                        // Remove "/.." and the previous segment, never above the root.
                        let mut d = dst as isize - 3;
                        while d > 0 && buf[d as usize] != b'/' {
                            d -= 1;
                        }
                        if d <= 0 {
                            hitroot = true;
                            d = 0;
                            if !relative && src == end {
                                d = 1;
                            }
                        }
                        dst = d as usize;
                        if done {
                            skip_copy = true;
                        } else {
                            src += 1;
                        }
                    }
                } else if dst == 0 {
                    // A leading self-reference of a relative path.
                    if done {
                        skip_copy = true;
                    } else {
                        src += 1;
                    }
                } else if buf[dst - 1] == b'/' {
                    // A self-reference.
                    if done {
                        skip_copy = true;
                    } else {
                        dst -= 1;
                        src += 1;
                    }
                }
            } else if dst > 0 {
                hitroot = false;
            }
        }
        if !skip_copy {
            if buf[src] == b'/' {
                // Collapse a run of slashes to its last one.
                while src < end && is_sep(buf[src + 1]) {
                    src += 1;
                }
                if relative && dst == 0 {
                    src += 1;
                    continue;
                }
            }
            buf[dst] = buf[src];
            dst += 1;
            src += 1;
        }
    }
    if !trailing && dst > 0 && buf[dst - 1] == b'/' {
        dst -= 1;
    }
    buf.truncate(dst);
    buf
}

/// Standard base64 value of a byte, `=` as 64 (mbedTLS's decoding map).
fn b64_std(b: u8) -> Option<u8> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        b'=' => 64,
        _ => return None,
    })
}

/// Strict RFC 4648 decoding as mbedTLS 2 does it for ModSecurity: the value up to its first
/// NUL; line breaks and trailing spaces are allowed; any other bad byte (or misplaced `=`)
/// makes the result empty; a final group of fewer than four characters is dropped.
fn base64_decode(input: &[u8]) -> Vec<u8> {
    let src = &input[..input.iter().position(|&b| b == 0).unwrap_or(input.len())];
    let n = src.len();
    let (mut i, mut pads) = (0, 0);
    while i < n {
        let mut spaces = 0;
        while i < n && src[i] == b' ' {
            i += 1;
            spaces += 1;
        }
        if i == n {
            break;
        }
        if (n - i >= 2 && src[i] == b'\r' && src[i + 1] == b'\n') || src[i] == b'\n' {
            i += 1;
            continue;
        }
        if spaces != 0 {
            return Vec::new();
        }
        if src[i] == b'=' {
            pads += 1;
            if pads > 2 {
                return Vec::new();
            }
        }
        match b64_std(src[i]) {
            None => return Vec::new(),
            Some(v) if v < 64 && pads != 0 => return Vec::new(),
            Some(_) => {}
        }
        i += 1;
    }
    let mut out = Vec::with_capacity(n / 4 * 3 + 3);
    let (mut keep, mut quad, mut acc) = (3u32, 0, 0u32);
    for &b in src {
        if matches!(b, b'\r' | b'\n' | b' ') {
            continue;
        }
        let v = b64_std(b).unwrap_or(0);
        if v == 64 {
            keep = keep.saturating_sub(1);
        }
        acc = acc << 6 | u32::from(v & 0x3f);
        quad += 1;
        if quad == 4 {
            quad = 0;
            let bytes = [(acc >> 16) as u8, (acc >> 8) as u8, acc as u8];
            out.extend_from_slice(&bytes[..keep as usize]);
        }
    }
    out
}

/// ModSecurity's forgiving decoder: skips bytes outside the alphabet and `=`, keeps complete
/// bytes. It gives nothing when a `=` not followed by another `=` comes one character into a
/// group, or when the value ends one character into a group on a `=` or a `9` (its end check
/// compares the decoded value of the last character, 61 for `9`, with `'='`).
fn base64_decode_ext(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 3);
    let (mut i, mut acc) = (0usize, 0u32);
    let mut last: i32 = 0;
    for (k, &b) in input.iter().enumerate() {
        if b == b'=' {
            last = i32::from(b'=');
            if input.get(k + 1).copied().unwrap_or(0) != b'=' && i % 4 == 1 {
                return Vec::new();
            }
            continue;
        }
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => {
                last = -1;
                continue;
            }
        };
        last = i32::from(v);
        acc = acc << 6 | u32::from(v);
        match i % 4 {
            1 => out.push((acc >> 4) as u8),
            2 => out.push((acc >> 2) as u8),
            3 => out.push(acc as u8),
            _ => {}
        }
        i += 1;
    }
    if last == i32::from(b'=') && i % 4 == 1 {
        return Vec::new();
    }
    out
}

fn base64_encode(input: &[u8]) -> Vec<u8> {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
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

/// Pairs of characters to bytes through `x2c`, unchecked (non-hex input gives ModSecurity's
/// arithmetic, not an error); an odd last character is dropped.
fn hex_decode(input: &[u8]) -> Vec<u8> {
    input.chunks_exact(2).map(|p| x2c(p[0], p[1])).collect()
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

/// `0x414243` → `ABC` wherever such a literal appears. ModSecurity's loop never looks at the
/// last byte (it is dropped unless a hex run consumes it) and the result ends at the first
/// NUL, input or decoded.
fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let len = input.len();
    let at = |k: usize| input.get(k).copied().unwrap_or(0);
    let mut out = Vec::with_capacity(len);
    // `r` is the read position; the C loop runs while `r + 1 < len` and the byte is not NUL.
    let mut r = 0usize;
    while r + 1 < len && input[r] != 0 {
        if input[r] == b'0'
            && at(r + 1).eq_ignore_ascii_case(&b'x')
            && is_hex(at(r + 2))
            && is_hex(at(r + 3))
        {
            r += 2;
            while is_hex(at(r)) && is_hex(at(r + 1)) {
                out.push(x2c(at(r), at(r + 1)));
                r += 2;
            }
        }
        // The loop's increment copies one byte, also right after a hex run.
        out.push(at(r));
        r += 1;
    }
    if let Some(nul) = out.iter().position(|&b| b == 0) {
        out.truncate(nul);
    }
    out
}

/// Multi-byte UTF-8 sequences become `%uHHHH` (lowercase hex, at least four digits). As in
/// ModSecurity: a lead byte without its continuation bytes is dropped, stray continuation
/// and 0xF8..0xFF bytes are kept, overlong and surrogate sequences are followed by their raw
/// lead byte, 0xF5..0xF7 leads are also written raw before the escape, and NULs vanish.
fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    let at = |k: usize| input.get(k).copied().unwrap_or(0);
    let cont = |k: usize| at(k) & 0xc0 == 0x80;
    let mut out = Vec::with_capacity(input.len() * 2);
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        let (len, d) = if c & 0x80 == 0 {
            if c != 0 {
                out.push(c);
            }
            (0, 0)
        } else if c & 0xe0 == 0xc0 {
            if cont(i + 1) {
                (2, u32::from(c & 0x1f) << 6 | u32::from(at(i + 1) & 0x3f))
            } else {
                (0, 0)
            }
        } else if c & 0xf0 == 0xe0 {
            if cont(i + 1) && cont(i + 2) {
                let d = u32::from(c & 0x0f) << 12
                    | u32::from(at(i + 1) & 0x3f) << 6
                    | u32::from(at(i + 2) & 0x3f);
                (3, d)
            } else {
                (0, 0)
            }
        } else if c & 0xf8 == 0xf0 {
            if c >= 0xf5 {
                out.push(c);
            }
            if cont(i + 1) && cont(i + 2) && cont(i + 3) {
                let d = u32::from(c & 0x07) << 18
                    | u32::from(at(i + 1) & 0x3f) << 12
                    | u32::from(at(i + 2) & 0x3f) << 6
                    | u32::from(at(i + 3) & 0x3f);
                (4, d)
            } else {
                (0, 0)
            }
        } else {
            out.push(c);
            (0, 0)
        };
        if len > 0 {
            out.extend_from_slice(b"%u");
            let digits = (32 - d.leading_zeros()).div_ceil(4).max(4);
            for k in (0..digits).rev() {
                out.push(H[((d >> (4 * k)) & 15) as usize]);
            }
        }
        if (0xd800..=0xdfff).contains(&d) {
            out.push(c);
        }
        let overlong = match len {
            4 => d < 0x1_0000,
            3 => d < 0x800,
            2 => d < 0x80,
            _ => false,
        };
        if overlong {
            out.push(c);
        }
        i += len.max(1);
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

/// Sets or clears bit 7 by the parity of the whole byte (bit 7 included, as ModSecurity
/// computes it).
fn parity(b: u8, even: bool) -> u8 {
    let odd = b.count_ones() % 2 == 1;
    if odd == even {
        b | 0x80
    } else {
        b & 0x7f
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
        assert_eq!(Transform::NormalisePath.name(), "normalisePath");
    }

    #[test]
    fn clean_values_are_not_copied() {
        for t in [
            Transform::Lowercase,
            Transform::UrlDecode,
            Transform::UrlDecodeUni,
            Transform::HtmlEntityDecode,
            Transform::JsDecode,
            Transform::CssDecode,
            Transform::CmdLine,
            Transform::CompressWhitespace,
            Transform::RemoveNulls,
            Transform::RemoveComments,
            Transform::ReplaceComments,
            Transform::Utf8ToUnicode,
            Transform::Trim,
        ] {
            assert!(matches!(t.apply(b"plain text"), Cow::Borrowed(_)), "{t:?}");
        }
        assert!(matches!(
            Transform::NormalisePath.apply(b"plain"),
            Cow::Borrowed(_)
        ));
    }

    /// A deterministic stream of numbers (xorshift64).
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed | 1;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    /// Values of up to 24 bytes drawn from `set`.
    fn values_of(set: ByteSet, n: usize, next: &mut impl FnMut() -> u64) -> Vec<Vec<u8>> {
        let bytes: Vec<u8> = (0..=255u8).filter(|&b| set.contains(b)).collect();
        if bytes.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| {
                let len = (next() % 25) as usize;
                (0..len)
                    .map(|_| bytes[(next() % bytes.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    #[test]
    fn values_of_the_bytes_a_transformation_keeps_come_out_the_same_up_to_case() {
        let mut next = rng(0x9e37_79b9_7f4a_7c15);
        for &(name, t) in NAMES {
            let keeps = t.keeps();
            // A letter only with its other case.
            for b in b'a'..=b'z' {
                assert_eq!(
                    keeps.contains(b),
                    keeps.contains(b.to_ascii_uppercase()),
                    "{name}"
                );
            }
            for v in values_of(keeps, 3000, &mut next) {
                let out = t.apply(&v);
                assert!(
                    out.eq_ignore_ascii_case(&v),
                    "{name} changed {v:?} to {out:?}"
                );
            }
        }
        let all: Vec<Transform> = NAMES.iter().map(|&(_, t)| t).collect();
        for _ in 0..3000 {
            let chain: Vec<Transform> = (0..1 + next() % 4)
                .map(|_| all[(next() % all.len() as u64) as usize])
                .collect();
            for v in values_of(chain_keeps(&chain), 4, &mut next) {
                let out = chain
                    .iter()
                    .fold(v.clone(), |cur, t| t.apply(&cur).into_owned());
                assert!(
                    out.eq_ignore_ascii_case(&v),
                    "{chain:?} changed {v:?} to {out:?}"
                );
            }
        }
        // What the sets are for: plain tokens skip the common chains; the bytes that start
        // an encoding, an entity, a comment or a path step do not.
        let plain = ByteSet::of(b"GA1.2.1000000123.1700000000");
        let crs = [
            Transform::Lowercase,
            Transform::UrlDecodeUni,
            Transform::HtmlEntityDecode,
            Transform::JsDecode,
            Transform::CssDecode,
            Transform::RemoveNulls,
            Transform::CmdLine,
        ];
        assert!(plain.is_subset(chain_keeps(&crs)));
        assert!(ByteSet::of(b"48213").is_subset(chain_keeps(&[Transform::NormalisePath])));
        assert!(!plain.is_subset(chain_keeps(&[Transform::NormalisePath])));
        for (t, b) in [
            (Transform::UrlDecodeUni, b'%'),
            (Transform::UrlDecode, b'+'),
            (Transform::HtmlEntityDecode, b'&'),
            (Transform::JsDecode, b'\\'),
            (Transform::ReplaceComments, b'/'),
            (Transform::CmdLine, b' '),
            (Transform::Utf8ToUnicode, 0xc3),
        ] {
            assert!(!t.keeps().contains(b), "{t:?} {b}");
        }
        assert_eq!(Transform::Length.keeps(), ByteSet::NONE);
        assert_eq!(chain_keeps(&[]), ByteSet::ALL);
    }

    #[test]
    fn modsecurity_quirks() {
        let t = |t: Transform, s: &[u8]| t.apply(s).into_owned();
        assert_eq!(t(Transform::CssDecode, b"Test\0Case"), b"Test");
        assert_eq!(t(Transform::SqlHexDecode, b"abc"), b"ab");
        assert_eq!(t(Transform::SqlHexDecode, b"0x414243"), b"ABC");
        assert_eq!(t(Transform::RemoveComments, b"/*x*/"), b"\0");
        assert_eq!(
            t(Transform::UrlDecodeUni, b"%u00e9%uFF01%u2026%u4e2d"),
            b"e!.-"
        );
        assert_eq!(
            t(Transform::HtmlEntityDecode, b"&#99999999999999999999;&#x41"),
            b"\xffA"
        );
        assert_eq!(t(Transform::EscapeSeqDecode, b"\\xZZ\\777"), b"xZZ\xff");
        assert_eq!(t(Transform::ParityEven7bit, b"\x80"), b"\x80");
        assert_eq!(t(Transform::Base64Decode, b"QUJD"), b"ABC");
        assert_eq!(t(Transform::Base64Decode, b"QUJ"), b"");
        assert_eq!(t(Transform::Base64Decode, b"QU!D"), b"");
        assert_eq!(t(Transform::Base64DecodeExt, b"QU!JD"), b"ABC");
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
        let dots = b"/..".repeat(1 << 18);
        assert_eq!(Transform::NormalisePath.apply(&dots).as_ref(), b"");
        let wide = "\u{10ffff}".repeat(1 << 16);
        let out = Transform::Utf8ToUnicode.apply(wide.as_bytes());
        assert_eq!(out.len(), 8 << 16);
    }

    /// Every transformation on large hostile values: linear output bounds (and, run in the
    /// suite, no quadratic blow-up).
    #[test]
    fn every_transformation_is_bounded() {
        let n = 1 << 18;
        let inputs: Vec<Vec<u8>> = vec![
            vec![0u8; n],
            vec![0xc0; n],
            b"%u".repeat(n / 2),
            b"\\".repeat(n / 2),
            b"&#x".repeat(n / 3),
            b"/*".repeat(n / 2),
            b"<!--".repeat(n / 4),
            b"../".repeat(n / 3),
            b"0x".repeat(n / 2),
            "\u{10ffff}".repeat(n / 4).into_bytes(),
            (0..n).map(|i| (i * 7919 % 251) as u8).collect(),
        ];
        for (name, t) in NAMES {
            for input in &inputs {
                let out = t.apply(input);
                assert!(
                    out.len() <= 4 * input.len() + 64,
                    "{name}: {} bytes from {}",
                    out.len(),
                    input.len()
                );
            }
        }
    }

    /// A `%u` escape decodes the same through the map-less path when it is plain ASCII.
    #[test]
    fn url_decode_uni_without_map() {
        assert_eq!(url_decode_uni(b"%u00e9%uff01", false), b"\xe9!");
    }
}

#[cfg(test)]
/// The vector files' byte notation, as ModSecurity's own runner reads it: after JSON
/// decoding, a literal `\xHH` is the byte 0xHH and a literal `\uHHHH` the byte of its
/// low eight bits.
pub(crate) fn json2bin(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    for (marker, digits) in [(b'x', 2usize), (b'u', 4)] {
        while let Some(at) = (0..v.len()).find(|&i| {
            v[i] == b'\\'
                && v.get(i + 1) == Some(&marker)
                && v.len() >= i + 2 + digits
                && v[i + 2..i + 2 + digits]
                    .iter()
                    .all(u8::is_ascii_alphanumeric)
        }) {
            let hex = &v[at + 2..at + 2 + digits];
            let run = hex.iter().take_while(|b| b.is_ascii_hexdigit()).count();
            let value = u32::from_str_radix(std::str::from_utf8(&hex[..run]).unwrap_or("0"), 16)
                .unwrap_or(0) as u8;
            v.splice(at..at + 2 + digits, [value]);
        }
    }
    v
}

/// Replays cases recorded from libmodsecurity 3.0.9 (`transforms/modsecurity-3.0.9.tsv`:
/// name, input hex, output hex, `-` for empty; `urlDecodeUni:20127` lines ran with the
/// code page 20127 map loaded, plain `urlDecodeUni` lines without a map). Set
/// `CONG_WAF_TFN_CASES` to a file in the same format to replay more.
#[cfg(test)]
mod recorded {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        if s == "-" {
            return Vec::new();
        }
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    }

    fn replay(text: &str) -> (usize, Vec<String>) {
        let (mut passed, mut failed) = (0, Vec::new());
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let f: Vec<&str> = line.split('\t').collect();
            let [name, input, want] = f[..] else {
                failed.push(format!("bad line {line}"));
                continue;
            };
            let (input, want) = (unhex(input), unhex(want));
            let got = match name {
                "urlDecodeUni:20127" => url_decode_uni(&input, true),
                "urlDecodeUni" => url_decode_uni(&input, false),
                _ => match Transform::parse(name) {
                    Some(t) => t.apply(&input).into_owned(),
                    None => {
                        failed.push(format!("{name}: unknown"));
                        continue;
                    }
                },
            };
            if got == want {
                passed += 1;
            } else if failed.len() < 40 {
                failed.push(format!(
                    "{name}({}) = {} want {}",
                    String::from_utf8_lossy(&input).escape_debug(),
                    String::from_utf8_lossy(&got).escape_debug(),
                    String::from_utf8_lossy(&want).escape_debug()
                ));
            } else {
                failed.push(String::new());
            }
        }
        (passed, failed)
    }

    #[test]
    fn libmodsecurity_3_0_9_outputs() {
        let mut text = include_str!("transforms/modsecurity-3.0.9.tsv").to_string();
        if let Ok(path) = std::env::var("CONG_WAF_TFN_CASES") {
            text.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
        }
        let (passed, failed) = replay(&text);
        eprintln!("{passed} recorded transformation cases pass");
        assert!(
            failed.is_empty(),
            "{passed} passed, {} failed:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert!(passed > 1000, "only {passed} cases");
    }
}

/// The shared SecLang transformation vectors (`../shared/seclang-vectors`), when present.
#[cfg(test)]
mod vectors {
    use super::{json2bin, Transform};
    use std::path::Path;

    /// Vectors whose expected output is not libmodsecurity 3.0.9's, with the reason (checked
    /// against the library itself; its own unit-test runner reads these files through C
    /// strings, so inputs and outputs are cut at a NUL there, which hides the differences).
    const NOT_MODSECURITY: &[(&str, &[u8], &str)] = &[
        (
            "cssDecode",
            b"Test\0Case",
            "libmodsecurity returns the decoded value up to its first NUL: \"Test\"",
        ),
        (
            "cssDecode",
            b"test\\a\\b\\f\\n\\r\\t\\v\\?\\'\\\"\\\0\\12\\123\\1234\\12345\\123456\\ff01\\ff5e\\\n\\\0  string",
            "up to the first NUL (from \\\\\\0) as above, and libmodsecurity keeps the low byte \
             of code points above 0xFF where the vector expects UTF-8",
        ),
        (
            "cssDecode",
            b"\\1A\\1 A\\1234567\\123456 7\\1x\\1 x",
            "low byte of \\123456 (0x56 'V'), where the vector expects U+FFFD",
        ),
        (
            "hexDecode",
            b"01234567890z",
            "libmodsecurity decodes pairs without checking them (\"\\x01#Eg\\x89#\"), not \"\"",
        ),
        (
            "hexDecode",
            b"54657374004",
            "libmodsecurity drops the odd last digit (\"Test\\0\"), not \"\"",
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
        let (mut passed, mut skipped, mut failed) = (0, 0, Vec::new());
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(cases) = serde_json::from_str::<Vec<serde_json::Value>>(&text) else {
                failed.push(format!("{}: not JSON", e.path().display()));
                continue;
            };
            for case in cases {
                // Most entries name the transformation, some name the case (then the file
                // names the transformation).
                let path = e.path();
                let stem = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .unwrap_or_default();
                let name = case["name"]
                    .as_str()
                    .filter(|n| Transform::parse(n).is_some())
                    .unwrap_or(stem);
                let input = json2bin(case["input"].as_str().unwrap_or_default());
                let want = json2bin(case["output"].as_str().unwrap_or_default());
                if NOT_MODSECURITY
                    .iter()
                    .any(|(n, i, _)| *n == name && input == *i)
                {
                    skipped += 1;
                    continue;
                }
                let Some(t) = Transform::parse(name) else {
                    failed.push(format!("{name}: not implemented"));
                    continue;
                };
                let got = t.apply(&input);
                if got.as_ref() == want.as_slice() {
                    passed += 1;
                } else {
                    failed.push(format!(
                        "{name}({:?}) = {:?}, want {:?}",
                        String::from_utf8_lossy(&input),
                        String::from_utf8_lossy(&got),
                        String::from_utf8_lossy(&want),
                    ));
                }
            }
        }
        eprintln!("{passed} transformation vectors pass, {skipped} skipped");
        assert!(
            failed.is_empty(),
            "{passed} passed, {} failures:\n{}",
            failed.len(),
            failed.join("\n")
        );
        assert!(passed > 300, "only {passed} vectors ran");
    }
}
