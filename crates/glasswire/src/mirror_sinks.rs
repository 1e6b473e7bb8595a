//! The mirror's sinks, built from `[mirror]`, behind one fanout thread.

use crate::config::MirrorConfig;
use anyhow::{Context, Result};
use mirror::{
    Fanout, FanoutOptions, FanoutSender, PacketSocketSink, PcapFileOptions, PcapFileSink, PcapFormat,
    PcapOverIpOptions, PcapOverIpSink, Sink, TapSink,
};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The running mirror thread; its counters are readable from the stats socket.
#[derive(Debug, Clone)]
pub struct MirrorFanout(Arc<Mutex<Option<Fanout>>>);

/// Opens every configured sink (a sink that cannot be opened is a start-up error, named)
/// and starts the fanout thread.
pub fn start(cfg: &MirrorConfig) -> Result<MirrorFanout> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(tap) = &cfg.tap {
        let sink = TapSink::open(tap).with_context(|| format!("mirror.tap: opening TAP {tap:?}"))?;
        sinks.push(Box::new(sink));
    }
    if let Some(dev) = &cfg.interface {
        let sink =
            PacketSocketSink::open(dev).with_context(|| format!("mirror.interface: opening {dev:?}"))?;
        sinks.push(Box::new(sink));
    }
    if let Some(path) = &cfg.pcap {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("mirror.pcap: creating {}", dir.display()))?;
        }
        let mut opts = PcapFileOptions::new(path);
        opts.format = if cfg.pcap_format == "pcapng" {
            PcapFormat::PcapNg
        } else {
            PcapFormat::Pcap
        };
        opts.rotate_bytes = (cfg.pcap_rotate_bytes > 0).then_some(cfg.pcap_rotate_bytes);
        opts.rotate_interval =
            (cfg.pcap_rotate_interval_s > 0).then(|| Duration::from_secs(cfg.pcap_rotate_interval_s));
        sinks.push(Box::new(PcapFileSink::new(opts)));
    }
    if let Some(addr) = &cfg.pcap_over_ip {
        let listen = addr.parse().context("mirror.pcap_over_ip")?;
        let sink = PcapOverIpSink::bind(PcapOverIpOptions::new(listen))
            .with_context(|| format!("mirror.pcap_over_ip: listening on {addr}"))?;
        sinks.push(Box::new(sink));
    }
    let opts = FanoutOptions {
        channel_depth: cfg.queue_frames,
        // Each worker may have as many frames in flight as the queue holds.
        pool_per_sender: cfg.queue_frames,
        ..FanoutOptions::default()
    };
    let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
    let fanout = Fanout::spawn(sinks, opts).context("starting the mirror thread")?;
    tracing::info!(sinks = ?names, plaintext = cfg.plaintext, "mirror running");
    Ok(MirrorFanout(Arc::new(Mutex::new(Some(fanout)))))
}

impl MirrorFanout {
    /// A sender for one worker.
    pub fn sender(&self) -> Option<FanoutSender> {
        self.0.lock().ok()?.as_ref().map(Fanout::sender)
    }

    pub fn snapshot(&self) -> Value {
        let Some(s) = self.0.lock().ok().and_then(|f| f.as_ref().map(Fanout::snapshot)) else {
            return Value::Null;
        };
        let sinks: serde_json::Map<String, Value> = s
            .sinks
            .iter()
            .map(|k| {
                (
                    k.name.clone(),
                    json!({
                        "frames": k.counters.frames,
                        "bytes": k.counters.bytes,
                        "dropped": k.counters.dropped,
                        "errors": k.counters.errors,
                        "reopens": k.counters.reopens,
                    }),
                )
            })
            .collect();
        json!({
            "frames_queued": s.enqueued,
            "frames_dropped_queue_full": s.dropped_full,
            "frames_dropped_stopped": s.dropped_closed,
            "frames_written": s.written,
            "sinks": sinks,
        })
    }

    /// Writes out what is queued, closes the sinks (flushing the pcap files).
    pub fn shutdown(&self) {
        let taken = self.0.lock().ok().and_then(|mut f| f.take());
        if let Some(f) = taken {
            let (snap, _) = f.shutdown();
            tracing::info!(
                written = snap.written,
                dropped = snap.dropped_full,
                "mirror stopped"
            );
        }
    }
}
