//! The syslog spool: every syslog frame is appended here first, and the sender thread
//! reads it back in order. It is what lets records produced while the server is
//! unreachable (or while glasswire is stopped) be delivered later, in order.
//!
//! On disk, in the spool directory:
//! - `NNNNNNNNNNNNNNNNNNNN.seg`: append-only segments, named by a 20-digit sequence number,
//!   holding RFC 5425 frames (`LEN SP MSG`) exactly as they go on the wire, so a segment
//!   is self-delimiting and can be checked frame by frame at start-up.
//! - `cursor`: `v1 <segment> <offset>`, the position of the first frame not yet known
//!   delivered. Written atomically (temporary file, fdatasync, rename).
//! - `spool.lock`: held with flock(2) while a logger uses the directory.
//!
//! The writer (logger thread) and the reader (sender thread) share only the list of
//! segments and how many bytes of each are written; the reader never reads past that, so
//! it never sees half a frame.
//!
//! Flush policy: frames are handed to the kernel with write(2) at the end of each batch
//! the logger thread takes from its channel (they survive a crash of the process) and
//! forced to disk with fdatasync(2) at most once a second and when a segment is closed;
//! a crash of the machine can lose about the last second of spooled frames. At start-up
//! every segment is checked and a frame torn by such a crash is cut off.
//!
//! Size: the segments' bytes never exceed `spool_max_bytes`; a frame that does not fit is
//! refused (the caller counts it). Delivered frames are released a whole segment at a
//! time, once the cursor is past the segment; a segment is an eighth of the limit
//! (between 4 KiB and 16 MiB).

use crate::rfc5424::frame_len;
use crate::stats::{set, LogStats};
use anyhow::{bail, Context};
use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How often, at most, spooled frames are forced to disk.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// A place in the spool: a byte offset in a segment. Positions are always at frame
/// boundaries. The end of one segment and the start of the next are the same place; the
/// reader moves to the latter as soon as the next segment exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Pos {
    pub seq: u64,
    pub off: u64,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    seq: u64,
    /// Bytes written and visible to the reader.
    len: u64,
}

#[derive(Debug)]
struct State {
    segments: VecDeque<Seg>,
    disk_bytes: u64,
    writer_closed: bool,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    state: Mutex<State>,
    /// Signalled when frames are written or the writer closes.
    data: Condvar,
    stats: Arc<LogStats>,
    _lock: File,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the list inconsistent in a way that
        // matters more than losing the logger; go on with the data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn seg_path(&self, seq: u64) -> PathBuf {
        seg_path(&self.dir, seq)
    }
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:020}.seg"))
}

/// Refused: the frame does not fit under `spool_max_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("spool full")]
pub(crate) struct SpoolFull;

/// Opens (or creates) the spool in `dir`; returns its writer and reader. What a previous
/// run left undelivered is read first.
pub(crate) fn open(
    dir: &Path,
    max_bytes: u64,
    stats: Arc<LogStats>,
) -> anyhow::Result<(SpoolWriter, SpoolReader)> {
    let key = "log.syslog.spool_dir";
    fs::create_dir_all(dir).with_context(|| format!("{key}: cannot create {}", dir.display()))?;
    let lock = lock_dir(dir).with_context(|| format!("{key}: {}", dir.display()))?;

    let mut seqs = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("{key}: cannot read {}", dir.display()))? {
        let e = e.with_context(|| format!("{key}: cannot read {}", dir.display()))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_suffix(".seg").and_then(|n| n.parse::<u64>().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();

    let cursor = match read_cursor(dir) {
        Ok(c) => c,
        Err(e) => {
            // Resending what may have been delivered beats losing what may not have been.
            warn!(
                "sessionlog: spool {}: unreadable cursor ({e}); resending from the oldest segment",
                dir.display()
            );
            None
        }
    };

    let mut segments = VecDeque::new();
    for seq in seqs {
        let path = seg_path(dir, seq);
        if cursor.is_some_and(|c| seq < c.seq) {
            fs::remove_file(&path).with_context(|| format!("{key}: removing {}", path.display()))?;
            continue;
        }
        let len = check_segment(&path).with_context(|| format!("{key}: checking {}", path.display()))?;
        if len == 0 {
            fs::remove_file(&path).with_context(|| format!("{key}: removing {}", path.display()))?;
            continue;
        }
        segments.push_back(Seg { seq, len });
    }

    let new_seq = segments
        .back()
        .map(|s| s.seq + 1)
        .max(cursor.map(|c| c.seq))
        .unwrap_or(0);
    let committed = match cursor {
        Some(c) => match segments.iter().find(|s| s.seq == c.seq) {
            Some(s) => Pos {
                seq: c.seq,
                off: c.off.min(s.len),
            },
            None => segments
                .front()
                .map_or(Pos { seq: new_seq, off: 0 }, |s| Pos { seq: s.seq, off: 0 }),
        },
        None => segments
            .front()
            .map_or(Pos { seq: new_seq, off: 0 }, |s| Pos { seq: s.seq, off: 0 }),
    };

    let file = create_segment(dir, new_seq)
        .with_context(|| format!("{key}: cannot create a segment in {}", dir.display()))?;
    segments.push_back(Seg { seq: new_seq, len: 0 });
    let disk_bytes = segments.iter().map(|s| s.len).sum();
    let pending = disk_bytes
        - if segments.iter().any(|s| s.seq == committed.seq) {
            committed.off
        } else {
            0
        };
    if pending > 0 {
        info!(
            "sessionlog: spool {}: {pending} bytes from a previous run to deliver",
            dir.display()
        );
    }
    set(&stats.syslog_spool_bytes, disk_bytes);

    let segment_bytes = (max_bytes / 8).clamp(4096, 16 << 20).min(max_bytes);
    let shared = Arc::new(Shared {
        dir: dir.to_path_buf(),
        max_bytes,
        segment_bytes,
        state: Mutex::new(State {
            segments,
            disk_bytes,
            writer_closed: false,
        }),
        data: Condvar::new(),
        stats,
        _lock: lock,
    });
    let writer = SpoolWriter {
        shared: shared.clone(),
        file,
        seq: new_seq,
        len: 0,
        broken: false,
        pending: Vec::with_capacity(64 << 10),
        unsynced: false,
        last_sync: Instant::now(),
    };
    let reader = SpoolReader {
        shared,
        pos: committed,
        committed,
        persisted: cursor,
        file: None,
    };
    Ok((writer, reader))
}

fn lock_dir(dir: &Path) -> anyhow::Result<File> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("spool.lock"))
        .context("cannot create spool.lock")?;
    // Safety: flock on a file descriptor we own; it touches no memory.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            bail!("in use by another logger (spool.lock is held)");
        }
        bail!("locking spool.lock: {e}");
    }
    Ok(f)
}

fn read_cursor(dir: &Path) -> anyhow::Result<Option<Pos>> {
    let text = match fs::read_to_string(dir.join("cursor")) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut it = text.split_ascii_whitespace();
    match (
        it.next(),
        it.next().map(str::parse),
        it.next().map(str::parse),
        it.next(),
    ) {
        (Some("v1"), Some(Ok(seq)), Some(Ok(off)), None) => Ok(Some(Pos { seq, off })),
        _ => bail!("not a cursor: {text:?}"),
    }
}

/// Checks a segment frame by frame; cuts it after the last whole frame (a crash can tear
/// the last one) and returns its length.
fn check_segment(path: &Path) -> anyhow::Result<u64> {
    let data = fs::read(path)?;
    let mut off = 0usize;
    while let Some(rest) = data.get(off..) {
        match frame_len(rest) {
            Ok(Some(n)) => off += n,
            Ok(None) | Err(_) => break,
        }
    }
    if off < data.len() {
        warn!(
            "sessionlog: spool segment {}: cutting {} bytes after the last whole frame (left by a crash)",
            path.display(),
            data.len() - off
        );
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(off as u64)?;
        f.sync_all()?;
    }
    Ok(off as u64)
}

fn create_segment(dir: &Path, seq: u64) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(seg_path(dir, seq))?;
    File::open(dir)?.sync_all()?;
    Ok(f)
}

/// The logger thread's end of the spool.
#[derive(Debug)]
pub(crate) struct SpoolWriter {
    shared: Arc<Shared>,
    file: File,
    seq: u64,
    /// Bytes written to `file`.
    len: u64,
    /// A write failed: the file may end in part of a frame; begin a new segment.
    broken: bool,
    pending: Vec<u8>,
    unsynced: bool,
    last_sync: Instant,
}

impl SpoolWriter {
    /// Queues one frame for the next [`flush`](Self::flush), or refuses it when the spool
    /// would grow past its limit.
    pub(crate) fn append(&mut self, frame: &[u8]) -> Result<(), SpoolFull> {
        let disk = self.shared.state().disk_bytes;
        let add = frame.len() as u64;
        if disk + self.pending.len() as u64 + add > self.shared.max_bytes {
            return Err(SpoolFull);
        }
        let used = self.len + self.pending.len() as u64;
        if used > 0 && used + add > self.shared.segment_bytes {
            // Frames queued so far go to the old segment; a failure is reported by the
            // next flush's caller as lost frames, as any other write failure.
            if self.write_pending().is_ok() {
                self.roll();
            }
        }
        self.pending.extend_from_slice(frame);
        Ok(())
    }

    /// Writes the queued frames and makes them visible to the reader. On error they are
    /// lost (the caller counts them) and the next frames go to a new segment.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.broken {
            self.roll();
        }
        self.write_pending()
    }

    fn write_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let r = if self.broken {
            Err(io::Error::other("no segment to write to"))
        } else {
            self.file.write_all(&self.pending)
        };
        let n = self.pending.len() as u64;
        self.pending.clear();
        match r {
            Ok(()) => {
                self.len += n;
                self.unsynced = true;
                let mut st = self.shared.state();
                if let Some(seg) = st.segments.iter_mut().rev().find(|s| s.seq == self.seq) {
                    seg.len = self.len;
                }
                st.disk_bytes += n;
                set(&self.shared.stats.syslog_spool_bytes, st.disk_bytes);
                drop(st);
                self.shared.data.notify_all();
                Ok(())
            }
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Closes the current segment and begins the next.
    fn roll(&mut self) {
        if self.unsynced {
            if let Err(e) = self.file.sync_data() {
                warn!("sessionlog: spool: fdatasync: {e}");
            }
            self.unsynced = false;
        }
        let seq = self.seq + 1;
        match create_segment(&self.shared.dir, seq) {
            Ok(f) => {
                self.file = f;
                self.seq = seq;
                self.len = 0;
                self.broken = false;
                self.shared.state().segments.push_back(Seg { seq, len: 0 });
                self.shared.data.notify_all();
            }
            Err(e) => {
                error!("sessionlog: spool: cannot create segment {seq}: {e}");
                self.broken = true;
            }
        }
    }

    /// The periodic fdatasync; call often.
    pub(crate) fn tick(&mut self, now: Instant) {
        if self.unsynced && now.saturating_duration_since(self.last_sync) >= SYNC_INTERVAL {
            self.sync(now);
        }
    }

    fn sync(&mut self, now: Instant) {
        self.last_sync = now;
        self.unsynced = false;
        if let Err(e) = self.file.sync_data() {
            warn!("sessionlog: spool: fdatasync: {e}");
        }
    }

    /// Flushes, syncs and tells the reader nothing more will come.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        let r = self.flush();
        self.sync(Instant::now());
        self.shared.state().writer_closed = true;
        self.shared.data.notify_all();
        r
    }
}

/// One frame read back: where it ends in the batch buffer and in the spool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameEnd {
    pub buf_end: usize,
    pub pos: Pos,
}

/// The sender thread's end of the spool.
#[derive(Debug)]
pub(crate) struct SpoolReader {
    shared: Arc<Shared>,
    /// The next frame to read.
    pos: Pos,
    /// The first frame not known delivered.
    committed: Pos,
    persisted: Option<Pos>,
    file: Option<(u64, File)>,
}

impl SpoolReader {
    /// Appends whole frames to `buf` (at least one if any is there, then as many as fit in
    /// `max_bytes`) and their ends to `ends`; returns how many.
    pub(crate) fn read_batch(
        &mut self,
        max_bytes: usize,
        buf: &mut Vec<u8>,
        ends: &mut Vec<FrameEnd>,
    ) -> io::Result<usize> {
        loop {
            let (seg_len, next) = {
                let st = self.shared.state();
                let Some(i) = st.segments.iter().position(|s| s.seq >= self.pos.seq) else {
                    return Ok(0);
                };
                let Some(seg) = st.segments.get(i).copied() else {
                    return Ok(0);
                };
                if seg.seq != self.pos.seq {
                    // The segment was emptied at start-up and removed: go on with the next.
                    self.pos = Pos { seq: seg.seq, off: 0 };
                }
                (seg.len, st.segments.get(i + 1).map(|s| s.seq))
            };
            if self.pos.off >= seg_len {
                match next {
                    Some(seq) => {
                        self.pos = Pos { seq, off: 0 };
                        continue;
                    }
                    None => return Ok(0),
                }
            }
            let file = match &self.file {
                Some((seq, f)) if *seq == self.pos.seq => f,
                _ => {
                    let f = match File::open(self.shared.seg_path(self.pos.seq)) {
                        Ok(f) => f,
                        // Removed behind our back: its frames are gone; go on with the rest.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {
                            return Err(self.corrupt(seg_len, "segment file missing"));
                        }
                        Err(e) => return Err(e),
                    };
                    &self.file.insert((self.pos.seq, f)).1
                }
            };
            let avail = seg_len - self.pos.off;
            let want = avail.min(max_bytes.max(64) as u64) as usize;
            let start = buf.len();
            buf.resize(start + want, 0);
            let read = buf.get_mut(start..).map(|b| file.read_exact_at(b, self.pos.off));
            if let Some(Err(e)) = read {
                buf.truncate(start);
                return Err(e);
            }
            let mut at = start;
            let mut frames = 0;
            loop {
                match buf.get(at..).map(frame_len) {
                    Some(Ok(Some(n))) => {
                        at += n;
                        self.pos.off += n as u64;
                        ends.push(FrameEnd {
                            buf_end: at,
                            pos: self.pos,
                        });
                        frames += 1;
                    }
                    Some(Ok(None)) if frames == 0 => {
                        // A frame longer than max_bytes: read all of it.
                        let need = buf.get(at..).map(frame_header_total).unwrap_or(None);
                        match need {
                            Some(total) if (total as u64) <= avail => {
                                buf.resize(start + total, 0);
                                if let Some(b) = buf.get_mut(start..) {
                                    file.read_exact_at(b, self.pos.off)?;
                                }
                                continue;
                            }
                            _ => {
                                buf.truncate(start);
                                return Err(self.corrupt(seg_len, "frame runs past the written data"));
                            }
                        }
                    }
                    Some(Ok(None)) | None => break,
                    Some(Err(e)) => {
                        if frames > 0 {
                            break;
                        }
                        buf.truncate(start);
                        return Err(self.corrupt(seg_len, &e.to_string()));
                    }
                }
            }
            buf.truncate(at);
            return Ok(frames);
        }
    }

    /// Skips the rest of a segment whose data is not frames (the disk changed under us).
    fn corrupt(&mut self, seg_len: u64, what: &str) -> io::Error {
        error!(
            "sessionlog: spool segment {}: {what} at offset {}; skipping its last {} bytes",
            self.shared.seg_path(self.pos.seq).display(),
            self.pos.off,
            seg_len - self.pos.off
        );
        self.pos.off = seg_len;
        io::Error::new(io::ErrorKind::InvalidData, "corrupt spool segment")
    }

    /// Waits up to `timeout` for frames after the read position (or the writer's close).
    pub(crate) fn wait(&self, timeout: Duration) {
        let st = self.shared.state();
        if self.has_data_after(&st, self.pos) || st.writer_closed {
            return;
        }
        let _ = self.shared.data.wait_timeout(st, timeout);
    }

    fn has_data_after(&self, st: &State, pos: Pos) -> bool {
        st.segments
            .iter()
            .any(|s| (s.seq == pos.seq && s.len > pos.off) || (s.seq > pos.seq && s.len > 0))
    }

    /// The writer closed and every frame was read.
    pub(crate) fn drained(&self) -> bool {
        let st = self.shared.state();
        st.writer_closed && !self.has_data_after(&st, self.pos)
    }

    /// No frame is waiting to be confirmed delivered.
    pub(crate) fn all_committed(&self) -> bool {
        !self.has_data_after(&self.shared.state(), self.committed)
    }

    /// Reads from `pos` again (after a failed connection, from the last committed frame).
    pub(crate) fn rewind(&mut self) {
        self.pos = self.committed;
    }

    /// Marks everything before `pos` delivered (in memory; [`persist`](Self::persist)
    /// writes it down).
    pub(crate) fn commit(&mut self, pos: Pos) {
        if pos > self.committed {
            self.committed = pos;
        }
        if self.pos < self.committed {
            self.pos = self.committed;
        }
    }

    /// Writes the cursor and removes the segments it has passed.
    pub(crate) fn persist(&mut self) -> io::Result<()> {
        // Normalise: the end of a segment that has a successor is the successor's start,
        // so the finished segment can go.
        {
            let st = self.shared.state();
            let mut it = st.segments.iter().skip_while(|s| s.seq < self.committed.seq);
            if let (Some(cur), Some(next)) = (it.next(), it.next()) {
                if cur.seq == self.committed.seq && self.committed.off >= cur.len {
                    self.committed = Pos {
                        seq: next.seq,
                        off: 0,
                    };
                }
            }
        }
        if self.persisted == Some(self.committed) {
            return Ok(());
        }
        let tmp = self.shared.dir.join("cursor.tmp");
        {
            let mut f = File::create(&tmp)?;
            writeln!(f, "v1 {} {}", self.committed.seq, self.committed.off)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, self.shared.dir.join("cursor"))?;
        self.persisted = Some(self.committed);

        let mut st = self.shared.state();
        while st.segments.front().is_some_and(|s| s.seq < self.committed.seq) {
            if let Some(s) = st.segments.pop_front() {
                st.disk_bytes -= s.len;
                if let Err(e) = fs::remove_file(self.shared.seg_path(s.seq)) {
                    warn!("sessionlog: spool: removing segment {}: {e}", s.seq);
                }
                if self.file.as_ref().is_some_and(|(seq, _)| *seq == s.seq) {
                    self.file = None;
                }
            }
        }
        set(&self.shared.stats.syslog_spool_bytes, st.disk_bytes);
        Ok(())
    }
}

/// The total length of the frame whose header starts `buf`, when the header is whole.
fn frame_header_total(buf: &[u8]) -> Option<usize> {
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if buf.get(digits) != Some(&b' ') {
        return None;
    }
    let len: usize = std::str::from_utf8(buf.get(..digits)?).ok()?.parse().ok()?;
    Some(digits + 1 + len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(i: u32) -> Vec<u8> {
        let msg = format!("message {i}");
        format!("{} {msg}", msg.len()).into_bytes()
    }

    fn spool(dir: &Path, max: u64) -> (SpoolWriter, SpoolReader, Arc<LogStats>) {
        let stats = Arc::new(LogStats::default());
        let (w, r) = open(dir, max, stats.clone()).unwrap();
        (w, r, stats)
    }

    /// Reads everything available; returns the frames' texts and their end positions.
    fn read_all(r: &mut SpoolReader, batch: usize) -> Vec<(String, Pos)> {
        let mut out = Vec::new();
        loop {
            let mut buf = Vec::new();
            let mut ends = Vec::new();
            let n = r.read_batch(batch, &mut buf, &mut ends).unwrap();
            if n == 0 {
                return out;
            }
            assert_eq!(ends.len(), n);
            let mut start = 0;
            for e in ends {
                let f = std::str::from_utf8(&buf[start..e.buf_end]).unwrap();
                out.push((f.split_once(' ').unwrap().1.to_string(), e.pos));
                start = e.buf_end;
            }
        }
    }

    fn texts(v: &[(String, Pos)]) -> Vec<String> {
        v.iter().map(|(t, _)| t.clone()).collect()
    }

    fn expected(range: std::ops::Range<u32>) -> Vec<String> {
        range.map(|i| format!("message {i}")).collect()
    }

    #[test]
    fn reads_in_order_only_what_was_flushed() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, mut r, stats) = spool(d.path(), 1 << 20);
        for i in 0..3 {
            w.append(&frame(i)).unwrap();
        }
        assert!(read_all(&mut r, 1000).is_empty());
        w.flush().unwrap();
        assert_eq!(texts(&read_all(&mut r, 1000)), expected(0..3));
        assert!(stats.syslog_spool_bytes() > 0);
        w.append(&frame(3)).unwrap();
        w.flush().unwrap();
        // Small batches still return whole frames, one at least.
        assert_eq!(texts(&read_all(&mut r, 1)), expected(3..4));
    }

    #[test]
    fn restart_resends_from_the_last_persisted_commit() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut w, mut r, _) = spool(d.path(), 1 << 20);
            for i in 0..10 {
                w.append(&frame(i)).unwrap();
            }
            w.flush().unwrap();
            let got = read_all(&mut r, 1 << 16);
            assert_eq!(got.len(), 10);
            // Frames 0..4 delivered and written down; 4..6 delivered in memory only.
            r.commit(got[3].1);
            r.persist().unwrap();
            r.commit(got[5].1);
            w.close().unwrap();
        }
        let (mut w, mut r, _) = spool(d.path(), 1 << 20);
        w.append(&frame(10)).unwrap();
        w.flush().unwrap();
        assert_eq!(texts(&read_all(&mut r, 100)), expected(4..11));
    }

    #[test]
    fn rewind_reads_again_from_the_commit() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, mut r, _) = spool(d.path(), 1 << 20);
        for i in 0..5 {
            w.append(&frame(i)).unwrap();
        }
        w.flush().unwrap();
        let got = read_all(&mut r, 1 << 16);
        r.commit(got[1].1);
        r.rewind();
        assert_eq!(texts(&read_all(&mut r, 1 << 16)), expected(2..5));
        assert!(!r.all_committed());
        r.commit(got[4].1);
        assert!(r.all_committed());
    }

    #[test]
    fn segments_roll_and_are_removed_once_delivered() {
        let d = tempfile::tempdir().unwrap();
        // 4 KiB segments.
        let (mut w, mut r, stats) = spool(d.path(), 32 << 10);
        let big = |i: u32| {
            let msg = format!("{i:04}{}", "x".repeat(996));
            format!("{} {msg}", msg.len()).into_bytes()
        };
        for i in 0..20 {
            w.append(&big(i)).unwrap();
            w.flush().unwrap();
        }
        let segs = || {
            fs::read_dir(d.path())
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_str()
                        .unwrap()
                        .ends_with(".seg")
                })
                .count()
        };
        assert!(segs() >= 5, "{}", segs());
        let got = read_all(&mut r, 1 << 20);
        assert_eq!(got.len(), 20);
        r.commit(got[19].1);
        r.persist().unwrap();
        // Only the segment being written remains.
        assert_eq!(segs(), 1);
        assert!(stats.syslog_spool_bytes() <= 4096);
        let (mut w2, mut r2) = {
            w.close().unwrap();
            drop((w, r));
            let (w, r, _) = spool(d.path(), 32 << 10);
            (w, r)
        };
        assert!(read_all(&mut r2, 1 << 20).is_empty());
        w2.append(&frame(99)).unwrap();
        w2.flush().unwrap();
        assert_eq!(texts(&read_all(&mut r2, 1 << 20)), expected(99..100));
    }

    #[test]
    fn full_spool_refuses_frames() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, mut r, _) = spool(d.path(), 4096);
        let mut accepted = 0;
        let mut refused = 0;
        for i in 0..1000 {
            match w.append(&frame(i)) {
                Ok(()) => accepted += 1,
                Err(SpoolFull) => refused += 1,
            }
            w.flush().unwrap();
        }
        assert!(accepted > 100 && refused > 0, "{accepted} {refused}");
        let total: u64 = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_str().unwrap().ends_with(".seg"))
            .map(|e| e.metadata().unwrap().len())
            .sum();
        assert!(total <= 4096, "{total}");
        // The accepted ones are the first ones, in order.
        assert_eq!(texts(&read_all(&mut r, 1 << 20)), expected(0..accepted));
    }

    #[test]
    fn a_torn_frame_is_cut_at_start_up() {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut w, _r, _) = spool(d.path(), 1 << 20);
            w.append(&frame(0)).unwrap();
            w.append(&frame(1)).unwrap();
            w.close().unwrap();
        }
        let seg = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| fs::metadata(p).unwrap().len() > 0 && p.extension().is_some_and(|e| e == "seg"))
            .unwrap();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"40 half a fra").unwrap();
        drop(f);
        let (_w, mut r, _) = spool(d.path(), 1 << 20);
        assert_eq!(texts(&read_all(&mut r, 1 << 20)), expected(0..2));
    }

    #[test]
    fn one_logger_per_spool() {
        let d = tempfile::tempdir().unwrap();
        let _first = spool(d.path(), 1 << 20);
        let e = open(d.path(), 1 << 20, Arc::new(LogStats::default())).unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.starts_with("log.syslog.spool_dir:") && e.contains("in use"),
            "{e}"
        );
    }

    #[test]
    fn a_frame_longer_than_the_batch_is_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let (mut w, mut r, _) = spool(d.path(), 1 << 20);
        let msg = "y".repeat(5000);
        w.append(format!("{} {msg}", msg.len()).as_bytes()).unwrap();
        w.append(&frame(1)).unwrap();
        w.flush().unwrap();
        let got = read_all(&mut r, 100);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, msg);
    }
}
