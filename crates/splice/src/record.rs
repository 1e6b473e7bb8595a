//! What the flow table knows of a connection's real handshake when it decides to take
//! the connection over, and the helper that reads it off the SYN and SYN-ACK frames.

use std::net::IpAddr;

use smoltcp::wire::TcpControl;

use crate::frame::{parse_segment, FrameError};

/// One end of the real connection as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// Source MAC of this end's frames on the bridge's segment (for a routed end, its
    /// router's).
    pub mac: [u8; 6],
    pub ip: IpAddr,
    pub port: u16,
}

/// The options one end put in its SYN (or SYN-ACK), plus its window there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SynOptions {
    /// The (unscaled, RFC 7323 §2.2) window field of the SYN.
    pub window: u16,
    pub mss: Option<u16>,
    pub window_scale: Option<u8>,
    pub sack_permitted: bool,
    /// TSval of the SYN; `Some` means the end offered timestamps.
    pub tsval: Option<u32>,
}

/// One end's side of the real handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHandshake {
    pub endpoint: Endpoint,
    /// Sequence number of its SYN.
    pub isn: u32,
    pub syn: SynOptions,
    /// Latest TSval this end sent that the other end has seen (the data path updates
    /// it as segments pass; the SYN's TSval otherwise). Timestamps the bridge sends in
    /// this end's name continue from it, so the other end's PAWS check (RFC 7323 §5)
    /// never sees time go backwards.
    pub last_tsval: Option<u32>,
    /// TTL / hop limit of its frames, reused on the frames sent in its name.
    pub hop_limit: u8,
}

impl PeerHandshake {
    /// Uses the SYN's own TSval as [`Self::last_tsval`].
    pub fn from_syn(syn: &SynSegment) -> Self {
        Self {
            endpoint: syn.src,
            isn: syn.seq,
            syn: syn.options,
            last_tsval: syn.options.tsval,
            hop_limit: syn.hop_limit,
        }
    }
}

/// The real handshake, as the flow table recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeRecord {
    pub client: PeerHandshake,
    pub server: PeerHandshake,
}

/// Why two frames do not make a handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    Frame(FrameError),
    /// The first frame is not a SYN or the second not a SYN-ACK.
    NotSyn,
    /// The SYN-ACK does not answer the SYN (addresses, ports or acknowledgment number).
    Mismatch,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Frame(error) => error.fmt(f),
            Self::NotSyn => f.write_str("not a SYN / SYN-ACK pair"),
            Self::Mismatch => f.write_str("the SYN-ACK does not answer the SYN"),
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<FrameError> for HandshakeError {
    fn from(error: FrameError) -> Self {
        Self::Frame(error)
    }
}

impl HandshakeRecord {
    /// Builds the record from the client's SYN and the server's SYN-ACK frames.
    pub fn from_frames(syn: &[u8], syn_ack: &[u8]) -> Result<Self, HandshakeError> {
        let syn = parse_syn(syn)?;
        let syn_ack = parse_syn(syn_ack)?;
        if syn.ack.is_some() || syn_ack.ack.is_none() {
            return Err(HandshakeError::NotSyn);
        }
        // MACs are not compared: a routed path may show other ones each way.
        if syn.src.ip != syn_ack.dst.ip
            || syn.src.port != syn_ack.dst.port
            || syn.dst.ip != syn_ack.src.ip
            || syn.dst.port != syn_ack.src.port
            || syn_ack.ack != Some(syn.seq.wrapping_add(1))
        {
            return Err(HandshakeError::Mismatch);
        }
        Ok(Self {
            client: PeerHandshake::from_syn(&syn),
            server: PeerHandshake::from_syn(&syn_ack),
        })
    }
}

/// What a SYN or SYN-ACK frame says about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SynSegment {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub seq: u32,
    /// Present on a SYN-ACK.
    pub ack: Option<u32>,
    pub options: SynOptions,
    pub hop_limit: u8,
}

/// Reads a SYN or SYN-ACK frame (Ethernet, up to two VLAN tags, IPv4 or IPv6); the
/// checksums are verified.
pub fn parse_syn(frame: &[u8]) -> Result<SynSegment, HandshakeError> {
    let segment = parse_segment(frame)?;
    if segment.tcp.control != TcpControl::Syn {
        return Err(HandshakeError::NotSyn);
    }
    let mac = |at: usize| -> Result<[u8; 6], HandshakeError> {
        frame
            .get(at..at + 6)
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(HandshakeError::Frame(FrameError::Runt))
    };
    let tcp = &segment.tcp;
    Ok(SynSegment {
        src: Endpoint {
            mac: mac(6)?,
            ip: segment.src.into(),
            port: tcp.src_port,
        },
        dst: Endpoint {
            mac: mac(0)?,
            ip: segment.dst.into(),
            port: tcp.dst_port,
        },
        seq: tcp.seq_number.0 as u32,
        ack: tcp.ack_number.map(|ack| ack.0 as u32),
        options: SynOptions {
            window: tcp.window_len,
            mss: tcp.max_seg_size,
            window_scale: tcp.window_scale,
            sack_permitted: tcp.sack_permitted,
            tsval: tcp.timestamp.map(|ts| ts.tsval),
        },
        hop_limit: segment.hop_limit,
    })
}
