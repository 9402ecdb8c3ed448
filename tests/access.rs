//! Operator access rules and GeoIP through the real binary: admin-path protection by network
//! and country (with a test .mmdb in both layouts), IPv4 and IPv6 clients, method, URI,
//! user-agent and address rules, and configuration errors that point at file:line.

mod common;
use common::mmdb::{self, Layout};
use common::*;
use std::net::SocketAddr;

fn geo_db(dir: &std::path::Path, layout: Layout) -> String {
    let p = dir.join("country.mmdb");
    mmdb::write(
        &p,
        layout,
        &[
            ("198.51.100.0/24", "VN"),
            ("203.0.113.0/24", "CN"),
            ("2001:db8:84::/48", "VN"),
            ("2001:db8:86::/48", "CN"),
        ],
    );
    p.display().to_string()
}

fn with_xff(g: &Gateway, path: &str, xff: &str) -> Response {
    request(
        g.listen,
        "GET",
        Some("t.gov.vn"),
        path,
        &[("X-Forwarded-For", xff)],
        "",
    )
    .unwrap()
}

#[test]
fn test_database_reads_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    for layout in [Layout::MaxMind, Layout::Flat] {
        let p = geo_db(dir.path(), layout);
        let db = cong::geoip::GeoIp::open(std::path::Path::new(&p)).unwrap();
        let c = |ip: &str| db.country(ip.parse().unwrap()).to_string();
        assert_eq!(c("198.51.100.7"), "VN");
        assert_eq!(c("203.0.113.200"), "CN");
        assert_eq!(c("2001:db8:84:1::5"), "VN");
        assert_eq!(c("2001:db8:86::1"), "CN");
        assert_eq!(c("192.0.2.1"), "--");
        assert_eq!(c("::1"), "--");
    }
}

#[test]
fn admin_paths_only_from_province_network_or_vietnam() {
    let b = Backend::start("portal", "127.0.0.1");
    let db_dir = tempfile::tempdir().unwrap();
    let db = geo_db(db_dir.path(), Layout::MaxMind);
    let listen = free_addr("127.0.0.1");
    let listen6 = free_addr("::1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "trusted_proxies = [\"127.0.0.1\"]");
    cfg.push_str(&format!(
        r#"[[listen]]
address = "{listen6}"

[access]
geoip_db = "{db}"

[[access.rule]]
name = "quantri-province-vn"
paths = ["/quantri/**", "/wp-admin/**"]
allow_cidrs = ["10.20.0.0/16"]
allow_countries = ["VN"]
"#
    ));
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + r#"
[[access.rule]]
name = "read-only"
methods = ["GET", "HEAD"]
max_uri_length = 200

[[access.rule]]
name = "no-scanners"
deny_user_agents = ["(?i)sqlmap", "nikto"]

[[access.rule]]
name = "blocked-net"
deny_cidrs = ["192.0.2.0/24", "2001:db8:bad::/48"]

[[access.rule]]
name = "private-not-v6-loopback"
paths = ["/private/**"]
deny_cidrs = ["::1/128"]
"#;
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);

    // Vietnam and the province network pass; abroad is refused, however the path is spelt.
    assert_eq!(with_xff(&g, "/quantri/login", "198.51.100.7").status, 200);
    assert_eq!(with_xff(&g, "/quantri", "10.20.3.4").status, 200);
    assert_eq!(with_xff(&g, "/quantri", "2001:db8:84::9").status, 200);
    for path in [
        "/quantri",
        "/QuanTri/x",
        "//quantri/",
        "/%71uantri",
        "/a/../quantri",
        "/wp-admin/",
    ] {
        let r = with_xff(&g, path, "203.0.113.9");
        assert_eq!(r.status, 403, "{path}");
        assert!(r.body.contains("Truy cập bị từ chối") && r.body.contains("Access denied"));
    }
    assert_eq!(with_xff(&g, "/quantri", "2001:db8:86::1").status, 403);
    // Unknown country (`--`) outside the province network is refused too.
    assert_eq!(with_xff(&g, "/quantri", "192.0.2.99").status, 403);
    assert_eq!(with_xff(&g, "/", "203.0.113.9").status, 200);
    assert_eq!(with_xff(&g, "/quantrix", "203.0.113.9").status, 200);

    // Tenant rules: methods, URI length, user agents, addresses (IPv4 and IPv6).
    let r = request(g.listen, "POST", Some("t.gov.vn"), "/form", &[], "a=1").unwrap();
    assert_eq!(r.status, 405);
    let long = format!("/{}", "a".repeat(300));
    assert_eq!(get(g.listen, "t.gov.vn", &long).status, 414);
    let ua = request(
        g.listen,
        "GET",
        Some("t.gov.vn"),
        "/",
        &[("User-Agent", "sqlmap/1.7")],
        "",
    )
    .unwrap();
    assert_eq!(ua.status, 403);
    assert_eq!(with_xff(&g, "/", "192.0.2.1").status, 403);
    assert_eq!(with_xff(&g, "/", "2001:db8:bad::1").status, 403);
    // A direct IPv6 client and a direct IPv4 client.
    assert_eq!(get(listen6, "t.gov.vn", "/private/x").status, 403);
    assert_eq!(get(listen6, "t.gov.vn", "/").status, 200);
    assert_eq!(get(g.listen, "t.gov.vn", "/private/x").status, 200);

    // Every refusal is an event with rule, tenant and country, and is counted.
    wait_until(
        "access_denied events",
        std::time::Duration::from_secs(5),
        || {
            let log = g.log_text();
            log.contains("event=access_denied tenant=t rule=quantri-province-vn")
                && log.contains("country=CN")
                && log.contains("rule=private-not-v6-loopback")
        },
    );
    assert!(g.log_text().contains("client=203.0.113.9 country=CN"));
    let m = request(admin, "GET", Some("admin"), "/metrics", &[], "").unwrap();
    assert!(m
        .body
        .contains("cong_access_denied_total{rule=\"quantri-province-vn\",tenant=\"t\"} 8"));
    assert!(m
        .body
        .contains("cong_access_denied_total{rule=\"read-only\",tenant=\"t\"} 2"));
}

#[test]
fn flat_layout_database_denies_countries() {
    let b = Backend::start("portal", "127.0.0.1");
    let db_dir = tempfile::tempdir().unwrap();
    let db = geo_db(db_dir.path(), Layout::Flat);
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "trusted_proxies = [\"127.0.0.1\"]");
    cfg.push_str(&format!(
        "[access]\ngeoip_db = \"{db}\"\n\n[[access.rule]]\nname = \"no-cn\"\ndeny_countries = [\"CN\"]\n"
    ));
    let g = Gateway::start(
        &cfg,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[b.addr], ""))],
        listen,
        admin,
    );
    assert_eq!(with_xff(&g, "/", "203.0.113.1").status, 403);
    assert_eq!(with_xff(&g, "/", "198.51.100.1").status, 200);
    assert_eq!(with_xff(&g, "/", "2001:db8:86::2").status, 403);
}

fn check_err(main_extra: &str, tenant_extra: &str) -> String {
    let listen: SocketAddr = "127.0.0.1:18080".parse().unwrap();
    let admin: SocketAddr = "127.0.0.1:19900".parse().unwrap();
    let main = base_config(listen, admin, "") + main_extra;
    let t = tenant("t", &["t.gov.vn"], &["127.0.0.1:1".parse().unwrap()], "") + tenant_extra;
    let (ok, text, _dir) = check(&main, &[("t.toml", &t)]);
    assert!(!ok, "accepted:\n{main}\n{t}");
    text
}

#[test]
fn bad_rules_are_config_errors_with_file_line_and_key() {
    let e = check_err(
        "[[access.rule]]\nname = \"x\"\ndeny_cidrs = [\"10.0.0.0/33\"]\n",
        "",
    );
    assert!(
        e.contains("cong.toml:") && e.contains("`access.rule[0].deny_cidrs`"),
        "{e}"
    );
    let e = check_err(
        "",
        "\n[[access.rule]]\nname = \"x\"\ndeny_cidrs = [\"10.0.0.0/8\", \"10.1.0.0/16\"]\n",
    );
    assert!(e.contains("t.toml:") && e.contains("overlaps"), "{e}");
    let e = check_err("", "\n[[access.rule]]\nname = \"x\"\nallow_cidrs = [\"fd00::/8\"]\ndeny_cidrs = [\"fd00:1::/32\"]\n");
    assert!(e.contains("overlaps"), "{e}");
    let e = check_err(
        "[[access.rule]]\nname = \"a\"\nmethods = [\"GET\"]\n\n[[access.rule]]\nname = \"a\"\nmethods = [\"GET\"]\n",
        "",
    );
    assert!(e.contains("already used"), "{e}");
    let e = check_err(
        "[[access.rule]]\nname = \"x\"\ndeny_countries = [\"VN\"]\n",
        "",
    );
    assert!(e.contains("geoip_db"), "{e}");
    let e = check_err("[access]\ngeoip_db = \"/nonexistent/country.mmdb\"\n", "");
    assert!(
        e.contains("`access.geoip_db`") && e.contains("cannot read"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let corrupt = dir.path().join("bad.mmdb");
    std::fs::write(&corrupt, b"not a database at all").unwrap();
    let e = check_err(
        &format!("[access]\ngeoip_db = \"{}\"\n", corrupt.display()),
        "",
    );
    assert!(e.contains("not a MaxMind database"), "{e}");
    let db = geo_db(dir.path(), Layout::MaxMind);
    let e = check_err(
        &format!("[access]\ngeoip_db = \"{db}\"\n\n[[access.rule]]\nname = \"x\"\nallow_countries = [\"VN\", \"XX\"]\n"),
        "",
    );
    assert!(
        e.contains("`access.rule[0].allow_countries`") && e.contains("XX"),
        "{e}"
    );
    let e = check_err(
        "[[access.rule]]\nname = \"x\"\ndeny_user_agents = [\"(\"]\n",
        "",
    );
    assert!(e.contains("bad pattern"), "{e}");
    let e = check_err(
        "[[access.rule]]\nname = \"x\"\npaths = [\"/a/**/b\"]\nmethods = [\"GET\"]\n",
        "",
    );
    assert!(e.contains("`access.rule[0].paths`"), "{e}");
    let e = check_err("[[access.rule]]\nname = \"x\"\npaths = [\"/a\"]\n", "");
    assert!(e.contains("no condition"), "{e}");
}

#[test]
fn a_new_geoip_database_is_picked_up_without_restart() {
    let b = Backend::start("portal", "127.0.0.1");
    let db_dir = tempfile::tempdir().unwrap();
    let db = db_dir.path().join("c.mmdb");
    mmdb::write(&db, Layout::MaxMind, &[("203.0.113.0/24", "CN")]);
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "trusted_proxies = [\"127.0.0.1\"]");
    cfg.push_str(&format!(
        "[access]\ngeoip_db = \"{}\"\n\n[[access.rule]]\nname = \"no-cn\"\ndeny_countries = [\"CN\"]\n",
        db.display()
    ));
    let g = Gateway::start(
        &cfg,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[b.addr], ""))],
        listen,
        admin,
    );
    assert_eq!(with_xff(&g, "/", "203.0.113.1").status, 403);
    // The range moved to another country in the new edition of the database.
    let tmp = db_dir.path().join("c.mmdb.new");
    mmdb::write(
        &tmp,
        Layout::MaxMind,
        &[("203.0.113.0/24", "VN"), ("192.0.2.0/24", "CN")],
    );
    std::fs::rename(&tmp, &db).unwrap();
    wait_until(
        "the new database",
        std::time::Duration::from_secs(20),
        || with_xff(&g, "/", "203.0.113.1").status == 200,
    );
    assert_eq!(with_xff(&g, "/", "192.0.2.1").status, 403);
}

#[test]
fn body_limits_apply_with_and_without_content_length() {
    use std::io::{Read, Write};
    let b = Backend::start("portal", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = tenant("t", &["t.gov.vn"], &[b.addr], "")
        + "\n[[access.rule]]\nname = \"small-forms\"\npaths = [\"/form/**\"]\nmax_body_bytes = 100\n";
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let big = "x".repeat(300);
    let r = request(listen, "POST", Some("t.gov.vn"), "/form/a", &[], &big).unwrap();
    assert_eq!(r.status, 413);
    assert_eq!(
        request(listen, "POST", Some("t.gov.vn"), "/form/a", &[], "a=1")
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        request(listen, "POST", Some("t.gov.vn"), "/other", &[], &big)
            .unwrap()
            .status,
        200
    );
    let chunked = |body: &str| -> String {
        let mut s = std::net::TcpStream::connect(listen).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let req = format!(
            "POST /form/a HTTP/1.1\r\nHost: t.gov.vn\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(chunked(&big).starts_with("HTTP/1.1 413"));
    assert!(chunked("a=1").starts_with("HTTP/1.1 200"));
    wait_until("body_size event", std::time::Duration::from_secs(5), || {
        g.log_text().contains("rule=small-forms reason=body_size")
    });
}
