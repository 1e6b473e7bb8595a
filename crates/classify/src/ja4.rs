//! The JA4 TLS client fingerprint (FoxIO "JA4: TLS Client Fingerprinting", the `JA4.md`
//! technical details): `a_b_c` where
//! * `a` is protocol `t`, two-character version, `d`/`i` for SNI present/absent, the
//!   cipher and extension counts (two digits each, capped at 99) and the first and last
//!   characters of the first ALPN value;
//! * `b` is the first 12 hex digits of sha256 over the sorted cipher list;
//! * `c` likewise over the sorted extension list without SNI and ALPN, then `_` and the
//!   signature algorithms in the order sent.
//!
//! GREASE values are ignored everywhere; [`ClientHelloInfo`] has already dropped them.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::client_hello::{ext, ClientHelloInfo, ProtocolVersion, VersionFamily};

/// Returns (JA4, JA4_r) for a decoded hello.
pub(crate) fn fingerprint(info: &ClientHelloInfo) -> (String, String) {
    let version = match info.version_family {
        // An SSLv2-format hello names the version it really offers in its `version`
        // field; 0x0002 is SSL 2.0 itself.
        VersionFamily::LegacySslv2 if info.max_version == ProtocolVersion::SSL2 => "s2",
        _ => version_code(info.max_version),
    };
    let sni = if info.extensions.contains(&ext::SERVER_NAME) {
        'd'
    } else {
        'i'
    };
    let (alpn_first, alpn_last) = alpn_chars(info.alpn.first().map(Vec::as_slice));
    let a = format!(
        "t{version}{sni}{:02}{:02}{alpn_first}{alpn_last}",
        info.cipher_suites.len().min(99),
        info.extensions.len().min(99),
    );

    let mut ciphers = info.cipher_suites.clone();
    ciphers.sort_unstable();
    let b_raw = hex_list(&ciphers);

    let mut exts: Vec<u16> = info
        .extensions
        .iter()
        .copied()
        .filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN)
        .collect();
    exts.sort_unstable();
    let mut c_raw = hex_list(&exts);
    // "If there are no signature algorithms in the hello packet, then the string ends
    // without an underscore."
    if !info.signature_algorithms.is_empty() {
        c_raw.push('_');
        c_raw.push_str(&hex_list(&info.signature_algorithms));
    }

    // Empty lists hash to twelve zeros rather than sha256("").
    let b = if ciphers.is_empty() {
        "000000000000".to_owned()
    } else {
        hash12(&b_raw)
    };
    let c = if exts.is_empty() {
        "000000000000".to_owned()
    } else {
        hash12(&c_raw)
    };
    (format!("{a}_{b}_{c}"), format!("{a}_{b_raw}_{c_raw}"))
}

fn version_code(v: ProtocolVersion) -> &'static str {
    match v {
        ProtocolVersion::TLS1_3 => "13",
        ProtocolVersion::TLS1_2 => "12",
        ProtocolVersion::TLS1_1 => "11",
        ProtocolVersion::TLS1_0 => "10",
        ProtocolVersion::SSL3 => "s3",
        ProtocolVersion::SSL2 => "s2",
        _ => "00",
    }
}

/// First and last character of the first ALPN value; `00` when there is none. If either
/// end byte is not ASCII alphanumeric, the first and last hex digits of the whole value.
fn alpn_chars(first: Option<&[u8]>) -> (char, char) {
    let Some((&head, &tail)) = first.and_then(|v| v.first().zip(v.last())) else {
        return ('0', '0');
    };
    if head.is_ascii_alphanumeric() && tail.is_ascii_alphanumeric() {
        (char::from(head), char::from(tail))
    } else {
        (hex_digit(head >> 4), hex_digit(tail & 0x0f))
    }
}

fn hex_digit(nibble: u8) -> char {
    char::from_digit(u32::from(nibble), 16).unwrap_or('0')
}

fn hex_list(values: &[u16]) -> String {
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
    out
}

fn hash12(s: &str) -> String {
    let digest = Sha256::digest(s.as_bytes());
    let mut out = String::with_capacity(12);
    for byte in digest.iter().take(6) {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpn_rules_from_the_spec() {
        assert_eq!(alpn_chars(None), ('0', '0'));
        assert_eq!(alpn_chars(Some(b"")), ('0', '0'));
        assert_eq!(alpn_chars(Some(b"h2")), ('h', '2'));
        assert_eq!(alpn_chars(Some(b"http/1.1")), ('h', '1'));
        assert_eq!(alpn_chars(Some(b"x")), ('x', 'x'));
        assert_eq!(alpn_chars(Some(&[0xab])), ('a', 'b'));
        assert_eq!(alpn_chars(Some(&[0xab, 0xcd])), ('a', 'd'));
        assert_eq!(alpn_chars(Some(&[0x30, 0xab])), ('3', 'b'));
        assert_eq!(alpn_chars(Some(&[0x30, 0x31, 0xab, 0xcd])), ('3', 'd'));
        // Both ends alphanumeric: the characters themselves, whatever lies between.
        assert_eq!(alpn_chars(Some(&[0x30, 0xab, 0xcd, 0x31])), ('0', '1'));
    }

    #[test]
    fn hashes_from_the_spec() {
        assert_eq!(
            hash12("002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9"),
            "8daaf6152771"
        );
        assert_eq!(
            hash12("0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01"),
            "6d807ffa2a79"
        );
    }
}
