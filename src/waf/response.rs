//! Response phases of a tenant's WAF transaction: phase 3 on the backend's status and
//! headers, phase 4 on its body, which is held back until it has been inspected.
//!
//! Owns the transaction once the request phases are done, the response bytes held back
//! while phase 4 waits for them, and their decompression for inspection (gzip and deflate;
//! the bytes passed on are the backend's, unchanged). It decides, it does not answer: the
//! pipeline in `proxy` rewrites a refused response or ends the connection.

use super::{ResponseInspection, Transaction};
use crate::waf::Intervention;
use bytes::{Bytes, BytesMut};
use std::io::Write;
use std::sync::Arc;

/// A writer that keeps the first `cap` bytes and drops the rest (bounds what a
/// decompressor can make of a small compressed body).
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let room = self.cap.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&b[..b.len().min(room)]);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capped {
    fn full(&self) -> bool {
        self.buf.len() >= self.cap
    }
}

enum Decoder {
    Identity(Capped),
    Gzip(Box<flate2::write::MultiGzDecoder<Capped>>),
    Deflate(Box<flate2::write::ZlibDecoder<Capped>>),
}

impl Decoder {
    fn feed(&mut self, b: &[u8]) {
        // A stream that does not decompress is inspected as far as it went.
        let _ = match self {
            Decoder::Identity(c) => c.write_all(b),
            Decoder::Gzip(d) => d.write_all(b),
            Decoder::Deflate(d) => d.write_all(b),
        };
    }

    fn out(&self) -> &Capped {
        match self {
            Decoder::Identity(c) => c,
            Decoder::Gzip(d) => d.get_ref(),
            Decoder::Deflate(d) => d.get_ref(),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Decoder::Identity(c) => c.buf,
            Decoder::Gzip(mut d) => {
                let _ = d.flush();
                d.get_mut().buf.split_off(0)
            }
            Decoder::Deflate(mut d) => {
                let _ = d.flush();
                d.get_mut().buf.split_off(0)
            }
        }
    }
}

/// What the response phases make of a response's headers.
pub struct HeaderVerdict {
    pub intervention: Option<Intervention>,
    /// Why the body is not inspected, when it is not (for the record).
    pub body_skipped: Option<&'static str>,
}

/// The response phases of one request.
pub struct ResponseScan {
    t: Box<Transaction>,
    cfg: Arc<ResponseInspection>,
    limit: usize,
    decoder: Option<Decoder>,
    held: Vec<Bytes>,
    held_len: usize,
}

impl ResponseScan {
    pub fn new(t: Box<Transaction>, cfg: Arc<ResponseInspection>) -> ResponseScan {
        ResponseScan {
            t,
            limit: cfg.limit,
            cfg,
            decoder: None,
            held: Vec::new(),
            held_len: 0,
        }
    }

    pub fn transaction(&self) -> &Transaction {
        &self.t
    }

    /// The transaction, once the response phases are over (for the logging phase).
    pub fn into_transaction(self) -> Box<Transaction> {
        self.t
    }

    /// Runs phase 3, and phase 4 at once when the body will not be read (its type is not
    /// inspected, it is encoded in a way the WAF does not read, or there is none); otherwise
    /// the body is held from now on.
    pub fn headers(
        &mut self,
        status: u16,
        version: http::Version,
        headers: &http::HeaderMap,
        head_request: bool,
    ) -> HeaderVerdict {
        let protocol = match version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2.0",
            _ => "HTTP/1.1",
        };
        let i = self.t.process_response_headers(
            status,
            protocol,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        );
        if i.is_some() {
            return HeaderVerdict {
                intervention: i,
                body_skipped: None,
            };
        }
        let header = |n: http::header::HeaderName| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        let no_body = head_request
            || matches!(status, 204 | 304)
            || (100..200).contains(&status)
            || header(http::header::CONTENT_LENGTH) == "0";
        let capped = || Capped {
            buf: Vec::new(),
            cap: self.limit,
        };
        let skipped = if no_body {
            Some("no body")
        } else if !self.cfg.wants(&header(http::header::CONTENT_TYPE)) {
            Some("content type not inspected")
        } else {
            match header(http::header::CONTENT_ENCODING).as_str() {
                "" | "identity" => {
                    self.decoder = Some(Decoder::Identity(capped()));
                    None
                }
                "gzip" | "x-gzip" => {
                    self.decoder = Some(Decoder::Gzip(Box::new(
                        flate2::write::MultiGzDecoder::new(capped()),
                    )));
                    None
                }
                "deflate" => {
                    self.decoder = Some(Decoder::Deflate(Box::new(
                        flate2::write::ZlibDecoder::new(capped()),
                    )));
                    None
                }
                _ => Some("content encoding not inspected"),
            }
        };
        if skipped.is_some() {
            return HeaderVerdict {
                intervention: self.t.process_response_body(Vec::new()),
                body_skipped: skipped,
            };
        }
        HeaderVerdict {
            intervention: None,
            body_skipped: None,
        }
    }

    /// Whether body chunks are still being held for phase 4.
    pub fn holding(&self) -> bool {
        self.decoder.is_some()
    }

    /// Takes one response body chunk. While the body is held, `data` leaves empty; once it
    /// is complete (or the inspection limit is reached) phase 4 runs: passed, `data` carries
    /// everything held so far; refused, the intervention is returned and nothing of the body
    /// is passed on.
    pub fn body(&mut self, data: &mut Option<Bytes>, end: bool) -> Option<Intervention> {
        let dec = self.decoder.as_mut()?;
        if let Some(b) = data.take() {
            if !dec.out().full() {
                dec.feed(&b);
            }
            self.held_len += b.len();
            self.held.push(b);
        }
        if !end && !dec.out().full() && self.held_len < self.limit {
            return None;
        }
        let body = self.decoder.take().map(Decoder::finish).unwrap_or_default();
        if let Some(i) = self.t.process_response_body(body) {
            self.held.clear();
            return Some(i);
        }
        let held = std::mem::take(&mut self.held);
        *data = match held.len() {
            0 => None,
            1 => held.into_iter().next(),
            _ => {
                let mut all = BytesMut::with_capacity(self.held_len);
                for b in held {
                    all.extend_from_slice(&b);
                }
                Some(all.freeze())
            }
        };
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::waf::rules::{Mode, RuleSet};

    fn scan(rules: &str) -> ResponseScan {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("r.conf");
        std::fs::write(&f, rules).unwrap();
        let set = Arc::new(RuleSet::load(&[f]).unwrap());
        let mut t = Transaction::new(set, Mode::On, "r1");
        t.set_request_line("GET", "/", "HTTP/1.1");
        t.process_request_headers();
        t.process_request_body();
        let cfg = ResponseInspection {
            limit: 64,
            ..ResponseInspection::default()
        };
        ResponseScan::new(Box::new(t), Arc::new(cfg))
    }

    fn html(extra: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        for (k, v) in extra {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const LEAK: &str = "SecRule RESPONSE_BODY \"@contains SQL syntax\" \
                        \"id:1,phase:4,deny,status:403,log\"\n\
                        SecRule RESPONSE_STATUS \"@streq 599\" \"id:2,phase:3,deny,log\"\n";

    #[test]
    fn a_body_is_held_until_inspected_then_passed_whole() {
        let mut s = scan(LEAK);
        let v = s.headers(200, http::Version::HTTP_11, &html(&[]), false);
        assert!(v.intervention.is_none() && v.body_skipped.is_none());
        let mut d = Some(Bytes::from_static(b"<p>xin "));
        assert!(s.body(&mut d, false).is_none());
        assert!(d.is_none(), "held back");
        let mut d = Some(Bytes::from_static(b"chao</p>"));
        assert!(s.body(&mut d, true).is_none());
        assert_eq!(d.as_deref(), Some(&b"<p>xin chao</p>"[..]));
        assert!(!s.holding());
    }

    #[test]
    fn a_leaking_body_is_refused_and_nothing_passes() {
        let mut s = scan(LEAK);
        s.headers(200, http::Version::HTTP_11, &html(&[]), false);
        let mut d = Some(Bytes::from_static(b"You have an error in your SQL syntax"));
        let i = s.body(&mut d, true).expect("refused");
        assert_eq!((i.status, i.rule_id), (403, 1));
        assert!(d.is_none());
    }

    #[test]
    fn gzip_bodies_are_inspected_decompressed_and_passed_compressed() {
        let mut s = scan(LEAK);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"Warning: You have an error in your SQL syntax near")
            .unwrap();
        let gz = enc.finish().unwrap();
        s.headers(
            200,
            http::Version::HTTP_11,
            &html(&[("content-encoding", "gzip")]),
            false,
        );
        let mut d = Some(Bytes::from(gz));
        assert!(s.body(&mut d, true).is_some(), "seen through gzip");
    }

    #[test]
    fn past_the_limit_the_body_streams_on() {
        let mut s = scan(LEAK);
        s.headers(200, http::Version::HTTP_11, &html(&[]), false);
        let mut d = Some(Bytes::from(vec![b'a'; 100]));
        assert!(s.body(&mut d, false).is_none());
        assert_eq!(d.map(|b| b.len()), Some(100), "released at the limit");
        // Later chunks pass as they come, uninspected.
        let mut d = Some(Bytes::from_static(b"You have an error in your SQL syntax"));
        assert!(s.body(&mut d, true).is_none());
        assert!(d.is_some());
    }

    #[test]
    fn headers_alone_can_refuse_and_uninspected_types_are_not_held() {
        let mut s = scan(LEAK);
        let v = s.headers(599, http::Version::HTTP_11, &html(&[]), false);
        assert_eq!(v.intervention.map(|i| i.rule_id), Some(2));
        let mut s = scan(LEAK);
        let mut h = http::HeaderMap::new();
        h.insert("content-type", "image/png".parse().unwrap());
        let v = s.headers(200, http::Version::HTTP_11, &h, false);
        assert_eq!(v.body_skipped, Some("content type not inspected"));
        assert!(!s.holding());
        let mut d = Some(Bytes::from_static(b"SQL syntax"));
        assert!(s.body(&mut d, true).is_none());
        assert!(d.is_some());
    }
}
