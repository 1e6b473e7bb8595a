//! The server's answer to a ClientHello, as far as the wire shows it: the negotiated
//! protocol version and cipher suite, and for TLS 1.2 and older the chosen ALPN protocol.
//! TLS 1.3 encrypts everything after its ServerHello (ALPN goes in EncryptedExtensions),
//! so for TLS 1.3 the choice of ALPN is not visible to a bridge that does not intercept.
//!
//! Read from the server's first payload segment: a ServerHello is small enough to sit
//! in it whole (a post-quantum key share makes it about 1.2 KB, still under one MSS).
//! A first segment that holds less is reported as truncated and the session is logged
//! without these fields; nothing else depends on them.

use crate::client_hello::ProtocolVersion;
use crate::codec::{DecodeError, Reader};

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_SERVER_HELLO: u8 = 2;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;

/// What a ServerHello (or a HelloRetryRequest, which carries the same two choices)
/// says about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerHelloInfo {
    /// From supported_versions when present (TLS 1.3), else the legacy version field.
    pub version: ProtocolVersion,
    pub cipher_suite: u16,
    /// The ALPN protocol the server chose, when the ServerHello carries it (TLS <= 1.2).
    pub alpn: Option<String>,
}

/// Parses the ServerHello at the start of the server's first payload bytes.
pub fn parse_server_hello(first_payload: &[u8]) -> Result<ServerHelloInfo, DecodeError> {
    let mut r = Reader::new(first_payload);
    if r.u8("record content type")? != CONTENT_HANDSHAKE {
        return Err(DecodeError::Invalid("record content type (not a handshake)"));
    }
    r.u16("record version")?;
    let record_len = usize::from(r.u16("record length")?);
    let mut record = r.sub(record_len.min(r.left()), "record")?;
    if record.u8("handshake type")? != HANDSHAKE_SERVER_HELLO {
        return Err(DecodeError::Invalid("handshake type (not a ServerHello)"));
    }
    let len = record.u24("ServerHello length")?;
    let mut body = record.sub(len as usize, "ServerHello")?;
    let legacy_version = ProtocolVersion(body.u16("legacy_version")?);
    body.take(32, "random")?;
    let session_id = body.sub_u8("legacy_session_id_echo")?;
    if session_id.left() > 32 {
        return Err(DecodeError::Invalid("legacy_session_id_echo length"));
    }
    let cipher_suite = body.u16("cipher_suite")?;
    body.u8("legacy_compression_method")?;
    let mut info = ServerHelloInfo {
        version: legacy_version,
        cipher_suite,
        alpn: None,
    };
    if body.is_empty() {
        return Ok(info);
    }
    let mut exts = body.sub_u16("extensions")?;
    body.all("ServerHello")?;
    while !exts.is_empty() {
        let typ = exts.u16("extension type")?;
        let mut data = exts.sub_u16("extension data")?;
        match typ {
            EXT_SUPPORTED_VERSIONS => {
                info.version = ProtocolVersion(data.u16("supported_versions")?);
                data.all("supported_versions")?;
            }
            EXT_ALPN => {
                let mut list = data.sub_u16("ALPN list")?;
                data.all("ALPN")?;
                let name = list.sub_u8("ALPN protocol")?.rest();
                list.all("ALPN list (a server chooses one)")?;
                info.alpn = Some(String::from_utf8_lossy(name).into_owned());
            }
            _ => {}
        }
    }
    Ok(info)
}

/// The IANA name of a cipher suite, for the suites a client of this decade offers;
/// `None` for the rest (callers print the number).
pub fn cipher_suite_name(suite: u16) -> Option<&'static str> {
    Some(match suite {
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0x1304 => "TLS_AES_128_CCM_SHA256",
        0x1305 => "TLS_AES_128_CCM_8_SHA256",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xccaa => "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xc009 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xc00a => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xc023 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xc024 => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        0xc027 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xc028 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x003c => "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x003d => "TLS_RSA_WITH_AES_256_CBC_SHA256",
        0x000a => "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        _ => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const TLS13_H2: &[u8] = include_bytes!("../testdata/server_hello/openssl_tls13_h2.bin");
    const TLS12_HTTP11: &[u8] = include_bytes!("../testdata/server_hello/openssl_tls12_http11.bin");
    const TLS12: &[u8] = include_bytes!("../testdata/server_hello/openssl_tls12_noalpn.bin");

    #[test]
    fn tls13_shows_version_and_suite_but_not_its_encrypted_alpn() {
        let info = parse_server_hello(TLS13_H2).unwrap();
        assert_eq!(info.version, ProtocolVersion::TLS1_3);
        assert_eq!(
            cipher_suite_name(info.cipher_suite),
            Some("TLS_AES_256_GCM_SHA384")
        );
        assert_eq!(info.alpn, None);
    }

    #[test]
    fn tls12_shows_the_chosen_alpn() {
        let info = parse_server_hello(TLS12_HTTP11).unwrap();
        assert_eq!(info.version, ProtocolVersion::TLS1_2);
        assert_eq!(
            cipher_suite_name(info.cipher_suite),
            Some("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384")
        );
        assert_eq!(info.alpn.as_deref(), Some("http/1.1"));
        let info = parse_server_hello(TLS12).unwrap();
        assert_eq!((info.version, info.alpn), (ProtocolVersion::TLS1_2, None));
    }

    #[test]
    fn every_truncation_and_a_non_hello_is_an_error_not_a_panic() {
        for sample in [TLS13_H2, TLS12_HTTP11, TLS12] {
            // The ServerHello fills its record; any shorter prefix is missing part of it.
            let hello_end = 5 + usize::from(u16::from_be_bytes([sample[3], sample[4]]));
            for cut in 0..hello_end {
                assert!(parse_server_hello(&sample[..cut]).is_err(), "cut at {cut}");
            }
        }
        assert!(parse_server_hello(b"HTTP/1.1 200 OK\r\n").is_err());
        let mut alert = TLS12.to_vec();
        alert[0] = 21;
        assert!(parse_server_hello(&alert).is_err());
    }
}
