//! The syslog sender thread: reads the spool in order, writes it to the TLS connection,
//! and releases from the spool what the rules of `delivery` call delivered. Reconnects
//! with exponential backoff; after a lost connection it sends again from the first frame
//! not delivered.

use crate::delivery::{Delivered, Loss, Tracker};
use crate::spool::{FrameEnd, SpoolReader};
use crate::stats::{add, LogStats};
use crate::tls::{Conn, Connector};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tracing::{debug, info, warn};

/// Bytes read from the spool and written in one go.
const BATCH_BYTES: usize = 64 << 10;
/// Frames written and not yet delivered after which the sender waits for acknowledgements.
const MAX_IN_FLIGHT: usize = 200_000;
/// How often, at most, the spool cursor is written while frames are delivered.
const PERSIST_INTERVAL: Duration = Duration::from_millis(500);
/// How long one connect (TCP and TLS handshake) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the sender sleeps when it has nothing to do; also how often it looks at an
/// idle connection.
const IDLE_WAIT: Duration = Duration::from_millis(100);
/// A connection lost sooner than this after it was made counts as a failed attempt for the
/// backoff (a server that accepts and then drops us must not be hammered).
const MIN_HEALTHY: Duration = Duration::from_secs(1);
/// Repeated connect failures are logged at most this often.
const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Shared between the sender thread and `Logger::shutdown`.
#[derive(Debug, Default)]
pub(crate) struct SenderCtl {
    /// Set at shutdown: deliver what is spooled by then, and stop.
    deadline: Mutex<Option<Instant>>,
    wake: Condvar,
    /// The open connection's socket, so that shutdown can cut a write stuck past the
    /// deadline.
    socket: Mutex<Option<TcpStream>>,
}

impl SenderCtl {
    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn finish_by(&self, deadline: Instant) {
        *Self::lock(&self.deadline) = Some(deadline);
        self.wake.notify_all();
    }

    fn deadline(&self) -> Option<Instant> {
        *Self::lock(&self.deadline)
    }

    /// Sleeps `d`, but not past the shutdown deadline (set before or during the sleep).
    fn sleep(&self, d: Duration) {
        let start = Instant::now();
        let mut g = Self::lock(&self.deadline);
        loop {
            let until = match *g {
                Some(deadline) => (start + d).min(deadline),
                None => start + d,
            };
            let now = Instant::now();
            if now >= until {
                return;
            }
            g = match self.wake.wait_timeout(g, until - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Cuts the open connection, if any (a write stuck past the deadline then fails).
    pub(crate) fn cut(&self) {
        if let Some(s) = Self::lock(&self.socket).as_ref() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// How a connection's session ended.
#[derive(Debug)]
enum End {
    /// The connection failed.
    Lost(Loss),
    /// Shutdown: everything spooled was written.
    Drained,
    /// Shutdown: the deadline passed first.
    Deadline,
}

#[derive(Debug)]
pub(crate) struct Sender {
    pub connector: Connector,
    pub reader: SpoolReader,
    pub tracker: Tracker,
    pub stats: Arc<LogStats>,
    pub ctl: Arc<SenderCtl>,
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    pub server: String,
}

impl Sender {
    pub(crate) fn spawn(self) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("gw-syslog".into())
            .spawn(move || self.run())
    }

    fn run(mut self) {
        let mut backoff = self.reconnect_min;
        let mut failures = 0u64;
        let mut last_failure_log: Option<Instant> = None;
        let mut last_persist = Instant::now();
        loop {
            if let Some(deadline) = self.ctl.deadline() {
                let nothing_left = self.reader.drained() && self.reader.all_committed();
                if nothing_left || Instant::now() >= deadline {
                    break;
                }
            }
            let timeout = match self.ctl.deadline() {
                Some(d) => CONNECT_TIMEOUT.min(d.saturating_duration_since(Instant::now())),
                None => CONNECT_TIMEOUT,
            };
            let mut conn = match self.connector.connect(timeout) {
                Ok(c) => c,
                Err(e) => {
                    add(&self.stats.syslog_connect_failures, 1);
                    failures += 1;
                    let now = Instant::now();
                    if last_failure_log
                        .is_none_or(|t| now.saturating_duration_since(t) >= FAILURE_LOG_INTERVAL)
                    {
                        last_failure_log = Some(now);
                        warn!(
                            "sessionlog: syslog server {}: {e:#} ({failures} failed attempts; spooling, {} bytes in the spool; retrying with backoff up to {:?})",
                            self.server,
                            self.stats.syslog_spool_bytes(),
                            self.reconnect_max
                        );
                    } else {
                        debug!("sessionlog: syslog server {}: {e:#}", self.server);
                    }
                    self.ctl.sleep(backoff);
                    backoff = (backoff * 2).min(self.reconnect_max);
                    continue;
                }
            };
            add(&self.stats.syslog_connects, 1);
            info!(
                "sessionlog: syslog connected to {} ({} bytes in the spool)",
                self.server,
                self.stats.syslog_spool_bytes()
            );
            failures = 0;
            last_failure_log = None;
            let connected_at = Instant::now();
            *SenderCtl::lock(&self.ctl.socket) = conn.socket_handle().ok();

            let end = self.session(&mut conn, &mut last_persist);
            *SenderCtl::lock(&self.ctl.socket) = None;
            match end {
                End::Lost(loss) => {
                    add(&self.stats.syslog_disconnects, 1);
                    let in_flight = self.tracker.len() as u64;
                    let acked = conn.acked();
                    let delivered = self.tracker.lost(loss, acked);
                    let d = delivered.map_or(0, |d| d.frames);
                    self.deliver(delivered);
                    add(&self.stats.syslog_resent, in_flight - d);
                    warn!(
                        "sessionlog: syslog connection to {} lost ({}); {} records to send again",
                        self.server,
                        match loss {
                            Loss::Orderly => "closed by the server",
                            Loss::Abortive => "reset or failed",
                        },
                        in_flight - d
                    );
                    self.reader.rewind();
                    self.persist(&mut last_persist);
                    if connected_at.elapsed() >= MIN_HEALTHY {
                        // Reconnect at once: a restarted server is often back already.
                        backoff = self.reconnect_min;
                    } else {
                        self.ctl.sleep(backoff);
                        backoff = (backoff * 2).min(self.reconnect_max);
                    }
                }
                End::Drained => {
                    let left = self
                        .ctl
                        .deadline()
                        .map_or(Duration::ZERO, |d| d.saturating_duration_since(Instant::now()));
                    let delivered = if conn.close(left) {
                        self.tracker.closed_cleanly()
                    } else {
                        self.tracker.lost(Loss::Abortive, 0)
                    };
                    self.deliver(delivered);
                    break;
                }
                End::Deadline => {
                    self.tracker.clear();
                    break;
                }
            }
        }
        self.persist(&mut last_persist);
        if !self.reader.all_committed() {
            info!(
                "sessionlog: syslog: stopping with undelivered records in the spool; they are sent at the next start"
            );
        }
    }

    fn session(&mut self, conn: &mut Conn, last_persist: &mut Instant) -> End {
        let mut buf = Vec::with_capacity(BATCH_BYTES + 4096);
        let mut ends: Vec<FrameEnd> = Vec::new();
        loop {
            let now = Instant::now();
            if let Err(loss) = conn.poll_peer() {
                return End::Lost(loss);
            }
            let acked = conn.acked();
            let delivered = self.tracker.progress(acked, now);
            self.deliver(delivered);
            if now.saturating_duration_since(*last_persist) >= PERSIST_INTERVAL {
                self.persist(last_persist);
            }
            if let Some(deadline) = self.ctl.deadline() {
                if now >= deadline {
                    return End::Deadline;
                }
                if self.reader.drained() {
                    return End::Drained;
                }
            }
            if self.tracker.len() >= MAX_IN_FLIGHT {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            buf.clear();
            ends.clear();
            let n = match self.reader.read_batch(BATCH_BYTES, &mut buf, &mut ends) {
                Ok(n) => n,
                Err(e) => {
                    warn!("sessionlog: syslog spool: {e}");
                    0
                }
            };
            if n == 0 {
                self.reader.wait(IDLE_WAIT);
                continue;
            }
            let mut start = 0;
            for e in &ends {
                let frame = buf.get(start..e.buf_end).unwrap_or_default();
                start = e.buf_end;
                match conn.queue(frame) {
                    Ok(stream_end) => self.tracker.written(e.pos, stream_end),
                    Err(err) => {
                        debug!("sessionlog: syslog TLS: {err}");
                        return End::Lost(Loss::Abortive);
                    }
                }
            }
            if let Err(e) = conn.send() {
                debug!("sessionlog: syslog write ({} bytes left): {e}", conn.queued());
                return End::Lost(Loss::Abortive);
            }
            add(&self.stats.syslog_sent, n as u64);
        }
    }

    fn deliver(&mut self, d: Option<Delivered>) {
        if let Some(d) = d {
            self.reader.commit(d.pos);
            add(&self.stats.syslog_delivered, d.frames);
        }
    }

    fn persist(&mut self, last: &mut Instant) {
        *last = Instant::now();
        if let Err(e) = self.reader.persist() {
            warn!("sessionlog: syslog spool: writing the cursor: {e}");
        }
    }
}
