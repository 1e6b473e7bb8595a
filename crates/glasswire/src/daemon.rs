//! `glasswire run`: the daemon's life cycle. Load and attach the XDP program, start one
//! worker per queue and the kernel flow-map sweeper, serve stats, reload the policy on
//! SIGHUP, and on SIGINT/SIGTERM stop the workers and detach.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use classify::policy::Policy;
use dataplane::{spawn_sweeper, spawn_worker, SharedPolicy, SweepStats, WorkerConfig, WorkerHandle};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xdp::{AttachMode, BridgeProgram, LoadOptions, XdpCounter, XskOptions};

/// The policy in force and how it got there, for the stats socket.
#[derive(Debug)]
struct PolicyStatus {
    shared: Arc<SharedPolicy>,
    summary: Mutex<String>,
    reloads: AtomicU64,
    reload_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub fn run(cfg: Config, policy: Policy, config_path: PathBuf) -> Result<()> {
    cfg.check_runnable(&policy)?;
    let b = &cfg.bridge;
    let stop = Arc::new(AtomicBool::new(false));
    // signal-hook rather than ctrlc here: ctrlc's `termination` feature also takes
    // SIGHUP as a stop, and SIGHUP means "reload the policy" to this daemon.
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing the SIGINT/SIGTERM handler")?;
    }
    let reload = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, reload.clone())
        .context("installing the SIGHUP handler")?;
    tracing::info!(policy = %policy.summary(), "policy loaded");
    let policy = Arc::new(PolicyStatus {
        summary: Mutex::new(policy.summary()),
        shared: Arc::new(SharedPolicy::new(policy)),
        reloads: AtomicU64::new(0),
        reload_errors: AtomicU64::new(0),
        last_error: Mutex::new(None),
    });

    for port in [&b.port_a, &b.port_b] {
        if let Some(n) = rx_queue_count(port) {
            if let Some(q) = b.queues.iter().find(|&&q| q >= n) {
                bail!(
                    "bridge.queues: queue {q} does not exist on {port} (it has {n} RX queue(s): 0..{})",
                    n - 1
                );
            }
        }
    }
    let mode = if b.xdp_mode == "generic" {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let mut program = BridgeProgram::load(
        [&b.port_a, &b.port_b],
        &LoadOptions {
            flow_capacity: b.flow_capacity,
            userspace_forward: b.userspace_forward,
            mode,
        },
    )?;
    tracing::info!(port_a = %b.port_a, port_b = %b.port_b, ?mode, "XDP program attached");

    // The session log: a logger thread behind a bounded channel, fed by the workers and
    // the sweeper; workers hand sessions the kernel carries to the sweeper.
    let logging = cfg.log.jsonl.is_some() || cfg.log.syslog.is_some();
    let (logger, sessions, sweeper_sessions) = if logging {
        let (logger, sender) =
            sessionlog::Logger::start(cfg.log.clone()).context("starting the session log")?;
        let events = crate::sessions::sink(sender, crate::sessions::Clock::now());
        let (handoff, handoffs) = std::sync::mpsc::sync_channel(HANDOFF_QUEUE);
        (
            Some(logger),
            Some(dataplane::SessionOutputs {
                events: events.clone(),
                handoff,
            }),
            Some(dataplane::SweeperSessions {
                handoffs,
                events: dataplane::SessionEventsSink(events),
            }),
        )
    } else {
        (None, None, None)
    };
    let log_stats = logger.as_ref().map(|l| l.stats());

    if cfg.mirror.has_sinks() && !cfg.mirror.plaintext && cfg.intercept.is_none() {
        tracing::warn!("[mirror] names sinks but nothing is mirrored: mirror.plaintext is off and there is no [intercept]");
    }
    let fanout = if cfg.mirror.has_sinks() {
        Some(crate::mirror_sinks::start(&cfg.mirror)?)
    } else {
        None
    };
    let mirror_stats = fanout.clone();

    let intercept = match &cfg.intercept {
        Some(ic) => Some(intercept_context(
            &ic.resolve(&cfg.base_dir),
            cfg.mirror.has_sinks().then(|| cfg.mirror.conversation()),
        )?),
        None => None,
    };

    let run_nonce = run_nonce();
    let mut workers = Vec::new();
    for (i, &queue) in b.queues.iter().enumerate() {
        let wc = WorkerConfig {
            ports: [b.port_a.clone(), b.port_b.clone()],
            queue,
            core: b.cores.get(i).copied(),
            flows: cfg.flows.flow_table(
                b.fast_path && !b.userspace_forward,
                session_id_base(run_nonce, queue),
                cfg.mirror.plaintext,
                intercept.is_some(),
            ),
            sessions: sessions.clone(),
            mirror: fanout.as_ref().and_then(|f| f.sender()),
            intercept: intercept.clone(),
            policy: policy.shared.clone(),
            batch_size: b.batch_size,
            idle_spin: std::time::Duration::from_micros(b.idle_spin_us.into()),
            xsk: XskOptions {
                frame_count: b.frame_count,
                ring_size: b.ring_size,
                ..XskOptions::default()
            },
        };
        let verdicts = program.verdict_map()?;
        match spawn_worker(wc, &mut program, verdicts, stop.clone()) {
            Ok(w) => workers.push(w),
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                for w in workers {
                    let _ = w.join();
                }
                return Err(e.context(format!("starting the worker for queue {queue}")));
            }
        }
    }

    let sweep_stats = Arc::new(SweepStats::default());
    // Stopped after the workers, so it sees every session they hand over at their stop.
    let sweeper_stop = Arc::new(AtomicBool::new(false));
    let sweeper = spawn_sweeper(
        program.verdict_map()?,
        cfg.flows.sweeper(),
        sweep_stats.clone(),
        sweeper_sessions,
        sweeper_stop.clone(),
    )
    .context("starting the flow-map sweeper")?;

    let started = Instant::now();
    let mode_name = if b.userspace_forward {
        "userspace-forward"
    } else if b.fast_path {
        "fast-path"
    } else {
        "userspace-tcp"
    };
    let xdp_attach = match mode {
        AttachMode::Native => "native",
        AttachMode::Generic => "generic",
    };
    let program = Arc::new(Mutex::new(program));
    let worker_view: Vec<_> = workers
        .iter()
        .map(|w| (w.queue, w.core, w.stats.clone()))
        .collect();
    let port_names = [b.port_a.clone(), b.port_b.clone()];
    let snap_program = program.clone();
    let snap_policy = policy.clone();
    let snap_sweep = sweep_stats.clone();
    let intercept_view = intercept.clone();
    let snapshot = move || {
        let mut v = snapshot(
            &snap_program,
            &port_names,
            &worker_view,
            mode_name,
            xdp_attach,
            started.elapsed(),
        );
        v["kernel_flows"] = snap_sweep.snapshot().into();
        if let Some(l) = &log_stats {
            v["session_log"] = l.snapshot();
        }
        if let Some(m) = &mirror_stats {
            v["mirror"] = m.snapshot();
        }
        if let Some((_, pinned)) = &intercept_view {
            v["intercept"] = intercept_totals(&v, pinned);
        }
        v["policy"] = json!({
            "summary": *snap_policy.summary.lock().unwrap_or_else(|e| e.into_inner()),
            "generation": snap_policy.shared.generation(),
            "reloads": snap_policy.reloads.load(Ordering::Relaxed),
            "reload_errors": snap_policy.reload_errors.load(Ordering::Relaxed),
            "last_reload_error": *snap_policy.last_error.lock().unwrap_or_else(|e| e.into_inner()),
        });
        v
    };
    let stats = telemetry::StatsServer::bind(&cfg.stats.socket, Arc::new(snapshot))?;
    tracing::info!(socket = %stats.path().display(), mode = mode_name, queues = ?b.queues, "bridge running");

    let result = supervise(&workers, &stop, || {
        if reload.swap(false, Ordering::Relaxed) {
            reload_policy(&config_path, &cfg, &policy);
        }
    });
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if let Err(e) = w.join() {
            tracing::error!(error = %format!("{e:#}"), "worker failed");
        }
    }
    sweeper_stop.store(true, Ordering::Relaxed);
    let _ = sweeper.join();
    drop(stats);
    drop(program);
    drop(sessions);
    if let Some(f) = fanout {
        f.shutdown();
    }
    if let Some(logger) = logger {
        if let Err(e) = logger.shutdown() {
            tracing::error!(error = %format!("{e:#}"), "the session log did not shut down cleanly");
        }
    }
    tracing::info!("stopped; XDP program detached");
    result
}

/// Loads the inspection CA and the upstream trust, for every worker's interceptions.
fn intercept_context(
    ic: &crate::config::InterceptConfig,
    mirror: Option<mirror::ConversationOptions>,
) -> Result<(dataplane::InterceptContext, Arc<Mutex<tls::bypass::BypassList>>)> {
    let ca = tls::ca::InspectionCa::load(&ic.ca_cert, &ic.ca_key)
        .context("intercept.ca_cert / intercept.ca_key")?;
    let ca_name = ca.name().to_string();
    let forger = tls::forge::Forger::new(ca, ic.forged_cache).context("intercept: the certificate forger")?;
    let upstream = tls::upstream::Upstream::new(&tls::upstream::UpstreamOptions {
        system_roots: ic.system_roots,
        upstream_ca_file: ic.upstream_ca_file.clone(),
        extra_roots: Vec::new(),
    })
    .context("intercept.upstream_ca_file / intercept.system_roots")?;
    let roots = upstream.root_count();
    let mut tls_cfg = tls::pair::InterceptConfig::new(Arc::new(upstream), Arc::new(forger));
    tls_cfg.reject_policy = if ic.on_upstream_failure == "untrusted" {
        tls::pair::RejectPolicy::ForgeUntrusted
    } else {
        tls::pair::RejectPolicy::Block
    };
    if mirror.is_none() {
        // Without a mirror nothing reads the plaintext: keep none of it.
        tls_cfg.tap_limit = None;
    }
    tracing::info!(ca = %ca_name, upstream_roots = roots, on_upstream_failure = %ic.on_upstream_failure, "interception ready");
    let ctx = dataplane::InterceptContext {
        tls: Arc::new(tls_cfg),
        splice: splice::Config {
            // A 1500-byte MTU frame with up to two VLAN tags.
            max_frame_len: 1522,
            ..splice::Config::default()
        },
        mirror,
    };
    let pinned = tls::bypass::BypassList::new(Duration::from_secs(ic.pinning_bypass_s), 65_536);
    Ok((ctx, Arc::new(Mutex::new(pinned))))
}

/// Sessions handed from the workers to the sweeper that may wait to be picked up.
const HANDOFF_QUEUE: usize = 65_536;

/// 16 random bits per run, so that session ids of two runs of the daemon differ.
fn run_nonce() -> u16 {
    let mut b = [0u8; 2];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        b = [(t >> 8) as u8, t as u8];
    }
    u16::from_be_bytes(b)
}

/// Session ids: 16 bits of run, 8 of queue, 40 of counter.
fn session_id_base(run: u16, queue: u32) -> u64 {
    (u64::from(run) << 48) | (u64::from(queue & 0xff) << 40)
}

/// RX queues of an interface, from sysfs; `None` when sysfs does not say (the socket
/// bind will then report the problem).
fn rx_queue_count(port: &str) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/class/net/{port}/queues")).ok()?;
    let n = dir
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count();
    u32::try_from(n).ok().filter(|&n| n > 0)
}

fn supervise(workers: &[WorkerHandle], stop: &AtomicBool, mut tick: impl FnMut()) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        if let Some(w) = workers.iter().find(|w| w.is_finished()) {
            bail!("the worker for queue {} stopped unexpectedly", w.queue);
        }
        tick();
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// SIGHUP: read the config file again and swap in its policy (lists included). A config
/// that does not load leaves the running policy in force; either way it is logged and
/// counted. Only `[policy]` is taken from the new file; other changes need a restart.
fn reload_policy(path: &Path, running: &Config, status: &PolicyStatus) {
    let loaded = Config::load(path).and_then(|(cfg, policy)| {
        // The running daemon's [intercept] is what applies until a restart.
        let mut check = cfg.clone();
        check.intercept = running.intercept.clone();
        check.check_runnable(&policy)?;
        Ok((cfg, policy))
    });
    match loaded {
        Ok((cfg, policy)) => {
            let summary = policy.summary();
            status.shared.replace(policy);
            status.reloads.fetch_add(1, Ordering::Relaxed);
            *status.summary.lock().unwrap_or_else(|e| e.into_inner()) = summary.clone();
            *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
            tracing::info!(policy = %summary, "policy reloaded");
            let restart_needed = toml::to_string(&cfg.bridge).ok() != toml::to_string(&running.bridge).ok()
                || toml::to_string(&cfg.flows).ok() != toml::to_string(&running.flows).ok()
                || toml::to_string(&cfg.stats).ok() != toml::to_string(&running.stats).ok();
            if restart_needed {
                tracing::warn!(
                    "the config's [bridge], [flows] or [stats] changed: those take effect at the next start"
                );
            }
        }
        Err(e) => {
            let msg = format!("{e:#}");
            status.reload_errors.fetch_add(1, Ordering::Relaxed);
            *status.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg.clone());
            tracing::error!(error = %msg, "policy reload failed; the previous policy stays in force");
        }
    }
}

/// The workers' interception counters summed, with the bypass list's size.
fn intercept_totals(v: &Value, pinned: &Mutex<tls::bypass::BypassList>) -> Value {
    let mut sum: Map<String, Value> = Map::new();
    let mut pinned_bypasses = 0u64;
    for w in v["workers"].as_array().into_iter().flatten() {
        if let Some(m) = w["intercept"].as_object() {
            for (k, n) in m {
                let add = n.as_u64().unwrap_or(0);
                let cur = sum.get(k).and_then(Value::as_u64).unwrap_or(0);
                sum.insert(k.clone(), (cur + add).into());
            }
        }
        pinned_bypasses += w["flows"]["intercept_bypassed_pinned"].as_u64().unwrap_or(0);
    }
    sum.insert("bypassed_pinned".into(), pinned_bypasses.into());
    let on_list = pinned.lock().map(|l| l.len()).unwrap_or(0);
    sum.insert("bypass_list_entries".into(), on_list.into());
    sum.into()
}

type WorkerView = (u32, Option<usize>, Arc<dataplane::WorkerStats>);

fn snapshot(
    program: &Mutex<BridgeProgram>,
    port_names: &[String; 2],
    workers: &[WorkerView],
    mode: &str,
    xdp_attach: &str,
    uptime: Duration,
) -> Value {
    let (xdp_counters, ifindex) = match program.lock() {
        Ok(p) => (p.counters().ok(), p.ifindex()),
        Err(_) => (None, [0, 0]),
    };
    let mut ports = Map::new();
    let mut fast_frames = 0u64;
    let mut fast_bytes = 0u64;
    let mut rx_frames = 0u64;
    let mut rx_bytes = 0u64;
    let mut blocked = 0u64;
    for (i, name) in port_names.iter().enumerate() {
        let mut xdp = Map::new();
        if let Some(row) = xdp_counters.as_ref().and_then(|c| c.get(i)) {
            for (c, v) in XdpCounter::ALL.iter().zip(row) {
                xdp.insert(c.describe().0.into(), (*v).into());
                match c {
                    XdpCounter::FastNonIp
                    | XdpCounter::FastNonTcp
                    | XdpCounter::FastBypass
                    | XdpCounter::NoSocket => fast_frames += v,
                    XdpCounter::FastBytes => fast_bytes += v,
                    XdpCounter::RxFrames => rx_frames += v,
                    XdpCounter::RxBytes => rx_bytes += v,
                    XdpCounter::Blocked => blocked += v,
                    XdpCounter::ToUserspace => {}
                }
            }
        }
        ports.insert(
            name.clone(),
            json!({ "ifindex": ifindex.get(i), "role": if i == 0 { "A (clients)" } else { "B (servers)" }, "xdp": xdp }),
        );
    }
    let mut user_frames = 0u64;
    let mut user_bytes = 0u64;
    let mut user_tx = 0u64;
    let mut malformed = 0u64;
    let mut ring_full = 0u64;
    let mut xsk_dropped = 0u64;
    let mut worker_list = Vec::new();
    for (queue, core, stats) in workers {
        for p in &stats.ports {
            user_frames += p.rx_frames.get();
            user_bytes += p.rx_bytes.get();
            user_tx += p.tx_frames.get();
            malformed += p.drop_malformed.get();
            ring_full += p.drop_tx_ring_full.get();
            // The kernel counts a frame it could not put in the RX ring apart from one
            // it had no buffer for; both are frames lost at the socket.
            xsk_dropped += p.xsk_rx_dropped.get() + p.xsk_rx_ring_full.get();
        }
        let mut w = stats.snapshot(port_names);
        if let Value::Object(m) = &mut w {
            m.insert("queue".into(), (*queue).into());
            m.insert("core".into(), json!(core));
        }
        worker_list.push(w);
    }
    json!({
        "glasswire": env!("CARGO_PKG_VERSION"),
        "mode": mode,
        "xdp_attach": xdp_attach,
        "uptime_s": uptime.as_secs_f64(),
        "totals": {
            "rx_frames": rx_frames,
            "rx_bytes": rx_bytes,
            "fast_path_frames": fast_frames,
            "fast_path_bytes": fast_bytes,
            "userspace_frames": user_frames,
            "userspace_bytes": user_bytes,
            "userspace_tx_frames": user_tx,
            "dropped_malformed": malformed,
            "dropped_tx_ring_full": ring_full,
            "dropped_blocked": blocked,
            "dropped_xsk_rx": xsk_dropped,
        },
        "ports": ports,
        "workers": worker_list,
    })
}
