//! The page cache against the real binary and a real origin on loopback whose answers the
//! tests control (headers, bodies, failures): safety for logged-in users, request
//! coalescing, stale-if-error with the origin down, the memory bound, the disk tier across a
//! restart and with truncated files, HTTP semantics, purge and maintenance.

mod common;

use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const TOKEN: &str = "cache-test-token-0123456789";

/// One answer of the origin.
#[derive(Clone, Default)]
struct Page {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Delay before answering (lets simultaneous requests overlap).
    delay_ms: u64,
    /// Answer with this body instead when the request carries this cookie name.
    personal: Option<(String, Vec<u8>)>,
}

fn page(cc: &str, body: &str) -> Page {
    Page {
        status: 200,
        headers: vec![
            ("Cache-Control".into(), cc.into()),
            ("Content-Type".into(), "text/html; charset=utf-8".into()),
        ],
        body: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[derive(Default)]
struct OriginState {
    pages: Mutex<HashMap<String, Page>>,
    hits: Mutex<HashMap<String, u64>>,
    total: AtomicU64,
}

/// An HTTP/1.1 origin (keep-alive) answering what the test set per path (`/blob/N` answers
/// N KB with max-age=300); an `If-None-Match` equal to the page's ETag gets a 304.
struct Origin {
    addr: SocketAddr,
    st: Arc<OriginState>,
    rt: Option<tokio::runtime::Runtime>,
}

impl Origin {
    fn start() -> Origin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let st = Arc::new(OriginState::default());
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let st2 = st.clone();
        rt.spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    continue;
                };
                let st = st2.clone();
                tokio::spawn(async move {
                    let _ = serve(sock, st).await;
                });
            }
        });
        Origin {
            addr,
            st,
            rt: Some(rt),
        }
    }

    fn set(&self, path: &str, p: Page) {
        self.st.pages.lock().unwrap().insert(path.into(), p);
    }

    fn hits(&self, path: &str) -> u64 {
        *self.st.hits.lock().unwrap().get(path).unwrap_or(&0)
    }

    /// Stops listening and drops every connection: the origin is down.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve(sock: tokio::net::TcpStream, st: Arc<OriginState>) -> std::io::Result<()> {
    let mut r = BufReader::new(sock);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
        let head = line.starts_with("HEAD ");
        let mut headers: HashMap<String, String> = HashMap::new();
        loop {
            let mut h = String::new();
            r.read_line(&mut h).await?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        st.total.fetch_add(1, Ordering::SeqCst);
        *st.hits.lock().unwrap().entry(path.clone()).or_insert(0) += 1;
        let p = st.pages.lock().unwrap().get(&path).cloned();
        let p = match p {
            Some(p) => p,
            None => match path.strip_prefix("/blob/") {
                Some(n) => {
                    let kb: usize = n
                        .split(['-', '?'])
                        .next()
                        .unwrap_or("1")
                        .parse()
                        .unwrap_or(1);
                    Page {
                        status: 200,
                        headers: vec![("Cache-Control".into(), "max-age=300".into())],
                        body: vec![b'x'; kb * 1024],
                        ..Default::default()
                    }
                }
                None => Page {
                    status: 404,
                    body: b"not found".to_vec(),
                    ..Default::default()
                },
            },
        };
        if p.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
        }
        let mut body = p.body.clone();
        if let Some((cookie, alt)) = &p.personal {
            if headers
                .get("cookie")
                .is_some_and(|c| c.contains(&format!("{cookie}=")))
            {
                body = alt.clone();
            }
        }
        let etag = p
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
            .map(|(_, v)| v.clone());
        let not_modified = etag.is_some() && headers.get("if-none-match") == etag.as_ref();
        let status = if not_modified { 304 } else { p.status };
        let mut out = format!("HTTP/1.1 {status} X\r\n");
        for (k, v) in &p.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        if not_modified {
            out.push_str("\r\n");
            r.get_mut().write_all(out.as_bytes()).await?;
            continue;
        }
        out.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        r.get_mut().write_all(out.as_bytes()).await?;
        if !head {
            r.get_mut().write_all(&body).await?;
        }
    }
}

fn main_config(listen: SocketAddr, admin: SocketAddr, cache: &str) -> String {
    format!(
        "{}[[admin.token]]\nname = \"ops\"\nsha256 = \"{}\"\n\n[connections]\nmax_per_client = 0\n\n[cache]\n{cache}\n",
        base_config(listen, admin, ""),
        sha256_hex(TOKEN)
    )
}

fn cached_tenant(origin: SocketAddr, cache: &str) -> String {
    format!(
        "{}\n[cache]\nenabled = true\nsession_cookies = [\"cms_login\"]\nbypass_paths = [\"/quantri/**\"]\n{cache}\n",
        tenant("portal", &["portal.test"], &[origin], "")
    )
}

fn start(origin: &Origin, main_cache: &str, tenant_cache: &str) -> Gateway {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    Gateway::start(
        &main_config(listen, admin, main_cache),
        &[("portal.toml", &cached_tenant(origin.addr, tenant_cache))],
        listen,
        admin,
    )
}

fn req(g: &Gateway, path: &str, headers: &[(&str, &str)]) -> Response {
    request(g.listen, "GET", Some("portal.test"), path, headers, "").expect("request")
}

fn metric(g: &Gateway, name_and_labels: &str) -> f64 {
    let m = request(g.admin, "GET", Some("admin"), "/metrics", &[], "").expect("metrics");
    m.body
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn editor_page_is_never_served_to_a_citizen() {
    let origin = Origin::start();
    // A careless CMS: the personal page is marked publicly cacheable.
    let mut home = page("public, max-age=300", "Trang chủ công khai");
    home.personal = Some((
        "cms_login".into(),
        "Xin chào biên tập viên Nguyễn Văn A — bản nháp chưa duyệt"
            .as_bytes()
            .to_vec(),
    ));
    origin.set("/", home);
    let mut login = page("public, max-age=300", "phiên đăng nhập của biên tập viên");
    login
        .headers
        .push(("Set-Cookie".into(), "cms_login=secret; HttpOnly".into()));
    origin.set("/dang-nhap", login);
    origin.set("/quantri/bai-viet", page("public, max-age=300", "quản trị"));
    let g = start(&origin, "", "");

    let editor = [("Cookie", "_ga=1; cms_login=abc123")];
    // The editor first: nothing personal may be stored.
    let e = req(&g, "/", &editor);
    assert!(e.body.contains("biên tập viên"), "{e:?}");
    assert_eq!(e.header("x-cache"), Some("BYPASS"));
    let c = req(&g, "/", &[]);
    assert_eq!(c.body, "Trang chủ công khai");
    assert_eq!(c.header("x-cache"), Some("MISS"));
    let c = req(&g, "/", &[("Cookie", "_ga=2")]);
    assert_eq!(c.body, "Trang chủ công khai");
    assert_eq!(c.header("x-cache"), Some("HIT"));
    // With a citizen's copy in cache, the editor still gets the personal page from the origin.
    let e = req(&g, "/", &editor);
    assert!(e.body.contains("biên tập viên"), "{e:?}");
    let e = req(&g, "/", &[("Authorization", "Basic ZWRpdG9yOng=")]);
    assert_eq!(e.header("x-cache"), Some("BYPASS"));
    assert_eq!(req(&g, "/", &[]).body, "Trang chủ công khai");

    // A response setting a cookie is never stored.
    for _ in 0..3 {
        let r = req(&g, "/dang-nhap", &[]);
        assert_ne!(r.header("x-cache"), Some("HIT"));
    }
    assert_eq!(origin.hits("/dang-nhap"), 3);
    // Path rule: the admin area is never cached.
    for _ in 0..2 {
        req(&g, "/quantri/bai-viet", &[]);
    }
    assert_eq!(origin.hits("/quantri/bai-viet"), 2);
    // Other methods go to the origin.
    let p = request(g.listen, "POST", Some("portal.test"), "/", &[], "a=1").unwrap();
    assert_eq!(p.header("x-cache"), Some("BYPASS"));
}

fn raise_fd_limit() {
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 {
            l.rlim_cur = l.rlim_max.min(65_536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

#[test]
fn thousand_simultaneous_misses_make_one_origin_request() {
    raise_fd_limit();
    let origin = Origin::start();
    let mut hot = page("max-age=300", "Kết quả thi tốt nghiệp THPT");
    hot.delay_ms = 500;
    origin.set("/ket-qua-thi", hot);
    let g = start(&origin, "lock_timeout = \"60s\"", "");
    let addr = g.listen;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bodies: Vec<String> = rt.block_on(async move {
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                tokio::spawn(async move {
                    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
                    s.write_all(
                        b"GET /ket-qua-thi HTTP/1.1\r\nHost: portal.test\r\nConnection: close\r\n\r\n",
                    )
                    .await
                    .expect("send");
                    let mut out = Vec::new();
                    s.read_to_end(&mut out).await.expect("read");
                    String::from_utf8_lossy(&out).into_owned()
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.push(t.await.expect("task"));
        }
        all
    });
    for b in &bodies {
        assert!(b.starts_with("HTTP/1.1 200"), "{b}");
        assert!(b.ends_with("Kết quả thi tốt nghiệp THPT"), "{b}");
    }
    assert_eq!(origin.hits("/ket-qua-thi"), 1);
}

#[test]
fn stale_copy_served_when_origin_fails_or_is_down() {
    let mut origin = Origin::start();
    // Always stale (revalidated on every request), with a validator.
    let mut p = page("max-age=0", "Cảnh báo bão số 3");
    p.headers.push(("ETag".into(), "\"v1\"".into()));
    origin.set("/canh-bao-bao", p);
    let g = start(&origin, "", "stale_if_error = \"24h\"");

    assert_eq!(
        req(&g, "/canh-bao-bao", &[]).header("x-cache"),
        Some("MISS")
    );
    // The origin answers 304 to the revalidation: served from cache.
    let r = req(&g, "/canh-bao-bao", &[]);
    assert_eq!(r.body, "Cảnh báo bão số 3");
    assert_eq!(r.header("x-cache"), Some("REVALIDATED"));
    assert_eq!(origin.hits("/canh-bao-bao"), 2);

    // The origin breaks (500): the stale copy, with an Age.
    origin.set(
        "/canh-bao-bao",
        Page {
            status: 500,
            body: b"Internal Server Error".to_vec(),
            ..Default::default()
        },
    );
    let r = req(&g, "/canh-bao-bao", &[]);
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "Cảnh báo bão số 3"),
        "{r:?}"
    );
    assert_eq!(r.header("x-cache"), Some("STALE"));
    assert!(r.header("age").is_some(), "{r:?}");

    // The origin is gone altogether: still the stale copy, again and again.
    origin.kill();
    for _ in 0..3 {
        let r = req(&g, "/canh-bao-bao", &[]);
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "Cảnh báo bão số 3"),
            "{r:?}"
        );
        assert_eq!(r.header("x-cache"), Some("STALE"));
    }
    // A page never cached gets the honest error page.
    let r = req(&g, "/chua-co", &[]);
    assert!(r.status >= 502, "{r:?}");
}

#[test]
fn memory_tier_stays_within_its_bound_under_ten_times_its_size() {
    let origin = Origin::start();
    let g = start(
        &origin,
        "memory_size = \"1MB\"\nmemory_max_object_size = \"64KB\"",
        "",
    );
    let bound = 1024.0 * 1024.0;
    // 10 MB of distinct 20 KB objects, some read again (so admission has a choice).
    for i in 0..512 {
        let r = req(&g, &format!("/blob/20-{i}"), &[]);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 20 * 1024);
        if i % 3 == 0 {
            req(&g, &format!("/blob/20-{}", i / 2), &[]);
        }
        if i % 32 == 0 {
            let used = metric(&g, "cong_cache_tier_bytes{tier=\"memory\"}");
            assert!(
                used <= bound,
                "memory tier at {used} bytes after {i} objects"
            );
        }
    }
    let used = metric(&g, "cong_cache_tier_bytes{tier=\"memory\"}");
    assert!(used > 0.0 && used <= bound, "memory tier at {used}");
    assert!(metric(&g, "cong_cache_evictions_total{tier=\"memory\"}") > 0.0);
    let per_tenant = metric(&g, "cong_cache_bytes{tenant=\"portal\",tier=\"memory\"}");
    assert!(per_tenant > 0.0 && per_tenant <= bound);
}

#[test]
fn disk_tier_survives_restart_and_truncated_files_are_misses() {
    let origin = Origin::start();
    let disk = tempfile::tempdir().unwrap();
    let tiers = format!(
        "memory_max_object_size = \"64KB\"\ndisk_dir = \"{}\"\ndisk_size = \"64MB\"",
        disk.path().display()
    );
    let doc = "/blob/300-van-ban.pdf";
    let mut g = start(&origin, &tiers, "");
    assert_eq!(req(&g, doc, &[]).header("x-cache"), Some("MISS"));
    let r = req(&g, doc, &[]);
    assert_eq!(
        (r.header("x-cache"), r.body.len()),
        (Some("HIT"), 300 * 1024)
    );
    // Range from the disk tier (the object is too large for memory).
    let r = req(&g, doc, &[("Range", "bytes=100-199")]);
    assert_eq!((r.status, r.body.len()), (206, 100));
    assert_eq!(req(&g, "/blob/30-a", &[]).header("x-cache"), Some("MISS"));
    assert_eq!(req(&g, "/blob/30-b", &[]).header("x-cache"), Some("MISS"));
    g.signal(libc::SIGTERM);
    assert!(g.wait_exit(Duration::from_secs(20)).is_some());

    // Truncate the body of /blob/30-a (30 KB bodies; the other 30 KB one is kept).
    let mut bodies: Vec<_> = walk(disk.path())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "b"))
        .filter(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) == 30 * 1024)
        .collect();
    assert_eq!(bodies.len(), 2);
    bodies.sort();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&bodies[0])
        .unwrap();
    f.set_len(1000).unwrap();

    let g = start(&origin, &tiers, "");
    let before = origin.hits(doc);
    let r = req(&g, doc, &[]);
    assert_eq!(
        (r.header("x-cache"), r.body.len()),
        (Some("HIT"), 300 * 1024)
    );
    assert_eq!(
        origin.hits(doc),
        before,
        "served from disk after the restart"
    );
    // Exactly one of the two small objects was truncated: it is a miss, never a short body.
    let mut misses = 0;
    for p in ["/blob/30-a", "/blob/30-b"] {
        let r = req(&g, p, &[]);
        assert_eq!(r.body.len(), 30 * 1024);
        if r.header("x-cache") == Some("MISS") {
            misses += 1;
        }
    }
    assert_eq!(misses, 1);
    assert!(
        metric(
            &g,
            "cong_events_total{kind=\"cache_object_corrupt\",severity=\"warning\"}"
        ) >= 1.0
    );

    // A file truncated while running is caught at lookup too.
    let r = req(&g, "/blob/100-c", &[]);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let big: Vec<_> = walk(disk.path())
        .into_iter()
        .filter(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0) == 100 * 1024)
        .collect();
    assert_eq!(big.len(), 1);
    std::fs::OpenOptions::new()
        .write(true)
        .open(&big[0])
        .unwrap()
        .set_len(10)
        .unwrap();
    // 100 KB is over the memory object limit: it lives on disk only, and is now a miss.
    let r = req(&g, "/blob/100-c", &[]);
    assert_eq!(
        (r.header("x-cache"), r.body.len()),
        (Some("MISS"), 100 * 1024)
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn http_semantics_conditional_head_vary_and_status_headers() {
    let origin = Origin::start();
    let mut p = page("max-age=300", "Thông báo");
    p.headers.push(("ETag".into(), "\"abc\"".into()));
    p.headers.push(("Vary".into(), "Accept-Encoding".into()));
    origin.set("/thong-bao", p);
    origin.set("/no-store", page("no-store", "riêng"));
    origin.set("/smax", page("s-maxage=300, max-age=0", "chia sẻ"));
    let g = start(&origin, "", "");
    assert_eq!(req(&g, "/thong-bao", &[]).header("x-cache"), Some("MISS"));
    let r = req(&g, "/thong-bao", &[]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert!(r.header("cache-status").is_some_and(|v| v.contains("hit")));
    assert!(r.header("age").is_some());
    // Conditional request answered by the cache.
    let r = req(&g, "/thong-bao", &[("If-None-Match", "\"abc\"")]);
    assert_eq!(r.status, 304);
    // HEAD from cache.
    let r = request(g.listen, "HEAD", Some("portal.test"), "/thong-bao", &[], "").unwrap();
    assert_eq!((r.status, r.header("x-cache")), (200, Some("HIT")));
    // Another Accept-Encoding is another variant.
    let r = req(&g, "/thong-bao", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("x-cache"), Some("MISS"));
    let r = req(&g, "/thong-bao", &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("x-cache"), Some("HIT"));
    assert_eq!(origin.hits("/thong-bao"), 2);
    // Query order does not matter.
    req(&g, "/blob/1?b=2&a=1", &[]);
    assert_eq!(
        req(&g, "/blob/1?a=1&b=2", &[]).header("x-cache"),
        Some("HIT")
    );
    // no-store is not stored; s-maxage counts for a shared cache.
    req(&g, "/no-store", &[]);
    req(&g, "/no-store", &[]);
    assert_eq!(origin.hits("/no-store"), 2);
    req(&g, "/smax", &[]);
    assert_eq!(req(&g, "/smax", &[]).header("x-cache"), Some("HIT"));
    assert!(
        metric(
            &g,
            "cong_cache_requests_total{status=\"hit\",tenant=\"portal\"}"
        ) >= 3.0
    );
}

fn purge(g: &Gateway, body: &str) -> Response {
    request(
        g.admin,
        "POST",
        Some("admin"),
        "/api/v1/cache/purge",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .unwrap()
}

#[test]
fn purge_by_url_prefix_and_tenant_through_api_and_cli() {
    let origin = Origin::start();
    let g = start(&origin, "", "");
    for p in ["/blob/1-tin-tuc-a", "/blob/1-tin-tuc-b", "/blob/1-van-ban"] {
        req(&g, p, &[]);
        assert_eq!(req(&g, p, &[]).header("x-cache"), Some("HIT"));
    }
    // Unauthenticated purges are refused.
    let r = request(
        g.admin,
        "POST",
        Some("admin"),
        "/api/v1/cache/purge",
        &[],
        r#"{"scope":"tenant","tenant":"portal"}"#,
    )
    .unwrap();
    assert_eq!(r.status, 401);
    let r = purge(
        &g,
        r#"{"scope":"url","tenant":"portal","url":"http://portal.test/blob/1-tin-tuc-a"}"#,
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("\"purged\": 1"), "{}", r.body);
    assert_eq!(
        req(&g, "/blob/1-tin-tuc-a", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        req(&g, "/blob/1-tin-tuc-b", &[]).header("x-cache"),
        Some("HIT")
    );

    let out = std::process::Command::new(CONG)
        .args([
            "cache",
            "purge",
            "--tenant",
            "portal",
            "--prefix",
            "/blob/1-tin",
        ])
        .args(["--admin", &g.admin.to_string()])
        .env("CONG_ADMIN_TOKEN", TOKEN)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("purged 2"), "{text}");
    assert_eq!(
        req(&g, "/blob/1-tin-tuc-b", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        req(&g, "/blob/1-van-ban", &[]).header("x-cache"),
        Some("HIT")
    );

    let r = purge(&g, r#"{"scope":"tenant","tenant":"portal"}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        req(&g, "/blob/1-van-ban", &[]).header("x-cache"),
        Some("MISS")
    );
    assert_eq!(
        purge(&g, r#"{"scope":"tenant","tenant":"nope"}"#).status,
        404
    );
    assert!(g.log_text().contains("cache_purge"));
}

#[test]
fn cached_pages_stand_in_during_planned_maintenance() {
    let origin = Origin::start();
    origin.set("/", page("max-age=0", "Trang chủ"));
    let g = start(&origin, "", "serve_in_maintenance = true");
    assert_eq!(req(&g, "/", &[]).body, "Trang chủ");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let start = rfc3339(now - 60);
    let end = rfc3339(now + 3600);
    let r = request(
        g.admin,
        "POST",
        Some("admin"),
        "/api/v1/tenants/portal/maintenance",
        &[("Authorization", &format!("Bearer {TOKEN}"))],
        &format!(r#"{{"start":"{start}","end":"{end}"}}"#),
    )
    .unwrap();
    assert_eq!(r.status, 201, "{r:?}");
    let before = origin.hits("/");
    let r = req(&g, "/", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "Trang chủ"));
    assert_eq!(
        origin.hits("/"),
        before,
        "the origin is left alone in maintenance"
    );
    let r = req(&g, "/khong-co-trong-cache", &[]);
    assert_eq!(r.status, 503);
}

fn rfc3339(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

#[test]
fn objects_over_the_size_limit_pass_through_and_config_errors_point_at_the_key() {
    let origin = Origin::start();
    let g = start(&origin, "max_object_size = \"100KB\"", "");
    for _ in 0..2 {
        let r = req(&g, "/blob/200-big", &[]);
        assert_eq!((r.status, r.body.len()), (200, 200 * 1024));
        assert_ne!(r.header("x-cache"), Some("HIT"));
    }
    assert_eq!(origin.hits("/blob/200-big"), 2);
    req(&g, "/blob/50-small", &[]);
    assert_eq!(
        req(&g, "/blob/50-small", &[]).header("x-cache"),
        Some("HIT")
    );

    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let main = base_config(listen, admin, "");
    let bad_tenant = format!(
        "{}\n[cache]\nenabled = true\nbypass_paths = [\"/ok/**\", \"quantri/**\"]\n",
        tenant("portal", &["portal.test"], &[origin.addr], "")
    );
    let (ok, text, _d) = check(&main, &[("portal.toml", &bad_tenant)]);
    assert!(!ok);
    assert!(
        text.contains("portal.toml:") && text.contains("cache.bypass_paths[1]"),
        "{text}"
    );
    let bad_main = format!("{main}[cache]\nmemory_size = \"12 parsecs\"\n");
    let (ok, text, _d) = check(&bad_main, &[]);
    assert!(!ok);
    assert!(
        text.contains("cong.toml:") && text.contains("memory_size"),
        "{text}"
    );
}

#[test]
fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let origin = Origin::start();
    let mut p = page(
        "max-age=0, stale-while-revalidate=600",
        "Lịch tiếp công dân",
    );
    // A slow origin: the stale answer must not wait for it.
    p.delay_ms = 300;
    origin.set("/lich", p);
    let g = start(&origin, "", "");
    assert_eq!(req(&g, "/lich", &[]).header("x-cache"), Some("MISS"));
    let r = req(&g, "/lich", &[]);
    assert_eq!((r.status, r.body.as_str()), (200, "Lịch tiếp công dân"));
    assert_eq!(r.header("x-cache"), Some("STALE"));
    // The refresh reaches the origin in the background.
    wait_until("background revalidation", Duration::from_secs(10), || {
        origin.hits("/lich") >= 2
    });
}
