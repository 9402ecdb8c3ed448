//! Automatic certificates with ACME (`instant-acme`): one account per CA, created once and kept
//! in the certificate store; one certificate per tenant with `acme = true` covering all its host
//! names; HTTP-01 answered by the gateway itself (`Challenges`, asked first by the pipeline) and
//! DNS-01 for wildcard names through RFC 2136 + TSIG (`dns01`); pre-flight checks before any
//! order (`preflight`); a scheduler that renews at two-thirds of the lifetime with jitter, with
//! bounded concurrency, exponential backoff and a ceiling, and orders resumed after a restart.
//! New certificates go to the store and then to the TLS resolver, never the other way round.
//!
//! With several nodes (cluster mode registers a `Coordinator` on `Challenges`), an order for a
//! certificate is placed only by the node holding that certificate's lock; the others wait and
//! then find the new certificate in the shared store. HTTP-01 answers are published to every
//! node, so the CA's validation request may reach any of them.
//! This module does not choose certificates for handshakes (`tls`) or write files itself
//! (`certs`).

mod dns01;
mod preflight;

use crate::certs::{CertStore, StoredPair};
use crate::config::{Config, ConfigError};
use crate::events::{self, Event, Severity};
use crate::gateway::Gateway;
use crate::tls::{parse_pair, CertInfo, CertResolver, Loaded, Source};
use async_trait::async_trait;
use base64::Engine;
use hickory_proto::rr::dnssec::rdata::tsig::TsigAlgorithm;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime};
use tokio::sync::{Notify, Semaphore};

pub use dns01::zone_for;

/// One ACME CA.
#[derive(Debug, Clone)]
pub struct CaSettings {
    pub name: String,
    pub directory: String,
    pub contact: Vec<String>,
    pub eab: Option<(String, Vec<u8>)>,
    pub trust_root: Option<PathBuf>,
    pub caa_identity: Option<String>,
}

/// A zone cong may update for DNS-01.
#[derive(Clone)]
pub struct DnsZone {
    pub zone: String,
    pub server: SocketAddr,
    pub key_name: String,
    pub algorithm: TsigAlgorithm,
    pub secret: Vec<u8>,
    pub propagation: Duration,
}

impl std::fmt::Debug for DnsZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The TSIG secret never goes to logs.
        f.debug_struct("DnsZone")
            .field("zone", &self.zone)
            .field("server", &self.server)
            .field("key_name", &self.key_name)
            .finish()
    }
}

/// Validated `[acme]`, `[[acme_ca]]` and `[[dns_update]]`.
#[derive(Debug, Clone, Default)]
pub struct AcmeSettings {
    pub cas: Vec<CaSettings>,
    pub zones: Vec<DnsZone>,
    pub public: Vec<IpAddr>,
    pub resolver: Option<SocketAddr>,
    pub preflight: bool,
    pub concurrency: usize,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub order_timeout: Duration,
    pub renew_fraction: f64,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl AcmeSettings {
    pub fn from_config(cfg: &Config) -> Result<AcmeSettings, ConfigError> {
        let src = &cfg.main_source;
        let a = &cfg.main.acme;
        let mut cas: Vec<CaSettings> = Vec::new();
        for (i, c) in cfg.main.acme_ca.iter().enumerate() {
            let name = c.name.get_ref().clone();
            if !valid_name(&name) || cas.iter().any(|o| o.name == name) {
                return Err(src.error_at(
                    c.name.span(),
                    format!("acme_ca[{i}].name"),
                    format!("`{name}`: use letters, digits, `-`, `_`, once each"),
                ));
            }
            let dir = c.directory.get_ref();
            if !dir.starts_with("https://") {
                return Err(src.error_at(
                    c.directory.span(),
                    format!("acme_ca[{i}].directory"),
                    "the directory URL must start with https://",
                ));
            }
            let eab = match (&c.eab_kid, &c.eab_hmac_key) {
                (Some(kid), Some(k)) => {
                    let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(k.get_ref().trim_end_matches('='))
                        .map_err(|e| {
                            src.error_at(
                                k.span(),
                                format!("acme_ca[{i}].eab_hmac_key"),
                                format!("not base64url: {e}"),
                            )
                        })?;
                    Some((kid.clone(), key))
                }
                (None, None) => None,
                _ => {
                    return Err(src.error_at(
                        c.name.span(),
                        format!("acme_ca[{i}].eab_kid"),
                        "`eab_kid` and `eab_hmac_key` go together",
                    ))
                }
            };
            let trust_root = match &c.trust_root {
                Some(p) => {
                    let path = cfg.resolve(p.get_ref());
                    let ok = std::fs::read(&path)
                        .ok()
                        .map(|b| rustls_pemfile::certs(&mut &b[..]).flatten().count() > 0)
                        .unwrap_or(false);
                    if !ok {
                        return Err(src.error_at(
                            p.span(),
                            format!("acme_ca[{i}].trust_root"),
                            format!("{}: no readable PEM certificate", path.display()),
                        ));
                    }
                    Some(path)
                }
                None => None,
            };
            cas.push(CaSettings {
                name,
                directory: dir.clone(),
                contact: c.contact.clone(),
                eab,
                trust_root,
                caa_identity: c.caa_identity.clone(),
            });
        }
        let mut zones = Vec::new();
        for (i, z) in cfg.main.dns_update.iter().enumerate() {
            let key = |k: &str| format!("dns_update[{i}].{k}");
            let server: SocketAddr = z
                .server
                .get_ref()
                .parse()
                .map_err(|_| src.error_at(z.server.span(), key("server"), "not IP:PORT"))?;
            let algorithm = match z.tsig_algorithm.as_ref().map(|a| a.get_ref().as_str()) {
                None | Some("hmac-sha256") => TsigAlgorithm::HmacSha256,
                Some("hmac-sha384") => TsigAlgorithm::HmacSha384,
                Some("hmac-sha512") => TsigAlgorithm::HmacSha512,
                Some(other) => {
                    return Err(src.error_at(
                        z.tsig_algorithm.as_ref().map(|a| a.span()).unwrap_or(0..0),
                        key("tsig_algorithm"),
                        format!("`{other}`: use hmac-sha256, hmac-sha384 or hmac-sha512"),
                    ))
                }
            };
            let (text, span) = match (&z.tsig_secret, &z.tsig_secret_file) {
                (Some(s), None) => (s.get_ref().clone(), s.span()),
                (None, Some(f)) => {
                    let p = cfg.resolve(f.get_ref());
                    let t = std::fs::read_to_string(&p).map_err(|e| {
                        src.error_at(
                            f.span(),
                            key("tsig_secret_file"),
                            format!("{}: {e}", p.display()),
                        )
                    })?;
                    (t.lines().next().unwrap_or("").to_string(), f.span())
                }
                _ => {
                    return Err(src.error_at(
                        z.zone.span(),
                        key("tsig_secret"),
                        "give exactly one of `tsig_secret` and `tsig_secret_file`",
                    ))
                }
            };
            let secret = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|e| src.error_at(span, key("tsig_secret"), format!("not base64: {e}")))?;
            zones.push(DnsZone {
                zone: z.zone.get_ref().trim_end_matches('.').to_ascii_lowercase(),
                server,
                key_name: z.tsig_key_name.clone(),
                algorithm,
                secret,
                propagation: z.propagation_delay.get(),
            });
        }
        let mut public = Vec::new();
        for (i, p) in a.public_addresses.iter().enumerate() {
            public.push(p.get_ref().parse::<IpAddr>().map_err(|_| {
                src.error_at(
                    p.span(),
                    format!("acme.public_addresses[{i}]"),
                    "not an IP address",
                )
            })?);
        }
        let resolver = match &a.resolver {
            Some(r) => Some(
                r.get_ref()
                    .parse::<SocketAddr>()
                    .map_err(|_| src.error_at(r.span(), "acme.resolver", "not IP:PORT"))?,
            ),
            None => None,
        };
        let renew_fraction = a.renew_fraction.unwrap_or(2.0 / 3.0);
        if !(0.1..=0.95).contains(&renew_fraction) {
            return Err(src.error_at(0..0, "acme.renew_fraction", "must be between 0.1 and 0.95"));
        }
        Ok(AcmeSettings {
            cas,
            zones,
            public,
            resolver,
            preflight: a.preflight,
            concurrency: a.concurrency.max(1),
            retry_min: a.retry_min.get(),
            retry_max: a.retry_max.get().max(a.retry_min.get()),
            order_timeout: a.order_timeout.get(),
            renew_fraction,
        })
    }
}

/// Cluster-wide coordination of orders and HTTP-01 answers.
#[async_trait]
pub trait Coordinator: Send + Sync {
    /// Tries to take the lock on ordering certificate `name` for this node.
    async fn lock(&self, name: &str) -> Lock;
    /// Reads certificate `name` from the shared store into this node's store and resolver
    /// (another node may have renewed it while this one waited).
    async fn refresh(&self, name: &str);
    /// Waits (bounded) until this node's certificate store writes have reached the shared
    /// store, so a node taking the lock next sees them.
    async fn flush(&self);
    /// Makes an HTTP-01 answer known to every node.
    async fn publish_token(&self, token: &str, key_auth: &str) -> Result<(), String>;
    async fn withdraw_token(&self, token: &str);
    /// An answer published by another node, if any (bounded by the cluster timeout).
    async fn lookup_token(&self, token: &str) -> Option<String>;
}

/// Result of asking for an order lock.
pub enum Lock {
    /// This node holds it until `release` (its lease is renewed meanwhile).
    Held(Box<dyn HeldLock>),
    /// Another node holds it; ask again after `retry_in`.
    Busy { holder: String, retry_in: Duration },
    /// The shared state cannot be reached.
    Unavailable,
}

/// A held order lock.
#[async_trait]
pub trait HeldLock: Send {
    async fn release(self: Box<Self>);
}

/// HTTP-01 tokens being validated: token → key authorization.
#[derive(Default)]
pub struct Challenges {
    tokens: RwLock<HashMap<String, String>>,
    coordinator: OnceLock<Arc<dyn Coordinator>>,
}

impl std::fmt::Debug for Challenges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Challenges")
            .field("clustered", &self.coordinator.get().is_some())
            .finish()
    }
}

const CHALLENGE_PREFIX: &str = "/.well-known/acme-challenge/";

/// Tokens are base64url (RFC 8555 §8.1); anything else is not asked about across the cluster.
fn plausible_token(t: &str) -> bool {
    (16..=256).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Challenges {
    /// Joins this node to a cluster (once, at start).
    pub fn set_coordinator(&self, c: Arc<dyn Coordinator>) {
        let _ = self.coordinator.set(c);
    }

    pub fn coordinator(&self) -> Option<Arc<dyn Coordinator>> {
        self.coordinator.get().cloned()
    }

    /// The pipeline's entry point in cluster mode: this node's answer, else one published by
    /// another node (asked only for a path under the challenge prefix).
    pub async fn answer(&self, path: &str) -> Option<String> {
        if let Some(a) = self.http01_answer(path) {
            return Some(a);
        }
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        let c = self.coordinator.get()?;
        if !plausible_token(token) {
            return None;
        }
        c.lookup_token(token).await
    }

    /// The pipeline's entry point: the body to answer for this path, if it is a live token.
    pub fn http01_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(CHALLENGE_PREFIX)?;
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn insert(&self, token: &str, key_auth: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.to_string(), key_auth.to_string());
    }

    fn remove(&self, token: &str) {
        self.tokens
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(token);
    }
}

/// A certificate cong manages: one per tenant with `acme = true`.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub names: Vec<String>,
    pub ca: String,
}

/// Every managed certificate the snapshot asks for.
pub fn targets(gw: &Gateway) -> Vec<Target> {
    let snap = gw.snapshot();
    let first = snap.settings.acme.cas.first().map(|c| c.name.clone());
    snap.tenants
        .iter()
        .filter(|t| t.tls.acme)
        .filter_map(|t| {
            Some(Target {
                name: t.id.clone(),
                names: t.hosts.clone(),
                ca: t.tls.acme_ca.clone().or_else(|| first.clone())?,
            })
        })
        .collect()
}

/// When a certificate with `info` should be renewed (unix seconds), before jitter.
pub fn renewal_time(info: &CertInfo, fraction: f64) -> i64 {
    let life = (info.not_after - info.not_before).max(0);
    info.not_before + (life as f64 * fraction) as i64
}

/// Delay before retry number `failures` (1-based): doubling from `min`, at most `max`.
pub fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let shift = failures.saturating_sub(1).min(20);
    min.saturating_mul(1u32 << shift).min(max)
}

#[derive(Debug, Clone)]
struct Sched {
    /// Unix seconds of the next attempt.
    next: i64,
    failures: u32,
    running: bool,
}

/// A failed attempt: what went wrong, at which step, and when the CA asked us to come back.
#[derive(Debug)]
struct Failure {
    step: &'static str,
    msg: String,
    retry_at: Option<SystemTime>,
    preflight_name: Option<String>,
}

impl Failure {
    fn at(step: &'static str, msg: impl ToString) -> Failure {
        Failure {
            step,
            msg: msg.to_string(),
            retry_at: None,
            preflight_name: None,
        }
    }
    fn acme(step: &'static str, e: instant_acme::Error) -> Failure {
        let retry_at = match &e {
            instant_acme::Error::Timeout(Some(t)) => {
                let wait = t.saturating_duration_since(std::time::Instant::now());
                Some(SystemTime::now() + wait)
            }
            _ => None,
        };
        Failure {
            step,
            msg: acme_error_text(&e),
            retry_at,
            preflight_name: None,
        }
    }
}

fn acme_error_text(e: &instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let mut s = p.detail.clone().unwrap_or_else(|| p.to_string());
            if let Some(t) = &p.r#type {
                s = format!("{s} ({t})");
            }
            s
        }
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(e) = src {
                s.push_str(": ");
                s.push_str(&e.to_string());
                src = e.source();
            }
            s
        }
    }
}

/// Progress of one issuance, one line per step (for `cong certs renew` and the log).
#[derive(Default)]
pub struct Progress {
    lines: Mutex<Vec<String>>,
}

impl Progress {
    fn step(&self, tenant: &str, line: String) {
        log::info!("acme {tenant}: {line}");
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
    }
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Challenge answers published during one attempt, withdrawn after it.
#[derive(Default)]
struct Published {
    tokens: Mutex<Vec<String>>,
    txt: Mutex<Vec<(DnsZone, String, String)>>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct PendingOrder {
    url: String,
    names: Vec<String>,
    ca: String,
    key_pem: String,
}

/// Obtains and renews managed certificates.
pub struct Manager {
    gateway: Arc<Gateway>,
    store: Arc<dyn CertStore>,
    resolver: Arc<CertResolver>,
    pub challenges: Arc<Challenges>,
    sched: Mutex<HashMap<String, Sched>>,
    accounts: tokio::sync::Mutex<HashMap<String, Account>>,
    permits: Semaphore,
    kick: Notify,
    warned: Mutex<HashMap<String, i64>>,
    expiry_warning_days: i64,
}

impl Manager {
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn CertStore>,
        resolver: Arc<CertResolver>,
        challenges: Arc<Challenges>,
    ) -> Arc<Manager> {
        let snap = gateway.snapshot();
        let permits = Semaphore::new(snap.settings.acme.concurrency);
        let expiry_warning_days = snap.settings.tls.expiry_warning_days as i64;
        Arc::new(Manager {
            gateway,
            store,
            resolver,
            challenges,
            sched: Mutex::new(HashMap::new()),
            accounts: tokio::sync::Mutex::new(HashMap::new()),
            permits,
            kick: Notify::new(),
            warned: Mutex::new(HashMap::new()),
            expiry_warning_days,
        })
    }

    fn settings(&self) -> Arc<AcmeSettings> {
        self.gateway.snapshot().settings.acme.clone()
    }

    /// When `t` is due: now when it has no usable certificate, else at the renewal time
    /// minus a random jitter of up to 1/30 of the lifetime (so 300 tenants issued on one day
    /// do not all renew in the same minute).
    fn first_due(&self, t: &Target) -> i64 {
        let now = crate::tls::now_unix();
        let Some(l) = self.resolver.get(&format!("acme:{}", t.name)) else {
            return now;
        };
        let mut have: Vec<&String> = l.info.names.iter().collect();
        have.sort();
        let mut want: Vec<&String> = t.names.iter().collect();
        want.sort();
        if have != want || l.info.expired() {
            return now;
        }
        let life = (l.info.not_after - l.info.not_before).max(1);
        let jitter = fastrand::i64(0..=(life / 30).max(1));
        renewal_time(&l.info, self.settings().renew_fraction) - jitter
    }

    fn due(self: &Arc<Self>) -> Vec<Target> {
        let now = crate::tls::now_unix();
        let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for t in targets(&self.gateway) {
            let s = sched.entry(t.name.clone()).or_insert_with(|| Sched {
                next: self.first_due(&t),
                failures: 0,
                running: false,
            });
            if !s.running && s.next <= now {
                s.running = true;
                out.push(t);
            }
        }
        out
    }

    fn warn_expiring(&self) {
        let now = crate::tls::now_unix();
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        for (id, l) in self.resolver.entries() {
            let days = l.info.days_left();
            if days > self.expiry_warning_days {
                continue;
            }
            // At most one warning per certificate per day.
            if warned.get(&id).is_some_and(|t| now - t < 86400) {
                continue;
            }
            warned.insert(id.clone(), now);
            let tenant = id.split_once(':').map(|(_, n)| n).unwrap_or(&id);
            events::emit(
                Event::new("cert_expiring", Severity::Warning)
                    .tenant(tenant)
                    .field("cert", &id)
                    .field("source", l.source.as_str())
                    .field("days_left", days)
                    .field("not_after", l.info.not_after),
            );
        }
    }

    /// Renews `name` now (for `cong certs renew`): the progress lines, or the error.
    pub async fn renew_now(self: &Arc<Self>, name: &str) -> Result<Vec<String>, Vec<String>> {
        let Some(t) = targets(&self.gateway).into_iter().find(|t| t.name == name) else {
            return Err(vec![format!(
                "no tenant `{name}` with `acme = true` in the configuration in force"
            )]);
        };
        {
            let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
            let s = sched.entry(t.name.clone()).or_insert(Sched {
                next: 0,
                failures: 0,
                running: false,
            });
            if s.running {
                return Err(vec![format!(
                    "{name}: an order is already in progress; try again shortly"
                )]);
            }
            s.running = true;
        }
        let p = Progress::default();
        let ok = self.attempt(&t, &p, true).await;
        let lines = p.lines();
        if ok {
            Ok(lines)
        } else {
            Err(lines)
        }
    }

    /// Re-schedules `t` for `wait` from now without counting a failure.
    fn defer(&self, t: &Target, wait: Duration) {
        let now = crate::tls::now_unix();
        let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
        let s = sched.entry(t.name.clone()).or_insert(Sched {
            next: now,
            failures: 0,
            running: true,
        });
        s.running = false;
        s.next = now + wait.as_secs().max(1) as i64;
    }

    /// Whether a certificate for `t` good for more than a week is being served.
    fn has_good_certificate(&self, t: &Target) -> bool {
        self.resolver
            .get(&format!("acme:{}", t.name))
            .is_some_and(|l| l.info.days_left() > 7)
    }

    /// One attempt with its bookkeeping (schedule, events); true on success. In a cluster the
    /// order lock is taken first; `forced` (an operator's renewal) orders even when another
    /// node renewed the certificate meanwhile.
    async fn attempt(self: &Arc<Self>, t: &Target, p: &Progress, forced: bool) -> bool {
        let settings = self.settings();
        let permit = self.permits.acquire().await;
        let mut held = None;
        if let Some(c) = self.challenges.coordinator() {
            match c.lock(&t.name).await {
                Lock::Held(h) => {
                    p.step(&t.name, "holding the cluster order lock".to_string());
                    held = Some(h);
                    c.refresh(&t.name).await;
                    if !forced && self.first_due(t) > crate::tls::now_unix() {
                        p.step(
                            &t.name,
                            "already renewed by another node; nothing to order".to_string(),
                        );
                        if let Some(h) = held.take() {
                            h.release().await;
                        }
                        drop(permit);
                        let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(s) = sched.get_mut(&t.name) {
                            s.running = false;
                            s.failures = 0;
                            s.next = self.first_due(t);
                        }
                        return true;
                    }
                }
                Lock::Busy { holder, retry_in } => {
                    p.step(
                        &t.name,
                        format!("node {holder} is ordering this certificate; waiting for it"),
                    );
                    drop(permit);
                    self.defer(t, retry_in);
                    return false;
                }
                Lock::Unavailable => {
                    if self.has_good_certificate(t) && !forced {
                        p.step(
                            &t.name,
                            "cluster state unreachable; renewal deferred".to_string(),
                        );
                        drop(permit);
                        self.defer(t, Duration::from_secs(60));
                        return false;
                    }
                    events::emit(
                        Event::new("acme_unlocked_order", Severity::Warning)
                            .tenant(&t.name)
                            .field("names", t.names.join(","))
                            .field(
                                "cause",
                                "cluster state unreachable and no certificate good for a week",
                            ),
                    );
                    p.step(
                        &t.name,
                        "cluster state unreachable; ordering without the lock".to_string(),
                    );
                }
            }
        }
        let had = self.resolver.get(&format!("acme:{}", t.name)).is_some();
        let published = Published::default();
        let res = tokio::time::timeout(
            // Validation and certificate polling each have order_timeout; this also bounds the
            // CA's and the DNS server's network calls.
            settings.order_timeout * 2 + Duration::from_secs(30),
            self.issue(t, p, &settings, &published),
        )
        .await
        .unwrap_or_else(|_| Err(Failure::at("order", "timed out")));
        // Withdrawn whether the attempt finished or was cut off by the timeout.
        self.withdraw(t, &published).await;
        if let Some(h) = held {
            // The next holder must find what this one stored.
            if let Some(c) = self.challenges.coordinator() {
                c.flush().await;
            }
            h.release().await;
        }
        drop(permit);
        let now = crate::tls::now_unix();
        let ok = res.is_ok();
        let next = match res {
            Ok(l) => {
                events::emit(
                    Event::new(
                        if had { "cert_renewed" } else { "cert_issued" },
                        Severity::Notice,
                    )
                    .tenant(&t.name)
                    .field("names", t.names.join(","))
                    .field("ca", &t.ca)
                    .field("issuer", &l.info.issuer)
                    .field("not_after", l.info.not_after),
                );
                p.step(
                    &t.name,
                    format!("done: valid until {} (unix)", l.info.not_after),
                );
                self.resolver.install(&format!("acme:{}", t.name), l);
                None
            }
            Err(f) => Some(f),
        };
        let mut sched = self.sched.lock().unwrap_or_else(|e| e.into_inner());
        let s = sched.entry(t.name.clone()).or_insert(Sched {
            next: now,
            failures: 0,
            running: true,
        });
        s.running = false;
        match next {
            None => {
                s.failures = 0;
                s.next = self.first_due(t);
            }
            Some(f) => {
                s.failures += 1;
                let mut wait = backoff(s.failures, settings.retry_min, settings.retry_max);
                if let Some(at) = f.retry_at {
                    // The CA said when to come back; never earlier than that.
                    if let Ok(d) = at.duration_since(SystemTime::now()) {
                        wait = wait.max(d);
                    }
                }
                s.next = now + wait.as_secs() as i64;
                p.step(&t.name, format!("failed at {}: {}", f.step, f.msg));
                let ev = match &f.preflight_name {
                    Some(n) => Event::new("acme_preflight_failed", Severity::Warning)
                        .tenant(&t.name)
                        .field("name", n),
                    None => Event::new("acme_failed", Severity::Error)
                        .tenant(&t.name)
                        .field("names", t.names.join(",")),
                };
                events::emit(
                    ev.field("ca", &t.ca)
                        .field("step", f.step)
                        .field("error", &f.msg)
                        .field("retry_in_s", wait.as_secs()),
                );
            }
        }
        ok
    }

    async fn account(&self, ca: &CaSettings) -> Result<Account, Failure> {
        let mut accounts = self.accounts.lock().await;
        if let Some(a) = accounts.get(&ca.name) {
            return Ok(a.clone());
        }
        let builder = || match &ca.trust_root {
            Some(p) => Account::builder_with_root(p),
            None => Account::builder(),
        };
        let blob = format!("account-{}.json", ca.name);
        let stored = self
            .store
            .read_blob(&blob)
            .map_err(|e| Failure::at("account", format!("reading {blob}: {e}")))?;
        let account =
            match stored.and_then(|b| serde_json::from_slice::<AccountCredentials>(&b).ok()) {
                Some(creds) => builder()
                    .map_err(|e| Failure::acme("account", e))?
                    .from_credentials(creds)
                    .await
                    .map_err(|e| Failure::acme("account", e))?,
                None => {
                    let contact: Vec<&str> = ca.contact.iter().map(|s| s.as_str()).collect();
                    let eab = ca
                        .eab
                        .as_ref()
                        .map(|(kid, key)| ExternalAccountKey::new(kid.clone(), key));
                    let (account, creds) = builder()
                        .map_err(|e| Failure::acme("account", e))?
                        .create(
                            &NewAccount {
                                contact: &contact,
                                terms_of_service_agreed: true,
                                only_return_existing: false,
                            },
                            ca.directory.clone(),
                            eab.as_ref(),
                        )
                        .await
                        .map_err(|e| Failure::acme("account", e))?;
                    let json = serde_json::to_vec(&creds).map_err(|e| Failure::at("account", e))?;
                    self.store
                        .write_blob(&blob, &json, true)
                        .map_err(|e| Failure::at("account", format!("saving {blob}: {e}")))?;
                    events::emit(
                        Event::new("acme_account_created", Severity::Notice)
                            .field("ca", &ca.name)
                            .field("directory", &ca.directory),
                    );
                    account
                }
            };
        accounts.insert(ca.name.clone(), account.clone());
        Ok(account)
    }

    async fn preflight(
        &self,
        t: &Target,
        ca: &CaSettings,
        s: &AcmeSettings,
    ) -> Result<(), Failure> {
        let r = preflight::resolver(s.resolver);
        for n in &t.names {
            let res = async {
                if !n.starts_with("*.") {
                    preflight::check_addresses(&r, n, &s.public).await?;
                }
                if let Some(id) = &ca.caa_identity {
                    preflight::check_caa(&r, n, id).await?;
                }
                Ok::<(), String>(())
            }
            .await;
            if let Err(e) = res {
                let mut f = Failure::at("pre-flight", e);
                f.preflight_name = Some(n.clone());
                return Err(f);
            }
        }
        Ok(())
    }

    async fn withdraw(&self, t: &Target, published: &Published) {
        let tokens =
            std::mem::take(&mut *published.tokens.lock().unwrap_or_else(|e| e.into_inner()));
        let coordinator = self.challenges.coordinator();
        for tok in &tokens {
            self.challenges.remove(tok);
            if let Some(c) = &coordinator {
                c.withdraw_token(tok).await;
            }
        }
        let txt = std::mem::take(&mut *published.txt.lock().unwrap_or_else(|e| e.into_inner()));
        for (zone, ident, value) in &txt {
            if let Err(e) = dns01::remove_txt(zone, ident, value).await {
                events::emit(
                    Event::new("dns_cleanup_failed", Severity::Warning)
                        .tenant(&t.name)
                        .field("name", ident)
                        .field("error", e),
                );
            }
        }
    }

    async fn issue(
        &self,
        t: &Target,
        p: &Progress,
        s: &AcmeSettings,
        published: &Published,
    ) -> Result<Loaded, Failure> {
        let ca = s
            .cas
            .iter()
            .find(|c| c.name == t.ca)
            .ok_or_else(|| Failure::at("config", format!("no CA `{}`", t.ca)))?;
        if s.preflight {
            p.step(
                &t.name,
                format!("pre-flight checks for {}", t.names.join(", ")),
            );
            self.preflight(t, ca, s).await?;
        }
        p.step(
            &t.name,
            format!("account at {} ({})", ca.name, ca.directory),
        );
        let account = self.account(ca).await?;

        // Resume an order left by a previous run when it is for the same names.
        let blob = format!("order-{}.json", t.name);
        let pending: Option<PendingOrder> = self
            .store
            .read_blob(&blob)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|o: &PendingOrder| o.names == t.names && o.ca == t.ca);
        let mut resumed = None;
        if let Some(po) = pending {
            if let Ok(mut o) = account.order(po.url.clone()).await {
                if !matches!(o.state().status, OrderStatus::Invalid) {
                    p.step(&t.name, format!("resuming order {}", po.url));
                    resumed = Some((o, po.key_pem));
                }
            }
        }
        let (mut order, key_pem) = match resumed {
            Some(x) => x,
            None => {
                p.step(&t.name, "new order".to_string());
                let ids: Vec<Identifier> =
                    t.names.iter().map(|n| Identifier::Dns(n.clone())).collect();
                let order = account
                    .new_order(&NewOrder::new(&ids))
                    .await
                    .map_err(|e| Failure::acme("order", e))?;
                let key = rcgen::KeyPair::generate().map_err(|e| Failure::at("key", e))?;
                let po = PendingOrder {
                    url: order.url().to_string(),
                    names: t.names.clone(),
                    ca: t.ca.clone(),
                    key_pem: key.serialize_pem(),
                };
                let json = serde_json::to_vec(&po).map_err(|e| Failure::at("order", e))?;
                self.store
                    .write_blob(&blob, &json, true)
                    .map_err(|e| Failure::at("order", format!("saving {blob}: {e}")))?;
                (order, po.key_pem)
            }
        };

        let res = async {
            if matches!(order.state().status, OrderStatus::Pending) {
                let mut max_propagation = Duration::ZERO;
                let mut authzs = order.authorizations();
                while let Some(a) = authzs.next().await {
                    let mut a = a.map_err(|e| Failure::acme("authorization", e))?;
                    if a.status != AuthorizationStatus::Pending {
                        continue;
                    }
                    let ident = a.identifier().to_string();
                    let wildcard = a.identifier().wildcard;
                    if wildcard {
                        let zone = dns01::zone_for(&s.zones, &ident)
                            .ok_or_else(|| {
                                Failure::at("dns-01", format!("no [[dns_update]] zone for {ident}"))
                            })?
                            .clone();
                        let mut ch = a.challenge(ChallengeType::Dns01).ok_or_else(|| {
                            Failure::at("dns-01", format!("the CA offers no dns-01 for {ident}"))
                        })?;
                        let value = ch.key_authorization().dns_value();
                        p.step(
                            &t.name,
                            format!(
                                "dns-01 for {ident}: TXT _acme-challenge.{} at {}",
                                ident.trim_start_matches("*."),
                                zone.server
                            ),
                        );
                        // A refused update changed nothing, so only an accepted one is listed
                        // for clean-up.
                        dns01::add_txt(&zone, &ident, &value)
                            .await
                            .map_err(|e| Failure::at("dns-01", e))?;
                        max_propagation = max_propagation.max(zone.propagation);
                        published
                            .txt
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push((zone, ident.clone(), value));
                        if !max_propagation.is_zero() {
                            tokio::time::sleep(max_propagation).await;
                        }
                        ch.set_ready()
                            .await
                            .map_err(|e| Failure::acme("dns-01", e))?;
                    } else {
                        let mut ch = a.challenge(ChallengeType::Http01).ok_or_else(|| {
                            Failure::at("http-01", format!("the CA offers no http-01 for {ident}"))
                        })?;
                        self.challenges
                            .insert(&ch.token, ch.key_authorization().as_str());
                        if let Some(c) = self.challenges.coordinator() {
                            // This node still answers; only others may miss it.
                            if let Err(e) = c
                                .publish_token(&ch.token, ch.key_authorization().as_str())
                                .await
                            {
                                p.step(
                                    &t.name,
                                    format!("http-01 answer not shared with other nodes: {e}"),
                                );
                            }
                        }
                        published
                            .tokens
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(ch.token.clone());
                        p.step(&t.name, format!("http-01 for {ident}"));
                        ch.set_ready()
                            .await
                            .map_err(|e| Failure::acme("http-01", e))?;
                    }
                }
                p.step(&t.name, "waiting for validation".to_string());
                let retry = RetryPolicy::new()
                    .initial_delay(Duration::from_millis(200))
                    .backoff(1.5)
                    .timeout(s.order_timeout);
                let status = order
                    .poll_ready(&retry)
                    .await
                    .map_err(|e| Failure::acme("validation", e))?;
                if status != OrderStatus::Ready {
                    // Tell the operator what the CA saw, per name.
                    let mut why = Vec::new();
                    let mut authzs = order.authorizations();
                    while let Some(Ok(mut a)) = authzs.next().await {
                        let _ = a.refresh().await;
                        let ident = a.identifier().to_string();
                        for c in &a.challenges {
                            if let Some(e) = &c.error {
                                why.push(format!(
                                    "{ident}: {}",
                                    e.detail.clone().unwrap_or_else(|| e.to_string())
                                ));
                            }
                        }
                    }
                    return Err(Failure::at(
                        "validation",
                        if why.is_empty() {
                            format!("order is {status:?}")
                        } else {
                            why.join("; ")
                        },
                    ));
                }
            }
            if matches!(order.state().status, OrderStatus::Ready) {
                p.step(&t.name, "finalising".to_string());
                let kp = rcgen::KeyPair::from_pem(&key_pem).map_err(|e| Failure::at("key", e))?;
                let mut params = rcgen::CertificateParams::new(t.names.clone())
                    .map_err(|e| Failure::at("csr", e))?;
                params.distinguished_name = rcgen::DistinguishedName::new();
                let csr = params
                    .serialize_request(&kp)
                    .map_err(|e| Failure::at("csr", e))?;
                order
                    .finalize_csr(csr.der())
                    .await
                    .map_err(|e| Failure::acme("finalize", e))?;
            }
            let retry = RetryPolicy::new()
                .initial_delay(Duration::from_millis(200))
                .backoff(1.5)
                .timeout(s.order_timeout);
            order
                .poll_certificate(&retry)
                .await
                .map_err(|e| Failure::acme("certificate", e))
        }
        .await;

        let chain = match res {
            Ok(c) => c,
            Err(f) => {
                // An order the CA declared invalid cannot be resumed.
                if matches!(order.state().status, OrderStatus::Invalid) {
                    let _ = self.store.remove_blob(&blob);
                }
                return Err(f);
            }
        };
        let pair = StoredPair {
            chain_pem: chain,
            key_pem,
        };
        let (key, info) = parse_pair(
            pair.chain_pem.as_bytes(),
            pair.key_pem.as_bytes(),
            &format!("certificate from {}", ca.name),
        )
        .map_err(|e| Failure::at("certificate", e))?;
        p.step(&t.name, "storing".to_string());
        self.store
            .write_managed(&t.name, &pair)
            .map_err(|e| Failure::at("store", e))?;
        let _ = self.store.remove_blob(&blob);
        Ok(Loaded {
            key,
            info,
            source: Source::Acme,
        })
    }
}

/// The scheduler as a pingora background service.
pub struct Scheduler(pub Arc<Manager>);

#[async_trait]
impl BackgroundService for Scheduler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let m = &self.0;
        m.run(&mut shutdown).await;
    }
}

impl Manager {
    /// Waits (at most 10 s) until a plain listener accepts connections, so the CA's first
    /// HTTP-01 request cannot arrive before the gateway listens.
    async fn wait_for_listener(&self) {
        let Some(addr) = self
            .gateway
            .snapshot()
            .settings
            .listen
            .iter()
            .find(|l| !l.tls)
            .map(|l| l.addr)
        else {
            return;
        };
        let mut probe = addr;
        if probe.ip().is_unspecified() {
            probe.set_ip(if addr.is_ipv4() {
                IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
            } else {
                IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
            });
        }
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(probe).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn run(self: &Arc<Self>, shutdown: &mut ShutdownWatch) {
        self.wait_for_listener().await;
        let mut ticks: u64 = 0;
        loop {
            for t in self.due() {
                let m = self.clone();
                tokio::spawn(async move {
                    let p = Progress::default();
                    m.attempt(&t, &p, false).await;
                });
            }
            // Expiry is counted in days: once a minute is plenty.
            if ticks % 60 == 0 {
                self.warn_expiring();
            }
            ticks += 1;
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = self.kick.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_at_two_thirds_and_bounded_backoff() {
        let info = CertInfo {
            names: vec![],
            issuer: String::new(),
            not_before: 0,
            not_after: 90 * 86400,
        };
        assert_eq!(renewal_time(&info, 2.0 / 3.0), 60 * 86400);
        let (min, max) = (Duration::from_secs(60), Duration::from_secs(3600));
        assert_eq!(backoff(1, min, max), min);
        assert_eq!(backoff(3, min, max), Duration::from_secs(240));
        assert_eq!(backoff(30, min, max), max);
    }

    #[test]
    fn http01_answers_only_live_tokens() {
        let c = Challenges::default();
        c.insert("tok", "tok.thumb");
        assert_eq!(
            c.http01_answer("/.well-known/acme-challenge/tok")
                .as_deref(),
            Some("tok.thumb")
        );
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/other"), None);
        c.remove("tok");
        assert_eq!(c.http01_answer("/.well-known/acme-challenge/tok"), None);
    }
}
