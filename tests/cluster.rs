//! Cluster mode with real peers: a real `redis-server` on loopback (its own port and
//! directory, no persistence, so a restart is a Redis that lost its data), pebble as the ACME
//! CA, and two or three real `cong` nodes on their own ports sharing that Redis.

mod common;
mod tls_common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tls_common::*;

const TOKEN: &str = "tls-test-admin-token";
const KEY: &str = "q2Vw5kUQ7hd0yTzG9mM1xY8bR3nC6sJ4aL0pE2iF5oU=";

/// A real redis-server on 127.0.0.1, killed on drop.
struct Redis {
    proc: Option<Proc>,
    port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments (TLS, users); with TLS the test cannot PING it itself.
    extra: Vec<String>,
    tls: bool,
}

impl Redis {
    fn start() -> Redis {
        Self::start_with(Vec::new(), false)
    }

    fn start_with(extra: Vec<String>, tls: bool) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port("127.0.0.1");
        let mut r = Redis {
            proc: None,
            port,
            dir,
            extra,
            tls,
        };
        r.restart();
        r
    }

    fn addr(&self) -> SocketAddr {
        format!("127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Starts (again) on the same port, with no data.
    fn restart(&mut self) {
        let d = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let mut cmd = Command::new(if Path::new("/usr/bin/redis-server").exists() {
            "/usr/bin/redis-server"
        } else {
            "redis-server"
        });
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &port]);
        } else {
            cmd.args(["--port", &port]);
        }
        cmd.args(["--bind", "127.0.0.1", "--dir", &d, "--save", ""])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .args(&self.extra);
        let mut proc = Proc::spawn(
            "redis-server",
            &mut cmd,
            self.dir
                .path()
                .join(format!("redis-{}.log", fastrand::u32(..))),
        );
        proc.wait_tcp(self.addr());
        self.proc = Some(proc);
        if !self.tls {
            wait_until("redis answers PING", Duration::from_secs(10), || {
                self.cmd(&["PING"]).contains("PONG")
            });
        }
    }

    /// Stops it at once, as if the machine went away.
    fn kill(&mut self) {
        self.proc = None;
    }

    /// One command; the raw RESP answer.
    fn cmd(&self, args: &[&str]) -> String {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(2)) else {
            return String::new();
        };
        s.set_read_timeout(Some(Duration::from_millis(500))).ok();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if s.write_all(req.as_bytes()).is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[test]
fn cluster_configuration_errors_name_file_line_and_key() {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let base = base_config(listen, admin, "");
    let t = tenant("t", &["t.gov.vn"], &["127.0.0.1:9".parse().unwrap()], "");
    let with_key = |rest: &str| {
        format!("[cluster]\nredis = [\"127.0.0.1:6379\"]\nencryption_key = \"{KEY}\"\n{rest}")
    };
    let cases = [
        (
            "[cluster]\nredis = [\"127.0.0.1:6379\"]\n".to_string(),
            "`cluster.encryption_key`",
        ),
        (
            format!("[cluster]\nredis = [\"redis-without-port\"]\nencryption_key = \"{KEY}\"\n"),
            "`cluster.redis[0]`",
        ),
        (
            "[cluster]\nredis = [\"127.0.0.1:6379\"]\nencryption_key = \"c2hvcnQ=\"\n".to_string(),
            "32 bytes",
        ),
        (with_key("timeout = \"10s\"\n"), "`cluster.timeout`"),
        (with_key("node = \"a b\"\n"), "`cluster.node`"),
        (
            with_key("tls_ca = \"ca.pem\"\n"),
            "`cluster.tls_ca`: needs `tls = true`",
        ),
        (with_key("redis_url = \"x\"\n"), "unknown field `redis_url`"),
        (
            "[[limits.rate]]\nname = \"a\"\nrequests = 1\nper = \"1s\"\nscope = \"global\"\n"
                .to_string(),
            "limits.rate",
        ),
    ];
    for (extra, want) in &cases {
        let main = format!("{base}{extra}");
        let (ok, text, _dir) = check(&main, &[("t.toml", &t)]);
        assert!(!ok, "{extra}: accepted");
        assert!(text.contains(want), "{extra}: {text}");
        // file:line:column of the offending place, inside the section.
        let line = text
            .split("cong.toml:")
            .nth(1)
            .and_then(|r| r.split(':').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        assert!(line > base.lines().count(), "{extra}: {text}");
    }
    // A valid section passes `cong check` without reaching any Redis.
    let main = format!(
        "{base}[cluster]\nredis = [\"127.0.0.1:1\", \"[::1]:1\"]\nencryption_key = \"{KEY}\"\n"
    );
    let (ok, text, _dir) = check(&main, &[("t.toml", &t)]);
    assert!(ok, "{text}");
}

#[test]
fn tls_and_an_acl_user_limited_to_the_prefix_without_dangerous_commands() {
    let (ca, chain, key) = test_pki(&["localhost", "127.0.0.1"]);
    let files = tempfile::tempdir().unwrap();
    let p = |n: &str| files.path().join(n).display().to_string();
    std::fs::write(p("ca.pem"), &ca).unwrap();
    std::fs::write(p("cert.pem"), &chain).unwrap();
    std::fs::write(p("key.pem"), &key).unwrap();
    std::fs::write(p("password"), "s3cret-cluster-pass\n").unwrap();
    let args: Vec<String> = [
        "--tls-cert-file",
        &p("cert.pem"),
        "--tls-key-file",
        &p("key.pem"),
        "--tls-ca-cert-file",
        &p("ca.pem"),
        "--tls-auth-clients",
        "no",
        "--user",
        "cong",
        "on",
        ">s3cret-cluster-pass",
        "~t:*",
        "&t:*",
        "+@all",
        "-@dangerous",
        "--user",
        "default",
        "off",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let redis = Redis::start_with(args, true);
    let b = Backend::start("b", "127.0.0.1");
    let extra = format!(
        "tls = true\ntls_ca = \"{}\"\nusername = \"cong\"\npassword_file = \"{}\"\n",
        p("ca.pem"),
        p("password")
    );
    let ga = plain_node_with(&redis, "a", b.addr, &extra);
    let gb = plain_node_with(&redis, "b", b.addr, &extra);
    for g in [&ga, &gb] {
        wait_until("connected over TLS", Duration::from_secs(10), || {
            metric(g.admin, "cong_cluster_up") == 1.0
        });
    }
    let c = "198.51.100.20";
    let seq: Vec<u16> = [&ga, &gb, &ga, &gb, &ga]
        .iter()
        .map(|g| xff(g, "/limited/t", c).status)
        .collect();
    assert_eq!(seq, vec![200, 200, 200, 200, 429]);
    assert_eq!(
        metric(ga.admin, "cong_cluster_redis_errors_total"),
        -1.0,
        "no Redis request failed"
    );
}

/// `timeout`: how long a Redis call may take before the node decides alone.
fn cluster_section(redis: &Redis, node: &str, timeout: &str) -> String {
    format!(
        "\n[cluster]\nredis = [\"{}\"]\nnode = \"{node}\"\nkey_prefix = \"t:\"\nencryption_key = \"{KEY}\"\ntimeout = \"{timeout}\"\npoll_interval = \"1s\"\n",
        redis.addr()
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

fn metric(admin: SocketAddr, name: &str) -> f64 {
    let m = request(admin, "GET", Some("admin"), "/metrics", &[], "").unwrap();
    m.body
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

// ---------------------------------------------------------------------------------------------
// Certificates and ACME

struct AcmeNode {
    plain: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    dir: tempfile::TempDir,
}

fn acme_node(redis: &Redis, node: &str, pebble: &Pebble, tenants: &[(&str, &str)]) -> AcmeNode {
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let mut main = main_config(plain, tls, admin, "");
    main.push_str(&format!(
        "\n[acme]\npreflight = false\nretry_min = \"2s\"\n\n[[acme_ca]]\nname = \"pebble\"\ndirectory = \"{}\"\ntrust_root = \"{}\"\n",
        pebble.directory(),
        pebble.tls_ca_path.display()
    ));
    main.push_str(&cluster_section(redis, node, "50ms"));
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, tenants);
    AcmeNode {
        plain,
        tls,
        admin,
        dir,
    }
}

fn spawn(n: AcmeNode) -> Gateway {
    let log = n.dir.path().join("cong.log");
    let child = Command::new(CONG)
        .args(["run", "-c"])
        .arg(n.dir.path().join("cong.toml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start cong");
    Gateway {
        dir: n.dir,
        listen: n.plain,
        admin: n.admin,
        child: Some(child),
        log,
    }
}

/// A self-signed certificate for `name` past two-thirds of its 90 days: due for renewal.
fn due_certificate(name: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |t: i64| {
        x509_parser::time::ASN1Time::from_timestamp(t)
            .unwrap()
            .to_datetime()
    };
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
    params.not_before = at(now - 70 * 86400);
    params.not_after = at(now + 20 * 86400);
    let cert = params.self_signed(&key).unwrap();
    format!("{}{}", key.serialize_pem(), cert.pem())
}

#[test]
fn one_order_per_certificate_across_three_nodes_and_every_node_serves_it() {
    let redis = Redis::start();
    let b = Backend::start("b", "127.0.0.1");
    let work = tempfile::tempdir().unwrap();
    let dns = ChallDns::start(work.path());
    // Node A's plain port is where pebble validates HTTP-01: the other nodes' orders are
    // answered there from the shared tokens.
    let plain_a = free_addr("127.0.0.1");
    let pebble = Pebble::start(plain_a.port(), dns.dns);
    let tx = format!(
        "acme = true\n{}",
        tenant("x", &["x.tinh.test"], &[b.addr], "")
    );
    let told = format!(
        "acme = true\n{}",
        tenant("old", &["old.tinh.test"], &[b.addr], "")
    );
    let tenants = [("x.toml", tx.as_str()), ("old.toml", told.as_str())];
    let mut a = acme_node(&redis, "a", &pebble, &tenants);
    a.plain = plain_a;
    let main_a = std::fs::read_to_string(a.dir.path().join("cong.toml")).unwrap();
    let first_listen = main_a
        .lines()
        .find(|l| l.starts_with("address = "))
        .unwrap()
        .to_string();
    std::fs::write(
        a.dir.path().join("cong.toml"),
        main_a.replacen(&first_listen, &format!("address = \"{plain_a}\""), 1),
    )
    .unwrap();
    // Node A joins with a managed certificate that is due for renewal: it is shared, and
    // renewed once for the three nodes.
    std::fs::create_dir_all(a.dir.path().join("certs/acme")).unwrap();
    std::fs::write(
        a.dir.path().join("certs/acme/old.pem"),
        due_certificate("old.tinh.test"),
    )
    .unwrap();
    let bn = acme_node(&redis, "b", &pebble, &tenants);
    let cn = acme_node(&redis, "c", &pebble, &tenants);
    let (tls_a, tls_b, tls_c) = (a.tls, bn.tls, cn.tls);
    // All three at once: each finds both certificates due.
    let ga = spawn(a);
    let gb = spawn(bn);
    let gc = spawn(cn);
    for g in [&ga, &gb, &gc] {
        g.wait_ready();
    }
    let nodes = [&ga, &gb, &gc];
    let all_logs = || -> String { nodes.iter().map(|g| g.log_text()).collect() };
    wait_until(
        "both certificates issued somewhere",
        Duration::from_secs(120),
        || {
            let l = all_logs();
            count(&l, "event=cert_issued tenant=x") + count(&l, "event=cert_renewed tenant=x") >= 1
                && count(&l, "event=cert_issued tenant=old")
                    + count(&l, "event=cert_renewed tenant=old")
                    >= 1
        },
    );
    let root = pebble.issuing_root();
    // Every node serves both, verified against pebble's root.
    for (tls, node) in [(tls_a, "a"), (tls_b, "b"), (tls_c, "c")] {
        for host in ["x.tinh.test", "old.tinh.test"] {
            wait_until(
                &format!("{host} served by node {node}"),
                Duration::from_secs(10),
                || {
                    tls_request(&client_with_roots(&root), tls, host, Some(host), "/")
                        .is_ok_and(|r| r.status == 200)
                },
            );
        }
    }
    // Give the other nodes time to come back for the lock and find the work done.
    wait_until(
        "the waiting nodes found the certificates renewed",
        Duration::from_secs(30),
        || count(&all_logs(), "already renewed by another node") >= 2,
    );
    let l = all_logs();
    assert_eq!(count(&l, "acme x: new order"), 1, "{l}");
    assert_eq!(count(&l, "acme old: new order"), 1, "{l}");
    assert_eq!(count(&l, "event=acme_failed"), 0, "{l}");
    assert_eq!(count(&l, "event=acme_unlocked_order"), 0, "{l}");
    // The nodes that did not order got the certificates from the shared store.
    assert!(count(&l, "event=cert_synced tenant=x") >= 2, "{l}");
    // The private key is not in Redis in clear.
    let stored = redis.cmd(&["HGET", "t:cert:x", "key"]);
    assert!(
        stored.contains("v1:") && !stored.contains("PRIVATE KEY"),
        "{stored}"
    );
    assert!(!redis.cmd(&["HGET", "t:cert:x", "chain"]).is_empty());

    // A tenant only node C serves: C orders, pebble validates on node A, which answers from
    // the token C shared.
    let tz = format!(
        "acme = true\n{}",
        tenant("z", &["z.tinh.test"], &[b.addr], "")
    );
    std::fs::write(gc.dir.path().join("tenants.d/z.toml"), tz).unwrap();
    let r = request(
        gc.admin,
        "POST",
        Some("admin"),
        "/reload",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("z issued by node c", Duration::from_secs(60), || {
        gc.log_text().contains("event=cert_issued tenant=z")
    });
    let la = ga.log_text();
    assert!(
        la.lines()
            .any(|l| l.contains("uri=/.well-known/acme-challenge/") && l.contains("status=200")),
        "node a answered the CA: {la}"
    );
    assert!(!la.contains("acme z:"), "node a did not order z");
    // And node A serves z although it has no such tenant: every node serves every certificate.
    wait_until("z served by node a", Duration::from_secs(10), || {
        tls_request(&client_with_roots(&root), tls_a, "z.tinh.test", None, "/")
            .is_ok_and(|r| r.names.contains(&"z.tinh.test".to_string()))
    });

    // Operators asking three nodes to renew at once: one order, the others told who holds it.
    let before = count(&all_logs(), "acme x: new order");
    let renew = |g: &Gateway| {
        let admin = g.admin;
        std::thread::spawn(move || {
            request(
                admin,
                "POST",
                Some("admin"),
                "/acme/renew/x",
                &[("Authorization", &format!("Bearer {TOKEN}"))],
                "",
            )
            .map(|r| (r.status, r.body))
            .unwrap_or((0, String::new()))
        })
    };
    let hs = [renew(&ga), renew(&gb), renew(&gc)];
    let answers: Vec<(u16, String)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(ok, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .filter(|(s, _)| *s != 200)
            .all(|(_, b)| b.contains("is ordering this certificate")),
        "{answers:?}"
    );
    assert_eq!(count(&all_logs(), "acme x: new order"), before + 1);
}

// ---------------------------------------------------------------------------------------------
// Limits, bans, purges, and Redis going away

fn plain_node(redis: &Redis, node: &str, backend: SocketAddr) -> Gateway {
    plain_node_with(redis, node, backend, "")
}

/// `plain_node` whose Redis calls may take up to 2 s: for a test that counts on every decision
/// reaching Redis (with the usual 50 ms, a busy machine sometimes falls back to local counts).
fn patient_node(redis: &Redis, node: &str, backend: SocketAddr) -> Gateway {
    node_with_timeout(redis, node, backend, "", "2s")
}

fn plain_node_with(redis: &Redis, node: &str, backend: SocketAddr, cluster: &str) -> Gateway {
    node_with_timeout(redis, node, backend, cluster, "50ms")
}

fn node_with_timeout(
    redis: &Redis,
    node: &str,
    backend: SocketAddr,
    cluster: &str,
    timeout: &str,
) -> Gateway {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut main = base_config(listen, admin, "trusted_proxies = [\"127.0.0.1\"]");
    main.push_str(&format!(
        "[[admin.token]]\nname = \"tests\"\nsha256 = \"{}\"\n\n[bans]\nafter = 3\nwithin = \"1m\"\nban_for = \"1h\"\n\n[cache]\n",
        sha256_hex(TOKEN)
    ));
    main.push_str(&cluster_section(redis, node, timeout));
    main.push_str(cluster);
    let t = tenant("t", &["t.gov.vn"], &[backend], "")
        + "\n[cache]\nenabled = true\n\n[[limits.rate]]\nname = \"shared\"\nrequests = 4\nper = \"1h\"\nscope = \"cluster\"\npaths = [\"/limited/**\"]\n\n[[limits.rate]]\nname = \"own\"\nrequests = 2\nper = \"1h\"\npaths = [\"/local/**\"]\n";
    Gateway::start(&main, &[("t.toml", &t)], listen, admin)
}

fn xff(g: &Gateway, path: &str, client: &str) -> Response {
    request(
        g.listen,
        "GET",
        Some("t.gov.vn"),
        path,
        &[("X-Forwarded-For", client)],
        "",
    )
    .unwrap_or(Response {
        status: 0,
        headers: Default::default(),
        body: String::new(),
    })
}

fn api(g: &Gateway, method: &str, path: &str, body: &str) -> Response {
    request(
        g.admin,
        method,
        Some("admin"),
        path,
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .unwrap()
}

/// True when the node closes the connection of `client` without an answer (banned).
fn dropped(g: &Gateway, client: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&g.listen, Duration::from_secs(2)) else {
        return true;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(
        format!(
            "GET / HTTP/1.1\r\nHost: t.gov.vn\r\nX-Forwarded-For: {client}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.is_empty()
}

fn cache_state(g: &Gateway, path: &str) -> String {
    xff(g, path, "192.0.2.50")
        .header("x-cache")
        .unwrap_or("-")
        .to_string()
}

/// How long until `f` holds (panics after `limit`).
fn within(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("{what}: not within {limit:?}");
}

#[test]
fn limits_bans_and_purges_are_shared_between_nodes() {
    let redis = Redis::start();
    let b = Backend::start("b", "127.0.0.1");
    let ga = patient_node(&redis, "a", b.addr);
    let gb = patient_node(&redis, "b", b.addr);
    for g in [&ga, &gb] {
        wait_until("connected to redis", Duration::from_secs(10), || {
            metric(g.admin, "cong_cluster_up") == 1.0
        });
    }

    // A client limited through node A is limited through node B: 4 per hour in total.
    let c = "198.51.100.1";
    let seq: Vec<u16> = [&ga, &ga, &gb, &gb, &gb, &ga]
        .iter()
        .map(|g| xff(g, "/limited/a", c).status)
        .collect();
    assert_eq!(seq, vec![200, 200, 200, 200, 429, 429]);
    // A local limit stays per node: 2 per node.
    let seq: Vec<u16> = [&ga, &ga, &ga, &gb, &gb, &gb]
        .iter()
        .map(|g| xff(g, "/local/a", c).status)
        .collect();
    assert_eq!(seq, vec![200, 200, 429, 200, 200, 429]);
    assert!(
        metric(
            ga.admin,
            "cong_cluster_ratelimit_decisions_total{via=\"cluster\"}"
        ) >= 3.0
    );

    // A ban decided on node A is enforced on node B within a second.
    let bad = "198.51.100.2";
    for _ in 0..4 {
        assert_eq!(xff(&ga, "/limited/b", bad).status, 200);
    }
    for _ in 0..3 {
        assert_eq!(xff(&ga, "/limited/b", bad).status, 429);
    }
    assert!(dropped(&ga, bad), "banned on node a");
    let took = within("ban on node b", Duration::from_secs(1), || {
        dropped(&gb, bad)
    });
    eprintln!("ban reached node b after {took:?}");
    let list = api(&gb, "GET", "/api/v1/bans", "");
    assert!(list.body.contains(bad), "{}", list.body);
    // Lifted on node B: node A serves the client again within a second.
    assert_eq!(
        api(&gb, "DELETE", &format!("/api/v1/bans/{bad}"), "").status,
        200
    );
    within("lift on node a", Duration::from_secs(1), || {
        !dropped(&ga, bad)
    });

    // A purge through node A's admin API clears node B's cache within a second.
    for g in [&ga, &gb] {
        let first = cache_state(g, "/site.css");
        assert!(first.contains("MISS") || first.contains("HIT"), "{first}");
        assert!(cache_state(g, "/site.css").contains("HIT"));
    }
    let r = api(
        &ga,
        "POST",
        "/api/v1/cache/purge",
        r#"{"scope":"url","tenant":"t","url":"http://t.gov.vn/site.css"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(cache_state(&ga, "/site.css").contains("MISS"));
    let took = within("purge on node b", Duration::from_secs(1), || {
        cache_state(&gb, "/site.css").contains("MISS")
    });
    eprintln!("purge reached node b after {took:?}");
    // The event goes through the log pipeline after the purge itself: waited for too.
    within("purge event on node b", Duration::from_secs(2), || {
        gb.log_text()
            .contains("event=cache_purge_received tenant=t")
    });
}

#[test]
fn redis_down_every_node_keeps_serving_and_catches_up_when_it_returns() {
    let mut redis = Redis::start();
    let b = Backend::start("b", "127.0.0.1");
    let ga = plain_node(&redis, "a", b.addr);
    let gb = plain_node(&redis, "b", b.addr);
    for g in [&ga, &gb] {
        wait_until("connected to redis", Duration::from_secs(10), || {
            metric(g.admin, "cong_cluster_up") == 1.0
        });
    }
    for g in [&ga, &gb] {
        xff(g, "/site.css", "192.0.2.50");
        assert!(cache_state(g, "/site.css").contains("HIT"));
    }

    redis.kill();
    for g in [&ga, &gb] {
        wait_until("degradation reported", Duration::from_secs(10), || {
            g.log_text().contains("event=cluster_degraded")
                && metric(g.admin, "cong_cluster_up") == 0.0
        });
    }
    // Both nodes serve; a cluster limit is counted locally (4 per node now); no request waits
    // on the missing Redis.
    let c = "198.51.100.7";
    for g in [&ga, &gb] {
        for i in 0..5 {
            let t = Instant::now();
            let r = xff(g, "/limited/x", c);
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "{:?}",
                t.elapsed()
            );
            assert_eq!(r.status, if i < 4 { 200 } else { 429 }, "request {i}");
        }
        assert_eq!(xff(g, "/", "192.0.2.51").status, 200);
    }
    assert!(
        metric(
            ga.admin,
            "cong_cluster_ratelimit_decisions_total{via=\"local_fallback\"}"
        ) >= 5.0
    );
    // A purge and a ban on node A while Redis is away are queued...
    let r = api(
        &ga,
        "POST",
        "/api/v1/cache/purge",
        r#"{"scope":"tenant","tenant":"t"}"#,
    );
    assert_eq!(r.status, 200);
    assert!(metric(ga.admin, "cong_cluster_queued_messages") >= 1.0);
    let bad = "198.51.100.8";
    for _ in 0..7 {
        xff(&ga, "/limited/y", bad);
    }
    assert!(dropped(&ga, bad));
    assert!(!dropped(&gb, bad), "no way to tell node b yet");
    assert!(cache_state(&gb, "/site.css").contains("HIT"));

    // ...and delivered when Redis returns (here with no data at all).
    redis.restart();
    for g in [&ga, &gb] {
        wait_until("recovery reported", Duration::from_secs(15), || {
            g.log_text().contains("event=cluster_recovered")
                && metric(g.admin, "cong_cluster_up") == 1.0
        });
    }
    wait_until("queued ban delivered", Duration::from_secs(5), || {
        dropped(&gb, bad)
    });
    wait_until("queued purge delivered", Duration::from_secs(5), || {
        gb.log_text()
            .contains("event=cache_purge_received tenant=t scope=tenant")
    });
    assert_eq!(metric(ga.admin, "cong_cluster_queued_messages"), 0.0);
    // Shared limits are shared again.
    let c = "198.51.100.9";
    let seq: Vec<u16> = [&ga, &gb, &ga, &gb, &ga]
        .iter()
        .map(|g| xff(g, "/limited/z", c).status)
        .collect();
    assert_eq!(seq, vec![200, 200, 200, 200, 429]);
}
