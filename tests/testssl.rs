//! testssl (Debian testssl.sh) against a TLS listener of the real binary. In its own test
//! binary because it opens hundreds of connections, whose local ports would otherwise collide
//! with the listeners other tests are about to bind.

mod common;
mod tls_common;

use common::*;
use tls_common::*;

#[test]
fn testssl_finds_no_old_protocols_and_no_known_vulnerability() {
    let b = Backend::start("b", "127.0.0.1");
    let (g, tls, _) = start_one_tls_tenant(&b, "");
    let json = g.dir.path().join("testssl.json");
    let out = std::process::Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--ip",
            "127.0.0.1",
        ])
        .args(["--protocols", "--vulnerable", "--jsonfile"])
        .arg(&json)
        .arg(format!("https://a.tinh.test:{}", tls.port()))
        .output()
        .expect("run testssl");
    let report = std::fs::read_to_string(&json).unwrap_or_else(|_| {
        panic!(
            "no testssl report:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let findings: Vec<serde_json::Value> = serde_json::from_str(&report).unwrap();
    let finding = |id: &str| -> String {
        findings
            .iter()
            .find(|f| f["id"] == id)
            .map(|f| f["finding"].as_str().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("testssl has no `{id}`:\n{report}"))
    };
    for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(
            finding(old).starts_with("not offered"),
            "{old}: {}",
            finding(old)
        );
    }
    for new in ["TLS1_2", "TLS1_3"] {
        assert!(
            finding(new).starts_with("offered"),
            "{new}: {}",
            finding(new)
        );
    }
    let bad: Vec<&serde_json::Value> = findings
        .iter()
        .filter(|f| matches!(f["severity"].as_str(), Some("MEDIUM" | "HIGH" | "CRITICAL")))
        .collect();
    assert!(bad.is_empty(), "testssl findings: {bad:#?}");
}
