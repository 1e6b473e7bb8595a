//! Map layouts shared with `xdp-prog/glasswire.bpf.c`, and a thread-safe handle on the
//! verdict map for the workers.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use wire::FlowKey;

/// `enum verdict` in the XDP program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Send the flow's frames to userspace (the default for an unknown flow).
    Inspect = 0,
    /// Forward in the kernel, never to userspace again.
    Bypass = 1,
    /// Drop in the kernel.
    Block = 2,
}

/// `struct flow_state`: the verdict and what the kernel forwarded on the fast path.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowState {
    pub verdict: u32,
    pub pad: u32,
    /// Index 0: lo -> hi (see [`wire::Direction`]).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// `enum counter` in the XDP program: per port, summed over CPUs when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XdpCounter {
    RxFrames,
    RxBytes,
    FastNonIp,
    FastNonTcp,
    FastBypass,
    FastBytes,
    ToUserspace,
    Blocked,
    NoSocket,
}

impl XdpCounter {
    pub const COUNT: usize = 9;
    pub const ALL: [XdpCounter; Self::COUNT] = [
        XdpCounter::RxFrames,
        XdpCounter::RxBytes,
        XdpCounter::FastNonIp,
        XdpCounter::FastNonTcp,
        XdpCounter::FastBypass,
        XdpCounter::FastBytes,
        XdpCounter::ToUserspace,
        XdpCounter::Blocked,
        XdpCounter::NoSocket,
    ];

    /// Stable name on the stats socket, and what it counts.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            XdpCounter::RxFrames => ("rx_frames", "frames the XDP program saw arrive on the port"),
            XdpCounter::RxBytes => ("rx_bytes", "bytes of those frames"),
            XdpCounter::FastNonIp => ("fast_non_ip", "frames forwarded in the kernel because they are not IP"),
            XdpCounter::FastNonTcp => ("fast_non_tcp", "frames forwarded in the kernel because they are IP but not TCP"),
            XdpCounter::FastBypass => ("fast_bypass", "TCP frames forwarded in the kernel because their flow's verdict is bypass"),
            XdpCounter::FastBytes => ("fast_bytes", "bytes of all frames forwarded in the kernel"),
            XdpCounter::ToUserspace => ("to_userspace", "frames handed to the AF_XDP socket of their queue"),
            XdpCounter::Blocked => ("blocked", "frames dropped in the kernel by a block verdict"),
            XdpCounter::NoSocket => ("no_socket", "frames meant for userspace with no socket on their queue, forwarded in the kernel instead (fail open)"),
        }
    }
}

/// A handle on the kernel's flow-verdict map that any worker thread may use: writes go
/// straight to the `bpf(2)` syscall on a duplicate of the map's fd.
#[derive(Debug)]
pub struct VerdictMap {
    fd: OwnedFd,
}

// bpf(2) commands, from linux/bpf.h.
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;

/// The `map_elem` arm of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

impl VerdictMap {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        Self { fd }
    }

    /// Sets the flow's verdict, resetting its fast-path counters.
    pub fn set(&self, key: &FlowKey, verdict: Verdict) -> io::Result<()> {
        let value = FlowState {
            verdict: verdict as u32,
            ..FlowState::default()
        };
        let key_bytes = key.as_bytes();
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key_bytes.as_ptr() as u64,
            value: &value as *const FlowState as u64,
            flags: 0, // BPF_ANY
        };
        self.call(BPF_MAP_UPDATE_ELEM, &mut attr)
    }

    fn call(&self, cmd: libc::c_long, attr: &mut MapElemAttr) -> io::Result<()> {
        // Safety: `attr` is a valid `bpf_attr` prefix for the map_elem commands; the
        // pointers in it (key, value) point at live locals of the caller of sizes matching
        // the map's key (40) and value (40) sizes, which the kernel checked at load.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr as *mut MapElemAttr,
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

const _: () = assert!(std::mem::size_of::<FlowState>() == 40);
