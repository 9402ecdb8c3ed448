//! Prometheus metrics: one registry for the process, per-tenant request statistics, backend
//! health, reloads and events, encoded for `/metrics` on the admin listener.
//!
//! Label values are bounded: tenant ids come from the configuration (one `_unknown` for hosts
//! no tenant serves), methods are folded to a fixed set, statuses to classes; no path or client
//! address is ever a label. Per-tenant handles are resolved once per tenant and kept across
//! reloads, so the request path only touches atomics. This module records; it never decides.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, OnceLock};

const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "OTHER",
];
const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];
/// Tenant label of requests for hosts no tenant serves.
pub const UNKNOWN_TENANT: &str = "_unknown";

pub struct Metrics {
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    bytes_in: IntCounterVec,
    bytes_out: IntCounterVec,
    by_version: IntCounterVec,
    by_family: IntCounterVec,
    pub health_check_duration: HistogramVec,
    pub backend_up: IntGaugeVec,
    pub pool_available: IntGaugeVec,
    pub reloads: IntCounterVec,
    pub events: IntCounterVec,
    pub tenants: IntGauge,
    pub maintenance_active: IntGaugeVec,
    pub tenant_up: IntGaugeVec,
    pub probe_duration: HistogramVec,
    pub cert_not_after: IntGaugeVec,
    pub log_queue_depth: IntGauge,
    pub log_spool_bytes: IntGauge,
    pub log_dropped: IntCounter,
    pub log_sent: IntCounterVec,
    pub log_sink_up: IntGaugeVec,
    /// Last values read from counters kept elsewhere, to turn them into increments.
    seen: Mutex<HashMap<String, u64>>,
    pub access_denied: IntCounterVec,
    pub ratelimit_hits: IntCounterVec,
    pub bans: IntCounterVec,
    pub bans_active: IntGauge,
    pub ban_drops: IntCounterVec,
    pub conn_refused: IntCounterVec,
    pub waf_blocks: IntCounterVec,
    pub waf_detections: IntCounterVec,
    pub waf_rule_matches: IntCounterVec,
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(v.clone())).expect("unique metric name");
    v
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let v = IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric definition");
    r.register(Box::new(v.clone())).expect("unique metric name");
    v
}

fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let v = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .expect("static metric definition");
    r.register(Box::new(v.clone())).expect("unique metric name");
    v
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let r = Registry::new();
    let build = IntGaugeVec::new(
        Opts::new("cong_build_info", "Version of the running cong."),
        &["version"],
    )
    .expect("static metric definition");
    build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    r.register(Box::new(build)).expect("unique metric name");
    let tenants = IntGauge::new("cong_tenants", "Tenants in the configuration in force.")
        .expect("static metric definition");
    r.register(Box::new(tenants.clone()))
        .expect("unique metric name");
    Metrics {
        requests: counter_vec(
            &r,
            "cong_http_requests_total",
            "Requests answered, by tenant, status class and method.",
            &["tenant", "code", "method"],
        ),
        duration: histogram_vec(
            &r,
            "cong_http_request_duration_seconds",
            "Time from request to the end of the response, by tenant.",
            &["tenant"],
            vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ],
        ),
        bytes_in: counter_vec(
            &r,
            "cong_http_request_body_bytes_total",
            "Request body bytes received, by tenant.",
            &["tenant"],
        ),
        bytes_out: counter_vec(
            &r,
            "cong_http_response_body_bytes_total",
            "Response body bytes sent, by tenant.",
            &["tenant"],
        ),
        by_version: counter_vec(
            &r,
            "cong_http_requests_by_version_total",
            "Requests by tenant and HTTP version.",
            &["tenant", "version"],
        ),
        by_family: counter_vec(
            &r,
            "cong_http_requests_by_ip_family_total",
            "Requests by tenant and client IP family.",
            &["tenant", "family"],
        ),
        health_check_duration: histogram_vec(
            &r,
            "cong_health_check_duration_seconds",
            "Duration of active backend health checks, by tenant and pool.",
            &["tenant", "pool"],
            vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 5.0],
        ),
        backend_up: gauge_vec(
            &r,
            "cong_backend_up",
            "1 when the backend address is in rotation.",
            &["tenant", "pool", "backend"],
        ),
        pool_available: gauge_vec(
            &r,
            "cong_pool_available_backends",
            "Backend addresses in rotation, by pool.",
            &["tenant", "pool"],
        ),
        reloads: counter_vec(
            &r,
            "cong_config_reloads_total",
            "Configuration reloads by result.",
            &["result"],
        ),
        events: counter_vec(
            &r,
            "cong_events_total",
            "Events emitted, by kind and severity.",
            &["kind", "severity"],
        ),
        maintenance_active: gauge_vec(
            &r,
            "cong_tenant_maintenance",
            "1 while a planned maintenance window is active.",
            &["tenant"],
        ),
        tenant_up: gauge_vec(
            &r,
            "cong_tenant_up",
            "1 when the last availability probe through the gateway succeeded.",
            &["tenant"],
        ),
        // One histogram for all tenants: a per-tenant one would be 12 series a tenant.
        probe_duration: histogram_vec(
            &r,
            "cong_availability_probe_duration_seconds",
            "Duration of availability probes through the gateway, all tenants.",
            &[],
            vec![0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0],
        ),
        cert_not_after: gauge_vec(
            &r,
            "cong_tls_certificate_not_after_seconds",
            "Expiry (Unix time) of each certificate being served, by certificate name.",
            &["name"],
        ),
        log_queue_depth: {
            let g = IntGauge::new(
                "cong_log_queue_depth",
                "Events waiting in the log pipeline's memory queues.",
            )
            .expect("static metric definition");
            r.register(Box::new(g.clone())).expect("unique metric name");
            g
        },
        log_spool_bytes: {
            let g = IntGauge::new(
                "cong_log_spool_bytes",
                "Bytes of events waiting in the disk spools of log sinks.",
            )
            .expect("static metric definition");
            r.register(Box::new(g.clone())).expect("unique metric name");
            g
        },
        log_dropped: {
            let c = IntCounter::new(
                "cong_log_events_dropped_total",
                "Events the log pipeline had to drop (queue or spool full).",
            )
            .expect("static metric definition");
            r.register(Box::new(c.clone())).expect("unique metric name");
            c
        },
        log_sent: counter_vec(
            &r,
            "cong_log_events_sent_total",
            "Events delivered, by log sink.",
            &["sink"],
        ),
        log_sink_up: gauge_vec(
            &r,
            "cong_log_sink_up",
            "1 while the log sink's destination is reachable.",
            &["sink"],
        ),
        seen: Mutex::new(HashMap::new()),
        waf_blocks: counter_vec(
            &r,
            "cong_waf_blocks_total",
            "Requests the WAF refused, by tenant.",
            &["tenant"],
        ),
        waf_detections: counter_vec(
            &r,
            "cong_waf_detections_total",
            "Requests the WAF would have refused but let through (detect mode), by tenant.",
            &["tenant"],
        ),
        waf_rule_matches: counter_vec(
            &r,
            "cong_waf_rule_matches_total",
            "WAF rule matches, by CRS rule family (the hundreds of the rule id: 942 = SQL injection).",
            &["family"],
        ),
        access_denied: counter_vec(
            &r,
            "cong_access_denied_total",
            "Requests refused by access rules, by tenant and rule name.",
            &["tenant", "rule"],
        ),
        ratelimit_hits: counter_vec(
            &r,
            "cong_ratelimit_hits_total",
            "Requests answered 429 by a rate limit, by tenant and limit name.",
            &["tenant", "limit"],
        ),
        bans: counter_vec(
            &r,
            "cong_bans_total",
            "Clients banned, by reason.",
            &["reason"],
        ),
        bans_active: {
            let g = IntGauge::new("cong_bans_active", "Client keys banned right now.")
                .expect("static metric definition");
            r.register(Box::new(g.clone())).expect("unique metric name");
            g
        },
        ban_drops: counter_vec(
            &r,
            "cong_ban_drops_total",
            "Connections or requests of banned clients dropped, by stage (accept, request).",
            &["stage"],
        ),
        conn_refused: counter_vec(
            &r,
            "cong_connections_refused_total",
            "Connections refused or closed by connection protection, by reason.",
            &["reason"],
        ),
        tenants,
        registry: r,
    }
});

/// Adds to `counter` what an external monotonic count gained since the last call.
fn advance(key: &str, now: u64, counter: &IntCounter) {
    let m = get();
    let mut seen = match m.seen.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    let last = seen.insert(key.to_string(), now).unwrap_or(0);
    if now > last {
        counter.inc_by(now - last);
    }
}

/// Reads the log pipeline's counters into the registry (called at scrape time).
pub fn refresh_log_pipeline() {
    let Some(c) = crate::soc::counters() else {
        return;
    };
    let m = get();
    use std::sync::atomic::Ordering::Relaxed;
    let mut queue = c.queue_depth.load(Relaxed);
    let mut spool = 0;
    for (name, s) in &c.sinks {
        queue += s.queue_depth.load(Relaxed);
        spool += s.spool_bytes.load(Relaxed);
        advance(
            &format!("sent/{name}"),
            s.sent.load(Relaxed),
            &m.log_sent.with_label_values(&[name.as_str()]),
        );
        m.log_sink_up
            .with_label_values(&[name.as_str()])
            .set(i64::from(s.up.load(Relaxed)));
    }
    m.log_queue_depth.set(queue as i64);
    m.log_spool_bytes.set(spool as i64);
    advance("dropped", c.dropped_total(), &m.log_dropped);
}

pub fn get() -> &'static Metrics {
    &METRICS
}

/// Per-tenant handles, resolved on first use so an idle tenant costs no series.
#[derive(Debug)]
pub struct TenantStats {
    pub id: String,
    requests: [[OnceLock<IntCounter>; 8]; 6],
    duration: OnceLock<Histogram>,
    bytes_in: OnceLock<IntCounter>,
    bytes_out: OnceLock<IntCounter>,
    versions: [OnceLock<IntCounter>; 2],
    families: [OnceLock<IntCounter>; 2],
}

static TENANT_STATS: LazyLock<Mutex<HashMap<String, Arc<TenantStats>>>> =
    LazyLock::new(Default::default);

/// The statistics of a tenant id, the same object across reloads.
pub fn tenant_stats(id: &str) -> Arc<TenantStats> {
    let mut map = match TENANT_STATS.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    map.entry(id.to_string())
        .or_insert_with(|| {
            Arc::new(TenantStats {
                id: id.to_string(),
                requests: Default::default(),
                duration: OnceLock::new(),
                bytes_in: OnceLock::new(),
                bytes_out: OnceLock::new(),
                versions: Default::default(),
                families: Default::default(),
            })
        })
        .clone()
}

/// One finished request.
pub struct RequestSample<'a> {
    pub status: u16,
    pub method: &'a str,
    pub seconds: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub http2: bool,
    pub ipv6: bool,
}

impl TenantStats {
    pub fn record(&self, s: &RequestSample<'_>) {
        let m = get();
        let class = match s.status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        let method = METHODS.iter().position(|x| *x == s.method).unwrap_or(7);
        self.requests[class][method]
            .get_or_init(|| {
                m.requests
                    .with_label_values(&[self.id.as_str(), CLASSES[class], METHODS[method]])
            })
            .inc();
        self.duration
            .get_or_init(|| m.duration.with_label_values(&[self.id.as_str()]))
            .observe(s.seconds);
        if s.bytes_in > 0 {
            self.bytes_in
                .get_or_init(|| m.bytes_in.with_label_values(&[self.id.as_str()]))
                .inc_by(s.bytes_in);
        }
        self.bytes_out
            .get_or_init(|| m.bytes_out.with_label_values(&[self.id.as_str()]))
            .inc_by(s.bytes_out);
        let v = usize::from(s.http2);
        self.versions[v]
            .get_or_init(|| {
                m.by_version
                    .with_label_values(&[self.id.as_str(), if s.http2 { "2" } else { "1.1" }])
            })
            .inc();
        let f = usize::from(s.ipv6);
        self.families[f]
            .get_or_init(|| {
                m.by_family
                    .with_label_values(&[self.id.as_str(), if s.ipv6 { "ipv6" } else { "ipv4" }])
            })
            .inc();
    }
}

/// The text exposition of every metric.
pub fn encode() -> String {
    let mut buf = Vec::new();
    let families = get().registry.gather();
    if TextEncoder::new().encode(&families, &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_bounded_labels() {
        let s = tenant_stats("metrics-test");
        s.record(&RequestSample {
            status: 503,
            method: "PROPFIND",
            seconds: 0.02,
            bytes_in: 0,
            bytes_out: 10,
            http2: true,
            ipv6: true,
        });
        let text = encode();
        assert!(
            text.contains(
                "cong_http_requests_total{code=\"5xx\",method=\"OTHER\",tenant=\"metrics-test\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains(
            "cong_http_requests_by_ip_family_total{family=\"ipv6\",tenant=\"metrics-test\"} 1"
        ));
        assert!(Arc::ptr_eq(&s, &tenant_stats("metrics-test")));
    }
}
