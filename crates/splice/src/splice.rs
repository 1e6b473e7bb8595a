//! The per-session takeover: two smoltcp halves, each in its own one-socket interface,
//! spliced onto the real connection's sequence, window and timestamp spaces.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{
    HardwareAddress, IpCidr, IpEndpoint, IpListenEndpoint, TcpControl, TcpRepr, TcpSeqNumber,
    TcpTimestampRepr,
};

use crate::device::PacketDevice;
use crate::frame::{emit_ip_packet, ip_packet_len, parse_ip_packet, parse_segment, FrameError, L2Header};
use crate::record::{HandshakeRecord, PeerHandshake};

/// smoltcp's delayed-ACK timer (its default), set again on the client half after the
/// takeover.
const ACK_DELAY: smoltcp::time::Duration = smoltcp::time::Duration::from_millis(10);

/// Length of the timestamps option as it is laid out on the wire (two NOPs + 10).
const TIMESTAMP_OPTION_LEN: u16 = 12;
/// RFC 7323 §2.3: a shift count above 14 is treated as 14.
const MAX_WINDOW_SHIFT: u8 = 14;
/// The smallest IP MTU an IPv6 link may have (RFC 8200 §5); below it the frame limit
/// is a configuration error, not something to size segments by.
const MIN_IP_MTU: usize = 1280;

/// One of the two real peers, and the half of the splice that faces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The real client; its half plays the server.
    Client,
    /// The real server; its half plays the client.
    Server,
}

impl Side {
    pub fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// A frame [`Splice::poll_transmit`] wrote: `len` bytes, to be sent toward `toward`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub toward: Side,
    pub len: usize,
}

/// Knobs of one session.
#[derive(Debug, Clone)]
pub struct Config {
    /// Receive buffer of each half. It also sets the window scale smoltcp uses
    /// (log2(size) - 16), which the splice translates to the real peers' scales.
    pub rx_buffer: usize,
    /// Send buffer of each half: how much [`Splice::send`] accepts before back-pressure.
    pub tx_buffer: usize,
    /// Largest Ethernet frame (VLAN tags included) that [`Splice::poll_transmit`]
    /// writes; segments are sized to fit it even where the real peers' MSS is larger.
    pub max_frame_len: usize,
    /// Without a frame from either peer for this long, both halves are reset.
    pub idle_timeout: Option<Duration>,
    /// A half that hears nothing from its peer this long while it has something to
    /// say (data, FIN) gives up with a RST. Above the peers' own longest backoff
    /// (Linux: 120 s) so that a slow peer is not cut off.
    pub user_timeout: Option<Duration>,
    /// Seeds the halves' own ISNs; they never appear on the wire.
    pub random_seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            rx_buffer: 128 * 1024,
            tx_buffer: 128 * 1024,
            max_frame_len: 2048,
            idle_timeout: Some(Duration::from_secs(300)),
            user_timeout: Some(Duration::from_secs(120)),
            random_seed: 0x676c_6173_7377_6972,
        }
    }
}

/// Why a takeover could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceError {
    /// Client and server addresses are not of the same IP version.
    MixedAddressFamilies,
    /// A port of the record is zero.
    BadEndpoint,
    /// A smoltcp half did not go through the synthesized handshake as expected.
    HandshakeFailed(Side),
}

impl std::fmt::Display for SpliceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MixedAddressFamilies => f.write_str("client and server IP versions differ"),
            Self::BadEndpoint => f.write_str("zero port in the handshake record"),
            Self::HandshakeFailed(side) => {
                write!(f, "the {side:?}-facing half refused the synthesized handshake")
            }
        }
    }
}

impl std::error::Error for SpliceError {}

/// Why a frame handed to [`Splice::handle_from_client`] / [`Splice::handle_from_server`]
/// was not delivered to its half. Each is also counted in [`Counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Malformed(FrameError),
    /// Addresses or ports are not this session's, in this direction.
    Foreign,
    /// A SYN (a late retransmission of the real handshake): the halves are past it.
    Syn,
}

/// What happened to the frames of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub delivered_from_client: u64,
    pub delivered_from_server: u64,
    pub sent_toward_client: u64,
    pub sent_toward_server: u64,
    pub malformed: u64,
    pub foreign: u64,
    pub syn_ignored: u64,
    /// Segments a half emitted that could not be sent (buffer too small, or a SYN).
    pub dropped_outgoing: u64,
}

/// Where one half stands, as the relay above it needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfStatus {
    /// Bytes from the real peer wait in [`Splice::recv`], or more may come.
    pub may_recv: bool,
    /// [`Splice::send`] may still queue bytes toward the real peer.
    pub may_send: bool,
    /// The real peer sent its FIN (its bytes may still be waiting to be read).
    pub peer_closed: bool,
    /// The real peer reset the connection.
    pub peer_reset: bool,
    /// The half is done: nothing more will be sent or received.
    pub closed: bool,
    /// Bytes waiting in [`Splice::recv`].
    pub recv_queue: usize,
    /// Bytes [`Splice::send`] would accept now.
    pub send_room: usize,
}

/// The TCP timestamps (RFC 7323) a half sends in the name of the end it impersonates.
#[derive(Debug, Clone, Copy)]
struct TimestampClock {
    /// TSval at the splice's epoch: the last one the real peer saw from the
    /// impersonated end, so that ours never go backwards (PAWS, RFC 7323 §5).
    base: u32,
    /// Latest TSval from the real peer, echoed as TSecr (RFC 7323 §4.3).
    recent: u32,
}

/// One smoltcp TCP socket in its own interface, facing one real peer.
struct Half {
    iface: Interface,
    device: PacketDevice,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
    /// The end this half impersonates.
    local: IpEndpoint,
    /// The real peer this half faces.
    peer: IpEndpoint,
    l2_toward_peer: L2Header,
    hop_limit: u8,
    /// Real sequence number = smoltcp's + this, for the half's own (sent) stream.
    seq_offset: u32,
    /// Window shift smoltcp applies to the windows it advertises.
    smol_shift: u8,
    /// Window shift the real peer applies to the windows it receives.
    real_shift: u8,
    timestamps: Option<TimestampClock>,
    peer_reset: bool,
    /// The real peer's FIN, once one arrived: replayed until smoltcp takes it.
    peer_fin: Option<PeerFin>,
}

/// A FIN from the real peer, kept to be replayed: smoltcp disregards a FIN that
/// arrives while data before it is missing (reordering), and would otherwise only
/// learn of it when the peer retransmits it, after its full backoff.
#[derive(Debug, Clone, Copy)]
struct PeerFin {
    /// Sequence number of the FIN itself.
    seq: u32,
    /// Acknowledgment and window of the latest segment from the peer, in the half's
    /// spaces, for the replayed FIN.
    ack: Option<u32>,
    window: u16,
    /// smoltcp took it: the peer's side of the stream is closed.
    taken: bool,
}

impl std::fmt::Debug for Half {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Half")
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("state", &self.socket().state())
            .field("seq_offset", &self.seq_offset)
            .field("smol_shift", &self.smol_shift)
            .field("real_shift", &self.real_shift)
            .field("timestamps", &self.timestamps)
            .field("peer_reset", &self.peer_reset)
            .finish_non_exhaustive()
    }
}

fn seq(value: u32) -> TcpSeqNumber {
    TcpSeqNumber(value as i32)
}

fn seq_value(number: TcpSeqNumber) -> u32 {
    number.0 as u32
}

impl Half {
    fn new(
        smol_now: SmolInstant,
        local: IpEndpoint,
        peer: IpEndpoint,
        mtu: usize,
        config: &Config,
        seed: u64,
    ) -> Self {
        let mut device = PacketDevice::new(mtu);
        let mut iface_config = IfaceConfig::new(HardwareAddress::Ip);
        iface_config.random_seed = seed;
        let mut iface = Interface::new(iface_config, &mut device, smol_now);
        // A /0 prefix puts the real peer on-link: no routes to configure for Medium::Ip.
        iface.update_ip_addrs(|addrs| {
            let _ = addrs.push(IpCidr::new(local.addr, 0));
        });
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; config.rx_buffer]),
            tcp::SocketBuffer::new(vec![0; config.tx_buffer]),
        );
        // The TLS layer writes whole records; holding back a record's tail for Nagle
        // only adds a round trip to every handshake flight.
        socket.set_nagle_enabled(false);
        socket.set_timeout(config.user_timeout.map(Into::into));
        let mut sockets = SocketSet::new(Vec::with_capacity(1));
        let handle = sockets.add(socket);
        Self {
            iface,
            device,
            sockets,
            socket: handle,
            local,
            peer,
            l2_toward_peer: L2Header::untagged([0; 6], [0; 6], IpAddr::from(local.addr)),
            hop_limit: 64,
            seq_offset: 0,
            smol_shift: 0,
            real_shift: 0,
            timestamps: None,
            peer_reset: false,
            peer_fin: None,
        }
    }

    fn socket(&self) -> &tcp::Socket<'static> {
        self.sockets.get::<tcp::Socket>(self.socket)
    }

    fn socket_mut(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(self.socket)
    }

    /// Hands one segment (already in the half's spaces) from the real peer to smoltcp.
    fn inject(&mut self, smol_now: SmolInstant, tcp: &TcpRepr<'_>) {
        let (src, dst) = (self.peer.addr, self.local.addr);
        let len = ip_packet_len(&src, tcp);
        self.device.stage_rx(len, |buf| {
            let _ = emit_ip_packet(buf, src, dst, 64, tcp, &ChecksumCapabilities::ignored());
        });
        let _ = self
            .iface
            .poll_ingress_single(smol_now, &mut self.device, &mut self.sockets);
        self.device.clear_rx();
    }

    fn poll_egress(&mut self, smol_now: SmolInstant) {
        // In TIME-WAIT the half is done and the session may be dropped at once: an ACK
        // of the peer's last segments still held by the delayed-ACK timer (started
        // before the FIN came) must leave now, or the peer retransmits into nothing.
        let at = if self.socket().state() == tcp::State::TimeWait {
            smol_now + ACK_DELAY
        } else {
            smol_now
        };
        let _ = self.iface.poll_egress(at, &mut self.device, &mut self.sockets);
    }

    /// Runs smoltcp's egress and returns the first segment it emitted (in smoltcp's
    /// own spaces), dropping anything else: used while synthesizing the handshake,
    /// whose segments must never reach the wire.
    fn take_handshake_segment(&mut self, smol_now: SmolInstant) -> Option<SynSummary> {
        self.poll_egress(smol_now);
        let mut found = None;
        while let Some(packet) = self.device.pop_tx() {
            if found.is_none() {
                found = parse_ip_packet(&packet).map(|(_, _, tcp)| SynSummary {
                    control: tcp.control,
                    seq: seq_value(tcp.seq_number),
                    window_scale: tcp.window_scale,
                });
            }
            self.device.recycle(packet);
        }
        found
    }

    fn discard_output(&mut self) {
        while let Some(packet) = self.device.pop_tx() {
            self.device.recycle(packet);
        }
    }

    /// Translates a real peer's segment into the half's spaces and delivers it.
    fn deliver(&mut self, smol_now: SmolInstant, mut tcp: TcpRepr<'_>) {
        if let (Some(clock), Some(ts)) = (self.timestamps.as_mut(), tcp.timestamp) {
            if (ts.tsval.wrapping_sub(clock.recent) as i32) > 0 {
                clock.recent = ts.tsval;
            }
        }
        let offset = self.seq_offset;
        tcp.ack_number = tcp.ack_number.map(|ack| seq(seq_value(ack).wrapping_sub(offset)));
        // smoltcp neither recovers from SACK information nor checks timestamps (PAWS),
        // so the peer's SACK blocks and TSecr are dropped rather than translated.
        tcp.sack_ranges = [None; 3];
        tcp.timestamp = None;
        tcp.max_seg_size = None;
        tcp.window_scale = None;
        tcp.sack_permitted = false;
        let was_open = self.socket().state() != tcp::State::Closed;
        let is_rst = tcp.control == TcpControl::Rst;
        if tcp.control == TcpControl::Fin && self.peer_fin.is_none() {
            let fin_seq = seq_value(tcp.seq_number).wrapping_add(tcp.payload.len() as u32);
            self.peer_fin = Some(PeerFin {
                seq: fin_seq,
                ack: None,
                window: 0,
                taken: false,
            });
        }
        if let Some(fin) = self.peer_fin.as_mut() {
            fin.ack = tcp.ack_number.map(seq_value);
            fin.window = tcp.window_len;
            // From the peer's FIN on, what it sent is acknowledged at once, not after the
            // delayed-ACK timer (set when a segment is taken, so before it is): the
            // session may be dropped as soon as both halves are closed, and an ACK still
            // waiting then would never leave — the peer would retransmit its last
            // segments into a session that is gone (found by perf/intercept).
            self.socket_mut().set_ack_delay(None);
        }
        self.inject(smol_now, &tcp);
        if is_rst && was_open && self.socket().state() == tcp::State::Closed {
            self.peer_reset = true;
        }
        self.replay_peer_fin(smol_now, &tcp);
    }

    /// Hands the peer's FIN to smoltcp again until it takes it (see [`PeerFin`]).
    fn replay_peer_fin(&mut self, smol_now: SmolInstant, template: &TcpRepr<'_>) {
        let Some(mut fin) = self.peer_fin else {
            return;
        };
        if !fin.taken && self.fin_taken() {
            fin.taken = true;
        } else if !fin.taken && !self.peer_reset {
            let replay = TcpRepr {
                control: TcpControl::Fin,
                seq_number: seq(fin.seq),
                ack_number: fin.ack.map(seq),
                window_len: fin.window,
                payload: &[],
                ..*template
            };
            self.inject(smol_now, &replay);
            fin.taken = self.fin_taken();
        }
        self.peer_fin = Some(fin);
    }

    /// smoltcp has received the peer's FIN.
    fn fin_taken(&self) -> bool {
        matches!(
            self.socket().state(),
            tcp::State::CloseWait
                | tcp::State::LastAck
                | tcp::State::Closing
                | tcp::State::TimeWait
                | tcp::State::Closed
        )
    }

    /// Takes the next segment smoltcp emitted, translates it into the real
    /// connection's spaces and writes it as a whole Ethernet frame into `out`.
    /// `Some(None)`: a segment was taken but could not be sent.
    fn next_frame(&mut self, millis: u32, out: &mut [u8]) -> Option<Option<usize>> {
        let packet = self.device.pop_tx()?;
        let written = self.translate_out(&packet, millis, out);
        self.device.recycle(packet);
        Some(written)
    }

    fn translate_out(&self, packet: &[u8], millis: u32, out: &mut [u8]) -> Option<usize> {
        let (_, _, mut tcp) = parse_ip_packet(packet)?;
        if tcp.control == TcpControl::Syn {
            // Only a socket re-entering SYN-SENT/SYN-RECEIVED would emit one, and the
            // real connection is past its handshake.
            return None;
        }
        tcp.seq_number = seq(seq_value(tcp.seq_number).wrapping_add(self.seq_offset));
        let bytes = u32::from(tcp.window_len) << self.smol_shift;
        tcp.window_len = u16::try_from(bytes >> self.real_shift).unwrap_or(u16::MAX);
        tcp.max_seg_size = None;
        tcp.window_scale = None;
        tcp.sack_permitted = false;
        tcp.timestamp = self.timestamps.map(|clock| TcpTimestampRepr {
            tsval: clock.base.wrapping_add(millis),
            tsecr: clock.recent,
        });
        let l2 = self.l2_toward_peer.as_bytes();
        let ip_len = ip_packet_len(&self.local.addr, &tcp);
        let frame = out.get_mut(..l2.len() + ip_len)?;
        let (l2_out, ip_out) = frame.split_at_mut(l2.len());
        l2_out.copy_from_slice(l2);
        emit_ip_packet(
            ip_out,
            self.local.addr,
            self.peer.addr,
            self.hop_limit,
            &tcp,
            &ChecksumCapabilities::default(),
        )?;
        Some(l2.len() + ip_len)
    }

    fn status(&self) -> HalfStatus {
        let socket = self.socket();
        let state = socket.state();
        HalfStatus {
            may_recv: socket.may_recv(),
            may_send: socket.may_send(),
            peer_closed: self.peer_fin.is_some_and(|fin| fin.taken),
            peer_reset: self.peer_reset,
            closed: matches!(state, tcp::State::Closed | tcp::State::TimeWait),
            recv_queue: socket.recv_queue(),
            send_room: socket.send_capacity() - socket.send_queue(),
        }
    }
}

/// What the handshake synthesis needs to know of a SYN or SYN-ACK a half emitted.
#[derive(Debug, Clone, Copy)]
struct SynSummary {
    control: TcpControl,
    seq: u32,
    window_scale: Option<u8>,
}

/// A live TCP connection taken over at its first client payload.
///
/// Toward the client a smoltcp socket plays the server, toward the server another plays
/// the client; both send and receive in the real connection's sequence, window and
/// timestamp spaces, so neither real peer notices that its bytes now end at the bridge.
/// The TLS layer reads and writes each side's byte stream with [`Splice::recv`] and
/// [`Splice::send`].
///
/// A driver calls, for each session:
/// 1. [`Splice::new`] with the handshake record and the held ClientHello frames;
/// 2. [`Splice::handle_from_client`] / [`Splice::handle_from_server`] for every frame of
///    the connection that arrives;
/// 3. [`Splice::recv`] / [`Splice::send`] (and [`Splice::close`] / [`Splice::abort`],
///    guided by [`Splice::status`]) for the TLS layer;
/// 4. [`Splice::poll_transmit`] until it returns `None`, sending each frame;
/// 5. [`Splice::poll_timeout`], and [`Splice::handle_timeout`] once that instant has
///    passed, then 4 again. [`Splice::is_finished`] says when to drop the session.
#[derive(Debug)]
pub struct Splice {
    client_half: Half,
    server_half: Half,
    /// smoltcp's time zero; TSvals count milliseconds from it too.
    epoch: Instant,
    last_now: Instant,
    last_activity: Instant,
    idle_timeout: Option<Duration>,
    idle_expired: bool,
    /// Which half [`Splice::poll_transmit`] serves first, alternated for fairness.
    server_first: bool,
    counters: Counters,
}

impl Splice {
    /// Takes the connection over: synthesizes both halves' handshakes from `record` and
    /// feeds the `held` client frames (those that carried the ClientHello, in arrival
    /// order) to the client-facing half. Nothing is sent yet; the client's ACK for the
    /// held bytes leaves with the first [`Splice::poll_transmit`].
    pub fn new<F: AsRef<[u8]>>(
        now: Instant,
        record: &HandshakeRecord,
        held: &[F],
        config: &Config,
    ) -> Result<Self, SpliceError> {
        let (client, server) = (&record.client, &record.server);
        if client.endpoint.ip.is_ipv4() != server.endpoint.ip.is_ipv4() {
            return Err(SpliceError::MixedAddressFamilies);
        }
        if client.endpoint.port == 0 || server.endpoint.port == 0 {
            return Err(SpliceError::BadEndpoint);
        }
        let client_ep = IpEndpoint::new(client.endpoint.ip.into(), client.endpoint.port);
        let server_ep = IpEndpoint::new(server.endpoint.ip.into(), server.endpoint.port);

        // RFC 7323 §2.2, RFC 2018 §2: an option is in force only if both SYNs carried it.
        let window_scaling = client.syn.window_scale.is_some() && server.syn.window_scale.is_some();
        let sack = client.syn.sack_permitted && server.syn.sack_permitted;
        let timestamps = client.syn.tsval.is_some() && server.syn.tsval.is_some();
        // smoltcp sizes a segment by min(MSS, MTU - headers) less the options it adds
        // itself (RFC 6691); the timestamps are added here, after it. So the MSS it is
        // told is clamped to the MTU and has the timestamps option taken off.
        let option_room = if timestamps { TIMESTAMP_OPTION_LEN } else { 0 };

        let first_held = held.first().map(AsRef::as_ref);
        let toward_client = first_held
            .and_then(|frame| L2Header::from_frame(frame, true))
            .unwrap_or_else(|| {
                L2Header::untagged(client.endpoint.mac, server.endpoint.mac, server.endpoint.ip)
            });
        let toward_server = first_held
            .and_then(|frame| L2Header::from_frame(frame, false))
            .unwrap_or_else(|| {
                L2Header::untagged(server.endpoint.mac, client.endpoint.mac, client.endpoint.ip)
            });
        let mtu = config
            .max_frame_len
            .saturating_sub(toward_client.as_bytes().len())
            .max(MIN_IP_MTU);
        let (ip_header_len, default_mss) = if client.endpoint.ip.is_ipv4() {
            (20, 536)
        } else {
            (40, 1220)
        };
        let mtu_mss = u16::try_from(mtu - ip_header_len - 20).unwrap_or(u16::MAX);
        let smoltcp_mss = |peer: &PeerHandshake| {
            // RFC 9293 §3.7.1: no MSS option means 536 (IPv4) / 1220 (IPv6).
            let mss = peer.syn.mss.unwrap_or(default_mss).min(mtu_mss);
            Some(mss.saturating_sub(option_room).max(64))
        };

        let smol_now = SmolInstant::ZERO;
        let seed = config.random_seed ^ u64::from(client.isn) << 32 ^ u64::from(server.isn);
        let mut client_half = Half::new(smol_now, server_ep, client_ep, mtu, config, seed);
        let mut server_half = Half::new(smol_now, client_ep, server_ep, mtu, config, seed.rotate_left(17));
        client_half.l2_toward_peer = toward_client;
        server_half.l2_toward_peer = toward_server;
        client_half.hop_limit = server.hop_limit;
        server_half.hop_limit = client.hop_limit;
        if timestamps {
            // The server saw the client's handshake ACK, whose TSval may be later than
            // the SYN's (by the SYN's round trip): sent in the client's name with an older
            // one, the hello would fail the server's PAWS check and wait for a
            // retransmission (found by perf/intercept: 1 s stalls). The held frames were
            // sent after that ACK, so their latest TSval is at least its.
            let mut client = *client;
            for tsval in held
                .iter()
                .filter_map(|f| parse_segment(f.as_ref()).ok()?.tcp.timestamp)
            {
                client.last_tsval = Some(latest_tsval(client.last_tsval, tsval.tsval));
            }
            client_half.timestamps = Some(clock_for(server, &client));
            server_half.timestamps = Some(clock_for(&client, server));
        }

        // Client-facing half: a listener gets the client's SYN again.
        let shift_of = |peer: &PeerHandshake| peer.syn.window_scale.unwrap_or(0).min(MAX_WINDOW_SHIFT);
        let syn_from = |from: &PeerHandshake, to: &PeerHandshake, ack: Option<u32>| TcpRepr {
            src_port: from.endpoint.port,
            dst_port: to.endpoint.port,
            control: TcpControl::Syn,
            seq_number: seq(from.isn),
            ack_number: ack.map(seq),
            window_len: from.syn.window,
            window_scale: window_scaling.then(|| shift_of(from)),
            max_seg_size: smoltcp_mss(from),
            sack_permitted: sack,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        client_half
            .socket_mut()
            .listen(IpListenEndpoint {
                addr: Some(server_ep.addr),
                port: server_ep.port,
            })
            .map_err(|_| SpliceError::HandshakeFailed(Side::Client))?;
        client_half.inject(smol_now, &syn_from(client, server, None));
        let syn_ack = client_half
            .take_handshake_segment(smol_now)
            .filter(|s| s.control == TcpControl::Syn)
            .ok_or(SpliceError::HandshakeFailed(Side::Client))?;
        client_half.seq_offset = server.isn.wrapping_sub(syn_ack.seq);
        if window_scaling {
            client_half.smol_shift = syn_ack.window_scale.unwrap_or(0);
            client_half.real_shift = shift_of(server);
        }
        // The ACK completing it carries the window the client advertised with its data
        // (already scaled), or else the SYN's (unscaled) window in the scaled units.
        let client_shift = if window_scaling { shift_of(client) } else { 0 };
        let client_window = first_held
            .and_then(|frame| parse_segment(frame).ok())
            .map_or(client.syn.window >> client_shift, |segment| {
                segment.tcp.window_len
            });
        let ack = TcpRepr {
            control: TcpControl::None,
            seq_number: seq(client.isn.wrapping_add(1)),
            ack_number: Some(seq(syn_ack.seq.wrapping_add(1))),
            window_len: client_window,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            ..syn_from(client, server, None)
        };
        client_half.inject(smol_now, &ack);
        client_half.discard_output();
        if client_half.socket().state() != tcp::State::Established {
            return Err(SpliceError::HandshakeFailed(Side::Client));
        }

        // Server-facing half: it connects, and the server's SYN-ACK answers it.
        let context = server_half.iface.context();
        server_half
            .sockets
            .get_mut::<tcp::Socket>(server_half.socket)
            .connect(context, server_ep, client_ep)
            .map_err(|_| SpliceError::HandshakeFailed(Side::Server))?;
        let syn = server_half
            .take_handshake_segment(smol_now)
            .filter(|s| s.control == TcpControl::Syn)
            .ok_or(SpliceError::HandshakeFailed(Side::Server))?;
        server_half.seq_offset = client.isn.wrapping_sub(syn.seq);
        if window_scaling {
            server_half.smol_shift = syn.window_scale.unwrap_or(0);
            server_half.real_shift = shift_of(client);
        }
        server_half.inject(smol_now, &syn_from(server, client, Some(syn.seq.wrapping_add(1))));
        // Its ACK of the SYN-ACK goes nowhere: the server has had the client's.
        server_half.poll_egress(smol_now);
        server_half.discard_output();
        if server_half.socket().state() != tcp::State::Established {
            return Err(SpliceError::HandshakeFailed(Side::Server));
        }

        let mut splice = Self {
            client_half,
            server_half,
            epoch: now,
            last_now: now,
            last_activity: now,
            idle_timeout: config.idle_timeout,
            idle_expired: false,
            server_first: false,
            counters: Counters::default(),
        };
        // smoltcp reads the window of its SYN-ACK (unscaled, as SYN windows are) as if
        // scaled until it sends its next segment, and would accept client data far past
        // its buffer meanwhile (found by fuzzing: fuzz/corpus/splice/regression-rx-window-*).
        // The SYN-ACK was swallowed, so its ACK of the held bytes must go out at once:
        // sending it records the true window.
        splice.client_half.socket_mut().set_ack_delay(None);
        for frame in held {
            let _ = splice.handle_from_client(now, frame.as_ref());
        }
        // Emitted now (it leaves with the first poll_transmit), so the window is right
        // for the very next client segment.
        let smol_now = splice.smol_time(now);
        splice.client_half.poll_egress(smol_now);
        splice.client_half.socket_mut().set_ack_delay(Some(ACK_DELAY));
        Ok(splice)
    }

    fn half(&self, side: Side) -> &Half {
        match side {
            Side::Client => &self.client_half,
            Side::Server => &self.server_half,
        }
    }

    fn half_mut(&mut self, side: Side) -> &mut Half {
        match side {
            Side::Client => &mut self.client_half,
            Side::Server => &mut self.server_half,
        }
    }

    fn smol_time(&self, now: Instant) -> SmolInstant {
        let micros = now.saturating_duration_since(self.epoch).as_micros();
        SmolInstant::from_micros(i64::try_from(micros).unwrap_or(i64::MAX))
    }

    fn std_time(&self, instant: SmolInstant) -> Instant {
        let micros = u64::try_from(instant.total_micros()).unwrap_or(0);
        self.epoch + Duration::from_micros(micros)
    }

    /// A frame the real client sent on this connection.
    pub fn handle_from_client(&mut self, now: Instant, frame: &[u8]) -> Result<(), Ignored> {
        self.handle(Side::Client, now, frame)
    }

    /// A frame the real server sent on this connection.
    pub fn handle_from_server(&mut self, now: Instant, frame: &[u8]) -> Result<(), Ignored> {
        self.handle(Side::Server, now, frame)
    }

    fn handle(&mut self, from: Side, now: Instant, frame: &[u8]) -> Result<(), Ignored> {
        self.last_now = now;
        let segment = match parse_segment(frame) {
            Ok(segment) => segment,
            Err(error) => {
                self.counters.malformed += 1;
                return Err(Ignored::Malformed(error));
            }
        };
        let smol_now = self.smol_time(now);
        let half = self.half_mut(from);
        if segment.src != half.peer.addr
            || segment.dst != half.local.addr
            || segment.tcp.src_port != half.peer.port
            || segment.tcp.dst_port != half.local.port
        {
            self.counters.foreign += 1;
            return Err(Ignored::Foreign);
        }
        if segment.tcp.control == TcpControl::Syn {
            self.counters.syn_ignored += 1;
            return Err(Ignored::Syn);
        }
        half.deliver(smol_now, segment.tcp);
        self.last_activity = now;
        match from {
            Side::Client => self.counters.delivered_from_client += 1,
            Side::Server => self.counters.delivered_from_server += 1,
        }
        Ok(())
    }

    /// Writes the next frame to send into `buf` (a whole Ethernet frame, VLAN tags
    /// included) and says toward which peer. `buf` should hold
    /// [`Config::max_frame_len`] bytes; a segment that does not fit is dropped (and
    /// counted) for smoltcp to retransmit.
    #[must_use]
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<Transmit> {
        self.last_now = now;
        let smol_now = self.smol_time(now);
        let millis = u32::try_from(now.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u32::MAX);
        let order = if self.server_first {
            [Side::Server, Side::Client]
        } else {
            [Side::Client, Side::Server]
        };
        self.server_first = !self.server_first;
        for run_egress in [false, true] {
            for side in order {
                let half = self.half_mut(side);
                if run_egress {
                    half.poll_egress(smol_now);
                }
                while let Some(written) = self.half_mut(side).next_frame(millis, buf) {
                    match written {
                        Some(len) => {
                            match side {
                                Side::Client => self.counters.sent_toward_client += 1,
                                Side::Server => self.counters.sent_toward_server += 1,
                            }
                            return Some(Transmit { toward: side, len });
                        }
                        None => self.counters.dropped_outgoing += 1,
                    }
                }
            }
        }
        None
    }

    /// When [`Splice::handle_timeout`] and [`Splice::poll_transmit`] should next be
    /// called: a retransmission, delayed ACK, close or idle timer.
    #[must_use]
    pub fn poll_timeout(&mut self) -> Option<Instant> {
        if self.client_half.device.has_tx() || self.server_half.device.has_tx() {
            return Some(self.last_now);
        }
        let smol_now = self.smol_time(self.last_now);
        let client = self
            .client_half
            .iface
            .poll_at(smol_now, &self.client_half.sockets);
        let server = self
            .server_half
            .iface
            .poll_at(smol_now, &self.server_half.sockets);
        let idle = match (self.idle_timeout, self.idle_expired) {
            (Some(timeout), false) => Some(self.last_activity + timeout),
            _ => None,
        };
        [client, server]
            .into_iter()
            .flatten()
            .map(|at| self.std_time(at))
            .chain(idle)
            .min()
    }

    /// Runs the timers due at `now`: an idle session has both halves reset (the RSTs
    /// leave with [`Splice::poll_transmit`]); smoltcp's own timers run there too.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        if let (Some(timeout), false) = (self.idle_timeout, self.idle_expired) {
            if now.saturating_duration_since(self.last_activity) >= timeout {
                self.idle_expired = true;
                self.client_half.socket_mut().abort();
                self.server_half.socket_mut().abort();
            }
        }
    }

    /// Reads bytes the real peer on `side` sent (for the client side, starting with the
    /// held ClientHello). Returns how many were copied; 0 when none are waiting.
    pub fn recv(&mut self, side: Side, buf: &mut [u8]) -> usize {
        self.half_mut(side).socket_mut().recv_slice(buf).unwrap_or(0)
    }

    /// Queues bytes for the real peer on `side`. Returns how many were accepted, which
    /// is less than `data.len()` when the send buffer is full (back-pressure).
    pub fn send(&mut self, side: Side, data: &[u8]) -> usize {
        self.half_mut(side).socket_mut().send_slice(data).unwrap_or(0)
    }

    /// Sends a FIN to the peer on `side` after the queued bytes.
    pub fn close(&mut self, side: Side) {
        self.half_mut(side).socket_mut().close();
    }

    /// Resets the connection with the peer on `side`, dropping queued bytes.
    pub fn abort(&mut self, side: Side) {
        self.half_mut(side).socket_mut().abort();
    }

    pub fn status(&self, side: Side) -> HalfStatus {
        self.half(side).status()
    }

    /// The idle timer fired and reset both halves.
    pub fn idle_expired(&self) -> bool {
        self.idle_expired
    }

    /// Both halves are closed and nothing waits to be sent: the session can be dropped.
    pub fn is_finished(&self) -> bool {
        [Side::Client, Side::Server].into_iter().all(|side| {
            let half = self.half(side);
            half.status().closed && !half.device.has_tx()
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// The later of two TSvals (RFC 7323 §5.2: compared modulo 2^32).
fn latest_tsval(known: Option<u32>, seen: u32) -> u32 {
    match known {
        Some(k) if (seen.wrapping_sub(k) as i32) <= 0 => k,
        _ => seen,
    }
}

/// Timestamps sent in `impersonated`'s name to `peer`.
fn clock_for(impersonated: &PeerHandshake, peer: &PeerHandshake) -> TimestampClock {
    TimestampClock {
        base: impersonated.last_tsval.or(impersonated.syn.tsval).unwrap_or(0),
        recent: peer.last_tsval.or(peer.syn.tsval).unwrap_or(0),
    }
}
