//! Cost of a cluster-wide rate-limit decision against a Redis on loopback, next to the same
//! decision counted locally.
//!
//! Needs `CONG_BENCH_REDIS=127.0.0.1:PORT` (benches/cluster.sh starts a redis-server and sets
//! it). Tenant `t` has one limit with `scope = "cluster"`, tenant `u` the same limit local.
//! Decisions are issued open-loop at `RATE` per second (default 10,000) for `SECONDS` (default
//! 10) on a tokio runtime with `WORKERS` threads (default 1, like `server.threads = 1`): a
//! pacing thread wakes every 100 µs and starts, each as its own task, every decision whose
//! instant has come, over 10,000 distinct clients. Two latencies per decision: from its
//! scheduled instant to its answer (what a request would wait, pacing jitter included), and
//! from the moment its task ran to its answer (the decision alone). The same run is then made
//! with the local limit through the unchanged synchronous `limits::check`. Prints percentiles
//! and the difference at p99 (the added latency).
//!
//! Run: `benches/cluster.sh` (figures in benches/CLUSTER.md).

use cong::config::Config;
use cong::gateway::Snapshot;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentiles(label: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{label:<27} n={:<7} p50={:>8.1} µs  p90={:>8.1} µs  p99={:>8.1} µs  p99.9={:>8.1} µs  max={:>9.1} µs",
        v.len(),
        us(at(0.5)),
        us(at(0.9)),
        us(at(0.99)),
        us(at(0.999)),
        us(*v.last().unwrap_or(&Duration::ZERO)),
    );
    at(0.99)
}

fn main() {
    // `cargo bench` runs every bench target with `--bench`; this one needs its Redis.
    let Ok(redis) = std::env::var("CONG_BENCH_REDIS") else {
        eprintln!("cluster_limits: set CONG_BENCH_REDIS=HOST:PORT (benches/cluster.sh does)");
        return;
    };
    let rate = env_num("RATE", 10_000).max(1);
    let seconds = env_num("SECONDS", 10).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let main = format!(
        "[[listen]]\naddress = \"127.0.0.1:18183\"\n\n[tls]\ncert_dir = \"certs\"\n\n[cluster]\nredis = [\"{redis}\"]\nnode = \"bench\"\nkey_prefix = \"bench:\"\nencryption_key = \"{}\"\ntimeout = \"50ms\"\n",
        "ab".repeat(32)
    );
    std::fs::write(dir.path().join("cong.toml"), main).expect("write config");
    std::fs::create_dir_all(dir.path().join("tenants.d")).expect("tenants.d");
    // Generous limits: every decision is a full read-compare-write, none is refused.
    std::fs::write(
        dir.path().join("tenants.d/t.toml"),
        "id = \"t\"\nhosts = [\"t.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:1\"]\n\n[[limits.rate]]\nname = \"shared\"\nrequests = 1000000\nper = \"1s\"\nscope = \"cluster\"\n",
    )
    .expect("tenant");
    std::fs::write(
        dir.path().join("tenants.d/u.toml"),
        "id = \"u\"\nhosts = [\"u.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:1\"]\n\n[[limits.rate]]\nname = \"own\"\nrequests = 1000000\nper = \"1s\"\n",
    )
    .expect("tenant");
    let cfg = Config::load(&dir.path().join("cong.toml")).expect("config");
    let snap = Arc::new(Snapshot::build(&cfg).expect("snapshot"));
    snap.limits.apply();
    cong::tls::install_crypto_provider();
    let resolver = Arc::new(cong::tls::CertResolver::new(
        cong::tls::generated_default().expect("default certificate"),
    ));
    let settings = snap.settings.cluster.clone().expect("[cluster]");
    let cluster = cong::cluster::Cluster::new(
        settings,
        cong::certs::DirStore::new(dir.path().join("certs")),
        resolver,
    )
    .expect("cluster");
    cluster.install_hooks(&cong::acme::Challenges::default());

    let workers = env_num("WORKERS", 1).max(1) as usize;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime");
    let (_stop, watch) = tokio::sync::watch::channel(false);
    let svc = cong::cluster::Service(cluster.clone());
    rt.spawn(async move {
        use pingora::services::background::BackgroundService;
        svc.start(watch).await;
    });
    let t0 = Instant::now();
    while !cluster.is_connected() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no connection to Redis at {redis}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let clients: Vec<IpAddr> = (0..10_000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();

    type Samples = (Vec<Duration>, Vec<Duration>);
    let run = |tenant: usize, shared: bool| -> Samples {
        let n = rate * seconds;
        let lat = Arc::new(Mutex::new((
            Vec::with_capacity(n as usize),
            Vec::with_capacity(n as usize),
        )));
        let step = Duration::from_nanos(1_000_000_000 / rate);
        let start = Instant::now() + Duration::from_millis(20);
        let mut handles = Vec::with_capacity(n as usize);
        let mut i = 0u64;
        while i < n {
            // Every decision whose instant has come; then sleep (no core spent spinning).
            while i < n && start + step * i as u32 <= Instant::now() {
                let at = start + step * i as u32;
                let (snap, lat) = (snap.clone(), lat.clone());
                let ip = clients[i as usize % clients.len()];
                handles.push(rt.spawn(async move {
                    let ran = Instant::now();
                    let t = &snap.tenants[tenant];
                    let hit = if shared {
                        cong::limits::check_shared(&snap.limits, &t.limits, ip, "/").await
                    } else {
                        cong::limits::check(&snap.limits, &t.limits, ip, "/")
                    };
                    assert!(hit.is_none(), "a generous limit refused a request");
                    let (total, alone) = (at.elapsed(), ran.elapsed());
                    let mut l = lat.lock().unwrap_or_else(|e| e.into_inner());
                    l.0.push(total);
                    l.1.push(alone);
                }));
                i += 1;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        rt.block_on(async {
            for h in handles {
                let _ = h.await;
            }
        });
        let v = std::mem::take(&mut *lat.lock().unwrap_or_else(|e| e.into_inner()));
        v
    };

    println!("{rate} decisions/s for {seconds} s, {workers} worker thread(s), Redis at {redis}");
    // Warm-up (connections, script cache, allocator).
    let _ = run(0, true);
    let (c_total, c_alone) = run(0, true);
    let (l_total, l_alone) = run(1, false);
    let cluster_p99 = percentiles("cluster, scheduled→answer", c_total);
    let local_p99 = percentiles("local, scheduled→answer", l_total);
    percentiles("cluster, decision alone", c_alone);
    percentiles("local, decision alone", l_alone);
    let m = cong::cluster::metrics::get();
    println!(
        "decisions through Redis: {}, fallbacks to local: {}",
        m.decisions.with_label_values(&["cluster"]).get(),
        m.decisions.with_label_values(&["local_fallback"]).get()
    );
    let added = cluster_p99.saturating_sub(local_p99);
    println!(
        "added latency at p99: {:.1} µs (target < 200 µs: {})",
        added.as_secs_f64() * 1e6,
        if added < Duration::from_micros(200) {
            "met"
        } else {
            "missed"
        }
    );
}
