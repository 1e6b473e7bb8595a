//! `dataplane` is the per-queue worker: it drains both ports' AF_XDP RX rings, asks the
//! [`Forwarder`] what to do with each frame, moves forwarded frames to the other port's
//! TX ring without copying them (both sockets share one UMEM), recycles completed frames
//! into the fill rings, and sleeps in `poll(2)` when there is nothing to do. It is the
//! only code that touches rings; the forwarding decision itself is sans-IO and tested
//! without root. It knows nothing of config files or the CLI.

// Wire data must never panic the data path; tests may.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing))]

mod forward;
mod hash;
mod intercept;
mod port;
mod session;
mod stats;
mod sweeper;
mod takeovers;
mod worker;

pub use forward::{Action, FlowConfig, Forwarder, HandshakeFrames, Output, SESSION_SEQ_MASK};
pub use intercept::{InterceptContext, InterceptSession};
pub use port::Port;
pub use session::{
    EventSink, KernelSession, SessionEvent, SessionEventKind, SessionId, SessionInfo, SessionOutputs, Volume,
};
pub use stats::{FlowCounters, InterceptCounters, PortStats, WorkerCounters, WorkerStats};
pub use sweeper::{
    expired, follow, plan_sweep, spawn_sweeper, sweep, Eviction, SessionBook, SessionEventsSink, SweepConfig,
    SweepStats, SweeperSessions,
};
pub use worker::{spawn_worker, SharedPolicy, WorkerConfig, WorkerHandle};
