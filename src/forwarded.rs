//! Client identity and forwarding headers: the real client address (believing
//! `X-Forwarded-For` only from trusted proxies), request ids, and the `X-Forwarded-*` /
//! RFC 7239 `Forwarded` headers sent to backends. Pure functions over addresses and strings.

use ipnet::IpNet;
use std::fmt::Write;
use std::net::IpAddr;

/// Peers whose forwarding headers are believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies(nets)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parses a CIDR or a single address.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Ok(n.trunc());
    }
    s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("`{s}` is not an IP address or CIDR (e.g. `10.0.0.0/8`, `2001:db8::/32`)")
    })
}

/// The client address for logs, keys and headers: the socket peer, or, when the peer is a
/// trusted proxy, the right-most untrusted address of `X-Forwarded-For`.
pub fn client_ip(peer: IpAddr, xff: Option<&str>, trusted: &TrustedProxies) -> IpAddr {
    let peer = peer.to_canonical();
    if trusted.is_empty() || !trusted.contains(peer) {
        return peer;
    }
    let Some(xff) = xff else { return peer };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match parse_hop(hop) {
            Some(ip) => {
                client = ip;
                if !trusted.contains(ip) {
                    break;
                }
            }
            // Garbage in the chain: stop believing it and keep the last good hop.
            None => break,
        }
    }
    client
}

fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    // `[v6]:port` or `v4:port`
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    None
}

/// Keeps an incoming request id when it is sane, else makes a new one.
pub fn request_id(incoming: Option<&str>) -> String {
    if let Some(id) = incoming {
        let id = id.trim();
        if !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return id.to_string();
        }
    }
    new_request_id()
}

/// 128 random bits as 32 hex digits.
pub fn new_request_id() -> String {
    let mut s = String::with_capacity(32);
    let _ = write!(s, "{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    s
}

/// The forwarding headers to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarding {
    pub x_forwarded_for: String,
    pub forwarded: String,
}

/// Builds `X-Forwarded-For` and `Forwarded`: the incoming chain is kept only from a trusted
/// peer; otherwise it is replaced, so a client cannot forge an address the backend believes.
pub fn forwarding(
    peer: IpAddr,
    trusted_peer: bool,
    incoming_xff: Option<&str>,
    incoming_forwarded: Option<&str>,
    host: &str,
    proto: &str,
) -> Forwarding {
    let peer = peer.to_canonical();
    let x_forwarded_for = match incoming_xff {
        Some(prev) if trusted_peer && !prev.trim().is_empty() => format!("{}, {peer}", prev.trim()),
        _ => peer.to_string(),
    };
    let node = match peer {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => format!("\"[{a}]\""),
    };
    let host_q = quote_if_needed(host);
    let elem = format!("for={node};host={host_q};proto={proto}");
    let forwarded = match incoming_forwarded {
        Some(prev) if trusted_peer && !prev.trim().is_empty() => format!("{}, {elem}", prev.trim()),
        _ => elem,
    };
    Forwarding {
        x_forwarded_for,
        forwarded,
    }
}

/// RFC 7230 token or quoted-string.
fn quote_if_needed(v: &str) -> String {
    let token = !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        v.to_string()
    } else {
        let escaped: String = v
            .chars()
            .filter(|c| !c.is_control())
            .flat_map(|c| match c {
                '"' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .collect();
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            parse_cidr("10.0.0.0/8").unwrap(),
            parse_cidr("::1").unwrap(),
        ])
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let peer: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &trusted()), peer);
    }

    #[test]
    fn trusted_peer_walks_the_chain() {
        let peer: IpAddr = "10.1.1.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, Some("6.6.6.6, 198.51.100.9, 10.2.2.2"), &trusted()),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(peer, Some("junk, 198.51.100.9"), &trusted()),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_ip(peer, Some("junk"), &trusted()), peer);
    }

    #[test]
    fn mapped_v4_is_canonical() {
        let peer: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(peer, None, &TrustedProxies::default()).to_string(),
            "192.0.2.1"
        );
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        let fresh = request_id(Some("bad id\r\nx"));
        assert_eq!(fresh.len(), 32);
        assert_ne!(request_id(None), request_id(None));
    }

    #[test]
    fn forwarding_headers() {
        let f = forwarding(
            "203.0.113.7".parse().unwrap(),
            false,
            Some("1.1.1.1"),
            Some("for=1.1.1.1"),
            "a.gov.vn",
            "http",
        );
        assert_eq!(f.x_forwarded_for, "203.0.113.7");
        assert_eq!(f.forwarded, "for=203.0.113.7;host=a.gov.vn;proto=http");
        let f = forwarding(
            "::1".parse().unwrap(),
            true,
            Some("1.1.1.1"),
            None,
            "a.gov.vn:8080",
            "https",
        );
        assert_eq!(f.x_forwarded_for, "1.1.1.1, ::1");
        assert_eq!(
            f.forwarded,
            "for=\"[::1]\";host=\"a.gov.vn:8080\";proto=https"
        );
    }
}
