//! The TOML configuration of `glasswire run`.

use anyhow::{bail, Context, Result};
use classify::policy::{Action, Policy, PolicySpec};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub bridge: BridgeConfig,
    #[serde(default)]
    pub flows: FlowsConfig,
    #[serde(default)]
    pub stats: StatsConfig,
    /// Which TLS flows are bypassed, blocked or intercepted: docs/policy.md.
    #[serde(default)]
    pub policy: PolicySpec,
    /// Interception (docs/intercept.md): the inspection CA and how upstream servers are
    /// verified. Needed by policy rules with `action = "intercept"`.
    #[serde(default)]
    pub intercept: Option<InterceptConfig>,
    /// Where mirrored traffic goes, and what is mirrored (docs/mirror.md).
    #[serde(default)]
    pub mirror: MirrorConfig,
    /// The session log's sinks (docs/sessionlog.md); none by default.
    #[serde(default, skip_serializing)]
    pub log: sessionlog::LogConfig,
    /// Directory of the config file: relative list paths in `[policy.lists]` start here.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// The flow table of each worker and the kernel's flow map: sizes and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FlowsConfig {
    /// Flows each worker tracks at once (handshakes and flows being classified). New
    /// flows beyond it are forwarded unclassified and counted (`flow_table_full`).
    pub capacity: usize,
    /// Seconds a flow may stay between its SYN and its first payload.
    pub handshake_timeout_s: u64,
    /// Seconds without a frame after which a flow is forgotten (kernel map included).
    pub idle_timeout_s: u64,
    /// Seconds a flow closed by FIN both ways or RST is kept, for its last frames.
    pub closed_linger_s: u64,
    /// Seconds a blocked flow's drop verdict stays after its client goes quiet.
    pub block_linger_s: u64,
    /// Milliseconds a ClientHello may take to arrive whole before the flow is
    /// `unclassified`.
    pub hello_timeout_ms: u64,
    /// Bytes of ClientHello (with record headers) read at most before giving up.
    pub hello_max_bytes: usize,
    /// Client frames all flows of a worker may have held while their hellos are read.
    pub max_held_frames: usize,
    /// Milliseconds between two sweeps of the kernel's flow map.
    pub sweep_interval_ms: u64,
    /// Seconds between two `volume` records of a session (and one at its end).
    pub volume_interval_s: u64,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        Self {
            capacity: 65_536,
            handshake_timeout_s: 30,
            idle_timeout_s: 300,
            closed_linger_s: 2,
            block_linger_s: 10,
            hello_timeout_ms: 5_000,
            hello_max_bytes: 16 * 1024,
            max_held_frames: 1024,
            sweep_interval_ms: 1_000,
            volume_interval_s: 60,
        }
    }
}

impl FlowsConfig {
    pub fn flow_table(
        &self,
        fast_path: bool,
        session_id_base: u64,
        mirror_plaintext: bool,
        intercept: bool,
    ) -> dataplane::FlowConfig {
        dataplane::FlowConfig {
            fast_path,
            capacity: self.capacity,
            handshake_timeout: Duration::from_secs(self.handshake_timeout_s),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            decided_linger: dataplane::FlowConfig::default().decided_linger,
            closed_linger: Duration::from_secs(self.closed_linger_s),
            hello: classify::Config {
                max_bytes: self.hello_max_bytes,
                max_wait: Duration::from_millis(self.hello_timeout_ms),
                ..classify::Config::default()
            },
            max_held_per_flow: dataplane::FlowConfig::default().max_held_per_flow,
            max_held_total: self.max_held_frames,
            volume_interval: Duration::from_secs(self.volume_interval_s),
            session_id_base,
            mirror_plaintext,
            intercept,
        }
    }

    pub fn sweeper(&self) -> dataplane::SweepConfig {
        dataplane::SweepConfig {
            interval: Duration::from_millis(self.sweep_interval_ms),
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            closed_linger: Duration::from_secs(self.closed_linger_s),
            block_linger: Duration::from_secs(self.block_linger_s),
            volume_interval: Duration::from_secs(self.volume_interval_s),
            ..dataplane::SweepConfig::default()
        }
    }
}

/// `[intercept]`: what an intercepted session needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptConfig {
    /// PEM certificate of the inspection CA (`glasswire ca init --out DIR` makes one);
    /// the clients must trust it.
    pub ca_cert: PathBuf,
    /// Its PEM private key; refused when readable by group or others.
    pub ca_key: PathBuf,
    /// PEM file of extra CAs upstream servers may chain to (an internal PKI).
    #[serde(default)]
    pub upstream_ca_file: Option<PathBuf>,
    /// Trust the system's roots (/etc/ssl/certs) for upstream servers, as a browser would.
    #[serde(default = "yes")]
    pub system_roots: bool,
    /// An upstream certificate that fails verification: `block` the session (the client
    /// gets a handshake failure), or `untrusted`: give the client a forgery from an
    /// issuer nobody trusts, so its own check fails as it would have.
    #[serde(default = "default_on_upstream_failure")]
    pub on_upstream_failure: String,
    /// Seconds a (client, server, name) whose client rejected the forged certificate
    /// (pinning) or whose server asked for a client certificate is bypassed.
    #[serde(default = "default_pinning_bypass_s")]
    pub pinning_bypass_s: u64,
    /// Forged certificates kept (one per upstream certificate).
    #[serde(default = "default_forged_cache")]
    pub forged_cache: usize,
}

fn default_on_upstream_failure() -> String {
    "block".into()
}
fn default_pinning_bypass_s() -> u64 {
    3600
}
fn default_forged_cache() -> usize {
    10_000
}

impl InterceptConfig {
    fn validate(&self) -> Result<()> {
        if !matches!(self.on_upstream_failure.as_str(), "block" | "untrusted") {
            bail!(
                "intercept.on_upstream_failure: {:?} is not one of \"block\", \"untrusted\"",
                self.on_upstream_failure
            );
        }
        if self.pinning_bypass_s == 0 {
            bail!("intercept.pinning_bypass_s: must be > 0");
        }
        if self.forged_cache == 0 {
            bail!("intercept.forged_cache: must be > 0");
        }
        Ok(())
    }

    /// Paths relative to the config file's directory.
    pub fn resolve(&self, base: &Path) -> Self {
        let mut c = self.clone();
        c.ca_cert = base.join(&self.ca_cert);
        c.ca_key = base.join(&self.ca_key);
        c.upstream_ca_file = self.upstream_ca_file.as_ref().map(|p| base.join(p));
        c
    }
}

/// `[mirror]`: the sinks mirrored frames go to (any combination), and whether plaintext
/// flows are mirrored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MirrorConfig {
    /// Mirror TCP flows that are not TLS as they are, every frame from the SYN on. They
    /// stay in userspace (the kernel fast path does not copy frames).
    pub plaintext: bool,
    /// A TAP device (it must exist) that mirrored frames are written to: a recorder
    /// sniffing it sees them as received frames.
    pub tap: Option<String>,
    /// An interface mirrored frames are sent out of (AF_PACKET), e.g. a NIC toward a
    /// recorder.
    pub interface: Option<String>,
    /// A pcap file; rotated files get a numbered suffix.
    pub pcap: Option<PathBuf>,
    /// `pcap` or `pcapng`.
    pub pcap_format: String,
    /// Start a new file past this many bytes (0: never).
    pub pcap_rotate_bytes: u64,
    /// Start a new file after this many seconds of traffic (0: never).
    pub pcap_rotate_interval_s: u64,
    /// `address:port` of a PCAP-over-IP listener: each reader that connects gets a pcap
    /// stream of the mirror (as Arkime and other recorders ingest it).
    pub pcap_over_ip: Option<String>,
    /// Frames that may wait for the mirror thread; beyond it they are dropped and
    /// counted, never waited for.
    pub queue_frames: usize,
    /// Decrypted sessions: server ports rewritten in the mirror, `[[443, 80]]`, so that
    /// tools that key on ports parse the plaintext (HTTP on 80).
    pub decrypted_port_remap: Vec<[u16; 2]>,
    /// Decrypted sessions' frames carry this 802.1Q VLAN id (1-4094), so a recorder can
    /// tell them from raw traffic.
    pub decrypted_vlan: Option<u16>,
    /// MTU of the mirror link: no decrypted frame's IP packet is longer.
    pub mtu: u16,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            plaintext: false,
            tap: None,
            interface: None,
            pcap: None,
            pcap_format: "pcap".into(),
            pcap_rotate_bytes: 0,
            pcap_rotate_interval_s: 0,
            pcap_over_ip: None,
            queue_frames: 4096,
            decrypted_port_remap: Vec::new(),
            decrypted_vlan: None,
            mtu: 1500,
        }
    }
}

impl MirrorConfig {
    /// How decrypted sessions are re-framed.
    pub fn conversation(&self) -> mirror::ConversationOptions {
        mirror::ConversationOptions {
            mtu: self.mtu,
            mss: self.mtu.saturating_sub(40),
            vlan: self.decrypted_vlan.map(|id| mirror::VlanTag { id, pcp: 0 }),
            port_remap: self
                .decrypted_port_remap
                .iter()
                .map(|[from, to]| mirror::PortRemap { from: *from, to: *to })
                .collect(),
            ..mirror::ConversationOptions::default()
        }
    }

    pub fn has_sinks(&self) -> bool {
        self.tap.is_some() || self.interface.is_some() || self.pcap.is_some() || self.pcap_over_ip.is_some()
    }

    fn validate(&self) -> Result<()> {
        if self.plaintext && !self.has_sinks() {
            bail!("mirror.plaintext: nothing to mirror to; name a sink (mirror.tap, mirror.interface, mirror.pcap or mirror.pcap_over_ip)");
        }
        if !matches!(self.pcap_format.as_str(), "pcap" | "pcapng") {
            bail!(
                "mirror.pcap_format: {:?} is not one of \"pcap\", \"pcapng\"",
                self.pcap_format
            );
        }
        if let Some(a) = &self.pcap_over_ip {
            a.parse::<std::net::SocketAddr>()
                .map_err(|e| anyhow::anyhow!("mirror.pcap_over_ip: {a:?} is not address:port ({e})"))?;
        }
        for (name, dev) in [("mirror.tap", &self.tap), ("mirror.interface", &self.interface)] {
            if dev.as_deref().is_some_and(|d| d.is_empty() || d.len() > 15) {
                bail!("{name}: {dev:?} is not an interface name (1 to 15 characters)");
            }
        }
        if self.queue_frames == 0 {
            bail!("mirror.queue_frames: must be > 0");
        }
        if let Some(v) = self.decrypted_vlan.filter(|v| !(1..=4094).contains(v)) {
            bail!("mirror.decrypted_vlan: {v} is not a VLAN id (1 to 4094)");
        }
        if !(576..=9000).contains(&self.mtu) {
            bail!("mirror.mtu: {} must be from 576 to 9000", self.mtu);
        }
        if let Some([from, to]) = self.decrypted_port_remap.iter().find(|[f, t]| *f == 0 || *t == 0) {
            bail!("mirror.decrypted_port_remap: [{from}, {to}] names port 0");
        }
        Ok(())
    }
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
    /// Microseconds a worker keeps polling its rings after its last received frame
    /// before it sleeps in poll(2): lower latency for request/response traffic, paid in
    /// CPU while traffic flows. 0: sleep at once.
    #[serde(default = "default_idle_spin_us")]
    pub idle_spin_us: u32,
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
fn default_idle_spin_us() -> u32 {
    200
}
fn default_flow_capacity() -> u32 {
    262_144
}
pub fn default_stats_socket() -> PathBuf {
    PathBuf::from("/run/glasswire/stats.sock")
}

impl Config {
    /// Reads, checks and compiles the config at `path`, policy lists included: what is
    /// returned is whole, or an error says which file, line and key is wrong.
    pub fn load(path: &Path) -> Result<(Self, Policy)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut cfg = Self::parse(&text).with_context(|| format!("in config file {}", path.display()))?;
        cfg.base_dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let policy = cfg
            .compile_policy()
            .with_context(|| format!("in config file {}", path.display()))?;
        Ok((cfg, policy))
    }

    /// Reads the `[policy]` lists and builds the policy.
    pub fn compile_policy(&self) -> Result<Policy> {
        let policy = Policy::compile(&self.policy, &self.base_dir, &|p| std::fs::read_to_string(p))
            .map_err(|e| anyhow::anyhow!("policy: {e}"))?;
        Ok(policy)
    }

    /// Refuses a policy that asks to intercept when there is no `[intercept]` (no inspection
    /// CA to forge with).
    pub fn check_runnable(&self, policy: &Policy) -> Result<()> {
        let mut wants = policy.rules_with_action(Action::Intercept);
        if policy.default_action() == Action::Intercept {
            wants.push("policy.default".into());
        }
        if policy.unclassified().action == Action::Intercept {
            wants.push("policy.unclassified".into());
        }
        if !wants.is_empty() && self.intercept.is_none() {
            bail!(
                "policy: {} asks to intercept, but there is no [intercept] section: create an inspection CA with `glasswire ca init --out DIR` and set intercept.ca_cert and intercept.ca_key (docs/intercept.md)",
                wants.join(", ")
            );
        }
        Ok(())
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
        if b.idle_spin_us > 1_000_000 {
            bail!(
                "bridge.idle_spin_us: {} is more than a second; a worker that spins that long never sleeps",
                b.idle_spin_us
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
        self.mirror.validate()?;
        if let Some(i) = &self.intercept {
            i.validate()?;
        }
        if self.stats.socket.as_os_str().is_empty() {
            bail!("stats.socket: must be a path");
        }
        let f = &self.flows;
        if f.capacity == 0 {
            bail!("flows.capacity: must be > 0");
        }
        for (name, v) in [
            ("flows.handshake_timeout_s", f.handshake_timeout_s),
            ("flows.idle_timeout_s", f.idle_timeout_s),
            ("flows.hello_timeout_ms", f.hello_timeout_ms),
            ("flows.sweep_interval_ms", f.sweep_interval_ms),
            ("flows.volume_interval_s", f.volume_interval_s),
        ] {
            if v == 0 {
                bail!("{name}: must be > 0");
            }
        }
        if !(512..=65_536).contains(&f.hello_max_bytes) {
            bail!(
                "flows.hello_max_bytes: {} must be from 512 to 65536 (a post-quantum hello alone is ~1.8 KB)",
                f.hello_max_bytes
            );
        }
        let most_held = (b.frame_count / 4) as usize;
        if f.max_held_frames == 0 || f.max_held_frames > most_held {
            bail!(
                "flows.max_held_frames: {} must be from 1 to a quarter of bridge.frame_count ({most_held}): held frames are receive buffers out of circulation",
                f.max_held_frames
            );
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
        let cfg = Config::parse(EXAMPLE).unwrap();
        let policy = cfg.compile_policy().unwrap();
        cfg.check_runnable(&policy).unwrap();
    }

    #[test]
    fn policy_errors_name_the_line_and_intercept_needs_its_section() {
        let base = "[bridge]\nport_a = \"a\"\nport_b = \"b\"\n";
        let e = err(&format!(
            "{base}[[policy.rule]]\ndst = \"10.0.0.0/33\"\naction = \"block\"\n"
        ));
        assert!(e.contains("line 5") && e.contains("10.0.0.0/33"), "{e}");
        let e = err(&format!("{base}[flows]\nhello_max_bytes = 10\n"));
        assert!(e.contains("flows.hello_max_bytes"), "{e}");
        let cfg = Config::parse(&format!(
            "{base}[[policy.rule]]\nsni = \"x.example\"\naction = \"intercept\"\n"
        ))
        .unwrap();
        let e = format!(
            "{:#}",
            cfg.check_runnable(&cfg.compile_policy().unwrap()).unwrap_err()
        );
        assert!(
            e.contains("rule 1") && e.contains("[intercept]") && e.contains("ca init"),
            "{e}"
        );
        let with_ca = Config::parse(&format!(
            "{base}[intercept]\nca_cert = \"ca.crt\"\nca_key = \"ca.key\"\n\n[[policy.rule]]\nsni = \"x.example\"\naction = \"intercept\"\n"
        ))
        .unwrap();
        with_ca
            .check_runnable(&with_ca.compile_policy().unwrap())
            .unwrap();
        let e = err(&format!(
            "{base}[intercept]\nca_cert = \"c\"\nca_key = \"k\"\non_upstream_failure = \"allow\"\n"
        ));
        assert!(e.contains("intercept.on_upstream_failure"), "{e}");
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
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\nidle_spin_us = 5000000\n")
                .contains("bridge.idle_spin_us")
        );
        assert!(
            err("[bridge]\nport_a = \"a\"\nport_b = \"b\"\n[stats]\nsockett = \"/x\"\n").contains("sockett")
        );
    }
}
