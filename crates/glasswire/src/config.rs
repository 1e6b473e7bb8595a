//! The TOML configuration of `glasswire run`.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub stats: StatsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Port A: the interface facing the clients (the switch side).
    pub port_a: String,
    /// Port B: the interface facing the servers (the router side).
    pub port_b: String,
    /// NIC queues to serve, one worker each. Both ports need symmetric RSS so that both
    /// directions of a flow land on the same queue number.
    #[serde(default = "default_queues")]
    pub queues: Vec<u32>,
    /// Core for each queue's worker, in the same order as `queues`. Empty: not pinned.
    #[serde(default)]
    pub cores: Vec<usize>,
    /// Hand flows that need no inspection to the kernel (XDP redirect) after their
    /// first payload. Off: every TCP frame goes through userspace.
    #[serde(default = "yes")]
    pub fast_path: bool,
    /// Send every frame, not only TCP, through AF_XDP (NICs without XDP redirect, and
    /// benchmarks).
    #[serde(default)]
    pub userspace_forward: bool,
    /// `native` (driver XDP, needed for the fast path) or `generic`.
    #[serde(default = "default_xdp_mode")]
    pub xdp_mode: String,
    /// Frames per queue's UMEM.
    #[serde(default = "default_frame_count")]
    pub frame_count: u32,
    /// Entries per AF_XDP ring.
    #[serde(default = "default_ring_size")]
    pub ring_size: u32,
    /// Frames taken from an RX ring per pass.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Flow verdicts the kernel keeps (LRU).
    #[serde(default = "default_flow_capacity")]
    pub flow_capacity: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsConfig {
    /// Unix socket serving live counters as JSON (mode 0660).
    #[serde(default = "default_stats_socket")]
    pub socket: PathBuf,
}

impl Default for StatsConfig {
    fn default() -> Self {
        Self {
            socket: default_stats_socket(),
        }
    }
}

fn default_queues() -> Vec<u32> {
    vec![0]
}
fn yes() -> bool {
    true
}
fn default_xdp_mode() -> String {
    "native".into()
}
fn default_frame_count() -> u32 {
    8192
}
fn default_ring_size() -> u32 {
    2048
}
fn default_batch() -> usize {
    64
}
fn default_flow_capacity() -> u32 {
    262_144
}
pub fn default_stats_socket() -> PathBuf {
    PathBuf::from("/run/glasswire/stats.sock")
}

impl Config {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self> {
        // toml's message names the key and shows the line.
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let b = &self.bridge;
        if b.port_a.is_empty() || b.port_b.is_empty() {
            bail!("bridge.port_a and bridge.port_b must name interfaces");
        }
        if b.port_a == b.port_b {
            bail!(
                "bridge.port_b: must differ from bridge.port_a (both are {:?})",
                b.port_a
            );
        }
        if b.queues.is_empty() {
            bail!("bridge.queues: at least one queue is needed");
        }
        let mut seen = b.queues.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != b.queues.len() {
            bail!("bridge.queues: a queue is listed twice ({:?})", b.queues);
        }
        if let Some(q) = b.queues.iter().find(|&&q| q >= 64) {
            bail!("bridge.queues: queue {q} is beyond the 64 the XDP program's socket maps hold");
        }
        if !b.cores.is_empty() && b.cores.len() != b.queues.len() {
            bail!(
                "bridge.cores: {} cores for {} queues; give one core per queue, or none",
                b.cores.len(),
                b.queues.len()
            );
        }
        let ncpu = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if let Some(c) = b.cores.iter().find(|&&c| c >= ncpu) {
            bail!("bridge.cores: core {c} does not exist (this machine has {ncpu})");
        }
        if !matches!(b.xdp_mode.as_str(), "native" | "generic") {
            bail!(
                "bridge.xdp_mode: {:?} is not one of \"native\", \"generic\"",
                b.xdp_mode
            );
        }
        if !b.ring_size.is_power_of_two() || !(64..=16384).contains(&b.ring_size) {
            bail!(
                "bridge.ring_size: {} must be a power of two from 64 to 16384",
                b.ring_size
            );
        }
        if b.frame_count < 4 * b.ring_size {
            bail!(
                "bridge.frame_count: {} is too few for ring_size {} (need at least 4 x ring_size: two fill rings and two TX rings)",
                b.frame_count,
                b.ring_size
            );
        }
        if b.batch_size == 0 || b.batch_size > b.ring_size as usize {
            bail!(
                "bridge.batch_size: {} must be from 1 to ring_size ({})",
                b.batch_size,
                b.ring_size
            );
        }
        if b.flow_capacity == 0 {
            bail!("bridge.flow_capacity: must be > 0");
        }
        if self.stats.socket.as_os_str().is_empty() {
            bail!("stats.socket: must be a path");
        }
        Ok(())
    }
}

/// The annotated example shipped in `deploy/glasswire.toml`.
pub const EXAMPLE: &str = include_str!("../../../deploy/glasswire.toml");

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Config::parse(text).unwrap_err())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse("[bridge]\nport_a = \"a\"\nport_b = \"b\"\n").unwrap();
        assert_eq!(c.bridge.queues, vec![0]);
        assert!(c.bridge.fast_path);
        assert!(!c.bridge.userspace_forward);
        assert_eq!(c.stats.socket, default_stats_socket());
    }

    #[test]
    fn shipped_example_parses() {
        Config::parse(EXAMPLE).unwrap();
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("[bridge]\nport_a = \"a\"\n").contains("port_b"));
        assert!(err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nqueus = [0]\n").contains("queus"));
        assert!(err("[bridge]\nport_a = \"a\"\nport_b = \"a\"\n").contains("bridge.port_b"));
        assert!(
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nqueues = [0, 1]\ncores = [0]\n")
                .contains("bridge.cores")
        );
        assert!(
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nxdp_mode = \"fast\"\n")
                .contains("bridge.xdp_mode")
        );
        assert!(
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nring_size = 1000\n").contains("bridge.ring_size")
        );
        assert!(err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nqueues = \"all\"\n").contains("queues"));
        assert!(
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\n[stats]\nsockett = \"/x\"\n").contains("sockett")
        );
    }
}
