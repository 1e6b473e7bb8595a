//! When a frame written to the syslog connection counts as delivered: the sender's
//! decision, kept free of I/O and clocks so it can be tested on its own.
//!
//! RFC 5425 has no application acknowledgement: a successful write only means the local
//! kernel took the bytes. What the sender can learn is how many bytes the server's TCP
//! acknowledged (the socket's unacknowledged byte count, SIOCOUTQ) and whether and how the
//! server closed the connection. From that:
//!
//! 1. A frame whose last byte the server's TCP acknowledged, on a connection still open
//!    `settle` later, is delivered: a live server reads what its TCP took within
//!    milliseconds, so a frame still unread after `settle` would mean a server that is
//!    alive but stuck, and then closes with a reset (case 3).
//! 2. When the server closes in order (its FIN is read before any error), every frame its
//!    TCP acknowledged was read by it: a TCP that closes with data still unread sends a
//!    reset instead of a FIN (RFC 1122 section 4.2.2.13; Linux and the BSDs do), and data
//!    arriving after the close is answered with a reset, not acknowledged. Those frames
//!    are delivered, and only the others are sent again: nothing is lost or repeated.
//! 3. Any other end (reset, write error, timeout, TLS error): frames not delivered by
//!    rule 1 are sent again. Some of them may have been read already: those are
//!    duplicates, and there can be no more of them than were acknowledged in the last
//!    `settle` before the failure. At least once, never lost.
//! 4. When we close (shutdown) and the server answers our FIN with its own, it has read
//!    the whole stream: everything is delivered.

use crate::spool::Pos;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// The server closed first, in order (a FIN read before any error).
    Orderly,
    /// Anything else: reset, write error or timeout, TLS error.
    Abortive,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Where the frame ends in the spool.
    pos: Pos,
    /// Where its last byte ends in the connection's byte stream (handshake included).
    stream_end: u64,
    /// When it was first seen acknowledged by the server's TCP.
    acked_at: Option<Instant>,
}

/// Frames written on the current connection and not yet delivered, oldest first.
#[derive(Debug)]
pub(crate) struct Tracker {
    settle: Duration,
    inflight: VecDeque<Entry>,
    /// How many entries from the front have `acked_at` set.
    acked: usize,
}

/// What became delivered: the spool position after the last such frame, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivered {
    pub pos: Pos,
    pub frames: u64,
}

impl Tracker {
    pub(crate) fn new(settle: Duration) -> Tracker {
        Tracker {
            settle,
            inflight: VecDeque::new(),
            acked: 0,
        }
    }

    /// Frames written and not delivered.
    pub(crate) fn len(&self) -> usize {
        self.inflight.len()
    }

    /// A frame was written; its last byte is at `stream_end` of the connection's stream.
    pub(crate) fn written(&mut self, pos: Pos, stream_end: u64) {
        self.inflight.push_back(Entry {
            pos,
            stream_end,
            acked_at: None,
        });
    }

    /// Rule 1: the server's TCP has acknowledged `acked` bytes of the stream, and the
    /// connection was found open at `now`.
    #[must_use]
    pub(crate) fn progress(&mut self, acked: u64, now: Instant) -> Option<Delivered> {
        for e in self.inflight.iter_mut().skip(self.acked) {
            if e.stream_end > acked {
                break;
            }
            e.acked_at = Some(now);
            self.acked += 1;
        }
        let mut out = None;
        while let Some(e) = self.inflight.front() {
            match e.acked_at {
                Some(t) if now.saturating_duration_since(t) >= self.settle => {
                    out = Some(Delivered {
                        pos: e.pos,
                        frames: out.map_or(0, |d: Delivered| d.frames) + 1,
                    });
                    self.inflight.pop_front();
                    self.acked -= 1;
                }
                _ => break,
            }
        }
        out
    }

    /// Rules 2 and 3: the connection ended; `acked` is what the server's TCP had
    /// acknowledged. Returns what is delivered; everything else is to be sent again.
    #[must_use]
    pub(crate) fn lost(&mut self, how: Loss, acked: u64) -> Option<Delivered> {
        let out = match how {
            Loss::Orderly => self.take_while(|e| e.stream_end <= acked),
            Loss::Abortive => None,
        };
        self.clear();
        out
    }

    /// Rule 4: the server answered our FIN with its own.
    #[must_use]
    pub(crate) fn closed_cleanly(&mut self) -> Option<Delivered> {
        let out = self.take_while(|_| true);
        self.clear();
        out
    }

    /// Forgets the frames in flight (they are to be sent again).
    pub(crate) fn clear(&mut self) {
        self.inflight.clear();
        self.acked = 0;
    }

    fn take_while(&mut self, f: impl Fn(&Entry) -> bool) -> Option<Delivered> {
        let mut out: Option<Delivered> = None;
        while let Some(e) = self.inflight.front().copied() {
            if !f(&e) {
                break;
            }
            out = Some(Delivered {
                pos: e.pos,
                frames: out.map_or(0, |d| d.frames) + 1,
            });
            self.inflight.pop_front();
            self.acked = self.acked.saturating_sub(1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_secs(2);

    fn pos(off: u64) -> Pos {
        Pos { seq: 0, off }
    }

    /// Three frames of 100 bytes after a 1000-byte handshake.
    fn three() -> Tracker {
        let mut t = Tracker::new(SETTLE);
        for i in 1..=3 {
            t.written(pos(i * 100), 1000 + i * 100);
        }
        t
    }

    #[test]
    fn delivered_after_ack_and_settle() {
        let t0 = Instant::now();
        let mut t = three();
        assert_eq!(t.progress(1150, t0), None);
        assert_eq!(t.progress(1200, t0 + Duration::from_secs(1)), None);
        // Frame 1 acked at t0, frame 2 at t0+1s.
        assert_eq!(
            t.progress(1200, t0 + SETTLE),
            Some(Delivered {
                pos: pos(100),
                frames: 1
            })
        );
        assert_eq!(
            t.progress(1300, t0 + Duration::from_secs(3)),
            Some(Delivered {
                pos: pos(200),
                frames: 1
            })
        );
        assert_eq!(t.len(), 1);
        assert_eq!(
            t.progress(1300, t0 + Duration::from_secs(10)),
            Some(Delivered {
                pos: pos(300),
                frames: 1
            })
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn unacked_frames_are_never_delivered_by_time_alone() {
        let t0 = Instant::now();
        let mut t = three();
        assert_eq!(t.progress(1000, t0), None);
        assert_eq!(t.progress(1000, t0 + Duration::from_secs(3600)), None);
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn orderly_close_delivers_exactly_the_acked_frames() {
        let t0 = Instant::now();
        let mut t = three();
        assert_eq!(t.progress(1200, t0), None);
        // Frame 3 was written after the server's FIN and answered with a reset.
        assert_eq!(
            t.lost(Loss::Orderly, 1200),
            Some(Delivered {
                pos: pos(200),
                frames: 2
            })
        );
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn abortive_close_resends_everything_not_settled() {
        let t0 = Instant::now();
        let mut t = three();
        assert_eq!(t.progress(1100, t0), None);
        assert_eq!(
            t.progress(1300, t0 + SETTLE),
            Some(Delivered {
                pos: pos(100),
                frames: 1
            })
        );
        // Frames 2 and 3 were acked but may not have been read before the reset.
        assert_eq!(t.lost(Loss::Abortive, 1300), None);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn clean_close_delivers_all() {
        let mut t = three();
        assert_eq!(
            t.closed_cleanly(),
            Some(Delivered {
                pos: pos(300),
                frames: 3
            })
        );
        assert_eq!(t.closed_cleanly(), None);
    }

    #[test]
    fn zero_settle_delivers_on_ack() {
        let mut t = Tracker::new(Duration::ZERO);
        t.written(pos(1), 10);
        t.written(pos(2), 20);
        assert_eq!(
            t.progress(20, Instant::now()),
            Some(Delivered {
                pos: pos(2),
                frames: 2
            })
        );
    }
}
