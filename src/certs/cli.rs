//! `cong certs list` and `cong certs renew`: what the store and the configuration hold, and a
//! renewal request to the running gateway's admin listener.

use super::DirStore;
use crate::gateway::Snapshot;
use crate::tls::{load_all, renewal_time_for, CertResolver, Source};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn date(ts: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(ts)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| ts.to_string())
}

/// Short issuer: its CN when it has one.
fn short_issuer(issuer: &str) -> String {
    issuer
        .split(',')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("CN="))
        .unwrap_or(issuer)
        .to_string()
}

/// The table printed by `cong certs list`.
pub fn list(snap: &Snapshot) -> Result<String, String> {
    crate::tls::install_crypto_provider();
    let store = DirStore::new(snap.settings.tls.cert_dir.clone());
    let default = crate::tls::generated_default().map_err(|e| e.to_string())?;
    let resolver = CertResolver::new(default);
    load_all(snap, &store, &resolver);
    let mut rows = vec![[
        "NAME".to_string(),
        "SOURCE".into(),
        "ISSUER".into(),
        "NOT AFTER".into(),
        "DAYS LEFT".into(),
        "NEXT RENEWAL".into(),
        "NAMES".into(),
    ]];
    let entries = resolver.entries();
    for (id, l) in &entries {
        let name = id.split_once(':').map(|(_, n)| n).unwrap_or(id);
        let next = match l.source {
            Source::Acme => date(renewal_time_for(&l.info, snap)),
            _ => "manual".into(),
        };
        rows.push([
            name.to_string(),
            l.source.as_str().into(),
            short_issuer(&l.info.issuer),
            date(l.info.not_after),
            l.info.days_left().to_string(),
            next,
            l.info.names.join(","),
        ]);
    }
    for t in snap.tenants.iter().filter(|t| t.tls.acme) {
        if !entries.contains_key(&format!("acme:{}", t.id)) {
            rows.push([
                t.id.clone(),
                "acme".into(),
                "-".into(),
                "not issued yet".into(),
                "-".into(),
                "as soon as the gateway runs".into(),
                t.hosts.join(","),
            ]);
        }
    }
    let mut widths = [0usize; 7];
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Ok(out)
}

/// Asks the running gateway to renew `name` now and prints its progress lines.
pub fn renew(snap: &Snapshot, name: &str) -> Result<(), String> {
    if !snap.tenants.iter().any(|t| t.id == name && t.tls.acme) {
        return Err(format!(
            "no tenant `{name}` with `acme = true` in this configuration"
        ));
    }
    let admin = snap.settings.admin;
    println!("renewing {name} through the gateway at {admin}");
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the gateway's admin listener {admin}: {e}"))?;
    // An order can take minutes (DNS propagation, CA queues).
    s.set_read_timeout(Some(Duration::from_secs(900))).ok();
    // The admin API takes a bearer token (see `cong token new`).
    let auth = std::env::var("CONG_ADMIN_TOKEN")
        .map(|t| format!("Authorization: Bearer {}\r\n", t.trim()))
        .unwrap_or_default();
    let req = format!(
        "POST /acme/renew/{name} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\n{auth}Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).map_err(|e| e.to_string())?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if matches!(status, "401" | "403" | "429") {
        return Err(format!(
            "the admin API refused ({status}): {}; give a token in CONG_ADMIN_TOKEN",
            body.trim()
        ));
    }
    let ok = status == "200";
    for line in body.lines() {
        println!("  {line}");
    }
    if ok {
        Ok(())
    } else {
        Err(format!("renewal of {name} failed"))
    }
}
