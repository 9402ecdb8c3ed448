//! Rate limits, automatic bans and connection protection, all keyed by client address with
//! IPv6 aggregated to a prefix (default /64: one subscriber owns a whole /64; IPv4 /32).
//!
//! Limits use GCRA (one timestamp per key: the theoretical arrival time), so a burst of
//! `burst` requests is allowed after a quiet period and `requests` per `per` on average.
//! Keys are per tenant and limit; a limit's state is found by a fingerprint of the tenant id,
//! the limit's name and its parameters, so it survives reloads while the limit is unchanged.
//! Every table keyed by client is a bounded `table::Table` (see its bound there).
//!
//! Entry points of the pipeline: `early` (bans, connection bookkeeping), `enforce` (limits),
//! and `conn::Guarded` wraps the proxy service for per-connection caps and timeouts.
//!
//! A limit with `scope = "cluster"` is counted by the `SharedLimiter` registered with
//! [`set_shared`] (cluster mode registers one backed by Redis); without one, or when it is
//! unavailable, the limit is counted here like a local one. Limits with `scope = "local"`
//! never look at the shared limiter.

pub mod bans;
pub mod cli;
pub mod conn;
pub mod table;

use crate::access::path::{self, PathPattern};
use crate::config::{Config, ConfigError, RateConfig, RateKey, RateScope, SourceFile};
use crate::events::{emit, Event, Severity};
use crate::geoip::Country;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use ipnet::IpNet;
use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use table::Table;

/// A client as limits and bans count it: an address masked to the configured prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    bits: u128,
    v6: bool,
    prefix: u8,
}

impl ClientKey {
    pub fn of(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> ClientKey {
        match ip.to_canonical() {
            IpAddr::V4(a) => {
                let p = v4_prefix.min(32);
                let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                ClientKey {
                    bits: u128::from(u32::from(a) & mask),
                    v6: false,
                    prefix: p,
                }
            }
            IpAddr::V6(a) => {
                let p = v6_prefix.min(128);
                let mask = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                ClientKey {
                    bits: u128::from(a) & mask,
                    v6: true,
                    prefix: p,
                }
            }
        }
    }

    /// The key of a whole tenant (limits with `key = "tenant"`).
    const ALL: ClientKey = ClientKey {
        bits: 0,
        v6: false,
        prefix: 0,
    };

    /// `203.0.113.7`, `10.1.0.0/16`, `2001:db8:1:2::/64` (what `Display` writes).
    pub fn parse(s: &str) -> Option<ClientKey> {
        let n: IpNet = crate::forwarded::parse_cidr(s).ok()?;
        Some(match n {
            IpNet::V4(n) => ClientKey::of(IpAddr::V4(n.addr()), n.prefix_len(), 128),
            IpNet::V6(n) => ClientKey::of(IpAddr::V6(n.addr()), 32, n.prefix_len()),
        })
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.v6 {
            let a = Ipv6Addr::from(self.bits);
            if self.prefix == 128 {
                write!(f, "{a}")
            } else {
                write!(f, "{a}/{}", self.prefix)
            }
        } else {
            let a = Ipv4Addr::from(self.bits as u32);
            if self.prefix == 32 {
                write!(f, "{a}")
            } else {
                write!(f, "{a}/{}", self.prefix)
            }
        }
    }
}

/// One compiled limit of one tenant.
#[derive(Debug, Clone)]
pub struct Limit {
    /// Fingerprint of tenant, name and parameters: the state's key.
    id: u64,
    pub name: Arc<str>,
    emission_ns: u64,
    tolerance_ns: u64,
    paths: Vec<PathPattern>,
    key: RateKey,
    scope: RateScope,
    /// Stable name of the limit's shared state (the same on every node with the same
    /// configuration): a digest of tenant, name and parameters.
    shared_id: Arc<str>,
}

/// The limits of one tenant (its own and the global ones) and its allow-list.
#[derive(Debug, Clone, Default)]
pub struct TenantLimits {
    limits: Vec<Limit>,
    allow: Vec<IpNet>,
    /// Whether any limit is counted across the cluster.
    any_cluster: bool,
}

/// Global settings of limits, bans and connections.
#[derive(Debug, Clone)]
pub struct Settings {
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    pub max_entries: usize,
    pub allow: Vec<IpNet>,
    global: Vec<RateConfig>,
    pub bans: bans::Policy,
    pub conn: conn::Policy,
}

impl Settings {
    pub fn build(cfg: &Config) -> Result<Settings, ConfigError> {
        let src = &cfg.main_source;
        let l = &cfg.main.limits;
        if *l.ipv4_prefix.get_ref() == 0 || *l.ipv4_prefix.get_ref() > 32 {
            return Err(src.error_at(l.ipv4_prefix.span(), "limits.ipv4_prefix", "1 to 32"));
        }
        if *l.ipv6_prefix.get_ref() < 16 || *l.ipv6_prefix.get_ref() > 128 {
            return Err(src.error_at(
                l.ipv6_prefix.span(),
                "limits.ipv6_prefix",
                "16 to 128 (64 is one subscriber)",
            ));
        }
        let allow = crate::access::nets(src, "limits.allow_cidrs", &l.allow_cidrs)?;
        // Compile once to report errors at their place in the main file.
        compile(src, "limits.rate", "-", &l.rate)?;
        let b = &cfg.main.bans;
        let c = &cfg.main.connections;
        Ok(Settings {
            v4_prefix: *l.ipv4_prefix.get_ref(),
            v6_prefix: *l.ipv6_prefix.get_ref(),
            max_entries: l.max_entries.max(1),
            allow,
            global: l.rate.clone(),
            bans: bans::Policy {
                enabled: b.enabled && b.after > 0,
                after: b.after,
                within: b.within.get(),
                ban_for: b.ban_for.get(),
                max_ban: b.max_ban.get().max(b.ban_for.get()),
                max_entries: b.max_entries.max(1),
            },
            conn: conn::Policy {
                max_per_client: c.max_per_client,
                header_timeout: c.header_timeout.get(),
                keepalive_timeout: c.keepalive_timeout.get(),
                body_read_timeout: c.body_read_timeout.get(),
                min_body_rate: c.min_body_rate,
                h2_max_streams: c.h2_max_streams,
            },
        })
    }

    pub fn key(&self, ip: IpAddr) -> ClientKey {
        ClientKey::of(ip, self.v4_prefix, self.v6_prefix)
    }

    /// Applies the bounds of this configuration to the process-wide tables.
    pub fn apply(&self) {
        STATE.set_capacity(self.max_entries);
        bans::set_capacity(self.bans.max_entries);
    }

    /// The global limits and the tenant's `[limits]`, compiled for one tenant.
    pub fn tenant(
        &self,
        cfg: &Config,
        src: &SourceFile,
        tenant: &str,
        t: &crate::config::TenantLimitsConfig,
    ) -> Result<TenantLimits, ConfigError> {
        let mut limits = compile(&cfg.main_source, "limits.rate", tenant, &self.global)?;
        let own = compile(src, "limits.rate", tenant, &t.rate)?;
        for (l, rc) in own.iter().zip(&t.rate) {
            if limits.iter().any(|g| g.name == l.name) {
                return Err(src.error_at(
                    rc.name.span(),
                    "limits.rate.name",
                    format!("`{}` is also a global limit", l.name),
                ));
            }
        }
        limits.extend(own);
        let allow = crate::access::nets(src, "limits.allow_cidrs", &t.allow_cidrs)?;
        let any_cluster = limits.iter().any(|l| l.scope == RateScope::Cluster);
        Ok(TenantLimits {
            limits,
            allow,
            any_cluster,
        })
    }
}

fn compile(
    src: &SourceFile,
    key: &str,
    tenant: &str,
    list: &[RateConfig],
) -> Result<Vec<Limit>, ConfigError> {
    let mut out: Vec<Limit> = Vec::new();
    for (i, rc) in list.iter().enumerate() {
        let k = |f: &str| format!("{key}[{i}].{f}");
        let name = rc.name.get_ref().trim();
        if name.is_empty() || out.iter().any(|o| &*o.name == name) {
            return Err(src.error_at(
                rc.name.span(),
                k("name"),
                format!("limit name `{name}` is empty or used twice"),
            ));
        }
        let requests = *rc.requests.get_ref();
        let per = rc.per.get();
        if requests == 0 || per.is_zero() {
            return Err(src.error_at(
                rc.requests.span(),
                k("requests"),
                "requests and per must be above zero",
            ));
        }
        let burst = rc.burst.unwrap_or(requests).max(1);
        let mut paths = Vec::new();
        for p in &rc.paths {
            paths.push(
                PathPattern::parse(p.get_ref())
                    .map_err(|e| src.error_at(p.span(), k("paths"), e))?,
            );
        }
        let emission_ns = (per.as_nanos() / u128::from(requests)).max(1) as u64;
        let shared_id = {
            let mut text = format!(
                "{tenant}\x1f{name}\x1f{emission_ns}\x1f{burst}\x1f{:?}",
                rc.key
            );
            for p in &paths {
                text.push('\x1f');
                text.push_str(&p.source);
            }
            let d = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
            let hex: String = d.as_ref()[..10]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            Arc::from(hex.as_str())
        };
        let mut h = DefaultHasher::new();
        (tenant, name, emission_ns, burst, rc.key).hash(&mut h);
        for p in &paths {
            p.source.hash(&mut h);
        }
        out.push(Limit {
            id: h.finish(),
            name: Arc::from(name),
            emission_ns,
            tolerance_ns: emission_ns.saturating_mul(u64::from(burst - 1)),
            paths,
            key: rc.key,
            scope: rc.scope,
            shared_id,
        });
    }
    Ok(out)
}

/// Theoretical arrival time per (limit, client), in nanoseconds since `EPOCH`.
static STATE: LazyLock<Table<(u64, ClientKey), u64>> = LazyLock::new(|| Table::new(200_000));
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ns() -> u64 {
    // Offset so that "never seen" (TAT 0) is always in the past.
    EPOCH.elapsed().as_nanos() as u64 + 3_600_000_000_000
}

/// Entries in the limit table and its bound (for tests and benchmarks).
pub fn state_size() -> (usize, usize) {
    (STATE.len(), STATE.capacity())
}

/// A request over a limit.
#[derive(Debug, Clone)]
pub struct Hit {
    pub limit: Arc<str>,
    pub key: ClientKey,
    pub retry_after: Duration,
}

/// GCRA on one key: `None` when the request conforms (and is counted).
fn take(limit: &Limit, key: ClientKey, now: u64) -> Option<Duration> {
    STATE.update(
        &(limit.id, key),
        || 0,
        |tat| {
            let t = (*tat).max(now);
            if t - now > limit.tolerance_ns {
                return Some(Duration::from_nanos(t - now - limit.tolerance_ns));
            }
            *tat = t + limit.emission_ns;
            None
        },
    )
}

/// GCRA state kept outside this process, shared by the nodes of a cluster.
#[async_trait]
pub trait SharedLimiter: Send + Sync {
    /// One GCRA decision on `key`: `Ok(None)` when the request conforms (and is counted),
    /// `Ok(Some(wait))` when it is over, `Err(())` when the shared state cannot answer in time
    /// (the caller then counts locally).
    async fn take(
        &self,
        key: &str,
        emission_ns: u64,
        tolerance_ns: u64,
    ) -> Result<Option<Duration>, ()>;
}

static SHARED: ArcSwapOption<Box<dyn SharedLimiter>> = ArcSwapOption::const_empty();

/// Registers (or with `None` removes) the limiter of `scope = "cluster"` limits.
pub fn set_shared(l: Option<Box<dyn SharedLimiter>>) {
    SHARED.store(l.map(Arc::new));
}

/// Checks the limits of a tenant for a client and path (normalised); the first limit over.
/// Every limit is counted in this process (cluster-scoped ones too): see [`check_shared`].
pub fn check(s: &Settings, t: &TenantLimits, ip: IpAddr, norm_path: &str) -> Option<Hit> {
    if t.limits.is_empty() {
        return None;
    }
    let ip = ip.to_canonical();
    if s.allow.iter().any(|n| n.contains(&ip)) || t.allow.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    let client = s.key(ip);
    let now = now_ns();
    let mut segs: Option<Vec<&str>> = None;
    for l in &t.limits {
        if !l.paths.is_empty()
            && !l
                .paths
                .iter()
                .any(|p| p.matches(segs.get_or_insert_with(|| path::segments(norm_path))))
        {
            continue;
        }
        let key = match l.key {
            RateKey::Client => client,
            RateKey::Tenant => ClientKey::ALL,
        };
        if let Some(wait) = take(l, key, now) {
            return Some(Hit {
                limit: l.name.clone(),
                key: client,
                retry_after: wait,
            });
        }
    }
    None
}

/// [`check`] with `scope = "cluster"` limits counted by the registered shared limiter (each
/// falls back to the local count when it cannot answer).
pub async fn check_shared(
    s: &Settings,
    t: &TenantLimits,
    ip: IpAddr,
    norm_path: &str,
) -> Option<Hit> {
    let shared = SHARED.load_full();
    let Some(shared) = shared.filter(|_| t.any_cluster) else {
        return check(s, t, ip, norm_path);
    };
    if t.limits.is_empty() {
        return None;
    }
    let ip = ip.to_canonical();
    if s.allow.iter().any(|n| n.contains(&ip)) || t.allow.iter().any(|n| n.contains(&ip)) {
        return None;
    }
    let client = s.key(ip);
    let mut segs: Option<Vec<&str>> = None;
    for l in &t.limits {
        if !l.paths.is_empty()
            && !l
                .paths
                .iter()
                .any(|p| p.matches(segs.get_or_insert_with(|| path::segments(norm_path))))
        {
            continue;
        }
        let key = match l.key {
            RateKey::Client => client,
            RateKey::Tenant => ClientKey::ALL,
        };
        let over = if l.scope == RateScope::Cluster {
            let name = match l.key {
                RateKey::Client => format!("{}:{key}", l.shared_id),
                RateKey::Tenant => format!("{}:*", l.shared_id),
            };
            match shared.take(&name, l.emission_ns, l.tolerance_ns).await {
                Ok(r) => r,
                Err(()) => take(l, key, now_ns()),
            }
        } else {
            take(l, key, now_ns())
        };
        if let Some(wait) = over {
            return Some(Hit {
                limit: l.name.clone(),
                key: client,
                retry_after: wait,
            });
        }
    }
    None
}

/// The rate-limit step of the pipeline: `Some(Retry-After seconds)` when the request must
/// get 429. Counts the hit, emits the event and strikes the client towards a ban.
pub async fn enforce(
    s: &Settings,
    t: &TenantLimits,
    tenant: &str,
    ip: IpAddr,
    country: Country,
    norm_path: &str,
) -> Option<u64> {
    let hit = if t.any_cluster {
        check_shared(s, t, ip, norm_path).await?
    } else {
        check(s, t, ip, norm_path)?
    };
    let secs = hit.retry_after.as_secs() + u64::from(hit.retry_after.subsec_nanos() > 0);
    let secs = secs.max(1);
    crate::metrics::get()
        .ratelimit_hits
        .with_label_values(&[tenant, &hit.limit])
        .inc();
    emit(
        Event::new("rate_limited", Severity::Notice)
            .tenant(tenant)
            .field("limit", &hit.limit)
            .field("key", hit.key)
            .field("client_ip", ip)
            .field("country", country)
            .field("retry_after", secs),
    );
    bans::strike(&s.bans, hit.key, "rate_limit", tenant, country);
    Some(secs)
}

/// The first step of the pipeline, on the request header's arrival: marks the connection
/// busy (header deadline met) and refuses banned clients. `Err` drops the connection.
pub fn early(
    s: &Settings,
    peer: Option<std::net::SocketAddr>,
    client_ip: IpAddr,
    h2: bool,
) -> Result<(), ClientKey> {
    if let Some(p) = peer {
        conn::request_started(p, h2);
    }
    let key = s.key(client_ip);
    if bans::is_banned(&key)
        && !s
            .allow
            .iter()
            .any(|n| n.contains(&client_ip.to_canonical()))
    {
        crate::metrics::get()
            .ban_drops
            .with_label_values(&["request"])
            .inc();
        return Err(key);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_aggregate_ipv6_by_prefix() {
        let a = ClientKey::of("2001:db8:1:2::1".parse().unwrap(), 32, 64);
        let b = ClientKey::of("2001:db8:1:2:ffff::9".parse().unwrap(), 32, 64);
        let c = ClientKey::of("2001:db8:1:3::1".parse().unwrap(), 32, 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::parse("2001:db8:1:2::/64"), Some(a));
        let v4 = ClientKey::of("::ffff:203.0.113.7".parse().unwrap(), 32, 64);
        assert_eq!(v4.to_string(), "203.0.113.7");
        assert_eq!(ClientKey::parse("203.0.113.7"), Some(v4));
    }

    #[test]
    fn gcra_allows_burst_then_spaces() {
        let l = Limit {
            id: 42,
            name: Arc::from("t"),
            emission_ns: 1_000_000_000,
            tolerance_ns: 2_000_000_000,
            paths: vec![],
            key: RateKey::Client,
            scope: RateScope::Local,
            shared_id: Arc::from("t"),
        };
        let k = ClientKey::of("192.0.2.1".parse().unwrap(), 32, 64);
        let t0 = 10_000_000_000_000;
        assert!(take(&l, k, t0).is_none());
        assert!(take(&l, k, t0).is_none());
        assert!(take(&l, k, t0).is_none());
        let wait = take(&l, k, t0).unwrap();
        assert_eq!(wait, Duration::from_secs(1));
        assert!(take(&l, k, t0 + 1_000_000_000).is_none());
    }
}
