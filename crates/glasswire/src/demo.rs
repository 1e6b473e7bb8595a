//! `glasswire demo`: the whole thing on its embedded default, start to finish.

use crate::testbed::{self, sh, Status};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PREFIX: &str = "gwdemo";

#[derive(Debug)]
pub struct DemoOptions {
    pub keep: Option<PathBuf>,
    pub size_mb: u64,
    pub userspace_forward: bool,
}

/// Tears the testbed down however the demo ends (error, panic or Ctrl-C).
struct Cleanup {
    bridge: Option<Child>,
    work: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut b) = self.bridge.take() {
            let _ = Command::new("kill").args(["-TERM", &b.id().to_string()]).status();
            let _ = b.wait();
        }
        let _ = testbed::down(PREFIX);
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

pub fn run(opts: DemoOptions) -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("\ninterrupted: removing the demo testbed");
        let _ = testbed::down(PREFIX);
        std::process::exit(130);
    })
    .context("installing the Ctrl-C handler")?;

    println!("glasswire demo: a transparent AF_XDP bridge between two network namespaces\n");
    if testbed::status(PREFIX).is_ok() {
        println!("(removing a demo testbed left over from an earlier run)");
        testbed::down(PREFIX)?;
    }
    let (st, _) = testbed::up(PREFIX)?;
    let work = std::env::temp_dir().join(format!("glasswire-demo-{}", std::process::id()));
    let mut cleanup = Cleanup {
        bridge: None,
        work: work.clone(),
    };
    std::fs::create_dir_all(&work)?;
    println!("[1/7] testbed up\n{}\n", testbed::describe(&st));

    let mut config = std::fs::read_to_string(&st.config)?;
    if opts.userspace_forward {
        config = config.replace("userspace_forward = false", "userspace_forward = true");
    }
    // Interception: an inspection CA the client trusts, and the CA of the "real" HTTPS
    // server, which the bridge trusts upstream. The decrypted session goes to a mirror
    // pcap (as HTTP on port 80).
    let pki = crate::demo_tls::make_pki(&work)?;
    let mirror_pcap = work.join("mirror.pcap");
    config.push_str(&format!(
        "\n[intercept]\nca_cert = {:?}\nca_key = {:?}\nupstream_ca_file = {:?}\nsystem_roots = false\n\n\
         [mirror]\npcap = {:?}\ndecrypted_port_remap = [[443, 80]]\n\n\
         [[policy.rule]]\nname = \"inspect-demo\"\nsni = [\"*.demo.test\"]\naction = \"intercept\"\n",
        pki.inspection_cert, pki.inspection_key, pki.server_ca, mirror_pcap
    ));
    // The session log: one JSON line per session event, read back for the summary.
    let log_dir = work.join("sessions");
    config.push_str(&format!("\n[log.jsonl]\ndir = \"{}\"\n", log_dir.display()));
    let config_path = work.join("glasswire.toml");
    std::fs::write(&config_path, &config)?;
    let exe = std::env::current_exe()?;
    let log_path = work.join("bridge.log");
    let log = std::fs::File::create(&log_path)?;
    let child = Command::new("ip")
        .args(["netns", "exec", &st.bridge_ns])
        .arg(&exe)
        .arg("run")
        .arg("--config")
        .arg(&config_path)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting the bridge")?;
    cleanup.bridge = Some(child);
    wait_for_stats(&st.stats_socket, &log_path)?;
    let mode = if opts.userspace_forward {
        "userspace-forward: every frame through AF_XDP"
    } else {
        "fast path: flows move to the kernel after their first payload"
    };
    println!("[2/7] bridge running in {} ({mode})\n", st.bridge_ns);

    for (family, target) in [("IPv4", &st.server_ip), ("IPv6", &st.server_ip6)] {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &st.client_ns,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            target,
        ]);
        match out {
            Ok(text) => println!(
                "[3/7] ping {family} {target}: {}",
                text.lines()
                    .find(|l| l.contains("packets transmitted"))
                    .unwrap_or("ok")
            ),
            Err(e) => bail!("ping {family} across the bridge failed: {e:#}"),
        }
    }
    println!();

    let served = work.join("www");
    std::fs::create_dir_all(&served)?;
    let file = served.join("payload.bin");
    let want = write_random_file(&file, opts.size_mb)?;
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &st.server_ns,
            "python3",
            "-m",
            "http.server",
            "8080",
            "--bind",
            &st.server_ip,
            "--directory",
        ])
        .arg(&served)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting python3 -m http.server in the server namespace")?;
    let url = format!("http://{}:8080/payload.bin", st.server_ip);
    let fetched = work.join("fetched.bin");
    let started = Instant::now();
    let result = fetch_with_retry(&st, &url, &fetched);
    let elapsed = started.elapsed();
    let _ = server.kill();
    let _ = server.wait();
    result?;
    let got = sha256_file(&fetched)?;
    let ok = got == want;
    println!(
        "[4/7] curl {url} from {}: {} MB in {:.2} s ({:.0} Mbit/s), sha256 {} {}\n",
        st.client_ns,
        opts.size_mb,
        elapsed.as_secs_f64(),
        (opts.size_mb * 8 * 1024 * 1024) as f64 / elapsed.as_secs_f64() / 1e6,
        &got[..16],
        if ok {
            "matches the server's file"
        } else {
            "DIFFERS from the server's file"
        }
    );

    // HTTPS through the bridge: intercepted, the client sees the inspection CA's
    // certificate for the server's name.
    let https_root = work.join("https");
    std::fs::create_dir_all(&https_root)?;
    std::fs::write(
        https_root.join("index.html"),
        "<h1>hello from the server namespace, over TLS</h1>\n",
    )?;
    let code = crate::demo_tls::https_server_code(&st.server_ip, &https_root, &pki);
    let mut https = Command::new("ip")
        .args(["netns", "exec", &st.server_ns, "python3", "-c", &code])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the HTTPS server in the server namespace")?;
    let resolve = format!("{}:443:{}", crate::demo_tls::SERVER_NAME, st.server_ip);
    let url = format!("https://{}/index.html", crate::demo_tls::SERVER_NAME);
    let ca = pki.inspection_cert.display().to_string();
    let mut fetched_https = Err(anyhow::anyhow!("not tried"));
    for _ in 0..50 {
        fetched_https = sh(&[
            "ip",
            "netns",
            "exec",
            &st.client_ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-v",
            "--cacert",
            &ca,
            "--resolve",
            &resolve,
            &url,
        ]);
        match &fetched_https {
            Err(e) if format!("{e:#}").contains("Failed to connect") => {
                std::thread::sleep(Duration::from_millis(200))
            }
            _ => break,
        }
    }
    let _ = https.kill();
    let _ = https.wait();
    let page = fetched_https.context("the HTTPS fetch through the bridge (intercepted)")?;
    println!(
        "[5/7] curl {url} trusting only the inspection CA: {}",
        page.lines().next().unwrap_or("").trim()
    );

    let stats = telemetry::fetch(&st.stats_socket)?;
    let intercepted = stats["intercept"]["established"].as_u64().unwrap_or(0);
    println!(
        "      intercepted: {intercepted} session(s); the bridge verified the server's certificate and showed the client one forged by the inspection CA\n"
    );
    println!(
        "[6/7] what crossed the bridge\n{}",
        crate::stats_cmd::render(&stats)
    );

    // Stopping the bridge ends the records of whatever is still open, so the log is
    // complete when it is read.
    if let Some(bridge) = cleanup.bridge.take() {
        stop_bridge(bridge)?;
    }
    let records = read_session_log(&log_dir)?;
    let (request, response) = crate::demo_tls::first_exchange(&mirror_pcap)?;
    println!("[7/7] the session log ({} records)", records.len());
    println!("{}", summarize_sessions(&records, &st.server_ip));
    println!("      the decrypted session, as the mirror pcap shows it to an IDS (HTTP on port 80):");
    for (who, bytes) in [("request ", &request), ("response", &response)] {
        for line in String::from_utf8_lossy(bytes).lines().take(3) {
            println!("        {who} | {line}");
        }
    }
    println!();

    if let Some(dir) = &opts.keep {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::copy(&config_path, dir.join("glasswire.toml"))?;
        std::fs::write(dir.join("stats.json"), serde_json::to_string_pretty(&stats)?)?;
        std::fs::copy(&log_path, dir.join("bridge.log"))?;
        std::fs::write(dir.join("testbed.json"), serde_json::to_string_pretty(&st)?)?;
        let mut lines = String::new();
        for r in &records {
            lines.push_str(&r.to_string());
            lines.push('\n');
        }
        std::fs::write(dir.join("sessions.jsonl"), lines)?;
        std::fs::copy(&mirror_pcap, dir.join("mirror.pcap"))?;
        std::fs::copy(&pki.inspection_cert, dir.join("inspection-ca.crt"))?;
        println!(
            "artifacts kept in {}: glasswire.toml, stats.json, bridge.log, testbed.json, sessions.jsonl, mirror.pcap, inspection-ca.crt",
            dir.display()
        );
    }
    drop(cleanup);
    println!("testbed removed.");
    if !ok {
        bail!("the downloaded file differs from the served one");
    }
    if intercepted == 0 || !request.starts_with(b"GET /index.html") {
        bail!("the HTTPS session was not intercepted and mirrored as it should have been");
    }
    Ok(())
}

/// SIGTERM and wait for the bridge to exit (it writes its last session records first).
fn stop_bridge(mut bridge: Child) -> Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &bridge.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = bridge.try_wait()? {
            if !status.success() {
                bail!("the bridge exited with {status} when stopped");
            }
            return Ok(());
        }
        if Instant::now() > deadline {
            let _ = bridge.kill();
            let _ = bridge.wait();
            bail!("the bridge did not stop within 15 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Every record of the JSON Lines files in `dir`, oldest file first.
fn read_session_log(dir: &Path) -> Result<Vec<Value>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading the session log directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).with_context(|| format!("reading {}", f.display()))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push(
                serde_json::from_str(line)
                    .with_context(|| format!("a bad line in {}: {line}", f.display()))?,
            );
        }
    }
    Ok(out)
}

/// One line per session toward `server_ip`: its events in order and its totals.
fn summarize_sessions(records: &[Value], server_ip: &str) -> String {
    let mut order: Vec<String> = Vec::new();
    let mut by_session: std::collections::HashMap<String, Vec<&Value>> = Default::default();
    for r in records {
        let id = r["session_id"].as_str().unwrap_or("?").to_string();
        if !by_session.contains_key(&id) {
            order.push(id.clone());
        }
        by_session.entry(id).or_default().push(r);
    }
    let mut out = String::new();
    for id in order {
        let recs = &by_session[&id];
        let Some(first) = recs.first() else { continue };
        if first["server_ip"].as_str() != Some(server_ip) {
            continue;
        }
        let events: Vec<&str> = recs.iter().filter_map(|r| r["event"].as_str()).collect();
        let last = recs.last().copied().unwrap_or(first);
        let v = &last["volume"];
        out.push_str(&format!(
            "  session {id} {}:{} -> {}:{} verdict {}: {}",
            first["client_ip"].as_str().unwrap_or("?"),
            first["client_port"],
            first["server_ip"].as_str().unwrap_or("?"),
            first["server_port"],
            last["verdict"].as_str().unwrap_or("-"),
            events.join(", "),
        ));
        if v.is_object() {
            out.push_str(&format!(
                "; {} pkts / {} B to the server, {} pkts / {} B back",
                v["packets_c2s"], v["bytes_c2s"], v["packets_s2c"], v["bytes_s2c"]
            ));
        }
        out.push('\n');
    }
    if out.is_empty() {
        out.push_str("  (no TCP session toward the server was recorded)\n");
    }
    out
}

fn wait_for_stats(socket: &Path, log: &Path) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(v) = telemetry::fetch(socket) {
            return Ok(v);
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("the bridge did not come up within 15 s; its log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fetch_with_retry(st: &Status, url: &str, out: &Path) -> Result<()> {
    let out_s = out.display().to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sh(&[
            "ip",
            "netns",
            "exec",
            &st.client_ns,
            "curl",
            "-sS",
            "--fail",
            "--max-time",
            "120",
            "-o",
            &out_s,
            url,
        ]) {
            Ok(_) => return Ok(()),
            // The server may still be binding its socket.
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("Failed to connect") => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_random_file(path: &Path, size_mb: u64) -> Result<String> {
    let mut urandom = std::fs::File::open("/dev/urandom")?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..size_mb {
        std::io::Read::read_exact(&mut urandom, &mut buf)?;
        hasher.update(&buf);
        f.write_all(&buf)?;
    }
    f.flush()?;
    Ok(hex(&hasher.finalize()))
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
