//! Where mirrored frames go: thin I/O shells behind one [`Sink`] trait.
//!
//! Every sink counts what it did and never panics or blocks on a frame: a failed write is
//! counted and the frame is lost, a vanished target is reopened later. The [`Fanout`]
//! thread (crate::fanout) owns the sinks and calls them in this order: `write` for every
//! frame, `flush` when the channel has been idle for its flush interval (and at least that
//! often under load), `close` once at shutdown.
//!
//! [`Fanout`]: crate::fanout::Fanout

use std::fmt;
use std::io;
use std::time::Duration;

use thiserror::Error;

use crate::conversation::Timestamp;

mod file;
mod packet;
mod pcap_over_ip;
mod tap;

pub use file::{PcapFileOptions, PcapFileSink, PcapFormat};
pub use packet::PacketSocketSink;
pub use pcap_over_ip::{PcapOverIpOptions, PcapOverIpSink};
pub use tap::TapSink;

/// Why a sink did not take a frame. The sink has already counted it.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("pcap: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    #[error("target unavailable, next reopen attempt pending")]
    Unavailable,
    #[error("target busy, frame dropped")]
    WouldBlock,
}

/// What a sink did so far. All counters only grow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SinkCounters {
    /// Frames handed to the target (written to a file or device, queued to ≥ 1 reader).
    pub frames: u64,
    /// Bytes of those frames.
    pub bytes: u64,
    /// Frames lost without an error: device busy, a slow reader's queue full.
    pub dropped: u64,
    /// Failed operations (write, open, accept); each lost the frame it concerned.
    pub errors: u64,
    /// Times the target was (re)opened: a new pcap file, a TAP reattached, a reader accepted.
    pub reopens: u64,
}

/// A destination for mirrored frames.
pub trait Sink: Send + fmt::Debug {
    /// Short name for logs and the counter snapshot.
    fn name(&self) -> &str;
    /// Writes one frame, stamped `ts`. Never blocks; failures are counted by the sink.
    fn write(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), SinkError>;
    /// Pushes buffered bytes towards the target and does housekeeping (accepting readers,
    /// reopen attempts). Called when idle and periodically under load.
    fn flush(&mut self) -> Result<(), SinkError>;
    /// Flushes and releases the target; later writes may reopen it.
    fn close(&mut self) -> Result<(), SinkError> {
        self.flush()
    }
    /// Counters so far.
    fn counters(&self) -> SinkCounters;
}

/// Classic pcap record header (16 bytes, little-endian like the global header written by
/// [`pcap_global_header`]), microsecond resolution: the format every passive tool reads.
pub(crate) fn pcap_record_header(ts: Timestamp, caplen: u32, orig_len: u32) -> [u8; 16] {
    let mut h = [0u8; 16];
    let secs = u32::try_from(ts.as_secs()).unwrap_or(u32::MAX);
    let fields = [secs, ts.subsec_micros(), caplen, orig_len];
    for (chunk, v) in h.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&v.to_le_bytes());
    }
    h
}

/// Classic pcap global header: Ethernet link type, microseconds, little-endian.
pub(crate) fn pcap_global_header(snaplen: u32) -> [u8; 24] {
    let header = pcap_file::pcap::PcapHeader {
        snaplen,
        datalink: pcap_file::DataLink::ETHERNET,
        ts_resolution: pcap_file::TsResolution::MicroSecond,
        endianness: pcap_file::Endianness::Little,
        ..Default::default()
    };
    let mut out = [0u8; 24];
    // Writing 24 bytes into a 24-byte slice cannot fail; if the crate ever wrote more, the
    // header would be short and every reader would reject the stream, which tests catch.
    let _ = header.write_to(&mut &mut out[..]);
    out
}

/// Exponential backoff for reopen attempts, capped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    current: Duration,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            current: initial,
        }
    }

    /// The delay before the next attempt; doubles each call.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.current = self.initial;
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::time::Duration;

    use crate::conversation::{Conversation, ConversationOptions, Direction, Endpoints, Timestamp};

    /// Frames of a small conversation, with their timestamps.
    pub(crate) fn frames(endpoints: Endpoints, opts: &ConversationOptions) -> Vec<(Timestamp, Vec<u8>)> {
        let mut c = Conversation::new(endpoints, opts).unwrap();
        let t0 = Duration::from_secs(1_700_000_000);
        c.push(
            t0,
            Direction::ClientToServer,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        )
        .unwrap();
        let body: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        c.push(t0 + Duration::from_micros(1500), Direction::ServerToClient, &body)
            .unwrap();
        c.close_normal(t0 + Duration::from_secs(2), Direction::ClientToServer);
        let mut buf = vec![0u8; c.max_frame_len()];
        let mut out = Vec::new();
        while let Some(f) = c.poll_frame(&mut buf) {
            out.push((f.timestamp, buf[..f.len].to_vec()));
        }
        out
    }

    /// `true` (after printing SKIP) when not root; outside CI only.
    pub(crate) fn skip_unless_root(what: &str) -> bool {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            return false;
        }
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{what} needs root and CI=true"
        );
        eprintln!("SKIP: {what} needs root");
        true
    }

    /// Runs `f` on a thread of its own in a fresh network namespace: interfaces the test
    /// creates there vanish with it and never touch the host's. Without the privilege to
    /// make one, prints SKIP and returns (fails under CI=true).
    pub(crate) fn in_netns(f: impl FnOnce() + Send + 'static) {
        std::thread::spawn(move || {
            // SAFETY: unshare only changes this thread's namespaces.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let err = std::io::Error::last_os_error();
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "unshare(CLONE_NEWNET): {err}"
                );
                eprintln!("SKIP: cannot create a network namespace: {err}");
                return;
            }
            f()
        })
        .join()
        .unwrap()
    }

    /// Runs `ip ARGS` (inherits the calling thread's network namespace).
    pub(crate) fn ip(args: &[&str]) {
        let st = std::process::Command::new("ip").args(args).status().unwrap();
        assert!(st.success(), "ip {args:?}");
    }

    /// A raw AF_PACKET socket receiving everything on `ifname`, non-blocking.
    pub(crate) struct Capture(std::os::fd::OwnedFd);

    impl Capture {
        pub(crate) fn open(ifname: &str) -> Self {
            use std::os::fd::FromRawFd;
            let proto = (libc::ETH_P_ALL as u16).to_be();
            // SAFETY: plain socket(2) call; the result is checked.
            let raw = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                    i32::from(proto),
                )
            };
            assert!(raw >= 0);
            // SAFETY: fresh fd owned by nobody else.
            let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
            let name = std::ffi::CString::new(ifname).unwrap();
            // SAFETY: valid C string.
            let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(index > 0);
            // SAFETY: all-zero sockaddr_ll is valid.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = proto;
            sll.sll_ifindex = index as i32;
            // SAFETY: sll is a sockaddr_ll of the size given.
            let rc = unsafe {
                libc::bind(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    (&raw const sll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(rc, 0);
            Capture(fd)
        }

        /// Frames received until `quiet` passes without one.
        pub(crate) fn collect(&self, quiet: Duration) -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            let mut buf = vec![0u8; 65536];
            let mut last = std::time::Instant::now();
            while last.elapsed() < quiet {
                // SAFETY: buf is valid for its length.
                let n = unsafe {
                    libc::recv(
                        std::os::fd::AsRawFd::as_raw_fd(&self.0),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                        0,
                    )
                };
                if n > 0 {
                    out.push(buf[..n as usize].to_vec());
                    last = std::time::Instant::now();
                } else {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            out
        }
    }
}
