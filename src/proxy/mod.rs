//! The request pipeline: the one `ProxyHttp` implementation, read top to bottom.
//!
//! early_request_filter: banned clients dropped (connection caps and header timeouts are
//! enforced around the service by `limits::conn`).
//! request_filter: identify (request id, real client address, country, TLS SNI) → ACME HTTP-01
//! answer → host → tenant → status page → legacy-name redirects → HTTPS (redirect, SNI/Host
//! check) → maintenance → access rules → rate limits → WAF (phase 1; phase 2 now, or in
//! request_body_filter once the body is read) → cache → path → pool → serve locally (static
//! origin) or continue to upstream_peer:
//! choose a backend → upstream_request_filter: forwarding headers → response → logging.
//! Failures map to honest 502/503/504 pages. Each step calls one module's entry point; the
//! feature modules do not call each other.

mod local;

use crate::access;
use crate::events::{self, Severity};
use crate::forwarded;
use crate::gateway::{Gateway, Snapshot};
use crate::limits;
use crate::maintenance;
use crate::metrics::{RequestSample, TenantStats};
use crate::routing::{normalize_request_host, HostKey};
use crate::soc;
use crate::upstream::{Endpoint, InflightGuard, Pool, PoolKind};
use async_trait::async_trait;
use http::header::{HeaderValue, HOST};
use pingora::cache::key::HashBinary;
use pingora::cache::{
    CacheKey, CacheMeta, ForcedFreshness, HitHandler, NoCacheReason, RespCacheable,
};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::ErrorSource;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

/// Per-request state, filled in as the request moves down the pipeline.
pub struct Ctx {
    started: Instant,
    snapshot: Option<Arc<Snapshot>>,
    pub request_id: String,
    pub client_ip: IpAddr,
    peer_ip: IpAddr,
    peer_trusted: bool,
    /// Host as the client sent it (for X-Forwarded-Host and logs).
    pub host: String,
    pub tenant: Option<u32>,
    pool: Option<Arc<Pool>>,
    strip_prefix: Option<usize>,
    tries: u32,
    tried: Vec<SocketAddr>,
    endpoint: Option<Arc<Endpoint>>,
    _inflight: Option<InflightGuard>,
    got_upstream_response: bool,
    /// Status of a response the gateway wrote itself.
    local_status: Option<u16>,
    /// When the current backend was chosen, and how long its response header took.
    upstream_started: Option<Instant>,
    upstream_ms: Option<u64>,
    /// The TLS connection this request came on (`None` on plain listeners).
    pub tls: Option<crate::tls::ConnTls>,
    /// Country of `client_ip` (`--` when unknown or without a GeoIP database).
    pub country: crate::geoip::Country,
    /// When the first request body bytes arrived, and how many so far.
    body_started: Option<Instant>,
    body_bytes: u64,
    /// Body limit of an access rule for a body sent without `Content-Length`.
    body_limit: Option<access::BodyLimit>,
    /// Page cache decisions for this request.
    cache: crate::cache::ReqState,
    /// The WAF transaction while phase 2 waits for the request body, and the body held back
    /// until it has been inspected.
    waf: crate::waf::Exclusive<Option<Box<crate::waf::Transaction>>>,
    waf_held: Vec<bytes::Bytes>,
    waf_held_bytes: usize,
    /// The body was read, counted and inspected in request_filter (see `prefetchable`).
    body_prefetched: bool,
    /// The WAF's verdict when it refused the request, its score and matched rules (for logs).
    waf_block: Option<crate::waf::Intervention>,
    waf_score: Option<i32>,
    waf_rules: Vec<u32>,
    /// What of the transaction's matches and verdict has been reported.
    waf_reported: crate::waf::Reported,
    /// The transaction after the request phases, for the response phases (tenants with
    /// `inspect_response`), and the page that replaces a response they refused.
    waf_resp: crate::waf::Exclusive<Option<Box<crate::waf::response::ResponseScan>>>,
    waf_resp_page: Option<bytes::Bytes>,
    waf_resp_refused: bool,
    /// The connection closes after this response (its page says so on HTTP/1).
    closing: bool,
}

impl Ctx {
    fn tenant_id(&self) -> &str {
        match (&self.snapshot, self.tenant) {
            (Some(s), Some(t)) => &s.tenants[t as usize].id,
            _ => "-",
        }
    }
}

/// The gateway's proxy: owns nothing but a handle to the shared state.
pub struct Proxy {
    pub gateway: Arc<Gateway>,
    pub certs: Arc<crate::tls::CertResolver>,
    pub challenges: Arc<crate::acme::Challenges>,
    /// Statistics of requests for hosts no tenant serves.
    pub unknown_stats: Arc<TenantStats>,
}

impl Proxy {
    pub fn new(
        gateway: Arc<Gateway>,
        certs: Arc<crate::tls::CertResolver>,
        challenges: Arc<crate::acme::Challenges>,
    ) -> Self {
        Proxy {
            gateway,
            certs,
            challenges,
            unknown_stats: crate::metrics::tenant_stats(crate::metrics::UNKNOWN_TENANT),
        }
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &str) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn req_path_and_query(req: &RequestHeader) -> String {
    req.uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into())
}

/// Host from `:authority` (HTTP/2) or `Host` (HTTP/1).
fn request_host(req: &RequestHeader) -> Option<&str> {
    if let Some(a) = req.uri.authority() {
        return Some(a.as_str());
    }
    req.headers.get(HOST).and_then(|v| v.to_str().ok())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            started: Instant::now(),
            snapshot: None,
            request_id: String::new(),
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            peer_trusted: false,
            host: String::new(),
            tenant: None,
            pool: None,
            strip_prefix: None,
            tries: 0,
            tried: Vec::new(),
            endpoint: None,
            _inflight: None,
            got_upstream_response: false,
            local_status: None,
            upstream_started: None,
            upstream_ms: None,
            tls: None,
            country: crate::geoip::Country::UNKNOWN,
            body_started: None,
            body_bytes: 0,
            body_limit: None,
            cache: Default::default(),
            waf: crate::waf::Exclusive::new(None),
            waf_held: Vec::new(),
            waf_held_bytes: 0,
            body_prefetched: false,
            waf_block: None,
            waf_score: None,
            waf_rules: Vec::new(),
            waf_reported: Default::default(),
            waf_resp: crate::waf::Exclusive::new(None),
            waf_resp_page: None,
            waf_resp_refused: false,
            closing: false,
        }
    }

    async fn early_request_filter(&self, session: &mut Session, _ctx: &mut Ctx) -> Result<()> {
        // 0. Banned clients are dropped before anything else is done for them.
        let snap = self.gateway.snapshot();
        let peer = session.client_addr().and_then(|a| a.as_inet()).copied();
        let peer_ip = peer
            .map(|a| a.ip().to_canonical())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let client = forwarded::client_ip(
            peer_ip,
            header_str(session.req_header(), "x-forwarded-for"),
            &snap.trusted,
        );
        let h2 = session.as_downstream().is_http2();
        if limits::early(&snap.limits, peer, client, h2).is_err() {
            return Err(Error::create(
                ConnectionClosed,
                ErrorSource::Downstream,
                Some("client is banned".into()),
                None,
            ));
        }
        session.set_read_timeout(Some(snap.limits.conn.body_read_timeout));
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // 1. Identify: which configuration, which request, which client.
        let snap = self.gateway.snapshot();
        let req = session.req_header();
        ctx.request_id = forwarded::request_id(header_str(req, "x-request-id"));
        ctx.peer_ip = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip().to_canonical())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        ctx.peer_trusted = snap.trusted.contains(ctx.peer_ip);
        ctx.client_ip = forwarded::client_ip(
            ctx.peer_ip,
            header_str(req, "x-forwarded-for"),
            &snap.trusted,
        );
        ctx.tls = crate::tls::conn_tls(session);
        ctx.country = snap.access.country(ctx.client_ip);

        // 2. ACME HTTP-01: answered for every name before anything can redirect or refuse it.
        let challenge = if req.uri.path().starts_with("/.well-known/acme-challenge/") {
            let path = req.uri.path().to_string();
            self.challenges.answer(&path).await
        } else {
            None
        };
        let req = session.req_header();
        if let Some(key_auth) = challenge {
            ctx.host = request_host(req).unwrap_or("").to_string();
            ctx.snapshot = Some(snap);
            return local::respond_text(session, ctx, 200, &[], &key_auth).await;
        }

        // 3. Route: host → tenant.
        let raw_host = request_host(req).unwrap_or("");
        ctx.host = raw_host.to_string();
        let tenant_idx = match normalize_request_host(raw_host) {
            Ok(key) => {
                if let HostKey::Name(n) = &key {
                    ctx.host = n.to_string();
                }
                snap.routes.lookup(&key)
            }
            Err(_) => {
                ctx.snapshot = Some(snap);
                return local::respond_page(session, ctx, 400).await;
            }
        };
        ctx.snapshot = Some(snap.clone());

        // 4. The public status page has its own host names.
        if tenant_idx.is_none() && snap.status_hosts.contains(&ctx.host) {
            return local::status_page(session, ctx, &self.gateway, &snap).await;
        }

        // 5. Legacy names: redirect before anything else looks at the tenant.
        if !snap.redirects.is_empty() {
            let pq = session
                .req_header()
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            if let Some((code, location)) = snap.redirects.lookup(&ctx.host, pq) {
                let scheme = if ctx.tls.is_some() { "https" } else { "http" };
                return local::redirect(session, ctx, code, &format!("{scheme}://{location}"))
                    .await;
            }
        }
        let Some(tenant_idx) = tenant_idx else {
            return local::respond_page(session, ctx, 404).await;
        };
        ctx.tenant = Some(tenant_idx);
        let tenant = &snap.tenants[tenant_idx as usize];

        // 6. HTTPS: redirect plain HTTP, refuse a Host that is not the SNI's tenant.
        let pq = req_path_and_query(session.req_header());
        match crate::tls::https_step(
            &snap,
            tenant_idx,
            ctx.tls.as_ref(),
            raw_host,
            &pq,
            &self.certs,
        ) {
            Some(crate::tls::HttpsAction::Redirect(loc)) => {
                return local::respond_text(session, ctx, 308, &[("Location", &loc)], "").await;
            }
            Some(crate::tls::HttpsAction::Misdirected) => {
                return local::respond_text(
                    session,
                    ctx,
                    421,
                    &[],
                    "421 Misdirected Request: this host is not served on this TLS connection\n",
                )
                .await;
            }
            None => {}
        }

        // 7. Planned maintenance.
        let api_windows = self.gateway.maintenance.all();
        if !tenant.maintenance.is_empty() || !api_windows.is_empty() {
            let now = maintenance::now_s();
            if let Some(w) = maintenance::active(&tenant.maintenance, &api_windows, &tenant.id, now)
            {
                let page = maintenance::page(w, &tenant.name, &ctx.request_id);
                // Cached copies may stand in for the portal (decided at the cache step).
                if tenant.cache.enabled && tenant.cache.serve_in_maintenance {
                    ctx.cache.maintenance = Some((page, w.retry_after(now)));
                } else {
                    return local::maintenance(session, ctx, page, w.retry_after(now)).await;
                }
            }
        }

        // 8. Operator access rules (global, then the tenant's), before anything else looks at
        // the request content.
        let norm_path = access::path::normalize(session.req_header().uri.path());
        match access::enforce(
            &snap.access,
            &tenant.access,
            &tenant.id,
            session.req_header(),
            ctx.client_ip,
            ctx.country,
            &norm_path,
        ) {
            Ok(limit) => ctx.body_limit = limit,
            Err(status) => return local::respond_page(session, ctx, status).await,
        }

        // 9. Rate limits (client key with IPv6 by prefix, per route, per tenant).
        if let Some(retry_after) = limits::enforce(
            &snap.limits,
            &tenant.limits,
            &tenant.id,
            ctx.client_ip,
            ctx.country,
            &norm_path,
        )
        .await
        {
            return local::too_many_requests(session, ctx, retry_after).await;
        }

        // 9b. WAF: phase 1 on the headers; phase 2 now for a request without a body, else in
        // request_body_filter once the body (up to the inspection limit) has arrived.
        if tenant.waf.enabled() {
            let req = session.req_header();
            let facts = crate::waf::RequestFacts {
                request_id: &ctx.request_id,
                method: req.method.as_str(),
                uri: req.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                protocol: match req.version {
                    http::Version::HTTP_10 => "HTTP/1.0",
                    http::Version::HTTP_2 => "HTTP/2.0",
                    _ => "HTTP/1.1",
                },
                headers: &req.headers,
                client: ctx.client_ip,
                client_port: session
                    .client_addr()
                    .and_then(|a| a.as_inet())
                    .map(|a| a.port())
                    .unwrap_or(0),
                server: session.server_addr().and_then(|a| a.as_inet()).copied(),
                norm_path: &norm_path,
            };
            if let Some(mut t) = tenant.waf.begin(&facts) {
                let body = crate::waf::has_body(&req.headers);
                // A body announced longer than what is inspected is refused before it comes
                // (`body_limit_action = "reject"`).
                let announced = req
                    .headers
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                if t.intervention.is_none()
                    && body
                    && !t.refuse_oversize(announced.unwrap_or(0))
                    && t.wants_body()
                {
                    if !prefetchable(req, announced, t.inspect_limit()) {
                        *ctx.waf.get_mut() = Some(Box::new(t));
                    } else {
                        // A small body with a known length is read here, before any backend
                        // sees the request: a refused one never reaches it and the client's
                        // connection stays open. Pingora's retry buffer holds the bytes and
                        // sends them on once the request goes upstream.
                        session.enable_retry_buffering();
                        loop {
                            let read = session.read_request_body().await;
                            let chunk = match read {
                                Ok(Some(chunk)) => chunk,
                                Ok(None) => break,
                                Err(e) => {
                                    // Client gone or too slow: logging inspects what came.
                                    *ctx.waf.get_mut() = Some(Box::new(t));
                                    return Err(e);
                                }
                            };
                            t.feed_body(&chunk);
                            if let Err(e) = count_body(ctx, chunk.len()) {
                                *ctx.waf.get_mut() = Some(Box::new(t));
                                return Err(e);
                            }
                        }
                        ctx.body_prefetched = true;
                        if !t.refuse_oversize(ctx.body_bytes) {
                            t.process_request_body();
                        }
                        if let Some(i) = self.waf_request_verdict(ctx, Box::new(t)) {
                            return waf_refuse(session, ctx, i).await;
                        }
                    }
                } else {
                    if t.intervention.is_none() {
                        t.process_request_body();
                    }
                    if let Some(i) = self.waf_request_verdict(ctx, Box::new(t)) {
                        return waf_refuse(session, ctx, i).await;
                    }
                }
            }
        }

        // 9c. Page cache: may this request be answered from / stored in the cache? (The
        // lookup runs in request_cache_filter; requests that must not use it go on as usual.)
        let maintenance_page = ctx.cache.maintenance.take();
        ctx.cache = crate::cache::ReqState::decide(
            &tenant.cache,
            &tenant.id,
            session.req_header(),
            if ctx.tls.is_some() { "https" } else { "http" },
            &ctx.host,
            &norm_path,
        );
        if let Some((page, retry_after)) = maintenance_page {
            if !ctx.cache.lookup() {
                return local::maintenance(session, ctx, page, retry_after).await;
            }
            ctx.cache.maintenance = Some((page, retry_after));
        }

        // 10. Route: path → pool.
        let (pool, strip) = tenant.pool_for(session.req_header().uri.path());
        ctx.pool = Some(pool.clone());
        ctx.strip_prefix = strip;

        // 11. Local origin, or on to a backend.
        if let PoolKind::Static(origin) = &pool.kind {
            let origin = origin.clone();
            return local::serve_static(session, ctx, &origin).await;
        }
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if ctx.body_prefetched {
            // Read, counted and inspected in request_filter; this is the retry buffer.
            return Ok(());
        }
        count_body(ctx, body.as_ref().map_or(0, |b| b.len()))?;
        // WAF phase 2: hold the body back (an empty chunk sends nothing upstream) until it is
        // complete or the inspection limit is reached, then inspect it and let it go on.
        if let Some(t) = ctx.waf.get_mut() {
            if let Some(b) = body.take() {
                t.feed_body(&b);
                ctx.waf_held_bytes += b.len();
                ctx.waf_held.push(b);
            }
            if !end_of_stream && ctx.waf_held_bytes <= t.inspect_limit() {
                *body = Some(bytes::Bytes::new());
                return Ok(());
            }
            let Some(mut t) = ctx.waf.get_mut().take() else {
                return Ok(());
            };
            if !t.refuse_oversize(ctx.waf_held_bytes as u64) {
                t.process_request_body();
            }
            if let Some(i) = self.waf_request_verdict(ctx, t) {
                let status = i.status;
                ctx.waf_block = Some(i);
                return Error::e_explain(HTTPStatus(status), "refused by the WAF");
            }
            let held = std::mem::take(&mut ctx.waf_held);
            *body = Some(if held.len() == 1 {
                held.into_iter().next().unwrap_or_default()
            } else {
                let mut all = bytes::BytesMut::with_capacity(ctx.waf_held_bytes);
                for b in held {
                    all.extend_from_slice(&b);
                }
                all.freeze()
            });
        }
        Ok(())
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<()> {
        crate::cache::enable(&mut session.cache, &ctx.cache);
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, ctx: &mut Ctx) -> Result<CacheKey> {
        Ok(crate::cache::cache_key(&ctx.cache, session.req_header()))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<RespCacheable> {
        match (&ctx.snapshot, ctx.tenant) {
            (Some(s), Some(t)) => Ok(crate::cache::response_cacheable(
                &s.tenants[t as usize].cache,
                session.req_header(),
                resp,
            )),
            _ => Ok(RespCacheable::Uncacheable(NoCacheReason::NeverEnabled)),
        }
    }

    fn cache_vary_filter(
        &self,
        meta: &CacheMeta,
        _ctx: &mut Ctx,
        req: &RequestHeader,
    ) -> Option<HashBinary> {
        crate::cache::variance(meta, req)
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        _meta: &CacheMeta,
        _hit_handler: &mut HitHandler,
        _is_fresh: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<ForcedFreshness>> {
        // In planned maintenance the origin is not asked: any cached copy stands in.
        Ok(ctx
            .cache
            .maintenance
            .is_some()
            .then_some(ForcedFreshness::ForceFresh))
    }

    async fn proxy_upstream_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        // Not in cache during planned maintenance: the maintenance page after all.
        if let Some((page, retry_after)) = ctx.cache.maintenance.take() {
            session.cache.disable(NoCacheReason::Custom("maintenance"));
            local::maintenance(session, ctx, page, retry_after).await?;
            return Ok(false);
        }
        Ok(true)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut Ctx,
        error: Option<&Error>,
    ) -> bool {
        crate::cache::should_serve_stale(error)
    }

    async fn upstream_peer(&self, session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        let Some(pool) = ctx.pool.clone() else {
            return Error::e_explain(HTTPStatus(500), "no pool chosen");
        };
        let Some(ep) = pool.select(Some(ctx.client_ip), &ctx.tried) else {
            // Nothing left to try: 503 when the pool had nothing up at all; otherwise the
            // failure of the last attempt (kept by pingora) decides the status.
            return Error::e_explain(
                HTTPStatus(503),
                format!("no available backend in pool {}", pool.label),
            );
        };
        ctx.tries += 1;
        ctx.tried.push(ep.addr);
        ctx._inflight = Some(InflightGuard::new(ep.clone()));
        ctx.endpoint = Some(ep.clone());
        ctx.upstream_started = Some(Instant::now());

        let s = &pool.settings;
        let sni = match &s.sni {
            Some(n) => n.clone(),
            None => ctx.host.split(':').next().unwrap_or("").to_string(),
        };
        let mut peer = HttpPeer::new(ep.addr, s.tls, sni);
        let o = &mut peer.options;
        o.connection_timeout = Some(s.connect_timeout);
        o.total_connection_timeout = Some(s.connect_timeout * 2);
        o.read_timeout = Some(s.read_timeout);
        o.write_timeout = Some(s.write_timeout);
        o.idle_timeout = Some(s.idle_timeout);
        o.verify_cert = s.tls_verify;
        o.verify_hostname = s.tls_verify;
        o.ca = s.ca.clone();
        let _ = session;
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        let proto = if ctx.tls.is_some() { "https" } else { "http" };
        let original_host = request_host(session.req_header()).unwrap_or("").to_string();
        let fwd = forwarded::forwarding(
            ctx.peer_ip,
            ctx.peer_trusted,
            header_str(session.req_header(), "x-forwarded-for"),
            header_str(session.req_header(), "forwarded"),
            &original_host,
            proto,
        );
        upstream.insert_header("X-Forwarded-For", fwd.x_forwarded_for)?;
        upstream.insert_header("Forwarded", fwd.forwarded)?;
        upstream.insert_header("X-Forwarded-Proto", proto)?;
        if let Ok(v) = HeaderValue::from_str(&original_host) {
            upstream.insert_header("X-Forwarded-Host", v)?;
        }
        upstream.insert_header("X-Real-IP", ctx.client_ip.to_string())?;
        upstream.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        if upstream.headers.get(HOST).is_none() && !original_host.is_empty() {
            upstream.insert_header(HOST, original_host.as_str())?;
        }
        if let Some(n) = ctx.strip_prefix {
            let pq = upstream
                .uri
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let rest = pq.get(n..).unwrap_or("");
            let new = if rest.is_empty() || rest.starts_with('?') {
                format!("/{rest}")
            } else {
                rest.to_string()
            };
            if let Ok(uri) = new.parse::<http::Uri>() {
                upstream.set_uri(uri);
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        _upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.got_upstream_response = true;
        ctx.upstream_ms = ctx.upstream_started.map(|t| t.elapsed().as_millis() as u64);
        if let Some(ep) = &ctx.endpoint {
            ep.record_success();
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // 12. WAF response phases: 3 on the status and headers; 4 holds the body back.
        if let Some(mut scan) = ctx.waf_resp.get_mut().take() {
            let head = session.req_header().method == http::Method::HEAD;
            let v = scan.headers(
                upstream.status.as_u16(),
                upstream.version,
                &upstream.headers,
                head,
            );
            let verdict = self.waf_verdict(ctx, scan.transaction());
            if let Some(i) = verdict.filter(|_| v.intervention.is_some()) {
                if i.drop {
                    return Error::e_explain(ConnectionClosed, "dropped by the WAF");
                }
                let no_body = head
                    || matches!(upstream.status.as_u16(), 204 | 304)
                    || upstream
                        .headers
                        .get(http::header::CONTENT_LENGTH)
                        .is_some_and(|v| v.as_bytes() == b"0");
                let (resp, page) = local::refusal(ctx, i.status, i.redirect.as_deref())?;
                *upstream = resp;
                ctx.local_status = Some(i.status);
                ctx.waf_resp_refused = true;
                if no_body {
                    upstream.insert_header("Content-Length", "0")?;
                } else {
                    ctx.waf_resp_page = Some(page);
                }
                session
                    .cache
                    .disable(NoCacheReason::Custom("refused by the WAF"));
                waf_finish(ctx, scan.into_transaction());
            } else if scan.holding() {
                *ctx.waf_resp.get_mut() = Some(scan);
            } else {
                waf_finish(ctx, scan.into_transaction());
            }
        }
        upstream.insert_header("X-Request-Id", ctx.request_id.as_str())?;
        crate::cache::status_headers(&mut ctx.cache, &session.cache, upstream);
        if ctx.tls.is_some() {
            if let (Some(s), Some(t)) = (&ctx.snapshot, ctx.tenant) {
                if let Some(v) = &s.tenants[t as usize].tls.hsts {
                    upstream.insert_header("Strict-Transport-Security", v.clone())?;
                }
            }
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        // A response the WAF refused in phase 3: its page instead of the backend's body.
        if ctx.waf_resp_refused {
            *body = ctx.waf_resp_page.take();
            return Ok(None);
        }
        // Phase 4: the body is held until inspected; refused, nothing of it goes out and,
        // its status being sent already, the connection ends.
        if let Some(mut scan) = ctx.waf_resp.get_mut().take() {
            if let Some(_i) = scan.body(body, end_of_stream) {
                let _ = self.waf_verdict(ctx, scan.transaction());
                *body = None;
                waf_finish(ctx, scan.into_transaction());
                return Error::e_explain(ConnectionClosed, "response body refused by the WAF");
            }
            if scan.holding() {
                *ctx.waf_resp.get_mut() = Some(scan);
            } else {
                let _ = self.waf_verdict(ctx, scan.transaction());
                waf_finish(ctx, scan.into_transaction());
            }
        }
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        // Nothing reached the backend, so any method may go to another one.
        if let (Some(ep), Some(pool)) = (&ctx.endpoint, &ctx.pool) {
            note_failure(pool, ep, &e);
            e.set_retry(ctx.tries <= pool.settings.retries);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("peer: {peer}"));
        let (Some(ep), Some(pool)) = (&ctx.endpoint, &ctx.pool) else {
            return e;
        };
        if matches!(
            e.etype(),
            ReadTimedout | WriteTimedout | ConnectionClosed | ReadError | WriteError
        ) && e.esource() == &ErrorSource::Upstream
        {
            note_failure(pool, ep, &e);
        }
        let idempotent = session.req_header().method.is_idempotent();
        let retry = idempotent
            && !ctx.got_upstream_response
            && !session.as_ref().retry_buffer_truncated()
            && ctx.tries <= pool.settings.retries;
        if retry {
            e.set_retry(true);
        } else if !idempotent || ctx.got_upstream_response {
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        let code = match e.etype() {
            HTTPStatus(c) => *c,
            ConnectTimedout | ReadTimedout | WriteTimedout => 504,
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    WriteError | ReadError | ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        // A 503 from selection after earlier attempts failed is really the earlier failure.
        let code = if code == 503 && ctx.tries > 0 {
            502
        } else {
            code
        };
        if code > 0 && !ctx.got_upstream_response {
            // The connection is not reused after a failure (a refused body may be half read).
            ctx.closing = true;
            let _ = local::respond_page(session, ctx, code).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        // A body the WAF waited for never came (client gone, or answered locally): inspect
        // what arrived, for the record.
        if let Some(mut t) = ctx.waf.get_mut().take() {
            t.process_request_body();
            let _ = self.waf_verdict(ctx, &t);
            waf_finish(ctx, t);
        }
        if let Some(scan) = ctx.waf_resp.get_mut().take() {
            let _ = self.waf_verdict(ctx, scan.transaction());
            waf_finish(ctx, scan.into_transaction());
        }
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            limits::conn::request_finished(*peer);
        }
        // Our own availability probes are not visits: keep them out of metrics and reports.
        if crate::availability::is_probe(header_str(
            session.req_header(),
            crate::availability::PROBE_HEADER,
        )) {
            return;
        }
        let status = ctx
            .local_status
            .or_else(|| session.response_written().map(|r| r.status.as_u16()))
            .unwrap_or(0);
        let stats = match (&ctx.snapshot, ctx.tenant) {
            (Some(s), Some(t)) => {
                let t = &s.tenants[t as usize];
                t.usage
                    .record(ctx.client_ip, session.body_bytes_sent() as u64);
                &t.stats
            }
            _ => &self.unknown_stats,
        };
        stats.record(&RequestSample {
            status,
            method: session.req_header().method.as_str(),
            seconds: ctx.started.elapsed().as_secs_f64(),
            bytes_in: session.as_downstream().body_bytes_read() as u64,
            bytes_out: session.body_bytes_sent() as u64,
            http2: session.as_downstream().is_http2(),
            ipv6: ctx.client_ip.is_ipv6(),
        });
        let waf_rules = std::mem::take(&mut ctx.waf_rules);
        soc::access(
            session,
            soc::AccessFacts {
                request_id: &ctx.request_id,
                tenant: ctx.tenant_id(),
                host: if ctx.host.is_empty() { "-" } else { &ctx.host },
                client_ip: ctx.client_ip,
                started: ctx.started,
                upstream: ctx.endpoint.as_ref().map(|e| e.addr),
                upstream_ms: ctx.upstream_ms,
                tries: ctx.tries,
                status,
                error: e.map(|e| e.etype().as_str()),
                sni: ctx.tls.as_ref().and_then(|t| t.sni.as_deref()),
                country: ctx.country.as_str(),
                waf_score: ctx.waf_score,
                waf_rules,
                stderr: ctx.snapshot.as_ref().is_none_or(|s| s.settings.access_log),
            },
        );
    }

    fn request_summary(&self, session: &Session, ctx: &Ctx) -> String {
        format!(
            "rid={} tenant={} {} {}",
            ctx.request_id,
            ctx.tenant_id(),
            session.req_header().method,
            session.req_header().uri
        )
    }
}

/// Ends a WAF transaction whose request (and response) phases are over: phase 5 (logging),
/// and the matches it logs. Nothing the transaction has not seen can change by the time the
/// request ends (a tenant that does not inspect responses gives it no response), so it runs
/// now rather than holding the transaction until then.
fn waf_finish(ctx: &mut Ctx, mut t: Box<crate::waf::Transaction>) {
    t.process_logging();
    waf_report(ctx, &t);
}

/// Reports what of a WAF transaction has not been reported yet (events, metrics).
fn waf_report(ctx: &mut Ctx, t: &crate::waf::Transaction) {
    let (Some(snap), Some(ti)) = (&ctx.snapshot, ctx.tenant) else {
        return;
    };
    let tenant = &snap.tenants[ti as usize];
    crate::waf::report(
        t,
        &crate::waf::Subject {
            tenant: &tenant.id,
            client_ip: ctx.client_ip,
            request_id: &ctx.request_id,
            paranoia: tenant.waf.paranoia,
        },
        &mut ctx.waf_reported,
    );
}

impl Proxy {
    /// Records a finished WAF transaction (events, metrics, score and rules for the access
    /// log, a ban strike when it refuses) and returns its intervention.
    fn waf_verdict(
        &self,
        ctx: &mut Ctx,
        t: &crate::waf::Transaction,
    ) -> Option<crate::waf::Intervention> {
        if ctx.snapshot.is_none() || ctx.tenant.is_none() {
            return None;
        }
        if !t.matches.is_empty() {
            ctx.waf_score = Some(crate::waf::anomaly_score(t));
            ctx.waf_rules = t.matches.iter().map(|m| m.id as u32).collect();
        }
        waf_report(ctx, t);
        let i = t.intervention.clone()?;
        let (Some(snap), Some(ti)) = (&ctx.snapshot, ctx.tenant) else {
            return None;
        };
        let tenant = &snap.tenants[ti as usize];
        // A response the rules refuse is the site's leak, not the client's offence.
        if t.phase_done() > 2 {
            return Some(i);
        }
        limits::bans::strike(
            &snap.limits.bans,
            snap.limits.key(ctx.client_ip),
            "waf",
            &tenant.id,
            ctx.country,
        );
        Some(i)
    }
}

impl Proxy {
    /// The verdict on a transaction whose request phases are over: a refusal ends it (phase 5
    /// included), a pass keeps it for the response phases. What it reports on the way goes
    /// out in one write: a refusal's matches, its verdict and phase 5's correlation event.
    fn waf_request_verdict(
        &self,
        ctx: &mut Ctx,
        t: Box<crate::waf::Transaction>,
    ) -> Option<crate::waf::Intervention> {
        crate::events::batch(|| match self.waf_verdict(ctx, &t) {
            Some(i) => {
                waf_finish(ctx, t);
                Some(i)
            }
            None => {
                keep_for_response(ctx, t);
                None
            }
        })
    }
}

/// Counts request body bytes against the access rule's body limit and the minimum body rate
/// (slow uploads hold a connection and a backend slot).
fn count_body(ctx: &mut Ctx, n: usize) -> Result<()> {
    let started = *ctx.body_started.get_or_insert_with(Instant::now);
    ctx.body_bytes += n as u64;
    if let Some(l) = &ctx.body_limit {
        if l.exceeded(ctx.body_bytes, ctx.tenant_id(), ctx.client_ip, ctx.country) {
            ctx.body_limit = None;
            return Error::e_explain(HTTPStatus(413), "request body over max_body_bytes");
        }
    }
    if let Some(s) = &ctx.snapshot {
        if limits::conn::body_too_slow(&s.limits.conn, started, ctx.body_bytes) {
            return Error::e_explain(HTTPStatus(408), "request body slower than min_body_rate");
        }
    }
    Ok(())
}

/// Whether the WAF reads a request's body before the request goes upstream: a length that is
/// announced, inspected whole and fits pingora's retry buffer, no chunked encoding, and no
/// `Expect: 100-continue` (that client waits for the backend's go-ahead).
fn prefetchable(req: &RequestHeader, announced: Option<u64>, inspect: usize) -> bool {
    const RETRY_BUFFER: u64 = 64 * 1024;
    announced.is_some_and(|n| n <= RETRY_BUFFER.min(inspect as u64))
        && !req.headers.contains_key(http::header::TRANSFER_ENCODING)
        && !req.headers.contains_key(http::header::EXPECT)
}

/// Keeps a transaction whose request phases passed for the response phases when the tenant
/// inspects responses, else ends it.
fn keep_for_response(ctx: &mut Ctx, t: Box<crate::waf::Transaction>) {
    let cfg = ctx
        .snapshot
        .as_ref()
        .zip(ctx.tenant)
        .and_then(|(s, ti)| s.tenants[ti as usize].waf.response().cloned());
    match cfg {
        Some(cfg) => {
            *ctx.waf_resp.get_mut() =
                Some(Box::new(crate::waf::response::ResponseScan::new(t, cfg)));
        }
        None => waf_finish(ctx, t),
    }
}

/// Answers a request the WAF refused: the bilingual page with the request id, a redirect, or
/// a dropped connection.
async fn waf_refuse(
    session: &mut Session,
    ctx: &mut Ctx,
    i: crate::waf::Intervention,
) -> Result<bool> {
    if i.drop {
        return Err(Error::create(
            ConnectionClosed,
            ErrorSource::Downstream,
            Some("dropped by the WAF".into()),
            None,
        ));
    }
    if let Some(loc) = &i.redirect {
        return local::redirect(session, ctx, i.status, loc).await;
    }
    local::respond_page(session, ctx, i.status).await
}

fn note_failure(pool: &Pool, ep: &Endpoint, e: &Error) {
    if ep.record_failure(pool.settings.max_fails, pool.settings.fail_timeout) {
        events::emit(
            pool.event("backend_down", Severity::Warning)
                .field("backend", &ep.backend)
                .field("addr", ep.addr)
                .field("cause", e.etype().as_str())
                .field("detection", "passive")
                .field("for_ms", pool.settings.fail_timeout.as_millis()),
        );
    }
}
