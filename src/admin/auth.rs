//! Bearer-token checks for the admin API and the per-address limit on failed attempts.

use crate::gateway::AdminToken;
use pingora::protocols::http::ServerSession;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub enum Verdict {
    Allowed(String),
    /// No tokens configured: the API is off.
    Disabled,
    Denied(&'static str),
}

/// SHA-256 of a token, as stored in the configuration.
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

pub fn check(session: &ServerSession, tokens: &[AdminToken]) -> Verdict {
    if tokens.is_empty() {
        return Verdict::Disabled;
    }
    let Some(h) = session.req_header().headers.get("authorization") else {
        return Verdict::Denied("no token");
    };
    let Some(token) = h.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")) else {
        return Verdict::Denied("not a bearer token");
    };
    let hash = token_hash(token.trim());
    // Compare every entry without stopping early, so timing does not tell which one matched.
    let mut found = None;
    for t in tokens {
        let eq = t
            .sha256
            .iter()
            .zip(hash.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if eq && found.is_none() {
            found = Some(t.name.clone());
        }
    }
    match found {
        Some(n) => Verdict::Allowed(n),
        None => Verdict::Denied("wrong token"),
    }
}

/// Failed attempts per client address over a one-minute window. Bounded: the table is cleared
/// when it grows past `MAX_ENTRIES` (an attacker cycling addresses gains nothing from that:
/// each address still gets only a few guesses per minute).
#[derive(Default)]
pub struct FailureLimiter {
    table: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

const WINDOW: Duration = Duration::from_secs(60);
const MAX_ENTRIES: usize = 10_000;

impl FailureLimiter {
    /// Counts a failure; true when the address is now over the limit.
    pub fn record(&self, ip: IpAddr, max: u32) -> bool {
        let Ok(mut t) = self.table.lock() else {
            return true;
        };
        if t.len() > MAX_ENTRIES {
            t.clear();
        }
        let now = Instant::now();
        let e = t.entry(ip).or_insert((now, 0));
        if now.duration_since(e.0) > WINDOW {
            *e = (now, 0);
        }
        e.1 += 1;
        e.1 > max
    }

    pub fn is_limited(&self, ip: IpAddr, max: u32) -> bool {
        let Ok(t) = self.table.lock() else {
            return true;
        };
        t.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() <= WINDOW && *n > max)
    }
}
