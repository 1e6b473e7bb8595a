//! Sans-IO re-framing of one intercepted session's plaintext into a synthetic TCP
//! conversation that a passive tool (IDS, recorder, `tshark`) reassembles without
//! complaint.
//!
//! What a tool sees for one session:
//! * the session's real MACs, addresses and ports, the server port optionally remapped
//!   (443→80 so port-keyed dissectors parse HTTP), an optional 802.1Q tag and an optional
//!   marker source MAC telling decrypted frames from real ones;
//! * a three-way handshake (SYN and SYN-ACK carry an MSS option) before the first byte;
//! * each direction's plaintext cut at the effective MSS, every data segment followed by a
//!   pure ACK from the other side (sparse ACKs stall some IDS stream engines);
//! * FIN / FIN-ACK / ACK for a normal end, one RST for an abnormal one;
//! * each frame stamped with the time given to the call that produced it (when the bytes
//!   were decrypted).
//!
//! No frame is larger than [`Conversation::max_frame_len`]: the IP packet never exceeds the
//! configured mirror MTU. IPv4 header and TCP checksums (over the IPv4 or IPv6 pseudo
//! header) are computed in full.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::Duration;

use thiserror::Error;

/// Wall-clock time since the UNIX epoch: what pcap records carry. The driver converts its
/// own clock once (an anchor `SystemTime` plus `Instant` deltas); this module never reads a
/// clock.
pub type Timestamp = Duration;

const ETH_HDR: usize = 14;
const VLAN_HDR: usize = 4;
const IPV4_HDR: usize = 20;
const IPV6_HDR: usize = 40;
const TCP_HDR: usize = 20;
/// MSS option (RFC 9293 §3.2): kind 2, length 4, value. Only SYNs carry it.
const MSS_OPT: usize = 4;
const TTL: u8 = 64;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Which side of the intercepted session produced bytes or an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

impl Direction {
    /// The other side.
    #[must_use]
    pub fn reverse(self) -> Self {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }
}

/// One value per direction (sender side); field access instead of indexing.
#[derive(Debug, Clone, Copy, Default)]
struct PerDir<T> {
    c2s: T,
    s2c: T,
}

impl<T: Copy> PerDir<T> {
    fn both(v: T) -> Self {
        Self { c2s: v, s2c: v }
    }

    fn get(&self, d: Direction) -> T {
        match d {
            Direction::ClientToServer => self.c2s,
            Direction::ServerToClient => self.s2c,
        }
    }

    fn at(&mut self, d: Direction) -> &mut T {
        match d {
            Direction::ClientToServer => &mut self.c2s,
            Direction::ServerToClient => &mut self.s2c,
        }
    }
}

/// The real session's addressing, as the bridge saw it on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub client_mac: [u8; 6],
    pub server_mac: [u8; 6],
    pub client_ip: IpAddr,
    pub client_port: u16,
    pub server_ip: IpAddr,
    pub server_port: u16,
}

/// One 802.1Q tag (RFC-less: IEEE 802.1Q) marking decrypted frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VlanTag {
    /// 12-bit VLAN identifier (1..=4094).
    pub id: u16,
    /// 3-bit priority code point.
    pub pcp: u8,
}

/// Rewrites the server port `from` to `to` in mirrored frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRemap {
    pub from: u16,
    pub to: u16,
}

/// Shape of every conversation; built once from configuration and shared by reference.
#[derive(Debug, Clone)]
pub struct ConversationOptions {
    /// L3 MTU of the mirror link: no IP packet is longer (Ethernet and VLAN headers are on
    /// top, as on a real link).
    pub mtu: u16,
    /// Upper bound on TCP payload per segment; the effective MSS is the smaller of this and
    /// what the MTU leaves after IP and TCP headers. Advertised in the SYN and SYN-ACK.
    pub mss: u16,
    /// Tag decrypted frames with this 802.1Q tag.
    pub vlan: Option<VlanTag>,
    /// Server-port remaps; the first whose `from` matches applies.
    pub port_remap: Vec<PortRemap>,
    /// Replace the source MAC of every synthetic frame (the other marker the design names).
    pub marker_src_mac: Option<[u8; 6]>,
    /// Advertised receive window. Every segment is acked at once, so bytes in flight never
    /// exceed one segment and the window is never the limit a tool would flag.
    pub window: u16,
}

impl Default for ConversationOptions {
    fn default() -> Self {
        Self {
            mtu: 1500,
            mss: 1460,
            vlan: None,
            port_remap: Vec::new(),
            marker_src_mac: None,
            window: 65535,
        }
    }
}

/// Why a conversation could not be built or fed.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum ConversationError {
    #[error("client and server addresses are of different IP families")]
    MixedAddressFamilies,
    #[error("mirror MTU {0} leaves no room for TCP payload")]
    MtuTooSmall(u16),
    #[error("VLAN id {0} outside 1..=4094")]
    BadVlan(u16),
    #[error("the conversation (or this side of it) is closed; bytes after the close are not mirrored")]
    Closed,
}

/// One frame written into the caller's buffer by [`Conversation::poll_frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorFrame {
    /// When the bytes it carries were decrypted (the `now` given with them).
    pub timestamp: Timestamp,
    /// Length of the frame at the start of the buffer.
    pub len: usize,
}

/// Counters of one conversation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConversationStats {
    pub frames: u64,
    /// Plaintext bytes pushed by the client.
    pub client_bytes: u64,
    /// Plaintext bytes pushed by the server.
    pub server_bytes: u64,
    /// Frames skipped because the caller's buffer was shorter than
    /// [`Conversation::max_frame_len`] (a driver bug; the stream then has a gap).
    pub skipped_small_buffer: u64,
    /// Pushes refused because the conversation was already closed.
    pub refused_after_close: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing emitted yet: the handshake goes out with the first byte (or `open`).
    Idle,
    Open,
    Closed,
}

/// A segment waiting to be framed. Payload bytes live in `Conversation::payload`.
#[derive(Debug, Clone, Copy)]
struct Seg {
    ts: Timestamp,
    dir: Direction,
    flags: u8,
    seq: u32,
    ack: u32,
    mss_option: bool,
    data_off: usize,
    data_len: usize,
}

#[derive(Debug, Clone, Copy)]
enum Addrs {
    V4 { client: [u8; 4], server: [u8; 4] },
    V6 { client: [u8; 16], server: [u8; 16] },
}

/// A synthetic TCP conversation for one intercepted session.
///
/// Driver order: call [`open`](Self::open) (optional: the first
/// [`push`](Self::push) opens implicitly), then `push` each decrypted chunk as it comes,
/// [`half_close`](Self::half_close) when one side stops sending, finally
/// [`close_normal`](Self::close_normal) or [`abort`](Self::abort); after each of
/// these calls drain [`poll_frame`](Self::poll_frame) until it returns `None` and hand the
/// frames to the mirror. There are no timers, so there is no `poll_timeout`.
///
/// Memory: pending segment descriptors and payload bytes are kept in buffers that are
/// reused once drained, so a driver that drains after every call allocates only until the
/// buffers reach their high-water mark.
#[derive(Debug)]
pub struct Conversation {
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    marker_src_mac: Option<[u8; 6]>,
    addrs: Addrs,
    client_port: u16,
    server_port: u16,
    vlan: Option<VlanTag>,
    window: u16,
    seg_size: usize,
    isn: PerDir<u32>,
    /// Hash of the endpoints while the ISNs are still to be derived at `open`.
    isn_seed: Option<u64>,
    /// Next sequence number each side will send.
    snd_nxt: PerDir<u32>,
    ip_id: PerDir<u16>,
    state: State,
    /// Which sides have sent their FIN (half-closed).
    fin_sent: PerDir<bool>,
    queue: VecDeque<Seg>,
    payload: Vec<u8>,
    stats: ConversationStats,
}

impl Conversation {
    /// A conversation for `endpoints` shaped by `options`. Unless
    /// [`with_isns`](Self::with_isns) sets them (the real session's ISNs are the natural
    /// choice: the mirror then numbers bytes as the wire did), the initial sequence numbers
    /// are a hash of the endpoints and the open time: deterministic for the same inputs, and
    /// different for a later session reusing the same ports, which a tool would otherwise
    /// take for retransmissions.
    pub fn new(endpoints: Endpoints, options: &ConversationOptions) -> Result<Self, ConversationError> {
        let addrs = match (endpoints.client_ip, endpoints.server_ip) {
            (IpAddr::V4(c), IpAddr::V4(s)) => Addrs::V4 {
                client: c.octets(),
                server: s.octets(),
            },
            (IpAddr::V6(c), IpAddr::V6(s)) => Addrs::V6 {
                client: c.octets(),
                server: s.octets(),
            },
            _ => return Err(ConversationError::MixedAddressFamilies),
        };
        if let Some(v) = options.vlan {
            if v.id == 0 || v.id >= 4095 {
                return Err(ConversationError::BadVlan(v.id));
            }
        }
        let ip_hdr = match addrs {
            Addrs::V4 { .. } => IPV4_HDR,
            Addrs::V6 { .. } => IPV6_HDR,
        };
        let room = usize::from(options.mtu).saturating_sub(ip_hdr + TCP_HDR);
        let seg_size = room.min(usize::from(options.mss));
        // The SYN carries the MSS option (and no data), so the MTU must hold that too.
        if seg_size == 0 || room < MSS_OPT {
            return Err(ConversationError::MtuTooSmall(options.mtu));
        }
        let server_port = options
            .port_remap
            .iter()
            .find(|r| r.from == endpoints.server_port)
            .map_or(endpoints.server_port, |r| r.to);
        let isn_seed = fnv1a(&endpoints);
        let isn = PerDir::both(0);
        Ok(Self {
            client_mac: endpoints.client_mac,
            server_mac: endpoints.server_mac,
            marker_src_mac: options.marker_src_mac,
            addrs,
            client_port: endpoints.client_port,
            server_port,
            vlan: options.vlan,
            window: options.window,
            seg_size,
            isn,
            isn_seed: Some(isn_seed),
            snd_nxt: isn,
            ip_id: PerDir::both(0),
            state: State::Idle,
            fin_sent: PerDir::both(false),
            queue: VecDeque::new(),
            payload: Vec::new(),
            stats: ConversationStats::default(),
        })
    }

    /// Sets the client's and server's initial sequence numbers; only before anything was
    /// emitted (later it is ignored, as the stream's numbering is fixed by then).
    #[must_use]
    pub fn with_isns(mut self, client: u32, server: u32) -> Self {
        if self.state == State::Idle {
            self.isn = PerDir {
                c2s: client,
                s2c: server,
            };
            self.snd_nxt = self.isn;
            self.isn_seed = None;
        }
        self
    }

    /// Payload bytes per data segment.
    pub fn segment_size(&self) -> usize {
        self.seg_size
    }

    /// The longest frame this conversation emits; `poll_frame` needs a buffer this long.
    pub fn max_frame_len(&self) -> usize {
        let ip_hdr = match self.addrs {
            Addrs::V4 { .. } => IPV4_HDR,
            Addrs::V6 { .. } => IPV6_HDR,
        };
        ETH_HDR + self.vlan.map_or(0, |_| VLAN_HDR) + ip_hdr + TCP_HDR + MSS_OPT.max(self.seg_size)
    }

    /// The server port frames carry (after any remap).
    pub fn server_port(&self) -> u16 {
        self.server_port
    }

    /// Counters so far.
    pub fn stats(&self) -> ConversationStats {
        self.stats
    }

    /// Whether frames are waiting for `poll_frame`.
    pub fn has_pending(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Whether the conversation has been closed or aborted.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Emits the three-way handshake (if not done yet), stamped `now`.
    pub fn open(&mut self, now: Timestamp) {
        if self.state != State::Idle {
            return;
        }
        if let Some(seed) = self.isn_seed.take() {
            let h = fnv(seed, &now.as_nanos().to_le_bytes());
            self.isn = PerDir {
                c2s: h as u32,
                s2c: (h >> 32) as u32,
            };
            self.snd_nxt = self.isn;
        }
        let c = Direction::ClientToServer;
        let s = Direction::ServerToClient;
        // RFC 9293 §3.5: SYN consumes one sequence number on each side.
        self.enqueue(now, c, SYN, 0, true, 0, 0);
        *self.snd_nxt.at(c) = self.isn.get(c).wrapping_add(1);
        let ack = self.snd_nxt.get(c);
        self.enqueue(now, s, SYN | ACK, ack, true, 0, 0);
        *self.snd_nxt.at(s) = self.isn.get(s).wrapping_add(1);
        let ack = self.snd_nxt.get(s);
        self.enqueue(now, c, ACK, ack, false, 0, 0);
        self.state = State::Open;
    }

    /// Mirrors `data` sent by the `dir` side, decrypted at `now`: segments of at most the
    /// effective MSS, each followed by the other side's ACK. Empty data emits nothing.
    /// `data` must be application plaintext only (never a ClientHello or TLS record bytes):
    /// whatever is pushed, tools will reassemble.
    pub fn push(&mut self, now: Timestamp, dir: Direction, data: &[u8]) -> Result<(), ConversationError> {
        if self.state == State::Closed || self.fin_sent.get(dir) {
            self.stats.refused_after_close += 1;
            return Err(ConversationError::Closed);
        }
        if data.is_empty() {
            return Ok(());
        }
        self.open(now);
        let base = self.payload.len();
        self.payload.extend_from_slice(data);
        match dir {
            Direction::ClientToServer => self.stats.client_bytes += data.len() as u64,
            Direction::ServerToClient => self.stats.server_bytes += data.len() as u64,
        }
        let back = dir.reverse();
        let mut off = 0;
        while off < data.len() {
            let len = (data.len() - off).min(self.seg_size);
            let last = off + len == data.len();
            // PSH on the last segment of a write, as a real stack marks it.
            let flags = if last { ACK | PSH } else { ACK };
            let ack = self.snd_nxt.get(back);
            self.enqueue(now, dir, flags, ack, false, base + off, len);
            *self.snd_nxt.at(dir) = self.snd_nxt.get(dir).wrapping_add(len as u32);
            let ack = self.snd_nxt.get(dir);
            self.enqueue(now, back, ACK, ack, false, 0, 0);
            off += len;
        }
        Ok(())
    }

    /// One side of the real session shut down its sending half (a FIN seen, or the relay's
    /// `close_notify`/EOF in that direction): FIN-ACK from `from`, ACK from the other side.
    /// The other side may go on pushing; a second `half_close` or a `close_normal` ends the
    /// conversation. Bytes pushed later by `from` are refused.
    pub fn half_close(&mut self, now: Timestamp, from: Direction) {
        if self.state != State::Open || self.fin_sent.get(from) {
            return;
        }
        // RFC 9293 §3.6: a FIN consumes one sequence number.
        let ack = self.snd_nxt.get(from.reverse());
        self.enqueue(now, from, FIN | ACK, ack, false, 0, 0);
        *self.snd_nxt.at(from) = self.snd_nxt.get(from).wrapping_add(1);
        *self.fin_sent.at(from) = true;
        let ack = self.snd_nxt.get(from);
        self.enqueue(now, from.reverse(), ACK, ack, false, 0, 0);
        if self.fin_sent.get(from.reverse()) {
            self.state = State::Closed;
        }
    }

    /// The real session ended normally, `first` closing first: FIN-ACK from `first`, FIN-ACK
    /// from the other side, final ACK (after a [`half_close`](Self::half_close), only the
    /// missing FIN and its ACK). A conversation that never carried a byte emits nothing.
    pub fn close_normal(&mut self, now: Timestamp, first: Direction) {
        if self.state != State::Open {
            self.state = State::Closed;
            return;
        }
        let (first, second) = match (self.fin_sent.get(first), self.fin_sent.get(first.reverse())) {
            // One side already closed: the other's FIN completes the close.
            (true, _) => {
                self.half_close(now, first.reverse());
                return;
            }
            (_, true) => {
                self.half_close(now, first);
                return;
            }
            _ => (first, first.reverse()),
        };
        let ack = self.snd_nxt.get(second);
        self.enqueue(now, first, FIN | ACK, ack, false, 0, 0);
        *self.snd_nxt.at(first) = self.snd_nxt.get(first).wrapping_add(1);
        let ack = self.snd_nxt.get(first);
        self.enqueue(now, second, FIN | ACK, ack, false, 0, 0);
        *self.snd_nxt.at(second) = self.snd_nxt.get(second).wrapping_add(1);
        let ack = self.snd_nxt.get(second);
        self.enqueue(now, first, ACK, ack, false, 0, 0);
        self.fin_sent = PerDir::both(true);
        self.state = State::Closed;
    }

    /// The real session ended abnormally: one RST (with ACK, at the expected sequence
    /// number so a tool accepts it) from `from`.
    pub fn abort(&mut self, now: Timestamp, from: Direction) {
        if self.state != State::Open {
            self.state = State::Closed;
            return;
        }
        let ack = self.snd_nxt.get(from.reverse());
        self.enqueue(now, from, RST | ACK, ack, false, 0, 0);
        self.state = State::Closed;
    }

    /// Writes the next frame into `buf` and says how long it is and when it was produced;
    /// `None` when nothing is pending. A `buf` shorter than
    /// [`max_frame_len`](Self::max_frame_len) may lose frames (counted in
    /// `skipped_small_buffer`).
    #[must_use]
    pub fn poll_frame(&mut self, buf: &mut [u8]) -> Option<MirrorFrame> {
        loop {
            let seg = self.queue.pop_front()?;
            let built = self.build(&seg, buf);
            if self.queue.is_empty() {
                // Nothing refers to the payload bytes any more: reuse the buffer.
                self.payload.clear();
            }
            match built {
                Some(len) => {
                    self.stats.frames += 1;
                    return Some(MirrorFrame {
                        timestamp: seg.ts,
                        len,
                    });
                }
                None => self.stats.skipped_small_buffer += 1,
            }
        }
    }

    #[expect(clippy::too_many_arguments, reason = "private helper mirroring Seg's fields")]
    fn enqueue(
        &mut self,
        ts: Timestamp,
        dir: Direction,
        flags: u8,
        ack: u32,
        mss_option: bool,
        data_off: usize,
        data_len: usize,
    ) {
        let seq = if flags & SYN != 0 {
            self.isn.get(dir)
        } else {
            self.snd_nxt.get(dir)
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        self.queue.push_back(Seg {
            ts,
            dir,
            flags,
            seq,
            ack,
            mss_option,
            data_off,
            data_len,
        });
    }

    /// Builds one frame; `None` if `buf` is too short or the payload reference is stale.
    fn build(&mut self, seg: &Seg, buf: &mut [u8]) -> Option<usize> {
        let data = self
            .payload
            .get(seg.data_off..seg.data_off.checked_add(seg.data_len)?)?;
        let (src_mac, dst_mac, src_port, dst_port) = match seg.dir {
            Direction::ClientToServer => (
                self.client_mac,
                self.server_mac,
                self.client_port,
                self.server_port,
            ),
            Direction::ServerToClient => (
                self.server_mac,
                self.client_mac,
                self.server_port,
                self.client_port,
            ),
        };
        let src_mac = self.marker_src_mac.unwrap_or(src_mac);
        let opt_len = if seg.mss_option { MSS_OPT } else { 0 };
        let tcp_len = TCP_HDR + opt_len + data.len();

        let mut out = Out { buf, pos: 0 };
        out.put(&dst_mac)?;
        out.put(&src_mac)?;
        let ethertype: u16 = match self.addrs {
            Addrs::V4 { .. } => 0x0800,
            Addrs::V6 { .. } => 0x86dd,
        };
        if let Some(v) = self.vlan {
            out.put(&0x8100u16.to_be_bytes())?;
            let tci = (u16::from(v.pcp & 0x7) << 13) | (v.id & 0x0fff);
            out.put(&tci.to_be_bytes())?;
        }
        out.put(&ethertype.to_be_bytes())?;

        let ip_start = out.pos;
        let id = self.ip_id.get(seg.dir);
        *self.ip_id.at(seg.dir) = id.wrapping_add(1);
        // Pseudo-header sum (RFC 9293 §3.1; RFC 8200 §8.1 for IPv6) seeds the TCP checksum.
        let pseudo = match self.addrs {
            Addrs::V4 { client, server } => {
                let (src, dst) = match seg.dir {
                    Direction::ClientToServer => (client, server),
                    Direction::ServerToClient => (server, client),
                };
                let total = u16::try_from(IPV4_HDR + tcp_len).ok()?;
                out.put(&[0x45, 0])?;
                out.put(&total.to_be_bytes())?;
                out.put(&id.to_be_bytes())?;
                // DF: the mirror never fragments; frames fit the MTU by construction.
                out.put(&[0x40, 0, TTL, 6, 0, 0])?;
                out.put(&src)?;
                out.put(&dst)?;
                let csum = checksum_fold(sum16(out.slice(ip_start, IPV4_HDR)?, 0));
                out.set(ip_start + 10, &csum.to_be_bytes())?;
                let mut s = sum16(&src, 0);
                s = sum16(&dst, s);
                s + 6 + tcp_len as u32
            }
            Addrs::V6 { client, server } => {
                let (src, dst) = match seg.dir {
                    Direction::ClientToServer => (client, server),
                    Direction::ServerToClient => (server, client),
                };
                let plen = u16::try_from(tcp_len).ok()?;
                out.put(&[0x60, 0, 0, 0])?;
                out.put(&plen.to_be_bytes())?;
                out.put(&[6, TTL])?;
                out.put(&src)?;
                out.put(&dst)?;
                let mut s = sum16(&src, 0);
                s = sum16(&dst, s);
                s + 6 + tcp_len as u32
            }
        };

        let tcp_start = out.pos;
        out.put(&src_port.to_be_bytes())?;
        out.put(&dst_port.to_be_bytes())?;
        out.put(&seg.seq.to_be_bytes())?;
        out.put(&seg.ack.to_be_bytes())?;
        let doff = (((TCP_HDR + opt_len) / 4) as u8) << 4;
        out.put(&[doff, seg.flags])?;
        out.put(&self.window.to_be_bytes())?;
        out.put(&[0, 0, 0, 0])?; // checksum, urgent pointer
        if seg.mss_option {
            let mss = u16::try_from(self.seg_size).unwrap_or(u16::MAX);
            out.put(&[2, 4])?;
            out.put(&mss.to_be_bytes())?;
        }
        out.put(data)?;
        let csum = checksum_fold(sum16(out.slice(tcp_start, tcp_len)?, pseudo));
        out.set(tcp_start + 16, &csum.to_be_bytes())?;
        Some(out.pos)
    }
}

/// A bounds-checked writer over the caller's buffer: a short buffer ends the build with
/// `None` instead of a panic.
struct Out<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl Out<'_> {
    fn put(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.pos.checked_add(bytes.len())?;
        self.buf.get_mut(self.pos..end)?.copy_from_slice(bytes);
        self.pos = end;
        Some(())
    }

    fn set(&mut self, at: usize, bytes: &[u8]) -> Option<()> {
        self.buf
            .get_mut(at..at.checked_add(bytes.len())?)?
            .copy_from_slice(bytes);
        Some(())
    }

    fn slice(&self, at: usize, len: usize) -> Option<&[u8]> {
        self.buf.get(at..at.checked_add(len)?)
    }
}

/// RFC 1071 one's-complement sum of big-endian 16-bit words, unfolded.
fn sum16(data: &[u8], init: u32) -> u32 {
    let mut sum = u64::from(init);
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        if let [a, b] = c {
            sum += u64::from(u16::from_be_bytes([*a, *b]));
        }
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    // Fold to 16 bits so callers can keep adding small terms without overflow.
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u32
}

fn checksum_fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// FNV-1a: deterministic ISNs without a clock or an RNG.
fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn fnv1a(e: &Endpoints) -> u64 {
    let mut h = fnv(0xcbf2_9ce4_8422_2325, &e.client_mac);
    h = fnv(h, &e.server_mac);
    for ip in [e.client_ip, e.server_ip] {
        h = match ip {
            IpAddr::V4(a) => fnv(h, &a.octets()),
            IpAddr::V6(a) => fnv(h, &a.octets()),
        };
    }
    h = fnv(h, &e.client_port.to_be_bytes());
    fnv(h, &e.server_port.to_be_bytes())
}

#[cfg(test)]
mod tests;
