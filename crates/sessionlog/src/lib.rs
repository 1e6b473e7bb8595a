//! `sessionlog` takes the session records glasswire's data path produces and delivers them
//! to an operator's sinks: JSON Lines files on local disk (rotated by size and age) and a
//! remote log server over syslog-over-TLS (RFC 5424 messages, RFC 5425 octet-counted
//! framing) through a bounded on-disk spool that outlives outages and restarts.
//!
//! The data path hands a [`SessionRecord`] to [`LogSender::send`], which never blocks: the
//! record goes over a bounded channel to the logger thread, or is counted as dropped.
//! Everything from there on (serialisation, files, spool, the TLS connection, reconnects)
//! runs on the logger's own threads, and every loss is counted in [`LogStats`] and logged.
//!
//! It knows nothing of packets, flows or policy: it does not decide when a session starts
//! or what its verdict is, it only writes down what it is told. The operator guide,
//! with the record schema and the delivery guarantees, is `docs/sessionlog.md`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod config;
mod delivery;
mod jsonl;
mod logger;
mod record;
mod rfc5424;
mod sender;
mod spool;
mod stats;
mod time;
mod tls;

pub use config::{JsonlConfig, LogConfig, SyslogConfig};
pub use logger::{LogSender, Logger};
pub use record::{EventKind, Port, SessionId, SessionRecord, TlsSummary, Volume};
pub use stats::LogStats;
pub use time::format_rfc3339_millis;
