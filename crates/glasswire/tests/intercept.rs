//! End-to-end tests of TLS interception (`action = "intercept"`): the bridge terminates
//! the client's TLS with a certificate forged by the operator's inspection CA
//! (`glasswire ca init`) and re-originates TLS to the real server, which it verifies
//! against the testbed CA (`[intercept] upstream_ca_file`).
//!
//! In the server namespace: nginx (www.test on 443 with HTTP/2, TLS 1.2 only on 8443,
//! TLS 1.3 only on 8444, a self-signed certificate on 9443, an expired one on 9444, a
//! name mismatch on 9445) and an HTTPS upload server on 9000
//! (`tests/https_upload_server.py`), all with certificates made here by rcgen. In the
//! client namespace: curl, python's ssl and `openssl s_client`, which trust the
//! inspection CA only.
//!
//! Control mode (`GW_ICPT_CONTROL=1`): the rule says `bypass` instead of `intercept`, no
//! `[intercept]` table is written, and the clients trust the testbed CA. It checks this
//! harness (servers, certificates, clients) through a bridge that does not intercept:
//! every assertion that is about the inspection CA or the `intercept` counters is
//! replaced by its control counterpart (the client sees the real certificate).

mod common;

use common::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const TOOLS: [&str; 6] = ["nginx", "openssl", "curl", "python3", "ss", "timeout"];

const TESTBED_CA_CN: &str = "glasswire testbed CA";

/// Ports of the TLS servers in the server namespace.
const WWW: u16 = 443;
const TLS12_ONLY: u16 = 8443;
const TLS13_ONLY: u16 = 8444;
const SELF_SIGNED: u16 = 9443;
const EXPIRED: u16 = 9444;
const WRONG_NAME: u16 = 9445;
const UPLOAD: u16 = 9000;

fn control_mode() -> bool {
    std::env::var("GW_ICPT_CONTROL").is_ok_and(|v| v == "1")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with `input` on its stdin; stdout and stderr captured.
fn run_with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("waiting for the child");
    let _ = writer.join();
    out
}

// ---------------------------------------------------------------------------------
// Certificates

/// The base64 body of the first PEM certificate in `s`, whitespace removed: two
/// certificates are the same when these are equal.
fn first_pem(s: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let start = s.find(BEGIN)?;
    let len = s[start..].find(END)? + END.len();
    Some(s[start..start + len].to_string())
}

fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
        .collect()
}

/// The CN of an RFC 2253 name (`CN=x,O=y`).
fn cn(rfc2253: &str) -> String {
    let Some(at) = rfc2253.find("CN=") else {
        return String::new();
    };
    let mut out = String::new();
    let mut escaped = false;
    for c in rfc2253[at + 3..].chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, ',') => break,
            _ => {
                out.push(c);
                escaped = false;
            }
        }
    }
    out
}

#[derive(Debug)]
struct CertInfo {
    issuer_cn: String,
    dns_names: Vec<String>,
}

/// Issuer and DNS names of a PEM certificate, as openssl reads them.
fn cert_info(pem: &str) -> CertInfo {
    let mut cmd = Command::new("openssl");
    cmd.args([
        "x509",
        "-noout",
        "-issuer",
        "-nameopt",
        "RFC2253",
        "-ext",
        "subjectAltName",
    ]);
    let out = run_with_stdin(cmd, pem.as_bytes());
    assert!(out.status.success(), "openssl x509: {}\n{pem}", text(&out.stderr));
    let s = text(&out.stdout);
    let field = |key: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(key))
            .map(cn)
            .unwrap_or_default()
    };
    let dns_names = s
        .split([',', '\n'])
        .filter_map(|p| p.trim().strip_prefix("DNS:"))
        .map(str::to_string)
        .collect();
    CertInfo {
        issuer_cn: field("issuer="),
        dns_names,
    }
}

/// The certificates made for the servers, in `dir`.
struct Pki {
    testbed_ca: PathBuf,
    /// Each server certificate's (cert, key) paths and the cert's PEM.
    www: (PathBuf, PathBuf, String),
    self_signed: (PathBuf, PathBuf, String),
    expired: (PathBuf, PathBuf, String),
}

/// Validity from `from_days` to `to_days` days from now (negative: in the past).
fn set_validity(p: &mut CertificateParams, from_days: i64, to_days: i64) {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    let now = date_time_ymd(1970, 1, 1) + since_epoch;
    let at = |days: i64| {
        let d = Duration::from_secs(days.unsigned_abs() * 86_400);
        if days < 0 {
            now - d
        } else {
            now + d
        }
    };
    p.not_before = at(from_days);
    p.not_after = at(to_days);
}

fn server_params(cn: &str, names: &[&str], from_days: i64, to_days: i64) -> CertificateParams {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = CertificateParams::new(names).expect("server names");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    set_validity(&mut p, from_days, to_days);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    p
}

impl Pki {
    /// The testbed CA and the servers' certificates: www.test (and alt.test) issued by
    /// the CA, self.test self-signed, expired.test issued by the CA but expired
    /// yesterday. wrong.test is served with the www.test certificate.
    fn make(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, TESTBED_CA_CN);
        dn.push(DnType::OrganizationName, "glasswire tests");
        ca.distinguished_name = dn;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut ca, -1, 30);
        let ca_cert = ca.self_signed(&ca_key).expect("CA certificate");
        let testbed_ca = dir.join("testbed-ca.pem");
        std::fs::write(&testbed_ca, ca_cert.pem()).expect("testbed-ca.pem");
        let issuer = Issuer::new(ca, ca_key);

        let save = |stem: &str, cert: rcgen::Certificate, key: &KeyPair| {
            let (c, k) = (dir.join(format!("{stem}.crt")), dir.join(format!("{stem}.key")));
            std::fs::write(&c, cert.pem()).expect("cert");
            std::fs::write(&k, key.serialize_pem()).expect("key");
            (c, k, cert.pem())
        };
        let key = KeyPair::generate().expect("key");
        let www = server_params("www.test", &["www.test", "alt.test"], -1, 30)
            .signed_by(&key, &issuer)
            .expect("www.test");
        let www = save("www", www, &key);
        let key = KeyPair::generate().expect("key");
        let own = server_params("self.test", &["self.test"], -1, 30)
            .self_signed(&key)
            .expect("self.test");
        let self_signed = save("self", own, &key);
        let key = KeyPair::generate().expect("key");
        let old = server_params("expired.test", &["expired.test"], -30, -1)
            .signed_by(&key, &issuer)
            .expect("expired.test");
        let expired = save("expired", old, &key);
        Self {
            testbed_ca,
            www,
            self_signed,
            expired,
        }
    }
}

/// `glasswire ca init --out DIR/inspection-ca`: the inspection CA's directory.
fn inspection_ca_init(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let out_dir = dir.join("inspection-ca");
    std::fs::create_dir_all(&out_dir).expect("inspection-ca dir");
    let out = run(&[BIN, "ca", "init", "--out", out_dir.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "glasswire ca init: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let crt = out_dir.join("ca.crt");
    let key = out_dir.join("ca.key");
    assert!(crt.is_file(), "ca init made no {}", crt.display());
    let mode = std::fs::metadata(&key)
        .unwrap_or_else(|e| panic!("ca init made no {}: {e}", key.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "ca.key must be 0600, is {:o}", mode & 0o777);
    out_dir
}

// ---------------------------------------------------------------------------------
// Servers

/// A process in a namespace, killed when dropped.
struct Served(Child);

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_logged(tb: &Testbed, argv: &[&str], log: &Path) -> Served {
    let file = std::fs::File::create(log).expect("log file");
    let child = Command::new("ip")
        .args(["netns", "exec", &tb.s("server_ns")])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log fd"))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {argv:?}: {e}"));
    Served(child)
}

/// Waits until every port in `ports` listens in the server namespace.
fn wait_listening(tb: &Testbed, ports: &[u16], mut served: Served, log: &Path) -> Served {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let missing: Vec<u16> = ports
            .iter()
            .copied()
            .filter(|p| {
                let out = tb.server(&["ss", "-ltnH", &format!("sport = :{p}")]);
                text(&out.stdout).trim().is_empty()
            })
            .collect();
        if missing.is_empty() {
            return served;
        }
        let exited = matches!(served.0.try_wait(), Ok(Some(_)));
        if exited || Instant::now() > deadline {
            let _ = served.0.kill();
            panic!(
                "{:?} do not listen: {}",
                missing,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// True when this nginx takes `http2 on;` (1.25.1 and later) rather than
/// `listen ... http2`.
fn nginx_has_http2_directive() -> bool {
    let v = text(&run(&["nginx", "-v"]).stderr);
    let ver: Vec<u32> = v
        .split("nginx/")
        .nth(1)
        .unwrap_or_default()
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .next()
        .unwrap_or_default()
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(ver.len() >= 2, "cannot read the nginx version from {v:?}");
    (ver[0], ver[1], ver.get(2).copied().unwrap_or(0)) >= (1, 25, 1)
}

fn start_nginx(tb: &Testbed, dir: &Path, pki: &Pki) -> Served {
    let d = dir.display();
    let (h2_listen, h2_on) = if nginx_has_http2_directive() {
        ("", "    http2 on;\n")
    } else {
        (" http2", "")
    };
    let server = |port: u16,
                  listen_extra: &str,
                  extra: &str,
                  names: &str,
                  protocols: &str,
                  cert: &(PathBuf, PathBuf, String)| {
        format!(
            "  server {{\n    listen {port} ssl{listen_extra};\n{extra}    server_name {names};\n    \
             ssl_protocols {protocols};\n    ssl_certificate {};\n    ssl_certificate_key {};\n    \
             root {d}/www;\n  }}\n",
            cert.0.display(),
            cert.1.display()
        )
    };
    let both = "TLSv1.2 TLSv1.3";
    let servers = [
        server(WWW, h2_listen, h2_on, "www.test alt.test", both, &pki.www),
        server(TLS12_ONLY, "", "", "www.test", "TLSv1.2", &pki.www),
        server(TLS13_ONLY, "", "", "www.test", "TLSv1.3", &pki.www),
        server(SELF_SIGNED, "", "", "self.test", both, &pki.self_signed),
        server(EXPIRED, "", "", "expired.test", both, &pki.expired),
        server(WRONG_NAME, "", "", "wrong.test", both, &pki.www),
    ]
    .concat();
    // One process (no master): killing it leaves no worker behind.
    let conf = format!(
        "master_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  \
         fastcgi_temp_path {d}/tmp;\n  uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n  \
         ssl_session_cache shared:GW:10m;\n  ssl_session_timeout 10m;\n  ssl_session_tickets on;\n\
         {servers}}}\n"
    );
    std::fs::create_dir_all(dir.join("tmp")).expect("tmp");
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).expect("nginx.conf");
    let log = dir.join("nginx.out");
    let served = spawn_logged(
        tb,
        &[
            "nginx",
            "-p",
            &d.to_string(),
            "-c",
            conf_path.to_str().expect("path"),
            "-g",
            "daemon off;",
        ],
        &log,
    );
    wait_listening(
        tb,
        &[WWW, TLS12_ONLY, TLS13_ONLY, SELF_SIGNED, EXPIRED, WRONG_NAME],
        served,
        &log,
    )
}

fn start_upload_server(tb: &Testbed, dir: &Path, pki: &Pki) -> Served {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/https_upload_server.py");
    let log = dir.join("upload.log");
    let served = spawn_logged(
        tb,
        &[
            "python3",
            script,
            "--port",
            &UPLOAD.to_string(),
            "--cert",
            pki.www.0.to_str().expect("path"),
            "--key",
            pki.www.1.to_str().expect("path"),
        ],
        &log,
    );
    wait_listening(tb, &[UPLOAD], served, &log)
}

// ---------------------------------------------------------------------------------
// The rig: testbed, servers, bridge, and the clients.

struct Rig {
    // Dropped in this order: the bridge, the servers, the files, the testbed.
    bridge: Bridge,
    _upload: Option<Served>,
    _nginx: Served,
    pki: Pki,
    /// What the clients trust: the inspection CA, or in control mode the testbed CA.
    client_ca: PathBuf,
    /// CN of the CA the clients' server certificates must be issued by.
    expect_issuer: String,
    control: bool,
    /// sha256 of the files under www/.
    hashes: HashMap<String, String>,
    dir: Scratch,
    tb: Testbed,
}

/// What one curl saw.
#[derive(Debug)]
struct Curl {
    ok: bool,
    code: Option<i32>,
    /// `%{http_version}`: "1.1", "2".
    http_version: String,
    /// The TLS version curl reports (`SSL connection using TLSv1.3 / ...`).
    tls_version: String,
    /// The first certificate the server sent, as PEM.
    leaf: Option<String>,
    stderr: String,
}

impl Curl {
    fn assert_ok(&self, what: &str) {
        assert!(self.ok, "{what}: curl failed ({:?}):\n{}", self.code, self.stderr);
    }

    fn leaf(&self, what: &str) -> &str {
        self.leaf
            .as_deref()
            .unwrap_or_else(|| panic!("{what}: curl reported no certificate:\n{}", self.stderr))
    }
}

/// What one `openssl s_client` saw.
#[derive(Debug)]
struct SClient {
    out: String,
    verify: Option<i64>,
    /// "New, TLSv1.3" or "Reused, TLSv1.2".
    session: String,
    leaf: Option<String>,
}

const PY_GET: &str = r#"
import hashlib, json, socket, ssl, sys
ip, port, name, cafile, path = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(cafile=cafile)
data = b""
with socket.create_connection((ip, port), timeout=60) as raw:
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        cert = s.getpeercert()
        der = s.getpeercert(binary_form=True)
        version = s.version()
        s.sendall(f"GET /{path} HTTP/1.0\r\nHost: {name}\r\n\r\n".encode())
        while True:
            try:
                chunk = s.recv(65536)
            except ssl.SSLEOFError:
                break
            if not chunk:
                break
            data += chunk
head, _, body = data.partition(b"\r\n\r\n")
issuer = dict(x[0] for x in cert["issuer"])
print(json.dumps({
    "version": version,
    "issuer_cn": issuer.get("commonName"),
    "dns": [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"],
    "status": head.split(b"\r\n")[0].decode(),
    "body_sha256": hashlib.sha256(body).hexdigest(),
    "cert": ssl.DER_cert_to_PEM_cert(der),
}))
"#;

impl Rig {
    /// The testbed, certificates, nginx (and the upload server when `upload`), the files
    /// `files` (name, MiB of random bytes) and index.html under www/, and the bridge.
    /// None when the test cannot run here (see `can_run`).
    fn up(prefix: &str, files: &[(&str, usize)], upload: bool) -> Option<Self> {
        if !can_run(&TOOLS) {
            return None;
        }
        let control = control_mode();
        if control {
            eprintln!(
                "CONTROL MODE: rule action = \"bypass\", clients trust the testbed CA; \
                 the inspection-CA and intercept-counter assertions are skipped"
            );
        }
        let tb = Testbed::up(prefix);
        let dir = Scratch::new(prefix);
        let www = dir.0.join("www");
        std::fs::create_dir_all(&www).expect("www");
        let mut hashes = HashMap::new();
        for (name, mb) in files {
            hashes.insert(name.to_string(), random_file(&www.join(name), *mb));
        }
        std::fs::write(
            www.join("index.html"),
            format!("<html><body>glasswire interception test {prefix}</body></html>\n"),
        )
        .expect("index.html");
        hashes.insert("index.html".into(), sha256_file(&www.join("index.html")));
        let pki = Pki::make(&dir.0);
        let nginx = start_nginx(&tb, &dir.0, &pki);
        let upload = upload.then(|| start_upload_server(&tb, &dir.0, &pki));

        let (client_ca, expect_issuer, append) = if control {
            let rule = "[[policy.rule]]\nname = \"inspect\"\nsni = [\"*.test\"]\naction = \"bypass\"\n";
            (
                pki.testbed_ca.clone(),
                TESTBED_CA_CN.to_string(),
                rule.to_string(),
            )
        } else {
            let ica = inspection_ca_init(&dir.0);
            let crt = ica.join("ca.crt");
            let subject = run_ok(&[
                "openssl",
                "x509",
                "-noout",
                "-subject",
                "-nameopt",
                "RFC2253",
                "-in",
                crt.to_str().expect("path"),
            ]);
            let issuer = cn(subject.trim().trim_start_matches("subject="));
            assert!(!issuer.is_empty(), "the inspection CA has no CN: {subject}");
            assert_ne!(issuer, TESTBED_CA_CN);
            let append = format!(
                "[intercept]\nca_cert = \"{}\"\nca_key = \"{}\"\nupstream_ca_file = \"{}\"\n\
                 system_roots = false\n\n\
                 [[policy.rule]]\nname = \"inspect\"\nsni = [\"*.test\"]\naction = \"intercept\"\n",
                crt.display(),
                ica.join("ca.key").display(),
                pki.testbed_ca.display()
            );
            (crt, issuer, append)
        };
        let bridge = tb.start_bridge_with(&dir.0, &append, &[]);
        Some(Self {
            bridge,
            _upload: upload,
            _nginx: nginx,
            pki,
            client_ca,
            expect_issuer,
            control,
            hashes,
            dir,
            tb,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }

    /// curl in the client namespace to https://NAME:PORT/PATH (NAME resolved to the
    /// server), trusting `ca`, the body written to `out`; `extra` goes before the URL.
    fn curl(&self, name: &str, port: u16, path: &str, ca: &Path, out: &Path, extra: &[&str]) -> Curl {
        let resolve = format!("{name}:{port}:{}", self.tb.s("server_ip"));
        let url = format!("https://{name}:{port}/{path}");
        let mut argv = vec![
            "curl",
            "-sS",
            "-v",
            "--fail",
            "--max-time",
            "300",
            "--cacert",
            ca.to_str().expect("path"),
            "--resolve",
            &resolve,
            "-o",
            out.to_str().expect("path"),
            "-w",
            "%{http_version}\\n%{certs}",
        ];
        argv.extend_from_slice(extra);
        argv.push(&url);
        let o = self.tb.client(&argv);
        let stdout = text(&o.stdout);
        let stderr = text(&o.stderr);
        let tls_version = stderr
            .lines()
            .find_map(|l| l.split("SSL connection using ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        Curl {
            ok: o.status.success(),
            code: o.status.code(),
            http_version: stdout.lines().next().unwrap_or_default().trim().to_string(),
            tls_version,
            leaf: first_pem(&stdout),
            stderr,
        }
    }

    /// A GET of /PATH by python's ssl module (trusting the clients' CA), as JSON.
    fn python_get(&self, name: &str, port: u16, path: &str) -> Value {
        let o = self.tb.client(&[
            "timeout",
            "120",
            "python3",
            "-c",
            PY_GET,
            &self.tb.s("server_ip"),
            &port.to_string(),
            name,
            self.client_ca.to_str().expect("path"),
            path,
        ]);
        assert!(
            o.status.success(),
            "python ssl client to {name}:{port}: {}",
            text(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("python client JSON")
    }

    /// `openssl s_client` to NAME:PORT trusting the clients' CA, sending a GET of
    /// /index.html and reading until the server closes.
    fn s_client(&self, name: &str, port: u16, extra: &[&str]) -> SClient {
        let connect = format!("{}:{port}", self.tb.s("server_ip"));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.tb.s("client_ns")])
            .args(["timeout", "60", "openssl", "s_client", "-connect", &connect])
            .args(["-servername", name, "-CAfile"])
            .arg(&self.client_ca)
            .args(["-verify_return_error", "-showcerts", "-ign_eof"])
            .args(extra);
        let request = format!("GET /index.html HTTP/1.0\r\nHost: {name}\r\n\r\n");
        let o = run_with_stdin(cmd, request.as_bytes());
        let out = format!("{}\n{}", text(&o.stdout), text(&o.stderr));
        let verify = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Verify return code: "))
            .filter_map(|r| r.split_whitespace().next()?.parse().ok())
            .next_back();
        let session = out
            .lines()
            .find(|l| l.starts_with("New, ") || l.starts_with("Reused, "))
            .map(|l| l.split(',').take(2).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        SClient {
            leaf: first_pem(&text(&o.stdout)),
            out,
            verify,
            session,
        }
    }

    /// The certificate the server for `name` really has.
    fn real_cert(&self, name: &str) -> &str {
        match name {
            "self.test" => &self.pki.self_signed.2,
            "expired.test" => &self.pki.expired.2,
            _ => &self.pki.www.2,
        }
    }

    /// `leaf` is the server's own certificate, untouched.
    fn assert_real_cert(&self, leaf: &str, name: &str, what: &str) {
        assert_eq!(
            pem_body(leaf),
            pem_body(self.real_cert(name)),
            "{what}: the client did not see {name}'s own certificate"
        );
    }

    /// The certificate a client saw for `name`: issued by the CA the clients trust (the
    /// inspection CA: forged, not the server's own), carrying `name`, and valid for it
    /// as openssl checks it.
    fn check_leaf(&self, leaf: &str, name: &str, what: &str) {
        let info = cert_info(leaf);
        assert!(
            info.dns_names.iter().any(|n| n == name),
            "{what}: the certificate does not name {name}: {info:?}"
        );
        assert_eq!(
            info.issuer_cn, self.expect_issuer,
            "{what}: the certificate's issuer is not the expected CA: {info:?}"
        );
        if self.control {
            self.assert_real_cert(leaf, name, what);
        } else {
            assert_ne!(
                pem_body(leaf),
                pem_body(self.real_cert(name)),
                "{what}: the client saw the server's own certificate, not a forged one"
            );
        }
        let file = self.path("leaf.pem");
        std::fs::write(&file, leaf).expect("leaf.pem");
        let v = run(&[
            "openssl",
            "verify",
            "-CAfile",
            self.client_ca.to_str().expect("path"),
            "-purpose",
            "sslserver",
            "-verify_hostname",
            name,
            file.to_str().expect("path"),
        ]);
        assert!(
            v.status.success(),
            "{what}: openssl verify of the certificate for {name}: {}{}",
            text(&v.stdout),
            text(&v.stderr)
        );
    }

    fn body_is(&self, got: &Path, file: &str, what: &str) {
        assert_eq!(
            sha256_file(got),
            self.hashes[file],
            "{what}: the body of {file} differs"
        );
    }

    /// Waits (10 s at most) until the stats satisfy `check`; returns them.
    fn wait_stats(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let st = self.bridge.stats();
            if check(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {st}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The bridge saw the test's `flows` TLS sessions: in control mode that many flows
    /// matched the (bypass) rule; otherwise the `intercept` counters reach `want` (each
    /// exactly, waiting for those counted as sessions end) and stay there.
    fn expect_sessions(&self, flows: u64, want: &[(&str, u64)]) {
        if self.control {
            let st = self.wait_stats("the flows to be decided", |st| {
                sum_workers(st, &["flows", "decided_bypass"]) >= flows
            });
            assert_eq!(sum_workers(&st, &["flows", "decided_bypass"]), flows, "{st}");
            assert_eq!(sum_workers(&st, &["flows", "tls_hellos"]), flows, "{st}");
            return;
        }
        let st = self.wait_stats("the intercept counters", |st| {
            want.iter().all(|(k, n)| icpt(st, k) == *n)
        });
        // Still so a moment later: nothing was counted twice.
        std::thread::sleep(Duration::from_millis(500));
        let st2 = self.bridge.stats();
        for (k, n) in want {
            assert_eq!(icpt(&st2, k), *n, "intercept.{k} moved on: {st} then {st2}");
        }
        eprintln!("intercept counters: {}", st2["intercept"]);
    }
}

fn icpt(st: &Value, key: &str) -> u64 {
    u(st, &["intercept", key])
}

fn sum_workers(st: &Value, path: &[&str]) -> u64 {
    let n = st["workers"].as_array().map_or(0, Vec::len);
    (0..n)
        .map(|i| {
            let i = i.to_string();
            let mut full = vec!["workers", i.as_str()];
            full.extend_from_slice(path);
            u(st, &full)
        })
        .sum()
}

// ---------------------------------------------------------------------------------
// The tests

#[test]
fn intercepted_downloads_are_intact_and_carry_a_forged_certificate() {
    let Some(rig) = Rig::up("e2eicdl", &[("big.bin", 100)], false) else {
        return;
    };
    // 100 MiB over HTTP/1.1, then over HTTP/2.
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let what = format!("curl {flag} of 100 MiB");
        let got = rig.path("got.bin");
        let c = rig.curl("www.test", WWW, "big.bin", &rig.client_ca, &got, &[flag]);
        c.assert_ok(&what);
        assert_eq!(
            c.http_version, version,
            "{what}: curl spoke HTTP/{}",
            c.http_version
        );
        rig.body_is(&got, "big.bin", &what);
        rig.check_leaf(c.leaf(&what), "www.test", &what);
        std::fs::remove_file(&got).expect("remove the download");
    }

    // python's ssl module.
    let py = rig.python_get("www.test", WWW, "index.html");
    let status = py["status"].as_str().unwrap_or_default();
    assert!(status.contains(" 200 "), "python client: {py}");
    assert_eq!(
        py["body_sha256"].as_str(),
        Some(rig.hashes["index.html"].as_str()),
        "python client: {py}"
    );
    assert_eq!(
        py["issuer_cn"].as_str(),
        Some(rig.expect_issuer.as_str()),
        "python client: {py}"
    );
    assert!(
        matches!(py["version"].as_str(), Some("TLSv1.2" | "TLSv1.3")),
        "python client: {py}"
    );
    rig.check_leaf(
        py["cert"].as_str().expect("cert"),
        "www.test",
        "python ssl client",
    );

    // openssl s_client verifies the chain it is given against the CA it trusts.
    let s = rig.s_client("www.test", WWW, &[]);
    assert_eq!(s.verify, Some(0), "openssl s_client did not verify:\n{}", s.out);
    assert!(
        s.out.contains("HTTP/1.1 200"),
        "openssl s_client got no page:\n{}",
        s.out
    );
    let leaf = s
        .leaf
        .as_deref()
        .unwrap_or_else(|| panic!("no certificate:\n{}", s.out));
    rig.check_leaf(leaf, "www.test", "openssl s_client");

    rig.expect_sessions(
        4,
        &[
            ("sessions", 4),
            ("established", 4),
            ("upstream_rejected", 0),
            ("client_rejected_forgery", 0),
            ("bypassed_pinned", 0),
        ],
    );
}

#[test]
fn a_20_mib_upload_reaches_the_server_intact() {
    let Some(rig) = Rig::up("e2eicup", &[], true) else {
        return;
    };
    let body = rig.path("body.bin");
    let want = random_file(&body, 20);
    let data = format!("@{}", body.display());
    let resp = rig.path("resp.txt");
    let what = "POST of 20 MiB";
    let c = rig.curl(
        "www.test",
        UPLOAD,
        "upload",
        &rig.client_ca,
        &resp,
        &[
            "-H",
            "Expect:",
            "-H",
            "Content-Type: application/octet-stream",
            "--data-binary",
            &data,
        ],
    );
    c.assert_ok(what);
    let echoed = std::fs::read_to_string(&resp).expect("response");
    assert_eq!(echoed.trim(), want, "{what}: the server hashed a different body");
    rig.check_leaf(c.leaf(what), "www.test", what);
    rig.expect_sessions(
        1,
        &[("sessions", 1), ("established", 1), ("upstream_rejected", 0)],
    );
}

#[test]
fn tls12_only_and_tls13_only_servers_work_and_sessions_resume() {
    let Some(rig) = Rig::up("e2eicver", &[], false) else {
        return;
    };
    // The client is held to the server's version, so what it reports is the version
    // of its own half whatever the bridge would offer.
    let cases: [(u16, &str, &[&str], &str); 2] = [
        (
            TLS12_ONLY,
            "TLSv1.2",
            &["--tlsv1.2", "--tls-max", "1.2"],
            "-tls1_2",
        ),
        (TLS13_ONLY, "TLSv1.3", &["--tlsv1.3"], "-tls1_3"),
    ];
    for (port, version, curl_flags, ossl_flag) in cases {
        let what = format!("curl to the {version}-only server");
        let got = rig.path("got.html");
        let c = rig.curl("www.test", port, "index.html", &rig.client_ca, &got, curl_flags);
        c.assert_ok(&what);
        assert_eq!(c.tls_version, version, "{what}:\n{}", c.stderr);
        rig.body_is(&got, "index.html", &what);
        rig.check_leaf(c.leaf(&what), "www.test", &what);

        // A full handshake saving the session, then one resuming it.
        let sess = rig.path(&format!("session-{port}.pem"));
        let sess = sess.to_str().expect("path");
        let first = rig.s_client("www.test", port, &[ossl_flag, "-sess_out", sess]);
        assert_eq!(first.verify, Some(0), "first handshake on {port}:\n{}", first.out);
        assert_eq!(
            first.session,
            format!("New, {version}"),
            "first handshake on {port}:\n{}",
            first.out
        );
        assert!(
            first.out.contains("HTTP/1.1 200"),
            "no page on {port}:\n{}",
            first.out
        );
        let leaf = first
            .leaf
            .as_deref()
            .unwrap_or_else(|| panic!("no certificate:\n{}", first.out));
        rig.check_leaf(leaf, "www.test", &format!("s_client to {port}"));
        assert!(
            std::fs::metadata(sess).is_ok_and(|m| m.len() > 0),
            "s_client saved no session on {port}:\n{}",
            first.out
        );
        let second = rig.s_client("www.test", port, &[ossl_flag, "-sess_in", sess]);
        assert_eq!(
            second.session,
            format!("Reused, {version}"),
            "the second handshake on {port} did not resume:\n{}",
            second.out
        );
        assert_eq!(
            second.verify,
            Some(0),
            "resumed handshake on {port}:\n{}",
            second.out
        );
        assert!(
            second.out.contains("HTTP/1.1 200"),
            "no page on {port} resumed:\n{}",
            second.out
        );
    }
    rig.expect_sessions(
        6,
        &[("sessions", 6), ("established", 6), ("upstream_rejected", 0)],
    );
}

/// Children killed when dropped (a test that fails half way leaves no curl behind).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn two_hundred_concurrent_intercepted_sessions_complete_intact() {
    const N: usize = 200;
    let Some(rig) = Rig::up("e2eic200", &[("one.bin", 1)], false) else {
        return;
    };
    let resolve = format!("www.test:{WWW}:{}", rig.tb.s("server_ip"));
    let url = format!("https://www.test:{WWW}/one.bin");
    // Rate-limited so that the transfers overlap: 1 MiB at 128 KiB/s is 8 s each.
    let mut kids = Children(Vec::new());
    for i in 0..N {
        let err = std::fs::File::create(rig.path(&format!("err-{i}"))).expect("stderr file");
        let child = Command::new("ip")
            .args(["netns", "exec", &rig.tb.s("client_ns")])
            .args(["curl", "-sS", "--fail", "--http1.1", "--max-time", "240"])
            .args(["--limit-rate", "128k", "--cacert"])
            .arg(&rig.client_ca)
            .args(["--resolve", &resolve, "-o"])
            .arg(rig.path(&format!("got-{i}")))
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawning curl");
        kids.0.push(child);
    }
    // How many are connected at once, seen from the client.
    let mut peak = 0;
    let mut status = vec![None; N];
    let deadline = Instant::now() + Duration::from_secs(300);
    while status.iter().any(Option::is_none) {
        assert!(Instant::now() < deadline, "the transfers did not finish");
        let out = rig
            .tb
            .client(&["ss", "-tnH", "state", "established", &format!("dport = :{WWW}")]);
        peak = peak.max(text(&out.stdout).lines().count());
        for (i, c) in kids.0.iter_mut().enumerate() {
            if status[i].is_none() {
                status[i] = c.try_wait().expect("try_wait");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut failures = Vec::new();
    for (i, st) in status.iter().enumerate() {
        let st = st.expect("finished");
        let got = rig.path(&format!("got-{i}"));
        if !st.success() {
            let err = std::fs::read_to_string(rig.path(&format!("err-{i}"))).unwrap_or_default();
            failures.push(format!("#{i}: {st}: {}", err.trim()));
        } else if sha256_file(&got) != rig.hashes["one.bin"] {
            failures.push(format!("#{i}: the body differs"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {N} transfers failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(peak >= N / 2, "only {peak} sessions were open at once");
    eprintln!("{N} transfers, {peak} open at once");
    rig.expect_sessions(
        N as u64,
        &[
            ("sessions", N as u64),
            ("established", N as u64),
            ("upstream_rejected", 0),
        ],
    );
}

#[test]
fn upstream_certificates_that_fail_verification_are_blocked() {
    let Some(rig) = Rig::up("e2eicbad", &[], false) else {
        return;
    };
    let bad = [
        ("self.test", SELF_SIGNED, "self-signed", "self.test"),
        ("expired.test", EXPIRED, "expired", TESTBED_CA_CN),
        ("wrong.test", WRONG_NAME, "wrong name", TESTBED_CA_CN),
    ];
    for (name, port, what, real_issuer) in bad {
        let got = rig.path("got.html");
        let c = rig.curl(name, port, "index.html", &rig.client_ca, &got, &[]);
        assert!(
            !c.ok,
            "{what} upstream ({name}:{port}): the client's handshake succeeded:\n{}",
            c.stderr
        );
        if rig.control {
            // The harness' certificate fails the client's own verification.
            assert_eq!(
                c.code,
                Some(60),
                "{what}: not a certificate failure:\n{}",
                c.stderr
            );
        }
        // Without verifying: the server works, only its certificate is bad; through
        // interception the session is blocked all the same, never forged.
        let k = rig.curl(name, port, "index.html", &rig.client_ca, &got, &["-k"]);
        if rig.control {
            k.assert_ok(&format!("{what}: curl -k"));
            rig.body_is(&got, "index.html", what);
            let leaf = k.leaf(what);
            rig.assert_real_cert(leaf, name, what);
            assert_eq!(cert_info(leaf).issuer_cn, real_issuer, "{what}");
        } else {
            assert!(
                !k.ok,
                "{what} upstream ({name}:{port}): curl -k got a session; the bridge must block it:\n{}",
                k.stderr
            );
        }
    }
    // A good server beside them.
    let got = rig.path("got.html");
    let c = rig.curl("www.test", WWW, "index.html", &rig.client_ca, &got, &[]);
    c.assert_ok("www.test beside the bad ones");
    rig.body_is(&got, "index.html", "www.test");
    rig.check_leaf(c.leaf("www.test"), "www.test", "www.test");
    rig.expect_sessions(
        7,
        &[
            ("sessions", 7),
            ("established", 1),
            ("upstream_rejected", 6),
            ("client_rejected_forgery", 0),
            ("bypassed_pinned", 0),
        ],
    );
}

#[test]
fn a_client_that_rejects_the_forgery_is_bypassed_next_time() {
    let Some(rig) = Rig::up("e2eicpin", &[], false) else {
        return;
    };
    // This client trusts the testbed CA only: it rejects a forged certificate.
    let ca = rig.pki.testbed_ca.clone();
    let got = rig.path("got.html");
    let first = rig.curl("www.test", WWW, "index.html", &ca, &got, &[]);
    if rig.control {
        first.assert_ok("first attempt (control)");
    } else {
        assert!(
            !first.ok,
            "a client that does not trust the inspection CA accepted the session:\n{}",
            first.stderr
        );
        rig.wait_stats("the rejection to be counted", |st| {
            icpt(st, "client_rejected_forgery") == 1
        });
    }
    // Same client, server and name: passed through untouched.
    let second = rig.curl("www.test", WWW, "index.html", &ca, &got, &[]);
    second.assert_ok("second attempt (bypassed)");
    rig.body_is(&got, "index.html", "second attempt");
    let leaf = second.leaf("second attempt");
    rig.assert_real_cert(leaf, "www.test", "second attempt");
    assert_eq!(cert_info(leaf).issuer_cn, TESTBED_CA_CN);
    rig.expect_sessions(2, &[("client_rejected_forgery", 1), ("bypassed_pinned", 1)]);
    // Another name on the same server is not on the list: intercepted, and rejected.
    let third = rig.curl("alt.test", WWW, "index.html", &ca, &got, &[]);
    if rig.control {
        third.assert_ok("alt.test (control)");
        rig.assert_real_cert(third.leaf("alt.test"), "alt.test", "alt.test");
    } else {
        assert!(
            !third.ok,
            "alt.test is not on the bypass list, yet the client accepted the session:\n{}",
            third.stderr
        );
    }
    rig.expect_sessions(3, &[("client_rejected_forgery", 2), ("bypassed_pinned", 1)]);
}

// Interception under loss, duplication and reordering on both sides of the bridge:
// tests/impair.rs.

/// One python ssl client on a fixed source port: a GET on a kept-alive connection, then
/// (`reset`) a close with SO_LINGER 0 — an RST, as a client that closes with unread data
/// sends — or a clean close. Prints the body's sha256.
const PY_FIXED_PORT_GET: &str = r#"
import hashlib, socket, ssl, struct, sys
ip, port, name, cafile, sport, reset = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6] == "reset"
ctx = ssl.create_default_context(cafile=cafile)
raw = socket.socket()
raw.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
raw.bind(("", sport))
raw.settimeout(15)
raw.connect((ip, port))
s = ctx.wrap_socket(raw, server_hostname=name)
s.sendall(f"GET /index.html HTTP/1.1\r\nHost: {name}\r\n\r\n".encode())
data, need = b"", None
while need is None or len(data) < need:
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
    head, sep, _ = data.partition(b"\r\n\r\n")
    if need is None and sep:
        length = [l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
        need = len(head) + 4 + int(length[0].split(b":")[1])
body = data.partition(b"\r\n\r\n")[2]
if reset:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
# (No unwrap on a clean close: nginx answers a close_notify with a bare FIN.)
s.close()
print(hashlib.sha256(body).hexdigest())
"#;

#[test]
fn a_client_reset_resets_the_server_and_frees_the_ports_at_once() {
    let Some(rig) = Rig::up("e2eicrs", &[], false) else {
        return;
    };
    if rig.control {
        eprintln!("CONTROL MODE: this test is about intercepted sessions; skipped");
        return;
    }
    const SPORT: u16 = 40123;
    let get = |how: &str| {
        let o = rig.tb.client(&[
            "timeout",
            "30",
            "python3",
            "-c",
            PY_FIXED_PORT_GET,
            &rig.tb.s("server_ip"),
            &WWW.to_string(),
            "www.test",
            rig.client_ca.to_str().expect("path"),
            &SPORT.to_string(),
            how,
        ]);
        assert!(
            o.status.success(),
            "python client ({how}) from port {SPORT}: {}",
            text(&o.stderr)
        );
        assert_eq!(
            text(&o.stdout).trim(),
            rig.hashes["index.html"],
            "python client ({how}): body differs"
        );
    };

    // The client resets its kept-alive connection: the server's end of it goes too
    // (nginx would otherwise keep it for its keep-alive timeout, and with it the
    // session at the bridge).
    get("reset");
    let filter = format!("( sport = :{WWW} and dport = :{SPORT} )");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let o = rig.tb.server(&["ss", "-tnH", "state", "connected", &filter]);
        let open = text(&o.stdout);
        if open.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "5 s after the client's reset the server still holds the connection:\n{open}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // At once, a new connection from the same port is intercepted as a new session.
    get("close");
    let st = rig.wait_stats("the second session", |st| icpt(st, "established") >= 2);
    assert_eq!(icpt(&st, "sessions"), 2, "{st}");
    assert_eq!(sum_workers(&st, &["flows", "intercept_reopened"]), 1, "{st}");
}
