//! Cluster mode: several gateway nodes sharing the little state that must be shared through one
//! Redis (or Valkey) server. Absent `[cluster]`, none of this runs and a node behaves exactly as
//! a single gateway.
//!
//! This module owns the connection to Redis, the layout of every key under the configured
//! prefix, and the traffic between nodes: a versioned change log (a Redis stream, announced on
//! a pub/sub channel and read again on every poll, so a missed notification only delays a
//! change) carrying certificate uploads, ACME state, bans and cache purges; a queue of this
//! node's outgoing changes kept while Redis is unreachable; and the implementations of the
//! hooks other modules expose for it: `certs::CertStore` (`store::RedisStore`),
//! `acme::Coordinator` (`coord`), `limits::SharedLimiter` (`limiter`), `limits::bans::on_change`
//! and `cache::purge::on_purge`. It never decides a request's fate itself, never serves
//! certificates (`tls` does), and never touches the configuration or the other modules'
//! tables except through those hooks. While Redis is down every node serves on what it has:
//! last-known certificates (the local store is a mirror), local rate limits and bans, queued
//! purges; `cluster_degraded`/`cluster_recovered` events and `cong_cluster_*` metrics say so.

mod coord;
pub mod crypt;
mod limiter;
pub mod metrics;
mod settings;
mod store;

pub use limiter::RedisLimiter;
pub use settings::{hostname, Settings};
pub use store::RedisStore;

use crate::certs::{CertStore, DirStore};
use crate::events::{self, Event, Severity};
use crate::limits::bans::BanChange;
use crate::tls::{parse_pair, CertResolver, Loaded, Source};
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use futures_util::StreamExt;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use redis::aio::MultiplexedConnection;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Entries kept in the change log; a node away for longer than it takes to write this many
/// changes resynchronises in full.
const LOG_MAXLEN: usize = 10_000;

/// A change this node tells the others about.
#[derive(Debug, Clone, PartialEq)]
enum Outgoing {
    /// Upload the managed certificate `name` as it is in the local store now.
    Cert(String),
    /// Upload (or, when gone locally, delete) the state blob `key`.
    Blob(String),
    Ban(BanChange),
    Purge(crate::cache::purge::Purge),
}

/// Position in the change log (`ms-seq`).
fn parse_id(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(0), b.parse().unwrap_or(0))
}

/// The running cluster membership of this node.
pub struct Cluster {
    pub settings: Arc<Settings>,
    client: redis::Client,
    /// The connection client requests may use; `None` while Redis is down or a request just
    /// failed (the supervisor puts it back after a successful ping).
    usable: ArcSwapOption<MultiplexedConnection>,
    connected: AtomicBool,
    /// A `cluster_degraded` event was emitted and no `cluster_recovered` since.
    down_reported: AtomicBool,
    trouble: Notify,
    outbox: Mutex<VecDeque<Outgoing>>,
    kick: Notify,
    drained: Notify,
    /// Last change-log entry applied (`None`: not joined yet).
    position: Mutex<Option<String>>,
    /// Certificate versions this node has (name → version in Redis).
    versions: Mutex<HashMap<String, u64>>,
    mirror: DirStore,
    resolver: Arc<CertResolver>,
    scripts: Scripts,
}

struct Scripts {
    log: redis::Script,
    cert: redis::Script,
    gcra: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

/// Appends a change to the log and announces it.
/// KEYS: log, channel. ARGV: maxlen, kind, node, data.
const LOG_LUA: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'kind', ARGV[2], 'node', ARGV[3], 'data', ARGV[4])
redis.call('PUBLISH', KEYS[2], id)
return id
";

/// Stores a certificate with a new version, logs and announces it.
/// KEYS: cert hash, versions hash, log, channel. ARGV: name, chain, sealed key, node, maxlen.
const CERT_LUA: &str = r"
local v = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], 'chain', ARGV[2], 'key', ARGV[3], 'version', v, 'node', ARGV[4])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'kind', 'cert', 'node', ARGV[4], 'data', ARGV[1])
redis.call('PUBLISH', KEYS[4], id)
return v
";

/// GCRA on one key with Redis' clock, in microseconds (exact in a Lua double).
/// KEYS: state. ARGV: emission µs, tolerance µs. Returns 0 (conforms, counted) or the wait µs.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local em = tonumber(ARGV[1])
local tol = tonumber(ARGV[2])
if tat - now > tol then
  return math.max(1, tat - now - tol)
end
local new = tat + em
redis.call('SET', KEYS[1], string.format('%.0f', new), 'PX', math.ceil((new - now) / 1000) + 1000)
return 0
";

/// Extends a lock's lease when this node still holds it. KEYS: lock. ARGV: token, lease ms.
const RENEW_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Deletes a lock when this node still holds it. KEYS: lock. ARGV: token.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

fn client_for(s: &Settings, i: usize) -> redis::RedisResult<redis::Client> {
    let (host, port) = &s.servers[i % s.servers.len()];
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    let scheme = if s.tls { "rediss" } else { "redis" };
    let info = redis::IntoConnectionInfo::into_connection_info(format!(
        "{scheme}://{host}:{port}/{}",
        s.db
    ))?;
    let mut r = redis::RedisConnectionInfo::default().set_db(s.db);
    if let Some(u) = &s.username {
        r = r.set_username(u);
    }
    if let Some(p) = &s.password {
        r = r.set_password(p);
    }
    let info = info.set_redis_settings(r);
    match (&s.tls_ca, s.tls) {
        (Some(ca), true) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        _ => redis::Client::open(info),
    }
}

impl Cluster {
    /// A node's membership: nothing is connected yet (see `initial_sync` and the `Service`).
    pub fn new(
        settings: Arc<Settings>,
        mirror: DirStore,
        resolver: Arc<CertResolver>,
    ) -> anyhow::Result<Arc<Cluster>> {
        let client =
            client_for(&settings, 0).map_err(|e| anyhow::anyhow!("cluster: Redis client: {e}"))?;
        let position = mirror
            .read_blob("cluster-position")
            .ok()
            .flatten()
            .and_then(|b| String::from_utf8(b).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Ok(Arc::new(Cluster {
            settings,
            client,
            usable: ArcSwapOption::const_empty(),
            connected: AtomicBool::new(false),
            down_reported: AtomicBool::new(false),
            trouble: Notify::new(),
            outbox: Mutex::new(VecDeque::new()),
            kick: Notify::new(),
            drained: Notify::new(),
            position: Mutex::new(position),
            versions: Mutex::new(HashMap::new()),
            mirror,
            resolver,
            scripts: Scripts {
                log: redis::Script::new(LOG_LUA),
                cert: redis::Script::new(CERT_LUA),
                gcra: redis::Script::new(GCRA_LUA),
                renew: redis::Script::new(RENEW_LUA),
                release: redis::Script::new(RELEASE_LUA),
            },
        }))
    }

    /// Registers this node's hooks in the other modules: shared limits, ban and purge fan-out,
    /// ACME coordination. The certificate store is built separately (`RedisStore::new`).
    pub fn install_hooks(self: &Arc<Self>, challenges: &crate::acme::Challenges) {
        crate::limits::set_shared(Some(Box::new(RedisLimiter::new(self.clone()))));
        let me = self.clone();
        crate::limits::bans::on_change(Box::new(move |c| me.send(Outgoing::Ban(c.clone()))));
        let me = self.clone();
        crate::cache::purge::on_purge(Box::new(move |p| me.send(Outgoing::Purge(p.clone()))));
        challenges.set_coordinator(Arc::new(coord::Coord::new(self.clone())));
        metrics::get().up.set(0);
    }

    /// A connection for a client request, if Redis is believed reachable.
    fn usable(&self) -> Option<MultiplexedConnection> {
        self.usable.load_full().map(|c| (*c).clone())
    }

    /// A client request's Redis call failed: stop using Redis for requests until the
    /// supervisor has checked it.
    fn report_trouble(&self, op: &'static str) {
        metrics::get().errors.with_label_values(&[op]).inc();
        self.usable.store(None);
        self.trouble.notify_one();
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Queues a change for the other nodes (never blocks; the oldest change goes when full).
    fn send(&self, m: Outgoing) {
        let mut q = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(m, Outgoing::Cert(_) | Outgoing::Blob(_)) && q.contains(&m) {
            return;
        }
        if q.len() >= self.settings.max_queued {
            q.pop_front();
            metrics::get().dropped.inc();
        }
        q.push_back(m);
        metrics::get().queued.set(q.len() as i64);
        drop(q);
        self.kick.notify_one();
    }

    fn queued(&self) -> usize {
        self.outbox.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Runs one Redis request of background work, bounded.
    async fn bg<T, F>(&self, op: &'static str, f: F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.settings.bg_timeout(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                metrics::get().errors.with_label_values(&[op]).inc();
                Err(format!("{op}: {e}"))
            }
            Err(_) => {
                metrics::get().errors.with_label_values(&[op]).inc();
                Err(format!(
                    "{op}: no answer within {:?}",
                    self.settings.bg_timeout()
                ))
            }
        }
    }

    /// Connects to the first server that answers as a primary.
    async fn connect(&self) -> Result<(MultiplexedConnection, redis::Client, String), String> {
        let mut last = String::from("no server");
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.bg_timeout()))
            .set_response_timeout(Some(self.settings.bg_timeout()));
        for i in 0..self.settings.servers.len() {
            let (h, p) = &self.settings.servers[i];
            let name = format!("{h}:{p}");
            let client = if i == 0 {
                self.client.clone()
            } else {
                match client_for(&self.settings, i) {
                    Ok(c) => c,
                    Err(e) => {
                        last = format!("{name}: {e}");
                        continue;
                    }
                }
            };
            let conn = match tokio::time::timeout(
                self.settings.bg_timeout() * 2,
                client.get_multiplexed_async_connection_with_config(&cfg),
            )
            .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    last = format!("{name}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{name}: connection timed out");
                    continue;
                }
            };
            let mut c = conn.clone();
            // A replica would refuse writes: skip it. A server that refuses ROLE (an ACL user
            // without @dangerous commands) is taken as it is.
            let role = tokio::time::timeout(
                self.settings.bg_timeout(),
                redis::cmd("ROLE").query_async::<Vec<redis::Value>>(&mut c),
            )
            .await;
            if let Ok(Ok(r)) = &role {
                if let Some(redis::Value::BulkString(b)) = r.first() {
                    if b.as_slice() != b"master" {
                        last = format!("{name}: a replica");
                        continue;
                    }
                }
            }
            return Ok((conn, client, name));
        }
        Err(last)
    }

    fn save_position(&self, id: &str) {
        let _ = self
            .mirror
            .write_blob("cluster-position", id.as_bytes(), false);
    }

    /// Writes the log position to disk when it moved (on polls, not per change: a restart
    /// reads again at most one poll interval of changes, which are idempotent).
    fn persist_position(&self, saved: &mut Option<String>) {
        let pos = self
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if pos.is_some() && pos != *saved {
            if let Some(p) = &pos {
                self.save_position(p);
            }
            *saved = pos;
        }
    }

    // -----------------------------------------------------------------------------------------
    // Outgoing changes

    /// Sends every queued change; stops at the first failure (the change stays queued).
    async fn drain(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        loop {
            let next = self
                .outbox
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .front()
                .cloned();
            let Some(m) = next else {
                metrics::get().queued.set(0);
                self.drained.notify_waiters();
                return Ok(());
            };
            self.push(conn, &m).await?;
            let mut q = self.outbox.lock().unwrap_or_else(|e| e.into_inner());
            if q.front() == Some(&m) {
                q.pop_front();
            }
            metrics::get().queued.set(q.len() as i64);
        }
    }

    async fn log(
        &self,
        conn: &mut MultiplexedConnection,
        kind: &str,
        data: &str,
    ) -> Result<(), String> {
        let s = &self.settings;
        let mut inv = self.scripts.log.prepare_invoke();
        inv.key(s.key("log"))
            .key(s.key("bus"))
            .arg(LOG_MAXLEN)
            .arg(kind)
            .arg(&s.node)
            .arg(data);
        let _: String = self.bg("log", inv.invoke_async(conn)).await?;
        Ok(())
    }

    async fn push(&self, conn: &mut MultiplexedConnection, m: &Outgoing) -> Result<(), String> {
        let s = &self.settings;
        match m {
            Outgoing::Cert(name) => {
                let Some(pair) = self.mirror.read_managed(name).map_err(|e| e.to_string())? else {
                    return Ok(());
                };
                let hkey = s.key(&format!("cert:{name}"));
                let sealed = s.sealer.seal(&hkey, pair.key_pem.as_bytes())?;
                let mut inv = self.scripts.cert.prepare_invoke();
                inv.key(&hkey)
                    .key(s.key("certs"))
                    .key(s.key("log"))
                    .key(s.key("bus"))
                    .arg(name)
                    .arg(&pair.chain_pem)
                    .arg(sealed)
                    .arg(&s.node)
                    .arg(LOG_MAXLEN);
                let v: u64 = self.bg("cert_upload", inv.invoke_async(conn)).await?;
                self.versions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.clone(), v);
            }
            Outgoing::Blob(key) => {
                let rkey = s.key(&format!("blob:{key}"));
                match self.mirror.read_blob(key).map_err(|e| e.to_string())? {
                    Some(data) => {
                        let sealed = s.sealer.seal(&rkey, &data)?;
                        let _: () = self
                            .bg(
                                "blob_upload",
                                redis::pipe()
                                    .atomic()
                                    .set(&rkey, sealed)
                                    .ignore()
                                    .sadd(s.key("blobs"), key)
                                    .ignore()
                                    .query_async(conn),
                            )
                            .await?;
                    }
                    None => {
                        let _: () = self
                            .bg(
                                "blob_upload",
                                redis::pipe()
                                    .atomic()
                                    .del(&rkey)
                                    .ignore()
                                    .srem(s.key("blobs"), key)
                                    .ignore()
                                    .query_async(conn),
                            )
                            .await?;
                    }
                }
                self.log(conn, "blob", key).await?;
            }
            Outgoing::Ban(c) => {
                let json = serde_json::to_string(c).map_err(|e| e.to_string())?;
                match c {
                    BanChange::Banned { key, .. } => {
                        let _: () = self
                            .bg(
                                "ban",
                                redis::cmd("HSET")
                                    .arg(s.key("bans"))
                                    .arg(key)
                                    .arg(&json)
                                    .query_async(conn),
                            )
                            .await?;
                    }
                    BanChange::Lifted { key } => {
                        let _: () = self
                            .bg(
                                "ban",
                                redis::cmd("HDEL")
                                    .arg(s.key("bans"))
                                    .arg(key)
                                    .query_async(conn),
                            )
                            .await?;
                    }
                }
                self.log(conn, "ban", &json).await?;
            }
            Outgoing::Purge(p) => {
                let json = serde_json::to_string(p).map_err(|e| e.to_string())?;
                self.log(conn, "purge", &json).await?;
            }
        }
        Ok(())
    }

    /// Waits (at most `max`) until the queue is empty or Redis is found down.
    pub async fn flush(&self, max: Duration) {
        let _ = tokio::time::timeout(max, async {
            loop {
                let waiter = self.drained.notified();
                if self.queued() == 0 || !self.is_connected() {
                    return;
                }
                self.kick.notify_one();
                waiter.await;
            }
        })
        .await;
    }

    // -----------------------------------------------------------------------------------------
    // Incoming changes

    /// Fetches certificate `name` from Redis and serves it when its version is newer than the
    /// one this node has. Returns whether it installed one.
    async fn pull_cert(
        &self,
        conn: &mut MultiplexedConnection,
        name: &str,
        from: &str,
    ) -> Result<bool, String> {
        if !crate::certs::DirStore::valid_name(name) {
            return Ok(false);
        }
        let s = &self.settings;
        let hkey = s.key(&format!("cert:{name}"));
        let fields: HashMap<String, String> = self
            .bg(
                "cert_fetch",
                redis::cmd("HGETALL").arg(&hkey).query_async(conn),
            )
            .await?;
        let (Some(chain), Some(sealed), Some(version)) = (
            fields.get("chain"),
            fields.get("key"),
            fields.get("version").and_then(|v| v.parse::<u64>().ok()),
        ) else {
            return Ok(false);
        };
        let known = self
            .versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or(0);
        // Versions only grow, except after Redis lost its data: any other version is read.
        if version == known {
            return Ok(false);
        }
        let key_pem = String::from_utf8(s.sealer.open(&hkey, sealed)?)
            .map_err(|_| format!("{hkey}: key is not text"))?;
        let label = format!("{hkey} (version {version})");
        let (key, info) =
            parse_pair(chain.as_bytes(), key_pem.as_bytes(), &label).map_err(|e| e.to_string())?;
        // Never replace a certificate with an older one (a stale copy uploaded back).
        if let Some(cur) = self.resolver.get(&format!("acme:{name}")) {
            if cur.info.not_after > info.not_after {
                self.versions
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name.to_string(), version);
                return Ok(false);
            }
        }
        let pair = crate::certs::StoredPair {
            chain_pem: chain.clone(),
            key_pem,
        };
        self.mirror
            .write_managed(name, &pair)
            .map_err(|e| format!("local copy of {name}: {e}"))?;
        let not_after = info.not_after;
        self.resolver.install(
            &format!("acme:{name}"),
            Loaded {
                key,
                info,
                source: Source::Acme,
            },
        );
        self.versions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), version);
        metrics::get().received.with_label_values(&["cert"]).inc();
        events::emit(
            Event::new("cert_synced", Severity::Notice)
                .tenant(name)
                .field("version", version)
                .field(
                    "from_node",
                    fields.get("node").map(String::as_str).unwrap_or(from),
                )
                .field("not_after", not_after),
        );
        Ok(true)
    }

    async fn pull_blob(&self, conn: &mut MultiplexedConnection, key: &str) -> Result<(), String> {
        if !crate::certs::DirStore::valid_name(key) || key == "cluster-position" {
            return Ok(());
        }
        let rkey = self.settings.key(&format!("blob:{key}"));
        let v: Option<String> = self
            .bg("blob_fetch", redis::cmd("GET").arg(&rkey).query_async(conn))
            .await?;
        match v {
            Some(sealed) => {
                let data = self.settings.sealer.open(&rkey, &sealed)?;
                self.mirror
                    .write_blob(key, &data, true)
                    .map_err(|e| format!("local copy of {key}: {e}"))?;
            }
            None => {
                let _ = self.mirror.remove_blob(key);
            }
        }
        metrics::get().received.with_label_values(&["state"]).inc();
        Ok(())
    }

    /// Applies one change-log entry written by another node.
    async fn apply(
        &self,
        conn: &mut MultiplexedConnection,
        kind: &str,
        node: &str,
        data: &str,
    ) -> Result<(), String> {
        match kind {
            "cert" => {
                self.pull_cert(conn, data, node).await?;
            }
            "blob" => self.pull_blob(conn, data).await?,
            "ban" => {
                if let Ok(c) = serde_json::from_str::<BanChange>(data) {
                    crate::limits::bans::apply_remote(&c);
                    metrics::get().received.with_label_values(&["ban"]).inc();
                }
            }
            "purge" => {
                if let Ok(p) = serde_json::from_str::<crate::cache::purge::Purge>(data) {
                    let n = crate::cache::purge::apply_local(&p);
                    metrics::get().received.with_label_values(&["purge"]).inc();
                    events::emit(
                        Event::new("cache_purge_received", Severity::Info)
                            .tenant(p.tenant())
                            .field("scope", p.scope())
                            .field("from_node", node)
                            .field("purged", n),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads the change log from this node's position on and applies what other nodes wrote.
    /// A position older than the log's oldest entry means changes were missed: full resync.
    async fn catch_up(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let log = self.settings.key("log");
        let pos = self
            .position
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(mut pos) = pos else {
            // First time in the cluster: start at the end of the log.
            let last: Vec<(String, Vec<String>)> = self
                .bg(
                    "log_read",
                    redis::cmd("XREVRANGE")
                        .arg(&log)
                        .arg("+")
                        .arg("-")
                        .arg("COUNT")
                        .arg(1)
                        .query_async(conn),
                )
                .await?;
            let id = last
                .first()
                .map(|(id, _)| id.clone())
                .unwrap_or("0-0".into());
            self.save_position(&id);
            *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
            return Ok(());
        };
        let first: Vec<(String, Vec<String>)> = self
            .bg(
                "log_read",
                redis::cmd("XRANGE")
                    .arg(&log)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(conn),
            )
            .await?;
        if let Some((oldest, _)) = first.first() {
            // Entries after our position were trimmed (or Redis lost its data meanwhile).
            if pos != "0-0" && parse_id(oldest) > parse_id(&pos) {
                self.resync_after_gap(conn).await?;
            }
        }
        loop {
            let entries: Vec<(String, Vec<String>)> = self
                .bg(
                    "log_read",
                    redis::cmd("XRANGE")
                        .arg(&log)
                        .arg(format!("({pos}"))
                        .arg("+")
                        .arg("COUNT")
                        .arg(500)
                        .query_async(conn),
                )
                .await?;
            if entries.is_empty() {
                return Ok(());
            }
            for (id, fields) in &entries {
                let mut kind = "";
                let mut node = "";
                let mut data = "";
                for kv in fields.chunks(2) {
                    if let [k, v] = kv {
                        match k.as_str() {
                            "kind" => kind = v,
                            "node" => node = v,
                            "data" => data = v,
                            _ => {}
                        }
                    }
                }
                if node != self.settings.node {
                    if let Err(e) = self.apply(conn, kind, node, data).await {
                        // A change that cannot be applied (a broken certificate) is reported
                        // and skipped; a Redis failure stops here and is retried.
                        if !self.ping(conn).await {
                            return Err(e);
                        }
                        events::emit(
                            Event::new("cluster_change_failed", Severity::Warning)
                                .field("kind", kind)
                                .field("from_node", node)
                                .field("error", &e),
                        );
                    }
                }
                pos = id.clone();
                *self.position.lock().unwrap_or_else(|e| e.into_inner()) = Some(pos.clone());
            }
        }
    }

    async fn ping(&self, conn: &mut MultiplexedConnection) -> bool {
        self.bg::<String, _>("ping", redis::cmd("PING").query_async(conn))
            .await
            .is_ok()
    }

    /// After missing part of the log: everything shared is read again in full and, since the
    /// purges missed are unknown, this node's whole cache is dropped.
    async fn resync_after_gap(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        self.full_sync(conn, false).await?;
        let n = crate::cache::purge::apply_local_all();
        events::emit(
            Event::new("cluster_resync", Severity::Warning)
                .field("node", &self.settings.node)
                .field("cause", "changes missed while away from the cluster")
                .field("cache_objects_dropped", n),
        );
        Ok(())
    }

    /// Reads certificates (by version), ACME state and bans in full. Managed certificates only
    /// this node has are uploaded (a node joining with certificates, or Redis that lost its
    /// data). `_joining` is the first sync of this process.
    async fn full_sync(
        &self,
        conn: &mut MultiplexedConnection,
        _joining: bool,
    ) -> Result<(), String> {
        let s = &self.settings;
        let versions: HashMap<String, u64> = self
            .bg(
                "sync",
                redis::cmd("HGETALL").arg(s.key("certs")).query_async(conn),
            )
            .await?;
        for name in versions.keys() {
            if let Err(e) = self.pull_cert(conn, name, "-").await {
                events::emit(
                    Event::new("cluster_change_failed", Severity::Warning)
                        .tenant(name)
                        .field("kind", "cert")
                        .field("error", &e),
                );
            }
        }
        for name in self.mirror.managed_names().unwrap_or_default() {
            if !versions.contains_key(&name) {
                self.send(Outgoing::Cert(name));
            }
        }
        let blobs: Vec<String> = self
            .bg(
                "sync",
                redis::cmd("SMEMBERS").arg(s.key("blobs")).query_async(conn),
            )
            .await?;
        for b in &blobs {
            self.pull_blob(conn, b).await?;
        }
        let bans: HashMap<String, String> = self
            .bg(
                "sync",
                redis::cmd("HGETALL").arg(s.key("bans")).query_async(conn),
            )
            .await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut expired = Vec::new();
        for (k, v) in &bans {
            match serde_json::from_str::<BanChange>(v) {
                Ok(c @ BanChange::Banned { until_ms, .. }) if until_ms > now => {
                    crate::limits::bans::apply_remote(&c);
                }
                _ => expired.push(k.clone()),
            }
        }
        if !expired.is_empty() {
            let _: () = self
                .bg(
                    "sync",
                    redis::cmd("HDEL")
                        .arg(s.key("bans"))
                        .arg(&expired)
                        .query_async(conn),
                )
                .await?;
        }
        Ok(())
    }

    /// Only certificate versions, on every poll (cheap: one hash of names and numbers).
    async fn poll_versions(&self, conn: &mut MultiplexedConnection) -> Result<(), String> {
        let versions: HashMap<String, u64> = self
            .bg(
                "sync",
                redis::cmd("HGETALL")
                    .arg(self.settings.key("certs"))
                    .query_async(conn),
            )
            .await?;
        let stale: Vec<String> = {
            let known = self.versions.lock().unwrap_or_else(|e| e.into_inner());
            versions
                .iter()
                .filter(|(n, v)| known.get(*n).copied().unwrap_or(0) != **v)
                .map(|(n, _)| n.clone())
                .collect()
        };
        for n in stale {
            self.pull_cert(conn, &n, "-").await?;
        }
        Ok(())
    }

    /// Before the listeners accept: the certificates in Redis, bounded by a few seconds. Redis
    /// being down is not an error: the node starts on its local copies.
    pub fn initial_sync(self: &Arc<Self>) {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                log::warn!("cluster: initial sync skipped: {e}");
                return;
            }
        };
        let me = self.clone();
        let res = rt.block_on(async move {
            let (mut conn, _, server) = me.connect().await?;
            me.full_sync(&mut conn, true).await?;
            Ok::<String, String>(server)
        });
        match res {
            Ok(server) => log::info!(
                "cluster: node {} read the shared state from {server}",
                self.settings.node
            ),
            Err(e) => {
                self.down_reported.store(true, Ordering::Relaxed);
                events::emit(
                    Event::new("cluster_degraded", Severity::Warning)
                        .field("node", &self.settings.node)
                        .field("error", e)
                        .field(
                            "serving",
                            "local copies of certificates, local limits and bans",
                        ),
                )
            }
        }
    }

    /// One connected session: until Redis is lost or the process stops. Returns true when
    /// the process is stopping.
    async fn session(
        &self,
        mut conn: MultiplexedConnection,
        client: redis::Client,
        shutdown: &mut ShutdownWatch,
    ) -> Result<bool, String> {
        let s = &self.settings;
        let mut pubsub = self.bg("subscribe", client.get_async_pubsub()).await?;
        self.bg("subscribe", pubsub.subscribe(s.key("bus"))).await?;
        let mut messages = pubsub.into_on_message();
        self.catch_up(&mut conn).await?;
        self.full_sync(&mut conn, false).await?;
        self.usable.store(Some(Arc::new(conn.clone())));
        self.connected.store(true, Ordering::Relaxed);
        metrics::get().up.set(1);
        self.drain(&mut conn).await?;
        let mut poll = tokio::time::interval(s.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut saved = None;
        self.persist_position(&mut saved);
        loop {
            tokio::select! {
                m = messages.next() => {
                    if m.is_none() {
                        return Err("subscription closed".into());
                    }
                    self.catch_up(&mut conn).await?;
                }
                _ = poll.tick() => {
                    if !self.ping(&mut conn).await {
                        return Err("no answer to PING".into());
                    }
                    self.catch_up(&mut conn).await?;
                    self.poll_versions(&mut conn).await?;
                    self.drain(&mut conn).await?;
                    self.persist_position(&mut saved);
                }
                _ = self.kick.notified() => self.drain(&mut conn).await?,
                _ = self.trouble.notified() => {
                    if !self.ping(&mut conn).await {
                        return Err("no answer to PING after a failed request".into());
                    }
                    self.usable.store(Some(Arc::new(conn.clone())));
                }
                _ = shutdown.changed() => {
                    self.persist_position(&mut saved);
                    return Ok(true);
                }
            }
        }
    }

    /// Keeps this node connected: reconnects with backoff, reports losses and recoveries.
    async fn supervise(&self, shutdown: &mut ShutdownWatch) {
        let mut backoff = Duration::from_millis(250);
        let mut down_since: Option<std::time::Instant> = None;
        let mut first = true;
        loop {
            let attempt = tokio::select! {
                r = self.connect() => r,
                _ = shutdown.changed() => return,
            };
            match attempt {
                Ok((conn, client, server)) => {
                    backoff = Duration::from_millis(250);
                    let queued = self.queued();
                    self.down_reported.store(false, Ordering::Relaxed);
                    match down_since.take() {
                        Some(t) => events::emit(
                            Event::new("cluster_recovered", Severity::Notice)
                                .field("node", &self.settings.node)
                                .field("server", &server)
                                .field("down_s", t.elapsed().as_secs())
                                .field("queued", queued),
                        ),
                        None if first => events::emit(
                            Event::new("cluster_connected", Severity::Info)
                                .field("node", &self.settings.node)
                                .field("server", &server),
                        ),
                        None => {}
                    }
                    first = false;
                    let res = self.session(conn, client, shutdown).await;
                    self.usable.store(None);
                    self.connected.store(false, Ordering::Relaxed);
                    metrics::get().up.set(0);
                    match res {
                        Ok(true) => return,
                        Ok(false) => {}
                        Err(e) => {
                            metrics::get().disconnects.inc();
                            down_since = Some(std::time::Instant::now());
                            self.down_reported.store(true, Ordering::Relaxed);
                            events::emit(
                                Event::new("cluster_degraded", Severity::Warning)
                                    .field("node", &self.settings.node)
                                    .field("server", &server)
                                    .field("error", e)
                                    .field(
                                        "serving",
                                        "last-known certificates, local limits and bans; purges queued",
                                    ),
                            );
                        }
                    }
                }
                Err(e) => {
                    if down_since.is_none() {
                        down_since = Some(std::time::Instant::now());
                        if first && !self.down_reported.swap(true, Ordering::Relaxed) {
                            events::emit(
                                Event::new("cluster_degraded", Severity::Warning)
                                    .field("node", &self.settings.node)
                                    .field("error", &e)
                                    .field(
                                        "serving",
                                        "last-known certificates, local limits and bans; purges queued",
                                    ),
                            );
                        }
                    }
                    first = false;
                    log::debug!("cluster: {e}");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}

/// The cluster connection as a pingora background service.
pub struct Service(pub Arc<Cluster>);

#[async_trait]
impl BackgroundService for Service {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        self.0.supervise(&mut shutdown).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_positions_order_by_time_then_sequence() {
        assert!(parse_id("1700000000000-1") > parse_id("1700000000000-0"));
        assert!(parse_id("1700000000001-0") > parse_id("1700000000000-9"));
        assert_eq!(parse_id("0-0"), (0, 0));
        assert_eq!(parse_id("garbage"), (0, 0));
    }
}
