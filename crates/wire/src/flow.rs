//! The normalised 5-tuple of a TCP flow.

use std::net::IpAddr;

/// Which way a frame travels within its flow: `LoToHi` when its source is the flow key's
/// `lo` endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    LoToHi = 0,
    HiToLo = 1,
}

/// Both directions of a connection map to one key: the endpoint (address, port) that
/// sorts lower — addresses bytewise, then ports — is `lo`.
///
/// The layout is `struct flow_key` in `xdp-prog/glasswire.bpf.c` (40 bytes, no implicit
/// padding): userspace writes verdicts under exactly the key the kernel looks up.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    /// IPv4 uses the first four bytes; the rest stays zero.
    pub addr_lo: [u8; 16],
    pub addr_hi: [u8; 16],
    /// Host byte order.
    pub port_lo: u16,
    pub port_hi: u16,
    /// 4 or 6.
    pub family: u8,
    /// IP protocol number (6 for TCP).
    pub proto: u8,
    pub pad: [u8; 2],
}

const _: () = assert!(std::mem::size_of::<FlowKey>() == 40);

impl FlowKey {
    pub const TCP: u8 = 6;

    /// The key of the flow a packet from `src:sport` to `dst:dport` belongs to, and the
    /// packet's direction within it. Mixed families never share a flow; the key keeps
    /// the source's family.
    pub fn new(proto: u8, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (Self, Direction) {
        let (family, src_b, dst_b) = match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => (4, widen(&s.octets()), widen(&d.octets())),
            (s, d) => (6, to16(s), to16(d)),
        };
        Self::from_bytes(family, proto, src_b, sport, dst_b, dport)
    }

    fn from_bytes(
        family: u8,
        proto: u8,
        src: [u8; 16],
        sport: u16,
        dst: [u8; 16],
        dport: u16,
    ) -> (Self, Direction) {
        let dir = if (src, sport) <= (dst, dport) {
            Direction::LoToHi
        } else {
            Direction::HiToLo
        };
        let ((addr_lo, port_lo), (addr_hi, port_hi)) = match dir {
            Direction::LoToHi => ((src, sport), (dst, dport)),
            Direction::HiToLo => ((dst, dport), (src, sport)),
        };
        let key = FlowKey {
            addr_lo,
            addr_hi,
            port_lo,
            port_hi,
            family,
            proto,
            pad: [0; 2],
        };
        (key, dir)
    }

    /// The key's bytes as the kernel map stores them.
    pub fn as_bytes(&self) -> [u8; 40] {
        let mut out = [0u8; 40];
        out[..16].copy_from_slice(&self.addr_lo);
        out[16..32].copy_from_slice(&self.addr_hi);
        out[32..34].copy_from_slice(&self.port_lo.to_ne_bytes());
        out[34..36].copy_from_slice(&self.port_hi.to_ne_bytes());
        out[36] = self.family;
        out[37] = self.proto;
        out
    }

    /// The inverse of [`FlowKey::as_bytes`], for keys read back from the kernel map.
    pub fn from_map_bytes(bytes: &[u8; 40]) -> Self {
        let mut key = FlowKey::default();
        key.addr_lo.copy_from_slice(&bytes[..16]);
        key.addr_hi.copy_from_slice(&bytes[16..32]);
        key.port_lo = u16::from_ne_bytes([bytes[32], bytes[33]]);
        key.port_hi = u16::from_ne_bytes([bytes[34], bytes[35]]);
        key.family = bytes[36];
        key.proto = bytes[37];
        key
    }

    pub fn lo(&self) -> (IpAddr, u16) {
        (self.addr(&self.addr_lo), self.port_lo)
    }

    pub fn hi(&self) -> (IpAddr, u16) {
        (self.addr(&self.addr_hi), self.port_hi)
    }

    fn addr(&self, bytes: &[u8; 16]) -> IpAddr {
        if self.family == 4 {
            IpAddr::from([bytes[0], bytes[1], bytes[2], bytes[3]])
        } else {
            IpAddr::from(*bytes)
        }
    }
}

impl std::fmt::Display for FlowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ((a, pa), (b, pb)) = (self.lo(), self.hi());
        let show = |ip: IpAddr| match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        };
        write!(
            f,
            "{}:{} <-> {}:{} proto {}",
            show(a),
            pa,
            show(b),
            pb,
            self.proto
        )
    }
}

fn widen(v4: &[u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(v4);
    out
}

fn to16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_share_one_key() {
        let c: IpAddr = "10.66.0.1".parse().unwrap();
        let s: IpAddr = "10.66.0.2".parse().unwrap();
        let (k1, d1) = FlowKey::new(6, c, 40000, s, 443);
        let (k2, d2) = FlowKey::new(6, s, 443, c, 40000);
        assert_eq!(k1, k2);
        assert_eq!(d1, Direction::LoToHi);
        assert_eq!(d2, Direction::HiToLo);
        assert_eq!(k1.lo(), (c, 40000));
        assert_eq!(k1.hi(), (s, 443));
    }

    #[test]
    fn same_address_orders_by_port() {
        let a: IpAddr = "fd66::1".parse().unwrap();
        let (k, d) = FlowKey::new(6, a, 5000, a, 80);
        assert_eq!(d, Direction::HiToLo);
        assert_eq!((k.port_lo, k.port_hi), (80, 5000));
        assert_eq!(k.family, 6);
    }

    #[test]
    fn key_bytes_match_the_c_layout() {
        let (k, _) = FlowKey::new(
            6,
            "1.2.3.4".parse().unwrap(),
            0x0102,
            "5.6.7.8".parse().unwrap(),
            0x0304,
        );
        let b = k.as_bytes();
        assert_eq!(&b[..4], &[1, 2, 3, 4]);
        assert_eq!(&b[4..16], &[0; 12]);
        assert_eq!(&b[16..20], &[5, 6, 7, 8]);
        assert_eq!(&b[32..34], &0x0102u16.to_ne_bytes());
        assert_eq!(&b[34..36], &0x0304u16.to_ne_bytes());
        assert_eq!((b[36], b[37], b[38], b[39]), (4, 6, 0, 0));
        // The in-memory representation is what the map stores.
        // Safety: FlowKey is repr(C), 40 bytes, no padding (asserted above), all fields u8/u16.
        let raw: [u8; 40] = unsafe { std::mem::transmute(k) };
        assert_eq!(raw, b);
        assert_eq!(FlowKey::from_map_bytes(&b), k);
    }
}
