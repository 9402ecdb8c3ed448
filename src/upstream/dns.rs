//! Resolution of backends given by name: A and AAAA through `hickory-resolver`, refreshed when
//! the answer's TTL runs out, keeping the last good answer when DNS fails.

use super::{BackendSpec, Pool};
use crate::events::{self, Event, Severity};
use hickory_resolver::TokioAsyncResolver;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(300);
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);

pub struct Resolver {
    inner: TokioAsyncResolver,
}

impl Default for Resolver {
    fn default() -> Self {
        Self::new()
    }
}

impl Resolver {
    /// Uses the system's resolver configuration (`/etc/resolv.conf`, `/etc/hosts`).
    pub fn new() -> Self {
        let inner = TokioAsyncResolver::tokio_from_system_conf().unwrap_or_else(|e| {
            events::emit(Event::new("dns_config_fallback", Severity::Warning).field("cause", e));
            TokioAsyncResolver::tokio(Default::default(), Default::default())
        });
        Resolver { inner }
    }

    /// Resolves every named backend of the pool; returns when to refresh next.
    pub async fn refresh(&self, pool: &Pool) -> Duration {
        let mut resolved = Vec::new();
        let mut next = MAX_REFRESH;
        for (i, spec) in pool.specs.iter().enumerate() {
            let BackendSpec::Name { host, port } = spec else {
                continue;
            };
            match self.inner.lookup_ip(host.as_str()).await {
                Ok(lookup) => {
                    let ttl = lookup
                        .valid_until()
                        .saturating_duration_since(Instant::now());
                    next = next.min(ttl.clamp(MIN_REFRESH, MAX_REFRESH));
                    let addrs: Vec<SocketAddr> =
                        lookup.iter().map(|ip| SocketAddr::new(ip, *port)).collect();
                    if addrs.is_empty() {
                        events::emit(
                            pool.event("dns_empty", Severity::Warning)
                                .field("backend", format!("{host}:{port}")),
                        );
                        next = next.min(RETRY_AFTER_FAILURE);
                    } else {
                        resolved.push((i, addrs));
                    }
                }
                Err(e) => {
                    events::emit(
                        pool.event("dns_failed", Severity::Warning)
                            .field("backend", format!("{host}:{port}"))
                            .field("cause", e)
                            .field("keeping", "last_good"),
                    );
                    next = next.min(RETRY_AFTER_FAILURE);
                }
            }
        }
        pool.set_resolved(&resolved);
        next
    }
}
