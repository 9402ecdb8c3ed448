//! `cong check --online`: what the outside world sees of each tenant. Per host name: A and
//! AAAA records exist (IPv6 is mandatory for portal domains) and point at the gateway's public
//! addresses, CAA permits the configured CA; per backend: it accepts connections. Reads DNS and
//! opens TCP connections; changes nothing and never touches the running gateway.

use crate::gateway::Snapshot;
use crate::upstream::BackendSpec;
use hickory_resolver::config::{NameServerConfig, Protocol, ResolverConfig, ResolverOpts};
use hickory_resolver::proto::rr::rdata::caa::Value as CaaValue;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioAsyncResolver;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// What the checks compare against.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// The gateway's public addresses; empty = any address is accepted.
    pub public_addresses: Vec<IpAddr>,
    /// CA domain names for CAA `issue` (e.g. `letsencrypt.org`); empty = CAA not checked.
    pub caa_issuers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    pub tenant: String,
    pub host: String,
    pub a: Vec<String>,
    pub aaaa: Vec<String>,
    pub caa: String,
    /// Days left on the certificate served for this host (`None`: no HTTPS for this tenant).
    pub cert_days_left: Option<i64>,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendReport {
    pub tenant: String,
    pub pool: String,
    pub backend: String,
    pub reachable: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub hosts: Vec<HostReport>,
    pub backends: Vec<BackendReport>,
    pub ok: bool,
}

fn resolver(server: Option<SocketAddr>) -> TokioAsyncResolver {
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 2;
    opts.cache_size = 0;
    match server {
        Some(addr) => {
            let mut cfg = ResolverConfig::new();
            cfg.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
            cfg.add_name_server(NameServerConfig::new(addr, Protocol::Tcp));
            TokioAsyncResolver::tokio(cfg, opts)
        }
        None => TokioAsyncResolver::tokio_from_system_conf()
            .unwrap_or_else(|_| TokioAsyncResolver::tokio(ResolverConfig::default(), opts)),
    }
}

/// Runs every check; `server` overrides the system resolver.
pub async fn run(snap: &Snapshot, expect: &Expect, server: Option<SocketAddr>) -> Report {
    let r = resolver(server);
    let certs = served_certificates(snap);
    let now = crate::maintenance::now_s();
    let mut hosts = Vec::new();
    for t in &snap.tenants {
        for h in &t.hosts {
            if h.starts_with("*.") {
                continue;
            }
            let mut report = check_host(&r, &t.id, h, expect).await;
            if t.tls.acme || t.tls.cert.is_some() {
                match certs.iter().find(|c| covers(&c.names, h)) {
                    Some(c) => {
                        let days = (c.not_after - now).div_euclid(86_400);
                        report.cert_days_left = Some(days);
                        if days < 0 {
                            report.problems.push("certificate expired".into());
                        } else if days < 14 {
                            report
                                .problems
                                .push(format!("certificate expires in {days} days"));
                        }
                    }
                    None => report
                        .problems
                        .push("no certificate for this name yet".into()),
                }
            }
            hosts.push(report);
        }
    }
    let mut backends = Vec::new();
    for t in &snap.tenants {
        for (p, name) in t.pools.iter().zip(&t.pool_names) {
            for spec in &p.specs {
                backends.push(check_backend(&r, &t.id, name, spec).await);
            }
        }
    }
    let ok = hosts.iter().all(|h| h.problems.is_empty()) && backends.iter().all(|b| b.reachable);
    Report {
        hosts,
        backends,
        ok,
    }
}

async fn check_host(
    r: &TokioAsyncResolver,
    tenant: &str,
    host: &str,
    expect: &Expect,
) -> HostReport {
    let fqdn = format!("{host}.");
    let mut problems = Vec::new();
    use hickory_resolver::error::ResolveErrorKind;
    let a: Vec<IpAddr> = match r.ipv4_lookup(fqdn.as_str()).await {
        Ok(l) => l.iter().map(|a| IpAddr::V4(a.0)).collect(),
        Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
            problems.push("no A record".to_string());
            Vec::new()
        }
        Err(e) => {
            problems.push(format!("A lookup failed: {e}"));
            Vec::new()
        }
    };
    let aaaa: Vec<IpAddr> = match r.ipv6_lookup(fqdn.as_str()).await {
        Ok(l) => l.iter().map(|a| IpAddr::V6(a.0)).collect(),
        Err(e) if matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) => {
            problems.push("no AAAA record (IPv6 is required for portal domains)".to_string());
            Vec::new()
        }
        Err(e) => {
            problems.push(format!("AAAA lookup failed: {e}"));
            Vec::new()
        }
    };
    if !expect.public_addresses.is_empty() {
        for ip in a.iter().chain(&aaaa) {
            if !expect.public_addresses.contains(ip) {
                problems.push(format!("{ip} is not an address of this gateway"));
            }
        }
    }
    let caa = if expect.caa_issuers.is_empty() {
        "not checked".to_string()
    } else {
        match caa_issuers(r, host).await {
            Ok(None) => "none (any CA)".to_string(),
            Ok(Some((at, list))) => {
                if list
                    .iter()
                    .any(|i| expect.caa_issuers.iter().any(|e| e.eq_ignore_ascii_case(i)))
                {
                    format!("allows ({at})")
                } else {
                    problems.push(format!(
                        "CAA at {at} allows only [{}], not {}",
                        list.join(", "),
                        expect.caa_issuers.join(", ")
                    ));
                    format!("forbids ({at})")
                }
            }
            Err(e) => {
                problems.push(format!("CAA lookup failed: {e}"));
                "error".to_string()
            }
        }
    };
    HostReport {
        tenant: tenant.to_string(),
        host: host.to_string(),
        a: a.iter().map(|i| i.to_string()).collect(),
        aaaa: aaaa.iter().map(|i| i.to_string()).collect(),
        caa,
        cert_days_left: None,
        problems,
    }
}

/// Certificates the gateway would serve, read from its certificate store.
fn served_certificates(snap: &Snapshot) -> Vec<crate::tls::CertInfo> {
    crate::tls::install_crypto_provider();
    let store = crate::certs::DirStore::new(snap.settings.tls.cert_dir.clone());
    let Ok(default) = crate::tls::generated_default() else {
        return Vec::new();
    };
    let resolver = crate::tls::CertResolver::new(default);
    crate::tls::load_all(snap, &store, &resolver);
    resolver.entries().into_values().map(|l| l.info).collect()
}

/// Whether a certificate's names cover a host (exact, or a wildcard one label up).
fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| {
        n == host
            || n.strip_prefix("*.")
                .is_some_and(|suffix| host.split_once('.').is_some_and(|(_, rest)| rest == suffix))
    })
}

/// The relevant CAA set (RFC 8659: the closest name up the tree that has one) as issuer names.
async fn caa_issuers(
    r: &TokioAsyncResolver,
    host: &str,
) -> Result<Option<(String, Vec<String>)>, String> {
    let mut name = host.to_string();
    loop {
        match r.lookup(format!("{name}."), RecordType::CAA).await {
            Ok(l) => {
                let mut issuers = Vec::new();
                let mut any = false;
                for rd in l.iter() {
                    if let RData::CAA(caa) = rd {
                        if caa.tag().is_issue() {
                            any = true;
                            if let CaaValue::Issuer(Some(n), _) = caa.value() {
                                issuers.push(n.to_ascii().trim_end_matches('.').to_string());
                            }
                        }
                    }
                }
                if any {
                    return Ok(Some((name, issuers)));
                }
            }
            Err(e) => {
                use hickory_resolver::error::ResolveErrorKind;
                if !matches!(e.kind(), ResolveErrorKind::NoRecordsFound { .. }) {
                    return Err(e.to_string());
                }
            }
        }
        match name.split_once('.') {
            Some((_, parent)) if parent.contains('.') => name = parent.to_string(),
            _ => return Ok(None),
        }
    }
}

async fn check_backend(
    r: &TokioAsyncResolver,
    tenant: &str,
    pool: &str,
    spec: &BackendSpec,
) -> BackendReport {
    let (label, addrs): (String, Result<Vec<SocketAddr>, String>) = match spec {
        BackendSpec::Addr(a) => (a.to_string(), Ok(vec![*a])),
        BackendSpec::Name { host, port } => (
            format!("{host}:{port}"),
            r.lookup_ip(host.as_str())
                .await
                .map(|l| l.iter().map(|ip| SocketAddr::new(ip, *port)).collect())
                .map_err(|e| format!("DNS: {e}")),
        ),
    };
    let (reachable, detail) = match addrs {
        Err(e) => (false, e),
        Ok(list) if list.is_empty() => (false, "DNS: no address".into()),
        Ok(list) => {
            let mut bad = Vec::new();
            for a in &list {
                match tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(a),
                )
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => bad.push(format!("{a}: {e}")),
                    Err(_) => bad.push(format!("{a}: timeout")),
                }
            }
            if bad.is_empty() {
                (
                    true,
                    format!("{} address(es) accept connections", list.len()),
                )
            } else {
                (false, bad.join("; "))
            }
        }
    };
    BackendReport {
        tenant: tenant.to_string(),
        pool: pool.to_string(),
        backend: label,
        reachable,
        detail,
    }
}

/// A table an operator reads in a terminal.
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "{:<20} {:<40} {:<4} {:<4} {:<22} {:<9} {}\n",
        "TENANT", "HOST", "A", "AAAA", "CAA", "CERT DAYS", "RESULT"
    ));
    for h in &r.hosts {
        out.push_str(&format!(
            "{:<20} {:<40} {:<4} {:<4} {:<22} {:<9} {}\n",
            h.tenant,
            h.host,
            h.a.len(),
            h.aaaa.len(),
            h.caa,
            h.cert_days_left
                .map(|d| d.to_string())
                .unwrap_or_else(|| "-".into()),
            if h.problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAIL: {}", h.problems.join("; "))
            }
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{:<20} {:<12} {:<40} {}\n",
        "TENANT", "POOL", "BACKEND", "RESULT"
    ));
    for b in &r.backends {
        out.push_str(&format!(
            "{:<20} {:<12} {:<40} {}\n",
            b.tenant,
            b.pool,
            b.backend,
            if b.reachable {
                format!("ok: {}", b.detail)
            } else {
                format!("FAIL: {}", b.detail)
            }
        ));
    }
    out.push_str(if r.ok {
        "\nall checks passed\n"
    } else {
        "\nsome checks FAILED\n"
    });
    out
}
