//! Listeners and clients over IPv4 and IPv6, forwarding headers, graceful shutdown.

mod common;
use common::*;
use std::time::{Duration, Instant};

#[test]
fn ipv6_client_and_ipv6_backend() {
    let b = Backend::start("v6-backend", "::1");
    let listen = free_addr("::1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let r = g.get("t.gov.vn", "/");
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), Some("v6-backend"));
    assert_eq!(r.seen_header("x-forwarded-for"), Some("::1"));
    assert_eq!(
        r.seen_header("forwarded"),
        Some("for=\"[::1]\";host=t.gov.vn;proto=http")
    );
    // An IPv6 literal Host goes to the default tenant (none here): 404.
    assert_eq!(g.get("[::1]:80", "/").status, 404);
}

#[test]
fn dual_stack_socket_reports_ipv4_clients_as_ipv4() {
    let b = Backend::start("b", "127.0.0.1");
    let port = free_port("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let cfg = format!(
        "[server]\nthreads = 1\ngrace_period = \"1s\"\npid_file = \"/tmp/cong-test-{port}.pid\"\nupgrade_sock = \"/tmp/cong-test-{port}.sock\"\n\n[[listen]]\naddress = \"[::]:{port}\"\nipv6_only = false\n\n[admin]\naddress = \"{admin}\"\n"
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    // Over IPv4 the socket sees ::ffff:127.0.0.1; the gateway must say 127.0.0.1.
    let r = get(listen, "t.gov.vn", "/");
    assert_eq!(r.seen_header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-real-ip"), Some("127.0.0.1"));
    wait_until("access log", Duration::from_secs(2), || {
        g.log_text().contains("client=127.0.0.1 ")
    });
    assert!(
        !g.log_text().contains("::ffff:"),
        "no mapped addresses in logs"
    );
    // And IPv6 clients on the same socket.
    let r = get(format!("[::1]:{port}").parse().unwrap(), "t.gov.vn", "/");
    assert_eq!(r.seen_header("x-forwarded-for"), Some("::1"));
}

#[test]
fn default_style_two_listeners_on_one_port() {
    // 0.0.0.0:P and [::]:P together, as in the built-in default.
    let b = Backend::start("b", "127.0.0.1");
    let port = free_port("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = format!(
        "[server]\nthreads = 1\ngrace_period = \"1s\"\npid_file = \"/tmp/cong-test-{port}.pid\"\nupgrade_sock = \"/tmp/cong-test-{port}.sock\"\n\n[[listen]]\naddress = \"0.0.0.0:{port}\"\n\n[[listen]]\naddress = \"[::]:{port}\"\n\n[admin]\naddress = \"{admin}\"\n"
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let _g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    assert_eq!(get(listen, "t.gov.vn", "/").status, 200);
    assert_eq!(
        get(format!("[::1]:{port}").parse().unwrap(), "t.gov.vn", "/").status,
        200
    );
}

#[test]
fn forwarding_headers_from_an_untrusted_client() {
    let b = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    // Only 10.0.0.0/8 is trusted: the test client (127.0.0.1) is not.
    let cfg = base_config(listen, admin, "trusted_proxies = [\"10.0.0.0/8\"]");
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let spoof = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
    ];
    let r = request(listen, "GET", Some("t.gov.vn:8080"), "/", &spoof, "").unwrap();
    assert_eq!(r.seen_header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(r.seen_header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(
        r.seen_header("forwarded"),
        Some("for=127.0.0.1;host=\"t.gov.vn:8080\";proto=http")
    );
    assert_eq!(r.seen_header("x-forwarded-proto"), Some("http"));
    assert_eq!(r.seen_header("x-forwarded-host"), Some("t.gov.vn:8080"));
    // A request id is generated, sent upstream and returned to the client.
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(rid.len(), 32);
    assert_eq!(r.seen_header("x-request-id"), Some(rid));
    // A sane incoming id is kept; a bad one is replaced.
    let r = request(
        listen,
        "GET",
        Some("t.gov.vn"),
        "/",
        &[("X-Request-Id", "soc-2026-11-22-0001")],
        "",
    )
    .unwrap();
    assert_eq!(r.header("x-request-id"), Some("soc-2026-11-22-0001"));
    assert_eq!(r.seen_header("x-request-id"), Some("soc-2026-11-22-0001"));
    let r = request(
        listen,
        "GET",
        Some("t.gov.vn"),
        "/",
        &[("X-Request-Id", "a b<script>")],
        "",
    )
    .unwrap();
    assert_ne!(r.header("x-request-id"), Some("a b<script>"));
    // The access log names the real client, not the spoofed one.
    wait_until("access log", Duration::from_secs(2), || {
        g.log_text().contains("rid=soc-2026-11-22-0001")
    });
    assert!(!g.log_text().contains("client=6.6.6.6"));
}

#[test]
fn forwarding_headers_from_a_trusted_proxy() {
    let b = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(
        listen,
        admin,
        "trusted_proxies = [\"127.0.0.0/8\", \"::1\"]",
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let r = request(
        listen,
        "GET",
        Some("t.gov.vn"),
        "/",
        &[
            ("X-Forwarded-For", "203.0.113.9"),
            ("Forwarded", "for=203.0.113.9"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        r.seen_header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(r.seen_header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(
        r.seen_header("forwarded"),
        Some("for=203.0.113.9, for=127.0.0.1;host=t.gov.vn;proto=http")
    );
    wait_until("access log", Duration::from_secs(2), || {
        g.log_text().contains("client=203.0.113.9 ")
    });
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let b = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "");
    let mut g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let client = std::thread::spawn(move || get(listen, "t.gov.vn", "/slow?ms=600"));
    wait_until(
        "request reached the backend",
        Duration::from_secs(5),
        || b.hits() == 1,
    );
    let start = Instant::now();
    g.signal(libc::SIGTERM);
    let r = client.join().unwrap();
    assert_eq!(r.status, 200, "the in-flight request completed");
    assert_eq!(r.backend(), Some("b"));
    // grace_period = 1s, shutdown_timeout = 1s in the test config.
    let st = g
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the grace period");
    assert!(st.success() || st.code().is_some());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(g.log_text().contains("grace period 1s"), "{}", g.log_text());
}
