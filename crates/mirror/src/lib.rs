//! `mirror` shows passive tools (an IDS, a recorder, `tshark`) what glasswire decrypted.
//!
//! * [`conversation`] (sans-IO) re-frames one intercepted session's plaintext into an
//!   ordinary synthetic TCP conversation: real MACs, addresses and ports (optional port
//!   remap and VLAN marker), a three-way handshake, MSS-sized segments each acked by the
//!   other side, correct checksums, FIN or RST as the real session ended, and the decrypt
//!   time on every frame. It never reads a clock and never does I/O.
//! * [`sink`] holds the thin I/O shells frames go to: pcap/pcapng files with rotation, a
//!   TAP device, an AF_PACKET socket on an interface, and PCAP-over-IP readers.
//! * [`fanout`] is the mirror thread that owns the sinks, fed by workers through a bounded
//!   channel that never blocks them.
//!
//! It knows nothing of TLS, flows or policy: it is handed plaintext, endpoints and times.

// Frames are built from and parsed into wire data: never panic the data path; tests may.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing))]

pub mod conversation;
pub mod fanout;
pub mod sink;

pub use conversation::{
    Conversation, ConversationError, ConversationOptions, ConversationStats, Direction, Endpoints,
    MirrorFrame, PortRemap, Timestamp, VlanTag,
};
pub use fanout::{Fanout, FanoutOptions, FanoutSender, FanoutSnapshot, SinkSnapshot};
pub use sink::{
    PacketSocketSink, PcapFileOptions, PcapFileSink, PcapFormat, PcapOverIpOptions, PcapOverIpSink, Sink,
    SinkCounters, SinkError, TapSink,
};
