//! Availability of each tenant as a citizen sees it: the gateway probes every tenant through its
//! own listener (host routing, maintenance, the real backends) at an interval, records each
//! change of state with its time and cause, and keeps that history on disk (append-only JSON
//! lines in `server.state_dir`) so uptime over 24 h / 7 d / 30 d / 365 d survives restarts and
//! upgrades. Time the gateway itself was not running is "unknown" and counts neither way;
//! planned maintenance is recorded as such and left out of uptime by default.
//! This module probes and records; it never changes routing or backend state.

use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Up,
    Down,
    Maintenance,
    /// The gateway was not running or not probing.
    Unknown,
}

/// One change of state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Milliseconds since the epoch.
    pub t: i64,
    pub tenant: String,
    pub state: State,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
}

/// Time in each state over a period, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Uptime {
    pub up_ms: i64,
    pub down_ms: i64,
    pub maintenance_ms: i64,
    pub unknown_ms: i64,
}

impl Uptime {
    /// Percentage of known, unplanned time that was up; `None` with no such time.
    pub fn percent(&self, exclude_maintenance: bool) -> Option<f64> {
        let down = self.down_ms
            + if exclude_maintenance {
                0
            } else {
                self.maintenance_ms
            };
        let total = self.up_ms + down;
        (total > 0).then(|| 100.0 * self.up_ms as f64 / total as f64)
    }
}

/// Every tenant's history of changes, in time order per tenant.
#[derive(Debug, Default)]
pub struct History {
    by_tenant: HashMap<String, Vec<Change>>,
    file: Option<PathBuf>,
}

impl History {
    /// Loads `availability.jsonl` (skipping lines a crash may have cut short).
    pub fn load(state_dir: Option<&std::path::Path>) -> History {
        let file = state_dir.map(|d| d.join("availability.jsonl"));
        let mut h = History {
            by_tenant: HashMap::new(),
            file: file.clone(),
        };
        if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
            for line in text.lines() {
                if let Ok(c) = serde_json::from_str::<Change>(line) {
                    h.by_tenant.entry(c.tenant.clone()).or_default().push(c);
                }
            }
        }
        for v in h.by_tenant.values_mut() {
            v.sort_by_key(|c| c.t);
        }
        h
    }

    pub fn current(&self, tenant: &str) -> Option<&Change> {
        self.by_tenant.get(tenant).and_then(|v| v.last())
    }

    pub fn changes(&self, tenant: &str) -> &[Change] {
        self.by_tenant
            .get(tenant)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }

    pub fn tenants(&self) -> impl Iterator<Item = &String> {
        self.by_tenant.keys()
    }

    /// Records a change when the state differs from the last one; appends it to the file.
    pub fn record(&mut self, c: Change) -> bool {
        if self
            .current(&c.tenant)
            .is_some_and(|last| last.state == c.state)
        {
            return false;
        }
        if let Some(f) = &self.file {
            let line = serde_json::to_string(&c).unwrap_or_default();
            let res = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .and_then(|mut fh| writeln!(fh, "{line}"));
            if let Err(e) = res {
                crate::events::emit(
                    crate::events::Event::new(
                        "availability_write_failed",
                        crate::events::Severity::Error,
                    )
                    .field("path", f.display())
                    .field("cause", e),
                );
            }
        }
        self.by_tenant.entry(c.tenant.clone()).or_default().push(c);
        true
    }

    /// Time in each state between `from` and `to` (milliseconds since the epoch).
    pub fn uptime(&self, tenant: &str, from: i64, to: i64) -> Uptime {
        let mut u = Uptime::default();
        let changes = self.changes(tenant);
        let mut state = State::Unknown;
        let mut at = from;
        for c in changes {
            if c.t <= from {
                state = c.state;
                continue;
            }
            if c.t >= to {
                break;
            }
            add(&mut u, state, c.t - at);
            state = c.state;
            at = c.t;
        }
        add(&mut u, state, to - at);
        u
    }

    /// Intervals of down time in a period (milliseconds): (start, end, cause).
    pub fn incidents(&self, tenant: &str, from: i64, to: i64) -> Vec<(i64, i64, String)> {
        let mut out = Vec::new();
        let changes = self.changes(tenant);
        for (i, c) in changes.iter().enumerate() {
            if c.state != State::Down {
                continue;
            }
            let end = changes.get(i + 1).map(|n| n.t).unwrap_or(to);
            if end > from && c.t < to {
                out.push((c.t.max(from), end.min(to), c.cause.clone()));
            }
        }
        out
    }
}

fn add(u: &mut Uptime, s: State, d: i64) {
    let d = d.max(0);
    match s {
        State::Up => u.up_ms += d,
        State::Down => u.down_ms += d,
        State::Maintenance => u.maintenance_ms += d,
        State::Unknown => u.unknown_ms += d,
    }
}

/// Shared between the prober, the status page and the reports.
pub struct Tracker {
    pub history: Mutex<History>,
    pub interval: Duration,
    pub timeout: Duration,
    heartbeat: Option<PathBuf>,
}

impl Tracker {
    pub fn new(
        state_dir: Option<&std::path::Path>,
        interval: Duration,
        timeout: Duration,
    ) -> Arc<Tracker> {
        let mut history = History::load(state_dir);
        let heartbeat = state_dir.map(|d| d.join("availability.heartbeat"));
        // The gateway was not watching between its last heartbeat and now: unknown.
        let last_change = history
            .by_tenant
            .values()
            .filter_map(|v| v.last())
            .map(|c| c.t)
            .max();
        let last_seen = heartbeat
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .and_then(|s| s.trim().parse::<i64>().ok())
            .or(last_change);
        if let Some(t) = last_seen {
            let tenants: Vec<String> = history.tenants().cloned().collect();
            for tenant in tenants {
                history.record(Change {
                    t,
                    tenant,
                    state: State::Unknown,
                    cause: "gateway not running".into(),
                });
            }
        }
        Arc::new(Tracker {
            history: Mutex::new(history),
            interval,
            timeout,
            heartbeat,
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, History> {
        match self.history.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }
}

/// The prober, run as a background service.
pub struct Prober {
    pub gateway: Arc<Gateway>,
    pub tracker: Arc<Tracker>,
}

/// Where to reach our own listener from this machine.
fn self_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// One probe: status code or the transport error.
async fn probe(addr: SocketAddr, host: &str, path: &str, timeout: Duration) -> Result<u16, String> {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cong-availability-probe\r\n{PROBE_HEADER}: {}\r\nConnection: close\r\n\r\n",
            probe_secret()
        );
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {e}"))?;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.contains(&b'\n') {
            let n = s.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("closed without a response".to_string());
            }
            got.extend_from_slice(&buf[..n]);
        }
        let line = String::from_utf8_lossy(&got);
        line.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "malformed status line".to_string())
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// Header that marks the gateway's own probes, so they are not counted as citizens' visits
/// in metrics and usage reports. Its value is a secret of this process: a client cannot use
/// it to hide its requests.
pub const PROBE_HEADER: &str = "x-cong-probe";

pub fn probe_secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(crate::forwarded::new_request_id)
}

/// Is this request one of our own availability probes?
pub fn is_probe(value: Option<&str>) -> bool {
    value.is_some_and(|v| v == probe_secret())
}

/// Probes running at the same time.
const MAX_CONCURRENT_PROBES: usize = 32;

/// How often usage counters are added to the month's file.
const USAGE_FLUSH: Duration = Duration::from_secs(60);

impl Prober {
    fn flush_usage(&self, month: &mut String) {
        let Some(dir) = self.gateway.snapshot().settings.state_dir.clone() else {
            return;
        };
        if let Err(e) = crate::usage::flush(&dir, crate::maintenance::now_s(), month) {
            crate::events::emit(
                crate::events::Event::new("usage_write_failed", crate::events::Severity::Error)
                    .field("path", dir.display())
                    .field("cause", e),
            );
        }
    }

    async fn round(&self) {
        let snap = self.gateway.snapshot();
        let Some(listen) = snap.settings.listen.first() else {
            return;
        };
        let addr = self_address(listen.addr);
        let now = crate::maintenance::now_s();
        let now_ms = crate::upstream::now_ms() as i64;
        let api = self.gateway.maintenance.all();
        let m = crate::metrics::get();
        let mut probes = Vec::new();
        // A bounded number at a time: 10,000 simultaneous connections to our own listener
        // would cost hundreds of MB of buffers and every file descriptor we have.
        let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_PROBES));
        for t in &snap.tenants {
            let Some(host) = t.probe_host.clone() else {
                continue;
            };
            let path = t.probe_path.clone();
            let id = t.id.clone();
            let planned = crate::maintenance::active(&t.maintenance, &api, &t.id, now).is_some();
            let timeout = self.tracker.timeout;
            let permits = permits.clone();
            probes.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await;
                let started = Instant::now();
                let res = probe(addr, &host, &path, timeout).await;
                (id, planned, res, started.elapsed())
            }));
        }
        let mut changes = Vec::new();
        for p in probes {
            let Ok((tenant, planned, res, took)) = p.await else {
                continue;
            };
            m.probe_duration
                .with_label_values::<&str>(&[])
                .observe(took.as_secs_f64());
            let (state, cause) = match res {
                Ok(_) if planned => (State::Maintenance, "planned maintenance".to_string()),
                Ok(code) if code < 500 => (State::Up, String::new()),
                Ok(code) => (State::Down, format!("status {code}")),
                Err(e) => (State::Down, e),
            };
            m.tenant_up
                .with_label_values(&[tenant.as_str()])
                .set(i64::from(state == State::Up));
            changes.push(Change {
                t: now_ms,
                tenant,
                state,
                cause,
            });
        }
        let mut h = self.tracker.lock();
        for c in changes {
            let (tenant, state, cause) = (c.tenant.clone(), c.state, c.cause.clone());
            if h.record(c) && state != State::Unknown {
                let sev = if state == State::Down {
                    crate::events::Severity::Error
                } else {
                    crate::events::Severity::Notice
                };
                crate::events::emit(
                    crate::events::Event::new("tenant_state", sev)
                        .tenant(tenant)
                        .field("state", format!("{state:?}").to_lowercase())
                        .field("cause", cause),
                );
            }
        }
        drop(h);
        if let Some(f) = &self.tracker.heartbeat {
            // Atomic, so a process killed mid-write leaves the previous heartbeat, not an empty file.
            let tmp = f.with_extension("tmp");
            let _ =
                std::fs::write(&tmp, format!("{now_ms}\n")).and_then(|_| std::fs::rename(&tmp, f));
        }
    }
}

#[async_trait]
impl BackgroundService for Prober {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Let the listeners come up before the first round.
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_millis(500),
            self.tracker.interval,
        );
        let mut flush =
            tokio::time::interval_at(tokio::time::Instant::now() + USAGE_FLUSH, USAGE_FLUSH);
        let mut month = crate::usage::month_of(crate::maintenance::now_s());
        loop {
            tokio::select! {
                _ = ticker.tick() => self.round().await,
                _ = flush.tick() => self.flush_usage(&mut month),
                _ = shutdown.changed() => {
                    self.flush_usage(&mut month);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(t: i64, s: State) -> Change {
        Change {
            t,
            tenant: "a".into(),
            state: s,
            cause: String::new(),
        }
    }

    #[test]
    fn uptime_counts_known_time_only() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = History::load(Some(dir.path()));
        assert!(h.record(ch(100, State::Up)));
        assert!(!h.record(ch(150, State::Up)), "no change, nothing recorded");
        h.record(ch(200, State::Down));
        h.record(ch(230, State::Up));
        h.record(ch(300, State::Maintenance));
        h.record(ch(400, State::Unknown));
        h.record(ch(500, State::Up));
        let u = h.uptime("a", 0, 600);
        assert_eq!(
            (u.up_ms, u.down_ms, u.maintenance_ms, u.unknown_ms),
            (100 + 70 + 100, 30, 100, 100 + 100)
        );
        assert_eq!(u.percent(true).map(|p| (p * 10.0).round()), Some(900.0));
        assert_eq!(h.incidents("a", 0, 600), vec![(200, 230, String::new())]);
        // The file holds the same history.
        let again = History::load(Some(dir.path()));
        assert_eq!(again.changes("a"), h.changes("a"));
    }
}
