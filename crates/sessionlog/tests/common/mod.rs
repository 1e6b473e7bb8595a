//! Helpers shared by the integration tests: certificates, records, reading ids back.
#![allow(dead_code, reason = "each test crate uses a different part")]

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use sessionlog::{EventKind, Port, SessionRecord};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Logs of the crate under test, shown with `RUST_LOG=sessionlog=debug` and
/// `--nocapture`.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .try_init();
}

/// PEM files of a test CA, a server certificate (localhost, 127.0.0.1) and a client
/// certificate, all under one directory.
#[derive(Debug)]
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed nothing here, to test that verification fails.
    pub other_ca: PathBuf,
}

pub fn make_pki(dir: &Path) -> Pki {
    let ca = issuer("glasswire test CA");
    let other = issuer("some other CA");
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
    let (client_cert, client_key) = leaf(vec!["glasswire.test".into()], "glasswire.test");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    Pki {
        ca: write("ca.pem", &ca.pem()),
        server_cert: write("server-cert.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client-cert.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        other_ca: write("other-ca.pem", &other.pem()),
    }
}

fn issuer(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, cn);
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

/// A record whose session id is `id`; the event cycles through the kinds so every MSGID
/// and both severities go over the wire.
pub fn record(id: u64) -> SessionRecord {
    let kinds = [
        EventKind::Start,
        EventKind::Volume,
        EventKind::EndNormal,
        EventKind::StartAbnormal,
        EventKind::EndAbnormal,
        EventKind::EndIdle,
    ];
    let mut r = SessionRecord::new(
        id,
        SystemTime::now(),
        kinds[(id % 6) as usize],
        "192.0.2.10:40000".parse().unwrap(),
        "198.51.100.7:443".parse().unwrap(),
        Port::A,
    );
    r.verdict = Some("pass".into());
    r
}

/// Session ids in a text of JSON objects, one per line (anything before the first `{` of
/// a line is ignored), with how often each occurs.
pub fn id_counts(text: &str) -> BTreeMap<u64, usize> {
    let mut m = BTreeMap::new();
    for line in text.lines() {
        let Some(start) = line.find('{') else { continue };
        let v: serde_json::Value =
            serde_json::from_str(&line[start..]).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
        let id = u64::from_str_radix(v["session_id"].as_str().unwrap(), 16).unwrap();
        *m.entry(id).or_insert(0) += 1;
    }
    m
}

/// Ids in the order they occur.
pub fn ids_in_order(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.find('{').map(|s| &l[s..]))
        .map(|j| {
            let v: serde_json::Value = serde_json::from_str(j).unwrap();
            u64::from_str_radix(v["session_id"].as_str().unwrap(), 16).unwrap()
        })
        .collect()
}

/// Calls `f` every 100 ms until it returns true; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(
            Instant::now() < end,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
