//! Session events: the life of every TCP session that crosses the bridge, as the flow
//! table (and, for flows handed to the kernel, the sweeper) sees it.
//!
//! This is what the session log records are made from. Times are `Instant`s from the
//! data-plane driver's clock; the shell that writes records turns them into wall time.

use crate::port::Port;
use classify::{ClientHelloInfo, ServerHelloInfo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use wire::{Direction, FlowKey};

/// Unique per session within a run; the top 16 bits are random per run so that ids of two
/// runs do not collide in a log server's tables.
pub type SessionId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The three-way handshake was seen.
    Start,
    /// Traffic on a session whose handshake was never seen.
    StartAbnormal,
    /// Closed by FIN from both sides.
    EndNormal,
    /// No frame in either direction for the idle timeout.
    EndIdle,
    /// Closed by RST, blocked, or traffic after both FINs.
    EndAbnormal,
    /// Packets and bytes of one interval (and of the last, partial one at the end).
    Volume,
}

/// Packets and bytes counted since `since`; index 0 is client to server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Volume {
    pub since: Instant,
    pub until: Instant,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// What is known of a session, carried by each of its events.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: SessionId,
    /// The side that opened the session (sent the SYN), or for a session seen mid-stream,
    /// the side that sent the first payload.
    pub client: SocketAddr,
    pub server: SocketAddr,
    /// The bridge port the client is behind.
    pub opened_from: Port,
    /// `bypass`, `block` or `pass` (not TLS), once decided.
    pub verdict: Option<&'static str>,
    /// The policy rule that decided (`rule 2 "banks"`, `default`, `unclassified`,
    /// `not_tls`).
    pub rule: Option<String>,
    pub hello: Option<Arc<ClientHelloInfo>>,
    /// The server's answer to the hello, for a bypassed TLS session whose ServerHello was
    /// read before it went to the kernel.
    pub server_hello: Option<ServerHelloInfo>,
    /// For an intercepted session, the upstream certificate's verdict: `valid`, or
    /// `invalid: REASON`.
    pub upstream_cert: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionEvent {
    pub at: Instant,
    pub kind: SessionEventKind,
    pub session: Arc<SessionInfo>,
    /// On `Volume` events; on `End*` events, the session's totals.
    pub volume: Option<Volume>,
    /// Why, for `StartAbnormal`/`EndAbnormal`: `midstream`, `rst_from_client`,
    /// `rst_from_server`, `rst` (seen in the kernel), `blocked`, `after_close`,
    /// `kernel_map_full`, `bridge_stopped`.
    pub reason: Option<&'static str>,
}

/// Counts of one session in one direction pair, with the current interval's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Counts {
    pub interval_start: Instant,
    pub interval: [u64; 4],
    pub total: [u64; 4],
    pub started_at: Instant,
}

impl Counts {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            interval_start: now,
            interval: [0; 4],
            total: [0; 4],
            started_at: now,
        }
    }

    /// One frame of `len` bytes; `from_client` picks the direction.
    #[inline]
    pub(crate) fn add(&mut self, from_client: bool, len: u64) {
        let i = usize::from(!from_client);
        for counts in [&mut self.interval, &mut self.total] {
            if let Some(p) = counts.get_mut(i) {
                *p += 1;
            }
            if let Some(b) = counts.get_mut(2 + i) {
                *b += len;
            }
        }
    }

    /// Adds packets and bytes counted elsewhere (the kernel), as
    /// `[packets c2s, packets s2c, bytes c2s, bytes s2c]`.
    pub(crate) fn add_all(&mut self, delta: [u64; 4]) {
        for ((i, t), d) in self.interval.iter_mut().zip(self.total.iter_mut()).zip(delta) {
            *i += d;
            *t += d;
        }
    }

    /// The interval's volume, starting a new interval at `now`.
    pub(crate) fn take_interval(&mut self, now: Instant) -> Volume {
        let v = to_volume(self.interval_start, now, self.interval);
        self.interval = [0; 4];
        self.interval_start = now;
        v
    }

    pub(crate) fn totals(&self, now: Instant) -> Volume {
        to_volume(self.started_at, now, self.total)
    }
}

fn to_volume(since: Instant, until: Instant, c: [u64; 4]) -> Volume {
    let [p0, p1, b0, b1] = c;
    Volume {
        since,
        until,
        packets: [p0, p1],
        bytes: [b0, b1],
    }
}

/// A session whose frames the kernel forwards from now on, handed by its worker to the
/// sweeper with everything counted in userspace so far.
#[derive(Debug, Clone)]
pub struct KernelSession {
    pub key: FlowKey,
    /// Which way the client's frames go in the kernel map's lo/hi terms.
    pub client_dir: Direction,
    pub info: Arc<SessionInfo>,
    pub(crate) counts: Counts,
    /// `Some`: a new connection took the flow's ports and the session is over. The
    /// forwarder leaves an empty state; the worker puts in the kernel's entry as the new
    /// connection's SYN left it (the session's last counts, read before the new
    /// connection's verdict resets them), and the sweeper ends the session with it.
    pub reopened: Option<xdp::FlowState>,
}

/// Endpoints of a flow whose client sends in direction `client_dir`.
pub(crate) fn endpoints(key: &FlowKey, client_dir: Direction) -> (SocketAddr, SocketAddr) {
    let (lo, hi) = (key.lo(), key.hi());
    let (c, s) = match client_dir {
        Direction::LoToHi => (lo, hi),
        Direction::HiToLo => (hi, lo),
    };
    (SocketAddr::from(c), SocketAddr::from(s))
}

/// Where a worker sends session events. Never blocks; returns false (and the caller
/// counts it) when the consumer is behind.
pub type EventSink = Arc<dyn Fn(SessionEvent) -> bool + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_keep_directions_apart_and_intervals_restart() {
        let t0 = Instant::now();
        let mut c = Counts::new(t0);
        c.add(true, 100);
        c.add(false, 1500);
        c.add(false, 1500);
        let v = c.take_interval(t0 + Duration::from_secs(60));
        assert_eq!((v.packets, v.bytes), ([1, 2], [100, 3000]));
        c.add_all([5, 6, 700, 800]);
        let v2 = c.take_interval(t0 + Duration::from_secs(90));
        assert_eq!(v2.since, t0 + Duration::from_secs(60));
        assert_eq!((v2.packets, v2.bytes), ([5, 6], [700, 800]));
        let t = c.totals(t0 + Duration::from_secs(91));
        assert_eq!((t.packets, t.bytes), ([6, 8], [800, 3800]));
        assert_eq!(t.since, t0);
    }
}

/// Where a worker's session events and kernel handoffs go.
#[derive(Clone)]
pub struct SessionOutputs {
    pub events: EventSink,
    pub handoff: std::sync::mpsc::SyncSender<KernelSession>,
}

impl std::fmt::Debug for SessionOutputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionOutputs")
    }
}
