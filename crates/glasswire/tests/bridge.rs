//! End-to-end tests of the bridge: real namespaces, real veths, the real XDP program and
//! AF_XDP sockets, and real programs on both ends (ping, curl, python's http.server,
//! tcpdump). Each test builds its own testbed under its own prefix and removes it on
//! every exit path.

mod common;

use common::*;
use etherparse::PacketBuilder;
use std::collections::HashMap;
use std::time::Duration;

const SEND_FRAMES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/send_frames.py");

/// Both ports carry the XDP program in the attach mode `extra` asked for (`ip link`
/// says `xdpgeneric` for generic, `xdp` for native), and the stats say so too.
fn assert_attach_mode(tb: &Testbed, bridge: &Bridge, extra: &[&str]) {
    let generic = extra.windows(2).any(|w| w == ["--xdp-mode", "generic"]);
    for port in tb.status["ports"].as_array().expect("testbed ports") {
        let port = port.as_str().expect("port name");
        let link = run_ok(&["ip", "-n", &tb.s("bridge_ns"), "link", "show", "dev", port]);
        let flag = if generic { " xdpgeneric " } else { " xdp " };
        assert!(link.contains(flag), "{port}: no{flag}in {link}");
    }
    let want = if generic { "generic" } else { "native" };
    assert_eq!(bridge.stats()["xdp_attach"], want);
}

fn ping_both_families(tb: &Testbed) {
    for target in [tb.s("server_ip"), tb.s("server_ip6")] {
        let out = tb.client(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &target]);
        assert!(
            out.status.success(),
            "ping {target} across the bridge failed:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
}

#[test]
fn arp_nd_and_ping_cross_the_bridge_in_both_modes() {
    if !can_run(&["ping", "ethtool"]) {
        return;
    }
    let tb = Testbed::up("e2eping");
    for extra in [&[][..], &["--userspace-forward"][..]] {
        let bridge = tb.start_bridge(extra);
        // Start from empty neighbour caches so ARP and ND must cross too.
        tb.client(&["ip", "neigh", "flush", "all"]);
        tb.server(&["ip", "neigh", "flush", "all"]);
        ping_both_families(&tb);
        let neigh = String::from_utf8_lossy(&tb.client(&["ip", "neigh", "show"]).stdout).to_string();
        for ip in [tb.s("server_ip"), tb.s("server_ip6")] {
            let line = neigh
                .lines()
                .find(|l| l.starts_with(&format!("{ip} ")))
                .unwrap_or_else(|| panic!("{ip} not resolved on the client: {neigh}"));
            assert!(
                line.contains(&tb.s("server_mac")),
                "{ip} resolved to the wrong MAC: {line}"
            );
        }
        let st = bridge.stats();
        // veth has no AF_XDP zero-copy: the kernel binds copy mode, and says so.
        for w in st["workers"].as_array().expect("workers") {
            for port in ["porta", "portb"] {
                assert_eq!(u(w, &["ports", port, "xsk_zero_copy"]), 0, "{st}");
            }
        }
        let log = std::fs::read_to_string(&bridge.log).unwrap_or_default();
        assert!(
            !log.contains("reading the AF_XDP bind mode"),
            "the mode was not read: {log}"
        );
        let summary = run_ok(&[BIN, "stats", "--socket", bridge.socket.to_str().expect("path")]);
        assert!(
            summary.contains("AF_XDP sockets: 0 zero-copy, 2 copy mode"),
            "{summary}"
        );
        if extra.is_empty() {
            // ARP, ND and ICMP are not TCP: forwarded in the kernel.
            assert!(u(&st, &["totals", "fast_path_frames"]) >= 12, "{st}");
        } else {
            assert!(u(&st, &["totals", "userspace_frames"]) >= 12, "{st}");
            assert_eq!(u(&st, &["ports", "porta", "xdp", "fast_non_ip"]), 0);
            assert_eq!(u(&st, &["ports", "porta", "xdp", "fast_non_tcp"]), 0);
        }
    }
}

fn download_50mb(extra: &[&str], prefix: &str) {
    if !can_run(&["curl", "python3", "ethtool", "ss"]) {
        return;
    }
    let tb = Testbed::up(prefix);
    let bridge = tb.start_bridge(extra);
    assert_attach_mode(&tb, &bridge, extra);
    let dir = Scratch::new(prefix);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let want = random_file(&www.join("big.bin"), 50);
    let _server = HttpServer::start(&tb, &www, 8080);
    let got_path = dir.0.join("got.bin");
    for url in [
        format!("http://{}:8080/big.bin", tb.s("server_ip")),
        format!("http://[{}]:8080/big.bin", tb.s("server_ip6")),
    ] {
        let out = tb.client(&[
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "300",
            "-o",
            got_path.to_str().expect("path"),
            &url,
        ]);
        assert!(
            out.status.success(),
            "curl {url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            sha256_file(&got_path),
            want,
            "{url}: downloaded bytes differ from the served file"
        );
    }
    let st = bridge.stats();
    let porta_fast = u(&st, &["ports", "porta", "xdp", "fast_bypass"]);
    let portb_fast = u(&st, &["ports", "portb", "xdp", "fast_bypass"]);
    let user = u(&st, &["totals", "userspace_frames"]);
    if extra.contains(&"--userspace-forward") {
        assert_eq!(
            porta_fast + portb_fast,
            0,
            "userspace-forward mode used the fast path: {st}"
        );
        // 2 x 50 MB at <= 1500 bytes a frame.
        assert!(user > 70_000, "userspace saw only {user} frames: {st}");
        assert_eq!(
            u(&st, &["totals", "userspace_tx_frames"]),
            user,
            "frames lost in userspace: {st}"
        );
    } else {
        assert!(
            portb_fast > 70_000,
            "the download did not move to the fast path: {st}"
        );
        assert!(
            user > 0 && user < 1000,
            "handshakes should cross userspace, the bulk not: {st}"
        );
        assert!(
            u(&st, &["workers", "0", "bypass_verdicts"]) >= 1,
            "no bypass verdict written: {st}"
        );
    }
    assert_eq!(u(&st, &["totals", "dropped_malformed"]), 0);
}

#[test]
fn http_50mb_fast_path_hashes_match() {
    download_50mb(&[], "e2efast");
}

#[test]
fn http_50mb_userspace_forward_hashes_match() {
    download_50mb(&["--userspace-forward"], "e2euser");
}

#[test]
fn http_50mb_userspace_forward_generic_xdp_hashes_match() {
    download_50mb(&["--userspace-forward", "--xdp-mode", "generic"], "e2eugen");
}

fn frames_identical(extra: &[&str], prefix: &str) {
    if !can_run(&["tcpdump", "curl", "python3", "ping", "ss"]) {
        return;
    }
    let tb = Testbed::up(prefix);
    let bridge = tb.start_bridge(extra);
    assert_attach_mode(&tb, &bridge, extra);
    let dir = Scratch::new(prefix);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    random_file(&www.join("small.bin"), 1);
    let _server = HttpServer::start(&tb, &www, 8080);
    tb.client(&["ip", "neigh", "flush", "all"]);
    tb.server(&["ip", "neigh", "flush", "all"]);

    let cpath = dir.0.join("client.pcap");
    let spath = dir.0.join("server.pcap");
    let mut ccap = capture(
        &tb,
        &tb.s("client_ns"),
        &tb.s("client_if"),
        &cpath,
        "arp or ip or vlan",
    );
    let mut scap = capture(
        &tb,
        &tb.s("server_ns"),
        &tb.s("server_if"),
        &spath,
        "arp or ip or vlan",
    );

    // ARP (caches were flushed) and ICMP.
    assert!(tb
        .client(&["ping", "-c", "2", "-i", "0.2", &tb.s("server_ip")])
        .status
        .success());
    // TCP.
    let url = format!("http://{}:8080/small.bin", tb.s("server_ip"));
    assert!(tb
        .client(&["curl", "-sS", "--fail", "-o", "/dev/null", &url])
        .status
        .success());
    // UDP (the server answers with ICMP port unreachable).
    let udp = format!(
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor n in (1, 200, 1400): s.sendto(b'u'*n, ('{}', 9999))",
        tb.s("server_ip")
    );
    assert!(tb.client(&["python3", "-c", &udp]).status.success());
    // VLAN-tagged frames: an IPv4/UDP packet behind tag 42 and an unknown payload behind tag 7.
    let (cm, sm) = (mac(&tb.s("client_mac")), mac(&tb.s("server_mac")));
    let mut tagged = Vec::new();
    PacketBuilder::ethernet2(cm, sm)
        .single_vlan(42.try_into().expect("vid"))
        .ipv4([10, 66, 0, 1], [10, 66, 0, 2], 64)
        .udp(1111, 2222)
        .write(&mut tagged, b"vlan payload")
        .expect("frame");
    let mut odd = Vec::new();
    odd.extend_from_slice(&sm);
    odd.extend_from_slice(&cm);
    odd.extend_from_slice(&[0x81, 0x00, 0x00, 0x07, 0x88, 0xb5]);
    odd.extend_from_slice(&[0x5a; 46]);
    let sent = tb.client(&[
        "python3",
        SEND_FRAMES,
        &tb.s("client_if"),
        &hex(&tagged),
        &hex(&odd),
    ]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));

    std::thread::sleep(Duration::from_millis(800));
    stop_capture(&mut ccap);
    stop_capture(&mut scap);
    let client = read_pcap(&cpath);
    let server = read_pcap(&spath);
    assert_same_frames(&client, &server, &format!("{extra:?}"));

    // Every kind of frame the test meant to send is really in the capture.
    let kind = |f: &Vec<u8>| -> &'static str {
        match (f.get(12..14), f.get(23)) {
            (Some([0x08, 0x06]), _) => "arp",
            (Some([0x81, 0x00]), _) => "vlan",
            (Some([0x08, 0x00]), Some(1)) => "icmp",
            (Some([0x08, 0x00]), Some(6)) => "tcp",
            (Some([0x08, 0x00]), Some(17)) => "udp",
            _ => "other",
        }
    };
    for k in ["arp", "vlan", "icmp", "tcp", "udp"] {
        assert!(
            client.iter().any(|f| kind(f) == k),
            "no {k} frame crossed: the test sent one"
        );
    }
    assert!(client.iter().filter(|f| kind(f) == "vlan").count() >= 2);
    assert!(client.len() > 20, "only {} frames captured", client.len());
}

#[test]
fn frames_are_byte_identical_on_both_sides_fast_path() {
    frames_identical(&[], "e2eidf");
}

#[test]
fn frames_are_byte_identical_on_both_sides_userspace_forward() {
    frames_identical(&["--userspace-forward"], "e2eidu");
}

// The program attached in generic mode (on the skb path), in both modes.
#[test]
fn frames_are_byte_identical_on_both_sides_generic_xdp_fast_path() {
    frames_identical(&["--xdp-mode", "generic"], "e2eidgf");
}

#[test]
fn frames_are_byte_identical_on_both_sides_generic_xdp_userspace_forward() {
    frames_identical(&["--userspace-forward", "--xdp-mode", "generic"], "e2eidgu");
}

/// Frames that are wrong in one way each; returns them with the drop reason expected.
fn malformed_frames(cm: [u8; 6], sm: [u8; 6]) -> Vec<(Vec<u8>, &'static str)> {
    let mut good = Vec::new();
    PacketBuilder::ethernet2(cm, sm)
        .ipv4([10, 66, 0, 1], [10, 66, 0, 2], 64)
        .tcp(40000, 8080, 1, 1000)
        .write(&mut good, b"payload")
        .expect("frame");
    let mut good6 = Vec::new();
    let (mut c6, mut s6) = ([0u8; 16], [0u8; 16]);
    c6[0] = 0xfd;
    c6[1] = 0x66;
    c6[15] = 1;
    s6[..2].copy_from_slice(&[0xfd, 0x66]);
    s6[15] = 2;
    PacketBuilder::ethernet2(cm, sm)
        .ipv6(c6, s6, 64)
        .tcp(40000, 8080, 1, 1000)
        .write(&mut good6, b"payload")
        .expect("frame");

    let mut frames = Vec::new();
    // IPv4 EtherType with only 6 bytes of header.
    frames.push((good[..20].to_vec(), "truncated_ip"));
    // IHL 3.
    let mut f = good.clone();
    f[14] = 0x43;
    frames.push((f, "bad_ip_header"));
    // Total length 1500 in a 61-byte frame.
    let mut f = good.clone();
    f[16..18].copy_from_slice(&1500u16.to_be_bytes());
    frames.push((f, "truncated_ip"));
    // IPv6 header cut at 30 bytes.
    frames.push((good6[..14 + 30].to_vec(), "truncated_ip"));
    // TCP header cut to 8 bytes (IP total length agreeing).
    let mut f = good[..14 + 20 + 8].to_vec();
    f[16..18].copy_from_slice(&28u16.to_be_bytes());
    frames.push((f, "truncated_tcp"));
    // TCP data offset 2.
    let mut f = good.clone();
    f[14 + 20 + 12] = 0x20;
    frames.push((f, "bad_tcp_header"));
    // IPv6 EtherType carrying an IPv4 header.
    let mut f = good.clone();
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    frames.push((f, "bad_ip_header"));
    // Runt: VLAN tag cut in half.
    let mut f = good[..12].to_vec();
    f.extend_from_slice(&[0x81, 0x00, 0x00]);
    frames.push((f, "truncated_vlan"));
    frames
}

fn malformed(extra: &[&str], prefix: &str) {
    if !can_run(&["python3", "curl", "ping", "ss"]) {
        return;
    }
    let tb = Testbed::up(prefix);
    let mut bridge = tb.start_bridge(extra);
    let frames = malformed_frames(mac(&tb.s("client_mac")), mac(&tb.s("server_mac")));
    let mut argv = vec!["python3".to_string(), SEND_FRAMES.to_string(), tb.s("client_if")];
    argv.extend(frames.iter().map(|(f, _)| hex(f)));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    // Three rounds, with good traffic in between.
    for _ in 0..3 {
        let out = tb.client(&argv);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        ping_both_families(&tb);
    }
    let dir = Scratch::new(prefix);
    let want = random_file(&dir.0.join("f.bin"), 2);
    let _server = HttpServer::start(&tb, &dir.0, 8080);
    let got = dir.0.join("got.bin");
    let url = format!("http://{}:8080/f.bin", tb.s("server_ip"));
    assert!(tb
        .client(&["curl", "-sS", "--fail", "-o", got.to_str().expect("path"), &url])
        .status
        .success());
    assert_eq!(sha256_file(&got), want);

    assert!(bridge.is_running(), "the bridge died on malformed input");
    let st = bridge.stats();
    let mut want_by_reason: HashMap<&str, u64> = HashMap::new();
    for (_, r) in &frames {
        *want_by_reason.entry(r).or_default() += 3;
    }
    for (reason, n) in &want_by_reason {
        assert_eq!(
            u(&st, &["workers", "0", "ports", "porta", "parse_drops", reason]),
            *n,
            "drops counted for {reason}: {st}"
        );
    }
    assert_eq!(u(&st, &["totals", "dropped_malformed"]), 3 * frames.len() as u64);
}

#[test]
fn malformed_frames_are_counted_and_good_traffic_flows_fast_path() {
    malformed(&[], "e2emalf");
}

#[test]
fn malformed_frames_are_counted_and_good_traffic_flows_userspace_forward() {
    malformed(&["--userspace-forward"], "e2emalu");
}

#[test]
fn sigkill_then_restart_brings_the_bridge_back() {
    if !can_run(&["ping"]) {
        return;
    }
    let tb = Testbed::up("e2ekill");
    let mut bridge = tb.start_bridge(&[]);
    ping_both_families(&tb);
    bridge.kill9();
    // The kernel releases the dead process's bpf_link as it tears the process down;
    // give that a moment so the check below is about the steady state.
    std::thread::sleep(Duration::from_millis(500));
    // With the daemon gone its XDP link is gone too: the wire is cut, not left half-open.
    let out = tb.client(&["ping", "-c", "1", "-W", "1", &tb.s("server_ip")]);
    assert!(!out.status.success(), "traffic crossed with no bridge running");
    // The stale stats socket and anything else it left must not stop a restart.
    let bridge = tb.start_bridge(&[]);
    ping_both_families(&tb);
    assert!(u(&bridge.stats(), &["totals", "rx_frames"]) > 0);
}

#[test]
fn sigterm_detaches_the_program_and_removes_the_socket() {
    if !can_run(&["ping"]) {
        return;
    }
    let tb = Testbed::up("e2eterm");
    let mut bridge = tb.start_bridge(&[]);
    ping_both_families(&tb);
    let bns = tb.s("bridge_ns");
    let attached = run_ok(&["ip", "-n", &bns, "link", "show", "porta"]);
    assert!(
        attached.contains("xdp"),
        "no XDP program on porta while running: {attached}"
    );
    let status = bridge.stop().expect("bridge was running");
    assert!(status.success(), "bridge exited with {status} on SIGTERM");
    for port in ["porta", "portb"] {
        let link = run_ok(&["ip", "-n", &bns, "link", "show", port]);
        assert!(
            !link.contains("xdp"),
            "XDP program left on {port} after shutdown: {link}"
        );
    }
    assert!(!tb.stats_socket().exists(), "stats socket left behind");
}

#[test]
fn an_xdp_program_left_on_a_port_is_replaced_not_refused() {
    if !can_run(&["ping"]) {
        return;
    }
    let tb = Testbed::up("e2estale");
    // What a crashed tool of another kind leaves behind: a netlink-attached program.
    let pass_obj = format!("{}/xdp_pass.bpf.o", tb.s("state_dir"));
    run_ok(&[
        "ip",
        "-n",
        &tb.s("bridge_ns"),
        "link",
        "set",
        "dev",
        "porta",
        "xdpdrv",
        "obj",
        &pass_obj,
        "sec",
        "xdp",
    ]);
    let bridge = tb.start_bridge(&[]);
    ping_both_families(&tb);
    let log = std::fs::read_to_string(&bridge.log).expect("bridge log");
    assert!(
        log.contains("replacing it"),
        "no warning about the replaced program:\n{log}"
    );
}

/// A burst the worker cannot keep up with (a 64-slot RX ring, no idle spin, frames from
/// perf/gen.c at full speed): frames the kernel drops at the full AF_XDP ring are counted,
/// and every frame the XDP program saw is accounted for, once.
#[test]
fn frames_lost_at_a_full_rx_ring_are_counted_userspace_forward() {
    if !can_run(&["cc"]) {
        return;
    }
    let tb = Testbed::up("e2eringf");
    let dir = Scratch::new("e2eringf");
    let gen = dir.0.join("gen");
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/../../perf/gen.c");
    run_ok(&["cc", "-O2", "-o", gen.to_str().expect("path"), src]);
    // The smallest RX ring the config takes, a frame pool large enough for the flow
    // table's default budget of held frames, and a worker that sleeps in poll(2) as soon
    // as its rings are empty.
    let base = std::fs::read_to_string(tb.s("config")).expect("testbed config");
    let config = base.replacen(
        "[bridge]\n",
        "[bridge]\nring_size = 64\nframe_count = 4096\nbatch_size = 64\nidle_spin_us = 0\n",
        1,
    );
    assert_ne!(config, base, "the testbed config has a [bridge] section");
    let path = dir.0.join("glasswire.toml");
    std::fs::write(&path, config).expect("write config");
    let bridge = tb.start_bridge_argv(&["--config", path.to_str().expect("path"), "--userspace-forward"]);
    // 0.5 s of 64-byte frames, 64 per sendmmsg, to an address the server does not hold.
    let out = tb.client(&[
        gen.to_str().expect("path"),
        &tb.s("client_if"),
        &tb.s("client_mac"),
        &tb.s("server_mac"),
        &tb.s("client_ip"),
        "10.66.0.200",
        "60",
        "64",
        "0.5",
        "64",
    ]);
    assert!(
        out.status.success(),
        "gen: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The worker goes idle once the burst is over and then copies the kernel's socket
    // counters.
    let st = settled(&bridge, "the counters", |st| {
        let t = &st["totals"];
        Some((
            t["rx_frames"].as_u64(),
            t["userspace_frames"].as_u64(),
            t["dropped_xsk_rx"].as_u64(),
        ))
    });
    let t = |k: &str| u(&st, &["totals", k]);
    assert!(t("dropped_xsk_rx") > 0, "the burst never filled the ring: {st}");
    assert_eq!(
        t("rx_frames"),
        t("fast_path_frames") + t("userspace_frames") + t("dropped_xsk_rx") + t("dropped_blocked"),
        "every frame seen is forwarded, handed to userspace or counted as dropped: {st}"
    );
}
