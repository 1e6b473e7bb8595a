//! End-to-end tests of plaintext mirroring (`[mirror] plaintext = true`): a plain HTTP
//! download through the bridge appears on the mirror TAP and in the mirror pcap byte for
//! byte as on the wire, TLS flows do not appear, and a TAP that disappears mid-run is
//! counted while the traffic goes on.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// The TCP frames of `frames` to or from `port`.
fn tcp_port(frames: &[Vec<u8>], port: u16) -> Vec<Vec<u8>> {
    frames
        .iter()
        .filter(|f| {
            let Ok(p) = etherparse::SlicedPacket::from_ethernet(f) else {
                return false;
            };
            matches!(&p.transport, Some(etherparse::TransportSlice::Tcp(t))
                if t.source_port() == port || t.destination_port() == port)
        })
        .cloned()
        .collect()
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

    let wire_pcap = dir.0.join("wire.pcap");
    let tap_pcap = dir.0.join("tap.pcap");
    let mut wire = capture(&tb, &tb.s("server_ns"), "s0", &wire_pcap, "tcp");
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
    );
    assert!(tls.status.success(), "{}", String::from_utf8_lossy(&tls.stderr));

    std::thread::sleep(Duration::from_millis(500));
    stop_capture(&mut wire);
    stop_capture(&mut tap);
    let stats = bridge.stats();
    bridge.stop();

    let on_wire = tcp_port(&read_pcap(&wire_pcap), 8080);
    let on_tap = tcp_port(&read_pcap(&tap_pcap), 8080);
    let in_pcap = tcp_port(&read_pcap(&dir.0.join("mirror.pcap")), 8080);
    assert!(on_wire.len() > 1000, "the download took {} frames", on_wire.len());
    assert_same_frames(&on_wire, &on_tap, "wire (server side) vs mirror TAP");
    assert_same_frames(&on_tap, &in_pcap, "mirror TAP vs mirror pcap");
    assert!(
        tcp_port(&read_pcap(&tap_pcap), 443).is_empty(),
        "a TLS session is not plaintext: nothing of it on the mirror"
    );
    assert_eq!(u(&stats, &["mirror", "frames_dropped_queue_full"]), 0, "{stats}");
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
    let _http = HttpServer::start(&tb, &www, 8080);
    let mut bridge = tb.start_bridge_with(&dir.0, &mirror_config(&dir.0), &[]);

    let got = dir.0.join("got.bin");
    let url = format!("http://{}:8080/file.bin", tb.s("server_ip"));
    // About 2 s long, so the TAP goes away in the middle of it.
    let mut curl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &tb.s("client_ns"),
            "curl",
            "-sS",
            "--max-time",
            "30",
            "--limit-rate",
            "2M",
            "-o",
        ])
        .arg(&got)
        .arg(&url)
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(700));
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
