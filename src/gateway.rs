//! The runtime model built from a configuration: tenants, their pools and path routes, the
//! host route table and global settings, held as one immutable `Snapshot` behind an
//! `ArcSwap`. A request pins the snapshot it started with, so a later swap (reload) never
//! changes a request in flight. Building a snapshot is also how a configuration is validated
//! (`cong check`); it opens no sockets and resolves no names.

use crate::config::{Config, ConfigError, SourceFile, TenantConfig};
use crate::forwarded::{parse_cidr, TrustedProxies};
use crate::pages::ErrorPages;
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
    pub tls: crate::tls::TenantTls,
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
    pub threads: usize,
    pub grace_period: Duration,
    pub shutdown_timeout: Duration,
    pub upgrade_sock: String,
    pub pid_file: String,
    pub h2c: bool,
    pub access_log: bool,
    pub tls: crate::tls::TlsGlobal,
    pub acme: Arc<crate::acme::AcmeSettings>,
}

/// Everything the request path reads, built at once from one configuration.
#[derive(Debug)]
pub struct Snapshot {
    pub tenants: Vec<Tenant>,
    pub routes: RouteTable,
    pub trusted: TrustedProxies,
    pub settings: Settings,
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
        let settings = Settings {
            listen,
            admin,
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
            tls: crate::tls::TlsGlobal::from_config(cfg)?,
            acme: Arc::new(crate::acme::AcmeSettings::from_config(cfg)?),
        };

        let mut tenants = Vec::with_capacity(cfg.tenants.len());
        let mut routes = RouteTable::new();
        let mut ids: HashMap<String, usize> = HashMap::new();
        for tf in &cfg.tenants {
            let idx = tenants.len();
            let tenant = build_tenant(&tf.source, &tf.tenant, cfg)?;
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
        Ok(Snapshot {
            tenants,
            routes,
            trusted: TrustedProxies::new(nets),
            settings,
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
    let hosts = t
        .hosts
        .iter()
        .filter_map(|h| parse_host_pattern(h.get_ref()).ok())
        .map(|p| match p {
            crate::routing::HostPattern::Exact(n) => n,
            crate::routing::HostPattern::Wildcard(n) => format!("*.{n}"),
        })
        .collect();
    Ok(Tenant {
        name: t.name.clone().unwrap_or_else(|| id.clone()),
        id,
        hosts,
        pools,
        pool_names,
        default_pool,
        routes: PathRoutes::new(routes),
        error_pages,
        tls: crate::tls::TenantTls::from_config(src, t, cfg)?,
    })
}

/// The gateway's shared state: the snapshot in force and readiness.
pub struct Gateway {
    snapshot: ArcSwap<Snapshot>,
    /// Set by the health checker after its first round.
    pub ready: Arc<AtomicBool>,
}

impl Gateway {
    pub fn new(snapshot: Snapshot) -> Arc<Gateway> {
        Arc::new(Gateway {
            snapshot: ArcSwap::from_pointee(snapshot),
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The snapshot in force; hold the `Arc` for the whole request.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot; requests already running keep the old one.
    pub fn swap(&self, next: Snapshot) {
        self.snapshot.store(Arc::new(next));
    }
}
