//! Reading an Ethernet frame down to its TCP header.
//!
//! Ethernet and VLAN tags are read here (they are two fields); IP and TCP headers are
//! checked by etherparse's slices, which validate every length before exposing a field.
//! A frame is one of: not IP (forwarded as is), IP (with a flow key when it is an
//! unfragmented TCP segment), or a [`ParseError`] naming what was wrong.

use crate::flow::{Direction, FlowKey};
use etherparse::{IpSlice, TcpSlice};

const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
const MAX_VLAN_TAGS: u8 = 2;

/// Why a frame could not be read. The data path counts each reason separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("runt frame: shorter than an Ethernet header")]
    Runt,
    #[error("VLAN tag cut short")]
    TruncatedVlan,
    #[error("IP header or packet cut short (or its length field points past the frame)")]
    TruncatedIp,
    #[error("invalid IP header (version or header length)")]
    BadIpHeader,
    #[error("invalid IPv6 extension header")]
    BadIpExtension,
    #[error("TCP header cut short")]
    TruncatedTcp,
    #[error("invalid TCP header (data offset)")]
    BadTcpHeader,
}

impl ParseError {
    pub const ALL: [ParseError; 7] = [
        ParseError::Runt,
        ParseError::TruncatedVlan,
        ParseError::TruncatedIp,
        ParseError::BadIpHeader,
        ParseError::BadIpExtension,
        ParseError::TruncatedTcp,
        ParseError::BadTcpHeader,
    ];

    /// A short stable name, used as the counter name on the stats socket.
    pub fn reason(self) -> &'static str {
        match self {
            ParseError::Runt => "runt",
            ParseError::TruncatedVlan => "truncated_vlan",
            ParseError::TruncatedIp => "truncated_ip",
            ParseError::BadIpHeader => "bad_ip_header",
            ParseError::BadIpExtension => "bad_ip_extension",
            ParseError::TruncatedTcp => "truncated_tcp",
            ParseError::BadTcpHeader => "bad_tcp_header",
        }
    }

    /// Index into a per-reason counter array.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The parts of a TCP segment the data path looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpSummary<'a> {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    pub seq: u32,
    pub ack_number: u32,
    pub payload: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L3<'a> {
    /// ARP, LLDP, or anything else that is not IPv4/IPv6 (including an unknown payload
    /// behind VLAN tags).
    NonIp,
    Ip {
        /// IP protocol number of the payload (after IPv6 extension headers).
        proto: u8,
        /// A fragment carries no complete transport header; it has no flow key.
        fragment: bool,
        /// Present for unfragmented TCP.
        flow: Option<(FlowKey, Direction)>,
        tcp: Option<TcpSummary<'a>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub vlan_tags: u8,
    /// The innermost EtherType.
    pub ethertype: u16,
    pub l3: L3<'a>,
}

/// Reads `frame` (starting at the Ethernet destination MAC).
pub fn parse_frame(frame: &[u8]) -> Result<Frame<'_>, ParseError> {
    let mut ethertype = be16(frame, 12).ok_or(ParseError::Runt)?;
    let mut offset = ETH_HEADER_LEN;
    let mut vlan_tags = 0;
    while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && vlan_tags < MAX_VLAN_TAGS {
        ethertype = be16(frame, offset + 2).ok_or(ParseError::TruncatedVlan)?;
        offset += 4;
        vlan_tags += 1;
    }
    let l3_bytes = frame.get(offset..).unwrap_or_default();
    let l3 = match ethertype {
        ETHERTYPE_IPV4 | ETHERTYPE_IPV6 => parse_ip(l3_bytes, ethertype)?,
        _ => L3::NonIp,
    };
    Ok(Frame {
        vlan_tags,
        ethertype,
        l3,
    })
}

fn parse_ip(bytes: &[u8], ethertype: u16) -> Result<L3<'_>, ParseError> {
    // The EtherType and the version nibble must agree; etherparse would otherwise accept
    // an IPv6 packet behind an IPv4 EtherType.
    let expected_version = if ethertype == ETHERTYPE_IPV4 { 4 } else { 6 };
    match bytes.first() {
        None => return Err(ParseError::TruncatedIp),
        Some(b) if b >> 4 != expected_version => return Err(ParseError::BadIpHeader),
        Some(_) => {}
    }
    let ip = IpSlice::from_slice(bytes).map_err(|e| match e {
        etherparse::err::ip::SliceError::Len(len) => match len.layer {
            etherparse::err::Layer::Ipv6ExtHeader
            | etherparse::err::Layer::Ipv6HopByHopHeader
            | etherparse::err::Layer::Ipv6DestOptionsHeader
            | etherparse::err::Layer::Ipv6RouteHeader
            | etherparse::err::Layer::Ipv6FragHeader
            | etherparse::err::Layer::IpAuthHeader => ParseError::BadIpExtension,
            _ => ParseError::TruncatedIp,
        },
        etherparse::err::ip::SliceError::IpHeaders(h) => match h {
            etherparse::err::ip::HeadersError::Ip(_) => ParseError::BadIpHeader,
            _ => ParseError::BadIpExtension,
        },
    })?;
    let payload = ip.payload();
    let proto = payload.ip_number.0;
    let fragment = payload.fragmented;
    if proto != FlowKey::TCP || fragment {
        return Ok(L3::Ip {
            proto,
            fragment,
            flow: None,
            tcp: None,
        });
    }
    let tcp = TcpSlice::from_slice(payload.payload).map_err(|e| match e {
        etherparse::err::tcp::HeaderSliceError::Len(_) => ParseError::TruncatedTcp,
        etherparse::err::tcp::HeaderSliceError::Content(_) => ParseError::BadTcpHeader,
    })?;
    let flow = FlowKey::new(
        proto,
        ip.source_addr(),
        tcp.source_port(),
        ip.destination_addr(),
        tcp.destination_port(),
    );
    Ok(L3::Ip {
        proto,
        fragment,
        flow: Some(flow),
        tcp: Some(TcpSummary {
            syn: tcp.syn(),
            ack: tcp.ack(),
            fin: tcp.fin(),
            rst: tcp.rst(),
            seq: tcp.sequence_number(),
            ack_number: tcp.acknowledgment_number(),
            payload: tcp.payload(),
        }),
    })
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const MAC_C: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_S: [u8; 6] = [2, 0, 0, 0, 0, 2];

    fn tcp4(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(MAC_C, MAC_S)
            .ipv4([10, 66, 0, 1], [10, 66, 0, 2], 64)
            .tcp(40000, 443, 1000, 65535)
            .ack(77);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn tcp6(payload: &[u8]) -> Vec<u8> {
        let mut s = [0u8; 16];
        s[0] = 0xfd;
        s[15] = 2;
        let mut c = s;
        c[15] = 1;
        let b = PacketBuilder::ethernet2(MAC_S, MAC_C)
            .ipv6(s, c, 64)
            .tcp(443, 40000, 5, 100)
            .syn();
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ipv4_tcp_yields_key_and_payload() {
        let f = tcp4(b"hello");
        let frame = parse_frame(&f).unwrap();
        let L3::Ip {
            proto,
            flow,
            tcp,
            fragment,
        } = frame.l3
        else {
            panic!("not IP")
        };
        assert_eq!((proto, fragment), (6, false));
        let (key, dir) = flow.unwrap();
        assert_eq!(dir, Direction::LoToHi);
        assert_eq!(key.port_hi, 443);
        let tcp = tcp.unwrap();
        assert_eq!(tcp.payload, b"hello");
        assert_eq!(
            (tcp.seq, tcp.ack_number, tcp.ack, tcp.syn),
            (1000, 77, true, false)
        );
    }

    #[test]
    fn ipv6_tcp_from_server_is_hi_to_lo() {
        let f = tcp6(b"");
        let frame = parse_frame(&f).unwrap();
        let L3::Ip { flow, tcp, .. } = frame.l3 else {
            panic!("not IP")
        };
        let (key, dir) = flow.unwrap();
        assert_eq!((key.family, dir), (6, Direction::HiToLo));
        assert!(tcp.unwrap().syn);
    }

    #[test]
    fn vlan_tagged_tcp_is_seen_through() {
        let plain = tcp4(b"x");
        let mut tagged = plain[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x2a]);
        tagged.extend_from_slice(&plain[12..]);
        let frame = parse_frame(&tagged).unwrap();
        assert_eq!(frame.vlan_tags, 1);
        assert!(matches!(frame.l3, L3::Ip { flow: Some(_), .. }));
    }

    #[test]
    fn arp_and_unknown_vlan_payload_are_not_ip() {
        let mut arp = vec![0xff; 12];
        arp.extend_from_slice(&[0x08, 0x06]);
        arp.extend_from_slice(&[0; 28]);
        assert_eq!(parse_frame(&arp).unwrap().l3, L3::NonIp);
        let mut vlan_lldp = vec![0x01; 12];
        vlan_lldp.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x88, 0xcc, 1, 2, 3]);
        assert_eq!(parse_frame(&vlan_lldp).unwrap().l3, L3::NonIp);
    }

    #[test]
    fn udp_is_ip_without_flow() {
        let b = PacketBuilder::ethernet2(MAC_C, MAC_S)
            .ipv4([10, 66, 0, 1], [10, 66, 0, 2], 64)
            .udp(5353, 53);
        let mut f = Vec::new();
        b.write(&mut f, b"q").unwrap();
        assert!(matches!(
            parse_frame(&f).unwrap().l3,
            L3::Ip {
                proto: 17,
                flow: None,
                ..
            }
        ));
    }

    #[test]
    fn malformed_frames_name_their_fault() {
        assert_eq!(parse_frame(&[0u8; 10]), Err(ParseError::Runt));
        let good = tcp4(b"payload");
        // VLAN tag cut in half.
        let mut v = good[..12].to_vec();
        v.extend_from_slice(&[0x81, 0x00, 0x00]);
        assert_eq!(parse_frame(&v), Err(ParseError::TruncatedVlan));
        // IPv4 header cut short.
        assert_eq!(parse_frame(&good[..14 + 12]), Err(ParseError::TruncatedIp));
        // IHL below 5.
        let mut bad_ihl = good.clone();
        bad_ihl[14] = 0x43;
        assert_eq!(parse_frame(&bad_ihl), Err(ParseError::BadIpHeader));
        // Total length pointing past the end of the frame.
        let mut long = good.clone();
        long[16] = 0x05;
        long[17] = 0xdc;
        assert_eq!(parse_frame(&long), Err(ParseError::TruncatedIp));
        // Version nibble disagrees with the EtherType.
        let mut v6_in_v4 = good.clone();
        v6_in_v4[14] = 0x65;
        assert_eq!(parse_frame(&v6_in_v4), Err(ParseError::BadIpHeader));
        // TCP header cut short: keep IP consistent by fixing total length.
        let mut short_tcp = good[..14 + 20 + 10].to_vec();
        short_tcp[16] = 0;
        short_tcp[17] = 30;
        assert_eq!(parse_frame(&short_tcp), Err(ParseError::TruncatedTcp));
        // TCP data offset below 5.
        let mut bad_doff = good.clone();
        bad_doff[14 + 20 + 12] = 0x20;
        assert_eq!(parse_frame(&bad_doff), Err(ParseError::BadTcpHeader));
        // IPv6 header cut short.
        let six = tcp6(b"");
        assert_eq!(parse_frame(&six[..14 + 30]), Err(ParseError::TruncatedIp));
    }

    #[test]
    fn every_prefix_of_a_valid_frame_parses_or_errors_without_panicking() {
        for f in [tcp4(b"some payload bytes"), tcp6(b"abc")] {
            for n in 0..=f.len() {
                let _ = parse_frame(&f[..n]);
            }
        }
    }

    #[test]
    fn fuzz_seed_corpus_parses_without_panicking() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus/frame");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let _ = parse_frame(&bytes);
            n += 1;
        }
        assert!(n >= 5, "seed corpus missing: {n} files");
    }

    #[test]
    fn reasons_are_unique_and_indexed() {
        for (i, r) in ParseError::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = ParseError::ALL.iter().map(|r| r.reason()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ParseError::ALL.len());
    }
}
