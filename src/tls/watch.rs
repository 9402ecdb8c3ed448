//! Operator certificate files replaced on disk are picked up without restart: every few seconds
//! the files named by the configuration (default pair, tenants' pairs, `NAME.crt`/`NAME.key` in
//! the store directory) are compared by modification time and size, and a changed pair is loaded
//! again. A new pair that does not load is one `cert_invalid` event and the certificate in use
//! stays; a pair removed from the store directory stops being served.

use super::{cert_error_event, load_pair, CertResolver, Loaded, Source};
use crate::certs::CertStore;
use crate::events::{self, Event, Severity};
use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// One operator pair the configuration or the store names.
struct FileSource {
    id: String,
    /// Tenant (or store name) the pair belongs to, for events.
    owner: String,
    cert: PathBuf,
    key: PathBuf,
    source: Source,
}

type Stamp = (Option<(SystemTime, u64)>, Option<(SystemTime, u64)>);

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Watches operator certificate files and reloads changed ones into the resolver.
pub struct Watcher {
    gateway: Arc<Gateway>,
    store: Arc<dyn CertStore>,
    resolver: Arc<CertResolver>,
    /// Last stamp of each pair, and whether it changed since it was last loaded.
    seen: Mutex<HashMap<String, (Stamp, bool)>>,
    interval: Duration,
}

impl Watcher {
    /// Takes the files' current state as already loaded (by `load_all` at start).
    pub fn new(
        gateway: Arc<Gateway>,
        store: Arc<dyn CertStore>,
        resolver: Arc<CertResolver>,
        interval: Duration,
    ) -> Watcher {
        let w = Watcher {
            gateway,
            store,
            resolver,
            seen: Mutex::new(HashMap::new()),
            interval,
        };
        let now: HashMap<String, (Stamp, bool)> = w
            .sources()
            .into_iter()
            .map(|s| (s.id.clone(), ((stamp(&s.cert), stamp(&s.key)), false)))
            .collect();
        *w.seen.lock().unwrap_or_else(|e| e.into_inner()) = now;
        w
    }

    fn sources(&self) -> Vec<FileSource> {
        let snap = self.gateway.snapshot();
        let mut out = Vec::new();
        if let Some((c, k)) = &snap.settings.tls.default_cert {
            out.push(FileSource {
                id: "default".into(),
                owner: "-".into(),
                cert: c.clone(),
                key: k.clone(),
                source: Source::Operator,
            });
        }
        if let Ok(pairs) = self.store.operator_pairs() {
            for (name, c, k) in pairs {
                out.push(FileSource {
                    id: format!("dir:{name}"),
                    owner: name,
                    cert: c,
                    key: k,
                    source: Source::Directory,
                });
            }
        }
        for t in &snap.tenants {
            if let Some((c, k)) = &t.tls.cert {
                out.push(FileSource {
                    id: format!("tenant:{}", t.id),
                    owner: t.id.clone(),
                    cert: c.clone(),
                    key: k.clone(),
                    source: Source::Operator,
                });
            }
        }
        out
    }

    /// One pass: reload what changed, drop directory pairs that disappeared.
    pub fn check(&self) {
        let sources = self.sources();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for s in &sources {
            let st = (stamp(&s.cert), stamp(&s.key));
            match seen.get(&s.id) {
                // Unchanged since loaded.
                Some((old, false)) if *old == st => continue,
                // Changed and now still for one interval: both files are in place.
                Some((old, true)) if *old == st => {}
                // Changed (or new): wait one interval, so a chain and key replaced one after
                // the other are loaded together, not reported as a mismatch in between.
                _ => {
                    seen.insert(s.id.clone(), (st, true));
                    continue;
                }
            }
            seen.insert(s.id.clone(), (st, false));
            match load_pair(&s.cert, &s.key) {
                Ok((key, info)) => {
                    events::emit(
                        Event::new("cert_reloaded", Severity::Notice)
                            .tenant(&s.owner)
                            .field("file", s.cert.display())
                            .field("names", info.names.join(","))
                            .field("not_after", info.not_after),
                    );
                    let l = Loaded {
                        key,
                        info,
                        source: s.source,
                    };
                    if s.id == "default" {
                        self.resolver.set_default(l);
                    } else {
                        self.resolver.install(&s.id, l);
                    }
                }
                // The certificate in use stays: a half-copied or wrong file must not take a
                // portal off the air.
                Err(e) => events::emit(cert_error_event(&s.owner, &e)),
            }
        }
        let gone: Vec<String> = seen
            .keys()
            .filter(|id| id.starts_with("dir:") && !sources.iter().any(|s| &s.id == *id))
            .cloned()
            .collect();
        for id in gone {
            seen.remove(&id);
            self.resolver.remove(&id);
        }
    }
}

#[async_trait]
impl BackgroundService for Watcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => self.check(),
                _ = shutdown.changed() => return,
            }
        }
    }
}
