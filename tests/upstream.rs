//! Upstream behaviour through the real binary: health-check failover, retries, timeouts,
//! whole-pool failures, balancing, DNS-named backends, the static origin.

mod common;
use common::*;
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn one_tenant(backends: &[std::net::SocketAddr], pool_extra: &str) -> Gateway {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = tenant("t", &["t.gov.vn"], backends, pool_extra);
    Gateway::start(&cfg, &[("t.toml", &t)], listen, admin)
}

const FAST_HEALTH: &str = "[pools.main.health]\npath = \"/health\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";

#[test]
fn failing_health_check_takes_a_backend_out_within_two_intervals() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let g = one_tenant(&[a.addr, b.addr], FAST_HEALTH);
    // Both serve while healthy.
    let seen: HashSet<String> = (0..20)
        .map(|_| g.get("t.gov.vn", "/").backend().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 2, "round robin reaches both: {seen:?}");

    a.set_healthy(false);
    // Two check intervals (plus the probe timeout) after the change, `a` gets nothing.
    std::thread::sleep(Duration::from_millis(2 * 200 + 150));
    let before = a.hits();
    for _ in 0..30 {
        let r = g.get("t.gov.vn", "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), Some("b"));
    }
    assert_eq!(a.hits(), before, "no request went to the unhealthy backend");
    assert!(
        g.log_text().contains("event=backend_down"),
        "state change is logged"
    );

    // It comes back when its checks pass again.
    a.set_healthy(true);
    wait_until("backend a back in rotation", Duration::from_secs(5), || {
        g.get("t.gov.vn", "/").backend() == Some("a")
    });
    assert!(g.log_text().contains("event=backend_up"));
}

#[test]
fn stopping_a_backend_causes_no_5xx_for_gets() {
    let mut a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let g = one_tenant(&[a.addr, b.addr], FAST_HEALTH);
    let mut statuses = Vec::new();
    let start = Instant::now();
    let mut stopped_at = None;
    while start.elapsed() < Duration::from_millis(1500) {
        if stopped_at.is_none() && start.elapsed() > Duration::from_millis(300) {
            a.stop();
            stopped_at = Some(Instant::now());
        }
        let r = g.get("t.gov.vn", "/");
        statuses.push(r.status);
        if let Some(t) = stopped_at {
            if t.elapsed() > Duration::from_millis(100) {
                assert_eq!(r.backend(), Some("b"));
            }
        }
    }
    assert!(statuses.len() > 20);
    assert!(
        statuses.iter().all(|&s| s == 200),
        "all GETs succeed: {statuses:?}"
    );
}

#[test]
fn connect_failures_are_retried_on_another_backend() {
    let dead = free_addr("127.0.0.1"); // nothing listens here
    let b = Backend::start("b", "127.0.0.1");
    // No active checks, passive detection off: every request meets the dead backend in turn.
    let g = one_tenant(&[dead, b.addr], "max_fails = 0\n");
    for _ in 0..10 {
        let r = g.get("t.gov.vn", "/");
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), Some("b"));
    }
    // A POST never reached the dead backend, so it is safe to send it to `b`.
    for _ in 0..4 {
        let r = request(
            g.listen,
            "POST",
            Some("t.gov.vn"),
            "/form",
            &[],
            "ten=Nguyễn",
        )
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.backend(), Some("b"));
    }
}

#[test]
fn idempotent_requests_retry_after_a_broken_response_but_posts_do_not() {
    // Both backends close the connection on /close without answering.
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = format!(
        "id = \"t\"\nhosts = [\"t.gov.vn\"]\ndefault_pool = \"main\"\n\n[pools.main]\nbackends = [\"{}\", \"{}\"]\nmax_fails = 0\n",
        a.addr, b.addr
    );
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let mut get_ok = 0;
    let mut post_fail = 0;
    for _ in 0..6 {
        let r = g.get("t.gov.vn", "/close");
        // A GET that meets a closing backend is retried once on the other, then fails: 502.
        if r.status == 200 {
            get_ok += 1;
        }
        assert!(r.status == 200 || r.status == 502, "{}", r.status);
        let r = request(g.listen, "POST", Some("t.gov.vn"), "/close", &[], "x=1").unwrap();
        if r.status == 502 {
            post_fail += 1;
        }
    }
    assert_eq!(get_ok, 0, "both backends close on /close");
    assert_eq!(
        post_fail, 6,
        "a POST that reached a backend is never retried"
    );
    // The GET was tried on both backends (one retry); the POST only once each.
    let hits = a.hits() + b.hits();
    assert_eq!(hits, 6 * 2 + 6, "GETs tried twice, POSTs once: {hits}");
}

#[test]
fn slow_backend_gives_504_in_bounded_time() {
    let a = Backend::start("slow", "127.0.0.1");
    let g = one_tenant(&[a.addr], "read_timeout = \"300ms\"\nretries = 0\n");
    let start = Instant::now();
    let r = g.get("t.gov.vn", "/slow?ms=3000");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(took < Duration::from_millis(2500), "answered in {took:?}");
    let rid = r.header("x-request-id").unwrap();
    assert!(r.body.contains(rid));
    assert!(r.body.contains("504"));
    // The request id is in the access log line too.
    wait_until("access log line", Duration::from_secs(2), || {
        g.log_text().contains(&format!("rid={rid}"))
    });
}

#[test]
fn whole_pool_down_gives_an_honest_error_page_quickly() {
    let dead1 = free_addr("127.0.0.1");
    let dead2 = free_addr("127.0.0.1");
    let g = one_tenant(&[dead1, dead2], "");
    let start = Instant::now();
    let r = g.get("t.gov.vn", "/");
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert!(r.body.contains("lang=\"vi\""));
    // Once passive detection has both out, the answer is an immediate 503.
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("30"));
}

#[test]
fn health_checked_pool_all_down_is_503() {
    let a = Backend::start("a", "127.0.0.1");
    a.set_healthy(false);
    let g = one_tenant(&[a.addr], FAST_HEALTH);
    // The first round of checks runs before readiness.
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 503);
    assert_eq!(a.hits(), 0);
}

#[test]
fn ip_hash_keeps_a_client_on_one_backend_and_least_conn_spreads() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let c = Backend::start("c", "127.0.0.1");
    let g = one_tenant(&[a.addr, b.addr, c.addr], "balance = \"ip_hash\"\n");
    let seen: HashSet<String> = (0..15)
        .map(|_| g.get("t.gov.vn", "/").backend().unwrap().to_string())
        .collect();
    assert_eq!(seen.len(), 1, "one client, one backend: {seen:?}");
    drop(g);
    let g = one_tenant(&[a.addr, b.addr, c.addr], "balance = \"least_conn\"\n");
    let seen: HashSet<String> = (0..15)
        .map(|_| g.get("t.gov.vn", "/").backend().unwrap().to_string())
        .collect();
    assert_eq!(
        seen.len(),
        3,
        "idle backends share sequential requests: {seen:?}"
    );
}

#[test]
fn backends_named_by_dns_are_resolved() {
    // `localhost` resolves through the system resolver (hosts file) to 127.0.0.1 and/or ::1.
    let port = free_port("127.0.0.1");
    let v4 = Backend::start_at("v4", format!("127.0.0.1:{port}").parse().unwrap());
    let v6 = std::net::TcpListener::bind(("::1", port))
        .ok()
        .map(drop)
        .map(|_| Backend::start_at("v6", format!("[::1]:{port}").parse().unwrap()));
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = format!(
        "id = \"t\"\nhosts = [\"t.gov.vn\"]\n\n[pools.main]\nbackends = [\"localhost:{port}\"]\n"
    );
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    for _ in 0..6 {
        let r = g.get("t.gov.vn", "/");
        assert_eq!(r.status, 200, "{}\n{}", r.body, g.log_text());
    }
    assert!(v4.hits() + v6.as_ref().map(|b| b.hits()).unwrap_or(0) >= 6);
}

#[test]
fn static_origin_serves_files_and_refuses_traversal() {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), "<h1>Bảo trì hệ thống</h1>").unwrap();
    std::fs::create_dir(dir.path().join("css")).unwrap();
    std::fs::write(dir.path().join("css/a.css"), "h1{color:#000}").unwrap();
    let cfg = base_config(listen, admin, "");
    let t = format!(
        "id = \"m\"\nhosts = [\"m.gov.vn\"]\n\n[pools.files]\nstatic_root = \"{}\"\n",
        dir.path().display()
    );
    let g = Gateway::start(&cfg, &[("m.toml", &t)], listen, admin);
    let r = g.get("m.gov.vn", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "<h1>Bảo trì hệ thống</h1>");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    let r = g.get("m.gov.vn", "/css/a.css");
    assert_eq!(r.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(g.get("m.gov.vn", "/nope.html").status, 404);
    assert_eq!(g.get("m.gov.vn", "/../../etc/passwd").status, 404);
    assert_eq!(g.get("m.gov.vn", "/%2e%2e/%2e%2e/etc/passwd").status, 404);
    let lm = g
        .get("m.gov.vn", "/")
        .header("last-modified")
        .unwrap()
        .to_string();
    let r = request(
        g.listen,
        "GET",
        Some("m.gov.vn"),
        "/",
        &[("If-Modified-Since", &lm)],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 304);
    let r = request(g.listen, "POST", Some("m.gov.vn"), "/", &[], "a=1").unwrap();
    assert_eq!(r.status, 405);
}

#[test]
fn tenant_error_pages_override_the_built_in_ones() {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let pages = tempfile::tempdir().unwrap();
    std::fs::write(
        pages.path().join("503.html"),
        "<p>Cổng đang bảo trì {{status}} {{request_id}}</p>",
    )
    .unwrap();
    let cfg = base_config(listen, admin, "");
    let dead = free_addr("127.0.0.1");
    let t = format!(
        "id = \"t\"\nhosts = [\"t.gov.vn\"]\nerror_pages = \"{}\"\n\n[pools.main]\nbackends = [\"{dead}\"]\n",
        pages.path().display()
    );
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let _ = g.get("t.gov.vn", "/"); // takes the dead backend out
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 503);
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(r.body, format!("<p>Cổng đang bảo trì 503 {rid}</p>"));
}

#[test]
fn tls_backends_with_sni_and_ca_verification() {
    let (ca, chain, key) = test_pki(&["cms.noibo.tinh.gov.vn"]);
    let (other_ca, _, _) = test_pki(&["unrelated"]);
    let b = Backend::start_tls("tls-cms", "127.0.0.1", &chain, &key);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.path().join("other.pem"), &other_ca).unwrap();
    let pool = |extra: &str| {
        format!(
            "tls = true\nsni = \"cms.noibo.tinh.gov.vn\"\nmax_fails = 0\n{extra}\n[pools.main.health]\npath = \"/health\"\ninterval = \"200ms\"\n"
        )
    };
    let ca_path = dir.path().join("ca.pem");
    let other_path = dir.path().join("other.pem");

    // Verified against the right CA: served, and the health checker speaks TLS too.
    let g = one_tenant(
        &[b.addr],
        &pool(&format!("ca_file = \"{}\"", ca_path.display())),
    );
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 200, "{}\n{}", r.body, g.log_text());
    assert_eq!(r.backend(), Some("tls-cms"));
    assert!(
        b.health_hits() > 0,
        "health checks over TLS reached the backend"
    );
    drop(g);

    // The wrong CA: the handshake fails, the client gets a 502 page, nothing reaches the app.
    let hits = b.hits();
    let g = one_tenant(
        &[b.addr],
        &pool(&format!("ca_file = \"{}\"", other_path.display())).replace(
            "[pools.main.health]\npath = \"/health\"\ninterval = \"200ms\"\n",
            "",
        ),
    );
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(b.hits(), hits);
    drop(g);

    // Verification switched off for this pool: served.
    let g = one_tenant(&[b.addr], &pool("tls_verify = false"));
    assert_eq!(g.get("t.gov.vn", "/").backend(), Some("tls-cms"));
}
