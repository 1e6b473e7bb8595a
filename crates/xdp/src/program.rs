//! Loading the XDP program, attaching it to the ports and filling its maps.

use crate::maps::{VerdictMap, XdpCounter};
use anyhow::{anyhow, bail, Context, Result};
use aya::maps::{DevMap, MapData, PerCpuArray, XskMap};
use aya::programs::{Xdp, XdpMode};
use aya::{Ebpf, EbpfLoader, Pod};
use std::ffi::CString;
use std::os::fd::{AsFd, RawFd};

static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/glasswire.bpf.o"));

/// An XDP object that passes every frame (see `xdp-prog/xdp_pass.bpf.c`), for the
/// testbed's endpoint veths.
pub static PASS_PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/xdp_pass.bpf.o"));

/// `struct port_counters` in the XDP program.
#[repr(C)]
#[derive(Clone, Copy)]
struct PortCounters([u64; XdpCounter::COUNT]);
// Safety: repr(C) array of u64, no padding.
unsafe impl Pod for PortCounters {}

/// Where the program runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (veth, and NICs with XDP support): what the fast path needs.
    Native,
    /// In the generic network stack, on the skb: works on any device; its kernel fast
    /// path is far slower (an skb per frame), though on veth a userspace bridge's round
    /// trip is shorter (perf/RESULTS.md).
    Generic,
}

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Entries in the flow-verdict map (an LRU: the oldest verdicts fall out when full).
    pub flow_capacity: u32,
    /// Every frame goes to the AF_XDP sockets; nothing is forwarded in the kernel.
    pub userspace_forward: bool,
    pub mode: AttachMode,
}

/// The program attached to both ports. Dropping it detaches the program.
pub struct BridgeProgram {
    ebpf: Ebpf,
    port_names: [String; 2],
    ifindex: [u32; 2],
    xsks: [XskMap<MapData>; 2],
    counters: PerCpuArray<MapData, PortCounters>,
    // Taken out of `ebpf` to be written; the fd it holds is the one the program's
    // instructions were relocated against, so it lives as long as the program.
    _peer: DevMap<MapData>,
}

impl std::fmt::Debug for BridgeProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BridgeProgram")
            .field("ports", &self.port_names)
            .field("ifindex", &self.ifindex)
            .finish_non_exhaustive()
    }
}

impl BridgeProgram {
    /// Loads the program and attaches it to `ports` (`[A, B]`: client side, server side).
    pub fn load(ports: [&str; 2], opts: &LoadOptions) -> Result<Self> {
        let ifindex = [ifindex(ports[0])?, ifindex(ports[1])?];
        if ifindex[0] == ifindex[1] {
            bail!("both bridge ports are the same interface ({})", ports[0]);
        }
        let userspace_forward = u32::from(opts.userspace_forward);
        let mut ebpf = EbpfLoader::new()
            .map_max_entries("verdicts", opts.flow_capacity)
            .override_global("userspace_forward", &userspace_forward, true)
            .override_global("port_a_ifindex", &ifindex[0], true)
            .override_global("port_b_ifindex", &ifindex[1], true)
            .load(PROGRAM)
            .context("loading the XDP program's maps")?;

        let mut peer: DevMap<_> = DevMap::try_from(take(&mut ebpf, "peer")?).context("map `peer`")?;
        peer.set(0, ifindex[1], None, 0).context("writing map `peer`")?;
        peer.set(1, ifindex[0], None, 0).context("writing map `peer`")?;
        let xsks = [
            XskMap::try_from(take(&mut ebpf, "xsks_a")?).context("map `xsks_a`")?,
            XskMap::try_from(take(&mut ebpf, "xsks_b")?).context("map `xsks_b`")?,
        ];
        let counters = PerCpuArray::try_from(take(&mut ebpf, "counters")?).context("map `counters`")?;

        let prog: &mut Xdp = ebpf
            .program_mut("glasswire_xdp")
            .ok_or_else(|| anyhow!("program glasswire_xdp missing from the object"))?
            .try_into()?;
        prog.load()
            .context("the kernel verifier rejected the XDP program")?;
        let mode = match opts.mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        for (name, idx) in ports.iter().zip(ifindex) {
            if let Err(first) = prog.attach_to_if_index(idx, mode) {
                // A program left attached by something else (an older glasswire that
                // attached through netlink, `ip link set ... xdp`) blocks ours: replace
                // it rather than refuse to start.
                tracing::warn!(port = name, error = %first, "port already has an XDP program; replacing it");
                remove_legacy_xdp(name)?;
                prog.attach_to_if_index(idx, mode)
                    .with_context(|| format!("attaching the XDP program to port {name} ({mode:?} mode)"))?;
            }
        }
        Ok(Self {
            ebpf,
            port_names: [ports[0].to_string(), ports[1].to_string()],
            ifindex,
            xsks,
            counters,
            _peer: peer,
        })
    }

    pub fn port_names(&self) -> &[String; 2] {
        &self.port_names
    }

    pub fn ifindex(&self) -> [u32; 2] {
        self.ifindex
    }

    /// Steers frames for (`port`, `queue`) to the AF_XDP socket `fd`.
    pub fn register_socket(&mut self, port: usize, queue: u32, fd: RawFd) -> Result<()> {
        let map = self.xsks.get_mut(port).ok_or_else(|| anyhow!("no port {port}"))?;
        map.set(queue, fd, 0)
            .with_context(|| format!("registering the AF_XDP socket of queue {queue} in xsks map"))
    }

    /// Each port's counters, summed over CPUs, in [`XdpCounter::ALL`] order.
    pub fn counters(&self) -> Result<[[u64; XdpCounter::COUNT]; 2]> {
        let mut out = [[0u64; XdpCounter::COUNT]; 2];
        for (port, row) in out.iter_mut().enumerate() {
            let per_cpu = self
                .counters
                .get(&(port as u32), 0)
                .context("reading XDP counters")?;
            for cpu in per_cpu.iter() {
                for (slot, v) in row.iter_mut().zip(cpu.0) {
                    *slot += v;
                }
            }
        }
        Ok(out)
    }

    /// A handle on the verdict map that can move to a worker thread.
    pub fn verdict_map(&self) -> Result<VerdictMap> {
        let map = self
            .ebpf
            .map("verdicts")
            .ok_or_else(|| anyhow!("map `verdicts` missing"))?;
        let fd = match map {
            aya::maps::Map::LruHashMap(data) => data.fd().as_fd().try_clone_to_owned()?,
            _ => bail!("map `verdicts` is not an LRU hash"),
        };
        Ok(VerdictMap::new(fd))
    }
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map `{name}` missing from the XDP object"))
}

fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| anyhow!("interface name {name:?} contains a NUL byte"))?;
    // Safety: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        bail!("no interface named {name:?} in this network namespace");
    }
    Ok(idx)
}

fn remove_legacy_xdp(port: &str) -> Result<()> {
    let status = std::process::Command::new("ip")
        .args(["link", "set", "dev", port, "xdp", "off"])
        .status()
        .context("running `ip link set ... xdp off` to remove a stale XDP program")?;
    if !status.success() {
        bail!("could not remove the XDP program already attached to {port}");
    }
    Ok(())
}
