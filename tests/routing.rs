//! Host and path routing through the real binary: exact names, aliases, wildcards (4th and 5th
//! level), path prefixes, punycode, default tenant, unknown hosts, HTTP/2 `:authority`.

mod common;
use common::*;

fn portal_setup() -> (Gateway, Vec<Backend>) {
    let main = Backend::start("portal-main", "127.0.0.1");
    let en = Backend::start("portal-en", "127.0.0.1");
    let campha = Backend::start("campha-communes", "127.0.0.1");
    let camson = Backend::start("camson-4th-level", "127.0.0.1");
    let depts = Backend::start("departments", "127.0.0.1");
    let hl = Backend::start("halong-idn", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "default_tenant = \"quangninh\"");
    let portal = format!(
        r#"id = "quangninh"
name = "Cổng TTĐT tỉnh Quảng Ninh"
hosts = ["quangninh.gov.vn", "www.quangninh.gov.vn", "halong.gov.vn"]
default_pool = "main"

[[routes]]
path = "/sites/en"
pool = "en"

[[routes]]
path = "/sites/en/stripped"
pool = "en"
strip_prefix = true

[pools.main]
backends = ["{}"]

[pools.en]
backends = ["{}"]
"#,
        main.addr, en.addr
    );
    let tenants = [
        ("quangninh.toml", portal),
        (
            "campha.toml",
            tenant("campha", &["*.campha.quangninh.gov.vn"], &[campha.addr], ""),
        ),
        (
            "camson.toml",
            tenant("camson", &["camson.quangninh.gov.vn"], &[camson.addr], ""),
        ),
        (
            "depts.toml",
            tenant("departments", &["*.quangninh.gov.vn"], &[depts.addr], ""),
        ),
        (
            "idn.toml",
            tenant("idn", &["hạlong-cổng.gov.vn"], &[hl.addr], ""),
        ),
    ];
    let t: Vec<(&str, &str)> = tenants.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let g = Gateway::start(&cfg, &t, listen, admin);
    (g, vec![main, en, campha, camson, depts, hl])
}

#[test]
fn hosts_aliases_wildcards_and_paths() {
    let (g, _backends) = portal_setup();
    let cases = [
        ("quangninh.gov.vn", "/", "portal-main"),
        ("www.quangninh.gov.vn", "/tin-tuc", "portal-main"),
        ("halong.gov.vn", "/", "portal-main"),
        ("QuangNinh.GOV.vn:8080", "/", "portal-main"),
        ("quangninh.gov.vn.", "/", "portal-main"),
        ("quangninh.gov.vn", "/sites/en", "portal-en"),
        ("quangninh.gov.vn", "/sites/en/about", "portal-en"),
        ("quangninh.gov.vn", "/sites/en?lang=1", "portal-en"),
        ("quangninh.gov.vn", "/sites/english", "portal-main"),
        ("stttt.quangninh.gov.vn", "/", "departments"),
        ("campha.quangninh.gov.vn", "/", "departments"),
        ("camson.campha.quangninh.gov.vn", "/", "campha-communes"),
        ("a.b.campha.quangninh.gov.vn", "/", "campha-communes"),
        ("camson.quangninh.gov.vn", "/", "camson-4th-level"),
        ("xn--hlong-cng-076dlv.gov.vn", "/", "halong-idn"),
        // A bare IP goes to the default tenant.
        ("127.0.0.1", "/", "portal-main"),
    ];
    for (host, path, want) in cases {
        let r = g.get(host, path);
        assert_eq!(r.status, 200, "{host}{path}: {}", r.body);
        assert_eq!(r.backend(), Some(want), "{host}{path}");
        // The backend sees the Host the client sent.
        assert_eq!(r.seen_header("host"), Some(host), "{host}{path}");
    }
}

#[test]
fn strip_prefix_rewrites_the_path() {
    let (g, _b) = portal_setup();
    let r = g.get("quangninh.gov.vn", "/sites/en/stripped/page?x=1");
    assert_eq!(r.backend(), Some("portal-en"));
    assert_eq!(r.seen_path(), Some("/page?x=1"));
    let r = g.get("quangninh.gov.vn", "/sites/en/page");
    assert_eq!(r.seen_path(), Some("/sites/en/page"));
}

#[test]
fn unknown_host_gets_a_neutral_404() {
    let (g, backends) = portal_setup();
    let before: u64 = backends.iter().map(|b| b.hits()).sum();
    for host in ["unknown.gov.vn", "gov.vn", "quangninh.gov.vn.evil.com"] {
        let r = g.get(host, "/");
        assert_eq!(r.status, 404, "{host}");
        assert!(r.header("content-type").unwrap().starts_with("text/html"));
        let rid = r
            .header("x-request-id")
            .expect("request id header")
            .to_string();
        assert!(r.body.contains(&rid), "page shows the request id");
        assert!(r.body.contains("lang=\"vi\"") && r.body.contains("lang=\"en\""));
        // Neutral: nothing about the tenants behind the gateway.
        for secret in ["quangninh", "campha", "camson", "127.0.0.1"] {
            assert!(!r.body.contains(secret), "404 page leaks {secret}");
        }
    }
    let after: u64 = backends.iter().map(|b| b.hits()).sum();
    assert_eq!(before, after, "no backend saw the unknown-host requests");
}

#[test]
fn invalid_host_is_a_400() {
    let (g, _b) = portal_setup();
    let r = request(g.listen, "GET", Some("bad host name"), "/", &[], "").unwrap();
    assert_eq!(r.status, 400);
}

#[test]
fn bare_ip_without_default_tenant_is_404() {
    let b = Backend::start("only", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let cfg = base_config(listen, admin, "");
    let t = tenant("only", &["only.gov.vn"], &[b.addr], "");
    let g = Gateway::start(&cfg, &[("only.toml", &t)], listen, admin);
    assert_eq!(g.get("127.0.0.1", "/").status, 404);
    assert_eq!(g.get("only.gov.vn", "/").backend(), Some("only"));
    let r = request(g.listen, "GET", None, "/", &[], "").unwrap();
    assert!(r.status == 404 || r.status == 400, "no Host: {}", r.status);
}

#[test]
fn http2_authority_routes_like_host() {
    let (g, _b) = portal_setup();
    // h2c with prior knowledge: the host comes from :authority.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-w",
            "\n%{http_version}",
            "--connect-to",
        ])
        .arg(format!("camson.quangninh.gov.vn:80:{}", g.listen))
        .arg("http://camson.quangninh.gov.vn/")
        .output()
        .expect("curl is installed by the test setup");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backend=camson-4th-level"), "{text}");
    assert!(text.trim_end().ends_with('2'), "served over HTTP/2: {text}");
}
