//! Forged leaves: names copied, issuer, validity clipping, cache.

mod common;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use tls::ca::InspectionCa;
use tls::forge::{parse_names, Forger};

#[test]
fn copies_names_and_chains_to_the_ca() {
    let tb = Testbed::new();
    let forger = Forger::new(inspection_ca(), 8).unwrap();
    let leaf = tb.leaf_with(&["a.test", "*.b.test", "2001:db8::1", "198.51.100.7"], -1, 30);
    let ck = forger.forge(&leaf.chain[0]).unwrap();
    assert_eq!(ck.cert.len(), 2);
    assert_eq!(ck.cert[1], *forger.ca_cert_der());
    let n = parse_names(&ck.cert[0]).unwrap();
    assert_eq!(n.common_name.as_deref(), Some("a.test"));
    assert_eq!(n.dns, vec!["a.test".to_string(), "*.b.test".to_string()]);
    assert_eq!(
        n.ips,
        vec![
            "2001:db8::1".parse::<IpAddr>().unwrap(),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        ]
    );
    ck.keys_match().unwrap();

    // The rustls webpki verifier accepts it for the copied names against the CA.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(forger.ca_cert_der().clone()).unwrap();
    let v = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), tls::provider())
        .build()
        .unwrap();
    use rustls::client::danger::ServerCertVerifier;
    for name in ["a.test", "x.b.test", "198.51.100.7"] {
        let sn = rustls::pki_types::ServerName::try_from(name).unwrap();
        v.verify_server_cert(&ck.cert[0], &[], &sn, &[], rustls::pki_types::UnixTime::now())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn serials_differ_and_validity_is_clipped_to_ca() {
    let tb = Testbed::new();
    // A CA valid for 30 days; the upstream leaf for 90.
    let ca = InspectionCa::generate("short CA", SystemTime::now(), Duration::from_secs(30 * 86400)).unwrap();
    let (_, ca_na) = ca.validity();
    let forger = Forger::new(ca, 8).unwrap();
    let a = forger.forge(&tb.leaf().chain[0]).unwrap();
    let b = forger.forge(&tb.leaf().chain[0]).unwrap();
    let (_, xa) = x509_parser::parse_x509_certificate(&a.cert[0]).unwrap();
    let (_, xb) = x509_parser::parse_x509_certificate(&b.cert[0]).unwrap();
    assert_ne!(xa.raw_serial(), xb.raw_serial());
    assert_eq!(xa.validity().not_after.timestamp(), ca_na);
    assert!(!xa.is_ca());
}

#[test]
fn cache_counts_hits_and_misses_and_is_bounded() {
    let tb = Testbed::new();
    let forger = Forger::new(inspection_ca(), 2).unwrap();
    let l1 = tb.leaf().chain[0].clone();
    let l2 = tb.leaf().chain[0].clone();
    let l3 = tb.leaf().chain[0].clone();
    let first = forger.forge(&l1).unwrap();
    let again = forger.forge(&l1).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "a hit returns the same certificate");
    let s = forger.stats();
    assert_eq!((s.misses, s.hits, s.entries), (1, 1, 1));
    forger.forge(&l2).unwrap();
    forger.forge(&l3).unwrap();
    assert_eq!(forger.stats().entries, 2, "capacity bounds the cache");
    // l1 was least recently used and is gone.
    forger.forge(&l1).unwrap();
    assert_eq!(forger.stats().misses, 4);
    // Untrusted forgeries are cached apart and chain to another issuer.
    let u = forger.forge_untrusted(&l1).unwrap();
    assert_ne!(u.cert[1], *forger.ca_cert_der());
    assert_eq!(forger.stats().misses, 5);
}

#[test]
fn garbage_upstream_certificate_is_an_error() {
    let forger = Forger::new(inspection_ca(), 2).unwrap();
    assert!(forger.forge(b"not a certificate").is_err());
    assert!(forger.forge(&[]).is_err());
}
