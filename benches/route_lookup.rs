//! Host routing with a province-sized table: 10,000 tenants, each with an exact name
//! `xa{i}.tinh{j}.gov.vn`, one alias `www.…` for every tenth tenant, and 1,000 wildcards
//! `*.huyen{k}.tinh.gov.vn`.
//!
//! Each benchmark cycles through 1,024 different request names so that the figure is not the
//! cost of one name that stays in the innermost cache. Reported times are per lookup.
//!
//! Run: `cargo bench --bench route_lookup`

use cong::routing::{normalize_request_host, parse_host_pattern, RouteTable, TenantIdx};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::time::Duration;

const TENANTS: u32 = 10_000;
const PROVINCES: u32 = 63;
const WILDCARDS: u32 = 1_000;
/// Distinct request names each benchmark cycles through (a power of two).
const SAMPLE: usize = 1_024;

fn exact_name(i: u32) -> String {
    format!("xa{i}.tinh{}.gov.vn", i % PROVINCES)
}

fn build_table() -> RouteTable {
    let mut t = RouteTable::new();
    let mut add = |raw: &str, tenant: TenantIdx| {
        let pattern = parse_host_pattern(raw).expect("valid host pattern");
        t.insert(&pattern, tenant).expect("no duplicate host");
    };
    for i in 0..TENANTS {
        add(&exact_name(i), i);
        if i % 10 == 0 {
            add(&format!("www.{}", exact_name(i)), i);
        }
    }
    for k in 0..WILDCARDS {
        add(&format!("*.huyen{k}.tinh.gov.vn"), k);
    }
    t
}

/// `SAMPLE` names spread over the whole table (a fixed stride, so the run is reproducible).
fn sample(f: impl Fn(u32) -> String, range: u32) -> Vec<String> {
    (0..SAMPLE as u32)
        .map(|n| f(n.wrapping_mul(7_919) % range))
        .collect()
}

fn bench(c: &mut Criterion) {
    let table = build_table();
    assert_eq!(
        table.len(),
        (TENANTS + TENANTS / 10 + WILDCARDS) as usize,
        "route table size"
    );

    let exact = sample(exact_name, TENANTS);
    let wildcard = sample(|k| format!("cong{k}.huyen{k}.tinh.gov.vn"), WILDCARDS);
    let miss = sample(|k| format!("xa{k}.khongco{k}.tinh.gov.vn"), TENANTS);
    let raw_upper = sample(
        |i| format!("XA{i}.Tinh{}.GOV.VN:8080", i % PROVINCES),
        TENANTS,
    );
    let raw_lower = sample(|i| format!("{}:8080", exact_name(i)), TENANTS);

    // Sanity: every case routes the way its name says.
    for (i, n) in exact.iter().enumerate() {
        assert!(table.lookup_name(n).is_some(), "exact {i}: {n}");
    }
    for n in &wildcard {
        assert!(table.lookup_name(n).is_some(), "wildcard: {n}");
    }
    for n in &miss {
        assert_eq!(table.lookup_name(n), None, "miss: {n}");
    }
    for h in raw_upper.iter().chain(&raw_lower) {
        let key = normalize_request_host(h).expect("valid host");
        assert!(table.lookup(&key).is_some(), "full path: {h}");
    }

    let mut g = c.benchmark_group("route_lookup_10k_tenants");
    g.sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    g.bench_function("exact_hit", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (SAMPLE - 1);
            table.lookup_name(black_box(&exact[i]))
        })
    });
    g.bench_function("wildcard_hit_5_labels", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (SAMPLE - 1);
            table.lookup_name(black_box(&wildcard[i]))
        })
    });
    g.bench_function("miss", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (SAMPLE - 1);
            table.lookup_name(black_box(&miss[i]))
        })
    });
    g.bench_function("normalize_and_lookup_upper_case_port", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (SAMPLE - 1);
            let key = normalize_request_host(black_box(&raw_upper[i])).unwrap();
            table.lookup(&key)
        })
    });
    g.bench_function("normalize_and_lookup_lower_case_port", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (SAMPLE - 1);
            let key = normalize_request_host(black_box(&raw_lower[i])).unwrap();
            table.lookup(&key)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
