//! Upstream trust configuration.

mod common;

use std::fs;

use common::*;
use tls::upstream::{Upstream, UpstreamOptions};
use tls::Error;

#[test]
fn operator_trust_file_is_loaded() {
    let tb = Testbed::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upstream-ca.pem");
    fs::write(
        &path,
        pem::encode(&pem::Pem::new("CERTIFICATE", tb.ca_cert.to_vec())),
    )
    .unwrap();
    let up = Upstream::new(&UpstreamOptions {
        upstream_ca_file: Some(path),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(up.root_count(), 1);
}

#[test]
fn empty_or_missing_trust_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Upstream::new(&UpstreamOptions::default()),
        Err(Error::NoRoots)
    ));
    let missing = dir.path().join("missing.pem");
    let err = Upstream::new(&UpstreamOptions {
        upstream_ca_file: Some(missing.clone()),
        ..Default::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    let junk = dir.path().join("junk.pem");
    fs::write(&junk, "hello").unwrap();
    assert!(Upstream::new(&UpstreamOptions {
        upstream_ca_file: Some(junk),
        ..Default::default()
    })
    .is_err());
}

#[test]
fn system_roots_load_when_present() {
    // Machines without a CA bundle (minimal containers) give NoRoots, not a panic.
    match Upstream::new(&UpstreamOptions {
        system_roots: true,
        ..Default::default()
    }) {
        Ok(up) => assert!(up.root_count() > 10),
        Err(Error::NoRoots) => {}
        Err(e) => panic!("{e}"),
    }
}
