//! `[cluster]` validated: every error names the file, line, column and key.

use super::crypt::Sealer;
use crate::config::{Config, ConfigError};
use std::sync::Arc;
use std::time::Duration;

/// Validated `[cluster]`.
#[derive(Debug)]
pub struct Settings {
    /// `HOST:PORT` of each server, in the order they are tried.
    pub servers: Vec<(String, u16)>,
    pub tls: bool,
    /// PEM of the CA for TLS (`None`: the system's roots).
    pub tls_ca: Option<Vec<u8>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub db: i64,
    pub prefix: String,
    pub node: String,
    /// Longest wait of a client request on Redis.
    pub timeout: Duration,
    pub poll_interval: Duration,
    pub sealer: Arc<Sealer>,
    pub lock_lease: Duration,
    pub max_queued: usize,
}

/// This machine's host name (the default node name).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "node".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..end]).into_owned();
    if h.is_empty() {
        "node".into()
    } else {
        h
    }
}

fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Splits `host:port` / `[v6]:port`.
fn host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok().filter(|p| *p > 0)?;
    let host = h.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return None;
    }
    Some((host.to_string(), port))
}

impl Settings {
    /// `None` when the configuration has no `[cluster]` (a single node).
    pub fn from_config(cfg: &Config) -> Result<Option<Settings>, ConfigError> {
        let Some(c) = &cfg.main.cluster else {
            return Ok(None);
        };
        let src = &cfg.main_source;
        let table = c.span();
        let c = c.get_ref();
        if c.redis.is_empty() {
            return Err(src.error_at(table, "cluster.redis", "name at least one HOST:PORT"));
        }
        let mut servers = Vec::new();
        for (i, r) in c.redis.iter().enumerate() {
            let hp = host_port(r.get_ref()).ok_or_else(|| {
                src.error_at(
                    r.span(),
                    format!("cluster.redis[{i}]"),
                    format!(
                        "`{}` is not HOST:PORT (IPv6 in brackets: `[::1]:6379`)",
                        r.get_ref()
                    ),
                )
            })?;
            servers.push(hp);
        }
        let tls_ca = match &c.tls_ca {
            Some(p) => {
                if !c.tls {
                    return Err(src.error_at(p.span(), "cluster.tls_ca", "needs `tls = true`"));
                }
                let path = cfg.resolve(p.get_ref());
                let bytes = std::fs::read(&path).map_err(|e| {
                    src.error_at(
                        p.span(),
                        "cluster.tls_ca",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                if rustls_pemfile::certs(&mut &bytes[..]).flatten().count() == 0 {
                    return Err(src.error_at(
                        p.span(),
                        "cluster.tls_ca",
                        format!("{}: no PEM certificate", path.display()),
                    ));
                }
                Some(bytes)
            }
            None => None,
        };
        let password = match (&c.password, &c.password_file) {
            (Some(p), None) => Some(p.clone()),
            (None, Some(f)) => {
                let path = cfg.resolve(f.get_ref());
                let t = std::fs::read_to_string(&path).map_err(|e| {
                    src.error_at(
                        f.span(),
                        "cluster.password_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Some(t.lines().next().unwrap_or("").trim_end().to_string())
            }
            (None, None) => None,
            (Some(_), Some(f)) => {
                return Err(src.error_at(
                    f.span(),
                    "cluster.password_file",
                    "give `password` or `password_file`, not both",
                ))
            }
        };
        if c.db < 0 {
            return Err(src.error_at(table, "cluster.db", "must be 0 or more"));
        }
        let prefix = c.key_prefix.get_ref().clone();
        if prefix.is_empty() || prefix.len() > 64 || prefix.contains(char::is_whitespace) {
            return Err(src.error_at(
                c.key_prefix.span(),
                "cluster.key_prefix",
                "1 to 64 characters without spaces (e.g. `cong:`)",
            ));
        }
        let node = match &c.node {
            Some(n) => {
                if !valid_node(n.get_ref()) {
                    return Err(src.error_at(
                        n.span(),
                        "cluster.node",
                        "letters, digits, `-`, `_`, `.`; at most 64",
                    ));
                }
                n.get_ref().clone()
            }
            None => {
                let h = hostname();
                if valid_node(&h) {
                    h
                } else {
                    h.chars()
                        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .take(64)
                        .collect()
                }
            }
        };
        let timeout = c.timeout.get_ref().get();
        if timeout < Duration::from_millis(1) || timeout > Duration::from_secs(5) {
            return Err(src.error_at(
                c.timeout.span(),
                "cluster.timeout",
                "between 1ms and 5s (a client request waits at most this long on Redis)",
            ));
        }
        let poll_interval = c.poll_interval.get_ref().get();
        if poll_interval < Duration::from_millis(100) || poll_interval > Duration::from_secs(300) {
            return Err(src.error_at(
                c.poll_interval.span(),
                "cluster.poll_interval",
                "between 100ms and 5m",
            ));
        }
        let lock_lease = c.lock_lease.get_ref().get();
        if lock_lease < Duration::from_secs(3) || lock_lease > Duration::from_secs(3600) {
            return Err(src.error_at(
                c.lock_lease.span(),
                "cluster.lock_lease",
                "between 3s and 1h",
            ));
        }
        let sealer = match (&c.encryption_key, &c.encryption_key_file) {
            (Some(k), None) => Sealer::parse(k.get_ref())
                .map_err(|e| src.error_at(k.span(), "cluster.encryption_key", e))?,
            (None, Some(f)) => {
                let path = cfg.resolve(f.get_ref());
                let t = std::fs::read_to_string(&path).map_err(|e| {
                    src.error_at(
                        f.span(),
                        "cluster.encryption_key_file",
                        format!("{}: {e}", path.display()),
                    )
                })?;
                Sealer::parse(t.lines().next().unwrap_or("")).map_err(|e| {
                    src.error_at(
                        f.span(),
                        "cluster.encryption_key_file",
                        format!("{}: {e}", path.display()),
                    )
                })?
            }
            (None, None) => {
                return Err(src.error_at(
                    table,
                    "cluster.encryption_key",
                    "private keys are stored encrypted: give `encryption_key` or \
                     `encryption_key_file` (32 bytes, base64), the same on every node",
                ))
            }
            (Some(_), Some(f)) => {
                return Err(src.error_at(
                    f.span(),
                    "cluster.encryption_key_file",
                    "give `encryption_key` or `encryption_key_file`, not both",
                ))
            }
        };
        Ok(Some(Settings {
            servers,
            tls: c.tls,
            tls_ca,
            username: c.username.clone(),
            password,
            db: c.db,
            prefix,
            node,
            timeout,
            poll_interval,
            sealer: Arc::new(sealer),
            lock_lease,
            max_queued: c.max_queued.max(1),
        }))
    }

    /// A key or channel name under the cluster's prefix.
    pub fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Timeout of background work (sync, uploads, locks): longer than a client request's.
    pub fn bg_timeout(&self) -> Duration {
        (self.timeout * 20).clamp(Duration::from_secs(1), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports() {
        assert_eq!(
            host_port("127.0.0.1:6379"),
            Some(("127.0.0.1".into(), 6379))
        );
        assert_eq!(host_port("[::1]:6380"), Some(("::1".into(), 6380)));
        assert_eq!(
            host_port("redis.noibo:6379"),
            Some(("redis.noibo".into(), 6379))
        );
        assert_eq!(host_port("redis"), None);
        assert_eq!(host_port(":6379"), None);
        assert_eq!(host_port("a:0"), None);
    }
}
