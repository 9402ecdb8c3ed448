//! ACME with real peers: pebble as the CA (validating for real, no always-valid shortcut),
//! pebble-challtestsrv as the DNS pebble and the pre-flight checks ask, the real cong binary
//! answering HTTP-01 on its plain listener.

mod common;
mod tls_common;

use common::*;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;
use tls_common::*;

fn acme_main(
    plain: SocketAddr,
    tls: SocketAddr,
    admin: SocketAddr,
    directory: &str,
    trust_root: &str,
    acme: &str,
) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupgrade_sock = \"/tmp/cong-test-{p}.sock\"\npid_file = \"/tmp/cong-test-{p}.pid\"\n\n[[listen]]\naddress = \"{plain}\"\n\n[[listen]]\naddress = \"{tls}\"\ntls = true\n\n[admin]\naddress = \"{admin}\"\n\n[[admin.token]]\nname = \"tests\"\nsha256 = \"542a6818ec70511212bf6b4b6f24bc6204ee74e2dda4808ec2c2539df1045bb8\"\n\n[tls]\ncert_dir = \"certs\"\nhttps_port = {tp}\n\n[acme]\n{acme}\n\n[[acme_ca]]\nname = \"pebble\"\ndirectory = \"{directory}\"\ncontact = [\"mailto:soc@tinh.test\"]\ntrust_root = \"{trust_root}\"\n",
        p = plain.port(),
        tp = tls.port()
    )
}

fn count(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn http01_for_many_tenants_then_renewal_swaps_without_restart() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let work = tempfile::tempdir().unwrap();
    let dns = ChallDns::start(work.path());
    // A commune whose name points elsewhere: the pre-flight check must stop it.
    dns.manage(
        "/add-a",
        r#"{"host":"bad.tinh.test.","addresses":["10.9.9.9"]}"#,
    );
    // And one whose CAA records allow only another CA.
    dns.manage(
        "/add-caa",
        r#"{"host":"caa.tinh.test.","policies":[{"tag":"issue","value":"other-ca.example"}]}"#,
    );
    let pebble = Pebble::start(plain.port(), dns.dns);

    let acme = format!(
        "public_addresses = [\"127.0.0.1\"]\nresolver = \"{}\"\nconcurrency = 4\n",
        dns.dns
    );
    let mut main = acme_main(
        plain,
        tls,
        admin,
        &pebble.directory(),
        &pebble.tls_ca_path.display().to_string(),
        &acme,
    );
    main.push_str("caa_identity = \"pebble.test\"\n");
    let mut files: Vec<(String, String)> = Vec::new();
    let n = 21;
    for i in 0..n {
        let id = format!("t{i:02}");
        // Two names for some tenants: one certificate covers all of a tenant's hosts.
        let hosts: Vec<String> = if i % 5 == 0 {
            vec![format!("{id}.tinh.test"), format!("www.{id}.tinh.test")]
        } else {
            vec![format!("{id}.tinh.test")]
        };
        let hosts: Vec<&str> = hosts.iter().map(|s| s.as_str()).collect();
        files.push((
            format!("{id}.toml"),
            format!(
                "acme = true\nhttps_redirect = true\n{}",
                tenant(&id, &hosts, &[b.addr], "")
            ),
        ));
    }
    files.push((
        "bad.toml".into(),
        format!(
            "acme = true\n{}",
            tenant("bad", &["bad.tinh.test"], &[b.addr], "")
        ),
    ));
    files.push((
        "caa.toml".into(),
        format!(
            "acme = true\n{}",
            tenant("caa", &["caa.tinh.test"], &[b.addr], "")
        ),
    ));
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &refs);
    let cfg_path = dir.path().join("cong.toml");
    let g = start_in(dir, plain, admin);

    wait_until(
        "every tenant's certificate",
        Duration::from_secs(180),
        || count(&g.log_text(), "event=cert_issued") >= n,
    );
    let log = g.log_text();
    assert_eq!(count(&log, "event=acme_failed"), 0, "{log}");
    // The misconfigured names were reported once each and never ordered.
    let pre = |t: &str| -> Vec<String> {
        log.lines()
            .filter(|l| {
                l.contains("event=acme_preflight_failed") && l.contains(&format!("tenant={t} "))
            })
            .map(str::to_string)
            .collect()
    };
    let bad = pre("bad");
    assert_eq!(bad.len(), 1, "{log}");
    assert!(
        bad[0].contains("10.9.9.9") && bad[0].contains("name=bad.tinh.test"),
        "{}",
        bad[0]
    );
    let caa = pre("caa");
    assert_eq!(caa.len(), 1, "{log}");
    assert!(
        caa[0].contains("CAA") && caa[0].contains("pebble.test"),
        "{}",
        caa[0]
    );
    assert_eq!(count(&log, "event=acme_preflight_failed"), 2, "{log}");
    assert!(!log.contains("acme bad: new order") && !log.contains("acme caa: new order"));

    // Every name verifies against pebble's issuing root.
    let root = pebble.issuing_root();
    let cl = client_with_roots(&root);
    for i in 0..n {
        let host = format!("t{i:02}.tinh.test");
        let r = tls_request(&cl, tls, &host, Some(&host), "/")
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(r.status, 200, "{host}");
        assert!(r.names.contains(&host));
    }
    let r = tls_request(&cl, tls, "www.t05.tinh.test", None, "/").unwrap();
    assert!(r.names.contains(&"t05.tinh.test".to_string()));
    // curl verifies the chain against pebble's root too, and gets HTTP/2 by ALPN.
    let root_file = work.path().join("pebble-root.pem");
    std::fs::write(&root_file, &root).unwrap();
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{http_version}",
        ])
        .arg("--cacert")
        .arg(&root_file)
        .arg("--resolve")
        .arg(format!("t11.tinh.test:{}:127.0.0.1", tls.port()))
        .arg(format!("https://t11.tinh.test:{}/", tls.port()))
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200 2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Now that certificates exist, plain HTTP redirects.
    let r = get(plain, "t03.tinh.test", "/a?b=c");
    assert_eq!(r.status, 308);
    assert_eq!(
        r.header("location").map(str::to_string),
        Some(format!("https://t03.tinh.test:{}/a?b=c", tls.port()))
    );
    // Stored atomically with private permissions, account kept for the next run.
    let store = g.dir.path().join("certs/acme");
    let mode = std::fs::metadata(store.join("t00.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(store.join("state/account-pebble.json").exists());

    // `cong certs list` shows the managed certificates.
    let out = Command::new(CONG)
        .args(["certs", "list", "-c"])
        .arg(&cfg_path)
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{list}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(list.starts_with("NAME"), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with("t07 "))
        .expect("t07 listed");
    assert!(row.contains("acme") && row.contains("Pebble"), "{row}");
    assert!(list
        .lines()
        .any(|l| l.starts_with("bad ") && l.contains("not issued yet")));

    // Renewal on request: the next handshake sees the new certificate, no restart.
    // Fresh clients: a resumed session would report the certificate of the first handshake.
    let before = tls_request(&client_with_roots(&root), tls, "t07.tinh.test", None, "/").unwrap();
    let out = Command::new(CONG)
        .args(["certs", "renew", "t07", "-c"])
        .arg(&cfg_path)
        .env("CONG_ADMIN_TOKEN", "tls-test-admin-token")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pebble reuses the still-valid authorisation, so no new challenge is needed.
    for step in ["pre-flight", "new order", "finalising", "storing", "done"] {
        assert!(text.contains(step), "{step}: {text}");
    }
    let after = tls_request(&client_with_roots(&root), tls, "t07.tinh.test", None, "/").unwrap();
    assert!(!after.resumed);
    assert_ne!(
        before.serial, after.serial,
        "a renewed certificate is served"
    );
    assert!(g.log_text().contains("event=cert_renewed tenant=t07"));
    assert_eq!(g.pid(), g.child.as_ref().unwrap().id());
    drop(g);
    drop(pebble);
}

#[test]
fn unreachable_ca_is_one_clear_event_and_the_gateway_keeps_serving() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let closed = free_addr("127.0.0.1");
    let (ca, _, _) = test_pki(&["localhost"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let main = acme_main(
        plain,
        tls,
        admin,
        &format!("https://{closed}/dir"),
        "ca.pem",
        "preflight = false\nretry_min = \"1h\"\n",
    );
    let t = format!(
        "acme = true\n{}",
        tenant("x", &["x.tinh.test"], &[b.addr], "")
    );
    write_config(dir.path(), &main, &[("x.toml", &t)]);
    let g = start_in(dir, plain, admin);
    wait_until("acme_failed event", Duration::from_secs(30), || {
        g.log_text().contains("event=acme_failed")
    });
    let log = g.log_text();
    let ev: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=acme_failed"))
        .collect();
    assert_eq!(ev.len(), 1, "{log}");
    assert!(
        ev[0].contains("tenant=x")
            && ev[0].contains("step=account")
            && ev[0].contains("retry_in_s=3600"),
        "{}",
        ev[0]
    );
    assert_eq!(get(plain, "x.tinh.test", "/").status, 200);
    let any = client_any(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let r = tls_request(&any, tls, "x.tinh.test", Some("x.tinh.test"), "/").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn dns01_wildcard_through_bind_with_tsig_and_a_refused_key() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let secret = "c2VjcmV0LWtleS1mb3ItY29uZy10ZXN0cy0wMTIzNDU2Nzg5";
    let bind = Bind::start(&["wild.test", "other.test"], secret);
    let pebble = Pebble::start(plain.port(), bind.addr);
    let mut main = acme_main(
        plain,
        tls,
        admin,
        &pebble.directory(),
        &pebble.tls_ca_path.display().to_string(),
        &format!("resolver = \"{}\"\nretry_min = \"1h\"\n", bind.addr),
    );
    main.push_str(&format!(
        "\n[[dns_update]]\nzone = \"wild.test\"\nserver = \"{a}\"\ntsig_key_name = \"cong-key\"\ntsig_secret = \"{secret}\"\n\n[[dns_update]]\nzone = \"other.test\"\nserver = \"{a}\"\ntsig_key_name = \"cong-key\"\ntsig_secret = \"d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9uZw==\"\n",
        a = bind.addr
    ));
    let tw = format!(
        "acme = true\n{}",
        tenant("w", &["*.wild.test"], &[b.addr], "")
    );
    let to = format!(
        "acme = true\n{}",
        tenant("o", &["*.other.test"], &[b.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &[("w.toml", &tw), ("o.toml", &to)]);
    let g = start_in(dir, plain, admin);

    wait_until(
        "wildcard issued and bad key reported",
        Duration::from_secs(90),
        || {
            let l = g.log_text();
            l.contains("event=cert_issued tenant=w") && l.contains("event=acme_failed tenant=o")
        },
    );
    let root = pebble.issuing_root();
    let r = tls_request(
        &client_with_roots(&root),
        tls,
        "portal.wild.test",
        Some("portal.wild.test"),
        "/",
    )
    .expect("wildcard certificate verifies");
    assert_eq!(r.status, 200);
    assert_eq!(r.names, vec!["*.wild.test".to_string()]);
    // The challenge record was removed afterwards.
    assert_eq!(bind.txt("_acme-challenge.wild.test"), "");
    assert!(!g.log_text().contains("event=dns_cleanup_failed"));
    // The refused key: one event naming the tenant, the zone's server and the key.
    let log = g.log_text();
    let ev: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=acme_failed"))
        .collect();
    assert_eq!(ev.len(), 1, "{log}");
    assert!(
        ev[0].contains("tenant=o")
            && ev[0].contains("step=dns-01")
            && ev[0].contains("cong-key")
            && ev[0].contains("rejected the TSIG signature"),
        "{}",
        ev[0]
    );
    // And the gateway still serves both tenants.
    let any = client_any(&[&rustls::version::TLS13], &[b"http/1.1"]);
    let r = tls_request(&any, tls, "x.other.test", Some("x.other.test"), "/").unwrap();
    assert_eq!(r.status, 200);
}

#[test]
fn due_certificate_renewed_automatically_and_interrupted_order_resumed() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let work = tempfile::tempdir().unwrap();
    let dns = ChallDns::start(work.path());
    let pebble = Pebble::start(plain.port(), dns.dns);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("certs/acme/state");
    std::fs::create_dir_all(&state).unwrap();

    // A managed certificate past two-thirds of its lifetime, as a previous run left it.
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
    let mut params = rcgen::CertificateParams::new(vec!["old.tinh.test".to_string()]).unwrap();
    params.not_before = at(now - 70 * 86400);
    params.not_after = at(now + 20 * 86400);
    let old = params.self_signed(&key).unwrap();
    std::fs::write(
        dir.path().join("certs/acme/old.pem"),
        format!("{}{}", key.serialize_pem(), old.pem()),
    )
    .unwrap();

    // An account and an order created before a restart: the order must be picked up, not
    // replaced.
    let (creds, order_url) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let (account, creds) = instant_acme::Account::builder_with_root(&pebble.tls_ca_path)
                .unwrap()
                .create(
                    &instant_acme::NewAccount {
                        contact: &[],
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    pebble.directory(),
                    None,
                )
                .await
                .unwrap();
            let ids = [instant_acme::Identifier::Dns("resume.tinh.test".into())];
            let order = account
                .new_order(&instant_acme::NewOrder::new(&ids))
                .await
                .unwrap();
            (
                serde_json::to_string(&creds).unwrap(),
                order.url().to_string(),
            )
        });
    std::fs::write(state.join("account-pebble.json"), creds).unwrap();
    let pending = serde_json::json!({
        "url": order_url,
        "names": ["resume.tinh.test"],
        "ca": "pebble",
        "key_pem": rcgen::KeyPair::generate().unwrap().serialize_pem(),
    });
    std::fs::write(state.join("order-resume.json"), pending.to_string()).unwrap();

    let main = acme_main(
        plain,
        tls,
        admin,
        &pebble.directory(),
        &pebble.tls_ca_path.display().to_string(),
        &format!("resolver = \"{}\"\n", dns.dns),
    );
    // It redirects plain HTTP (it has a certificate from the start): the challenge must still
    // be answered, not redirected.
    let t_old = format!(
        "acme = true\nhttps_redirect = true\n{}",
        tenant("old", &["old.tinh.test"], &[b.addr], "")
    );
    let t_res = format!(
        "acme = true\n{}",
        tenant("resume", &["resume.tinh.test"], &[b.addr], "")
    );
    write_config(
        dir.path(),
        &main,
        &[("old.toml", &t_old), ("resume.toml", &t_res)],
    );
    let g = start_in(dir, plain, admin);
    wait_until(
        "renewal and resumed issuance",
        Duration::from_secs(60),
        || {
            let l = g.log_text();
            l.contains("event=cert_renewed tenant=old")
                && l.contains("event=cert_issued tenant=resume")
        },
    );
    let log = g.log_text();
    assert!(
        log.contains(&format!("acme resume: resuming order {order_url}")),
        "{log}"
    );
    assert!(!log.contains("acme resume: new order"), "{log}");
    assert!(
        !log.contains("event=acme_account_created"),
        "account reused"
    );
    assert_eq!(get(plain, "old.tinh.test", "/").status, 308);
    assert!(
        log.lines()
            .any(|l| l.contains("uri=/.well-known/acme-challenge/")
                && l.contains("host=old.tinh.test")
                && l.contains("status=200")),
        "{log}"
    );
    assert!(!g
        .dir
        .path()
        .join("certs/acme/state/order-resume.json")
        .exists());
    let root = pebble.issuing_root();
    for host in ["old.tinh.test", "resume.tinh.test"] {
        let r = tls_request(&client_with_roots(&root), tls, host, Some(host), "/")
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        assert_eq!(r.status, 200);
    }
}

#[test]
fn external_account_binding_is_sent_when_the_ca_requires_it() {
    let b = Backend::start("b", "127.0.0.1");
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let work = tempfile::tempdir().unwrap();
    let dns = ChallDns::start(work.path());
    let key = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let pebble = Pebble::start_with(plain.port(), dns.dns, Some(("kid-1", key)));
    let acme = format!("resolver = \"{}\"\n", dns.dns);
    let root = pebble.tls_ca_path.display().to_string();
    let mut main = acme_main(plain, tls, admin, &pebble.directory(), &root, &acme);
    main.push_str(&format!("eab_kid = \"kid-1\"\neab_hmac_key = \"{key}\"\n"));
    // A second CA entry without the binding, used by another tenant: the CA's refusal is
    // reported with its own words.
    main.push_str(&format!(
        "\n[[acme_ca]]\nname = \"noeab\"\ndirectory = \"{}\"\ntrust_root = \"{root}\"\n",
        pebble.directory()
    ));
    let te = format!(
        "acme = true\n{}",
        tenant("e", &["e.tinh.test"], &[b.addr], "")
    );
    let tn = format!(
        "acme = true\nacme_ca = \"noeab\"\n{}",
        tenant("n", &["n.tinh.test"], &[b.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &[("e.toml", &te), ("n.toml", &tn)]);
    let g = start_in(dir, plain, admin);
    wait_until(
        "issued with EAB, refused without",
        Duration::from_secs(60),
        || {
            let l = g.log_text();
            l.contains("event=cert_issued tenant=e") && l.contains("event=acme_failed tenant=n")
        },
    );
    let log = g.log_text();
    let ev = log
        .lines()
        .find(|l| l.contains("event=acme_failed tenant=n"))
        .unwrap();
    assert!(
        ev.contains("step=account") && ev.contains("ca=noeab") && ev.contains("externalAccount"),
        "{ev}"
    );
}
