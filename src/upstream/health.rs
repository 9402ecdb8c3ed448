//! Active health checks and the background loop that schedules them and DNS refreshes.
//!
//! One supervisor task ticks every 100 ms, reads the current pools through a closure (so a
//! configuration reload is picked up without restarting anything) and starts, per pool, a check
//! round or a re-resolution when it is due. A probe is a plain HTTP/1.1 GET (over TLS when the
//! pool uses TLS) with a deadline; its status is compared with the pool's accepted set.

use super::{dns, now_ms, Endpoint, HealthSettings, Pool};
use crate::events::{self, Severity};
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Gives the supervisor the pools of the configuration in force.
pub type PoolSource = Arc<dyn Fn() -> Vec<Arc<Pool>> + Send + Sync>;

/// Background service that runs health checks and DNS refreshes for every pool.
pub struct Maintainer {
    pools: PoolSource,
    /// Set once the first round of checks and resolutions has finished.
    pub ready: Arc<AtomicBool>,
}

impl Maintainer {
    pub fn new(pools: PoolSource, ready: Arc<AtomicBool>) -> Self {
        Maintainer { pools, ready }
    }

    /// Starts whatever is due; returns the handles of what it started.
    fn tick(&self, resolver: &Arc<dns::Resolver>) -> Vec<tokio::task::JoinHandle<()>> {
        let now = now_ms();
        let mut started = Vec::new();
        for pool in (self.pools)() {
            if pool.has_names()
                && pool.next_resolve_ms.load(Ordering::Relaxed) <= now
                && !pool.resolving.swap(true, Ordering::AcqRel)
            {
                let (p, r) = (pool.clone(), resolver.clone());
                started.push(tokio::spawn(async move {
                    let next = r.refresh(&p).await;
                    p.next_resolve_ms
                        .store(now_ms() + next.as_millis() as u64, Ordering::Relaxed);
                    p.resolving.store(false, Ordering::Release);
                }));
            }
            let Some(h) = pool.settings.health.clone() else {
                continue;
            };
            if pool.next_check_ms.load(Ordering::Relaxed) <= now
                && !pool.checking.swap(true, Ordering::AcqRel)
            {
                let p = pool.clone();
                started.push(tokio::spawn(async move {
                    check_pool(&p, &h).await;
                    p.next_check_ms
                        .store(now_ms() + h.interval.as_millis() as u64, Ordering::Relaxed);
                    p.checking.store(false, Ordering::Release);
                }));
            }
        }
        started
    }
}

#[async_trait]
impl BackgroundService for Maintainer {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let resolver = Arc::new(dns::Resolver::new());
        // First pass: resolve names, then check, before declaring readiness.
        for h in self.tick(&resolver) {
            let _ = h.await;
        }
        for h in self.tick(&resolver) {
            let _ = h.await;
        }
        self.ready.store(true, Ordering::Release);
        let mut ticker = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = ticker.tick() => { self.tick(&resolver); }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Probes every endpoint of a pool at once and records the results.
pub async fn check_pool(pool: &Pool, h: &HealthSettings) {
    let eps = pool.endpoints().clone();
    let tls = if pool.settings.tls {
        match pool.probe_tls() {
            Ok(c) => Some(c),
            Err(e) => {
                events::emit(
                    pool.event("health_check_config_error", Severity::Error)
                        .field("cause", e),
                );
                return;
            }
        }
    } else {
        None
    };
    let shared = Arc::new(h.clone());
    let probes = eps.iter().map(|ep| {
        let ep = ep.clone();
        let h = shared.clone();
        let tls = tls.clone();
        let sni = pool.settings.sni.clone();
        async move {
            let started = Instant::now();
            let res = probe(ep.addr, &h, tls.map(|c| (c, sni))).await;
            (ep, res, started.elapsed())
        }
    });
    for (ep, res, took) in futures_join_all(probes).await {
        record(pool, &ep, h, res, took);
    }
}

fn record(
    pool: &Pool,
    ep: &Endpoint,
    h: &HealthSettings,
    res: Result<u16, String>,
    took: Duration,
) {
    crate::metrics::get()
        .health_check_duration
        .with_label_values(&[pool.tenant_id(), pool.name()])
        .observe(took.as_secs_f64());
    let ok = matches!(res, Ok(code) if h.expect.contains(code));
    match ep.record_check(ok, h.rise, h.fall) {
        Some(true) => events::emit(
            pool.event("backend_up", Severity::Notice)
                .field("backend", &ep.backend)
                .field("addr", ep.addr)
                .field("check_ms", took.as_millis()),
        ),
        Some(false) => {
            let cause = match res {
                Ok(code) => format!("status {code}"),
                Err(e) => e,
            };
            events::emit(
                pool.event("backend_down", Severity::Warning)
                    .field("backend", &ep.backend)
                    .field("addr", ep.addr)
                    .field("cause", cause)
                    .field("detection", "active"),
            );
        }
        None => {}
    }
}

async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

/// One probe: connect, optional TLS, `GET path`, read the status line.
pub async fn probe(
    addr: SocketAddr,
    h: &HealthSettings,
    tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
) -> Result<u16, String> {
    let host = h.host.clone().unwrap_or_else(|| addr.to_string());
    let fut = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            Some((cfg, sni)) => {
                let name = sni.unwrap_or_else(|| match &h.host {
                    Some(h) => h.clone(),
                    None => addr.ip().to_string(),
                });
                let name = ServerName::try_from(name).map_err(|e| format!("sni: {e}"))?;
                let s = tokio_rustls::TlsConnector::from(cfg)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("tls: {e}"))?;
                exchange(s, &h.path, &host).await
            }
            None => exchange(tcp, &h.path, &host).await,
        }
    };
    match tokio::time::timeout(h.timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("timeout after {} ms", h.timeout.as_millis())),
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    path: &str,
    host: &str,
) -> Result<u16, String> {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cong-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !buf.windows(2).any(|w| w == b"\r\n") {
        let n = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before a status line".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            return Err("status line too long".into());
        }
    }
    parse_status_line(&buf).ok_or_else(|| "malformed status line".to_string())
}

fn parse_status_line(buf: &[u8]) -> Option<u16> {
    let line = buf.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    let proto = parts.next()?;
    if !proto.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 204 No Content\r\n"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 500\r\n"), Some(500));
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH\r\n"), None);
    }
}
