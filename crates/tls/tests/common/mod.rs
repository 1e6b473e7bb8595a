//! In-memory testbed: a "real" server CA and server, the bridge, and a client, with a
//! shuttle loop moving bytes between them (as rustls's own tests do).

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
use tls::ca::InspectionCa;
use tls::forge::Forger;
use tls::pair::{Direction, Event, InterceptConfig, Interception, RejectPolicy};
use tls::upstream::Upstream;

pub const HOST: &str = "example.test";
pub const SERVER_IP: [u8; 4] = [192, 0, 2, 10];

/// The real server's PKI.
pub struct Testbed {
    pub ca_cert: CertificateDer<'static>,
    pub ca_issuer: Issuer<'static, KeyPair>,
}

pub struct Leaf {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Testbed {
    pub fn new() -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "testbed root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_cert: cert.der().clone(),
            ca_issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS or IP), valid `days_from..days_to` around now.
    pub fn leaf_with(&self, names: &[&str], from_days: i64, to_days: i64) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from_days);
        params.not_after = now + time::Duration::days(to_days);
        let cert = params.signed_by(&key, &self.ca_issuer).unwrap();
        Leaf {
            chain: vec![cert.der().clone(), self.ca_cert.clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        }
    }

    pub fn leaf(&self) -> Leaf {
        self.leaf_with(&[HOST, "www.example.test", "192.0.2.10"], -1, 90)
    }

    pub fn self_signed_leaf() -> Leaf {
        let ck = rcgen::generate_simple_self_signed(vec![HOST.to_string()]).unwrap();
        Leaf {
            chain: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der())),
        }
    }

    pub fn upstream(&self) -> Arc<Upstream> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert.clone()).unwrap();
        Arc::new(Upstream::from_roots(roots).unwrap())
    }
}

pub fn inspection_ca() -> InspectionCa {
    InspectionCa::generate(
        "test inspection CA",
        SystemTime::now(),
        Duration::from_secs(3650 * 86400),
    )
    .unwrap()
}

pub fn server_config(
    leaf: Leaf,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ServerConfig> {
    let mut cfg = ServerConfig::builder_with_provider(tls::provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(leaf.chain, leaf.key)
        .unwrap();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

pub fn client_config(trust: &[CertificateDer<'static>], alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for c in trust {
        roots.add(c.clone()).unwrap();
    }
    let mut cfg = ClientConfig::builder_with_provider(tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A rustls endpoint with an inbox, what it received, and what it still has to send.
pub struct Peer {
    pub conn: Connection,
    pub inbox: Vec<u8>,
    pub received: Vec<u8>,
    pub to_send: Vec<u8>,
    pub sent: usize,
    pub error: Option<rustls::Error>,
    pub eof: bool,
    /// When false the peer does not read plaintext (a stalled application).
    pub reading: bool,
}

impl Peer {
    pub fn new(conn: Connection) -> Self {
        Self {
            conn,
            inbox: Vec::new(),
            received: Vec::new(),
            to_send: Vec::new(),
            sent: 0,
            error: None,
            eof: false,
            reading: true,
        }
    }

    pub fn client(cfg: Arc<ClientConfig>, name: &str) -> Self {
        let name = ServerName::try_from(name.to_string()).unwrap();
        Self::new(Connection::Client(ClientConnection::new(cfg, name).unwrap()))
    }

    pub fn server(cfg: Arc<ServerConfig>) -> Self {
        Self::new(Connection::Server(ServerConnection::new(cfg).unwrap()))
    }

    fn drain_plaintext(&mut self) {
        if !self.reading {
            return;
        }
        let mut buf = [0u8; 16384];
        loop {
            match std::io::Read::read(&mut self.conn.reader(), &mut buf) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    }

    /// Reads the inbox into the connection; returns whether anything happened.
    pub fn take_in(&mut self) -> bool {
        let mut progress = false;
        while !self.inbox.is_empty() && self.error.is_none() {
            self.drain_plaintext();
            let mut rd = &self.inbox[..];
            match self.conn.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(n) => {
                    self.inbox.drain(..n);
                    progress = true;
                }
                Err(_) => break,
            }
            if let Err(e) = self.conn.process_new_packets() {
                self.error = Some(e);
            }
        }
        self.drain_plaintext();
        progress
    }

    /// Pushes pending plaintext into the connection and collects TLS output.
    pub fn give_out(&mut self, out: &mut Vec<u8>) -> bool {
        if self.sent < self.to_send.len() && !self.conn.is_handshaking() && self.error.is_none() {
            let n = std::io::Write::write(&mut self.conn.writer(), &self.to_send[self.sent..]).unwrap_or(0);
            self.sent += n;
        }
        let start = out.len();
        while self.conn.wants_write() {
            match self.conn.write_tls(out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        out.len() > start
    }
}

/// client <-> interception <-> server, with what the tap and events produced.
pub struct Run {
    pub client: Peer,
    pub server: Peer,
    pub ic: Interception,
    pub events: Vec<Event>,
    pub tap_c2s: Vec<u8>,
    pub tap_s2c: Vec<u8>,
    /// Bytes the interception has not taken yet, per direction.
    pub to_ic_from_client: Vec<u8>,
    pub to_ic_from_server: Vec<u8>,
    pub drain_tap: bool,
}

impl Run {
    pub fn new(client: Peer, server: Peer, ic: Interception) -> Self {
        Self {
            client,
            server,
            ic,
            events: Vec::new(),
            tap_c2s: Vec::new(),
            tap_s2c: Vec::new(),
            to_ic_from_client: Vec::new(),
            to_ic_from_server: Vec::new(),
            drain_tap: true,
        }
    }

    /// One round of shuttling; returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut progress = false;
        progress |= self.client.give_out(&mut self.to_ic_from_client);
        if !self.to_ic_from_client.is_empty() {
            let n = self.ic.handle_client_tls(&self.to_ic_from_client);
            progress |= n > 0;
            self.to_ic_from_client.drain(..n);
        }
        progress |= self.server.give_out(&mut self.to_ic_from_server);
        if !self.to_ic_from_server.is_empty() {
            let n = self.ic.handle_server_tls(&self.to_ic_from_server);
            progress |= n > 0;
            self.to_ic_from_server.drain(..n);
        }
        loop {
            let n = self.ic.poll_server_tls(&mut self.server.inbox);
            if n == 0 {
                break;
            }
            progress = true;
        }
        loop {
            let n = self.ic.poll_client_tls(&mut self.client.inbox);
            if n == 0 {
                break;
            }
            progress = true;
        }
        progress |= self.server.take_in();
        progress |= self.client.take_in();
        if self.drain_tap {
            let (c2s, s2c) = (&mut self.tap_c2s, &mut self.tap_s2c);
            progress |= self.ic.drain_plaintext(|dir, bytes| match dir {
                Direction::ClientToServer => c2s.extend_from_slice(bytes),
                Direction::ServerToClient => s2c.extend_from_slice(bytes),
            });
        }
        while let Some(ev) = self.ic.poll_event() {
            progress = true;
            self.events.push(ev);
        }
        progress
    }

    /// Steps until nothing moves (bounded).
    pub fn run(&mut self) {
        for _ in 0..100_000 {
            if !self.step() {
                return;
            }
        }
        panic!("no quiescence after 100000 rounds");
    }

    pub fn established(&self) -> bool {
        self.events.iter().any(|e| matches!(e, Event::Established { .. }))
    }
}

pub struct Setup {
    pub testbed: Testbed,
    pub forger: Arc<Forger>,
    pub cfg: Arc<InterceptConfig>,
}

pub fn setup(policy: RejectPolicy) -> Setup {
    let testbed = Testbed::new();
    let forger = Arc::new(Forger::new(inspection_ca(), 16).unwrap());
    let mut cfg = InterceptConfig::new(testbed.upstream(), forger.clone());
    cfg.reject_policy = policy;
    Setup {
        testbed,
        forger,
        cfg: Arc::new(cfg),
    }
}

/// A run of a client trusting the inspection CA against `server_cfg`.
pub fn session(s: &Setup, server_cfg: Arc<ServerConfig>, client_alpn: &[&[u8]]) -> Run {
    let client = Peer::client(
        client_config(&[s.forger.ca_cert_der().clone()], client_alpn),
        HOST,
    );
    let server = Peer::server(server_cfg);
    let ic = Interception::new(
        s.cfg.clone(),
        Some(IpAddr::from(SERVER_IP)),
        std::time::SystemTime::now(),
    );
    Run::new(client, server, ic)
}

pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
