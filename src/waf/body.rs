//! Request body processors (urlencoded, multipart, JSON, XML) that turn a streamed body into the
//! variables rules inspect. Owns parsing and its limits; it never keeps more than the inspection
//! limit of a body and never decides anything about a request.

/// What a body yields for the rules.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    /// ARGS_POST (name, value) in order; JSON is flattened (`json.a.b`) as ModSecurity does.
    pub args: Vec<(Vec<u8>, Vec<u8>)>,
    /// Multipart file parts.
    pub files: Vec<FilePart>,
    /// Extra named variables set by the processor (e.g. `MULTIPART_STRICT_ERROR` → "1",
    /// `MULTIPART_BOUNDARY_QUOTED`, `FILES_COMBINED_SIZE`), keyed by upper-case name.
    pub vars: Vec<(&'static str, Vec<u8>)>,
    /// MULTIPART_PART_HEADERS values (one entry per header line of every part).
    pub part_headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// XML values by the XPath ModSecurity rules ask for: `/*` (the document's text, once)
    /// and `//@*` (every attribute value).
    pub xml: Vec<(&'static str, Vec<u8>)>,
    /// REQBODY_ERROR / REQBODY_ERROR_MSG: set when the body could not be parsed.
    pub error: Option<String>,
}

/// One uploaded file of a multipart body: field name, file name, size (body not kept).
#[derive(Debug, Default, Clone)]
pub struct FilePart {
    pub field: Vec<u8>,
    pub filename: Vec<u8>,
    pub size: u64,
}

/// Which processor reads the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UrlEncoded,
    Multipart,
    Json,
    Xml,
}

impl Kind {
    /// Picks the processor for a Content-Type the way ModSecurity does by default
    /// (`ctl:requestBodyProcessor` may override it).
    pub fn for_content_type(ct: &str) -> Option<Kind> {
        let ct = ct.trim_start().to_ascii_lowercase();
        if ct.starts_with("application/x-www-form-urlencoded") {
            Some(Kind::UrlEncoded)
        } else if ct.starts_with("multipart/form-data") {
            Some(Kind::Multipart)
        } else if ct.starts_with("application/json") {
            Some(Kind::Json)
        } else if ct.starts_with("text/xml")
            || ct.starts_with("application/xml")
            || ct.starts_with("application/soap+xml")
        {
            Some(Kind::Xml)
        } else {
            None
        }
    }
}

/// Limits that bound a processor in time and memory.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes inspected; the rest of the body streams past uninspected.
    pub inspect_bytes: usize,
    pub max_args: usize,
    pub max_json_depth: usize,
}

/// Incremental parser: fed the body chunk by chunk as it streams.
pub trait Processor: Send + Sync {
    fn feed(&mut self, chunk: &[u8]);
    fn finish(self: Box<Self>) -> Parsed;
}

/// Creates a processor. `content_type` is the full header (multipart needs its boundary).
pub fn processor(kind: Kind, content_type: &str, limits: Limits) -> Box<dyn Processor> {
    let _ = content_type;
    match kind {
        Kind::UrlEncoded => Box::new(UrlEncoded::new(limits)),
        Kind::Json => Box::new(Json {
            limits,
            buf: Vec::new(),
            truncated: false,
        }),
        Kind::Multipart => Box::new(Multipart {
            boundary: multipart_boundary(content_type),
            limits,
            buf: Vec::new(),
            total: 0,
        }),
        Kind::Xml => Box::new(Xml {
            limits,
            buf: Vec::new(),
            truncated: false,
        }),
    }
}

/// XML (`text/xml`, `application/xml`, SOAP): a small well-formedness-checking tokenizer, no
/// DTD processing and no external entities (nothing is fetched or expanded beyond the five
/// predefined entities and character references). Yields the document's text for `XML:/*`
/// and each attribute value for `XML://@*`; a malformed document sets REQBODY_ERROR.
struct Xml {
    limits: Limits,
    buf: Vec<u8>,
    truncated: bool,
}

impl Processor for Xml {
    fn feed(&mut self, chunk: &[u8]) {
        let room = self.limits.inspect_bytes.saturating_sub(self.buf.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn finish(self: Box<Self>) -> Parsed {
        let mut out = Parsed::default();
        match xml_scan(&self.buf, self.limits) {
            Ok((text, attrs)) => {
                out.xml.push(("/*", text));
                out.xml.extend(attrs.into_iter().map(|a| ("//@*", a)));
            }
            Err(e) if !self.truncated => out.error = Some(format!("XML parsing error: {e}")),
            Err(_) => out.error = Some("XML body larger than the inspection limit".into()),
        }
        out
    }
}

/// Decodes `&lt;`-style entities and character references (unknown ones are kept as written).
fn xml_unescape(s: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'&' {
            if let Some(end) = s[i..].iter().take(12).position(|b| *b == b';') {
                let ent = &s[i + 1..i + end];
                let rep: Option<Vec<u8>> = match ent {
                    b"lt" => Some(b"<".to_vec()),
                    b"gt" => Some(b">".to_vec()),
                    b"amp" => Some(b"&".to_vec()),
                    b"quot" => Some(b"\"".to_vec()),
                    b"apos" => Some(b"'".to_vec()),
                    [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .map(|c| c.to_string().into_bytes()),
                    [b'#', dec @ ..] => std::str::from_utf8(dec)
                        .ok()
                        .and_then(|d| d.parse::<u32>().ok())
                        .and_then(char::from_u32)
                        .map(|c| c.to_string().into_bytes()),
                    _ => None,
                };
                if let Some(r) = rep {
                    out.extend_from_slice(&r);
                    i += end + 1;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
}

/// Scans a document: (all text content, attribute values), or why it is not well-formed.
fn xml_scan(doc: &[u8], limits: Limits) -> Result<(Vec<u8>, Vec<Vec<u8>>), String> {
    let mut text = Vec::new();
    let mut attrs = Vec::new();
    let mut stack: Vec<&[u8]> = Vec::new();
    let mut seen_root = false;
    let mut i = 0;
    let find = |from: usize, pat: &[u8]| -> Option<usize> {
        doc[from..]
            .windows(pat.len())
            .position(|w| w == pat)
            .map(|p| from + p)
    };
    while i < doc.len() {
        if doc[i] != b'<' {
            let end = doc[i..]
                .iter()
                .position(|b| *b == b'<')
                .map_or(doc.len(), |p| i + p);
            let chunk = &doc[i..end];
            if stack.is_empty() {
                if !chunk.iter().all(|b| b.is_ascii_whitespace()) {
                    return Err("text outside the root element".into());
                }
            } else {
                xml_unescape(chunk, &mut text);
            }
            i = end;
            continue;
        }
        let rest = &doc[i..];
        if rest.starts_with(b"<!--") {
            i = find(i + 4, b"-->").ok_or("unterminated comment")? + 3;
        } else if rest.starts_with(b"<![CDATA[") {
            let end = find(i + 9, b"]]>").ok_or("unterminated CDATA section")?;
            if stack.is_empty() {
                return Err("CDATA outside the root element".into());
            }
            text.extend_from_slice(&doc[i + 9..end]);
            i = end + 3;
        } else if rest.starts_with(b"<?") {
            i = find(i + 2, b"?>").ok_or("unterminated processing instruction")? + 2;
        } else if rest.starts_with(b"<!") {
            // DOCTYPE: skipped, never processed (internal subsets included).
            let mut depth = 0usize;
            let mut j = i + 2;
            loop {
                match doc.get(j) {
                    None => return Err("unterminated DOCTYPE".into()),
                    Some(b'[') => depth += 1,
                    Some(b']') => depth = depth.saturating_sub(1),
                    Some(b'>') if depth == 0 => break,
                    _ => {}
                }
                j += 1;
            }
            i = j + 1;
        } else if rest.starts_with(b"</") {
            let end = find(i, b">").ok_or("unterminated end tag")?;
            let name = doc[i + 2..end].trim_ascii();
            match stack.pop() {
                Some(open) if open == name => {}
                _ => return Err("mismatched end tag".into()),
            }
            i = end + 1;
        } else {
            // Start tag: name, attributes, `/>` or `>`.
            let mut j = i + 1;
            let name_start = j;
            while j < doc.len() && !doc[j].is_ascii_whitespace() && doc[j] != b'>' && doc[j] != b'/'
            {
                j += 1;
            }
            let name = &doc[name_start..j];
            if name.is_empty() {
                return Err("empty element name".into());
            }
            let self_closing;
            loop {
                while j < doc.len() && doc[j].is_ascii_whitespace() {
                    j += 1;
                }
                match doc.get(j) {
                    None => return Err("unterminated start tag".into()),
                    Some(b'>') => {
                        self_closing = false;
                        j += 1;
                        break;
                    }
                    Some(b'/') if doc.get(j + 1) == Some(&b'>') => {
                        self_closing = true;
                        j += 2;
                        break;
                    }
                    _ => {}
                }
                let an = j;
                while j < doc.len()
                    && doc[j] != b'='
                    && !doc[j].is_ascii_whitespace()
                    && doc[j] != b'>'
                {
                    j += 1;
                }
                if an == j {
                    return Err("malformed attribute".into());
                }
                while j < doc.len() && doc[j].is_ascii_whitespace() {
                    j += 1;
                }
                if doc.get(j) != Some(&b'=') {
                    return Err("attribute without a value".into());
                }
                j += 1;
                while j < doc.len() && doc[j].is_ascii_whitespace() {
                    j += 1;
                }
                let q = match doc.get(j) {
                    Some(q @ (b'"' | b'\'')) => *q,
                    _ => return Err("unquoted attribute value".into()),
                };
                let vs = j + 1;
                let ve = doc[vs..]
                    .iter()
                    .position(|b| *b == q)
                    .ok_or("unterminated attribute value")?
                    + vs;
                let mut v = Vec::new();
                xml_unescape(&doc[vs..ve], &mut v);
                if attrs.len() < limits.max_args {
                    attrs.push(v);
                }
                j = ve + 1;
            }
            if stack.is_empty() && seen_root {
                return Err("more than one root element".into());
            }
            seen_root = true;
            if !self_closing {
                if stack.len() >= limits.max_json_depth.max(1) * 4 {
                    return Err("elements nested too deep".into());
                }
                stack.push(name);
            }
            i = j;
        }
    }
    if !stack.is_empty() || !seen_root {
        return Err("document ends inside an element or has no root element".into());
    }
    Ok((text, attrs))
}

/// `application/x-www-form-urlencoded` the way ModSecurity stores ARGS_POST: pairs split on `&`,
/// name and value split on the first `=` (no `=` gives an empty value), `+` becomes a space,
/// valid `%XX` is decoded and invalid escapes are kept as they are (and flagged in
/// `URLENCODED_ERROR`). State is one pending pair, so any chunk split gives the same result and
/// the work is linear in the inspected bytes.
struct UrlEncoded {
    limits: Limits,
    seen: usize,
    name: Vec<u8>,
    value: Vec<u8>,
    in_value: bool,
    out: Parsed,
    bad_escape: bool,
    dropped_args: bool,
}

impl UrlEncoded {
    fn new(limits: Limits) -> Self {
        UrlEncoded {
            limits,
            seen: 0,
            name: Vec::new(),
            value: Vec::new(),
            in_value: false,
            out: Parsed::default(),
            bad_escape: false,
            dropped_args: false,
        }
    }

    fn end_pair(&mut self) {
        let name = std::mem::take(&mut self.name);
        let value = std::mem::take(&mut self.value);
        let had_eq = std::mem::replace(&mut self.in_value, false);
        if name.is_empty() && value.is_empty() && !had_eq {
            return;
        }
        if self.out.args.len() >= self.limits.max_args {
            self.dropped_args = true;
            return;
        }
        let name = url_decode(&name, &mut self.bad_escape);
        let value = url_decode(&value, &mut self.bad_escape);
        self.out.args.push((name, value));
    }
}

impl Processor for UrlEncoded {
    fn feed(&mut self, chunk: &[u8]) {
        let room = self.limits.inspect_bytes.saturating_sub(self.seen);
        let chunk = &chunk[..chunk.len().min(room)];
        self.seen += chunk.len();
        for &b in chunk {
            match b {
                b'&' => self.end_pair(),
                b'=' if !self.in_value => self.in_value = true,
                _ if self.in_value => self.value.push(b),
                _ => self.name.push(b),
            }
        }
    }

    fn finish(mut self: Box<Self>) -> Parsed {
        self.end_pair();
        if self.bad_escape {
            self.out.vars.push(("URLENCODED_ERROR", b"1".to_vec()));
        }
        if self.dropped_args {
            self.out.error = Some(format!(
                "too many arguments (more than {})",
                self.limits.max_args
            ));
        }
        self.out
    }
}

/// ModSecurity's non-strict URL decoding: `+` → space, valid `%XX` → byte, anything else kept.
fn url_decode(input: &[u8], bad: &mut bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input
                    .get(i + 1..i + 3)
                    .and_then(|h| Some((hex_val(h[0])?, hex_val(h[1])?)));
                if let Some((hi, lo)) = hex {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                *bad = true;
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

fn hex_val(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// JSON flattened to ARGS the way libmodsecurity names them: `json.a.b` for object members and
/// `json.list.array_0` for array elements. The body is kept only up to the inspection limit and
/// parsed at the end; nesting deeper than `max_json_depth` is a body error, not a stack risk.
struct Json {
    limits: Limits,
    buf: Vec<u8>,
    truncated: bool,
}

impl Processor for Json {
    fn feed(&mut self, chunk: &[u8]) {
        let room = self.limits.inspect_bytes.saturating_sub(self.buf.len());
        if chunk.len() > room {
            self.truncated = true;
        }
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn finish(self: Box<Self>) -> Parsed {
        let mut out = Parsed::default();
        if self.truncated {
            out.error = Some("JSON body larger than the inspection limit".into());
            return out;
        }
        if self.buf.iter().all(u8::is_ascii_whitespace) {
            return out;
        }
        // serde_json refuses nesting past 128 levels itself; max_json_depth is checked below.
        let value: serde_json::Value = match serde_json::from_slice(&self.buf) {
            Ok(v) => v,
            Err(e) => {
                out.error = Some(format!("JSON parse error: {e}"));
                return out;
            }
        };
        let mut path = b"json".to_vec();
        if let Err(e) = flatten(&value, &mut path, 0, &self.limits, &mut out) {
            out.error = Some(e);
        }
        out
    }
}

fn flatten(
    v: &serde_json::Value,
    path: &mut Vec<u8>,
    depth: usize,
    limits: &Limits,
    out: &mut Parsed,
) -> Result<(), String> {
    use serde_json::Value;
    if depth > limits.max_json_depth {
        return Err(format!(
            "JSON nesting deeper than {}",
            limits.max_json_depth
        ));
    }
    let leaf = |out: &mut Parsed, path: &[u8], val: Vec<u8>| {
        if out.args.len() >= limits.max_args {
            return Err(format!(
                "too many arguments (more than {})",
                limits.max_args
            ));
        }
        out.args.push((path.to_vec(), val));
        Ok(())
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let len = path.len();
                path.push(b'.');
                path.extend_from_slice(k.as_bytes());
                let r = flatten(child, path, depth + 1, limits, out);
                path.truncate(len);
                r?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let len = path.len();
                path.extend_from_slice(format!(".array_{i}").as_bytes());
                let r = flatten(child, path, depth + 1, limits, out);
                path.truncate(len);
                r?;
            }
            Ok(())
        }
        Value::String(s) => leaf(out, path, s.as_bytes().to_vec()),
        Value::Null => leaf(out, path, Vec::new()),
        other => leaf(out, path, other.to_string().into_bytes()),
    }
}

/// `multipart/form-data`: the inspected prefix of the body (up to the inspection limit) is kept
/// and split at the end into parts; text parts become ARGS_POST, file parts only count their
/// size. A body cut by the inspection limit or a malformed structure sets
/// `MULTIPART_STRICT_ERROR`, which the recommended ModSecurity setup blocks on
/// (rule 200003).
struct Multipart {
    boundary: Option<Vec<u8>>,
    limits: Limits,
    buf: Vec<u8>,
    total: u64,
}

/// The `boundary=` parameter of a multipart Content-Type (quotes removed).
fn multipart_boundary(ct: &str) -> Option<Vec<u8>> {
    let lower = ct.to_ascii_lowercase();
    let at = lower.find("boundary=")? + "boundary=".len();
    let raw = ct[at..].split(';').next()?.trim();
    let b = raw.trim_matches('"');
    (!b.is_empty()).then(|| b.as_bytes().to_vec())
}

impl Processor for Multipart {
    fn feed(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let room = self.limits.inspect_bytes.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
    }

    fn finish(self: Box<Self>) -> Parsed {
        let mut out = Parsed::default();
        let Some(boundary) = self.boundary else {
            out.error = Some("multipart body without a boundary".into());
            out.vars.push(("MULTIPART_STRICT_ERROR", b"1".to_vec()));
            return out;
        };
        let truncated = self.total > self.buf.len() as u64;
        let mut delim = b"--".to_vec();
        delim.extend_from_slice(&boundary);
        let finder = find_all(&self.buf, &delim);
        let mut strict = false;
        let mut lf_line = false;
        let mut combined: u64 = 0;
        let starts: Vec<usize> = finder;
        if starts.is_empty() {
            strict = true;
        }
        for w in 0..starts.len() {
            let begin = starts[w] + delim.len();
            let rest = &self.buf[begin..];
            if rest.starts_with(b"--") {
                break; // closing delimiter
            }
            let end = starts.get(w + 1).copied().unwrap_or(self.buf.len());
            let mut part = &self.buf[begin..end];
            // Lines end in CRLF; bare LF is accepted and flagged (MULTIPART_LF_LINE).
            part = match part.strip_prefix(b"\r\n") {
                Some(p) => p,
                None => match part.strip_prefix(b"\n") {
                    Some(p) => {
                        lf_line = true;
                        p
                    }
                    None => {
                        strict = true;
                        part
                    }
                },
            };
            let (hdr_end, sep) = match (find(part, b"\r\n\r\n"), find(part, b"\n\n")) {
                (Some(a), Some(b)) if b + 1 < a => (b, 2),
                (Some(a), _) => (a, 4),
                (None, Some(b)) => (b, 2),
                (None, None) => {
                    strict = true;
                    continue;
                }
            };
            if sep == 2 {
                lf_line = true;
            }
            let headers = &part[..hdr_end];
            let mut body = &part[hdr_end + sep..];
            if w + 1 < starts.len() {
                body = match body.strip_suffix(b"\r\n") {
                    Some(b) => b,
                    None => body.strip_suffix(b"\n").unwrap_or(body),
                };
            }
            let (mut name, mut filename) = (None, None);
            let mut lines = Vec::new();
            for line in headers.split(|&b| b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let Some(colon) = line.iter().position(|&b| b == b':') else {
                    strict = true;
                    continue;
                };
                let (k, v) = (&line[..colon], line[colon + 1..].trim_ascii());
                lines.push(line.to_vec());
                if k.eq_ignore_ascii_case(b"content-disposition") {
                    name = disposition_param(v, b"name");
                    filename = disposition_param(v, b"filename");
                }
            }
            // MULTIPART_PART_HEADERS is keyed by the part's name.
            let key = name.clone().unwrap_or_default();
            out.part_headers
                .extend(lines.into_iter().map(|l| (key.clone(), l)));
            let Some(name) = name else {
                strict = true;
                continue;
            };
            match filename {
                Some(filename) => {
                    combined += body.len() as u64;
                    out.files.push(FilePart {
                        field: name,
                        filename,
                        size: body.len() as u64,
                    });
                }
                None if out.args.len() < self.limits.max_args => {
                    out.args.push((name, body.to_vec()));
                }
                None => out.error = Some("too many arguments".into()),
            }
        }
        if truncated {
            out.vars.push(("INBOUND_BODY_TRUNCATED", b"1".to_vec()));
        }
        if lf_line {
            out.vars.push(("MULTIPART_LF_LINE", b"1".to_vec()));
        }
        if strict {
            out.vars.push(("MULTIPART_STRICT_ERROR", b"1".to_vec()));
            out.error
                .get_or_insert_with(|| "malformed multipart body".into());
        }
        out.vars
            .push(("FILES_COMBINED_SIZE", combined.to_string().into_bytes()));
        out
    }
}

/// Every start offset of `needle` in `hay` (non-overlapping); cost is body length × boundary
/// length, and RFC 2046 caps boundaries at 70 bytes.
fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = find(&hay[at..], needle) {
        out.push(at + i);
        at += i + needle.len();
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `name="..."` / `filename="..."` of a Content-Disposition value.
fn disposition_param(v: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    // `form-data; name="a;b"; filename="x.pdf"`: split on `;` outside quotes.
    let mut items = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, &b) in v.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => {
                items.push(&v[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&v[start..]);
    for item in items.into_iter().skip(1) {
        let item = item.trim_ascii();
        let Some(eq) = item.iter().position(|&b| b == b'=') else {
            continue;
        };
        if item[..eq].trim_ascii().eq_ignore_ascii_case(key) {
            let val = item[eq + 1..].trim_ascii();
            let val = val
                .strip_prefix(b"\"")
                .and_then(|x| x.strip_suffix(b"\""))
                .unwrap_or(val);
            return Some(val.to_vec());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            inspect_bytes: 1 << 20,
            max_args: 1000,
            max_json_depth: 64,
        }
    }

    fn parse(kind: Kind, ct: &str, body: &[u8], split: Option<usize>) -> Parsed {
        let mut p = processor(kind, ct, limits());
        match split {
            Some(at) => {
                p.feed(&body[..at]);
                p.feed(&body[at..]);
            }
            None => p.feed(body),
        }
        p.finish()
    }

    fn pairs(p: &Parsed) -> Vec<(String, String)> {
        p.args
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn urlencoded_like_modsecurity() {
        let body = "ho_ten=Nguy%E1%BB%85n+V%C4%83n+A&q=a%3Db&flag&&x=1=2&bad=%zz%4";
        let p = parse(
            Kind::UrlEncoded,
            "application/x-www-form-urlencoded",
            body.as_bytes(),
            None,
        );
        let got = pairs(&p);
        assert_eq!(
            got,
            vec![
                ("ho_ten".into(), "Nguyễn Văn A".into()),
                ("q".into(), "a=b".into()),
                ("flag".into(), "".into()),
                ("x".into(), "1=2".into()),
                ("bad".into(), "%zz%4".into()),
            ]
        );
        assert!(p.vars.iter().any(|(k, _)| *k == "URLENCODED_ERROR"));
        assert!(p.error.is_none());
    }

    #[test]
    fn urlencoded_same_result_for_every_split() {
        let body = b"a=1&b=%C4%91%E1%BA%A5t+n%C6%B0%E1%BB%9Bc&c&d=x%2";
        let whole = pairs(&parse(Kind::UrlEncoded, "", body, None));
        for at in 0..=body.len() {
            assert_eq!(
                pairs(&parse(Kind::UrlEncoded, "", body, Some(at))),
                whole,
                "split {at}"
            );
        }
    }

    #[test]
    fn urlencoded_bounded_args_and_bytes() {
        let body = "a=1&".repeat(20_000);
        let p = parse(Kind::UrlEncoded, "", body.as_bytes(), None);
        assert_eq!(p.args.len(), 1000);
        assert!(p.error.is_some());

        let mut p = processor(
            Kind::UrlEncoded,
            "",
            Limits {
                inspect_bytes: 5,
                ..limits()
            },
        );
        p.feed(b"abc=123456789");
        assert_eq!(pairs(&p.finish()), vec![("abc".into(), "1".into())]);
    }

    #[test]
    fn json_flattened_like_libmodsecurity() {
        let body =
            r#"{"ho_ten":"Trần Thị Bình","dia_chi":{"tinh":"Huế"},"sdt":["0912",5],"ok":true}"#;
        let p = parse(Kind::Json, "application/json", body.as_bytes(), None);
        let mut got = pairs(&p);
        got.sort();
        let mut want: Vec<(String, String)> = vec![
            ("json.ho_ten".into(), "Trần Thị Bình".into()),
            ("json.dia_chi.tinh".into(), "Huế".into()),
            ("json.sdt.array_0".into(), "0912".into()),
            ("json.sdt.array_1".into(), "5".into()),
            ("json.ok".into(), "true".into()),
        ];
        want.sort();
        assert_eq!(got, want);
        for at in 0..=body.len() {
            let mut split = pairs(&parse(Kind::Json, "", body.as_bytes(), Some(at)));
            split.sort();
            assert_eq!(split, want, "split {at}");
        }
    }

    #[test]
    fn json_hostile_inputs_are_errors() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(parse(Kind::Json, "", deep.as_bytes(), None).error.is_some());
        let very_deep = "[".repeat(100_000);
        assert!(parse(Kind::Json, "", very_deep.as_bytes(), None)
            .error
            .is_some());
        assert!(parse(Kind::Json, "", b"{\"a\":", None).error.is_some());
        let many = format!("[{}0]", "0,".repeat(5000));
        let p = parse(Kind::Json, "", many.as_bytes(), None);
        assert_eq!(p.args.len(), 1000);
        assert!(p.error.is_some());
    }

    #[test]
    fn multipart_fields_and_files() {
        let ct = "multipart/form-data; boundary=----XyZ";
        let body = "------XyZ\r\nContent-Disposition: form-data; name=\"ho_ten\"\r\n\r\nLê Văn Tám\r\n\
------XyZ\r\nContent-Disposition: form-data; name=\"don\"; filename=\"don.pdf\"\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4 abc\r\n\
------XyZ--\r\n";
        let whole = parse(Kind::Multipart, ct, body.as_bytes(), None);
        assert_eq!(pairs(&whole), vec![("ho_ten".into(), "Lê Văn Tám".into())]);
        assert_eq!(whole.files.len(), 1);
        assert_eq!(whole.files[0].filename, b"don.pdf");
        assert_eq!(whole.files[0].size, 12);
        assert!(whole.error.is_none(), "{:?}", whole.error);
        for at in 0..=body.len() {
            let p = parse(Kind::Multipart, ct, body.as_bytes(), Some(at));
            assert_eq!(pairs(&p), pairs(&whole));
            assert_eq!(p.files.len(), 1);
        }
        let bad = parse(Kind::Multipart, ct, b"garbage", None);
        assert!(bad.vars.iter().any(|(k, _)| *k == "MULTIPART_STRICT_ERROR"));
    }
}
