//! Upstream pools: backends, their resolved addresses, health, and the choice of one per request.
//!
//! Owns `Pool` (settings + endpoints), `Endpoint` (one resolved address with its health and
//! in-flight count), load balancing (round robin, least connections, rendezvous hash on the
//! client address), passive failure detection, the active health checker (`health`) and DNS
//! re-resolution (`dns`). Does not know about tenants, hosts or HTTP requests beyond the client
//! address it is given; the proxy pipeline asks it for an endpoint and reports outcomes.

pub mod dns;
pub mod health;
pub mod tls;

use crate::config::ConfigError;
use crate::config::{Balance, PoolConfig, SourceFile};
use crate::static_origin::StaticOrigin;
use arc_swap::ArcSwap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A backend as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendSpec {
    Addr(SocketAddr),
    /// Resolved by DNS (A and AAAA); every address becomes an endpoint.
    Name {
        host: String,
        port: u16,
    },
}

impl BackendSpec {
    pub fn parse(s: &str) -> Result<BackendSpec, String> {
        let s = s.trim();
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(BackendSpec::Addr(a));
        }
        let (host, port) = s.rsplit_once(':').ok_or_else(|| {
            format!(
                "`{s}` needs a port, as in `10.0.0.5:80`, `[2001:db8::5]:80` or `cms.local:8080`"
            )
        })?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("`{s}`: `{port}` is not a port number"))?;
        if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            return Err(format!(
                "`{s}` is not a valid address (IPv6 goes in brackets: `[::1]:80`)"
            ));
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty()
            || !host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        {
            return Err(format!("`{s}`: `{host}` is not a valid host name"));
        }
        Ok(BackendSpec::Name { host, port })
    }
}

/// Active health-check settings.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    pub path: String,
    pub host: Option<String>,
    pub expect: StatusSet,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// Accepted statuses: a list of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    pub fn parse(s: &str) -> Result<StatusSet, String> {
        let mut out = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let a: u16 = a
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` is not a status or range"))?;
            let b: u16 = b
                .trim()
                .parse()
                .map_err(|_| format!("`{part}` is not a status or range"))?;
            if !(100..=599).contains(&a) || !(100..=599).contains(&b) || a > b {
                return Err(format!(
                    "`{part}`: statuses run from 100 to 599, low to high"
                ));
            }
            out.push((a, b));
        }
        Ok(StatusSet(out))
    }
    pub fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(a, b)| (a..=b).contains(&code))
    }
}

/// Everything about a pool except its endpoints.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub balance: Balance,
    pub tls: bool,
    pub sni: Option<String>,
    pub tls_verify: bool,
    pub ca: Option<Arc<pingora::protocols::tls::CaType>>,
    pub ca_path: Option<String>,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_fails: u32,
    pub fail_timeout: Duration,
    pub retries: u32,
    pub health: Option<HealthSettings>,
}

/// One resolved backend address.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// The configured backend this address came from (for logs).
    pub backend: String,
    /// Verdict of the active checker (true until it says otherwise).
    healthy: AtomicBool,
    ok_streak: AtomicU32,
    fail_streak: AtomicU32,
    /// Consecutive failed requests (passive detection).
    passive_fails: AtomicU32,
    /// Taken out by passive detection until this time (ms since the epoch).
    down_until_ms: AtomicU64,
    inflight: AtomicUsize,
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Endpoint {
    pub fn new(addr: SocketAddr, backend: String) -> Self {
        Endpoint {
            addr,
            backend,
            healthy: AtomicBool::new(true),
            ok_streak: AtomicU32::new(0),
            fail_streak: AtomicU32::new(0),
            passive_fails: AtomicU32::new(0),
            down_until_ms: AtomicU64::new(0),
            inflight: AtomicUsize::new(0),
        }
    }

    /// Usable now: the active checker says healthy and no passive timeout is running.
    pub fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && {
            let until = self.down_until_ms.load(Ordering::Relaxed);
            until == 0 || now_ms() >= until
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Records an active check result; returns the new verdict when it changed.
    pub fn record_check(&self, ok: bool, rise: u32, fall: u32) -> Option<bool> {
        if ok {
            self.fail_streak.store(0, Ordering::Relaxed);
            let n = self.ok_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if !self.healthy.load(Ordering::Relaxed) && n >= rise {
                self.healthy.store(true, Ordering::Relaxed);
                // A recovered backend starts with a clean passive record.
                self.passive_fails.store(0, Ordering::Relaxed);
                self.down_until_ms.store(0, Ordering::Relaxed);
                return Some(true);
            }
        } else {
            self.ok_streak.store(0, Ordering::Relaxed);
            let n = self.fail_streak.fetch_add(1, Ordering::Relaxed) + 1;
            if self.healthy.load(Ordering::Relaxed) && n >= fall {
                self.healthy.store(false, Ordering::Relaxed);
                return Some(false);
            }
        }
        None
    }

    /// A request to this endpoint failed to connect or timed out. Returns true when this
    /// takes the endpoint out of rotation.
    pub fn record_failure(&self, max_fails: u32, fail_timeout: Duration) -> bool {
        let n = self.passive_fails.fetch_add(1, Ordering::Relaxed) + 1;
        if max_fails > 0 && n >= max_fails {
            let was_down = self.down_until_ms.load(Ordering::Relaxed) > now_ms();
            self.down_until_ms.store(
                now_ms() + fail_timeout.as_millis() as u64,
                Ordering::Relaxed,
            );
            self.passive_fails.store(0, Ordering::Relaxed);
            return !was_down;
        }
        false
    }

    pub fn record_success(&self) {
        if self.passive_fails.load(Ordering::Relaxed) != 0 {
            self.passive_fails.store(0, Ordering::Relaxed);
        }
    }
}

/// Held while a request uses an endpoint, for least-connections balancing.
#[derive(Debug)]
pub struct InflightGuard(Arc<Endpoint>);

impl InflightGuard {
    pub fn new(ep: Arc<Endpoint>) -> Self {
        ep.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard(ep)
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Where a pool's responses come from.
#[derive(Debug)]
pub enum PoolKind {
    Proxy,
    Static(Arc<StaticOrigin>),
}

/// A named group of backends of one tenant.
#[derive(Debug)]
pub struct Pool {
    /// `tenant/pool`, for logs.
    pub label: String,
    pub kind: PoolKind,
    pub settings: PoolSettings,
    pub specs: Vec<BackendSpec>,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    rr: AtomicUsize,
    /// Scheduling state for the health checker and the resolver (ms since the epoch).
    pub(crate) next_check_ms: AtomicU64,
    pub(crate) checking: AtomicBool,
    pub(crate) next_resolve_ms: AtomicU64,
    pub(crate) resolving: AtomicBool,
    probe_tls: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>>,
    /// Everything that defines the pool's behaviour, so a reload can keep a pool (and its
    /// health state and connections) whose configuration did not change.
    pub fingerprint: String,
}

impl Pool {
    /// Builds a pool from its configuration; `key` is the TOML path for error messages.
    pub fn from_config(
        label: String,
        key: &str,
        cfg: &PoolConfig,
        src: &SourceFile,
        resolve_path: &dyn Fn(&str) -> std::path::PathBuf,
    ) -> Result<Pool, ConfigError> {
        let kind = match &cfg.static_root {
            Some(root) => {
                if !cfg.backends.is_empty() {
                    return Err(src.error_at(
                        root.span(),
                        format!("{key}.static_root"),
                        "a pool has either `backends` or `static_root`, not both",
                    ));
                }
                let origin = StaticOrigin::open(root.get_ref(), resolve_path)
                    .map_err(|e| src.error_at(root.span(), format!("{key}.static_root"), e))?;
                PoolKind::Static(Arc::new(origin))
            }
            None => PoolKind::Proxy,
        };
        let mut specs = Vec::new();
        for (i, b) in cfg.backends.iter().enumerate() {
            let spec = BackendSpec::parse(b.get_ref())
                .map_err(|e| src.error_at(b.span(), format!("{key}.backends[{i}]"), e))?;
            specs.push(spec);
        }
        if matches!(kind, PoolKind::Proxy) && specs.is_empty() {
            return Err(src.error_at(
                0..0,
                key.to_string(),
                "a pool needs `backends` (at least one) or `static_root`",
            ));
        }
        let health = match &cfg.health {
            Some(h) => {
                let expect = StatusSet::parse(h.expect_status.get_ref()).map_err(|e| {
                    src.error_at(
                        h.expect_status.span(),
                        format!("{key}.health.expect_status"),
                        e,
                    )
                })?;
                if !h.path.starts_with('/') {
                    return Err(src.error_at(
                        0..0,
                        format!("{key}.health.path"),
                        "must start with `/`",
                    ));
                }
                Some(HealthSettings {
                    path: h.path.clone(),
                    host: h.host.clone(),
                    expect,
                    interval: h.interval.get().max(Duration::from_millis(100)),
                    timeout: h.timeout.get().max(Duration::from_millis(10)),
                    rise: h.rise.max(1),
                    fall: h.fall.max(1),
                })
            }
            None => None,
        };
        let (ca, ca_path) = match &cfg.ca_file {
            Some(p) => {
                let path = resolve_path(p.get_ref());
                let ca = tls::load_ca(&path)
                    .map_err(|e| src.error_at(p.span(), format!("{key}.ca_file"), e))?;
                (Some(ca), Some(path.display().to_string()))
            }
            None => (None, None),
        };
        let settings = PoolSettings {
            balance: cfg.balance,
            tls: cfg.tls,
            sni: cfg.sni.clone(),
            tls_verify: cfg.tls_verify,
            ca,
            ca_path,
            connect_timeout: cfg.connect_timeout.get(),
            read_timeout: cfg.read_timeout.get(),
            write_timeout: cfg.write_timeout.get(),
            idle_timeout: cfg.idle_timeout.get(),
            max_fails: cfg.max_fails,
            fail_timeout: cfg.fail_timeout.get(),
            retries: cfg.retries,
            health,
        };
        let endpoints = specs
            .iter()
            .filter_map(|s| match s {
                BackendSpec::Addr(a) => Some(Arc::new(Endpoint::new(*a, a.to_string()))),
                BackendSpec::Name { .. } => None,
            })
            .collect();
        let fingerprint = format!(
            "{:?}|{:?}|{:?}|{}|{:?}|{}|{:?}|{:?}|{:?}|{:?}|{:?}|{}|{:?}|{}|{:?}",
            cfg.static_root.as_ref().map(|r| r.get_ref()),
            specs,
            settings.balance,
            settings.tls,
            settings.sni,
            settings.tls_verify,
            settings.ca_path,
            settings.connect_timeout,
            settings.read_timeout,
            settings.write_timeout,
            settings.idle_timeout,
            settings.max_fails,
            settings.fail_timeout,
            settings.retries,
            settings.health,
        );
        Ok(Pool {
            fingerprint,
            label,
            kind,
            settings,
            specs,
            endpoints: ArcSwap::from_pointee(endpoints),
            rr: AtomicUsize::new(0),
            next_check_ms: AtomicU64::new(0),
            checking: AtomicBool::new(false),
            next_resolve_ms: AtomicU64::new(0),
            resolving: AtomicBool::new(false),
            probe_tls: std::sync::OnceLock::new(),
        })
    }

    pub fn endpoints(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    /// TLS client settings for health probes, built on first use.
    pub fn probe_tls(&self) -> Result<Arc<rustls::ClientConfig>, String> {
        self.probe_tls
            .get_or_init(|| {
                tls::probe_client_config(self.settings.tls_verify, self.settings.ca_path.as_deref())
            })
            .clone()
    }

    /// The tenant part of the label.
    pub fn tenant_id(&self) -> &str {
        self.label.split('/').next().unwrap_or("")
    }

    /// The pool part of the label.
    pub fn name(&self) -> &str {
        self.label
            .split_once('/')
            .map(|(_, p)| p)
            .unwrap_or(&self.label)
    }

    /// An event about this pool, with tenant and pool filled in.
    pub fn event(
        &self,
        kind: &'static str,
        severity: crate::events::Severity,
    ) -> crate::events::Event {
        crate::events::Event::new(kind, severity)
            .tenant(self.tenant_id())
            .field("pool", self.name())
    }

    pub fn has_names(&self) -> bool {
        self.specs
            .iter()
            .any(|s| matches!(s, BackendSpec::Name { .. }))
    }

    /// Replaces the endpoint list after DNS resolution, keeping the health state of
    /// addresses that stay.
    pub fn set_resolved(&self, resolved: &[(usize, Vec<SocketAddr>)]) {
        let old = self.endpoints.load();
        let mut next: Vec<Arc<Endpoint>> = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let (addrs, label): (Vec<SocketAddr>, String) = match spec {
                BackendSpec::Addr(a) => (vec![*a], a.to_string()),
                BackendSpec::Name { host, port } => (
                    resolved
                        .iter()
                        .find(|(j, _)| *j == i)
                        .map(|(_, a)| a.clone())
                        // Keep the last good answer when this name did not resolve.
                        .unwrap_or_else(|| {
                            old.iter()
                                .filter(|e| e.backend == format!("{host}:{port}"))
                                .map(|e| e.addr)
                                .collect()
                        }),
                    format!("{host}:{port}"),
                ),
            };
            for a in addrs {
                if next.iter().any(|e| e.addr == a) {
                    continue;
                }
                match old.iter().find(|e| e.addr == a) {
                    Some(e) => next.push(e.clone()),
                    None => next.push(Arc::new(Endpoint::new(a, label.clone()))),
                }
            }
        }
        self.endpoints.store(Arc::new(next));
    }

    /// Picks an available endpoint not in `tried`. Returns `None` when every endpoint is
    /// down or already tried.
    pub fn select(&self, client: Option<IpAddr>, tried: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let eps = self.endpoints.load();
        let n = eps.len();
        if n == 0 {
            return None;
        }
        let usable = |e: &Arc<Endpoint>| e.available() && !tried.contains(&e.addr);
        match self.settings.balance {
            Balance::RoundRobin => {
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &eps[(start + i) % n])
                    .find(|e| usable(e))
                    .cloned()
            }
            Balance::LeastConn => {
                // Ties broken round robin so equal backends share the load.
                let start = self.rr.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|i| &eps[(start + i) % n])
                    .filter(|e| usable(e))
                    .min_by_key(|e| e.inflight())
                    .cloned()
            }
            Balance::IpHash => {
                let key = client.map(|ip| ip.to_canonical());
                eps.iter()
                    .filter(|e| usable(e))
                    .max_by_key(|e| rendezvous(key, e.addr))
                    .cloned()
            }
        }
    }
}

/// Rendezvous (highest random weight) score: removing one backend only moves its clients.
fn rendezvous(client: Option<IpAddr>, backend: SocketAddr) -> u64 {
    // FNV-1a over both; small and stable across processes and versions.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    match client {
        Some(IpAddr::V4(a)) => feed(&a.octets()),
        Some(IpAddr::V6(a)) => feed(&a.octets()),
        None => {}
    }
    match backend.ip() {
        IpAddr::V4(a) => feed(&a.octets()),
        IpAddr::V6(a) => feed(&a.octets()),
    }
    feed(&backend.port().to_be_bytes());
    // Final mix so close inputs spread.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^ (h >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_specs() {
        assert_eq!(
            BackendSpec::parse("127.0.0.1:80").unwrap(),
            BackendSpec::Addr("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            BackendSpec::parse("[::1]:8080").unwrap(),
            BackendSpec::Addr("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            BackendSpec::parse("CMS.local:8080").unwrap(),
            BackendSpec::Name {
                host: "cms.local".into(),
                port: 8080
            }
        );
        assert!(BackendSpec::parse("::1:80").is_err());
        assert!(BackendSpec::parse("cms.local").is_err());
        assert!(BackendSpec::parse("cms.local:http").is_err());
    }

    #[test]
    fn status_sets() {
        let s = StatusSet::parse("200,204,301-302").unwrap();
        assert!(s.contains(200) && s.contains(204) && s.contains(302));
        assert!(!s.contains(201) && !s.contains(500));
        assert!(StatusSet::parse("399-200").is_err());
        assert!(StatusSet::parse("ok").is_err());
    }

    #[test]
    fn active_checks_need_streaks() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), "x".into());
        assert_eq!(e.record_check(false, 2, 2), None);
        assert_eq!(e.record_check(false, 2, 2), Some(false));
        assert!(!e.available());
        assert_eq!(e.record_check(true, 2, 2), None);
        assert_eq!(e.record_check(true, 2, 2), Some(true));
        assert!(e.available());
    }

    #[test]
    fn passive_failures_take_out_for_a_while() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), "x".into());
        assert!(!e.record_failure(2, Duration::from_secs(60)));
        assert!(e.available());
        assert!(e.record_failure(2, Duration::from_secs(60)));
        assert!(!e.available());
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), "x".into());
        e.record_failure(1, Duration::from_millis(0));
        assert!(e.available());
    }

    #[test]
    fn rendezvous_is_stable_when_others_leave() {
        let backends: Vec<SocketAddr> = (1..=5)
            .map(|i| format!("10.0.0.{i}:80").parse().unwrap())
            .collect();
        let mut moved = 0;
        for c in 0..200u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a01_0000 + c));
            let best = |set: &[SocketAddr]| {
                *set.iter()
                    .max_by_key(|b| rendezvous(Some(ip), **b))
                    .unwrap()
            };
            let before = best(&backends);
            let after = best(&backends[1..]);
            if before != backends[0] && before != after {
                moved += 1;
            }
        }
        assert_eq!(moved, 0);
    }
}
