//! The logger: the channel from the data path, the logger thread that serialises records
//! and writes them to the JSON Lines sink and the syslog spool, and the syslog sender
//! thread behind the spool.

use crate::config::LogConfig;
use crate::delivery::Tracker;
use crate::jsonl::JsonlSink;
use crate::record::SessionRecord;
use crate::rfc5424::{encode_frame, Header};
use crate::sender::{Sender, SenderCtl};
use crate::spool::{self, SpoolFull, SpoolWriter};
use crate::stats::{add, LogStats};
use crate::tls::Connector;
use anyhow::{anyhow, bail, Context};
use crossbeam_channel::{select, Receiver, RecvTimeoutError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::warn;

/// How long shutdown gives the syslog connection to deliver what is spooled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The logger thread wakes at least this often (file age, fdatasync, loss reports).
const TICK: Duration = Duration::from_millis(200);
/// Records the logger thread takes from the channel before it writes them out.
const MAX_BATCH: usize = 4096;
/// Losses are reported in the log at most this often.
const LOSS_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The logger's threads. Dropping it shuts it down as [`Logger::shutdown`] does.
#[derive(Debug)]
pub struct Logger {
    stats: Arc<LogStats>,
    /// Dropped to tell the logger thread to finish.
    stop_tx: Option<crossbeam_channel::Sender<()>>,
    logger: Option<JoinHandle<()>>,
    sender: Option<(JoinHandle<()>, Arc<SenderCtl>)>,
}

/// The data path's handle: cheap to clone, one per worker.
#[derive(Debug, Clone)]
pub struct LogSender {
    tx: crossbeam_channel::Sender<SessionRecord>,
    stats: Arc<LogStats>,
}

impl LogSender {
    /// Hands a record to the logger thread. Never blocks: when the channel is full (or
    /// the logger has shut down) the record is dropped, counted, and `false` returned.
    pub fn send(&self, rec: SessionRecord) -> bool {
        match self.tx.try_send(rec) {
            Ok(()) => {
                add(&self.stats.records_in, 1);
                true
            }
            Err(TrySendError::Full(_)) => {
                add(&self.stats.records_dropped_channel_full, 1);
                false
            }
            Err(TrySendError::Disconnected(_)) => {
                add(&self.stats.records_dropped_shutdown, 1);
                false
            }
        }
    }
}

impl Logger {
    /// Checks the configuration (errors name the key), opens the sinks and starts the
    /// threads.
    pub fn start(cfg: LogConfig) -> anyhow::Result<(Logger, LogSender)> {
        if cfg.channel_capacity == 0 {
            bail!("log.channel_capacity: must be more than 0");
        }
        let stats = Arc::new(LogStats::default());
        // Checks without side effects first, so that a bad key leaves no files behind.
        let connector = match &cfg.syslog {
            Some(s) => {
                s.validate()?;
                Some(Connector::new(s)?)
            }
            None => None,
        };
        let jsonl = cfg
            .jsonl
            .map(|j| JsonlSink::open(j, stats.clone(), Instant::now()))
            .transpose()?;
        let mut syslog = None;
        if let (Some(s), Some(connector)) = (&cfg.syslog, connector) {
            let (writer, reader) = spool::open(&s.spool_dir, s.spool_max_bytes, stats.clone())?;
            let hostname = match &s.hostname {
                Some(h) => h.clone(),
                None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_default(),
            };
            let header = Header::new(&hostname, &s.app_name, std::process::id());
            let ctl = Arc::new(SenderCtl::default());
            let sender = Sender {
                connector,
                reader,
                tracker: Tracker::new(s.settle),
                stats: stats.clone(),
                ctl: ctl.clone(),
                reconnect_min: s.reconnect_min,
                reconnect_max: s.reconnect_max,
                server: s.server.clone(),
            };
            syslog = Some((writer, header, sender, ctl));
        }

        let (tx, rx) = crossbeam_channel::bounded(cfg.channel_capacity);
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let (spool, header, sender) = match syslog {
            Some((w, h, s, ctl)) => (Some(w), Some(h), Some((s, ctl))),
            None => (None, None, None),
        };
        let sender = match sender {
            Some((s, ctl)) => Some((s.spawn().context("starting the syslog sender thread")?, ctl)),
            None => None,
        };
        let thread = LoggerThread {
            rx,
            stop_rx,
            jsonl,
            spool,
            header,
            stats: stats.clone(),
            frame: Vec::with_capacity(4096),
            spool_pending: 0,
            reported: Reported::default(),
        };
        let logger = std::thread::Builder::new()
            .name("gw-log".into())
            .spawn(move || thread.run());
        let logger = match logger {
            Ok(h) => h,
            Err(e) => {
                if let Some((h, ctl)) = sender {
                    ctl.finish_by(Instant::now());
                    let _ = h.join();
                }
                return Err(e).context("starting the logger thread");
            }
        };
        let log_sender = LogSender {
            tx,
            stats: stats.clone(),
        };
        Ok((
            Logger {
                stats,
                stop_tx: Some(stop_tx),
                logger: Some(logger),
                sender,
            },
            log_sender,
        ))
    }

    /// The logger's counters.
    pub fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// Writes out every record already in the channel, closes the files, gives the syslog
    /// connection up to 2 s to deliver what is spooled; what it could not stays in the
    /// spool for the next start. Records sent after this are counted as
    /// `records_dropped_shutdown`.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        drop(self.stop_tx.take());
        let mut result = Ok(());
        if let Some(h) = self.logger.take() {
            if h.join().is_err() {
                result = Err(anyhow!("sessionlog: the logger thread panicked"));
            }
        }
        if let Some((h, ctl)) = self.sender.take() {
            let deadline = Instant::now() + SHUTDOWN_GRACE;
            ctl.finish_by(deadline);
            // The sender keeps to the deadline itself, but a write can block longer; cut
            // the connection under it then.
            let hard = deadline + Duration::from_secs(1);
            while !h.is_finished() && Instant::now() < hard {
                std::thread::sleep(Duration::from_millis(10));
            }
            if !h.is_finished() {
                ctl.cut();
            }
            if h.join().is_err() && result.is_ok() {
                result = Err(anyhow!("sessionlog: the syslog sender thread panicked"));
            }
        }
        result
    }
}

impl Drop for Logger {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            warn!("{e:#}");
        }
    }
}

/// Loss counters as last reported in the log.
#[derive(Debug, Default)]
struct Reported {
    at: Option<Instant>,
    channel_full: u64,
    spool_dropped: u64,
}

#[derive(Debug)]
struct LoggerThread {
    rx: Receiver<SessionRecord>,
    stop_rx: Receiver<()>,
    jsonl: Option<JsonlSink>,
    spool: Option<SpoolWriter>,
    header: Option<Header>,
    stats: Arc<LogStats>,
    frame: Vec<u8>,
    /// Frames appended to the spool since its last flush.
    spool_pending: u64,
    reported: Reported,
}

impl LoggerThread {
    fn run(mut self) {
        loop {
            select! {
                recv(self.rx) -> r => match r {
                    Ok(rec) => self.batch(rec),
                    // Every LogSender is gone: nothing more can come; wait for shutdown.
                    Err(_) => loop {
                        match self.stop_rx.recv_timeout(TICK) {
                            Err(RecvTimeoutError::Timeout) => self.tick(),
                            _ => return self.close(),
                        }
                    },
                },
                recv(self.stop_rx) -> _ => {
                    while let Ok(rec) = self.rx.try_recv() {
                        self.batch(rec);
                    }
                    return self.close();
                },
                default(TICK) => {}
            }
            self.tick();
        }
    }

    /// Writes `first` and whatever else is waiting (up to [`MAX_BATCH`]), then hands the
    /// batch to the kernel.
    fn batch(&mut self, first: SessionRecord) {
        let now = Instant::now();
        self.record(&first, now);
        drop(first);
        for _ in 1..MAX_BATCH {
            match self.rx.try_recv() {
                Ok(rec) => self.record(&rec, now),
                Err(_) => break,
            }
        }
        self.flush(now);
    }

    fn record(&mut self, rec: &SessionRecord, now: Instant) {
        let json = rec.to_json();
        if let Some(j) = &mut self.jsonl {
            j.push(&json, now);
        }
        if let (Some(spool), Some(header)) = (&mut self.spool, &self.header) {
            self.frame.clear();
            encode_frame(&mut self.frame, header, rec, &json);
            match spool.append(&self.frame) {
                Ok(()) => self.spool_pending += 1,
                Err(SpoolFull) => add(&self.stats.syslog_spool_dropped, 1),
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        if let Some(j) = &mut self.jsonl {
            j.flush(now);
        }
        if let Some(spool) = &mut self.spool {
            let n = std::mem::take(&mut self.spool_pending);
            match spool.flush() {
                Ok(()) => add(&self.stats.syslog_spooled, n),
                Err(e) => {
                    add(&self.stats.syslog_spool_dropped, n);
                    warn!("sessionlog: syslog spool: writing {n} records: {e}; they are lost for syslog");
                }
            }
        }
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if let Some(j) = &mut self.jsonl {
            j.tick(now);
        }
        if let Some(s) = &mut self.spool {
            s.tick(now);
        }
        self.report_losses(now);
    }

    /// Losses are counted where they happen; this says so in the log too, at most every
    /// [`LOSS_LOG_INTERVAL`].
    fn report_losses(&mut self, now: Instant) {
        if self
            .reported
            .at
            .is_some_and(|t| now.saturating_duration_since(t) < LOSS_LOG_INTERVAL)
        {
            return;
        }
        let full = self.stats.records_dropped_channel_full();
        let spool = self.stats.syslog_spool_dropped();
        if full > self.reported.channel_full {
            warn!(
                "sessionlog: {} records dropped because the logger's channel was full (records_dropped_channel_full {full})",
                full - self.reported.channel_full
            );
        }
        if spool > self.reported.spool_dropped {
            warn!(
                "sessionlog: {} records not sent to syslog because the spool was full or failed (syslog_spool_dropped {spool})",
                spool - self.reported.spool_dropped
            );
        }
        if full > self.reported.channel_full || spool > self.reported.spool_dropped {
            self.reported = Reported {
                at: Some(now),
                channel_full: full,
                spool_dropped: spool,
            };
        }
    }

    fn close(mut self) {
        let now = Instant::now();
        self.flush(now);
        if let Some(j) = &mut self.jsonl {
            j.close(now);
        }
        if let Some(s) = &mut self.spool {
            if let Err(e) = s.close() {
                warn!("sessionlog: syslog spool: closing: {e}");
            }
        }
        self.reported.at = None;
        self.report_losses(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::JsonlConfig;
    use crate::jsonl::list_files;
    use crate::record::tests::record;
    use crate::record::EventKind;

    #[test]
    fn records_reach_the_file_by_shutdown() {
        let d = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            jsonl: Some(JsonlConfig::new(d.path())),
            ..LogConfig::default()
        };
        let (logger, tx) = Logger::start(cfg).unwrap();
        let stats = logger.stats();
        for i in 0..1000 {
            assert!(tx.send(record(i, EventKind::Start)));
        }
        logger.shutdown().unwrap();
        assert!(!tx.send(record(1000, EventKind::Start)));
        assert_eq!(stats.records_in(), 1000);
        assert_eq!(stats.jsonl_written(), 1000);
        assert_eq!(stats.records_dropped_shutdown(), 1);
        let files = list_files(d.path(), "sessions").unwrap();
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["session_id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        let want: Vec<String> = (0..1000u64).map(|i| format!("{i:016x}")).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn channel_overflow_is_counted_not_blocking() {
        // The logger thread is not started: a bare channel with a LogSender on it shows
        // what send does when nobody takes records out.
        let (tx, _rx) = crossbeam_channel::bounded(4);
        let stats = Arc::new(LogStats::default());
        let s = LogSender {
            tx,
            stats: stats.clone(),
        };
        let sent = (0..10).filter(|i| s.send(record(*i, EventKind::Volume))).count();
        assert_eq!(sent, 4);
        assert_eq!(stats.records_in(), 4);
        assert_eq!(stats.records_dropped_channel_full(), 6);
    }

    #[test]
    fn zero_capacity_is_a_config_error() {
        let e = Logger::start(LogConfig {
            channel_capacity: 0,
            ..LogConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("log.channel_capacity:"), "{e}");
    }
}
