//! TLS helpers for the integration tests: a blocking rustls client that records what the
//! handshake saw (certificate, ALPN, version, resumption), and certificate factories.

#![allow(dead_code)]

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting only the roots in `ca_pem`.
pub fn client_with_roots(ca_pem: &str) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A client that accepts any certificate (to look at what the gateway serves).
pub fn client_any(
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    let mut cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(cong::upstream::tls::NoVerify(provider())))
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    Arc::new(cfg)
}

/// What one TLS connection saw.
#[derive(Debug)]
pub struct TlsSeen {
    pub names: Vec<String>,
    pub serial: String,
    pub issuer: String,
    pub alpn: Option<Vec<u8>>,
    pub version: Option<rustls::ProtocolVersion>,
    pub resumed: bool,
    /// Status and raw response text when a request was sent.
    pub status: u16,
    pub response: String,
}

impl TlsSeen {
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.response.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
    /// A request header as the echo backend saw it.
    pub fn seen_header(&self, name: &str) -> Option<String> {
        let prefix = format!("h:{}=", name.to_ascii_lowercase());
        self.response
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(|s| s.to_string()))
    }
}

/// Handshakes with `sni` and, when `host` is given, sends `GET path` with that Host.
pub fn tls_request(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    sni: &str,
    host: Option<&str>,
    path: &str,
) -> Result<TlsSeen, String> {
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(cfg.clone(), name).map_err(|e| e.to_string())?;
    let sock =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(20))).ok();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let mut response = String::new();
    let mut status = 0;
    if let Some(h) = host {
        let req = format!("GET {path} HTTP/1.1\r\nHost: {h}\r\nConnection: close\r\n\r\n");
        tls.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        // The gateway may close without close_notify after the response; keep what arrived.
        let _ = tls.read_to_end(&mut buf);
        response = String::from_utf8_lossy(&buf).into_owned();
        status = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
    }
    let leaf = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                names.push(d.to_string());
            }
        }
    }
    Ok(TlsSeen {
        names,
        serial: cert.raw_serial_as_string(),
        issuer: cert.issuer().to_string(),
        alpn: tls.conn.alpn_protocol().map(|a| a.to_vec()),
        version: tls.conn.protocol_version(),
        resumed: tls.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
        status,
        response,
    })
}

/// A certificate for `names` signed by a fresh CA, valid from `from` to `to` (years):
/// (ca, chain, key).
pub fn pki_with_validity(names: &[&str], from: i32, to: i32) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params.not_before = rcgen::date_time_ymd(from, 1, 1);
    params.not_after = rcgen::date_time_ymd(to, 1, 1);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------------------------------------
// Real peers: pebble (ACME CA), pebble-challtestsrv (DNS), named (BIND).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process killed on drop, with its output in a file.
pub struct Proc {
    pub child: Option<Child>,
    pub log: PathBuf,
    pub name: &'static str,
}

impl Proc {
    pub fn spawn(name: &'static str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Proc {
            child: Some(child),
            log,
            name,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `addr` accepts TCP connections, or panics with the log.
    pub fn wait_tcp(&mut self, addr: SocketAddr) {
        let start = std::time::Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("{} exited with {st}:\n{}", self.name, self.log_text());
            }
            if start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "{} not listening on {addr}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// pebble-challtestsrv as a DNS server answering every A query with 127.0.0.1 (no AAAA).
pub struct ChallDns {
    pub proc: Proc,
    pub dns: SocketAddr,
    pub mgmt: SocketAddr,
}

impl ChallDns {
    pub fn start(dir: &Path) -> ChallDns {
        let dns = crate::common::free_addr("127.0.0.1");
        let mgmt = crate::common::free_addr("127.0.0.1");
        let mut proc = Proc::spawn(
            "pebble-challtestsrv",
            Command::new("pebble-challtestsrv")
                .arg("-dns01")
                .arg(dns.to_string())
                .arg("-management")
                .arg(mgmt.to_string())
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""]),
            dir.join("challtestsrv.log"),
        );
        proc.wait_tcp(mgmt);
        ChallDns { proc, dns, mgmt }
    }

    /// Calls a management endpoint (`/add-a`, `/add-caa`, ...) with a JSON body.
    pub fn manage(&self, path: &str, json: &str) {
        let r = crate::common::request(self.mgmt, "POST", Some("localhost"), path, &[], json)
            .expect("challtestsrv management");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
}

/// A pebble ACME CA on loopback, validating HTTP-01 on `http_port`, resolving through `dns`.
pub struct Pebble {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub mgmt: SocketAddr,
    /// PEM of the CA that signed pebble's own HTTPS certificate (cong's `trust_root`).
    pub tls_ca_pem: String,
    pub tls_ca_path: PathBuf,
}

impl Pebble {
    pub fn start(http_port: u16, dns: SocketAddr) -> Pebble {
        Self::start_with(http_port, dns, None)
    }

    /// With `eab = Some((kid, base64url key))`, accounts need external account binding.
    pub fn start_with(http_port: u16, dns: SocketAddr, eab: Option<(&str, &str)>) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (ca, chain, key) = crate::common::test_pki(&["localhost", "127.0.0.1"]);
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("ca.pem"), &ca).unwrap();
        std::fs::write(p("cert.pem"), &chain).unwrap();
        std::fs::write(p("key.pem"), &key).unwrap();
        let listen = crate::common::free_addr("127.0.0.1");
        let mgmt = crate::common::free_addr("127.0.0.1");
        let tls_port = crate::common::free_port("127.0.0.1");
        let cfg = format!(
            r#"{{"pebble": {{"listenAddress": "{listen}", "managementListenAddress": "{mgmt}",
  "certificate": "{c}", "privateKey": "{k}", "httpPort": {http_port}, "tlsPort": {tls_port},
  "ocspResponderURL": "", "externalAccountBindingRequired": {required},
  "externalAccountMACKeys": {{{keys}}}}}}}"#,
            c = p("cert.pem").display(),
            k = p("key.pem").display(),
            required = eab.is_some(),
            keys = eab
                .map(|(kid, key)| format!("\"{kid}\": \"{key}\""))
                .unwrap_or_default()
        );
        std::fs::write(p("pebble.json"), cfg).unwrap();
        let mut proc = Proc::spawn(
            "pebble",
            Command::new("pebble")
                .arg("-config")
                .arg(p("pebble.json"))
                .arg("-dnsserver")
                .arg(dns.to_string())
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0"),
            p("pebble.log"),
        );
        proc.wait_tcp(listen);
        proc.wait_tcp(mgmt);
        Pebble {
            proc,
            tls_ca_path: p("ca.pem"),
            dir,
            listen,
            mgmt,
            tls_ca_pem: ca,
        }
    }

    pub fn directory(&self) -> String {
        format!("https://{}/dir", self.listen)
    }

    /// The root that signs the certificates pebble issues (changes on every start).
    pub fn issuing_root(&self) -> String {
        let cl = client_with_roots(&self.tls_ca_pem);
        let r = tls_request(&cl, self.mgmt, "localhost", Some("localhost"), "/roots/0")
            .expect("pebble roots");
        assert_eq!(r.status, 200, "{}", r.response);
        http_body(&r.response)
    }
}

/// The body of a raw HTTP/1.1 response (plain or chunked).
pub fn http_body(raw: &str) -> String {
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw, ""));
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_string();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

/// BIND's named, authoritative on loopback for `zones`, accepting RFC 2136 updates signed with
/// the TSIG key `cong-key` (hmac-sha256, secret `secret_b64`).
pub struct Bind {
    pub proc: Proc,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
}

impl Bind {
    pub fn start(zones: &[&str], secret_b64: &str) -> Bind {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let port = crate::common::free_port("127.0.0.1");
        let mut conf = format!(
            "options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n  managed-keys-directory \"{d}\";\n  recursion no;\n  dnssec-validation no;\n  notify no;\n}};\ncontrols {{ }};\nkey \"cong-key\" {{ algorithm hmac-sha256; secret \"{secret_b64}\"; }};\n"
        );
        for z in zones {
            std::fs::write(
                dir.path().join(format!("{z}.zone")),
                format!(
                    "$TTL 60\n@ IN SOA ns.{z}. admin.{z}. 1 60 60 600 60\n@ IN NS ns.{z}.\nns IN A 127.0.0.1\n@ IN A 127.0.0.1\n* IN A 127.0.0.1\n"
                ),
            )
            .unwrap();
            conf.push_str(&format!(
                "zone \"{z}\" {{ type primary; file \"{d}/{z}.zone\"; allow-update {{ key \"cong-key\"; }}; }};\n"
            ));
        }
        std::fs::write(dir.path().join("named.conf"), conf).unwrap();
        let mut proc = Proc::spawn(
            "named",
            // named lives in /usr/sbin, which is not on every user's PATH.
            Command::new(if Path::new("/usr/sbin/named").exists() {
                "/usr/sbin/named"
            } else {
                "named"
            })
            .args(["-g", "-4", "-c"])
            .arg(dir.path().join("named.conf")),
            dir.path().join("named.log"),
        );
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        proc.wait_tcp(addr);
        Bind { proc, dir, addr }
    }

    /// `dig +short` of a TXT record.
    pub fn txt(&self, name: &str) -> String {
        let out = Command::new("dig")
            .arg(format!("@{}", self.addr.ip()))
            .args(["-p", &self.addr.port().to_string(), "+short", "TXT", name])
            .output()
            .expect("dig");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// The gateway with TLS listeners.

/// A main config with one plain and one TLS listener.
pub fn main_config(plain: SocketAddr, tls: SocketAddr, admin: SocketAddr, extra: &str) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupgrade_sock = \"/tmp/cong-test-{p}.sock\"\npid_file = \"/tmp/cong-test-{p}.pid\"\n\n[[listen]]\naddress = \"{plain}\"\n\n[[listen]]\naddress = \"{tls}\"\ntls = true\n\n[admin]\naddress = \"{admin}\"\n\n[[admin.token]]\nname = \"tests\"\nsha256 = \"542a6818ec70511212bf6b4b6f24bc6204ee74e2dda4808ec2c2539df1045bb8\"\n\n[tls]\ncert_dir = \"certs\"\nhttps_port = {tp}\n{extra}\n",
        p = plain.port(),
        tp = tls.port()
    )
}

/// A gateway with one tenant, `a` for `a.tinh.test`, its certificate from `test_pki`, in front
/// of `backend`; `tenant_extra` is appended to its tenant file. Returns the gateway, its TLS
/// address and the test CA (PEM).
pub fn start_one_tls_tenant(
    backend: &crate::common::Backend,
    tenant_extra: &str,
) -> (crate::common::Gateway, SocketAddr, String) {
    use crate::common::{free_addr, tenant, test_pki, write_config};
    let (plain, tls, admin) = (
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
        free_addr("127.0.0.1"),
    );
    let (ca, chain, key) = test_pki(&["a.tinh.test"]);
    let main = main_config(plain, tls, admin, "");
    let t = format!(
        "tls_cert = \"a.pem\"\ntls_key = \"a.key\"\n{}{tenant_extra}",
        tenant("a", &["a.tinh.test"], &[backend.addr], "")
    );
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), &main, &[("a.toml", &t)]);
    std::fs::write(dir.path().join("a.pem"), &chain).unwrap();
    std::fs::write(dir.path().join("a.key"), &key).unwrap();
    (start_in(dir, plain, admin), tls, ca)
}

/// Starts the gateway on a config directory already written.
pub fn start_in(
    dir: tempfile::TempDir,
    listen: SocketAddr,
    admin: SocketAddr,
) -> crate::common::Gateway {
    let log = dir.path().join("cong.log");
    let child = std::process::Command::new(crate::common::CONG)
        .args(["run", "-c"])
        .arg(dir.path().join("cong.toml"))
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start cong");
    let g = crate::common::Gateway {
        dir,
        listen,
        admin,
        child: Some(child),
        log,
    };
    g.wait_ready();
    // Readiness covers the plain listener; the TLS listeners are bound by their own service
    // and may come up a moment later: wait until every configured address accepts.
    let cfg = std::fs::read_to_string(g.dir.path().join("cong.toml")).unwrap_or_default();
    for addr in cfg.lines().filter_map(|l| {
        l.trim()
            .strip_prefix("address = \"")?
            .strip_suffix('"')?
            .parse::<SocketAddr>()
            .ok()
    }) {
        crate::common::wait_until(
            &format!("{addr} accepting"),
            std::time::Duration::from_secs(10),
            || {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
                    .is_ok()
            },
        );
    }
    g
}
