//! Reassembles a client's first bytes, as TCP delivers them, into a ClientHello.
//!
//! Two layers are undone here. TCP: segments arrive split anywhere, duplicated,
//! overlapping and out of order, so bytes are placed by their offset in the client's
//! stream and only the contiguous prefix is parsed. TLS records: a ClientHello may span
//! several handshake records (RFC 8446 §5.1), so record payloads are concatenated until
//! the handshake message's own length is met.
//!
//! Everything is bounded by [`Config`]: the bytes kept (the stream buffer and the
//! handshake message each at most `max_bytes`), the number of disjoint ranges held while
//! waiting for a gap to fill, and the time allowed.

use std::time::{Duration, Instant};

use crate::client_hello::{self, ClientHelloInfo, ProtocolVersion};
use crate::codec::DecodeError;

/// Record content type handshake (RFC 8446 §5.1).
const CONTENT_HANDSHAKE: u8 = 22;
/// Handshake message type client_hello (RFC 8446 §4).
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// Largest plaintext record fragment (RFC 8446 §5.1: "MUST NOT exceed 2^14 bytes").
const MAX_FRAGMENT: usize = 1 << 14;
/// Record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// Handshake header: type, 24-bit length.
const HANDSHAKE_HEADER: usize = 4;

/// Limits on one assembler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Stream bytes, counted from the first payload byte, that may be needed to see the
    /// whole ClientHello. A hello reaching past this gives [`GaveUp::ByteBudget`]; bytes
    /// past it are never stored.
    pub max_bytes: usize,
    /// How many disjoint ranges of the stream may be held while waiting for gaps to fill.
    pub max_ranges: usize,
    /// Time from [`ClientHelloAssembler::new`] after which [`ClientHelloAssembler::handle_timeout`]
    /// gives up.
    pub max_wait: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // Post-quantum hellos are ~1.8 KB; 16 KiB leaves room for long ECH and
            // PSK extensions and a hello split into many small records.
            max_bytes: 16 * 1024,
            max_ranges: 32,
            max_wait: Duration::from_secs(10),
        }
    }
}

/// Where classification of a stream stands after the bytes seen so far. Every state but
/// `NeedMore` is final: later calls return it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not enough contiguous bytes yet.
    NeedMore,
    /// A whole ClientHello was decoded (TLS, SSL 3.0 or SSLv2-format: see
    /// [`ClientHelloInfo::version_family`]).
    Done(Box<ClientHelloInfo>),
    /// These bytes are not a TLS ClientHello this parser can vouch for.
    NotTls(NotTls),
    /// Classification stopped before an answer: the hello was too large, too
    /// fragmented, too slow, or inconsistent.
    GaveUp(GaveUp),
}

/// Why a stream is not (or not parseable as) a TLS ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotTls {
    /// The first byte is neither a handshake record nor an SSLv2 record header.
    #[error("first byte {first_byte:#04x} is not a TLS handshake record")]
    NotHandshake {
        /// The byte seen.
        first_byte: u8,
    },
    /// A handshake content type, but the record version's major byte is not 3.
    #[error("record version major {major} is not 3")]
    RecordVersion {
        /// The byte seen.
        major: u8,
    },
    /// The first handshake message is not a ClientHello.
    #[error("first handshake message type {msg_type} is not client_hello")]
    NotClientHello {
        /// The message type seen.
        msg_type: u8,
    },
    /// It began like TLS, but a record or the ClientHello is malformed. Policy decides
    /// whether such a flow is passed on untouched or blocked.
    #[error("malformed ClientHello: {0}")]
    Malformed(DecodeError),
}

/// Why classification stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GaveUp {
    /// The hello (with its record headers) reaches past [`Config::max_bytes`].
    #[error("ClientHello needs more than {budget} bytes")]
    ByteBudget {
        /// The budget in force.
        budget: usize,
    },
    /// More than [`Config::max_ranges`] disjoint ranges were waiting for gaps to fill.
    #[error("more than {max_ranges} out-of-order ranges held")]
    TooFragmented {
        /// The limit in force.
        max_ranges: usize,
    },
    /// A retransmission carried different bytes for an offset already received: the
    /// server may see either version, so neither can be trusted.
    #[error("retransmission at stream offset {offset} differs from the original")]
    ConflictingRetransmission {
        /// Stream offset of the first differing byte.
        offset: usize,
    },
    /// [`Config::max_wait`] passed without a whole hello.
    #[error("no complete ClientHello within the time budget")]
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Unknown,
    Tls,
    Sslv2,
}

/// Sans-IO ClientHello reassembler for one TCP flow's client-to-server direction.
///
/// A driver calls [`push`](Self::push) with each client payload segment, in whatever
/// order and with whatever duplication the network delivered them, and
/// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout)'s
/// instant has passed. It stops feeding the assembler once a call returns anything but
/// [`Progress::NeedMore`].
#[derive(Debug, Clone)]
pub struct ClientHelloAssembler {
    config: Config,
    /// `None` when `max_wait` reaches past what `Instant` can represent.
    deadline: Option<Instant>,
    /// Stream bytes `[0, buf.len())`; bytes in no `ranges` entry are zero filler.
    buf: Vec<u8>,
    /// Received ranges of the stream, sorted, disjoint and not touching.
    ranges: Vec<(usize, usize)>,
    format: Format,
    /// Stream offset parsed up to.
    pos: usize,
    /// Payload bytes of the current record not yet parsed.
    record_left: usize,
    record_version: Option<ProtocolVersion>,
    /// The handshake message so far, header included, concatenated across records.
    handshake: Vec<u8>,
    outcome: Option<Progress>,
}

impl ClientHelloAssembler {
    /// An assembler for a flow whose first payload byte is stream offset 0, started at
    /// `now` (the time budget runs from here).
    pub fn new(config: Config, now: Instant) -> Self {
        Self {
            deadline: now.checked_add(config.max_wait),
            config,
            buf: Vec::new(),
            ranges: Vec::new(),
            format: Format::Unknown,
            pos: 0,
            record_left: 0,
            record_version: None,
            handshake: Vec::new(),
            outcome: None,
        }
    }

    /// Feeds one segment's payload. `seq_offset` is its sequence number minus the
    /// client's ISN plus one (wrapping), i.e. the offset of `bytes[0]` in the stream.
    pub fn push(&mut self, seq_offset: u32, bytes: &[u8]) -> Progress {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        match self.store(seq_offset, bytes) {
            Ok(()) => self.advance(),
            Err(gave_up) => self.finish(Progress::GaveUp(gave_up)),
        }
    }

    /// Gives up with [`GaveUp::Timeout`] once the deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) -> Progress {
        if let Some(outcome) = &self.outcome {
            return outcome.clone();
        }
        if self.deadline.is_some_and(|deadline| now >= deadline) {
            self.finish(Progress::GaveUp(GaveUp::Timeout))
        } else {
            Progress::NeedMore
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called; `None` once
    /// classification has finished (or if `max_wait` is effectively forever).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| self.outcome.is_none())
    }

    /// The final result, once there is one.
    pub fn outcome(&self) -> Option<&Progress> {
        self.outcome.as_ref()
    }

    /// Heap bytes this assembler holds now, for the flow table's memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
            + self.handshake.capacity()
            + self.ranges.capacity() * std::mem::size_of::<(usize, usize)>()
    }

    /// Copies the part of `bytes` inside `[0, max_bytes)` into the stream buffer.
    fn store(&mut self, seq_offset: u32, bytes: &[u8]) -> Result<(), GaveUp> {
        // Offsets of 2^31 and more lie before the stream's start in TCP's wrapping
        // sequence space (RFC 9293 §3.4): a stale segment whose tail may still reach in.
        let start = i64::from(i32::from_ne_bytes(seq_offset.to_ne_bytes()));
        let end = start.saturating_add(i64::try_from(bytes.len()).unwrap_or(i64::MAX));
        let budget = i64::try_from(self.config.max_bytes).unwrap_or(i64::MAX);
        let (lo, hi) = (start.max(0), end.min(budget));
        if lo >= hi {
            return Ok(());
        }
        let (Ok(lo), Ok(hi), Ok(skip)) = (
            usize::try_from(lo),
            usize::try_from(hi),
            usize::try_from(lo - start),
        ) else {
            return Ok(());
        };
        let Some(data) = bytes.get(skip..skip + (hi - lo)) else {
            return Ok(());
        };

        for &(a, b) in &self.ranges {
            let (from, to) = (a.max(lo), b.min(hi));
            if from >= to {
                continue;
            }
            let old = self.buf.get(from..to).unwrap_or_default();
            let new = data.get(from - lo..to - lo).unwrap_or_default();
            if let Some(i) = old.iter().zip(new).position(|(x, y)| x != y) {
                return Err(GaveUp::ConflictingRetransmission { offset: from + i });
            }
        }

        if hi > self.buf.len() {
            // Grow geometrically but never past the budget.
            let want = hi.max(self.buf.capacity() * 2).min(self.config.max_bytes);
            self.buf.reserve_exact(want.saturating_sub(self.buf.len()));
            self.buf.resize(hi, 0);
        }
        if let Some(dst) = self.buf.get_mut(lo..hi) {
            dst.copy_from_slice(data);
        }

        // Insert [lo, hi) and merge whatever it overlaps or touches.
        let at = self.ranges.partition_point(|&(a, _)| a < lo);
        self.ranges.insert(at, (lo, hi));
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
        if self.ranges.len() > self.config.max_ranges {
            return Err(GaveUp::TooFragmented {
                max_ranges: self.config.max_ranges,
            });
        }
        Ok(())
    }

    /// Bytes received without a gap from offset 0.
    fn contiguous(&self) -> usize {
        match self.ranges.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    fn advance(&mut self) -> Progress {
        match self.step() {
            Progress::NeedMore => Progress::NeedMore,
            done => self.finish(done),
        }
    }

    fn step(&mut self) -> Progress {
        if self.format == Format::Unknown {
            let Some(&first) = self.buf.get(..self.contiguous()).and_then(<[u8]>::first) else {
                return self.need_more();
            };
            self.format = if first == CONTENT_HANDSHAKE {
                Format::Tls
            } else if first & 0x80 != 0 {
                Format::Sslv2
            } else {
                return Progress::NotTls(NotTls::NotHandshake { first_byte: first });
            };
        }
        match self.format {
            Format::Sslv2 => self.advance_sslv2(),
            _ => self.advance_tls(),
        }
    }

    /// Progress when the parser needs the next stream byte. Only a full budget turns this
    /// into giving up: deciding on a shorter prefix could contradict what the bytes
    /// still to come would decide, and the answer must not depend on how the stream
    /// was cut into segments.
    fn need_more(&self) -> Progress {
        if self.contiguous() >= self.config.max_bytes {
            Progress::GaveUp(GaveUp::ByteBudget {
                budget: self.config.max_bytes,
            })
        } else {
            Progress::NeedMore
        }
    }

    fn advance_tls(&mut self) -> Progress {
        let avail = self.contiguous();
        let data = self.buf.get(..avail).unwrap_or_default();
        loop {
            if self.record_left == 0 {
                let at = self.pos;
                let header = data.get(at..at + RECORD_HEADER);
                // Answer "not TLS" from the first bytes that show it, without waiting for
                // a whole header.
                if at == 0 {
                    if let Some(&major) = data.get(1) {
                        if major != 3 {
                            return Progress::NotTls(NotTls::RecordVersion { major });
                        }
                    }
                } else if let Some(&typ) = data.get(at) {
                    // RFC 8446 §5.1: handshake messages MUST NOT be interleaved with
                    // other record types.
                    if typ != CONTENT_HANDSHAKE {
                        return malformed(DecodeError::Invalid("non-handshake record inside ClientHello"));
                    }
                }
                let Some(&[_, major, minor, len_hi, len_lo]) = header else {
                    return self.need_more();
                };
                let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
                // RFC 8446 §5.1: no zero-length handshake fragments, none over 2^14.
                if len == 0 {
                    return malformed(DecodeError::Invalid("empty handshake record"));
                }
                if len > MAX_FRAGMENT {
                    return malformed(DecodeError::Invalid("record length over 2^14"));
                }
                if at == 0 {
                    self.record_version = Some(ProtocolVersion(u16::from_be_bytes([major, minor])));
                }
                self.pos += RECORD_HEADER;
                self.record_left = len;
            }

            // Take only what the handshake message still lacks.
            let wanted = match message_len(&self.handshake) {
                Some(total) => total - self.handshake.len(),
                None => HANDSHAKE_HEADER - self.handshake.len(),
            };
            let n = self.record_left.min(wanted).min(avail.saturating_sub(self.pos));
            let Some(chunk) = data.get(self.pos..self.pos + n).filter(|c| !c.is_empty()) else {
                return self.need_more();
            };
            self.handshake.extend_from_slice(chunk);
            self.pos += n;
            self.record_left -= n;

            if let Some(&msg_type) = self.handshake.first() {
                if msg_type != HANDSHAKE_CLIENT_HELLO {
                    return Progress::NotTls(NotTls::NotClientHello { msg_type });
                }
            }
            let Some(total) = message_len(&self.handshake) else {
                continue;
            };
            if self.handshake.len() == HANDSHAKE_HEADER {
                // The message alone, before record headers, must fit the budget.
                if total > self.config.max_bytes {
                    return Progress::GaveUp(GaveUp::ByteBudget {
                        budget: self.config.max_bytes,
                    });
                }
                self.handshake.reserve_exact(total - HANDSHAKE_HEADER);
            }
            if self.handshake.len() >= total {
                let body = self.handshake.get(HANDSHAKE_HEADER..total).unwrap_or_default();
                let record_version = self.record_version.unwrap_or(ProtocolVersion(0));
                return match client_hello::parse_tls(body, record_version) {
                    Ok(info) => Progress::Done(Box::new(info)),
                    Err(e) => malformed(e),
                };
            }
        }
    }

    fn advance_sslv2(&mut self) -> Progress {
        let data = self.buf.get(..self.contiguous()).unwrap_or_default();
        // RFC 5246 Appendix E.2: a two-byte header with the top bit set and a 15-bit
        // length, then msg_type 1 (CLIENT-HELLO).
        let (Some(&hi), Some(&lo)) = (data.first(), data.get(1)) else {
            return self.need_more();
        };
        let Some(&msg_type) = data.get(2) else {
            return self.need_more();
        };
        if msg_type != HANDSHAKE_CLIENT_HELLO {
            return Progress::NotTls(NotTls::NotClientHello { msg_type });
        }
        let total = 2 + usize::from(u16::from_be_bytes([hi & 0x7f, lo]));
        if total > self.config.max_bytes {
            return Progress::GaveUp(GaveUp::ByteBudget {
                budget: self.config.max_bytes,
            });
        }
        match data.get(2..total) {
            Some(body) => match client_hello::parse_sslv2(body) {
                Ok(info) => Progress::Done(Box::new(info)),
                Err(e) => malformed(e),
            },
            None => self.need_more(),
        }
    }

    fn finish(&mut self, outcome: Progress) -> Progress {
        self.buf = Vec::new();
        self.ranges = Vec::new();
        self.handshake = Vec::new();
        self.outcome = Some(outcome.clone());
        outcome
    }
}

fn malformed(e: DecodeError) -> Progress {
    Progress::NotTls(NotTls::Malformed(e))
}

/// Total length (header included) of the handshake message whose first bytes are `hs`,
/// once its header is complete.
fn message_len(hs: &[u8]) -> Option<usize> {
    match hs.get(..HANDSHAKE_HEADER)? {
        &[_, a, b, c] => usize::try_from(u32::from_be_bytes([0, a, b, c]))
            .ok()
            .map(|len| len + HANDSHAKE_HEADER),
        _ => None,
    }
}
