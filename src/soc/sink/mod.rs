//! Sinks: where encoded events go. Each sink runs on its own thread with its own bounded queue
//! fed by the dispatcher, so a slow or dead destination never holds up the request path or the
//! other sinks. `file` writes the local archive (rotation, compression, retention); `net`
//! speaks syslog over UDP, TCP (RFC 6587 octet counting) and TLS (RFC 5425), or POSTs JSON
//! batches over HTTP(S), spooling to disk while the collector is away. Sinks own their destination and counters only; they never
//! assign sequence numbers or decide which events they get (the dispatcher's filter does).

pub mod file;
pub mod net;

use super::event::{Class, Record};
use crate::config::{SinkFormat, SinkKind};
use crate::events::{self, Event, Severity};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// A sink's runtime settings, checked and resolved from `[[soc.sink]]`.
#[derive(Clone)]
pub struct SinkSpec {
    pub name: String,
    pub kind: SinkKind,
    pub format: SinkFormat,
    pub classes: Vec<Class>,
    pub queue_size: usize,
    pub file: Option<FileSpec>,
    pub net: Option<NetSpec>,
}

#[derive(Clone, Debug)]
pub struct FileSpec {
    pub path: PathBuf,
    pub rotate_bytes: u64,
    pub rotate_daily: bool,
    pub compress: bool,
    pub retention: Duration,
}

#[derive(Clone)]
pub struct NetSpec {
    pub address: String,
    pub tls: Option<net::TlsSpec>,
    /// Set for HTTP(S) sinks: messages are POSTed as JSON arrays instead of syslog frames.
    pub http: Option<HttpTarget>,
    pub spool_dir: PathBuf,
    pub spool_max: u64,
    pub connect_timeout: Duration,
    pub write_timeout: Duration,
    pub reconnect_max: Duration,
}

/// Where an HTTP(S) sink POSTs.
#[derive(Clone, Debug)]
pub struct HttpTarget {
    /// `Host` header value.
    pub host: String,
    pub path: String,
    pub batch_max: usize,
}

/// Counters of one sink, plain atomics a metrics endpoint can read.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Events waiting in this sink's memory queue.
    pub queue_depth: AtomicU64,
    /// Events written to the destination.
    pub sent: AtomicU64,
    /// Events dropped: queue full, spool full, write failures of sinks without a spool.
    pub dropped: AtomicU64,
    /// Bytes waiting in the disk spool.
    pub spool_bytes: AtomicU64,
    /// Times the destination went down (connection, write or file errors).
    pub errors: AtomicU64,
    /// Whether the destination is currently reachable.
    pub up: AtomicBool,
}

/// How long a sink or the dispatcher waits after the first event of a batch. Waking a thread
/// per event costs more CPU than building the event; a few milliseconds of delay does not
/// matter to a log.
pub(crate) const LINGER: Duration = Duration::from_millis(5);

/// Takes what is queued: waits up to `wait` for the first record, then drains without waiting,
/// up to `max`. The bool is true when the dispatcher is gone (shutdown).
pub(crate) fn take_batch(
    rx: &Receiver<Arc<Record>>,
    wait: Duration,
    max: usize,
    counters: &SinkCounters,
) -> (Vec<Arc<Record>>, bool) {
    let mut out = Vec::new();
    let mut closed = false;
    match rx.recv_timeout(wait) {
        Ok(r) => {
            out.push(r);
            // Let a batch gather instead of waking up (and writing) once per event.
            std::thread::sleep(LINGER);
        }
        Err(RecvTimeoutError::Timeout) => {}
        Err(RecvTimeoutError::Disconnected) => closed = true,
    }
    while !closed && !out.is_empty() && out.len() < max {
        match rx.try_recv() {
            Ok(r) => out.push(r),
            Err(std::sync::mpsc::TryRecvError::Empty) => break,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => closed = true,
        }
    }
    counters
        .queue_depth
        .fetch_sub(out.len() as u64, Ordering::Relaxed);
    (out, closed)
}

/// Reports a sink's state change once per transition (not once per failed write).
pub(crate) fn set_up(name: &str, counters: &SinkCounters, up: bool, cause: &str) {
    let was = counters.up.swap(up, Ordering::Relaxed);
    if was == up {
        return;
    }
    let ev = if up {
        Event::new("log_sink_up", Severity::Notice)
    } else {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        Event::new("log_sink_down", Severity::Error).field("cause", cause)
    };
    events::emit(ev.field("sink", name));
}
