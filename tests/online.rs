//! `cong check --online` against a real authoritative DNS server (BIND) on loopback.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `named` in the foreground on 127.0.0.1:PORT serving one zone; killed on drop.
struct Named {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Named {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_named(zone: &str, records: &str) -> Named {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("127.0.0.1");
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("named.conf"),
        format!(
            "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port {port} {{ 127.0.0.1; }}; listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; }};\n\
             controls {{ }};\n\
             zone \"{zone}\" {{ type primary; file \"{d}/zone.db\"; }};\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("zone.db"),
        format!("$TTL 60\n@ IN SOA ns.{zone}. admin.{zone}. 1 3600 600 86400 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n{records}"),
    )
    .unwrap();
    let child = Command::new("named")
        .args(["-g", "-c"])
        .arg(dir.path().join("named.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("named.log")).unwrap())
        .spawn()
        .expect("named (bind9) is installed by the test setup");
    let n = Named {
        child,
        _dir: dir,
        port,
    };
    // Ready when it answers for the zone (it may listen before the zone is loaded).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = hickory_resolver::config::ResolverConfig::new();
    cfg.add_name_server(hickory_resolver::config::NameServerConfig::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        hickory_resolver::config::Protocol::Udp,
    ));
    let mut opts = hickory_resolver::config::ResolverOpts::default();
    opts.cache_size = 0;
    opts.timeout = Duration::from_millis(500);
    let resolver = hickory_resolver::TokioAsyncResolver::tokio(cfg, opts);
    wait_until(
        "named answering for the zone",
        Duration::from_secs(15),
        || {
            rt.block_on(resolver.ipv4_lookup(format!("ns.{zone}.").as_str()))
                .is_ok()
        },
    );
    n
}

fn has_problem(h: &serde_json::Value, needle: &str) -> bool {
    h["problems"].as_array().is_some_and(|p| {
        p.iter()
            .any(|x| x.as_str().is_some_and(|s| s.contains(needle)))
    })
}

#[test]
fn online_check_reports_dns_caa_and_backends() {
    let named = start_named(
        "tinh.gov.vn",
        "good IN A 203.0.113.10\ngood IN AAAA 2001:db8::10\n\
         nov6 IN A 203.0.113.10\n\
         wrong IN A 198.51.100.99\nwrong IN AAAA 2001:db8::10\n\
         caa IN A 203.0.113.10\ncaa IN AAAA 2001:db8::10\ncaa IN CAA 0 issue \"other-ca.example\"\n\
         soon IN A 203.0.113.10\nsoon IN AAAA 2001:db8::10\n\
         @ IN CAA 0 issue \"letsencrypt.org\"\n",
    );
    let up = Backend::start("up", "127.0.0.1");
    let down = free_addr("127.0.0.1");
    let main = "[[listen]]\naddress = \"127.0.0.1:18080\"\n\n[check]\npublic_addresses = [\"203.0.113.10\", \"2001:db8::10\"]\ncaa_issuers = [\"letsencrypt.org\"]\n";
    // Operator certificates: one valid for years, one expiring in five days.
    let certs = tempfile::tempdir().unwrap();
    let write_cert = |name: &str, host: &str, days: i64| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![host.to_string()]).unwrap();
        let now = std::time::SystemTime::now();
        p.not_before = (now - Duration::from_secs(86_400)).into();
        p.not_after = (now + Duration::from_secs(days as u64 * 86_400)).into();
        let cert = p.self_signed(&key).unwrap();
        let (c, k) = (
            certs.path().join(format!("{name}.crt")),
            certs.path().join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            c.display(),
            k.display()
        )
    };
    let with_cert =
        |t: String, keys: String| t.replacen("\n\n[pools", &format!("\n{keys}\n[pools"), 1);
    let t1 = with_cert(
        tenant("good", &["good.tinh.gov.vn"], &[up.addr], ""),
        write_cert("good", "good.tinh.gov.vn", 400),
    );
    let t3 = with_cert(
        tenant("soon", &["soon.tinh.gov.vn"], &[up.addr], ""),
        write_cert("soon", "soon.tinh.gov.vn", 5),
    );
    let t2 = tenant(
        "bad",
        &[
            "nov6.tinh.gov.vn",
            "wrong.tinh.gov.vn",
            "caa.tinh.gov.vn",
            "missing.tinh.gov.vn",
        ],
        &[down],
        "",
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(
        dir.path(),
        main,
        &[("good.toml", &t1), ("bad.toml", &t2), ("soon.toml", &t3)],
    );
    let run = |json: bool| {
        let mut c = Command::new(CONG);
        c.args([
            "check",
            "--online",
            "--resolver",
            &format!("127.0.0.1:{}", named.port),
            "-c",
        ])
        .arg(dir.path().join("cong.toml"));
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    };
    let out = run(true);
    assert_eq!(out.status.code(), Some(1), "failures give a non-zero exit");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let host = |h: &str| {
        v["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["host"] == h)
            .unwrap()
            .clone()
    };
    let good = host("good.tinh.gov.vn");
    assert_eq!(good["problems"].as_array().unwrap().len(), 0, "{good}");
    assert_eq!(good["caa"], "allows (tinh.gov.vn)");
    assert!(good["cert_days_left"].as_i64().unwrap() > 390, "{good}");
    let soon = host("soon.tinh.gov.vn");
    assert!(has_problem(&soon, "certificate expires in"), "{soon}");
    assert!(
        host("nov6.tinh.gov.vn")["cert_days_left"].is_null(),
        "no HTTPS configured there"
    );
    assert!(
        has_problem(&host("nov6.tinh.gov.vn"), "no AAAA"),
        "{}",
        host("nov6.tinh.gov.vn")
    );
    assert!(
        has_problem(
            &host("wrong.tinh.gov.vn"),
            "198.51.100.99 is not an address of this gateway"
        ),
        "{}",
        host("wrong.tinh.gov.vn")
    );
    assert!(
        has_problem(&host("caa.tinh.gov.vn"), "other-ca.example"),
        "{}",
        host("caa.tinh.gov.vn")
    );
    assert!(
        has_problem(&host("missing.tinh.gov.vn"), "no A record"),
        "{}",
        host("missing.tinh.gov.vn")
    );
    let backends = v["backends"].as_array().unwrap();
    assert_eq!(
        backends.iter().find(|b| b["tenant"] == "good").unwrap()["reachable"],
        true
    );
    assert_eq!(
        backends.iter().find(|b| b["tenant"] == "bad").unwrap()["reachable"],
        false
    );
    // The table for people.
    let out = run(false);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("good.tinh.gov.vn") && text.contains("FAIL: no AAAA record"),
        "{text}"
    );
    assert!(text.contains("some checks FAILED"));

    // Only the good tenant: exit 0.
    let dir2 = tempfile::tempdir().unwrap();
    write_config(dir2.path(), main, &[("good.toml", &t1)]);
    let out = Command::new(CONG)
        .args([
            "check",
            "--online",
            "--resolver",
            &format!("127.0.0.1:{}", named.port),
            "-c",
        ])
        .arg(dir2.path().join("cong.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
