//! The weekly SOC report (`cong report soc`), built from the local JSON archive: attacked
//! tenants, top attacking addresses and countries, attack categories by CRS rule family,
//! blocks vs detections, bans, certificate and availability incidents — what TT 31/2017 asks
//! the monitoring unit to report. Reads archive files (plain or gzipped) and writes text; it
//! never touches the running gateway or modifies the archive.

use anyhow::Context as _;
use serde_json::Value;
use std::collections::HashMap;
use std::fmt::Write;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    Text,
    Json,
    Html,
}

pub struct Options {
    /// Inclusive dates `YYYY-MM-DD`, compared with the date of each event's `@timestamp`.
    pub from: String,
    pub to: String,
    pub tenant: Option<String>,
    pub format: OutFormat,
}

/// An incident line: when, which tenant, what.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Incident {
    pub time: String,
    pub tenant: String,
    pub kind: String,
    pub detail: String,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub tenant: Option<String>,
    pub files: usize,
    pub unreadable_lines: u64,
    pub requests: u64,
    pub server_errors: u64,
    pub security_events: u64,
    pub blocks: u64,
    pub detections: u64,
    pub bans: u64,
    pub attacked_tenants: Vec<(String, u64)>,
    pub top_sources: Vec<(String, u64)>,
    pub top_countries: Vec<(String, u64)>,
    pub categories: Vec<(String, u64)>,
    pub certificate_incidents: Vec<Incident>,
    pub availability_incidents: Vec<Incident>,
    pub logging_incidents: Vec<Incident>,
}

/// CRS rule family of a rule id (by the file its number range belongs to).
pub fn crs_family(id: u32) -> &'static str {
    match id / 1000 {
        911 => "method enforcement",
        913 => "scanner detection",
        920 => "protocol enforcement",
        921 => "protocol attack",
        930 => "local file inclusion",
        931 => "remote file inclusion",
        932 => "remote code execution",
        933 => "PHP injection",
        934 => "generic/Node.js injection",
        941 => "cross-site scripting",
        942 => "SQL injection",
        943 => "session fixation",
        944 => "Java attack",
        949 | 959 | 980 => "anomaly score",
        950..=956 => "data leakage",
        _ => "other",
    }
}

/// Archive files: every `.log`/`.json` (optionally `.gz`) file of a directory, or a file and
/// its rotated siblings.
pub fn archive_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (dir, stem) = if path.is_dir() {
        (path.to_path_buf(), None)
    } else {
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        (
            path.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
            Some(stem),
        )
    };
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let base = name.strip_suffix(".gz").unwrap_or(&name);
        if !(base.ends_with(".log") || base.ends_with(".json") || base.ends_with(".jsonl")) {
            continue;
        }
        if let Some(stem) = &stem {
            let own = base.split('.').next() == Some(stem.as_str())
                || base.starts_with(&format!("{stem}-"));
            if !own {
                continue;
            }
        }
        out.push(p);
    }
    out.sort();
    Ok(out)
}

fn open_lines(p: &Path) -> anyhow::Result<Box<dyn BufRead>> {
    let f = std::fs::File::open(p).with_context(|| format!("open {}", p.display()))?;
    let r: Box<dyn Read> = if p.extension().is_some_and(|e| e == "gz") {
        Box::new(flate2::read::MultiGzDecoder::new(f))
    } else {
        Box::new(f)
    };
    Ok(Box::new(BufReader::new(r)))
}

fn s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn rule_ids(v: &Value) -> Vec<u32> {
    let mut out = Vec::new();
    for k in ["rule.id", "cong.rule_id", "cong.rule_ids", "cong.rules"] {
        match v.get(k) {
            Some(Value::Array(a)) => out.extend(a.iter().filter_map(|x| match x {
                Value::String(s) => s.trim().parse().ok(),
                Value::Number(n) => n.as_u64().map(|n| n as u32),
                _ => None,
            })),
            Some(Value::String(s)) => out.extend(
                s.split(|c: char| c == ',' || c.is_whitespace())
                    .filter_map(|x| x.parse::<u32>().ok()),
            ),
            Some(Value::Number(n)) => out.extend(n.as_u64().map(|n| n as u32)),
            _ => {}
        }
    }
    out
}

fn top(m: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<_> = m.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn is_attack(kind: &str) -> bool {
    kind.starts_with("waf_")
        || kind.starts_with("deny")
        || kind.starts_with("ban")
        || kind.starts_with("rate_limit")
        || kind == "too_many_requests"
}

/// Reads the archive and counts.
pub fn build(archive: &Path, o: &Options) -> anyhow::Result<Report> {
    let files = archive_files(archive)?;
    let mut r = Report {
        from: o.from.clone(),
        to: o.to.clone(),
        tenant: o.tenant.clone(),
        files: files.len(),
        ..Default::default()
    };
    let (mut tenants, mut sources, mut countries, mut cats) = (
        HashMap::new(),
        HashMap::new(),
        HashMap::new(),
        HashMap::<String, u64>::new(),
    );
    for f in &files {
        let lines = open_lines(f)?;
        for line in lines.lines() {
            let line = match line {
                Ok(l) => l,
                Err(_) => {
                    r.unreadable_lines += 1;
                    break;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                r.unreadable_lines += 1;
                continue;
            };
            let ts = s(&v, "@timestamp").unwrap_or("");
            let day = ts.get(..10).unwrap_or("");
            if day < o.from.as_str() || day > o.to.as_str() {
                continue;
            }
            let tenant = s(&v, "organization.id").unwrap_or("-").to_string();
            if o.tenant.as_ref().is_some_and(|t| *t != tenant) {
                continue;
            }
            let dataset = s(&v, "event.dataset").unwrap_or("");
            let kind = s(&v, "event.action").unwrap_or("").to_string();
            if dataset == "cong.access" {
                r.requests += 1;
                if v.get("http.response.status_code")
                    .and_then(Value::as_u64)
                    .is_some_and(|c| c >= 500)
                {
                    r.server_errors += 1;
                }
                continue;
            }
            let incident = || Incident {
                time: ts.to_string(),
                tenant: tenant.clone(),
                kind: kind.clone(),
                detail: s(&v, "message").unwrap_or("").to_string(),
            };
            if dataset == "cong.security" {
                r.security_events += 1;
            }
            if is_attack(&kind) {
                *tenants.entry(tenant.clone()).or_insert(0) += 1;
                if let Some(ip) = s(&v, "source.ip").or_else(|| s(&v, "cong.client")) {
                    *sources.entry(ip.to_string()).or_insert(0) += 1;
                }
                let cc = s(&v, "source.geo.country_iso_code").unwrap_or("--");
                *countries.entry(cc.to_string()).or_insert(0) += 1;
                let ids = rule_ids(&v);
                if ids.is_empty() {
                    *cats.entry(kind.replace('_', " ")).or_insert(0) += 1;
                }
                for id in ids {
                    // The anomaly-score rules only sum the others up: not a technique.
                    if !matches!(id / 1000, 949 | 959 | 980) {
                        *cats.entry(crs_family(id).to_string()).or_insert(0) += 1;
                    }
                }
                if kind.starts_with("ban") {
                    r.bans += 1;
                } else if kind.contains("block") || kind.starts_with("deny") {
                    r.blocks += 1;
                } else if kind.starts_with("waf_") {
                    r.detections += 1;
                }
            } else if kind.starts_with("acme_") || kind.starts_with("cert_") {
                r.certificate_incidents.push(incident());
            } else if kind.starts_with("backend_") || kind.starts_with("pool_") {
                r.availability_incidents.push(incident());
            } else if kind.starts_with("log_") {
                r.logging_incidents.push(incident());
            }
        }
    }
    r.attacked_tenants = top(tenants, 50);
    r.top_sources = top(sources, 20);
    r.top_countries = top(countries, 20);
    r.categories = top(cats, 30);
    for l in [
        &mut r.certificate_incidents,
        &mut r.availability_incidents,
        &mut r.logging_incidents,
    ] {
        l.sort_by(|a, b| a.time.cmp(&b.time));
    }
    Ok(r)
}

/// The report in the requested format.
pub fn render(r: &Report, f: OutFormat) -> anyhow::Result<String> {
    Ok(match f {
        OutFormat::Json => serde_json::to_string_pretty(r)? + "\n",
        OutFormat::Text => text(r),
        OutFormat::Html => html(r),
    })
}

const TITLE: &str = "Báo cáo giám sát an toàn thông tin / SOC security report";

fn text(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{TITLE}");
    let _ = writeln!(
        o,
        "Kỳ báo cáo / period: {} – {}{}",
        r.from,
        r.to,
        r.tenant
            .as_ref()
            .map(|t| format!(", tenant {t}"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "Requests: {}   5xx: {}   security events: {}   blocks: {}   detections: {}   bans: {}",
        r.requests, r.server_errors, r.security_events, r.blocks, r.detections, r.bans
    );
    let table = |o: &mut String, title: &str, rows: &[(String, u64)]| {
        let _ = writeln!(o, "\n{title}");
        if rows.is_empty() {
            let _ = writeln!(o, "  (none)");
        }
        for (k, n) in rows {
            let _ = writeln!(o, "  {n:>8}  {k}");
        }
    };
    table(
        &mut o,
        "Hệ thống bị tấn công / attacked tenants",
        &r.attacked_tenants,
    );
    table(
        &mut o,
        "Địa chỉ tấn công / top attacking addresses",
        &r.top_sources,
    );
    table(&mut o, "Quốc gia / countries", &r.top_countries);
    table(
        &mut o,
        "Kỹ thuật tấn công / attack categories (CRS rule family)",
        &r.categories,
    );
    let list = |o: &mut String, title: &str, rows: &[Incident]| {
        let _ = writeln!(o, "\n{title}");
        if rows.is_empty() {
            let _ = writeln!(o, "  (none)");
        }
        for i in rows {
            let _ = writeln!(o, "  {}  {}  {}  {}", i.time, i.tenant, i.kind, i.detail);
        }
    };
    list(
        &mut o,
        "Sự cố chứng thư số / certificate incidents",
        &r.certificate_incidents,
    );
    list(
        &mut o,
        "Sự cố gián đoạn / availability incidents",
        &r.availability_incidents,
    );
    list(
        &mut o,
        "Sự cố ghi nhật ký / logging incidents",
        &r.logging_incidents,
    );
    let _ = writeln!(
        o,
        "\nArchive files read: {}; unreadable lines: {}",
        r.files, r.unreadable_lines
    );
    o
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn html(r: &Report) -> String {
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"vi\"><head><meta charset=\"utf-8\"><title>{t}</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #999;padding:.2em .5em;text-align:left}}</style></head><body>\n\
         <h1>{t}</h1>\n<p>Kỳ báo cáo / period: {} – {}{}</p>\n",
        esc(&r.from),
        esc(&r.to),
        r.tenant
            .as_ref()
            .map(|t| format!(", tenant {}", esc(t)))
            .unwrap_or_default(),
        t = TITLE
    );
    let _ = writeln!(
        o,
        "<table><tr><th scope=\"col\">Requests</th><th scope=\"col\">5xx</th><th scope=\"col\">Security events</th>\
         <th scope=\"col\">Blocks</th><th scope=\"col\">Detections</th><th scope=\"col\">Bans</th></tr>\
         <tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr></table>",
        r.requests, r.server_errors, r.security_events, r.blocks, r.detections, r.bans
    );
    let table = |o: &mut String, title: &str, head: &str, rows: &[(String, u64)]| {
        let _ = write!(
            o,
            "<h2>{}</h2>\n<table><tr><th scope=\"col\">{}</th><th scope=\"col\">Count</th></tr>",
            esc(title),
            esc(head)
        );
        for (k, n) in rows {
            let _ = write!(o, "<tr><td>{}</td><td>{n}</td></tr>", esc(k));
        }
        o.push_str("</table>\n");
    };
    table(
        &mut o,
        "Hệ thống bị tấn công / attacked tenants",
        "Tenant",
        &r.attacked_tenants,
    );
    table(
        &mut o,
        "Địa chỉ tấn công / top attacking addresses",
        "Address",
        &r.top_sources,
    );
    table(&mut o, "Quốc gia / countries", "Country", &r.top_countries);
    table(
        &mut o,
        "Kỹ thuật tấn công / attack categories",
        "CRS rule family",
        &r.categories,
    );
    let list = |o: &mut String, title: &str, rows: &[Incident]| {
        let _ = write!(
            o,
            "<h2>{}</h2>\n<table><tr><th scope=\"col\">Time</th><th scope=\"col\">Tenant</th>\
             <th scope=\"col\">Event</th><th scope=\"col\">Detail</th></tr>",
            esc(title)
        );
        for i in rows {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&i.time),
                esc(&i.tenant),
                esc(&i.kind),
                esc(&i.detail)
            );
        }
        o.push_str("</table>\n");
    };
    list(
        &mut o,
        "Sự cố chứng thư số / certificate incidents",
        &r.certificate_incidents,
    );
    list(
        &mut o,
        "Sự cố gián đoạn / availability incidents",
        &r.availability_incidents,
    );
    list(
        &mut o,
        "Sự cố ghi nhật ký / logging incidents",
        &r.logging_incidents,
    );
    o.push_str("</body></html>\n");
    o
}

/// Checks a `YYYY-MM-DD` date.
pub fn check_date(d: &str) -> anyhow::Result<()> {
    let ok = d.len() == 10
        && d.as_bytes()[4] == b'-'
        && d.as_bytes()[7] == b'-'
        && d[..4].parse::<u32>().is_ok()
        && d[5..7].parse::<u32>().is_ok_and(|m| (1..=12).contains(&m))
        && d[8..].parse::<u32>().is_ok_and(|x| (1..=31).contains(&x));
    if ok {
        Ok(())
    } else {
        anyhow::bail!("`{d}` is not a date: use YYYY-MM-DD")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families() {
        assert_eq!(crs_family(942100), "SQL injection");
        assert_eq!(crs_family(941110), "cross-site scripting");
        assert!(check_date("2026-11-16").is_ok());
        assert!(check_date("2026-13-16").is_err());
    }
}
