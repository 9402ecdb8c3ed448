//! TLS termination: the rustls settings of the TLS listeners, the SNI certificate resolver
//! (exact name → `*.parent` wildcard → default certificate, swapped atomically so the next
//! handshake sees a new certificate), loading and checking PEM pairs, the SNI captured per
//! connection, and the per-tenant HTTPS options (redirect, HSTS, SNI/Host check) the pipeline
//! asks about. It owns no files and talks to no CA: the certificate store (`certs`) and ACME
//! (`acme`) hand it certificates through `CertResolver::install`.

mod pem;
mod watch;

pub use pem::{load_pair, now_unix, parse_pair, CertError, CertInfo};
pub use watch::Watcher;

use crate::certs::CertStore;
use crate::config::{Config, ConfigError, SourceFile, TenantConfig};
use crate::events::{self, Event, Severity};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::HeaderValue;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Installs ring as the one process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where a certificate came from; a higher source wins for the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Generated,
    /// `name.crt`/`name.key` pairs found in the store directory.
    Directory,
    Acme,
    /// `tls_cert`/`tls_key` of a tenant, or `[tls] default_cert`.
    Operator,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Generated => "generated",
            Source::Directory => "directory",
            Source::Acme => "acme",
            Source::Operator => "operator",
        }
    }
}

/// A certificate ready to serve.
#[derive(Clone)]
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
    pub source: Source,
}

/// Selects the certificate of each handshake by SNI. Lookups are lock-free; installs rebuild
/// the name map under a mutex and swap it in whole.
pub struct CertResolver {
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    default: ArcSwap<CertifiedKey>,
    /// Every installed certificate by id (`acme:TENANT`, `tenant:TENANT`, `dir:NAME`).
    entries: Mutex<BTreeMap<String, Loaded>>,
}

impl std::fmt::Debug for CertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertResolver")
            .field("names", &self.by_name.load().len())
            .finish()
    }
}

impl CertResolver {
    /// A resolver serving `default` to every name until certificates are installed.
    pub fn new(default: Loaded) -> CertResolver {
        CertResolver {
            by_name: ArcSwap::from_pointee(HashMap::new()),
            default: ArcSwap::new(default.key),
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn set_default(&self, cert: Loaded) {
        self.default.store(cert.key);
    }

    /// Adds or replaces the certificate `id`; the next handshake uses it.
    pub fn install(&self, id: &str, cert: Loaded) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(id.to_string(), cert);
        self.rebuild(&entries);
    }

    pub fn remove(&self, id: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.remove(id).is_some() {
            self.rebuild(&entries);
        }
    }

    /// A copy of every installed certificate by id.
    pub fn entries(&self) -> BTreeMap<String, Loaded> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn get(&self, id: &str) -> Option<Loaded> {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    fn rebuild(&self, entries: &BTreeMap<String, Loaded>) {
        let mut ranked: Vec<&Loaded> = entries.values().collect();
        // Later wins: lower sources first, then the longest-lived certificate of a source.
        ranked.sort_by_key(|l| (l.source, l.info.not_after));
        let mut map = HashMap::new();
        for l in ranked {
            for n in &l.info.names {
                map.insert(n.to_ascii_lowercase(), l.key.clone());
            }
        }
        self.by_name.store(Arc::new(map));
    }

    /// The certificate for a name: exact, then `*.parent`; `None` means the default is used.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let map = self.by_name.load();
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = map.get(&name) {
            return Some(k.clone());
        }
        let (_, parent) = name.split_once('.')?;
        map.get(&format!("*.{parent}")).cloned()
    }

    /// Whether a real (non-default) certificate covers `host`.
    pub fn covers(&self, host: &str) -> bool {
        self.lookup(host).is_some()
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // Never fail a handshake for lack of a certificate: unknown names get the default.
        Some(
            hello
                .server_name()
                .and_then(|n| self.lookup(n))
                .unwrap_or_else(|| self.default.load_full()),
        )
    }
}

/// What the pipeline learns about a TLS connection (kept in the session digest).
#[derive(Debug, Clone)]
pub struct ConnTls {
    pub sni: Option<String>,
}

struct CaptureSni;

#[async_trait]
impl TlsAccept for CaptureSni {
    async fn handshake_complete_callback(
        &self,
        tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        Some(Arc::new(ConnTls {
            sni: tls.server_name().map(|s| s.to_ascii_lowercase()),
        }))
    }
}

/// Settings of one TLS listener: TLS 1.2 and 1.3 (pingora's rustls builder), ALPN h2 and
/// http/1.1, certificates from `resolver`. Session resumption uses rustls' in-memory session
/// cache (TLS 1.2 session ids, TLS 1.3 tickets naming cached sessions).
pub fn listener_settings(resolver: Arc<CertResolver>) -> anyhow::Result<TlsSettings> {
    let mut s = TlsSettings::with_callbacks(Box::new(CaptureSni))
        .map_err(|e| anyhow::anyhow!("TLS listener settings: {e}"))?;
    s.set_cert_resolver(resolver);
    s.enable_h2();
    Ok(s)
}

/// The TLS facts of a request's connection: `None` on plain listeners.
pub fn conn_tls(session: &pingora::proxy::Session) -> Option<ConnTls> {
    let ssl = session.digest()?.ssl_digest.as_ref()?;
    Some(
        ssl.extension
            .get::<ConnTls>()
            .cloned()
            .unwrap_or(ConnTls { sni: None }),
    )
}

/// Process-wide TLS settings, validated.
#[derive(Debug, Clone)]
pub struct TlsGlobal {
    pub cert_dir: PathBuf,
    pub default_cert: Option<(PathBuf, PathBuf)>,
    pub https_port: u16,
    pub expiry_warning_days: u32,
    pub reload_interval: std::time::Duration,
}

impl TlsGlobal {
    pub fn from_config(cfg: &Config) -> Result<TlsGlobal, ConfigError> {
        let t = &cfg.main.tls;
        let src = &cfg.main_source;
        let default_cert = match (&t.default_cert, &t.default_key) {
            (Some(c), Some(k)) => Some((cfg.resolve(c.get_ref()), cfg.resolve(k.get_ref()))),
            (None, None) => None,
            (Some(c), None) => {
                return Err(src.error_at(c.span(), "tls.default_key", "needed with default_cert"))
            }
            (None, Some(k)) => {
                return Err(src.error_at(k.span(), "tls.default_cert", "needed with default_key"))
            }
        };
        Ok(TlsGlobal {
            cert_dir: cfg.resolve(
                t.cert_dir
                    .as_ref()
                    .map(|d| d.get_ref().as_str())
                    .unwrap_or("certs"),
            ),
            default_cert,
            https_port: t.https_port.unwrap_or(443),
            expiry_warning_days: t.expiry_warning_days.unwrap_or(14),
            reload_interval: t
                .reload_interval
                .map(|d| d.get())
                .unwrap_or(std::time::Duration::from_secs(10))
                .max(std::time::Duration::from_millis(100)),
        })
    }
}

/// Loads every certificate the configuration and the store name into `resolver`: the default,
/// operator pairs in the store directory, ACME-managed certificates, tenants' own pairs. A bad
/// file is one `cert_invalid` event naming it; everything else still loads.
pub fn load_all(snap: &crate::gateway::Snapshot, store: &dyn CertStore, resolver: &CertResolver) {
    if let Some((c, k)) = &snap.settings.tls.default_cert {
        if let Some(l) = load_operator("-", c, k) {
            resolver.set_default(l);
        }
    }
    match store.operator_pairs() {
        Ok(pairs) => {
            for (name, c, k) in pairs {
                match load_pair(&c, &k) {
                    Ok((key, info)) => resolver.install(
                        &format!("dir:{name}"),
                        Loaded {
                            key,
                            info,
                            source: Source::Directory,
                        },
                    ),
                    Err(e) => events::emit(cert_error_event(&name, &e)),
                }
            }
        }
        Err(e) => log::warn!(
            "certificate store {}: {e}",
            snap.settings.tls.cert_dir.display()
        ),
    }
    match store.managed_names() {
        Ok(names) => {
            for name in names {
                let label = format!("{}/acme/{name}.pem", snap.settings.tls.cert_dir.display());
                let res = match store.read_managed(&name) {
                    Ok(Some(p)) => parse_pair(p.chain_pem.as_bytes(), p.key_pem.as_bytes(), &label),
                    Ok(None) => continue,
                    Err(e) => Err(CertError::Read(label, e)),
                };
                match res {
                    Ok((key, info)) => resolver.install(
                        &format!("acme:{name}"),
                        Loaded {
                            key,
                            info,
                            source: Source::Acme,
                        },
                    ),
                    Err(e) => events::emit(cert_error_event(&name, &e)),
                }
            }
        }
        Err(e) => log::warn!(
            "certificate store {}: {e}",
            snap.settings.tls.cert_dir.display()
        ),
    }
    for t in &snap.tenants {
        if let Some((c, k)) = &t.tls.cert {
            if let Some(l) = load_operator(&t.id, c, k) {
                resolver.install(&format!("tenant:{}", t.id), l);
            }
        }
    }
}

/// When an ACME certificate is due for renewal under this snapshot's settings (unix seconds).
pub fn renewal_time_for(info: &CertInfo, snap: &crate::gateway::Snapshot) -> i64 {
    crate::acme::renewal_time(info, snap.settings.acme.renew_fraction)
}

/// Per-tenant HTTPS options, validated.
#[derive(Debug, Clone, Default)]
pub struct TenantTls {
    pub acme: bool,
    pub acme_ca: Option<String>,
    pub cert: Option<(PathBuf, PathBuf)>,
    pub https_redirect: bool,
    pub hsts: Option<HeaderValue>,
    pub sni_host_check: bool,
}

impl TenantTls {
    pub fn from_config(
        src: &SourceFile,
        t: &TenantConfig,
        cfg: &Config,
    ) -> Result<TenantTls, ConfigError> {
        let cert = match (&t.tls_cert, &t.tls_key) {
            (Some(c), Some(k)) => Some((cfg.resolve(c.get_ref()), cfg.resolve(k.get_ref()))),
            (None, None) => None,
            (Some(c), None) => {
                return Err(src.error_at(c.span(), "tls_key", "`tls_cert` needs `tls_key`"))
            }
            (None, Some(k)) => {
                return Err(src.error_at(k.span(), "tls_cert", "`tls_key` needs `tls_cert`"))
            }
        };
        let hsts = match &t.hsts {
            Some(v) => {
                let ok = v.get_ref().contains("max-age=");
                Some(
                    HeaderValue::from_str(v.get_ref())
                        .ok()
                        .filter(|_| ok)
                        .ok_or_else(|| {
                            src.error_at(
                                v.span(),
                                "hsts",
                                "not a Strict-Transport-Security value (e.g. \"max-age=31536000\")",
                            )
                        })?,
                )
            }
            None => None,
        };
        let acme_ca = match &t.acme_ca {
            Some(n) => {
                if !cfg
                    .main
                    .acme_ca
                    .iter()
                    .any(|c| c.name.get_ref() == n.get_ref())
                {
                    return Err(src.error_at(
                        n.span(),
                        "acme_ca",
                        format!("no [[acme_ca]] named `{}` in the main file", n.get_ref()),
                    ));
                }
                Some(n.get_ref().clone())
            }
            None => None,
        };
        if t.acme && cfg.main.acme_ca.is_empty() {
            return Err(src.error_at(
                t.id.span(),
                "acme",
                "`acme = true` needs at least one [[acme_ca]] in the main file",
            ));
        }
        if t.acme {
            for h in &t.hosts {
                let name = h.get_ref().to_ascii_lowercase();
                if name.starts_with("*.")
                    && !cfg.main.dns_update.iter().any(|z| {
                        let z = z.zone.get_ref().trim_end_matches('.').to_ascii_lowercase();
                        let base = &name[2..];
                        base == z || base.ends_with(&format!(".{z}"))
                    })
                {
                    return Err(src.error_at(
                        h.span(),
                        "hosts",
                        format!(
                            "`{name}` is a wildcard: ACME needs DNS-01, so a [[dns_update]] zone containing it"
                        ),
                    ));
                }
            }
        }
        Ok(TenantTls {
            acme: t.acme,
            acme_ca,
            cert,
            https_redirect: t.https_redirect,
            hsts,
            sni_host_check: t.sni_host_check,
        })
    }
}

/// A self-signed certificate for names nobody configured, so handshakes never fail.
pub fn generated_default() -> anyhow::Result<Loaded> {
    let ck = rcgen::generate_simple_self_signed(vec!["cong.invalid".to_string()])?;
    parse_pair(
        ck.cert.pem().as_bytes(),
        ck.key_pair.serialize_pem().as_bytes(),
        "generated default",
    )
    .map(|(key, mut info)| {
        // It is never matched by name, only served as the fallback.
        info.names.clear();
        Loaded {
            key,
            info,
            source: Source::Generated,
        }
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// Loads an operator pair, reporting a problem as one event naming the tenant and file.
pub fn load_operator(tenant: &str, cert: &Path, key: &Path) -> Option<Loaded> {
    match load_pair(cert, key) {
        Ok((key, info)) => Some(Loaded {
            key,
            info,
            source: Source::Operator,
        }),
        Err(e) => {
            events::emit(cert_error_event(tenant, &e));
            None
        }
    }
}

pub fn cert_error_event(tenant: &str, e: &CertError) -> Event {
    Event::new("cert_invalid", Severity::Error)
        .tenant(tenant)
        .field("file", e.file())
        .field("error", e)
}

/// What the HTTPS step of the pipeline decided for a request.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpsAction {
    /// 308 to this location.
    Redirect(String),
    /// 421: the Host belongs to another tenant than the SNI.
    Misdirected,
}

/// The pipeline's HTTPS step, after routing: redirect plain HTTP when the tenant asks for it and
/// a certificate covers the host; reject a Host/SNI tenant mismatch when the tenant asks for it.
pub fn https_step(
    snap: &crate::gateway::Snapshot,
    tenant: u32,
    conn: Option<&ConnTls>,
    host: &str,
    path_and_query: &str,
    certs: &CertResolver,
) -> Option<HttpsAction> {
    let t = &snap.tenants[tenant as usize].tls;
    match conn {
        None => {
            let name = host_without_port(host);
            (t.https_redirect && certs.covers(name)).then(|| {
                HttpsAction::Redirect(redirect_location(
                    host,
                    snap.settings.tls.https_port,
                    path_and_query,
                ))
            })
        }
        Some(c) if t.sni_host_check => {
            let sni_tenant = c
                .sni
                .as_deref()
                .and_then(|n| crate::routing::normalize_request_host(n).ok())
                .and_then(|k| snap.routes.lookup(&k));
            (sni_tenant != Some(tenant)).then_some(HttpsAction::Misdirected)
        }
        Some(_) => None,
    }
}

/// Target of an HTTPS redirect: `https://HOST[:PORT]/path?query` (the port only when not 443).
pub fn redirect_location(host: &str, https_port: u16, path_and_query: &str) -> String {
    let host = host_without_port(host);
    if https_port == 443 {
        format!("https://{host}{path_and_query}")
    } else {
        format!("https://{host}:{https_port}{path_and_query}")
    }
}

pub fn host_without_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map(|(h, _)| &host[..h.len() + 1])
            .unwrap_or(host);
    }
    host.split(':').next().unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_exact_then_wildcard_then_default() {
        install_crypto_provider();
        let r = CertResolver::new(generated_default().unwrap());
        assert!(r.lookup("a.tinh.gov.vn").is_none());
        let ck = rcgen::generate_simple_self_signed(vec!["*.tinh.gov.vn".to_string()]).unwrap();
        let (key, info) = parse_pair(
            ck.cert.pem().as_bytes(),
            ck.key_pair.serialize_pem().as_bytes(),
            "x",
        )
        .unwrap();
        r.install(
            "dir:wild",
            Loaded {
                key,
                info,
                source: Source::Directory,
            },
        );
        assert!(r.lookup("A.tinh.gov.vn.").is_some());
        assert!(r.lookup("x.a.tinh.gov.vn").is_none());
        assert!(r.lookup("tinh.gov.vn").is_none());
        r.remove("dir:wild");
        assert!(r.lookup("a.tinh.gov.vn").is_none());
    }

    #[test]
    fn redirect_keeps_path_and_query_drops_port() {
        assert_eq!(
            redirect_location("a.gov.vn:8080", 443, "/x?y=1"),
            "https://a.gov.vn/x?y=1"
        );
        assert_eq!(
            redirect_location("[::1]:80", 8443, "/"),
            "https://[::1]:8443/"
        );
    }
}
