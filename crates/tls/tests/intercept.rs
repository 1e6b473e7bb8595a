//! End-to-end interception in memory: client <-> Interception <-> server.

mod common;

use std::net::IpAddr;
use std::sync::Arc;

use common::*;
use rustls::{AlertDescription, CertificateError, ProtocolVersion};
use tls::pair::{Event, Interception, RejectPolicy, Side};

const H2: &[u8] = b"h2";
const H11: &[u8] = b"http/1.1";

fn tls13() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13]
}
fn tls12() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS12]
}
fn both() -> Vec<&'static rustls::SupportedProtocolVersion> {
    vec![&rustls::version::TLS13, &rustls::version::TLS12]
}

fn upstream_version(events: &[Event]) -> Option<ProtocolVersion> {
    events.iter().find_map(|e| match e {
        Event::UpstreamVerified { version, .. } => Some(*version),
        _ => None,
    })
}

fn rejected(events: &[Event]) -> Option<&str> {
    events.iter().find_map(|e| match e {
        Event::UpstreamRejected { reason } => Some(reason.as_str()),
        _ => None,
    })
}

#[test]
fn relays_1mb_each_way_with_h2_and_forged_leaf() {
    let s = setup(RejectPolicy::Block);
    let server_cfg = server_config(s.testbed.leaf(), &[H2, H11], &both());
    let mut run = session(&s, server_cfg, &[H2, H11]);
    let request = pattern(1 << 20, 1);
    let response = pattern(1 << 20, 7);
    run.client.to_send = request.clone();
    run.server.to_send = response.clone();
    run.run();

    assert!(run.client.error.is_none(), "client: {:?}", run.client.error);
    assert!(run.server.error.is_none(), "server: {:?}", run.server.error);
    assert!(run.established(), "events: {:?}", run.events);
    assert_eq!(run.server.received, request, "request relayed intact");
    assert_eq!(run.client.received, response, "response relayed intact");
    assert_eq!(run.tap_c2s, request, "tap equals what the client sent");
    assert_eq!(run.tap_s2c, response, "tap equals what the server sent");

    // ALPN: the server's pick, reflected to the client.
    assert_eq!(run.client.conn.alpn_protocol(), Some(H2));
    assert_eq!(run.server.conn.alpn_protocol(), Some(H2));
    assert!(run.events.iter().any(|e| matches!(e,
        Event::UpstreamVerified { alpn: Some(a), .. } if a == H2)));
    assert!(run.events.iter().any(|e| matches!(e,
        Event::ClientHello { sni: Some(n), alpn } if n == HOST && alpn == &vec![H2.to_vec(), H11.to_vec()])));
    assert_eq!(upstream_version(&run.events), Some(ProtocolVersion::TLSv1_3));

    // The client saw a leaf issued by the inspection CA with the server's names.
    let chain = run.client.conn.peer_certificates().unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], *s.forger.ca_cert_der());
    let names = tls::forge::parse_names(&chain[0]).unwrap();
    assert_eq!(names.dns, vec![HOST.to_string(), "www.example.test".to_string()]);
    assert_eq!(names.ips, vec![IpAddr::from(SERVER_IP)]);
    assert_eq!(names.common_name.as_deref(), Some(HOST));
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let (_, ca) = x509_parser::parse_x509_certificate(&chain[1]).unwrap();
    assert_eq!(leaf.issuer(), ca.subject());
}

#[test]
fn close_notify_is_relayed_both_ways() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    run.client.to_send = b"GET / HTTP/1.1\r\n\r\n".to_vec();
    run.server.to_send = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    run.run();
    assert!(run.established());
    assert_eq!(
        run.client.conn.alpn_protocol(),
        None,
        "no ALPN when none was offered"
    );

    run.client.conn.send_close_notify();
    run.run();
    assert!(run.server.eof, "server saw the client's close_notify");
    assert!(run.events.contains(&Event::Closed {
        by: Side::Client,
        clean: true
    }));
    assert!(!run.ic.is_done(), "half-closed: the server may still send");

    run.server.to_send.extend_from_slice(b"late bytes");
    run.run();
    assert!(run.client.received.ends_with(b"late bytes"));
    run.server.conn.send_close_notify();
    run.run();
    assert!(run.client.eof, "client saw the server's close_notify");
    assert!(run.events.contains(&Event::Closed {
        by: Side::Server,
        clean: true
    }));
    assert!(run.ic.is_done());
}

#[test]
fn tls12_only_server() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[H11], &tls12()), &[H2, H11]);
    run.client.to_send = pattern(100_000, 3);
    run.server.to_send = pattern(50_000, 4);
    run.run();
    assert!(run.established(), "events: {:?}", run.events);
    assert_eq!(upstream_version(&run.events), Some(ProtocolVersion::TLSv1_2));
    // The client (which offers 1.3 too) gets the version the server speaks.
    assert_eq!(run.client.conn.protocol_version(), Some(ProtocolVersion::TLSv1_2));
    assert_eq!(run.client.conn.alpn_protocol(), Some(H11));
    assert_eq!(run.server.received, pattern(100_000, 3));
    assert_eq!(run.client.received, pattern(50_000, 4));
}

#[test]
fn tls13_only_server() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &tls13()), &[H2]);
    run.client.to_send = pattern(10_000, 5);
    run.server.to_send = pattern(10_000, 6);
    run.run();
    assert!(run.established(), "events: {:?}", run.events);
    assert_eq!(upstream_version(&run.events), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(run.client.conn.alpn_protocol(), None, "server chose no ALPN");
    assert_eq!(run.server.received, pattern(10_000, 5));
    assert_eq!(run.client.received, pattern(10_000, 6));
}

fn assert_blocked(run: &Run, why: &str) {
    let reason = rejected(&run.events).unwrap_or_else(|| panic!("no UpstreamRejected: {:?}", run.events));
    assert!(reason.contains(why), "reason {reason:?} should mention {why}");
    assert!(!run.established());
    assert!(run.client.error.is_some(), "client handshake must fail");
    assert!(
        run.client.conn.peer_certificates().is_none(),
        "client never saw a certificate"
    );
    assert!(run.ic.is_done());
}

#[test]
fn self_signed_upstream_is_blocked() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(Testbed::self_signed_leaf(), &[], &both()), &[]);
    run.run();
    assert_blocked(&run, "UnknownIssuer");
    let rec = run.ic.upstream_record().unwrap();
    assert!(rec.leaf().is_some(), "the presented leaf is kept for the log");
    assert!(matches!(rec.verdict(), Some(tls::upstream::Verdict::Rejected(_))));
}

#[test]
fn expired_upstream_is_blocked() {
    let s = setup(RejectPolicy::Block);
    let leaf = s.testbed.leaf_with(&[HOST], -30, -1);
    let mut run = session(&s, server_config(leaf, &[], &both()), &[]);
    run.run();
    assert_blocked(&run, "expired");
}

#[test]
fn wrong_name_upstream_is_blocked() {
    let s = setup(RejectPolicy::Block);
    let leaf = s.testbed.leaf_with(&["other.test"], -1, 30);
    let mut run = session(&s, server_config(leaf, &[], &both()), &[]);
    run.run();
    assert_blocked(&run, "not valid for name");
}

#[test]
fn untrusted_mode_client_fails_with_unknown_issuer() {
    let s = setup(RejectPolicy::ForgeUntrusted);
    let mut run = session(&s, server_config(Testbed::self_signed_leaf(), &[], &both()), &[]);
    run.run();
    assert!(rejected(&run.events).is_some(), "events: {:?}", run.events);
    assert!(!run.established());
    assert_eq!(
        run.client.error,
        Some(rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer))
    );
    assert!(run.events.contains(&Event::ClientRejectedForgery {
        alert: Some(AlertDescription::UnknownCA),
        trusted_forgery: false
    }));
}

/// A client whose user clicked through the warning: checks signatures, trusts any chain.
#[derive(Debug)]
struct ClickThrough(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for ClickThrough {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[test]
fn untrusted_mode_click_through_sees_upstream_names_and_relays() {
    let s = setup(RejectPolicy::ForgeUntrusted);
    let leaf = s.testbed.leaf_with(&[HOST, "alt.example.test"], -30, -1);
    let upstream_leaf = leaf.chain[0].clone();
    let mut ccfg = (*client_config(&[], &[])).clone();
    ccfg.dangerous()
        .set_certificate_verifier(Arc::new(ClickThrough(tls::provider())));
    let client = Peer::client(Arc::new(ccfg), HOST);
    let server = Peer::server(server_config(leaf, &[], &both()));
    let mut run = Run::new(
        client,
        server,
        Interception::new(s.cfg.clone(), None, std::time::SystemTime::now()),
    );
    run.client.to_send = b"over the warning".to_vec();
    run.run();
    assert!(rejected(&run.events).unwrap().contains("expired"));
    assert!(run.events.iter().any(|e| matches!(
        e,
        Event::Established {
            trusted_forgery: false,
            ..
        }
    )));
    assert_eq!(run.server.received, b"over the warning");
    let chain = run.client.conn.peer_certificates().unwrap();
    assert_ne!(
        chain[1],
        *s.forger.ca_cert_der(),
        "never signed by the inspection CA"
    );
    let forged = tls::forge::parse_names(&chain[0]).unwrap();
    let real = tls::forge::parse_names(&upstream_leaf).unwrap();
    assert_eq!(forged.dns, real.dns);
    assert_eq!(
        forged.not_after, real.not_after,
        "the upstream's (expired) validity is kept"
    );
}

#[test]
fn client_not_trusting_inspection_ca_rejects_forgery() {
    let s = setup(RejectPolicy::Block);
    let client = Peer::client(client_config(std::slice::from_ref(&s.testbed.ca_cert), &[]), HOST);
    let server = Peer::server(server_config(s.testbed.leaf(), &[], &both()));
    let ic = Interception::new(s.cfg.clone(), None, std::time::SystemTime::now());
    let mut run = Run::new(client, server, ic);
    run.run();
    assert!(run.events.contains(&Event::UpstreamVerified {
        alpn: None,
        version: ProtocolVersion::TLSv1_3,
        suite: run.server.conn.negotiated_cipher_suite().unwrap().suite(),
    }));
    assert!(
        run.events.contains(&Event::ClientRejectedForgery {
            alert: Some(AlertDescription::UnknownCA),
            trusted_forgery: true
        }),
        "events: {:?}",
        run.events
    );
    assert!(run.ic.is_done());
}

#[test]
fn client_closing_after_server_flight_is_a_rejection() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    // Run until the client has our flight but do not let it answer.
    for _ in 0..50 {
        run.step();
        if !run.client.inbox.is_empty() || run.client.conn.peer_certificates().is_some() {
            break;
        }
    }
    run.ic.handle_client_eof();
    while let Some(e) = run.ic.poll_event() {
        run.events.push(e);
    }
    assert!(
        run.events.contains(&Event::ClientRejectedForgery {
            alert: None,
            trusted_forgery: true
        }),
        "events: {:?}",
        run.events
    );
}

#[test]
fn server_requesting_client_cert_cannot_be_intercepted() {
    let s = setup(RejectPolicy::Block);
    for versions in [tls13(), tls12()] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(s.testbed.ca_cert.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), tls::provider())
                .build()
                .unwrap();
        let leaf = s.testbed.leaf();
        let cfg = rustls::ServerConfig::builder_with_provider(tls::provider())
            .with_protocol_versions(&versions)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(leaf.chain, leaf.key)
            .unwrap();
        let mut run = session(&s, Arc::new(cfg), &[]);
        run.run();
        assert!(
            run.events.contains(&Event::ClientCertRequested),
            "events: {:?}",
            run.events
        );
        assert!(!run.established());
        assert!(run.client.error.is_some());
        assert!(run.client.conn.peer_certificates().is_none());
    }
}

#[test]
fn busy_site_costs_one_mint() {
    let s = setup(RejectPolicy::Block);
    let leaf = s.testbed.leaf();
    for _ in 0..3 {
        let server_cfg = server_config(
            common::Leaf {
                chain: leaf.chain.clone(),
                key: leaf.key.clone_key(),
            },
            &[],
            &both(),
        );
        let mut run = session(&s, server_cfg, &[]);
        run.client.to_send = b"ping".to_vec();
        run.run();
        assert_eq!(run.server.received, b"ping");
    }
    let stats = s.forger.stats();
    assert_eq!((stats.misses, stats.hits, stats.entries), (1, 2, 1));

    // Another certificate is another entry.
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    run.run();
    assert!(run.established());
    assert_eq!(s.forger.stats().misses, 2);
}

#[test]
fn stalled_client_stops_reading_from_server() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    run.run();
    assert!(run.established());
    // The client application stops reading and its TLS input is not delivered.
    run.server.to_send = pattern(4 << 20, 9);
    let mut taken_total = 0usize;
    for _ in 0..2000 {
        run.server.give_out(&mut run.to_ic_from_server);
        let n = run.ic.handle_server_tls(&run.to_ic_from_server);
        run.to_ic_from_server.drain(..n);
        taken_total += n;
        // Server side keeps being served, the client side is never polled.
        let _ = run.ic.poll_server_tls(&mut Vec::new());
        run.ic.drain_plaintext(|_, _| {});
    }
    assert!(
        !run.ic.wants_server_tls(),
        "interception must stop wanting server bytes"
    );
    assert!(
        taken_total < 1 << 20,
        "took {taken_total} bytes without a draining client"
    );
    // Draining the client resumes the flow and everything arrives.
    run.drain_tap = true;
    run.run();
    assert_eq!(run.client.received, pattern(4 << 20, 9));
}

#[test]
fn no_sni_uses_server_ip() {
    let s = setup(RejectPolicy::Block);
    let client = Peer::client(
        client_config(&[s.forger.ca_cert_der().clone()], &[]),
        "192.0.2.10",
    );
    let server = Peer::server(server_config(s.testbed.leaf(), &[], &both()));
    let ic = Interception::new(
        s.cfg.clone(),
        Some(IpAddr::from(SERVER_IP)),
        std::time::SystemTime::now(),
    );
    let mut run = Run::new(client, server, ic);
    run.client.to_send = b"hello".to_vec();
    run.run();
    assert!(run
        .events
        .iter()
        .any(|e| matches!(e, Event::ClientHello { sni: None, .. })));
    assert!(run.established(), "events: {:?}", run.events);
    assert_eq!(run.server.received, b"hello");
}

#[test]
fn garbage_from_client_is_an_error_not_a_panic() {
    let s = setup(RejectPolicy::Block);
    let mut ic = Interception::new(s.cfg.clone(), None, std::time::SystemTime::now());
    let n = ic.handle_client_tls(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(n > 0);
    assert!(ic.is_done());
    assert!(matches!(
        ic.poll_event(),
        Some(Event::Error {
            side: Side::Client,
            ..
        })
    ));
    let mut out = Vec::new();
    let _ = ic.poll_client_tls(&mut out);
}

#[test]
fn server_eof_without_close_notify_is_not_made_clean() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    run.server.to_send = b"partial".to_vec();
    run.run();
    assert!(run.established());
    run.ic.handle_server_eof();
    run.run();
    assert!(
        run.events.contains(&Event::Closed {
            by: Side::Server,
            clean: false
        }),
        "{:?}",
        run.events
    );
    assert_eq!(run.client.received, b"partial");
    assert!(
        !run.client.eof,
        "the client must not see a clean close_notify (truncation stays visible)"
    );
}

#[test]
fn undrained_tap_stalls_the_relay_instead_of_losing_bytes() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    run.drain_tap = false;
    run.client.to_send = pattern(1 << 20, 2);
    run.run();
    assert!(run.established());
    assert!(
        run.server.received.len() <= tls::pair::DEFAULT_TAP_LIMIT + 64 * 1024,
        "relayed {} bytes past a full tap",
        run.server.received.len()
    );
    run.drain_tap = true;
    run.run();
    assert_eq!(run.server.received, pattern(1 << 20, 2));
    assert_eq!(run.tap_c2s, pattern(1 << 20, 2), "no byte lost from the mirror");
}

#[test]
fn garbage_from_server_fails_the_client_handshake() {
    let s = setup(RejectPolicy::Block);
    let mut run = session(&s, server_config(s.testbed.leaf(), &[], &both()), &[]);
    // Deliver the ClientHello, then answer as a non-TLS server would.
    run.step();
    let mut junk = b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec();
    let n = run.ic.handle_server_tls(&junk);
    junk.drain(..n);
    run.server.inbox.clear();
    run.run();
    assert!(
        run.events.iter().any(|e| matches!(
            e,
            Event::Error {
                side: Side::Server,
                ..
            }
        )),
        "{:?}",
        run.events
    );
    assert!(run.ic.is_done());
    assert_eq!(
        run.client.error,
        Some(rustls::Error::AlertReceived(AlertDescription::HandshakeFailure))
    );
}

#[test]
fn validity_is_judged_at_the_time_given() {
    let s = setup(RejectPolicy::Block);
    let client = Peer::client(client_config(&[s.forger.ca_cert_der().clone()], &[]), HOST);
    let server = Peer::server(server_config(s.testbed.leaf(), &[], &both()));
    // The leaf is valid for 90 days from now; judged 200 days ahead it has expired.
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(200 * 86400);
    let mut run = Run::new(client, server, Interception::new(s.cfg.clone(), None, later));
    run.run();
    assert!(
        rejected(&run.events).is_some_and(|r| r.contains("expired")),
        "{:?}",
        run.events
    );
    assert!(!run.established());
}
