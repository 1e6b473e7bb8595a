//! A scripted takeover: one fixed IPv4 connection (SYN / SYN-ACK with MSS, window scale,
//! SACK-permitted and timestamps, then a held ClientHello) is taken over with
//! `splice::Splice`, and the input is a script of operations on it — frames from either
//! peer (raw bytes, or TCP fields wrapped in valid Ethernet/IPv4 headers with correct
//! checksums), time, `recv`/`send`/`close`/`abort` and `poll_transmit`.
//!
//! Input: byte 0 picks the `Config` (bit 0: small buffers). Then, per operation, one
//! selector byte: bit 7 picks the side (0 client, 1 server), the low nibble the operation:
//!
//! | nibble | operation | operands |
//! |---|---|---|
//! | 0 | raw frame from the side | u16 LE length, that many bytes |
//! | 1, 11..=15 | built segment from the side | u16 LE length, that many bytes of fields (below) |
//! | 2 | advance time, `handle_timeout` | u16 LE milliseconds |
//! | 3 | jump to `poll_timeout()` (or +1 s), `handle_timeout` | — |
//! | 4 | `recv` from the side | u8: buffer of (n + 1) * 32 bytes |
//! | 5 | `send` to the side | u16 LE: byte count (contents are a known pattern) |
//! | 6 | `close` the side | — |
//! | 7 | `abort` the side | — |
//! | 8 | `poll_transmit` until `None` | — |
//! | 9 | one `poll_transmit` into a short buffer | u8: buffer of n * 8 bytes |
//! | 10 | `status` / `is_finished` / `counters` | — |
//!
//! Built-segment fields (missing bytes read as 0): flags (TCP flag byte), mode, seq
//! offset (i32 LE), ack offset (i32 LE), window (u16 LE), TSval offset (i16 LE), TSecr
//! offset (i16 LE), raw-options length (u8 % 41), raw option bytes, then the payload.
//! The sequence number is the peer's next one as this script has tracked it (mode bit 0:
//! its ISN + 1) plus the offset; the acknowledgment number is the end of what the splice
//! sent toward the peer (mode bit 1: the other ISN + 1) plus the offset. Mode bit 2:
//! leave out the timestamps option; bit 3: a SACK block from the first 8 raw-option
//! bytes (offsets from the ack); bit 4: append the raw option bytes (padded with EOL);
//! bit 5: wrong destination port (foreign); bit 6: corrupt the TCP checksum. (smoltcp
//! skips checksum verification under `cfg(fuzzing)`, which cargo-fuzz sets, so a bad
//! checksum is not rejected here as it is in production: a crash found with bit 6 set,
//! or with a raw frame, should be re-checked with a correct checksum.)
//!
//! A final phase drains and runs the timers until the session is quiet.
//!
//! Invariants: no panic; every frame `poll_transmit` writes fits the buffer and parses
//! (etherparse) as Ethernet/IPv4/TCP with correct checksums, the session's MACs,
//! addresses, ports and TTL, no SYN, no option but NOP/timestamps/SACK, the timestamps
//! option present with a TSval that never goes backwards; its payload is exactly the
//! bytes `send` accepted at that stream offset (a FIN only after all of them); the
//! window, scaled as the peer reads it, never exceeds the receive buffer; `send` and
//! `recv` never move more than they were given or than `status` said; the client side's
//! stream starts with the held ClientHello; `poll_transmit` and the timers settle.
#![no_main]

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use etherparse::{
    LinkHeader, NetHeaders, PacketBuilder, PacketHeaders, TcpHeader, TcpOptionElement, TransportHeader,
};
use libfuzzer_sys::fuzz_target;
use splice::{Config, HandshakeRecord, Side, Splice};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const CLIENT_IP: [u8; 4] = [10, 0, 0, 1];
const SERVER_IP: [u8; 4] = [10, 0, 0, 2];
const CLIENT_PORT: u16 = 40_000;
const SERVER_PORT: u16 = 443;
const ISN_C: u32 = 0xfff0_0000;
/// Close to the wrap, so that offsets and comparisons cross it.
const ISN_S: u32 = 0xffff_ff00;
const TSVAL_C: u32 = 1_000;
const TSVAL_S: u32 = 7_000_000;
const TTL_C: u8 = 61;
const TTL_S: u8 = 57;
const WSCALE_C: u8 = 7;
const WSCALE_S: u8 = 9;
const MSS: u16 = 1460;
const HELLO: &[u8] = b"\x16\x03\x01\x00\x40\x01\x00\x00\x3c\x03\x03held ClientHello bytes of the taken-over connection";

const MAX_OPS: usize = 1024;

/// `SPLICE_FUZZ_TRACE=1` prints the operations and the frames written (for replaying
/// a crash or checking what a seed does).
fn trace_on() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("SPLICE_FUZZ_TRACE").is_some())
}

macro_rules! trace {
    ($($arg:tt)*) => {
        if trace_on() {
            eprintln!($($arg)*);
        }
    };
}
const MAX_DRAIN: usize = 4096;

fn side_of(bit: bool) -> Side {
    if bit {
        Side::Server
    } else {
        Side::Client
    }
}

fn idx(side: Side) -> usize {
    match side {
        Side::Client => 0,
        Side::Server => 1,
    }
}

fn checksum_add(mut sum: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP segment from one real peer, as a whole Ethernet/IPv4 frame.
struct Seg<'a> {
    from_client: bool,
    flags: u8,
    seq: u32,
    ack: u32,
    window: u16,
    /// Already a multiple of 4, at most 40 bytes.
    options: &'a [u8],
    payload: &'a [u8],
    dst_port_delta: u16,
    bad_checksum: bool,
}

fn build_frame(seg: &Seg<'_>) -> Vec<u8> {
    let (smac, dmac, sip, dip, sport, dport, ttl) = if seg.from_client {
        (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, CLIENT_PORT, SERVER_PORT, TTL_C)
    } else {
        (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, SERVER_PORT, CLIENT_PORT, TTL_S)
    };
    let dport = dport.wrapping_add(seg.dst_port_delta);
    let tcp_len = 20 + seg.options.len() + seg.payload.len();
    let total = 20 + tcp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dmac);
    f.extend_from_slice(&smac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let ip_at = f.len();
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&(total as u16).to_be_bytes());
    f.extend_from_slice(&[0x12, 0x34, 0x40, 0x00, ttl, 6, 0, 0]);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&dip);
    let ip_sum = checksum_fold(checksum_add(0, &f[ip_at..ip_at + 20]));
    f[ip_at + 10..ip_at + 12].copy_from_slice(&ip_sum.to_be_bytes());
    let tcp_at = f.len();
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&seg.seq.to_be_bytes());
    f.extend_from_slice(&seg.ack.to_be_bytes());
    f.push((((20 + seg.options.len()) / 4) as u8) << 4);
    f.push(seg.flags);
    f.extend_from_slice(&seg.window.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(seg.options);
    f.extend_from_slice(seg.payload);
    let mut sum = checksum_add(0, &sip);
    sum = checksum_add(sum, &dip);
    sum += 6 + tcp_len as u32;
    sum = checksum_add(sum, &f[tcp_at..]);
    let mut tcp_sum = checksum_fold(sum);
    if seg.bad_checksum {
        tcp_sum ^= 0x5a5a;
    }
    f[tcp_at + 16..tcp_at + 18].copy_from_slice(&tcp_sum.to_be_bytes());
    f
}

fn syn_frame(from_client: bool) -> Vec<u8> {
    let (smac, dmac, sip, dip, sport, dport, ttl, isn, tsval, wscale) = if from_client {
        (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, CLIENT_PORT, SERVER_PORT, TTL_C, ISN_C, TSVAL_C, WSCALE_C)
    } else {
        (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, SERVER_PORT, CLIENT_PORT, TTL_S, ISN_S, TSVAL_S, WSCALE_S)
    };
    let mut tcp = TcpHeader::new(sport, dport, isn, 64_240);
    tcp.syn = true;
    let tsecr = if from_client {
        0
    } else {
        tcp.ack = true;
        tcp.acknowledgment_number = ISN_C.wrapping_add(1);
        TSVAL_C
    };
    tcp.set_options(&[
        TcpOptionElement::MaximumSegmentSize(MSS),
        TcpOptionElement::SelectiveAcknowledgementPermitted,
        TcpOptionElement::Timestamp(tsval, tsecr),
        TcpOptionElement::Noop,
        TcpOptionElement::WindowScale(wscale),
    ])
    .expect("SYN options fit");
    let mut out = Vec::new();
    PacketBuilder::ethernet2(smac, dmac)
        .ipv4(sip, dip, ttl)
        .tcp_header(tcp)
        .write(&mut out, &[])
        .expect("SYN frame");
    out
}

fn ts_option(tsval: u32, tsecr: u32) -> [u8; 12] {
    let mut o = [1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0];
    o[4..8].copy_from_slice(&tsval.to_be_bytes());
    o[8..12].copy_from_slice(&tsecr.to_be_bytes());
    o
}

/// Reads the script; bytes past the end read as 0.
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }
    fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }
    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | u16::from(self.u8()) << 8
    }
    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | u32::from(self.u16()) << 16
    }
}

/// Byte `k` of the stream the script sends toward `side`.
fn pattern(side: Side, k: usize) -> u8 {
    let x = (k as u32).wrapping_mul(0x9e37_79b1) ^ (idx(side) as u32) << 7;
    (x >> 24) as u8 ^ (k as u8)
}

struct Harness {
    splice: Splice,
    config: Config,
    base: Instant,
    now_ms: u64,
    /// The next sequence number each real peer would send (client, server).
    peer_next: [u32; 2],
    /// End (seq + len + FIN) of the furthest segment the splice sent toward each peer
    /// (client, server): what that peer acknowledges by default.
    sent_end: [u32; 2],
    /// Bytes `send` accepted toward each side.
    stream: [Vec<u8>; 2],
    /// A FIN went toward the side, or `close` was called on it: smoltcp takes a peer's
    /// ACK of a FIN it has queued but not yet sent (its acceptable-ACK range ends at
    /// the end of the send buffer plus the FIN, RFC 9293's SND.NXT notwithstanding),
    /// and its next ACK then sits past a FIN that never left.
    fin_sent: [bool; 2],
    /// Latest TSval seen toward each side.
    last_tsval: [Option<u32>; 2],
    /// Bytes read from the client side so far.
    client_read: usize,
    buf: Vec<u8>,
}

impl Harness {
    fn now(&self) -> Instant {
        self.base + Duration::from_millis(self.now_ms)
    }

    fn isn(side: Side) -> u32 {
        match side {
            Side::Client => ISN_C,
            Side::Server => ISN_S,
        }
    }

    fn handle(&mut self, from: Side, frame: &[u8]) -> bool {
        let now = self.now();
        match from {
            Side::Client => self.splice.handle_from_client(now, frame).is_ok(),
            Side::Server => self.splice.handle_from_server(now, frame).is_ok(),
        }
    }

    fn built_segment(&mut self, from: Side, chunk: &[u8]) {
        let mut r = Reader { data: chunk };
        let flags = r.u8();
        let mode = r.u8();
        let seq_off = r.u32();
        let ack_off = r.u32();
        let window = r.u16();
        let ts_off = r.u16() as i16;
        let tsecr_off = r.u16() as i16;
        let raw_len = usize::from(r.u8() % 41);
        let raw = r.take(raw_len);
        let payload = r.data;

        let me = idx(from);
        let seq_base = if mode & 0x01 != 0 {
            Self::isn(from).wrapping_add(1)
        } else {
            self.peer_next[me]
        };
        let ack_base = if mode & 0x02 != 0 {
            Self::isn(from.other()).wrapping_add(1)
        } else {
            self.sent_end[me]
        };
        let seq = seq_base.wrapping_add(seq_off);
        let ack = ack_base.wrapping_add(ack_off);

        let mut options = Vec::with_capacity(40);
        if mode & 0x04 == 0 {
            let (own, other) = match from {
                Side::Client => (TSVAL_C, TSVAL_S),
                Side::Server => (TSVAL_S, TSVAL_C),
            };
            let ms = self.now_ms as u32;
            let tsval = own.wrapping_add(ms).wrapping_add(ts_off as i32 as u32);
            let tsecr = other.wrapping_add(ms).wrapping_add(tsecr_off as i32 as u32);
            options.extend_from_slice(&ts_option(tsval, tsecr));
        }
        if mode & 0x08 != 0 {
            let mut rr = Reader { data: raw };
            let left = ack.wrapping_add(rr.u32());
            let right = ack.wrapping_add(rr.u32());
            options.extend_from_slice(&[1, 1, 5, 10]);
            options.extend_from_slice(&left.to_be_bytes());
            options.extend_from_slice(&right.to_be_bytes());
        }
        if mode & 0x10 != 0 {
            let room = 40 - options.len();
            options.extend_from_slice(&raw[..raw.len().min(room)]);
            while options.len() % 4 != 0 {
                options.push(0);
            }
        }
        let frame = build_frame(&Seg {
            from_client: from == Side::Client,
            flags,
            seq,
            ack,
            window,
            options: &options,
            payload,
            dst_port_delta: u16::from(mode & 0x20 != 0),
            bad_checksum: mode & 0x40 != 0,
        });
        let delivered = self.handle(from, &frame);
        trace!(
            "{:>7} ms  {from:?} -> flags {flags:#04x} seq +{} ack +{} win {window} len {} opts {} {}",
            self.now_ms,
            seq.wrapping_sub(Self::isn(from).wrapping_add(1)),
            ack.wrapping_sub(Self::isn(from.other()).wrapping_add(1)),
            payload.len(),
            options.len(),
            if delivered { "delivered" } else { "ignored" }
        );
        let rst = flags & 0x04 != 0;
        let syn = flags & 0x02 != 0;
        if delivered && !rst && !syn {
            let fin = u32::from(flags & 0x01 != 0);
            let end = seq.wrapping_add(payload.len() as u32).wrapping_add(fin);
            let ahead = end.wrapping_sub(self.peer_next[me]);
            if ahead != 0 && ahead < 1 << 24 {
                self.peer_next[me] = end;
            }
        }
    }

    /// Checks one frame `poll_transmit` wrote toward `toward`.
    fn check_out(&mut self, toward: Side, frame: &[u8]) {
        let t = idx(toward);
        let headers = PacketHeaders::from_ethernet_slice(frame)
            .unwrap_or_else(|e| panic!("splice wrote an unparsable frame: {e:?} {frame:02x?}"));
        let (dst_mac, src_mac, dst_ip, src_ip, dst_port, src_port, ttl) = match toward {
            Side::Client => (CLIENT_MAC, SERVER_MAC, CLIENT_IP, SERVER_IP, CLIENT_PORT, SERVER_PORT, TTL_S),
            Side::Server => (SERVER_MAC, CLIENT_MAC, SERVER_IP, CLIENT_IP, SERVER_PORT, CLIENT_PORT, TTL_C),
        };
        let Some(LinkHeader::Ethernet2(eth)) = &headers.link else {
            panic!("not Ethernet II: {frame:02x?}")
        };
        assert_eq!((eth.destination, eth.source), (dst_mac, src_mac), "MACs toward {toward:?}");
        assert!(headers.link_exts.is_empty(), "unexpected VLAN tag");
        let Some(NetHeaders::Ipv4(ip, _)) = &headers.net else {
            panic!("not IPv4: {frame:02x?}")
        };
        assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 header checksum");
        assert_eq!((ip.source, ip.destination), (src_ip, dst_ip), "IP addresses toward {toward:?}");
        assert_eq!(ip.time_to_live, ttl, "TTL of the impersonated end");
        assert!(!ip.more_fragments && ip.fragment_offset.value() == 0, "fragment");
        assert_eq!(14 + usize::from(ip.total_len), frame.len(), "IP total length vs frame length");
        let Some(TransportHeader::Tcp(tcp)) = &headers.transport else {
            panic!("not TCP: {frame:02x?}")
        };
        let payload = headers.payload.slice();
        assert_eq!(
            tcp.checksum,
            tcp.calc_checksum_ipv4(ip, payload).expect("checksum computable"),
            "TCP checksum"
        );
        assert_eq!((tcp.source_port, tcp.destination_port), (src_port, dst_port), "ports toward {toward:?}");
        assert!(!tcp.syn, "a SYN after the handshake: {tcp:?}");
        let mut tsval = None;
        for option in tcp.options_iterator() {
            match option.unwrap_or_else(|e| panic!("malformed option written: {e:?} in {tcp:?}")) {
                TcpOptionElement::Noop | TcpOptionElement::SelectiveAcknowledgement(..) => {}
                TcpOptionElement::Timestamp(val, _) => tsval = Some(val),
                other => panic!("option {other:?} after the handshake"),
            }
        }
        trace!(
            "{:>7} ms  -> {toward:?} flags{}{}{}{} seq +{} ack +{} win {} len {}",
            self.now_ms,
            if tcp.ack { " ACK" } else { "" },
            if tcp.psh { " PSH" } else { "" },
            if tcp.fin { " FIN" } else { "" },
            if tcp.rst { " RST" } else { "" },
            tcp.sequence_number.wrapping_sub(Self::isn(toward.other()).wrapping_add(1)),
            tcp.acknowledgment_number.wrapping_sub(Self::isn(toward).wrapping_add(1)),
            tcp.window_size,
            payload.len()
        );
        let tsval = tsval.expect("timestamps were negotiated: every segment carries them");
        if let Some(last) = self.last_tsval[t] {
            assert!(
                (tsval.wrapping_sub(last) as i32) >= 0,
                "TSval toward {toward:?} went backwards: {last} -> {tsval}"
            );
        }
        self.last_tsval[t] = Some(tsval);

        if tcp.rst {
            assert!(payload.is_empty(), "RST with payload");
            return;
        }
        // The window as the peer reads it (scaled by the shift the impersonated end
        // announced) stays within the receive buffer.
        let shift = match toward {
            Side::Client => WSCALE_S,
            Side::Server => WSCALE_C,
        };
        let window = u64::from(tcp.window_size) << shift;
        assert!(
            window <= self.config.rx_buffer as u64,
            "window {} (<< {shift} = {window}) toward {toward:?} exceeds the {}-byte buffer",
            tcp.window_size,
            self.config.rx_buffer
        );
        assert!(tcp.ack, "a non-RST segment without ACK: {tcp:?}");
        // Sequence space: the stream toward `toward` begins at the impersonated end's ISN + 1
        // (nothing was sent in that direction before the takeover... on the client side
        // the held hello came the other way).
        let start = Self::isn(toward.other()).wrapping_add(1);
        let off = tcp.sequence_number.wrapping_sub(start) as usize;
        let stream = &self.stream[t];
        if payload.is_empty() {
            // A bare ACK sits at the end of the stream, or one past it (after the FIN).
            assert!(
                off <= stream.len() + usize::from(self.fin_sent[t]),
                "segment toward {toward:?} at offset {off} past the {} bytes sent (FIN sent or closed: {})",
                stream.len(),
                self.fin_sent[t]
            );
        } else {
            assert!(
                off.checked_add(payload.len()).is_some_and(|end| end <= stream.len()),
                "segment toward {toward:?} at offset {off} (+{}) past the {} bytes sent",
                payload.len(),
                stream.len()
            );
            assert!(
                payload == &stream[off..off + payload.len()],
                "payload toward {toward:?} at offset {off} is not the bytes sent there"
            );
        }
        if tcp.fin {
            assert_eq!(off + payload.len(), stream.len(), "FIN toward {toward:?} before the end of the stream");
            self.fin_sent[t] = true;
        }
        let end = tcp
            .sequence_number
            .wrapping_add(payload.len() as u32)
            .wrapping_add(u32::from(tcp.fin));
        if (end.wrapping_sub(self.sent_end[t]) as i32) > 0 {
            self.sent_end[t] = end;
        }
    }

    /// `poll_transmit` until `None`; returns how many frames left.
    fn drain(&mut self) -> usize {
        let now = self.now();
        let mut buf = std::mem::take(&mut self.buf);
        let mut n = 0;
        while let Some(tx) = self.splice.poll_transmit(now, &mut buf) {
            assert!(tx.len <= buf.len(), "Transmit.len {} > buffer {}", tx.len, buf.len());
            self.check_out(tx.toward, &buf[..tx.len]);
            n += 1;
            assert!(n < MAX_DRAIN, "poll_transmit does not stop");
        }
        self.buf = buf;
        trace!("{:>7} ms  drained {n}: {:?}", self.now_ms, self.splice.counters());
        n
    }

    fn advance_to(&mut self, ms: u64) {
        // Time only moves forward.
        assert!(ms >= self.now_ms);
        self.now_ms = ms;
        let now = self.now();
        self.splice.handle_timeout(now);
    }

    fn ms_of(&self, at: Instant) -> u64 {
        // Rounded up, so that the timer is due at the instant used.
        let micros = at.saturating_duration_since(self.base).as_micros();
        u64::try_from(micros.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    fn status_checks(&mut self) {
        for side in [Side::Client, Side::Server] {
            let s = self.splice.status(side);
            assert!(s.recv_queue <= self.config.rx_buffer, "recv_queue {} > buffer", s.recv_queue);
            assert!(s.send_room <= self.config.tx_buffer, "send_room {} > buffer", s.send_room);
        }
        let _ = self.splice.is_finished();
        let _ = self.splice.idle_expired();
        let _ = self.splice.counters();
    }

    fn recv(&mut self, side: Side, len: usize) {
        let queued = self.splice.status(side).recv_queue;
        let mut buf = vec![0u8; len];
        let n = self.splice.recv(side, &mut buf);
        trace!("{:>7} ms  recv {side:?}: {n} of {queued} queued", self.now_ms);
        assert!(n <= len, "recv returned {n} for a {len}-byte buffer");
        assert!(n <= queued, "recv returned {n} with {queued} queued");
        if side == Side::Client && self.client_read < HELLO.len() {
            let upto = (self.client_read + n).min(HELLO.len());
            assert_eq!(
                &buf[..upto - self.client_read],
                &HELLO[self.client_read..upto],
                "the client side's stream does not start with the held ClientHello"
            );
        }
        if side == Side::Client {
            self.client_read += n;
        }
    }

    fn send(&mut self, side: Side, len: usize) {
        let t = idx(side);
        let room = self.splice.status(side).send_room;
        let start = self.stream[t].len();
        let data: Vec<u8> = (start..start + len).map(|k| pattern(side, k)).collect();
        let n = self.splice.send(side, &data);
        trace!("{:>7} ms  send {side:?}: {n} of {len} (room {room})", self.now_ms);
        assert!(n <= data.len(), "send accepted {n} of {} bytes", data.len());
        assert!(n <= room, "send accepted {n} with send_room {room}");
        if n > 0 {
            assert!(!self.fin_sent[t], "send accepted bytes after a FIN / close toward {side:?}");
        }
        self.stream[t].extend_from_slice(&data[..n]);
    }

    /// Drains and runs the timers until nothing is due (bounded).
    fn settle(&mut self) {
        let mut stalled = 0;
        for _ in 0..512 {
            let sent = self.drain();
            let Some(at) = self.splice.poll_timeout() else {
                return;
            };
            let at_ms = self.ms_of(at);
            if at_ms > self.now_ms {
                if at_ms > self.now_ms + 3_600_000 {
                    return;
                }
                stalled = 0;
                self.advance_to(at_ms);
            } else {
                stalled = if sent == 0 { stalled + 1 } else { 0 };
                assert!(
                    stalled < 64,
                    "poll_timeout stays at {at_ms} ms (now {} ms) while nothing is sent",
                    self.now_ms
                );
                self.advance_to(self.now_ms);
            }
        }
    }
}

fn run(data: &[u8]) {
    let mut r = Reader { data };
    let header = r.u8();
    let config = if header & 1 != 0 {
        Config {
            rx_buffer: 2048,
            tx_buffer: 3000,
            max_frame_len: 1514,
            ..Config::default()
        }
    } else {
        Config::default()
    };
    let record = HandshakeRecord::from_frames(&syn_frame(true), &syn_frame(false))
        .expect("the built SYN / SYN-ACK make a handshake");
    assert_eq!(Ipv4Addr::from(CLIENT_IP), record.client.endpoint.ip);
    let held = build_frame(&Seg {
        from_client: true,
        flags: 0x18,
        seq: ISN_C.wrapping_add(1),
        ack: ISN_S.wrapping_add(1),
        window: 502,
        options: &ts_option(TSVAL_C + 5, TSVAL_S),
        payload: HELLO,
        dst_port_delta: 0,
        bad_checksum: false,
    });
    let base = Instant::now();
    let splice = Splice::new(base, &record, &[held], &config).expect("takeover of a valid handshake");
    let mut h = Harness {
        splice,
        buf: vec![0; config.max_frame_len],
        config,
        base,
        now_ms: 0,
        peer_next: [ISN_C.wrapping_add(1 + HELLO.len() as u32), ISN_S.wrapping_add(1)],
        sent_end: [ISN_S.wrapping_add(1), ISN_C.wrapping_add(1)],
        stream: [Vec::new(), Vec::new()],
        fin_sent: [false; 2],
        last_tsval: [None; 2],
        client_read: 0,
    };

    for _ in 0..MAX_OPS {
        if r.is_empty() {
            break;
        }
        let sel = r.u8();
        let side = side_of(sel & 0x80 != 0);
        trace!("{:>7} ms op {:#04x} ({side:?})", h.now_ms, sel & 0x0f);
        match sel & 0x0f {
            0 => {
                let len = usize::from(r.u16());
                let frame = r.take(len);
                h.handle(side, frame);
            }
            2 => {
                let ms = u64::from(r.u16());
                h.advance_to(h.now_ms + ms);
            }
            3 => {
                let target = match h.splice.poll_timeout() {
                    Some(at) => h.ms_of(at).max(h.now_ms),
                    None => h.now_ms + 1000,
                };
                h.advance_to(target.min(h.now_ms + 3_600_000));
            }
            4 => {
                let len = (usize::from(r.u8()) + 1) * 32;
                h.recv(side, len);
            }
            5 => {
                let len = usize::from(r.u16());
                h.send(side, len);
            }
            6 => {
                h.splice.close(side);
                h.fin_sent[idx(side)] = true;
            }
            7 => h.splice.abort(side),
            8 => {
                h.drain();
            }
            9 => {
                let len = usize::from(r.u8()) * 8;
                let mut buf = vec![0u8; len];
                let now = h.now();
                if let Some(tx) = h.splice.poll_transmit(now, &mut buf) {
                    assert!(tx.len <= len, "Transmit.len {} > buffer {len}", tx.len);
                    h.check_out(tx.toward, &buf[..tx.len]);
                }
            }
            10 => {
                trace!("{:>7} ms  {:?}", h.now_ms, h.splice.counters());
                h.status_checks()
            }
            _ => {
                let len = usize::from(r.u16());
                let chunk = r.take(len);
                h.built_segment(side, chunk);
            }
        }
    }
    h.settle();
    h.status_checks();
}

fuzz_target!(|data: &[u8]| run(data));
