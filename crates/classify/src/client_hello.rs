//! ClientHello bodies, TLS (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2) and SSLv2-compatible
//! (RFC 5246 Appendix E.2), decoded into [`ClientHelloInfo`].

use crate::codec::{DecodeError, Reader};
use crate::ja4;

/// A protocol version as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(pub u16);

impl ProtocolVersion {
    /// SSL 2.0, as an SSLv2 CLIENT-HELLO names it.
    pub const SSL2: Self = Self(0x0002);
    /// SSL 3.0.
    pub const SSL3: Self = Self(0x0300);
    /// TLS 1.0.
    pub const TLS1_0: Self = Self(0x0301);
    /// TLS 1.1.
    pub const TLS1_1: Self = Self(0x0302);
    /// TLS 1.2.
    pub const TLS1_2: Self = Self(0x0303);
    /// TLS 1.3.
    pub const TLS1_3: Self = Self(0x0304);
}

/// Which wire format carried the hello, and the newest protocol family it offers: what a
/// policy matches "TLS version" against and blocks legacy clients by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VersionFamily {
    /// An SSLv2-format CLIENT-HELLO (whatever version it then offers): only SSLv2 itself
    /// and clients old enough to fall back to it send these.
    LegacySslv2,
    /// SSL 3.0 is the newest version offered.
    Ssl3,
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
    /// A version this parser has no name for (a draft, or something newer).
    Unknown(u16),
}

impl VersionFamily {
    /// Whether this is SSLv2-format or SSL 3.0: protocols no policy should let through
    /// unexamined.
    pub fn is_legacy_ssl(self) -> bool {
        matches!(self, Self::LegacySslv2 | Self::Ssl3)
    }

    fn of(version: ProtocolVersion) -> Self {
        match version {
            ProtocolVersion::SSL3 => Self::Ssl3,
            ProtocolVersion::TLS1_0 => Self::Tls10,
            ProtocolVersion::TLS1_1 => Self::Tls11,
            ProtocolVersion::TLS1_2 => Self::Tls12,
            ProtocolVersion::TLS1_3 => Self::Tls13,
            ProtocolVersion(v) => Self::Unknown(v),
        }
    }
}

/// Extension type codes this parser reads (IANA "TLS ExtensionType Values").
pub mod ext {
    /// server_name, RFC 6066 §3.
    pub const SERVER_NAME: u16 = 0x0000;
    /// supported_groups, RFC 8422 §5.1.1 / RFC 8446 §4.2.7.
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    /// signature_algorithms, RFC 8446 §4.2.3.
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    /// application_layer_protocol_negotiation, RFC 7301 §3.1.
    pub const ALPN: u16 = 0x0010;
    /// supported_versions, RFC 8446 §4.2.1.
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
    /// key_share, RFC 8446 §4.2.8.
    pub const KEY_SHARE: u16 = 0x0033;
    /// encrypted_client_hello, draft-ietf-tls-esni.
    pub const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
}

/// Named group X25519MLKEM768 (draft-ietf-tls-ecdhe-mlkem), the post-quantum hybrid that
/// rustls and current browsers offer by default.
pub const X25519MLKEM768: u16 = 0x11ec;

/// Whether `v` is a GREASE value (RFC 8701 §2: `0x?a?a` with both bytes equal).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// What a ClientHello tells a policy. GREASE values (RFC 8701) are left out of every list
/// here; [`ClientHelloInfo::grease_seen`] records that there were some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The wire format and newest protocol offered.
    pub version_family: VersionFamily,
    /// The version in the first record header (`None` for an SSLv2-format hello, which has
    /// no record layer).
    pub record_version: Option<ProtocolVersion>,
    /// `legacy_version` of the ClientHello (the SSLv2 hello's `version` field).
    pub legacy_version: ProtocolVersion,
    /// The supported_versions extension's list, in the client's order; empty if absent.
    pub offered_versions: Vec<ProtocolVersion>,
    /// The newest version offered: the highest in supported_versions, otherwise
    /// `legacy_version` (the rule JA4 uses).
    pub max_version: ProtocolVersion,
    /// The server_name extension's host_name, as sent.
    pub sni: Option<String>,
    /// ALPN protocol names, in the client's order.
    pub alpn: Vec<Vec<u8>>,
    /// Cipher suites, in the client's order. For an SSLv2-format hello, only the specs
    /// that map to TLS suites (first byte zero) are listed.
    pub cipher_suites: Vec<u16>,
    /// Extension types in the order sent.
    pub extensions: Vec<u16>,
    /// Whether encrypted_client_hello (0xfe0d) is present, real or GREASE: either way the
    /// SNI above may be only the outer, public name.
    pub ech_offered: bool,
    /// supported_groups, in the client's order.
    pub supported_groups: Vec<u16>,
    /// The groups the client sent key shares for.
    pub key_share_groups: Vec<u16>,
    /// signature_algorithms, in the client's order.
    pub signature_algorithms: Vec<u16>,
    /// Whether any GREASE value was left out of the lists above.
    pub grease_seen: bool,
    /// JA4 fingerprint, e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub ja4: String,
    /// JA4_r: the same with the sorted lists in clear instead of hashed.
    pub ja4_raw: String,
}

impl ClientHelloInfo {
    /// A hello carrying only what a policy looks at (server name, ALPN, newest version
    /// offered), for `glasswire policy check`, tests and fuzzing: no suites, no
    /// extensions, no fingerprint.
    pub fn with_policy_fields(sni: Option<String>, alpn: &[&str], version_family: VersionFamily) -> Self {
        let max_version = match version_family {
            VersionFamily::LegacySslv2 => ProtocolVersion::SSL2,
            VersionFamily::Ssl3 => ProtocolVersion::SSL3,
            VersionFamily::Tls10 => ProtocolVersion::TLS1_0,
            VersionFamily::Tls11 => ProtocolVersion::TLS1_1,
            VersionFamily::Tls12 => ProtocolVersion::TLS1_2,
            VersionFamily::Tls13 => ProtocolVersion::TLS1_3,
            VersionFamily::Unknown(v) => ProtocolVersion(v),
        };
        Self {
            version_family,
            record_version: Some(ProtocolVersion::TLS1_0),
            legacy_version: max_version.min(ProtocolVersion::TLS1_2),
            offered_versions: vec![max_version],
            max_version,
            sni,
            alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
            cipher_suites: Vec::new(),
            extensions: Vec::new(),
            ech_offered: false,
            supported_groups: Vec::new(),
            key_share_groups: Vec::new(),
            signature_algorithms: Vec::new(),
            grease_seen: false,
            ja4: String::new(),
            ja4_raw: String::new(),
        }
    }
}

/// Decodes a TLS ClientHello body (the handshake message after its 4-byte header).
/// `record_version` is the first record header's version, kept for the report.
pub fn parse_tls(body: &[u8], record_version: ProtocolVersion) -> Result<ClientHelloInfo, DecodeError> {
    let mut r = Reader::new(body);
    let legacy_version = ProtocolVersion(r.u16("legacy_version")?);
    r.take(32, "random")?;
    let session_id = r.sub_u8("legacy_session_id")?;
    if session_id.left() > 32 {
        return Err(DecodeError::Invalid("legacy_session_id length"));
    }
    let mut grease_seen = false;
    let suites = r.sub_u16("cipher_suites")?.u16_list("cipher_suites")?;
    if suites.is_empty() {
        return Err(DecodeError::Invalid("empty cipher_suites"));
    }
    let cipher_suites = strip_grease(suites, &mut grease_seen);
    let compression = r.sub_u8("legacy_compression_methods")?;
    if compression.is_empty() {
        return Err(DecodeError::Invalid("empty legacy_compression_methods"));
    }

    let mut info = ClientHelloInfo::bare(
        VersionFamily::Unknown(0),
        Some(record_version),
        legacy_version,
        cipher_suites,
        grease_seen,
    );

    // SSL 3.0 and some TLS 1.0 hellos end after compression methods (RFC 5246 §7.4.1.2:
    // "the presence of extensions can be detected by determining whether there are bytes
    // following the compression_methods").
    if !r.is_empty() {
        let mut list = r.sub_u16("extensions")?;
        let mut exts = Vec::new();
        while !list.is_empty() {
            let typ = list.u16("extension type")?;
            exts.push((typ, list.sub_u16("extension data")?));
        }
        // Sorted rather than pairwise, so a hello of thousands of empty extensions
        // costs n log n, not n².
        let mut types: Vec<u16> = exts.iter().map(|(typ, _)| *typ).collect();
        types.sort_unstable();
        if let Some(pair) = types.windows(2).find(|w| w.first() == w.last()) {
            let typ = pair.first().copied().unwrap_or_default();
            return Err(DecodeError::DuplicateExtension(typ));
        }
        for (typ, data) in exts {
            if is_grease(typ) {
                info.grease_seen = true;
            } else {
                info.extensions.push(typ);
            }
            parse_extension(typ, data, &mut info)?;
        }
    }
    r.all("ClientHello")?;

    info.max_version = info
        .offered_versions
        .iter()
        .copied()
        .max()
        .unwrap_or(legacy_version);
    info.version_family = VersionFamily::of(info.max_version);
    (info.ja4, info.ja4_raw) = ja4::fingerprint(&info);
    Ok(info)
}

fn parse_extension(typ: u16, mut data: Reader<'_>, info: &mut ClientHelloInfo) -> Result<(), DecodeError> {
    match typ {
        ext::SERVER_NAME => {
            // RFC 6066 §3: one name per type; only host_name (0) is defined. A second
            // host_name would let a server and this parser disagree about the name.
            let mut list = data.sub_u16("server_name_list")?;
            data.all("server_name")?;
            while !list.is_empty() {
                let name_type = list.u8("server_name type")?;
                let name = list.sub_u16("server_name")?.rest();
                if name_type != 0 {
                    continue;
                }
                if info.sni.is_some() {
                    return Err(DecodeError::Invalid("second host_name in server_name"));
                }
                if name.is_empty() || !name.iter().all(|b| b.is_ascii_graphic()) {
                    return Err(DecodeError::Invalid("host_name bytes"));
                }
                let name = std::str::from_utf8(name).map_err(|_| DecodeError::Invalid("host_name bytes"))?;
                info.sni = Some(name.to_owned());
            }
        }
        ext::ALPN => {
            let mut list = data.sub_u16("protocol_name_list")?;
            data.all("application_layer_protocol_negotiation")?;
            while !list.is_empty() {
                let name = list.sub_u8("protocol_name")?.rest();
                // RFC 7301 §3.1: "Empty strings MUST NOT be included".
                if name.is_empty() {
                    return Err(DecodeError::Invalid("empty protocol_name"));
                }
                info.alpn.push(name.to_vec());
            }
        }
        ext::SUPPORTED_VERSIONS => {
            let list = data.sub_u8("supported_versions")?;
            data.all("supported_versions")?;
            let versions = strip_grease(list.u16_list("supported_versions")?, &mut info.grease_seen);
            info.offered_versions = versions.into_iter().map(ProtocolVersion).collect();
        }
        ext::SUPPORTED_GROUPS => {
            let list = data.sub_u16("supported_groups")?;
            data.all("supported_groups")?;
            info.supported_groups = strip_grease(list.u16_list("supported_groups")?, &mut info.grease_seen);
        }
        ext::SIGNATURE_ALGORITHMS => {
            let list = data.sub_u16("signature_algorithms")?;
            data.all("signature_algorithms")?;
            info.signature_algorithms =
                strip_grease(list.u16_list("signature_algorithms")?, &mut info.grease_seen);
        }
        ext::KEY_SHARE => {
            let mut shares = data.sub_u16("client_shares")?;
            data.all("key_share")?;
            while !shares.is_empty() {
                let group = shares.u16("key_share group")?;
                shares.sub_u16("key_exchange")?;
                if is_grease(group) {
                    info.grease_seen = true;
                } else {
                    info.key_share_groups.push(group);
                }
            }
        }
        ext::ENCRYPTED_CLIENT_HELLO => info.ech_offered = true,
        _ => {}
    }
    Ok(())
}

fn strip_grease(mut values: Vec<u16>, grease_seen: &mut bool) -> Vec<u16> {
    let before = values.len();
    values.retain(|v| !is_grease(*v));
    *grease_seen |= values.len() != before;
    values
}

/// Decodes an SSLv2-format CLIENT-HELLO body: everything after the 2-byte record header,
/// starting at `msg_type` (RFC 5246 Appendix E.2).
pub fn parse_sslv2(body: &[u8]) -> Result<ClientHelloInfo, DecodeError> {
    let mut r = Reader::new(body);
    if r.u8("msg_type")? != 1 {
        return Err(DecodeError::Invalid("SSLv2 msg_type"));
    }
    let version = ProtocolVersion(r.u16("version")?);
    let spec_len = r.u16("cipher_spec_length")?;
    let session_id_len = r.u16("session_id_length")?;
    let challenge_len = r.u16("challenge_length")?;
    if spec_len == 0 || spec_len % 3 != 0 {
        return Err(DecodeError::Invalid("cipher_spec_length"));
    }
    // SSL 2.0 session ids are 16 bytes; TLS clients send none (E.2).
    if session_id_len != 0 && session_id_len != 16 {
        return Err(DecodeError::Invalid("session_id_length"));
    }
    if !(16..=32).contains(&challenge_len) {
        return Err(DecodeError::Invalid("challenge_length"));
    }
    let mut specs = r.sub(usize::from(spec_len), "cipher_specs")?;
    r.take(usize::from(session_id_len), "session_id")?;
    r.take(usize::from(challenge_len), "challenge")?;
    r.all("SSLv2 CLIENT-HELLO")?;

    let mut cipher_suites = Vec::new();
    let mut grease_seen = false;
    while !specs.is_empty() {
        let [hi, a, b] = *<&[u8; 3]>::try_from(specs.take(3, "cipher_spec")?)
            .map_err(|_| DecodeError::Truncated("cipher_spec"))?;
        // Specs with a zero first byte are TLS suites (E.2); the rest are SSL 2.0 kinds.
        if hi == 0 {
            let suite = u16::from_be_bytes([a, b]);
            if is_grease(suite) {
                grease_seen = true;
            } else {
                cipher_suites.push(suite);
            }
        }
    }
    let mut info = ClientHelloInfo::bare(
        VersionFamily::LegacySslv2,
        None,
        version,
        cipher_suites,
        grease_seen,
    );
    (info.ja4, info.ja4_raw) = ja4::fingerprint(&info);
    Ok(info)
}

impl ClientHelloInfo {
    /// A hello with what every format has (versions, suites) and no extensions yet.
    fn bare(
        version_family: VersionFamily,
        record_version: Option<ProtocolVersion>,
        legacy_version: ProtocolVersion,
        cipher_suites: Vec<u16>,
        grease_seen: bool,
    ) -> Self {
        ClientHelloInfo {
            version_family,
            record_version,
            legacy_version,
            offered_versions: Vec::new(),
            max_version: legacy_version,
            sni: None,
            alpn: Vec::new(),
            cipher_suites,
            extensions: Vec::new(),
            ech_offered: false,
            supported_groups: Vec::new(),
            key_share_groups: Vec::new(),
            signature_algorithms: Vec::new(),
            grease_seen,
            ja4: String::new(),
            ja4_raw: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        assert!(is_grease(0x0a0a));
        assert!(is_grease(0xfafa));
        assert!(!is_grease(0x0a1a));
        assert!(!is_grease(0x1301));
        assert_eq!((0..=u16::MAX).filter(|v| is_grease(*v)).count(), 16);
    }
}
