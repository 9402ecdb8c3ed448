//! Pre-flight checks before an order: every name resolves to this gateway's public addresses
//! (for HTTP-01) and CAA records, when present, allow the chosen CA. A failing name is not
//! ordered, so one misconfigured commune cannot burn the CA's rate limit for the province.

use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::error::ResolveErrorKind;
use hickory_resolver::proto::rr::rdata::caa::{Property, Value};
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::TokioAsyncResolver;
use std::net::{IpAddr, SocketAddr};

pub fn resolver(server: Option<SocketAddr>) -> TokioAsyncResolver {
    let mut opts = ResolverOpts::default();
    opts.cache_size = 0;
    opts.attempts = 1;
    opts.timeout = std::time::Duration::from_secs(3);
    match server {
        Some(s) => {
            let group = NameServerConfigGroup::from_ips_clear(&[s.ip()], s.port(), true);
            TokioAsyncResolver::tokio(ResolverConfig::from_parts(None, vec![], group), opts)
        }
        None => TokioAsyncResolver::tokio_from_system_conf()
            .unwrap_or_else(|_| TokioAsyncResolver::tokio(ResolverConfig::default(), opts)),
    }
}

/// The name resolves, and only to addresses in `public` (when `public` is not empty).
pub async fn check_addresses(
    r: &TokioAsyncResolver,
    name: &str,
    public: &[IpAddr],
) -> Result<(), String> {
    let ips: Vec<IpAddr> = r
        .lookup_ip(format!("{name}."))
        .await
        .map_err(|e| format!("{name} does not resolve: {e}"))?
        .iter()
        .map(|ip| ip.to_canonical())
        .collect();
    if ips.is_empty() {
        return Err(format!("{name} has no A or AAAA record"));
    }
    if public.is_empty() {
        return Ok(());
    }
    let foreign: Vec<String> = ips
        .iter()
        .filter(|ip| !public.contains(ip))
        .map(|ip| ip.to_string())
        .collect();
    if foreign.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{name} resolves to {} which is not this gateway ({})",
            foreign.join(", "),
            public
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    }
}

/// CAA (RFC 8659): the closest CAA set on the name or its parents must allow `identity`.
pub async fn check_caa(r: &TokioAsyncResolver, name: &str, identity: &str) -> Result<(), String> {
    let wildcard = name.starts_with("*.");
    let mut cur = name
        .trim_start_matches("*.")
        .trim_end_matches('.')
        .to_string();
    loop {
        let found = match r.lookup(format!("{cur}."), RecordType::CAA).await {
            Ok(l) => l
                .iter()
                .filter_map(|d| match d {
                    RData::CAA(c) => Some(c.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>(),
            Err(e) => match e.kind() {
                ResolveErrorKind::NoRecordsFound { .. } => Vec::new(),
                _ => return Err(format!("CAA lookup for {cur} failed: {e}")),
            },
        };
        if !found.is_empty() {
            let wild: Vec<_> = found
                .iter()
                .filter(|c| c.tag() == &Property::IssueWild)
                .collect();
            let relevant: Vec<_> = if wildcard && !wild.is_empty() {
                wild
            } else {
                found
                    .iter()
                    .filter(|c| c.tag() == &Property::Issue)
                    .collect()
            };
            if relevant.is_empty() {
                return Ok(());
            }
            let allowed = relevant.iter().any(|c| match c.value() {
                Value::Issuer(Some(n), _) => n
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(identity),
                _ => false,
            });
            return if allowed {
                Ok(())
            } else {
                Err(format!("CAA records of {cur} do not allow {identity}"))
            };
        }
        match cur.split_once('.') {
            Some((_, parent)) if parent.contains('.') || !parent.is_empty() => {
                cur = parent.to_string()
            }
            _ => return Ok(()),
        }
    }
}
