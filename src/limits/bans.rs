//! Automatic bans: `after` strikes (rate-limit hits, WAF blocks) within `within` ban the
//! client key for `ban_for`, doubled for each repeat offence up to `max_ban`. Banned clients
//! are dropped when the connection is accepted (`conn::Guarded`) and, for clients behind a
//! trusted proxy, when their request header arrives (`super::early`).
//!
//! Bans are process-wide (not per tenant): a client attacking one portal is refused by all.
//! The table is bounded (`bans.max_entries`); a ban is never evicted before a clean record.
//!
//! Every ban decided here and every ban lifted here is handed to the listeners registered with
//! [`on_change`] (cluster mode registers one that tells the other nodes, which call
//! [`apply_remote`]); a change applied with `apply_remote` is not handed on again.

use super::table::Table;
use super::ClientKey;
use crate::events::{emit, Event, Severity};
use crate::geoip::Country;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct Policy {
    pub enabled: bool,
    pub after: u32,
    pub within: Duration,
    pub ban_for: Duration,
    pub max_ban: Duration,
    pub max_entries: usize,
}

#[derive(Debug, Clone, Default)]
struct Record {
    window_start_ms: u64,
    strikes: u32,
    offences: u32,
    banned_until_ms: u64,
    reason: &'static str,
    tenant: String,
}

/// One active ban, as listed by the admin API.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BanInfo {
    pub key: String,
    pub reason: String,
    pub tenant: String,
    pub offences: u32,
    pub expires_in_s: u64,
}

static BANS: LazyLock<Table<ClientKey, Record>> = LazyLock::new(|| Table::new(100_000));

/// A ban decided or lifted on this node, as other nodes learn it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum BanChange {
    Banned {
        /// The client key as listed (`203.0.113.7`, `2001:db8:1:2::/64`).
        key: String,
        /// End of the ban, Unix milliseconds.
        until_ms: u64,
        reason: String,
        tenant: String,
        offences: u32,
    },
    Lifted {
        key: String,
    },
}

type Listener = Arc<dyn Fn(&BanChange) + Send + Sync>;
static LISTENERS: RwLock<Vec<Listener>> = RwLock::new(Vec::new());

/// Registers a listener called with every ban decided or lifted on this node.
pub fn on_change(listener: Box<dyn Fn(&BanChange) + Send + Sync>) {
    LISTENERS
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .push(Arc::from(listener));
}

fn notify(c: &BanChange) {
    let listeners: Vec<Listener> = LISTENERS.read().unwrap_or_else(|p| p.into_inner()).clone();
    for l in listeners {
        l(c);
    }
}

/// The reasons this build knows, so a record keeps a static string.
fn static_reason(r: &str) -> &'static str {
    match r {
        "rate_limit" => "rate_limit",
        "waf" => "waf",
        "admin" => "admin",
        _ => "cluster",
    }
}

/// Applies a ban or lift decided on another node. A ban only ever lengthens the local one.
/// Returns whether anything changed.
pub fn apply_remote(c: &BanChange) -> bool {
    match c {
        BanChange::Banned {
            key,
            until_ms,
            reason,
            tenant,
            offences,
        } => {
            let Some(k) = ClientKey::parse(key) else {
                return false;
            };
            if *until_ms <= now_ms() {
                return false;
            }
            BANS.update(&k, Record::default, |r| {
                if r.banned_until_ms >= *until_ms {
                    return false;
                }
                r.banned_until_ms = *until_ms;
                r.offences = r.offences.max(*offences);
                r.strikes = 0;
                r.reason = static_reason(reason);
                r.tenant = tenant.clone();
                true
            })
        }
        BanChange::Lifted { key } => {
            let Some(k) = ClientKey::parse(key) else {
                return false;
            };
            lift_inner(&k)
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) fn set_capacity(n: usize) {
    BANS.set_capacity(n);
}

pub fn is_banned(key: &ClientKey) -> bool {
    let now = now_ms();
    BANS.peek(key, |r| r.banned_until_ms > now).unwrap_or(false)
}

/// Counts a strike against a client; bans it when the policy says so. Returns the ban's
/// length when this strike started one.
pub fn strike(
    p: &Policy,
    key: ClientKey,
    reason: &'static str,
    tenant: &str,
    country: Country,
) -> Option<Duration> {
    if !p.enabled {
        return None;
    }
    let now = now_ms();
    let within = p.within.as_millis() as u64;
    let banned = BANS.update(&key, Record::default, |r| {
        if r.banned_until_ms > now {
            return None;
        }
        // A long clean record forgets past offences.
        if r.offences > 0 && now > r.banned_until_ms + p.max_ban.as_millis() as u64 {
            r.offences = 0;
        }
        if now.saturating_sub(r.window_start_ms) > within {
            r.window_start_ms = now;
            r.strikes = 0;
        }
        r.strikes += 1;
        if r.strikes < p.after {
            return None;
        }
        let factor = 1u32.checked_shl(r.offences.min(20)).unwrap_or(u32::MAX);
        let len = p.ban_for.saturating_mul(factor).min(p.max_ban);
        r.offences += 1;
        r.strikes = 0;
        r.banned_until_ms = now + len.as_millis() as u64;
        r.reason = reason;
        r.tenant = tenant.to_string();
        Some((len, r.offences, r.banned_until_ms))
    });
    let (len, offences, until_ms) = banned?;
    notify(&BanChange::Banned {
        key: key.to_string(),
        until_ms,
        reason: reason.to_string(),
        tenant: tenant.to_string(),
        offences,
    });
    crate::metrics::get()
        .bans
        .with_label_values(&[reason])
        .inc();
    emit(
        Event::new("client_banned", Severity::Warning)
            .tenant(tenant)
            .field("key", key)
            .field("country", country)
            .field("reason", reason)
            .field("offences", offences)
            .field("for_s", len.as_secs()),
    );
    Some(len)
}

/// Active bans, longest remaining first.
pub fn list() -> Vec<BanInfo> {
    let now = now_ms();
    let mut v = BANS.collect(|k, r| {
        (r.banned_until_ms > now).then(|| BanInfo {
            key: k.to_string(),
            reason: r.reason.to_string(),
            tenant: r.tenant.clone(),
            offences: r.offences,
            expires_in_s: (r.banned_until_ms - now).div_ceil(1000),
        })
    });
    v.sort_by(|a, b| b.expires_in_s.cmp(&a.expires_in_s).then(a.key.cmp(&b.key)));
    v
}

/// Number of active bans.
pub fn active() -> usize {
    let now = now_ms();
    BANS.collect(|_, r| (r.banned_until_ms > now).then_some(()))
        .len()
}

/// Lifts the ban on a key (as listed); the record of offences is kept so a repeat offender
/// still gets a longer ban. False when the key was not banned.
pub fn lift(key: &ClientKey) -> bool {
    let lifted = lift_inner(key);
    if lifted {
        notify(&BanChange::Lifted {
            key: key.to_string(),
        });
    }
    lifted
}

fn lift_inner(key: &ClientKey) -> bool {
    let now = now_ms();
    if BANS.peek(key, |_| ()).is_none() {
        return false;
    }
    let lifted = BANS.update(key, Record::default, |r| {
        let was = r.banned_until_ms > now;
        // Ends now rather than never started, so the offence still counts.
        r.banned_until_ms = r.banned_until_ms.min(now);
        r.strikes = 0;
        was
    });
    if lifted {
        emit(Event::new("ban_lifted", Severity::Notice).field("key", key));
    }
    lifted
}
