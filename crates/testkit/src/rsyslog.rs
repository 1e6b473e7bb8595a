//! rsyslogd with its GnuTLS driver (imtcp, gtls: RFC 5425 octet-counted TLS), in the
//! foreground with a configuration and work directory of its own: the log server for
//! tests of the session log's syslog sink.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long rsyslogd gets to listen after a start, and to exit after SIGTERM.
const PATIENCE: Duration = Duration::from_secs(20);

/// The listener's TLS side: what it presents, what it checks clients against, and how
/// (`AuthMode`: "anon", "x509/certvalid", "x509/name").
#[derive(Debug)]
pub struct Tls<'a> {
    pub ca: &'a Path,
    pub cert: &'a Path,
    pub key: &'a Path,
    pub authmode: &'a str,
}

/// What an rsyslog test needs and this machine lacks, as `apt-get` would name it; empty
/// when it can run (root is the caller's to check).
pub fn missing() -> Vec<String> {
    let mut missing = Vec::new();
    if rsyslogd().is_none() {
        missing.push("rsyslogd (apt-get install rsyslog)".to_string());
    }
    if gtls_driver().is_none() {
        missing.push("rsyslog's gtls driver lmnsd_gtls.so (apt-get install rsyslog-gnutls)".into());
    }
    if !Command::new("ss")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        missing.push("ss (apt-get install iproute2)".into());
    }
    missing
}

/// Where rsyslogd is installed: sbin directories need not be on a test's PATH.
pub fn rsyslogd() -> Option<PathBuf> {
    ["/usr/sbin/rsyslogd", "/sbin/rsyslogd", "/usr/local/sbin/rsyslogd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The gtls network stream driver, a separate package on Debian.
pub fn gtls_driver() -> Option<PathBuf> {
    let mut dirs = vec![
        PathBuf::from("/usr/lib/rsyslog"),
        PathBuf::from("/usr/lib64/rsyslog"),
    ];
    if let Ok(rd) = fs::read_dir("/usr/lib") {
        // Multiarch: /usr/lib/x86_64-linux-gnu/rsyslog.
        dirs.extend(rd.flatten().map(|e| e.path().join("rsyslog")));
    }
    dirs.into_iter()
        .map(|d| d.join("lmnsd_gtls.so"))
        .find(|p| p.exists())
}

/// One rsyslogd, writing each message's MSG part as a line of `out.log` in its
/// directory; killed when dropped, whatever path the test takes.
#[derive(Debug)]
pub struct Rsyslog {
    dir: PathBuf,
    ns: Option<String>,
    addr: String,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Rsyslog {
    /// Writes the configuration into `dir`: a TLS listener on `addr:port`, inside network
    /// namespace `ns` when one is given. `start` runs it.
    pub fn new(dir: &Path, ns: Option<&str>, addr: &str, port: u16, tls: &Tls) -> Self {
        let work = dir.join("work");
        fs::create_dir_all(&work).expect("rsyslog's work directory");
        let conf = format!(
            r#"
global(
    workDirectory="{work}"
    maxMessageSize="64k"
    defaultNetstreamDriver="gtls"
    defaultNetstreamDriverCAFile="{ca}"
    defaultNetstreamDriverCertFile="{cert}"
    defaultNetstreamDriverKeyFile="{key}"
)
module(load="imtcp"
    StreamDriver.Name="gtls"
    StreamDriver.Mode="1"
    StreamDriver.AuthMode="{authmode}"
)
input(type="imtcp" address="{addr}" port="{port}")
template(name="msgonly" type="string" string="%msg%\n")
action(type="omfile" file="{out}" template="msgonly")
"#,
            work = work.display(),
            ca = tls.ca.display(),
            cert = tls.cert.display(),
            key = tls.key.display(),
            authmode = tls.authmode,
            out = dir.join("out.log").display(),
        );
        fs::write(dir.join("rsyslog.conf"), conf).expect("writing rsyslog.conf");
        Self {
            dir: dir.to_path_buf(),
            ns: ns.map(str::to_string),
            addr: addr.to_string(),
            port,
            child: None,
            starts: 0,
        }
    }

    /// `addr:port`, as a client's configuration names the server.
    pub fn server(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    /// Starts rsyslogd and returns once its port is listening; each start keeps its own
    /// stderr file.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "rsyslogd is running already");
        self.starts += 1;
        let err = fs::File::create(self.dir.join(format!("rsyslogd-{}.stderr", self.starts)))
            .expect("rsyslogd's stderr file");
        let rsyslogd = rsyslogd().unwrap_or_else(|| PathBuf::from("rsyslogd"));
        let child = self
            .in_ns(&rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(err.try_clone().expect("stderr file descriptor"))
            .stderr(err)
            .spawn()
            .expect("starting rsyslogd");
        self.child = Some(child);
        // Listening, as `ss` sees it in rsyslogd's namespace (a probe connection would be
        // an aborted TLS session in rsyslog's own log).
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = self
                .in_ns(Path::new("ss"))
                .args(["-ltnH", &format!("sport = :{}", self.port)])
                .output()
                .expect("running ss");
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return;
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
                panic!("rsyslogd exited ({st}): {}", self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen within {PATIENCE:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, the way an init system stops it, and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // `ip netns exec` execs rsyslogd, so the pid is rsyslogd's either way.
        // Safety: kill(2) on the pid of our own child, which has not been reaped yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("rsyslogd did not exit within {PATIENCE:?} of SIGTERM");
    }

    /// Everything written to `out.log` so far.
    pub fn output(&self) -> String {
        fs::read_to_string(self.dir.join("out.log")).unwrap_or_default()
    }

    /// `output`'s lines.
    pub fn lines(&self) -> Vec<String> {
        self.output().lines().map(str::to_string).collect()
    }

    /// rsyslogd's own output, every start's.
    pub fn stderr(&self) -> String {
        (1..=self.starts)
            .map(|i| fs::read_to_string(self.dir.join(format!("rsyslogd-{i}.stderr"))).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn in_ns(&self, program: &Path) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
