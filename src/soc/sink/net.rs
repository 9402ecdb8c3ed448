//! Syslog network sinks. UDP: one RFC 5424 message per datagram, best effort (a datagram
//! cannot be known lost), failures counted. TCP and TLS: RFC 6587 octet counting
//! (`LEN SP MSG`), TLS per RFC 5425 with the collector verified against the configured CA and
//! an optional client certificate. While the collector is down or slow, messages go to the
//! disk spool and are replayed in order, oldest first, before anything new. HTTP(S) sinks POST
//! JSON arrays and count only a 2xx answer as delivered. Owns the connection and the spool of
//! its sink; never reorders, renumbers or filters events.

use super::{set_up, take_batch, HttpTarget, NetSpec, SinkCounters};
use crate::config::{SinkFormat, SinkKind};
use crate::soc::event::Record;
use crate::soc::format::{self, Context};
use crate::soc::spool::Spool;
use anyhow::Context as _;
use rustls::pki_types::ServerName;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone)]
pub struct TlsSpec {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
}

enum Conn {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    /// HTTP/1.1 keep-alive over either of the above.
    Http(Box<Conn>, HttpTarget),
}

enum Peek {
    Nothing,
    Data,
    Closed,
}

/// Looks at the socket without blocking: a collector never talks, so end-of-stream or an
/// error means it went away and anything written now would be lost.
fn peek(s: &TcpStream) -> Peek {
    let mut b = [0u8; 1];
    // SAFETY: recv(2) into a 1-byte stack buffer on a socket we own.
    let n = unsafe {
        libc::recv(
            s.as_raw_fd(),
            b.as_mut_ptr().cast(),
            1,
            libc::MSG_DONTWAIT | libc::MSG_PEEK,
        )
    };
    match n {
        0 => Peek::Closed,
        n if n > 0 => Peek::Data,
        _ => match io::Error::last_os_error().kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Peek::Nothing,
            _ => Peek::Closed,
        },
    }
}

impl Conn {
    fn alive(&mut self) -> bool {
        match self {
            Conn::Http(inner, _) => inner.alive(),
            Conn::Tcp(s) => loop {
                match peek(s) {
                    Peek::Nothing => return true,
                    Peek::Closed => return false,
                    Peek::Data => {
                        let mut junk = [0u8; 512];
                        if s.set_nonblocking(true).is_err() {
                            return false;
                        }
                        let r = s.read(&mut junk);
                        let _ = s.set_nonblocking(false);
                        if matches!(r, Ok(0) | Err(_)) {
                            return false;
                        }
                    }
                }
            },
            Conn::Tls(s) => match peek(&s.sock) {
                Peek::Nothing => true,
                Peek::Closed => false,
                Peek::Data => {
                    // TLS records (session tickets, close_notify): let rustls read them.
                    if s.sock.set_nonblocking(true).is_err() {
                        return false;
                    }
                    let mut junk = [0u8; 512];
                    let alive = loop {
                        match s.read(&mut junk) {
                            Ok(0) => break false,
                            Ok(_) => continue,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                            Err(_) => break false,
                        }
                    };
                    let _ = s.sock.set_nonblocking(false);
                    alive
                }
            },
        }
    }

    /// Writes messages with octet-counting framing (syslog), or POSTs them as JSON arrays of
    /// at most `batch_max` and checks for a 2xx answer (HTTP).
    fn send<M: AsRef<[u8]>>(&mut self, msgs: &[M]) -> io::Result<()> {
        if let Conn::Http(inner, target) = self {
            for chunk in msgs.chunks(target.batch_max) {
                post(inner, target, chunk)?;
            }
            return Ok(());
        }
        let mut buf = Vec::with_capacity(msgs.iter().map(|m| m.as_ref().len() + 8).sum());
        for m in msgs {
            let m = m.as_ref();
            buf.extend_from_slice(m.len().to_string().as_bytes());
            buf.push(b' ');
            buf.extend_from_slice(m);
        }
        self.write_raw(&buf)
    }

    fn write_raw(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.write_all(buf),
            Conn::Tls(s) => s.write_all(buf).and_then(|_| s.flush()),
            Conn::Http(inner, _) => inner.write_raw(buf),
        }
    }

    fn read_raw(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => s.read(buf),
            Conn::Tls(s) => s.read(buf),
            Conn::Http(inner, _) => inner.read_raw(buf),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = match self {
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Tls(s) => s.sock.set_read_timeout(t),
            Conn::Http(inner, _) => {
                inner.set_read_timeout(t);
                Ok(())
            }
        };
    }

    fn close(self) {
        match self {
            Conn::Tls(mut s) => {
                s.conn.send_close_notify();
                let _ = s.flush();
            }
            Conn::Http(inner, _) => inner.close(),
            Conn::Tcp(_) => {}
        }
    }
}

/// One POST of a JSON array; Ok only for a 2xx answer, whose body is read and discarded so the
/// connection can be reused.
fn post<M: AsRef<[u8]>>(c: &mut Conn, t: &HttpTarget, msgs: &[M]) -> io::Result<()> {
    let mut body = Vec::with_capacity(msgs.iter().map(|m| m.as_ref().len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, m) in msgs.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(m.as_ref());
    }
    body.push(b']');
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: cong/{}\r\n\r\n",
        t.path,
        t.host,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(&body);
    c.write_raw(&req)?;
    // Response head, then as much body as it announces.
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("HTTP response head too large"));
        }
        let n = c.read_raw(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::other("connection closed before the response"));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad HTTP status line"))?;
    let length = head.lines().find_map(|l| {
        l.strip_prefix("content-length:")
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    let chunked = head.contains("transfer-encoding: chunked");
    let mut have = buf.len() - head_end;
    match (length, chunked) {
        (Some(len), _) => {
            while have < len {
                let n = c.read_raw(&mut chunk)?;
                if n == 0 {
                    break;
                }
                have += n;
            }
        }
        (None, true) => {
            let mut tail = buf[head_end..].to_vec();
            while !tail.ends_with(b"0\r\n\r\n") {
                let n = c.read_raw(&mut chunk)?;
                if n == 0 {
                    break;
                }
                tail.extend_from_slice(&chunk[..n]);
            }
        }
        // No length: the body ends when the server closes; `ready` then reconnects.
        (None, false) => {}
    }
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(io::Error::other(format!("HTTP status {status}")))
    }
}

fn connect(spec: &NetSpec) -> anyhow::Result<Conn> {
    let addrs: Vec<_> = spec
        .address
        .to_socket_addrs()
        .with_context(|| format!("resolve {}", spec.address))?
        .collect();
    let mut last = None;
    for a in addrs {
        match TcpStream::connect_timeout(&a, spec.connect_timeout) {
            Ok(s) => {
                s.set_nodelay(true).ok();
                s.set_write_timeout(Some(spec.write_timeout))?;
                let Some(tls) = &spec.tls else {
                    return Ok(with_http(Conn::Tcp(s), spec));
                };
                s.set_read_timeout(Some(spec.connect_timeout))?;
                let c = rustls::ClientConnection::new(tls.config.clone(), tls.server_name.clone())
                    .context("TLS client")?;
                let mut st = rustls::StreamOwned::new(c, s);
                while st.conn.is_handshaking() {
                    st.conn
                        .complete_io(&mut st.sock)
                        .with_context(|| format!("TLS handshake with {a}"))?;
                }
                st.sock.set_read_timeout(None)?;
                return Ok(with_http(Conn::Tls(Box::new(st)), spec));
            }
            Err(e) => last = Some(anyhow::Error::new(e).context(format!("connect {a}"))),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{} resolves to no address", spec.address)))
}

fn with_http(c: Conn, spec: &NetSpec) -> Conn {
    match &spec.http {
        Some(t) => {
            c.set_read_timeout(Some(spec.write_timeout));
            Conn::Http(Box::new(c), t.clone())
        }
        None => c,
    }
}

/// A connection ready for writing: the current one if the collector has not closed it; for
/// HTTP, whose servers close idle keep-alive connections routinely, a fresh one otherwise.
fn ready<'a>(conn: &'a mut Option<Conn>, spec: &NetSpec) -> Option<&'a mut Conn> {
    let alive = conn.as_mut().is_some_and(|c| c.alive());
    if !alive && conn.is_some() && spec.http.is_some() {
        *conn = connect(spec).ok();
        return conn.as_mut();
    }
    if alive {
        conn.as_mut()
    } else {
        None
    }
}

/// The TCP/TLS/HTTP sink loop: deliver directly while the collector is up and nothing is spooled;
/// otherwise append to the spool, reconnect with backoff, and replay the spool in order.
pub fn run_stream(
    name: String,
    spec: NetSpec,
    fmt: SinkFormat,
    cx: Context,
    rx: Receiver<Arc<Record>>,
    counters: Arc<SinkCounters>,
) {
    let mut spool = match Spool::open(&spec.spool_dir, spec.spool_max) {
        Ok(s) => Some(s),
        Err(e) => {
            set_up(&name, &counters, false, &format!("spool: {e:#}"));
            None
        }
    };
    let spool_pending = |s: &Option<Spool>| s.as_ref().is_some_and(|s| !s.is_empty());
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    let mut next_try = Instant::now();
    loop {
        let wait = match &conn {
            Some(_) if spool_pending(&spool) => Duration::ZERO,
            Some(_) => Duration::from_millis(500),
            None => next_try
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(500)),
        };
        let (batch, closed) = take_batch(&rx, wait, 1024, &counters);
        let msgs: Vec<String> = batch
            .iter()
            .map(|r| match spec.http {
                Some(_) => format::encode(fmt, r, &cx),
                None => format::encode_syslog(fmt, r, &cx),
            })
            .collect();

        if conn.is_none() && !closed && Instant::now() >= next_try {
            match connect(&spec) {
                Ok(c) => {
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                    set_up(&name, &counters, true, "");
                }
                Err(e) => {
                    set_up(&name, &counters, false, &format!("{e:#}"));
                    next_try = Instant::now() + backoff;
                    backoff = (backoff * 2).min(spec.reconnect_max);
                }
            }
        }

        let direct = conn.is_some() && !spool_pending(&spool);
        if direct && !msgs.is_empty() {
            let res = match ready(&mut conn, &spec) {
                Some(c) => c.send(&msgs),
                None => Err(io::Error::other("connection closed by the collector")),
            };
            match res {
                Ok(()) => {
                    counters
                        .sent
                        .fetch_add(msgs.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    lost_connection(&name, &counters, &mut conn, &mut next_try, &e);
                    to_spool(&mut spool, &msgs, &counters);
                }
            }
        } else if !msgs.is_empty() {
            to_spool(&mut spool, &msgs, &counters);
        }

        // Replay a bounded amount per round so new events keep being taken from the queue.
        if let (true, Some(s)) = (conn.is_some(), spool.as_mut()) {
            let mut replayed = 0usize;
            while !s.is_empty() && replayed < 4 * 1024 * 1024 {
                let old = match s.peek(256 * 1024) {
                    Ok(m) => m,
                    Err(e) => {
                        // A damaged segment cannot be replayed: give it up, loudly.
                        let lost = s.skip_segment().unwrap_or(0);
                        counters.dropped.fetch_add(1, Ordering::Relaxed);
                        crate::events::emit(
                            crate::events::Event::new(
                                "log_spool_damaged",
                                crate::events::Severity::Error,
                            )
                            .field("sink", &name)
                            .field("bytes_lost", lost)
                            .field("cause", format!("{e:#}")),
                        );
                        break;
                    }
                };
                if old.is_empty() {
                    break;
                }
                let res = match ready(&mut conn, &spec) {
                    Some(c) => c.send(&old),
                    None => Err(io::Error::other("connection closed by the collector")),
                };
                if let Err(e) = res {
                    lost_connection(&name, &counters, &mut conn, &mut next_try, &e);
                    break;
                }
                replayed += old.iter().map(Vec::len).sum::<usize>();
                counters.sent.fetch_add(old.len() as u64, Ordering::Relaxed);
                if let Err(e) = s.consume(&old) {
                    set_up(&name, &counters, false, &format!("spool: {e:#}"));
                    break;
                }
            }
        }
        if let Some(s) = spool.as_mut() {
            let _ = s.flush();
            counters
                .spool_bytes
                .store(s.pending_bytes(), Ordering::Relaxed);
        }

        if closed {
            // Shutdown: what is not delivered stays in the spool for the next start.
            if let Some(s) = spool.as_mut() {
                let _ = s.sync();
            }
            if let Some(c) = conn.take() {
                c.close();
            }
            return;
        }
    }
}

fn lost_connection(
    name: &str,
    counters: &SinkCounters,
    conn: &mut Option<Conn>,
    next_try: &mut Instant,
    e: &io::Error,
) {
    *conn = None;
    set_up(name, counters, false, &format!("connection lost: {e}"));
    *next_try = Instant::now() + Duration::from_millis(100);
}

fn to_spool(spool: &mut Option<Spool>, msgs: &[String], counters: &SinkCounters) {
    for m in msgs {
        let kept = spool
            .as_mut()
            .is_some_and(|s| s.push(m.as_bytes()).unwrap_or(false));
        if !kept {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The UDP sink: one datagram per message on a connected socket, so an ICMP "port
/// unreachable" shows up as an error on a later send.
pub fn run_udp(
    name: String,
    spec: NetSpec,
    fmt: SinkFormat,
    cx: Context,
    rx: Receiver<Arc<Record>>,
    counters: Arc<SinkCounters>,
) {
    let mut sock: Option<UdpSocket> = None;
    loop {
        let (batch, closed) = take_batch(&rx, Duration::from_millis(500), 1024, &counters);
        if sock.is_none() && !batch.is_empty() {
            match udp_socket(&spec.address) {
                Ok(s) => sock = Some(s),
                Err(e) => set_up(&name, &counters, false, &format!("{e:#}")),
            }
        }
        for r in &batch {
            let m = format::encode_syslog(fmt, r, &cx);
            match sock.as_ref().map(|s| s.send(m.as_bytes())) {
                Some(Ok(_)) => {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    set_up(&name, &counters, true, "");
                }
                Some(Err(e)) => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    set_up(&name, &counters, false, &e.to_string());
                }
                None => {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if closed {
            return;
        }
    }
}

fn udp_socket(address: &str) -> anyhow::Result<UdpSocket> {
    let a = address
        .to_socket_addrs()
        .with_context(|| format!("resolve {address}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("{address} resolves to no address"))?;
    let local = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let s = UdpSocket::bind(local).context("bind UDP socket")?;
    s.connect(a).with_context(|| format!("connect {a}"))?;
    Ok(s)
}

/// A network sink's thread body.
pub type Runner =
    fn(String, NetSpec, SinkFormat, Context, Receiver<Arc<Record>>, Arc<SinkCounters>);

/// The loop that serves a network sink kind.
pub fn runner(kind: SinkKind) -> Runner {
    match kind {
        SinkKind::Udp => run_udp,
        _ => run_stream,
    }
}
