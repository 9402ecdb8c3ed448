//! A tiny writer of MaxMind DB files (format 2.0, IPv6 tree, 32-bit records) so tests can
//! build their own GeoIP databases: `write(path, layout, &[("203.0.113.0/24", "CN")])`.

use std::net::IpAddr;

/// How records carry the country.
#[derive(Clone, Copy)]
pub enum Layout {
    /// GeoIP2/GeoLite2: `{"country": {"iso_code": "VN"}}`.
    MaxMind,
    /// Free CC0 databases: `{"country_code": "VN"}`.
    Flat,
}

#[derive(Clone, Copy)]
enum Child {
    Empty,
    Node(usize),
    Data(usize),
}

fn ctrl(out: &mut Vec<u8>, ty: u8, size: usize) {
    assert!(size < 29);
    if ty <= 7 {
        out.push((ty << 5) | size as u8);
    } else {
        out.push(size as u8);
        out.push(ty - 7);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    ctrl(out, 2, s.len());
    out.extend_from_slice(s.as_bytes());
}

fn uint(out: &mut Vec<u8>, ty: u8, v: u64, bytes: usize) {
    ctrl(out, ty, bytes);
    out.extend_from_slice(&v.to_be_bytes()[8 - bytes..]);
}

/// Writes a database mapping each CIDR to a country code.
pub fn build(layout: Layout, entries: &[(&str, &str)]) -> Vec<u8> {
    let mut data = Vec::new();
    let mut nodes: Vec<[Child; 2]> = vec![[Child::Empty; 2]];
    for (cidr, cc) in entries {
        let (addr, len) = cidr.split_once('/').unwrap_or((cidr, ""));
        let ip: IpAddr = addr.parse().unwrap();
        let (bits, plen) = match ip {
            IpAddr::V4(a) => (
                u128::from(u32::from(a)),
                96 + len.parse::<usize>().unwrap_or(32),
            ),
            IpAddr::V6(a) => (u128::from(a), len.parse::<usize>().unwrap_or(128)),
        };
        let off = data.len();
        match layout {
            Layout::MaxMind => {
                ctrl(&mut data, 7, 1);
                string(&mut data, "country");
                ctrl(&mut data, 7, 1);
                string(&mut data, "iso_code");
                string(&mut data, cc);
            }
            Layout::Flat => {
                ctrl(&mut data, 7, 1);
                string(&mut data, "country_code");
                string(&mut data, cc);
            }
        }
        let mut node = 0;
        for depth in 0..plen {
            let bit = ((bits >> (127 - depth)) & 1) as usize;
            if depth + 1 == plen {
                nodes[node][bit] = Child::Data(off);
            } else {
                node = match nodes[node][bit] {
                    Child::Node(n) => n,
                    _ => {
                        nodes.push([Child::Empty; 2]);
                        let n = nodes.len() - 1;
                        nodes[node][bit] = Child::Node(n);
                        n
                    }
                };
            }
        }
    }
    let count = nodes.len();
    let mut out = Vec::new();
    for n in &nodes {
        for c in n {
            let v = match *c {
                Child::Empty => count,
                Child::Node(i) => i,
                Child::Data(o) => count + 16 + o,
            };
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0u8; 16]);
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\xAB\xCD\xEFMaxMind.com");
    let mut m = Vec::new();
    ctrl(&mut m, 7, 9);
    string(&mut m, "node_count");
    uint(&mut m, 6, count as u64, 4);
    string(&mut m, "record_size");
    uint(&mut m, 5, 32, 2);
    string(&mut m, "ip_version");
    uint(&mut m, 5, 6, 2);
    string(&mut m, "database_type");
    string(&mut m, "cong-test-country");
    string(&mut m, "languages");
    ctrl(&mut m, 11, 0);
    string(&mut m, "binary_format_major_version");
    uint(&mut m, 5, 2, 2);
    string(&mut m, "binary_format_minor_version");
    uint(&mut m, 5, 0, 2);
    string(&mut m, "build_epoch");
    uint(&mut m, 9, 1_700_000_000, 8);
    string(&mut m, "description");
    ctrl(&mut m, 7, 0);
    out.extend_from_slice(&m);
    out
}

pub fn write(path: &std::path::Path, layout: Layout, entries: &[(&str, &str)]) {
    std::fs::write(path, build(layout, entries)).unwrap();
}
