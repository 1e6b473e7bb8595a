//! `glasswire testbed`: a client, a server and the bridge between them, each in a
//! network namespace of its own, so nothing on the host is touched.
//!
//! ```text
//!  P-client            P-bridge                    P-server
//!  c0 10.66.0.1 ── veth ── porta [glasswire] portb ── veth ── s0 10.66.0.2
//!     fd66::1                  mirror0 (TAP)                    fd66::2
//! ```
//!
//! It handles the four veth traps noted in the design: the endpoints run an XDP pass
//! program (a frame redirected into a veth whose peer has none is dropped), their MTU
//! stays at 1500 (a native XDP program caps the peer's MTU and turns its GSO off), their
//! TX checksum offload is off (AF_XDP and XDP see partial checksums otherwise), and the
//! bridge serves queue 0 in copy mode (veth has one queue and no zero-copy).

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const DEFAULT_PREFIX: &str = "gw";
const STATE_ROOT: &str = "/run/glasswire/testbed";

pub const CLIENT_IP: &str = "10.66.0.1";
pub const SERVER_IP: &str = "10.66.0.2";
pub const CLIENT_IP6: &str = "fd66::1";
pub const SERVER_IP6: &str = "fd66::2";
pub const CLIENT_MAC: &str = "02:66:00:00:00:01";
pub const SERVER_MAC: &str = "02:66:00:00:00:02";

/// What `testbed status --json` prints; tests, docs and benchmarks rely on these names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub prefix: String,
    pub client_ns: String,
    pub server_ns: String,
    pub bridge_ns: String,
    pub client_if: String,
    pub server_if: String,
    pub client_ip: String,
    pub server_ip: String,
    pub client_ip6: String,
    pub server_ip6: String,
    pub client_mac: String,
    pub server_mac: String,
    /// The bridge's two interfaces, `[A, B]`, inside `bridge_ns`.
    pub ports: [String; 2],
    /// The mirror TAP, inside `bridge_ns`.
    pub mirror: String,
    /// A config file for this testbed.
    pub config: PathBuf,
    pub stats_socket: PathBuf,
    /// The exact argv that starts the bridge on this testbed.
    pub run: Vec<String>,
    pub state_dir: PathBuf,
}

fn check_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.len() <= 10
        && prefix.starts_with(|c: char| c.is_ascii_lowercase())
        && prefix
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        bail!("--prefix {prefix:?}: use 1 to 10 lowercase letters or digits, starting with a letter");
    }
    Ok(())
}

fn state_dir(prefix: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(prefix)
}

fn status_for(prefix: &str, exe: &Path) -> Status {
    let dir = state_dir(prefix);
    let config = dir.join("glasswire.toml");
    let bridge_ns = format!("{prefix}-bridge");
    Status {
        prefix: prefix.into(),
        client_ns: format!("{prefix}-client"),
        server_ns: format!("{prefix}-server"),
        bridge_ns: bridge_ns.clone(),
        client_if: "c0".into(),
        server_if: "s0".into(),
        client_ip: CLIENT_IP.into(),
        server_ip: SERVER_IP.into(),
        client_ip6: CLIENT_IP6.into(),
        server_ip6: SERVER_IP6.into(),
        client_mac: CLIENT_MAC.into(),
        server_mac: SERVER_MAC.into(),
        ports: ["porta".into(), "portb".into()],
        mirror: "mirror0".into(),
        stats_socket: dir.join("stats.sock"),
        run: vec![
            "ip".into(),
            "netns".into(),
            "exec".into(),
            bridge_ns,
            exe.display().to_string(),
            "run".into(),
            "--config".into(),
            config.display().to_string(),
        ],
        config,
        state_dir: dir,
    }
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// Runs a command; on failure the error carries the command line and its stderr.
pub fn sh(argv: &[&str]) -> Result<String> {
    let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
    let out = Command::new(prog)
        .args(args)
        .output()
        .with_context(|| format!("running `{}` (is it installed?)", argv.join(" ")))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            argv.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Reads the status of an existing testbed.
pub fn status(prefix: &str) -> Result<Status> {
    check_prefix(prefix)?;
    let file = state_dir(prefix).join("testbed.json");
    let text = std::fs::read_to_string(&file).map_err(|_| {
        anyhow!("no testbed with prefix {prefix:?} is up (run `glasswire testbed up --prefix {prefix}`)")
    })?;
    serde_json::from_str(&text).with_context(|| format!("reading {}", file.display()))
}

/// Creates the testbed; returns its status and whether it already existed.
pub fn up(prefix: &str) -> Result<(Status, bool)> {
    check_prefix(prefix)?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let st = status_for(prefix, &exe);
    let namespaces = [&st.client_ns, &st.server_ns, &st.bridge_ns];
    let ours = st.state_dir.join("testbed.json").exists();
    let existing: Vec<&String> = namespaces.iter().copied().filter(|n| netns_exists(n)).collect();
    if ours && existing.len() == namespaces.len() {
        return Ok((status(prefix)?, true));
    }
    if !existing.is_empty() {
        if ours {
            bail!(
                "testbed {prefix:?} is half there (namespaces {existing:?} exist); run `glasswire testbed down --prefix {prefix}` first"
            );
        }
        bail!(
            "network namespaces {existing:?} already exist and were not made by `glasswire testbed up`; \
             pick another --prefix or remove them yourself"
        );
    }
    if let Err(e) = build(&st) {
        let _ = teardown(&st);
        return Err(e.context(format!("bringing testbed {prefix:?} up (undone)")));
    }
    Ok((st, false))
}

fn build(st: &Status) -> Result<()> {
    std::fs::create_dir_all(&st.state_dir).with_context(|| format!("creating {}", st.state_dir.display()))?;
    let (c, s, b) = (
        st.client_ns.as_str(),
        st.server_ns.as_str(),
        st.bridge_ns.as_str(),
    );
    for ns in [c, s, b] {
        sh(&["ip", "netns", "add", ns])?;
        sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    // The bridge is invisible on the wire: no IPv6 link-local addresses, no router
    // solicitations or DAD probes leaving its ports.
    sh(&[
        "ip",
        "netns",
        "exec",
        b,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ])?;
    let [pa, pb] = [st.ports[0].as_str(), st.ports[1].as_str()];
    // Created directly inside the namespaces: the host never sees these interfaces.
    sh(&[
        "ip",
        "link",
        "add",
        &st.client_if,
        "netns",
        c,
        "type",
        "veth",
        "peer",
        "name",
        pa,
        "netns",
        b,
    ])?;
    sh(&[
        "ip",
        "link",
        "add",
        &st.server_if,
        "netns",
        s,
        "type",
        "veth",
        "peer",
        "name",
        pb,
        "netns",
        b,
    ])?;
    sh(&["ip", "-n", b, "tuntap", "add", "dev", &st.mirror, "mode", "tap"])?;

    let pass_obj = st.state_dir.join("xdp_pass.bpf.o");
    std::fs::write(&pass_obj, xdp::PASS_PROGRAM).context("writing the XDP pass program")?;
    let pass = pass_obj.display().to_string();
    for (ns, dev, mac, ip4, ip6) in [
        (c, &st.client_if, CLIENT_MAC, CLIENT_IP, CLIENT_IP6),
        (s, &st.server_if, SERVER_MAC, SERVER_IP, SERVER_IP6),
    ] {
        sh(&["ip", "-n", ns, "link", "set", dev, "address", mac])?;
        sh(&["ip", "-n", ns, "addr", "add", &format!("{ip4}/24"), "dev", dev])?;
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            dev,
            "nodad",
        ])?;
        // Trap 3: partial checksums do not survive XDP/AF_XDP.
        sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off"])?;
        // Trap 1: frames redirected into this veth need an XDP program on this end.
        sh(&[
            "ip", "-n", ns, "link", "set", "dev", dev, "xdpdrv", "obj", &pass, "sec", "xdp",
        ])?;
        sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
    }
    for dev in [pa, pb, st.mirror.as_str()] {
        sh(&["ip", "-n", b, "link", "set", dev, "up"])?;
    }

    let config = format!(
        "# Written by `glasswire testbed up --prefix {prefix}`.\n\
         [bridge]\nport_a = \"{pa}\"\nport_b = \"{pb}\"\n\
         # veth has one queue; AF_XDP on it runs in copy mode.\nqueues = [0]\n\
         fast_path = true\nuserspace_forward = false\nxdp_mode = \"native\"\n\n\
         [stats]\nsocket = \"{sock}\"\n",
        prefix = st.prefix,
        sock = st.stats_socket.display()
    );
    std::fs::write(&st.config, config).context("writing the testbed config")?;
    std::fs::write(
        st.state_dir.join("testbed.json"),
        serde_json::to_string_pretty(st)?,
    )?;
    Ok(())
}

/// Removes everything `up` made for `prefix`, stopping processes left in its namespaces.
pub fn down(prefix: &str) -> Result<bool> {
    check_prefix(prefix)?;
    let exe = std::env::current_exe().context("finding this executable")?;
    let st = status_for(prefix, &exe);
    let ours = st.state_dir.join("testbed.json").exists();
    let existing: Vec<String> = [&st.client_ns, &st.server_ns, &st.bridge_ns]
        .iter()
        .filter(|n| netns_exists(n))
        .map(|n| n.to_string())
        .collect();
    if !ours {
        if existing.is_empty() {
            return Ok(false);
        }
        bail!("namespaces {existing:?} were not made by `glasswire testbed up`; not removing them");
    }
    teardown(&st)?;
    Ok(true)
}

fn teardown(st: &Status) -> Result<()> {
    let namespaces = [&st.client_ns, &st.server_ns, &st.bridge_ns];
    for sig in ["TERM", "KILL"] {
        let mut any = false;
        for ns in namespaces {
            if !netns_exists(ns) {
                continue;
            }
            let pids = sh(&["ip", "netns", "pids", ns]).unwrap_or_default();
            for pid in pids.split_whitespace() {
                any = true;
                let _ = Command::new("kill").args([&format!("-{sig}"), pid]).status();
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let mut errors = Vec::new();
    if netns_exists(&st.bridge_ns) {
        let _ = sh(&["ip", "-n", &st.bridge_ns, "link", "del", &st.mirror]);
    }
    for ns in namespaces {
        if netns_exists(ns) {
            if let Err(e) = sh(&["ip", "netns", "del", ns]) {
                errors.push(format!("{e:#}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&st.state_dir);
    if !errors.is_empty() {
        bail!("testbed teardown incomplete: {}", errors.join("; "));
    }
    Ok(())
}

pub fn describe(st: &Status) -> String {
    format!(
        "  {cns}: {cif} {cip} {cip6} ({cmac})\n  \
         {bns}: {pa} <-> {pb}  (glasswire's ports), mirror TAP {mirror}\n  \
         {sns}: {sif} {sip} {sip6} ({smac})\n  \
         config: {config}\n  start the bridge: {run}",
        cns = st.client_ns,
        cif = st.client_if,
        cip = st.client_ip,
        cip6 = st.client_ip6,
        cmac = st.client_mac,
        bns = st.bridge_ns,
        pa = st.ports[0],
        pb = st.ports[1],
        mirror = st.mirror,
        sns = st.server_ns,
        sif = st.server_if,
        sip = st.server_ip,
        sip6 = st.server_ip6,
        smac = st.server_mac,
        config = st.config.display(),
        run = st.run.join(" "),
    )
}
