//! Planned maintenance windows: per tenant, from the configuration or created through the admin
//! API (kept in a state file so they survive restarts). During a window the tenant's requests
//! get 503 with `Retry-After` and an accessible bilingual maintenance page naming the expected
//! restore time. This module owns the window model, time parsing and the page; it does not
//! route requests or talk to backends.

pub use crate::calendar::days_from_civil;
use crate::pages::html_escape;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A planned outage of one tenant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Window {
    pub id: String,
    pub tenant: String,
    /// RFC 3339 with offset, as given (kept for display in the operator's zone).
    pub start: String,
    pub end: String,
    /// Expected restore time shown to citizens; the end of the window when not given.
    pub restore: Option<String>,
    pub message_vi: Option<String>,
    pub message_en: Option<String>,
    /// `config` or `api`.
    pub source: String,
    #[serde(skip)]
    pub start_s: i64,
    #[serde(skip)]
    pub end_s: i64,
}

impl Window {
    /// Checks times and fills the parsed fields.
    pub fn validated(mut self) -> Result<Window, String> {
        self.start_s = parse_rfc3339(&self.start).map_err(|e| format!("start: {e}"))?;
        self.end_s = parse_rfc3339(&self.end).map_err(|e| format!("end: {e}"))?;
        if self.end_s <= self.start_s {
            return Err("end must be after start".into());
        }
        if let Some(r) = &self.restore {
            parse_rfc3339(r).map_err(|e| format!("restore: {e}"))?;
        }
        Ok(self)
    }

    pub fn active_at(&self, now: i64) -> bool {
        self.start_s <= now && now < self.end_s
    }

    pub fn upcoming_at(&self, now: i64) -> bool {
        now < self.start_s
    }

    fn restore_text(&self) -> &str {
        self.restore.as_deref().unwrap_or(&self.end)
    }

    /// Seconds until the expected restore time (at least 1).
    pub fn retry_after(&self, now: i64) -> i64 {
        let restore = self
            .restore
            .as_deref()
            .and_then(|r| parse_rfc3339(r).ok())
            .unwrap_or(self.end_s);
        (restore - now).max(1)
    }
}

pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` to seconds since the epoch. An offset is required so
/// a window never depends on the server's time zone.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad =
        || format!("`{s}` is not an RFC 3339 time with offset, e.g. 2026-12-01T22:00:00+07:00");
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, String> {
        s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad)
    };
    let (y, mo, d, h, mi, se) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(r) = rest.strip_prefix('.') {
        let digits = r.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &r[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && &rest[3..4] == ":" =>
        {
            let oh: i64 = rest[1..3].parse().map_err(|_| bad())?;
            let om: i64 = rest[4..6].parse().map_err(|_| bad())?;
            let v = oh * 3600 + om * 60;
            if rest.starts_with('-') {
                -v
            } else {
                v
            }
        }
        _ => return Err(bad()),
    };
    Ok(days_from_civil(y, mo as u32, d as u32) * 86400 + h * 3600 + mi * 60 + se - offset)
}

/// Windows created through the admin API, persisted in the state directory.
pub struct ApiWindows {
    windows: ArcSwap<Vec<Window>>,
    file: Option<PathBuf>,
    lock: std::sync::Mutex<()>,
}

impl ApiWindows {
    /// Loads `maintenance.json` from the state directory when there is one.
    pub fn load(state_dir: Option<PathBuf>) -> ApiWindows {
        let file = state_dir.map(|d| d.join("maintenance.json"));
        let windows: Vec<Window> = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|b| serde_json::from_slice::<Vec<Window>>(&b).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|w| w.validated().ok())
            .collect();
        ApiWindows {
            windows: ArcSwap::from_pointee(windows),
            file,
            lock: std::sync::Mutex::new(()),
        }
    }

    pub fn all(&self) -> Arc<Vec<Window>> {
        self.windows.load_full()
    }

    pub fn is_empty(&self) -> bool {
        self.windows.load().is_empty()
    }

    /// Adds a window and persists the list; returns it with its new id.
    pub fn add(&self, mut w: Window) -> Result<Window, String> {
        let _g = self
            .lock
            .lock()
            .map_err(|_| "maintenance store poisoned".to_string())?;
        w.id = format!("m{}", &crate::forwarded::new_request_id()[..12]);
        w.source = "api".into();
        let w = w.validated()?;
        let mut next = (*self.windows.load_full()).clone();
        // Expired windows are dropped when the list changes.
        let now = now_s();
        next.retain(|x| x.end_s > now);
        next.push(w.clone());
        self.persist(&next)?;
        self.windows.store(Arc::new(next));
        Ok(w)
    }

    /// Removes a window by tenant and id; false when there was none.
    pub fn remove(&self, tenant: &str, id: &str) -> Result<bool, String> {
        let _g = self
            .lock
            .lock()
            .map_err(|_| "maintenance store poisoned".to_string())?;
        let mut next = (*self.windows.load_full()).clone();
        let before = next.len();
        next.retain(|w| !(w.tenant == tenant && w.id == id));
        if next.len() == before {
            return Ok(false);
        }
        self.persist(&next)?;
        self.windows.store(Arc::new(next));
        Ok(true)
    }

    fn persist(&self, list: &[Window]) -> Result<(), String> {
        let Some(f) = &self.file else { return Ok(()) };
        let data = serde_json::to_vec_pretty(list).map_err(|e| e.to_string())?;
        let tmp = f.with_extension("json.tmp");
        std::fs::write(&tmp, data)
            .and_then(|_| std::fs::rename(&tmp, f))
            .map_err(|e| format!("cannot write {}: {e}", f.display()))
    }
}

/// The window in force for a tenant now, from its configured windows or the API's.
pub fn active<'a>(
    configured: &'a [Window],
    api: &'a [Window],
    tenant: &str,
    now: i64,
) -> Option<&'a Window> {
    configured
        .iter()
        .find(|w| w.active_at(now))
        .or_else(|| api.iter().find(|w| w.tenant == tenant && w.active_at(now)))
}

/// The maintenance page: Vietnamese first, English below, restore time and request id.
pub fn page(w: &Window, tenant_name: &str, request_id: &str) -> String {
    let vi = w
        .message_vi
        .as_deref()
        .unwrap_or("Trang thông tin đang được bảo trì theo kế hoạch đã thông báo.");
    let en = w
        .message_en
        .as_deref()
        .unwrap_or("This portal is undergoing planned maintenance that was announced in advance.");
    let restore = html_escape(&w.restore_text().replace('T', " "));
    format!(
        r#"<!DOCTYPE html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>Đang bảo trì / Under maintenance — {name}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;background:#fff;color:#1a1a1a;line-height:1.6}}
main{{max-width:40rem;margin:0 auto;padding:2rem 1rem}}
h1{{font-size:1.5rem}} h2{{font-size:1.2rem}}
section+section{{border-top:1px solid #767676;margin-top:1.5rem}}
.rid{{background:#f2f2f2;border:1px solid #767676;padding:.6rem;margin-top:1.5rem;word-break:break-all}}
</style>
</head>
<body>
<main>
<section>
<h1>{name}: đang bảo trì</h1>
<p>{vi}</p>
<p>Dự kiến hoạt động trở lại: <strong><time datetime="{restore_attr}">{restore}</time></strong></p>
</section>
<section lang="en">
<h2>Under maintenance</h2>
<p>{en}</p>
<p>Expected back: <strong><time datetime="{restore_attr}">{restore}</time></strong></p>
</section>
<p class="rid">Mã yêu cầu <span lang="en">(request id)</span>: <code>{rid}</code></p>
</main>
</body>
</html>
"#,
        name = html_escape(tenant_name),
        vi = html_escape(vi),
        en = html_escape(en),
        restore_attr = html_escape(w.restore_text()),
        rid = html_escape(request_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-01T22:00:00+07:00"), Ok(1796137200));
        assert_eq!(parse_rfc3339("2026-12-01T15:00:00.250Z"), Ok(1796137200));
        assert!(parse_rfc3339("2026-12-01 22:00").is_err());
        assert!(
            parse_rfc3339("2026-12-01T22:00:00").is_err(),
            "offset required"
        );
        assert!(parse_rfc3339("2026-13-01T22:00:00Z").is_err());
    }

    fn w(start: &str, end: &str) -> Window {
        Window {
            id: "x".into(),
            tenant: "t".into(),
            start: start.into(),
            end: end.into(),
            restore: None,
            message_vi: None,
            message_en: None,
            source: "config".into(),
            start_s: 0,
            end_s: 0,
        }
        .validated()
        .unwrap()
    }

    #[test]
    fn windows() {
        let x = w("2026-12-01T22:00:00+07:00", "2026-12-02T02:00:00+07:00");
        assert!(!x.active_at(1796137199));
        assert!(x.active_at(1796137200));
        assert!(!x.active_at(x.end_s));
        assert_eq!(x.retry_after(x.end_s - 60), 60);
        assert!(Window {
            end: "2026-12-01T21:00:00+07:00".into(),
            ..x.clone()
        }
        .validated()
        .is_err());
        let page = page(&x, "Sở <TT>", "r1");
        assert!(page.contains("Sở &lt;TT&gt;") && page.contains("2026-12-02 02:00:00+07:00"));
    }
}
