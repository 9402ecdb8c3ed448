//! The admin listener: a separate address (default `127.0.0.1:9900`) for operators and
//! monitoring. Today `/healthz` (the process answers) and `/readyz` (configuration loaded and
//! the first round of backend checks done). It reads gateway state and must never be reachable
//! through the citizen-facing listeners.

use crate::gateway::Gateway;
use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use std::sync::atomic::Ordering;
use std::sync::Arc;

pub struct AdminApp {
    pub gateway: Arc<Gateway>,
    /// Certificate renewal on request (`POST /acme/renew/NAME`, used by `cong certs renew`).
    pub acme: Option<Arc<crate::acme::Manager>>,
}

fn text(status: u16, body: &str) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header("Content-Type", "text/plain; charset=utf-8")
        .header("Cache-Control", "no-store")
        .header("Content-Length", body.len())
        .body(body.as_bytes().to_vec())
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        match session.req_header().uri.path() {
            "/healthz" => text(200, "ok\n"),
            "/readyz" => {
                if self.gateway.ready.load(Ordering::Acquire) {
                    let snap = self.gateway.snapshot();
                    text(200, &format!("ready tenants={}\n", snap.tenants.len()))
                } else {
                    text(503, "starting\n")
                }
            }
            p if p.starts_with("/acme/renew/") => {
                let name = p.trim_start_matches("/acme/renew/").to_string();
                match (
                    &self.acme,
                    session.req_header().method == http::Method::POST,
                ) {
                    (Some(m), true) => match m.renew_now(&name).await {
                        Ok(lines) => text(200, &(lines.join("\n") + "\n")),
                        Err(lines) => text(500, &(lines.join("\n") + "\n")),
                    },
                    (_, false) => text(405, "use POST\n"),
                    (None, _) => text(404, "ACME is not running\n"),
                }
            }
            _ => text(404, "not found\n"),
        }
    }
}
