//! Purging cached objects: one URL (all its Vary variants), a path prefix, or a whole tenant.
//!
//! Owns the purge contract shared by the admin API, the command line and cluster fan-out:
//! [`purge`] applies locally and then tells every listener registered with [`on_purge`]
//! (cluster mode registers one that publishes to the other nodes, which call
//! [`apply_local`] when they receive it). It only removes objects from this node's storage;
//! it does not authenticate (the admin API does) nor know about other nodes.

use std::sync::{Arc, RwLock};

/// What to purge.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case")]
pub enum Purge {
    /// One URL (scheme://host/path?query) of a tenant; all its Vary variants.
    Url { tenant: String, url: String },
    /// Every cached object of a tenant whose path starts with `prefix`.
    Prefix { tenant: String, prefix: String },
    /// The whole tenant.
    Tenant { tenant: String },
}

impl Purge {
    pub fn tenant(&self) -> &str {
        match self {
            Purge::Url { tenant, .. } | Purge::Prefix { tenant, .. } | Purge::Tenant { tenant } => {
                tenant
            }
        }
    }

    /// `url`, `prefix` or `tenant` (for events and metrics).
    pub fn scope(&self) -> &'static str {
        match self {
            Purge::Url { .. } => "url",
            Purge::Prefix { .. } => "prefix",
            Purge::Tenant { .. } => "tenant",
        }
    }

    /// Whether a cached object of `tenant` with `key_url` (as built by the cache key:
    /// `scheme://host/path?normalised-query`) is covered by this purge.
    #[cfg(test)]
    pub(crate) fn matches(&self, tenant: &str, key_url: &str) -> bool {
        self.matcher()(tenant, key_url)
    }

    /// The test applied to every cached object (the URL is normalised once, not per object).
    pub(crate) fn matcher(&self) -> impl Fn(&str, &str) -> bool + '_ {
        let url = match self {
            Purge::Url { url, .. } => super::key_url_from(url),
            _ => None,
        };
        move |tenant: &str, key_url: &str| {
            if tenant != self.tenant() {
                return false;
            }
            match self {
                Purge::Tenant { .. } => true,
                Purge::Url { .. } => url.as_deref() == Some(key_url),
                Purge::Prefix { prefix, .. } => {
                    super::path_of_key_url(key_url).starts_with(prefix.as_str())
                }
            }
        }
    }
}

type Listener = Box<dyn Fn(&Purge) + Send + Sync>;

static LISTENERS: RwLock<Vec<Arc<Listener>>> = RwLock::new(Vec::new());

/// Purges this node's cache; returns how many objects went.
pub fn apply_local(p: &Purge) -> u64 {
    let n = match super::storage::global() {
        Some(s) => s.purge_matching(p.matcher()),
        None => 0,
    };
    super::metrics::purged(p.tenant(), n);
    n
}

/// Drops every object of this node's cache (a node that missed purges while away from its
/// cluster); returns how many went.
pub fn apply_local_all() -> u64 {
    match super::storage::global() {
        Some(s) => s.purge_matching(|_, _| true),
        None => 0,
    }
}

/// Called by the admin API: applies locally, then hands the purge to every registered listener
/// (cluster mode registers one that publishes it to the other nodes).
pub fn purge(p: &Purge) -> u64 {
    let n = apply_local(p);
    let listeners: Vec<Arc<Listener>> = match LISTENERS.read() {
        Ok(l) => l.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    };
    for l in listeners {
        l(p);
    }
    n
}

/// Registers a listener called with every purge made through [`purge`].
pub fn on_purge(listener: Box<dyn Fn(&Purge) + Send + Sync>) {
    let mut l = match LISTENERS.write() {
        Ok(l) => l,
        Err(poisoned) => poisoned.into_inner(),
    };
    l.push(Arc::new(listener));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape() {
        let p: Purge =
            serde_json::from_str(r#"{"scope":"prefix","tenant":"t1","prefix":"/tin-tuc/"}"#)
                .expect("valid purge");
        assert_eq!(
            p,
            Purge::Prefix {
                tenant: "t1".into(),
                prefix: "/tin-tuc/".into()
            }
        );
        let s = serde_json::to_string(&Purge::Tenant {
            tenant: "t1".into(),
        })
        .expect("json");
        assert_eq!(s, r#"{"scope":"tenant","tenant":"t1"}"#);
    }

    #[test]
    fn matching() {
        let u = Purge::Url {
            tenant: "t".into(),
            url: "http://a.gov.vn/x?b=2&a=1".into(),
        };
        assert!(u.matches("t", "http://a.gov.vn/x?a=1&b=2"));
        assert!(!u.matches("t2", "http://a.gov.vn/x?a=1&b=2"));
        assert!(!u.matches("t", "http://a.gov.vn/x"));
        let p = Purge::Prefix {
            tenant: "t".into(),
            prefix: "/tin".into(),
        };
        assert!(p.matches("t", "https://a.gov.vn/tin-tuc/1?x=1"));
        assert!(!p.matches("t", "https://a.gov.vn/van-ban"));
    }
}
