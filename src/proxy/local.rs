//! Responses the gateway writes itself: error pages and static-origin files.

use super::Ctx;
use crate::pages;
use crate::static_origin::StaticOrigin;
use bytes::Bytes;
use http::Method;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::proxy::Session;
use std::time::SystemTime;

/// Writes the tenant's (or the built-in) page for `status`; returns `Ok(true)` so the
/// pipeline stops here.
pub async fn respond_page(session: &mut Session, ctx: &mut Ctx, status: u16) -> Result<bool> {
    page_with_retry(session, ctx, status, None).await
}

/// The response that stands in for a backend response the WAF refused (its status line not
/// sent yet): the tenant's page for `status`, or a redirect to `location`.
pub fn refusal(ctx: &Ctx, status: u16, location: Option<&str>) -> Result<(ResponseHeader, Bytes)> {
    let body = match (location, &ctx.snapshot, ctx.tenant) {
        (Some(_), _, _) => Bytes::new(),
        (None, Some(s), Some(t)) => s.tenants[t as usize]
            .error_pages
            .render(status, &ctx.request_id),
        _ => Bytes::from(pages::builtin(status, &ctx.request_id)),
    };
    let mut resp = ResponseHeader::build(status, Some(5))?;
    match location {
        Some(loc) => resp.insert_header("Location", loc)?,
        None => resp.insert_header("Content-Type", "text/html; charset=utf-8")?,
    }
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    Ok((resp, body))
}

/// 429 with `Retry-After` and the bilingual page.
pub async fn too_many_requests(
    session: &mut Session,
    ctx: &mut Ctx,
    retry_after: u64,
) -> Result<bool> {
    page_with_retry(session, ctx, 429, Some(retry_after)).await
}

async fn page_with_retry(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    retry_after: Option<u64>,
) -> Result<bool> {
    let body = match (&ctx.snapshot, ctx.tenant) {
        (Some(s), Some(t)) => s.tenants[t as usize]
            .error_pages
            .render(status, &ctx.request_id),
        _ => Bytes::from(pages::builtin(status, &ctx.request_id)),
    };
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    match retry_after {
        Some(s) => resp.insert_header("Retry-After", s.to_string())?,
        None if status == 503 => resp.insert_header("Retry-After", "30")?,
        None => {}
    }
    hsts(ctx, &mut resp)?;
    if ctx.closing {
        // HTTP/1: `Connection: close` on this response; HTTP/2 ignores it.
        session.as_downstream_mut().set_keepalive(None);
    }
    ctx.local_status = Some(status);
    write(session, resp, body).await?;
    Ok(true)
}

/// The status page (`/`) or its JSON (`/status.json`).
pub async fn status_page(
    session: &mut Session,
    ctx: &mut Ctx,
    gateway: &crate::gateway::Gateway,
    snap: &crate::gateway::Snapshot,
) -> Result<bool> {
    let (ctype, body) = match session.req_header().uri.path() {
        "/" | "/index.html" => (
            "text/html; charset=utf-8",
            crate::status_page::html(gateway, snap),
        ),
        "/status.json" => (
            "application/json",
            serde_json::to_string_pretty(&crate::status_page::json(gateway, snap))
                .unwrap_or_default(),
        ),
        _ => return respond_page(session, ctx, 404).await,
    };
    let body = Bytes::from(body);
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header("Content-Type", ctype)?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "max-age=10")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    ctx.local_status = Some(200);
    write(session, resp, body).await?;
    Ok(true)
}

/// A redirect to `location` (absolute URL).
pub async fn redirect(
    session: &mut Session,
    ctx: &mut Ctx,
    code: u16,
    location: &str,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(code, Some(4))?;
    resp.insert_header("Location", location)?;
    resp.insert_header("Content-Length", "0")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    ctx.local_status = Some(code);
    session.write_response_header(Box::new(resp), true).await?;
    Ok(true)
}

/// The maintenance page with 503 and `Retry-After`.
pub async fn maintenance(
    session: &mut Session,
    ctx: &mut Ctx,
    page: String,
    retry_after: i64,
) -> Result<bool> {
    let body = Bytes::from(page);
    let mut resp = ResponseHeader::build(503, Some(6))?;
    resp.insert_header("Content-Type", "text/html; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("Retry-After", retry_after.to_string())?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    ctx.local_status = Some(503);
    write(session, resp, body).await?;
    Ok(true)
}

/// Writes a short plain response the gateway decides on its own (ACME token, redirect, 421).
pub async fn respond_text(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    headers: &[(&'static str, &str)],
    body: &str,
) -> Result<bool> {
    let mut resp = ResponseHeader::build(status, Some(4 + headers.len()))?;
    resp.insert_header("Content-Type", "text/plain; charset=utf-8")?;
    resp.insert_header("Content-Length", body.len().to_string())?;
    resp.insert_header("Cache-Control", "no-store")?;
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    for (k, v) in headers {
        resp.insert_header(*k, *v)?;
    }
    hsts(ctx, &mut resp)?;
    ctx.local_status = Some(status);
    write(session, resp, Bytes::from(body.to_string())).await?;
    Ok(true)
}

/// The tenant's `Strict-Transport-Security`, on HTTPS responses only.
fn hsts(ctx: &Ctx, resp: &mut ResponseHeader) -> Result<()> {
    if ctx.tls.is_some() {
        if let (Some(s), Some(t)) = (&ctx.snapshot, ctx.tenant) {
            if let Some(v) = &s.tenants[t as usize].tls.hsts {
                resp.insert_header("Strict-Transport-Security", v.clone())?;
            }
        }
    }
    Ok(())
}

async fn write(session: &mut Session, resp: ResponseHeader, body: Bytes) -> Result<()> {
    let head = session.req_header().method == Method::HEAD;
    session.write_response_header(Box::new(resp), head).await?;
    if !head {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

/// Serves a file of a static-origin pool.
pub async fn serve_static(
    session: &mut Session,
    ctx: &mut Ctx,
    origin: &StaticOrigin,
) -> Result<bool> {
    let method = session.req_header().method.clone();
    if method != Method::GET && method != Method::HEAD {
        let mut resp = ResponseHeader::build(405, Some(4))?;
        resp.insert_header("Allow", "GET, HEAD")?;
        resp.insert_header("Content-Length", "0")?;
        resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        ctx.local_status = Some(405);
        session.write_response_header(Box::new(resp), true).await?;
        return Ok(true);
    }
    let path = session.req_header().uri.path().to_string();
    let path = match ctx.strip_prefix {
        Some(n) => path.get(n..).unwrap_or("/").to_string(),
        None => path,
    };
    let Some(file) = origin.lookup(&path).await else {
        return respond_page(session, ctx, 404).await;
    };
    let last_modified = file.last_modified.map(httpdate);
    if let (Some(lm), Some(ims)) = (
        &last_modified,
        session
            .req_header()
            .headers
            .get("if-modified-since")
            .and_then(|v| v.to_str().ok()),
    ) {
        if lm == ims {
            let mut resp = ResponseHeader::build(304, Some(3))?;
            resp.insert_header("Last-Modified", lm.as_str())?;
            resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
            ctx.local_status = Some(304);
            session.write_response_header(Box::new(resp), true).await?;
            return Ok(true);
        }
    }
    let mut resp = ResponseHeader::build(200, Some(5))?;
    resp.insert_header("Content-Type", file.content_type)?;
    resp.insert_header("Content-Length", file.body.len().to_string())?;
    if let Some(lm) = last_modified {
        resp.insert_header("Last-Modified", lm)?;
    }
    resp.insert_header("X-Request-Id", ctx.request_id.as_str())?;
    hsts(ctx, &mut resp)?;
    ctx.local_status = Some(200);
    write(session, resp, file.body).await?;
    Ok(true)
}

/// IMF-fixdate (RFC 9110) without pulling in a date crate.
fn httpdate(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86400;
    let rem = secs % 86400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let (y, mo, d) = crate::calendar::civil_from_days(days as i64);
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{weekday}, {d:02} {month} {y} {h:02}:{m:02}:{s:02} GMT")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn http_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(784111777);
        assert_eq!(httpdate(t), "Sun, 06 Nov 1994 08:49:37 GMT");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(httpdate(t), "Wed, 18 Nov 2026 11:06:40 GMT");
    }
}
