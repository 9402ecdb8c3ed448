//! The TOML schema. Unknown keys are errors everywhere (`deny_unknown_fields`).
//! Values that need checks beyond their type are `Spanned` so the check can point at them.

use super::tls::{AcmeCaConfig, AcmeConfig, DnsUpdateConfig, TlsConfig};
use super::Dur;
use serde::Deserialize;
use std::collections::BTreeMap;
use toml::Spanned;

/// `cong.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MainConfig {
    #[serde(default)]
    pub server: ServerConfig,
    /// Listening addresses for citizen traffic. Default: `0.0.0.0:8080` and `[::]:8080`.
    #[serde(default = "default_listen")]
    pub listen: Vec<ListenConfig>,
    #[serde(default)]
    pub admin: AdminConfig,
    /// Tenants written inline in the main file (small setups and tests).
    #[serde(default)]
    pub tenant: Vec<TenantConfig>,
    /// Redirects of legacy names (see also `server.redirect_files`).
    #[serde(default)]
    pub redirect: Vec<RedirectConfig>,
    /// What `cong check --online` compares DNS against.
    #[serde(default)]
    pub check: CheckConfig,
    #[serde(default)]
    pub availability: AvailabilityConfig,
    #[serde(default)]
    pub status_page: StatusPageConfig,
    /// Event shipping to the SOC and the local archive (`[soc]`, `[[soc.sink]]`).
    pub soc: Option<super::SocConfig>,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub acme: AcmeConfig,
    #[serde(default)]
    pub acme_ca: Vec<AcmeCaConfig>,
    #[serde(default)]
    pub dns_update: Vec<DnsUpdateConfig>,
    #[serde(default)]
    pub access: super::AccessConfig,
    #[serde(default)]
    pub limits: super::LimitsConfig,
    #[serde(default)]
    pub bans: super::BansConfig,
    #[serde(default)]
    pub connections: super::ConnectionsConfig,
    /// The page cache's storage tiers.
    #[serde(default)]
    pub cache: super::CacheConfig,
    /// The WAF's rule files and body inspection bounds.
    #[serde(default)]
    pub waf: super::WafConfig,
    /// Several nodes sharing state through Redis; absent: a single node.
    pub cluster: Option<Spanned<super::ClusterConfig>>,
}

/// `[availability]`: probing every tenant through the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_probe_interval")]
    pub interval: Dur,
    #[serde(default = "default_probe_timeout")]
    pub timeout: Dur,
    /// Leave planned maintenance out of uptime figures.
    #[serde(default = "yes")]
    pub exclude_maintenance: bool,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        AvailabilityConfig {
            enabled: true,
            interval: default_probe_interval(),
            timeout: default_probe_timeout(),
            exclude_maintenance: true,
        }
    }
}

/// `[status_page]`: the public status page.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusPageConfig {
    /// Host names that show the status page (e.g. `status.tinh.gov.vn`) instead of a tenant.
    #[serde(default)]
    pub hosts: Vec<Spanned<String>>,
    /// Heading of the page, Vietnamese and English.
    pub title_vi: Option<String>,
    pub title_en: Option<String>,
}

/// `[check]`: expectations for `cong check --online`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckConfig {
    /// The gateway's public IPv4 and IPv6 addresses: every A/AAAA record of a tenant host must
    /// be one of them. Empty: any address is accepted.
    #[serde(default)]
    pub public_addresses: Vec<Spanned<String>>,
    /// CA domain names a CAA `issue` record must allow (e.g. `letsencrypt.org`). Empty: CAA
    /// is not checked.
    #[serde(default)]
    pub caa_issuers: Vec<String>,
}

/// `[[redirect]]`: an old host (or host + path prefix) sent to a new one.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// `old.host`, `old.host/path` or `*.old.parent`.
    pub from: Spanned<String>,
    /// `new.host`, `new.host/path` or `*.new.parent` (for a wildcard `from`).
    pub to: String,
    /// 301 (default), 302, 307 or 308.
    #[serde(default = "default_redirect_code")]
    pub code: u16,
}

/// `[[admin.token]]`: a bearer token for the admin API, stored as its SHA-256.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who holds it; written in audit events.
    pub name: String,
    /// Hex SHA-256 of the token (`cong token new` prints a token and this value).
    pub sha256: Spanned<String>,
}

/// `[[maintenance]]` in a tenant file: a planned outage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// RFC 3339 with offset, e.g. `2026-12-01T22:00:00+07:00`.
    pub start: Spanned<String>,
    pub end: Spanned<String>,
    /// Expected restore time shown to citizens (default: `end`).
    pub restore: Option<Spanned<String>>,
    pub message_vi: Option<String>,
    pub message_en: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Worker threads of the proxy service. Default: number of CPUs.
    pub threads: Option<usize>,
    /// How long in-flight requests may run after SIGTERM before the process exits.
    #[serde(default = "default_grace")]
    pub grace_period: Dur,
    /// Extra time given to runtimes to stop after the grace period.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: Dur,
    /// Directory of tenant files, relative to the main file. Default `tenants.d`.
    pub tenants_dir: Option<Spanned<String>>,
    /// Tenant that receives requests for a bare IP address or with no Host.
    pub default_tenant: Option<Spanned<String>>,
    /// Peers whose `X-Forwarded-For` / `Forwarded` headers are believed (CIDRs).
    #[serde(default)]
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Socket used to hand listening sockets to a new binary during upgrade.
    #[serde(default = "default_upgrade_sock")]
    pub upgrade_sock: String,
    /// PID file written at start.
    #[serde(default = "default_pid_file")]
    pub pid_file: String,
    /// Accept HTTP/2 without TLS (prior knowledge) on plain listeners.
    #[serde(default = "yes")]
    pub h2c: bool,
    /// Write one access log line per request to standard error.
    #[serde(default = "yes")]
    pub access_log: bool,
    /// Reload automatically when the main file or a tenant file changes.
    #[serde(default = "yes")]
    pub watch_config: bool,
    /// Directory for state kept across restarts (maintenance windows set through the API).
    pub state_dir: Option<String>,
    /// CSV files of redirects (`from,to[,code]`), relative to the main file.
    #[serde(default)]
    pub redirect_files: Vec<Spanned<String>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            threads: None,
            grace_period: default_grace(),
            shutdown_timeout: default_shutdown_timeout(),
            tenants_dir: None,
            default_tenant: None,
            trusted_proxies: Vec::new(),
            upgrade_sock: default_upgrade_sock(),
            pid_file: default_pid_file(),
            h2c: true,
            access_log: true,
            watch_config: true,
            state_dir: None,
            redirect_files: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenConfig {
    /// `IP:PORT`; IPv6 in brackets, e.g. `[::]:443`.
    pub address: Spanned<String>,
    /// For IPv6 addresses: accept only IPv6 (default true, so a separate IPv4 listener on the
    /// same port can coexist). Set false to serve IPv4 too from one `[::]` socket.
    pub ipv6_only: Option<bool>,
    /// Terminate TLS on this listener (certificates chosen by SNI).
    #[serde(default)]
    pub tls: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (health, readiness, API).
    #[serde(default = "default_admin")]
    pub address: Spanned<String>,
    /// Bearer tokens accepted by the API; without any, the API answers 403.
    #[serde(default)]
    pub token: Vec<TokenConfig>,
    /// Failed authentications from one address per minute before it gets 429.
    #[serde(default = "default_auth_failures")]
    pub max_auth_failures: u32,
    /// Serve the admin listener over TLS with this certificate chain and key (PEM).
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    /// With TLS: require a client certificate signed by one of these CAs (PEM): mutual TLS.
    pub client_ca: Option<Spanned<String>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            address: default_admin(),
            token: Vec::new(),
            tls_cert: None,
            tls_key: None,
            client_ca: None,
            max_auth_failures: default_auth_failures(),
        }
    }
}

/// One tenant: a portal with its host names, path routes and upstream pools.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Stable identifier used in logs and metrics: lower-case letters, digits, `-`, `_`.
    pub id: Spanned<String>,
    /// Human-readable name (Vietnamese welcome).
    pub name: Option<String>,
    /// Exact names, aliases and wildcards (`*.campha.quangninh.gov.vn`). Unicode names are
    /// converted to punycode.
    pub hosts: Vec<Spanned<String>>,
    /// Pool used when no path route matches. Optional when the tenant has one pool.
    pub default_pool: Option<Spanned<String>>,
    /// Path-prefix routes to other pools; the longest matching prefix wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Upstream pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Directory with `404.html`, `502.html`, `503.html`, `504.html` overriding the built-in
    /// pages; `{{request_id}}` and `{{status}}` are replaced.
    pub error_pages: Option<Spanned<String>>,
    /// Planned maintenance windows.
    #[serde(default)]
    pub maintenance: Vec<MaintenanceConfig>,
    /// Host the availability probe asks for. Default: the first exact host name.
    pub probe_host: Option<String>,
    /// Path the availability probe asks for.
    #[serde(default = "default_health_path")]
    pub probe_path: String,
    /// Listed on the public status page.
    #[serde(default = "yes")]
    pub public: bool,
    /// HTTPS: obtain and renew the certificate with ACME (`acme_ca` picks the CA by name).
    #[serde(default)]
    pub acme: bool,
    pub acme_ca: Option<Spanned<String>>,
    /// HTTPS: operator-provided certificate chain and key (PEM).
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
    /// HTTPS: 308 from plain HTTP to HTTPS once a certificate exists for the host.
    #[serde(default)]
    pub https_redirect: bool,
    /// HTTPS: `Strict-Transport-Security` value sent on HTTPS responses.
    pub hsts: Option<Spanned<String>>,
    /// HTTPS: answer 421 when the Host belongs to another tenant than the TLS SNI.
    #[serde(default)]
    pub sni_host_check: bool,
    /// Access rules of this tenant, applied after the global ones.
    #[serde(default)]
    pub access: super::AccessConfig,
    #[serde(default)]
    pub limits: super::TenantLimitsConfig,
    /// The page cache policy of this tenant.
    #[serde(default)]
    pub cache: super::TenantCacheConfig,
    /// The WAF for this tenant.
    #[serde(default)]
    pub waf: super::TenantWafConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on segment boundaries (`/sites/en` matches `/sites/en/x`, not
    /// `/sites/english`).
    pub path: Spanned<String>,
    pub pool: Spanned<String>,
    /// Remove the prefix before forwarding (`/sites/en/x` reaches the pool as `/x`).
    #[serde(default)]
    pub strip_prefix: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    LeastConn,
    /// Consistent (rendezvous) hash on the client address.
    IpHash,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// `IP:PORT`, `[IPv6]:PORT` or `name:PORT` (resolved by DNS, A and AAAA).
    #[serde(default)]
    pub backends: Vec<Spanned<String>>,
    /// Serve files from this directory instead of proxying (`builtin:demo` for the demo site).
    pub static_root: Option<Spanned<String>>,
    #[serde(default)]
    pub balance: Balance,
    /// Connect to backends over TLS.
    #[serde(default)]
    pub tls: bool,
    /// SNI and name verified on backend certificates. Default: the request's host.
    pub sni: Option<String>,
    /// Verify backend certificates (default true).
    #[serde(default = "yes")]
    pub tls_verify: bool,
    /// CA bundle (PEM) to verify backend certificates instead of the system roots.
    pub ca_file: Option<Spanned<String>>,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// Time to wait for each read from the backend (including the response header).
    #[serde(default = "default_rw_timeout")]
    pub read_timeout: Dur,
    #[serde(default = "default_rw_timeout")]
    pub write_timeout: Dur,
    /// How long an idle pooled connection to a backend is kept.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Dur,
    /// Consecutive failed requests (connect errors, timeouts) that take a backend out.
    #[serde(default = "default_max_fails")]
    pub max_fails: u32,
    /// How long a backend taken out by failed requests stays out.
    #[serde(default = "default_fail_timeout")]
    pub fail_timeout: Dur,
    /// Retries of idempotent requests on another backend.
    #[serde(default = "default_retries")]
    pub retries: u32,
    pub health: Option<HealthConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    #[serde(default = "default_health_path")]
    pub path: String,
    /// Host header of the probe. Default: the backend address.
    pub host: Option<String>,
    /// Accepted statuses: `"200"`, `"200-399"`, or a list like `"200,204,301-302"`.
    #[serde(default = "default_expect")]
    pub expect_status: Spanned<String>,
    #[serde(default = "default_interval")]
    pub interval: Dur,
    #[serde(default = "default_health_timeout")]
    pub timeout: Dur,
    /// Consecutive successes that bring a backend back.
    #[serde(default = "default_rise_fall")]
    pub rise: u32,
    /// Consecutive failures that take a backend out.
    #[serde(default = "default_rise_fall")]
    pub fall: u32,
}

fn default_probe_interval() -> Dur {
    Dur::secs(30)
}
fn default_probe_timeout() -> Dur {
    Dur::secs(10)
}
fn default_redirect_code() -> u16 {
    301
}
fn default_auth_failures() -> u32 {
    5
}
fn yes() -> bool {
    true
}
fn default_grace() -> Dur {
    Dur::secs(10)
}
fn default_shutdown_timeout() -> Dur {
    Dur::secs(5)
}
fn default_upgrade_sock() -> String {
    "/tmp/cong-upgrade.sock".into()
}
fn default_pid_file() -> String {
    "/tmp/cong.pid".into()
}
fn default_admin() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9900".into())
}
fn default_listen() -> Vec<ListenConfig> {
    ["0.0.0.0:8080", "[::]:8080"]
        .into_iter()
        .map(|a| ListenConfig {
            address: Spanned::new(0..0, a.into()),
            ipv6_only: None,
            tls: false,
        })
        .collect()
}
fn default_connect_timeout() -> Dur {
    Dur::secs(3)
}
fn default_rw_timeout() -> Dur {
    Dur::secs(30)
}
fn default_idle_timeout() -> Dur {
    Dur::secs(60)
}
fn default_max_fails() -> u32 {
    1
}
fn default_fail_timeout() -> Dur {
    Dur::secs(10)
}
fn default_retries() -> u32 {
    1
}
fn default_health_path() -> String {
    "/".into()
}
fn default_expect() -> Spanned<String> {
    Spanned::new(0..0, "200-399".into())
}
fn default_interval() -> Dur {
    Dur::secs(5)
}
fn default_health_timeout() -> Dur {
    Dur::secs(2)
}
fn default_rise_fall() -> u32 {
    2
}
