//! Memory bound of the client tables: 200,000 distinct simulated clients through the rate-limit
//! check keep the table within `limits.max_entries`, and a legitimate client under its limit
//! never sees a 429 during the flood.

use cong::config::Config;
use cong::gateway::Snapshot;
use std::net::{IpAddr, Ipv6Addr};

#[test]
fn a_flood_of_distinct_clients_stays_within_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("cong.toml");
    std::fs::write(
        &main,
        r#"
[[listen]]
address = "127.0.0.1:18181"

[limits]
max_entries = 20000

[[tenant]]
id = "t"
hosts = ["t.gov.vn"]

[tenant.pools.main]
backends = ["127.0.0.1:1"]

[[tenant.limits.rate]]
name = "pages"
requests = 100
per = "1s"
"#,
    )
    .unwrap();
    let cfg = Config::load(&main).unwrap();
    let snap = Snapshot::build(&cfg).unwrap();
    snap.limits.apply();
    let t = &snap.tenants[0].limits;
    let legit: IpAddr = "203.0.113.7".parse().unwrap();
    let mut legit_denied = 0;
    for i in 0..200_000u64 {
        // Each simulated client is its own /64.
        let ip = IpAddr::V6(Ipv6Addr::from(
            (0x2001_0db8_u128 << 96) | (u128::from(i) << 64),
        ));
        assert!(cong::limits::check(&snap.limits, t, ip, "/").is_none());
        // The legitimate client sends one request per 10,000 flood requests: well under 100/s.
        if i % 10_000 == 0 && cong::limits::check(&snap.limits, t, legit, "/").is_some() {
            legit_denied += 1;
        }
        if i % 50_000 == 0 {
            let (len, cap) = cong::limits::state_size();
            assert!(len <= cap, "{len} > {cap}");
        }
    }
    let (len, cap) = cong::limits::state_size();
    assert!(len <= cap);
    assert!(
        cap <= 20_000 + cong::limits::table::SHARDS,
        "capacity {cap} above the configured bound"
    );
    assert!(len > 15_000, "the table is used up to its bound ({len})");
    assert_eq!(legit_denied, 0);
}
