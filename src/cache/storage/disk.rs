//! The disk tier: one directory, bounded in bytes, kept across restarts.
//!
//! Each object is two files under `objects/xx/`: the body `<id>-<gen>.b` and the metadata
//! `<id>.m` (key, response header, freshness, the body's generation and length, checksum).
//! A write goes to `tmp/` first, is synced, then renamed into place, body before metadata,
//! so the metadata only ever names a complete body: a torn or truncated file fails the
//! length or checksum check and is a miss (and an event), never served. Owns the files under
//! its directory and nothing else.

use super::{ObjInfo, ObjectId};
use crate::events::{self, Severity};
use lru::LruCache;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const MAGIC: &[u8; 8] = b"CONGCM1\n";

/// What the index keeps per object on disk.
#[derive(Clone)]
pub struct DiskEntry {
    pub info: Arc<ObjInfo>,
    pub gen: u64,
    pub body_len: u64,
    /// Both files, as charged to the bound.
    pub size: u64,
}

/// Metadata file contents.
pub struct MetaFile {
    pub info: ObjInfo,
    pub gen: u64,
    pub body_len: u64,
    pub internal: Vec<u8>,
    pub header: Vec<u8>,
}

pub struct DiskTier {
    dir: PathBuf,
    /// This process's directory for files being written.
    tmp: PathBuf,
    pub limit: u64,
    index: Mutex<LruCache<ObjectId, DiskEntry>>,
    bytes: AtomicU64,
    next_gen: AtomicU64,
}

fn hex(id: &ObjectId) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in data {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
}

struct Reader<'a>(&'a [u8]);
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = u32::from_le_bytes(self.take(4)?.try_into().ok()?) as usize;
        self.take(n)
    }
}

impl MetaFile {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.internal.len() + self.header.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.gen.to_le_bytes());
        out.extend_from_slice(&self.body_len.to_le_bytes());
        put_chunk(&mut out, self.info.tenant.as_bytes());
        put_chunk(&mut out, self.info.url.as_bytes());
        put_chunk(&mut out, &self.internal);
        put_chunk(&mut out, &self.header);
        let sum = fnv64(&out);
        out.extend_from_slice(&sum.to_le_bytes());
        out
    }

    /// `None` when the file is torn, truncated or not ours.
    pub fn decode(data: &[u8]) -> Option<MetaFile> {
        if data.len() < MAGIC.len() + 8 {
            return None;
        }
        let (body, sum) = data.split_at(data.len() - 8);
        if fnv64(body) != u64::from_le_bytes(sum.try_into().ok()?) {
            return None;
        }
        let mut r = Reader(body);
        if r.take(8)? != MAGIC {
            return None;
        }
        let gen = r.u64()?;
        let body_len = r.u64()?;
        let tenant = std::str::from_utf8(r.chunk()?).ok()?.to_string();
        let url = std::str::from_utf8(r.chunk()?).ok()?.to_string();
        let internal = r.chunk()?.to_vec();
        let header = r.chunk()?.to_vec();
        Some(MetaFile {
            info: ObjInfo { tenant, url },
            gen,
            body_len,
            internal,
            header,
        })
    }
}

/// A corrupt or unreadable object: counted, reported, removed; the request goes on as a miss.
pub fn corrupt(path: &Path, why: &str) {
    crate::cache::metrics::disk_error(why);
    events::emit(
        events::Event::new("cache_object_corrupt", Severity::Warning)
            .field("file", path.display())
            .field("cause", why),
    );
    let _ = std::fs::remove_file(path);
}

impl DiskTier {
    /// Opens (creating) the directory and indexes what a previous run left; invalid files are
    /// removed, and the oldest objects go when the bound shrank.
    pub fn open(dir: &Path, limit: u64) -> std::io::Result<DiskTier> {
        std::fs::create_dir_all(dir.join("objects"))?;
        // Each process writes under tmp/PID. Half-written files of a process that is gone are
        // never complete: drop them (a process handing over during an upgrade keeps its own).
        let tmp_root = dir.join("tmp");
        std::fs::create_dir_all(&tmp_root)?;
        for e in std::fs::read_dir(&tmp_root)?.flatten() {
            let pid: Option<i32> = e.file_name().to_str().and_then(|n| n.parse().ok());
            // SAFETY: kill with signal 0 only checks whether the process exists.
            let alive = pid.is_some_and(|p| p > 0 && unsafe { libc::kill(p, 0) } == 0);
            if !alive {
                let _ = std::fs::remove_dir_all(e.path());
                let _ = std::fs::remove_file(e.path());
            }
        }
        let tmp = tmp_root.join(std::process::id().to_string());
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)?;
        let tier = DiskTier {
            tmp,
            dir: dir.to_path_buf(),
            limit,
            index: Mutex::new(LruCache::unbounded()),
            bytes: AtomicU64::new(0),
            next_gen: AtomicU64::new(1),
        };
        let mut found: Vec<(std::time::SystemTime, ObjectId, DiskEntry)> = Vec::new();
        let mut bodies: Vec<PathBuf> = Vec::new();
        let mut max_gen = 0;
        for shard in std::fs::read_dir(dir.join("objects"))?.flatten() {
            let Ok(files) = std::fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let p = f.path();
                let name = f.file_name().to_string_lossy().to_string();
                if name.ends_with(".b") {
                    bodies.push(p);
                    continue;
                }
                let Some(id) = name.strip_suffix(".m").and_then(parse_hex) else {
                    continue;
                };
                let Ok(data) = std::fs::read(&p) else {
                    continue;
                };
                let Some(m) = MetaFile::decode(&data) else {
                    corrupt(&p, "metadata checksum");
                    continue;
                };
                let bpath = tier.body_path(&id, m.gen);
                let blen = std::fs::metadata(&bpath).map(|m| m.len()).ok();
                if blen != Some(m.body_len) {
                    corrupt(&p, "body length");
                    let _ = std::fs::remove_file(&bpath);
                    continue;
                }
                max_gen = max_gen.max(m.gen);
                let mtime = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                let size = data.len() as u64 + m.body_len;
                found.push((
                    mtime,
                    id,
                    DiskEntry {
                        info: Arc::new(m.info),
                        gen: m.gen,
                        body_len: m.body_len,
                        size,
                    },
                ));
            }
        }
        tier.next_gen.store(max_gen + 1, Ordering::Relaxed);
        // Oldest first, so the least recently written are the first evicted.
        found.sort_by_key(|(t, _, _)| *t);
        let mut keep = std::collections::HashSet::new();
        for (_, id, e) in found {
            keep.insert(tier.body_path(&id, e.gen));
            tier.insert_entry(id, e);
        }
        for b in bodies {
            if !keep.contains(&b) {
                let _ = std::fs::remove_file(b);
            }
        }
        tier.evict_to_limit();
        Ok(tier)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn objects(&self) -> usize {
        self.index.lock().map(|i| i.len()).unwrap_or(0)
    }

    fn shard(&self, id: &ObjectId) -> PathBuf {
        self.dir.join("objects").join(format!("{:02x}", id[0]))
    }
    pub fn meta_path(&self, id: &ObjectId) -> PathBuf {
        self.shard(id).join(format!("{}.m", hex(id)))
    }
    pub fn body_path(&self, id: &ObjectId, gen: u64) -> PathBuf {
        self.shard(id).join(format!("{}-{gen}.b", hex(id)))
    }
    pub fn tmp_path(&self, gen: u64, what: &str) -> PathBuf {
        self.tmp.join(format!("{gen}.{what}"))
    }
    pub fn new_gen(&self) -> u64 {
        self.next_gen.fetch_add(1, Ordering::Relaxed)
    }

    /// The index entry, marking it recently used.
    pub fn get(&self, id: &ObjectId) -> Option<DiskEntry> {
        self.index.lock().ok()?.get(id).cloned()
    }

    fn insert_entry(&self, id: ObjectId, e: DiskEntry) -> Option<DiskEntry> {
        let size = e.size;
        let tenant = e.info.tenant.clone();
        let old = self.index.lock().ok()?.put(id, e);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        crate::cache::metrics::tenant_bytes(&tenant, "disk", size as i64);
        if let Some(o) = &old {
            self.bytes.fetch_sub(o.size, Ordering::Relaxed);
            crate::cache::metrics::tenant_bytes(&o.info.tenant, "disk", -(o.size as i64));
        }
        old
    }

    /// Makes a written object visible: body renamed into place (already synced), then the
    /// metadata written, synced and renamed. The previous generation's body goes.
    pub fn commit(&self, id: ObjectId, tmp_body: &Path, meta: &MetaFile) -> std::io::Result<()> {
        std::fs::create_dir_all(self.shard(&id))?;
        let body = self.body_path(&id, meta.gen);
        std::fs::rename(tmp_body, &body)?;
        let encoded = meta.encode();
        self.write_meta(&id, meta.gen, &encoded)?;
        let old = self.insert_entry(
            id,
            DiskEntry {
                info: Arc::new(meta.info.clone()),
                gen: meta.gen,
                body_len: meta.body_len,
                size: encoded.len() as u64 + meta.body_len,
            },
        );
        if let Some(o) = old {
            if o.gen != meta.gen {
                let _ = std::fs::remove_file(self.body_path(&id, o.gen));
            }
        }
        self.evict_to_limit();
        Ok(())
    }

    fn write_meta(&self, id: &ObjectId, gen: u64, encoded: &[u8]) -> std::io::Result<()> {
        let tmp = self.tmp_path(gen, &format!("m{}", self.new_gen()));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(encoded)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, self.meta_path(id))
    }

    /// Rewrites the metadata of a stored object (after a revalidation).
    pub fn update_meta(&self, id: &ObjectId, internal: Vec<u8>, header: Vec<u8>) -> bool {
        let Some(e) = self.get(id) else {
            return false;
        };
        let m = MetaFile {
            info: (*e.info).clone(),
            gen: e.gen,
            body_len: e.body_len,
            internal,
            header,
        };
        self.write_meta(id, e.gen, &m.encode()).is_ok()
    }

    /// Reads and checks an object's metadata; a bad object is removed and reported.
    pub fn read_meta(&self, id: &ObjectId) -> Option<MetaFile> {
        let e = self.get(id)?;
        let mpath = self.meta_path(id);
        let data = match std::fs::read(&mpath) {
            Ok(d) => d,
            Err(_) => {
                self.remove(id);
                return None;
            }
        };
        let Some(m) = MetaFile::decode(&data) else {
            self.remove(id);
            corrupt(&mpath, "metadata checksum");
            return None;
        };
        let bpath = self.body_path(id, m.gen);
        let blen = std::fs::metadata(&bpath).map(|m| m.len()).ok();
        if m.gen != e.gen || blen != Some(m.body_len) {
            self.remove(id);
            corrupt(&bpath, "body length");
            return None;
        }
        Some(m)
    }

    pub fn remove(&self, id: &ObjectId) -> bool {
        let Some(e) = self.index.lock().ok().and_then(|mut i| i.pop(id)) else {
            return false;
        };
        self.drop_files(id, &e);
        true
    }

    fn drop_files(&self, id: &ObjectId, e: &DiskEntry) {
        self.bytes.fetch_sub(e.size, Ordering::Relaxed);
        crate::cache::metrics::tenant_bytes(&e.info.tenant, "disk", -(e.size as i64));
        let _ = std::fs::remove_file(self.meta_path(id));
        let _ = std::fs::remove_file(self.body_path(id, e.gen));
    }

    fn evict_to_limit(&self) {
        while self.bytes() > self.limit {
            let Some((id, e)) = self.index.lock().ok().and_then(|mut i| i.pop_lru()) else {
                return;
            };
            crate::cache::metrics::evicted("disk");
            self.drop_files(&id, &e);
        }
    }

    pub fn matching(&self, pred: &dyn Fn(&str, &str) -> bool) -> Vec<ObjectId> {
        let Ok(index) = self.index.lock() else {
            return Vec::new();
        };
        index
            .iter()
            .filter(|(_, e)| pred(&e.info.tenant, &e.info.url))
            .map(|(id, _)| *id)
            .collect()
    }
}

fn parse_hex(s: &str) -> Option<ObjectId> {
    if s.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_roundtrip_and_torn_write() {
        let m = MetaFile {
            info: ObjInfo {
                tenant: "t".into(),
                url: "http://a/b".into(),
            },
            gen: 7,
            body_len: 42,
            internal: vec![1, 2, 3],
            header: vec![4, 5],
        };
        let enc = m.encode();
        let d = MetaFile::decode(&enc).expect("valid");
        assert_eq!(
            (d.gen, d.body_len, d.info.url.as_str()),
            (7, 42, "http://a/b")
        );
        for cut in 0..enc.len() {
            assert!(MetaFile::decode(&enc[..cut]).is_none(), "cut at {cut}");
        }
        assert_eq!(parse_hex(&hex(&[0xab; 16])), Some([0xab; 16]));
    }
}

#[cfg(test)]
mod store_tests {
    use super::*;

    fn store(tier: &DiskTier, id: ObjectId, body: &[u8]) {
        let gen = tier.new_gen();
        let tmp = tier.tmp_path(gen, "b");
        std::fs::write(&tmp, body).unwrap();
        let m = MetaFile {
            info: ObjInfo {
                tenant: "t".into(),
                url: format!("http://h/{}", id[0]),
            },
            gen,
            body_len: body.len() as u64,
            internal: vec![1],
            header: vec![2],
        };
        tier.commit(id, &tmp, &m).unwrap();
    }

    #[test]
    fn survives_reopen_drops_truncated_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        {
            let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
            store(&tier, [1; 16], &[7; 5000]);
            store(&tier, [2; 16], &[8; 5000]);
            // Replacing an object removes the old body file.
            store(&tier, [2; 16], &[9; 6000]);
            assert_eq!(tier.objects(), 2);
            assert!(tier.read_meta(&[2; 16]).is_some_and(|m| m.body_len == 6000));
        }
        let e = DiskTier::open(dir.path(), 1 << 20).unwrap();
        let body = e.body_path(&[1; 16], e.get(&[1; 16]).unwrap().gen);
        drop(e);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&body)
            .unwrap()
            .set_len(10)
            .unwrap();
        let tier = DiskTier::open(dir.path(), 1 << 20).unwrap();
        assert!(
            tier.get(&[1; 16]).is_none(),
            "truncated object dropped at start"
        );
        assert!(tier.read_meta(&[2; 16]).is_some());
        let bodies = std::fs::read_dir(dir.path().join("objects").join("02"))
            .unwrap()
            .filter(|f| f.as_ref().unwrap().path().extension().unwrap() == "b")
            .count();
        assert_eq!(bodies, 1, "the replaced body is gone");

        // The bound: older objects go first.
        let small = DiskTier::open(dir.path(), 8000).unwrap();
        store(&small, [3; 16], &[1; 5000]);
        assert!(small.bytes() <= 8000);
        assert!(small.get(&[3; 16]).is_some());
        assert!(small.get(&[2; 16]).is_none());
    }
}
