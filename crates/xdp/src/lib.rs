//! `xdp` owns glasswire's kernel objects: it loads the XDP program built from
//! `xdp-prog/` (embedded in the binary), attaches it to the two bridge ports, fills its
//! maps (ports, peer devmap, per-queue XSK maps, flow verdicts, counters, settings) and
//! opens the AF_XDP sockets — one pair per queue, both on one UMEM so a frame received on
//! one port is transmitted on the other without a copy. It knows nothing of flows beyond
//! writing a verdict under a key it is given.
//!
//! The program is held by a `bpf_link`, so it is detached when the process exits for any
//! reason (SIGKILL included); no map is pinned, so a crash leaves nothing behind that a
//! restart would trip over.

mod maps;
mod program;
mod socket;

pub use maps::{monotonic_ns, FlowState, Verdict, VerdictMap, XdpCounter};
pub use program::{AttachMode, BridgeProgram, LoadOptions, PASS_PROGRAM};
pub use socket::{QueueSockets, XskOptions, XskPort};
pub use xsk_rs::{FrameDesc, TxQueue, Umem};
