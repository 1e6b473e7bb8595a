//! `glasswire run`: the daemon's life cycle. Load and attach the XDP program, start one
//! worker per queue, serve stats, and on SIGINT/SIGTERM stop the workers and detach.

use crate::config::Config;
use anyhow::{bail, Context, Result};
use dataplane::{spawn_worker, WorkerConfig, WorkerHandle};
use serde_json::{json, Map, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use xdp::{AttachMode, BridgeProgram, LoadOptions, XdpCounter, XskOptions};

pub fn run(cfg: Config) -> Result<()> {
    let b = &cfg.bridge;
    let stop = Arc::new(AtomicBool::new(false));
    let stop_signal = stop.clone();
    ctrlc::set_handler(move || stop_signal.store(true, Ordering::Relaxed))
        .context("installing the SIGINT/SIGTERM handler")?;

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

    let mut workers = Vec::new();
    for (i, &queue) in b.queues.iter().enumerate() {
        let wc = WorkerConfig {
            ports: [b.port_a.clone(), b.port_b.clone()],
            queue,
            core: b.cores.get(i).copied(),
            fast_path: b.fast_path && !b.userspace_forward,
            batch_size: b.batch_size,
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

    let started = Instant::now();
    let mode_name = if b.userspace_forward {
        "userspace-forward"
    } else if b.fast_path {
        "fast-path"
    } else {
        "userspace-tcp"
    };
    let program = Arc::new(Mutex::new(program));
    let worker_view: Vec<_> = workers
        .iter()
        .map(|w| (w.queue, w.core, w.stats.clone()))
        .collect();
    let port_names = [b.port_a.clone(), b.port_b.clone()];
    let snap_program = program.clone();
    let snapshot = move || {
        snapshot(
            &snap_program,
            &port_names,
            &worker_view,
            mode_name,
            started.elapsed(),
        )
    };
    let stats = telemetry::StatsServer::bind(&cfg.stats.socket, Arc::new(snapshot))?;
    tracing::info!(socket = %stats.path().display(), mode = mode_name, queues = ?b.queues, "bridge running");

    let result = supervise(&workers, &stop);
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        if let Err(e) = w.join() {
            tracing::error!(error = %format!("{e:#}"), "worker failed");
        }
    }
    drop(stats);
    drop(program);
    tracing::info!("stopped; XDP program detached");
    result
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

fn supervise(workers: &[WorkerHandle], stop: &AtomicBool) -> Result<()> {
    while !stop.load(Ordering::Relaxed) {
        if let Some(w) = workers.iter().find(|w| w.is_finished()) {
            bail!("the worker for queue {} stopped unexpectedly", w.queue);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

type WorkerView = (u32, Option<usize>, Arc<dataplane::WorkerStats>);

fn snapshot(
    program: &Mutex<BridgeProgram>,
    port_names: &[String; 2],
    workers: &[WorkerView],
    mode: &str,
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
            xsk_dropped += p.xsk_rx_dropped.get();
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
