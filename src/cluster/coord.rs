//! ACME coordination across nodes: one order lock per certificate (`SET NX PX` with a lease,
//! renewed by the holder at a third of the lease while its order runs, deleted by the holder
//! when it ends, expiring on its own if the holder dies), and HTTP-01 answers kept in Redis for
//! the length of an order so any node can answer the CA.

use super::{metrics, Cluster};
use crate::acme::{HeldLock, Lock};
use crate::events::{self, Event, Severity};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// How long a published HTTP-01 answer lives if its node never withdraws it.
const TOKEN_TTL_MS: u64 = 15 * 60 * 1000;

pub struct Coord {
    cluster: Arc<Cluster>,
}

impl Coord {
    pub fn new(cluster: Arc<Cluster>) -> Coord {
        Coord { cluster }
    }
}

struct Held {
    cluster: Arc<Cluster>,
    key: String,
    token: String,
    renewer: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl HeldLock for Held {
    async fn release(self: Box<Self>) {
        self.renewer.abort();
        let c = &self.cluster;
        if let Some(mut conn) = c.usable() {
            let mut inv = c.scripts.release.prepare_invoke();
            inv.key(&self.key).arg(&self.token);
            // A lock not deleted now expires with its lease.
            let _ = c
                .bg::<i64, _>("lock_release", inv.invoke_async(&mut conn))
                .await;
        }
    }
}

#[async_trait]
impl crate::acme::Coordinator for Coord {
    async fn lock(&self, name: &str) -> Lock {
        let c = &self.cluster;
        let s = &c.settings;
        let m = metrics::get();
        // Orders are not on the request path: give a node that is still connecting (at start,
        // or just after a blip) a few seconds before ordering without the lock.
        let mut conn = None;
        for _ in 0..50 {
            conn = c.usable();
            if conn.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let Some(mut conn) = conn else {
            m.locks.with_label_values(&["unavailable"]).inc();
            return Lock::Unavailable;
        };
        let key = s.key(&format!("lock:acme:{name}"));
        let token = format!("{}/{:016x}", s.node, fastrand::u64(..));
        let lease_ms = s.lock_lease.as_millis() as u64;
        let set: Result<Option<String>, String> = c
            .bg(
                "lock",
                redis::cmd("SET")
                    .arg(&key)
                    .arg(&token)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut conn),
            )
            .await;
        match set {
            Ok(Some(_)) => {
                m.locks.with_label_values(&["acquired"]).inc();
                events::emit(
                    Event::new("acme_lock_acquired", Severity::Info)
                        .tenant(name)
                        .field("node", &s.node)
                        .field("lease_s", s.lock_lease.as_secs()),
                );
                let (cl, k, t) = (c.clone(), key.clone(), token.clone());
                let renewer = tokio::spawn(async move {
                    let every = cl.settings.lock_lease / 3;
                    loop {
                        tokio::time::sleep(every).await;
                        let Some(mut conn) = cl.usable() else {
                            continue;
                        };
                        let mut inv = cl.scripts.renew.prepare_invoke();
                        inv.key(&k).arg(&t).arg(lease_ms);
                        if let Ok(0) = cl
                            .bg::<i64, _>("lock_renew", inv.invoke_async(&mut conn))
                            .await
                        {
                            // Expired while Redis was away and maybe taken by another node.
                            log::warn!("cluster: lost the order lock {k}");
                            return;
                        }
                    }
                });
                Lock::Held(Box::new(Held {
                    cluster: c.clone(),
                    key,
                    token,
                    renewer,
                }))
            }
            Ok(None) => {
                let holder: Option<String> = c
                    .bg("lock", redis::cmd("GET").arg(&key).query_async(&mut conn))
                    .await
                    .unwrap_or(None);
                let pttl: i64 = c
                    .bg("lock", redis::cmd("PTTL").arg(&key).query_async(&mut conn))
                    .await
                    .unwrap_or(-1);
                m.locks.with_label_values(&["busy"]).inc();
                let holder = holder
                    .as_deref()
                    .and_then(|h| h.split('/').next())
                    .unwrap_or("?")
                    .to_string();
                // Ask again soon: the holder usually finishes well within its lease.
                let retry_in = Duration::from_millis(pttl.clamp(1000, 5000) as u64);
                Lock::Busy { holder, retry_in }
            }
            Err(e) => {
                log::debug!("cluster: lock {key}: {e}");
                m.locks.with_label_values(&["unavailable"]).inc();
                Lock::Unavailable
            }
        }
    }

    async fn refresh(&self, name: &str) {
        let c = &self.cluster;
        if let Some(mut conn) = c.usable() {
            if let Err(e) = c.pull_cert(&mut conn, name, "-").await {
                log::warn!("cluster: reading certificate {name}: {e}");
            }
        }
    }

    async fn flush(&self) {
        self.cluster
            .flush(self.cluster.settings.bg_timeout() * 2)
            .await;
    }

    async fn publish_token(&self, token: &str, key_auth: &str) -> Result<(), String> {
        let c = &self.cluster;
        let mut conn = c.usable().ok_or("cluster state unreachable")?;
        c.bg(
            "token",
            redis::cmd("SET")
                .arg(c.settings.key(&format!("tok:{token}")))
                .arg(key_auth)
                .arg("PX")
                .arg(TOKEN_TTL_MS)
                .query_async::<()>(&mut conn),
        )
        .await
    }

    async fn withdraw_token(&self, token: &str) {
        let c = &self.cluster;
        if let Some(mut conn) = c.usable() {
            let _ = c
                .bg::<(), _>(
                    "token",
                    redis::cmd("DEL")
                        .arg(c.settings.key(&format!("tok:{token}")))
                        .query_async(&mut conn),
                )
                .await;
        }
    }

    async fn lookup_token(&self, token: &str) -> Option<String> {
        let c = &self.cluster;
        let mut conn = c.usable()?;
        let mut cmd = redis::cmd("GET");
        cmd.arg(c.settings.key(&format!("tok:{token}")));
        let q = cmd.query_async::<Option<String>>(&mut conn);
        match tokio::time::timeout(c.settings.timeout, q).await {
            Ok(Ok(v)) => v,
            _ => {
                c.report_trouble("token");
                None
            }
        }
    }
}
