use super::*;
use etherparse::{LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader};
use std::net::{Ipv4Addr, Ipv6Addr};

pub(crate) const CMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
pub(crate) const SMAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x05];

pub(crate) fn v4() -> Endpoints {
    Endpoints {
        client_mac: CMAC,
        server_mac: SMAC,
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        client_port: 40000,
        server_ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        server_port: 443,
    }
}

fn v6() -> Endpoints {
    Endpoints {
        client_ip: IpAddr::V6(Ipv6Addr::new(0xfd66, 0, 0, 0, 0, 0, 0, 1)),
        server_ip: IpAddr::V6(Ipv6Addr::new(0xfd66, 0, 0, 0, 0, 0, 0, 2)),
        ..v4()
    }
}

fn ts(ms: u64) -> Timestamp {
    Duration::from_millis(1_700_000_000_000 + ms)
}

/// One frame, parsed back with etherparse and its checksums verified.
#[derive(Debug)]
struct Seen {
    ts: Timestamp,
    len: usize,
    vlan: Option<(u16, u8)>,
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    sport: u16,
    dport: u16,
    seq: u32,
    ack: u32,
    flags: (bool, bool, bool, bool, bool), // syn, ack, fin, rst, psh
    mss: Option<u16>,
    ip_len: usize,
    payload: Vec<u8>,
}

fn parse(ts: Timestamp, frame: &[u8]) -> Seen {
    let h = PacketHeaders::from_ethernet_slice(frame).expect("parses");
    let eth = h.link.clone().and_then(|l| l.ethernet2()).expect("ethernet");
    let vlan = h.link_exts.first().map(|e| match e {
        LinkExtHeader::Vlan(v) => (v.vlan_id.value(), v.pcp.value()),
        other => panic!("unexpected {other:?}"),
    });
    let payload = h.payload.slice().to_vec();
    let tcp = match &h.transport {
        Some(TransportHeader::Tcp(t)) => t.clone(),
        other => panic!("not tcp: {other:?}"),
    };
    let ip_len = match &h.net {
        Some(NetHeaders::Ipv4(ip, _)) => {
            assert_eq!(
                ip.header_checksum,
                ip.calc_header_checksum(),
                "IPv4 header checksum"
            );
            assert!(ip.dont_fragment);
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv4(ip, &payload).unwrap(),
                "TCP/IPv4 checksum"
            );
            usize::from(ip.total_len)
        }
        Some(NetHeaders::Ipv6(ip, _)) => {
            assert_eq!(
                tcp.checksum,
                tcp.calc_checksum_ipv6(ip, &payload).unwrap(),
                "TCP/IPv6 checksum"
            );
            40 + usize::from(ip.payload_length)
        }
        other => panic!("not ip: {other:?}"),
    };
    let mss = tcp.options_iterator().find_map(|o| match o {
        Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
        _ => None,
    });
    Seen {
        ts,
        len: frame.len(),
        vlan,
        src_mac: eth.source,
        dst_mac: eth.destination,
        sport: tcp.source_port,
        dport: tcp.destination_port,
        seq: tcp.sequence_number,
        ack: tcp.acknowledgment_number,
        flags: (tcp.syn, tcp.ack, tcp.fin, tcp.rst, tcp.psh),
        mss,
        ip_len,
        payload,
    }
}

fn drain(c: &mut Conversation) -> Vec<Seen> {
    let mut buf = vec![0u8; c.max_frame_len()];
    let mut out = Vec::new();
    while let Some(f) = c.poll_frame(&mut buf) {
        out.push(parse(f.timestamp, &buf[..f.len]));
    }
    out
}

const S: (bool, bool, bool, bool, bool) = (true, false, false, false, false);
const SA: (bool, bool, bool, bool, bool) = (true, true, false, false, false);
const A: (bool, bool, bool, bool, bool) = (false, true, false, false, false);
const AP: (bool, bool, bool, bool, bool) = (false, true, false, false, true);
const FA: (bool, bool, bool, bool, bool) = (false, true, true, false, false);
const RA: (bool, bool, bool, bool, bool) = (false, true, false, true, false);

/// Replays the frames as a receiver would: every segment's seq is the sender's next
/// expected byte, every ACK acknowledges exactly what the other side sent so far.
fn check_consistent(frames: &[Seen], client_port: u16) -> [Vec<u8>; 2] {
    let mut next: [Option<u32>; 2] = [None, None];
    let mut data: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for f in frames {
        let d = usize::from(f.sport != client_port);
        let o = 1 - d;
        if f.flags.0 {
            next[d] = Some(f.seq.wrapping_add(1));
        } else {
            assert_eq!(Some(f.seq), next[d], "seq continuity {f:?}");
            next[d] = Some(f.seq.wrapping_add(f.payload.len() as u32 + u32::from(f.flags.2)));
        }
        if f.flags.1 {
            assert_eq!(Some(f.ack), next[o], "ack matches other side {f:?}");
        }
        data[d].extend_from_slice(&f.payload);
    }
    data
}

#[test]
fn handshake_data_ack_fin_sequence_numbers_are_consistent() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default())
        .unwrap()
        .with_isns(1000, 5000);
    c.push(ts(1), Direction::ClientToServer, b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    c.push(ts(2), Direction::ServerToClient, b"HTTP/1.1 200 OK\r\n\r\nhi")
        .unwrap();
    c.close_normal(ts(3), Direction::ServerToClient);
    let f = drain(&mut c);
    let flags: Vec<_> = f.iter().map(|f| f.flags).collect();
    assert_eq!(flags, vec![S, SA, A, AP, A, AP, A, FA, FA, A]);
    assert_eq!((f[0].seq, f[0].ack), (1000, 0));
    assert_eq!((f[1].seq, f[1].ack), (5000, 1001));
    assert_eq!((f[2].seq, f[2].ack), (1001, 5001));
    assert_eq!(f[0].mss, Some(1460));
    assert_eq!(f[1].mss, Some(1460));
    // The server closed first here.
    assert_eq!(f[7].sport, 443);
    let data = check_consistent(&f, 40000);
    assert_eq!(data[0], b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(data[1], b"HTTP/1.1 200 OK\r\n\r\nhi");
    for x in &f {
        let c2s = x.sport == 40000;
        assert_eq!(x.src_mac, if c2s { CMAC } else { SMAC });
        assert_eq!(x.dst_mac, if c2s { SMAC } else { CMAC });
    }
    assert!(c.is_closed());
    assert_eq!(
        c.push(ts(4), Direction::ClientToServer, b"late"),
        Err(ConversationError::Closed)
    );
    assert!(!c.has_pending());
}

#[test]
fn sequence_numbers_wrap_around() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default())
        .unwrap()
        .with_isns(u32::MAX - 100, u32::MAX);
    let body: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
    c.push(ts(1), Direction::ClientToServer, &body).unwrap();
    c.push(ts(1), Direction::ServerToClient, &body).unwrap();
    c.close_normal(ts(2), Direction::ClientToServer);
    let f = drain(&mut c);
    let data = check_consistent(&f, 40000);
    assert_eq!(data[0], body);
    assert_eq!(data[1], body);
}

#[test]
fn ipv6_checksums_and_consistency() {
    let mut c = Conversation::new(v6(), &ConversationOptions::default()).unwrap();
    let body = vec![0xabu8; 4000];
    c.push(ts(1), Direction::ClientToServer, b"hello").unwrap();
    c.push(ts(2), Direction::ServerToClient, &body).unwrap();
    c.close_normal(ts(3), Direction::ClientToServer);
    let f = drain(&mut c);
    // parse() asserted every checksum; IPv6 leaves 1500-40-20 for payload.
    assert_eq!(f[0].mss, Some(1440));
    assert!(f.iter().all(|x| x.ip_len <= 1500));
    let data = check_consistent(&f, 40000);
    assert_eq!(data[1], body);
}

#[test]
fn mss_segmentation_never_exceeds_mtu_and_every_segment_is_acked() {
    let opts = ConversationOptions {
        mtu: 576,
        mss: 1460,
        vlan: Some(VlanTag { id: 7, pcp: 0 }),
        ..Default::default()
    };
    let mut c = Conversation::new(v4(), &opts).unwrap();
    assert_eq!(c.segment_size(), 576 - 20 - 20);
    let body: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    c.push(ts(1), Direction::ServerToClient, &body).unwrap();
    let max = c.max_frame_len();
    let f = drain(&mut c);
    let data_segs: Vec<_> = f.iter().filter(|x| !x.payload.is_empty()).collect();
    assert_eq!(data_segs.len(), body.len().div_ceil(c.segment_size()));
    for x in &f {
        assert!(x.ip_len <= 576, "IP packet {} over MTU", x.ip_len);
        assert!(x.len <= max);
        assert!(x.len <= 14 + 4 + 576);
    }
    // After the handshake: data, ACK, data, ACK, ...
    for pair in f[3..].chunks(2) {
        assert!(!pair[0].payload.is_empty());
        assert_eq!(pair[1].flags, A);
        assert!(pair[1].payload.is_empty());
        assert_eq!(
            pair[1].ack,
            pair[0].seq.wrapping_add(pair[0].payload.len() as u32)
        );
    }
    assert_eq!(
        data_segs.last().unwrap().flags,
        AP,
        "PSH marks the end of the write"
    );
    assert!(data_segs[..data_segs.len() - 1].iter().all(|x| x.flags == A));
    check_consistent(&f, 40000);
}

#[test]
fn vlan_tag_port_remap_and_marker_mac() {
    let marker = [0x02, 0xde, 0xc0, 0xde, 0, 1];
    let opts = ConversationOptions {
        vlan: Some(VlanTag { id: 100, pcp: 5 }),
        port_remap: vec![
            PortRemap { from: 8443, to: 8080 },
            PortRemap { from: 443, to: 80 },
        ],
        marker_src_mac: Some(marker),
        ..Default::default()
    };
    let mut c = Conversation::new(v4(), &opts).unwrap();
    assert_eq!(c.server_port(), 80);
    c.push(ts(1), Direction::ClientToServer, b"x").unwrap();
    let f = drain(&mut c);
    for x in &f {
        assert_eq!(x.vlan, Some((100, 5)));
        assert!(x.sport == 80 || x.dport == 80);
        assert!(x.sport == 40000 || x.dport == 40000);
        assert_eq!(x.src_mac, marker);
    }
}

#[test]
fn abort_sends_one_rst_from_the_given_side() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default()).unwrap();
    c.push(ts(1), Direction::ClientToServer, b"abc").unwrap();
    c.abort(ts(9), Direction::ServerToClient);
    let f = drain(&mut c);
    let last = f.last().unwrap();
    assert_eq!(last.flags, RA);
    assert_eq!(last.sport, 443);
    assert_eq!(last.ts, ts(9));
    assert_eq!(f.iter().filter(|x| x.flags.3).count(), 1);
    check_consistent(&f, 40000);
    // Idempotent: nothing after the close.
    c.abort(ts(10), Direction::ClientToServer);
    c.close_normal(ts(10), Direction::ClientToServer);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn timestamps_are_the_ones_given_with_the_bytes() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default()).unwrap();
    c.open(ts(0));
    c.push(ts(5), Direction::ClientToServer, &[1u8; 3000]).unwrap();
    c.push(ts(8), Direction::ServerToClient, b"ok").unwrap();
    c.close_normal(ts(12), Direction::ClientToServer);
    let f = drain(&mut c);
    let stamps: Vec<u64> = f.iter().map(|x| (x.ts - ts(0)).as_millis() as u64).collect();
    assert_eq!(stamps, vec![0, 0, 0, 5, 5, 5, 5, 5, 5, 8, 8, 12, 12, 12]);
}

#[test]
fn nothing_to_mirror_for_a_session_without_plaintext() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default()).unwrap();
    c.push(ts(1), Direction::ClientToServer, b"").unwrap();
    c.close_normal(ts(2), Direction::ClientToServer);
    assert!(drain(&mut c).is_empty());
}

#[test]
fn bad_configurations_are_refused() {
    let mixed = Endpoints {
        server_ip: v6().server_ip,
        ..v4()
    };
    let d = ConversationOptions::default();
    assert_eq!(
        Conversation::new(mixed, &d).unwrap_err(),
        ConversationError::MixedAddressFamilies
    );
    let tiny = ConversationOptions {
        mtu: 43,
        ..Default::default()
    };
    assert_eq!(
        Conversation::new(v4(), &tiny).unwrap_err(),
        ConversationError::MtuTooSmall(43)
    );
    let vlan = ConversationOptions {
        vlan: Some(VlanTag { id: 4095, pcp: 0 }),
        ..Default::default()
    };
    assert_eq!(
        Conversation::new(v4(), &vlan).unwrap_err(),
        ConversationError::BadVlan(4095)
    );
}

#[test]
fn short_buffer_skips_frames_without_panicking() {
    let mut c = Conversation::new(v4(), &ConversationOptions::default()).unwrap();
    c.push(ts(1), Direction::ClientToServer, &[0u8; 1000]).unwrap();
    let mut small = [0u8; 60];
    let mut n = 0;
    while let Some(f) = c.poll_frame(&mut small) {
        assert!(f.len <= 60);
        n += 1;
    }
    // SYN, SYN-ACK, ACK and the pure ACK fit; the 1000-byte segment does not.
    assert_eq!(n, 4);
    assert_eq!(c.stats().skipped_small_buffer, 1);
}

#[test]
fn half_close_then_the_other_side_finishes() {
    let mut c = Conversation::new(v6(), &ConversationOptions::default()).unwrap();
    c.push(ts(1), Direction::ClientToServer, b"GET / HTTP/1.0\r\n\r\n")
        .unwrap();
    c.half_close(ts(2), Direction::ClientToServer);
    assert_eq!(
        c.push(ts(3), Direction::ClientToServer, b"x"),
        Err(ConversationError::Closed)
    );
    assert!(!c.is_closed());
    c.push(ts(3), Direction::ServerToClient, b"HTTP/1.0 200 OK\r\n\r\nbody")
        .unwrap();
    c.close_normal(ts(4), Direction::ServerToClient);
    assert!(c.is_closed());
    let f = drain(&mut c);
    let flags: Vec<_> = f.iter().map(|f| f.flags).collect();
    assert_eq!(flags, vec![S, SA, A, AP, A, FA, A, AP, A, FA, A]);
    assert_eq!(f[5].sport, 40000, "client FIN first");
    assert_eq!(f[9].sport, 443);
    let data = check_consistent(&f, 40000);
    assert_eq!(data[1], b"HTTP/1.0 200 OK\r\n\r\nbody");
    assert_eq!(c.stats().refused_after_close, 1);
}

#[test]
fn isns_are_deterministic_but_differ_for_a_reused_tuple() {
    let isn_of = |t: Timestamp| {
        let mut c = Conversation::new(v4(), &ConversationOptions::default()).unwrap();
        c.open(t);
        let f = drain(&mut c);
        (f[0].seq, f[1].seq)
    };
    assert_eq!(isn_of(ts(1)), isn_of(ts(1)));
    assert_ne!(isn_of(ts(1)).0, isn_of(ts(2)).0);
    assert_ne!(isn_of(ts(1)).1, isn_of(ts(2)).1);
}
