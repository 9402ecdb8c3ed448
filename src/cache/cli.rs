//! `cong cache purge`: purges through the admin API of a running gateway (so the purge is
//! audited there and reaches the other nodes in cluster mode).

use super::purge::Purge;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends the purge; returns how many objects the node removed.
pub fn purge(admin: SocketAddr, token: &str, p: &Purge) -> Result<u64, String> {
    let body = serde_json::to_string(p).map_err(|e| e.to_string())?;
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let req = format!(
        "POST /api/v1/cache/purge HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    if status != 200 {
        return Err(format!("admin API answered {status}: {}", body.trim()));
    }
    let v: serde_json::Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    v["purged"]
        .as_u64()
        .ok_or_else(|| format!("unexpected answer: {}", body.trim()))
}
