//! `glasswire stats`: read the stats socket and print it.

use serde_json::Value;
use std::fmt::Write;

fn n(v: &Value, path: &[&str]) -> u64 {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_u64().unwrap_or(0)
}

/// A short human summary of a stats snapshot.
pub fn render(stats: &Value) -> String {
    let t = &stats["totals"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  mode {}, XDP attached {}, up {:.1} s",
        stats["mode"].as_str().unwrap_or("?"),
        stats["xdp_attach"].as_str().unwrap_or("?"),
        stats["uptime_s"].as_f64().unwrap_or(0.0)
    );
    let _ = writeln!(
        out,
        "  {:<10} {:>12} {:>14} {:>12} {:>12} {:>12}",
        "port", "rx frames", "rx bytes", "fast path", "userspace", "tx (user)"
    );
    if let Some(ports) = stats["ports"].as_object() {
        for (name, p) in ports {
            let x = &p["xdp"];
            let fast = n(x, &["fast_non_ip"])
                + n(x, &["fast_non_tcp"])
                + n(x, &["fast_bypass"])
                + n(x, &["no_socket"]);
            let tx: u64 = stats["workers"]
                .as_array()
                .map(|ws| ws.iter().map(|w| n(w, &["ports", name, "tx_frames"])).sum())
                .unwrap_or(0);
            let _ = writeln!(
                out,
                "  {:<10} {:>12} {:>14} {:>12} {:>12} {:>12}",
                name,
                n(x, &["rx_frames"]),
                n(x, &["rx_bytes"]),
                fast,
                n(x, &["to_userspace"]),
                tx
            );
        }
    }
    let rx = n(t, &["rx_frames"]).max(1);
    let _ = writeln!(
        out,
        "  fast path (kernel): {} frames ({:.1}%), userspace (AF_XDP): {} frames ({:.1}%)",
        n(t, &["fast_path_frames"]),
        100.0 * n(t, &["fast_path_frames"]) as f64 / rx as f64,
        n(t, &["userspace_frames"]),
        100.0 * n(t, &["userspace_frames"]) as f64 / rx as f64,
    );
    // Copy mode (no zero-copy driver) costs the workers a copy per frame each way.
    let sockets = stats["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|w| w["ports"].as_object().into_iter().flat_map(|p| p.values()));
    let (count, zero_copy) = sockets.fold((0, 0), |(c, z), p| (c + 1, z + n(p, &["xsk_zero_copy"])));
    if count > 0 {
        let _ = writeln!(
            out,
            "  AF_XDP sockets: {zero_copy} zero-copy, {} copy mode",
            count - zero_copy
        );
    }
    let _ = writeln!(
        out,
        "  dropped: {} malformed, {} TX ring full, {} blocked, {} by the kernel at the AF_XDP socket (RX ring full / no fill buffer)",
        n(t, &["dropped_malformed"]),
        n(t, &["dropped_tx_ring_full"]),
        n(t, &["dropped_blocked"]),
        n(t, &["dropped_xsk_rx"])
    );
    let flow = |name: &str| -> u64 {
        stats["workers"]
            .as_array()
            .map(|ws| ws.iter().map(|w| n(w, &["flows", name])).sum())
            .unwrap_or(0)
    };
    let _ = writeln!(
        out,
        "  flows: {} tracked now; {} TLS hellos read, {} not TLS, {} unclassified; decided {} bypass, {} block; {} untracked (table full)",
        flow("tracked"),
        flow("tls_hellos"),
        flow("not_tls"),
        flow("unclassified"),
        flow("decided_bypass"),
        flow("decided_block"),
        flow("flow_table_full"),
    );
    let _ = writeln!(
        out,
        "  kernel flow map: {} entries ({} bypassed, {} blocked); policy: {}",
        n(stats, &["kernel_flows", "kernel_flows"]),
        n(stats, &["kernel_flows", "kernel_bypassed"]),
        n(stats, &["kernel_flows", "kernel_blocked"]),
        stats["policy"]["summary"].as_str().unwrap_or("?"),
    );
    if let Some(e) = stats["policy"]["last_reload_error"].as_str() {
        let _ = writeln!(out, "  last policy reload FAILED (old policy in force): {e}");
    }
    out
}

/// Every counter on the stats socket, where it sits and what it counts, generated from
/// the declarations so it cannot drift from them (docs/stats.md is checked against it).
pub fn describe() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ports.<port>.xdp.* (kernel, per port, summed over CPUs):");
    for c in xdp::XdpCounter::ALL {
        let (name, doc) = c.describe();
        let _ = writeln!(out, "  {name:<22} {doc}");
    }
    let _ = writeln!(out, "workers[].ports.<port>.* (userspace, per worker and port):");
    for (name, doc) in dataplane::PortStats::FIELDS {
        let _ = writeln!(out, "  {name:<22} {}", doc.trim());
    }
    let _ = writeln!(
        out,
        "workers[].ports.<port>.parse_drops.* (frames dropped as unparseable, by reason):"
    );
    for r in wire::ParseError::ALL {
        let _ = writeln!(out, "  {:<22} {r}", r.reason());
    }
    let _ = writeln!(out, "workers[].* (per worker):");
    for (name, doc) in dataplane::WorkerCounters::FIELDS {
        let _ = writeln!(out, "  {name:<22} {}", doc.trim());
    }
    let _ = writeln!(out, "workers[].flows.* (per worker's flow table):");
    for (name, doc) in dataplane::FlowCounters::FIELDS {
        let _ = writeln!(out, "  {name:<22} {}", doc.trim());
    }
    let _ = writeln!(
        out,
        "workers[].intercept.* (per worker's intercepted sessions; summed in intercept.*):"
    );
    for (name, doc) in dataplane::InterceptCounters::FIELDS {
        let _ = writeln!(out, "  {name:<22} {}", doc.trim());
    }
    let _ = writeln!(
        out,
        "kernel_flows.* (the kernel's flow map, walked by the sweeper):"
    );
    for (name, doc) in dataplane::SweepStats::FIELDS {
        let _ = writeln!(out, "  {name:<22} {}", doc.trim());
    }
    out
}
