//! The public status page (`[status_page] hosts`): every public tenant with its current state,
//! uptime, 90 daily bars, recent incidents and announced maintenance, in Vietnamese first and
//! English, accessible without JavaScript; and the same as `/status.json`. Reads the
//! availability history and the maintenance windows; shows host names only, never backend
//! addresses or internal causes beyond a short category.

use crate::availability::{History, State};
use crate::gateway::{Gateway, Snapshot};
use crate::maintenance::{self, Window};
use crate::pages::html_escape;
use serde_json::{json, Value};
use std::fmt::Write;

const DAY: i64 = 86_400;
const BARS: i64 = 90;

fn state_of(h: &History, tenant: &str) -> State {
    h.current(tenant).map(|c| c.state).unwrap_or(State::Unknown)
}

fn label(s: State) -> (&'static str, &'static str, &'static str) {
    // (vi, en, css class)
    match s {
        State::Up => ("Hoạt động bình thường", "Operational", "up"),
        State::Down => ("Đang gián đoạn", "Down", "down"),
        State::Maintenance => ("Đang bảo trì theo kế hoạch", "Planned maintenance", "maint"),
        State::Unknown => ("Chưa có dữ liệu", "No data yet", "unknown"),
    }
}

/// A cause safe to show the public: a category, not an address or an error text.
fn public_cause(cause: &str) -> &'static str {
    if cause.starts_with("status 5") {
        "lỗi máy chủ / server error"
    } else if cause.contains("connect") || cause.contains("closed") {
        "không kết nối được / unreachable"
    } else if cause.contains("no answer") || cause.contains("timeout") {
        "phản hồi chậm / timeout"
    } else {
        "gián đoạn / outage"
    }
}

fn fmt_pct(p: Option<f64>) -> String {
    match p {
        Some(p) => format!("{p:.2}%"),
        None => "—".into(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` of a timestamp.
fn utc(t: i64) -> String {
    let days = t.div_euclid(DAY);
    let rem = t.rem_euclid(DAY);
    let (y, m, d) = crate::calendar::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

struct Row {
    id: String,
    name: String,
    host: String,
    state: State,
    day: Option<f64>,
    month: Option<f64>,
    quarter: Option<f64>,
    bars: Vec<Option<f64>>,
    incidents: Vec<(i64, i64, String)>,
    upcoming: Vec<Window>,
}

fn rows(g: &Gateway, snap: &Snapshot, now: i64) -> Vec<Row> {
    // History is in milliseconds; cutting `now` to the second would hide the latest changes.
    let now_ms = crate::upstream::now_ms() as i64;
    let h = g.availability.lock();
    let excl = snap.settings.availability.exclude_maintenance;
    let api = g.maintenance.all();
    let today = now - now.rem_euclid(DAY);
    snap.tenants
        .iter()
        .filter(|t| t.public)
        .map(|t| {
            let bars = (0..BARS)
                .rev()
                .map(|i| {
                    let start = today - i * DAY;
                    h.uptime(&t.id, start * 1000, ((start + DAY) * 1000).min(now_ms))
                        .percent(excl)
                })
                .collect();
            let mut upcoming: Vec<Window> = t
                .maintenance
                .iter()
                .chain(api.iter().filter(|w| w.tenant == t.id))
                .filter(|w| w.upcoming_at(now) || w.active_at(now))
                .cloned()
                .collect();
            upcoming.sort_by_key(|w| w.start_s);
            let mut incidents: Vec<(i64, i64, String)> = h
                .incidents(&t.id, (now - 7 * DAY) * 1000, now_ms)
                .into_iter()
                .map(|(a, b, c)| (a / 1000, b / 1000, c))
                .collect();
            incidents.reverse();
            incidents.truncate(5);
            let planned = maintenance::active(&t.maintenance, &api, &t.id, now).is_some();
            Row {
                id: t.id.clone(),
                name: t.name.clone(),
                host: t.probe_host.clone().unwrap_or_default(),
                state: if planned {
                    State::Maintenance
                } else {
                    state_of(&h, &t.id)
                },
                day: h.uptime(&t.id, (now - DAY) * 1000, now_ms).percent(excl),
                month: h
                    .uptime(&t.id, (now - 30 * DAY) * 1000, now_ms)
                    .percent(excl),
                quarter: h
                    .uptime(&t.id, (now - BARS * DAY) * 1000, now_ms)
                    .percent(excl),
                bars,
                incidents,
                upcoming,
            }
        })
        .collect()
}

/// `/status.json`.
pub fn json(g: &Gateway, snap: &Snapshot) -> Value {
    let now = maintenance::now_s();
    let list: Vec<Value> = rows(g, snap, now)
        .into_iter()
        .map(|r| {
            json!({
                "id": r.id,
                "name": r.name,
                "host": r.host,
                "status": format!("{:?}", r.state).to_lowercase(),
                "uptime_24h": r.day,
                "uptime_30d": r.month,
                "uptime_90d": r.quarter,
                "daily_uptime_90d": r.bars,
                "incidents_7d": r.incidents.iter().map(|(s, e, c)| json!({"start": s, "end": e, "cause": public_cause(c)})).collect::<Vec<_>>(),
                "maintenance": r.upcoming.iter().map(|w| json!({"start": w.start, "end": w.end, "restore": w.restore.as_deref().unwrap_or(&w.end), "message_vi": w.message_vi, "message_en": w.message_en})).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({ "generated_at": now, "tenants": list })
}

/// The HTML page.
pub fn html(g: &Gateway, snap: &Snapshot) -> String {
    let now = maintenance::now_s();
    let rows = rows(g, snap, now);
    let (tvi, ten) = (&snap.status_titles.0, &snap.status_titles.1);
    let down = rows.iter().filter(|r| r.state == State::Down).count();
    let mut s = String::with_capacity(4096 + rows.len() * 8192);
    let _ = write!(
        s,
        r#"<!DOCTYPE html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{tvi} / {ten}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;color:#1a1a1a;background:#fff;line-height:1.5}}
header{{background:#1f3a5f;color:#fff;padding:1rem}}
header h1{{margin:0;font-size:1.4rem}} header p{{margin:.3rem 0 0}}
main{{max-width:60rem;margin:0 auto;padding:1rem}}
.summary{{font-size:1.1rem;font-weight:600}}
article{{border:1px solid #767676;border-radius:4px;padding:.8rem;margin:1rem 0}}
article h2{{font-size:1.2rem;margin:0}} article h3{{font-size:1rem;margin:.8rem 0 .2rem}}
.state{{font-weight:600;padding:.1rem .4rem;border-radius:3px;border:1px solid currentColor}}
.up{{color:#0a5a1e}} .down{{color:#a3000b}} .maint{{color:#6b4b00}} .unknown{{color:#4a4a4a}}
ol.bars{{list-style:none;display:flex;gap:1px;padding:0;margin:.5rem 0;height:2rem;align-items:stretch}}
ol.bars li{{flex:1;min-width:2px}}
.b-full{{background:#1b7f3a}} .b-part{{background:#c77800}} .b-bad{{background:#c0001a}} .b-none{{background:#d0d0d0}}
.sr{{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}}
dl{{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.5rem 0}} dt{{font-weight:600}} dd{{margin:0}}
a{{color:#0b4f9c}} a:focus{{outline:3px solid #f5c400;outline-offset:2px}}
footer{{max-width:60rem;margin:0 auto;padding:1rem;color:#4a4a4a;font-size:.9rem}}
</style>
</head>
<body>
<header>
<h1>{tvi}</h1>
<p lang="en">{ten}</p>
</header>
<main>
<p class="summary">{summary_vi} <span lang="en">/ {summary_en}</span></p>
"#,
        tvi = html_escape(tvi),
        ten = html_escape(ten),
        summary_vi = if down == 0 {
            "Tất cả các cổng đang hoạt động.".to_string()
        } else {
            format!("{down} cổng đang gián đoạn.")
        },
        summary_en = if down == 0 {
            "All portals are operational.".to_string()
        } else {
            format!("{down} portal(s) down.")
        },
    );
    for r in &rows {
        let (vi, en, class) = label(r.state);
        let _ = write!(
            s,
            r#"<article aria-labelledby="t-{id}">
<h2 id="t-{id}">{name}</h2>
<p><a href="https://{host}/">{host}</a> — <span class="state {class}">{vi} <span lang="en">/ {en}</span></span></p>
<dl>
<dt>24 giờ <span lang="en">(24 h)</span></dt><dd>{d}</dd>
<dt>30 ngày <span lang="en">(30 days)</span></dt><dd>{m}</dd>
<dt>90 ngày <span lang="en">(90 days)</span></dt><dd>{q}</dd>
</dl>
<h3 class="sr">Thời gian hoạt động 90 ngày qua / Daily uptime, last 90 days</h3>
<ol class="bars" aria-label="Thời gian hoạt động từng ngày, 90 ngày qua (Daily uptime, last 90 days)">
"#,
            id = html_escape(&r.id),
            name = html_escape(&r.name),
            host = html_escape(&r.host),
            d = fmt_pct(r.day),
            m = fmt_pct(r.month),
            q = fmt_pct(r.quarter),
        );
        let today = now - now.rem_euclid(DAY);
        for (i, b) in r.bars.iter().enumerate() {
            let day = today - (BARS - 1 - i as i64) * DAY;
            let (cls, txt) = match b {
                None => ("b-none", "không có dữ liệu / no data".to_string()),
                Some(p) if *p >= 99.95 => ("b-full", format!("{p:.2}%")),
                Some(p) if *p >= 95.0 => ("b-part", format!("{p:.2}%")),
                Some(p) => ("b-bad", format!("{p:.2}%")),
            };
            let date = &utc(day)[..10];
            let _ = writeln!(
                s,
                r#"<li class="{cls}" title="{date}: {txt}"><span class="sr">{date}: {txt}</span></li>"#
            );
        }
        s.push_str("</ol>\n");
        if !r.upcoming.is_empty() {
            s.push_str("<h3>Bảo trì theo kế hoạch <span lang=\"en\">/ Planned maintenance</span></h3>\n<ul>\n");
            for w in &r.upcoming {
                let _ = writeln!(
                    s,
                    "<li><time datetime=\"{st}\">{st}</time> → <time datetime=\"{en}\">{en}</time>{msg}</li>",
                    st = html_escape(&w.start),
                    en = html_escape(&w.end),
                    msg = w
                        .message_vi
                        .as_deref()
                        .map(|m| format!(": {}", html_escape(m)))
                        .unwrap_or_default()
                );
            }
            s.push_str("</ul>\n");
        }
        if !r.incidents.is_empty() {
            s.push_str("<h3>Sự cố 7 ngày qua <span lang=\"en\">/ Incidents, last 7 days</span></h3>\n<ul>\n");
            for (start, end, cause) in &r.incidents {
                let _ = writeln!(
                    s,
                    "<li>{} → {} ({} phút / min): {}</li>",
                    utc(*start),
                    utc(*end),
                    (end - start + 59) / 60,
                    public_cause(cause)
                );
            }
            s.push_str("</ul>\n");
        }
        s.push_str("</article>\n");
    }
    let _ = write!(
        s,
        "</main>\n<footer><p>Cập nhật lúc {u}. Dữ liệu dạng máy đọc: <a href=\"/status.json\">status.json</a>.</p><p lang=\"en\">Updated {u}. Machine-readable: <a href=\"/status.json\">status.json</a>.</p></footer>\n</body>\n</html>\n",
        u = utc(now)
    );
    s
}
