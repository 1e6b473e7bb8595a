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

/// `struct flow_state`: the verdict, what the kernel forwarded (or dropped) under it, and
/// when and how the flow was last seen there.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlowState {
    pub verdict: u32,
    /// [`FlowState::FIN_LO_HI`] | [`FlowState::FIN_HI_LO`] | [`FlowState::RST`] |
    /// [`FlowState::AFTER_CLOSE`], as seen in the kernel.
    pub tcp_flags: u32,
    /// Index 0: lo -> hi (see [`wire::Direction`]).
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// CLOCK_MONOTONIC nanoseconds of the last frame the kernel handled for this flow (or
    /// of the verdict's writing).
    pub last_seen_ns: u64,
    /// The session the verdict was written for: a new connection on the same ports
    /// writes its own.
    pub session: u64,
}

impl FlowState {
    pub const FIN_LO_HI: u32 = 1;
    pub const FIN_HI_LO: u32 = 2;
    pub const RST: u32 = 4;
    /// A frame with payload came after both FINs: not a session that ended normally.
    pub const AFTER_CLOSE: u32 = 8;

    /// Both sides sent FIN, or either sent RST.
    pub fn closed(&self) -> bool {
        self.tcp_flags & Self::RST != 0
            || self.tcp_flags & (Self::FIN_LO_HI | Self::FIN_HI_LO) == Self::FIN_LO_HI | Self::FIN_HI_LO
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: `ts` is a valid timespec to write to.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
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
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_GET_NEXT_KEY: libc::c_long = 4;

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

    /// Another handle on the same map (a duplicated fd), for another thread.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: self.fd.try_clone()?,
        })
    }

    /// Sets the flow's verdict, resetting its fast-path counters; it counts as seen now.
    pub fn set(&self, key: &FlowKey, verdict: Verdict, session: u64) -> io::Result<()> {
        let value = FlowState {
            verdict: verdict as u32,
            last_seen_ns: monotonic_ns(),
            session,
            ..FlowState::default()
        };
        let key_bytes = key.as_bytes();
        let mut attr = self.attr(&key_bytes);
        attr.value = &value as *const FlowState as u64;
        self.call(BPF_MAP_UPDATE_ELEM, &mut attr)
    }

    /// The flow's entry, if the kernel has one.
    pub fn get(&self, key: &FlowKey) -> io::Result<Option<FlowState>> {
        self.lookup_raw(&key.as_bytes())
    }

    /// Removes the flow's entry; `Ok(false)` if there was none.
    pub fn remove(&self, key: &FlowKey) -> io::Result<bool> {
        let key_bytes = key.as_bytes();
        let mut attr = self.attr(&key_bytes);
        match self.call(BPF_MAP_DELETE_ELEM, &mut attr) {
            Ok(()) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Calls `visit` with every entry. Entries added or removed meanwhile may or may not
    /// be visited; removing the visited entry from within `visit` is not supported
    /// (collect keys, remove after).
    pub fn for_each(&self, mut visit: impl FnMut(FlowKey, FlowState)) -> io::Result<()> {
        let mut current: Option<[u8; 40]> = None;
        loop {
            let mut next = [0u8; 40];
            let mut attr = match &current {
                Some(k) => self.attr(k),
                // A NULL key asks for the first entry.
                None => MapElemAttr {
                    key: 0,
                    ..self.attr(&next)
                },
            };
            attr.value = next.as_mut_ptr() as u64; // `next_key` shares the value slot
            match self.call(BPF_MAP_GET_NEXT_KEY, &mut attr) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(e),
            }
            if let Some(state) = self.lookup_raw(&next)? {
                visit(FlowKey::from_map_bytes(&next), state);
            }
            current = Some(next);
        }
    }

    fn lookup_raw(&self, key_bytes: &[u8; 40]) -> io::Result<Option<FlowState>> {
        let mut value = FlowState::default();
        let mut attr = self.attr(key_bytes);
        attr.value = &mut value as *mut FlowState as u64;
        match self.call(BPF_MAP_LOOKUP_ELEM, &mut attr) {
            Ok(()) => Ok(Some(value)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn attr(&self, key_bytes: &[u8; 40]) -> MapElemAttr {
        MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            pad: 0,
            key: key_bytes.as_ptr() as u64,
            value: 0,
            flags: 0, // BPF_ANY
        }
    }

    fn call(&self, cmd: libc::c_long, attr: &mut MapElemAttr) -> io::Result<()> {
        // Safety: `attr` is a valid `bpf_attr` prefix for the map_elem commands; the
        // pointers in it (key, value/next_key) point at live locals of the caller of sizes
        // matching the map's key (40) and value (48) sizes, which the kernel checked at load.
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

const _: () = assert!(std::mem::size_of::<FlowState>() == 56);
