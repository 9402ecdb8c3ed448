//! `cong_cluster_*` metrics, registered in the process registry the first time cluster mode
//! starts (a single node exposes none of them). Labels are fixed sets.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};
use std::sync::LazyLock;

pub struct ClusterMetrics {
    /// 1 while Redis is reachable.
    pub up: IntGauge,
    /// Connections to Redis lost.
    pub disconnects: IntCounter,
    /// Redis requests that failed or timed out, by operation.
    pub errors: IntCounterVec,
    /// Rate-limit decisions by where they were made (`cluster`, `local_fallback`).
    pub decisions: IntCounterVec,
    /// Time of cluster rate-limit decisions.
    pub decision_seconds: Histogram,
    /// Messages waiting for Redis, and those dropped because the queue was full.
    pub queued: IntGauge,
    pub dropped: IntCounter,
    /// Messages received from other nodes, by kind.
    pub received: IntCounterVec,
    /// ACME order locks asked for, by result (`acquired`, `busy`, `unavailable`).
    pub locks: IntCounterVec,
}

fn reg<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    // A second registration (tests starting cluster mode twice) keeps the first.
    let _ = crate::metrics::get().registry.register(Box::new(c.clone()));
    c
}

static METRICS: LazyLock<ClusterMetrics> = LazyLock::new(|| ClusterMetrics {
    up: reg(IntGauge::new(
        "cong_cluster_up",
        "1 while the cluster's Redis is reachable.",
    )
    .expect("static metric definition")),
    disconnects: reg(IntCounter::new(
        "cong_cluster_disconnects_total",
        "Times the connection to the cluster's Redis was lost.",
    )
    .expect("static metric definition")),
    errors: reg(IntCounterVec::new(
        Opts::new(
            "cong_cluster_redis_errors_total",
            "Redis requests that failed or timed out, by operation.",
        ),
        &["op"],
    )
    .expect("static metric definition")),
    decisions: reg(IntCounterVec::new(
        Opts::new(
            "cong_cluster_ratelimit_decisions_total",
            "Decisions of cluster-scoped rate limits, by where they were made.",
        ),
        &["via"],
    )
    .expect("static metric definition")),
    decision_seconds: reg(Histogram::with_opts(
        HistogramOpts::new(
            "cong_cluster_ratelimit_decision_seconds",
            "Time of one cluster rate-limit decision in Redis.",
        )
        .buckets(vec![
            0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.05,
        ]),
    )
    .expect("static metric definition")),
    queued: reg(IntGauge::new(
        "cong_cluster_queued_messages",
        "Messages to other nodes waiting for Redis (bans, purges, certificate uploads).",
    )
    .expect("static metric definition")),
    dropped: reg(IntCounter::new(
        "cong_cluster_dropped_messages_total",
        "Messages to other nodes dropped because the queue was full.",
    )
    .expect("static metric definition")),
    received: reg(IntCounterVec::new(
        Opts::new(
            "cong_cluster_received_messages_total",
            "Changes received from other nodes, by kind.",
        ),
        &["kind"],
    )
    .expect("static metric definition")),
    locks: reg(IntCounterVec::new(
        Opts::new(
            "cong_cluster_acme_locks_total",
            "ACME order locks asked for, by result.",
        ),
        &["result"],
    )
    .expect("static metric definition")),
});

pub fn get() -> &'static ClusterMetrics {
    &METRICS
}
