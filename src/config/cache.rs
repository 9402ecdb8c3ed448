//! The TOML schema of the page cache: `[cache]` in the main file (tiers, sizes, lock) and
//! `[cache]` in a tenant file (policy). Checks beyond types are in `cache::Settings::build`
//! and `cache::TenantPolicy::build`.

use super::Dur;
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use toml::Spanned;

/// A size in bytes: an integer, or a string such as `"256MB"`, `"10GB"`, `"512KiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub u64);

/// Parses `"256MB"`, `"4 MiB"`, `"10GB"`, `"4096"` (units are powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (e.g. \"256MB\", \"10GB\")"))?;
    let mul: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit `{other}`: use KB, MB, GB or TB")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("`{s}` is too large"))
}

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"256MB\" or a number of bytes")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                u64::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[cache]` in the main file: the storage tiers. Changes take effect at restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Bound of the memory tier.
    #[serde(default = "default_memory_size")]
    pub memory_size: Spanned<Size>,
    /// Largest object kept in memory; larger ones are streamed to the disk tier only.
    #[serde(default = "default_memory_max_object")]
    pub memory_max_object_size: Spanned<Size>,
    /// Directory of the disk tier (relative to the main file). Without it: memory only.
    pub disk_dir: Option<String>,
    /// Bound of the disk tier.
    #[serde(default = "default_disk_size")]
    pub disk_size: Spanned<Size>,
    /// Largest object stored at all.
    #[serde(default = "default_max_object")]
    pub max_object_size: Spanned<Size>,
    /// How long simultaneous misses for one object wait for the one request fetching it.
    #[serde(default = "default_lock_timeout")]
    pub lock_timeout: Dur,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            memory_size: default_memory_size(),
            memory_max_object_size: default_memory_max_object(),
            disk_dir: None,
            disk_size: default_disk_size(),
            max_object_size: default_max_object(),
            lock_timeout: default_lock_timeout(),
        }
    }
}

/// `[cache]` in a tenant file: the tenant's policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantCacheConfig {
    #[serde(default)]
    pub enabled: bool,
    /// TTL of static files (by extension) when the origin sends no Cache-Control/Expires.
    #[serde(default = "default_static_ttl")]
    pub static_ttl: Dur,
    /// Extensions counted as static (default: css, js, images, fonts, pdf, office files).
    pub static_extensions: Option<Vec<String>>,
    /// Micro-cache of anonymous HTML when the origin says nothing (0: off).
    #[serde(default = "zero")]
    pub html_ttl: Dur,
    /// More request cookies (besides the common CMS session cookies) that mean a logged-in
    /// user: such requests never use the cache. A trailing `*` matches a prefix.
    #[serde(default)]
    pub session_cookies: Vec<Spanned<String>>,
    /// Paths never cached: `/quantri/**`, `/a/*/b`, or exact.
    #[serde(default)]
    pub bypass_paths: Vec<Spanned<String>>,
    /// Request headers a response may vary on besides Accept-Encoding; a response varying on
    /// another header is not stored.
    #[serde(default)]
    pub vary_headers: Vec<Spanned<String>>,
    /// How long a stale copy is served when the origin is down or answers 5xx (unless the
    /// origin's Cache-Control says otherwise).
    #[serde(default = "default_stale_if_error")]
    pub stale_if_error: Dur,
    /// How long a stale copy is served while it is refreshed in the background.
    #[serde(default = "zero")]
    pub stale_while_revalidate: Dur,
    /// During planned maintenance, serve pages that are in cache instead of the maintenance
    /// page.
    #[serde(default)]
    pub serve_in_maintenance: bool,
}

impl Default for TenantCacheConfig {
    fn default() -> Self {
        TenantCacheConfig {
            enabled: false,
            static_ttl: default_static_ttl(),
            static_extensions: None,
            html_ttl: zero(),
            session_cookies: Vec::new(),
            bypass_paths: Vec::new(),
            vary_headers: Vec::new(),
            stale_if_error: default_stale_if_error(),
            stale_while_revalidate: zero(),
            serve_in_maintenance: false,
        }
    }
}

fn default_memory_size() -> Spanned<Size> {
    Spanned::new(0..0, Size(256 << 20))
}
fn default_memory_max_object() -> Spanned<Size> {
    Spanned::new(0..0, Size(4 << 20))
}
fn default_disk_size() -> Spanned<Size> {
    Spanned::new(0..0, Size(10 << 30))
}
fn default_max_object() -> Spanned<Size> {
    Spanned::new(0..0, Size(512 << 20))
}
fn default_lock_timeout() -> Dur {
    Dur::secs(10)
}
fn default_static_ttl() -> Dur {
    Dur::secs(3600)
}
fn default_stale_if_error() -> Dur {
    Dur::secs(86400)
}
fn zero() -> Dur {
    Dur::secs(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MB"), Ok(256 << 20));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size("12"), Ok(12));
        assert!(parse_size("12 parsecs").is_err());
    }
}
