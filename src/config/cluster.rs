//! The TOML schema of `[cluster]`: the Redis server several gateway nodes share. Absent means
//! one node on its own, as without this section.

use super::Dur;
use serde::Deserialize;
use toml::Spanned;

/// `[cluster]` in the main file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Redis (or Valkey) servers as `HOST:PORT`, tried in order; the first that answers as a
    /// primary is used.
    pub redis: Vec<Spanned<String>>,
    /// Connect with TLS (`rediss`).
    #[serde(default)]
    pub tls: bool,
    /// PEM file of the CA that signed the server's certificate (default: the system's roots).
    pub tls_ca: Option<Spanned<String>>,
    /// ACL user name (Redis 6+); without it the `default` user.
    pub username: Option<String>,
    /// Password, written here or in a file (first line).
    pub password: Option<String>,
    pub password_file: Option<Spanned<String>>,
    /// Database number.
    #[serde(default)]
    pub db: i64,
    /// Prefix of every key and channel, so several clusters can share one server.
    #[serde(default = "default_prefix")]
    pub key_prefix: Spanned<String>,
    /// This node's name in events, locks and messages. Default: the host name.
    pub node: Option<Spanned<String>>,
    /// Longest wait for one Redis request made on behalf of a client request.
    #[serde(default = "default_timeout")]
    pub timeout: Spanned<Dur>,
    /// How often shared state is read again in full when no notification arrived.
    #[serde(default = "default_poll")]
    pub poll_interval: Spanned<Dur>,
    /// 32-byte key (base64) encrypting private keys stored in Redis; or a file holding it.
    pub encryption_key: Option<Spanned<String>>,
    pub encryption_key_file: Option<Spanned<String>>,
    /// Lease of the ACME order lock; renewed at a third of it while the order runs.
    #[serde(default = "default_lease")]
    pub lock_lease: Spanned<Dur>,
    /// Messages (bans, purges, certificate uploads) kept while Redis is unreachable.
    #[serde(default = "default_queue")]
    pub max_queued: usize,
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "cong:".to_string())
}
fn default_timeout() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::millis(50))
}
fn default_poll() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(5))
}
fn default_lease() -> Spanned<Dur> {
    Spanned::new(0..0, Dur::secs(30))
}
fn default_queue() -> usize {
    10_000
}
