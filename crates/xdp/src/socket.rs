//! AF_XDP sockets: one per port on each queue, both on one UMEM.

use anyhow::{anyhow, Context, Result};
use std::num::NonZeroU32;
use std::os::fd::{AsRawFd, RawFd};
use xsk_rs::config::{BindFlags, FrameSize, LibxdpFlags, QueueSize, SocketConfig, UmemConfig};
use xsk_rs::{CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem};

/// Sizes of the UMEM and rings of one queue.
#[derive(Debug, Clone)]
pub struct XskOptions {
    /// Frames in the UMEM shared by the two ports' sockets.
    pub frame_count: u32,
    /// Bytes per frame (a power of two; 2048 holds a 1500-byte MTU frame).
    pub frame_size: u32,
    /// Entries in each RX, TX, fill and completion ring.
    pub ring_size: u32,
    /// Force copy mode (veth supports nothing else); otherwise let the kernel choose.
    pub copy_mode: bool,
}

impl Default for XskOptions {
    fn default() -> Self {
        Self {
            frame_count: 8192,
            frame_size: 4096,
            ring_size: 2048,
            copy_mode: true,
        }
    }
}

/// The four rings of one AF_XDP socket (fill and completion are per device/queue).
#[derive(Debug)]
pub struct XskPort {
    pub rx: RxQueue,
    pub tx: TxQueue,
    pub fill: FillQueue,
    pub comp: CompQueue,
}

impl XskPort {
    pub fn fd(&self) -> RawFd {
        self.rx.fd().as_raw_fd()
    }

    /// Whether the kernel bound this socket in zero-copy mode (frames DMA'd into the
    /// UMEM) rather than copy mode (every frame copied in and, on transmit, out through
    /// an skb): the driver decides, and copy mode costs the workers far more per frame.
    pub fn zero_copy(&self) -> std::io::Result<bool> {
        let mut opts = libc::xdp_options { flags: 0 };
        let mut len = std::mem::size_of::<libc::xdp_options>() as libc::socklen_t;
        // Safety: `opts` is the struct XDP_OPTIONS fills, and `len` is its size.
        let rc = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_XDP,
                libc::XDP_OPTIONS,
                (&mut opts as *mut libc::xdp_options).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(opts.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }
}

/// Both ports' sockets for one queue, and every frame of their shared UMEM.
#[derive(Debug)]
pub struct QueueSockets {
    pub umem: Umem,
    pub ports: [XskPort; 2],
    /// Frames owned by userspace right now (neither in a fill ring nor in flight on TX).
    pub free: Vec<FrameDesc>,
}

impl QueueSockets {
    pub fn open(ports: [&str; 2], queue: u32, opts: &XskOptions) -> Result<Self> {
        let ring = QueueSize::new(opts.ring_size).map_err(|e| anyhow!("ring_size: {e}"))?;
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(opts.frame_size).map_err(|e| anyhow!("frame_size: {e}"))?)
            .fill_queue_size(ring)
            .comp_queue_size(ring)
            .build()
            .map_err(|e| anyhow!("UMEM configuration: {e}"))?;
        let frame_count =
            NonZeroU32::new(opts.frame_count).ok_or_else(|| anyhow!("frame_count must be > 0"))?;
        let (umem, free) = Umem::new(umem_config, frame_count, false)
            .map_err(|e| anyhow!("creating the UMEM ({} frames): {e}", opts.frame_count))?;

        let mut bind = BindFlags::XDP_USE_NEED_WAKEUP;
        if opts.copy_mode {
            bind |= BindFlags::XDP_COPY;
        }
        let socket_config = SocketConfig::builder()
            .rx_queue_size(ring)
            .tx_queue_size(ring)
            // Our own program is already attached; libxdp must not load its dispatcher.
            .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
            .bind_flags(bind)
            .build();

        let open_one = |name: &str| -> Result<XskPort> {
            let iface = name
                .parse()
                .map_err(|e| anyhow!("interface name {name:?}: {e}"))?;
            // Safety: the UMEM outlives the sockets (both live in the returned struct,
            // and `ports` is declared after `umem` only for readability: xsk-rs keeps
            // its own reference count on the UMEM).
            let (tx, rx, fq_cq) = unsafe { Socket::new(socket_config, &umem, &iface, queue) }
                .map_err(|e| anyhow!("opening an AF_XDP socket on {name} queue {queue}: {e}"))?;
            let (fill, comp) =
                fq_cq.ok_or_else(|| anyhow!("no fill/completion ring returned for {name} queue {queue}"))?;
            Ok(XskPort { rx, tx, fill, comp })
        };
        let a = open_one(ports[0]).context("port A")?;
        let b = open_one(ports[1]).context("port B")?;
        Ok(Self {
            umem,
            ports: [a, b],
            free,
        })
    }
}
