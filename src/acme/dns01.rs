//! DNS-01: adds and removes `_acme-challenge` TXT records with RFC 2136 dynamic updates signed
//! with TSIG, sent to the zone's primary server (BIND in the province).

use super::DnsZone;
use hickory_client::client::{AsyncClient, ClientHandle};
use hickory_client::op::ResponseCode;
use hickory_client::rr::rdata::TXT;
use hickory_client::rr::{DNSClass, Name, RData, Record, RecordSet, RecordType};
use hickory_proto::rr::dnssec::tsig::TSigner;
use hickory_proto::udp::UdpClientStream;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The zone among `zones` that holds the challenge record of `name` (longest suffix).
pub fn zone_for<'a>(zones: &'a [DnsZone], name: &str) -> Option<&'a DnsZone> {
    let name = name.trim_start_matches("*.").trim_end_matches('.');
    zones
        .iter()
        .filter(|z| name == z.zone || name.ends_with(&format!(".{}", z.zone)))
        .max_by_key(|z| z.zone.len())
}

fn record_set(owner: &Name, value: &str) -> RecordSet {
    let mut rs = RecordSet::new(owner, RecordType::TXT, 0);
    let mut r = Record::with(owner.clone(), RecordType::TXT, 60);
    r.set_dns_class(DNSClass::IN);
    r.set_data(Some(RData::TXT(TXT::new(vec![value.to_string()]))));
    rs.insert(r, 0);
    rs
}

async fn client(zone: &DnsZone) -> Result<AsyncClient, String> {
    let key_name = Name::from_str(&zone.key_name)
        .map_err(|e| format!("TSIG key name `{}`: {e}", zone.key_name))?;
    let signer = TSigner::new(zone.secret.clone(), zone.algorithm.clone(), key_name, 300)
        .map_err(|e| format!("TSIG key `{}`: {e}", zone.key_name))?;
    let stream = UdpClientStream::<tokio::net::UdpSocket, TSigner>::with_timeout_and_signer(
        zone.server,
        Duration::from_secs(5),
        Some(Arc::new(signer)),
    );
    let (c, bg) = AsyncClient::connect(stream)
        .await
        .map_err(|e| format!("DNS server {}: {e}", zone.server))?;
    tokio::spawn(bg);
    Ok(c)
}

fn owner(name: &str) -> Result<Name, String> {
    let base = name.trim_start_matches("*.").trim_end_matches('.');
    Name::from_str(&format!("_acme-challenge.{base}."))
        .map_err(|e| format!("`{base}` is not a DNS name: {e}"))
}

fn origin(zone: &DnsZone) -> Result<Name, String> {
    Name::from_str(&format!("{}.", zone.zone)).map_err(|e| format!("zone `{}`: {e}", zone.zone))
}

/// Adds the TXT record `_acme-challenge.NAME` with `value`.
pub async fn add_txt(zone: &DnsZone, name: &str, value: &str) -> Result<(), String> {
    let mut c = client(zone).await?;
    let rs = record_set(&owner(name)?, value);
    let resp = c.append(rs, origin(zone)?, false).await.map_err(|e| {
        format!(
            "update of zone {} at {} failed (TSIG key `{}`): {}",
            zone.zone,
            zone.server,
            zone.key_name,
            causes(&e)
        )
    })?;
    check(resp.response_code(), zone)
}

/// Removes the TXT record added by `add_txt` (other values of the same name stay).
pub async fn remove_txt(zone: &DnsZone, name: &str, value: &str) -> Result<(), String> {
    let mut c = client(zone).await?;
    let rs = record_set(&owner(name)?, value);
    let resp = c.delete_by_rdata(rs, origin(zone)?).await.map_err(|e| {
        format!(
            "clean-up in zone {} at {}: {}",
            zone.zone,
            zone.server,
            causes(&e)
        )
    })?;
    check(resp.response_code(), zone)
}

/// The error with its inner cause, so "proto error" comes with what actually went wrong.
fn causes(e: &hickory_client::error::ClientError) -> String {
    use hickory_client::error::ClientErrorKind as K;
    let mut s = match e.kind() {
        K::Proto(p) => format!("{p}"),
        K::DnsSec(d) => format!("{d}"),
        K::Io(i) => format!("{i}"),
        _ => e.to_string(),
    };
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    // A server that rejects the key answers with an empty MAC, which hickory reports as a
    // "truncated HMAC"; say what it means.
    if s.contains("truncated HMAC") {
        s = "the server rejected the TSIG signature (BADKEY/BADSIG: wrong key name, secret or algorithm)".into();
    }
    s
}

fn check(code: ResponseCode, zone: &DnsZone) -> Result<(), String> {
    if code == ResponseCode::NoError {
        Ok(())
    } else {
        Err(format!(
            "DNS server {} answered {code} to the update of zone {} (TSIG key `{}`)",
            zone.server, zone.zone, zone.key_name
        ))
    }
}
