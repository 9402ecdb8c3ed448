//! Cluster-wide rate limits: GCRA with its state in Redis, one atomic script call per decision
//! (read the theoretical arrival time, compare with Redis' clock, write it back with an
//! expiry). Decisions are exact across nodes while Redis answers; a call that fails or takes
//! longer than `cluster.timeout` is answered by the node's local count instead, and client
//! requests stop asking Redis until the connection has been checked again.

use super::{metrics, Cluster};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `limits::SharedLimiter` of cluster mode.
pub struct RedisLimiter {
    cluster: Arc<Cluster>,
}

impl RedisLimiter {
    pub fn new(cluster: Arc<Cluster>) -> RedisLimiter {
        RedisLimiter { cluster }
    }
}

#[async_trait]
impl crate::limits::SharedLimiter for RedisLimiter {
    async fn take(
        &self,
        key: &str,
        emission_ns: u64,
        tolerance_ns: u64,
    ) -> Result<Option<Duration>, ()> {
        let m = metrics::get();
        let Some(mut conn) = self.cluster.usable() else {
            m.decisions.with_label_values(&["local_fallback"]).inc();
            return Err(());
        };
        let s = &self.cluster.settings;
        let started = Instant::now();
        let mut inv = self.cluster.scripts.gcra.prepare_invoke();
        inv.key(s.key(&format!("rl:{key}")))
            .arg((emission_ns / 1000).max(1))
            .arg(tolerance_ns / 1000);
        match tokio::time::timeout(s.timeout, inv.invoke_async::<u64>(&mut conn)).await {
            Ok(Ok(wait_us)) => {
                m.decision_seconds.observe(started.elapsed().as_secs_f64());
                m.decisions.with_label_values(&["cluster"]).inc();
                Ok((wait_us > 0).then(|| Duration::from_micros(wait_us)))
            }
            Ok(Err(e)) => {
                log::debug!("cluster rate limit: {e}");
                m.decisions.with_label_values(&["local_fallback"]).inc();
                self.cluster.report_trouble("ratelimit");
                Err(())
            }
            Err(_) => {
                m.decisions.with_label_values(&["local_fallback"]).inc();
                self.cluster.report_trouble("ratelimit");
                Err(())
            }
        }
    }
}
