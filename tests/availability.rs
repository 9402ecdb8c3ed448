//! Metrics checked by promtool, alert rules unit-tested by promtool, availability history that
//! survives a restart, the status page in headless Chromium with axe-core, the monthly report.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Adds top-level keys to a tenant file made by `tenant()`.
fn with_top(t: String, extra: &str) -> String {
    t.replacen("\n\n[pools", &format!("\n{extra}\n\n[pools"), 1)
}

fn main_with(
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    extra_server: &str,
    tail: &str,
) -> String {
    format!("{}{tail}\n", base_config(listen, admin, extra_server))
}

#[test]
fn live_metrics_pass_promtool() {
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let t = tenant(
        "quangninh",
        &["quangninh.gov.vn"],
        &[a.addr, free_addr("127.0.0.1")],
        "max_fails = 1\n[pools.main.health]\npath = \"/health\"\ninterval = \"200ms\"\n",
    );
    let g = Gateway::start(
        &main_with(listen, admin, "", ""),
        &[("q.toml", &t)],
        listen,
        admin,
    );
    for _ in 0..5 {
        assert_eq!(g.get("quangninh.gov.vn", "/").status, 200);
    }
    assert_eq!(g.get("unknown.gov.vn", "/").status, 404);
    let r = request(
        listen,
        "POST",
        Some("quangninh.gov.vn"),
        "/form",
        &[],
        "ho_ten=Nguyễn Văn A",
    )
    .unwrap();
    assert_eq!(r.status, 200);
    let scrape = || {
        request(admin, "GET", Some("admin"), "/metrics", &[], "")
            .unwrap()
            .body
    };
    // Requests are counted when their logging phase ends, just after the response.
    wait_until("POST counted", Duration::from_secs(5), || {
        scrape().contains("method=\"POST\",tenant=\"quangninh\"} 1")
    });
    let body = scrape();
    for needle in [
        "cong_http_requests_total{code=\"2xx\",method=\"GET\",tenant=\"quangninh\"} 5",
        "cong_http_requests_total{code=\"2xx\",method=\"POST\",tenant=\"quangninh\"} 1",
        "cong_http_requests_total{code=\"4xx\",method=\"GET\",tenant=\"_unknown\"} 1",
        "cong_http_request_duration_seconds_bucket{tenant=\"quangninh\",le=\"+Inf\"} 6",
        "cong_http_requests_by_ip_family_total{family=\"ipv4\",tenant=\"quangninh\"} 6",
        "cong_pool_available_backends{pool=\"main\",tenant=\"quangninh\"} 1",
        &format!(
            "cong_backend_up{{backend=\"{}\",pool=\"main\",tenant=\"quangninh\"}} 1",
            a.addr
        ),
        "cong_health_check_duration_seconds_count{pool=\"main\",tenant=\"quangninh\"}",
        "cong_build_info{version=",
        "cong_tenants 1",
    ] {
        assert!(body.contains(needle), "missing {needle}\n{body}");
    }
    // No client address or path is a label.
    assert!(
        !body.contains("127.0.0.1\"") || body.contains("cong_backend_up"),
        "only backends carry addresses"
    );
    assert!(!body.contains("/form"));
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian prometheus) is installed by the test setup");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let out = Command::new("promtool")
        .args([
            "test",
            "rules",
            &format!("{ROOT}/deploy/prometheus/cong-alerts.test.yml"),
        ])
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("promtool")
        .args([
            "check",
            "rules",
            &format!("{ROOT}/deploy/prometheus/cong-alerts.yml"),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The dashboard is valid JSON and uses metrics this build exports or documents.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{ROOT}/deploy/grafana/cong-dashboard.json")).unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().unwrap().len() >= 10);
}

fn status_json(g: &Gateway, host: &str) -> serde_json::Value {
    let r = g.get(host, "/status.json");
    assert_eq!(r.status, 200, "{}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

fn tenant_status(v: &serde_json::Value, id: &str) -> serde_json::Value {
    v["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn uptime_history_survives_a_restart() {
    let mut a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let state = tempfile::tempdir().unwrap();
    let main = main_with(
        listen,
        admin,
        &format!("state_dir = \"{}\"", state.path().display()),
        "[availability]\ninterval = \"200ms\"\ntimeout = \"1s\"\n\n[status_page]\nhosts = [\"status.tinh.gov.vn\"]\n",
    );
    let t = tenant(
        "portal",
        &["portal.tinh.gov.vn"],
        &[a.addr],
        "max_fails = 0\n",
    );
    let hidden = with_top(
        tenant("internal", &["internal.tinh.gov.vn"], &[a.addr], ""),
        "public = false",
    );
    let g = Gateway::start(&main, &[("p.toml", &t), ("i.toml", &hidden)], listen, admin);
    wait_until("tenant up", Duration::from_secs(10), || {
        tenant_status(&status_json(&g, "status.tinh.gov.vn"), "portal")["status"] == "up"
    });
    let v = status_json(&g, "status.tinh.gov.vn");
    assert!(
        tenant_status(&v, "internal").is_null(),
        "non-public tenants are not listed"
    );
    // The backend goes away: the probe through the gateway sees it.
    a.stop();
    wait_until("tenant down", Duration::from_secs(10), || {
        tenant_status(&status_json(&g, "status.tinh.gov.vn"), "portal")["status"] == "down"
    });
    assert!(g
        .log_text()
        .contains("event=tenant_state tenant=portal state=down"));
    // Down for a measurable while before it comes back.
    std::thread::sleep(Duration::from_millis(500));
    let a2 = Backend::start_at("a", a.addr);
    wait_until("tenant up again", Duration::from_secs(10), || {
        tenant_status(&status_json(&g, "status.tinh.gov.vn"), "portal")["status"] == "up"
    });
    drop(g);

    // A new process reads the same history.
    let g = Gateway::start(&main, &[("p.toml", &t), ("i.toml", &hidden)], listen, admin);
    let v = status_json(&g, "status.tinh.gov.vn");
    let p = tenant_status(&v, "portal");
    let file = std::fs::read_to_string(state.path().join("availability.jsonl")).unwrap_or_default();
    assert_eq!(
        p["incidents_7d"].as_array().unwrap().len(),
        1,
        "{p}\nhistory:\n{file}"
    );
    let up = p["uptime_24h"]
        .as_f64()
        .unwrap_or_else(|| panic!("{p}\nhistory:\n{file}"));
    assert!(up < 100.0 && up > 0.0, "{up} {p}\nhistory:\n{file}");
    assert_eq!(p["daily_uptime_90d"].as_array().unwrap().len(), 90);
    // Internal addresses never reach the public page.
    let html = g.get("status.tinh.gov.vn", "/").body;
    assert!(!html.contains("127.0.0.1") && !v.to_string().contains("127.0.0.1"));
    assert!(html.contains("portal.tinh.gov.vn"));
    let history = std::fs::read_to_string(state.path().join("availability.jsonl")).unwrap();
    assert!(
        history.contains("\"state\":\"down\"") && history.contains("\"state\":\"unknown\""),
        "{history}"
    );
    drop(a2);
}

#[test]
fn status_page_is_accessible_in_chromium() {
    let a = Backend::start("a", "127.0.0.1");
    let port = free_port("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let state = tempfile::tempdir().unwrap();
    let main = format!(
        "[server]\nthreads = 1\ngrace_period = \"1s\"\nstate_dir = \"{}\"\npid_file = \"/tmp/cong-test-{port}.pid\"\nupgrade_sock = \"/tmp/cong-test-{port}.sock\"\n\n[[listen]]\naddress = \"127.0.0.1:{port}\"\n\n[[listen]]\naddress = \"[::1]:{port}\"\n\n[admin]\naddress = \"{admin}\"\n\n[availability]\ninterval = \"200ms\"\n\n[status_page]\nhosts = [\"status.localhost\"]\n",
        state.path().display()
    );
    let tenants = [
        (
            "a.toml",
            with_top(
                tenant("quangninh", &["quangninh.localhost"], &[a.addr], ""),
                "name = \"Cổng thông tin điện tử tỉnh Quảng Ninh\"",
            ),
        ),
        (
            "b.toml",
            tenant(
                "camson",
                &["camson.localhost"],
                &[free_addr("127.0.0.1")],
                "",
            ),
        ),
    ];
    let t: Vec<(&str, &str)> = tenants.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let listen: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let g = Gateway::start(&main, &t, listen, admin);
    wait_until("both tenants probed", Duration::from_secs(10), || {
        let v = status_json(&g, "status.localhost");
        tenant_status(&v, "quangninh")["status"] == "up"
            && tenant_status(&v, "camson")["status"] == "down"
    });
    let a11y = format!("{ROOT}/tests/a11y");
    assert!(
        std::path::Path::new(&format!("{a11y}/node_modules/axe-core")).exists(),
        "run `npm ci --prefix tests/a11y` (tests/run.sh does)"
    );
    let shot = g.dir.path().join("status.png");
    let out = Command::new("node")
        .arg(format!("{a11y}/check.js"))
        .arg(format!("http://status.localhost:{port}/"))
        .arg(&shot)
        .output()
        .expect("node");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.code() == Some(0),
        "axe found serious violations or failed: {text}\n{err}"
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["status"], 200);
    assert_eq!(v["lang"], "vi");
    assert_eq!(v["serious"], 0, "{v}");
    assert!(v["passes"].as_u64().unwrap() > 10);
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "a screenshot was taken"
    );
    // Keep a copy for people to look at when the test runs locally.
    let _ = std::fs::copy(&shot, format!("{ROOT}/target/status-page.png"));
}

#[test]
fn monthly_report_from_recorded_history() {
    let state = tempfile::tempdir().unwrap();
    // 2026-10: up from the 1st, down 30 minutes on the 10th, maintenance 2 hours on the 20th.
    let d = |day: i64, h: i64, m: i64| 1_790_812_800 + (day - 1) * 86_400 + h * 3600 + m * 60;
    let lines = [
        (d(1, 0, 0), "up", ""),
        (d(10, 8, 0), "down", "status 502"),
        (d(10, 8, 30), "up", ""),
        (d(20, 22, 0), "maintenance", "planned maintenance"),
        (d(21, 0, 0), "up", ""),
    ];
    let mut hist = String::new();
    for (t, s, c) in lines {
        hist.push_str(&format!(
            "{{\"t\":{},\"tenant\":\"quangninh\",\"state\":\"{s}\",\"cause\":\"{c}\"}}\n",
            t * 1000
        ));
    }
    std::fs::write(state.path().join("availability.jsonl"), hist).unwrap();
    std::fs::create_dir_all(state.path().join("usage")).unwrap();
    let sketch: String = (0..1024)
        .map(|i| if i % 2 == 0 { "01" } else { "00" })
        .collect();
    std::fs::write(
        state.path().join("usage/2026-10.json"),
        format!("{{\"quangninh\":{{\"requests\":120000,\"bytes_out\":5000000000,\"ipv6_requests\":30000,\"visitors_sketch\":\"{sketch}\"}}}}"),
    )
    .unwrap();
    let main = format!(
        "[server]\nstate_dir = \"{}\"\n\n[[listen]]\naddress = \"127.0.0.1:18080\"\n",
        state.path().display()
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &main,
        &[(
            "q.toml",
            &tenant(
                "quangninh",
                &["quangninh.gov.vn"],
                &["127.0.0.1:8081".parse().unwrap()],
                "",
            ),
        )],
    );
    let run = |format: &str| {
        let out = Command::new(CONG)
            .args([
                "report",
                "availability",
                "--month",
                "2026-10",
                "--format",
                format,
                "-c",
            ])
            .arg(dir.path().join("cong.toml"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let csv = run("csv");
    let row = csv.lines().nth(1).unwrap();
    let cols: Vec<&str> = row.split(',').collect();
    assert_eq!(cols[0], "quangninh");
    // 31 days = 44,640 min; 120 min planned maintenance is left out; 30 min down.
    let expected = 100.0 * (44_640.0 - 120.0 - 30.0) / (44_640.0 - 120.0);
    let got: f64 = cols[3].parse().unwrap();
    assert!((got - expected).abs() < 0.001, "{got} vs {expected}");
    assert_eq!(&cols[4..9], &["30", "120", "0", "1", "120000"]);
    let visitors: u64 = cols[9].parse().unwrap();
    assert!(
        (700..=740).contains(&visitors),
        "half the registers at rank 1 is about 710 visitors: {visitors}"
    );
    assert_eq!(cols[10], "5000000000");
    assert_eq!(cols[11], "25");
    let html = run("html");
    assert!(
        html.contains("<html lang=\"vi\">") && html.contains("<th scope=\"row\">quangninh</th>")
    );
    let json: serde_json::Value = serde_json::from_str(&run("json")).unwrap();
    assert_eq!(json[0]["incidents"], 1);
}
