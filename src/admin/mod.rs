//! The admin listener: a separate address (default `127.0.0.1:9900`) for operators and
//! monitoring, never reachable through the citizen-facing listeners.
//!
//! `/healthz` and `/readyz` are open; everything else is the JSON API behind bearer tokens
//! (stored hashed in the configuration), with failed attempts audited and limited per address.
//! Every change made through it is an audit event. It reads gateway state and calls the owning
//! modules (`gateway::reload`, `maintenance`); it holds no state of its own beyond the failure
//! counters.

pub mod auth;

use crate::events::{emit, Event, Severity};
use crate::gateway::{Gateway, ReloadError};
use crate::maintenance::{self, Window};
use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    /// Certificate renewal on request (`POST /acme/renew/NAME`, used by `cong certs renew`).
    pub acme: Option<Arc<crate::acme::Manager>>,
    /// The certificates being served (for their expiry in `/metrics`).
    pub certs: Option<Arc<crate::tls::CertResolver>>,
    failures: auth::FailureLimiter,
}

impl AdminApp {
    pub fn new(
        gateway: Arc<Gateway>,
        acme: Option<Arc<crate::acme::Manager>>,
        certs: Option<Arc<crate::tls::CertResolver>>,
    ) -> Self {
        AdminApp {
            gateway,
            acme,
            certs,
            failures: auth::FailureLimiter::default(),
        }
    }
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        body.as_bytes().to_vec(),
    )
}

fn json_resp(status: u16, v: Value) -> Response<Vec<u8>> {
    let mut body = serde_json::to_vec_pretty(&v).unwrap_or_default();
    body.push(b'\n');
    respond(status, "application/json", body)
}

fn error(status: u16, msg: &str) -> Response<Vec<u8>> {
    json_resp(status, json!({ "error": msg }))
}

fn respond(status: u16, ctype: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", ctype)
        .header("Cache-Control", "no-store")
        .header("Content-Length", body.len())
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, Response<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                body.extend_from_slice(&chunk);
                if body.len() > MAX_BODY {
                    return Err(error(413, "request body too large"));
                }
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(error(400, &format!("cannot read body: {e}"))),
        }
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let method = session.req_header().method.clone();
        match path.as_str() {
            "/healthz" => return text(200, "ok\n"),
            "/metrics" => {
                refresh_gauges(&self.gateway);
                crate::metrics::refresh_log_pipeline();
                if let Some(c) = &self.certs {
                    let m = crate::metrics::get();
                    m.cert_not_after.reset();
                    for (name, l) in c.entries() {
                        m.cert_not_after
                            .with_label_values(&[name.as_str()])
                            .set(l.info.not_after);
                    }
                }
                return respond(
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::encode().into_bytes(),
                );
            }
            "/readyz" => {
                return if self.gateway.ready.load(Ordering::Acquire) {
                    let snap = self.gateway.snapshot();
                    text(200, &format!("ready tenants={}\n", snap.tenants.len()))
                } else {
                    text(503, "starting\n")
                };
            }
            _ => {}
        }
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical())
            .unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let snap = self.gateway.snapshot();
        if self.failures.is_limited(client, snap.max_auth_failures) {
            return error(429, "too many failed attempts; try again later");
        }
        let who = match auth::check(session, &snap.admin_tokens) {
            auth::Verdict::Allowed(name) => name,
            auth::Verdict::Disabled => {
                return error(
                    403,
                    "the admin API is disabled: add an [[admin.token]] to the configuration",
                )
            }
            auth::Verdict::Denied(reason) => {
                let limited = self.failures.record(client, snap.max_auth_failures);
                emit(
                    Event::new("admin_auth_failed", Severity::Warning)
                        .field("client_ip", client)
                        .field("path", &path)
                        .field("reason", reason)
                        .field("limited", limited),
                );
                return if limited {
                    let mut r = error(429, "too many failed attempts; try again later");
                    r.headers_mut()
                        .insert("Retry-After", http::HeaderValue::from_static("60"));
                    r
                } else {
                    let mut r = error(401, "a valid bearer token is required");
                    r.headers_mut().insert(
                        "WWW-Authenticate",
                        http::HeaderValue::from_static("Bearer realm=\"cong\""),
                    );
                    r
                };
            }
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let audit = |action: &str, target: &str, result: &str| {
            emit(
                Event::new("admin_action", Severity::Notice)
                    .field("actor", &who)
                    .field("client_ip", client)
                    .field("action", action)
                    .field("target", target)
                    .field("result", result),
            );
        };
        match (&method, segments.as_slice()) {
            (&Method::POST, ["reload"]) | (&Method::POST, ["api", "v1", "reload"]) => {
                let g = self.gateway.clone();
                let res = tokio::task::spawn_blocking(move || g.reload("admin_api")).await;
                match res {
                    Ok(Ok(o)) => {
                        audit("reload", "config", "ok");
                        json_resp(
                            200,
                            json!({
                                "ok": true,
                                "tenants": o.tenants,
                                "kept_pools": o.kept_pools,
                                "new_pools": o.new_pools,
                                "restart_needed": o.restart_needed,
                            }),
                        )
                    }
                    Ok(Err(ReloadError::InProgress)) => {
                        audit("reload", "config", "in_progress");
                        error(409, "a reload is already in progress")
                    }
                    Ok(Err(ReloadError::Config(e))) => {
                        audit("reload", "config", "invalid");
                        json_resp(422, json!({ "ok": false, "error": e }))
                    }
                    Err(e) => error(500, &e.to_string()),
                }
            }
            (&Method::POST, ["acme", "renew", name]) => match &self.acme {
                Some(m) => {
                    let res = m.renew_now(name).await;
                    audit(
                        "certificate_renew",
                        name,
                        if res.is_ok() { "ok" } else { "failed" },
                    );
                    match res {
                        Ok(lines) => text(200, &(lines.join("\n") + "\n")),
                        Err(lines) => text(500, &(lines.join("\n") + "\n")),
                    }
                }
                None => error(404, "ACME is not running"),
            },
            (&Method::GET, ["api", "v1", "tenants"]) => {
                let list: Vec<Value> = snap
                    .tenants
                    .iter()
                    .map(|t| tenant_json(&self.gateway, t, false))
                    .collect();
                json_resp(200, json!({ "tenants": list }))
            }
            (&Method::GET, ["api", "v1", "tenants", id]) => {
                match snap.tenants.iter().find(|t| t.id == *id) {
                    Some(t) => json_resp(200, tenant_json(&self.gateway, t, true)),
                    None => error(404, "no such tenant"),
                }
            }
            (&Method::GET, ["api", "v1", "maintenance"]) => {
                let now = maintenance::now_s();
                let mut all: Vec<Value> = Vec::new();
                for t in &snap.tenants {
                    all.extend(t.maintenance.iter().map(|w| window_json(w, now)));
                }
                all.extend(
                    self.gateway
                        .maintenance
                        .all()
                        .iter()
                        .map(|w| window_json(w, now)),
                );
                json_resp(200, json!({ "windows": all }))
            }
            (&Method::POST, ["api", "v1", "tenants", id, "maintenance"]) => {
                let Some(t) = snap.tenants.iter().find(|t| t.id == *id) else {
                    return error(404, "no such tenant");
                };
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let w: NewWindow = match serde_json::from_slice(&body) {
                    Ok(w) => w,
                    Err(e) => return error(400, &format!("invalid JSON: {e}")),
                };
                let window = Window {
                    id: String::new(),
                    tenant: t.id.clone(),
                    start: w.start,
                    end: w.end,
                    restore: w.restore,
                    message_vi: w.message_vi,
                    message_en: w.message_en,
                    source: "api".into(),
                    start_s: 0,
                    end_s: 0,
                };
                match self.gateway.maintenance.add(window) {
                    Ok(w) => {
                        audit("maintenance_add", &format!("{}/{}", t.id, w.id), "ok");
                        json_resp(201, window_json(&w, maintenance::now_s()))
                    }
                    Err(e) => error(400, &e),
                }
            }
            (&Method::DELETE, ["api", "v1", "tenants", id, "maintenance", wid]) => {
                match self.gateway.maintenance.remove(id, wid) {
                    Ok(true) => {
                        audit("maintenance_delete", &format!("{id}/{wid}"), "ok");
                        json_resp(200, json!({ "deleted": wid }))
                    }
                    Ok(false) => error(
                        404,
                        "no such window (windows from the configuration are changed there)",
                    ),
                    Err(e) => error(500, &e),
                }
            }
            (&Method::GET, ["api", "v1", "bans"]) => {
                json_resp(200, json!({ "bans": crate::limits::bans::list() }))
            }
            (&Method::DELETE, ["api", "v1", "bans", rest @ ..]) if !rest.is_empty() => {
                // An IPv6 key has a `/`: accept it raw or encoded as %2F.
                let raw = rest.join("/").replace("%2F", "/").replace("%2f", "/");
                let Some(key) = crate::limits::ClientKey::parse(&raw) else {
                    return error(400, "not an address or prefix");
                };
                if crate::limits::bans::lift(&key) {
                    audit("ban_lift", &key.to_string(), "ok");
                    json_resp(200, json!({ "lifted": key.to_string() }))
                } else {
                    error(404, "no active ban for this key")
                }
            }
            (&Method::POST, ["api", "v1", "cache", "purge"]) => {
                let body = match read_body(session).await {
                    Ok(b) => b,
                    Err(r) => return r,
                };
                let p: crate::cache::purge::Purge = match serde_json::from_slice(&body) {
                    Ok(p) => p,
                    Err(e) => return error(400, &format!("invalid purge: {e}")),
                };
                if !snap.tenants.iter().any(|t| t.id == p.tenant()) {
                    return error(404, "no such tenant");
                }
                if let crate::cache::purge::Purge::Url { url, .. } = &p {
                    if crate::cache::key_url_from(url).is_none() {
                        return error(400, "url must be scheme://host/path?query");
                    }
                }
                let n = tokio::task::spawn_blocking(move || {
                    let n = crate::cache::purge::purge(&p);
                    (p, n)
                })
                .await;
                match n {
                    Ok((p, n)) => {
                        audit(
                            "cache_purge",
                            &format!("{}/{}", p.tenant(), p.scope()),
                            "ok",
                        );
                        json_resp(200, json!({ "purged": n }))
                    }
                    Err(e) => error(500, &e.to_string()),
                }
            }
            _ => error(404, "no such endpoint (see docs/admin-api.json)"),
        }
    }
}

/// Sets the gauges that describe current state (backends in rotation, maintenance) from the
/// configuration in force, dropping series of backends and tenants that are gone.
fn refresh_gauges(g: &Gateway) {
    let m = crate::metrics::get();
    let snap = g.snapshot();
    m.backend_up.reset();
    m.pool_available.reset();
    m.maintenance_active.reset();
    m.bans_active.set(crate::limits::bans::active() as i64);
    let now = maintenance::now_s();
    let api = g.maintenance.all();
    for t in &snap.tenants {
        for (p, name) in t.pools.iter().zip(&t.pool_names) {
            if !matches!(p.kind, crate::upstream::PoolKind::Proxy) {
                continue;
            }
            let eps = p.endpoints();
            let mut up = 0;
            for e in eps.iter() {
                let v = i64::from(e.available());
                up += v;
                m.backend_up
                    .with_label_values(&[t.id.as_str(), name.as_str(), &e.addr.to_string()])
                    .set(v);
            }
            m.pool_available
                .with_label_values(&[t.id.as_str(), name.as_str()])
                .set(up);
        }
        if maintenance::active(&t.maintenance, &api, &t.id, now).is_some() {
            m.maintenance_active
                .with_label_values(&[t.id.as_str()])
                .set(1);
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewWindow {
    start: String,
    end: String,
    restore: Option<String>,
    message_vi: Option<String>,
    message_en: Option<String>,
}

fn window_json(w: &Window, now: i64) -> Value {
    json!({
        "id": w.id,
        "tenant": w.tenant,
        "start": w.start,
        "end": w.end,
        "restore": w.restore.as_deref().unwrap_or(&w.end),
        "message_vi": w.message_vi,
        "message_en": w.message_en,
        "source": w.source,
        "state": if w.active_at(now) { "active" } else if w.upcoming_at(now) { "upcoming" } else { "past" },
    })
}

fn tenant_json(g: &Gateway, t: &crate::gateway::Tenant, detail: bool) -> Value {
    let now = maintenance::now_s();
    let api = g.maintenance.all();
    let in_maintenance = maintenance::active(&t.maintenance, &api, &t.id, now).is_some();
    let pools: Vec<Value> = t
        .pools
        .iter()
        .zip(&t.pool_names)
        .map(|(p, name)| {
            let eps = p.endpoints();
            let up = eps.iter().filter(|e| e.available()).count();
            let mut v = json!({
                "name": name,
                "kind": match p.kind { crate::upstream::PoolKind::Proxy => "proxy", crate::upstream::PoolKind::Static(_) => "static" },
                "endpoints": eps.len(),
                "available": up,
            });
            if detail {
                v["backends"] = eps
                    .iter()
                    .map(|e| {
                        json!({
                            "backend": e.backend,
                            "address": e.addr.to_string(),
                            "healthy": e.is_healthy(),
                            "available": e.available(),
                            "in_flight": e.inflight(),
                        })
                    })
                    .collect();
            }
            v
        })
        .collect();
    json!({
        "id": t.id,
        "name": t.name,
        "hosts": t.hosts,
        "pools": pools,
        "maintenance": in_maintenance,
    })
}
