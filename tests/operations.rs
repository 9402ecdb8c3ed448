//! Operating cong without interrupting citizens: hot reload and binary upgrade under load,
//! maintenance windows, legacy-name redirects, the admin API and its authentication, tenant
//! scaffolding.

mod common;
use common::*;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TOKEN: &str = "s3cret-token-for-tests-0123456789";

fn admin_section(admin: std::net::SocketAddr) -> String {
    format!(
        "[admin]\naddress = \"{admin}\"\nmax_auth_failures = 3\n\n[[admin.token]]\nname = \"ops\"\nsha256 = \"{}\"\n",
        sha256_hex(TOKEN)
    )
}

fn main_config(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    extra_server: &str,
    tail: &str,
) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupgrade_sock = \"/tmp/cong-test-{p}.sock\"\npid_file = \"/tmp/cong-test-{p}.pid\"\n{extra_server}\n\n[[listen]]\naddress = \"{listen}\"\n\n{}\n{tail}\n",
        admin_section(admin),
        p = listen.port()
    )
}

fn api(g: &Gateway, method: &str, path: &str, body: &str) -> Response {
    let auth = format!("Bearer {TOKEN}");
    request(
        g.admin,
        method,
        Some("admin"),
        path,
        &[
            ("Authorization", auth.as_str()),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .unwrap()
}

#[test]
fn twenty_reloads_under_load_fail_no_request() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let c = Backend::start("c", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = main_config(listen, admin, "watch_config = true", "");
    let stable = |backends: &[std::net::SocketAddr], timeout: &str| {
        tenant(
            "stable",
            &["stable.gov.vn"],
            backends,
            &format!("read_timeout = \"{timeout}\"\n"),
        )
    };
    let g = Gateway::start(
        &main,
        &[("stable.toml", &stable(&[a.addr, b.addr], "30s"))],
        listen,
        admin,
    );
    let tdir = g.dir.path().join("tenants.d");

    let stop = Arc::new(AtomicBool::new(false));
    let load = run_load(listen, "stable.gov.vn", 4, stop.clone());
    let backend_sets = [
        vec![a.addr],
        vec![b.addr, c.addr],
        vec![a.addr, b.addr, c.addr],
        vec![c.addr],
    ];
    let mut reloads = 0;
    for i in 0..20 {
        // Change the stable tenant's backends and settings, add one tenant, remove another.
        let set = &backend_sets[i % backend_sets.len()];
        std::fs::write(
            tdir.join("stable.toml"),
            stable(set, &format!("{}s", 20 + i)),
        )
        .unwrap();
        std::fs::write(
            tdir.join(format!("extra{i}.toml")),
            tenant(
                &format!("extra{i}"),
                &[&format!("extra{i}.gov.vn")],
                &[a.addr],
                "",
            ),
        )
        .unwrap();
        if i > 0 {
            std::fs::remove_file(tdir.join(format!("extra{}.toml", i - 1))).unwrap();
        }
        // Alternate the triggers: admin API and SIGHUP (the file watcher may also fire).
        if i % 2 == 0 {
            let r = api(&g, "POST", "/reload", "");
            assert_eq!(r.status, 200, "{}", r.body);
        } else {
            g.signal(libc::SIGHUP);
        }
        reloads += 1;
        // Wait until this configuration is the one serving.
        let host = format!("extra{i}.gov.vn");
        wait_until(
            "reloaded configuration serving",
            Duration::from_secs(10),
            || g.get(&host, "/").status == 200,
        );
        if i > 0 {
            let gone = format!("extra{}.gov.vn", i - 1);
            wait_until("removed tenant gone", Duration::from_secs(10), || {
                g.get(&gone, "/").status == 404
            });
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let stats = finish_load(stop, load);
    assert_eq!(reloads, 20);
    assert!(stats.ok > 200, "load ran: {} requests", stats.ok);
    assert!(
        stats.failures.is_empty(),
        "{} failures, first: {:?}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    // The last configuration is the one in force: only `c` serves `stable` now. (A load
    // request the client gave up on may still reach `c` late, so `c` counts at least 5.)
    let (hits_a, hits_b, hits_c) = (a.hits(), b.hits(), c.hits());
    for _ in 0..5 {
        assert_eq!(g.get("stable.gov.vn", "/").backend(), Some("c"));
    }
    assert!(c.hits() >= hits_c + 5, "c served {}", c.hits() - hits_c);
    assert_eq!(
        (a.hits(), b.hits()),
        (hits_a, hits_b),
        "a and b no longer serve stable"
    );
    assert!(g.log_text().matches("event=config_reload ").count() >= 20);
}

#[test]
fn an_invalid_config_is_rejected_and_the_old_one_keeps_serving() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = main_config(listen, admin, "watch_config = false", "");
    let g = Gateway::start(
        &main,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    let tdir = g.dir.path().join("tenants.d");
    std::fs::write(tdir.join("t.toml"), "id = \"t\"\nhosts = [\"t.gov.vn\"]\nmistake = 1\n\n[pools.main]\nbackends = [\"127.0.0.1:1\"]\n").unwrap();
    let r = api(&g, "POST", "/api/v1/reload", "");
    assert_eq!(r.status, 422);
    assert!(r.body.contains("t.toml:3:1: `mistake`"), "{}", r.body);
    assert_eq!(
        g.get("t.gov.vn", "/").backend(),
        Some("a"),
        "old configuration still serves"
    );
    g.signal(libc::SIGHUP);
    wait_until("failure event", Duration::from_secs(5), || {
        g.log_text().matches("event=config_reload_failed").count() >= 2
    });
    assert_eq!(g.get("t.gov.vn", "/").backend(), Some("a"));
}

#[test]
fn file_changes_are_picked_up_without_a_signal() {
    let a = Backend::start("a", "127.0.0.1");
    let b = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = main_config(listen, admin, "", "");
    let g = Gateway::start(
        &main,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    // Written the way editors and Ansible do (a new file renamed into place): seen at once.
    let tdir = g.dir.path().join("tenants.d");
    std::fs::write(
        tdir.join("t.toml.new"),
        tenant("t", &["t.gov.vn"], &[b.addr], ""),
    )
    .unwrap();
    std::fs::rename(tdir.join("t.toml.new"), tdir.join("t.toml")).unwrap();
    wait_until("watcher reload", Duration::from_secs(8), || {
        g.get("t.gov.vn", "/").backend() == Some("b")
    });
    // The event is written just after the new configuration is swapped in.
    wait_until("file_change event", Duration::from_secs(5), || {
        g.log_text().contains("trigger=file_change")
    });
    // Rewritten in place: seen by the periodic full scan (every 5 s).
    std::fs::write(
        tdir.join("t.toml"),
        tenant("t", &["t.gov.vn"], &[a.addr], ""),
    )
    .unwrap();
    wait_until(
        "watcher reload of an in-place edit",
        Duration::from_secs(15),
        || g.get("t.gov.vn", "/").backend() == Some("a"),
    );
}

#[test]
fn binary_upgrade_under_load_fails_no_request() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = main_config(listen, admin, "", "");
    let mut old = Gateway::start(
        &main,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let load = run_load(listen, "t.gov.vn", 4, stop.clone());
    std::thread::sleep(Duration::from_millis(300));

    // `cong upgrade` (what systemd's ExecReload runs) starts the new binary, which waits on
    // the upgrade socket; the old one hands the listeners over and finishes its requests.
    let log = old.dir.path().join("new.log");
    let out = std::process::Command::new(CONG)
        .args(["upgrade", "-c"])
        .arg(old.dir.path().join("cong.toml"))
        .stderr(std::fs::File::create(&log).unwrap())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(said.contains("upgrade done"), "{said}");
    let pid_file = format!("/tmp/cong-test-{}.pid", listen.port());
    let new_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_ne!(new_pid as u32, old.pid());
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the process this test started through `cong upgrade`.
            unsafe {
                libc::kill(self.0, libc::SIGKILL);
            }
        }
    }
    let _new = Kill(new_pid);
    let exited = old.wait_exit(Duration::from_secs(20));
    assert!(exited.is_some(), "old process exits after the hand-over");
    let start = Instant::now();
    let mut served_by_new = false;
    while start.elapsed() < Duration::from_secs(10) {
        if get(listen, "t.gov.vn", "/").status == 200 {
            served_by_new = true;
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let stats = finish_load(stop, load);
    assert!(served_by_new);
    assert!(stats.ok > 100, "load ran: {}", stats.ok);
    assert!(
        stats.failures.is_empty(),
        "{} failures: {:?}",
        stats.failures.len(),
        &stats.failures[..stats.failures.len().min(5)]
    );
    let new_log = std::fs::read_to_string(&log).unwrap();
    assert!(
        new_log.contains("access"),
        "the new process served requests:\n{new_log}"
    );
}

#[test]
fn maintenance_windows_from_config_and_api() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let state = tempfile::tempdir().unwrap();
    let main = main_config(
        listen,
        admin,
        &format!("state_dir = \"{}\"", state.path().display()),
        "",
    );
    // A window that is on now, in the configuration.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let fmt = |t: i64| {
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{t}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let t1 = format!(
        "{}\n[[maintenance]]\nstart = \"{}\"\nend = \"{}\"\nmessage_vi = \"Nâng cấp hệ thống dịch vụ công\"\nmessage_en = \"Upgrading the public service system\"\n",
        tenant("m1", &["m1.gov.vn"], &[a.addr], ""),
        fmt(now - 60),
        fmt(now + 3600)
    );
    let t2 = tenant("m2", &["m2.gov.vn"], &[a.addr], "");
    let g = Gateway::start(&main, &[("m1.toml", &t1), ("m2.toml", &t2)], listen, admin);
    let r = g.get("m1.gov.vn", "/");
    assert_eq!(r.status, 503);
    let retry: i64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((3500..=3600).contains(&retry), "{retry}");
    assert!(
        r.body.contains("Nâng cấp hệ thống dịch vụ công")
            && r.body.contains("Upgrading the public service system")
    );
    assert!(r.body.contains(&fmt(now + 3600).replace('T', " ")));
    assert_eq!(a.hits(), 0, "no request reached the backend");
    assert_eq!(g.get("m2.gov.vn", "/").status, 200);

    // Through the API: on m2 for ten minutes, listed, then removed.
    let body = format!(
        "{{\"start\":\"{}\",\"end\":\"{}\",\"message_vi\":\"Bảo trì\"}}",
        fmt(now - 1),
        fmt(now + 600)
    );
    let r = api(&g, "POST", "/api/v1/tenants/m2/maintenance", &body);
    assert_eq!(r.status, 201, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["state"], "active");
    assert_eq!(g.get("m2.gov.vn", "/").status, 503);
    let list: serde_json::Value =
        serde_json::from_str(&api(&g, "GET", "/api/v1/maintenance", "").body).unwrap();
    assert_eq!(list["windows"].as_array().unwrap().len(), 2);
    assert!(g.log_text().contains("event=admin_action actor=ops"));
    // Persisted: a restarted gateway still has it.
    drop(g);
    let g = Gateway::start(&main, &[("m1.toml", &t1), ("m2.toml", &t2)], listen, admin);
    assert_eq!(g.get("m2.gov.vn", "/").status, 503);
    let r = api(
        &g,
        "DELETE",
        &format!("/api/v1/tenants/m2/maintenance/{id}"),
        "",
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(g.get("m2.gov.vn", "/").status, 200);
    // Bad input is refused with a message.
    let r = api(
        &g,
        "POST",
        "/api/v1/tenants/m2/maintenance",
        "{\"start\":\"tomorrow\",\"end\":\"later\"}",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("RFC 3339"), "{}", r.body);
}

#[test]
fn legacy_names_redirect_with_path_and_query() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("redirects.csv");
    std::fs::write(&csv, "from,to,code\n# districts were abolished in 2025\n*.campha.quangninh.gov.vn,*.quangninh.gov.vn,308\nlamdong.gov.vn/sites/en,en.lamdong.gov.vn/,301\n").unwrap();
    let main = main_config(
        listen,
        admin,
        &format!("redirect_files = [\"{}\"]", csv.display()),
        "[[redirect]]\nfrom = \"halong.gov.vn\"\nto = \"quangninh.gov.vn\"\ncode = 301\n",
    );
    let t = tenant(
        "qn",
        &["quangninh.gov.vn", "*.quangninh.gov.vn", "lamdong.gov.vn"],
        &[a.addr],
        "",
    );
    let g = Gateway::start(&main, &[("qn.toml", &t)], listen, admin);
    let cases = [
        (
            "halong.gov.vn",
            "/tin-tuc/1?trang=2",
            301,
            "http://quangninh.gov.vn/tin-tuc/1?trang=2",
        ),
        (
            "camson.campha.quangninh.gov.vn",
            "/lien-he",
            308,
            "http://camson.quangninh.gov.vn/lien-he",
        ),
        (
            "lamdong.gov.vn",
            "/sites/en/about?x=1",
            301,
            "http://en.lamdong.gov.vn/about?x=1",
        ),
    ];
    for (host, path, code, loc) in cases {
        let r = g.get(host, path);
        assert_eq!(r.status, code, "{host}{path}");
        assert_eq!(r.header("location"), Some(loc), "{host}{path}");
    }
    assert_eq!(
        g.get("lamdong.gov.vn", "/sites/vi").status,
        200,
        "other paths of the host are served"
    );
    assert_eq!(a.hits(), 1);
}

#[test]
fn check_warns_about_chains_and_refuses_loops() {
    let main = "[[listen]]\naddress = \"127.0.0.1:18080\"\n\n[[redirect]]\nfrom = \"a.gov.vn\"\nto = \"b.gov.vn\"\n\n[[redirect]]\nfrom = \"b.gov.vn\"\nto = \"c.gov.vn\"\n";
    let (ok, out, _d) = check(main, &[]);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning:") && out.contains("redirect chain of 2 hops"),
        "{out}"
    );
    let main = "[[listen]]\naddress = \"127.0.0.1:18080\"\n\n[[redirect]]\nfrom = \"a.gov.vn\"\nto = \"b.gov.vn\"\n\n[[redirect]]\nfrom = \"b.gov.vn/x\"\nto = \"a.gov.vn/x\"\n\n[[redirect]]\nfrom = \"b.gov.vn\"\nto = \"a.gov.vn\"\n";
    let (ok, out, _d) = check(main, &[]);
    assert!(!ok);
    assert!(out.contains("redirect loop"), "{out}");
}

#[test]
fn admin_api_requires_a_token_and_limits_failures() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = main_config(listen, admin, "", "");
    let g = Gateway::start(
        &main,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    // Health endpoints stay open.
    assert_eq!(
        request(admin, "GET", Some("x"), "/healthz", &[], "")
            .unwrap()
            .status,
        200
    );
    let r = request(admin, "GET", Some("x"), "/api/v1/tenants", &[], "").unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").is_some());
    let r = api(&g, "GET", "/api/v1/tenants/t", "");
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["pools"][0]["backends"][0]["address"], a.addr.to_string());
    assert_eq!(v["pools"][0]["backends"][0]["healthy"], true);
    // The admin API is not reachable through the citizen listener.
    assert_eq!(g.get("t.gov.vn", "/api/v1/tenants").backend(), Some("a"));
    // Wrong tokens: audited, then limited (max_auth_failures = 3).
    for _ in 0..2 {
        let r = request(
            admin,
            "POST",
            Some("x"),
            "/reload",
            &[("Authorization", "Bearer guess")],
            "",
        )
        .unwrap();
        assert_eq!(r.status, 401);
    }
    let mut limited = false;
    for _ in 0..3 {
        let r = request(
            admin,
            "POST",
            Some("x"),
            "/reload",
            &[("Authorization", "Bearer guess")],
            "",
        )
        .unwrap();
        limited |= r.status == 429;
    }
    assert!(limited, "repeated failures get 429");
    // While limited, even the right token waits.
    assert_eq!(api(&g, "GET", "/api/v1/tenants", "").status, 429);
    wait_until("audit events", Duration::from_secs(2), || {
        g.log_text().matches("event=admin_auth_failed").count() >= 4
    });
    assert!(g.log_text().contains("reason=\"wrong token\""));
    // Traffic was never interrupted.
    assert_eq!(g.get("t.gov.vn", "/").status, 200);
}

#[test]
fn admin_api_without_tokens_is_disabled() {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let a = Backend::start("a", "127.0.0.1");
    let g = Gateway::start(
        &base_config(listen, admin, ""),
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    let r = request(g.admin, "POST", Some("x"), "/reload", &[], "").unwrap();
    assert_eq!(r.status, 403);
    assert!(r.body.contains("admin.token"));
}

#[test]
fn tenant_new_writes_a_checked_file() {
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        "[[listen]]\naddress = \"127.0.0.1:18080\"\n",
        &[(
            "a.toml",
            &tenant("a", &["a.gov.vn"], &["127.0.0.1:8081".parse().unwrap()], ""),
        )],
    );
    let cfg = dir.path().join("cong.toml");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(CONG)
            .args(["tenant", "new", "-c"])
            .arg(&cfg)
            .args(args)
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
    };
    let (ok, out) = run(&[
        "--id",
        "camson",
        "--name",
        "Xã Cẩm Sơn",
        "--host",
        "camson.quangninh.gov.vn",
        "--backend",
        "10.0.0.5:80",
        "--backend",
        "[2001:db8::5]:80",
        "--health-path",
        "/health",
    ]);
    assert!(ok, "{out}");
    let written = std::fs::read_to_string(dir.path().join("tenants.d/camson.toml")).unwrap();
    assert!(written.contains("Xã Cẩm Sơn"));
    let out = std::process::Command::new(CONG)
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A host another tenant owns: refused, nothing written.
    let (ok, out) = run(&[
        "--id",
        "dup",
        "--host",
        "a.gov.vn",
        "--backend",
        "10.0.0.6:80",
    ]);
    assert!(!ok);
    assert!(out.contains("already belongs to tenant `a`"), "{out}");
    assert!(!dir.path().join("tenants.d/dup.toml").exists());
    // A bad backend: refused with the reason.
    let (ok, out) = run(&[
        "--id",
        "bad",
        "--host",
        "bad.gov.vn",
        "--backend",
        "10.0.0.6",
    ]);
    assert!(!ok);
    assert!(out.contains("needs a port"), "{out}");
    // Existing files are never overwritten.
    let (ok, out) = run(&[
        "--id",
        "camson",
        "--host",
        "other.gov.vn",
        "--backend",
        "10.0.0.5:80",
    ]);
    assert!(!ok);
    assert!(out.contains("exists already"), "{out}");
}

#[test]
fn admin_listener_with_mutual_tls() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let pki = tempfile::tempdir().unwrap();
    let (server_ca, chain, key) = test_pki(&["admin.cong.test"]);
    let (client_ca, client_chain, client_key) = test_pki(&["ops-laptop"]);
    let (_, stranger_chain, stranger_key) = test_pki(&["stranger"]);
    let w = |n: &str, t: &str| {
        let p = pki.path().join(n);
        std::fs::write(&p, t).unwrap();
        p.display().to_string()
    };
    let (sca, crt, k, cca) = (
        w("server-ca.pem", &server_ca),
        w("admin.crt", &chain),
        w("admin.key", &key),
        w("client-ca.pem", &client_ca),
    );
    let (ccrt, ckey) = (w("client.crt", &client_chain), w("client.key", &client_key));
    let (scrt, skey) = (
        w("stranger.crt", &stranger_chain),
        w("stranger.key", &stranger_key),
    );
    let main = main_config(listen, admin, "", "")
        .replace("max_auth_failures = 3\n", &format!("max_auth_failures = 3\ntls_cert = \"{crt}\"\ntls_key = \"{k}\"\nclient_ca = \"{cca}\"\n"));
    let g = Gateway::spawn(
        &main,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    let curl = |cert: Option<(&str, &str)>, path: &str| {
        let mut c = std::process::Command::new("curl");
        c.args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
            &sca,
        ])
        .args([
            "--resolve",
            &format!("admin.cong.test:{}:127.0.0.1", admin.port()),
        ])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        if let Some((crt, key)) = cert {
            c.args(["--cert", crt, "--key", key]);
        }
        c.arg(format!("https://admin.cong.test:{}{path}", admin.port()));
        String::from_utf8_lossy(&c.output().unwrap().stdout).to_string()
    };
    wait_until("admin over mutual TLS", Duration::from_secs(20), || {
        curl(Some((&ccrt, &ckey)), "/readyz") == "200"
    });
    assert_eq!(curl(Some((&ccrt, &ckey)), "/api/v1/tenants"), "200");
    // No client certificate, or one from another CA: no HTTP at all.
    assert_eq!(curl(None, "/healthz"), "000");
    assert_eq!(curl(Some((&scrt, &skey)), "/healthz"), "000");
    assert_eq!(g.get("t.gov.vn", "/").status, 200);
    // Half a TLS setup is a configuration error naming the key.
    let (ok, out, _d) = check(
        &main_config(listen, admin, "", "").replace(
            "max_auth_failures = 3\n",
            &format!("max_auth_failures = 3\nclient_ca = \"{cca}\"\n"),
        ),
        &[],
    );
    assert!(
        !ok && out.contains("`admin.client_ca`: needs admin.tls_cert"),
        "{out}"
    );
}
