//! `cong check` and start-up on bad configuration: every error names file:line:column and key.

mod common;
use common::*;

const MAIN: &str =
    "[[listen]]\naddress = \"127.0.0.1:18080\"\n\n[admin]\naddress = \"127.0.0.1:19900\"\n";

#[test]
fn a_good_config_checks_ok() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\", \"*.a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\", \"[::1]:8081\", \"cms.a.local:80\"]\n";
    let (ok, out, _d) = check(MAIN, &[("a.toml", t)]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok (1 tenants, 2 host names, 1 pools)"),
        "{out}"
    );
}

#[test]
fn the_built_in_config_checks_ok() {
    let out = std::process::Command::new(CONG)
        .arg("check")
        .output()
        .unwrap();
    // Without /etc/cong/cong.toml this validates the compiled-in default.
    if !std::path::Path::new("/etc/cong/cong.toml").exists() {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("<built-in>/cong.toml: ok"));
    }
}

/// Asserts that checking fails with a message starting `FILE:LINE:COL:` naming `key`.
fn assert_error(
    main: &str,
    tenants: &[(&str, &str)],
    file: &str,
    line: usize,
    key: &str,
    words: &str,
) {
    let (ok, out, dir) = check(main, tenants);
    assert!(!ok, "expected failure, got: {out}");
    let path = if file == "cong.toml" {
        dir.path().join("cong.toml")
    } else {
        dir.path().join("tenants.d").join(file)
    };
    let want = format!("{}:{line}:", path.display());
    assert!(out.contains(&want), "expected `{want}` in: {out}");
    assert!(
        out.contains(&format!("`{key}`")),
        "expected key `{key}` in: {out}"
    );
    assert!(out.contains(words), "expected `{words}` in: {out}");
    assert_eq!(out.lines().count(), 1, "one line: {out}");
}

#[test]
fn unknown_key_in_main_file() {
    let main = format!("{MAIN}\n[server]\ngrace_periode = \"5s\"\n");
    assert_error(
        &main,
        &[],
        "cong.toml",
        8,
        "server.grace_periode",
        "unknown field",
    );
}

#[test]
fn unknown_key_in_tenant_file() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\nbalancing = \"round_robin\"\n";
    assert_error(
        MAIN,
        &[("a.toml", t)],
        "a.toml",
        6,
        "pools.main.balancing",
        "unknown field",
    );
}

#[test]
fn bad_value_types_and_durations() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\nread_timeout = \"30 secs\"\n";
    assert_error(
        MAIN,
        &[("a.toml", t)],
        "a.toml",
        6,
        "pools.main.read_timeout",
        "duration",
    );
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\nbalance = \"fastest\"\n";
    assert_error(
        MAIN,
        &[("a.toml", t)],
        "a.toml",
        6,
        "pools.main.balance",
        "unknown variant",
    );
}

#[test]
fn bad_backend_address() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\n  \"127.0.0.1:8081\",\n  \"::1:80\",\n]\n";
    assert_error(
        MAIN,
        &[("a.toml", t)],
        "a.toml",
        7,
        "pools.main.backends[1]",
        "brackets",
    );
}

#[test]
fn duplicate_host_across_tenant_files() {
    let a = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    let b = "id = \"b\"\nhosts = [\n  \"b.gov.vn\",\n  \"A.gov.vn\",\n]\n\n[pools.main]\nbackends = [\"127.0.0.1:8082\"]\n";
    assert_error(
        MAIN,
        &[("a.toml", a), ("b.toml", b)],
        "b.toml",
        4,
        "hosts",
        "already belongs to tenant `a`",
    );
}

#[test]
fn duplicate_tenant_id_and_bad_references() {
    let a = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    let b = "id = \"a\"\nhosts = [\"b.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8082\"]\n";
    assert_error(
        MAIN,
        &[("a.toml", a), ("b.toml", b)],
        "b.toml",
        1,
        "id",
        "already used",
    );
    let c = "id = \"c\"\nhosts = [\"c.gov.vn\"]\n\n[[routes]]\npath = \"/en\"\npool = \"english\"\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    assert_error(
        MAIN,
        &[("c.toml", c)],
        "c.toml",
        6,
        "routes[0].pool",
        "no pool named `english`",
    );
    let main = format!("[server]\ndefault_tenant = \"nobody\"\n\n{MAIN}");
    assert_error(
        &main,
        &[("a.toml", a)],
        "cong.toml",
        2,
        "server.default_tenant",
        "no tenant",
    );
}

#[test]
fn bad_hosts_listen_and_cidrs() {
    let t =
        "id = \"a\"\nhosts = [\"a.*.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    assert_error(MAIN, &[("a.toml", t)], "a.toml", 2, "hosts", "wildcard");
    let main = "[[listen]]\naddress = \"0.0.0.0\"\n";
    assert_error(main, &[], "cong.toml", 2, "listen[0].address", "IP:PORT");
    let main = format!("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{MAIN}");
    assert_error(
        &main,
        &[],
        "cong.toml",
        2,
        "server.trusted_proxies[0]",
        "CIDR",
    );
}

#[test]
fn toml_syntax_error_is_located() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"\n[pools.main]\n";
    let (ok, out, _d) = check(MAIN, &[("a.toml", t)]);
    assert!(!ok);
    assert!(out.contains("a.toml:3:"), "{out}");
}

#[test]
fn run_refuses_a_bad_config_and_a_busy_port() {
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\nbogus = 1\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut g = Gateway::spawn(
        &base_config(listen, admin, ""),
        &[("a.toml", t)],
        listen,
        admin,
    );
    let st = g
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("exits");
    assert!(!st.success());
    assert!(
        g.log_text().contains("a.toml:3:1: `bogus`"),
        "{}",
        g.log_text()
    );

    // A port in use: start-up fails with a clear error instead of waiting silently.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = busy.local_addr().unwrap();
    let t = "id = \"a\"\nhosts = [\"a.gov.vn\"]\n\n[pools.main]\nbackends = [\"127.0.0.1:8081\"]\n";
    let mut g = Gateway::spawn(
        &base_config(listen, admin, ""),
        &[("a.toml", t)],
        listen,
        admin,
    );
    let st = g
        .wait_exit(std::time::Duration::from_secs(10))
        .expect("exits");
    assert!(!st.success());
    assert!(
        g.log_text().contains(&format!("cannot listen on {listen}")),
        "{}",
        g.log_text()
    );
}

#[test]
fn the_shipped_example_config_checks_ok() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/cong.toml");
    let out = std::process::Command::new(CONG)
        .args(["check", "-c", path])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("ok (2 tenants, 5 host names, 3 pools)"),
        "{text}"
    );
}
