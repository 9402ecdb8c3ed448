//! Benign Vietnamese citizen traffic (tests/data/waf-benign/requests.jsonl): every request body
//! must parse cleanly with the WAF body processors (no REQBODY_ERROR, no multipart strict error),
//! and the whole corpus replayed through the real binary with Debian's CRS at paranoia level 1
//! in block mode must give no false positive: every request reaches the backend, no rule
//! matches.

mod common;
use common::*;
use cong::waf::body::{processor, Kind, Limits};

#[test]
fn benign_bodies_parse_without_errors() {
    let text = std::fs::read_to_string("tests/data/waf-benign/requests.jsonl")
        .expect("read tests/data/waf-benign/requests.jsonl");
    let limits = Limits {
        inspect_bytes: 128 * 1024,
        max_args: 1000,
        max_json_depth: 64,
    };
    let mut bodies = 0;
    for (n, line) in text.lines().enumerate() {
        let req: serde_json::Value = serde_json::from_str(line).expect("corpus line is JSON");
        let Some(body) = req["body"].as_str() else {
            continue;
        };
        let ct = req["headers"]["Content-Type"].as_str().unwrap_or("");
        let kind = Kind::for_content_type(ct).expect("corpus body has a known content type");
        let mut p = processor(kind, ct, limits);
        p.feed(body.as_bytes());
        let parsed = p.finish();
        assert!(parsed.error.is_none(), "line {}: {:?}", n + 1, parsed.error);
        assert!(!parsed.args.is_empty(), "line {}: no arguments", n + 1);
        bodies += 1;
    }
    assert_eq!(bodies, 130);
}

#[test]
fn benign_traffic_passes_the_crs_at_paranoia_1() {
    if !std::path::Path::new("/usr/share/modsecurity-crs/owasp-crs.load").exists() {
        eprintln!("modsecurity-crs is not installed; skipped");
        return;
    }
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = base_config(listen, admin, "access_log = false");
    let t = tenant("tinh", &["tinh.gov.vn"], &[b.addr], "")
        + "\n[waf]\nmode = \"block\"\nparanoia = 1\n";
    let g = Gateway::start(&main, &[("tinh.toml", &t)], listen, admin);
    let text = std::fs::read_to_string("tests/data/waf-benign/requests.jsonl").unwrap();
    let mut refused = Vec::new();
    let mut sent = 0;
    for (n, line) in text.lines().enumerate() {
        let req: serde_json::Value = serde_json::from_str(line).unwrap();
        let method = req["method"].as_str().unwrap_or("GET");
        let path = req["path"].as_str().unwrap_or("/");
        let headers: Vec<(String, String)> = req["headers"]
            .as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let rid = format!("benign-{}", n + 1);
        let mut extra: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        extra.push(("X-Request-Id", &rid));
        let body = req["body"].as_str().unwrap_or("");
        let r = request(g.listen, method, Some("tinh.gov.vn"), path, &extra, body).unwrap();
        sent += 1;
        if r.status != 200 || r.backend() != Some("portal") {
            refused.push(format!("line {}: {method} {path} -> {}", n + 1, r.status));
        }
    }
    assert_eq!(sent, 310);
    let matches: Vec<String> = g
        .log_text()
        .lines()
        .filter(|l| l.contains("event=waf_match"))
        .map(str::to_string)
        .collect();
    assert!(
        refused.is_empty(),
        "false positives:\n{}",
        refused.join("\n")
    );
    assert!(
        matches.is_empty(),
        "rules matched benign requests:\n{}",
        matches.join("\n")
    );
}
