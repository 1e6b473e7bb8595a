//! `splice` takes over a live TCP connection at its first client payload (the TLS
//! ClientHello), so that the bridge can terminate TLS toward the client and re-originate
//! it toward the server while both real peers keep talking to each other's addresses.
//!
//! Two smoltcp sockets, each in its own tiny in-memory interface, stand in for the two
//! ends: one plays the server toward the client, one plays the client toward the server.
//! Their handshakes are synthesized from what the flow table recorded of the real one
//! ([`HandshakeRecord`]); afterwards every segment is rewritten between smoltcp's and the
//! real connection's sequence numbers, windows and timestamps ([`Splice`]).
//!
//! Sans-IO: frames and time go in, frames come out. It knows nothing of AF_XDP, rustls,
//! flow tables or clocks.

// Wire data must never panic the data path; tests may.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing))]

mod device;
mod frame;
mod record;
mod splice;

pub use frame::FrameError;
pub use record::{
    parse_syn, Endpoint, HandshakeError, HandshakeRecord, PeerHandshake, SynOptions, SynSegment,
};
pub use splice::{Config, Counters, HalfStatus, Ignored, Side, Splice, SpliceError, Transmit};

#[cfg(test)]
mod tests;
