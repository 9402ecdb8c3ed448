//! The deployment files and the API description say what the code does.

mod common;
use common::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn systemd_unit_uses_real_commands_and_the_example_paths() {
    let unit = read("deploy/systemd/cong.service");
    let example = read("config/cong.toml");
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing"))
            .to_string()
    };
    for key in ["ExecStartPre", "ExecStart", "ExecReload"] {
        let line = value(key);
        let args: Vec<&str> = line.split_whitespace().collect();
        assert!(args[0].ends_with("/cong"), "{line}");
        // The subcommand exists and takes every flag the unit passes.
        let help = std::process::Command::new(CONG)
            .args([args[1], "--help"])
            .output()
            .unwrap();
        assert!(help.status.success(), "{line}");
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in args.iter().filter(|a| a.starts_with('-')) {
            assert!(help.contains(flag), "`cong {}` has no {flag}", args[1]);
        }
        // And the configuration it names is the example's path layout.
        assert!(line.contains("/etc/cong/cong.toml"));
    }
    assert_eq!(value("Type"), "notify");
    assert!(
        value("PIDFile") == "/run/cong/cong.pid"
            && example.contains("pid_file = \"/run/cong/cong.pid\"")
    );
    assert!(example.contains("upgrade_sock = \"/run/cong/upgrade.sock\""));
    assert!(example.contains("state_dir = \"/var/lib/cong\""));
    let rw = value("ReadWritePaths");
    for dir in ["/run/cong", "/var/lib/cong", "/var/cache/cong"] {
        assert!(rw.split_whitespace().any(|d| d == dir), "{dir} writable");
    }
    assert!(example.contains("disk_dir = \"/var/cache/cong\""));
    assert_eq!(value("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("ProtectSystem"), "strict");
    assert_ne!(value("User"), "root");
}

#[test]
fn dockerfile_copies_files_that_exist() {
    let df = read("deploy/docker/Dockerfile");
    for line in df
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(std::path::Path::new(ROOT).join(src).exists(), "{line}");
        }
    }
    assert!(df.contains("USER cong"));
}

#[test]
fn every_documented_admin_endpoint_exists() {
    let spec: serde_json::Value = serde_json::from_str(&read("docs/admin-api.json")).unwrap();
    let a = Backend::start("a", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let token = "documented-endpoints-token";
    let cfg = base_config(listen, admin, "").replace(
        &format!("[admin]\naddress = \"{admin}\"\n"),
        &format!(
            "[admin]\naddress = \"{admin}\"\n\n[[admin.token]]\nname = \"t\"\nsha256 = \"{}\"\n",
            sha256_hex(token)
        ),
    );
    let g = Gateway::start(
        &cfg,
        &[("t.toml", &tenant("t", &["t.gov.vn"], &[a.addr], ""))],
        listen,
        admin,
    );
    let auth = format!("Bearer {token}");
    let mut checked = 0;
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let p = path.replace("{id}", "t").replace("{window}", "none");
            let body = if method == "post" && p.ends_with("/maintenance") {
                "{}"
            } else {
                ""
            };
            let r = request(
                g.admin,
                &method.to_uppercase(),
                Some("admin"),
                &p,
                &[("Authorization", auth.as_str())],
                body,
            )
            .unwrap();
            assert!(
                !r.body.contains("no such endpoint"),
                "{method} {path}: {}",
                r.body
            );
            let documented: Vec<u16> = ops[method]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|k| k.parse().unwrap())
                .collect();
            assert!(
                documented.contains(&r.status),
                "{method} {path} answered {} (documented {documented:?})",
                r.status
            );
            checked += 1;
        }
    }
    assert!(checked >= 9);
}
