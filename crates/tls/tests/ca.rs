//! Inspection CA files: creation, permissions, loading.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use tls::ca::{self, InitOptions, InspectionCa};
use tls::forge::Forger;
use tls::Error;

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_creates_0600_key_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::init(&dir.path().join("ca")).unwrap();
    assert_eq!(mode(&files.key), 0o600);
    assert_eq!(mode(&files.cert) & 0o600, 0o600);
    assert!(fs::read_to_string(&files.cert)
        .unwrap()
        .starts_with("-----BEGIN CERTIFICATE-----"));

    let ca = InspectionCa::load(&files.cert, &files.key).unwrap();
    assert_eq!(ca.name(), ca::DEFAULT_CA_NAME);
    let (nb, na) = ca.validity();
    assert!(na - nb >= 3650 * 86400, "about ten years");

    let (_, x) = x509_parser::parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(x.is_ca());
    let ku = x.key_usage().unwrap().unwrap().value;
    assert!(ku.key_cert_sign());
    assert_eq!(
        x.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );

    // Debug never shows key material.
    let dbg = format!("{ca:?}");
    assert!(!dbg.contains("PRIVATE") && !dbg.contains("key_pair"), "{dbg}");
    let key_pem = fs::read_to_string(&files.key).unwrap();
    let forger = Forger::new(ca, 4).unwrap();
    let dbg = format!("{forger:?}");
    let body: String = key_pem.lines().filter(|l| !l.starts_with("-----")).collect();
    assert!(!dbg.contains(&body[..20]));
}

#[test]
fn init_with_given_name() {
    let dir = tempfile::tempdir().unwrap();
    let opts = InitOptions {
        common_name: "Acme TLS inspection".into(),
        validity: Duration::from_secs(86400 * 365),
    };
    let files = ca::init_with(dir.path(), &opts, SystemTime::now()).unwrap();
    let ca = InspectionCa::load(&files.cert, &files.key).unwrap();
    assert_eq!(ca.name(), "Acme TLS inspection");
}

#[test]
fn init_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::init(dir.path()).unwrap();
    let before = fs::read(&files.key).unwrap();
    match ca::init(dir.path()) {
        Err(Error::AlreadyExists { path }) => assert!(path == files.cert || path == files.key),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(fs::read(&files.key).unwrap(), before, "key untouched");

    // Only the certificate there: still refused, and no key is created.
    let dir2 = tempfile::tempdir().unwrap();
    fs::write(dir2.path().join(ca::CERT_FILE), b"x").unwrap();
    assert!(matches!(ca::init(dir2.path()), Err(Error::AlreadyExists { .. })));
    assert!(!dir2.path().join(ca::KEY_FILE).exists());
}

#[test]
fn key_readable_by_others_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let files = ca::init(dir.path()).unwrap();
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o644)).unwrap();
    let err = InspectionCa::load(&files.cert, &files.key).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, Error::KeyPermissions { mode: 0o644, .. }),
        "{err:?}"
    );
    assert!(msg.contains(&files.key.display().to_string()), "{msg}");
    assert!(msg.contains("0644") && msg.contains("chmod 600"), "{msg}");
    assert!(!msg.contains("PRIVATE KEY"));

    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o640)).unwrap();
    assert!(matches!(
        InspectionCa::load(&files.cert, &files.key),
        Err(Error::KeyPermissions { .. })
    ));
    fs::set_permissions(&files.key, fs::Permissions::from_mode(0o400)).unwrap();
    assert!(InspectionCa::load(&files.cert, &files.key).is_ok());
}

#[test]
fn key_not_matching_cert_is_refused() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let fa = ca::init(a.path()).unwrap();
    let fb = ca::init(b.path()).unwrap();
    let err = InspectionCa::load(&fa.cert, &fb.key).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err:?}");
    assert!(err.to_string().contains("does not match"));
}

#[test]
fn non_ca_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["leaf.test".to_string()]).unwrap();
    let cert = dir.path().join("leaf.crt");
    let key = dir.path().join("leaf.key");
    fs::write(&cert, ck.cert.pem()).unwrap();
    fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let err = InspectionCa::load(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
}
