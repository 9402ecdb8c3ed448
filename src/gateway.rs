//! The runtime model built from a configuration: tenants, their pools and path routes, the
//! host route table and global settings, held as one immutable `Snapshot` behind an
//! `ArcSwap`. A request pins the snapshot it started with, so a later swap (reload) never
//! changes a request in flight. Building a snapshot is also how a configuration is validated
//! (`cong check`); it opens no sockets and resolves no names.

use crate::config::{Config, ConfigError, SourceFile, TenantConfig};
use crate::forwarded::{parse_cidr, TrustedProxies};
use crate::maintenance::Window;
use crate::pages::ErrorPages;
use crate::redirects::{parse_csv, RedirectMap, Rule};
use crate::routing::{parse_host_pattern, PathRoutes, RouteTable, TenantIdx};
use crate::upstream::Pool;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Where a path route sends a request.
#[derive(Debug, Clone, Copy)]
pub struct RouteTarget {
    pub pool: usize,
    pub strip_prefix: bool,
}

/// One portal.
#[derive(Debug)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    /// Normalised host patterns, as configured (for listings).
    pub hosts: Vec<String>,
    pub pools: Vec<Arc<Pool>>,
    pub pool_names: Vec<String>,
    pub default_pool: usize,
    pub routes: PathRoutes<RouteTarget>,
    pub error_pages: ErrorPages,
    /// Maintenance windows from the tenant file.
    pub maintenance: Vec<Window>,
    /// Request statistics (kept across reloads for the same id).
    pub stats: Arc<crate::metrics::TenantStats>,
    /// What the availability probe asks for; `None` when the tenant has only wildcards.
    pub probe_host: Option<String>,
    pub probe_path: String,
    /// Listed on the public status page.
    pub public: bool,
    /// Usage figures for the reports (kept across reloads for the same id).
    pub usage: Arc<crate::usage::TenantUsage>,
    pub tls: crate::tls::TenantTls,
    /// The tenant's own access rules (after the global ones).
    pub access: crate::access::RuleSet,
    /// Rate limits that apply to the tenant (global and its own).
    pub limits: crate::limits::TenantLimits,
    /// Page cache policy.
    pub cache: crate::cache::TenantPolicy,
    /// WAF mode, rule set and exclusions.
    pub waf: crate::waf::TenantWaf,
}

impl Tenant {
    /// The pool for a path and the prefix to strip, if any.
    pub fn pool_for(&self, path: &str) -> (&Arc<Pool>, Option<usize>) {
        match self.routes.lookup(path) {
            Some((prefix, t)) => (
                &self.pools[t.pool],
                if t.strip_prefix && prefix != "/" {
                    Some(prefix.len())
                } else {
                    None
                },
            ),
            None => (&self.pools[self.default_pool], None),
        }
    }
}

/// A listening address for citizen traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    pub addr: SocketAddr,
    pub ipv6_only: bool,
    pub tls: bool,
}

/// Process-wide settings that take effect at start.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: Vec<ListenSpec>,
    pub admin: SocketAddr,
    /// TLS for the admin listener: certificate, key, and the client CA when mutual TLS.
    pub admin_tls: Option<AdminTls>,
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub h2c: bool,
    pub access_log: bool,
    /// Reload when files of the configuration change.
    pub watch_config: bool,
    pub state_dir: Option<std::path::PathBuf>,
    pub availability: crate::config::AvailabilityConfig,
    pub tls: crate::tls::TlsGlobal,
    pub acme: Arc<crate::acme::AcmeSettings>,
    /// `[cluster]`: Redis shared with other nodes (takes effect at start).
    pub cluster: Option<Arc<crate::cluster::Settings>>,
}

/// Files of the admin listener's TLS (checked to be readable and valid at build).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

/// An admin API token: who holds it and the SHA-256 of its value.
#[derive(Debug, Clone)]
pub struct AdminToken {
    pub name: String,
    pub sha256: [u8; 32],
}

/// Everything the request path reads, built at once from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub tenants: Vec<Tenant>,
    pub routes: RouteTable,
    pub trusted: TrustedProxies,
    pub settings: Settings,
    pub redirects: RedirectMap,
    /// Redirect chains found while building (shown by `cong check`).
    pub warnings: Vec<String>,
    pub admin_tokens: Vec<AdminToken>,
    pub max_auth_failures: u32,
    pub online: crate::online::Expect,
    /// Host names that show the status page, and its headings.
    pub status_hosts: Vec<String>,
    pub status_titles: (String, String),
    /// Global access rules and the GeoIP database.
    pub access: crate::access::Global,
    /// Rate limits, bans and connection protection settings.
    pub limits: crate::limits::Settings,
    /// Page cache tiers (take effect at start).
    pub cache: crate::cache::Settings,
}

impl Snapshot {
    /// Validates the configuration and builds the runtime model.
    pub fn build(cfg: &Config) -> Result<Snapshot, ConfigError> {
        let src = &cfg.main_source;
        let main = &cfg.main;
        let mut listen: Vec<ListenSpec> = Vec::new();
        for (i, l) in main.listen.iter().enumerate() {
            let addr: SocketAddr = l.address.get_ref().parse().map_err(|_| {
                src.error_at(
                    l.address.span(),
                    format!("listen[{i}].address"),
                    format!(
                        "`{}` is not IP:PORT (IPv6 in brackets: `[::]:443`)",
                        l.address.get_ref()
                    ),
                )
            })?;
            let spec = ListenSpec {
                addr,
                ipv6_only: addr.is_ipv6() && l.ipv6_only.unwrap_or(true),
                tls: l.tls,
            };
            if listen.iter().any(|o| o.addr == addr) {
                return Err(src.error_at(
                    l.address.span(),
                    format!("listen[{i}].address"),
                    "listed twice",
                ));
            }
            listen.push(spec);
        }
        if listen.is_empty() {
            return Err(src.error_at(0..0, "listen", "at least one listener is needed"));
        }
        let admin: SocketAddr =
            main.admin.address.get_ref().parse().map_err(|_| {
                src.error_at(main.admin.address.span(), "admin.address", "not IP:PORT")
            })?;
        if listen.iter().any(|l| l.addr == admin) {
            return Err(src.error_at(
                main.admin.address.span(),
                "admin.address",
                "the admin listener cannot share an address with a traffic listener",
            ));
        }
        let mut nets = Vec::new();
        for (i, t) in main.server.trusted_proxies.iter().enumerate() {
            nets.push(
                parse_cidr(t.get_ref()).map_err(|e| {
                    src.error_at(t.span(), format!("server.trusted_proxies[{i}]"), e)
                })?,
            );
        }
        let admin_tls = admin_tls(cfg)?;
        let settings = Settings {
            listen,
            admin,
            admin_tls,
            threads: main
                .server
                .threads
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                })
                .max(1),
            grace_period: main.server.grace_period.get(),
            shutdown_timeout: main.server.shutdown_timeout.get(),
            upgrade_sock: main.server.upgrade_sock.clone(),
            pid_file: main.server.pid_file.clone(),
            h2c: main.server.h2c,
            access_log: main.server.access_log,
            watch_config: main.server.watch_config,
            state_dir: main.server.state_dir.as_deref().map(|d| cfg.resolve(d)),
            availability: main.availability.clone(),
            tls: crate::tls::TlsGlobal::from_config(cfg)?,
            acme: Arc::new(crate::acme::AcmeSettings::from_config(cfg)?),
            cluster: crate::cluster::Settings::from_config(cfg)?.map(Arc::new),
        };

        let access = crate::access::Global::build(cfg)?;
        let limits = crate::limits::Settings::build(cfg)?;
        let mut waf = crate::waf::Global::build(cfg)?;
        let mut tenants = Vec::with_capacity(cfg.tenants.len());
        let mut routes = RouteTable::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for tf in &cfg.tenants {
            let idx = tenants.len();
            let mut tenant = build_tenant(&tf.source, &tf.tenant, cfg)?;
            tenant.access = access.tenant_rules(&tf.source, &tf.tenant.access)?;
            tenant.limits = limits.tenant(cfg, &tf.source, &tenant.id, &tf.tenant.limits)?;
            tenant.cache = crate::cache::TenantPolicy::build(&tf.source, &tf.tenant.cache)?;
            tenant.waf = waf.tenant(cfg, &tf.source, &tf.tenant.waf)?;
            if let Some(&prev) = ids.get(&tenant.id) {
                return Err(tf.source.error_at(
                    tf.tenant.id.span(),
                    "id",
                    format!(
                        "tenant id `{}` is already used by {}",
                        tenant.id, cfg.tenants[prev].source.path
                    ),
                ));
            }
            ids.insert(tenant.id.clone(), idx);
            for h in &tf.tenant.hosts {
                let pattern = parse_host_pattern(h.get_ref())
                    .map_err(|e| tf.source.error_at(h.span(), "hosts", e))?;
                if let Err(owner) = routes.insert(&pattern, idx as TenantIdx) {
                    let other: &Tenant = &tenants[owner as usize];
                    let msg = if owner as usize == idx {
                        format!("`{}` is listed twice", h.get_ref())
                    } else {
                        format!("`{}` already belongs to tenant `{}`", h.get_ref(), other.id)
                    };
                    return Err(tf.source.error_at(h.span(), "hosts", msg));
                }
            }
            tenants.push(tenant);
        }
        if let Some(d) = &main.server.default_tenant {
            match ids.get(d.get_ref()) {
                Some(&i) => routes.set_default(Some(i as TenantIdx)),
                None => {
                    return Err(src.error_at(
                        d.span(),
                        "server.default_tenant",
                        format!("no tenant has id `{}`", d.get_ref()),
                    ))
                }
            }
        }
        let (redirects, warnings) = build_redirects(cfg)?;
        let mut admin_tokens = Vec::new();
        for (i, t) in main.admin.token.iter().enumerate() {
            let hex = t.sha256.get_ref();
            let sha256 = parse_sha256(hex).ok_or_else(|| {
                src.error_at(
                    t.sha256.span(),
                    format!("admin.token[{i}].sha256"),
                    "64 hex digits expected (`cong token new` prints one)",
                )
            })?;
            admin_tokens.push(AdminToken {
                name: t.name.clone(),
                sha256,
            });
        }
        let mut public_addresses = Vec::new();
        for (i, a) in main.check.public_addresses.iter().enumerate() {
            public_addresses.push(a.get_ref().parse().map_err(|_| {
                src.error_at(
                    a.span(),
                    format!("check.public_addresses[{i}]"),
                    "not an IP address",
                )
            })?);
        }
        let online = crate::online::Expect {
            public_addresses,
            caa_issuers: main.check.caa_issuers.clone(),
        };
        let mut status_hosts = Vec::new();
        for (i, h) in main.status_page.hosts.iter().enumerate() {
            match parse_host_pattern(h.get_ref()) {
                Ok(crate::routing::HostPattern::Exact(n)) => {
                    if routes.lookup_name(&n).is_some() {
                        return Err(src.error_at(
                            h.span(),
                            format!("status_page.hosts[{i}]"),
                            format!("`{n}` is also a tenant host"),
                        ));
                    }
                    status_hosts.push(n)
                }
                Ok(_) => {
                    return Err(src.error_at(
                        h.span(),
                        format!("status_page.hosts[{i}]"),
                        "a wildcard cannot be the status host",
                    ))
                }
                Err(e) => return Err(src.error_at(h.span(), format!("status_page.hosts[{i}]"), e)),
            }
        }
        let status_titles = (
            main.status_page
                .title_vi
                .clone()
                .unwrap_or_else(|| "Tình trạng hoạt động các cổng thông tin điện tử".into()),
            main.status_page
                .title_en
                .clone()
                .unwrap_or_else(|| "Status of the government web portals".into()),
        );
        Ok(Snapshot {
            cache: crate::cache::Settings::build(cfg)?,
            access,
            limits,
            status_hosts,
            status_titles,
            online,
            tenants,
            routes,
            trusted: TrustedProxies::new(nets),
            settings,
            redirects,
            warnings,
            admin_tokens,
            max_auth_failures: main.admin.max_auth_failures,
        })
    }

    /// Every pool of every tenant (for the health checker and resolver).
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        self.tenants
            .iter()
            .flat_map(|t| t.pools.iter().cloned())
            .collect()
    }
}

/// `[admin] tls_cert`, `tls_key`, `client_ca`: all files read and checked now, so a mistake is a
/// configuration error and not a listener that never comes up.
fn admin_tls(cfg: &Config) -> Result<Option<AdminTls>, ConfigError> {
    let src = &cfg.main_source;
    let a = &cfg.main.admin;
    let (cert, key) = match (&a.tls_cert, &a.tls_key) {
        (None, None) => {
            if let Some(ca) = &a.client_ca {
                return Err(src.error_at(
                    ca.span(),
                    "admin.client_ca",
                    "needs admin.tls_cert and admin.tls_key",
                ));
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (c, k),
        (Some(c), None) => {
            return Err(src.error_at(
                c.span(),
                "admin.tls_key",
                "admin.tls_cert needs admin.tls_key",
            ))
        }
        (None, Some(k)) => {
            return Err(src.error_at(
                k.span(),
                "admin.tls_cert",
                "admin.tls_key needs admin.tls_cert",
            ))
        }
    };
    let cert_path = cfg.resolve(cert.get_ref());
    let key_path = cfg.resolve(key.get_ref());
    crate::tls::load_pair(&cert_path, &key_path)
        .map_err(|e| src.error_at(cert.span(), "admin.tls_cert", e.to_string()))?;
    let client_ca = match &a.client_ca {
        Some(ca) => {
            let p = cfg.resolve(ca.get_ref());
            crate::upstream::tls::read_pem_certs(&p)
                .map_err(|e| src.error_at(ca.span(), "admin.client_ca", e))?;
            Some(p.display().to_string())
        }
        None => None,
    };
    Ok(Some(AdminTls {
        cert: cert_path.display().to_string(),
        key: key_path.display().to_string(),
        client_ca,
    }))
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Redirect rules from `[[redirect]]` and the CSV files; loops are errors, chains warnings.
fn build_redirects(cfg: &Config) -> Result<(RedirectMap, Vec<String>), ConfigError> {
    let src = &cfg.main_source;
    let mut rules = Vec::new();
    for (i, r) in cfg.main.redirect.iter().enumerate() {
        let (line, _) = src.line_col(r.from.span().start);
        let rule = Rule::parse(
            r.from.get_ref(),
            &r.to,
            r.code,
            format!("{}:{line}", src.path),
        )
        .map_err(|e| src.error_at(r.from.span(), format!("redirect[{i}]"), e))?;
        rules.push(rule);
    }
    for (i, f) in cfg.main.server.redirect_files.iter().enumerate() {
        let path = cfg.resolve(f.get_ref());
        let text = std::fs::read_to_string(&path).map_err(|e| {
            src.error_at(
                f.span(),
                format!("server.redirect_files[{i}]"),
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let more = parse_csv(&path.display().to_string(), &text)
            .map_err(|e| src.error_at(f.span(), format!("server.redirect_files[{i}]"), e))?;
        rules.extend(more);
    }
    let map = RedirectMap::new(rules).map_err(|e| src.error_at(0..0, "redirect", e))?;
    let (warnings, errors) = map.check();
    if let Some(e) = errors.first() {
        return Err(src.error_at(0..0, "redirect", e.clone()));
    }
    Ok((map, warnings))
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn build_tenant(src: &SourceFile, t: &TenantConfig, cfg: &Config) -> Result<Tenant, ConfigError> {
    let id = t.id.get_ref().clone();
    if !valid_id(&id) {
        return Err(src.error_at(
            t.id.span(),
            "id",
            format!("`{id}`: use lower-case letters, digits, `-` and `_` (at most 64)"),
        ));
    }
    if t.hosts.is_empty() {
        return Err(src.error_at(
            t.id.span(),
            "hosts",
            format!("tenant `{id}` needs at least one host name"),
        ));
    }
    if t.pools.is_empty() {
        return Err(src.error_at(
            t.id.span(),
            "pools",
            format!("tenant `{id}` needs at least one pool"),
        ));
    }
    let resolve = |p: &str| cfg.resolve(p);
    let mut pools = Vec::new();
    let mut pool_names = Vec::new();
    let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
    for (name, pc) in &t.pools {
        let pool = Pool::from_config(
            format!("{id}/{name}"),
            &format!("pools.{name}"),
            pc,
            src,
            &resolve,
        )?;
        by_name.insert(name.as_str(), pools.len());
        pool_names.push(name.clone());
        pools.push(Arc::new(pool));
    }
    let default_pool = match &t.default_pool {
        Some(d) => *by_name.get(d.get_ref().as_str()).ok_or_else(|| {
            src.error_at(
                d.span(),
                "default_pool",
                format!("no pool named `{}` in this tenant", d.get_ref()),
            )
        })?,
        None if pools.len() == 1 => 0,
        None => {
            return Err(src.error_at(
                t.id.span(),
                "default_pool",
                format!("tenant `{id}` has several pools: say which one is `default_pool`"),
            ))
        }
    };
    let mut routes = Vec::new();
    for (i, r) in t.routes.iter().enumerate() {
        let path = r.path.get_ref();
        if !path.starts_with('/') || path.contains('?') || path.contains('#') {
            return Err(src.error_at(
                r.path.span(),
                format!("routes[{i}].path"),
                format!("`{path}` must be a path starting with `/`, without query"),
            ));
        }
        let pool = *by_name.get(r.pool.get_ref().as_str()).ok_or_else(|| {
            src.error_at(
                r.pool.span(),
                format!("routes[{i}].pool"),
                format!("no pool named `{}` in this tenant", r.pool.get_ref()),
            )
        })?;
        routes.push((
            path.clone(),
            RouteTarget {
                pool,
                strip_prefix: r.strip_prefix,
            },
        ));
    }
    let error_pages = match &t.error_pages {
        Some(dir) => ErrorPages::load(&cfg.resolve(dir.get_ref()))
            .map_err(|e| src.error_at(dir.span(), "error_pages", e))?,
        None => ErrorPages::default(),
    };
    let mut maintenance = Vec::new();
    for (i, m) in t.maintenance.iter().enumerate() {
        let w = Window {
            id: format!("{id}-config-{i}"),
            tenant: id.clone(),
            start: m.start.get_ref().clone(),
            end: m.end.get_ref().clone(),
            restore: m.restore.as_ref().map(|r| r.get_ref().clone()),
            message_vi: m.message_vi.clone(),
            message_en: m.message_en.clone(),
            source: "config".into(),
            start_s: 0,
            end_s: 0,
        };
        let w = w.validated().map_err(|e| {
            let (field, span) = match e.split(':').next() {
                Some("end") => ("end", m.end.span()),
                Some("restore") => (
                    "restore",
                    m.restore.as_ref().map(|r| r.span()).unwrap_or(m.end.span()),
                ),
                _ => ("start", m.start.span()),
            };
            src.error_at(span, format!("maintenance[{i}].{field}"), e)
        })?;
        maintenance.push(w);
    }
    let hosts: Vec<String> = t
        .hosts
        .iter()
        .filter_map(|h| parse_host_pattern(h.get_ref()).ok())
        .map(|p| match p {
            crate::routing::HostPattern::Exact(n) => n,
            crate::routing::HostPattern::Wildcard(n) => format!("*.{n}"),
        })
        .collect();
    let probe_host = t.probe_host.clone().or_else(|| {
        hosts
            .iter()
            .find(|h: &&String| !h.starts_with("*."))
            .cloned()
    });
    Ok(Tenant {
        probe_host,
        probe_path: t.probe_path.clone(),
        public: t.public,
        stats: crate::metrics::tenant_stats(&id),
        usage: crate::usage::tenant_usage(&id),
        name: t.name.clone().unwrap_or_else(|| id.clone()),
        id,
        hosts,
        pools,
        pool_names,
        default_pool,
        routes: PathRoutes::new(routes),
        error_pages,
        maintenance,
        tls: crate::tls::TenantTls::from_config(src, t, cfg)?,
        access: Default::default(),
        limits: Default::default(),
        cache: Default::default(),
        waf: Default::default(),
    })
}

/// Why a reload did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("a reload is already in progress")]
    InProgress,
    #[error("{0}")]
    Config(String),
}

/// What a successful reload changed.
#[derive(Debug, Clone)]
pub struct ReloadOutcome {
    pub tenants: usize,
    /// Pools whose configuration did not change: kept with their health state.
    pub kept_pools: usize,
    pub new_pools: usize,
    /// Settings that changed but only take effect after a restart or binary upgrade.
    pub restart_needed: Vec<String>,
}

/// The gateway's shared state: the snapshot in force, where it came from, and readiness.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Set by the health checker after its first round.
    pub ready: Arc<AtomicBool>,
    /// Main configuration file; `None` for the built-in configuration.
    pub source: Option<std::path::PathBuf>,
    /// The configuration files as they were just before the snapshot in force (or the last
    /// failed attempt) read them; `None` for the built-in configuration.
    applied_files: std::sync::Mutex<Option<crate::reload::Fingerprint>>,
    reload_lock: std::sync::Mutex<()>,
    /// Maintenance windows created through the admin API.
    pub maintenance: crate::maintenance::ApiWindows,
    /// Availability history of every tenant.
    pub availability: Arc<crate::availability::Tracker>,
}

impl Gateway {
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        Self::with_source(snapshot, None, Vec::new())
    }

    /// A gateway whose configuration was read from `source` when its files looked like `files`.
    pub fn with_source(
        snapshot: Snapshot,
        source: Option<std::path::PathBuf>,
        files: crate::reload::Fingerprint,
    ) -> Arc<Gateway> {
        let maintenance = crate::maintenance::ApiWindows::load(snapshot.settings.state_dir.clone());
        crate::metrics::get()
            .tenants
            .set(snapshot.tenants.len() as i64);
        snapshot.limits.apply();
        let a = &snapshot.settings.availability;
        let availability = crate::availability::Tracker::new(
            snapshot.settings.state_dir.as_deref(),
            a.interval.get().max(Duration::from_millis(200)),
            a.timeout.get(),
        );
        Arc::new(Gateway {
            availability,
            snapshot: ArcSwap::from_pointee(snapshot),
            ready: Arc::new(AtomicBool::new(false)),
            applied_files: std::sync::Mutex::new(source.is_some().then_some(files)),
            source,
            reload_lock: std::sync::Mutex::new(()),
            maintenance,
        })
    }

    /// The snapshot in force; hold the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Whether the configuration files look as they did when start-up or the last reload read
    /// them (compared in place: with thousands of tenants the fingerprint is large).
    pub fn files_applied(&self, now: &crate::reload::Fingerprint) -> bool {
        self.applied_files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            == Some(now)
    }

    /// Replaces the snapshot; requests already running keep the old one.
    pub fn swap(&self, next: Snapshot) {
        next.limits.apply();
        self.snapshot.store(Arc::new(next));
    }

    /// Reads and validates the configuration again and swaps it in. On any error the running
    /// configuration stays and the error is returned (and emitted as an event). Blocking: call
    /// it off the request path.
    pub fn reload(&self, trigger: &str) -> Result<ReloadOutcome, ReloadError> {
        use crate::events::{emit, Event, Severity};
        let _guard = match self.reload_lock.try_lock() {
            Ok(g) => g,
            Err(_) => {
                emit(
                    Event::new("config_reload_failed", Severity::Warning)
                        .field("trigger", trigger)
                        .field("cause", "a reload is already in progress"),
                );
                return Err(ReloadError::InProgress);
            }
        };
        let built = match &self.source {
            Some(p) => {
                // Recorded whatever the outcome, so a broken file is not retried on every poll
                // but its next edit is.
                let files = crate::reload::config_fingerprint(p);
                let built = Config::load(p).and_then(|c| Snapshot::build(&c));
                *self.applied_files.lock().unwrap_or_else(|e| e.into_inner()) = Some(files);
                built
            }
            None => Config::builtin().and_then(|c| Snapshot::build(&c)),
        };
        let mut next = match built {
            Ok(n) => n,
            Err(e) => {
                crate::metrics::get()
                    .reloads
                    .with_label_values(&["failed"])
                    .inc();
                emit(
                    Event::new("config_reload_failed", Severity::Error)
                        .field("trigger", trigger)
                        .field("cause", &e),
                );
                return Err(ReloadError::Config(e.to_string()));
            }
        };
        let old = self.snapshot();
        let (kept, new) = next.adopt_unchanged_pools(&old);
        let restart_needed = old.settings.restart_needed(&next.settings);
        // Settings that need a restart keep their running values, so what is reported as
        // running stays true; the rest take effect now.
        let reloadable = next.settings.clone();
        next.settings = old.settings.clone();
        next.settings.access_log = reloadable.access_log;
        next.settings.watch_config = reloadable.watch_config;
        let outcome = ReloadOutcome {
            tenants: next.tenants.len(),
            kept_pools: kept,
            new_pools: new,
            restart_needed,
        };
        crate::metrics::get().tenants.set(next.tenants.len() as i64);
        self.swap(next);
        crate::metrics::get()
            .reloads
            .with_label_values(&["ok"])
            .inc();
        let mut ev = Event::new("config_reload", Severity::Notice)
            .field("trigger", trigger)
            .field("tenants", outcome.tenants)
            .field("kept_pools", outcome.kept_pools)
            .field("new_pools", outcome.new_pools);
        if !outcome.restart_needed.is_empty() {
            ev = ev.field("restart_needed", outcome.restart_needed.join(","));
        }
        emit(ev);
        Ok(outcome)
    }
}

impl Snapshot {
    /// Reuses the previous snapshot's pool objects where the configuration is the same, so
    /// health state, DNS answers and counters survive a reload. Returns (kept, new).
    pub fn adopt_unchanged_pools(&mut self, old: &Snapshot) -> (usize, usize) {
        let mut by_label: HashMap<&str, &Arc<Pool>> = HashMap::new();
        for t in &old.tenants {
            for p in &t.pools {
                by_label.insert(p.label.as_str(), p);
            }
        }
        let (mut kept, mut new) = (0, 0);
        for t in &mut self.tenants {
            for p in &mut t.pools {
                match by_label.get(p.label.as_str()) {
                    Some(o) if o.fingerprint == p.fingerprint => {
                        *p = Arc::clone(o);
                        kept += 1;
                    }
                    _ => new += 1,
                }
            }
        }
        (kept, new)
    }
}

impl Settings {
    /// Names of settings that differ and need a restart (or binary upgrade) to apply.
    pub fn restart_needed(&self, next: &Settings) -> Vec<String> {
        let mut v = Vec::new();
        if self.listen != next.listen {
            v.push("listen".to_string());
        }
        if self.admin != next.admin || self.admin_tls != next.admin_tls {
            v.push("admin.address/tls".to_string());
        }
        if self.threads != next.threads {
            v.push("server.threads".to_string());
        }
        if self.grace_period != next.grace_period || self.shutdown_timeout != next.shutdown_timeout
        {
            v.push("server.grace_period/shutdown_timeout".to_string());
        }
        if self.upgrade_sock != next.upgrade_sock || self.pid_file != next.pid_file {
            v.push("server.upgrade_sock/pid_file".to_string());
        }
        if self.h2c != next.h2c {
            v.push("server.h2c".to_string());
        }
        v
    }
}
