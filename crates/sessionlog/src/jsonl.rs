//! The JSON Lines sink: one record per line, in files rotated by size and age.
//!
//! Flush policy: the logger thread hands each batch of lines (whatever it took from the
//! channel in one go, at most a few thousand) to the kernel with write(2) before it
//! counts them in `jsonl_written`, so a crash of the process loses nothing counted as
//! written. The data is made durable with fdatasync(2) at most once a second while lines
//! flow, and always when a file is closed (rotation, shutdown): a crash of the machine
//! (power, kernel) can lose up to about the last second of lines.
//!
//! Files are never renamed: each is named by the time it was opened
//! (`sessions-20261123T120000.123Z.jsonl`), so names sort in the order of the records and
//! a shipper can take any file but the newest. A new file is begun at each start, so a
//! line torn by a crash stays at the end of the previous file.

use crate::config::JsonlConfig;
use crate::stats::{add, LogStats};
use crate::time::file_stamp;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// How often, at most, written lines are forced to disk.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Active {
    path: PathBuf,
    file: File,
    bytes: u64,
    opened: Instant,
    unsynced: bool,
}

#[derive(Debug)]
pub(crate) struct JsonlSink {
    cfg: JsonlConfig,
    active: Option<Active>,
    /// Lines of the current batch, not yet written.
    buf: Vec<u8>,
    buf_records: u64,
    last_sync: Instant,
    stats: Arc<LogStats>,
    /// When the last error was logged, to log a failing disk once a minute, not per batch.
    last_error_log: Option<Instant>,
}

impl JsonlSink {
    /// Opens the first file now, so that an unwritable directory is a start-up error.
    pub(crate) fn open(cfg: JsonlConfig, stats: Arc<LogStats>, now: Instant) -> anyhow::Result<Self> {
        cfg.validate()?;
        let mut sink = JsonlSink {
            cfg,
            active: None,
            buf: Vec::with_capacity(64 << 10),
            buf_records: 0,
            last_sync: now,
            stats,
            last_error_log: None,
        };
        sink.open_new(now).map_err(|e| {
            anyhow::anyhow!(
                "log.jsonl.dir: cannot create a file in {}: {e}",
                sink.cfg.dir.display()
            )
        })?;
        Ok(sink)
    }

    /// Adds one record's JSON to the current batch, rotating first if the line would take
    /// the file past `rotate_bytes` (a line longer than that gets a file of its own).
    pub(crate) fn push(&mut self, json: &[u8], now: Instant) {
        let line = json.len() as u64 + 1;
        let used = self.active.as_ref().map_or(0, |a| a.bytes) + self.buf.len() as u64;
        if used > 0 && used + line > self.cfg.rotate_bytes {
            self.flush(now);
            self.rotate();
        }
        self.buf.extend_from_slice(json);
        self.buf.push(b'\n');
        self.buf_records += 1;
    }

    /// Writes the current batch to the kernel (see the module doc for what that promises).
    pub(crate) fn flush(&mut self, now: Instant) {
        if self.buf.is_empty() {
            return;
        }
        let result = match self.active {
            Some(_) => Ok(()),
            None => self.open_new(now),
        }
        .and_then(|()| match self.active.as_mut() {
            Some(a) => a.file.write_all(&self.buf).map(|()| {
                a.bytes += self.buf.len() as u64;
                a.unsynced = true;
            }),
            None => Err(io::Error::other("no file")),
        });
        match result {
            Ok(()) => add(&self.stats.jsonl_written, self.buf_records),
            Err(e) => {
                add(&self.stats.jsonl_errors, 1);
                add(&self.stats.jsonl_dropped, self.buf_records);
                let n = self.buf_records;
                self.log_error(now, format_args!("writing {n} records: {e}"));
                // Begin a new file next time rather than append after a torn line.
                self.active = None;
            }
        }
        self.buf.clear();
        self.buf_records = 0;
    }

    /// Age rotation and the periodic fdatasync; call often (the logger does, at least every
    /// few hundred milliseconds).
    pub(crate) fn tick(&mut self, now: Instant) {
        let expired = self.active.as_ref().is_some_and(|a| {
            a.bytes > 0 && now.saturating_duration_since(a.opened) >= self.cfg.rotate_interval
        });
        if expired {
            self.flush(now);
            self.rotate();
        }
        if now.saturating_duration_since(self.last_sync) >= SYNC_INTERVAL {
            self.sync(now);
        }
    }

    /// Flushes and syncs the current file; for shutdown.
    pub(crate) fn close(&mut self, now: Instant) {
        self.flush(now);
        self.sync(now);
        self.active = None;
    }

    fn sync(&mut self, now: Instant) {
        self.last_sync = now;
        let Some(a) = self.active.as_mut() else { return };
        if !a.unsynced {
            return;
        }
        a.unsynced = false;
        if let Err(e) = a.file.sync_data() {
            add(&self.stats.jsonl_errors, 1);
            let path = a.path.display().to_string();
            self.log_error(now, format_args!("fdatasync {path}: {e}"));
        }
    }

    /// Closes the current file; the next batch opens a new one.
    fn rotate(&mut self) {
        if let Some(a) = self.active.take() {
            if a.unsynced {
                if let Err(e) = a.file.sync_data() {
                    add(&self.stats.jsonl_errors, 1);
                    warn!("sessionlog: fdatasync {}: {e}", a.path.display());
                }
            }
            add(&self.stats.jsonl_rotations, 1);
            info!("sessionlog: closed {} ({} bytes)", a.path.display(), a.bytes);
        }
    }

    fn open_new(&mut self, now: Instant) -> io::Result<()> {
        let mut t = SystemTime::now();
        let file = loop {
            let path = self
                .cfg
                .dir
                .join(format!("{}-{}.jsonl", self.cfg.file_prefix, file_stamp(t)));
            match OpenOptions::new().append(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                // Two files in one millisecond (tiny rotate_bytes): the next millisecond's
                // name keeps names unique and in order.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    t += Duration::from_millis(1);
                }
                Err(e) => return Err(e),
            }
        };
        // The new name must survive a crash too.
        File::open(&self.cfg.dir).and_then(|d| d.sync_all())?;
        let (path, file) = file;
        self.active = Some(Active {
            path,
            file,
            bytes: 0,
            opened: now,
            unsynced: false,
        });
        self.prune();
        Ok(())
    }

    /// Deletes the oldest files beyond `keep_files`.
    fn prune(&mut self) {
        if self.cfg.keep_files == 0 {
            return;
        }
        let mut files = match list_files(&self.cfg.dir, &self.cfg.file_prefix) {
            Ok(f) => f,
            Err(e) => {
                add(&self.stats.jsonl_errors, 1);
                warn!("sessionlog: listing {}: {e}", self.cfg.dir.display());
                return;
            }
        };
        let active = self.active.as_ref().map(|a| a.path.clone());
        files.retain(|p| Some(p) != active.as_ref());
        let keep_old = self.cfg.keep_files.saturating_sub(usize::from(active.is_some()));
        let excess = files.len().saturating_sub(keep_old);
        for p in files.iter().take(excess) {
            match fs::remove_file(p) {
                Ok(()) => info!("sessionlog: removed {} (keep_files)", p.display()),
                Err(e) => {
                    add(&self.stats.jsonl_errors, 1);
                    warn!("sessionlog: removing {}: {e}", p.display());
                }
            }
        }
    }

    fn log_error(&mut self, now: Instant, what: std::fmt::Arguments<'_>) {
        if self
            .last_error_log
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(60))
        {
            self.last_error_log = Some(now);
            warn!(
                "sessionlog: JSON Lines in {}: {what} (jsonl_errors {}, jsonl_dropped {}; logged once a minute)",
                self.cfg.dir.display(),
                self.stats.jsonl_errors(),
                self.stats.jsonl_dropped()
            );
        }
    }
}

/// This sink's files in `dir`, oldest first.
pub(crate) fn list_files(dir: &Path, prefix: &str) -> io::Result<Vec<PathBuf>> {
    let head = format!("{prefix}-");
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(&head) && name.ends_with(".jsonl") {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(dir: &Path, rotate_bytes: u64, keep: usize) -> (JsonlSink, Arc<LogStats>, Instant) {
        let stats = Arc::new(LogStats::default());
        let mut cfg = JsonlConfig::new(dir);
        cfg.rotate_bytes = rotate_bytes;
        cfg.keep_files = keep;
        let now = Instant::now();
        (JsonlSink::open(cfg, stats.clone(), now).unwrap(), stats, now)
    }

    fn lines(dir: &Path) -> Vec<Vec<String>> {
        list_files(dir, "sessions")
            .unwrap()
            .iter()
            .map(|p| fs::read_to_string(p).unwrap().lines().map(String::from).collect())
            .collect()
    }

    #[test]
    fn writes_lines_and_counts_after_flush() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, stats, now) = sink(d.path(), 1 << 20, 0);
        s.push(br#"{"a":1}"#, now);
        s.push(br#"{"a":2}"#, now);
        assert_eq!(stats.jsonl_written(), 0);
        s.flush(now);
        assert_eq!(stats.jsonl_written(), 2);
        // Written means visible to another reader at once, without a close.
        assert_eq!(lines(d.path()), vec![vec![r#"{"a":1}"#, r#"{"a":2}"#]]);
        s.close(now);
        assert_eq!(stats.jsonl_rotations(), 0);
    }

    #[test]
    fn rotates_by_size() {
        let d = tempfile::tempdir().unwrap();
        // Each line is 10 bytes: three fit in 30.
        let (mut s, stats, now) = sink(d.path(), 30, 0);
        for i in 0..7 {
            s.push(format!(r#"{{"n":{i:03}}}"#).as_bytes(), now);
        }
        s.close(now);
        let files = lines(d.path());
        assert_eq!(files.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        assert_eq!(files[1][0], r#"{"n":003}"#);
        assert_eq!(stats.jsonl_rotations(), 2);
        assert_eq!(stats.jsonl_written(), 7);
        for p in list_files(d.path(), "sessions").unwrap() {
            assert!(fs::metadata(p).unwrap().len() <= 30);
        }
    }

    #[test]
    fn a_line_longer_than_the_limit_gets_its_own_file() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _, now) = sink(d.path(), 8, 0);
        s.push(b"\"short\"", now);
        s.push(b"\"much longer than eight\"", now);
        s.push(b"\"x\"", now);
        s.close(now);
        assert_eq!(
            lines(d.path()).iter().map(Vec::len).collect::<Vec<_>>(),
            [1, 1, 1]
        );
    }

    #[test]
    fn rotates_by_age_only_when_the_file_holds_records() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, stats, t0) = sink(d.path(), 1 << 20, 0);
        // Empty and old: nothing to rotate.
        s.tick(t0 + Duration::from_secs(7200));
        assert_eq!(stats.jsonl_rotations(), 0);
        s.push(b"1", t0);
        s.flush(t0);
        s.tick(t0 + Duration::from_secs(3599));
        assert_eq!(stats.jsonl_rotations(), 0);
        s.tick(t0 + Duration::from_secs(7200));
        assert_eq!(stats.jsonl_rotations(), 1);
        // The next file is opened when there is something to write, and its age counts
        // from then.
        let t1 = t0 + Duration::from_secs(7300);
        s.push(b"2", t1);
        s.flush(t1);
        s.tick(t1 + Duration::from_secs(3000));
        assert_eq!(stats.jsonl_rotations(), 1);
        s.tick(t1 + Duration::from_secs(3600));
        assert_eq!(stats.jsonl_rotations(), 2);
        s.close(t1);
        assert_eq!(lines(d.path()), vec![vec!["1"], vec!["2"]]);
    }

    #[test]
    fn keeps_the_newest_files() {
        let d = tempfile::tempdir().unwrap();
        let (mut s, _, now) = sink(d.path(), 4, 2);
        for i in 0..6 {
            s.push(format!("{i:03}").as_bytes(), now);
        }
        s.close(now);
        assert_eq!(lines(d.path()), vec![vec!["004"], vec!["005"]]);
    }

    #[test]
    fn unwritable_dir_is_a_start_error_naming_the_key() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("plain-file");
        fs::write(&file, b"").unwrap();
        let e = JsonlSink::open(
            JsonlConfig::new(file.join("sub")),
            Arc::new(LogStats::default()),
            Instant::now(),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("log.jsonl.dir:"), "{e}");
    }
}
