//! One intercepted session: the client-facing rustls server and the server-facing rustls
//! client, joined by a plaintext relay. Sans-IO: TLS bytes in and out of both ends,
//! plaintext out for the mirror, events out.
//!
//! Flow (TLS is client-first, so nothing is sent to the client until the real server has
//! been heard):
//! 1. rustls's `Acceptor` reads the ClientHello; SNI and ALPN come out of it, no certificate
//!    is chosen yet.
//! 2. A `ClientConnection` goes upstream with the same SNI (or the server's IP) and the
//!    client's ALPN list, verifying like a browser.
//! 3. When that handshake completes, a leaf is forged from the real leaf's names, and the
//!    held ClientHello is answered with ALPN = exactly the server's choice.
//! 4. Plaintext is relayed both ways through bounded buffers; close_notify is relayed.
//!
//! # Driving it
//! After feeding input with `handle_client_tls` / `handle_server_tls` (each returns how
//! many bytes it took: keep the rest and offer it again later — that is the back-pressure,
//! the TCP window closes behind it), call `poll_client_tls`, `poll_server_tls`,
//! `drain_plaintext` and `poll_event` until each yields nothing. `wants_client_tls` /
//! `wants_server_tls` say whether more input can be taken now. A TCP FIN from either end
//! goes to `handle_client_eof` / `handle_server_eof`. When `is_done` is true and the polls
//! are empty, the session is over (after an `Event::Error` or a rejection: abort both TCP
//! ends; after both `Closed` events: close them).

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, Write};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::server::{Accepted, Acceptor};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    AlertDescription, CipherSuite, ClientConnection, ConnectionCommon, ProtocolVersion, ServerConfig,
    ServerConnection,
};
use rustls_pki_types::ServerName;

use crate::forge::Forger;
use crate::upstream::{SessionRecord, Upstream, Verdict};
use crate::Error;

/// Default bound of each connection's outgoing buffers and of early client bytes.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;
/// Default bound of plaintext waiting for the mirror.
pub const DEFAULT_TAP_LIMIT: usize = 256 * 1024;

/// A fatal handshake_failure alert (RFC 8446 §6.2), as a plaintext record: what the client
/// gets when we refuse the session before any server flight exists to encrypt it with.
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 40];

/// Which way plaintext flowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// One end of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client,
    Server,
}

/// What to do when the upstream certificate fails verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RejectPolicy {
    /// The client gets a fatal alert; nothing is relayed.
    #[default]
    Block,
    /// The client gets the same names from an issuer nobody trusts, so its own check fails
    /// as it would have against the real server (and a user override still works).
    ForgeUntrusted,
}

/// Shared by all sessions of a worker.
#[derive(Debug)]
pub struct InterceptConfig {
    pub upstream: Arc<Upstream>,
    pub forger: Arc<Forger>,
    pub reject_policy: RejectPolicy,
    /// Bound of each rustls connection's outgoing buffers and of client bytes held while
    /// the upstream handshake runs.
    pub buffer_limit: usize,
    /// Bound of plaintext waiting in `drain_plaintext`; `None` disables the tap. A full tap
    /// stalls the relay rather than dropping bytes, so the mirror never has holes.
    pub tap_limit: Option<usize>,
    /// Sessions clients may resume with the bridge (TLS 1.2 session ids, TLS 1.3
    /// stateful tickets), shared by all sessions. Resuming skips only the client-side
    /// certificate: the upstream server is still connected to and verified first.
    pub client_sessions: Arc<rustls::server::ServerSessionMemoryCache>,
    provider: Arc<CryptoProvider>,
}

impl InterceptConfig {
    pub fn new(upstream: Arc<Upstream>, forger: Arc<Forger>) -> Self {
        Self {
            upstream,
            forger,
            reject_policy: RejectPolicy::default(),
            buffer_limit: DEFAULT_BUFFER_LIMIT,
            tap_limit: Some(DEFAULT_TAP_LIMIT),
            client_sessions: rustls::server::ServerSessionMemoryCache::new(4096),
            provider: crate::provider(),
        }
    }
}

/// What happened, for the session log and the driver's decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The ClientHello was read.
    ClientHello { sni: Option<String>, alpn: Vec<Vec<u8>> },
    /// The real server's certificate verified; its handshake is complete.
    UpstreamVerified {
        alpn: Option<Vec<u8>>,
        version: ProtocolVersion,
        suite: CipherSuite,
    },
    /// The real server's certificate failed verification (the "upstream certificate
    /// verdict"). Under [`RejectPolicy::Block`] the session ends here.
    UpstreamRejected { reason: String },
    /// The server asked for a client certificate: this session cannot be intercepted
    /// (we hold no client key), so it is refused; bypass the triple next time.
    ClientCertRequested,
    /// The client accepted the forged chain; plaintext flows.
    Established {
        alpn: Option<Vec<u8>>,
        version: ProtocolVersion,
        trusted_forgery: bool,
    },
    /// The client refused the forged chain: an alert naming the certificate, or a close
    /// right after our server flight (pinning clients). Bypass the triple for a while
    /// when `trusted_forgery` (an untrusted forgery is meant to be refused).
    ClientRejectedForgery {
        alert: Option<AlertDescription>,
        trusted_forgery: bool,
    },
    /// One end finished sending: `clean` if with close_notify (relayed to the other end),
    /// otherwise a TCP EOF without it (not turned into a clean close on the other end).
    Closed { by: Side, clean: bool },
    /// A fatal error on one end; the session is over.
    Error { side: Side, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientHello,
    UpstreamHandshake,
    ClientHandshake,
    Relay,
    Done,
}

struct Tap {
    queue: VecDeque<(Direction, Vec<u8>)>,
    /// Buffers of chunks already drained, kept for the next chunks: a session with a
    /// mirror allocates while it warms up, not per decrypted record.
    spare: Vec<Vec<u8>>,
    bytes: usize,
    limit: Option<usize>,
}

/// Drained chunk buffers a session keeps: the queue rarely holds more than a record or
/// two each way between drains.
const TAP_SPARE_BUFFERS: usize = 4;

impl Tap {
    fn room(&self) -> usize {
        match self.limit {
            Some(l) => l.saturating_sub(self.bytes),
            None => usize::MAX,
        }
    }
    fn push(&mut self, dir: Direction, data: &[u8]) {
        if self.limit.is_none() || data.is_empty() {
            return;
        }
        self.bytes += data.len();
        let mut chunk = self.spare.pop().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(data);
        self.queue.push_back((dir, chunk));
    }
}

/// One intercepted session. See the module documentation for the calling order.
pub struct Interception {
    cfg: Arc<InterceptConfig>,
    server_ip: Option<IpAddr>,
    now: SystemTime,
    phase: Phase,
    acceptor: Option<Box<Acceptor>>,
    accepted: Option<Box<Accepted>>,
    /// Client bytes that arrived after the ClientHello, before there is a connection to
    /// give them to.
    early_client: Vec<u8>,
    client: Option<Box<ServerConnection>>,
    upstream: Option<Box<ClientConnection>>,
    record: Option<Arc<SessionRecord>>,
    /// Records we write ourselves (alerts before a client connection exists).
    client_raw: Vec<u8>,
    events: VecDeque<Event>,
    tap: Tap,
    sni: Option<String>,
    trusted_forgery: bool,
    flight_sent: bool,
    client_done: bool,
    server_done: bool,
}

// Manual: rustls connections hold traffic secrets; show only the session's shape.
impl fmt::Debug for Interception {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interception")
            .field("phase", &self.phase)
            .field("sni", &self.sni)
            .field("server_ip", &self.server_ip)
            .field("trusted_forgery", &self.trusted_forgery)
            .field("client_done", &self.client_done)
            .field("server_done", &self.server_done)
            .finish_non_exhaustive()
    }
}

impl Interception {
    /// A session whose ClientHello has not been read yet. `server_ip` names the upstream
    /// when the client sends no SNI; `now` is when certificates are judged valid.
    pub fn new(cfg: Arc<InterceptConfig>, server_ip: Option<IpAddr>, now: SystemTime) -> Self {
        let limit = cfg.tap_limit;
        Self {
            cfg,
            server_ip,
            now,
            phase: Phase::ClientHello,
            acceptor: Some(Box::default()),
            accepted: None,
            early_client: Vec::new(),
            client: None,
            upstream: None,
            record: None,
            client_raw: Vec::new(),
            events: VecDeque::new(),
            tap: Tap {
                queue: VecDeque::new(),
                spare: Vec::new(),
                bytes: 0,
                limit,
            },
            sni: None,
            trusted_forgery: false,
            flight_sent: false,
            client_done: false,
            server_done: false,
        }
    }

    /// The SNI the client sent, once read.
    pub fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// What upstream verification recorded (presented leaf, verdict), once the upstream
    /// connection exists: for the session log's "upstream certificate verdict".
    pub fn upstream_record(&self) -> Option<&SessionRecord> {
        self.record.as_deref()
    }

    /// The session is over (after a failure, a rejection, or both ends closing).
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Whether client TLS bytes can be taken now.
    pub fn wants_client_tls(&self) -> bool {
        match self.phase {
            Phase::ClientHello => true,
            Phase::UpstreamHandshake => self.early_client.len() < self.cfg.buffer_limit,
            Phase::ClientHandshake | Phase::Relay => {
                !self.client_done && self.client.as_ref().is_some_and(|c| c.wants_read())
            }
            Phase::Done => false,
        }
    }

    /// Whether server TLS bytes can be taken now. False while the client (or the mirror)
    /// is not draining what the server already sent: stop reading the server then.
    pub fn wants_server_tls(&self) -> bool {
        match self.phase {
            Phase::UpstreamHandshake | Phase::ClientHandshake | Phase::Relay => {
                !self.server_done && self.upstream.as_ref().is_some_and(|u| u.wants_read())
            }
            Phase::ClientHello | Phase::Done => false,
        }
    }

    /// TLS bytes from the client. Returns how many were taken.
    pub fn handle_client_tls(&mut self, data: &[u8]) -> usize {
        match self.phase {
            Phase::ClientHello => self.feed_acceptor(data),
            Phase::UpstreamHandshake => {
                let room = self.cfg.buffer_limit.saturating_sub(self.early_client.len());
                let n = room.min(data.len());
                self.early_client
                    .extend_from_slice(data.get(..n).unwrap_or_default());
                n
            }
            Phase::ClientHandshake | Phase::Relay => self.feed_client(data),
            // Nothing more will be read; taking the bytes keeps the driver from stalling.
            Phase::Done => data.len(),
        }
    }

    /// TLS bytes from the server. Returns how many were taken.
    pub fn handle_server_tls(&mut self, data: &[u8]) -> usize {
        match self.phase {
            Phase::UpstreamHandshake | Phase::ClientHandshake | Phase::Relay => self.feed_server(data),
            // The server speaks only after our ClientHello; bytes before it are not TLS
            // we asked for, and after the end nothing is read.
            Phase::ClientHello | Phase::Done => data.len(),
        }
    }

    /// The client closed its TCP sending side.
    pub fn handle_client_eof(&mut self) {
        match self.phase {
            Phase::ClientHello | Phase::UpstreamHandshake => {
                self.events.push_back(Event::Closed {
                    by: Side::Client,
                    clean: false,
                });
                self.phase = Phase::Done;
            }
            Phase::ClientHandshake => {
                if self.flight_sent {
                    // A pinning client drops the connection on seeing our chain without
                    // necessarily sending an alert.
                    self.events.push_back(Event::ClientRejectedForgery {
                        alert: None,
                        trusted_forgery: self.trusted_forgery,
                    });
                } else {
                    self.events.push_back(Event::Closed {
                        by: Side::Client,
                        clean: false,
                    });
                }
                self.phase = Phase::Done;
            }
            Phase::Relay => {
                if let Some(c) = self.client.as_mut() {
                    // An empty read is how rustls learns of EOF; the relay then reports
                    // a clean or unclean close once the buffered plaintext is through.
                    let _ = c.read_tls(&mut &[][..]);
                }
                self.pump();
            }
            Phase::Done => {}
        }
    }

    /// The server closed its TCP sending side.
    pub fn handle_server_eof(&mut self) {
        match self.phase {
            Phase::UpstreamHandshake => {
                self.events.push_back(Event::Error {
                    side: Side::Server,
                    reason: "server closed the connection during the handshake".into(),
                });
                self.refuse_client();
            }
            Phase::ClientHandshake | Phase::Relay => {
                if let Some(u) = self.upstream.as_mut() {
                    let _ = u.read_tls(&mut &[][..]);
                }
                self.pump();
            }
            Phase::ClientHello | Phase::Done => {}
        }
    }

    /// Appends TLS bytes for the client to `out`; returns how many.
    #[must_use]
    pub fn poll_client_tls(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        out.append(&mut self.client_raw);
        if let Some(c) = self.client.as_mut() {
            while c.wants_write() {
                match c.write_tls(out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let n = out.len() - start;
        if n > 0 && self.phase == Phase::ClientHandshake {
            self.flight_sent = true;
        }
        // Room was freed in the client's buffer: move what the server sent meanwhile.
        self.pump();
        n
    }

    /// Appends TLS bytes for the server to `out`; returns how many.
    #[must_use]
    pub fn poll_server_tls(&mut self, out: &mut Vec<u8>) -> usize {
        let start = out.len();
        if let Some(u) = self.upstream.as_mut() {
            while u.wants_write() {
                match u.write_tls(out) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let n = out.len() - start;
        self.pump();
        n
    }

    /// Hands `sink` the decrypted application bytes for the mirror, chunk by chunk in the
    /// order they were relayed (never handshake or record bytes), until none is left;
    /// relaying that waited for room in the tap goes on meanwhile. Returns whether any
    /// chunk was handed over.
    pub fn drain_plaintext(&mut self, mut sink: impl FnMut(Direction, &[u8])) -> bool {
        let mut any = false;
        while !self.tap.queue.is_empty() {
            while let Some((dir, chunk)) = self.tap.queue.pop_front() {
                any = true;
                self.tap.bytes = self.tap.bytes.saturating_sub(chunk.len());
                sink(dir, &chunk);
                if self.tap.spare.len() < TAP_SPARE_BUFFERS {
                    self.tap.spare.push(chunk);
                }
            }
            // The tap has room again: relay what waited for it (which may tap more).
            self.pump();
        }
        any
    }

    /// The next event.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn feed_acceptor(&mut self, data: &[u8]) -> usize {
        let mut consumed = 0;
        while consumed < data.len() {
            let Some(acceptor) = self.acceptor.as_mut() else {
                break;
            };
            let mut rd = data.get(consumed..).unwrap_or_default();
            match acceptor.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(n) => consumed += n,
                Err(e) => {
                    self.acceptor = None;
                    self.fail(Side::Client, format!("reading ClientHello: {e}"));
                    return data.len();
                }
            }
            match acceptor.accept() {
                Ok(None) => {}
                Ok(Some(accepted)) => {
                    self.acceptor = None;
                    self.on_client_hello(accepted);
                    break;
                }
                Err((e, mut alert)) => {
                    let _ = alert.write_all(&mut self.client_raw);
                    self.acceptor = None;
                    self.fail(Side::Client, e.to_string());
                    return data.len();
                }
            }
        }
        if consumed < data.len() && self.phase != Phase::ClientHello {
            consumed += self.handle_client_tls(data.get(consumed..).unwrap_or_default());
        }
        consumed
    }

    fn on_client_hello(&mut self, accepted: Accepted) {
        let (sni, alpn) = {
            let ch = accepted.client_hello();
            let sni = ch.server_name().map(str::to_owned);
            let alpn: Vec<Vec<u8>> = ch
                .alpn()
                .map(|it| it.map(<[u8]>::to_vec).collect())
                .unwrap_or_default();
            (sni, alpn)
        };
        self.sni = sni.clone();
        self.events.push_back(Event::ClientHello {
            sni: sni.clone(),
            alpn: alpn.clone(),
        });
        let server_name = match (sni, self.server_ip) {
            (Some(name), _) => match ServerName::try_from(name) {
                Ok(n) => n,
                Err(_) => {
                    self.fail(Side::Client, "SNI is not a valid DNS name".into());
                    self.client_raw.extend_from_slice(&HANDSHAKE_FAILURE_ALERT);
                    return;
                }
            },
            (None, Some(ip)) => ServerName::IpAddress(ip.into()),
            (None, None) => {
                self.fail(
                    Side::Client,
                    "no SNI and no server address: cannot name the upstream".into(),
                );
                self.client_raw.extend_from_slice(&HANDSHAKE_FAILURE_ALERT);
                return;
            }
        };
        let accept_invalid = self.cfg.reject_policy == RejectPolicy::ForgeUntrusted;
        match self
            .cfg
            .upstream
            .connect(server_name, alpn, accept_invalid, self.now)
        {
            Ok((mut conn, record)) => {
                conn.set_buffer_limit(Some(self.cfg.buffer_limit));
                self.upstream = Some(Box::new(conn));
                self.record = Some(record);
                self.accepted = Some(Box::new(accepted));
                self.phase = Phase::UpstreamHandshake;
            }
            Err(e) => {
                self.fail(Side::Server, format!("cannot start upstream: {e}"));
                self.client_raw.extend_from_slice(&HANDSHAKE_FAILURE_ALERT);
            }
        }
    }

    fn feed_server(&mut self, data: &[u8]) -> usize {
        let mut consumed = 0;
        while consumed < data.len() {
            if self.upstream.as_mut().is_some_and(|u| has_unread(u)) {
                self.pump();
                if self.upstream.as_mut().is_some_and(|u| has_unread(u)) {
                    break;
                }
            }
            let Some(up) = self.upstream.as_mut() else {
                return data.len();
            };
            let mut rd = data.get(consumed..).unwrap_or_default();
            match up.read_tls(&mut rd) {
                // After close_notify nothing more is read (RFC 8446 §6.1).
                Ok(0) => return data.len(),
                Ok(n) => consumed += n,
                // Plaintext buffer full: back-pressure, try again later.
                Err(_) => break,
            }
            match up.process_new_packets() {
                Ok(_) => self.after_server_progress(),
                Err(e) => {
                    self.on_server_error(e);
                    return data.len();
                }
            }
            if self.phase == Phase::Done {
                return data.len();
            }
        }
        self.pump();
        consumed
    }

    fn after_server_progress(&mut self) {
        if self.phase != Phase::UpstreamHandshake {
            return;
        }
        if self.record.as_ref().is_some_and(|r| r.client_cert_requested()) {
            self.events.push_back(Event::ClientCertRequested);
            self.refuse_client();
            return;
        }
        if self.upstream.as_ref().is_some_and(|u| !u.is_handshaking()) {
            self.on_upstream_ready();
        }
    }

    fn on_server_error(&mut self, e: rustls::Error) {
        match self.phase {
            Phase::UpstreamHandshake => {
                let verdict = self.record.as_ref().and_then(|r| r.verdict());
                if self.record.as_ref().is_some_and(|r| r.client_cert_requested()) {
                    self.events.push_back(Event::ClientCertRequested);
                } else if let Some(Verdict::Rejected(reason)) = verdict {
                    self.events.push_back(Event::UpstreamRejected { reason });
                } else {
                    self.events.push_back(Event::Error {
                        side: Side::Server,
                        reason: e.to_string(),
                    });
                }
                self.refuse_client();
            }
            _ => {
                self.events.push_back(Event::Error {
                    side: Side::Server,
                    reason: e.to_string(),
                });
                self.phase = Phase::Done;
            }
        }
    }

    /// Ends the session before the client has seen any certificate.
    fn refuse_client(&mut self) {
        self.accepted = None;
        self.client_raw.extend_from_slice(&HANDSHAKE_FAILURE_ALERT);
        self.phase = Phase::Done;
    }

    fn on_upstream_ready(&mut self) {
        let (Some(up), Some(record)) = (self.upstream.as_ref(), self.record.as_ref()) else {
            return;
        };
        let leaf = up
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.clone().into_owned())
            .or_else(|| record.leaf());
        let alpn = up.alpn_protocol().map(<[u8]>::to_vec);
        let version = up.protocol_version();
        let suite = up.negotiated_cipher_suite().map(|s| s.suite());
        let verdict = record.verdict();
        let Some(leaf) = leaf else {
            self.fail(Side::Server, "upstream presented no certificate".into());
            self.refuse_client();
            return;
        };
        let forged = match verdict {
            Some(Verdict::Trusted) => {
                self.events.push_back(Event::UpstreamVerified {
                    alpn: alpn.clone(),
                    version: version.unwrap_or(ProtocolVersion::Unknown(0)),
                    suite: suite.unwrap_or(CipherSuite::Unknown(0)),
                });
                self.trusted_forgery = true;
                self.cfg.forger.forge(&leaf)
            }
            Some(Verdict::Rejected(reason)) => {
                self.events.push_back(Event::UpstreamRejected { reason });
                if self.cfg.reject_policy == RejectPolicy::Block {
                    self.refuse_client();
                    return;
                }
                self.trusted_forgery = false;
                self.cfg.forger.forge_untrusted(&leaf)
            }
            None => {
                self.fail(Side::Server, "upstream certificate was never verified".into());
                self.refuse_client();
                return;
            }
        };
        let config = forged.and_then(|ck| self.server_config(ck, alpn, version));
        let config = match config {
            Ok(c) => c,
            Err(e) => {
                self.fail(Side::Server, format!("cannot forge certificate: {e}"));
                self.refuse_client();
                return;
            }
        };
        let Some(accepted) = self.accepted.take() else {
            return;
        };
        match accepted.into_connection(config) {
            Ok(mut conn) => {
                conn.set_buffer_limit(Some(self.cfg.buffer_limit));
                self.client = Some(Box::new(conn));
                self.phase = Phase::ClientHandshake;
                let early = std::mem::take(&mut self.early_client);
                if !early.is_empty() {
                    let n = self.feed_client(&early);
                    if n < early.len() && self.phase != Phase::Done {
                        // Cannot happen during a handshake (no plaintext to back up),
                        // but never drop client bytes silently.
                        self.fail(Side::Client, "early client data exceeded buffers".into());
                    }
                }
            }
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut self.client_raw);
                self.fail(Side::Client, e.to_string());
            }
        }
    }

    fn server_config(
        &self,
        forged: Arc<CertifiedKey>,
        alpn: Option<Vec<u8>>,
        upstream_version: Option<ProtocolVersion>,
    ) -> Result<Arc<ServerConfig>, Error> {
        // The client gets the version the server speaks: a TLS 1.2-only server is not
        // dressed up as a TLS 1.3 one.
        let versions: &[&'static rustls::SupportedProtocolVersion] = match upstream_version {
            Some(ProtocolVersion::TLSv1_2) => &[&rustls::version::TLS12],
            Some(ProtocolVersion::TLSv1_3) => &[&rustls::version::TLS13],
            _ => &[&rustls::version::TLS13, &rustls::version::TLS12],
        };
        let mut cfg = ServerConfig::builder_with_provider(self.cfg.provider.clone())
            .with_protocol_versions(versions)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SingleCertAndKey::from(forged)));
        // Exactly the server's choice: the client then speaks what the server speaks.
        cfg.alpn_protocols = alpn.into_iter().collect();
        // One cache for all sessions, so a client can resume with the bridge.
        cfg.session_storage = self.cfg.client_sessions.clone();
        Ok(Arc::new(cfg))
    }

    fn feed_client(&mut self, data: &[u8]) -> usize {
        let mut consumed = 0;
        while consumed < data.len() {
            if self.client.as_mut().is_some_and(|c| has_unread(c)) {
                self.pump();
                if self.client.as_mut().is_some_and(|c| has_unread(c)) {
                    break;
                }
            }
            let Some(c) = self.client.as_mut() else {
                return data.len();
            };
            let mut rd = data.get(consumed..).unwrap_or_default();
            match c.read_tls(&mut rd) {
                Ok(0) => return data.len(),
                Ok(n) => consumed += n,
                Err(_) => break,
            }
            match c.process_new_packets() {
                Ok(_) => {
                    if self.phase == Phase::ClientHandshake && !c.is_handshaking() {
                        self.phase = Phase::Relay;
                        self.events.push_back(Event::Established {
                            alpn: c.alpn_protocol().map(<[u8]>::to_vec),
                            version: c.protocol_version().unwrap_or(ProtocolVersion::Unknown(0)),
                            trusted_forgery: self.trusted_forgery,
                        });
                    }
                }
                Err(e) => {
                    self.on_client_error(e);
                    return data.len();
                }
            }
        }
        self.pump();
        consumed
    }

    fn on_client_error(&mut self, e: rustls::Error) {
        if self.phase == Phase::ClientHandshake {
            if let rustls::Error::AlertReceived(alert) = &e {
                if is_certificate_alert(*alert) {
                    self.events.push_back(Event::ClientRejectedForgery {
                        alert: Some(*alert),
                        trusted_forgery: self.trusted_forgery,
                    });
                    self.phase = Phase::Done;
                    return;
                }
            }
        }
        self.fail(Side::Client, e.to_string());
    }

    fn fail(&mut self, side: Side, reason: String) {
        self.events.push_back(Event::Error { side, reason });
        self.phase = Phase::Done;
    }

    /// Moves plaintext both ways as far as buffers and the tap allow, and relays closes.
    fn pump(&mut self) {
        if !matches!(self.phase, Phase::ClientHandshake | Phase::Relay) {
            return;
        }
        let (Some(client), Some(upstream)) = (self.client.as_mut(), self.upstream.as_mut()) else {
            return;
        };
        loop {
            let mut progressed = false;
            if !self.client_done {
                match move_plaintext(client, upstream, &mut self.tap, Direction::ClientToServer) {
                    Flow::Moved => progressed = true,
                    Flow::Stalled => {}
                    Flow::Closed { clean } => {
                        self.client_done = true;
                        if clean {
                            upstream.send_close_notify();
                        }
                        self.events.push_back(Event::Closed {
                            by: Side::Client,
                            clean,
                        });
                        progressed = true;
                    }
                }
            }
            if !self.server_done {
                match move_plaintext(upstream, client, &mut self.tap, Direction::ServerToClient) {
                    Flow::Moved => progressed = true,
                    Flow::Stalled => {}
                    Flow::Closed { clean } => {
                        self.server_done = true;
                        if clean {
                            client.send_close_notify();
                        }
                        self.events.push_back(Event::Closed {
                            by: Side::Server,
                            clean,
                        });
                        progressed = true;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        if self.client_done && self.server_done {
            self.phase = Phase::Done;
        }
    }
}

enum Flow {
    Moved,
    Stalled,
    Closed { clean: bool },
}

/// Moves one chunk of received plaintext from `from` into `to`'s writer (and the tap).
fn move_plaintext<A, B>(
    from: &mut ConnectionCommon<A>,
    to: &mut ConnectionCommon<B>,
    tap: &mut Tap,
    dir: Direction,
) -> Flow {
    let room = tap.room();
    let mut reader = from.reader();
    let chunk = match reader.fill_buf() {
        Ok([]) => return Flow::Closed { clean: true },
        Ok(chunk) => chunk,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Flow::Closed { clean: false },
        Err(_) => return Flow::Stalled,
    };
    let want = chunk.len().min(room);
    let Some(part) = chunk.get(..want) else {
        return Flow::Stalled;
    };
    if part.is_empty() {
        return Flow::Stalled;
    }
    // An error here means the connection is already failed; treat it as no room.
    let n = to.writer().write(part).unwrap_or(0);
    if n == 0 {
        return Flow::Stalled;
    }
    tap.push(dir, part.get(..n).unwrap_or_default());
    reader.consume(n);
    Flow::Moved
}

/// Whether `conn` holds plaintext not yet relayed.
fn has_unread<D>(conn: &mut ConnectionCommon<D>) -> bool {
    matches!(conn.reader().fill_buf(), Ok(b) if !b.is_empty())
}

/// Alerts a client sends when it does not accept the certificate it was shown
/// (RFC 8446 §6.2).
fn is_certificate_alert(a: AlertDescription) -> bool {
    matches!(
        a,
        AlertDescription::UnknownCA
            | AlertDescription::BadCertificate
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::AccessDenied
    )
}
