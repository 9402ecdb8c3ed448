//! Rate limits, bans and connection protection through the real binary: IPv4 and IPv6
//! clients, /64 aggregation, login-path and tenant-wide limits, 429 + Retry-After, allow-lists,
//! untrusted X-Forwarded-For, bans and unbans (admin API and `cong bans`), connection caps,
//! and the header and keep-alive timeouts.

mod common;
use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const TOKEN: &str = "limits-test-token";

fn config(listen: SocketAddr, admin: SocketAddr, server: &str, extra: &str) -> String {
    let mut cfg = base_config(listen, admin, server).replace(
        &format!("[admin]\naddress = \"{admin}\"\n"),
        &format!(
            "[admin]\naddress = \"{admin}\"\n\n[[admin.token]]\nname = \"soc\"\nsha256 = \"{}\"\n",
            sha256_hex(TOKEN)
        ),
    );
    cfg.push_str(extra);
    cfg
}

fn xff(addr: SocketAddr, path: &str, client: &str) -> Response {
    request(
        addr,
        "GET",
        Some("t.gov.vn"),
        path,
        &[("X-Forwarded-For", client)],
        "",
    )
    .unwrap()
}

fn api(g: &Gateway, method: &str, path: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        g.admin,
        method,
        Some("admin"),
        path,
        &[("Authorization", auth.as_str())],
        "",
    )
    .unwrap()
}

/// True when the gateway closes the connection without an HTTP answer.
fn dropped(addr: SocketAddr, extra: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(
        format!("GET / HTTP/1.1\r\nHost: t.gov.vn\r\n{extra}Connection: close\r\n\r\n").as_bytes(),
    );
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => buf.is_empty(),
        Err(e) => {
            e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut
        }
    }
}

#[test]
fn limits_per_client_ipv4_and_ipv6_with_retry_after() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let listen6 = free_addr("::1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(
        listen,
        admin,
        "",
        &format!("[[listen]]\naddress = \"{listen6}\"\n\n[bans]\nenabled = false\n"),
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + r#"
[[limits.rate]]
name = "pages"
requests = 3
per = "1h"

[[limits.rate]]
name = "login"
paths = ["/user/login", "/quantri/**"]
requests = 1
per = "1h"
"#;
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    for _ in 0..3 {
        assert_eq!(get(listen, "t.gov.vn", "/").status, 200);
    }
    let r = get(listen, "t.gov.vn", "/");
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=1200).contains(&retry), "{retry}");
    assert!(r.body.contains("Quá nhiều yêu cầu") && r.body.contains("Too many requests"));
    assert!(r.body.contains("lang=\"vi\""), "{}", r.body);
    // ::1 is another client.
    assert_eq!(get(listen6, "t.gov.vn", "/user/login").status, 200);
    let r = get(listen6, "t.gov.vn", "/user/login");
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());
    wait_until("rate_limited event", Duration::from_secs(5), || {
        let log = g.log_text();
        log.contains("event=rate_limited tenant=t limit=pages key=127.0.0.1")
            && log.contains("limit=login key=::/64 client_ip=::1")
    });
    let m = request(admin, "GET", Some("admin"), "/metrics", &[], "").unwrap();
    assert!(m
        .body
        .contains("cong_ratelimit_hits_total{limit=\"pages\",tenant=\"t\"} 1"));
}

#[test]
fn ipv6_clients_are_counted_by_64_and_untrusted_xff_is_ignored() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let listen6 = free_addr("::1");
    let admin = free_addr("127.0.0.1");
    // 127.0.0.1 is a trusted proxy; ::1 is not.
    let cfg = config(
        listen,
        admin,
        "trusted_proxies = [\"127.0.0.1\"]",
        &format!(
            "[[listen]]\naddress = \"{listen6}\"\n\n[bans]\nenabled = false\n\n[limits]\nallow_cidrs = [\"198.51.100.0/24\"]\n"
        ),
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + "\n[[limits.rate]]\nname = \"pages\"\nrequests = 3\nper = \"1h\"\nburst = 3\n";
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    // Three addresses of one /64 share one budget.
    for c in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff:0:0:9",
    ] {
        assert_eq!(xff(listen, "/", c).status, 200, "{c}");
    }
    assert_eq!(xff(listen, "/", "2001:db8:1:2::abcd").status, 429);
    // Another /64 has its own.
    assert_eq!(xff(listen, "/", "2001:db8:1:3::1").status, 200);
    // IPv4 addresses are separate clients.
    for _ in 0..3 {
        assert_eq!(xff(listen, "/", "203.0.113.5").status, 200);
    }
    assert_eq!(xff(listen, "/", "203.0.113.5").status, 429);
    assert_eq!(xff(listen, "/", "203.0.113.6").status, 200);
    // The allow-list is never limited.
    for _ in 0..10 {
        assert_eq!(xff(listen, "/", "198.51.100.77").status, 200);
    }
    // From an untrusted peer (::1), X-Forwarded-For is ignored: every absurd value is the same
    // client, the socket address.
    let absurd = [
        "2001:db8:ffff::1",
        "garbage, , ;;;",
        &"10.0.0.1, ".repeat(500),
        "198.51.100.77",
    ];
    let statuses: Vec<u16> = absurd.iter().map(|x| xff(listen6, "/", x).status).collect();
    assert_eq!(statuses, vec![200, 200, 200, 429]);
    wait_until("key of the /64", Duration::from_secs(5), || {
        g.log_text().contains("key=2001:db8:1:2::/64")
    });
}

#[test]
fn tenant_total_limit_is_shared_by_all_clients() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(
        listen,
        admin,
        "trusted_proxies = [\"127.0.0.1\"]",
        "[bans]\nenabled = false\n",
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + "\n[[limits.rate]]\nname = \"total\"\nkey = \"tenant\"\nrequests = 4\nper = \"1h\"\n";
    let _g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let statuses: Vec<u16> = (0..6)
        .map(|i| xff(listen, "/", &format!("203.0.113.{i}")).status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 200, 200, 429, 429]);
}

fn cong_bans(admin: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new(CONG)
        .arg("bans")
        .args(args)
        .args(["--admin", &admin.to_string()])
        .env("CONG_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn repeat_offenders_are_banned_dropped_listed_and_lifted() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let listen6 = free_addr("::1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(
        listen,
        admin,
        "trusted_proxies = [\"::1\"]",
        &format!(
            "[[listen]]\naddress = \"{listen6}\"\n\n[bans]\nafter = 3\nwithin = \"1m\"\nban_for = \"1h\"\nmax_ban = \"1d\"\n"
        ),
    );
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + "\n[[limits.rate]]\nname = \"pages\"\nrequests = 1\nper = \"1h\"\n";
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);

    // A direct IPv4 client: one allowed, three 429s, then banned: dropped at accept.
    let statuses: Vec<u16> = (0..4)
        .map(|_| get(listen, "t.gov.vn", "/").status)
        .collect();
    assert_eq!(statuses, vec![200, 429, 429, 429]);
    assert!(dropped(listen, ""));
    let list = api(&g, "GET", "/api/v1/bans");
    assert_eq!(list.status, 200);
    let v: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    assert_eq!(v["bans"][0]["key"], "127.0.0.1");
    assert_eq!(v["bans"][0]["reason"], "rate_limit");
    assert!(v["bans"][0]["expires_in_s"].as_u64().unwrap() > 3500);
    let (ok, out) = cong_bans(admin, &["list"]);
    assert!(
        ok && out.contains("127.0.0.1") && out.contains("rate_limit"),
        "{out}"
    );
    let (ok, out) = cong_bans(admin, &["lift", "127.0.0.1"]);
    assert!(ok, "{out}");
    // Lifted: served again (the limit still answers 429, the connection is not dropped).
    assert_eq!(get(listen, "t.gov.vn", "/").status, 429);
    let (ok, out) = cong_bans(admin, &["lift", "127.0.0.1"]);
    assert!(!ok && out.contains("404"), "{out}");

    // An IPv6 client behind a trusted proxy is banned by its /64, dropped at its request.
    let v6 = |c: &str| -> Response { xff(listen6, "/", c) };
    let statuses: Vec<u16> = [
        "2001:db8:9:9::1",
        "2001:db8:9:9::2",
        "2001:db8:9:9::3",
        "2001:db8:9:9::4",
    ]
    .iter()
    .map(|c| v6(c).status)
    .collect();
    assert_eq!(statuses, vec![200, 429, 429, 429]);
    assert!(dropped(listen6, "X-Forwarded-For: 2001:db8:9:9::77\r\n"));
    assert_eq!(v6("2001:db8:9:a::1").status, 200);
    let list = api(&g, "GET", "/api/v1/bans");
    assert!(list.body.contains("2001:db8:9:9::/64"), "{}", list.body);
    assert_eq!(
        api(&g, "DELETE", "/api/v1/bans/2001:db8:9:9::%2F64").status,
        200
    );
    assert_eq!(v6("2001:db8:9:9::77").status, 429);
    assert_eq!(api(&g, "DELETE", "/api/v1/bans/not-an-address").status, 400);

    // A repeat offence bans for twice as long.
    for _ in 0..2 {
        assert_eq!(v6("2001:db8:9:9::5").status, 429);
    }
    assert!(dropped(listen6, "X-Forwarded-For: 2001:db8:9:9::5\r\n"));
    let list = api(&g, "GET", "/api/v1/bans");
    let v: serde_json::Value = serde_json::from_str(&list.body).unwrap();
    let ban = v["bans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == "2001:db8:9:9::/64")
        .unwrap()
        .clone();
    assert_eq!(ban["offences"], 2);
    assert!(ban["expires_in_s"].as_u64().unwrap() > 7000, "{ban}");
    wait_until("ban events", Duration::from_secs(5), || {
        let log = g.log_text();
        log.contains("event=client_banned tenant=t key=127.0.0.1")
            && log.contains("event=ban_lifted key=2001:db8:9:9::/64")
            && log.contains("action=ban_lift")
    });
    let m = request(admin, "GET", Some("admin"), "/metrics", &[], "").unwrap();
    assert!(m.body.contains("cong_bans_active 1"), "{}", m.body);
    assert!(m.body.contains("cong_ban_drops_total{stage=\"accept\"}"));
    assert!(m.body.contains("cong_ban_drops_total{stage=\"request\"}"));
}

#[test]
fn slow_headers_idle_keepalive_and_connection_caps() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(
        listen,
        admin,
        "",
        "[connections]\nheader_timeout = \"1s\"\nkeepalive_timeout = \"1s\"\nmax_per_client = 3\n",
    );
    let _g = Gateway::start(
        &cfg,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[b.addr], ""))],
        listen,
        admin,
    );
    // A header sent slowly is cut off after header_timeout.
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.gov.vn\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = s.read(&mut buf).unwrap_or(0);
    let took = start.elapsed();
    assert_eq!(n, 0, "no answer is written to a slow header");
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(6),
        "{took:?}"
    );

    // An idle kept-alive connection is closed after keepalive_timeout.
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: t.gov.vn\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let start = Instant::now();
    loop {
        let n = s.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(start.elapsed() < Duration::from_secs(6));

    // At most three connections from one address; a fourth is closed at once.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t.gov.vn\r\n\r\n")
            .unwrap();
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        held.push(s);
    }
    assert!(dropped(listen, ""));
    drop(held);
    wait_until("a slot is free again", Duration::from_secs(5), || {
        request(listen, "GET", Some("t.gov.vn"), "/", &[], "")
            .map(|r| r.status == 200)
            .unwrap_or(false)
    });
}

#[test]
fn limit_state_survives_reload_while_the_limit_is_unchanged() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(
        listen,
        admin,
        "watch_config = false",
        "[bans]\nenabled = false\n",
    );
    let limit = |n: u32| {
        tenant("t", &["t.gov.vn"], &[b.addr], "")
            + &format!("\n[[limits.rate]]\nname = \"pages\"\nrequests = {n}\nper = \"1h\"\n")
    };
    let g = Gateway::start(&cfg, &[("t.toml", &limit(2))], listen, admin);
    let statuses: Vec<u16> = (0..3)
        .map(|_| get(listen, "t.gov.vn", "/").status)
        .collect();
    assert_eq!(statuses, vec![200, 200, 429]);
    // Same limit, other changes: the client stays limited.
    let t = g.dir.path().join("tenants.d/t.toml");
    std::fs::write(&t, format!("name = \"Renamed\"\n{}", limit(2))).unwrap();
    assert_eq!(api(&g, "POST", "/api/v1/reload").status, 200);
    assert_eq!(get(listen, "t.gov.vn", "/").status, 429);
    // A changed limit starts afresh.
    std::fs::write(&t, limit(5)).unwrap();
    assert_eq!(api(&g, "POST", "/api/v1/reload").status, 200);
    assert_eq!(get(listen, "t.gov.vn", "/").status, 200);
}

#[test]
fn uploads_slower_than_the_minimum_body_rate_are_cut_off() {
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = config(listen, admin, "", "[connections]\nmin_body_rate = 1000\n");
    let _g = Gateway::start(
        &cfg,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[b.addr], ""))],
        listen,
        admin,
    );
    let mut s = TcpStream::connect(listen).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: t.gov.vn\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    let start = Instant::now();
    let mut answer = Vec::new();
    // Ten bytes every 300 ms: about 33 bytes a second, far below 1000.
    while start.elapsed() < Duration::from_secs(15) {
        if s.write_all(b"0123456789").is_err() {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        if !answer.is_empty() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 408"),
        "{text:?} after {:?}",
        start.elapsed()
    );
    assert!(start.elapsed() >= Duration::from_secs(5));
}
