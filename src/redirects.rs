//! Redirect maps for legacy names: old host (or host + path prefix) → new host and path, with
//! 301/302/307/308, path and query preserved. Rules come from the main file and from CSV files
//! (`from,to[,code]` per line) so thousands of old commune and district names can be loaded in
//! bulk. `*.old.parent` → `*.new.parent` keeps the labels in place of `*`. Checked before tenant
//! routing; this module only maps names and paths, it does not touch tenants or upstreams.

use crate::routing::{parse_host_pattern, prefix_matches, HostPattern};
use std::collections::HashMap;

/// One redirect rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub from: HostPattern,
    /// Path prefix (`/` for the whole host).
    pub from_path: String,
    /// New host; `*.suffix` when `from` is a wildcard.
    pub to_host: String,
    pub to_path: String,
    pub code: u16,
    /// Where the rule was written (`file:line`), for messages.
    pub origin: String,
}

/// Parses `host[/path]` into host pattern and path.
fn split_target(s: &str) -> (&str, &str) {
    let s = s.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    match s.find('/') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "/"),
    }
}

impl Rule {
    pub fn parse(from: &str, to: &str, code: u16, origin: String) -> Result<Rule, String> {
        if ![301, 302, 307, 308].contains(&code) {
            return Err(format!("code {code}: use 301, 302, 307 or 308"));
        }
        let (fh, fp) = split_target(from);
        let (th, tp) = split_target(to);
        let from_pat = parse_host_pattern(fh).map_err(|e| format!("from: {e}"))?;
        let to_pat = parse_host_pattern(th).map_err(|e| format!("to: {e}"))?;
        let to_host = match (&from_pat, to_pat) {
            (HostPattern::Wildcard(_), HostPattern::Wildcard(s)) => format!("*.{s}"),
            (_, HostPattern::Exact(h)) => h,
            (HostPattern::Exact(_), HostPattern::Wildcard(_)) => {
                return Err("to: a wildcard target needs a wildcard source".into())
            }
        };
        if fp.contains('?') || tp.contains('?') {
            return Err("paths take no query: the request's query is kept".into());
        }
        let trim = |p: &str| {
            if p.len() > 1 {
                p.trim_end_matches('/').to_string()
            } else {
                p.to_string()
            }
        };
        Ok(Rule {
            from: from_pat,
            from_path: trim(fp),
            to_host,
            to_path: trim(tp),
            code,
            origin,
        })
    }

    /// Location (without scheme) for a host this rule matched and the request path+query.
    fn target(&self, host: &str, path_and_query: &str) -> String {
        let host = match (&self.from, self.to_host.strip_prefix("*.")) {
            (HostPattern::Wildcard(suffix), Some(to_suffix)) => {
                let captured = host
                    .strip_suffix(suffix.as_str())
                    .unwrap_or("")
                    .trim_end_matches('.');
                format!("{captured}.{to_suffix}")
            }
            _ => self.to_host.clone(),
        };
        let rest = if self.from_path == "/" {
            path_and_query
        } else {
            path_and_query.get(self.from_path.len()..).unwrap_or("")
        };
        let path = if self.to_path == "/" {
            if rest.starts_with('/') {
                rest.to_string()
            } else {
                format!("/{rest}")
            }
        } else {
            format!("{}{rest}", self.to_path)
        };
        format!("{host}{path}")
    }
}

/// All rules, indexed by host.
#[derive(Debug, Default, Clone)]
pub struct RedirectMap {
    rules: Vec<Rule>,
    exact: HashMap<String, Vec<usize>>,
    wildcard: HashMap<String, Vec<usize>>,
}

impl RedirectMap {
    /// Indexes rules; a second rule for the same host and path is an error naming both.
    pub fn new(rules: Vec<Rule>) -> Result<RedirectMap, String> {
        let mut m = RedirectMap::default();
        for (i, r) in rules.iter().enumerate() {
            let (map, key) = match &r.from {
                HostPattern::Exact(h) => (&mut m.exact, h.clone()),
                HostPattern::Wildcard(s) => (&mut m.wildcard, s.clone()),
            };
            let list = map.entry(key).or_default();
            if let Some(&j) = list.iter().find(|&&j| rules[j].from_path == r.from_path) {
                return Err(format!(
                    "{}: redirect for the same host and path as {}",
                    r.origin, rules[j].origin
                ));
            }
            list.push(i);
        }
        for list in m.exact.values_mut().chain(m.wildcard.values_mut()) {
            list.sort_by_key(|&i| std::cmp::Reverse(rules[i].from_path.len()));
        }
        m.rules = rules;
        Ok(m)
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// `(code, host+path+query)` when a rule covers this normalised host and path.
    pub fn lookup(&self, host: &str, path_and_query: &str) -> Option<(u16, String)> {
        if self.rules.is_empty() {
            return None;
        }
        let path = path_and_query.split('?').next().unwrap_or("/");
        let pick = |list: &Vec<usize>| {
            list.iter()
                .map(|&i| &self.rules[i])
                .find(|r| prefix_matches(&r.from_path, path))
        };
        if let Some(r) = self.exact.get(host).and_then(pick) {
            return Some((r.code, r.target(host, path_and_query)));
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(r) = self.wildcard.get(rest).and_then(pick) {
                return Some((r.code, r.target(host, path_and_query)));
            }
        }
        None
    }

    /// Chains (a rule whose target is redirected again) as warnings, loops as errors.
    pub fn check(&self) -> (Vec<String>, Vec<String>) {
        let (mut warnings, mut errors) = (Vec::new(), Vec::new());
        for r in &self.rules {
            let host = match &r.from {
                HostPattern::Exact(h) => h.clone(),
                HostPattern::Wildcard(s) => format!("x.{s}"),
            };
            let mut seen = vec![format!("{host}{}", r.from_path)];
            let mut cur = (host, r.from_path.clone());
            let mut hops = 0;
            while let Some((_, loc)) = self.lookup(&cur.0, &cur.1) {
                hops += 1;
                let (h, p) = split_target(&loc);
                let key = format!("{h}{p}");
                if seen.contains(&key) || hops > 16 {
                    errors.push(format!(
                        "{}: redirect loop: {} → {key}",
                        r.origin,
                        seen.join(" → ")
                    ));
                    break;
                }
                seen.push(key);
                cur = (h.to_string(), p.to_string());
            }
            if hops > 1 && errors.last().is_none_or(|e| !e.starts_with(&r.origin)) {
                warnings.push(format!(
                    "{}: redirect chain of {hops} hops: {} (point the first rule at the last target)",
                    r.origin,
                    seen.join(" → ")
                ));
            }
        }
        (warnings, errors)
    }
}

/// Parses a CSV file of rules: `from,to[,code]`, `#` comments, an optional header line.
pub fn parse_csv(path: &str, text: &str) -> Result<Vec<Rule>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let cols: Vec<&str> = line
            .split(',')
            .map(|c| c.trim().trim_matches('"'))
            .collect();
        if n == 0 && cols.first().is_some_and(|c| c.eq_ignore_ascii_case("from")) {
            continue;
        }
        let origin = format!("{path}:{}", n + 1);
        if cols.len() < 2 || cols.len() > 3 {
            return Err(format!("{origin}: expected `from,to` or `from,to,code`"));
        }
        let code = match cols.get(2) {
            Some(c) if !c.is_empty() => c
                .parse()
                .map_err(|_| format!("{origin}: `{c}` is not a status code"))?,
            _ => 301,
        };
        out.push(
            Rule::parse(cols[0], cols[1], code, origin.clone())
                .map_err(|e| format!("{origin}: {e}"))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rules: &[(&str, &str, u16)]) -> RedirectMap {
        RedirectMap::new(
            rules
                .iter()
                .enumerate()
                .map(|(i, (f, t, c))| Rule::parse(f, t, *c, format!("r:{i}")).unwrap())
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn host_and_path_rules() {
        let m = map(&[
            (
                "camson.campha.quangninh.gov.vn",
                "camson.quangninh.gov.vn",
                301,
            ),
            ("*.campha.quangninh.gov.vn", "*.quangninh.gov.vn", 308),
            ("lamdong.gov.vn/sites/en", "en.lamdong.gov.vn/", 301),
            ("old.gov.vn/tin-tuc", "new.gov.vn/news", 308),
        ]);
        assert_eq!(
            m.lookup("camson.campha.quangninh.gov.vn", "/a?b=1"),
            Some((301, "camson.quangninh.gov.vn/a?b=1".into()))
        );
        assert_eq!(
            m.lookup("caphai.campha.quangninh.gov.vn", "/"),
            Some((308, "caphai.quangninh.gov.vn/".into()))
        );
        assert_eq!(
            m.lookup("lamdong.gov.vn", "/sites/en/gioi-thieu?x"),
            Some((301, "en.lamdong.gov.vn/gioi-thieu?x".into()))
        );
        assert_eq!(
            m.lookup("lamdong.gov.vn", "/sites/en"),
            Some((301, "en.lamdong.gov.vn/".into()))
        );
        assert_eq!(m.lookup("lamdong.gov.vn", "/sites/english"), None);
        assert_eq!(
            m.lookup("old.gov.vn", "/tin-tuc/1"),
            Some((308, "new.gov.vn/news/1".into()))
        );
        assert_eq!(m.lookup("other.gov.vn", "/"), None);
    }

    #[test]
    fn chains_and_loops() {
        let m = map(&[("a.gov.vn", "b.gov.vn", 301), ("b.gov.vn", "c.gov.vn", 301)]);
        let (w, e) = m.check();
        assert!(e.is_empty());
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("a.gov.vn/ → b.gov.vn/ → c.gov.vn/"));
        let m = map(&[("a.gov.vn", "b.gov.vn", 301), ("b.gov.vn", "a.gov.vn", 301)]);
        let (_, e) = m.check();
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("redirect loop"));
    }

    #[test]
    fn csv() {
        let rules = parse_csv("r.csv", "from,to,code\n# old district\nx.huyen.tinh.gov.vn,x.tinh.gov.vn\n\ny.tinh.gov.vn/a,z.tinh.gov.vn/b,308\n").unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].code, 308);
        assert_eq!(rules[1].origin, "r.csv:5");
        assert!(parse_csv("r.csv", "a.gov.vn\n")
            .unwrap_err()
            .starts_with("r.csv:1:"));
        assert!(parse_csv("r.csv", "a.gov.vn,b.gov.vn,200\n")
            .unwrap_err()
            .contains("301"));
        assert!(RedirectMap::new(
            parse_csv("r.csv", "a.gov.vn,b.gov.vn\na.gov.vn,c.gov.vn\n").unwrap()
        )
        .is_err());
    }
}
