//! TLS detection from a client's first bytes, and ClientHello parsing.
//!
//! glasswire decides a flow's fate at its first client payload: is it TLS, and if so
//! what does the ClientHello offer (SNI, ALPN, versions, cipher suites, ECH, a JA4
//! fingerprint)? [`ClientHelloAssembler`] answers that from payload segments fed in as
//! they arrive — split anywhere, retransmitted, overlapping or out of order, a hello
//! spread over several TLS records — within a byte, range and time budget, and it never
//! panics on hostile input. SSLv2-format and SSL 3.0 hellos are recognised and reported
//! as such ([`VersionFamily`]) so policy can block them.
//!
//! This crate is sans-IO: it knows nothing of packet I/O, sockets, flow tables or clocks.
//! The caller passes stream offsets and the current time; it reads back a [`Progress`].

#![warn(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]

mod assembler;
mod client_hello;
pub mod codec;
mod ja4;
pub mod policy;
mod server_hello;

#[cfg(any(test, fuzzing))]
pub mod fuzzing;

pub use assembler::{ClientHelloAssembler, Config, GaveUp, NotTls, Progress};
pub use client_hello::{
    ext, is_grease, parse_sslv2, parse_tls, ClientHelloInfo, ProtocolVersion, VersionFamily, X25519MLKEM768,
};
pub use codec::DecodeError;
pub use policy::{Action, Decision, FlowFacts, Policy, PolicyError, PolicySpec, RuleRef, RuleSpec};
pub use server_hello::{cipher_suite_name, parse_server_hello, ServerHelloInfo};
