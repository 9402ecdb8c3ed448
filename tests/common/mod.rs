//! Test harness: the real `cong` binary, real HTTP backends on loopback, a plain HTTP client.
//! Every process and server started here is stopped when its handle is dropped.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub mod mmdb;

pub const CONG: &str = env!("CARGO_BIN_EXE_cong");

/// A free TCP port on the given loopback address.
///
/// Ports come from 20000-31999, below the kernel's ephemeral range (32768 and up): a port
/// picked there could be taken by any outgoing connection between the pick and the bind. Each
/// test process walks the range from its own starting point.
pub fn free_port(ip: &str) -> u16 {
    use std::sync::atomic::AtomicU32;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = (std::process::id() * 7919) % 12_000;
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + ((start + n) % 12_000) as u16;
        // Free on both loopback addresses, so a test may use either.
        let ok = TcpListener::bind((ip, port)).is_ok()
            && (ip != "127.0.0.1" || TcpListener::bind(("::1", port)).is_ok());
        if ok {
            return port;
        }
    }
    panic!("no free port in 20000-31999");
}

pub fn free_addr(ip: &str) -> SocketAddr {
    let ip: std::net::IpAddr = ip.parse().unwrap();
    SocketAddr::new(ip, free_port(&ip.to_string()))
}

/// Binds a listener on a fresh port of `ip`. A port found free can be taken by another process
/// before we bind it, so a failed bind moves on to the next candidate instead of failing the test.
pub fn bind_fresh(ip: &str) -> std::net::TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match std::net::TcpListener::bind(free_addr(ip)) {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
    }
    panic!("backend bind on {ip}: {last:?}");
}

/// Waits until `f` holds, polling; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

// ---------------------------------------------------------------------------------------------
// Backends

/// A real HTTP/1.1 server (keep-alive) answering with a description of the request it got:
/// `backend=NAME`, `method=`, `path=` and every header as `h:name=value`, one per line.
///
/// Paths with special meaning: `/slow?ms=N` waits N ms first; `/status/N` answers N;
/// `/close` closes the connection without answering; `/health` answers 200, or 503 while
/// `set_healthy(false)`.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    /// Requests answered, and requests whose head arrived (health checks apart).
    hits: Arc<[AtomicU64; 2]>,
    health_hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Backend {
    pub fn start(name: &str, ip: &str) -> Backend {
        Self::start_inner(name, bind_fresh(ip), None)
    }

    /// Starts on exactly `addr` (a restart of a stopped backend): retries while the old socket
    /// is still being torn down.
    pub fn start_at(name: &str, addr: SocketAddr) -> Backend {
        let mut tries = 0;
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if tries < 100 => {
                    tries += 1;
                    eprintln!("backend bind {addr}: {e}; retrying");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("backend bind {addr}: {e}"),
            }
        };
        Self::start_inner(name, listener, None)
    }

    /// The same server over TLS with the given certificate chain and key (PEM).
    pub fn start_tls(name: &str, ip: &str, cert_pem: &str, key_pem: &str) -> Backend {
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> =
            rustls_pemfile::certs(&mut cert_pem.as_bytes())
                .collect::<Result<_, _>>()
                .unwrap();
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .unwrap()
            .unwrap();
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        Self::start_inner(
            name,
            bind_fresh(ip),
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(cfg))),
        )
    }

    fn start_inner(
        name: &str,
        std_listener: std::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> Backend {
        let addr = std_listener.local_addr().unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let hits = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let health_hits = Arc::new(AtomicU64::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        std_listener.set_nonblocking(true).unwrap();
        let (n, h, hh, ok) = (
            name.to_string(),
            hits.clone(),
            health_hits.clone(),
            healthy.clone(),
        );
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let (n, h, hh, ok) = (n.clone(), h.clone(), hh.clone(), ok.clone());
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(s) = acceptor.accept(sock).await {
                                let _ = serve_conn(s, n, h, hh, ok).await;
                            }
                        }
                        None => {
                            let _ = serve_conn(sock, n, h, hh, ok).await;
                        }
                    }
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            hits,
            health_hits,
            healthy,
            rt: Some(rt),
        }
    }

    /// Requests other than health checks.
    pub fn hits(&self) -> u64 {
        self.hits[0].load(Ordering::SeqCst)
    }

    /// Requests whose head (request line and headers) arrived, health checks apart: a
    /// request the gateway refuses after sending it upstream is counted here, not in `hits`.
    pub fn heads(&self) -> u64 {
        self.hits[1].load(Ordering::SeqCst)
    }

    pub fn health_hits(&self) -> u64 {
        self.health_hits.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, v: bool) {
        self.healthy.store(v, Ordering::SeqCst);
    }

    /// Stops the server and closes every connection, as if the machine went away.
    pub fn stop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve_conn<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    sock: S,
    name: String,
    hits: Arc<[AtomicU64; 2]>,
    health_hits: Arc<AtomicU64>,
    healthy: Arc<AtomicBool>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut r = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let mut headers = Vec::new();
        let mut content_length = 0usize;
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 {
                return Ok(());
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                let v = v.trim().to_string();
                if k == "content-length" {
                    content_length = v.parse().unwrap_or(0);
                }
                headers.push((k, v));
            }
        }
        if !target.starts_with("/health") {
            hits[1].fetch_add(1, Ordering::SeqCst);
        }
        let mut body = vec![0u8; content_length];
        r.read_exact(&mut body).await?;
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let mut status = 200u16;
        if path == "/health" {
            health_hits.fetch_add(1, Ordering::SeqCst);
            status = if healthy.load(Ordering::SeqCst) {
                200
            } else {
                503
            };
        } else {
            hits[0].fetch_add(1, Ordering::SeqCst);
        }
        if path == "/close" {
            return Ok(());
        }
        if path == "/slow" {
            let ms: u64 = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(code) = path.strip_prefix("/status/") {
            status = code.parse().unwrap_or(500);
        }
        let mut out = format!(
            "backend={name}\nmethod={method}\npath={target}\nbody_len={}\nbody_fnv={:016x}\n",
            body.len(),
            fnv1a(&body)
        );
        for (k, v) in &headers {
            out.push_str(&format!("h:{k}={v}\n"));
        }
        let resp = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nX-Backend: {name}\r\n\r\n{out}",
            out.len()
        );
        r.get_mut().write_all(resp.as_bytes()).await?;
    }
}

/// FNV-1a of a body: what the echo backend reports of the bytes it got (`body_fnv=`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------------------------
// Client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(|s| s.as_str())
    }

    /// The backend that answered (from the echo body).
    pub fn backend(&self) -> Option<&str> {
        self.body.lines().find_map(|l| l.strip_prefix("backend="))
    }

    /// A request header as the backend saw it.
    pub fn seen_header(&self, name: &str) -> Option<&str> {
        let prefix = format!("h:{}=", name.to_ascii_lowercase());
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
    }

    pub fn seen_path(&self) -> Option<&str> {
        self.body.lines().find_map(|l| l.strip_prefix("path="))
    }
}

/// Sends one HTTP/1.1 request on a new connection and reads the whole response.
pub fn request(
    addr: SocketAddr,
    method: &str,
    host: Option<&str>,
    path: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> std::io::Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if let Some(h) = host {
        req.push_str(&format!("Host: {h}\r\n"));
    }
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes())?;
    read_response(s, method == "HEAD")
}

pub fn get(addr: SocketAddr, host: &str, path: &str) -> Response {
    request(addr, "GET", Some(host), path, &[], "").expect("request")
}

pub fn read_response(s: TcpStream, head: bool) -> std::io::Result<Response> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {line:?}"),
            )
        })?;
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let mut body = Vec::new();
    if head || status == 304 || status == 204 {
    } else if headers
        .get("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(n) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// ---------------------------------------------------------------------------------------------
// The gateway process

/// A running `cong run` with its own config directory; killed on drop.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub child: Option<Child>,
    pub log: PathBuf,
}

/// Builds the `[server]`, `[[listen]]` and `[admin]` part of a config for the given addresses.
pub fn base_config(listen: SocketAddr, admin: SocketAddr, extra_server: &str) -> String {
    format!(
        "[server]\nthreads = 2\ngrace_period = \"1s\"\nshutdown_timeout = \"1s\"\nupgrade_sock = \"/tmp/cong-test-{port}.sock\"\npid_file = \"/tmp/cong-test-{port}.pid\"\n{extra_server}\n\n[[listen]]\naddress = \"{listen}\"\n\n[admin]\naddress = \"{admin}\"\n\n",
        port = listen.port()
    )
}

impl Gateway {
    /// Writes `main` as cong.toml and each `(name, text)` into tenants.d, starts the gateway
    /// and waits for readiness.
    pub fn start(
        main: &str,
        tenants: &[(&str, &str)],
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> Gateway {
        let g = Self::spawn(main, tenants, listen, admin);
        g.wait_ready();
        g
    }

    pub fn spawn(
        main: &str,
        tenants: &[(&str, &str)],
        listen: SocketAddr,
        admin: SocketAddr,
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        write_config(dir.path(), main, tenants);
        let log = dir.path().join("cong.log");
        let child = Command::new(CONG)
            .args(["run", "-c"])
            .arg(dir.path().join("cong.toml"))
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start cong");
        Gateway {
            dir,
            listen,
            admin,
            child: Some(child),
            log,
        }
    }

    pub fn wait_ready(&self) {
        let start = Instant::now();
        loop {
            if let Ok(r) = request(self.admin, "GET", Some("admin"), "/readyz", &[], "") {
                if r.status == 200 {
                    // The traffic listener is bound by then, but make sure it accepts.
                    if TcpStream::connect_timeout(&self.listen, Duration::from_millis(200)).is_ok()
                    {
                        return;
                    }
                }
            }
            if start.elapsed() > Duration::from_secs(30) {
                panic!("cong did not become ready; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, host: &str, path: &str) -> Response {
        get(self.listen, host, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends a signal (e.g. libc SIGTERM) to the process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid() as i32, sig);
        }
    }

    /// Waits for the process to exit; returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    return Some(st);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn write_config(dir: &Path, main: &str, tenants: &[(&str, &str)]) {
    std::fs::write(dir.join("cong.toml"), main).unwrap();
    let td = dir.join("tenants.d");
    std::fs::create_dir_all(&td).unwrap();
    for (name, text) in tenants {
        std::fs::write(td.join(name), text).unwrap();
    }
}

/// Runs `cong check -c DIR/cong.toml` on a config written to a fresh directory.
pub fn check(main: &str, tenants: &[(&str, &str)]) -> (bool, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), main, tenants);
    let out = Command::new(CONG)
        .args(["check", "-c"])
        .arg(dir.path().join("cong.toml"))
        .output()
        .expect("run cong check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, dir)
}

/// A tenant file with one pool.
pub fn tenant(id: &str, hosts: &[&str], backends: &[SocketAddr], extra_pool: &str) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    let backends: Vec<String> = backends.iter().map(|b| format!("\"{b}\"")).collect();
    format!(
        "id = \"{id}\"\nhosts = [{}]\n\n[pools.main]\nbackends = [{}]\n{extra_pool}\n",
        hosts.join(", "),
        backends.join(", ")
    )
}

/// A throw-away CA and a server certificate it signed for `names` (PEM): (ca, chain, key).
pub fn test_pki(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cong test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

// ---------------------------------------------------------------------------------------------
// Load

/// Outcome of a stretch of load.
#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub ok: u64,
    /// (status or 0 for a transport error, detail)
    pub failures: Vec<(u16, String)>,
}

/// Runs `threads` clients sending GETs for `host` over keep-alive connections until `stop` is
/// set. A request that fails on a *reused* connection before any byte of a response arrived is
/// sent again on a new connection, as browsers do (the server may close idle connections at
/// any time); anything else that is not a 200 counts as a failure.
pub fn run_load(
    addr: SocketAddr,
    host: &str,
    threads: usize,
    stop: Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<LoadStats>> {
    (0..threads)
        .map(|_| {
            let stop = stop.clone();
            let host = host.to_string();
            std::thread::spawn(move || {
                let mut stats = LoadStats::default();
                let mut conn: Option<BufReader<TcpStream>> = None;
                while !stop.load(Ordering::SeqCst) {
                    let reused = conn.is_some();
                    let c = match conn.take() {
                        Some(c) => c,
                        None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                            Ok(s) => {
                                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                                BufReader::new(s)
                            }
                            Err(e) => {
                                stats.failures.push((0, format!("connect: {e}")));
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                        },
                    };
                    match keepalive_get(c, &host) {
                        Ok((status, c)) => {
                            if status == 200 {
                                stats.ok += 1;
                            } else {
                                stats.failures.push((status, "status".into()));
                            }
                            conn = c;
                        }
                        Err((e, got_bytes)) => {
                            if !reused || got_bytes {
                                stats.failures.push((0, e));
                            }
                        }
                    }
                }
                stats
            })
        })
        .collect()
}

/// Status and the connection if reusable; or the error and whether response bytes arrived.
type KeepAliveResult = Result<(u16, Option<BufReader<TcpStream>>), (String, bool)>;

/// One GET on a kept-alive connection; returns the status and the connection if reusable.
fn keepalive_get(mut c: BufReader<TcpStream>, host: &str) -> KeepAliveResult {
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
    c.get_mut()
        .write_all(req.as_bytes())
        .map_err(|e| (format!("write: {e}"), false))?;
    let mut line = String::new();
    match c.read_line(&mut line) {
        Ok(0) => return Err(("closed before response".into(), false)),
        Ok(_) => {}
        Err(e) => return Err((format!("read: {e}"), false)),
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or((format!("bad status line {line:?}"), true))?;
    let mut len = 0usize;
    let mut close = false;
    loop {
        let mut h = String::new();
        c.read_line(&mut h)
            .map_err(|e| (format!("read header: {e}"), true))?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; len];
    c.read_exact(&mut body)
        .map_err(|e| (format!("read body: {e}"), true))?;
    Ok((status, if close { None } else { Some(c) }))
}

/// Stops load threads and adds up their results.
pub fn finish_load(
    stop: Arc<AtomicBool>,
    handles: Vec<std::thread::JoinHandle<LoadStats>>,
) -> LoadStats {
    stop.store(true, Ordering::SeqCst);
    let mut total = LoadStats::default();
    for h in handles {
        let s = h.join().unwrap();
        total.ok += s.ok;
        total.failures.extend(s.failures);
    }
    total
}

/// SHA-256 hex of a token, as the configuration stores it.
pub fn sha256_hex(token: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, token.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
