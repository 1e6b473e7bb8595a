//! Shared pieces of the end-to-end tests: a testbed that removes itself, a bridge
//! process that stops itself, and commands run inside the testbed's namespaces.
#![allow(dead_code)]

pub mod tls;

use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_glasswire");

/// True when the test may run. Outside CI a missing privilege or tool skips the test
/// loudly; in CI (`CI=true`) it fails it, so nothing is silently skipped there.
pub fn can_run(tools: &[&str]) -> bool {
    testkit::can_run(missing_tools(tools))
}

/// The programs of `tools` that are not on PATH.
pub fn missing_tools(tools: &[&str]) -> Vec<String> {
    tools
        .iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|t| t.to_string())
        .collect()
}

pub fn run(argv: &[&str]) -> Output {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {argv:?}: {e}"))
}

pub fn run_ok(argv: &[&str]) -> String {
    let out = run(argv);
    assert!(
        out.status.success(),
        "{argv:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A testbed that is removed when dropped, on every exit path of the test.
pub struct Testbed {
    pub prefix: String,
    pub status: Value,
}

impl Testbed {
    pub fn up(prefix: &str) -> Self {
        // A previous run that was killed may have left it behind.
        let _ = run(&[BIN, "testbed", "down", "--prefix", prefix]);
        run_ok(&[BIN, "testbed", "up", "--prefix", prefix]);
        let json = run_ok(&[BIN, "testbed", "status", "--prefix", prefix, "--json"]);
        let status: Value = serde_json::from_str(&json).expect("status --json is JSON");
        Self {
            prefix: prefix.into(),
            status,
        }
    }

    pub fn s(&self, key: &str) -> String {
        self.status[key]
            .as_str()
            .unwrap_or_else(|| panic!("testbed status has no {key}"))
            .to_string()
    }

    pub fn client(&self, argv: &[&str]) -> Output {
        self.in_ns(&self.s("client_ns"), argv)
    }

    pub fn server(&self, argv: &[&str]) -> Output {
        self.in_ns(&self.s("server_ns"), argv)
    }

    pub fn in_ns(&self, ns: &str, argv: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(argv);
        run(&full)
    }

    pub fn spawn_in(&self, ns: &str, argv: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {argv:?} in {ns}: {e}"))
    }

    pub fn stats_socket(&self) -> PathBuf {
        PathBuf::from(self.s("stats_socket"))
    }

    pub fn start_bridge(&self, extra: &[&str]) -> Bridge {
        let argv: Vec<String> = self.status["run"]
            .as_array()
            .expect("run argv")
            .iter()
            .map(|v| v.as_str().expect("argv string").to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect();
        self.spawn_bridge(argv)
    }

    /// `glasswire run` in the bridge namespace with exactly these arguments.
    pub fn start_bridge_argv(&self, args: &[&str]) -> Bridge {
        let argv: Vec<String> = ["ip", "netns", "exec", &self.s("bridge_ns"), BIN, "run"]
            .into_iter()
            .map(str::to_string)
            .chain(args.iter().map(|s| s.to_string()))
            .collect();
        self.spawn_bridge(argv)
    }

    fn spawn_bridge(&self, argv: Vec<String>) -> Bridge {
        let log = std::env::temp_dir().join(format!("gw-e2e-{}-bridge.log", self.prefix));
        let file = std::fs::File::create(&log).expect("bridge log");
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdout(file.try_clone().expect("log fd"))
            .stderr(file)
            .spawn()
            .expect("starting the bridge");
        let bridge = Bridge {
            child: Some(child),
            socket: self.stats_socket(),
            log,
        };
        bridge.wait_ready();
        bridge
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        let out = run(&[BIN, "testbed", "down", "--prefix", &self.prefix]);
        if !out.status.success() {
            eprintln!("testbed down failed: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
}

pub struct Bridge {
    pub child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Bridge {
    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if Command::new(BIN)
                .args(["stats", "--json", "--socket"])
                .arg(&self.socket)
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "bridge did not come up; log:\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
    }

    pub fn stats(&self) -> Value {
        let out = Command::new(BIN)
            .args(["stats", "--json", "--socket"])
            .arg(&self.socket)
            .output()
            .expect("glasswire stats");
        assert!(
            out.status.success(),
            "stats failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        c.wait().ok()
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn u(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = match (cur, p.parse::<usize>()) {
            (Value::Array(a), Ok(i)) => &a[i],
            _ => &cur[*p],
        };
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {v}"))
}

pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).expect("read");
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A scratch directory removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("gw-e2e-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Self(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `mb` MiB of random bytes; returns the file's sha256.
pub fn random_file(path: &Path, mb: usize) -> String {
    let mut data = vec![0u8; mb << 20];
    let mut f = std::fs::File::open("/dev/urandom").expect("urandom");
    std::io::Read::read_exact(&mut f, &mut data).expect("random bytes");
    std::fs::write(path, &data).expect("write file");
    sha256_file(path)
}

/// An HTTP server (python's http.server) in the server namespace, stopped when dropped.
pub struct HttpServer(Child);

impl HttpServer {
    pub fn start(tb: &Testbed, dir: &Path, port: u16) -> Self {
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &tb.s("server_ns"),
                "python3",
                "-m",
                "http.server",
            ])
            .arg(port.to_string())
            .args(["--bind", "::", "--directory"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 -m http.server");
        // Wait until it listens, checked from inside its own namespace.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            let out = tb.server(&["ss", "-ltnH", &format!("sport = :{port}")]);
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Self(child);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("http.server did not start listening");
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn mac(s: &str) -> [u8; 6] {
    let mut out = [0u8; 6];
    for (o, p) in out.iter_mut().zip(s.split(':')) {
        *o = u8::from_str_radix(p, 16).expect("hex MAC");
    }
    out
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A running tcpdump and the lines it prints on stderr (its closing summary says how
/// many frames the kernel dropped before tcpdump could read them).
pub struct Capture {
    child: Child,
    stderr: std::sync::mpsc::Receiver<String>,
    what: String,
}

/// Starts tcpdump in `ns` on `dev` writing the frames that match `filter` to `path`;
/// returns once it is capturing.
pub fn capture(tb: &Testbed, ns: &str, dev: &str, path: &Path, filter: &str) -> Capture {
    let mut child = tb.spawn_in(
        ns,
        &[
            "tcpdump",
            // Without it, frames wait in the kernel's ring buffer block until it fills or
            // times out, and a capture stopped soon after a short exchange loses them.
            "--immediate-mode",
            // A buffer (KiB) large enough that a bulk transfer is not dropped while
            // tcpdump waits for a core.
            "-B",
            "65536",
            // The ring's slots are sized for the snapshot length, and with GSO on the
            // port libpcap sizes them for 64 KiB frames: 64 MiB then holds ~1000 frames
            // and a bulk transfer overflows it while tcpdump waits for a core (seen in
            // CI). The testbed's frames are at most 1514 bytes (GRO is off under XDP and
            // TSO off with TX checksums), so 2048-byte slots lose nothing; read_pcap fails
            // on a truncated frame should that change.
            "-s",
            "2048",
            "-U",
            "-n",
            "-i",
            dev,
            "-w",
            path.to_str().expect("path"),
            filter,
        ],
    );
    // tcpdump says "listening on" once the capture is open.
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("listening on") => break,
            Ok(_) => {}
            Err(_) => panic!("tcpdump on {dev} did not start"),
        }
    }
    Capture {
        child,
        stderr: rx,
        what: format!("tcpdump on {dev}"),
    }
}

/// SIGINT, so tcpdump flushes its file, then waits for it. A capture that lost frames
/// cannot be compared frame for frame with another, so that fails here, by name, rather
/// than later as a difference that looks like the bridge's.
pub fn stop_capture(cap: &mut Capture) {
    let _ = Command::new("kill")
        .args(["-INT", &cap.child.id().to_string()])
        .status();
    let _ = cap.child.wait();
    let summary: Vec<String> = cap.stderr.iter().collect();
    let dropped: u64 = summary
        .iter()
        .filter_map(|l| l.strip_suffix(" packets dropped by kernel"))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(
        dropped, 0,
        "{} lost frames, its capture cannot be compared: {summary:?}",
        cap.what
    );
}

pub fn read_pcap(path: &Path) -> Vec<Vec<u8>> {
    let file = std::fs::File::open(path).expect("pcap");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let mut out = Vec::new();
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.expect("pcap packet");
        assert_eq!(
            pkt.data.len(),
            pkt.orig_len as usize,
            "{}: a frame was cut to the capture's snapshot length",
            path.display()
        );
        out.push(pkt.data.into_owned());
    }
    out
}

/// The two captures hold the same frames, byte for byte, as many times each.
pub fn assert_same_frames(client: &[Vec<u8>], server: &[Vec<u8>], what: &str) {
    let count = |frames: &[Vec<u8>]| {
        let mut m: HashMap<Vec<u8>, usize> = HashMap::new();
        for f in frames {
            *m.entry(f.clone()).or_default() += 1;
        }
        m
    };
    let (cm_set, sm_set) = (count(client), count(server));
    let only_client: Vec<_> = cm_set
        .iter()
        .filter(|(f, n)| sm_set.get(*f) != Some(n))
        .map(|(f, _)| hex(&f[..f.len().min(54)]))
        .collect();
    let only_server: Vec<_> = sm_set
        .iter()
        .filter(|(f, n)| cm_set.get(*f) != Some(n))
        .map(|(f, _)| hex(&f[..f.len().min(54)]))
        .collect();
    // Counts first and at most a few frames each: a long list is cut short in CI logs.
    assert!(
        only_client.is_empty() && only_server.is_empty(),
        "frames differ across the bridge ({what}): {} and {} frames in all, {} distinct frames \
         only (or not as often) on the first side, {} on the second:\n first only: {:?}\n second only: {:?}",
        client.len(),
        server.len(),
        only_client.len(),
        only_server.len(),
        &only_client[..only_client.len().min(6)],
        &only_server[..only_server.len().min(6)],
    );
}

impl Testbed {
    /// Starts the bridge on the testbed's config with `append` added to it (extra
    /// sections such as `[policy]`), written to `dir/glasswire.toml`.
    pub fn start_bridge_with(&self, dir: &Path, append: &str, extra: &[&str]) -> Bridge {
        let base = std::fs::read_to_string(self.s("config")).expect("testbed config");
        let path = dir.join("glasswire.toml");
        std::fs::write(&path, format!("{base}\n{append}")).expect("write config");
        let mut args = vec!["--config", path.to_str().expect("path")];
        args.extend_from_slice(extra);
        self.start_bridge_argv(&args)
    }
}

/// TLS ports nginx listens on: the usual one, a common alternative, and one no port
/// list would name.
pub const TLS_PORTS: [u16; 3] = [443, 8443, 5999];

/// nginx serving `dir/www` over TLS with a certificate for ok.example and
/// blocked.example, in the server namespace; stopped when dropped.
pub struct Nginx(Child);

impl Nginx {
    pub fn start(tb: &Testbed, dir: &Path) -> Self {
        let d = dir.display();
        let made = run(&[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=ok.example",
            "-addext",
            "subjectAltName=DNS:ok.example,DNS:blocked.example",
            "-keyout",
            &format!("{d}/key.pem"),
            "-out",
            &format!("{d}/cert.pem"),
        ]);
        assert!(
            made.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let listens: String = TLS_PORTS
            .iter()
            .map(|p| format!("    listen {p} ssl;\n    listen [::]:{p} ssl;\n"))
            .collect();
        Self(spawn_nginx(
            tb,
            dir,
            &format!("{listens}    ssl_certificate {d}/cert.pem;\n    ssl_certificate_key {d}/key.pem;\n"),
            5999,
        ))
    }
}

/// nginx in the server namespace serving `dir`/www with `server` (listen and certificate
/// lines) as its one server block, its files and logs under `dir`; returns once it
/// listens on `port` (10 s at most, else the panic shows its error log).
pub fn spawn_nginx(tb: &Testbed, dir: &Path, server: &str, port: u16) -> Child {
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
         server {{\n{server}    root {d}/www;\n  }}\n}}\n"
    );
    std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
    std::fs::write(dir.join("nginx.conf"), conf).expect("nginx.conf");
    let conf_path = format!("{d}/nginx.conf");
    let mut child = tb.spawn_in(
        &tb.s("server_ns"),
        &[
            "nginx",
            "-p",
            &d.to_string(),
            "-c",
            &conf_path,
            "-g",
            "daemon off;",
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let filter = format!("sport = :{port}");
    while Instant::now() < deadline {
        let out = tb.server(&["ss", "-ltnH", &filter]);
        if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!(
        "nginx did not start: {}",
        std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
    );
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// curl in the client namespace to https://NAME:PORT/PATH at `addr`, verifying the
/// server against the test's certificate; `extra` curl arguments go before the URL.
#[allow(clippy::too_many_arguments)]
pub fn curl_tls(
    tb: &Testbed,
    dir: &Path,
    name: &str,
    addr: &str,
    port: u16,
    path: &str,
    out: &Path,
    extra: &[&str],
) -> Output {
    let resolve = if addr.contains(':') {
        format!("{name}:{port}:[{addr}]")
    } else {
        format!("{name}:{port}:{addr}")
    };
    let cacert = dir.join("cert.pem");
    let url = format!("https://{name}:{port}/{path}");
    let mut args = vec![
        "curl",
        "-sS",
        "--fail",
        "--max-time",
        "20",
        "--cacert",
        cacert.to_str().expect("path"),
        "--resolve",
        &resolve,
        "-o",
        out.to_str().expect("path"),
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    tb.client(&args)
}

/// Polls the bridge's stats until `look` gives the same `Some` twice in a row (counters
/// the worker copies while idle, or a drain, have settled) and returns the stats then;
/// `None` means not ready yet. Fails after 20 s, naming `what`.
pub fn settled<T: PartialEq>(
    bridge: &Bridge,
    what: &str,
    look: impl Fn(&serde_json::Value) -> Option<T>,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        let stats = bridge.stats();
        let now = look(&stats);
        if now.is_some() && now == last {
            return stats;
        }
        assert!(Instant::now() < deadline, "{what} never settled: {stats}");
        last = now;
        std::thread::sleep(Duration::from_millis(300));
    }
}
