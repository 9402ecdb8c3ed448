//! `cong bans`: lists and lifts bans through the admin API of a running gateway.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Sends one request to the admin API; returns (status, body).
fn call(admin: SocketAddr, token: &str, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_secs(5))
        .map_err(|e| format!("cannot reach the admin API at {admin}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_string())?;
    Ok((status, body.to_string()))
}

fn encode_key(key: &str) -> String {
    key.trim().replace('/', "%2F")
}

/// `cong bans list`: prints one line per ban. Returns the process exit code.
pub fn list(admin: SocketAddr, token: &str, json: bool) -> Result<(), String> {
    let (status, body) = call(admin, token, "GET", "/api/v1/bans")?;
    if status != 200 {
        return Err(format!("admin API answered {status}: {}", body.trim()));
    }
    if json {
        print!("{body}");
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let bans = v["bans"].as_array().cloned().unwrap_or_default();
    if bans.is_empty() {
        println!("no active bans");
        return Ok(());
    }
    println!(
        "{:<28} {:>10} {:>8}  {:<12} tenant",
        "key", "expires_s", "offences", "reason"
    );
    for b in bans {
        println!(
            "{:<28} {:>10} {:>8}  {:<12} {}",
            b["key"].as_str().unwrap_or("?"),
            b["expires_in_s"].as_u64().unwrap_or(0),
            b["offences"].as_u64().unwrap_or(0),
            b["reason"].as_str().unwrap_or("?"),
            b["tenant"].as_str().unwrap_or("-"),
        );
    }
    Ok(())
}

/// `cong bans lift KEY`.
pub fn lift(admin: SocketAddr, token: &str, key: &str) -> Result<(), String> {
    let path = format!("/api/v1/bans/{}", encode_key(key));
    let (status, body) = call(admin, token, "DELETE", &path)?;
    match status {
        200 => {
            println!("lifted {}", key.trim());
            Ok(())
        }
        _ => Err(format!("admin API answered {status}: {}", body.trim())),
    }
}
