//! Scripted segment sequences against one [`Splice`]: frames are built with etherparse
//! as the real peers would send them, and every frame the splice writes is parsed back
//! and its checksums verified.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use etherparse::{
    LinkExtHeader, NetHeaders, PacketBuilder, PacketHeaders, TcpHeader, TcpOptionElement, TransportHeader,
    VlanId,
};

use crate::{
    parse_syn, Config, Endpoint, FrameError, HandshakeRecord, Ignored, PeerHandshake, Side, Splice,
    SynOptions,
};

const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];
const ISN_C: u32 = 0xfff0_0000;
/// Close to the wrap, so that offsets and comparisons are exercised across it.
const ISN_S: u32 = 0xffff_ff00;
const CLIENT_TSVAL: u32 = 1_000;
const SERVER_TSVAL: u32 = 7_000_000;

/// What the real handshake negotiated in one scripted session.
#[derive(Debug, Clone, Copy)]
struct Net {
    v6: bool,
    vlan: Option<u16>,
    client_wscale: Option<u8>,
    server_wscale: Option<u8>,
    timestamps: bool,
    sack: bool,
    mss: u16,
}

impl Default for Net {
    fn default() -> Self {
        Self {
            v6: false,
            vlan: None,
            client_wscale: Some(7),
            server_wscale: Some(7),
            timestamps: true,
            sack: true,
            mss: 1460,
        }
    }
}

impl Net {
    fn client_ip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))
        }
    }

    fn server_ip(&self) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2))
        } else {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))
        }
    }

    fn record(&self) -> HandshakeRecord {
        let peer = |mac, ip, port, isn, wscale, tsval| PeerHandshake {
            endpoint: Endpoint { mac, ip, port },
            isn,
            syn: SynOptions {
                window: 64_240,
                mss: Some(self.mss),
                window_scale: wscale,
                sack_permitted: self.sack,
                tsval: self.timestamps.then_some(tsval),
            },
            last_tsval: self.timestamps.then_some(tsval),
            hop_limit: 64,
        };
        HandshakeRecord {
            client: peer(
                CLIENT_MAC,
                self.client_ip(),
                40_000,
                ISN_C,
                self.client_wscale,
                CLIENT_TSVAL,
            ),
            server: peer(
                SERVER_MAC,
                self.server_ip(),
                443,
                ISN_S,
                self.server_wscale,
                SERVER_TSVAL,
            ),
        }
    }

    /// A frame from the client (`from_client`) or the server.
    fn frame(&self, from_client: bool, seg: Seg<'_>) -> Vec<u8> {
        let (smac, dmac, sip, dip, sport, dport) = if from_client {
            (
                CLIENT_MAC,
                SERVER_MAC,
                self.client_ip(),
                self.server_ip(),
                40_000,
                443,
            )
        } else {
            (
                SERVER_MAC,
                CLIENT_MAC,
                self.server_ip(),
                self.client_ip(),
                443,
                40_000,
            )
        };
        let mut tcp = TcpHeader::new(sport, dport, seg.seq, seg.window);
        tcp.syn = seg.syn;
        tcp.fin = seg.fin;
        tcp.rst = seg.rst;
        tcp.psh = !seg.payload.is_empty();
        if let Some(ack) = seg.ack {
            tcp.ack = true;
            tcp.acknowledgment_number = ack;
        }
        let mut options = Vec::new();
        if let Some(mss) = seg.mss {
            options.push(TcpOptionElement::MaximumSegmentSize(mss));
        }
        if let Some(ws) = seg.wscale {
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::WindowScale(ws));
        }
        if let Some((tsval, tsecr)) = seg.ts {
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Timestamp(tsval, tsecr));
        }
        if let Some((first, rest)) = seg.sack.split_first() {
            let mut more = [None; 3];
            for (slot, block) in more.iter_mut().zip(rest) {
                *slot = Some(*block);
            }
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::Noop);
            options.push(TcpOptionElement::SelectiveAcknowledgement(*first, more));
        }
        tcp.set_options(&options).expect("options fit");
        let eth = PacketBuilder::ethernet2(smac, dmac);
        let mut out = Vec::new();
        match (self.vlan, sip, dip) {
            (None, IpAddr::V4(s), IpAddr::V4(d)) => eth
                .ipv4(s.octets(), d.octets(), 64)
                .tcp_header(tcp)
                .write(&mut out, seg.payload),
            (None, IpAddr::V6(s), IpAddr::V6(d)) => eth
                .ipv6(s.octets(), d.octets(), 64)
                .tcp_header(tcp)
                .write(&mut out, seg.payload),
            (Some(vid), IpAddr::V4(s), IpAddr::V4(d)) => eth
                .single_vlan(VlanId::try_new(vid).unwrap())
                .ipv4(s.octets(), d.octets(), 64)
                .tcp_header(tcp)
                .write(&mut out, seg.payload),
            (Some(vid), IpAddr::V6(s), IpAddr::V6(d)) => eth
                .single_vlan(VlanId::try_new(vid).unwrap())
                .ipv6(s.octets(), d.octets(), 64)
                .tcp_header(tcp)
                .write(&mut out, seg.payload),
            _ => unreachable!(),
        }
        .unwrap();
        out
    }

    /// A data/ACK segment from the client in the real connection's spaces.
    fn client(&self, seq: u32, ack: u32, payload: &[u8], tsval: u32) -> Vec<u8> {
        self.frame(
            true,
            Seg {
                seq,
                ack: Some(ack),
                payload,
                window: 2_000,
                ts: self.timestamps.then_some((tsval, SERVER_TSVAL)),
                ..Seg::default()
            },
        )
    }

    fn server(&self, seq: u32, ack: u32, payload: &[u8], tsval: u32) -> Vec<u8> {
        self.frame(
            false,
            Seg {
                seq,
                ack: Some(ack),
                payload,
                window: 2_000,
                ts: self.timestamps.then_some((tsval, CLIENT_TSVAL)),
                ..Seg::default()
            },
        )
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Seg<'a> {
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    window: u16,
    mss: Option<u16>,
    wscale: Option<u8>,
    ts: Option<(u32, u32)>,
    sack: &'a [(u32, u32)],
    payload: &'a [u8],
}

/// A frame the splice wrote, parsed back.
#[derive(Debug, Clone)]
struct Out {
    toward: Side,
    vlan: Option<u16>,
    src_mac: [u8; 6],
    seq: u32,
    ack: Option<u32>,
    window: u16,
    fin: bool,
    rst: bool,
    syn: bool,
    ts: Option<(u32, u32)>,
    sack: Vec<(u32, u32)>,
    payload: Vec<u8>,
}

fn parse_out(toward: Side, net: &Net, frame: &[u8]) -> Out {
    let headers = PacketHeaders::from_ethernet_slice(frame).expect("parsable frame");
    let vlan = headers.link_exts.iter().find_map(|ext| match ext {
        LinkExtHeader::Vlan(vlan) => Some(vlan.vlan_id.value()),
        _ => None,
    });
    let Some(TransportHeader::Tcp(tcp)) = headers.transport.clone() else {
        panic!("not TCP")
    };
    let payload = headers.payload.slice().to_vec();
    let (expect_src, expect_dst) = match toward {
        Side::Client => (net.server_ip(), net.client_ip()),
        Side::Server => (net.client_ip(), net.server_ip()),
    };
    match headers.net.as_ref().expect("IP") {
        NetHeaders::Ipv4(ip, _) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum(), "IPv4 checksum");
            assert_eq!(IpAddr::from(ip.source), expect_src);
            assert_eq!(IpAddr::from(ip.destination), expect_dst);
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(ip, &payload).unwrap(),
                "TCP checksum"
            );
        }
        NetHeaders::Ipv6(ip, _) => {
            assert_eq!(IpAddr::from(ip.source), expect_src);
            assert_eq!(IpAddr::from(ip.destination), expect_dst);
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(ip, &payload).unwrap(),
                "TCP checksum"
            );
        }
        NetHeaders::Arp(_) => panic!("ARP"),
    }
    let (sport, dport) = match toward {
        Side::Client => (443, 40_000),
        Side::Server => (40_000, 443),
    };
    assert_eq!((tcp.source_port, tcp.destination_port), (sport, dport));
    let mut ts = None;
    let mut sack = Vec::new();
    for option in tcp.options_iterator() {
        match option.expect("valid option") {
            TcpOptionElement::Timestamp(tsval, tsecr) => ts = Some((tsval, tsecr)),
            TcpOptionElement::SelectiveAcknowledgement(first, rest) => {
                sack.push(first);
                sack.extend(rest.iter().flatten());
            }
            TcpOptionElement::Noop => {}
            other => panic!("unexpected option {other:?} after the handshake"),
        }
    }
    let src_mac = frame[6..12].try_into().unwrap();
    Out {
        toward,
        vlan,
        src_mac,
        seq: tcp.sequence_number,
        ack: tcp.ack.then_some(tcp.acknowledgment_number),
        window: tcp.window_size,
        fin: tcp.fin,
        rst: tcp.rst,
        syn: tcp.syn,
        ts,
        sack,
        payload,
    }
}

/// Everything the splice wants to send at `now`.
fn drain(splice: &mut Splice, net: &Net, now: Instant) -> Vec<Out> {
    let mut buf = [0u8; 2048];
    let mut out = Vec::new();
    while let Some(tx) = splice.poll_transmit(now, &mut buf) {
        out.push(parse_out(tx.toward, net, &buf[..tx.len]));
        assert!(out.len() < 1000, "poll_transmit does not stop");
    }
    out
}

fn toward(outs: &[Out], side: Side) -> Vec<Out> {
    outs.iter().filter(|o| o.toward == side).cloned().collect()
}

/// Runs timers until `until`, collecting what is sent.
fn run_until(splice: &mut Splice, net: &Net, mut now: Instant, until: Instant) -> Vec<Out> {
    let mut out = drain(splice, net, now);
    while let Some(at) = splice.poll_timeout() {
        if at > until {
            break;
        }
        now = now.max(at);
        splice.handle_timeout(now);
        out.extend(drain(splice, net, now));
        assert!(out.len() < 1000, "timers do not settle");
    }
    out
}

const HELLO_1: &[u8] = b"\x16\x03\x01\x02\x00first part of a ClientHello";
const HELLO_2: &[u8] = b"...and its second segment";

/// A session taken over with a two-segment held ClientHello.
fn takeover(net: &Net, now: Instant) -> Splice {
    let held = [
        net.client(
            ISN_C.wrapping_add(1),
            ISN_S.wrapping_add(1),
            HELLO_1,
            CLIENT_TSVAL + 5,
        ),
        net.client(
            ISN_C.wrapping_add(1 + HELLO_1.len() as u32),
            ISN_S.wrapping_add(1),
            HELLO_2,
            CLIENT_TSVAL + 5,
        ),
    ];
    Splice::new(now, &net.record(), &held, &Config::default()).expect("takeover")
}

fn hello_len() -> u32 {
    (HELLO_1.len() + HELLO_2.len()) as u32
}

fn read_all(splice: &mut Splice, side: Side) -> Vec<u8> {
    let mut buf = [0u8; 4096];
    let mut out = Vec::new();
    loop {
        let n = splice.recv(side, &mut buf);
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn held_client_hello_is_read_back_and_acked_in_the_server_space() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    assert_eq!(read_all(&mut splice, Side::Client), [HELLO_1, HELLO_2].concat());
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let acks = toward(&outs, Side::Client);
    let last = acks.last().expect("the held ClientHello is acknowledged");
    assert_eq!(last.seq, ISN_S.wrapping_add(1));
    assert_eq!(last.ack, Some(ISN_C.wrapping_add(1 + hello_len())));
    assert!(last.payload.is_empty() && !last.syn && !last.fin && !last.rst);
    assert_eq!(last.src_mac, SERVER_MAC);
    let (tsval, tsecr) = last.ts.expect("timestamps stay on");
    assert!(tsval >= SERVER_TSVAL, "TSval continues the server's clock");
    assert_eq!(tsecr, CLIENT_TSVAL + 5, "TSecr echoes the client's latest TSval");
    assert!(
        toward(&outs, Side::Server).is_empty(),
        "nothing toward the server yet"
    );
    assert_eq!(splice.counters().delivered_from_client, 2);
}

#[test]
fn server_side_data_leaves_as_the_next_client_payload() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let hello = b"the bridge's own ClientHello, longer than the held one".repeat(3);
    assert_eq!(splice.send(Side::Server, &hello), hello.len());
    let outs = toward(&drain(&mut splice, &net, now), Side::Server);
    assert_eq!(outs.len(), 1);
    let out = &outs[0];
    assert_eq!(out.seq, ISN_C.wrapping_add(1));
    assert_eq!(out.ack, Some(ISN_S.wrapping_add(1)));
    assert_eq!(out.payload, hello);
    assert_eq!(out.src_mac, CLIENT_MAC);
    // The server has seen the client's handshake ACK, sent just before the held hello
    // (TSval CLIENT_TSVAL + 5): an older TSval would fail its PAWS check.
    assert_eq!(out.ts, Some((CLIENT_TSVAL + 5, SERVER_TSVAL)));
}

/// The common start of the exchanges below: the bridge's hello went out and the
/// server answered it.
fn exchanged(net: &Net, now: Instant) -> (Splice, u32) {
    let mut splice = takeover(net, now);
    let _ = read_all(&mut splice, Side::Client);
    let hello = b"bridge hello";
    splice.send(Side::Server, hello);
    let _ = drain(&mut splice, net, now);
    let client_next = ISN_C.wrapping_add(1 + hello.len() as u32);
    let reply = net.server(
        ISN_S.wrapping_add(1),
        client_next,
        b"server hello",
        SERVER_TSVAL + 1,
    );
    splice.handle_from_server(now, &reply).unwrap();
    assert_eq!(read_all(&mut splice, Side::Server), b"server hello");
    (splice, client_next)
}

#[test]
fn server_reply_reaches_the_server_side_and_client_data_uses_server_sequence_numbers() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let ack = toward(&outs, Side::Server)
        .pop()
        .expect("the server's data is acknowledged");
    assert_eq!(ack.seq, client_next);
    assert_eq!(ack.ack, Some(ISN_S.wrapping_add(1 + 12)));
    assert_eq!(ack.ts.map(|ts| ts.1), Some(SERVER_TSVAL + 1));

    let later = now + Duration::from_millis(30);
    assert_eq!(splice.send(Side::Client, b"forged server hello"), 19);
    let outs = toward(&drain(&mut splice, &net, later), Side::Client);
    let data = outs
        .iter()
        .find(|o| !o.payload.is_empty())
        .expect("data toward the client");
    assert_eq!(data.seq, ISN_S.wrapping_add(1));
    assert_eq!(data.ack, Some(ISN_C.wrapping_add(1 + hello_len())));
    assert_eq!(data.payload, b"forged server hello");
    let (tsval, _) = data.ts.unwrap();
    assert!(tsval >= SERVER_TSVAL + 30, "TSval advances with time: {tsval}");
}

#[test]
fn out_of_order_and_retransmitted_server_segments_are_reassembled_once() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let base = ISN_S.wrapping_add(1 + 12);
    let seg2 = net.server(base.wrapping_add(5), client_next, b"world", SERVER_TSVAL + 2);
    let seg1 = net.server(base, client_next, b"hello", SERVER_TSVAL + 3);
    splice.handle_from_server(now, &seg2).unwrap();
    let outs = toward(&drain(&mut splice, &net, now), Side::Server);
    let dup_ack = outs.last().expect("an out-of-order segment is answered at once");
    assert_eq!(dup_ack.ack, Some(base));
    assert_eq!(dup_ack.sack, vec![(base.wrapping_add(5), base.wrapping_add(10))]);
    splice.handle_from_server(now, &seg1).unwrap();
    splice.handle_from_server(now, &seg1).unwrap();
    splice.handle_from_server(now, &seg2).unwrap();
    assert_eq!(read_all(&mut splice, Side::Server), b"helloworld");
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let ack = toward(&outs, Side::Server).pop().unwrap();
    assert_eq!(ack.ack, Some(base.wrapping_add(10)));
}

#[test]
fn lost_segment_toward_the_client_is_retransmitted_in_the_server_space() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    splice.send(Side::Client, b"lost once");
    let first = toward(&drain(&mut splice, &net, now), Side::Client);
    let first = first.iter().find(|o| !o.payload.is_empty()).unwrap().clone();
    let outs = run_until(&mut splice, &net, now, now + Duration::from_secs(3));
    let again = toward(&outs, Side::Client);
    let again = again
        .iter()
        .find(|o| o.payload == b"lost once")
        .expect("retransmitted");
    assert_eq!(again.seq, first.seq);
    assert_eq!(first.seq, ISN_S.wrapping_add(1));
    // Its acknowledgment stops the retransmissions.
    let ack = net.client(
        ISN_C.wrapping_add(1 + hello_len()),
        ISN_S.wrapping_add(1 + 9),
        b"",
        CLIENT_TSVAL + 9,
    );
    let later = now + Duration::from_secs(3);
    splice.handle_from_client(later, &ack).unwrap();
    let outs = run_until(&mut splice, &net, later, later + Duration::from_secs(10));
    assert!(outs.iter().all(|o| o.payload.is_empty()), "{outs:?}");
}

#[test]
fn zero_window_from_the_client_holds_data_back_until_it_opens() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let client_seq = ISN_C.wrapping_add(1 + hello_len());
    let closed = net.frame(
        true,
        Seg {
            seq: client_seq,
            ack: Some(ISN_S.wrapping_add(1)),
            window: 0,
            ts: Some((CLIENT_TSVAL + 6, SERVER_TSVAL)),
            ..Seg::default()
        },
    );
    splice.handle_from_client(now, &closed).unwrap();
    splice.send(Side::Client, b"wait for the window");
    let outs = toward(&drain(&mut splice, &net, now), Side::Client);
    assert!(outs.iter().all(|o| o.payload.is_empty()), "{outs:?}");
    let open = net.client(client_seq, ISN_S.wrapping_add(1), b"", CLIENT_TSVAL + 7);
    let later = now + Duration::from_millis(100);
    splice.handle_from_client(later, &open).unwrap();
    let outs = toward(&drain(&mut splice, &net, later), Side::Client);
    let data = outs
        .iter()
        .find(|o| !o.payload.is_empty())
        .expect("sent once open");
    assert_eq!(data.payload, b"wait for the window");
    assert_eq!(data.seq, ISN_S.wrapping_add(1));
}

#[test]
fn window_is_rescaled_from_smoltcp_to_what_the_peer_believes() {
    for (client_ws, server_ws) in [(7, 7), (0, 9), (2, 3)] {
        let net = Net {
            client_wscale: Some(client_ws),
            server_wscale: Some(server_ws),
            ..Net::default()
        };
        let now = Instant::now();
        let (mut splice, _) = exchanged(&net, now);
        // The ACK of the held hello went out at once (drained in `exchanged`); a segment
        // toward the client shows the window again.
        splice.send(Side::Client, b"server bytes");
        let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
        // 128 KiB buffers, nearly empty: the client reads the window with the server's
        // scale, the server with the client's.
        let free = Config::default().rx_buffer as u32;
        let to_client = toward(&outs, Side::Client).pop().unwrap();
        let bytes = u32::from(to_client.window) << server_ws;
        let cap = 65_535u32 << server_ws;
        assert!(
            bytes <= free && bytes + (1 << server_ws) + 4 >= free.min(cap),
            "{bytes} vs {free}"
        );
        let to_server = toward(&outs, Side::Server).pop().unwrap();
        let bytes = u32::from(to_server.window) << client_ws;
        let cap = 65_535u32 << client_ws;
        assert!(
            bytes <= free && bytes + (1 << client_ws) + 4 >= free.min(cap),
            "{bytes} vs {free}"
        );
    }
}

#[test]
fn without_options_nothing_is_scaled_or_timestamped() {
    let net = Net {
        client_wscale: None,
        server_wscale: Some(7),
        timestamps: false,
        sack: false,
        ..Net::default()
    };
    let now = Instant::now();
    let (mut splice, _) = exchanged(&net, now);
    splice.send(Side::Client, &[7; 3000]);
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    assert!(!outs.is_empty());
    for out in &outs {
        assert_eq!(out.ts, None);
        assert!(out.payload.len() <= 1460);
    }
    let to_client = toward(&outs, Side::Client).pop().unwrap();
    assert_eq!(to_client.window, 65_535, "unscaled, clamped");
}

#[test]
fn segments_leave_within_the_peer_mss_less_the_timestamps() {
    let net = Net {
        mss: 1000,
        ..Net::default()
    };
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    splice.send(Side::Client, &[1; 5000]);
    splice.send(Side::Server, &[2; 5000]);
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(5));
    let sizes: Vec<usize> = outs.iter().map(|o| o.payload.len()).filter(|&l| l > 0).collect();
    assert!(!sizes.is_empty());
    assert!(sizes.iter().all(|&len| len <= 988), "{sizes:?}");
}

#[test]
fn fin_from_the_client_half_closes_and_the_server_side_goes_on() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let fin = net.frame(
        true,
        Seg {
            seq: ISN_C.wrapping_add(1 + hello_len()),
            ack: Some(ISN_S.wrapping_add(1)),
            fin: true,
            window: 2_000,
            ts: Some((CLIENT_TSVAL + 8, SERVER_TSVAL)),
            ..Seg::default()
        },
    );
    splice.handle_from_client(now, &fin).unwrap();
    let status = splice.status(Side::Client);
    assert!(status.peer_closed && !status.may_recv && status.may_send && !status.peer_reset);
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let outs = toward(&outs, Side::Client);
    assert_eq!(
        outs.last().unwrap().ack,
        Some(ISN_C.wrapping_add(2 + hello_len()))
    );

    // The relay passes the close on; the server keeps talking until it closes too.
    splice.close(Side::Server);
    let outs = toward(&drain(&mut splice, &net, now), Side::Server);
    let fin = outs.iter().find(|o| o.fin).expect("FIN toward the server");
    assert_eq!(fin.seq, client_next);
    let server_data = net.server(ISN_S.wrapping_add(13), client_next.wrapping_add(1), b"bye", 1);
    splice.handle_from_server(now, &server_data).unwrap();
    assert_eq!(read_all(&mut splice, Side::Server), b"bye");
    assert_eq!(splice.send(Side::Client, b"bye"), 3);
    splice.close(Side::Client);
    let outs = toward(&drain(&mut splice, &net, now), Side::Client);
    assert!(outs.iter().any(|o| o.payload == b"bye"));
    let fin = outs.iter().find(|o| o.fin).expect("FIN toward the client");
    assert_eq!(
        fin.seq.wrapping_add(fin.payload.len() as u32),
        ISN_S.wrapping_add(1 + 3),
        "the FIN follows the last byte"
    );
    assert!(!splice.status(Side::Client).closed, "waits for the client's ACK");
}

#[test]
fn fin_from_the_server_reaches_the_server_side() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let fin = net.frame(
        false,
        Seg {
            seq: ISN_S.wrapping_add(13),
            ack: Some(client_next),
            fin: true,
            window: 2_000,
            ts: Some((SERVER_TSVAL + 9, CLIENT_TSVAL)),
            ..Seg::default()
        },
    );
    splice.handle_from_server(now, &fin).unwrap();
    let status = splice.status(Side::Server);
    assert!(status.peer_closed && !status.may_recv && !status.closed);
    splice.close(Side::Server);
    let outs = toward(&drain(&mut splice, &net, now), Side::Server);
    let fin = outs.iter().find(|o| o.fin).expect("our FIN");
    assert_eq!((fin.seq, fin.ack), (client_next, Some(ISN_S.wrapping_add(14))));
    let last_ack = net.server(ISN_S.wrapping_add(14), client_next.wrapping_add(1), b"", 5);
    splice.handle_from_server(now, &last_ack).unwrap();
    assert!(splice.status(Side::Server).closed);
}

#[test]
fn rst_from_either_peer_is_reported_and_the_other_side_can_be_aborted() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let rst = net.frame(
        false,
        Seg {
            seq: ISN_S.wrapping_add(13),
            rst: true,
            ..Seg::default()
        },
    );
    splice.handle_from_server(now, &rst).unwrap();
    let status = splice.status(Side::Server);
    assert!(status.peer_reset && status.closed && !status.may_send);
    splice.abort(Side::Client);
    let outs = toward(&drain(&mut splice, &net, now), Side::Client);
    let rst = outs.iter().find(|o| o.rst).expect("RST toward the client");
    assert_eq!(rst.seq, ISN_S.wrapping_add(1));
    assert!(splice.is_finished());
    let _ = client_next;

    let (mut splice, _) = exchanged(&net, now);
    let rst = net.frame(
        true,
        Seg {
            seq: ISN_C.wrapping_add(1 + hello_len()),
            rst: true,
            ..Seg::default()
        },
    );
    splice.handle_from_client(now, &rst).unwrap();
    assert!(splice.status(Side::Client).peer_reset);
    assert!(!splice.status(Side::Server).peer_reset);
}

#[test]
fn ipv6_with_a_vlan_tag_keeps_the_tag_and_the_spaces() {
    let net = Net {
        v6: true,
        vlan: Some(42),
        client_wscale: Some(8),
        server_wscale: Some(2),
        ..Net::default()
    };
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    splice.send(Side::Client, b"to the client");
    splice.send(Side::Server, b"to the server");
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    for out in &outs {
        assert_eq!(out.vlan, Some(42));
    }
    let c = toward(&outs, Side::Client);
    let c = c.iter().find(|o| !o.payload.is_empty()).unwrap();
    assert_eq!(
        (c.seq, c.ack),
        (ISN_S.wrapping_add(1), Some(ISN_C.wrapping_add(1 + hello_len())))
    );
    let s = toward(&outs, Side::Server);
    let s = s.iter().find(|o| !o.payload.is_empty()).unwrap();
    assert_eq!((s.seq, s.ack), (client_next, Some(ISN_S.wrapping_add(13))));
}

#[test]
fn malformed_and_foreign_frames_are_counted_not_delivered() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let mut bad_checksum = net.client(ISN_C.wrapping_add(1), ISN_S.wrapping_add(1), b"x", 1);
    let last = bad_checksum.len() - 1;
    bad_checksum[last] ^= 0xff;
    assert_eq!(
        splice.handle_from_client(now, &bad_checksum),
        Err(Ignored::Malformed(FrameError::BadTcp))
    );
    assert_eq!(
        splice.handle_from_client(now, &bad_checksum[..20]),
        Err(Ignored::Malformed(FrameError::BadIp))
    );
    assert_eq!(
        splice.handle_from_client(now, &[0; 5]),
        Err(Ignored::Malformed(FrameError::Runt))
    );
    // A server frame handed in as the client's.
    let server_frame = net.server(ISN_S.wrapping_add(1), ISN_C.wrapping_add(1), b"", 1);
    assert_eq!(
        splice.handle_from_client(now, &server_frame),
        Err(Ignored::Foreign)
    );
    let syn = net.frame(
        true,
        Seg {
            seq: ISN_C,
            syn: true,
            window: 100,
            ..Seg::default()
        },
    );
    assert_eq!(splice.handle_from_client(now, &syn), Err(Ignored::Syn));
    let counters = splice.counters();
    assert_eq!(
        (counters.malformed, counters.foreign, counters.syn_ignored),
        (3, 1, 1)
    );
    assert_eq!(read_all(&mut splice, Side::Client), [HELLO_1, HELLO_2].concat());
}

#[test]
fn idle_session_is_reset_on_both_sides() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = Splice::new(
        now,
        &net.record(),
        &[net.client(ISN_C.wrapping_add(1), ISN_S.wrapping_add(1), HELLO_1, 2)],
        &Config {
            idle_timeout: Some(Duration::from_secs(5)),
            ..Config::default()
        },
    )
    .unwrap();
    let outs = run_until(&mut splice, &net, now, now + Duration::from_secs(6));
    assert!(splice.idle_expired());
    assert!(outs.iter().any(|o| o.rst && o.toward == Side::Client));
    assert!(outs.iter().any(|o| o.rst && o.toward == Side::Server));
    assert!(splice.is_finished());
}

#[test]
fn handshake_record_is_read_off_the_syn_frames() {
    let net = Net {
        v6: true,
        ..Net::default()
    };
    let syn = net.frame(
        true,
        Seg {
            seq: ISN_C,
            syn: true,
            window: 64_800,
            mss: Some(1440),
            wscale: Some(7),
            ts: Some((CLIENT_TSVAL, 0)),
            ..Seg::default()
        },
    );
    let syn_ack = net.frame(
        false,
        Seg {
            seq: ISN_S,
            ack: Some(ISN_C.wrapping_add(1)),
            syn: true,
            window: 65_160,
            mss: Some(1400),
            wscale: Some(9),
            ..Seg::default()
        },
    );
    let record = HandshakeRecord::from_frames(&syn, &syn_ack).unwrap();
    assert_eq!(record.client.endpoint.port, 40_000);
    assert_eq!(record.client.endpoint.mac, CLIENT_MAC);
    assert_eq!(record.server.endpoint.ip, net.server_ip());
    assert_eq!((record.client.isn, record.server.isn), (ISN_C, ISN_S));
    assert_eq!(record.client.syn.mss, Some(1440));
    assert_eq!(record.client.syn.window_scale, Some(7));
    assert_eq!(record.client.syn.tsval, Some(CLIENT_TSVAL));
    assert_eq!(record.server.syn.window_scale, Some(9));
    assert_eq!(record.server.syn.tsval, None);
    assert!(parse_syn(&net.client(1, 2, b"", 3)).is_err(), "not a SYN");
    assert!(HandshakeRecord::from_frames(&syn_ack, &syn).is_err());
}

#[test]
fn a_fin_that_overtook_missing_data_is_taken_once_the_data_is_in() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let _ = read_all(&mut splice, Side::Client);
    let base = ISN_C.wrapping_add(1 + hello_len());
    let fin_with_data = net.frame(
        true,
        Seg {
            seq: base.wrapping_add(4),
            ack: Some(ISN_S.wrapping_add(1)),
            fin: true,
            window: 2_000,
            ts: Some((CLIENT_TSVAL + 9, SERVER_TSVAL)),
            payload: b"tail",
            ..Seg::default()
        },
    );
    splice.handle_from_client(now, &fin_with_data).unwrap();
    assert!(
        !splice.status(Side::Client).peer_closed,
        "data before it is missing"
    );
    let missing = net.client(base, ISN_S.wrapping_add(1), b"head", CLIENT_TSVAL + 8);
    splice.handle_from_client(now, &missing).unwrap();
    assert_eq!(read_all(&mut splice, Side::Client), b"headtail");
    let status = splice.status(Side::Client);
    assert!(status.peer_closed && !status.may_recv, "{status:?}");
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let ack = toward(&outs, Side::Client).pop().unwrap();
    assert_eq!(ack.ack, Some(base.wrapping_add(9)), "data and FIN acknowledged");
}

#[test]
fn timestamps_follow_the_impersonated_clock_and_echo_the_newest_peer_tsval() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let _ = read_all(&mut splice, Side::Client);
    let client_seq = ISN_C.wrapping_add(1 + hello_len());
    let at = |ms| now + Duration::from_millis(ms);
    // A newer TSval is echoed; a reordered older one does not take its place.
    let newer = net.client(client_seq, ISN_S.wrapping_add(1), b"a", CLIENT_TSVAL + 50);
    let older = net.client(client_seq, ISN_S.wrapping_add(1), b"a", CLIENT_TSVAL + 20);
    splice.handle_from_client(at(100), &newer).unwrap();
    splice.handle_from_client(at(100), &older).unwrap();
    splice.send(Side::Client, b"reply");
    let outs = toward(&drain(&mut splice, &net, at(250)), Side::Client);
    let (tsval, tsecr) = outs.last().unwrap().ts.unwrap();
    assert_eq!(tsecr, CLIENT_TSVAL + 50);
    assert_eq!(
        tsval,
        SERVER_TSVAL + 250,
        "the server's clock, advanced by 250 ms"
    );

    // Toward the server: the client's clock, echoing the server's newest TSval.
    splice.send(Side::Server, b"hello");
    let outs = toward(&drain(&mut splice, &net, at(400)), Side::Server);
    // The client's clock from its latest TSval before the takeover (the held hello's).
    assert_eq!(
        outs.last().unwrap().ts,
        Some((CLIENT_TSVAL + 5 + 400, SERVER_TSVAL))
    );
    let reply = net.server(
        ISN_S.wrapping_add(1),
        ISN_C.wrapping_add(6),
        b"x",
        SERVER_TSVAL + 77,
    );
    splice.handle_from_server(at(410), &reply).unwrap();
    let outs = run_until(&mut splice, &net, at(410), at(500));
    let ack = toward(&outs, Side::Server).pop().unwrap();
    assert_eq!(ack.ts.map(|ts| ts.1), Some(SERVER_TSVAL + 77));
}

#[test]
fn a_retransmitted_client_hello_is_read_once() {
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let again = net.client(
        ISN_C.wrapping_add(1),
        ISN_S.wrapping_add(1),
        HELLO_1,
        CLIENT_TSVAL + 6,
    );
    splice.handle_from_client(now, &again).unwrap();
    assert_eq!(read_all(&mut splice, Side::Client), [HELLO_1, HELLO_2].concat());
    let outs = run_until(&mut splice, &net, now, now + Duration::from_millis(50));
    let ack = toward(&outs, Side::Client).pop().unwrap();
    assert_eq!(ack.ack, Some(ISN_C.wrapping_add(1 + hello_len())));
}

#[test]
fn full_sized_segments_fit_a_standard_frame_with_timestamps_and_a_vlan_tag() {
    for v6 in [false, true] {
        let net = Net {
            v6,
            vlan: Some(7),
            mss: if v6 { 1440 } else { 1460 },
            ..Net::default()
        };
        let now = Instant::now();
        let held = [net.client(ISN_C.wrapping_add(1), ISN_S.wrapping_add(1), HELLO_1, 9)];
        let config = Config {
            max_frame_len: 1518,
            ..Config::default()
        };
        let mut splice = Splice::new(now, &net.record(), &held, &config).unwrap();
        splice.send(Side::Client, &[3; 20_000]);
        splice.send(Side::Server, &[4; 20_000]);
        let mut buf = [0u8; 1518];
        let mut sizes = Vec::new();
        while let Some(tx) = splice.poll_transmit(now, &mut buf) {
            let out = parse_out(tx.toward, &net, &buf[..tx.len]);
            assert!(out.ts.is_some());
            sizes.push((tx.len, out.payload.len()));
        }
        assert_eq!(splice.counters().dropped_outgoing, 0);
        let largest = sizes.iter().copied().max().unwrap();
        assert_eq!(
            largest,
            (1518, if v6 { 1428 } else { 1448 }),
            "v6 {v6}: {sizes:?}"
        );
    }
}

#[test]
fn without_held_frames_the_headers_come_from_the_record() {
    let net = Net::default();
    let now = Instant::now();
    let held: [&[u8]; 0] = [];
    let mut splice = Splice::new(now, &net.record(), &held, &Config::default()).unwrap();
    splice.send(Side::Client, b"to the client");
    splice.send(Side::Server, b"to the server");
    let outs = drain(&mut splice, &net, now);
    let to_client = toward(&outs, Side::Client);
    let to_server = toward(&outs, Side::Server);
    assert_eq!(to_client[0].src_mac, SERVER_MAC);
    assert_eq!(to_client[0].ack, Some(ISN_C.wrapping_add(1)));
    assert_eq!(to_server[0].src_mac, CLIENT_MAC);
    assert_eq!(to_server[0].seq, ISN_C.wrapping_add(1));
}

#[test]
fn a_client_segment_far_past_the_buffer_right_after_takeover_is_not_taken() {
    // Found by fuzzing (fuzz/corpus/splice/regression-rx-window-4x-*): before its first ACK,
    // smoltcp took the swallowed SYN-ACK's window as scaled and accepted bytes past its
    // buffer, then panicked once the gap was filled.
    let net = Net::default();
    let now = Instant::now();
    let mut splice = takeover(&net, now);
    let _ = read_all(&mut splice, Side::Client);
    let start = ISN_C.wrapping_add(1 + hello_len());
    let far = 131_000u32;
    let late = net.client(
        start.wrapping_add(far),
        ISN_S.wrapping_add(1),
        &[7u8; 100],
        CLIENT_TSVAL + 6,
    );
    let _ = splice.handle_from_client(now, &late);
    // Fill the gap in pieces that fit the window, reading as the relay would.
    let mut got = Vec::new();
    let mut off = 0u32;
    while off < far {
        let n = 1400.min(far - off);
        let seg = net.client(
            start.wrapping_add(off),
            ISN_S.wrapping_add(1),
            &vec![1u8; n as usize],
            CLIENT_TSVAL + 6,
        );
        let _ = splice.handle_from_client(now, &seg);
        let _ = drain(&mut splice, &net, now);
        got.extend(read_all(&mut splice, Side::Client));
        off += n;
    }
    got.extend(read_all(&mut splice, Side::Client));
    // No panic, and the client side reads the gap's bytes, in order, then at most the part
    // of the far segment that lay inside the real window (the rest the client
    // retransmits); never stale buffer bytes.
    assert!(
        got.len() >= far as usize && got.len() <= far as usize + 100,
        "{} bytes",
        got.len()
    );
    let (gap, tail) = got.split_at(far as usize);
    assert!(gap.iter().all(|&b| b == 1), "stale bytes in the gap");
    assert!(tail.iter().all(|&b| b == 7), "stale bytes after the gap");
}

#[test]
fn a_peer_fin_is_acknowledged_at_once_so_nothing_waits_when_the_session_ends() {
    let net = Net::default();
    let now = Instant::now();
    let (mut splice, client_next) = exchanged(&net, now);
    let _ = drain(&mut splice, &net, now);
    // The bridge closes toward the server, which sends its last bytes and FIN.
    splice.close(Side::Server);
    let _ = drain(&mut splice, &net, now);
    // Its last bytes, then its FIN on its own: the delayed-ACK timer starts with the
    // bytes, before the FIN comes.
    let data = net.server(
        ISN_S.wrapping_add(1 + 12),
        client_next.wrapping_add(1),
        b"close_notify",
        SERVER_TSVAL + 2,
    );
    splice.handle_from_server(now, &data).unwrap();
    let fin = net.frame(
        false,
        Seg {
            seq: ISN_S.wrapping_add(1 + 12 + 12),
            ack: Some(client_next.wrapping_add(1)),
            fin: true,
            window: 2_000,
            ts: Some((SERVER_TSVAL + 2, CLIENT_TSVAL)),
            ..Seg::default()
        },
    );
    splice.handle_from_server(now, &fin).unwrap();
    // Same instant: no delayed-ACK timer may hold the ACK back.
    let acks = toward(&drain(&mut splice, &net, now), Side::Server);
    let ack = acks.last().expect("the server's FIN is acknowledged at once");
    assert_eq!(ack.ack, Some(ISN_S.wrapping_add(1 + 12 + 12 + 1)));
    assert!(splice.status(Side::Server).closed);
}
