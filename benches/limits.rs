//! Access rules and rate limits on the request path.
//!
//! 1. Flood: 1,000,000 distinct simulated client keys through the rate-limit check with the
//!    default bound (`limits.max_entries` = 200,000); prints the table size, the resident
//!    memory growth and whether a legitimate client under its limit ever got a 429.
//! 2. Criterion: rule + limit check per request with 10,000 tenants and 1,000 global rules.
//!
//! Run: `cargo bench --bench limits`; figures are kept in benches/LIMITS.md.

use cong::config::Config;
use cong::gateway::Snapshot;
use criterion::{black_box, Criterion};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A configuration of `tenants` tenant files, `rules` global rules, one global limit.
fn build(tenants: usize, rules: usize) -> (tempfile::TempDir, Snapshot) {
    let dir = tempfile::tempdir().unwrap();
    let mut main = String::from(
        "[[listen]]\naddress = \"127.0.0.1:18182\"\n\n[[limits.rate]]\nname = \"pages\"\nrequests = 100\nper = \"1s\"\n\n[[limits.rate]]\nname = \"login\"\npaths = [\"/user/login\"]\nrequests = 5\nper = \"1m\"\n\n",
    );
    for i in 0..rules {
        let _ = write!(
            main,
            "[[access.rule]]\nname = \"r{i}\"\npaths = [\"/p{i}/**\"]\nallow_cidrs = [\"10.{}.{}.0/24\"]\nmethods = [\"GET\", \"POST\"]\n\n",
            i / 256,
            i % 256
        );
    }
    std::fs::write(dir.path().join("cong.toml"), main).unwrap();
    let td = dir.path().join("tenants.d");
    std::fs::create_dir_all(&td).unwrap();
    for i in 0..tenants {
        std::fs::write(
            td.join(format!("t{i}.toml")),
            format!(
                "id = \"t{i}\"\nhosts = [\"t{i}.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:1\"]\n\n[[access.rule]]\nname = \"ua\"\ndeny_user_agents = [\"(?i)sqlmap\"]\n"
            ),
        )
        .unwrap();
    }
    let cfg = Config::load(&dir.path().join("cong.toml")).unwrap();
    let snap = Snapshot::build(&cfg).unwrap();
    snap.limits.apply();
    (dir, snap)
}

fn flood(keys: u64) {
    let (_dir, snap) = build(1, 0);
    let t = &snap.tenants[0].limits;
    let legit: IpAddr = "203.0.113.7".parse().unwrap();
    let before = rss_kib();
    let start = Instant::now();
    let mut legit_429 = 0;
    let mut peak = 0;
    for i in 0..keys {
        let ip = IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
        ));
        black_box(cong::limits::check(&snap.limits, t, ip, "/"));
        if i % 20_000 == 0 {
            if cong::limits::check(&snap.limits, t, legit, "/").is_some() {
                legit_429 += 1;
            }
            peak = peak.max(cong::limits::state_size().0);
        }
    }
    let took = start.elapsed();
    let (len, cap) = cong::limits::state_size();
    let after = rss_kib();
    println!(
        "flood: {keys} distinct /64 keys in {:.2?} ({:.0} ns/key); table {len} entries (peak {peak}, bound {cap}); RSS {} MiB -> {} MiB (+{} MiB, {:.0} B/entry); legitimate client 429s: {legit_429}",
        took,
        took.as_nanos() as f64 / keys as f64,
        before / 1024,
        after / 1024,
        after.saturating_sub(before) / 1024,
        (after.saturating_sub(before) * 1024) as f64 / len.max(1) as f64,
    );
}

fn checks(c: &mut Criterion) {
    let (_dir, snap) = build(10_000, 1_000);
    let req = pingora::http::RequestHeader::build("GET", b"/p517/users/list?page=2", None).unwrap();
    let mut n: u64 = 0;
    c.bench_function("rule+limit check, 10k tenants, 1k rules", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919);
            let tenant = &snap.tenants[(n % 10_000) as usize];
            // Clients of the network rule r517 allows: the request passes every rule.
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a02_0500 + (n % 256) as u32));
            let country = snap.access.country(ip);
            let path = cong::access::path::normalize(req.uri.path());
            let denied = cong::access::enforce(
                &snap.access,
                &tenant.access,
                &tenant.id,
                &req,
                ip,
                country,
                &path,
            );
            let limited = cong::limits::check(&snap.limits, &tenant.limits, ip, &path);
            black_box((denied, limited))
        })
    });
    let mut n: u64 = 0;
    c.bench_function("access rules only", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919);
            let tenant = &snap.tenants[(n % 10_000) as usize];
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a02_0500 + (n % 256) as u32));
            let path = cong::access::path::normalize(req.uri.path());
            black_box(cong::access::enforce(
                &snap.access,
                &tenant.access,
                &tenant.id,
                &req,
                ip,
                cong::geoip::Country::UNKNOWN,
                &path,
            ))
        })
    });
    let mut n: u64 = 0;
    c.bench_function("rate limits only", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919);
            let tenant = &snap.tenants[(n % 10_000) as usize];
            let ip = IpAddr::V4(Ipv4Addr::from(0x0a02_0500 + (n % 256) as u32));
            black_box(cong::limits::check(
                &snap.limits,
                &tenant.limits,
                ip,
                "/p517/users/list",
            ))
        })
    });
}

fn main() {
    // `cargo test` runs benches once without `--bench`: keep that quick.
    let full = std::env::args().any(|a| a == "--bench");
    flood(if full { 1_000_000 } else { 10_000 });
    let mut c = Criterion::default()
        .configure_from_args()
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    checks(&mut c);
    c.final_summary();
}
