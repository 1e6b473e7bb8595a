//! The worker loop: one thread per queue, pinned to its core.

use crate::forward::{Action, FlowConfig, Forwarder, Output};
use crate::intercept::InterceptContext;
use crate::port::Port;
use crate::session::SessionOutputs;
use crate::stats::WorkerStats;
use crate::takeovers::{Intercepted, Takeover};
use anyhow::{anyhow, Context, Result};
use classify::policy::Policy;
use std::io::Write;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use wire::FlowKey;
use xdp::{BridgeProgram, FrameDesc, QueueSockets, Verdict, VerdictMap, XskOptions, XskPort};

/// The policy in force, shared by the workers and replaced whole on reload: a worker
/// checks the generation once per pass and takes the new policy between two batches,
/// so no frame sees half a policy and no traffic stops.
#[derive(Debug)]
pub struct SharedPolicy {
    generation: AtomicU64,
    current: Mutex<Arc<Policy>>,
}

impl SharedPolicy {
    pub fn new(policy: Policy) -> Self {
        Self {
            generation: AtomicU64::new(0),
            current: Mutex::new(Arc::new(policy)),
        }
    }

    pub fn replace(&self, policy: Policy) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(policy);
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Arc<Policy> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[derive(Debug)]
pub struct WorkerConfig {
    /// `[A, B]`: client-side and server-side interface names.
    pub ports: [String; 2],
    pub queue: u32,
    /// Core to pin the thread to; `None` leaves it to the scheduler.
    pub core: Option<usize>,
    /// The flow table's limits and timeouts (and whether the fast path is on).
    pub flows: FlowConfig,
    pub policy: Arc<SharedPolicy>,
    /// Session events and kernel handoffs; `None` records nothing.
    pub sessions: Option<SessionOutputs>,
    /// Where mirrored frames go (plaintext flows, with `flows.mirror_plaintext`; decrypted
    /// sessions).
    pub mirror: Option<mirror::FanoutSender>,
    /// Interception: the TLS configuration and the shared bypass list of (client,
    /// server, SNI) triples whose client rejected a forgery. `None`: not configured.
    pub intercept: Option<(InterceptContext, Arc<Mutex<tls::bypass::BypassList>>)>,
    /// Frames taken from an RX ring per pass.
    pub batch_size: usize,
    /// How long the worker keeps polling its rings after the last frame it received
    /// before it sleeps in poll(2). Waking from poll(2) costs tens of microseconds on
    /// every request of a quiet flow; spinning trades that for CPU while traffic flows.
    pub idle_spin: Duration,
    pub xsk: XskOptions,
}

#[derive(Debug)]
pub struct WorkerHandle {
    pub queue: u32,
    pub core: Option<usize>,
    pub stats: Arc<WorkerStats>,
    thread: JoinHandle<Result<()>>,
}

impl WorkerHandle {
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    pub fn join(self) -> Result<()> {
        self.thread
            .join()
            .map_err(|_| anyhow!("worker for queue {} panicked", self.queue))?
    }
}

/// How long an idle worker sleeps in poll(2) before looking at the stop flag again.
const IDLE_POLL_MS: i32 = 100;

/// Starts the worker for `cfg.queue`: it opens both ports' sockets on its own thread
/// (the UMEM never leaves it), and its sockets are registered in the program's XSK maps
/// before this returns, so frames flow as soon as it does.
pub fn spawn_worker(
    cfg: WorkerConfig,
    program: &mut BridgeProgram,
    verdicts: VerdictMap,
    stop: Arc<AtomicBool>,
) -> Result<WorkerHandle> {
    let stats = Arc::new(WorkerStats::default());
    let (ready_tx, ready_rx) = mpsc::channel::<Result<[RawFd; 2]>>();
    let thread_stats = stats.clone();
    let queue = cfg.queue;
    let core = cfg.core;
    let thread = std::thread::Builder::new()
        .name(format!("worker-q{queue}"))
        .spawn(move || run(cfg, thread_stats, verdicts, stop, ready_tx))
        .context("spawning a worker thread")?;
    let fds = match ready_rx.recv() {
        Ok(r) => r?,
        Err(_) => {
            return Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => anyhow!("worker for queue {queue} died while opening its sockets"),
            })
        }
    };
    for (port, fd) in fds.iter().enumerate() {
        program.register_socket(port, queue, *fd)?;
    }
    Ok(WorkerHandle {
        queue,
        core,
        stats,
        thread,
    })
}

fn run(
    mut cfg: WorkerConfig,
    stats: Arc<WorkerStats>,
    verdicts: VerdictMap,
    stop: Arc<AtomicBool>,
    ready: mpsc::Sender<Result<[RawFd; 2]>>,
) -> Result<()> {
    if let Some(core) = cfg.core {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            tracing::warn!(core, queue = cfg.queue, "could not pin the worker to its core");
        }
    }
    let opened = QueueSockets::open([&cfg.ports[0], &cfg.ports[1]], cfg.queue, &cfg.xsk)
        .with_context(|| format!("queue {}", cfg.queue));
    let mut socks = match opened {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let fds = [socks.ports[0].fd(), socks.ports[1].fd()];
    for (port, out) in socks.ports.iter().zip(&stats.ports) {
        match port.zero_copy() {
            Ok(zc) => out.xsk_zero_copy.set(u64::from(zc)),
            Err(e) => tracing::warn!(queue = cfg.queue, "reading the AF_XDP bind mode: {e}"),
        }
    }
    // Frames must be in the fill rings before the sockets are registered, or the first
    // frames redirected to them are dropped for want of a buffer.
    refill(&mut socks);
    if ready.send(Ok(fds)).is_err() {
        return Ok(());
    }
    tracing::info!(queue = cfg.queue, core = ?cfg.core, "worker running");

    let mut policy_generation = cfg.policy.generation();
    let intercept = cfg.intercept.take();
    let mut forwarder: Forwarder<FrameDesc> =
        Forwarder::new(cfg.flows.clone(), cfg.policy.current(), stats.clone());
    if let Some((_, pinned)) = &intercept {
        forwarder = forwarder.with_bypass_list(pinned.clone());
    }
    let clock = MirrorClock::now();
    let intercepted = intercept.map(|(ctx, pinned)| Intercepted::new(ctx, pinned, clock));
    let batch = cfg.batch_size.max(1);
    let mut rx_descs = vec![FrameDesc::default(); batch];
    // Frames for each port's TX ring, in order; sent at the end of each direction's batch.
    let mut tx_descs: [Vec<FrameDesc>; 2] = [Vec::with_capacity(batch * 2), Vec::with_capacity(batch * 2)];
    let mut comp_descs = vec![FrameDesc::default(); cfg.xsk.ring_size as usize];
    // Frames handed to each port's TX ring and not yet seen on its completion ring.
    let mut in_flight = [0usize; 2];

    let mut outlets = Outlets {
        sessions: cfg.sessions.take(),
        mirror: cfg.mirror.take(),
        takeovers: Vec::new(),
        intercepted,
        clock,
    };

    let mut passes: u32 = 0;
    let mut last_received = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        passes = passes.wrapping_add(1);
        if passes % KERNEL_STATS_EVERY == 0 {
            mirror_kernel_stats(&socks, &stats);
        }
        let generation = cfg.policy.generation();
        if generation != policy_generation {
            policy_generation = generation;
            forwarder.set_policy(cfg.policy.current());
        }
        // The one clock read of a pass: every frame of the pass is stamped with it.
        let now = Instant::now();
        let mut received = 0;
        for from in [Port::A, Port::B] {
            let to = from.peer();
            // Safety: the descriptors the RX ring hands back are frames of this
            // socket's UMEM, owned by us until we give them to a ring again.
            let n = unsafe { from.of_mut(&mut socks.ports).rx.consume(&mut rx_descs) };
            if n == 0 {
                continue;
            }
            received += n;
            for desc in rx_descs.iter().take(n) {
                // Safety: `desc` came from this UMEM's RX ring and is not in any ring.
                let data = unsafe { socks.umem.data(desc) };
                match forwarder.on_frame(from, data.contents(), *desc, now) {
                    Action::Forward => to.of_mut(&mut tx_descs).push(*desc),
                    Action::ForwardMirrored => {
                        if let Some(m) = outlets.mirror.as_mut() {
                            // A full mirror drops the copy (counted there), never the frame.
                            m.mirror_as_is(outlets.clock.at(now), data.contents());
                        }
                        to.of_mut(&mut tx_descs).push(*desc);
                    }
                    Action::Drop => socks.free.push(*desc),
                    Action::Hold => {}
                    Action::Intercept(key) => {
                        if let Some(table) = outlets.intercepted.as_mut() {
                            table.handle_frame(key, from, data.contents(), now, &stats);
                        }
                        // The session copied what it needed.
                        socks.free.push(*desc);
                    }
                }
                if forwarder.has_outputs() {
                    carry_out(
                        &mut forwarder,
                        &mut socks,
                        &mut tx_descs,
                        &verdicts,
                        &mut outlets,
                        now,
                        &stats,
                    );
                }
            }
            if let Some(table) = outlets.intercepted.as_mut() {
                table.service(
                    &mut forwarder,
                    &mut socks,
                    &mut tx_descs,
                    &mut outlets.mirror,
                    now,
                    &stats,
                );
            }
            transmit(&mut socks, to, &mut tx_descs, &mut in_flight, &stats)?;
        }
        forwarder.poll(now, |desc| {
            // Safety: held descriptors are frames of this UMEM in no ring.
            unsafe { socks.umem.data(desc) }.contents()
        });
        if let Some(table) = outlets.intercepted.as_mut() {
            // Timers of the intercepted sessions (retransmissions, delayed ACKs, idle).
            table.service(
                &mut forwarder,
                &mut socks,
                &mut tx_descs,
                &mut outlets.mirror,
                now,
                &stats,
            );
        }
        if forwarder.has_outputs() {
            carry_out(
                &mut forwarder,
                &mut socks,
                &mut tx_descs,
                &verdicts,
                &mut outlets,
                now,
                &stats,
            );
        }
        for to in [Port::A, Port::B] {
            if !to.of(&tx_descs).is_empty() {
                transmit(&mut socks, to, &mut tx_descs, &mut in_flight, &stats)?;
            }
        }

        for (port, flying) in socks.ports.iter_mut().zip(in_flight.iter_mut()) {
            loop {
                // Safety: completion descriptors are TX frames of this UMEM, back to us.
                let n = unsafe { port.comp.consume(&mut comp_descs) };
                socks
                    .free
                    .extend_from_slice(comp_descs.get(..n).unwrap_or_default());
                *flying = flying.saturating_sub(n);
                if n < comp_descs.len() {
                    break;
                }
            }
        }
        refill(&mut socks);

        if received > 0 {
            last_received = now;
        } else {
            let flying = in_flight.iter().any(|&n| n > 0);
            if flying {
                // Copy-mode TX only progresses when kicked.
                for port in &socks.ports {
                    port.tx.wakeup().context("waking the TX ring")?;
                }
            }
            if now.saturating_duration_since(last_received) < cfg.idle_spin {
                // The next frame of a request/response exchange is likely microseconds
                // away: look again at once, but let anything runnable here go first.
                std::thread::yield_now();
            } else if flying {
                wait_readable(&fds, 1);
            } else {
                stats.worker.idle_polls.incr();
                mirror_kernel_stats(&socks, &stats);
                // Flows being classified have deadlines, intercepted sessions timers; do
                // not sleep through them.
                let mut timeout = if forwarder.frames_held() > 0 {
                    10
                } else {
                    IDLE_POLL_MS
                };
                if let Some(due) = outlets.intercepted.as_ref().and_then(|t| t.next_deadline()) {
                    let ms = due.saturating_duration_since(Instant::now()).as_millis();
                    timeout = timeout.min(i32::try_from(ms).unwrap_or(i32::MAX).max(1));
                }
                wait_readable(&fds, timeout);
            }
        }
    }
    // Sessions still open get their end records (or go to the sweeper for them).
    if let Some(table) = outlets.intercepted.as_mut() {
        table.shutdown(&mut socks, &mut outlets.takeovers);
    }
    forwarder.shutdown(Instant::now());
    carry_out(
        &mut forwarder,
        &mut socks,
        &mut tx_descs,
        &verdicts,
        &mut outlets,
        Instant::now(),
        &stats,
    );
    tracing::info!(queue = cfg.queue, "worker stopped");
    Ok(())
}

/// Loop passes between two reads of the kernel's socket statistics (one getsockopt per
/// port): often enough for the stats socket, rare enough to cost nothing per frame.
const KERNEL_STATS_EVERY: u32 = 4096;

/// Copies the kernel's own drop counters for each socket into the worker's stats, so a
/// frame the kernel could not hand us is counted somewhere, never silent.
fn mirror_kernel_stats(socks: &QueueSockets, stats: &WorkerStats) {
    for (port, out) in socks.ports.iter().zip(&stats.ports) {
        if let Ok(k) = port.rx.fd().xdp_statistics() {
            out.xsk_rx_dropped.set(k.rx_dropped());
            out.xsk_rx_ring_full.set(k.rx_ring_full());
            out.xsk_fill_ring_empty.set(k.rx_fill_ring_empty_descs());
            out.xsk_tx_invalid.set(k.tx_invalid_descs());
        }
    }
}

/// Frames the kernel sends per TX wakeup of a copy-mode socket (TX_BATCH_SIZE in
/// net/xdp/xsk.c): a batch larger than this needs more than one kick, or the ring fills
/// while the kernel waits to be asked again.
const COPY_MODE_TX_PER_KICK: usize = 32;

/// Does what the forwarder asked for: held frames go to their TX list (after what is
/// already there, so order is kept), freed frames back to the free list, built frames
/// into a free buffer, flows to intercept to the session table. Verdicts are written at once: before the released frames are
/// transmitted, so the server's answer to them already finds the flow in the fast path.
fn carry_out(
    forwarder: &mut Forwarder<FrameDesc>,
    socks: &mut QueueSockets,
    tx_descs: &mut [Vec<FrameDesc>; 2],
    verdicts: &VerdictMap,
    outlets: &mut Outlets,
    now: Instant,
    stats: &WorkerStats,
) {
    let sessions = outlets.sessions.as_ref();
    for out in forwarder.outputs() {
        match out {
            Output::Transmit { to, frame } => to.of_mut(tx_descs).push(frame),
            Output::Free(frame) => socks.free.push(frame),
            Output::Emit { to, frame } => match frame_in_free_buffer(socks, frame.as_bytes()) {
                Some(desc) => to.of_mut(tx_descs).push(desc),
                None => to.of(&stats.ports).drop_no_buffer.incr(),
            },
            Output::Verdict {
                key,
                verdict,
                session,
            } => write_verdict(verdicts, key, verdict, session, stats),
            Output::Session(event) => {
                if let Some(s) = sessions {
                    if !(s.events)(event) {
                        stats.worker.session_events_dropped.incr();
                    }
                }
            }
            Output::MirrorCopies(copies) => {
                if let Some(m) = outlets.mirror.as_mut() {
                    for frame in CopiedFrames(&copies) {
                        m.mirror_as_is(outlets.clock.at(now), frame);
                    }
                }
            }
            Output::Intercept {
                key,
                handshake,
                held,
                client_port,
                info,
            } => outlets.takeovers.push(Takeover {
                key,
                handshake,
                held,
                client_port,
                info,
            }),
            Output::Handoff(mut session) => {
                if let Some(reopened) = session.reopened.as_mut() {
                    // One lookup per reopened flow (rare): the entry still holds the old
                    // session's counts; the new connection's verdict will reset them.
                    if let Ok(Some(state)) = verdicts.get(&session.key) {
                        if state.session == session.info.id {
                            *reopened = state;
                        }
                    }
                }
                if let Some(s) = sessions {
                    if s.handoff.try_send(session).is_err() {
                        stats.worker.session_handoffs_dropped.incr();
                    }
                }
            }
        }
    }
    // Flows just decided `intercept` are taken over now, their held frames still here.
    if let Some(table) = outlets.intercepted.as_mut() {
        table.start_pending(forwarder, socks, tx_descs, &mut outlets.takeovers, now, stats);
    }
}

/// Where a worker's records and copies go besides the wire.
#[derive(Debug)]
pub(crate) struct Outlets {
    sessions: Option<SessionOutputs>,
    pub(crate) mirror: Option<mirror::FanoutSender>,
    /// Flows the forwarder decided to intercept, for the session table to take over.
    pub(crate) takeovers: Vec<Takeover>,
    /// The intercepted sessions; `None` when interception is not configured.
    pub(crate) intercepted: Option<Intercepted>,
    /// Mirrored frames carry wall-clock times, placed relative to one reading of both
    /// clocks.
    pub(crate) clock: MirrorClock,
}

/// A frame built here (a reset, a segment of an intercepted session) copied into a free
/// UMEM buffer; `None` when no buffer is free or it does not fit (the caller counts it).
pub(crate) fn frame_in_free_buffer(socks: &mut QueueSockets, bytes: &[u8]) -> Option<FrameDesc> {
    let mut desc = socks.free.pop()?;
    // Safety: a frame from the free list belongs to this UMEM and no ring.
    let mut data = unsafe { socks.umem.data_mut(&mut desc) };
    let mut cursor = data.cursor();
    cursor.set_pos(0);
    if cursor.write_all(bytes).is_ok() {
        Some(desc)
    } else {
        socks.free.push(desc);
        None
    }
}

/// The frames of an [`Output::MirrorCopies`]: each a big-endian `u16` length and bytes.
struct CopiedFrames<'a>(&'a [u8]);

impl<'a> Iterator for CopiedFrames<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.0.split_first_chunk::<2>()?;
        let len = usize::from(u16::from_be_bytes(*len));
        let frame = rest.get(..len)?;
        self.0 = rest.get(len..).unwrap_or_default();
        Some(frame)
    }
}

/// Wall-clock times for the mirror from the worker's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MirrorClock {
    instant: Instant,
    since_epoch: Duration,
}

impl MirrorClock {
    pub(crate) fn wall(&self, t: Instant) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + self.at(t)
    }

    fn now() -> Self {
        Self {
            instant: Instant::now(),
            since_epoch: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }

    pub(crate) fn at(&self, t: Instant) -> mirror::Timestamp {
        self.since_epoch + t.saturating_duration_since(self.instant)
    }
}

fn write_verdict(verdicts: &VerdictMap, key: FlowKey, verdict: Verdict, session: u64, stats: &WorkerStats) {
    match verdicts.set(&key, verdict, session) {
        Ok(()) if verdict == Verdict::Block => stats.worker.block_verdicts.incr(),
        Ok(()) => stats.worker.bypass_verdicts.incr(),
        Err(e) => {
            stats.worker.verdict_write_errors.incr();
            tracing::warn!(flow = %key, error = %e, "writing a flow verdict failed");
        }
    }
}

/// Hands the frames queued for `to` to its TX ring and kicks the kernel; what the ring
/// cannot take is dropped and counted against the port the frames came from.
fn transmit(
    socks: &mut QueueSockets,
    to: Port,
    tx_descs: &mut [Vec<FrameDesc>; 2],
    in_flight: &mut [usize; 2],
    stats: &WorkerStats,
) -> Result<()> {
    let descs = to.of_mut(tx_descs);
    if descs.is_empty() {
        return Ok(());
    }
    let tx_side: &mut XskPort = to.of_mut(&mut socks.ports);
    // Safety: the descriptors are frames of the UMEM this TX ring shares.
    let mut sent = unsafe { tx_side.tx.produce(descs) };
    kick_tx(&tx_side.tx, sent, stats)?;
    if let Some(rest) = descs.get(sent..).filter(|r| !r.is_empty()) {
        // The ring was full of frames the kernel had not taken yet; the kicks above made
        // room, so the rest get one more chance before being dropped.
        // Safety: as above.
        let more = unsafe { tx_side.tx.produce(rest) };
        kick_tx(&tx_side.tx, more, stats)?;
        sent += more;
    }
    *to.of_mut(in_flight) += sent;
    let out = to.of(&stats.ports);
    out.tx_frames.add(sent as u64);
    out.tx_bytes
        .add(descs.iter().take(sent).map(|d| d.lengths().data() as u64).sum());
    if let Some(unsent) = descs.get(sent..) {
        if !unsent.is_empty() {
            to.peer()
                .of(&stats.ports)
                .drop_tx_ring_full
                .add(unsent.len() as u64);
            socks.free.extend_from_slice(unsent);
        }
    }
    descs.clear();
    Ok(())
}

fn kick_tx(tx: &xdp::TxQueue, queued: usize, stats: &WorkerStats) -> Result<()> {
    if queued == 0 || !tx.needs_wakeup() {
        return Ok(());
    }
    for _ in 0..queued.div_ceil(COPY_MODE_TX_PER_KICK) {
        stats.worker.tx_wakeups.incr();
        tx.wakeup().context("waking the TX ring")?;
    }
    Ok(())
}

/// Tops up both fill rings from the free list, splitting it evenly so one busy port
/// cannot starve the other of receive buffers.
fn refill(socks: &mut QueueSockets) {
    let share = socks.free.len().div_ceil(2);
    for port in socks.ports.iter_mut() {
        let room = port.fill.nb_free(share as u32) as usize;
        let give = room.min(share).min(socks.free.len());
        if give == 0 {
            continue;
        }
        let start = socks.free.len() - give;
        // Safety: frames on the free list belong to this UMEM and to no ring.
        let produced = unsafe { port.fill.produce(socks.free.get(start..).unwrap_or_default()) };
        // `produce` took the first `produced` of the slice; the rest stay ours.
        socks.free.drain(start..start + produced);
    }
}

fn wait_readable(fds: &[RawFd; 2], timeout_ms: i32) {
    let mut pfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    // Safety: `pfds` is a valid array of pollfd for the duration of the call.
    unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
}
