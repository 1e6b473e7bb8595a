//! Reading a real Ethernet frame down to its TCP segment, and writing one back with the
//! Ethernet header (VLAN tags included) of the session.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpPacket, TcpRepr};

const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const MAX_VLAN_TAGS: usize = 2;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const IPV4_HEADER_LEN: usize = 20;
const IPV6_HEADER_LEN: usize = 40;
/// Destination and source MAC, two VLAN tags, EtherType.
pub(crate) const MAX_L2_LEN: usize = ETH_HEADER_LEN + MAX_VLAN_TAGS * VLAN_TAG_LEN;

/// Why a frame was not taken as a TCP segment of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Shorter than an Ethernet header or its VLAN tags.
    Runt,
    /// Not IPv4 or IPv6 (after at most two VLAN tags).
    NotIp,
    /// IP header truncated, inconsistent, or (IPv4) with a bad header checksum.
    BadIp,
    /// An IPv4 fragment: it carries no complete segment.
    Fragment,
    /// IP payload is not TCP (IPv6 extension headers included: not expected on a
    /// connection the flow table accepted).
    NotTcp,
    /// TCP header truncated, zero port, contradictory flags, bad options or bad checksum.
    BadTcp,
}

impl FrameError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Runt => "frame shorter than its Ethernet header",
            Self::NotIp => "not IPv4/IPv6",
            Self::BadIp => "malformed IP header",
            Self::Fragment => "IP fragment",
            Self::NotTcp => "not TCP",
            Self::BadTcp => "malformed TCP segment or bad checksum",
        }
    }
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for FrameError {}

/// A verified TCP segment inside a real frame, borrowing its payload.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment<'a> {
    pub src: IpAddress,
    pub dst: IpAddress,
    pub hop_limit: u8,
    pub tcp: TcpRepr<'a>,
}

fn be16(bytes: &[u8], at: usize) -> Option<u16> {
    let b = bytes.get(at..at + 2)?;
    Some(u16::from_be_bytes([*b.first()?, *b.get(1)?]))
}

/// Length of the Ethernet header (with VLAN tags) and the innermost EtherType.
pub(crate) fn l2_header(frame: &[u8]) -> Result<(usize, u16), FrameError> {
    let mut ethertype = be16(frame, 12).ok_or(FrameError::Runt)?;
    let mut len = ETH_HEADER_LEN;
    let mut tags = 0;
    while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && tags < MAX_VLAN_TAGS {
        ethertype = be16(frame, len + 2).ok_or(FrameError::Runt)?;
        len += VLAN_TAG_LEN;
        tags += 1;
    }
    Ok((len, ethertype))
}

/// Parses and verifies (IPv4 header checksum, TCP checksum) the segment in `frame`.
pub(crate) fn parse_segment(frame: &[u8]) -> Result<Segment<'_>, FrameError> {
    let (l2_len, ethertype) = l2_header(frame)?;
    let l3 = frame.get(l2_len..).ok_or(FrameError::Runt)?;
    let (src, dst, hop_limit, l4): (IpAddress, IpAddress, u8, &[u8]) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = Ipv4Packet::new_checked(l3).map_err(|_| FrameError::BadIp)?;
            if ip.version() != 4 || !ip.verify_checksum() {
                return Err(FrameError::BadIp);
            }
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(FrameError::Fragment);
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Err(FrameError::NotTcp);
            }
            let (src, dst, ttl) = (ip.src_addr(), ip.dst_addr(), ip.hop_limit());
            let payload = l3
                .get(usize::from(ip.header_len())..usize::from(ip.total_len()))
                .ok_or(FrameError::BadIp)?;
            (src.into(), dst.into(), ttl, payload)
        }
        ETHERTYPE_IPV6 => {
            let ip = Ipv6Packet::new_checked(l3).map_err(|_| FrameError::BadIp)?;
            if ip.version() != 6 {
                return Err(FrameError::BadIp);
            }
            if ip.next_header() != IpProtocol::Tcp {
                return Err(FrameError::NotTcp);
            }
            let (src, dst, hops) = (ip.src_addr(), ip.dst_addr(), ip.hop_limit());
            let payload = l3
                .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(ip.payload_len()))
                .ok_or(FrameError::BadIp)?;
            (src.into(), dst.into(), hops, payload)
        }
        _ => return Err(FrameError::NotIp),
    };
    let packet = TcpPacket::new_checked(l4).map_err(|_| FrameError::BadTcp)?;
    let tcp = TcpRepr::parse(&packet, &src, &dst, &ChecksumCapabilities::default())
        .map_err(|_| FrameError::BadTcp)?;
    Ok(Segment {
        src,
        dst,
        hop_limit,
        tcp,
    })
}

/// Reads the IP packet a smoltcp half emitted. Its checksums are not filled in (the
/// device says so), so none are verified.
pub(crate) fn parse_ip_packet(packet: &[u8]) -> Option<(IpAddress, IpAddress, TcpRepr<'_>)> {
    let (src, dst, l4): (IpAddress, IpAddress, &[u8]) = match packet.first()? >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            let payload = packet.get(usize::from(ip.header_len())..usize::from(ip.total_len()))?;
            (ip.src_addr().into(), ip.dst_addr().into(), payload)
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let payload = packet.get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(ip.payload_len()))?;
            (ip.src_addr().into(), ip.dst_addr().into(), payload)
        }
        _ => return None,
    };
    let tcp_packet = TcpPacket::new_checked(l4).ok()?;
    let tcp = TcpRepr::parse(&tcp_packet, &src, &dst, &ChecksumCapabilities::ignored()).ok()?;
    Some((src, dst, tcp))
}

pub(crate) fn ip_header_len(addr: &IpAddress) -> usize {
    match addr {
        IpAddress::Ipv4(_) => IPV4_HEADER_LEN,
        IpAddress::Ipv6(_) => IPV6_HEADER_LEN,
    }
}

/// Length of the IP packet [`emit_ip_packet`] writes for `tcp`.
pub(crate) fn ip_packet_len(src: &IpAddress, tcp: &TcpRepr<'_>) -> usize {
    ip_header_len(src) + tcp.buffer_len()
}

/// Writes an IP packet carrying `tcp` into `out`, which must be exactly
/// [`ip_packet_len`] long. Checksums are filled in when `checksum` says so.
pub(crate) fn emit_ip_packet(
    out: &mut [u8],
    src: IpAddress,
    dst: IpAddress,
    hop_limit: u8,
    tcp: &TcpRepr<'_>,
    checksum: &ChecksumCapabilities,
) -> Option<()> {
    let header_len = ip_header_len(&src);
    let (ip_bytes, tcp_bytes) = out.split_at_mut_checked(header_len)?;
    if tcp_bytes.len() != tcp.buffer_len() {
        return None;
    }
    match (src, dst) {
        (IpAddress::Ipv4(src_addr), IpAddress::Ipv4(dst_addr)) => {
            let repr = Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit,
            };
            repr.emit(&mut Ipv4Packet::new_unchecked(ip_bytes), checksum);
        }
        (IpAddress::Ipv6(src_addr), IpAddress::Ipv6(dst_addr)) => {
            let repr = Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.buffer_len(),
                hop_limit,
            };
            repr.emit(&mut Ipv6Packet::new_unchecked(ip_bytes));
        }
        _ => return None,
    }
    tcp.emit(&mut TcpPacket::new_unchecked(tcp_bytes), &src, &dst, checksum);
    Some(())
}

/// The Ethernet header (with VLAN tags) frames toward one real peer start with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct L2Header {
    bytes: [u8; MAX_L2_LEN],
    len: usize,
}

impl L2Header {
    /// Copies the header of `frame` (sent by the peer at the other end), swapping the
    /// MACs when `reverse` (the header then leads back to the frame's sender).
    pub(crate) fn from_frame(frame: &[u8], reverse: bool) -> Option<Self> {
        let (len, _) = l2_header(frame).ok()?;
        let mut bytes = [0; MAX_L2_LEN];
        bytes.get_mut(..len)?.copy_from_slice(frame.get(..len)?);
        if reverse {
            let (dst, rest) = bytes.split_at_mut(6);
            dst.swap_with_slice(rest.get_mut(..6)?);
        }
        Some(Self { bytes, len })
    }

    /// An untagged header, for a session that has no frame to copy one from.
    pub(crate) fn untagged(dst: [u8; 6], src: [u8; 6], ip: IpAddr) -> Self {
        let mut bytes = [0; MAX_L2_LEN];
        let ethertype = match ip {
            IpAddr::V4(_) => ETHERTYPE_IPV4,
            IpAddr::V6(_) => ETHERTYPE_IPV6,
        };
        for (slot, byte) in bytes
            .iter_mut()
            .zip(dst.iter().chain(src.iter()).chain(ethertype.to_be_bytes().iter()))
        {
            *slot = *byte;
        }
        Self {
            bytes,
            len: ETH_HEADER_LEN,
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}
