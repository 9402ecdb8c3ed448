//! SOC log shipping: every access and security/ops event, numbered, formatted and delivered to
//! the configured sinks (the provincial SOC's syslog collectors, the local archive).
//!
//! Flow: producers (`proxy::logging` through `access`, everything else through
//! `events::emit`) hand a `Record` to `submit`, which only tries to put it in a bounded
//! in-memory queue and never waits: when the queue is full the event is dropped and counted.
//! One dispatcher thread numbers records in queue order (the sequence number persists across
//! restarts in `state_dir/sequence`) and passes each to the sinks whose filter takes it; each
//! sink has its own queue and thread (`sink`), and network sinks spool to disk (`spool`) while
//! their collector is away. Dropped events are reported once a second as a
//! `log_events_dropped` security event. `report` reads the archive back for the weekly SOC
//! report. This module owns the pipeline and its counters; it must not change how producers
//! build events, and nothing here may block the request path.

pub mod event;
pub mod format;
pub mod report;
pub mod sink;
pub mod spool;

use crate::config::{Config, SinkFormat, SinkKind, SourceFile};
use crate::config::{ConfigError, SinkConfig};
use crate::events::{self, Event, Severity};
use event::{AccessEvent, Body, Class, Record};
use sink::{FileSpec, NetSpec, SinkCounters, SinkSpec};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Counters of the whole pipeline, plain atomics for a metrics endpoint.
#[derive(Debug, Default)]
pub struct Counters {
    /// Events waiting in the central queue.
    pub queue_depth: AtomicU64,
    /// Events dropped because the central queue was full (`log_events_dropped_total` is this
    /// plus every sink's `dropped`).
    pub dropped: AtomicU64,
    /// Per sink, in configuration order.
    pub sinks: Vec<(String, Arc<SinkCounters>)>,
}

impl Counters {
    pub fn dropped_total(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
            + self
                .sinks
                .iter()
                .map(|(_, c)| c.dropped.load(Ordering::Relaxed))
                .sum::<u64>()
    }
}

/// The checked `[soc]` settings.
#[derive(Clone)]
pub struct Settings {
    pub state_dir: PathBuf,
    pub context: format::Context,
    pub queue_size: usize,
    pub sinks: Vec<SinkSpec>,
}

enum Msg {
    Rec(Record),
    Stop,
}

struct Pipeline {
    tx: SyncSender<Msg>,
    counters: Arc<Counters>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

static PIPELINE: OnceLock<Pipeline> = OnceLock::new();

/// The pipeline's counters, once it runs.
pub fn counters() -> Option<Arc<Counters>> {
    PIPELINE.get().map(|p| p.counters.clone())
}

/// True when events are shipped anywhere (so producers may skip building them otherwise).
pub fn enabled() -> bool {
    PIPELINE.get().is_some()
}

/// Queues a record without waiting; a full queue drops it (counted).
pub fn submit(r: Record) {
    let Some(p) = PIPELINE.get() else {
        return;
    };
    p.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
    match p.tx.try_send(Msg::Rec(r)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
            p.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
            p.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Hands a security/ops event to the pipeline (called by `events::emit`).
pub fn submit_event(ev: Event) {
    if enabled() {
        submit(Record::new(Body::Event(ev)));
    }
}

// ---------------------------------------------------------------------------------------------
// Access events

/// What the proxy knows about a finished request besides the session itself.
pub struct AccessFacts<'a> {
    pub request_id: &'a str,
    pub tenant: &'a str,
    pub host: &'a str,
    pub client_ip: IpAddr,
    pub started: Instant,
    pub upstream: Option<SocketAddr>,
    pub upstream_ms: Option<u64>,
    pub tries: u32,
    pub status: u16,
    pub error: Option<&'static str>,
    /// Server name the client asked for in the TLS handshake.
    pub sni: Option<&'a str>,
    /// Country of the client address (`--` when unknown).
    pub country: &'a str,
    /// The WAF's anomaly score and the rules that matched (when it inspected the request).
    pub waf_score: Option<i32>,
    pub waf_rules: Vec<u32>,
    /// Also write the operator's access line on standard error.
    pub stderr: bool,
}

/// Records one request: the access line on standard error when asked, and an access event
/// for the sinks when shipping is on.
pub fn access(session: &pingora::proxy::Session, f: AccessFacts) {
    if !f.stderr && !enabled() {
        return;
    }
    let req = session.req_header();
    let (path, query) = match req.uri.path_and_query() {
        Some(pq) => (pq.path(), pq.query()),
        None => ("/", None),
    };
    let header = |n: &str| {
        req.headers
            .get(n)
            .map(|v| event::cap(&String::from_utf8_lossy(v.as_bytes()), event::MAX_HEADER))
    };
    let tls = session.digest().and_then(|d| d.ssl_digest.clone());
    let client_port = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .filter(|a| a.ip().to_canonical() == f.client_ip)
        .map(|a| a.port());
    let ev = AccessEvent {
        tenant: f.tenant.to_string(),
        host: f.host.to_string(),
        sni: f.sni.map(str::to_string),
        client_ip: Some(f.client_ip),
        client_port,
        country: f.country.to_string(),
        method: req.method.as_str().to_string(),
        path: event::cap(&percent_decode_lossy(path), event::MAX_PATH),
        query: query.map(|q| event::cap(q, event::MAX_QUERY)),
        status: f.status,
        bytes_in: session.body_bytes_read() as u64,
        bytes_out: session.body_bytes_sent() as u64,
        duration_us: f.started.elapsed().as_micros() as u64,
        upstream: f.upstream.map(|a| a.to_string()),
        upstream_ms: f.upstream_ms,
        tries: f.tries,
        cache: None,
        tls_version: tls.as_ref().map(|t| t.version.to_string()),
        tls_cipher: tls.as_ref().map(|t| t.cipher.to_string()),
        http_version: match req.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2",
            _ => "1.1",
        },
        user_agent: header("user-agent"),
        referer: header("referer"),
        request_id: f.request_id.to_string(),
        waf_score: f.waf_score,
        waf_rules: f.waf_rules,
        ratelimit: None,
        error: f.error.map(str::to_string),
    };
    if f.stderr {
        log::info!(target: "access", "{}", ev.to_logline());
    }
    if enabled() {
        submit(Record::new(Body::Access(Box::new(ev))));
    }
}

/// `%C3%A1` → `á` for the logged path, so Vietnamese paths are readable in the SOC; invalid
/// UTF-8 stays percent-encoded.
fn percent_decode_lossy(p: &str) -> String {
    if !p.contains('%') {
        return p.to_string();
    }
    let b = p.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(_) => p.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Settings

fn parse_offset(s: &str) -> Option<i32> {
    if s == "Z" || s == "+00:00" {
        return Some(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 14 && m < 60 && h.to_string().len() <= 2).then_some(sign * (h * 60 + m))
}

fn parse_facility(s: &str) -> Option<u8> {
    Some(match s {
        "kern" => 0,
        "user" => 1,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "authpriv" => 10,
        "security" | "log_audit" => 13,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}

fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname(2) writes at most len bytes into our buffer.
    let r = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if r != 0 {
        return "cong".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl Settings {
    /// Checks `[soc]` (addresses, files, names) and resolves paths. `None` without `[soc]`.
    pub fn build(cfg: &Config) -> Result<Option<Settings>, ConfigError> {
        let Some(soc) = &cfg.main.soc else {
            return Ok(None);
        };
        let src = &cfg.main_source;
        let offset = parse_offset(soc.utc_offset.get_ref()).ok_or_else(|| {
            src.error_at(
                soc.utc_offset.span(),
                "soc.utc_offset",
                "expected \"Z\" or an offset like \"+07:00\"",
            )
        })?;
        let facility = parse_facility(soc.facility.get_ref()).ok_or_else(|| {
            src.error_at(
                soc.facility.span(),
                "soc.facility",
                "unknown facility: use local0…local7, user, daemon, auth, authpriv or security",
            )
        })?;
        let name = match &soc.name {
            Some(n) => {
                let ok = !n.get_ref().is_empty()
                    && n.get_ref().len() <= 255
                    && n.get_ref().chars().all(|c| c.is_ascii_graphic());
                if !ok {
                    return Err(src.error_at(
                        n.span(),
                        "soc.name",
                        "must be 1-255 printable ASCII characters without spaces",
                    ));
                }
                n.get_ref().clone()
            }
            None => hostname(),
        };
        let queue_size = *soc.queue_size.get_ref();
        if queue_size == 0 {
            return Err(src.error_at(
                soc.queue_size.span(),
                "soc.queue_size",
                "must be at least 1",
            ));
        }
        let state_dir = cfg.resolve(soc.state_dir.get_ref());
        let mut sinks = Vec::new();
        for s in &soc.sink {
            let spec = build_sink(cfg, src, s, &state_dir, queue_size)?;
            if sinks.iter().any(|o: &SinkSpec| o.name == spec.name) {
                return Err(src.error_at(
                    s.name.span(),
                    "soc.sink.name",
                    format!("sink `{}` is defined twice", spec.name),
                ));
            }
            sinks.push(spec);
        }
        Ok(Some(Settings {
            state_dir,
            context: format::Context::new(&name, facility, offset),
            queue_size,
            sinks,
        }))
    }
}

fn build_sink(
    cfg: &Config,
    src: &SourceFile,
    s: &SinkConfig,
    state_dir: &std::path::Path,
    queue_size: usize,
) -> Result<SinkSpec, ConfigError> {
    let name = s.name.get_ref().clone();
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(src.error_at(
            s.name.span(),
            "soc.sink.name",
            "letters, digits, `-` and `_` only, at most 64",
        ));
    }
    let missing = |key: &str| {
        src.error_at(
            s.name.span(),
            format!("soc.sink.{key}"),
            format!("sink `{name}` needs `{key}`"),
        )
    };
    let classes = match &s.events {
        None => vec![Class::Access, Class::Security, Class::Ops],
        Some(list) => {
            let mut v = Vec::new();
            for e in list.get_ref() {
                match Class::parse(e) {
                    Some(c) => v.push(c),
                    None => {
                        return Err(src.error_at(
                            list.span(),
                            "soc.sink.events",
                            format!("unknown event class `{e}`: use access, security or ops"),
                        ))
                    }
                }
            }
            v
        }
    };
    let format = s.format.unwrap_or(match s.kind {
        SinkKind::File => SinkFormat::Json,
        _ => SinkFormat::Rfc5424,
    });
    let mut spec = SinkSpec {
        name: name.clone(),
        kind: s.kind,
        format,
        classes,
        queue_size: s.queue_size.unwrap_or(queue_size).max(1),
        file: None,
        net: None,
    };
    if s.kind == SinkKind::File {
        if let Some(a) = &s.address {
            return Err(src.error_at(
                a.span(),
                "soc.sink.address",
                "a file sink has a `path`, not an `address`",
            ));
        }
        let path = s.path.as_ref().ok_or_else(|| missing("path"))?;
        if s.rotate_bytes < 4096 {
            return Err(src.error_at(
                s.name.span(),
                "soc.sink.rotate_bytes",
                "must be at least 4096",
            ));
        }
        spec.file = Some(FileSpec {
            path: cfg.resolve(path.get_ref()),
            rotate_bytes: s.rotate_bytes,
            rotate_daily: s.rotate_daily,
            compress: s.compress,
            retention: s.retention.get(),
        });
        return Ok(spec);
    }
    if let Some(p) = &s.path {
        return Err(src.error_at(
            p.span(),
            "soc.sink.path",
            "a network sink has an `address`, not a `path`",
        ));
    }
    let (address, http, https) = if s.kind == SinkKind::Http {
        if let Some(a) = &s.address {
            return Err(src.error_at(
                a.span(),
                "soc.sink.address",
                "an HTTP sink has a `url`, not an `address`",
            ));
        }
        if s.format.is_some_and(|f| f != SinkFormat::Json) {
            return Err(src.error_at(
                s.name.span(),
                "soc.sink.format",
                "HTTP sinks send JSON only",
            ));
        }
        spec.format = SinkFormat::Json;
        let url = s.url.as_ref().ok_or_else(|| missing("url"))?;
        let bad = || {
            src.error_at(
                url.span(),
                "soc.sink.url",
                "expected http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
            )
        };
        let (https, rest) = match url.get_ref().split_once("://") {
            Some(("http", r)) => (false, r),
            Some(("https", r)) => (true, r),
            _ => return Err(bad()),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let address = if has_port {
            authority.to_string()
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let target = sink::HttpTarget {
            host: authority.to_string(),
            path: path.to_string(),
            batch_max: s.batch_max.max(1),
        };
        (toml::Spanned::new(url.span(), address), Some(target), https)
    } else {
        if let Some(u) = &s.url {
            return Err(src.error_at(u.span(), "soc.sink.url", "only for `type = \"http\"` sinks"));
        }
        let a = s.address.as_ref().ok_or_else(|| missing("address"))?;
        (a.clone(), None, false)
    };
    let address = &address;
    let host = match address.get_ref().rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0) => {
            h.trim_start_matches('[').trim_end_matches(']').to_string()
        }
        _ => {
            return Err(src.error_at(
                address.span(),
                "soc.sink.address",
                "expected IP:PORT, [IPv6]:PORT or name:PORT",
            ))
        }
    };
    let tls = if s.kind == SinkKind::Tls || https {
        Some(tls_spec(cfg, src, s, &host)?)
    } else {
        for (k, v) in [
            ("ca_file", &s.ca_file),
            ("client_cert", &s.client_cert),
            ("client_key", &s.client_key),
            ("server_name", &s.server_name),
        ] {
            if let Some(v) = v {
                return Err(src.error_at(
                    v.span(),
                    format!("soc.sink.{k}"),
                    "only for `type = \"tls\"` sinks and https URLs",
                ));
            }
        }
        None
    };
    spec.net = Some(NetSpec {
        address: address.get_ref().clone(),
        tls,
        http,
        spool_dir: state_dir.join("spool").join(&name),
        spool_max: s.spool_max_bytes,
        connect_timeout: s.connect_timeout.get(),
        write_timeout: s.write_timeout.get(),
        reconnect_max: s.reconnect_max.get().max(Duration::from_millis(100)),
    });
    Ok(spec)
}

fn read_pem_certs(
    cfg: &Config,
    src: &SourceFile,
    v: &toml::Spanned<String>,
    key: &str,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    let path = cfg.resolve(v.get_ref());
    let bytes = std::fs::read(&path).map_err(|e| {
        src.error_at(
            v.span(),
            key,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| src.error_at(v.span(), key, format!("{}: bad PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(src.error_at(
            v.span(),
            key,
            format!("{}: no certificate in it", path.display()),
        ));
    }
    Ok(certs)
}

fn tls_spec(
    cfg: &Config,
    src: &SourceFile,
    s: &SinkConfig,
    host: &str,
) -> Result<sink::net::TlsSpec, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match &s.ca_file {
        Some(ca) => {
            for c in read_pem_certs(cfg, src, ca, "soc.sink.ca_file")? {
                roots.add(c).map_err(|e| {
                    src.error_at(ca.span(), "soc.sink.ca_file", format!("bad CA: {e}"))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| src.error_at(s.name.span(), "soc.sink", format!("TLS: {e}")))?
        .with_root_certificates(roots);
    let config = match (&s.client_cert, &s.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(c), Some(k)) => {
            let chain = read_pem_certs(cfg, src, c, "soc.sink.client_cert")?;
            let kp = cfg.resolve(k.get_ref());
            let key_err = |m: String| src.error_at(k.span(), "soc.sink.client_key", m);
            let bytes = std::fs::read(&kp)
                .map_err(|e| key_err(format!("cannot read {}: {e}", kp.display())))?;
            let key = rustls_pemfile::private_key(&mut bytes.as_slice())
                .map_err(|e| key_err(format!("{}: bad PEM: {e}", kp.display())))?
                .ok_or_else(|| key_err(format!("{}: no private key in it", kp.display())))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| key_err(format!("client certificate and key: {e}")))?
        }
        (Some(v), None) | (None, Some(v)) => {
            return Err(src.error_at(
                v.span(),
                "soc.sink.client_cert",
                "`client_cert` and `client_key` go together",
            ))
        }
    };
    let name = s
        .server_name
        .as_ref()
        .map(|n| n.get_ref().clone())
        .unwrap_or_else(|| host.to_string());
    let server_name = rustls::pki_types::ServerName::try_from(name.clone()).map_err(|_| {
        src.error_at(
            s.server_name
                .as_ref()
                .map(|n| n.span())
                .unwrap_or(s.name.span()),
            "soc.sink.server_name",
            format!("`{name}` is not a valid server name"),
        )
    })?;
    Ok(sink::net::TlsSpec {
        config: Arc::new(config),
        server_name,
    })
}

// ---------------------------------------------------------------------------------------------
// Running

/// The persisted sequence counter. Numbers are reserved in blocks written ahead to
/// `state_dir/sequence`, so after a crash numbering resumes above anything already used (a
/// visible gap, never a repeat); a clean stop writes the exact next number.
struct Sequence {
    path: PathBuf,
    next: u64,
    reserved: u64,
}

const SEQ_BLOCK: u64 = 10_000;

impl Sequence {
    fn open(path: PathBuf) -> anyhow::Result<Sequence> {
        use anyhow::Context as _;
        let next = match std::fs::read_to_string(&path) {
            Ok(t) => t
                .trim()
                .parse::<u64>()
                .with_context(|| format!("{}: not a number", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("read {}", path.display()))),
        };
        let mut s = Sequence {
            path,
            next,
            reserved: next,
        };
        s.reserve()?;
        Ok(s)
    }

    fn write(&self, v: u64) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, format!("{v}\n"))
            .with_context(|| format!("write {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("write {}", self.path.display()))?;
        Ok(())
    }

    fn reserve(&mut self) -> anyhow::Result<()> {
        self.write(self.next + SEQ_BLOCK)?;
        self.reserved = self.next + SEQ_BLOCK;
        Ok(())
    }

    fn take(&mut self) -> u64 {
        let n = self.next;
        self.next += 1;
        if self.next >= self.reserved {
            if let Err(e) = self.reserve() {
                // Keep numbering in memory; the state file is only for restarts.
                log::error!("cannot persist the event sequence: {e:#}");
                self.reserved = self.next + SEQ_BLOCK;
            }
        }
        n
    }
}

struct SinkHandle {
    classes: Vec<Class>,
    tx: SyncSender<Arc<Record>>,
    counters: Arc<SinkCounters>,
    name: String,
}

/// Starts the dispatcher and one thread per sink. Call once, before traffic.
pub fn start(settings: Settings) -> anyhow::Result<Arc<Counters>> {
    use anyhow::Context as _;
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("create {}", settings.state_dir.display()))?;
    let lock_path = settings.state_dir.join("lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .with_context(|| format!("open {}", lock_path.display()))?;
    let locked = flock(&lock, false);
    // Channels and counters first, so the pipeline is in place before any sink thread can
    // report something (a collector refusing the first connection, say).
    let mut handles = Vec::new();
    let mut starts = Vec::new();
    let mut sink_counters = Vec::new();
    for spec in settings.sinks {
        let counters = Arc::new(SinkCounters::default());
        // Unknown until the first attempt; "up" so the first failure is reported.
        counters.up.store(true, Ordering::Relaxed);
        let (tx, rx) = mpsc::sync_channel(spec.queue_size);
        sink_counters.push((spec.name.clone(), counters.clone()));
        handles.push(SinkHandle {
            classes: spec.classes.clone(),
            tx,
            counters: counters.clone(),
            name: spec.name.clone(),
        });
        starts.push((spec, rx, counters));
    }
    let counters = Arc::new(Counters {
        queue_depth: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        sinks: sink_counters,
    });
    let (tx, rx) = mpsc::sync_channel(settings.queue_size);
    PIPELINE
        .set(Pipeline {
            tx,
            counters: counters.clone(),
            threads: Mutex::new(Vec::new()),
        })
        .map_err(|_| anyhow::anyhow!("the SOC pipeline is already running"))?;
    let c = counters.clone();
    let state_dir_text = settings.state_dir.display().to_string();
    let run = move || -> anyhow::Result<()> {
        let seq = Sequence::open(settings.state_dir.join("sequence"))?;
        let mut threads = launch(&settings.context, rx, handles, starts, seq, c)?;
        if let Some(Ok(mut t)) = PIPELINE.get().map(|p| p.threads.lock()) {
            t.append(&mut threads);
        }
        Ok(())
    };
    if locked {
        run()?;
    } else {
        // Another cong uses this state directory: the old process of a binary upgrade, still
        // finishing its requests. Its sequence file and spools are not ours to touch until it
        // exits; events wait in the queue meanwhile.
        log::warn!(
            "{state_dir_text} is in use by another cong process: SOC events wait in memory until it exits"
        );
        std::thread::Builder::new()
            .name("cong-soc-wait".into())
            .spawn(move || {
                let lock = lock;
                flock(&lock, true);
                let _ = STATE_LOCK.set(lock);
                if let Err(e) = run() {
                    log::error!("SOC log shipping cannot start: {e:#}");
                }
            })
            .context("start SOC thread")?;
        return Ok(counters);
    }
    let _ = STATE_LOCK.set(lock);
    Ok(counters)
}

/// The open lock file of `state_dir`, held for the life of the process.
static STATE_LOCK: OnceLock<std::fs::File> = OnceLock::new();

/// Exclusive flock(2); `wait` blocks until it is free. False when it is held elsewhere (or
/// cannot be taken at all, which is treated the same way only when not waiting).
fn flock(f: &std::fs::File, wait: bool) -> bool {
    use std::os::fd::AsRawFd;
    let op = if wait {
        libc::LOCK_EX
    } else {
        libc::LOCK_EX | libc::LOCK_NB
    };
    loop {
        // SAFETY: flock(2) on a file descriptor we own.
        let r = unsafe { libc::flock(f.as_raw_fd(), op) };
        if r == 0 {
            return true;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return false;
        }
        // A file system without locks: go on unprotected rather than not log at all.
        log::warn!("cannot lock the SOC state directory: {e}");
        return true;
    }
}

type SinkStart = (SinkSpec, Receiver<Arc<Record>>, Arc<SinkCounters>);

/// Spawns the dispatcher and one thread per sink.
fn launch(
    cx: &format::Context,
    rx: Receiver<Msg>,
    handles: Vec<SinkHandle>,
    starts: Vec<SinkStart>,
    seq: Sequence,
    c: Arc<Counters>,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    use anyhow::Context as _;
    let mut threads = Vec::new();
    threads.push(
        std::thread::Builder::new()
            .name("cong-soc-dispatch".into())
            .spawn(move || dispatch(rx, handles, seq, c))
            .context("start dispatcher thread")?,
    );
    for (spec, rx, c) in starts {
        let cx = cx.clone();
        let name = spec.name.clone();
        let fmt = spec.format;
        let t = match (spec.file, spec.net) {
            (Some(f), _) => std::thread::Builder::new()
                .name(format!("cong-sink-{name}"))
                .spawn(move || sink::file::run(name, f, fmt, cx, rx, c)),
            (None, Some(n)) => {
                let run = sink::net::runner(spec.kind);
                std::thread::Builder::new()
                    .name(format!("cong-sink-{name}"))
                    .spawn(move || run(name, n, fmt, cx, rx, c))
            }
            (None, None) => continue,
        }
        .context("start sink thread")?;
        threads.push(t);
    }
    Ok(threads)
}

fn dispatch(rx: Receiver<Msg>, sinks: Vec<SinkHandle>, mut seq: Sequence, c: Arc<Counters>) {
    let mut last_report = Instant::now();
    let mut reported: Vec<u64> = vec![0; sinks.len() + 1];
    let forward = |mut r: Record, seq: &mut Sequence| {
        c.queue_depth.fetch_sub(1, Ordering::Relaxed);
        r.seq = seq.take();
        let class = r.class();
        let r = Arc::new(r);
        for s in &sinks {
            if !s.classes.contains(&class) {
                continue;
            }
            s.counters.queue_depth.fetch_add(1, Ordering::Relaxed);
            if s.tx.try_send(r.clone()).is_err() {
                s.counters.queue_depth.fetch_sub(1, Ordering::Relaxed);
                s.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    'outer: loop {
        match rx.recv_timeout(Duration::from_millis(250)) {
            Ok(Msg::Rec(r)) => {
                forward(r, &mut seq);
                // Gather a batch rather than wake the sinks once per event.
                std::thread::sleep(sink::LINGER);
                for _ in 0..16_384 {
                    match rx.try_recv() {
                        Ok(Msg::Rec(r)) => forward(r, &mut seq),
                        Ok(Msg::Stop) | Err(mpsc::TryRecvError::Disconnected) => break 'outer,
                        Err(mpsc::TryRecvError::Empty) => break,
                    }
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            report_drops(&sinks, &c, &mut reported);
        }
    }
    // Events queued before the stop still go out (to the sinks, which spool them).
    while let Ok(Msg::Rec(mut r)) = rx.try_recv() {
        r.seq = seq.take();
        let class = r.class();
        let r = Arc::new(r);
        for s in sinks.iter().filter(|s| s.classes.contains(&class)) {
            if s.tx.try_send(r.clone()).is_err() {
                s.counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    if let Err(e) = seq.write(seq.next) {
        log::error!("cannot persist the event sequence: {e:#}");
    }
}

/// Turns counter increases into `log_events_dropped` events: a loss is never silent.
fn report_drops(sinks: &[SinkHandle], c: &Counters, reported: &mut [u64]) {
    let central = c.dropped.load(Ordering::Relaxed);
    if central > reported[0] {
        events::emit(
            Event::new("log_events_dropped", Severity::Error)
                .field("reason", "queue_full")
                .field("count", central - reported[0])
                .field("total", c.dropped_total()),
        );
        reported[0] = central;
    }
    for (i, s) in sinks.iter().enumerate() {
        let d = s.counters.dropped.load(Ordering::Relaxed);
        if d > reported[i + 1] {
            events::emit(
                Event::new("log_events_dropped", Severity::Error)
                    .field("sink", &s.name)
                    .field("reason", "sink_queue_or_spool_full")
                    .field("count", d - reported[i + 1])
                    .field("total", c.dropped_total()),
            );
            reported[i + 1] = d;
        }
    }
}

/// Graceful stop, after the server has stopped serving: everything still queued is handed to
/// the sinks, which write it out or to their spool; waits at most `timeout`.
pub fn shutdown(timeout: Duration) {
    let Some(p) = PIPELINE.get() else {
        return;
    };
    let _ = p.tx.send(Msg::Stop);
    let threads = match p.threads.lock() {
        Ok(mut t) => std::mem::take(&mut *t),
        Err(_) => return,
    };
    let deadline = Instant::now() + timeout;
    for t in threads {
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if t.is_finished() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
pub(crate) fn tests_wait(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("condition not met in 10 s");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_and_paths() {
        assert_eq!(parse_offset("+07:00"), Some(420));
        assert_eq!(parse_offset("-03:30"), Some(-210));
        assert_eq!(parse_offset("Z"), Some(0));
        assert_eq!(parse_offset("07:00"), None);
        assert_eq!(percent_decode_lossy("/tin-t%E1%BB%A9c"), "/tin-tức");
        assert_eq!(percent_decode_lossy("/a%2"), "/a%2");
        assert_eq!(percent_decode_lossy("/%FF"), "/%FF");
    }

    #[test]
    fn sequence_resumes_above_what_was_used() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sequence");
        let mut s = Sequence::open(p.clone()).unwrap();
        assert_eq!(s.take(), 1);
        assert_eq!(s.take(), 2);
        // Crash: the reservation is what the next start sees.
        let mut s2 = Sequence::open(p.clone()).unwrap();
        assert!(s2.take() > 2);
        s2.write(s2.next).unwrap();
        let n = s2.next;
        let mut s3 = Sequence::open(p).unwrap();
        assert_eq!(s3.take(), n);
    }
}
