//! Usage figures for the monthly and annual reports: requests, bytes sent, IPv6 share and an
//! estimate of unique visitors per tenant and month. Visitors are counted with a HyperLogLog
//! sketch (1,024 registers, about 3 % error) so no client address is ever stored. Counters are
//! atomics on the request path and are added to `state_dir/usage/YYYY-MM.json` every minute.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

const REGISTERS: usize = 1024;
const INDEX_BITS: u32 = 10;

/// Live counters of one tenant since the last flush.
#[derive(Debug)]
pub struct TenantUsage {
    requests: AtomicU64,
    bytes_out: AtomicU64,
    ipv6: AtomicU64,
    /// Allocated on the first request, so an idle tenant costs no kilobyte.
    hll: std::sync::OnceLock<Box<[AtomicU8]>>,
}

static USAGE: LazyLock<Mutex<HashMap<String, Arc<TenantUsage>>>> = LazyLock::new(Default::default);

/// The counters of a tenant id, the same object across reloads.
pub fn tenant_usage(id: &str) -> Arc<TenantUsage> {
    let mut m = match USAGE.lock() {
        Ok(m) => m,
        Err(p) => p.into_inner(),
    };
    m.entry(id.to_string())
        .or_insert_with(|| {
            Arc::new(TenantUsage {
                requests: AtomicU64::new(0),
                bytes_out: AtomicU64::new(0),
                ipv6: AtomicU64::new(0),
                hll: std::sync::OnceLock::new(),
            })
        })
        .clone()
}

fn hash_ip(ip: IpAddr) -> u64 {
    // Fixed keys: the same address lands in the same register in every process.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    ip.to_canonical().hash(&mut h);
    let x = h.finish();
    // Extra mixing: DefaultHasher's low bits are fine, but be safe for the register index.
    let x = (x ^ (x >> 31)).wrapping_mul(0x7fb5_d329_728e_a185);
    x ^ (x >> 27)
}

impl TenantUsage {
    fn registers(&self) -> &[AtomicU8] {
        self.hll
            .get_or_init(|| (0..REGISTERS).map(|_| AtomicU8::new(0)).collect())
    }

    pub fn record(&self, client: IpAddr, bytes_out: u64) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes_out, Ordering::Relaxed);
        if client.to_canonical().is_ipv6() {
            self.ipv6.fetch_add(1, Ordering::Relaxed);
        }
        let h = hash_ip(client);
        let idx = (h >> (64 - INDEX_BITS)) as usize;
        let rest = h << INDEX_BITS;
        let rank = (rest.leading_zeros().min(64 - INDEX_BITS) + 1) as u8;
        self.registers()[idx].fetch_max(rank, Ordering::Relaxed);
    }
}

/// One tenant's figures for a month, as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MonthUsage {
    pub requests: u64,
    pub bytes_out: u64,
    pub ipv6_requests: u64,
    /// HyperLogLog registers, hex.
    pub visitors_sketch: String,
}

impl MonthUsage {
    fn registers(&self) -> Vec<u8> {
        let b = self.visitors_sketch.as_bytes();
        if b.len() != REGISTERS * 2 {
            return vec![0; REGISTERS];
        }
        (0..REGISTERS)
            .map(|i| {
                std::str::from_utf8(&b[2 * i..2 * i + 2])
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 16).ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Estimated distinct client addresses.
    pub fn unique_visitors(&self) -> u64 {
        estimate(&self.registers())
    }

    pub fn ipv6_share(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ipv6_requests as f64 / self.requests as f64)
    }
}

/// HyperLogLog estimate with the small-range correction.
pub fn estimate(regs: &[u8]) -> u64 {
    let m = regs.len() as f64;
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let sum: f64 = regs.iter().map(|&r| 2f64.powi(-i32::from(r))).sum();
    let e = alpha * m * m / sum;
    let zeros = regs.iter().filter(|&&r| r == 0).count();
    let e = if e <= 2.5 * m && zeros > 0 {
        m * (m / zeros as f64).ln()
    } else {
        e
    };
    e.round() as u64
}

/// `YYYY-MM` of a timestamp.
pub fn month_of(t: i64) -> String {
    let (y, m, _) = crate::calendar::civil_from_days(t.div_euclid(86_400));
    format!("{y:04}-{m:02}")
}

pub fn load_month(state_dir: &Path, month: &str) -> BTreeMap<String, MonthUsage> {
    std::fs::read(state_dir.join("usage").join(format!("{month}.json")))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Adds the live counters to the month's file and zeroes them. Sketches are merged by maximum,
/// so they are cleared only when the month changes.
pub fn flush(state_dir: &Path, now: i64, last_month: &mut String) -> std::io::Result<()> {
    let month = month_of(now);
    let mut stored = load_month(state_dir, &month);
    let live: Vec<(String, Arc<TenantUsage>)> = match USAGE.lock() {
        Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(p) => p
            .into_inner()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let new_month = *last_month != month;
    for (id, u) in live {
        let e = stored.entry(id).or_default();
        e.requests += u.requests.swap(0, Ordering::Relaxed);
        e.bytes_out += u.bytes_out.swap(0, Ordering::Relaxed);
        e.ipv6_requests += u.ipv6.swap(0, Ordering::Relaxed);
        let mut regs = e.registers();
        let Some(hll) = u.hll.get() else {
            e.visitors_sketch = regs.iter().map(|r| format!("{r:02x}")).collect();
            continue;
        };
        for (i, r) in hll.iter().enumerate() {
            let v = if new_month {
                r.swap(0, Ordering::Relaxed)
            } else {
                r.load(Ordering::Relaxed)
            };
            regs[i] = regs[i].max(v);
        }
        e.visitors_sketch = regs.iter().map(|r| format!("{r:02x}")).collect();
    }
    *last_month = month.clone();
    let dir = state_dir.join("usage");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!("{month}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(&stored).unwrap_or_default())?;
    std::fs::rename(tmp, dir.join(format!("{month}.json")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visitors_are_estimated_within_a_few_percent() {
        let u = tenant_usage("usage-test-hll");
        for i in 0..20_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            u.record(ip, 100);
            u.record(ip, 100); // a returning visitor is one visitor
        }
        let dir = tempfile::tempdir().unwrap();
        let mut last = month_of(0);
        flush(dir.path(), 1_795_000_000, &mut last).unwrap();
        let m = load_month(dir.path(), "2026-11");
        let t = &m["usage-test-hll"];
        assert_eq!(t.requests, 40_000);
        assert_eq!(t.bytes_out, 4_000_000);
        let est = t.unique_visitors() as f64;
        assert!((est - 20_000.0).abs() / 20_000.0 < 0.08, "estimate {est}");
        // Flushing again adds nothing new.
        flush(dir.path(), 1_795_000_060, &mut last).unwrap();
        assert_eq!(
            load_month(dir.path(), "2026-11")["usage-test-hll"].requests,
            40_000
        );
    }

    #[test]
    fn months() {
        assert_eq!(month_of(0), "1970-01");
        assert_eq!(month_of(1_795_000_000), "2026-11");
        assert_eq!(month_of(1_798_761_599), "2026-12");
        assert_eq!(month_of(1_798_761_600), "2027-01");
    }
}
