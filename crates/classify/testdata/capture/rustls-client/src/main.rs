use std::io::Write;
use std::sync::Arc;
#[derive(Debug)]
struct NoVerify;
impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(&self, _: &rustls::pki_types::CertificateDer<'_>, _: &[rustls::pki_types::CertificateDer<'_>], _: &rustls::pki_types::ServerName<'_>, _: &[u8], _: rustls::pki_types::UnixTime) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> { Ok(rustls::client::danger::ServerCertVerified::assertion()) }
    fn verify_tls12_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> { Ok(rustls::client::danger::HandshakeSignatureValid::assertion()) }
    fn verify_tls13_signature(&self, _: &[u8], _: &rustls::pki_types::CertificateDer<'_>, _: &rustls::DigitallySignedStruct) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> { Ok(rustls::client::danger::HandshakeSignatureValid::assertion()) }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> { rustls::crypto::aws_lc_rs::default_provider().signature_verification_algorithms.supported_schemes() }
}
fn main() {
    let port: u16 = std::env::args().nth(1).unwrap().parse().unwrap();
    let ech = std::env::args().nth(2).is_some();
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let b = if ech {
        let suite = rustls::crypto::aws_lc_rs::hpke::DH_KEM_X25519_HKDF_SHA256_AES_128;
        let key = rustls::crypto::hpke::HpkePublicKey(vec![7u8; 32]);
        b.with_ech(rustls::client::EchMode::Grease(rustls::client::EchGreaseConfig::new(suite, key))).unwrap()
    } else { b.with_safe_default_protocol_versions().unwrap() };
    let mut cfg = b.dangerous().with_custom_certificate_verifier(Arc::new(NoVerify)).with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), if ech { "ech.example" } else { "pq.example" }.try_into().unwrap()).unwrap();
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut buf = Vec::new();
    conn.write_tls(&mut buf).unwrap();
    sock.write_all(&buf).unwrap();
    eprintln!("sent {} bytes", buf.len());
}
