//! File sink: one line per event appended to `path`, rotated by size and by day into
//! `STEM-YYYYMMDD-HHMMSS.EXT` beside it, rotated files gzipped (`.gz`) and deleted after the
//! retention period. This is the local archive the SOC report reads. Owns its file and the
//! rotated files with its stem only; never touches other files of the directory.

use super::{take_batch, FileSpec, SinkCounters};
use crate::config::SinkFormat;
use crate::events::{self, Event, Severity};
use crate::soc::event::Record;
use crate::soc::format::{self, Context};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

struct Current {
    w: BufWriter<File>,
    size: u64,
    day: i64,
}

pub fn run(
    name: String,
    spec: FileSpec,
    fmt: SinkFormat,
    cx: Context,
    rx: Receiver<Arc<Record>>,
    counters: Arc<SinkCounters>,
) {
    let day_of = |ms: i64| (ms + cx.offset_min as i64 * 60_000).div_euclid(86_400_000);
    let mut cur: Option<Current> = None;
    sweep_later(&spec);
    loop {
        let (batch, closed) = take_batch(&rx, Duration::from_millis(500), 4096, &counters);
        if !batch.is_empty() {
            if cur.is_none() {
                match open(&spec.path) {
                    Ok((f, size, mtime_ms)) => {
                        cur = Some(Current {
                            w: BufWriter::with_capacity(256 * 1024, f),
                            size,
                            day: day_of(mtime_ms),
                        });
                        super::set_up(&name, &counters, true, "");
                    }
                    Err(e) => {
                        counters
                            .dropped
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        super::set_up(&name, &counters, false, &format!("{e:#}"));
                    }
                }
            }
            if cur.is_some() {
                let today = day_of(now_ms());
                let mut rotate_now =
                    spec.rotate_daily && cur.as_ref().is_some_and(|c| c.day != today);
                let mut pending = String::with_capacity(batch.len() * 600);
                let mut pending_n = 0u64;
                for r in &batch {
                    let line = format::encode(fmt, r, &cx);
                    let size = cur.as_ref().map_or(0, |c| c.size) + pending.len() as u64;
                    // Rotate before the line that would take the file over the limit.
                    if rotate_now || (size > 0 && size + line.len() as u64 + 1 > spec.rotate_bytes)
                    {
                        rotate_now = false;
                        write_out(&name, &spec, &mut cur, &pending, pending_n, &counters);
                        pending.clear();
                        pending_n = 0;
                        cur = None;
                        if let Err(e) = rotate(&spec) {
                            events::emit(
                                Event::new("log_rotate_failed", Severity::Error)
                                    .field("sink", &name)
                                    .field("cause", format!("{e:#}")),
                            );
                        }
                        match open(&spec.path) {
                            Ok((f, size, _)) => {
                                cur = Some(Current {
                                    w: BufWriter::with_capacity(256 * 1024, f),
                                    size,
                                    day: today,
                                })
                            }
                            Err(e) => super::set_up(&name, &counters, false, &format!("{e:#}")),
                        }
                    }
                    pending.push_str(&line);
                    pending.push('\n');
                    pending_n += 1;
                }
                write_out(&name, &spec, &mut cur, &pending, pending_n, &counters);
            }
        }
        if closed {
            if let Some(c) = cur.as_mut() {
                let _ = c.w.flush();
                let _ = c.w.get_ref().sync_data();
            }
            return;
        }
    }
}

/// Appends `lines` (`n` events) to the current file; a failure (full disk, removed
/// directory) drops them, counted and reported, and the file is reopened at the next event.
fn write_out(
    name: &str,
    spec: &FileSpec,
    cur: &mut Option<Current>,
    lines: &str,
    n: u64,
    counters: &SinkCounters,
) {
    if n == 0 {
        return;
    }
    let res = match cur.as_mut() {
        Some(c) => {
            c.w.write_all(lines.as_bytes())
                .and_then(|_| c.w.flush())
                .map(|_| c.size += lines.len() as u64)
        }
        None => Err(std::io::Error::other("file not open")),
    };
    match res {
        Ok(()) => {
            counters.sent.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            counters.dropped.fetch_add(n, Ordering::Relaxed);
            super::set_up(
                name,
                counters,
                false,
                &format!("{}: {e}", spec.path.display()),
            );
            *cur = None;
        }
    }
}

fn open(path: &Path) -> anyhow::Result<(File, u64, i64)> {
    use anyhow::Context as _;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("open {}", path.display()))?;
    let meta = f.metadata()?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|m| m.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or_else(now_ms);
    Ok((
        f,
        meta.len(),
        if meta.len() == 0 { now_ms() } else { mtime },
    ))
}

/// `events` and `log` for `events.log`.
fn stem_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "events".into());
    let ext = path
        .extension()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "log".into());
    (stem, ext)
}

/// Renames the current file aside and compresses/sweeps in the background.
fn rotate(spec: &FileSpec) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (stem, ext) = stem_ext(&spec.path);
    let dir = spec.path.parent().unwrap_or(Path::new("."));
    let ms = now_ms();
    let (y, m, d) = format::date(ms, 0);
    let secs = ms.div_euclid(1000).rem_euclid(86_400);
    let base = format!(
        "{stem}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    );
    // Several rotations in one second get -1, -2…; never overwrite an archived file.
    let mut name = base.clone();
    let mut n = 1;
    while dir.join(format!("{name}.{ext}")).exists()
        || dir.join(format!("{name}.{ext}.gz")).exists()
    {
        name = format!("{base}-{n}");
        n += 1;
    }
    let target = dir.join(format!("{name}.{ext}"));
    fs::rename(&spec.path, &target)
        .with_context(|| format!("rename {} to {}", spec.path.display(), target.display()))?;
    let spec = spec.clone();
    std::thread::Builder::new()
        .name("cong-log-gzip".into())
        .spawn(move || {
            // One compression at a time, so two never work on the same file.
            let _one = COMPRESSING.lock();
            if spec.compress {
                if let Err(e) = gzip(&target) {
                    events::emit(
                        Event::new("log_rotate_failed", Severity::Error)
                            .field("file", target.display())
                            .field("cause", format!("{e:#}")),
                    );
                }
            }
            sweep(&spec, false);
        })
        .map(|_| ())
        .context("start compression thread")
}

static COMPRESSING: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gzip(path: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let gz = PathBuf::from(format!("{}.gz", path.display()));
    if !path.exists() && gz.exists() {
        return Ok(gz);
    }
    let tmp = PathBuf::from(format!("{}.gz.tmp", path.display()));
    let mut input = File::open(path).with_context(|| format!("open {}", path.display()))?;
    let out = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
    let mut enc = flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::new(6));
    std::io::copy(&mut input, &mut enc).with_context(|| format!("compress {}", path.display()))?;
    let w = enc.finish()?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("flush {}: {}", tmp.display(), e.error()))?
        .sync_all()?;
    fs::rename(&tmp, &gz)?;
    fs::remove_file(path)?;
    Ok(gz)
}

fn sweep_later(spec: &FileSpec) {
    let spec = spec.clone();
    let _ = std::thread::Builder::new()
        .name("cong-log-sweep".into())
        .spawn(move || {
            let _one = COMPRESSING.lock();
            sweep(&spec, true)
        });
}

/// Deletes rotated files older than the retention period; at start-up (`leftovers`) also
/// compresses rotated files a crash left uncompressed.
fn sweep(spec: &FileSpec, leftovers: bool) {
    let (stem, ext) = stem_ext(&spec.path);
    let dir = spec.path.parent().unwrap_or(Path::new("."));
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!("{stem}-");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let plain = name.ends_with(&format!(".{ext}"));
        if !name.starts_with(&prefix) || !(plain || name.ends_with(&format!(".{ext}.gz"))) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > spec.retention);
        if old {
            if fs::remove_file(e.path()).is_ok() {
                events::emit(
                    Event::new("log_file_expired", Severity::Info)
                        .field("file", e.path().display()),
                );
            }
        } else if plain && spec.compress && leftovers {
            let _ = gzip(&e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_compresses_and_retention_deletes() {
        let d = tempfile::tempdir().unwrap();
        let spec = FileSpec {
            path: d.path().join("events.log"),
            rotate_bytes: 1000,
            rotate_daily: false,
            compress: true,
            retention: Duration::from_secs(3600),
        };
        fs::write(&spec.path, "x\n").unwrap();
        rotate(&spec).unwrap();
        crate::soc::tests_wait(|| {
            fs::read_dir(d.path())
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".log.gz"))
        });
        // An expired rotated file goes.
        let old = d.path().join("events-20000101-000000.log.gz");
        fs::write(&old, "").unwrap();
        let t = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(t)
            .unwrap();
        sweep(&spec, false);
        assert!(!old.exists());
    }
}
