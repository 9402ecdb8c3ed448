//! `cong report availability --month YYYY-MM`: per tenant uptime, incidents, requests,
//! estimated unique visitors, bandwidth, IPv6 share and TLS status for one month, as CSV, HTML
//! or JSON — the figures the annual report forms ask for. Reads the availability history and
//! usage files in `server.state_dir`; writes nothing.

use crate::availability::History;
use crate::gateway::Snapshot;
use crate::maintenance::days_from_civil;
use crate::pages::html_escape;
use crate::usage;
use serde::Serialize;
use std::path::Path;

#[derive(Debug, Clone, Serialize)]
pub struct TenantMonth {
    pub tenant: String,
    pub name: String,
    pub hosts: String,
    pub uptime_percent: Option<f64>,
    pub downtime_minutes: i64,
    pub maintenance_minutes: i64,
    pub unmonitored_minutes: i64,
    pub incidents: usize,
    pub requests: u64,
    pub unique_visitors_estimate: u64,
    pub bytes_sent: u64,
    pub ipv6_share_percent: Option<f64>,
    pub tls: String,
}

/// `YYYY-MM` → [start, end) in seconds since the epoch.
pub fn month_range(month: &str) -> Result<(i64, i64), String> {
    let bad = || format!("`{month}` is not a month like 2026-11");
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let y: i64 = y.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || month.len() != 7 {
        return Err(bad());
    }
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    Ok((
        days_from_civil(y, m, 1) * 86_400,
        days_from_civil(ny, nm, 1) * 86_400,
    ))
}

pub fn build(
    snap: &Snapshot,
    state_dir: &Path,
    month: &str,
    now: i64,
) -> Result<Vec<TenantMonth>, String> {
    let (start, end) = month_range(month)?;
    let end = end.min(now);
    let history = History::load(Some(state_dir));
    let usage = usage::load_month(state_dir, month);
    let excl = snap.settings.availability.exclude_maintenance;
    Ok(snap
        .tenants
        .iter()
        .map(|t| {
            let u = history.uptime(&t.id, start * 1000, end * 1000);
            let inc = history.incidents(&t.id, start * 1000, end * 1000);
            let us = usage.get(&t.id).cloned().unwrap_or_default();
            TenantMonth {
                tenant: t.id.clone(),
                name: t.name.clone(),
                hosts: t.hosts.join(" "),
                uptime_percent: u.percent(excl).map(|p| (p * 1000.0).round() / 1000.0),
                downtime_minutes: u.down_ms / 60_000,
                maintenance_minutes: u.maintenance_ms / 60_000,
                unmonitored_minutes: u.unknown_ms / 60_000,
                incidents: inc.len(),
                requests: us.requests,
                unique_visitors_estimate: us.unique_visitors(),
                bytes_sent: us.bytes_out,
                ipv6_share_percent: us.ipv6_share().map(|s| (s * 1000.0).round() / 10.0),
                tls: "http".into(),
            }
        })
        .collect())
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x}")).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub fn csv(rows: &[TenantMonth]) -> String {
    let mut out = String::from("tenant,name,hosts,uptime_percent,downtime_minutes,maintenance_minutes,unmonitored_minutes,incidents,requests,unique_visitors_estimate,bytes_sent,ipv6_share_percent,tls\n");
    for r in rows {
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            csv_field(&r.tenant),
            csv_field(&r.name),
            csv_field(&r.hosts),
            opt(r.uptime_percent),
            r.downtime_minutes,
            r.maintenance_minutes,
            r.unmonitored_minutes,
            r.incidents,
            r.requests,
            r.unique_visitors_estimate,
            r.bytes_sent,
            opt(r.ipv6_share_percent),
            r.tls
        ));
    }
    out
}

pub fn html(month: &str, rows: &[TenantMonth]) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"vi\">\n<head>\n<meta charset=\"utf-8\">\n<title>Báo cáo hoạt động tháng {m} / Availability report {m}</title>\n<style>body{{font-family:system-ui,Arial,sans-serif;color:#1a1a1a}}table{{border-collapse:collapse}}th,td{{border:1px solid #767676;padding:.3rem .5rem;text-align:left}}td.n{{text-align:right}}</style>\n</head>\n<body>\n<h1>Báo cáo hoạt động tháng {m} <span lang=\"en\">/ Availability report {m}</span></h1>\n<table>\n<caption>Thời gian hoạt động, sự cố và lượt truy cập theo từng cổng <span lang=\"en\">/ Uptime, incidents and visits per portal</span></caption>\n<thead><tr><th scope=\"col\">Cổng / Portal</th><th scope=\"col\">Tên miền / Domains</th><th scope=\"col\">Hoạt động / Uptime %</th><th scope=\"col\">Gián đoạn (phút) / Downtime (min)</th><th scope=\"col\">Sự cố / Incidents</th><th scope=\"col\">Lượt truy cập / Requests</th><th scope=\"col\">Người truy cập (ước tính) / Visitors (est.)</th><th scope=\"col\">Dữ liệu gửi / Bytes sent</th><th scope=\"col\">IPv6 %</th></tr></thead>\n<tbody>\n",
        m = html_escape(month)
    );
    for r in rows {
        out.push_str(&format!(
            "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>\n",
            html_escape(&r.name),
            html_escape(&r.hosts),
            opt(r.uptime_percent),
            r.downtime_minutes,
            r.incidents,
            r.requests,
            r.unique_visitors_estimate,
            r.bytes_sent,
            opt(r.ipv6_share_percent)
        ));
    }
    out.push_str("</tbody>\n</table>\n</body>\n</html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months() {
        assert_eq!(month_range("2026-11"), Ok((1_793_491_200, 1_796_083_200)));
        assert_eq!(month_range("2026-12").unwrap().1, 1_798_761_600);
        assert!(month_range("2026-13").is_err());
        assert!(month_range("nov").is_err());
    }
}
