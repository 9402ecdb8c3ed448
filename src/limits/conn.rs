//! Connection protection around the proxy service: at most `max_per_client` open
//! connections per client key, banned clients dropped at accept, and a watchdog that closes
//! a connection which has not completed a request header within `header_timeout` of accept,
//! or stays idle longer than `keepalive_timeout` between requests.
//!
//! Pingora reads each header chunk with only a per-read timeout (so a client sending one
//! byte a minute would hold the connection forever) and has no accept hook that can see
//! connections close; wrapping its `ServerApp` gives both. The pipeline tells the watchdog
//! when a header has arrived (`request_started`) and when a response is done
//! (`request_finished`). HTTP/2 connections leave idle handling to pingora's
//! `h2_idle_timeout`, since their streams overlap.

use super::bans;
use super::ClientKey;
use crate::events::{emit, Event, Severity};
use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
pub struct Policy {
    pub max_per_client: u32,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub body_read_timeout: Duration,
    pub min_body_rate: u64,
    pub h2_max_streams: u32,
}

/// Watchdog state of one connection.
struct ConnState {
    /// Milliseconds since `EPOCH` after which the connection is closed; 0 while a request runs.
    deadline_ms: AtomicU64,
    h2: AtomicBool,
    keepalive: Duration,
    changed: Notify,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
const CONN_SHARDS: usize = 16;
type ConnMap = Mutex<HashMap<SocketAddr, Arc<ConnState>>>;
/// Open connections by peer address (bounded by the number of open sockets).
static CONNS: LazyLock<Vec<ConnMap>> = LazyLock::new(|| {
    (0..CONN_SHARDS)
        .map(|_| Mutex::new(HashMap::new()))
        .collect()
});
/// Open connections per client key (bounded likewise).
static PER_CLIENT: LazyLock<Mutex<HashMap<ClientKey, u32>>> = LazyLock::new(Default::default);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64 + 1
}

fn shard(a: &SocketAddr) -> &'static ConnMap {
    &CONNS[(a.port() as usize) % CONN_SHARDS]
}

fn lookup(a: &SocketAddr) -> Option<Arc<ConnState>> {
    shard(a)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(a)
        .cloned()
}

/// A request header arrived on the connection from `peer`.
pub fn request_started(peer: SocketAddr, h2: bool) {
    if let Some(s) = lookup(&peer) {
        if h2 {
            s.h2.store(true, Ordering::Relaxed);
        }
        s.deadline_ms.store(0, Ordering::Release);
        s.changed.notify_one();
    }
}

/// The response to a request on the connection from `peer` is done.
pub fn request_finished(peer: SocketAddr) {
    if let Some(s) = lookup(&peer) {
        if s.h2.load(Ordering::Relaxed) {
            return;
        }
        let d = now_ms() + s.keepalive.as_millis() as u64;
        s.deadline_ms.store(d, Ordering::Release);
        s.changed.notify_one();
    }
}

/// True when a body upload is slower than the policy's minimum (after a 5 s grace).
pub fn body_too_slow(p: &Policy, started: Instant, bytes: u64) -> bool {
    if p.min_body_rate == 0 {
        return false;
    }
    let secs = started.elapsed().as_secs_f64();
    secs > 5.0 && (bytes as f64) / secs < p.min_body_rate as f64
}

/// Holds a per-client connection slot and the watchdog entry until the connection ends.
struct Registration {
    key: ClientKey,
    counted: bool,
    peer: SocketAddr,
}

impl Drop for Registration {
    fn drop(&mut self) {
        shard(&self.peer)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.peer);
        if self.counted {
            let mut m = PER_CLIENT.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// Open connections counted for a client key (for tests).
pub fn open_connections(key: &ClientKey) -> u32 {
    PER_CLIENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(key)
        .copied()
        .unwrap_or(0)
}

/// The proxy service's application, wrapped.
pub struct Guarded<A> {
    pub inner: Arc<A>,
    pub gateway: Arc<Gateway>,
}

async fn watchdog(s: &ConnState) {
    loop {
        let d = s.deadline_ms.load(Ordering::Acquire);
        if d == 0 {
            s.changed.notified().await;
            continue;
        }
        let now = now_ms();
        if now >= d {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(d - now)) => {}
            _ = s.changed.notified() => {}
        }
    }
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for Guarded<A> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied());
        let Some(peer) = peer else {
            return self.inner.process_new(stream, shutdown).await;
        };
        let snap = self.gateway.snapshot();
        let s = &snap.limits;
        let ip = peer.ip().to_canonical();
        let key = s.key(ip);
        let allowed = s.allow.iter().any(|n| n.contains(&ip));
        if !allowed && bans::is_banned(&key) {
            crate::metrics::get()
                .ban_drops
                .with_label_values(&["accept"])
                .inc();
            return None;
        }
        let p = s.conn.clone();
        drop(snap);
        let counted = p.max_per_client > 0 && !allowed;
        if counted {
            let mut m = PER_CLIENT.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(key).or_insert(0);
            if *n >= p.max_per_client {
                drop(m);
                crate::metrics::get()
                    .conn_refused
                    .with_label_values(&["per_client"])
                    .inc();
                emit(
                    Event::new("connection_refused", Severity::Notice)
                        .field("key", key)
                        .field("reason", "max_per_client")
                        .field("limit", p.max_per_client),
                );
                return None;
            }
            *n += 1;
        }
        let state = Arc::new(ConnState {
            deadline_ms: AtomicU64::new(now_ms() + p.header_timeout.as_millis() as u64),
            h2: AtomicBool::new(false),
            keepalive: p.keepalive_timeout,
            changed: Notify::new(),
        });
        shard(&peer)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(peer, state.clone());
        let _reg = Registration { key, counted, peer };
        tokio::select! {
            r = self.inner.process_new(stream, shutdown) => r,
            _ = watchdog(&state) => {
                crate::metrics::get()
                    .conn_refused
                    .with_label_values(&["timeout"])
                    .inc();
                log::debug!("closing connection from {peer}: no request header in time");
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}
