//! TLS termination with the real binary: certificates by SNI (exact, wildcard, default),
//! TLS versions, ALPN, resumption, forwarding headers, HTTPS redirect, HSTS, SNI/Host check,
//! and bad certificate files reported while the gateway keeps serving.

mod common;
mod tls_common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;
use tls_common::*;

/// A main config with one plain and one TLS listener.
fn main_config(plain: SocketAddr, tls: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupgrade_sock = \"/tmp/cong-test-{p}.sock\"\npid_file = \"/tmp/cong-test-{p}.pid\"\n\n[[listen]]\naddress = \"{plain}\"\n\n[[listen]]\naddress = \"{tls}\"\ntls = true\n\n[admin]\naddress = \"{admin}\"\n\n[tls]\ncert_dir = \"certs\"\nhttps_port = {tp}\n{extra}\n",
        p = plain.port(),
        tp = tls.port()
    )
}

#[test]
fn certificates_by_sni_versions_alpn_resumption_and_headers() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let (ca_a, chain_a, key_a) = test_pki(&["a.tinh.test"]);
    let (ca_w, chain_w, key_w) = test_pki(&["*.wild.tinh.test"]);
    let main = main_config(plain, tls, admin, "");
    let ta = tenant("a", &["a.tinh.test"], &[b.addr], "").replacen(
        "hosts",
        "tls_cert = \"a.pem\"\ntls_key = \"a.key\"\nhosts",
        1,
    );
    let tw = tenant("w", &["*.wild.tinh.test"], &[b.addr], "");
    let tu = tenant("u", &["plain.tinh.test"], &[b.addr], "");
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &main,
        &[("a.toml", &ta), ("w.toml", &tw), ("u.toml", &tu)],
    );
    std::fs::write(dir.path().join("a.pem"), &chain_a).unwrap();
    std::fs::write(dir.path().join("a.key"), &key_a).unwrap();
    // An operator pair found by scanning the store directory.
    std::fs::create_dir_all(dir.path().join("certs")).unwrap();
    std::fs::write(dir.path().join("certs/wild.crt"), &chain_w).unwrap();
    std::fs::write(dir.path().join("certs/wild.key"), &key_w).unwrap();
    let g = start_in(dir, plain, admin);

    // Exact name, verified against its CA; the backend is told the request came over HTTPS.
    let r = tls_request(
        &client_with_roots(&ca_a),
        tls,
        "a.tinh.test",
        Some("a.tinh.test"),
        "/x",
    )
    .expect("verified handshake for a.tinh.test");
    assert_eq!(r.status, 200, "{}", r.response);
    assert_eq!(r.seen_header("x-forwarded-proto").as_deref(), Some("https"));
    assert!(r
        .seen_header("forwarded")
        .is_some_and(|f| f.ends_with("proto=https")));
    // Wildcard from the directory scan.
    let r = tls_request(
        &client_with_roots(&ca_w),
        tls,
        "x.wild.tinh.test",
        Some("x.wild.tinh.test"),
        "/",
    )
    .expect("verified handshake for the wildcard");
    assert_eq!(r.status, 200);
    // An unknown name still completes the handshake, with the generated default.
    let any = client_any(&[&rustls::version::TLS13], &[b"h2", b"http/1.1"]);
    let r = tls_request(&any, tls, "nobody.example", None, "/").expect("default certificate");
    assert_eq!(r.names, vec!["cong.invalid".to_string()]);
    // ALPN h2 preferred; TLS 1.2 accepted; a second connection resumes the session.
    assert_eq!(r.alpn.as_deref(), Some(&b"h2"[..]));
    let t12 = client_any(&[&rustls::version::TLS12], &[b"http/1.1"]);
    let r = tls_request(&t12, tls, "a.tinh.test", None, "/").unwrap();
    assert_eq!(r.version, Some(rustls::ProtocolVersion::TLSv1_2));
    assert_eq!(r.alpn.as_deref(), Some(&b"http/1.1"[..]));
    let r = tls_request(&t12, tls, "a.tinh.test", None, "/").unwrap();
    assert!(r.resumed, "TLS 1.2 session resumed");
    let t13 = client_any(&[&rustls::version::TLS13], &[b"http/1.1"]);
    tls_request(&t13, tls, "a.tinh.test", Some("a.tinh.test"), "/").unwrap();
    let r = tls_request(&t13, tls, "a.tinh.test", None, "/").unwrap();
    assert!(r.resumed, "TLS 1.3 session resumed");
    // Plain HTTP still says http, and the access log carries the SNI.
    let r = get(plain, "plain.tinh.test", "/");
    assert_eq!(r.seen_header("x-forwarded-proto"), Some("http"));
    wait_until("sni in access log", Duration::from_secs(5), || {
        g.log_text().contains("sni=a.tinh.test")
    });
}

#[test]
fn redirect_hsts_and_sni_host_check() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let (ca, chain, key) = test_pki(&["a.tinh.test", "b.tinh.test"]);
    let main = main_config(plain, tls, admin, "");
    let opts = "tls_cert = \"ab.pem\"\ntls_key = \"ab.key\"\nhttps_redirect = true\nhsts = \"max-age=600\"\nsni_host_check = true\n";
    let ta = format!("{opts}{}", tenant("a", &["a.tinh.test"], &[b.addr], ""));
    let tb = tenant("b", &["b.tinh.test"], &[b.addr], "");
    // Asks for a redirect but has no certificate: must keep serving plain HTTP.
    let tc = format!(
        "https_redirect = true\n{}",
        tenant("c", &["c.tinh.test"], &[b.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &main,
        &[("a.toml", &ta), ("b.toml", &tb), ("c.toml", &tc)],
    );
    std::fs::write(dir.path().join("ab.pem"), &chain).unwrap();
    std::fs::write(dir.path().join("ab.key"), &key).unwrap();
    let g = start_in(dir, plain, admin);

    let r = get(plain, "a.tinh.test", "/p/q?x=1&y=%20");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").map(str::to_string),
        Some(format!("https://a.tinh.test:{}/p/q?x=1&y=%20", tls.port()))
    );
    assert_eq!(b.hits(), 0, "a redirect never reaches the backend");
    let r = get(plain, "c.tinh.test", "/");
    assert_eq!(r.status, 200, "no certificate, no redirect");
    assert_eq!(r.header("strict-transport-security"), None);

    let cl = client_with_roots(&ca);
    let r = tls_request(&cl, tls, "a.tinh.test", Some("a.tinh.test"), "/").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=600")
    );
    // Host of tenant a on a connection whose SNI is tenant b's name: 421.
    let r = tls_request(&cl, tls, "b.tinh.test", Some("a.tinh.test"), "/").unwrap();
    assert_eq!(r.status, 421, "{}", r.response);
    // Tenant b does not ask for the check.
    let r = tls_request(&cl, tls, "a.tinh.test", Some("b.tinh.test"), "/").unwrap();
    assert_eq!(r.status, 200);
    drop(g);
}

#[test]
fn bad_certificate_files_are_reported_and_the_rest_is_served() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let (ca_ok, chain_ok, key_ok) = test_pki(&["good.tinh.test"]);
    let (_, chain_m, _) = test_pki(&["mismatch.tinh.test"]);
    let (_, _, other_key) = test_pki(&["other.tinh.test"]);
    let (_, chain_e, key_e) = pki_with_validity(&["expired.tinh.test"], 2020, 2021);
    let main = main_config(plain, tls, admin, "");
    let with = |id: &str, c: &str, k: &str| {
        format!(
            "tls_cert = \"{c}\"\ntls_key = \"{k}\"\n{}",
            tenant(id, &[&format!("{id}.tinh.test")], &[b.addr], "")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        &main,
        &[
            ("good.toml", &with("good", "good.pem", "good.key")),
            ("corrupt.toml", &with("corrupt", "corrupt.pem", "good.key")),
            (
                "mismatch.toml",
                &with("mismatch", "mismatch.pem", "other.key"),
            ),
            (
                "expired.toml",
                &with("expired", "expired.pem", "expired.key"),
            ),
        ],
    );
    let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
    w("good.pem", &chain_ok);
    w("good.key", &key_ok);
    w(
        "corrupt.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n",
    );
    w("mismatch.pem", &chain_m);
    w("other.key", &other_key);
    w("expired.pem", &chain_e);
    w("expired.key", &key_e);
    let g = start_in(dir, plain, admin);

    let log = g.log_text();
    for (tenant, file, what) in [
        ("corrupt", "corrupt.pem", "corrupt PEM"),
        ("mismatch", "other.key", "does not match"),
        ("expired", "expired.pem", "expired"),
    ] {
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| {
                l.contains("event=cert_invalid") && l.contains(&format!("tenant={tenant} "))
            })
            .collect();
        assert_eq!(lines.len(), 1, "one event for {tenant}:\n{log}");
        assert!(
            lines[0].contains(file) && lines[0].contains(what),
            "{}",
            lines[0]
        );
    }
    // The good tenant is served with its certificate; the bad ones get the default, not a failure.
    let r = tls_request(
        &client_with_roots(&ca_ok),
        tls,
        "good.tinh.test",
        Some("good.tinh.test"),
        "/",
    )
    .expect("good certificate");
    assert_eq!(r.status, 200);
    let any = client_any(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let r = tls_request(
        &any,
        tls,
        "expired.tinh.test",
        Some("expired.tinh.test"),
        "/",
    )
    .unwrap();
    assert_eq!(r.names, vec!["cong.invalid".to_string()]);
    assert_eq!(r.status, 200);
}

/// Starts the gateway on a config directory already written.
fn start_in(dir: tempfile::TempDir, listen: SocketAddr, admin: SocketAddr) -> Gateway {
    let log = dir.path().join("cong.log");
    let child = std::process::Command::new(CONG)
        .args(["run", "-c"])
        .arg(dir.path().join("cong.toml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start cong");
    let g = Gateway {
        dir,
        listen,
        admin,
        child: Some(child),
        log,
    };
    g.wait_ready();
    g
}
