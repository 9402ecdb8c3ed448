//! The disk spool of one network sink: messages a collector could not take yet, kept in order
//! in segment files (`NNNNNNNNNNNNNNNNNNNN.seg`, each a run of 4-byte big-endian length +
//! message) with a `cursor` file saying how far delivery got, so they survive a restart and
//! are replayed first; a record cut short by a crash is trimmed at open. Bounded in bytes:
//! `push` refuses when full and the caller counts the drop. Owns its directory only; it never
//! talks to the network and is used by one thread.

use anyhow::Context as _;
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Segment ids, oldest first, with their sizes.
    segs: VecDeque<(u64, u64)>,
    /// Bytes in all segments, including the delivered part of the first one.
    total: u64,
    /// Read position in the first segment.
    read_off: u64,
    writer: Option<BufWriter<File>>,
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, finding what an earlier run left.
    pub fn open(dir: &Path, max_bytes: u64) -> anyhow::Result<Spool> {
        fs::create_dir_all(dir).with_context(|| format!("create spool {}", dir.display()))?;
        let mut segs = Vec::new();
        for e in fs::read_dir(dir).with_context(|| format!("read spool {}", dir.display()))? {
            let e = e?;
            let name = e.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                segs.push((id, e.metadata()?.len()));
            }
        }
        segs.sort();
        // A crash in the middle of an append leaves a partial record at the very end.
        if let Some(last) = segs.last_mut() {
            last.1 = repair_tail(&dir.join(seg_name(last.0)))?;
        }
        let mut read_off = 0;
        if let Ok(text) = fs::read_to_string(dir.join("cursor")) {
            let mut it = text.split_whitespace();
            if let (Some(id), Some(off)) = (
                it.next().and_then(|v| v.parse::<u64>().ok()),
                it.next().and_then(|v| v.parse::<u64>().ok()),
            ) {
                // Segments before the cursor's were fully delivered.
                segs.retain(|(s, _)| {
                    let keep = *s >= id;
                    if !keep {
                        let _ = fs::remove_file(dir.join(seg_name(*s)));
                    }
                    keep
                });
                if segs.first().is_some_and(|(s, _)| *s == id) {
                    read_off = off;
                }
            }
        }
        let total = segs.iter().map(|(_, n)| n).sum();
        Ok(Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segs: segs.into(),
            total,
            read_off,
            writer: None,
        })
    }

    /// Bytes waiting for delivery.
    pub fn pending_bytes(&self) -> u64 {
        self.total.saturating_sub(self.read_off)
    }

    pub fn is_empty(&self) -> bool {
        self.pending_bytes() == 0
    }

    /// Appends one message; `Ok(false)` when the spool is full (the message is not kept).
    pub fn push(&mut self, msg: &[u8]) -> anyhow::Result<bool> {
        let need = msg.len() as u64 + 4;
        if self.pending_bytes() + need > self.max_bytes {
            return Ok(false);
        }
        let start_new = match self.segs.back() {
            None => true,
            Some((_, size)) => *size + need > SEGMENT_BYTES && *size > 0,
        } || self.writer.is_none();
        if start_new {
            self.flush()?;
            let id = match self.segs.back() {
                // Reopen the last segment for appending after a restart, unless it is full.
                Some((id, size)) if self.writer.is_none() && *size + need <= SEGMENT_BYTES => *id,
                Some((id, _)) => id + 1,
                None => 1,
            };
            let path = self.dir.join(seg_name(id));
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .with_context(|| format!("open {}", path.display()))?;
            if self.segs.back().map(|(i, _)| *i) != Some(id) {
                self.segs.push_back((id, 0));
            }
            self.writer = Some(BufWriter::with_capacity(64 * 1024, f));
        }
        let Some(w) = self.writer.as_mut() else {
            return Ok(false);
        };
        w.write_all(&(msg.len() as u32).to_be_bytes())?;
        w.write_all(msg)?;
        if let Some(last) = self.segs.back_mut() {
            last.1 += need;
        }
        self.total += need;
        Ok(true)
    }

    /// Writes buffered messages to the file (not synced).
    pub fn flush(&mut self) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.flush().context("write spool")?;
        }
        Ok(())
    }

    /// Flushes and syncs, for shutdown.
    pub fn sync(&mut self) -> anyhow::Result<()> {
        self.flush()?;
        if let Some(w) = self.writer.as_mut() {
            w.get_ref().sync_data().context("sync spool")?;
        }
        Ok(())
    }

    /// The oldest undelivered messages, up to about `max` bytes, without consuming them.
    pub fn peek(&mut self, max: usize) -> anyhow::Result<Vec<Vec<u8>>> {
        self.flush()?;
        let Some(&(id, size)) = self.segs.front() else {
            return Ok(Vec::new());
        };
        let path = self.dir.join(seg_name(id));
        let mut f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
        f.seek(SeekFrom::Start(self.read_off))?;
        let want = (size.saturating_sub(self.read_off)).min(max as u64 + 4) as usize;
        let mut buf = vec![0u8; want];
        f.read_exact(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        let mut out = Vec::new();
        let mut at = 0;
        while at + 4 <= buf.len() {
            let n = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
            if n > MAX_RECORD {
                anyhow::bail!(
                    "{}: damaged record at {}",
                    path.display(),
                    self.read_off + at as u64
                );
            }
            if at + 4 + n > buf.len() {
                if out.is_empty() {
                    // One message larger than `max`: read it alone.
                    let mut m = vec![0u8; n];
                    f.seek(SeekFrom::Start(self.read_off + 4))?;
                    f.read_exact(&mut m)?;
                    out.push(m);
                }
                break;
            }
            out.push(buf[at + 4..at + 4 + n].to_vec());
            at += 4 + n;
        }
        Ok(out)
    }

    /// Gives up the oldest segment (after `peek` found it damaged); returns the bytes lost.
    pub fn skip_segment(&mut self) -> anyhow::Result<u64> {
        let Some((id, size)) = self.segs.pop_front() else {
            return Ok(0);
        };
        if self.segs.is_empty() {
            self.writer = None;
        }
        let lost = size.saturating_sub(self.read_off);
        let _ = fs::remove_file(self.dir.join(seg_name(id)));
        self.total -= size;
        self.read_off = 0;
        self.consume(&[])?;
        Ok(lost)
    }

    /// Marks the first `msgs` as delivered (their sizes as returned by `peek`).
    pub fn consume(&mut self, msgs: &[Vec<u8>]) -> anyhow::Result<()> {
        let n: u64 = msgs.iter().map(|m| m.len() as u64 + 4).sum();
        self.read_off += n;
        while let Some(&(id, size)) = self.segs.front() {
            if self.read_off < size {
                break;
            }
            // Fully delivered: remove it (and stop appending to it).
            if self.segs.len() == 1 {
                self.writer = None;
            }
            let _ = fs::remove_file(self.dir.join(seg_name(id)));
            self.segs.pop_front();
            self.total -= size;
            self.read_off -= size;
        }
        let cursor = match self.segs.front() {
            Some((id, _)) => format!("{id} {}\n", self.read_off),
            None => "0 0\n".to_string(),
        };
        let tmp = self.dir.join("cursor.tmp");
        fs::write(&tmp, cursor).context("write spool cursor")?;
        fs::rename(&tmp, self.dir.join("cursor")).context("write spool cursor")?;
        Ok(())
    }
}

/// Most bytes one message may have; a larger length prefix means a damaged segment.
const MAX_RECORD: usize = 16 * 1024 * 1024;

/// Cuts a segment after its last complete record; returns the new length.
fn repair_tail(path: &Path) -> anyhow::Result<u64> {
    let data = fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut at = 0usize;
    while at + 4 <= data.len() {
        let n = u32::from_be_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]) as usize;
        if n > MAX_RECORD || at + 4 + n > data.len() {
            break;
        }
        at += 4 + n;
    }
    if at < data.len() {
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        f.set_len(at as u64)
            .with_context(|| format!("truncate {}", path.display()))?;
    }
    Ok(at as u64)
}

fn seg_name(id: u64) -> String {
    format!("{id:020}.seg")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_across_reopen_and_limits_size() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 100).unwrap();
        assert!(s.push(b"one").unwrap());
        assert!(s.push(b"two").unwrap());
        s.sync().unwrap();
        let got = s.peek(1000).unwrap();
        assert_eq!(got, vec![b"one".to_vec(), b"two".to_vec()]);
        s.consume(&got[..1]).unwrap();
        drop(s);
        let mut s = Spool::open(d.path(), 100).unwrap();
        assert!(s.push(b"three").unwrap());
        let got = s.peek(1000).unwrap();
        assert_eq!(got, vec![b"two".to_vec(), b"three".to_vec()]);
        s.consume(&got).unwrap();
        assert!(s.is_empty());
        assert!(s.push(&[b'x'; 90]).unwrap());
        assert!(!s.push(&[b'y'; 10]).unwrap(), "full");
    }

    #[test]
    fn a_partial_record_from_a_crash_is_cut_off() {
        let d = tempfile::tempdir().unwrap();
        let mut s = Spool::open(d.path(), 1000).unwrap();
        assert!(s.push(b"one").unwrap());
        assert!(s.push(b"two").unwrap());
        s.sync().unwrap();
        drop(s);
        let seg = d.path().join(seg_name(1));
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[0, 0, 0, 9, b'h']).unwrap();
        drop(f);
        let mut s = Spool::open(d.path(), 1000).unwrap();
        assert!(s.push(b"three").unwrap());
        let got = s.peek(1000).unwrap();
        assert_eq!(
            got,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
    }
}
