//! ClientHellos captured from real clients on loopback (see `testdata/README.md`) and
//! built by hand, delivered whole, byte by byte, out of order, retransmitted, across
//! records, truncated and corrupted.

use std::time::{Duration, Instant};

use classify::{
    ClientHelloAssembler, ClientHelloInfo, Config, DecodeError, GaveUp, NotTls, Progress, ProtocolVersion,
    VersionFamily, X25519MLKEM768,
};

const OPENSSL: &[u8] = include_bytes!("../testdata/openssl_s_client.bin");
const OPENSSL_TLS12_NOSNI: &[u8] = include_bytes!("../testdata/openssl_tls12_nosni.bin");
const CURL: &[u8] = include_bytes!("../testdata/curl.bin");
const PYTHON: &[u8] = include_bytes!("../testdata/python_ssl.bin");
const RUSTLS_PQ: &[u8] = include_bytes!("../testdata/rustls_pq.bin");
const RUSTLS_ECH: &[u8] = include_bytes!("../testdata/rustls_ech_grease.bin");

const CAPTURES: &[(&str, &[u8])] = &[
    ("openssl", OPENSSL),
    ("openssl_tls12_nosni", OPENSSL_TLS12_NOSNI),
    ("curl", CURL),
    ("python", PYTHON),
    ("rustls_pq", RUSTLS_PQ),
    ("rustls_ech", RUSTLS_ECH),
];

/// A typical Ethernet MSS.
const MSS: usize = 1460;

fn assembler() -> ClientHelloAssembler {
    ClientHelloAssembler::new(Config::default(), Instant::now())
}

fn feed(config: Config, segments: &[(usize, &[u8])]) -> Progress {
    let mut asm = ClientHelloAssembler::new(config, Instant::now());
    let mut last = Progress::NeedMore;
    for &(offset, bytes) in segments {
        last = asm.push(offset as u32, bytes);
    }
    last
}

fn whole(stream: &[u8]) -> Progress {
    feed(Config::default(), &[(0, stream)])
}

fn done(progress: Progress) -> ClientHelloInfo {
    match progress {
        Progress::Done(info) => *info,
        other => panic!("expected a ClientHello, got {other:?}"),
    }
}

fn segments(stream: &[u8], size: usize) -> Vec<(usize, &[u8])> {
    stream
        .chunks(size)
        .enumerate()
        .map(|(i, c)| (i * size, c))
        .collect()
}

fn alpn(info: &ClientHelloInfo) -> Vec<&str> {
    info.alpn
        .iter()
        .map(|p| std::str::from_utf8(p).expect("ascii ALPN"))
        .collect()
}

// ---------------------------------------------------------------------------------
// Real clients. Expected JA4 values were computed independently from tshark's
// dissection of the same bytes (testdata/README.md).

#[test]
fn openssl_s_client() {
    let info = done(whole(OPENSSL));
    assert_eq!(info.sni.as_deref(), Some("example.com"));
    assert_eq!(alpn(&info), ["h2", "http/1.1"]);
    assert_eq!(info.record_version, Some(ProtocolVersion::TLS1_0));
    assert_eq!(info.legacy_version, ProtocolVersion::TLS1_2);
    assert_eq!(
        info.offered_versions,
        [
            ProtocolVersion::TLS1_3,
            ProtocolVersion::TLS1_2,
            ProtocolVersion::TLS1_1,
            ProtocolVersion::TLS1_0
        ]
    );
    assert_eq!(info.version_family, VersionFamily::Tls13);
    assert_eq!(info.key_share_groups, [0x001d]);
    assert!(info.supported_groups.contains(&0x001d));
    assert!(info.signature_algorithms.contains(&0x0804));
    assert!(!info.ech_offered);
    assert!(!info.grease_seen);
    assert_eq!(info.cipher_suites.len(), 31);
    assert_eq!(info.ja4, "t13d3111h2_e8f1e7e78f70_1f22a2ca17c4");
}

#[test]
fn openssl_tls12_without_sni() {
    let info = done(whole(OPENSSL_TLS12_NOSNI));
    assert_eq!(info.sni, None);
    assert!(info.alpn.is_empty());
    assert!(info.offered_versions.is_empty());
    assert_eq!(info.max_version, ProtocolVersion::TLS1_2);
    assert_eq!(info.version_family, VersionFamily::Tls12);
    assert!(info.key_share_groups.is_empty());
    assert_eq!(info.ja4, "t12i280600_d943125447b4_e7e480e5a997");
}

#[test]
fn curl() {
    let info = done(whole(CURL));
    assert_eq!(info.sni.as_deref(), Some("test.example"));
    assert_eq!(alpn(&info), ["h2", "http/1.1"]);
    assert_eq!(info.version_family, VersionFamily::Tls13);
    assert_eq!(info.ja4, "t13d3112h2_e8f1e7e78f70_b26ce05bbdd6");
}

#[test]
fn python_ssl() {
    let info = done(whole(PYTHON));
    assert_eq!(info.sni.as_deref(), Some("py.example"));
    assert_eq!(alpn(&info), ["h2", "http/1.1"]);
    assert_eq!(info.version_family, VersionFamily::Tls13);
    assert_eq!(info.ja4, "t13d1812h2_85036bcba153_d41ae481755e");
}

#[test]
fn rustls_post_quantum_hello_spans_two_segments() {
    assert!(RUSTLS_PQ.len() > MSS, "the point of this capture");
    let info = done(whole(RUSTLS_PQ));
    assert_eq!(info.sni.as_deref(), Some("pq.example"));
    assert_eq!(alpn(&info), ["h2", "http/1.1"]);
    assert_eq!(info.key_share_groups.first(), Some(&X25519MLKEM768));
    assert_eq!(info.supported_groups.first(), Some(&X25519MLKEM768));
    assert_eq!(info.version_family, VersionFamily::Tls13);
    assert_eq!(info.ja4, "t13d1011h2_61a7ad8aa9b6_0d308c48d2a3");

    let mut asm = assembler();
    let (first, second) = RUSTLS_PQ.split_at(MSS);
    assert_eq!(asm.push(0, first), Progress::NeedMore);
    assert_eq!(done(asm.push(MSS as u32, second)), info);
}

#[test]
fn rustls_ech_grease_is_reported() {
    let info = done(whole(RUSTLS_ECH));
    assert!(info.ech_offered);
    assert!(info.extensions.contains(&classify::ext::ENCRYPTED_CLIENT_HELLO));
    assert_eq!(info.sni.as_deref(), Some("ech.example"));
    assert_eq!(info.offered_versions, [ProtocolVersion::TLS1_3]);
    assert_eq!(info.ja4, "t13d0911h2_f91f431d341e_c8ddf72c3365");
}

// ---------------------------------------------------------------------------------
// Delivery: the answer never depends on how the stream was cut or ordered.

#[test]
fn byte_at_a_time_gives_the_same_answer() {
    for (name, stream) in CAPTURES {
        let expected = whole(stream);
        let mut asm = assembler();
        for (i, byte) in stream.iter().enumerate() {
            let progress = asm.push(i as u32, std::slice::from_ref(byte));
            if i + 1 < stream.len() {
                assert_eq!(progress, Progress::NeedMore, "{name}: early answer at {i}");
            } else {
                assert_eq!(progress, expected, "{name}");
            }
        }
    }
}

#[test]
fn out_of_order_segments() {
    for (name, stream) in CAPTURES {
        let expected = whole(stream);
        for size in [1, 7, 100, 536, MSS] {
            let mut segs = segments(stream, size);
            segs.reverse();
            assert_eq!(feed(Config::default(), &segs), expected, "{name} reversed/{size}");
            // Every other segment first, then the rest.
            let (even, odd): (Vec<_>, Vec<_>) = segments(stream, size)
                .into_iter()
                .enumerate()
                .partition(|(i, _)| i % 2 == 0);
            let interleaved: Vec<_> = odd.into_iter().chain(even).map(|(_, s)| s).collect();
            if stream.len() / size <= 64 {
                assert_eq!(
                    feed(Config::default(), &interleaved),
                    expected,
                    "{name} odd-first/{size}"
                );
            }
        }
    }
}

#[test]
fn retransmitted_and_overlapping_segments() {
    // Deterministic pseudo-random cuts: each segment re-sends part of the previous one.
    let mut seed = 0x9e37_79b9_u32;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed as usize % n
    };
    for (name, stream) in CAPTURES {
        let expected = whole(stream);
        let mut segs = Vec::new();
        let mut at = 0;
        while at < stream.len() {
            let start = at.saturating_sub(next(40));
            let end = (at + 1 + next(300)).min(stream.len());
            segs.push((start, &stream[start..end]));
            // A plain duplicate now and then.
            if next(4) == 0 {
                segs.push((start, &stream[start..end]));
            }
            at = end;
        }
        assert_eq!(feed(Config::default(), &segs), expected, "{name}");
        // And the whole stream again after the answer: still the same answer.
        let mut asm = assembler();
        for &(off, bytes) in &segs {
            asm.push(off as u32, bytes);
        }
        assert_eq!(asm.push(0, stream), expected, "{name} after answer");
    }
}

#[test]
fn retransmission_with_different_bytes_gives_up() {
    let mut forged = RUSTLS_PQ[..200].to_vec();
    forged[150] ^= 0xff;
    let progress = feed(Config::default(), &[(100, &RUSTLS_PQ[100..300]), (0, &forged)]);
    assert_eq!(
        progress,
        Progress::GaveUp(GaveUp::ConflictingRetransmission { offset: 150 })
    );
}

#[test]
fn stale_segment_before_stream_start_is_trimmed() {
    // A segment starting 16 bytes before the first payload byte (wrapping offset).
    let mut bytes = vec![0xee; 16];
    bytes.extend_from_slice(OPENSSL);
    let progress = feed(Config::default(), &[((-16i32) as u32 as usize, &bytes)]);
    assert_eq!(progress, whole(OPENSSL));
}

#[test]
fn data_after_the_hello_is_ignored() {
    let mut stream = CURL.to_vec();
    stream.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x05, 1, 2, 3, 4, 5]);
    assert_eq!(whole(&stream), whole(CURL));
}

// ---------------------------------------------------------------------------------
// Records: a ClientHello split over several TLS records.

/// Re-frames the handshake messages of `stream` (one or more records) into records of
/// at most `fragment` bytes.
fn refragment(stream: &[u8], fragment: usize) -> Vec<u8> {
    let mut handshake = Vec::new();
    let mut rest = stream;
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        handshake.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    records(&handshake, [stream[1], stream[2]], fragment)
}

fn records(handshake: &[u8], version: [u8; 2], fragment: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in handshake.chunks(fragment) {
        out.extend_from_slice(&[0x16, version[0], version[1]]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[test]
fn hello_across_many_records() {
    for (name, stream) in CAPTURES {
        let expected = whole(stream);
        for fragment in [1, 3, 4, 5, 100, 1000] {
            let split = refragment(stream, fragment);
            if split.len() > Config::default().max_bytes {
                continue;
            }
            assert_eq!(whole(&split), expected, "{name}/{fragment}");
            let mut segs = segments(&split, 61);
            segs.reverse();
            assert_eq!(
                feed(Config::default(), &segs),
                expected,
                "{name}/{fragment} reversed"
            );
        }
    }
}

#[test]
fn non_handshake_record_inside_the_hello_is_malformed() {
    let split = refragment(RUSTLS_PQ, 1000);
    let mut stream = split[..1005].to_vec();
    stream.extend_from_slice(&[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]);
    assert_eq!(
        whole(&stream),
        Progress::NotTls(NotTls::Malformed(DecodeError::Invalid(
            "non-handshake record inside ClientHello"
        )))
    );
}

// ---------------------------------------------------------------------------------
// Hand-built hellos: JA4 reference vectors, legacy protocols, malformed fields.

fn u16s(values: &[u16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

fn prefixed16(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn prefixed8(body: &[u8]) -> Vec<u8> {
    let mut out = vec![body.len() as u8];
    out.extend_from_slice(body);
    out
}

fn sni_ext(name: &str) -> Vec<u8> {
    let mut entry = vec![0];
    entry.extend(prefixed16(name.as_bytes()));
    prefixed16(&entry)
}

fn alpn_ext(protocols: &[&str]) -> Vec<u8> {
    let list: Vec<u8> = protocols.iter().flat_map(|p| prefixed8(p.as_bytes())).collect();
    prefixed16(&list)
}

fn key_share_ext(shares: &[(u16, usize)]) -> Vec<u8> {
    let mut list = Vec::new();
    for &(group, len) in shares {
        list.extend(group.to_be_bytes());
        list.extend(prefixed16(&vec![0x42; len]));
    }
    prefixed16(&list)
}

/// A ClientHello handshake message (header included).
fn client_hello(legacy_version: u16, ciphers: &[u16], exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = legacy_version.to_be_bytes().to_vec();
    body.extend([0x11; 32]);
    body.extend(prefixed8(&[0x22; 32]));
    body.extend(prefixed16(&u16s(ciphers)));
    body.extend(prefixed8(&[0]));
    if !exts.is_empty() {
        let mut list = Vec::new();
        for (typ, data) in exts {
            list.extend(typ.to_be_bytes());
            list.extend(prefixed16(data));
        }
        body.extend(prefixed16(&list));
    }
    let mut msg = vec![1];
    msg.extend(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend(body);
    msg
}

const SIG_ALGS: &[u16] = &[0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601];
const CHROME_CIPHERS: &[u16] = &[
    0x1301, 0x1302, 0x1303, 0xc02b, 0xc02f, 0xc02c, 0xc030, 0xcca9, 0xcca8, 0xc013, 0xc014, 0x009c, 0x009d,
    0x002f, 0x0035,
];

fn ext_body(typ: u16) -> Vec<u8> {
    match typ {
        0x0000 => sni_ext("www.example.com"),
        0x0010 => alpn_ext(&["h2", "http/1.1"]),
        0x000d => prefixed16(&u16s(SIG_ALGS)),
        0x002b => prefixed8(&u16s(&[0x3a3a, 0x0304, 0x0303])),
        0x000a => prefixed16(&u16s(&[0x3a3a, X25519MLKEM768, 0x001d, 0x0017, 0x0018])),
        0x0033 => key_share_ext(&[(0x3a3a, 1), (X25519MLKEM768, 1216), (0x001d, 32)]),
        0x0015 => vec![0; 20],
        0xfe0d => vec![0, 0, 1, 0, 1, 0x7f, 0, 0x20, 0x55, 0, 0],
        _ => Vec::new(),
    }
}

/// The example of the JA4 specification (FoxIO `technical_details/JA4.md`): its cipher,
/// extension and signature-algorithm lists in their original order.
#[test]
fn ja4_specification_example() {
    let exts: Vec<(u16, Vec<u8>)> = [
        0x001b, 0x0000, 0x0033, 0x0010, 0x4469, 0x0017, 0x002d, 0x000d, 0x0005, 0x0023, 0x0012, 0x002b,
        0xff01, 0x000b, 0x000a, 0x0015,
    ]
    .into_iter()
    .map(|t| (t, ext_body(t)))
    .collect();
    let hs = client_hello(0x0303, CHROME_CIPHERS, &exts);
    let info = done(whole(&records(&hs, [3, 1], 1 << 14)));
    assert_eq!(info.ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1");
    assert_eq!(
        info.ja4_raw,
        "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,\
         cca9_0005,000a,000b,000d,0012,0015,0017,001b,0023,002b,002d,0033,4469,ff01_0403,\
         0804,0401,0503,0805,0501,0806,0601"
    );
}

/// A Chrome-shaped hello: GREASE in ciphers, extensions, groups, key shares and versions,
/// an X25519MLKEM768 key share and ECH; its JA4 as a public fingerprint service reported
/// it for Chrome 143.
fn chrome_like() -> Vec<u8> {
    let mut exts: Vec<(u16, Vec<u8>)> = vec![(0x2a2a, Vec::new())];
    exts.extend(
        [
            0x002d, 0x0033, 0x0010, 0xfe0d, 0x0017, 0x44cd, 0x0000, 0x000b, 0x000a, 0x002b, 0xff01, 0x0023,
            0x0012, 0x0005, 0x000d, 0x001b,
        ]
        .into_iter()
        .map(|t| (t, ext_body(t))),
    );
    exts.push((0x4a4a, vec![0]));
    let mut ciphers = vec![0x8a8a];
    ciphers.extend_from_slice(CHROME_CIPHERS);
    client_hello(0x0303, &ciphers, &exts)
}

#[test]
fn chrome_like_post_quantum_hello_with_grease_and_ech() {
    let stream = records(&chrome_like(), [3, 1], 1 << 14);
    assert!(stream.len() > MSS);
    let info = done(feed(Config::default(), &segments(&stream, MSS)));
    assert_eq!(info.ja4, "t13d1516h2_8daaf6152771_d8a2da3f94cd");
    assert!(info.grease_seen);
    assert!(info.ech_offered);
    assert_eq!(info.sni.as_deref(), Some("www.example.com"));
    assert_eq!(info.key_share_groups, [X25519MLKEM768, 0x001d]);
    assert_eq!(info.supported_groups, [X25519MLKEM768, 0x001d, 0x0017, 0x0018]);
    assert_eq!(
        info.offered_versions,
        [ProtocolVersion::TLS1_3, ProtocolVersion::TLS1_2]
    );
    assert_eq!(info.cipher_suites, CHROME_CIPHERS);
    assert_eq!(info.extensions.len(), 16);
    assert_eq!(info.signature_algorithms, SIG_ALGS);
}

#[test]
fn ssl3_hello_is_recognised() {
    let hs = client_hello(0x0300, &[0x000a, 0x0005, 0x00ff], &[]);
    let info = done(whole(&records(&hs, [3, 0], 1 << 14)));
    assert_eq!(info.version_family, VersionFamily::Ssl3);
    assert!(info.version_family.is_legacy_ssl());
    assert_eq!(info.record_version, Some(ProtocolVersion::SSL3));
    assert!(info.extensions.is_empty());
    assert!(info.ja4.starts_with("ts3i0300"), "{}", info.ja4);
    assert!(info.ja4.ends_with("_000000000000"), "{}", info.ja4);
}

/// An SSLv2-format CLIENT-HELLO (RFC 5246 Appendix E.2) offering TLS 1.0, as old
/// OpenSSL sent with SSLv23 methods.
fn sslv2_hello(version: u16) -> Vec<u8> {
    let specs: &[[u8; 3]] = &[
        [0x00, 0x00, 0x39],
        [0x00, 0x00, 0x2f],
        [0x07, 0x00, 0xc0],
        [0x00, 0x00, 0xff],
    ];
    let mut body = vec![1];
    body.extend(version.to_be_bytes());
    body.extend((specs.len() as u16 * 3).to_be_bytes());
    body.extend(0u16.to_be_bytes());
    body.extend(16u16.to_be_bytes());
    body.extend(specs.iter().flatten());
    body.extend([0x5a; 16]);
    let mut out = ((body.len() as u16) | 0x8000).to_be_bytes().to_vec();
    out.extend(body);
    out
}

#[test]
fn sslv2_compatible_hello_is_recognised() {
    let stream = sslv2_hello(0x0301);
    let info = done(whole(&stream));
    assert_eq!(info.version_family, VersionFamily::LegacySslv2);
    assert!(info.version_family.is_legacy_ssl());
    assert_eq!(info.record_version, None);
    assert_eq!(info.legacy_version, ProtocolVersion::TLS1_0);
    assert_eq!(info.cipher_suites, [0x0039, 0x002f, 0x00ff]);
    assert_eq!(info.sni, None);
    assert!(info.ja4.starts_with("t10i0300"), "{}", info.ja4);
    // Byte by byte too.
    let mut asm = assembler();
    let mut last = Progress::NeedMore;
    for (i, b) in stream.iter().enumerate() {
        last = asm.push(i as u32, std::slice::from_ref(b));
    }
    assert_eq!(last, Progress::Done(Box::new(info)));

    let ssl2 = done(whole(&sslv2_hello(0x0002)));
    assert!(ssl2.ja4.starts_with("ts2i"), "{}", ssl2.ja4);
}

// ---------------------------------------------------------------------------------
// Not TLS, hostile and truncated input.

#[test]
fn http_is_not_tls_from_the_first_byte() {
    let mut asm = assembler();
    assert_eq!(
        asm.push(0, b"G"),
        Progress::NotTls(NotTls::NotHandshake { first_byte: b'G' })
    );
    assert_eq!(asm.poll_timeout(), None);
    assert_eq!(asm.heap_bytes(), 0);
    assert_eq!(
        whole(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"),
        Progress::NotTls(NotTls::NotHandshake { first_byte: b'G' })
    );
    assert_eq!(
        whole(b"\x16\x01\x00"),
        Progress::NotTls(NotTls::RecordVersion { major: 1 })
    );
    // A handshake record that does not start with a ClientHello.
    assert_eq!(
        whole(&[0x16, 3, 1, 0, 4, 2, 0, 0, 0]),
        Progress::NotTls(NotTls::NotClientHello { msg_type: 2 })
    );
}

#[test]
fn every_prefix_of_a_hello_needs_more() {
    for (name, stream) in CAPTURES {
        for len in 0..stream.len() {
            assert_eq!(whole(&stream[..len]), Progress::NeedMore, "{name}[..{len}]");
        }
    }
}

fn malformed(e: DecodeError) -> Progress {
    Progress::NotTls(NotTls::Malformed(e))
}

/// Rewrites the hello body of a single-record capture and fixes up both outer lengths.
fn with_body(stream: &[u8], edit: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut body = stream[9..].to_vec();
    edit(&mut body);
    let mut hs = vec![1];
    hs.extend(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend(body);
    records(&hs, [3, 1], 1 << 14)
}

#[test]
fn truncated_and_oversized_fields_are_errors() {
    // Offsets inside the openssl capture's body: 2 version + 32 random + 1+32 session id.
    let ciphers_at = 2 + 32 + 1 + 32;
    // cipher_suites length claiming more than the message holds.
    let s = with_body(OPENSSL, |b| {
        b[ciphers_at..ciphers_at + 2].copy_from_slice(&[0xff, 0xfe])
    });
    assert_eq!(whole(&s), malformed(DecodeError::Truncated("cipher_suites")));
    // Odd cipher_suites length.
    let s = with_body(OPENSSL, |b| b[ciphers_at + 1] ^= 1);
    assert!(matches!(whole(&s), Progress::NotTls(NotTls::Malformed(_))));
    // Session id longer than 32.
    let s = with_body(OPENSSL, |b| b[34] = 33);
    assert!(matches!(whole(&s), Progress::NotTls(NotTls::Malformed(_))));
    // Body cut short right after the random.
    let s = with_body(OPENSSL, |b| b.truncate(34));
    assert_eq!(whole(&s), malformed(DecodeError::Truncated("legacy_session_id")));
    // Extensions block longer than what follows.
    let s = with_body(OPENSSL, |b| b.truncate(b.len() - 3));
    assert_eq!(whole(&s), malformed(DecodeError::Truncated("extensions")));
    // Trailing junk after the extensions.
    let s = with_body(OPENSSL, |b| b.push(0));
    assert_eq!(whole(&s), malformed(DecodeError::TrailingBytes("ClientHello")));

    // Record length over 2^14.
    assert_eq!(
        whole(&[0x16, 3, 1, 0x40, 0x01, 1]),
        malformed(DecodeError::Invalid("record length over 2^14"))
    );
    // Empty handshake record.
    assert_eq!(
        whole(&[0x16, 3, 1, 0, 0]),
        malformed(DecodeError::Invalid("empty handshake record"))
    );
    // Handshake length of 16 MiB: given up on as soon as the header is seen.
    assert_eq!(
        whole(&[0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
        Progress::GaveUp(GaveUp::ByteBudget { budget: 16 * 1024 })
    );
    // SSLv2 header claiming 32 KiB.
    assert_eq!(
        whole(&[0xff, 0xff, 1]),
        Progress::GaveUp(GaveUp::ByteBudget { budget: 16 * 1024 })
    );
}

#[test]
fn malformed_extensions_are_errors() {
    let hello =
        |exts: &[(u16, Vec<u8>)]| whole(&records(&client_hello(0x0303, &[0x1301], exts), [3, 1], 1 << 14));
    assert_eq!(
        hello(&[(0x0000, sni_ext("a.example")), (0x0000, sni_ext("b.example"))]),
        malformed(DecodeError::DuplicateExtension(0))
    );
    // server_name list length past the extension's end.
    let mut sni = sni_ext("a.example");
    sni[1] += 1;
    assert_eq!(
        hello(&[(0x0000, sni)]),
        malformed(DecodeError::Truncated("server_name_list"))
    );
    // Two host_names in one list.
    let mut two = vec![0];
    two.extend(prefixed16(b"a.example"));
    two.push(0);
    two.extend(prefixed16(b"b.example"));
    assert_eq!(
        hello(&[(0x0000, prefixed16(&two))]),
        malformed(DecodeError::Invalid("second host_name in server_name"))
    );
    // Control characters in the host name.
    assert_eq!(
        hello(&[(0x0000, sni_ext("a\nexample"))]),
        malformed(DecodeError::Invalid("host_name bytes"))
    );
    // Empty ALPN protocol name.
    assert_eq!(
        hello(&[(0x0010, prefixed16(&[0]))]),
        malformed(DecodeError::Invalid("empty protocol_name"))
    );
    // supported_versions with an odd list length.
    assert_eq!(
        hello(&[(0x002b, vec![3, 3, 4, 3])]),
        malformed(DecodeError::Invalid("supported_versions"))
    );
    // key_share entry whose key is longer than the list.
    assert_eq!(
        hello(&[(0x0033, prefixed16(&[0x00, 0x1d, 0x00, 0x20, 1, 2]))]),
        malformed(DecodeError::Truncated("key_exchange"))
    );
    // Unknown extensions are fine, whatever they hold.
    assert!(matches!(hello(&[(0x7777, vec![0xff; 9])]), Progress::Done(_)));
}

// ---------------------------------------------------------------------------------
// Budgets.

#[test]
fn byte_budget_exceeded_gives_up() {
    let config = Config {
        max_bytes: 1000,
        ..Config::default()
    };
    assert_eq!(
        feed(config.clone(), &[(0, RUSTLS_PQ)]),
        Progress::GaveUp(GaveUp::ByteBudget { budget: 1000 })
    );
    // A hello under the budget whose record headers push it over.
    let split = refragment(OPENSSL, 2);
    assert!(OPENSSL.len() < 1000 && split.len() > 1000);
    let mut asm = ClientHelloAssembler::new(config.clone(), Instant::now());
    let mut last = Progress::NeedMore;
    for (off, seg) in segments(&split, 100) {
        last = asm.push(off as u32, seg);
        assert!(asm.heap_bytes() <= 2 * config.max_bytes);
    }
    assert_eq!(last, Progress::GaveUp(GaveUp::ByteBudget { budget: 1000 }));
    // Bytes far past the budget are not stored.
    let mut asm = ClientHelloAssembler::new(config, Instant::now());
    assert_eq!(asm.push(1 << 20, &[0; 4096]), Progress::NeedMore);
    assert_eq!(asm.heap_bytes(), 0);
}

#[test]
fn too_many_gaps_gives_up() {
    let config = Config {
        max_ranges: 8,
        ..Config::default()
    };
    let mut asm = ClientHelloAssembler::new(config, Instant::now());
    let mut last = Progress::NeedMore;
    // Every other byte from offset 1: nine disjoint ranges.
    for i in 0..9u32 {
        last = asm.push(1 + 2 * i, &RUSTLS_PQ[(1 + 2 * i) as usize..][..1]);
    }
    assert_eq!(last, Progress::GaveUp(GaveUp::TooFragmented { max_ranges: 8 }));
}

#[test]
fn time_budget() {
    let start = Instant::now();
    let config = Config {
        max_wait: Duration::from_secs(2),
        ..Config::default()
    };
    let mut asm = ClientHelloAssembler::new(config, start);
    assert_eq!(asm.poll_timeout(), Some(start + Duration::from_secs(2)));
    assert_eq!(asm.push(0, &RUSTLS_PQ[..MSS]), Progress::NeedMore);
    assert_eq!(
        asm.handle_timeout(start + Duration::from_secs(1)),
        Progress::NeedMore
    );
    assert_eq!(
        asm.handle_timeout(start + Duration::from_secs(2)),
        Progress::GaveUp(GaveUp::Timeout)
    );
    assert_eq!(asm.poll_timeout(), None);
    // Final: the rest of the hello does not change it.
    assert_eq!(
        asm.push(MSS as u32, &RUSTLS_PQ[MSS..]),
        Progress::GaveUp(GaveUp::Timeout)
    );
}

#[test]
fn unbounded_time_budget_does_not_overflow() {
    let config = Config {
        max_wait: Duration::MAX,
        ..Config::default()
    };
    let mut asm = ClientHelloAssembler::new(config, Instant::now());
    assert_eq!(asm.poll_timeout(), None);
    assert_eq!(asm.handle_timeout(Instant::now()), Progress::NeedMore);
    assert!(matches!(asm.push(0, CURL), Progress::Done(_)));
}

#[test]
fn tiny_budgets_give_up_instead_of_waiting_forever() {
    for max_bytes in 0..4 {
        let config = Config {
            max_bytes,
            ..Config::default()
        };
        for stream in [CURL, &sslv2_hello(0x0301)[..]] {
            let mut asm = ClientHelloAssembler::new(config.clone(), Instant::now());
            assert_eq!(
                asm.push(0, stream),
                Progress::GaveUp(GaveUp::ByteBudget { budget: max_bytes }),
                "budget {max_bytes}"
            );
            assert_eq!(asm.poll_timeout(), None);
        }
    }
}
