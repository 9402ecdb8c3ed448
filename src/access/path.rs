//! Path patterns of rules and limits, matched against a normalised request path so that
//! `/QuanTri`, `//quantri`, `/x/../quantri`, `/%71uantri` and `/quantri;jsessionid=1` cannot
//! slip past a rule written for `/quantri/**`.

/// A compiled pattern: segments, with `*` for any one segment and a final `**` for any rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Seg>,
    /// Ends with `**`: the path itself and everything below it.
    subtree: bool,
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Lit(String),
    Any,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<PathPattern, String> {
        if !s.starts_with('/') || s.contains('?') || s.contains('#') {
            return Err(format!(
                "`{s}` must be a path starting with `/`, without query"
            ));
        }
        let mut segments = Vec::new();
        let mut subtree = false;
        let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        for (i, p) in parts.iter().enumerate() {
            match *p {
                "**" if i + 1 == parts.len() => subtree = true,
                "**" => return Err(format!("`{s}`: `**` may only end a pattern")),
                "*" => segments.push(Seg::Any),
                p if p.contains('*') => return Err(format!("`{s}`: `*` must be a whole segment")),
                p => segments.push(Seg::Lit(p.to_ascii_lowercase())),
            }
        }
        Ok(PathPattern {
            segments,
            subtree,
            source: s.to_string(),
        })
    }

    /// The first literal segment (used to index rules), `None` when it is a wildcard.
    pub fn first_literal(&self) -> Option<&str> {
        match self.segments.first() {
            Some(Seg::Lit(s)) => Some(s),
            _ => None,
        }
    }

    /// Matches segments of a normalised path.
    pub fn matches(&self, path: &[&str]) -> bool {
        if path.len() < self.segments.len() || (!self.subtree && path.len() != self.segments.len())
        {
            return false;
        }
        self.segments.iter().zip(path).all(|(s, p)| match s {
            Seg::Any => true,
            Seg::Lit(l) => l == p,
        })
    }
}

/// Lower-cased, percent-decoded path with empty, `.` and `..` segments resolved and `;params`
/// removed.
pub fn normalize(raw: &str) -> String {
    // Most paths are already normal: one copy, no decoding.
    let plain = raw.starts_with('/')
        && !raw.ends_with('/')
        && !raw.contains("//")
        && !raw.contains("/.")
        && !raw
            .bytes()
            .any(|b| matches!(b, b'%' | b';' | b'\\') || b.is_ascii_uppercase() || !b.is_ascii());
    if plain {
        return raw.to_string();
    }
    let decoded = percent_decode(raw);
    let lower = decoded.to_lowercase();
    let mut out: Vec<&str> = Vec::new();
    for seg in lower.split(['/', '\\']) {
        let seg = seg.split(';').next().unwrap_or("");
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(lower.len() + 1);
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Segments of a normalised path.
pub fn segments(normalized: &str) -> Vec<&str> {
    normalized.split('/').filter(|s| !s.is_empty()).collect()
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> bool {
        let n = normalize(path);
        PathPattern::parse(p).unwrap().matches(&segments(&n))
    }

    #[test]
    fn patterns_and_evasions() {
        assert!(m("/quantri/**", "/quantri"));
        assert!(m("/quantri/**", "/quantri/users/1"));
        assert!(m("/quantri/**", "/QuanTri/"));
        assert!(m("/quantri/**", "//quantri//x"));
        assert!(m("/quantri/**", "/a/../quantri/x"));
        assert!(m("/quantri/**", "/%71uantri/x"));
        assert!(m("/quantri/**", "/quantri;jsessionid=1/x"));
        assert!(!m("/quantri/**", "/quantrix"));
        assert!(m("/user/login", "/user/login/"));
        assert!(!m("/user/login", "/user/login/x"));
        assert!(m("/*/wp-admin/**", "/site/wp-admin/a"));
        assert!(m("/**", "/"));
        assert!(PathPattern::parse("/a/**/b").is_err());
        assert!(PathPattern::parse("/a*").is_err());
        assert!(PathPattern::parse("a").is_err());
        assert_eq!(normalize("/%"), "/%");
        assert_eq!(normalize("/%4"), "/%4");
    }
}
