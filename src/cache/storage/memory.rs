//! The memory tier: whole objects in RAM, bounded in bytes, admitted and evicted by TinyUFO
//! (TinyLFU admission over S3-FIFO queues), so a scan of one-off pages cannot flush the pages
//! citizens keep reading. Owns only its objects and their byte accounting.

use super::{MetaParts, ObjInfo, ObjectId};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tinyufo::TinyUfo;

/// TinyUFO weighs in `u16`: one unit is this many bytes.
const UNIT: usize = 1024;

/// One object held in memory.
pub struct MemObject {
    pub id: ObjectId,
    pub info: Arc<ObjInfo>,
    pub meta: MetaParts,
    pub body: Bytes,
}

impl MemObject {
    /// Bytes charged to the tier: body, header estimate and key.
    pub fn charge(&self) -> usize {
        self.body.len() + self.meta.header_size() + self.info.url.len() + 128
    }
}

pub struct MemTier {
    ufo: TinyUfo<ObjectId, Arc<MemObject>>,
    /// What is in `ufo`, for purges by prefix or tenant (TinyUFO cannot be iterated).
    index: Mutex<HashMap<ObjectId, (Arc<ObjInfo>, usize)>>,
    bytes: AtomicU64,
    pub limit: usize,
    /// Largest object kept in memory.
    pub max_object: usize,
}

impl MemTier {
    pub fn new(limit: usize, max_object: usize) -> MemTier {
        // Estimated object count sizes TinyUFO's frequency sketch.
        let estimated = (limit / 16_384).clamp(1024, 4_000_000);
        MemTier {
            ufo: TinyUfo::new(limit / UNIT, estimated),
            index: Mutex::new(HashMap::new()),
            bytes: AtomicU64::new(0),
            limit,
            max_object: max_object.min(u16::MAX as usize * UNIT),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn objects(&self) -> usize {
        self.index.lock().map(|i| i.len()).unwrap_or(0)
    }

    pub fn get(&self, id: &ObjectId) -> Option<Arc<MemObject>> {
        self.ufo.get(id)
    }

    /// Offers an object; TinyUFO may refuse it (less popular than what it would evict) or
    /// evict others. With `force` (a revalidated object replacing itself) it is always
    /// admitted. Returns whether it was admitted.
    pub fn put(&self, obj: MemObject, force: bool) -> bool {
        let charge = obj.charge();
        if obj.body.len() > self.max_object || charge > self.limit {
            return false;
        }
        let id = obj.id;
        let info = obj.info.clone();
        self.remove(&id);
        let weight = charge.div_ceil(UNIT).max(1) as u16;
        let obj = Arc::new(obj);
        // The index entry goes in before TinyUFO so an eviction report always finds it.
        self.account_add(id, info.clone(), charge);
        let evicted = if force {
            self.ufo.force_put(id, obj, weight)
        } else {
            self.ufo.put(id, obj, weight)
        };
        let mut admitted = true;
        for kv in evicted {
            if kv.data.id == id && Arc::ptr_eq(&kv.data.info, &info) {
                admitted = false;
            } else {
                crate::cache::metrics::evicted("memory");
            }
            self.account_remove(&kv.data.id, Some(&kv.data.info));
        }
        admitted
    }

    /// Removes an object; returns whether it was there.
    pub fn remove(&self, id: &ObjectId) -> bool {
        match self.ufo.remove(id) {
            Some(obj) => {
                self.account_remove(id, Some(&obj.info));
                true
            }
            None => false,
        }
    }

    /// Objects whose key matches `pred`.
    pub fn matching(&self, pred: &dyn Fn(&str, &str) -> bool) -> Vec<ObjectId> {
        let Ok(index) = self.index.lock() else {
            return Vec::new();
        };
        index
            .iter()
            .filter(|(_, (info, _))| pred(&info.tenant, &info.url))
            .map(|(id, _)| *id)
            .collect()
    }

    fn account_add(&self, id: ObjectId, info: Arc<ObjInfo>, charge: usize) {
        crate::cache::metrics::tenant_bytes(&info.tenant, "memory", charge as i64);
        if let Ok(mut index) = self.index.lock() {
            if let Some((old, c)) = index.insert(id, (info, charge)) {
                self.bytes.fetch_sub(c as u64, Ordering::Relaxed);
                crate::cache::metrics::tenant_bytes(&old.tenant, "memory", -(c as i64));
            }
        }
        self.bytes.fetch_add(charge as u64, Ordering::Relaxed);
    }

    fn account_remove(&self, id: &ObjectId, info: Option<&Arc<ObjInfo>>) {
        let Ok(mut index) = self.index.lock() else {
            return;
        };
        // Only the generation that was evicted: a newer one under the same id stays counted.
        let same = match (index.get(id), info) {
            (Some((cur, _)), Some(info)) => Arc::ptr_eq(cur, info),
            (Some(_), None) => true,
            (None, _) => false,
        };
        if same {
            if let Some((old, c)) = index.remove(id) {
                self.bytes.fetch_sub(c as u64, Ordering::Relaxed);
                crate::cache::metrics::tenant_bytes(&old.tenant, "memory", -(c as i64));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora::cache::CacheMeta;
    use pingora::http::ResponseHeader;
    use std::time::SystemTime;

    fn obj(i: u32, len: usize) -> MemObject {
        let now = SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, ResponseHeader::build(200, None).unwrap());
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_le_bytes());
        MemObject {
            id,
            info: Arc::new(ObjInfo {
                tenant: "t".into(),
                url: format!("http://h/{i}"),
            }),
            meta: MetaParts::from_meta(&meta),
            body: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn never_above_the_bound_and_large_objects_refused() {
        let tier = MemTier::new(256 * 1024, 32 * 1024);
        assert!(!tier.put(obj(0, 40 * 1024), false));
        for i in 1..400 {
            tier.put(obj(i, 3000 + (i as usize % 7) * 1000), false);
            assert!(
                tier.bytes() <= tier.limit as u64,
                "{} after {i}",
                tier.bytes()
            );
        }
        assert!(tier.objects() > 10);
        let ids = tier.matching(&|_, _| true);
        assert_eq!(ids.len(), tier.objects());
        for id in ids {
            tier.remove(&id);
        }
        assert_eq!(tier.bytes(), 0);
    }
}
