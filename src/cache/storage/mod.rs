//! Cache storage for pingora-cache: a memory tier (TinyUFO, bounded in bytes) in front of an
//! optional disk tier (bounded in bytes, kept across restarts, crash-safe).
//!
//! Small objects are kept in both tiers; objects larger than the memory tier's object limit
//! stream to disk only and are read back in chunks, so a 200 MB PDF is never held whole in
//! memory. Owns the stored objects and the purge index; it decides nothing about HTTP
//! (that is `cache::policy`) and never touches the request.

pub mod disk;
pub mod memory;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::cache::key::CacheHashKey;
use pingora::cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType,
};
use pingora::cache::trace::SpanHandle;
use pingora::cache::{CacheKey, CacheMeta, Storage};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use std::any::Any;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// `CacheKey::combined_bin()`: primary key and variance.
pub type ObjectId = [u8; 16];

/// Who an object belongs to, for purges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjInfo {
    pub tenant: String,
    /// `scheme://host/path?normalised-query`.
    pub url: String,
}

/// A `CacheMeta` kept in parts, so a memory hit rebuilds it without deserialising headers.
#[derive(Clone)]
pub struct MetaParts {
    fresh_until: SystemTime,
    created: SystemTime,
    epoch: SystemTime,
    swr: u32,
    sie: u32,
    variance: Option<pingora::cache::key::HashBinary>,
    header: ResponseHeader,
}

impl MetaParts {
    pub fn from_meta(m: &CacheMeta) -> MetaParts {
        MetaParts {
            fresh_until: m.fresh_until(),
            created: m.created(),
            epoch: m.epoch(),
            swr: m.stale_while_revalidate_sec(),
            sie: m.stale_if_error_sec(),
            variance: m.variance(),
            header: m.response_header_copy(),
        }
    }

    pub fn to_meta(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.swr,
            self.sie,
            self.header.clone(),
        );
        if self.epoch != self.created {
            m.set_epoch_override(self.epoch);
        }
        // Vary: the stored variant answers only requests with the same variance.
        if let Some(v) = self.variance {
            m.set_variance_key(v);
        }
        m
    }

    pub fn header_size(&self) -> usize {
        self.header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum::<usize>()
            + 32
    }
}

/// Sizes and place of the tiers (from `[cache]` in the main file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierSettings {
    pub memory_bytes: usize,
    pub memory_max_object: usize,
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    pub max_object: usize,
}

pub struct Tiered {
    pub mem: memory::MemTier,
    pub disk: Option<disk::DiskTier>,
    pub max_object: usize,
}

static GLOBAL: OnceLock<&'static Tiered> = OnceLock::new();

/// The process's storage, once [`init`] ran.
pub fn global() -> Option<&'static Tiered> {
    GLOBAL.get().copied()
}

/// Opens the tiers (first call wins: tier sizes take effect at start).
pub fn init(s: &TierSettings) -> std::io::Result<&'static Tiered> {
    if let Some(t) = global() {
        return Ok(t);
    }
    let disk = match &s.disk_dir {
        Some(d) => Some(disk::DiskTier::open(d, s.disk_bytes)?),
        None => None,
    };
    let t: &'static Tiered = Box::leak(Box::new(Tiered {
        mem: memory::MemTier::new(s.memory_bytes, s.memory_max_object),
        disk,
        max_object: s.max_object,
    }));
    let t = *GLOBAL.get_or_init(|| t);
    crate::cache::metrics::tier_limits(t);
    Ok(t)
}

fn internal(msg: impl Into<String>) -> Box<Error> {
    Error::explain(InternalError, msg.into())
}

fn info_of(key: &CacheKey) -> ObjInfo {
    let primary = key.primary_key_str().unwrap_or("");
    // The primary key is `tenant \n url` (see `cache::cache_key`).
    let url = primary.split_once('\n').map(|(_, u)| u).unwrap_or(primary);
    ObjInfo {
        tenant: key.user_tag.clone(),
        url: url.to_string(),
    }
}

impl Tiered {
    /// Removes every object whose (tenant, url) matches; returns how many.
    pub fn purge_matching(&self, pred: impl Fn(&str, &str) -> bool) -> u64 {
        let mut ids = self.mem.matching(&pred);
        if let Some(d) = &self.disk {
            ids.extend(d.matching(&pred));
        }
        ids.sort_unstable();
        ids.dedup();
        let mut n = 0;
        for id in ids {
            let a = self.mem.remove(&id);
            let b = self.disk.as_ref().is_some_and(|d| d.remove(&id));
            if a || b {
                n += 1;
            }
        }
        crate::cache::metrics::tier_bytes(self);
        n
    }

    async fn disk_lookup(&'static self, id: ObjectId) -> Option<(CacheMeta, HitHandler)> {
        let d = self.disk.as_ref()?;
        let m = tokio::task::spawn_blocking(move || d.read_meta(&id))
            .await
            .ok()??;
        let meta = match CacheMeta::deserialize(&m.internal, &m.header) {
            Ok(meta) => meta,
            Err(_) => {
                d.remove(&id);
                disk::corrupt(&d.meta_path(&id), "metadata format");
                return None;
            }
        };
        let path = d.body_path(&id, m.gen);
        let mut file = tokio::fs::File::open(&path).await.ok()?;
        let len = m.body_len as usize;
        if len <= self.mem.max_object {
            // Small: read it whole and keep it in memory for the next hits.
            let mut buf = Vec::with_capacity(len);
            if file.read_to_end(&mut buf).await.is_err() || buf.len() != len {
                d.remove(&id);
                disk::corrupt(&path, "body length");
                return None;
            }
            let body = Bytes::from(buf);
            let parts = MetaParts::from_meta(&meta);
            self.mem.put(
                memory::MemObject {
                    id,
                    info: Arc::new(m.info),
                    meta: parts,
                    body: body.clone(),
                },
                false,
            );
            crate::cache::metrics::tier_bytes(self);
            return Some((meta, Box::new(MemHit::new(body))));
        }
        Some((
            meta,
            Box::new(DiskHit {
                file,
                path,
                pos: 0,
                end: len,
                len,
                seek_to: None,
            }),
        ))
    }
}

#[async_trait]
impl Storage for Tiered {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let id = key.combined_bin();
        if let Some(obj) = self.mem.get(&id) {
            return Ok(Some((
                obj.meta.to_meta(),
                Box::new(MemHit::new(obj.body.clone())),
            )));
        }
        Ok(self.disk_lookup(id).await)
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let (internal, header) = match &self.disk {
            Some(_) => meta.serialize()?,
            None => (Vec::new(), Vec::new()),
        };
        Ok(Box::new(Miss {
            storage: self,
            id: key.combined_bin(),
            info: Arc::new(info_of(key)),
            parts: MetaParts::from_meta(meta),
            internal,
            header,
            buf: Vec::new(),
            size: 0,
            in_memory: true,
            disk: None,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        _purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        let id = target.key().combined_bin();
        let a = self.mem.remove(&id);
        let b = self.disk.as_ref().is_some_and(|d| d.remove(&id));
        Ok(if a || b {
            PurgeOutcome::Purged(None)
        } else {
            PurgeOutcome::NotFound
        })
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let id = key.combined_bin();
        let mut found = false;
        if let Some(obj) = self.mem.get(&id) {
            found = true;
            self.mem.put(
                memory::MemObject {
                    id,
                    info: obj.info.clone(),
                    meta: MetaParts::from_meta(meta),
                    body: obj.body.clone(),
                },
                true,
            );
        }
        if let Some(d) = &self.disk {
            let (internal, header) = meta.serialize()?;
            if tokio::task::spawn_blocking(move || d.update_meta(&id, internal, header))
                .await
                .unwrap_or(false)
            {
                found = true;
            }
        }
        Ok(found)
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}

/// A hit served from memory (or from a small disk object read whole).
pub struct MemHit {
    body: Bytes,
    done: bool,
    start: usize,
    end: usize,
}

impl MemHit {
    fn new(body: Bytes) -> MemHit {
        let end = body.len();
        MemHit {
            body,
            done: false,
            start: 0,
            end,
        }
    }
}

#[async_trait]
impl HandleHit for MemHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }
    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }
    fn can_seek(&self) -> bool {
        true
    }
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let end = end.unwrap_or(self.body.len()).min(self.body.len());
        if start > end {
            return Error::e_explain(InternalError, "seek past the end of the object");
        }
        self.start = start;
        self.end = end;
        self.done = false;
        Ok(())
    }
    fn get_eviction_weight(&self) -> usize {
        self.body.len()
    }
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// A hit streamed from a body file in chunks.
pub struct DiskHit {
    file: tokio::fs::File,
    path: PathBuf,
    pos: usize,
    end: usize,
    len: usize,
    seek_to: Option<u64>,
}

const CHUNK: usize = 64 * 1024;

#[async_trait]
impl HandleHit for DiskHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if let Some(p) = self.seek_to.take() {
            if let Err(e) = self.file.seek(std::io::SeekFrom::Start(p)).await {
                return Err(internal(format!("seeking {}: {e}", self.path.display())));
            }
        }
        if self.pos >= self.end {
            return Ok(None);
        }
        let want = (self.end - self.pos).min(CHUNK);
        let mut buf = vec![0u8; want];
        let mut got = 0;
        while got < want {
            match self.file.read(&mut buf[got..]).await {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => return Err(internal(format!("reading {}: {e}", self.path.display()))),
            }
        }
        if got < want {
            // The file shrank under us: stop here (the client sees a short body) and report.
            disk::corrupt(&self.path, "body truncated while serving");
            return Error::e_explain(InternalError, "cached body truncated");
        }
        buf.truncate(got);
        self.pos += got;
        Ok(Some(Bytes::from(buf)))
    }
    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }
    fn can_seek(&self) -> bool {
        true
    }
    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        let end = end.unwrap_or(self.len).min(self.len);
        if start > end {
            return Error::e_explain(InternalError, "seek past the end of the object");
        }
        // `seek` is not async: the file position moves before the next read.
        self.pos = start;
        self.end = end;
        self.seek_to = Some(start as u64);
        Ok(())
    }
    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }
    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

/// Writing one response into the tiers.
struct Miss {
    storage: &'static Tiered,
    id: ObjectId,
    info: Arc<ObjInfo>,
    parts: MetaParts,
    internal: Vec<u8>,
    header: Vec<u8>,
    buf: Vec<Bytes>,
    size: usize,
    /// Still small enough for the memory tier.
    in_memory: bool,
    disk: Option<(tokio::fs::File, PathBuf, u64)>,
}

#[async_trait]
impl HandleMiss for Miss {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        self.size += data.len();
        if self.size > self.storage.max_object {
            return Error::e_explain(InternalError, "object over cache.max_object_size");
        }
        if let Some(d) = &self.storage.disk {
            if self.disk.is_none() {
                let gen = d.new_gen();
                let path = d.tmp_path(gen, "b");
                let f = tokio::fs::File::create(&path)
                    .await
                    .map_err(|e| internal(format!("creating {}: {e}", path.display())))?;
                self.disk = Some((f, path, gen));
            }
            if let Some((f, path, _)) = &mut self.disk {
                if let Err(e) = f.write_all(&data).await {
                    crate::cache::metrics::disk_error("write");
                    return Err(internal(format!("writing {}: {e}", path.display())));
                }
            }
        }
        if self.in_memory {
            if self.size > self.storage.mem.max_object {
                self.in_memory = false;
                self.buf.clear();
            } else {
                self.buf.push(data);
            }
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        let st = self.storage;
        if let (Some(d), Some(w)) = (&st.disk, self.disk.take()) {
            let (mut f, path, gen) = w;
            let synced = async {
                f.flush().await?;
                f.sync_data().await
            }
            .await;
            if let Err(e) = synced {
                crate::cache::metrics::disk_error("write");
                let _ = tokio::fs::remove_file(&path).await;
                return Err(internal(format!("syncing {}: {e}", path.display())));
            }
            drop(f);
            let meta = disk::MetaFile {
                info: (*self.info).clone(),
                gen,
                body_len: self.size as u64,
                internal: std::mem::take(&mut self.internal),
                header: std::mem::take(&mut self.header),
            };
            let id = self.id;
            let committed = tokio::task::spawn_blocking(move || {
                d.commit(id, &path, &meta).map_err(|e| (e, path))
            })
            .await;
            match committed {
                Ok(Ok(())) => {}
                Ok(Err((e, path))) => {
                    crate::cache::metrics::disk_error("write");
                    let _ = std::fs::remove_file(&path);
                    log::warn!("cache: storing {} on disk failed: {e}", self.info.url);
                }
                Err(_) => crate::cache::metrics::disk_error("write"),
            }
        }
        if self.in_memory {
            let body = if self.buf.len() == 1 {
                self.buf.pop().unwrap_or_default()
            } else {
                let mut all = Vec::with_capacity(self.size);
                for b in &self.buf {
                    all.extend_from_slice(b);
                }
                Bytes::from(all)
            };
            st.mem.put(
                memory::MemObject {
                    id: self.id,
                    info: self.info.clone(),
                    meta: self.parts.clone(),
                    body,
                },
                false,
            );
        }
        crate::cache::metrics::tier_bytes(st);
        Ok(MissFinishType::Created(self.size))
    }
}
