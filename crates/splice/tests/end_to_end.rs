//! Two real peers (smoltcp sockets in their own interfaces, on the real addresses)
//! connected through a [`Splice`], with the bridge relaying bytes between its two sides
//! and a lossy, reordering link on both sides, driven on a fake clock by a seeded LCG.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use smoltcp::iface::{Config as IfaceConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant as SmolInstant;
use smoltcp::wire::{HardwareAddress, IpCidr, IpEndpoint};
use splice::{Config, HandshakeRecord, Side, Splice};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const SERVER_PORT: u16 = 443;
const CLIENT_PORT: u16 = 49_152;
const MEGABYTE: usize = 1 << 20;
const PEER_MTU: usize = 1500;
const LOSS_PERCENT: u32 = 5;
const REORDER_PERCENT: u32 = 10;

/// Milliseconds of the fake clock, for the peers' TCP timestamps (a plain `fn` in
/// smoltcp, hence a static; tests running in parallel only ever move it forward).
static CLOCK_MS: AtomicU32 = AtomicU32::new(1);

fn tsval() -> u32 {
    CLOCK_MS.load(Ordering::Relaxed)
}

/// Deterministic pseudo-random numbers (Knuth's MMIX LCG).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.next() % 100 < percent
    }
}

/// IP packets in, IP packets out.
#[derive(Default)]
struct QueueDevice {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = vec![0; len];
        let result = f(&mut packet);
        self.0.push_back(packet);
        result
    }
}

impl phy::Device for QueueDevice {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(Rx, Tx<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((Rx(packet), Tx(&mut self.tx)))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = PEER_MTU;
        caps
    }
}

/// A real end of the connection: its own stack, checksums verified.
struct Peer {
    iface: Interface,
    device: QueueDevice,
    sockets: SocketSet<'static>,
    socket: SocketHandle,
    mac: [u8; 6],
    peer_mac: [u8; 6],
}

impl Peer {
    fn new(ip: IpAddr, mac: [u8; 6], peer_mac: [u8; 6], buffer: usize, seed: u64) -> Self {
        let mut device = QueueDevice::default();
        let mut config = IfaceConfig::new(HardwareAddress::Ip);
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut device, SmolInstant::ZERO);
        let prefix = if ip.is_ipv4() { 24 } else { 64 };
        iface.update_ip_addrs(|addrs| addrs.push(IpCidr::new(ip.into(), prefix)).unwrap());
        let mut socket = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buffer]),
            tcp::SocketBuffer::new(vec![0; buffer]),
        );
        socket.set_tsval_generator(Some(tsval));
        socket.set_nagle_enabled(false);
        let mut sockets = SocketSet::new(vec![]);
        let socket = sockets.add(socket);
        Self {
            iface,
            device,
            sockets,
            socket,
            mac,
            peer_mac,
        }
    }

    fn socket(&mut self) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut(self.socket)
    }

    fn poll(&mut self, now: SmolInstant) {
        self.iface.poll(now, &mut self.device, &mut self.sockets);
    }

    /// Its sent packets, as Ethernet frames.
    fn frames(&mut self) -> Vec<Vec<u8>> {
        self.device
            .tx
            .drain(..)
            .map(|packet| {
                let ethertype: u16 = if packet[0] >> 4 == 4 { 0x0800 } else { 0x86dd };
                let mut frame = Vec::with_capacity(14 + packet.len());
                frame.extend_from_slice(&self.peer_mac);
                frame.extend_from_slice(&self.mac);
                frame.extend_from_slice(&ethertype.to_be_bytes());
                frame.extend_from_slice(&packet);
                frame
            })
            .collect()
    }

    fn deliver(&mut self, frame: &[u8]) {
        self.device.rx.push_back(frame[14..].to_vec());
    }
}

/// Frames in flight on one direction of a link, each with its arrival time.
#[derive(Default)]
struct Wire(Vec<(Instant, u64, Vec<u8>)>);

impl Wire {
    fn send(&mut self, now: Instant, frame: Vec<u8>, rng: &mut Lcg, lossy: bool, order: &mut u64) {
        if lossy && rng.chance(LOSS_PERCENT) {
            return;
        }
        let delay = if lossy && rng.chance(REORDER_PERCENT) {
            2 + u64::from(rng.next() % 15)
        } else {
            1
        };
        *order += 1;
        self.0.push((now + Duration::from_millis(delay), *order, frame));
    }

    fn due(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.0.sort_by_key(|(at, order, _)| (*at, *order));
        let ready = self.0.iter().take_while(|(at, _, _)| *at <= now).count();
        self.0.drain(..ready).map(|(_, _, frame)| frame).collect()
    }

    fn next(&self) -> Option<Instant> {
        self.0.iter().map(|(at, _, _)| *at).min()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Lcg(seed);
    (0..len).map(|_| rng.next() as u8).collect()
}

/// TSval and TSecr of a frame's TCP segment.
fn timestamps(frame: &[u8]) -> Option<(u32, u32)> {
    let headers = etherparse::PacketHeaders::from_ethernet_slice(frame).ok()?;
    let Some(etherparse::TransportHeader::Tcp(tcp)) = headers.transport else {
        return None;
    };
    tcp.options_iterator().find_map(|option| match option {
        Ok(etherparse::TcpOptionElement::Timestamp(tsval, tsecr)) => Some((tsval, tsecr)),
        _ => None,
    })
}

/// Lowers the MSS option of a SYN frame to `mss` (as a clamping router would), keeping
/// the TCP checksum right (RFC 1624 incremental update). smoltcp peers need it: they fill
/// segments to the MTU and then add the timestamps option on top.
fn clamp_mss(frame: &mut [u8], mss: u16) {
    let ip = 14;
    let tcp = if frame[ip] >> 4 == 4 {
        ip + usize::from(frame[ip] & 0xf) * 4
    } else {
        ip + 40
    };
    if frame[tcp + 13] & 0x02 == 0 {
        return;
    }
    let end = tcp + usize::from(frame[tcp + 12] >> 4) * 4;
    let mut at = tcp + 20;
    while at + 1 < end {
        match frame[at] {
            0 => break,
            1 => at += 1,
            2 => {
                let old = u16::from_be_bytes([frame[at + 2], frame[at + 3]]);
                if old > mss {
                    frame[at + 2..at + 4].copy_from_slice(&mss.to_be_bytes());
                    let check = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
                    let mut sum = u32::from(!check) + u32::from(!old) + u32::from(mss);
                    sum = (sum & 0xffff) + (sum >> 16);
                    sum = (sum & 0xffff) + (sum >> 16);
                    frame[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
                }
                return;
            }
            _ => at += usize::from(frame[at + 1]).max(2),
        }
    }
}

fn has_payload(frame: &[u8]) -> bool {
    etherparse::PacketHeaders::from_ethernet_slice(frame)
        .map(|headers| !headers.payload.slice().is_empty())
        .unwrap_or(false)
}

/// Connects the peers directly (the handshake passes through the bridge untouched),
/// takes over at the first client payload, then relays both 1 MB streams.
fn transfer_through_splice(client_ip: IpAddr, server_ip: IpAddr, seed: u64) {
    let start = Instant::now();
    let mut now = start;
    let smol = |now: Instant| SmolInstant::from_micros((now - start).as_micros() as i64);
    let mut rng = Lcg(seed);
    let mut order = 0;

    // Different buffer sizes give the peers window scales (4 and 2) that differ from
    // each other and from the splice's own (1).
    let mut client = Peer::new(client_ip, CLIENT_MAC, SERVER_MAC, MEGABYTE, seed ^ 1);
    let mut server = Peer::new(server_ip, SERVER_MAC, CLIENT_MAC, 256 * 1024, seed ^ 2);
    server.socket().listen(SERVER_PORT).unwrap();
    let cx = client.iface.context();
    client
        .sockets
        .get_mut::<tcp::Socket>(client.socket)
        .connect(
            cx,
            IpEndpoint::new(server_ip.into(), SERVER_PORT),
            IpEndpoint::new(client_ip.into(), CLIENT_PORT),
        )
        .unwrap();

    let upload = pattern(seed ^ 0xc1, MEGABYTE);
    let download = pattern(seed ^ 0x5e, MEGABYTE);

    // The real handshake, frames passed straight through and recorded.
    let (mut syn, mut syn_ack, mut client_last_tsval) = (None, None, None);
    for _ in 0..10 {
        client.poll(smol(now));
        for mut frame in client.frames() {
            clamp_mss(&mut frame, 1400);
            if syn.is_none() {
                syn = Some(frame.clone());
            }
            client_last_tsval = timestamps(&frame).map(|ts| ts.0).or(client_last_tsval);
            server.deliver(&frame);
        }
        server.poll(smol(now));
        for mut frame in server.frames() {
            clamp_mss(&mut frame, 1400);
            syn_ack.get_or_insert_with(|| frame.clone());
            client.deliver(&frame);
        }
        now += Duration::from_millis(1);
        CLOCK_MS.fetch_max((now - start).as_millis() as u32 + 1, Ordering::Relaxed);
    }
    assert_eq!(client.socket().state(), tcp::State::Established);
    assert_eq!(server.socket().state(), tcp::State::Established);
    let mut record = HandshakeRecord::from_frames(&syn.unwrap(), &syn_ack.unwrap()).unwrap();
    record.client.last_tsval = client_last_tsval;

    // The client writes its "ClientHello" and the rest; the first data frame is held.
    let mut uploaded = client.socket().send_slice(&upload).unwrap();
    let mut first = Vec::new();
    for _ in 0..100 {
        client.poll(smol(now));
        first.extend(client.frames());
        if first.iter().any(|frame| has_payload(frame)) {
            break;
        }
        now += Duration::from_millis(1);
    }
    // Pure ACKs before it pass through untouched.
    while !has_payload(&first[0]) {
        let ack = first.remove(0);
        server.deliver(&ack);
    }
    let held = first.remove(0);
    let mut splice = Splice::new(now, &record, &[held], &Config::default()).unwrap();

    let mut to_bridge_from_client = Wire::default();
    let mut to_bridge_from_server = Wire::default();
    let mut to_client = Wire::default();
    let mut to_server = Wire::default();
    for frame in first {
        to_bridge_from_client.send(now, frame, &mut rng, true, &mut order);
    }

    let (mut c2s, mut s2c) = (Vec::<u8>::new(), Vec::<u8>::new());
    let (mut server_got, mut client_got) = (Vec::new(), Vec::new());
    let mut downloaded = 0;
    let (mut client_closed, mut server_closed) = (false, false);
    let (mut bridge_closed_server, mut bridge_closed_client) = (false, false);
    let mut buf = vec![0u8; 64 * 1024];
    let mut frame = [0u8; 2048];
    let mut steps = 0;
    // Before the takeover each peer saw the other's TSvals up to the handshake's.
    let mut last_tsval_to_client = record.server.last_tsval.unwrap();
    let mut last_tsval_to_server = record.client.last_tsval.unwrap();
    // No TSval sent so far exceeds the clock.
    let mut client_max_tsval = tsval();
    let mut server_max_tsval = tsval();

    loop {
        steps += 1;
        assert!(
            steps < 200_000,
            "no progress after {:?}: {} / {} bytes, client {}, server {}, {:?}, {:?}",
            now - start,
            server_got.len(),
            client_got.len(),
            client.socket().state(),
            server.socket().state(),
            splice.status(Side::Client),
            splice.status(Side::Server),
        );
        assert!(
            now - start < Duration::from_secs(600),
            "simulated time ran out: {} / {} bytes, client {}, server {}, {:?}, {:?}, {:?}",
            server_got.len(),
            client_got.len(),
            client.socket().state(),
            server.socket().state(),
            splice.status(Side::Client),
            splice.status(Side::Server),
            splice.counters(),
        );
        CLOCK_MS.fetch_max((now - start).as_millis() as u32 + 1, Ordering::Relaxed);

        for frame in to_client.due(now) {
            client.deliver(&frame);
        }
        for frame in to_server.due(now) {
            server.deliver(&frame);
        }
        for frame in to_bridge_from_client.due(now) {
            let _ = splice.handle_from_client(now, &frame);
        }
        for frame in to_bridge_from_server.due(now) {
            let _ = splice.handle_from_server(now, &frame);
        }

        // The applications.
        client.poll(smol(now));
        server.poll(smol(now));
        if uploaded < upload.len() {
            uploaded += client.socket().send_slice(&upload[uploaded..]).unwrap_or(0);
        } else if !client_closed {
            client.socket().close();
            client_closed = true;
        }
        while let Ok(n @ 1..) = client.socket().recv_slice(&mut buf) {
            client_got.extend_from_slice(&buf[..n]);
        }
        while let Ok(n @ 1..) = server.socket().recv_slice(&mut buf) {
            server_got.extend_from_slice(&buf[..n]);
        }
        // TLS is client-first: the server answers once it has heard from the client.
        if !server_got.is_empty() {
            if downloaded < download.len() {
                downloaded += server.socket().send_slice(&download[downloaded..]).unwrap_or(0);
            } else if !server_closed {
                server.socket().close();
                server_closed = true;
            }
        }
        client.poll(smol(now));
        server.poll(smol(now));
        for frame in client.frames() {
            client_max_tsval = client_max_tsval.max(timestamps(&frame).map_or(0, |ts| ts.0));
            to_bridge_from_client.send(now, frame, &mut rng, true, &mut order);
        }
        for frame in server.frames() {
            server_max_tsval = server_max_tsval.max(timestamps(&frame).map_or(0, |ts| ts.0));
            to_bridge_from_server.send(now, frame, &mut rng, true, &mut order);
        }

        // The bridge: relay bytes, pass closes on.
        loop {
            let n = splice.recv(Side::Client, &mut buf);
            c2s.extend_from_slice(&buf[..n]);
            if n == 0 {
                break;
            }
        }
        let sent = splice.send(Side::Server, &c2s);
        c2s.drain(..sent);
        loop {
            let n = splice.recv(Side::Server, &mut buf);
            s2c.extend_from_slice(&buf[..n]);
            if n == 0 {
                break;
            }
        }
        let sent = splice.send(Side::Client, &s2c);
        s2c.drain(..sent);
        if !bridge_closed_server && c2s.is_empty() && !splice.status(Side::Client).may_recv {
            splice.close(Side::Server);
            bridge_closed_server = true;
        }
        if !bridge_closed_client && s2c.is_empty() && !splice.status(Side::Server).may_recv {
            splice.close(Side::Client);
            bridge_closed_client = true;
        }
        while let Some(tx) = splice.poll_transmit(now, &mut frame) {
            let bytes = frame[..tx.len].to_vec();
            assert!(bytes.len() - 14 <= PEER_MTU, "a {} byte frame", bytes.len());
            let (tsval, tsecr) = timestamps(&bytes).expect("timestamps stay on");
            let (last, peer_max) = match tx.toward {
                Side::Client => (&mut last_tsval_to_client, client_max_tsval),
                Side::Server => (&mut last_tsval_to_server, server_max_tsval),
            };
            // PAWS (RFC 7323 §5) at the receiver: TSvals never go backwards, and the
            // echo is one the peer sent.
            assert!(tsval >= *last, "TSval went back from {last} to {tsval}");
            assert!(tsecr <= peer_max, "TSecr {tsecr} was never sent (max {peer_max})");
            *last = tsval;
            match tx.toward {
                Side::Client => to_client.send(now, bytes, &mut rng, true, &mut order),
                Side::Server => to_server.send(now, bytes, &mut rng, true, &mut order),
            }
        }

        let done =
            |peer: &mut Peer| matches!(peer.socket().state(), tcp::State::Closed | tcp::State::TimeWait);
        if done(&mut client) && done(&mut server) {
            break;
        }

        // Jump to the next thing that happens.
        let next = [
            to_client.next(),
            to_server.next(),
            to_bridge_from_client.next(),
            to_bridge_from_server.next(),
            splice.poll_timeout(),
            client
                .iface
                .poll_at(smol(now), &client.sockets)
                .map(|at| start + Duration::from_micros(at.total_micros() as u64)),
            server
                .iface
                .poll_at(smol(now), &server.sockets)
                .map(|at| start + Duration::from_micros(at.total_micros() as u64)),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + Duration::from_millis(1));
        if next > now {
            splice.handle_timeout(next);
            now = next;
        } else {
            // Something is due now: a fresh pass, a tick later so time always moves.
            now += Duration::from_micros(100);
        }
    }

    assert_eq!(server_got.len(), upload.len());
    assert!(server_got == upload, "upload corrupted");
    assert_eq!(client_got.len(), download.len());
    assert!(client_got == download, "download corrupted");
    let counters = splice.counters();
    assert_eq!(counters.malformed, 0);
    assert_eq!(counters.foreign, 0);
    assert_eq!(counters.dropped_outgoing, 0);
    assert!(!splice.status(Side::Client).peer_reset && !splice.status(Side::Server).peer_reset);
}

#[test]
fn one_megabyte_each_way_over_lossy_ipv4_links() {
    for seed in [7, 8, 9] {
        transfer_through_splice(
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)),
            seed,
        );
    }
}

#[test]
fn one_megabyte_each_way_over_lossy_ipv6_links() {
    for seed in [11, 12, 13] {
        transfer_through_splice(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10)),
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 20)),
            seed,
        );
    }
}
