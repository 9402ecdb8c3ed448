//! The static origin: a pool whose responses are files from a local directory served by the
//! gateway itself (maintenance pages, a fallback copy of a portal, the built-in demo).
//!
//! Owns path-to-file mapping with traversal protection, index files, content types and
//! conditional GET by modification time. It must not touch routing or upstream state.

use bytes::Bytes;
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Largest file served; larger files get 404 rather than being read into memory.
const MAX_FILE: u64 = 64 * 1024 * 1024;

#[derive(Debug)]
enum Root {
    Dir(PathBuf),
    /// Files compiled into the binary (the demo site).
    Builtin(HashMap<&'static str, &'static [u8]>),
}

/// A directory (or built-in file set) served as an origin.
#[derive(Debug)]
pub struct StaticOrigin {
    root: Root,
}

/// A file found for a request.
#[derive(Debug, Clone)]
pub struct StaticFile {
    pub body: Bytes,
    pub content_type: &'static str,
    pub last_modified: Option<std::time::SystemTime>,
}

impl StaticOrigin {
    /// `root` is a directory (relative paths resolved by `resolve`) or `builtin:demo` /
    /// `builtin:demo-en`.
    pub fn open(root: &str, resolve: &dyn Fn(&str) -> PathBuf) -> Result<StaticOrigin, String> {
        if let Some(name) = root.strip_prefix("builtin:") {
            let files: &[(&str, &[u8])] = match name {
                "demo" => &[
                    ("index.html", include_bytes!("demo/index.html")),
                    ("style.css", include_bytes!("demo/style.css")),
                ],
                "demo-en" => &[
                    ("index.html", include_bytes!("demo/en.html")),
                    ("style.css", include_bytes!("demo/style.css")),
                ],
                other => {
                    return Err(format!(
                        "unknown built-in site `{other}` (known: demo, demo-en)"
                    ))
                }
            };
            return Ok(StaticOrigin {
                root: Root::Builtin(files.iter().copied().collect()),
            });
        }
        let dir = resolve(root);
        let dir = dir
            .canonicalize()
            .map_err(|e| format!("directory {} cannot be opened: {e}", dir.display()))?;
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(StaticOrigin {
            root: Root::Dir(dir),
        })
    }

    /// The file for a request path (query already removed), or `None` for 404.
    pub async fn lookup(&self, path: &str) -> Option<StaticFile> {
        let rel = safe_relative(path)?;
        match &self.root {
            Root::Builtin(files) => {
                let key = if rel.as_os_str().is_empty() {
                    "index.html".to_string()
                } else {
                    rel.to_str()?.to_string()
                };
                let body = files.get(key.as_str())?;
                Some(StaticFile {
                    body: Bytes::from_static(body),
                    content_type: content_type(&key),
                    last_modified: None,
                })
            }
            Root::Dir(dir) => {
                let mut full = dir.join(&rel);
                let mut meta = tokio::fs::metadata(&full).await.ok()?;
                if meta.is_dir() {
                    full.push("index.html");
                    meta = tokio::fs::metadata(&full).await.ok()?;
                }
                if !meta.is_file() || meta.len() > MAX_FILE {
                    return None;
                }
                // Symlinks may not lead outside the root.
                let canon = tokio::fs::canonicalize(&full).await.ok()?;
                if !canon.starts_with(dir) {
                    return None;
                }
                let body = tokio::fs::read(&canon).await.ok()?;
                Some(StaticFile {
                    body: Bytes::from(body),
                    content_type: content_type(canon.to_str().unwrap_or("")),
                    last_modified: meta.modified().ok(),
                })
            }
        }
    }
}

/// Decodes the URL path and turns it into a relative path with no `..`, or `None`.
fn safe_relative(path: &str) -> Option<PathBuf> {
    let decoded = percent_decode(path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for c in Path::new(decoded.trim_start_matches('/')).components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert_eq!(safe_relative("/a/b.html"), Some(PathBuf::from("a/b.html")));
        assert_eq!(safe_relative("/"), Some(PathBuf::new()));
        assert_eq!(safe_relative("/../etc/passwd"), None);
        assert_eq!(safe_relative("/a/%2e%2e/%2e%2e/etc"), None);
        assert_eq!(safe_relative("/a%00b"), None);
        assert_eq!(safe_relative("/a\\..\\b"), None);
        assert_eq!(safe_relative("/%zz"), None);
    }

    #[tokio::test]
    async fn serves_directory_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.html"), "<p>chào</p>").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.css"), "p{}").unwrap();
        let o = StaticOrigin::open(dir.path().to_str().unwrap(), &|p| PathBuf::from(p)).unwrap();
        let f = o.lookup("/").await.unwrap();
        assert_eq!(&f.body[..], "<p>chào</p>".as_bytes());
        assert_eq!(f.content_type, "text/html; charset=utf-8");
        assert_eq!(
            o.lookup("/sub/a.css").await.unwrap().content_type,
            "text/css; charset=utf-8"
        );
        assert!(o.lookup("/missing").await.is_none());
        assert!(o.lookup("/../x").await.is_none());
    }

    #[tokio::test]
    async fn builtin_demo() {
        let o = StaticOrigin::open("builtin:demo", &|p| PathBuf::from(p)).unwrap();
        assert!(o.lookup("/").await.is_some());
        assert!(StaticOrigin::open("builtin:nope", &|p| PathBuf::from(p)).is_err());
    }
}
