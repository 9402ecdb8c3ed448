//! The TOML schema of access control, rate limits, bans and connection protection.
//! `[access]` and `[limits]` exist in the main file (global) and in tenant files (per tenant);
//! `[bans]` and `[connections]` only in the main file.

use super::Dur;
use serde::Deserialize;
use toml::Spanned;

/// `[access]`: operator rules, and (main file only) the GeoIP database.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessConfig {
    /// MaxMind-format country database (`.mmdb`); main file only. Without it every client
    /// is country `--` and rules with countries cannot be written.
    pub geoip_db: Option<Spanned<String>>,
    #[serde(default)]
    pub rule: Vec<RuleConfig>,
}

/// `[[access.rule]]`: conditions applied to requests whose path matches `paths` (all
/// requests when `paths` is empty). A request that fails any condition is refused.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Name used in events and metrics.
    pub name: Spanned<String>,
    /// `/quantri/**` (the path and everything below), `/a/*/b` (one segment), `/exact`.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    /// Only these networks or countries (either is enough) may pass.
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub allow_countries: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny_cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub deny_countries: Vec<Spanned<String>>,
    /// Methods allowed (others get 405).
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Regular expressions; a matching `User-Agent` is refused.
    #[serde(default)]
    pub deny_user_agents: Vec<Spanned<String>>,
    pub max_uri_length: Option<usize>,
    pub max_headers: Option<usize>,
    /// Total size of the header names and values.
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<u64>,
}

/// `[limits]` in the main file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Prefix length IPv4 clients are counted by.
    #[serde(default = "default_v4_prefix")]
    pub ipv4_prefix: Spanned<u8>,
    /// Prefix length IPv6 clients are counted by (one subscriber usually owns a /64).
    #[serde(default = "default_v6_prefix")]
    pub ipv6_prefix: Spanned<u8>,
    /// Largest number of (limit, client) entries kept; the least recently seen are forgotten.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// Clients never rate limited nor banned (scanners of the SOC, the province network).
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<String>>,
    /// Limits applied to every tenant (each tenant counts separately).
    #[serde(default)]
    pub rate: Vec<RateConfig>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            ipv4_prefix: default_v4_prefix(),
            ipv6_prefix: default_v6_prefix(),
            max_entries: default_max_entries(),
            allow_cidrs: Vec::new(),
            rate: Vec::new(),
        }
    }
}

/// `[limits]` in a tenant file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantLimitsConfig {
    #[serde(default)]
    pub allow_cidrs: Vec<Spanned<String>>,
    #[serde(default)]
    pub rate: Vec<RateConfig>,
}

/// Who a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateKey {
    /// Each client address (IPv6 by prefix).
    #[default]
    Client,
    /// All clients of the tenant together.
    Tenant,
}

/// `[[limits.rate]]`: `requests` per `per`, with bursts up to `burst`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    pub name: Spanned<String>,
    pub requests: Spanned<u32>,
    pub per: Dur,
    /// Requests allowed at once after a quiet period. Default: `requests`.
    pub burst: Option<u32>,
    /// Paths the limit applies to (same patterns as access rules); empty: all.
    #[serde(default)]
    pub paths: Vec<Spanned<String>>,
    #[serde(default)]
    pub key: RateKey,
    /// Where the limit is counted: on each node (`local`) or across the cluster (`cluster`).
    #[serde(default)]
    pub scope: RateScope,
}

/// Where a limit's state lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RateScope {
    /// This node's memory: fastest, each node counts alone.
    #[default]
    Local,
    /// Redis, shared by every node of `[cluster]` (local when there is no cluster or while
    /// Redis is unreachable).
    Cluster,
}

/// `[bans]`: repeat offenders are refused for a while.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BansConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Rate-limit hits (or WAF blocks) within `within` that ban the client.
    #[serde(default = "default_ban_after")]
    pub after: u32,
    #[serde(default = "default_ban_within")]
    pub within: Dur,
    /// First ban; doubled for each repeat offence up to `max_ban`.
    #[serde(default = "default_ban_for")]
    pub ban_for: Dur,
    #[serde(default = "default_max_ban")]
    pub max_ban: Dur,
    /// Largest number of clients tracked for bans.
    #[serde(default = "default_ban_entries")]
    pub max_entries: usize,
}

impl Default for BansConfig {
    fn default() -> Self {
        BansConfig {
            enabled: true,
            after: default_ban_after(),
            within: default_ban_within(),
            ban_for: default_ban_for(),
            max_ban: default_max_ban(),
            max_entries: default_ban_entries(),
        }
    }
}

/// `[connections]`: protection against slow and greedy clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConnectionsConfig {
    /// Open connections from one client address (IPv6 by prefix); 0: no cap.
    #[serde(default = "default_max_per_client")]
    pub max_per_client: u32,
    /// Time a client has to send a complete request header, from accept.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: Dur,
    /// Idle time allowed between requests on a kept-alive connection.
    #[serde(default = "default_keepalive")]
    pub keepalive_timeout: Dur,
    /// Longest wait for each read of a request body.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout: Dur,
    /// Slowest average body upload (bytes per second) tolerated after 5 s; 0: no minimum.
    #[serde(default = "default_min_body_rate")]
    pub min_body_rate: u64,
    /// Concurrent HTTP/2 streams per connection.
    #[serde(default = "default_h2_streams")]
    pub h2_max_streams: u32,
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        ConnectionsConfig {
            max_per_client: default_max_per_client(),
            header_timeout: default_header_timeout(),
            keepalive_timeout: default_keepalive(),
            body_read_timeout: default_body_timeout(),
            min_body_rate: default_min_body_rate(),
            h2_max_streams: default_h2_streams(),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_v4_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 32)
}
fn default_v6_prefix() -> Spanned<u8> {
    Spanned::new(0..0, 64)
}
fn default_max_entries() -> usize {
    200_000
}
fn default_ban_after() -> u32 {
    50
}
fn default_ban_within() -> Dur {
    Dur::secs(60)
}
fn default_ban_for() -> Dur {
    Dur::secs(600)
}
fn default_max_ban() -> Dur {
    Dur::secs(86400)
}
fn default_ban_entries() -> usize {
    100_000
}
fn default_max_per_client() -> u32 {
    256
}
fn default_header_timeout() -> Dur {
    Dur::secs(10)
}
fn default_keepalive() -> Dur {
    Dur::secs(60)
}
fn default_body_timeout() -> Dur {
    Dur::secs(30)
}
fn default_min_body_rate() -> u64 {
    0
}
fn default_h2_streams() -> u32 {
    100
}
