//! The server-facing half: a rustls client that verifies the real server as a browser
//! would (webpki path building and name check against system roots plus an operator
//! bundle), and records per session what the server presented and what we concluded.
//!
//! The record exists because the outcome is needed after the handshake either way: the
//! forged certificate copies the presented leaf's names even when verification failed,
//! and the session log carries the "upstream certificate verdict".

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::Error;

/// Where upstream trust comes from.
#[derive(Debug, Clone, Default)]
pub struct UpstreamOptions {
    /// Load the system store (`SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution bundle).
    pub system_roots: bool,
    /// The operator's extra trust file (PEM), e.g. an internal CA.
    pub upstream_ca_file: Option<PathBuf>,
    /// Extra roots given in memory.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// What upstream verification concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Trusted,
    /// The reason as rustls words it (e.g. "invalid peer certificate: UnknownIssuer").
    Rejected(String),
}

/// Per-session record filled by the verifier and client-certificate hooks.
#[derive(Debug, Default)]
pub struct SessionRecord {
    inner: Mutex<RecordInner>,
}

#[derive(Debug, Default, Clone)]
struct RecordInner {
    leaf: Option<CertificateDer<'static>>,
    verdict: Option<Verdict>,
    client_cert_requested: bool,
}

impl SessionRecord {
    fn lock(&self) -> MutexGuard<'_, RecordInner> {
        // Fields are written whole; a poisoned lock still holds a coherent record.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// The leaf the server presented, if it got that far.
    pub fn leaf(&self) -> Option<CertificateDer<'static>> {
        self.lock().leaf.clone()
    }
    /// The verification outcome, if verification ran.
    pub fn verdict(&self) -> Option<Verdict> {
        self.lock().verdict.clone()
    }
    /// Whether the server sent a CertificateRequest.
    pub fn client_cert_requested(&self) -> bool {
        self.lock().client_cert_requested
    }
}

/// Builds per-session upstream connections. One per bridge, shared.
#[derive(Debug)]
pub struct Upstream {
    base: Arc<ClientConfig>,
    verifier: Arc<WebPkiServerVerifier>,
    roots: usize,
}

impl Upstream {
    /// Trust from `opts`; fails when that leaves no root at all.
    pub fn new(opts: &UpstreamOptions) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        if opts.system_roots {
            // Certificates the store cannot parse are skipped, as browsers do with a
            // bundle holding one odd entry; an unreadable store just contributes none.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        if let Some(path) = &opts.upstream_ca_file {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::BadFile {
                    path: path.clone(),
                    what: format!("cannot read trust file: {e}"),
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::BadFile {
                    path: path.clone(),
                    what: format!("bad PEM in trust file: {e}"),
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(Error::BadFile {
                    path: path.clone(),
                    what: "no usable CA certificate in trust file".into(),
                });
            }
        }
        roots.add_parsable_certificates(opts.extra_roots.iter().cloned());
        Self::from_roots(roots)
    }

    /// Trust exactly `roots`.
    pub fn from_roots(roots: RootCertStore) -> Result<Self, Error> {
        if roots.is_empty() {
            return Err(Error::NoRoots);
        }
        let n = roots.len();
        let provider: Arc<CryptoProvider> = crate::provider();
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| Error::Rustls(rustls::Error::General(e.to_string())))?;
        let mut base = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_webpki_verifier(verifier.clone())
            .with_no_client_auth();
        // A resumed session skips certificate verification, so it would have no verdict
        // and no leaf to forge from: every intercepted session verifies afresh.
        base.resumption = Resumption::disabled();
        Ok(Self {
            base: Arc::new(base),
            verifier,
            roots: n,
        })
    }

    /// Number of trust roots.
    pub fn root_count(&self) -> usize {
        self.roots
    }

    /// A client connection for one session to `server` offering `alpn` (the client's own
    /// list, in its order), judging certificate validity at `now` (the handshake takes
    /// milliseconds, so the session's start stands for it). With `accept_invalid`, a certificate that fails verification
    /// is recorded as rejected but the handshake goes on (the client then gets an
    /// untrusted forgery and decides for itself); otherwise the handshake fails.
    pub fn connect(
        &self,
        server: ServerName<'static>,
        alpn: Vec<Vec<u8>>,
        accept_invalid: bool,
        now: SystemTime,
    ) -> Result<(ClientConnection, Arc<SessionRecord>), Error> {
        let record = Arc::new(SessionRecord::default());
        let mut cfg = (*self.base).clone();
        cfg.alpn_protocols = alpn;
        // The core never reads the clock: validity is judged at the time we are given.
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        cfg.time_provider = Arc::new(FixedTime(UnixTime::since_unix_epoch(since_epoch)));
        cfg.dangerous()
            .set_certificate_verifier(Arc::new(RecordingVerifier {
                inner: self.verifier.clone(),
                record: record.clone(),
                accept_invalid,
            }));
        cfg.client_auth_cert_resolver = Arc::new(RecordingResolver {
            record: record.clone(),
        });
        let conn = ClientConnection::new(Arc::new(cfg), server)?;
        Ok((conn, record))
    }
}

/// The session's "now" for certificate validity.
#[derive(Debug)]
struct FixedTime(UnixTime);

impl rustls::time_provider::TimeProvider for FixedTime {
    fn current_time(&self) -> Option<UnixTime> {
        Some(self.0)
    }
}

/// webpki verification, with the outcome and the leaf written to the session record.
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    record: Arc<SessionRecord>,
    accept_invalid: bool,
}

impl fmt::Debug for RecordingVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingVerifier")
            .field("accept_invalid", &self.accept_invalid)
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let res = self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        let mut rec = self.record.lock();
        rec.leaf = Some(end_entity.clone().into_owned());
        match res {
            Ok(v) => {
                rec.verdict = Some(Verdict::Trusted);
                Ok(v)
            }
            Err(e) => {
                rec.verdict = Some(Verdict::Rejected(e.to_string()));
                if self.accept_invalid {
                    // Deliberate: the client will be shown an untrusted forgery, so its
                    // own verification fails exactly as it would have upstream.
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(e)
                }
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Notes a CertificateRequest; never offers a certificate (we hold none of the client's).
#[derive(Debug)]
struct RecordingResolver {
    record: Arc<SessionRecord>,
}

impl ResolvesClientCert for RecordingResolver {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        self.record.lock().client_cert_requested = true;
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}
