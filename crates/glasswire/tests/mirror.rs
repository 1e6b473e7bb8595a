//! End-to-end tests of plaintext mirroring (`[mirror] plaintext = true`): a plain HTTP
//! download through the bridge appears on the mirror TAP and in the mirror pcap byte for
//! byte as on the wire, TLS flows do not appear, and a TAP that disappears mid-run is
//! counted while the traffic goes on.

mod common;

use common::tls::{intercept_pki, start_www_nginx};
use common::*;
use std::path::Path;
use std::time::Duration;

/// The TCP frames of `frames` whose (source port, destination port) `keep` accepts.
fn tcp_frames(frames: &[Vec<u8>], keep: impl Fn(u16, u16) -> bool) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| {
            let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) else {
                return false;
            };
            matches!(&p.transport, Some(etherparse::TransportSlice::Tcp(t))
                if keep(t.source_port(), t.destination_port()))
        })
        .cloned()
        .collect()
}

/// The TCP frames of `frames` to or from `port`.
fn tcp_port(frames: &[Vec<u8>], port: u16) -> Vec<Vec<u8>> {
    tcp_frames(frames, |src, dst| src == port || dst == port)
}

/// Waits until the sessions are over and the mirror thread has written every frame it
/// was given (unchanged over two looks), and returns the stats then: the last frames of
/// a session (its FIN, the last ACK) reach the mirror when the session ends, which on a
/// loaded machine can be well after the client has its file.
fn mirror_drained(bridge: &Bridge) -> serde_json::Value {
    settled(bridge, "the mirror's drain", |stats| {
        let active = stats["intercept"]["active"].as_u64().unwrap_or(0);
        let queued = u(stats, &["mirror", "frames_queued"]);
        let written = u(stats, &["mirror", "frames_written"]);
        (active == 0 && queued == written).then_some(written)
    })
}

/// Every sink of the mirror wrote every frame: none dropped, no write error.
fn assert_sinks_clean(stats: &serde_json::Value) {
    let sinks = stats["mirror"]["sinks"].as_object().expect("mirror sinks");
    assert!(!sinks.is_empty(), "{stats}");
    for (name, s) in sinks {
        assert_eq!(s["dropped"].as_u64(), Some(0), "sink {name}: {stats}");
        assert_eq!(s["errors"].as_u64(), Some(0), "sink {name}: {stats}");
    }
    assert_eq!(u(stats, &["mirror", "frames_dropped_queue_full"]), 0, "{stats}");
}

fn mirror_config(dir: &Path) -> String {
    format!(
        "[mirror]\nplaintext = true\ntap = \"mirror0\"\npcap = \"{}\"\n",
        dir.join("mirror.pcap").display()
    )
}

fn plaintext_download_is_mirrored_as_on_the_wire(prefix: &str, extra: &[&str]) {
    if !can_run(&["curl", "python3", "tcpdump", "nginx", "openssl"]) {
        return;
    }
    let tb = Testbed::up(prefix);
    let dir = Scratch::new(prefix);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let want = random_file(&www.join("file.bin"), 2);
    std::fs::write(www.join("index.html"), "hello\n").expect("index");
    let _http = HttpServer::start(&tb, &www, 8080);
    let _nginx = Nginx::start(&tb, &dir.0);
    let mut bridge = tb.start_bridge_with(&dir.0, &mirror_config(&dir.0), extra);

    // The mirror shows what crossed the bridge: the client's frames as they reach the
    // server, the server's as they reach the client (a frame lost on its way in, e.g. to
    // a full ring on a loaded machine, was never forwarded and its retransmission was).
    let server_pcap = dir.0.join("server.pcap");
    let client_pcap = dir.0.join("client.pcap");
    let tap_pcap = dir.0.join("tap.pcap");
    let mut server_side = capture(&tb, &tb.s("server_ns"), &tb.s("server_if"), &server_pcap, "tcp");
    let mut client_side = capture(&tb, &tb.s("client_ns"), &tb.s("client_if"), &client_pcap, "tcp");
    let mut tap = capture(&tb, &tb.s("bridge_ns"), "mirror0", &tap_pcap, "tcp");

    let got = dir.0.join("got.bin");
    let url = format!("http://{}:8080/file.bin", tb.s("server_ip"));
    let out = tb.client(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-o",
        got.to_str().expect("path"),
        &url,
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&got), want, "the download through the bridge");
    // A TLS session (bypassed): not plaintext, so not mirrored.
    let tls = curl_tls(
        &tb,
        &dir.0,
        "ok.example",
        &tb.s("server_ip"),
        443,
        "index.html",
        &dir.0.join("tls.out"),
        &[],
    );
    assert!(tls.status.success(), "{}", String::from_utf8_lossy(&tls.stderr));

    let stats = mirror_drained(&bridge);
    assert_sinks_clean(&stats);
    std::thread::sleep(Duration::from_millis(300));
    stop_capture(&mut server_side);
    stop_capture(&mut client_side);
    stop_capture(&mut tap);
    bridge.stop();

    let mut crossed = tcp_frames(&read_pcap(&server_pcap), |_, dst| dst == 8080);
    crossed.extend(tcp_frames(&read_pcap(&client_pcap), |src, _| src == 8080));
    let on_tap = tcp_port(&read_pcap(&tap_pcap), 8080);
    let in_pcap = tcp_port(&read_pcap(&dir.0.join("mirror.pcap")), 8080);
    assert!(crossed.len() > 1000, "the download took {} frames", crossed.len());
    assert_same_frames(&crossed, &on_tap, "frames that crossed the bridge vs mirror TAP");
    assert_same_frames(&on_tap, &in_pcap, "mirror TAP vs mirror pcap");
    assert!(
        tcp_port(&read_pcap(&tap_pcap), 443).is_empty(),
        "a TLS session is not plaintext: nothing of it on the mirror"
    );
}

#[test]
fn plaintext_http_on_the_mirror_is_byte_identical_fast_path() {
    plaintext_download_is_mirrored_as_on_the_wire("e2emirf", &[]);
}

#[test]
fn plaintext_http_on_the_mirror_is_byte_identical_userspace_forward() {
    plaintext_download_is_mirrored_as_on_the_wire("e2emiru", &["--userspace-forward"]);
}

#[test]
fn a_mirror_tap_deleted_mid_run_is_counted_and_the_download_completes() {
    if !can_run(&["curl", "python3"]) {
        return;
    }
    let tb = Testbed::up("e2emird");
    let dir = Scratch::new("e2emird");
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let want = random_file(&www.join("file.bin"), 4);
    // A server that paces its answer (64 KiB every 60 ms, about 4 s): the frames cross the
    // bridge at that pace whatever the client's buffers, so the TAP goes away mid-stream.
    let code = format!(
        "import socket, time\n\
         data = open({file:?}, 'rb').read()\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(({ip:?}, 8081))\n\
         s.listen(1)\n\
         c, _ = s.accept()\n\
         c.recv(4096)\n\
         c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n' % len(data))\n\
         for i in range(0, len(data), 65536):\n    c.sendall(data[i:i + 65536])\n    time.sleep(0.06)\n\
         c.close()\n",
        file = www.join("file.bin").display().to_string(),
        ip = tb.s("server_ip"),
    );
    let _server = common::tls::KillOnDrop(tb.spawn_in(&tb.s("server_ns"), &["python3", "-c", &code]));
    let mut bridge = tb.start_bridge_with(&dir.0, &mirror_config(&dir.0), &[]);

    let got = dir.0.join("got.bin");
    let url = format!("http://{}:8081/file.bin", tb.s("server_ip"));
    let mut curl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.s("client_ns"),
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--retry",
            "5",
            "--retry-connrefused",
            "--retry-delay",
            "1",
            "-o",
        ])
        .arg(&got)
        .arg(&url)
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(1500));
    run_ok(&["ip", "-n", &tb.s("bridge_ns"), "link", "del", "mirror0"]);
    let status = curl.wait().expect("curl");
    assert!(status.success(), "curl failed after the mirror TAP was deleted");
    assert_eq!(sha256_file(&got), want);
    std::thread::sleep(Duration::from_millis(300));
    let stats = bridge.stats();
    let tap = stats["mirror"]["sinks"]
        .as_object()
        .and_then(|m| {
            m.iter()
                .find(|(name, _)| name.contains("mirror0"))
                .map(|(_, v)| v.clone())
        })
        .unwrap_or_else(|| panic!("no mirror0 sink in the stats: {stats}"));
    assert!(
        tap["frames"].as_u64().unwrap_or(0) > 0,
        "frames reached the TAP first: {tap}"
    );
    assert!(
        tap["errors"].as_u64().unwrap_or(0) + tap["dropped"].as_u64().unwrap_or(0) > 0,
        "the frames after the TAP went away are counted: {tap}"
    );
    let status = bridge.stop().expect("running");
    assert!(status.success(), "the bridge exits cleanly: {status}");
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .filter_map(|i| u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok())
        .collect()
}

/// Both directions of TCP stream `n` in `pcap`, reassembled by tshark.
fn tshark_follow(pcap: &Path, n: usize) -> (Vec<u8>, Vec<u8>) {
    let out = run_ok(&[
        "tshark",
        "-r",
        pcap.to_str().expect("path"),
        "-q",
        "-z",
        &format!("follow,tcp,raw,{n}"),
    ]);
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let mut body = false;
    for line in out.lines() {
        if line.starts_with("Node 1:") {
            body = true;
            continue;
        }
        if !body || line.starts_with("====") || line.is_empty() {
            continue;
        }
        match line.strip_prefix('\t') {
            Some(hex) => s2c.extend(unhex(hex.trim())),
            None => c2s.extend(unhex(line.trim())),
        }
    }
    (c2s, s2c)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_intercepted_https_download_is_mirrored_as_plain_http() {
    if !can_run(&["curl", "tcpdump", "nginx", "openssl", "tshark", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2emirx");
    let dir = Scratch::new("e2emirx");
    intercept_pki(&dir.0);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let want = random_file(&www.join("file.bin"), 5);
    std::fs::write(www.join("index.html"), "hello over h2\n").expect("index");
    let _nginx = start_www_nginx(&tb, &dir.0);
    let d = dir.0.display();
    let config = format!(
        "[intercept]\nca_cert = \"{d}/ica/ca.crt\"\nca_key = \"{d}/ica/ca.key\"\nupstream_ca_file = \"{d}/www-ca.pem\"\nsystem_roots = false\n\n\
         [mirror]\ntap = \"mirror0\"\npcap = \"{d}/mirror.pcap\"\ndecrypted_port_remap = [[443, 80]]\n\
         # Room for the whole download: this test is about what the mirror shows, not\n\
         # about a mirror that cannot keep up (that one drops and counts).\nqueue_frames = 65536\n\n\
         [[policy.rule]]\nname = \"inspect\"\nsni = [\"*.test\"]\naction = \"intercept\"\n"
    );
    let mut bridge = tb.start_bridge_with(&dir.0, &config, &[]);
    let tap_pcap = dir.0.join("tap.pcap");
    let mut tap = capture(&tb, &tb.s("bridge_ns"), "mirror0", &tap_pcap, "tcp");

    let resolve = format!("www.test:443:{}", tb.s("server_ip"));
    let ica = format!("{d}/ica/ca.crt");
    let got = dir.0.join("got.bin");
    let out = tb.client(&[
        "curl",
        "-sS",
        "--http1.1",
        "--max-time",
        "30",
        "--cacert",
        &ica,
        "--resolve",
        &resolve,
        "-o",
        got.to_str().expect("path"),
        "https://www.test/file.bin",
    ]);
    assert!(
        out.status.success(),
        "curl through the interception: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_file(&got), want);
    let h2 = tb.client(&[
        "curl",
        "-sS",
        "--http2",
        "--max-time",
        "10",
        "--cacert",
        &ica,
        "--resolve",
        &resolve,
        "https://www.test/index.html",
    ]);
    assert!(
        h2.status.success(),
        "curl --http2: {}",
        String::from_utf8_lossy(&h2.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&h2.stdout), "hello over h2\n");
    let stats = mirror_drained(&bridge);
    assert_eq!(u(&stats, &["intercept", "established"]), 2, "{stats}");
    assert_sinks_clean(&stats);
    std::thread::sleep(Duration::from_millis(300));
    stop_capture(&mut tap);
    bridge.stop();

    let pcap = dir.0.join("mirror.pcap");
    // The HTTP/1.1 exchange, byte for byte: the request as curl sent it, the response
    // whose body is the served file. No TLS record byte.
    let (request, response) = tshark_follow(&pcap, 0);
    assert!(
        request.starts_with(b"GET /file.bin HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&request[..request.len().min(80)])
    );
    let head_end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response headers")
        + 4;
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        sha256_hex(&response[head_end..]),
        want,
        "the mirrored response body is the served file"
    );
    // No lost or retransmitted segments, no bad checksums anywhere in the mirror.
    let flagged = run_ok(&[
        "tshark",
        "-r",
        pcap.to_str().expect("path"),
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-Y",
        "tcp.analysis.flags || tcp.checksum.status == \"Bad\" || ip.checksum.status == \"Bad\"",
    ]);
    assert!(flagged.trim().is_empty(), "tshark flags the mirror:\n{flagged}");
    // HTTP/2 over TLS is mirrored as h2c that tshark decodes to the requested path.
    let paths = run_ok(&[
        "tshark",
        "-r",
        pcap.to_str().expect("path"),
        "-d",
        "tcp.port==80,http2",
        "-Y",
        "http2.header",
        "-T",
        "fields",
        "-e",
        "http2.headers.path",
    ]);
    assert!(
        paths.lines().any(|l| l.contains("/index.html")),
        "tshark's HTTP/2 paths: {paths:?}"
    );
    // The TAP saw what the pcap holds.
    let in_pcap = read_pcap(&pcap);
    let on_tap = read_pcap(&tap_pcap);
    assert!(in_pcap.len() > 1000);
    assert_same_frames(&in_pcap, &on_tap, "mirror pcap vs mirror TAP");
}
