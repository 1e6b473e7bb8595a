//! End-to-end tests of the session log: real sessions across the bridge (curl, python
//! sockets, nginx), records read back from the JSON Lines files and from rsyslog over TLS.

mod common;

use common::*;
use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use serde_json::Value;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

/// Every record in the JSON Lines files of `dir`.
fn records(dir: &Path) -> Vec<Value> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) == Some("jsonl") {
            for line in std::fs::read_to_string(&p).unwrap_or_default().lines() {
                out.push(
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON line {line:?}: {e}")),
                );
            }
        }
    }
    out
}

/// The records of the session whose client port is `port`.
fn session(all: &[Value], port: u16) -> Vec<Value> {
    all.iter()
        .filter(|r| r["client_port"].as_u64() == Some(u64::from(port)))
        .cloned()
        .collect()
}

fn events(recs: &[Value]) -> Vec<String> {
    recs.iter()
        .map(|r| r["event"].as_str().unwrap_or("?").to_string())
        .collect()
}

/// Waits until the session from client port `port` has a record of kind `event`.
fn wait_for_event(dir: &Path, port: u16, event: &str, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let recs = session(&records(dir), port);
        if recs.iter().any(|r| r["event"] == event) {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "no {event} record for client port {port} within {within:?}; its records: {recs:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A python client in the client namespace: connects from `port` to the server's port
/// 8080 and then runs `then` (python statements with the socket as `s`).
fn py_client(tb: &Testbed, port: u16, then: &str) -> Child {
    let code = format!(
        "import socket, struct, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         s.connect(('{}', 8080))\n{then}\n",
        tb.s("server_ip")
    );
    tb.spawn_in(&tb.s("client_ns"), &["python3", "-c", &code])
}

fn u64_at(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// Bytes and frames on the wire, per direction, of the TCP connection from client port
/// `port`, as tcpdump saw them: [frames c2s, frames s2c, bytes c2s, bytes s2c].
fn wire_counts(frames: &[Vec<u8>], port: u16) -> [u64; 4] {
    let mut c = [0u64; 4];
    for f in frames {
        let Ok(p) = SlicedPacket::from_ethernet(f) else {
            continue;
        };
        let (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Tcp(t))) = (&p.net, &p.transport) else {
            continue;
        };
        if t.source_port() == port {
            c[0] += 1;
            c[2] += f.len() as u64;
        } else if t.destination_port() == port {
            c[1] += 1;
            c[3] += f.len() as u64;
        }
    }
    c
}

#[test]
fn every_kind_of_session_record_from_real_traffic() {
    if !can_run(&["curl", "python3", "tcpdump", "nginx", "openssl", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2eslog");
    let dir = Scratch::new("e2eslog");
    let logs = dir.0.join("log");
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    random_file(&www.join("file.bin"), 3);
    std::fs::write(www.join("index.html"), "hello\n").expect("index");
    let _http = HttpServer::start(&tb, &www, 8080);
    let _nginx = Nginx::start(&tb, &dir.0);
    let config = format!(
        "[flows]\nhandshake_timeout_s = 2\nidle_timeout_s = 3\nclosed_linger_s = 1\nsweep_interval_ms = 200\n\n\
         [log.jsonl]\ndir = \"{}\"\n\n\
         [[policy.rule]]\nname = \"no-blocked\"\nsni = \"blocked.example\"\naction = \"block\"\n",
        logs.display()
    );
    // A connection made before the bridge runs: its first payload reaches a bridge that
    // never saw its handshake.
    let mut bridge = tb.start_bridge_with(&dir.0, &config, &[]);
    let mut early = py_client(
        &tb,
        41005,
        "time.sleep(3)\ns.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\ns.recv(100)\ntime.sleep(0.5)",
    );
    std::thread::sleep(Duration::from_millis(1000));
    bridge.stop();
    let bridge = tb.start_bridge_with(&dir.0, &config, &[]);

    let cpath = dir.0.join("client.pcap");
    let mut cap = capture(&tb, &tb.s("client_ns"), &tb.s("client_if"), &cpath, "tcp");
    // start, volume, end_normal: a download.
    let url = format!("http://{}:8080/file.bin", tb.s("server_ip"));
    let out = tb.client(&[
        "curl",
        "-sS",
        "--fail",
        "--local-port",
        "41001",
        "-o",
        "/dev/null",
        &url,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // end_idle in userspace: a handshake and nothing else.
    let mut silent = py_client(&tb, 41002, "time.sleep(6)");
    // end_idle in the kernel: a request left unfinished, then silence.
    let mut idle = py_client(&tb, 41003, "s.sendall(b'GET / HTTP/1.1\\r\\n')\ntime.sleep(12)");
    // end_abnormal: the client resets the connection.
    let mut reset = py_client(
        &tb,
        41004,
        "s.sendall(b'GET / HTTP/1.1\\r\\n')\ntime.sleep(0.5)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\ns.close()",
    );
    // A bypassed and a blocked TLS session.
    let tls_out = dir.0.join("tls.out");
    let ok = curl_tls(
        &tb,
        &dir.0,
        "ok.example",
        &tb.s("server_ip"),
        443,
        "index.html",
        &tls_out,
        &[],
    );
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let blocked = curl_tls(
        &tb,
        &dir.0,
        "blocked.example",
        &tb.s("server_ip"),
        443,
        "index.html",
        &tls_out,
        &[],
    );
    assert!(!blocked.status.success());

    // The download: its end comes from the sweeper once the worker handed it over.
    let download = wait_for_event(&logs, 41001, "end_normal", Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    stop_capture(&mut cap);
    let kinds = events(&download);
    assert_eq!(kinds.first().map(String::as_str), Some("start"), "{kinds:?}");
    assert_eq!(kinds.last().map(String::as_str), Some("end_normal"), "{kinds:?}");
    assert!(kinds.contains(&"volume".to_string()), "{kinds:?}");
    let end = download.last().expect("end");
    assert_eq!(end["verdict"], "pass");
    assert_eq!(end["server_port"], 8080);
    assert_eq!(end["opened_from"], "a");
    let ids: Vec<_> = download.iter().map(|r| r["session_id"].clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one session, one id: {ids:?}");
    let v = &end["volume"];
    let wire = wire_counts(&read_pcap(&cpath), 41001);
    assert_eq!(
        [
            u64_at(v, "packets_c2s"),
            u64_at(v, "packets_s2c"),
            u64_at(v, "bytes_c2s"),
            u64_at(v, "bytes_s2c")
        ],
        wire,
        "the record's totals against tcpdump's count of the same connection"
    );
    // Volume records add up to the totals.
    let sum: u64 = download
        .iter()
        .filter(|r| r["event"] == "volume")
        .map(|r| u64_at(&r["volume"], "bytes_s2c"))
        .sum();
    assert_eq!(sum, wire[3]);

    let silent_recs = wait_for_event(&logs, 41002, "end_idle", Duration::from_secs(15));
    assert_eq!(events(&silent_recs).first().map(String::as_str), Some("start"));
    let idle_recs = wait_for_event(&logs, 41003, "end_idle", Duration::from_secs(20));
    assert_eq!(idle_recs.last().expect("end")["verdict"], "pass");
    let reset_recs = wait_for_event(&logs, 41004, "end_abnormal", Duration::from_secs(20));
    assert_eq!(reset_recs.last().expect("end")["reason"], "rst");
    let early_recs = wait_for_event(&logs, 41005, "start_abnormal", Duration::from_secs(15));
    // (The first bridge, which saw its handshake, recorded a start under its own id.)
    let abnormal = early_recs
        .iter()
        .find(|r| r["event"] == "start_abnormal")
        .expect("start_abnormal");
    assert_eq!(abnormal["reason"], "midstream");

    let all = records(&logs);
    let tls: Vec<&Value> = all.iter().filter(|r| r["server_port"] == 443).collect();
    let blocked_end = tls
        .iter()
        .find(|r| r["tls"]["sni"] == "blocked.example" && r["event"] == "end_abnormal")
        .unwrap_or_else(|| panic!("no end_abnormal for the blocked session: {tls:?}"));
    assert_eq!(blocked_end["verdict"], "block");
    assert_eq!(blocked_end["reason"], "blocked");
    assert!(blocked_end["rule"]
        .as_str()
        .unwrap_or_default()
        .contains("no-blocked"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let all = records(&logs);
        if let Some(r) = all
            .iter()
            .find(|r| r["tls"]["sni"] == "ok.example" && r["event"] == "end_normal")
        {
            assert_eq!(r["verdict"], "bypass");
            assert!(r["tls"]["offered_versions"]
                .as_array()
                .is_some_and(|v| !v.is_empty()));
            // Read from nginx's ServerHello before the flow went to the kernel. nginx
            // (no http2 configured) answers ALPN with http/1.1; under TLS 1.3 that choice is
            // encrypted and so not in the record.
            let tls = &r["tls"];
            let suite = tls["cipher_suite"].as_str().unwrap_or_default();
            assert!(suite.starts_with("TLS_"), "an IANA cipher suite name: {r}");
            match tls["negotiated_version"].as_str() {
                Some("TLS1.2") => assert_eq!(tls["alpn_chosen"], "http/1.1", "{r}"),
                Some("TLS1.3") => assert!(tls.get("alpn_chosen").is_none(), "{r}"),
                other => panic!("negotiated_version {other:?}: {r}"),
            }
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no end_normal for the bypassed TLS session"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let st = bridge.stats();
    assert_eq!(
        u(&st, &["session_log", "records_dropped_channel_full"]),
        0,
        "{st}"
    );
    for c in [&mut early, &mut silent, &mut idle, &mut reset] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
