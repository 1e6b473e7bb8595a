//! The forwarding decision for one frame, without I/O.

use crate::stats::WorkerStats;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use wire::{parse_frame, FlowKey, L3};

/// A bridge port: A faces the clients (the switch), B the servers (the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    A,
    B,
}

impl Port {
    pub fn peer(self) -> Port {
        match self {
            Port::A => Port::B,
            Port::B => Port::A,
        }
    }

    /// This port's element of a per-port pair (no bounds check needed: two ports, two slots).
    pub fn of<T>(self, pair: &[T; 2]) -> &T {
        let [a, b] = pair;
        match self {
            Port::A => a,
            Port::B => b,
        }
    }

    pub fn of_mut<T>(self, pair: &mut [T; 2]) -> &mut T {
        let [a, b] = pair;
        match self {
            Port::A => a,
            Port::B => b,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit unchanged on the other port.
    Forward,
    /// Drop (the reason was counted).
    Drop,
}

/// Most bypass verdicts remembered as already requested, so that the frames still in
/// flight when a verdict is written do not each write it again. Cleared when full
/// (re-writing a verdict is harmless); sized once so the hot path never allocates.
const RECENT_BYPASS_CAP: usize = 4096;

/// Decides what happens to each frame that reached userspace.
///
/// Call [`Forwarder::on_frame`] for every received frame, then drain
/// [`Forwarder::take_bypass_requests`] and write those verdicts to the kernel.
///
/// Until TLS classification lands, a TCP flow needs no userspace work once it carries
/// payload: with the fast path on, its first payload segment is forwarded here and the
/// flow is handed to the kernel (verdict BYPASS) for the rest of its life.
#[derive(Debug)]
pub struct Forwarder {
    fast_path: bool,
    stats: Arc<WorkerStats>,
    recent_bypass: HashSet<FlowKey, KeyedFoldHash>,
    bypass_requests: Vec<FlowKey>,
}

impl Forwarder {
    pub fn new(fast_path: bool, stats: Arc<WorkerStats>) -> Self {
        Self {
            fast_path,
            stats,
            recent_bypass: HashSet::with_capacity_and_hasher(RECENT_BYPASS_CAP, KeyedFoldHash::new()),
            bypass_requests: Vec::with_capacity(256),
        }
    }

    #[must_use]
    pub fn on_frame(&mut self, from: Port, frame: &[u8]) -> Action {
        let port = from.of(&self.stats.ports);
        port.rx_frames.incr();
        port.rx_bytes.add(frame.len() as u64);
        let parsed = match parse_frame(frame) {
            Ok(p) => p,
            Err(e) => {
                port.drop_malformed.incr();
                if let Some(c) = from.of(&self.stats.parse_drops).get(e.index()) {
                    c.incr();
                }
                return Action::Drop;
            }
        };
        if self.fast_path {
            if let L3::Ip {
                flow: Some((key, _)),
                tcp: Some(tcp),
                ..
            } = parsed.l3
            {
                if !tcp.payload.is_empty() && !tcp.rst && self.request_bypass(key) {
                    self.stats.worker.bypass_verdicts.incr();
                }
            }
        }
        Action::Forward
    }

    fn request_bypass(&mut self, key: FlowKey) -> bool {
        if self.recent_bypass.len() >= RECENT_BYPASS_CAP {
            self.recent_bypass.clear();
        }
        if !self.recent_bypass.insert(key) {
            return false;
        }
        // Drained once per pass, so it keeps the capacity of the busiest pass: a larger
        // pass grows it once, not per frame.
        self.bypass_requests.push(key);
        true
    }

    /// Verdicts to write to the kernel, in the order they were decided.
    pub fn take_bypass_requests(&mut self) -> std::vec::Drain<'_, FlowKey> {
        self.bypass_requests.drain(..)
    }
}

/// A multiply-rotate hash over 64-bit words with a per-worker random seed, for the
/// recent-bypass set. SipHash (the std default) was 45% of the instructions of the
/// whole forwarding decision under callgrind (`perf/callgrind`); flow keys are 40 bytes
/// that this folds in five steps. The seed keeps collisions unpredictable to a sender,
/// and the set is bounded (RECENT_BYPASS_CAP), so a crafted flood costs little either way.
#[derive(Debug, Clone)]
struct KeyedFoldHash {
    seed: u64,
}

impl KeyedFoldHash {
    fn new() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
        }
    }
}

impl BuildHasher for KeyedFoldHash {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher(self.seed)
    }
}

#[derive(Debug)]
struct FoldHasher(u64);

impl FoldHasher {
    #[inline]
    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (d, s) in word.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.fold(u64::from_ne_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.fold(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.fold(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp(payload: &[u8], syn: bool) -> Vec<u8> {
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 66, 0, 1], [10, 66, 0, 2], 64)
            .tcp(40000, 80, 1, 1000);
        if syn {
            b = b.syn();
        }
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn handshake_stays_in_userspace_first_payload_requests_bypass_once() {
        let stats = Arc::new(WorkerStats::default());
        let mut f = Forwarder::new(true, stats.clone());
        assert_eq!(f.on_frame(Port::A, &tcp(b"", true)), Action::Forward);
        assert_eq!(f.take_bypass_requests().count(), 0);
        assert_eq!(f.on_frame(Port::A, &tcp(b"GET /", false)), Action::Forward);
        assert_eq!(f.on_frame(Port::A, &tcp(b"more", false)), Action::Forward);
        let reqs: Vec<_> = f.take_bypass_requests().collect();
        assert_eq!(reqs.len(), 1);
        assert_eq!((reqs[0].port_lo, reqs[0].port_hi), (40000, 80));
        assert_eq!(stats.worker.bypass_verdicts.get(), 1);
        assert_eq!(stats.ports[0].rx_frames.get(), 3);
    }

    #[test]
    fn userspace_forward_mode_never_requests_bypass() {
        let mut f = Forwarder::new(false, Arc::new(WorkerStats::default()));
        assert_eq!(f.on_frame(Port::B, &tcp(b"data", false)), Action::Forward);
        assert_eq!(f.take_bypass_requests().count(), 0);
    }

    #[test]
    fn malformed_frames_are_dropped_and_counted_by_reason() {
        let stats = Arc::new(WorkerStats::default());
        let mut f = Forwarder::new(true, stats.clone());
        assert_eq!(f.on_frame(Port::B, &[0u8; 8]), Action::Drop);
        let mut bad = tcp(b"x", false);
        bad[14] = 0x42; // IHL 2
        assert_eq!(f.on_frame(Port::B, &bad), Action::Drop);
        assert_eq!(stats.ports[1].drop_malformed.get(), 2);
        assert_eq!(stats.parse_drops[1][wire::ParseError::Runt.index()].get(), 1);
        assert_eq!(
            stats.parse_drops[1][wire::ParseError::BadIpHeader.index()].get(),
            1
        );
        let snap = stats.snapshot(&["a".into(), "b".into()]);
        assert_eq!(snap["ports"]["b"]["parse_drops"]["runt"], 1);
    }

    #[test]
    fn non_ip_is_forwarded() {
        let mut f = Forwarder::new(true, Arc::new(WorkerStats::default()));
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(f.on_frame(Port::A, &arp), Action::Forward);
    }
}
