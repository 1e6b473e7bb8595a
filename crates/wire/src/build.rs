//! Frames the data path makes itself (TCP resets), written into a fixed buffer.

use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

/// Ethernet with two VLAN tags (22) + IPv6 (40) + TCP without options (20), rounded up.
const BUILT_FRAME_CAPACITY: usize = 96;
const ETH_HEADER_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;

/// A frame built on the data path. Fixed size, so building one never allocates.
#[derive(Clone, Copy)]
pub struct BuiltFrame {
    buf: [u8; BUILT_FRAME_CAPACITY],
    len: usize,
}

impl BuiltFrame {
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl PartialEq for BuiltFrame {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for BuiltFrame {}

impl std::fmt::Debug for BuiltFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BuiltFrame({} bytes)", self.len)
    }
}

/// Which end of an observed segment a reset goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// Back to the segment's sender, from its receiver's addresses (MACs, IPs and ports
    /// swapped).
    Sender,
    /// On to the segment's receiver, from its sender's addresses.
    Receiver,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("the observed frame is not an unfragmented TCP segment over IPv4/IPv6")]
    NotTcp,
}

/// A TCP RST (with ACK when `ack` is given) for the connection of `observed`, keeping
/// its VLAN tags, with sequence number `seq`. No payload, no options, window 0.
pub fn tcp_reset(
    observed: &[u8],
    toward: Toward,
    seq: u32,
    ack: Option<u32>,
) -> Result<BuiltFrame, BuildError> {
    let sliced = SlicedPacket::from_ethernet(observed).map_err(|_| BuildError::NotTcp)?;
    let tcp = match &sliced.transport {
        Some(TransportSlice::Tcp(tcp)) => tcp,
        _ => return Err(BuildError::NotTcp),
    };
    let (mut sport, mut dport) = (tcp.source_port(), tcp.destination_port());
    if toward == Toward::Sender {
        std::mem::swap(&mut sport, &mut dport);
    }
    let l2_len = ETH_HEADER_LEN + VLAN_TAG_LEN * sliced.vlan().as_ref().map_or(0, vlan_count);
    let l2 = observed.get(..l2_len).ok_or(BuildError::NotTcp)?;

    let mut out = BuiltFrame {
        buf: [0; BUILT_FRAME_CAPACITY],
        len: 0,
    };
    let (head, rest) = out.buf.split_at_mut(l2_len.min(BUILT_FRAME_CAPACITY));
    head.copy_from_slice(l2.get(..head.len()).ok_or(BuildError::NotTcp)?);
    if toward == Toward::Sender {
        // Destination MAC <-> source MAC.
        let (dst, src) = head.split_at_mut(6);
        if let Some(src) = src.get_mut(..6) {
            dst.swap_with_slice(src);
        }
    }

    let builder = match &sliced.net {
        Some(NetSlice::Ipv4(ip)) if !ip.is_payload_fragmented() => {
            let h = ip.header();
            let (mut src, mut dst) = (h.source(), h.destination());
            if toward == Toward::Sender {
                std::mem::swap(&mut src, &mut dst);
            }
            PacketBuilder::ipv4(src, dst, 64)
        }
        Some(NetSlice::Ipv6(ip)) if !ip.is_payload_fragmented() => {
            let h = ip.header();
            let (mut src, mut dst) = (h.source(), h.destination());
            if toward == Toward::Sender {
                std::mem::swap(&mut src, &mut dst);
            }
            PacketBuilder::ipv6(src, dst, 64)
        }
        _ => return Err(BuildError::NotTcp),
    };
    let mut builder = builder.tcp(sport, dport, seq, 0).rst();
    if let Some(ack) = ack {
        builder = builder.ack(ack);
    }
    let l3_len = builder.size(0);
    let mut cursor = std::io::Cursor::new(rest);
    builder.write(&mut cursor, &[]).map_err(|_| BuildError::NotTcp)?;
    out.len = l2_len + l3_len;
    Ok(out)
}

fn vlan_count(vlan: &etherparse::VlanSlice<'_>) -> usize {
    match vlan {
        etherparse::VlanSlice::SingleVlan(_) => 1,
        etherparse::VlanSlice::DoubleVlan(_) => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_frame, L3};

    fn segment(vlan: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        if vlan {
            eth.double_vlan(
                etherparse::VlanId::try_new(100).unwrap(),
                etherparse::VlanId::try_new(200).unwrap(),
            )
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(40000, 443, 1000, 512)
            .ack(7000)
            .write(&mut out, b"hello")
            .unwrap();
        } else {
            eth.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(40000, 443, 1000, 512)
                .ack(7000)
                .write(&mut out, b"hello")
                .unwrap();
        }
        out
    }

    #[test]
    fn reset_toward_sender_swaps_everything_and_checksums() {
        let seg = segment(false);
        let rst = tcp_reset(&seg, Toward::Sender, 7000, Some(1005)).unwrap();
        let p = SlicedPacket::from_ethernet(rst.as_bytes()).unwrap();
        let eth = match p.link.unwrap() {
            etherparse::LinkSlice::Ethernet2(e) => e,
            _ => panic!(),
        };
        assert_eq!(eth.source(), [2, 0, 0, 0, 0, 2]);
        assert_eq!(eth.destination(), [2, 0, 0, 0, 0, 1]);
        let (ip, tcp) = match (p.net.unwrap(), p.transport.unwrap()) {
            (NetSlice::Ipv4(ip), TransportSlice::Tcp(t)) => (ip, t),
            _ => panic!(),
        };
        assert_eq!(ip.header().source(), [10, 0, 0, 2]);
        assert_eq!(ip.header().destination(), [10, 0, 0, 1]);
        assert_eq!((tcp.source_port(), tcp.destination_port()), (443, 40000));
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.sequence_number(), tcp.acknowledgment_number()), (7000, 1005));
        assert!(tcp.payload().is_empty());
        let expect = tcp
            .to_header()
            .calc_checksum_ipv4(&ip.header().to_header(), &[])
            .unwrap();
        assert_eq!(tcp.checksum(), expect);
        assert!(ip.header().to_header().calc_header_checksum() == ip.header().header_checksum());
    }

    #[test]
    fn reset_toward_receiver_keeps_direction_and_vlan_tags() {
        let seg = segment(true);
        let rst = tcp_reset(&seg, Toward::Receiver, 1000, None).unwrap();
        assert_eq!(rst.as_bytes()[..22], seg[..22]);
        let f = parse_frame(rst.as_bytes()).unwrap();
        assert_eq!(f.vlan_tags, 2);
        match f.l3 {
            L3::Ip { tcp: Some(t), .. } => {
                assert!(t.rst && !t.ack);
                assert_eq!(t.seq, 1000);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ipv6_reset_fits() {
        let mut seg = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut seg, b"x")
            .unwrap();
        let rst = tcp_reset(&seg, Toward::Sender, 9, Some(4)).unwrap();
        assert_eq!(rst.as_bytes().len(), 14 + 40 + 20);
    }

    #[test]
    fn non_tcp_is_refused() {
        let mut seg = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
            .udp(1, 2)
            .write(&mut seg, b"x")
            .unwrap();
        assert_eq!(
            tcp_reset(&seg, Toward::Sender, 0, None).unwrap_err(),
            BuildError::NotTcp
        );
        assert_eq!(
            tcp_reset(&[0u8; 10], Toward::Sender, 0, None).unwrap_err(),
            BuildError::NotTcp
        );
    }
}
