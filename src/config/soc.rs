//! The `[soc]` table: where the gateway's events go (SOC collectors, the local archive).
//! Only the schema lives here; `soc::Settings::build` checks addresses and files.

use super::Dur;
use serde::Deserialize;
use toml::Spanned;

/// `[soc]`: event shipping. Absent: no sinks (access lines and events on standard error only).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocConfig {
    /// Directory for the sequence-number state and the per-sink disk spools.
    #[serde(default = "default_state_dir")]
    pub state_dir: Spanned<String>,
    /// Name of this gateway in every event (syslog HOSTNAME, `observer.name`). Default: host name.
    pub name: Option<Spanned<String>>,
    /// Offset written in timestamps, `"+07:00"` or `"Z"`.
    #[serde(default = "default_offset")]
    pub utc_offset: Spanned<String>,
    /// Syslog facility: `local0`…`local7`, `user`, `daemon`, `auth`, `authpriv`, `security`.
    #[serde(default = "default_facility")]
    pub facility: Spanned<String>,
    /// Events held in memory between the request path and the sinks; beyond it events are
    /// dropped (counted), never waited for.
    #[serde(default = "default_queue")]
    pub queue_size: Spanned<usize>,
    #[serde(default)]
    pub sink: Vec<SinkConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    File,
    Udp,
    Tcp,
    Tls,
    /// JSON arrays POSTed to `url` (HTTP or HTTPS).
    Http,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    Json,
    Rfc5424,
    Cef,
}

/// `[[soc.sink]]`: one destination with its own format and filter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Unique name (letters, digits, `-`, `_`): names the spool directory and the counters.
    pub name: Spanned<String>,
    #[serde(rename = "type")]
    pub kind: SinkKind,
    /// Default: `json` for files, `rfc5424` for network sinks.
    pub format: Option<SinkFormat>,
    /// Event classes sent: any of `access`, `security`, `ops`. Default: all three.
    pub events: Option<Spanned<Vec<String>>>,
    /// Per-sink in-memory queue. Default: `soc.queue_size`.
    pub queue_size: Option<usize>,

    // file
    /// File written (`type = "file"`); rotated files sit beside it.
    pub path: Option<Spanned<String>>,
    /// Rotate when the file reaches this size.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// Rotate when the day changes (in `soc.utc_offset`).
    #[serde(default = "yes")]
    pub rotate_daily: bool,
    /// Gzip rotated files.
    #[serde(default = "yes")]
    pub compress: bool,
    /// Delete rotated files older than this.
    #[serde(default = "default_retention")]
    pub retention: Dur,

    // network
    /// `IP:PORT`, `[IPv6]:PORT` or `name:PORT` of the collector.
    pub address: Option<Spanned<String>>,
    /// HTTP sinks: `http://HOST[:PORT]/PATH` or `https://…`.
    pub url: Option<Spanned<String>>,
    /// HTTP sinks: most events per POST.
    #[serde(default = "default_batch_max")]
    pub batch_max: usize,
    /// TLS: CA bundle (PEM) the collector's certificate must chain to.
    pub ca_file: Option<Spanned<String>>,
    /// TLS: client certificate chain and key (PEM), when the collector asks for one.
    pub client_cert: Option<Spanned<String>>,
    pub client_key: Option<Spanned<String>>,
    /// TLS: name verified on the collector's certificate. Default: the host part of `address`.
    pub server_name: Option<Spanned<String>>,
    /// Disk spool limit (TCP/TLS) while the collector is down or slow.
    #[serde(default = "default_spool_max")]
    pub spool_max_bytes: u64,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Dur,
    /// A write that does not finish in this time marks the collector as down.
    #[serde(default = "default_write_timeout")]
    pub write_timeout: Dur,
    /// Longest wait between reconnection attempts (the wait doubles from 100 ms).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: Dur,
}

fn yes() -> bool {
    true
}
fn default_state_dir() -> Spanned<String> {
    Spanned::new(0..0, "/var/lib/cong".into())
}
fn default_offset() -> Spanned<String> {
    Spanned::new(0..0, "+07:00".into())
}
fn default_facility() -> Spanned<String> {
    Spanned::new(0..0, "local0".into())
}
fn default_queue() -> Spanned<usize> {
    Spanned::new(0..0, 65_536)
}
fn default_rotate_bytes() -> u64 {
    256 * 1024 * 1024
}
fn default_retention() -> Dur {
    Dur::secs(365 * 86_400)
}
fn default_spool_max() -> u64 {
    1024 * 1024 * 1024
}
fn default_connect_timeout() -> Dur {
    Dur::secs(3)
}
fn default_write_timeout() -> Dur {
    Dur::secs(5)
}
fn default_batch_max() -> usize {
    500
}
fn default_reconnect_max() -> Dur {
    Dur::secs(10)
}
