//! `wire` owns the byte-level view of a frame on glasswire's data path: it reads an
//! Ethernet frame (with up to two VLAN tags) down to its IP and TCP headers, names what
//! it could not parse, and builds the normalised flow key that both directions of a TCP
//! connection share — the same key, byte for byte, that the XDP program in `xdp-prog/`
//! uses for its verdict map. It never allocates and never panics on the bytes it is
//! given. It knows nothing of sockets, rings or TLS.

// Wire data must never panic the data path; tests may.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing))]

mod build;
mod flow;
mod frame;

pub use build::{tcp_reset, BuildError, BuiltFrame, Toward};
pub use flow::{Direction, FlowKey};
pub use frame::{parse_frame, Frame, ParseError, TcpSummary, L3};
