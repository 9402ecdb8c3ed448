//! Triggers for configuration reload: SIGHUP and changes to the configuration files (polled,
//! debounced). The reload itself (parse, validate, swap) belongs to `gateway`; the admin API
//! is the third trigger. This module only decides *when*.

use crate::gateway::Gateway;
use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// How often the configuration files are looked at.
const POLL: Duration = Duration::from_millis(500);
/// Every this many polls the tenant files are stat'ed even if their directory did not change
/// (catches a file rewritten in place). Otherwise a poll costs two `stat` calls, whatever the
/// number of tenants.
const FULL_SCAN_EVERY: u32 = 10;

pub struct Reloader {
    pub gateway: Arc<Gateway>,
}

/// Names, sizes, inodes and modification times of the main file and the tenant files: changes
/// when any of them is added, removed, written or replaced (the inode catches a file renamed
/// into place within the file system's timestamp granularity).
pub type Fingerprint = Vec<(PathBuf, u64, u64, Option<SystemTime>)>;

/// The [`Fingerprint`] of the configuration rooted at `main`, as the files are now.
pub fn config_fingerprint(main: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut add = |p: PathBuf| {
        if let Ok(m) = std::fs::metadata(&p) {
            out.push((p, m.len(), m.ino(), m.modified().ok()));
        }
    };
    add(main.to_path_buf());
    // The GeoIP database is part of the configuration: a new file means a reload.
    if let Some(db) = geoip_db(main) {
        add(db);
    }
    let dir = tenants_dir(main);
    if let Ok(rd) = std::fs::read_dir(&dir) {
        let mut files: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            add(f);
        }
    }
    out
}

/// Main file and tenants directory (its mtime changes when a file is added, removed or
/// replaced by rename, which is how editors and Ansible write).
fn quick_fingerprint(main: &Path) -> Vec<(u64, Option<SystemTime>)> {
    let stat = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| (m.len(), m.modified().ok()))
            .unwrap_or((0, None))
    };
    let mut v = vec![stat(main), stat(&tenants_dir(main))];
    if let Some(db) = geoip_db(main) {
        v.push(stat(&db));
    }
    v
}

/// `[access] geoip_db` of the main file, resolved like the configuration resolves it.
fn geoip_db(main: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(main).ok()?;
    let table = toml::from_str::<toml::Table>(&text).ok()?;
    let db = table.get("access")?.get("geoip_db")?.as_str()?;
    Some(main.parent().unwrap_or(Path::new(".")).join(db))
}

fn tenants_dir(main: &Path) -> PathBuf {
    let dir_name = std::fs::read_to_string(main)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(&t).ok())
        .and_then(|t| {
            t.get("server")
                .and_then(|s| s.get("tenants_dir"))
                .and_then(|d| d.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| "tenants.d".to_string());
    main.parent().unwrap_or(Path::new(".")).join(dir_name)
}

impl Reloader {
    async fn reload(&self, trigger: &'static str) {
        let g = self.gateway.clone();
        let _ = tokio::task::spawn_blocking(move || g.reload(trigger)).await;
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot listen for SIGHUP: {e}");
                None
            }
        };
        let source = self.gateway.source.clone();
        let mut pending: Option<Vec<_>> = None;
        // None: the first poll compares the full fingerprint with what the gateway read.
        let mut quick = None;
        let mut polls: u32 = 0;
        let mut ticker = tokio::time::interval(POLL);
        loop {
            tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending::<()>().await } } => {
                    self.reload("sighup").await;
                    pending = None;
                }
                _ = ticker.tick() => {
                    let Some(path) = source.as_deref() else { continue };
                    if !self.gateway.snapshot().settings.watch_config {
                        continue;
                    }
                    polls = polls.wrapping_add(1);
                    let q = quick_fingerprint(path);
                    let quiet = quick.as_ref() == Some(&q) && pending.is_none();
                    quick = Some(q);
                    if quiet && polls % FULL_SCAN_EVERY != 0 {
                        continue;
                    }
                    let now = config_fingerprint(path);
                    // Compared with what the gateway last read (at start-up, or by any reload
                    // trigger), not with what this loop saw when it started: a file changed
                    // between the gateway reading it and this service starting is a change.
                    if self.gateway.files_applied(&now) {
                        pending = None;
                        continue;
                    }
                    // Debounce: reload once the files have stopped changing for one poll, so an
                    // editor or Ansible writing several files triggers one reload.
                    if pending.as_ref() == Some(&now) {
                        self.reload("file_change").await;
                        pending = None;
                    } else {
                        pending = Some(now);
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
