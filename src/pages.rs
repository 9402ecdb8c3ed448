//! Pages the gateway itself answers with: 404 for an unknown site, 502/503/504 when a backend
//! fails, and the other error statuses. Self-contained accessible HTML (no external assets),
//! Vietnamese first with English below, showing the request id for the helpdesk. A tenant may
//! override any of them with its own files. Pure functions of status and request id.

use bytes::Bytes;
use std::collections::HashMap;
use std::path::Path;

struct Text {
    vi_title: &'static str,
    vi_body: &'static str,
    en_title: &'static str,
    en_body: &'static str,
}

fn text(status: u16) -> Text {
    match status {
        400 => Text {
            vi_title: "Yêu cầu không hợp lệ",
            vi_body: "Trình duyệt đã gửi một yêu cầu mà cổng không hiểu được. Vui lòng kiểm tra lại địa chỉ.",
            en_title: "Bad request",
            en_body: "Your browser sent a request the gateway could not understand. Please check the address.",
        },
        403 => Text {
            vi_title: "Truy cập bị từ chối",
            vi_body: "Yêu cầu này đã bị chặn vì lý do an toàn thông tin. Nếu bạn cho rằng đây là nhầm lẫn, vui lòng liên hệ bộ phận hỗ trợ và cung cấp mã yêu cầu bên dưới.",
            en_title: "Access denied",
            en_body: "This request was blocked for security reasons. If you think this is a mistake, please contact the helpdesk with the request id below.",
        },
        404 => Text {
            vi_title: "Không tìm thấy trang",
            vi_body: "Không có trang hoặc trang thông tin điện tử nào tại địa chỉ này. Vui lòng kiểm tra lại địa chỉ đã nhập.",
            en_title: "Page not found",
            en_body: "There is no page or portal at this address. Please check the address you entered.",
        },
        429 => Text {
            vi_title: "Quá nhiều yêu cầu",
            vi_body: "Bạn đã gửi quá nhiều yêu cầu trong thời gian ngắn. Vui lòng đợi một lát rồi thử lại.",
            en_title: "Too many requests",
            en_body: "You have sent too many requests in a short time. Please wait a moment and try again.",
        },
        502 => Text {
            vi_title: "Máy chủ của trang đang gặp sự cố",
            vi_body: "Cổng đã nhận yêu cầu nhưng máy chủ của trang thông tin không trả lời đúng. Vui lòng thử lại sau ít phút.",
            en_title: "The site's server is having a problem",
            en_body: "The gateway received your request but the portal's server did not answer correctly. Please try again in a few minutes.",
        },
        503 => Text {
            vi_title: "Trang tạm thời không phục vụ được",
            vi_body: "Máy chủ của trang thông tin hiện không sẵn sàng. Vui lòng thử lại sau ít phút.",
            en_title: "Service temporarily unavailable",
            en_body: "The portal's servers are not available at the moment. Please try again in a few minutes.",
        },
        504 => Text {
            vi_title: "Máy chủ của trang phản hồi quá chậm",
            vi_body: "Máy chủ của trang thông tin không trả lời kịp thời. Vui lòng thử lại sau ít phút.",
            en_title: "The site's server took too long to answer",
            en_body: "The portal's server did not answer in time. Please try again in a few minutes.",
        },
        _ => Text {
            vi_title: "Đã xảy ra lỗi",
            vi_body: "Cổng không thể xử lý yêu cầu này. Vui lòng thử lại sau.",
            en_title: "Something went wrong",
            en_body: "The gateway could not handle this request. Please try again later.",
        },
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The built-in page for a status.
pub fn builtin(status: u16, request_id: &str) -> String {
    let t = text(status);
    let rid = html_escape(request_id);
    format!(
        r#"<!DOCTYPE html>
<html lang="vi">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{status} — {vt} / {et}</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;margin:0;background:#fff;color:#1a1a1a;line-height:1.6}}
main{{max-width:40rem;margin:0 auto;padding:2rem 1rem}}
h1{{font-size:1.5rem;margin:.2rem 0 .6rem}}
h2{{font-size:1.2rem;margin:1.5rem 0 .4rem}}
.code{{font-size:1rem;color:#4a4a4a;margin:0}}
section+section{{border-top:1px solid #767676;margin-top:1.5rem}}
.rid{{background:#f2f2f2;border:1px solid #767676;padding:.6rem;margin-top:1.5rem;word-break:break-all}}
code{{font-size:1rem}}
</style>
</head>
<body>
<main>
<section>
<p class="code">Lỗi {status}</p>
<h1>{vt}</h1>
<p>{vb}</p>
</section>
<section lang="en">
<p class="code">Error {status}</p>
<h2>{et}</h2>
<p>{eb}</p>
</section>
<p class="rid">Mã yêu cầu <span lang="en">(request id)</span>: <code>{rid}</code></p>
</main>
</body>
</html>
"#,
        vt = t.vi_title,
        vb = t.vi_body,
        et = t.en_title,
        eb = t.en_body,
    )
}

/// A tenant's own pages, read once when the configuration is built.
#[derive(Debug, Default, Clone)]
pub struct ErrorPages {
    overrides: HashMap<u16, String>,
}

impl ErrorPages {
    /// Reads `NNN.html` files from a directory.
    pub fn load(dir: &Path) -> Result<ErrorPages, String> {
        let entries =
            std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        let mut overrides = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if path.extension().is_none_or(|e| e != "html") {
                continue;
            }
            let Ok(code) = stem.parse::<u16>() else {
                continue;
            };
            if !(400..=599).contains(&code) {
                continue;
            }
            let body = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            overrides.insert(code, body);
        }
        Ok(ErrorPages { overrides })
    }

    /// The page for a status: the tenant's file when it has one, else the built-in page.
    pub fn render(&self, status: u16, request_id: &str) -> Bytes {
        match self.overrides.get(&status) {
            Some(t) => Bytes::from(
                t.replace("{{request_id}}", &html_escape(request_id))
                    .replace("{{status}}", &status.to_string()),
            ),
            None => Bytes::from(builtin(status, request_id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_pages_are_bilingual_and_show_the_id() {
        for s in [404, 502, 503, 504] {
            let p = builtin(s, "abc<123>");
            assert!(p.contains("<html lang=\"vi\">"));
            assert!(p.contains("lang=\"en\""));
            assert!(p.contains("abc&lt;123&gt;"));
            assert!(p.contains(&s.to_string()));
            assert!(
                !p.contains("http://") && !p.contains("https://"),
                "no external assets"
            );
        }
    }

    #[test]
    fn overrides_replace_placeholders() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("503.html"),
            "<p>{{status}} {{request_id}}</p>",
        )
        .unwrap();
        let p = ErrorPages::load(dir.path()).unwrap();
        assert_eq!(&p.render(503, "r1")[..], b"<p>503 r1</p>");
        assert!(std::str::from_utf8(&p.render(502, "r1"))
            .unwrap()
            .contains("Error 502"));
    }
}
