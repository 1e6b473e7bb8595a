//! The session log delivered to a log server in the testbed: rsyslog with its TLS driver
//! (gtls, RFC 5425) in a namespace of its own, reached from the bridge's namespace over a
//! management veth, fed by real sessions crossing the bridge. rsyslog is stopped for 30 s
//! in the middle of the run and started again; at the end it must hold every record the
//! bridge wrote to its JSON Lines file, each exactly once.
//!
//! Also checks the records of sessions still open when the bridge stops (one userspace
//! saw only the handshake of, one the kernel carries): they end as `bridge_stopped`.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};
use testkit::rsyslog::{Rsyslog, Tls};

const LOG_SERVER_IP: &str = "10.77.0.2";
const LOG_SERVER_PORT: u16 = 6514;
const OUTAGE: Duration = Duration::from_secs(30);

/// A namespace for the log server, joined to the bridge's namespace by a veth pair
/// (the appliance's management link); removed when dropped.
struct LogNamespace {
    name: String,
}

impl LogNamespace {
    fn up(bridge_ns: &str, name: &str) -> Self {
        let _ = run(&["ip", "netns", "del", name]);
        run_ok(&["ip", "netns", "add", name]);
        let ns = Self { name: name.into() };
        for argv in [
            vec![
                "ip", "-n", bridge_ns, "link", "add", "gwlog0", "type", "veth", "peer", "name", "log0",
                "netns", name,
            ],
            vec![
                "ip",
                "-n",
                bridge_ns,
                "addr",
                "add",
                "10.77.0.1/30",
                "dev",
                "gwlog0",
            ],
            vec!["ip", "-n", bridge_ns, "link", "set", "gwlog0", "up"],
            vec!["ip", "-n", name, "addr", "add", "10.77.0.2/30", "dev", "log0"],
            vec!["ip", "-n", name, "link", "set", "log0", "up"],
            vec!["ip", "-n", name, "link", "set", "lo", "up"],
        ] {
            run_ok(&argv);
        }
        ns
    }
}

impl Drop for LogNamespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so the pair.
        let _ = run(&["ip", "netns", "del", &self.name]);
    }
}

/// A CA and a server certificate for logsrv.test / 10.77.0.2.
fn make_log_pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    common::tls::openssl_ca_and_server(
        dir,
        "logsrv",
        "glasswire test log CA",
        "logsrv.test",
        &format!("DNS:logsrv.test,IP:{LOG_SERVER_IP}"),
    )
}

/// Every line of the JSON Lines files in `dir`.
fn jsonl_lines(dir: &Path) -> Vec<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .lines()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn curl_index(tb: &Testbed) {
    let url = format!("http://{}:8080/index.html", tb.s("server_ip"));
    let out = tb.client(&["curl", "-sS", "--max-time", "10", "-o", "/dev/null", &url]);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A python client in the client namespace connecting from `port` to the server's port
/// 8080 and then running `then` (python statements with the socket as `s`).
fn py_client(tb: &Testbed, port: u16, then: &str) -> Child {
    let code = format!(
        "import socket, time\n\
         s = socket.socket()\n\
         s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('0.0.0.0', {port}))\n\
         s.connect(('{}', 8080))\n{then}\n",
        tb.s("server_ip")
    );
    tb.spawn_in(&tb.s("client_ns"), &["python3", "-c", &code])
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn by_client_port(lines: &[String], port: u64) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r["client_port"].as_u64() == Some(port))
        .collect()
}

#[test]
fn rsyslog_in_the_testbed_gets_every_record_exactly_once_across_a_30_s_outage() {
    // rsyslogd lives in sbin and its TLS driver in a package of its own: checked by file.
    let mut missing = missing_tools(&["curl", "python3", "openssl"]);
    missing.extend(testkit::rsyslog::missing());
    if !testkit::can_run(missing) {
        return;
    }
    let tb = Testbed::up("e2esysl");
    let dir = Scratch::new("e2esysl");
    let log_ns = LogNamespace::up(&tb.s("bridge_ns"), "e2esysl-log");
    let (ca, cert, key) = make_log_pki(&dir.0);
    let tls = Tls {
        ca: &ca,
        cert: &cert,
        key: &key,
        authmode: "anon",
    };
    let mut rsyslog = Rsyslog::new(&dir.0, Some(&log_ns.name), LOG_SERVER_IP, LOG_SERVER_PORT, &tls);
    rsyslog.start();

    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    std::fs::write(www.join("index.html"), "hello\n").expect("index");
    let _http = HttpServer::start(&tb, &www, 8080);

    let logs = dir.0.join("log");
    let config = format!(
        "[flows]\nvolume_interval_s = 1\nhandshake_timeout_s = 300\nclosed_linger_s = 1\nsweep_interval_ms = 200\n\n\
         [log.jsonl]\ndir = \"{logs}\"\n\n\
         [log.syslog]\nserver = \"{LOG_SERVER_IP}:{LOG_SERVER_PORT}\"\nserver_name = \"logsrv.test\"\n\
         ca_file = \"{ca}\"\nspool_dir = \"{spool}\"\nhostname = \"bridge-test\"\n\
         reconnect_min = \"200ms\"\nreconnect_max = \"1s\"\n",
        logs = logs.display(),
        ca = ca.display(),
        spool = dir.0.join("spool").display(),
    );
    let mut bridge = tb.start_bridge_with(&dir.0, &config, &[]);

    // A connection held open (handshake only) through the whole run: a volume record
    // every second, outage included; still open when the bridge stops.
    let _held = KillOnDrop(py_client(&tb, 42001, "time.sleep(600)"));
    // A request answered and then left half-open by the client: the kernel carries it
    // from its first payload on, and it is still open when the bridge stops.
    let _kernel = KillOnDrop(py_client(
        &tb,
        42002,
        "s.sendall(b'GET /index.html HTTP/1.0\\r\\n\\r\\n')\ns.recv(1000)\ntime.sleep(600)",
    ));
    for _ in 0..3 {
        curl_index(&tb);
    }
    // Everything so far has reached rsyslog before it goes away.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let written = jsonl_lines(&logs).len();
        let got = rsyslog.lines().len();
        if written > 0 && got >= written {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rsyslog has {got} of {written} records after 20 s; rsyslog says: {}\nbridge log: {}",
            rsyslog.stderr(),
            std::fs::read_to_string(&bridge.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    rsyslog.stop();
    let before_outage = jsonl_lines(&logs).len();
    let outage_end = Instant::now() + OUTAGE;
    while Instant::now() < outage_end {
        curl_index(&tb);
        std::thread::sleep(Duration::from_secs(5).min(outage_end.saturating_duration_since(Instant::now())));
    }
    let during_outage = jsonl_lines(&logs).len() - before_outage;
    let spooled = u(&bridge.stats(), &["session_log", "syslog_spooled"]);
    rsyslog.start();
    for _ in 0..2 {
        curl_index(&tb);
    }
    // The spool drains within a reconnect or two; then the bridge stops, which ends the
    // sessions still open and delivers their records before it exits.
    std::thread::sleep(Duration::from_secs(4));
    let status = bridge.stop().expect("the bridge was running");
    assert!(status.success(), "the bridge exited with {status}");
    rsyslog.stop();

    let written = jsonl_lines(&logs);
    let received = rsyslog.lines();
    eprintln!(
        "records: {} written to the file ({during_outage} during the {}s outage, {spooled} spooled by then), {} received by rsyslog",
        written.len(),
        OUTAGE.as_secs(),
        received.len()
    );
    assert!(
        during_outage >= 20,
        "only {during_outage} records were made during the outage: the test did not exercise the spool"
    );

    // Every record exactly once: the same multiset of lines, and no line twice.
    let count = |lines: &[String]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for l in lines {
            *m.entry(l.clone()).or_default() += 1;
        }
        m
    };
    let (w, r) = (count(&written), count(&received));
    let twice: Vec<_> = r
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(l, n)| format!("{n}x {l}"))
        .collect();
    assert!(
        twice.is_empty(),
        "records rsyslog got more than once:\n{}",
        twice.join("\n")
    );
    let missing: Vec<_> = w.keys().filter(|l| !r.contains_key(*l)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} records never reached rsyslog, e.g. {:?}",
        missing.len(),
        w.len(),
        missing.first()
    );
    let extra: Vec<_> = r.keys().filter(|l| !w.contains_key(*l)).collect();
    assert!(
        extra.is_empty(),
        "rsyslog got records the file does not have: {extra:?}"
    );
    assert_eq!(
        w.values().filter(|&&n| n > 1).count(),
        0,
        "the file repeats a record"
    );

    // Sessions open at the stop ended there, with their volume.
    for port in [42001, 42002] {
        let recs = by_client_port(&written, port);
        let last = recs
            .last()
            .unwrap_or_else(|| panic!("no records for client port {port}"));
        assert_eq!(
            (last["event"].as_str(), last["reason"].as_str()),
            (Some("end_abnormal"), Some("bridge_stopped")),
            "the last record of the session from port {port}: {last}"
        );
        assert!(last["volume"]["packets_c2s"].as_u64().unwrap_or(0) >= 2, "{last}");
    }
    let kernel = by_client_port(&written, 42002);
    assert_eq!(kernel.first().map(|r| r["event"].clone()), Some("start".into()));
    assert!(
        kernel
            .last()
            .map(|r| r["volume"]["bytes_s2c"].as_u64().unwrap_or(0))
            .unwrap_or(0)
            > 200,
        "the kernel-carried session's response is counted: {kernel:?}"
    );
}
