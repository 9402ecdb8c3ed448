//! Prometheus metrics of the cache (registered in the process registry of `crate::metrics`):
//! lookups by outcome and bytes stored per tenant and tier, tier totals, evictions, purges
//! and disk faults. Records only.

use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use std::sync::LazyLock;

struct CacheMetrics {
    requests: IntCounterVec,
    bytes: IntGaugeVec,
    tier_bytes: IntGaugeVec,
    tier_limit: IntGaugeVec,
    tier_objects: IntGaugeVec,
    evictions: IntCounterVec,
    purged: IntCounterVec,
    disk_errors: IntCounterVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    let _ = crate::metrics::get().registry.register(Box::new(v.clone()));
    v
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    let _ = crate::metrics::get().registry.register(Box::new(v.clone()));
    v
}

static M: LazyLock<CacheMetrics> = LazyLock::new(|| {
    CacheMetrics {
    requests: counter(
        "cong_cache_requests_total",
        "Requests of tenants with caching on, by cache outcome (hit, miss, stale, expired, revalidated, bypass, uncacheable).",
        &["tenant", "status"],
    ),
    bytes: gauge(
        "cong_cache_bytes",
        "Bytes of cached objects, by tenant and tier (memory, disk).",
        &["tenant", "tier"],
    ),
    tier_bytes: gauge(
        "cong_cache_tier_bytes",
        "Bytes used by a cache tier (memory, disk).",
        &["tier"],
    ),
    tier_limit: gauge(
        "cong_cache_tier_limit_bytes",
        "Configured bound of a cache tier.",
        &["tier"],
    ),
    tier_objects: gauge(
        "cong_cache_tier_objects",
        "Objects held by a cache tier.",
        &["tier"],
    ),
    evictions: counter(
        "cong_cache_evictions_total",
        "Objects evicted to stay within a tier's bound.",
        &["tier"],
    ),
    purged: counter(
        "cong_cache_purged_objects_total",
        "Objects removed by purges, by tenant.",
        &["tenant"],
    ),
    disk_errors: counter(
        "cong_cache_disk_errors_total",
        "Disk tier faults (corrupt or truncated objects, failed writes), by kind.",
        &["kind"],
    ),
}
});

pub fn request(tenant: &str, status: &str) {
    M.requests.with_label_values(&[tenant, status]).inc();
}

pub fn tenant_bytes(tenant: &str, tier: &str, delta: i64) {
    M.bytes.with_label_values(&[tenant, tier]).add(delta);
}

pub fn evicted(tier: &str) {
    M.evictions.with_label_values(&[tier]).inc();
}

pub fn purged(tenant: &str, n: u64) {
    M.purged.with_label_values(&[tenant]).inc_by(n);
}

pub fn disk_error(kind: &str) {
    M.disk_errors.with_label_values(&[kind]).inc();
}

pub fn tier_limits(t: &super::storage::Tiered) {
    M.tier_limit
        .with_label_values(&["memory"])
        .set(t.mem.limit as i64);
    if let Some(d) = &t.disk {
        M.tier_limit
            .with_label_values(&["disk"])
            .set(d.limit as i64);
    }
    tier_bytes(t);
}

pub fn tier_bytes(t: &super::storage::Tiered) {
    M.tier_bytes
        .with_label_values(&["memory"])
        .set(t.mem.bytes() as i64);
    M.tier_objects
        .with_label_values(&["memory"])
        .set(t.mem.objects() as i64);
    if let Some(d) = &t.disk {
        M.tier_bytes
            .with_label_values(&["disk"])
            .set(d.bytes() as i64);
        M.tier_objects
            .with_label_values(&["disk"])
            .set(d.objects() as i64);
    }
}
