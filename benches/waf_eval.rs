//! WAF rule evaluation per request, in-process: Debian's OWASP Core Rule Set 3.3.4
//! (`/usr/share/modsecurity-crs/owasp-crs.load`) at paranoia level 1, `SecRuleEngine On`.
//!
//! Each iteration is one whole request as the proxy hands it to the WAF: a new `Transaction`
//! started from the plan of a tenant with `[waf] mode = "block"` (its TX settings and the
//! rules they fix; `WAF_EVAL_NO_PLAN=1`: the TX settings alone, every rule evaluated), the
//! connection, the request line, eight browser-like headers, phase 1, the body (if any),
//! phase 2 and phase 5 (logging). The rule set is loaded once, outside the measurement.
//! Before measuring, each case is checked: the benign requests must pass without
//! intervention, the attack must be refused.
//!
//! Cases: a page GET with a query string, a Vietnamese search GET, a urlencoded form POST, a
//! JSON POST, and an SQL injection in the query string.
//!
//! Run: `cargo bench --bench waf_eval` (skipped with a message when modsecurity-crs is not
//! installed; `deploy/deps.sh --test` installs it). `WAF_EVAL_RULES=FILE` loads that rule file
//! instead of the CRS (to weigh one kind of rule; the verdict checks are then skipped).

use cong::waf::rules::{Mode, RuleSet};
use cong::waf::transaction::{Exclusions, Plan, Transaction};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const CRS: &str = "/usr/share/modsecurity-crs/owasp-crs.load";

/// The gateway's allocator (see `src/main.rs`), so that allocation costs here are the proxy's.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Req<'a> {
    name: &'a str,
    method: &'a str,
    uri: &'a str,
    content_type: Option<&'a str>,
    body: &'a [u8],
    /// Whether the rules must refuse it.
    attack: bool,
}

const CASES: &[Req<'static>] = &[
    Req {
        name: "benign_get",
        method: "GET",
        uri: "/tin-tuc/chi-tiet?id=48213&chuyen_muc=thoi-su&trang=2",
        content_type: None,
        body: b"",
        attack: false,
    },
    Req {
        name: "benign_search_vi_get",
        method: "GET",
        uri: "/tim-kiem?q=th%E1%BB%A7+t%E1%BB%A5c+c%E1%BA%A5p+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng&loai=thu-tuc",
        content_type: None,
        body: b"",
        attack: false,
    },
    Req {
        name: "benign_form_post",
        method: "POST",
        uri: "/gop-y",
        content_type: Some("application/x-www-form-urlencoded"),
        body: b"ho_ten=Nguy%E1%BB%85n+V%C4%83n+A&email=nguyenvana%40example.vn&dien_thoai=0912345678\
&tieu_de=C%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p\
&noi_dung=Xin+c%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng+do+b%E1%BB%8B+m%E1%BA%A5t.",
        attack: false,
    },
    Req {
        name: "json_post",
        method: "POST",
        uri: "/api/ho-so",
        content_type: Some("application/json"),
        body: "{\"ma_ho_so\":\"H56.22-261120-0042\",\"ho_ten\":\"Trần Thị Bình\",\
\"so_cccd\":\"056190001234\",\"dia_chi\":\"Số 12 đường Lê Lợi, phường 1\",\
\"thu_tuc\":\"cap-giay-phep-xay-dung\",\"ghi_chu\":\"Nộp bổ sung bản vẽ\"}"
            .as_bytes(),
        attack: false,
    },
    Req {
        name: "sqli_get",
        method: "GET",
        uri: "/tin-tuc/chi-tiet?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--",
        content_type: None,
        body: b"",
        attack: true,
    },
];

const HEADERS: &[(&str, &str)] = &[
    ("Host", "bench.local"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    ),
    (
        "Accept",
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    ),
    ("Accept-Language", "vi-VN,vi;q=0.9,en-US;q=0.6,en;q=0.5"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "http://bench.local/"),
    ("Connection", "keep-alive"),
];

/// The request mix of `benches/waf.sh` (kind, method, path, content type, body), the same 20
/// requests in the same order.
const MIX: &[(bool, &str, &str, Option<&str>, &str)] = &[
    (false, "GET", "/", None, ""),
    (false, "GET", "/tin-tuc/chi-tiet?id=48213&chuyen_muc=thoi-su", None, ""),
    (false, "GET", "/van-ban/quy-pham-phap-luat?so_hieu=15%2F2024%2FND-CP&nam=2024&trang=2", None, ""),
    (false, "GET", "/lich-cong-tac?tuan=47&nam=2026&don_vi=ubnd-tinh", None, ""),
    (false, "GET", "/thu-tuc-hanh-chinh?linh_vuc=dat-dai&cap=huyen&page=3", None, ""),
    (false, "GET", "/gioi-thieu/co-cau-to-chuc", None, ""),
    (false, "GET", "/static/css/main.css?v=20261120", None, ""),
    (false, "GET", "/tin-tuc?chuyen_muc=kinh-te&trang=5&sap_xep=moi-nhat", None, ""),
    (false, "GET", "/dich-vu-cong/tra-cuu-ho-so?ma_ho_so=000.00.31.H56-261120-0042", None, ""),
    (false, "GET", "/tim-kiem?q=th%E1%BB%A7+t%E1%BB%A5c+c%E1%BA%A5p+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng", None, ""),
    (false, "GET", "/tim-kiem?q=%C4%91%C4%83ng+k%C3%BD+khai+sinh&loai=thu-tuc", None, ""),
    (false, "GET", "/tim-kiem?q=l%E1%BB%8Bch+ti%E1%BA%BFp+c%C3%B4ng+d%C3%A2n+th%C3%A1ng+11", None, ""),
    (false, "GET", "/tim-kiem?q=ngh%E1%BB%8B+quy%E1%BA%BFt+h%E1%BB%99i+%C4%91%E1%BB%93ng+nh%C3%A2n+d%C3%A2n&tu_ngay=01%2F01%2F2026", None, ""),
    (false, "POST", "/gop-y", Some("application/x-www-form-urlencoded"), "ho_ten=Nguy%E1%BB%85n+V%C4%83n+A&email=nguyenvana%40example.vn&dien_thoai=0912345678&tieu_de=C%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p&noi_dung=Xin+c%E1%BA%A5p+l%E1%BA%A1i+gi%E1%BA%A5y+ph%C3%A9p+x%C3%A2y+d%E1%BB%B1ng+do+b%E1%BB%8B+m%E1%BA%A5t."),
    (false, "POST", "/dang-ky-lich-hen", Some("application/x-www-form-urlencoded"), "ho_ten=Tr%E1%BA%A7n+Th%E1%BB%8B+B%C3%ACnh&ngay=2026-11-25&gio=09%3A30&bo_phan=mot-cua&ghi_chu=N%E1%BB%99p+h%E1%BB%93+s%C6%A1+%C4%91%E1%BA%A5t+%C4%91ai"),
    (false, "POST", "/api/ho-so", Some("application/json"), "{\"ma_ho_so\":\"H56.22-261120-0042\",\"ho_ten\":\"Trần Thị Bình\",\"so_cccd\":\"056190001234\",\"dia_chi\":\"Số 12 đường Lê Lợi, phường 1\",\"thu_tuc\":\"cap-giay-phep-xay-dung\",\"ghi_chu\":\"Nộp bổ sung bản vẽ\"}"),
    (false, "POST", "/api/danh-gia", Some("application/json"), "{\"diem\":5,\"y_kien\":\"Cán bộ hướng dẫn nhiệt tình, thủ tục nhanh\",\"ma_can_bo\":1024,\"an_danh\":false}"),
    (true, "GET", "/tin-tuc/chi-tiet?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--", None, ""),
    (true, "POST", "/gop-y", Some("application/x-www-form-urlencoded"), "ho_ten=A&noi_dung=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"),
    (true, "GET", "/tai-lieu/tai-ve?file=..%2F..%2F..%2F..%2Fetc%2Fpasswd", None, ""),
];

/// One cycle of the mix as `waf.sh`'s wrk script sends it: request `sent` (counting from
/// `base`) gets a new visitor's cookie every 5 requests and a new article id every request, so
/// values seen before do not make every request cheap. Returns the number refused.
fn mix_cycle(rules: &Arc<RuleSet>, base: &mut u64) -> usize {
    let mut refused = 0;
    for &(attack, method, path, ctype, body) in MIX {
        *base += 1;
        let sent = *base;
        let visitor = sent / 5;
        let cookie = format!(
            "_ga=GA1.2.{}.1700000000; lang=vi; PHPSESSID={:026x}",
            1_000_000_000 + visitor,
            visitor.wrapping_mul(2_654_435_761)
        );
        let uri = path.replace("id=48213", &format!("id={}", 48_213 + sent));
        let r = Req {
            name: "mix",
            method,
            uri: &uri,
            content_type: ctype,
            body: body.as_bytes(),
            attack,
        };
        if evaluate_with(rules, &r, &cookie) {
            refused += 1;
        }
    }
    refused
}

/// One request through the WAF as a `block` tenant at paranoia 1 runs it; returns whether it
/// was refused.
fn evaluate(rules: &Arc<RuleSet>, r: &Req) -> bool {
    evaluate_with(rules, r, "_ga=GA1.2.1234567890.1700000000; lang=vi")
}

/// The TX settings of a `block` tenant at paranoia 1.
const SETTINGS: [(&str, &str); 4] = [
    ("paranoia_level", "1"),
    ("executing_paranoia_level", "1"),
    ("inbound_anomaly_score_threshold", "5"),
    ("outbound_anomaly_score_threshold", "4"),
];

/// The tenant's plan, made once per rule set as the gateway makes it at start-up.
fn plan(rules: &Arc<RuleSet>) -> Arc<Plan> {
    static PLAN: std::sync::OnceLock<Arc<Plan>> = std::sync::OnceLock::new();
    PLAN.get_or_init(|| Arc::new(Plan::build(rules, &SETTINGS, &Exclusions::default())))
        .clone()
}

fn evaluate_with(rules: &Arc<RuleSet>, r: &Req<'_>, cookie: &str) -> bool {
    let mut t = Transaction::new(rules.clone(), Mode::On, "bench-request-id");
    // `WAF_EVAL_NO_PLAN=1`: every rule evaluated per request, as before plans (to compare).
    static NO_PLAN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    if *NO_PLAN.get_or_init(|| std::env::var_os("WAF_EVAL_NO_PLAN").is_some()) {
        for (k, v) in SETTINGS {
            t.set_tx(k, v);
        }
    } else {
        t.follow(&plan(rules));
    }
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    t.set_connection(lo, 50_000, lo, 8080);
    t.set_request_line(r.method, r.uri, "HTTP/1.1");
    for (name, value) in HEADERS {
        t.add_header(name, value.as_bytes());
    }
    t.add_header("Cookie", cookie.as_bytes());
    let length = r.body.len().to_string();
    if let Some(ct) = r.content_type {
        t.add_header("Content-Type", ct.as_bytes());
        t.add_header("Content-Length", length.as_bytes());
    }
    let refused = t.process_request_headers().is_some() || {
        if !r.body.is_empty() {
            t.feed_body(r.body);
        }
        t.process_request_body().is_some()
    };
    // The proxy runs the logging phase when the request ends, refused or not.
    t.process_logging();
    refused
}

fn bench(c: &mut Criterion) {
    if !Path::new(CRS).exists() {
        eprintln!(
            "{CRS} not found: modsecurity-crs is not installed (deploy/deps.sh --test); skipped"
        );
        return;
    }
    let started = std::time::Instant::now();
    let other = std::env::var_os("WAF_EVAL_RULES").map(PathBuf::from);
    let path = other.clone().unwrap_or_else(|| PathBuf::from(CRS));
    let rules = Arc::new(RuleSet::load(&[path]).expect("rules load"));
    eprintln!("rules loaded in {:.2?}", started.elapsed());
    for r in CASES.iter().filter(|_| other.is_none()) {
        assert_eq!(
            evaluate(&rules, r),
            r.attack,
            "{}: expected {}",
            r.name,
            if r.attack {
                "a refusal"
            } else {
                "no intervention"
            }
        );
    }

    let mut base = 0u64;
    let refused = mix_cycle(&rules, &mut base);
    assert!(
        other.is_some() || refused == 3,
        "the mix's 3 attacks are refused"
    );
    if let Some(n) = std::env::var_os("WAF_EVAL_MIX_CYCLES") {
        // For instruction counts (`valgrind --tool=callgrind`): that many cycles, nothing else.
        let n: u32 = n.to_str().and_then(|s| s.parse().ok()).unwrap_or(50);
        for _ in 0..n {
            black_box(mix_cycle(&rules, &mut base));
        }
        return;
    }

    let mut g = c.benchmark_group("waf_crs_pl1");
    g.sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    for r in CASES {
        g.bench_function(r.name, |b| {
            b.iter(|| black_box(evaluate(&rules, black_box(r))))
        });
    }
    g.finish();

    // The whole mix, values varying; the figure is per cycle of 20 requests.
    let mut g = c.benchmark_group("waf_crs_pl1_mix");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    g.bench_function("mix_20_requests", |b| {
        b.iter(|| black_box(mix_cycle(&rules, &mut base)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
