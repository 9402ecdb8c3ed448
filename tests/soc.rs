//! SOC log shipping through the real binary to real rsyslog receivers (imtcp, imudp, imtcp
//! with the gtls driver) on loopback: delivery, the disk spool across a collector outage,
//! drop accounting, format parse checks, log injection, and the report from an archive.

mod common;
use common::*;
use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RSYSLOGD: &str = "rsyslogd";

// ---------------------------------------------------------------------------------------------
// rsyslog as the SOC collector

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Tcp,
    Udp,
    Tls,
}

/// A foreground `rsyslogd` with one input writing each raw message as a line of `out`;
/// stopped on drop.
struct Rsyslog {
    dir: tempfile::TempDir,
    proto: Proto,
    port: u16,
    out: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    fn start(proto: Proto, tls: Option<(&str, &str, &str)>) -> Rsyslog {
        Self::start_with(proto, tls, "anon")
    }

    /// `auth` is the gtls driver's authMode: `anon`, or `x509/certvalid` to require a client
    /// certificate signed by the CA.
    fn start_with(proto: Proto, tls: Option<(&str, &str, &str)>, auth: &str) -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        let port = match proto {
            Proto::Udp => std::net::UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
            _ => free_port("127.0.0.1"),
        };
        let d = dir.path();
        let mut global = format!(
            "global(workDirectory=\"{}\" maxMessageSize=\"64k\"",
            d.display()
        );
        if let Some((ca, cert, key)) = tls {
            std::fs::write(d.join("ca.pem"), ca).unwrap();
            std::fs::write(d.join("cert.pem"), cert).unwrap();
            std::fs::write(d.join("key.pem"), key).unwrap();
            global.push_str(&format!(
                " DefaultNetstreamDriverCAFile=\"{0}/ca.pem\" DefaultNetstreamDriverCertFile=\"{0}/cert.pem\" DefaultNetstreamDriverKeyFile=\"{0}/key.pem\"",
                d.display()
            ));
        }
        global.push(')');
        let out = d.join("out.log");
        let input = match proto {
            Proto::Tcp => format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\")"),
            Proto::Udp => format!("module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\")"),
            Proto::Tls => format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\" ruleset=\"r\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" streamDriver.authMode=\"{auth}\")"),
        };
        let conf = format!(
            "{global}\n{input}\ntemplate(name=\"raw\" type=\"string\" string=\"%rawmsg%\\n\")\nruleset(name=\"r\") {{\n  action(type=\"omfile\" file=\"{}\" template=\"raw\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n}}\n",
            out.display()
        );
        std::fs::write(d.join("rsyslog.conf"), conf).unwrap();
        let mut r = Rsyslog {
            dir,
            proto,
            port,
            out,
            child: None,
        };
        r.run();
        r
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn run(&mut self) {
        let d = self.dir.path();
        let child = Command::new(RSYSLOGD)
            .arg("-n")
            .arg("-f")
            .arg(d.join("rsyslog.conf"))
            .arg("-i")
            .arg(d.join("rsyslog.pid"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("rsyslog.err")).unwrap())
            .spawn()
            .expect("start rsyslogd (deploy/deps.sh --test installs it)");
        self.child = Some(child);
        let port = self.port;
        wait_until("rsyslogd listening", Duration::from_secs(10), || {
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "rsyslogd exited with {st}: {}",
                    std::fs::read_to_string(d.join("rsyslog.err")).unwrap_or_default()
                );
            }
            match self.proto {
                Proto::Udp => udp_bound(port),
                _ => tcp_listening(port),
            }
        });
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether something listens on 127.0.0.1:port, from /proc (no connection is made, so the
/// receiver sees no empty session).
fn tcp_listening(port: u16) -> bool {
    proc_net_has("/proc/net/tcp", port, Some("0A"))
}

fn udp_bound(port: u16) -> bool {
    proc_net_has("/proc/net/udp", port, None)
}

fn proc_net_has(file: &str, port: u16, state: Option<&str>) -> bool {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let want = format!(":{port:04X}");
    text.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1].ends_with(&want) && state.is_none_or(|s| f[3] == s)
    })
}

// ---------------------------------------------------------------------------------------------
// Strict parsers for what the collector received

#[derive(Debug)]
struct Syslog {
    pri: u32,
    timestamp: String,
    hostname: String,
    app: String,
    msgid: String,
    sd: Vec<(String, Vec<(String, String)>)>,
    msg: String,
}

impl Syslog {
    fn param(&self, name: &str) -> Option<&str> {
        self.sd
            .iter()
            .flat_map(|(_, ps)| ps.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// RFC 5424, strictly: header fields, structured data with `\"`, `\\`, `\]` escapes.
fn parse_5424(line: &str) -> Result<Syslog, String> {
    let rest = line.strip_prefix('<').ok_or("no PRI")?;
    let (pri, rest) = rest.split_once('>').ok_or("PRI not closed")?;
    if pri.is_empty() || pri.len() > 3 || !pri.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("bad PRI {pri}"));
    }
    let pri: u32 = pri.parse().map_err(|_| "PRI")?;
    if pri > 191 {
        return Err("PRI out of range".into());
    }
    let rest = rest.strip_prefix("1 ").ok_or("version is not 1")?;
    let mut it = rest.splitn(6, ' ');
    let mut field = |n: &str| it.next().ok_or(format!("no {n}"));
    let timestamp = field("TIMESTAMP")?.to_string();
    let hostname = field("HOSTNAME")?.to_string();
    let app = field("APP-NAME")?.to_string();
    let procid = field("PROCID")?.to_string();
    let msgid = field("MSGID")?.to_string();
    let rest = field("SD")?;
    for (n, v, max) in [
        ("HOSTNAME", &hostname, 255),
        ("APP-NAME", &app, 48),
        ("PROCID", &procid, 128),
        ("MSGID", &msgid, 32),
    ] {
        if v.is_empty() || v.len() > max || !v.chars().all(|c| c.is_ascii_graphic()) {
            return Err(format!("bad {n} {v:?}"));
        }
    }
    // 2026-11-22T14:03:05.123+07:00
    let tb = timestamp.as_bytes();
    let ok_ts = timestamp.len() >= 20
        && tb[4] == b'-'
        && tb[7] == b'-'
        && tb[10] == b'T'
        && tb[13] == b':'
        && tb[16] == b':'
        && (timestamp.ends_with('Z') || timestamp[timestamp.len() - 6..].starts_with(['+', '-']));
    if !ok_ts {
        return Err(format!("bad TIMESTAMP {timestamp}"));
    }
    let mut sd = Vec::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut i = 0;
    if chars.first() == Some(&'-') {
        i = 1;
    } else {
        while chars.get(i) == Some(&'[') {
            i += 1;
            let start = i;
            while i < chars.len() && chars[i] != ' ' && chars[i] != ']' {
                i += 1;
            }
            let id: String = chars[start..i].iter().collect();
            let mut params = Vec::new();
            while chars.get(i) == Some(&' ') {
                i += 1;
                let ks = i;
                while i < chars.len() && chars[i] != '=' {
                    if !chars[i].is_ascii_graphic() || chars[i] == ']' || chars[i] == '"' {
                        return Err(format!("bad PARAM-NAME at {i}"));
                    }
                    i += 1;
                }
                let k: String = chars[ks..i].iter().collect();
                if chars.get(i + 1) != Some(&'"') {
                    return Err(format!("PARAM-VALUE of {k} not quoted"));
                }
                i += 2;
                let mut v = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(format!("PARAM-VALUE of {k} not closed")),
                        Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | ']')) => {
                            v.push(chars[i + 1]);
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(']') => return Err(format!("unescaped ] in {k}")),
                        Some(c) => {
                            v.push(*c);
                            i += 1;
                        }
                    }
                }
                params.push((k, v));
            }
            if chars.get(i) != Some(&']') {
                return Err(format!("SD-ELEMENT {id} not closed"));
            }
            i += 1;
            sd.push((id, params));
        }
    }
    let msg: String = chars[i..].iter().collect();
    let msg = match msg.strip_prefix(' ') {
        Some(m) => m.to_string(),
        None if msg.is_empty() => String::new(),
        None => return Err("no space before MSG".into()),
    };
    Ok(Syslog {
        pri,
        timestamp,
        hostname,
        app,
        msgid,
        sd,
        msg,
    })
}

/// CEF:0, strictly: seven `|`-separated header fields with `\|` and `\\`, then `key=value`
/// extensions where values escape `\`, `=`, and line breaks.
fn parse_cef(s: &str) -> Result<(Vec<String>, HashMap<String, String>), String> {
    let s = s.strip_prefix("CEF:").ok_or("no CEF: prefix")?;
    let chars: Vec<char> = s.chars().collect();
    let mut header = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while header.len() < 7 {
        match chars.get(i) {
            None => return Err("header ends early".into()),
            Some('\\') => match chars.get(i + 1) {
                Some(c @ ('|' | '\\')) => {
                    cur.push(*c);
                    i += 2;
                }
                _ => return Err("bad escape in header".into()),
            },
            Some('|') => {
                header.push(std::mem::take(&mut cur));
                i += 1;
            }
            Some(c) => {
                cur.push(*c);
                i += 1;
            }
        }
    }
    let ext: Vec<char> = chars[i..].to_vec();
    // Positions of unescaped `=`; each one's key is the word before it.
    let mut eqs = Vec::new();
    let mut j = 0;
    while j < ext.len() {
        match ext[j] {
            '\\' => j += 2,
            '=' => {
                eqs.push(j);
                j += 1;
            }
            c if c == '\n' || c == '\r' => return Err("raw line break in extension".into()),
            _ => j += 1,
        }
    }
    let mut map = HashMap::new();
    let mut key_starts = Vec::new();
    for &e in &eqs {
        let mut k = e;
        while k > 0 && ext[k - 1] != ' ' {
            k -= 1;
        }
        let key: String = ext[k..e].iter().collect();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("bad extension key {key:?}"));
        }
        key_starts.push((k, e, key));
    }
    for (n, (_, e, key)) in key_starts.iter().enumerate() {
        let end = key_starts
            .get(n + 1)
            .map(|(k, _, _)| k.saturating_sub(1))
            .unwrap_or(ext.len());
        let raw = &ext[e + 1..end.max(e + 1)];
        let mut v = String::new();
        let mut x = 0;
        while x < raw.len() {
            if raw[x] == '\\' {
                match raw.get(x + 1) {
                    Some('\\') => v.push('\\'),
                    Some('=') => v.push('='),
                    Some('n') => v.push('\n'),
                    Some('r') => v.push('\r'),
                    other => return Err(format!("bad escape \\{other:?} in {key}")),
                }
                x += 2;
            } else {
                v.push(raw[x]);
                x += 1;
            }
        }
        if map.insert(key.clone(), v).is_some() {
            return Err(format!("duplicate key {key}"));
        }
    }
    Ok((header, map))
}

// ---------------------------------------------------------------------------------------------
// Helpers

struct Setup {
    g: Gateway,
    _backend: Backend,
    state: tempfile::TempDir,
}

impl Setup {
    fn archive(&self) -> PathBuf {
        self.state.path().join("archive").join("events.log")
    }

    /// JSON lines of the local archive: the complete ones (the gateway may be writing the
    /// last one while the test reads).
    fn archive_json(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.archive()).unwrap_or_default();
        let complete = &text[..text.rfind('\n').map_or(0, |n| n + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("archive line is JSON"))
            .collect()
    }
}

/// A gateway with one tenant and the given `[[soc.sink]]` tables, plus a JSON archive sink.
fn start(sinks: &str, soc_extra: &str) -> Setup {
    let backend = Backend::start("b", "127.0.0.1");
    let state = tempfile::tempdir().unwrap();
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "access_log = false");
    cfg.push_str(&format!(
        "[soc]\nstate_dir = \"{s}\"\nname = \"gw-test\"\n{soc_extra}\n\n[[soc.sink]]\nname = \"archive\"\ntype = \"file\"\npath = \"{s}/archive/events.log\"\n\n{sinks}\n",
        s = state.path().display()
    ));
    let t = tenant("quangninh", &["quangninh.gov.vn"], &[backend.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    Setup {
        g,
        _backend: backend,
        state,
    }
}

/// `wait_until`, but a timeout also shows the gateway's log (sink state changes, drops).
fn wait_logged(what: &str, timeout: Duration, g: &Gateway, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log: Vec<String> = g
        .log_text()
        .lines()
        .filter(|l| l.contains("event=") || l.contains("ERROR") || l.contains("WARN"))
        .map(str::to_string)
        .collect();
    panic!(
        "timed out after {timeout:?} waiting for {what}; gateway log:\n{}",
        log.join("\n")
    );
}

fn seq_of_json(v: &serde_json::Value) -> u64 {
    v["event.sequence"].as_u64().expect("event.sequence")
}

const EVIL_UA: &str = "Cốc Cốc\" ] \\ | cs1=forged x=\"y";

// ---------------------------------------------------------------------------------------------
// Tests

/// The key guarantee: with a small memory queue, events produced while the collector is down
/// are spooled to disk and, once it is back, arrive exactly once and in sequence order, the
/// same sequence as the local archive holds. The outage lasts 3 seconds and well over a
/// thousand events, far more than the sink's 256-event memory queue can hold.
#[test]
fn tcp_collector_outage_loses_nothing_and_keeps_order() {
    let mut rs = Rsyslog::start(Proto::Tcp, None);
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc\"\ntype = \"tcp\"\naddress = \"{}\"\nformat = \"rfc5424\"\nreconnect_max = \"300ms\"\nqueue_size = 256\n",
            rs.addr()
        ),
        "",
    );
    let send = |n: usize, tag: &str| {
        for i in 0..n {
            let r = request(
                s.g.listen,
                "GET",
                Some("quangninh.gov.vn"),
                &format!("/tin-t%E1%BB%A9c/{tag}/{i}?q=H%E1%BA%A1+Long"),
                &[("User-Agent", EVIL_UA)],
                "",
            )
            .unwrap();
            assert_eq!(r.status, 200);
        }
    };
    send(50, "before");
    let archived = || s.archive_json().len();
    wait_until(
        "first events at the collector",
        Duration::from_secs(10),
        || rs.lines().len() >= 50 && rs.lines().len() == archived(),
    );

    rs.stop();
    let outage = Instant::now();
    send(300, "outage");
    let spool = s.state.path().join("spool").join("soc");
    wait_logged(
        "events spooled on disk",
        Duration::from_secs(10),
        &s.g,
        || {
            std::fs::read_dir(&spool)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                        .sum::<u64>()
                        > 300 * 200
                })
                .unwrap_or(false)
        },
    );
    // Keep the collector away for a while with traffic still flowing: at least 3 s and at
    // least 600 more events, however fast this machine is today.
    let mut sent = 0;
    while outage.elapsed() < Duration::from_secs(3) || sent < 600 {
        send(10, "outage2");
        sent += 10;
    }
    rs.run();
    send(50, "after");

    let archive_seqs = || -> Vec<u64> { s.archive_json().iter().map(seq_of_json).collect() };
    wait_until(
        "every event at the collector",
        Duration::from_secs(30),
        || rs.lines().len() >= archive_seqs().len(),
    );
    // Let anything extra (a duplicate) arrive before comparing.
    std::thread::sleep(Duration::from_millis(300));
    let received: Vec<Syslog> = rs
        .lines()
        .iter()
        .map(|l| parse_5424(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let got: Vec<u64> = received
        .iter()
        .map(|m| m.param("seq").unwrap().parse().unwrap())
        .collect();
    let want = archive_seqs();
    assert!(want.len() >= 1000, "{} events archived", want.len());
    let missing: Vec<_> = want.iter().filter(|n| !got.contains(n)).collect();
    let extra: Vec<_> = got.iter().filter(|n| !want.contains(n)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    assert!(got == want, "same events, once each, same order");
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "no gap in the sequence"
    );

    // Every received line is well-formed RFC 5424 with intact text.
    let access: Vec<&Syslog> = received
        .iter()
        .filter(|m| m.param("class") == Some("access"))
        .collect();
    assert!(access.len() >= 1000);
    for m in &access {
        assert_eq!(m.pri, 16 * 8 + 6, "local0.info");
        assert_eq!(m.hostname, "gw-test");
        assert_eq!(m.app, "cong");
        assert_eq!(m.msgid, "access");
        assert!(m.timestamp.ends_with("+07:00"), "{}", m.timestamp);
        assert_eq!(m.sd[0].0, "cong@32473");
        assert!(m.param("path").unwrap().starts_with("/tin-tức/"));
        assert_eq!(m.param("query"), Some("q=H%E1%BA%A1+Long"));
        assert_eq!(m.param("ua"), Some(EVIL_UA));
        assert_eq!(m.param("tenant"), Some("quangninh"));
        assert!(m.msg.starts_with("\u{feff}GET quangninh.gov.vn/tin-tức/"));
    }
    // The outage itself was reported, and delivered too.
    assert!(received
        .iter()
        .any(|m| m.msgid == "log_sink_down" && m.param("sink") == Some("soc")));
    assert!(s.g.log_text().contains("event=log_sink_down"));
}

/// UDP to imudp with CEF: every line parses, and header values with CEF and syslog
/// delimiters, a percent-encoded newline and Vietnamese text come out exactly as sent.
#[test]
fn udp_cef_survives_injection_attempts() {
    let rs = Rsyslog::start(Proto::Udp, None);
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc-udp\"\ntype = \"udp\"\naddress = \"{}\"\nformat = \"cef\"\nevents = [\"access\"]\n",
            rs.addr()
        ),
        "",
    );
    for i in 0..20 {
        let r = request(
            s.g.listen,
            "GET",
            Some("quangninh.gov.vn"),
            &format!("/a%0Aevent=forged%7Cx/{i}"),
            &[
                ("User-Agent", EVIL_UA),
                ("Referer", "https://quangninh.gov.vn/Hạ-Long"),
            ],
            "",
        )
        .unwrap();
        assert_eq!(r.status, 200);
    }
    wait_until(
        "datagrams at the collector",
        Duration::from_secs(10),
        || rs.lines().len() >= 20,
    );
    let mut seqs = Vec::new();
    for l in rs.lines() {
        assert!(!l.contains('\n'));
        let m = parse_5424(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(m.sd.is_empty());
        let (h, ext) = parse_cef(&m.msg).unwrap_or_else(|e| panic!("{e}: {}", m.msg));
        assert_eq!(h[0], "0");
        assert_eq!(&h[1..4], ["cong", "cong", env!("CARGO_PKG_VERSION")]);
        assert_eq!(h[4], "access");
        assert_eq!(ext["requestClientApplication"], EVIL_UA);
        assert_eq!(ext["cs1"], "quangninh", "no forged field");
        assert_eq!(ext["requestContext"], "https://quangninh.gov.vn/Hạ-Long");
        assert!(ext["request"].starts_with("/a\nevent=forged|x/"));
        assert_eq!(ext["cn2"], "200");
        seqs.push(ext["cn1"].parse::<u64>().unwrap());
    }
    assert_eq!(seqs.len(), 20);
    seqs.sort();
    seqs.dedup();
    assert_eq!(seqs.len(), 20, "distinct sequence numbers");
}

/// TLS (RFC 5425) to rsyslog's gtls driver, the collector's certificate checked against the
/// configured CA; a second sink whose CA does not match never connects, reports itself down,
/// spools, and the gateway keeps serving.
#[test]
fn tls_collector_is_verified() {
    let (ca, chain, key) = test_pki(&["localhost", "127.0.0.1"]);
    let rs = Rsyslog::start(Proto::Tls, Some((&ca, &chain, &key)));
    let (other_ca, _, _) = test_pki(&["localhost"]);
    let certs = tempfile::tempdir().unwrap();
    std::fs::write(certs.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(certs.path().join("other.pem"), &other_ca).unwrap();
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc-tls\"\ntype = \"tls\"\naddress = \"{a}\"\nserver_name = \"localhost\"\nca_file = \"{d}/ca.pem\"\nformat = \"json\"\n\n\
             [[soc.sink]]\nname = \"wrong-ca\"\ntype = \"tls\"\naddress = \"{a}\"\nserver_name = \"localhost\"\nca_file = \"{d}/other.pem\"\nreconnect_max = \"200ms\"\n",
            a = rs.addr(),
            d = certs.path().display()
        ),
        "",
    );
    for i in 0..30 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/x/{i}")).status, 200);
    }
    wait_until("events over TLS", Duration::from_secs(10), || {
        rs.lines()
            .iter()
            .filter(|l| l.contains("\"event.dataset\":\"cong.access\""))
            .count()
            >= 30
    });
    for l in rs.lines() {
        let m = parse_5424(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        let v: serde_json::Value = serde_json::from_str(&m.msg).unwrap();
        assert!(v["event.sequence"].as_u64().is_some());
    }
    wait_until(
        "the mismatching sink is reported",
        Duration::from_secs(10),
        || {
            s.archive_json()
                .iter()
                .any(|v| v["event.action"] == "log_sink_down" && v["cong.sink"] == "wrong-ca")
        },
    );
    assert_eq!(s.g.get("quangninh.gov.vn", "/still-serving").status, 200);
}

/// A collector that refuses connections and a spool of a few kilobytes: events beyond it are
/// dropped, counted, and reported as a `log_events_dropped` security event; serving goes on.
#[test]
fn full_spool_drops_with_a_counted_event() {
    let refused = free_addr("127.0.0.1");
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc\"\ntype = \"tcp\"\naddress = \"{refused}\"\nspool_max_bytes = 4096\nevents = [\"access\"]\nreconnect_max = \"200ms\"\n"
        ),
        "",
    );
    for i in 0..60 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/p/{i}")).status, 200);
    }
    wait_until(
        "a drop event in the archive",
        Duration::from_secs(10),
        || {
            s.archive_json().iter().any(|v| {
                v["event.action"] == "log_events_dropped"
                    && v["cong.sink"] == "soc"
                    && v["event.dataset"] == "cong.security"
            })
        },
    );
    let ev = s
        .archive_json()
        .into_iter()
        .find(|v| v["event.action"] == "log_events_dropped")
        .unwrap();
    let count: u64 = ev["cong.count"].as_str().unwrap().parse().unwrap();
    assert!(count > 0);
    assert!(s
        .archive_json()
        .iter()
        .any(|v| v["event.action"] == "log_sink_down" && v["cong.sink"] == "soc"));
    assert!(s.g.log_text().contains("event=log_events_dropped"));
    let spooled: u64 = std::fs::read_dir(s.state.path().join("spool/soc"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(spooled <= 4096, "spool stays within its limit: {spooled}");
}

/// SIGTERM with the collector down: events still queued end up in the spool, and the next
/// start resumes the sequence above the last number used.
#[test]
fn graceful_shutdown_spools_and_sequence_resumes() {
    let refused = free_addr("127.0.0.1");
    let mut s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc\"\ntype = \"tcp\"\naddress = \"{refused}\"\nevents = [\"access\"]\n"
        ),
        "",
    );
    for i in 0..10 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/p/{i}")).status, 200);
    }
    s.g.signal(libc::SIGTERM);
    assert!(s.g.wait_exit(Duration::from_secs(15)).is_some());
    let spool = s.state.path().join("spool/soc");
    let spooled: u64 = std::fs::read_dir(&spool)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(spooled > 0, "queued events are in the spool");
    let last = s.archive_json().iter().map(seq_of_json).max().unwrap();
    let next: u64 = std::fs::read_to_string(s.state.path().join("sequence"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(next, last + 1, "a clean stop records the exact next number");
}

/// `cong check` names the file, line, column and key of a bad CA file.
#[test]
fn bad_ca_file_is_a_located_config_error() {
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "");
    cfg.push_str("[soc]\nstate_dir = \"/tmp\"\n\n[[soc.sink]]\nname = \"soc\"\ntype = \"tls\"\naddress = \"127.0.0.1:6514\"\nca_file = \"missing-ca.pem\"\n");
    let t = tenant("t", &["t.gov.vn"], &[free_addr("127.0.0.1")], "");
    let (ok, out, _d) = check(&cfg, &[("t.toml", &t)]);
    assert!(!ok);
    assert!(
        out.contains("cong.toml:22:11: `soc.sink.ca_file`: cannot read"),
        "{out}"
    );
}

fn write_test_archive(dir: &Path) -> PathBuf {
    let path = dir.join("events.log");
    let ev = |ts: &str, tenant: &str, action: &str, ds: &str, extra: &str| {
        format!("{{\"@timestamp\":\"{ts}\",\"event.sequence\":1,\"event.dataset\":\"{ds}\",\"event.action\":\"{action}\",\"organization.id\":\"{tenant}\",\"message\":\"event={action}\"{extra}}}\n")
    };
    let mut text = String::new();
    for _ in 0..3 {
        text.push_str(&ev("2026-11-16T09:00:00.000+07:00", "quangninh", "waf_block", "cong.security",
            ",\"source.ip\":\"198.51.100.7\",\"source.geo.country_iso_code\":\"XX\",\"rule.id\":[\"942100\",\"949110\"]"));
    }
    text.push_str(&ev("2026-11-17T10:00:00.000+07:00", "halong", "waf_match", "cong.security",
        ",\"source.ip\":\"203.0.113.50\",\"source.geo.country_iso_code\":\"YY\",\"rule.id\":\"941100\""));
    text.push_str(&ev(
        "2026-11-17T11:00:00.000+07:00",
        "halong",
        "ban",
        "cong.security",
        ",\"source.ip\":\"203.0.113.50\"",
    ));
    text.push_str(&ev(
        "2026-11-18T02:00:00.000+07:00",
        "quangninh",
        "cert_expiring",
        "cong.security",
        ",\"cong.days\":\"7\"",
    ));
    text.push_str(&ev(
        "2026-11-18T03:00:00.000+07:00",
        "quangninh",
        "backend_down",
        "cong.ops",
        ",\"cong.addr\":\"10.0.0.1:80\"",
    ));
    text.push_str(&ev(
        "2026-11-18T03:05:00.000+07:00",
        "quangninh",
        "access",
        "cong.access",
        ",\"http.response.status_code\":502",
    ));
    // Outside the period.
    text.push_str(&ev(
        "2026-11-30T03:00:00.000+07:00",
        "quangninh",
        "waf_block",
        "cong.security",
        ",\"source.ip\":\"192.0.2.1\"",
    ));
    std::fs::write(&path, &text).unwrap();
    // A rotated, compressed file of the same archive is read too.
    let gz = std::fs::File::create(dir.join("events-20261117-000000.log.gz")).unwrap();
    let mut enc = flate2::write::GzEncoder::new(gz, flate2::Compression::default());
    use std::io::Write;
    enc.write_all(
        ev(
            "2026-11-17T12:00:00.000+07:00",
            "hue",
            "waf_block",
            "cong.security",
            ",\"source.ip\":\"198.51.100.7\",\"rule.id\":\"932100\"",
        )
        .as_bytes(),
    )
    .unwrap();
    enc.finish().unwrap();
    path
}

#[test]
fn soc_report_from_an_archive() {
    let d = tempfile::tempdir().unwrap();
    let archive = write_test_archive(d.path());
    let run = |extra: &[&str]| {
        let out = Command::new(CONG)
            .args([
                "report",
                "soc",
                "--from",
                "2026-11-16",
                "--to",
                "2026-11-22",
                "--archive",
            ])
            .arg(&archive)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let json: serde_json::Value = serde_json::from_str(&run(&["--format", "json"])).unwrap();
    assert_eq!(json["blocks"], 4);
    assert_eq!(json["detections"], 1);
    assert_eq!(json["bans"], 1);
    assert_eq!(json["requests"], 1);
    assert_eq!(json["server_errors"], 1);
    assert_eq!(
        json["attacked_tenants"][0],
        serde_json::json!(["quangninh", 3])
    );
    assert_eq!(
        json["top_sources"][0],
        serde_json::json!(["198.51.100.7", 4])
    );
    let cats = json["categories"].to_string();
    assert!(cats.contains("[\"SQL injection\",3]"), "{cats}");
    assert!(cats.contains("cross-site scripting"));
    assert!(cats.contains("remote code execution"));
    assert!(!cats.contains("anomaly"), "score rules are not a technique");
    assert_eq!(json["certificate_incidents"][0]["kind"], "cert_expiring");
    assert_eq!(json["availability_incidents"][0]["kind"], "backend_down");
    assert!(!json.to_string().contains("192.0.2.1"), "period respected");

    let text = run(&[]);
    assert!(text.contains("Hệ thống bị tấn công / attacked tenants"));
    assert!(text.contains("198.51.100.7"));
    let html = run(&["--format", "html", "--tenant", "halong"]);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("203.0.113.50"));
    assert!(!html.contains("198.51.100.7"), "tenant filter");

    // Without --archive: the JSON file sink of the configuration.
    let listen = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, free_addr("127.0.0.1"), "");
    cfg.push_str(&format!(
        "[soc]\nstate_dir = \"{d}\"\n\n[[soc.sink]]\nname = \"soc\"\ntype = \"tcp\"\naddress = \"127.0.0.1:6514\"\nformat = \"cef\"\n\n[[soc.sink]]\nname = \"archive\"\ntype = \"file\"\npath = \"{a}\"\n",
        d = d.path().display(),
        a = archive.display()
    ));
    let t = tenant("t", &["t.gov.vn"], &[free_addr("127.0.0.1")], "");
    let cdir = tempfile::tempdir().unwrap();
    write_config(cdir.path(), &cfg, &[("t.toml", &t)]);
    let out = Command::new(CONG)
        .args([
            "report",
            "soc",
            "--from",
            "2026-11-16",
            "--to",
            "2026-11-22",
            "--format",
            "json",
            "-c",
        ])
        .arg(cdir.path().join("cong.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["blocks"], 4);

    let bad = Command::new(CONG)
        .args([
            "report",
            "soc",
            "--from",
            "2026-13-01",
            "--to",
            "2026-11-22",
            "--archive",
        ])
        .arg(&archive)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn unreachable_collector_keeps_the_gateway_serving() {
    let s = start(
        "[[soc.sink]]\nname = \"soc\"\ntype = \"tcp\"\naddress = \"127.0.0.1:1\"\nconnect_timeout = \"200ms\"\n",
        "",
    );
    let t = Instant::now();
    for i in 0..20 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/{i}")).status, 200);
    }
    assert!(t.elapsed() < Duration::from_secs(5));
    wait_until("sink down event", Duration::from_secs(10), || {
        s.g.log_text().contains("event=log_sink_down")
    });
    let _ = TcpStream::connect_timeout(&s.g.listen, Duration::from_secs(1)).unwrap();
}

/// The archive rotates by size into gzipped files beside it, and the report reads them all.
#[test]
fn archive_rotates_compresses_and_stays_readable() {
    let state = tempfile::tempdir().unwrap();
    let backend = Backend::start("b", "127.0.0.1");
    let listen = free_addr("127.0.0.1");
    let admin = free_addr("127.0.0.1");
    let mut cfg = base_config(listen, admin, "access_log = false");
    cfg.push_str(&format!(
        "[soc]\nstate_dir = \"{s}\"\n\n[[soc.sink]]\nname = \"archive\"\ntype = \"file\"\npath = \"{s}/a/events.log\"\nrotate_bytes = 8192\nevents = [\"access\"]\n",
        s = state.path().display()
    ));
    let t = tenant("quangninh", &["quangninh.gov.vn"], &[backend.addr], "");
    let g = Gateway::start(&cfg, &[("t.toml", &t)], listen, admin);
    let dir = state.path().join("a");
    let gz_count = || {
        std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".log.gz"))
                    .count()
            })
            .unwrap_or(0)
    };
    // About 700 bytes per event: 300 events make over 20 rotations.
    let sent = 300;
    for i in 0..sent {
        assert_eq!(g.get("quangninh.gov.vn", &format!("/r/{i}")).status, 200);
    }
    wait_until("rotated files compressed", Duration::from_secs(20), || {
        gz_count() >= 10
    });
    wait_until("every event archived", Duration::from_secs(10), || {
        let out = Command::new(CONG)
            .args([
                "report",
                "soc",
                "--from",
                "2000-01-01",
                "--to",
                "2100-01-01",
                "--format",
                "json",
                "--archive",
            ])
            .arg(dir.join("events.log"))
            .output()
            .unwrap();
        // A file being compressed may vanish between listing and reading: try again.
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .is_ok_and(|v| v["requests"].as_u64() == Some(sent as u64))
    });
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        assert!(
            e.metadata().unwrap().len() <= 8192
                || !e.file_name().to_string_lossy().ends_with(".log")
        );
    }
}

/// A minimal HTTP/1.1 collector that stores the JSON arrays POSTed to it and answers the
/// first `fail_first` requests with 503.
struct HttpCollector {
    addr: SocketAddr,
    events: std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl HttpCollector {
    fn start(fail_first: u64) -> HttpCollector {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let fails = Arc::new(AtomicU64::new(fail_first));
        let (ev, st) = (events.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (ev, fails) = (ev.clone(), fails.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn);
                    loop {
                        let mut len = 0usize;
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        assert!(line.starts_with("POST /bulk HTTP/1.1"), "{line}");
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            if h.trim().is_empty() {
                                break;
                            }
                            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let failing = fails
                            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                            .is_ok();
                        let resp: &[u8] = if failing {
                            b"HTTP/1.1 503 Busy\r\nContent-Length: 4\r\n\r\nbusy"
                        } else {
                            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                            ev.lock()
                                .unwrap()
                                .extend(v.as_array().unwrap().iter().cloned());
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if r.get_mut().write_all(resp).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        HttpCollector { addr, events, stop }
    }
}

impl Drop for HttpCollector {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// JSON batches over HTTP: a collector that first answers 503 still gets every event once,
/// in order (the refused batches wait in the spool).
#[test]
fn http_batches_survive_refusals() {
    let c = HttpCollector::start(3);
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"siem\"\ntype = \"http\"\nurl = \"http://{}/bulk\"\nbatch_max = 7\nreconnect_max = \"200ms\"\n",
            c.addr
        ),
        "",
    );
    for i in 0..60 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/h/{i}")).status, 200);
    }
    let archived = || -> Vec<u64> { s.archive_json().iter().map(seq_of_json).collect() };
    let received = || -> Vec<u64> { c.events.lock().unwrap().iter().map(seq_of_json).collect() };
    wait_logged("every event posted", Duration::from_secs(15), &s.g, || {
        let a = archived();
        a.len() >= 60 && received().len() >= a.len()
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(received(), archived());
    assert!(c
        .events
        .lock()
        .unwrap()
        .iter()
        .any(|v| v["event.action"] == "log_sink_down"));
}

/// A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all PEM:
/// (ca, server chain, server key, client chain, client key).
fn pki_with_client() -> (String, String, String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "SOC test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
    let (client, client_key) = leaf(vec!["gw-test".into()], "gw-test");
    (ca.pem(), server, server_key, client, client_key)
}

/// A collector that requires a client certificate (gtls `x509/certvalid`) accepts the
/// gateway's configured one.
#[test]
fn tls_client_certificate_is_presented() {
    let (ca, server, server_key, client, client_key) = pki_with_client();
    let rs = Rsyslog::start_with(
        Proto::Tls,
        Some((&ca, &server, &server_key)),
        "x509/certvalid",
    );
    let d = tempfile::tempdir().unwrap();
    for (n, v) in [
        ("ca.pem", &ca),
        ("client.pem", &client),
        ("client.key", &client_key),
    ] {
        std::fs::write(d.path().join(n), v).unwrap();
    }
    let s = start(
        &format!(
            "[[soc.sink]]\nname = \"soc-mtls\"\ntype = \"tls\"\naddress = \"{0}\"\nserver_name = \"localhost\"\nca_file = \"{d}/ca.pem\"\nclient_cert = \"{d}/client.pem\"\nclient_key = \"{d}/client.key\"\nevents = [\"access\"]\n\n\
             [[soc.sink]]\nname = \"no-cert\"\ntype = \"tls\"\naddress = \"{0}\"\nserver_name = \"localhost\"\nca_file = \"{d}/ca.pem\"\nformat = \"json\"\nevents = [\"access\"]\nreconnect_max = \"200ms\"\n",
            rs.addr(),
            d = d.path().display()
        ),
        "",
    );
    for i in 0..10 {
        assert_eq!(s.g.get("quangninh.gov.vn", &format!("/m/{i}")).status, 200);
    }
    wait_until("events over mutual TLS", Duration::from_secs(10), || {
        rs.lines().len() >= 10
    });
    // The sink without a client certificate is refused and says so.
    wait_until(
        "the refused sink is reported",
        Duration::from_secs(10),
        || {
            s.archive_json()
                .iter()
                .any(|v| v["event.action"] == "log_sink_down" && v["cong.sink"] == "no-cert")
        },
    );
    for l in rs.lines() {
        let m = parse_5424(&l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert_eq!(
            m.param("class"),
            Some("access"),
            "nothing from the sink without a certificate"
        );
    }
}

/// During a binary upgrade two processes share the state directory for a while: the new one
/// leaves the sequence file, spools and archive to the old one until it exits, then carries
/// the numbering on.
#[test]
fn a_second_process_waits_for_the_state_directory() {
    let state = tempfile::tempdir().unwrap();
    let backend = Backend::start("b", "127.0.0.1");
    let t = tenant("quangninh", &["quangninh.gov.vn"], &[backend.addr], "");
    let gateway = || {
        let listen = free_addr("127.0.0.1");
        let admin = free_addr("127.0.0.1");
        let mut cfg = base_config(listen, admin, "access_log = false");
        cfg.push_str(&format!(
            "[soc]\nstate_dir = \"{s}\"\n\n[[soc.sink]]\nname = \"archive\"\ntype = \"file\"\npath = \"{s}/archive/events.log\"\nevents = [\"access\"]\n",
            s = state.path().display()
        ));
        Gateway::start(&cfg, &[("t.toml", &t)], listen, admin)
    };
    let archive = state.path().join("archive/events.log");
    let seqs = || -> Vec<u64> {
        std::fs::read_to_string(&archive)
            .unwrap_or_default()
            .lines()
            .map(|l| seq_of_json(&serde_json::from_str(l).unwrap()))
            .collect()
    };
    let mut old = gateway();
    for i in 0..5 {
        assert_eq!(
            old.get("quangninh.gov.vn", &format!("/old/{i}")).status,
            200
        );
    }
    wait_until("old process archived", Duration::from_secs(10), || {
        seqs().len() == 5
    });

    let new = gateway();
    for i in 0..5 {
        assert_eq!(
            new.get("quangninh.gov.vn", &format!("/new/{i}")).status,
            200
        );
    }
    wait_until("the new process notices", Duration::from_secs(10), || {
        new.log_text().contains("is in use by another cong process")
    });
    assert_eq!(seqs().len(), 5, "the new process waits");

    old.signal(libc::SIGTERM);
    assert!(old.wait_exit(Duration::from_secs(15)).is_some());
    wait_until("new process archived", Duration::from_secs(10), || {
        seqs().len() == 10
    });
    let s = seqs();
    assert!(
        s.windows(2).all(|w| w[1] > w[0]),
        "numbering goes on: {s:?}"
    );
}

/// Mistakes in `[soc]` are named by file, line, column and key.
#[test]
fn soc_config_errors_are_located() {
    let t = tenant("t", &["t.gov.vn"], &[free_addr("127.0.0.1")], "");
    let cases = [
        (
            "[[soc.sink]]\nname = \"a\"\ntype = \"file\"\npath = \"x.log\"\nevents = [\"all\"]\n",
            "`soc.sink.events`: unknown event class `all`",
        ),
        (
            "[[soc.sink]]\nname = \"a\"\ntype = \"http\"\nurl = \"ftp://siem\"\n",
            "`soc.sink.url`: expected http://",
        ),
        (
            "[[soc.sink]]\nname = \"a\"\ntype = \"tcp\"\naddress = \"10.0.0.1\"\n",
            "`soc.sink.address`: expected IP:PORT",
        ),
        (
            "[[soc.sink]]\nname = \"a\"\ntype = \"file\"\n",
            "`soc.sink.path`: sink `a` needs `path`",
        ),
        (
            "[[soc.sink]]\nname = \"a\"\ntype = \"syslog\"\n",
            "unknown variant `syslog`",
        ),
        ("[soc.x]\n", "unknown field `x`"),
    ];
    for (sink, want) in cases {
        let listen = free_addr("127.0.0.1");
        let mut cfg = base_config(listen, free_addr("127.0.0.1"), "");
        cfg.push_str("[soc]\nstate_dir = \"/tmp\"\nutc_offset = \"+07:00\"\n\n");
        cfg.push_str(sink);
        let (ok, out, _d) = check(&cfg, &[("t.toml", &t)]);
        assert!(!ok, "{sink}");
        assert!(
            out.contains("cong.toml:") && out.contains(want),
            "{want}\n{out}"
        );
    }
}
