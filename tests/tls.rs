//! TLS termination with the real binary: certificates by SNI (exact, wildcard, default),
//! TLS versions, ALPN, resumption, forwarding headers, HTTPS redirect, HSTS, SNI/Host check,
//! and bad certificate files reported while the gateway keeps serving.

mod common;
mod tls_common;

use common::*;
use std::time::Duration;
use tls_common::*;

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
    // Certificate expiry is exported for the expiry alert.
    let m = request(admin, "GET", Some("admin"), "/metrics", &[], "")
        .unwrap()
        .body;
    assert!(
        m.lines()
            .any(|l| l.starts_with("cong_tls_certificate_not_after_seconds{name=\"tenant:a\"} ")),
        "{m}"
    );
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
    // The gateway's own responses on HTTPS carry the tenant's HSTS too.
    assert_eq!(
        r.header("strict-transport-security").as_deref(),
        Some("max-age=600")
    );
    // Tenant b does not ask for the check.
    let r = tls_request(&cl, tls, "a.tinh.test", Some("b.tinh.test"), "/").unwrap();
    assert_eq!(r.status, 200);
    // Same over HTTP/2, where the host is the :authority of each stream on the connection.
    let ca_file = g.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let curl = |sni_host: &str, authority: &str| -> String {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{http_version}",
            ])
            .arg("--cacert")
            .arg(&ca_file)
            .arg("--connect-to")
            .arg(format!(
                "{sni_host}:{}:127.0.0.1:{}",
                tls.port(),
                tls.port()
            ))
            .args(["-H", &format!("Host: {authority}")])
            .arg(format!("https://{sni_host}:{}/", tls.port()))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(curl("a.tinh.test", "a.tinh.test"), "200 2");
    assert_eq!(curl("b.tinh.test", "a.tinh.test"), "421 2");
    drop(g);
}

/// Over HTTP/2, a form the WAF reads before the request goes upstream reaches the backend
/// byte for byte, and a refused one does not end the connection's other streams.
#[test]
fn waf_reads_small_bodies_first_over_http2_too() {
    if !std::path::Path::new("/usr/share/modsecurity-crs/owasp-crs.load").exists() {
        eprintln!("modsecurity-crs is not installed (deploy/deps.sh --test installs it)");
        return;
    }
    let b = Backend::start("b", "127.0.0.1");
    let (g, tls, ca) = start_one_tls_tenant(&b, "\n[waf]\nmode = \"block\"\n");
    let ca_file = g.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca).unwrap();
    let form = "ho_ten=Tr%E1%BA%A7n+Th%E1%BB%8B+B%C3%ACnh&ghi_chu=N%E1%BB%99p+h%E1%BB%93+s%C6%A1";
    let attack = "noi_dung=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E";
    let url = format!("https://a.tinh.test:{}/gop-y", tls.port());
    let heads = b.heads();
    // Three POSTs on one HTTP/2 connection: a form, an attack, the form again.
    let mut cmd = std::process::Command::new("curl");
    cmd.arg("-sS");
    for (i, body) in [form, attack, form].iter().enumerate() {
        if i > 0 {
            cmd.arg("--next");
        }
        // `--next` starts the options over (the connection is kept).
        cmd.arg("--cacert")
            .arg(&ca_file)
            .arg("--connect-to")
            .arg(format!(
                "a.tinh.test:{}:127.0.0.1:{}",
                tls.port(),
                tls.port()
            ));
        cmd.args([
            "--http2",
            "-d",
            body,
            "-w",
            "\nSTATUS %{http_code} %{http_version} %{num_connects}\n",
        ])
        .arg(&url);
    }
    let out = cmd.output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let statuses: Vec<&str> = text.lines().filter(|l| l.starts_with("STATUS ")).collect();
    assert_eq!(
        statuses,
        ["STATUS 200 2 1", "STATUS 403 2 0", "STATUS 200 2 0"],
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fnv = format!("body_fnv={:016x}", fnv1a(form.as_bytes()));
    assert_eq!(text.matches(&fnv).count(), 2, "{text}");
    assert_eq!(
        b.heads(),
        heads + 2,
        "the refused request never reached the backend"
    );
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

#[test]
fn expiring_certificate_gives_a_warning_event() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    // Valid for five more days.
    let soon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        + 5 * 86400
        + 3600;
    let not_after = x509_parser::time::ASN1Time::from_timestamp(soon)
        .unwrap()
        .to_datetime();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["soon.tinh.test".to_string()]).unwrap();
    params.not_after = not_after;
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let main = main_config(plain, tls, admin, "expiry_warning_days = 14\n");
    let t = format!(
        "tls_cert = \"soon.pem\"\ntls_key = \"soon.key\"\n{}",
        tenant("soon", &["soon.tinh.test"], &[b.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &[("soon.toml", &t)]);
    std::fs::write(dir.path().join("soon.pem"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("soon.key"), key.serialize_pem()).unwrap();
    let g = start_in(dir, plain, admin);
    wait_until("cert_expiring event", Duration::from_secs(10), || {
        g.log_text().contains("event=cert_expiring tenant=soon")
    });
    // A few scheduler ticks later there is still only one.
    std::thread::sleep(Duration::from_millis(1500));
    let log = g.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("event=cert_expiring"))
        .unwrap();
    assert!(
        line.contains("days_left=5") && line.contains("source=operator"),
        "{line}"
    );
    assert_eq!(log.matches("event=cert_expiring").count(), 1, "once a day");
}

#[test]
fn tls_configuration_errors_name_file_line_and_key() {
    let admin = free_addr("127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let base = base_config(listen, admin, "");
    let t = tenant(
        "a",
        &["*.a.tinh.test"],
        &["127.0.0.1:1".parse().unwrap()],
        "",
    );
    // acme without a CA.
    let (ok, out, _d) = check(&base, &[("a.toml", &format!("acme = true\n{t}"))]);
    assert!(!ok);
    assert!(
        out.contains("a.toml:") && out.contains("`acme`") && out.contains("[[acme_ca]]"),
        "{out}"
    );
    // A wildcard with acme needs a DNS-01 zone.
    let with_ca =
        format!("{base}[[acme_ca]]\nname = \"le\"\ndirectory = \"https://127.0.0.1:1/dir\"\n");
    let (ok, out, _d) = check(&with_ca, &[("a.toml", &format!("acme = true\n{t}"))]);
    assert!(!ok);
    assert!(
        out.contains("`hosts`") && out.contains("dns_update"),
        "{out}"
    );
    // Unknown keys and bad values in the new tables.
    let (ok, out, _d) = check(&format!("{base}[tls]\ncert_dirr = \"x\"\n"), &[]);
    assert!(!ok && out.contains("cert_dirr"), "{out}");
    let bad_secret = format!(
        "{with_ca}\n[[dns_update]]\nzone = \"a.tinh.test\"\nserver = \"127.0.0.1:53\"\ntsig_key_name = \"k\"\ntsig_secret = \"not base64!\"\n"
    );
    let (ok, out, _d) = check(&bad_secret, &[]);
    assert!(
        !ok && out.contains("dns_update[0].tsig_secret") && out.contains("base64"),
        "{out}"
    );
    let (ok, out, _d) = check(&base, &[("a.toml", &format!("hsts = \"yes please\"\n{t}"))]);
    assert!(
        !ok && out.contains("a.toml:1:8") && out.contains("`hsts`"),
        "{out}"
    );
}

#[test]
fn operator_certificate_replaced_on_disk_is_served_without_restart() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let (ca1, chain1, key1) = test_pki(&["a.tinh.test"]);
    let (ca2, chain2, key2) = test_pki(&["a.tinh.test"]);
    let main = main_config(plain, tls, admin, "reload_interval = \"200ms\"\n");
    let t = format!(
        "tls_cert = \"a.pem\"\ntls_key = \"a.key\"\n{}",
        tenant("a", &["a.tinh.test"], &[b.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &[("a.toml", &t)]);
    let (cert_path, key_path) = (dir.path().join("a.pem"), dir.path().join("a.key"));
    std::fs::write(&cert_path, &chain1).unwrap();
    std::fs::write(&key_path, &key1).unwrap();
    let g = start_in(dir, plain, admin);
    assert!(tls_request(&client_with_roots(&ca1), tls, "a.tinh.test", None, "/").is_ok());

    // The operator replaces both files (as a deployment tool would: temp file + rename).
    let replace = |path: &std::path::Path, text: &str| {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    };
    replace(&key_path, &key2);
    replace(&cert_path, &chain2);
    wait_until("the new certificate", Duration::from_secs(10), || {
        tls_request(&client_with_roots(&ca2), tls, "a.tinh.test", None, "/").is_ok()
    });
    assert!(g.log_text().contains("event=cert_reloaded tenant=a"));

    // A broken replacement is reported once and the certificate in use stays.
    replace(
        &cert_path,
        "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n",
    );
    wait_until("cert_invalid event", Duration::from_secs(10), || {
        g.log_text().contains("event=cert_invalid tenant=a")
    });
    let r = tls_request(
        &client_with_roots(&ca2),
        tls,
        "a.tinh.test",
        Some("a.tinh.test"),
        "/",
    )
    .expect("still served with the last good certificate");
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(g.log_text().matches("event=cert_invalid").count(), 1);
}
