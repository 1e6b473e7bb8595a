//! End-to-end tests of TLS detection and policy: nginx (TLS on 443, 8443 and an unusual
//! port) in the server namespace, curl in the client namespace verifying nginx's
//! certificate, the bridge between them deciding per flow from the ClientHello.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use std::time::{Duration, Instant};

const BLOCK_POLICY: &str =
    "[[policy.rule]]\nname = \"no-blocked\"\nsni = \"blocked.example\"\naction = \"block\"\n";

fn sum_workers(stats: &serde_json::Value, path: &[&str]) -> u64 {
    let n = stats["workers"].as_array().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let i = i.to_string();
            let mut full = vec!["workers", i.as_str()];
            full.extend_from_slice(path);
            u(stats, &full)
        })
        .sum()
}

/// Userspace frames received on both ports, all workers.
fn userspace_frames(stats: &serde_json::Value) -> u64 {
    sum_workers(stats, &["ports", "porta", "rx_frames"])
        + sum_workers(stats, &["ports", "portb", "rx_frames"])
}

fn fast_bypass(stats: &serde_json::Value) -> u64 {
    u(stats, &["ports", "porta", "xdp", "fast_bypass"]) + u(stats, &["ports", "portb", "xdp", "fast_bypass"])
}

#[test]
fn bypassed_tls_on_any_port_is_byte_identical_and_stays_in_the_kernel() {
    if !can_run(&["nginx", "openssl", "curl", "tcpdump", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2etlsby");
    let dir = Scratch::new("e2etlsby");
    std::fs::create_dir_all(dir.0.join("www")).expect("www");
    let want = random_file(&dir.0.join("www/file.bin"), 2);
    let _nginx = Nginx::start(&tb, &dir.0);
    let flows = "[flows]\nclosed_linger_s = 1\nsweep_interval_ms = 200\n";
    let bridge = tb.start_bridge_with(&dir.0, &format!("{flows}\n{BLOCK_POLICY}"), &[]);

    let cpath = dir.0.join("client.pcap");
    let spath = dir.0.join("server.pcap");
    let mut ccap = capture(&tb, &tb.s("client_ns"), &tb.s("client_if"), &cpath, "tcp");
    let mut scap = capture(&tb, &tb.s("server_ns"), &tb.s("server_if"), &spath, "tcp");
    let mut sessions = 0;
    for (addr, port) in TLS_PORTS
        .iter()
        .map(|p| (tb.s("server_ip"), *p))
        .chain([(tb.s("server_ip6"), 443)])
    {
        let got = dir.0.join(format!("got-{port}.bin"));
        let out = curl_tls(&tb, &dir.0, "ok.example", &addr, port, "file.bin", &got, &[]);
        assert!(
            out.status.success(),
            "curl via {addr} port {port}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256_file(&got), want, "the download via port {port} differs");
        sessions += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    stop_capture(&mut ccap);
    stop_capture(&mut scap);
    // TCP only: a multicast report the kernel sends on its own may fall between the
    // start of the two captures.
    let is_tcp = |f: &Vec<u8>| {
        matches!(
            SlicedPacket::from_ethernet(f).map(|p| p.transport),
            Ok(Some(TransportSlice::Tcp(_)))
        )
    };
    let client: Vec<_> = read_pcap(&cpath).into_iter().filter(is_tcp).collect();
    let server: Vec<_> = read_pcap(&spath).into_iter().filter(is_tcp).collect();
    assert_same_frames(&client, &server, "bypassed TLS");
    assert!(client.len() > 4 * 1000, "only {} frames captured", client.len());

    let st = bridge.stats();
    assert_eq!(sum_workers(&st, &["flows", "tls_hellos"]), sessions, "{st}");
    assert_eq!(sum_workers(&st, &["flows", "decided_bypass"]), sessions);
    assert_eq!(sum_workers(&st, &["flows", "decided_block"]), 0);
    // Userspace sees each session's handshake and hello, and a few frames that were
    // already on their way; the kernel forwards everything after the verdict.
    let user = userspace_frames(&st);
    assert!(
        user <= 12 * sessions,
        "{user} frames crossed userspace for {sessions} sessions"
    );
    let fast = fast_bypass(&st);
    assert!(
        fast + user >= client.len() as u64 && fast > 4 * 1000,
        "fast path {fast}, userspace {user}, frames on the wire {}",
        client.len()
    );
    // Every session closed with FIN both ways in the kernel: the sweeper removes their
    // verdicts after the linger, and the workers have forgotten them too.
    let st = wait_for(&bridge, "closed flows to leave the kernel map", |st| {
        u(st, &["kernel_flows", "evicted_closed"]) >= sessions
            && u(st, &["kernel_flows", "kernel_flows"]) == 0
    });
    assert_eq!(u(&st, &["kernel_flows", "evicted_idle"]), 0, "{st}");
    let st = wait_for(&bridge, "the flow tables to empty", |st| {
        sum_workers(st, &["flows", "tracked"]) == 0
    });
    assert_eq!(sum_workers(&st, &["flows", "frames_held"]), 0);
}

/// The TCP frames in `frames` between the client and port 443 of the server, as
/// (from_client, rst, payload length).
fn tcp_443(frames: &[Vec<u8>]) -> Vec<(bool, bool, usize)> {
    frames
        .iter()
        .filter_map(|f| {
            let p = SlicedPacket::from_ethernet(f).ok()?;
            let Some(TransportSlice::Tcp(tcp)) = p.transport else {
                return None;
            };
            matches!(p.net, Some(NetSlice::Ipv4(_)) | Some(NetSlice::Ipv6(_))).then_some(())?;
            let from_client = tcp.destination_port() == 443;
            (from_client || tcp.source_port() == 443).then(|| (from_client, tcp.rst(), tcp.payload().len()))
        })
        .collect()
}

/// The client port of the blocked connections, used again by an allowed one.
const REUSED_PORT: &str = "41000";

fn blocked_sni_is_reset(extra: &[&str], prefix: &str) {
    if !can_run(&["nginx", "openssl", "curl", "tcpdump", "ss"]) {
        return;
    }
    let tb = Testbed::up(prefix);
    let dir = Scratch::new(prefix);
    std::fs::create_dir_all(dir.0.join("www")).expect("www");
    std::fs::write(dir.0.join("www/index.html"), "hello\n").expect("index");
    let _nginx = Nginx::start(&tb, &dir.0);
    let bridge = tb.start_bridge_with(&dir.0, BLOCK_POLICY, extra);

    for (i, addr) in [tb.s("server_ip"), tb.s("server_ip6")].iter().enumerate() {
        let cpath = dir.0.join(format!("client-{i}.pcap"));
        let spath = dir.0.join(format!("server-{i}.pcap"));
        let mut ccap = capture(&tb, &tb.s("client_ns"), &tb.s("client_if"), &cpath, "tcp");
        let mut scap = capture(&tb, &tb.s("server_ns"), &tb.s("server_if"), &spath, "tcp");
        let started = Instant::now();
        let out = curl_tls(
            &tb,
            &dir.0,
            "blocked.example",
            addr,
            443,
            "index.html",
            &dir.0.join("x"),
            &["--local-port", REUSED_PORT],
        );
        let took = started.elapsed();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            !out.status.success(),
            "curl to a blocked SNI via {addr} succeeded"
        );
        assert!(
            err.to_lowercase().contains("reset"),
            "curl via {addr} did not fail with a reset: {err}"
        );
        assert!(
            took < Duration::from_secs(1),
            "the reset took {took:?} (via {addr})"
        );
        std::thread::sleep(Duration::from_millis(300));
        stop_capture(&mut ccap);
        stop_capture(&mut scap);

        let client = tcp_443(&read_pcap(&cpath));
        let server = tcp_443(&read_pcap(&spath));
        assert!(
            client.iter().any(|&(from_client, _, len)| from_client && len > 0),
            "curl sent no hello: {client:?}"
        );
        assert!(
            client.iter().any(|&(from_client, rst, _)| !from_client && rst),
            "the client got no RST: {client:?}"
        );
        assert!(
            !server.iter().any(|&(from_client, _, len)| from_client && len > 0),
            "the blocked hello reached the server: {server:?}"
        );
        assert!(
            server.iter().any(|&(from_client, rst, _)| from_client && rst),
            "the server got no RST: {server:?}"
        );
    }
    // An allowed name still works, even from the client port of the blocked connection
    // (a new connection on its 5-tuple, within the block's linger: classified anew, its
    // SYN not dropped under the old verdict).
    let ok = curl_tls(
        &tb,
        &dir.0,
        "ok.example",
        &tb.s("server_ip"),
        443,
        "index.html",
        &dir.0.join("ok"),
        &["--local-port", REUSED_PORT],
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(std::fs::read(dir.0.join("ok")).expect("ok"), b"hello\n");

    let st = bridge.stats();
    assert_eq!(sum_workers(&st, &["flows", "decided_block"]), 2, "{st}");
    assert_eq!(sum_workers(&st, &["flows", "resets_sent"]), 4);
    assert_eq!(sum_workers(&st, &["flows", "decided_bypass"]), 1);
    let log = std::fs::read_to_string(&bridge.log).unwrap_or_default();
    assert!(
        log.contains("blocked by policy") && log.contains("blocked.example") && log.contains("no-blocked"),
        "the block is not logged with its SNI and rule:\n{log}"
    );
}

#[test]
fn a_blocked_sni_gets_a_reset_fast_path() {
    blocked_sni_is_reset(&[], "e2eblkf");
}

#[test]
fn a_blocked_sni_gets_a_reset_userspace_forward() {
    blocked_sni_is_reset(&["--userspace-forward"], "e2eblku");
}

#[test]
fn plain_http_on_port_443_passes_intact() {
    if !can_run(&["curl", "python3", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2eplain");
    let dir = Scratch::new("e2eplain");
    let want = random_file(&dir.0.join("file.bin"), 5);
    let _server = HttpServer::start(&tb, &dir.0, 443);
    let bridge = tb.start_bridge_with(&dir.0, BLOCK_POLICY, &[]);
    let got = dir.0.join("got.bin");
    let url = format!("http://{}:443/file.bin", tb.s("server_ip"));
    let out = tb.client(&["curl", "-sS", "--fail", "-o", got.to_str().expect("path"), &url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sha256_file(&got), want);
    let st = bridge.stats();
    assert_eq!(sum_workers(&st, &["flows", "not_tls"]), 1, "{st}");
    assert_eq!(sum_workers(&st, &["flows", "tls_hellos"]), 0);
    assert!(
        fast_bypass(&st) > 3000,
        "the plain flow did not move to the fast path: {st}"
    );
}

fn wait_for(bridge: &Bridge, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = bridge.stats();
        if check(&st) {
            return st;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {st}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_list_edited_and_reloaded_with_sighup_changes_the_next_verdict() {
    if !can_run(&["nginx", "openssl", "curl", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2ehup");
    let dir = Scratch::new("e2ehup");
    std::fs::create_dir_all(dir.0.join("www")).expect("www");
    std::fs::write(dir.0.join("www/index.html"), "hello\n").expect("index");
    let _nginx = Nginx::start(&tb, &dir.0);
    let list = dir.0.join("blocked.txt");
    std::fs::write(&list, "# names to block\nother.example\n").expect("list");
    let policy = "[policy.lists]\nblocked = \"blocked.txt\"\n\n[[policy.rule]]\nname = \"listed\"\nsni = \"list:blocked\"\naction = \"block\"\n";
    let bridge = tb.start_bridge_with(&dir.0, policy, &[]);
    let fetch = || {
        curl_tls(
            &tb,
            &dir.0,
            "ok.example",
            &tb.s("server_ip"),
            443,
            "index.html",
            &dir.0.join("got"),
            &[],
        )
    };
    let hup = || {
        let sent = run(&["kill", "-HUP", &bridge.pid().to_string()]);
        assert!(sent.status.success());
    };

    assert!(fetch().status.success(), "ok.example is not listed yet");

    std::fs::write(&list, "# names to block\nother.example\nok.example   # added\n").expect("list");
    hup();
    wait_for(&bridge, "the reload", |st| u(st, &["policy", "reloads"]) == 1);
    let out = fetch();
    assert!(
        !out.status.success(),
        "ok.example is listed now and must be blocked"
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .to_lowercase()
        .contains("reset"));

    // A bad line: the reload fails, names the file and line, and the last good policy
    // stays in force.
    std::fs::write(&list, "ok.example\nnot a domain\n").expect("list");
    hup();
    let st = wait_for(&bridge, "the failed reload", |st| {
        u(st, &["policy", "reload_errors"]) == 1
    });
    let msg = st["policy"]["last_reload_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        msg.contains("blocked.txt:2"),
        "the error does not name file:line: {msg}"
    );
    assert!(
        !fetch().status.success(),
        "the previous policy must stay in force"
    );
    assert!(bridge.stats()["policy"]["summary"].as_str().is_some());

    let st = bridge.stats();
    assert_eq!(sum_workers(&st, &["flows", "decided_block"]), 2, "{st}");
    assert_eq!(sum_workers(&st, &["flows", "decided_bypass"]), 1);
}
