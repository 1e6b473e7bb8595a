use super::*;
use crate::conversation::{Conversation, ConversationOptions, Direction, Endpoints, PortRemap, VlanTag};
use crate::sink::test_support::frames;
use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Command;

fn endpoints() -> Endpoints {
    Endpoints {
        client_mac: [2, 0, 0, 0, 0, 0xc],
        server_mac: [2, 0, 0, 0, 0, 5],
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        client_port: 51000,
        server_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 20)),
        server_port: 443,
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mirror-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn read_pcap(path: &Path) -> Vec<(Duration, Vec<u8>)> {
    let mut r = PcapReader::new(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        out.push((p.timestamp, p.data.into_owned()));
    }
    out
}

fn read_pcapng(path: &Path) -> Vec<(Duration, Vec<u8>)> {
    let mut r = PcapNgReader::new(File::open(path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(b) = r.next_block() {
        if let Block::EnhancedPacket(p) = b.unwrap() {
            out.push((p.timestamp, p.data.into_owned()));
        }
    }
    out
}

fn write_all(sink: &mut PcapFileSink, frames: &[(Duration, Vec<u8>)]) {
    for (ts, f) in frames {
        sink.write(*ts, f).unwrap();
    }
    sink.close().unwrap();
}

#[test]
fn pcap_round_trip() {
    let dir = tempdir("pcap");
    let want = frames(endpoints(), &ConversationOptions::default());
    let mut sink = PcapFileSink::new(PcapFileOptions::new(dir.join("a.pcap")));
    write_all(&mut sink, &want);
    assert_eq!(sink.files(), &[dir.join("a.pcap")]);
    assert_eq!(
        read_pcap(&dir.join("a.pcap")),
        want,
        "frames and µs timestamps survive"
    );
    let c = sink.counters();
    assert_eq!(c.frames, want.len() as u64);
    assert_eq!(c.errors, 0);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pcapng_round_trip() {
    let dir = tempdir("pcapng");
    let want = frames(endpoints(), &ConversationOptions::default());
    let mut opts = PcapFileOptions::new(dir.join("a.pcapng"));
    opts.format = PcapFormat::PcapNg;
    let mut sink = PcapFileSink::new(opts);
    write_all(&mut sink, &want);
    assert_eq!(read_pcapng(&dir.join("a.pcapng")), want);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unflushed_tail_is_bounded_by_the_flush_policy() {
    let dir = tempdir("flush");
    let want = frames(endpoints(), &ConversationOptions::default());
    let mut opts = PcapFileOptions::new(dir.join("a.pcap"));
    opts.flush_every_frames = 4;
    opts.flush_interval = Duration::from_secs(3600);
    let mut sink = PcapFileSink::new(opts);
    for (ts, f) in &want[..10] {
        sink.write(*ts, f).unwrap();
    }
    // Without close: what a crash would leave on disk.
    assert_eq!(read_pcap(&dir.join("a.pcap")).len(), 8);
    drop(sink);
    assert_eq!(read_pcap(&dir.join("a.pcap")).len(), 10);
    std::fs::remove_dir_all(dir).unwrap();
}

fn rotation(format: PcapFormat, ext: &str) {
    let dir = tempdir(&format!("rot-size-{ext}"));
    let want = frames(endpoints(), &ConversationOptions::default());
    let mut opts = PcapFileOptions::new(dir.join(format!("m.{ext}")));
    opts.format = format;
    opts.rotate_bytes = Some(10_000);
    let mut sink = PcapFileSink::new(opts);
    write_all(&mut sink, &want);
    let files = sink.files().to_vec();
    assert!(files.len() >= 3, "{files:?}");
    assert_eq!(files[0], dir.join(format!("m-000001.{ext}")));
    let mut got = Vec::new();
    for f in &files {
        assert!(
            std::fs::metadata(f).unwrap().len() <= 10_000,
            "{f:?} over the limit"
        );
        let part = match format {
            PcapFormat::Pcap => read_pcap(f),
            PcapFormat::PcapNg => read_pcapng(f),
        };
        assert!(!part.is_empty());
        got.extend(part);
    }
    assert_eq!(got, want);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn rotation_by_size_pcap() {
    rotation(PcapFormat::Pcap, "pcap");
}

#[test]
fn rotation_by_size_pcapng() {
    rotation(PcapFormat::PcapNg, "pcapng");
}

#[test]
fn rotation_by_frame_time() {
    let dir = tempdir("rot-time");
    let mut opts = PcapFileOptions::new(dir.join("t.pcap"));
    opts.rotate_interval = Some(Duration::from_secs(10));
    let mut sink = PcapFileSink::new(opts);
    let frame = frames(endpoints(), &ConversationOptions::default()).remove(0).1;
    let t0 = Duration::from_secs(1_700_000_000);
    // 35 s of frame time, one frame a second: files start at 0, 10, 20, 30 s.
    for s in 0..35 {
        sink.write(t0 + Duration::from_secs(s), &frame).unwrap();
    }
    sink.close().unwrap();
    let files = sink.files().to_vec();
    assert_eq!(files.len(), 4);
    let counts: Vec<usize> = files.iter().map(|f| read_pcap(f).len()).collect();
    assert_eq!(counts, vec![10, 10, 10, 5]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn unwritable_path_counts_errors_without_panicking() {
    let mut sink = PcapFileSink::new(PcapFileOptions::new("/nonexistent-dir/x/y.pcap"));
    assert!(sink.write(Duration::ZERO, &[0u8; 60]).is_err());
    assert!(sink.write(Duration::ZERO, &[0u8; 60]).is_err());
    assert_eq!(sink.counters().errors, 2);
    assert_eq!(sink.counters().frames, 0);
}

/// `Ok(false)` (after printing SKIP) when tshark is missing outside CI.
fn have_tshark() -> bool {
    if Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "tshark missing and CI=true"
    );
    eprintln!("SKIP: tshark missing");
    false
}

fn tshark(args: &[&str]) -> String {
    let out = Command::new("tshark").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn http_conversation(path: &Path, opts: &ConversationOptions) -> (Vec<u8>, Vec<u8>) {
    http_conversation_for(endpoints(), path, opts)
}

fn http_conversation_for(
    endpoints: Endpoints,
    path: &Path,
    opts: &ConversationOptions,
) -> (Vec<u8>, Vec<u8>) {
    let request =
        b"GET /index.html HTTP/1.1\r\nHost: example.test\r\nUser-Agent: mirror-test\r\n\r\n".to_vec();
    let body: Vec<u8> = (0..200_000u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize])
        .collect();
    let mut response = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n",
        body.len()
    )
    .into_bytes();
    response.extend_from_slice(&body);
    let mut c = Conversation::new(endpoints, opts).unwrap();
    let t0 = Duration::from_secs(1_700_000_000);
    let mut sink = PcapFileSink::new(PcapFileOptions::new(path));
    let mut buf = vec![0u8; c.max_frame_len()];
    let mut drain = |c: &mut Conversation, sink: &mut PcapFileSink| {
        while let Some(f) = c.poll_frame(&mut buf) {
            sink.write(f.timestamp, &buf[..f.len]).unwrap();
        }
    };
    c.push(t0, Direction::ClientToServer, &request).unwrap();
    drain(&mut c, &mut sink);
    // The response arrives in TLS-record-sized pieces, as a relay would decrypt it.
    for (i, chunk) in response.chunks(16_384).enumerate() {
        c.push(
            t0 + Duration::from_millis(10 + i as u64),
            Direction::ServerToClient,
            chunk,
        )
        .unwrap();
        drain(&mut c, &mut sink);
    }
    c.close_normal(t0 + Duration::from_secs(1), Direction::ServerToClient);
    drain(&mut c, &mut sink);
    sink.close().unwrap();
    (request, response)
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

#[test]
fn tshark_reassembles_exactly_what_was_pushed() {
    if !have_tshark() {
        return;
    }
    let dir = tempdir("tshark");
    let path = dir.join("http.pcap");
    let (request, response) = http_conversation(&path, &ConversationOptions::default());
    let p = path.to_str().unwrap();

    let follow = tshark(&["-r", p, "-q", "-z", "follow,tcp,raw,0"]);
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let mut in_body = false;
    for line in follow.lines() {
        if line.starts_with("Node 1:") {
            in_body = true;
        } else if line.starts_with("====") {
            in_body = false;
        } else if in_body {
            match line.strip_prefix('\t') {
                Some(hex) => s2c.extend(unhex(hex.trim())),
                None => c2s.extend(unhex(line.trim())),
            }
        }
    }
    assert_eq!(c2s, request, "client→server stream");
    assert_eq!(s2c.len(), response.len());
    assert!(s2c == response, "server→client stream differs");

    let complaints = tshark(&[
        "-r",
        p,
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        r#"tcp.analysis.flags || tcp.checksum.status == "Bad" || ip.checksum.status == "Bad""#,
    ]);
    assert_eq!(complaints, "", "tshark flagged frames");

    // Negative control: the same filter does flag a frame whose payload was altered.
    let bad = dir.join("bad.pcap");
    let mut frames = read_pcap(&path);
    if let Some(b) = frames[3].1.last_mut() {
        *b ^= 0xff;
    }
    let mut sink = PcapFileSink::new(PcapFileOptions::new(&bad));
    write_all(&mut sink, &frames);
    let complaints = tshark(&[
        "-r",
        bad.to_str().unwrap(),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        r#"tcp.analysis.flags || tcp.checksum.status == "Bad" || ip.checksum.status == "Bad""#,
    ]);
    assert_eq!(complaints.lines().count(), 1, "{complaints}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tshark_decodes_http_with_port_remap() {
    if !have_tshark() {
        return;
    }
    let dir = tempdir("tshark-remap");
    let path = dir.join("remap.pcap");
    let opts = ConversationOptions {
        port_remap: vec![PortRemap { from: 443, to: 80 }],
        ..Default::default()
    };
    http_conversation(&path, &opts);
    let p = path.to_str().unwrap();
    let uris = tshark(&[
        "-r",
        p,
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "http.request.uri",
    ]);
    assert_eq!(uris.trim(), "/index.html");
    let codes = tshark(&[
        "-r",
        p,
        "-Y",
        "http.response",
        "-T",
        "fields",
        "-e",
        "http.response.code",
    ]);
    assert_eq!(codes.trim(), "200");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tshark_accepts_ipv6_with_vlan_and_small_mtu() {
    if !have_tshark() {
        return;
    }
    let dir = tempdir("tshark-v6");
    let path = dir.join("v6.pcap");
    let e = Endpoints {
        client_ip: IpAddr::V6(Ipv6Addr::new(0xfd66, 0, 0, 0, 0, 0, 0, 1)),
        server_ip: IpAddr::V6(Ipv6Addr::new(0xfd66, 0, 0, 0, 0, 0, 0, 2)),
        ..endpoints()
    };
    let opts = ConversationOptions {
        mtu: 1280,
        vlan: Some(VlanTag { id: 42, pcp: 1 }),
        port_remap: vec![PortRemap { from: 443, to: 80 }],
        ..Default::default()
    };
    http_conversation_for(e, &path, &opts);
    let p = path.to_str().unwrap();
    let complaints = tshark(&[
        "-r",
        p,
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        r#"tcp.analysis.flags || tcp.checksum.status == "Bad" || !vlan || vlan.id != 42 || ipv6.plen > 1240"#,
    ]);
    assert_eq!(complaints, "", "tshark flagged frames");
    let uris = tshark(&[
        "-r",
        p,
        "-Y",
        "http.request",
        "-T",
        "fields",
        "-e",
        "http.request.uri",
    ]);
    assert_eq!(uris.trim(), "/index.html");
    std::fs::remove_dir_all(dir).unwrap();
}
