//! The two TLS halves of an interception, sans-IO.
//!
//! * [`ca`]: the inspection CA (creation on disk, loading with permission checks).
//! * [`forge`]: leaf certificates minted from the upstream server's names, cached per
//!   upstream certificate.
//! * [`upstream`]: the rustls client configuration that verifies the real server as a
//!   browser would, recording the verdict and the presented leaf per session.
//! * [`pair`]: [`pair::Interception`], one per intercepted session: TLS bytes in from both
//!   ends, TLS bytes out to both ends, plaintext out for the mirror, events out.
//! * [`bypass`]: (client, server, SNI) triples that must not be intercepted for a while.
//!
//! This crate knows nothing about packets, TCP, sockets or the clock: bytes and time come
//! in as arguments. rustls 0.23 is used only here, so its next major (which changes the
//! buffer API) touches one crate. aws-lc-rs is the one crypto provider; see [`provider`].

// This crate parses what peers send: no panicking shortcuts outside tests.
#![deny(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing))]

pub mod bypass;
pub mod ca;
mod error;
pub mod forge;
pub mod pair;
pub mod upstream;

pub use error::Error;

use std::sync::Arc;

/// The crypto provider every config in this crate is built with (aws-lc-rs).
///
/// Built explicitly rather than relying on a process-wide default, so that another crate
/// installing a different default cannot change what the bridge negotiates.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Fills `buf` from the provider's CSPRNG.
pub(crate) fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    rustls::crypto::aws_lc_rs::default_provider()
        .secure_random
        .fill(buf)
        .map_err(|_| Error::Random)
}

/// A random positive serial number of 16 bytes (RFC 5280 §4.1.2.2 allows up to 20).
pub(crate) fn random_serial() -> Result<rcgen::SerialNumber, Error> {
    let mut buf = [0u8; 16];
    random_bytes(&mut buf)?;
    // Clear the sign bit and set the next one so DER needs no leading zero byte and the
    // number is never negative or shortened.
    if let Some(first) = buf.first_mut() {
        *first = (*first & 0x7f) | 0x40;
    }
    Ok(rcgen::SerialNumber::from_slice(&buf))
}
