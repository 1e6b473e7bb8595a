//! What happens to each frame that reaches userspace, without I/O: the per-worker flow
//! table, ClientHello classification at the first client payload, and the policy's
//! verdict (bypass or block) applied to the flow.
//!
//! The life of a TCP flow here:
//!
//! ```text
//!  SYN ──► Handshake ──client payload──► Classifying ──hello read──► policy ──► Passing
//!              │                            (client frames held)        └─────► Blocked
//!              └──server payload first / not TLS────────────────────────────► Passing
//!  payload with no handshake seen (mid-stream) ──► Classifying (counted)
//! ```
//!
//! The handshake passes untouched. While a ClientHello is being read, the client's frames
//! are held (not sent on) so that a blocked hello never reaches the server; a bypass
//! releases them unchanged and in order, and writes a kernel verdict so the rest of the
//! flow stays in the fast path. A block frees them, resets both ends and writes a BLOCK
//! verdict. Anything that cannot be classified within budget takes the policy's
//! `unclassified` action (bypass by default: fail open).

use crate::hash::KeyedFoldHash;
use crate::port::Port;
use crate::session::{endpoints, Counts, KernelSession, SessionEvent, SessionEventKind, SessionInfo, Volume};
use crate::stats::WorkerStats;
use classify::policy::{Action as PolicyAction, Decision, FlowFacts, Policy, RuleRef};
use classify::{ClientHelloAssembler, ClientHelloInfo, NotTls, Progress, ServerHelloInfo};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wire::{parse_frame, tcp_reset, BuiltFrame, Direction, FlowKey, TcpSummary, Toward, L3};
use xdp::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Transmit unchanged on the other port.
    Forward,
    /// Drop (the reason was counted).
    Drop,
    /// Kept by the forwarder: it comes back as [`Output::Transmit`] or [`Output::Free`].
    Hold,
    /// Transmit unchanged on the other port, and a copy to the mirror (a plaintext flow
    /// mirrored as-is).
    ForwardMirrored,
    /// A frame of an intercepted flow: for its session (see [`Output::Intercept`]); the
    /// buffer may be reused once the session has read it.
    Intercept(FlowKey),
}

/// Work for the I/O shell, produced by [`Forwarder::on_frame`] and [`Forwarder::poll`].
/// `H` is the shell's handle on a frame buffer (a UMEM descriptor).
#[derive(Debug)]
pub enum Output<H> {
    /// Transmit a held frame, unchanged, on `to` (in the order given).
    Transmit { to: Port, frame: H },
    /// A held frame that will not be sent: its buffer may be reused.
    Free(H),
    /// Transmit a frame built here (a TCP reset) on `to`.
    Emit { to: Port, frame: BuiltFrame },
    /// Write this verdict for the flow to the kernel's flow map, for session `session`.
    Verdict {
        key: FlowKey,
        verdict: Verdict,
        session: u64,
    },
    /// Something happened in a session's life (for the session log).
    Session(SessionEvent),
    /// The kernel carries this session from now on: the sweeper records how it ends.
    Handoff(KernelSession),
    /// Take this flow over: the session is built from its handshake frames and the
    /// held client frames (the ClientHello), which are then free to be reused. From now
    /// on its frames come as [`Action::Intercept`].
    Intercept {
        key: FlowKey,
        handshake: Box<HandshakeFrames>,
        held: Vec<H>,
        client_port: Port,
        info: Arc<SessionInfo>,
    },
    /// Copies of a plaintext flow's frames from before it was known not to be TLS (its
    /// handshake, its first payload), for the mirror, in arrival order: each is a
    /// big-endian `u16` length and the frame.
    MirrorCopies(Vec<u8>),
}

/// Limits of one worker's flow table.
#[derive(Debug, Clone)]
pub struct FlowConfig {
    /// Hand decided flows to the kernel (bypass verdicts). Off: every frame of every flow
    /// keeps coming to userspace, and blocks are also enforced here.
    pub fast_path: bool,
    /// Flows tracked at once. A new flow beyond this is forwarded untracked (fail open)
    /// and counted (`flow_table_full`); the table never grows past it.
    pub capacity: usize,
    /// How long a flow may sit between its SYN and its first payload.
    pub handshake_timeout: Duration,
    /// How long a decided flow that userspace still sees (fast path off) may be silent.
    pub idle_timeout: Duration,
    /// How long a decided flow is remembered after its verdict went to the kernel, for the
    /// frames that were already on their way to userspace.
    pub decided_linger: Duration,
    /// How long a flow closed by FIN from both sides is remembered, for the last ACKs.
    pub closed_linger: Duration,
    /// Budgets of the ClientHello reader (bytes, out-of-order ranges, time).
    pub hello: classify::Config,
    /// Client frames one flow may have held while its hello is read.
    pub max_held_per_flow: usize,
    /// Frames all flows together may have held (they are receive buffers taken out of
    /// circulation).
    pub max_held_total: usize,
    /// A session's volume is recorded once per interval (and at its end).
    pub volume_interval: Duration,
    /// Or-ed into every session id of this worker (run and worker bits; the low 40 bits
    /// are a counter).
    pub session_id_base: u64,
    /// Mirror TCP flows that are not TLS as they are, every frame from the SYN on. Such
    /// flows stay in userspace (no kernel verdict), so that each frame can be copied.
    pub mirror_plaintext: bool,
    /// Interception is configured: each flow's SYN and SYN/ACK are kept (one copy per
    /// flow) so that an `intercept` decision can take the connection over.
    pub intercept: bool,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            fast_path: true,
            capacity: 65_536,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            decided_linger: Duration::from_secs(5),
            closed_linger: Duration::from_secs(2),
            hello: classify::Config {
                max_wait: Duration::from_secs(5),
                ..classify::Config::default()
            },
            max_held_per_flow: 32,
            max_held_total: 1024,
            volume_interval: Duration::from_secs(60),
            session_id_base: 0,
            mirror_plaintext: false,
            intercept: false,
        }
    }
}

/// The counter part of a session id.
pub const SESSION_SEQ_MASK: u64 = (1 << 40) - 1;

/// How many bytes of a flow's frames are copied (for the mirror) while its fate is open;
/// a plaintext flow is almost always known at its first payload, well within this.
const MIRROR_PRECAPTURE_BYTES: usize = 8 * 1024;

/// How long a bypassed TLS flow stays in userspace for its ServerHello (read for the
/// session log) before its verdict goes to the kernel anyway.
const SERVER_HELLO_WAIT: Duration = Duration::from_secs(3);

/// How often [`Forwarder::poll`] walks the table for timeouts.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug)]
struct Flow<H> {
    /// Direction of the client's frames: the SYN's, or for a flow whose handshake was not
    /// seen, the first payload's.
    client_dir: Direction,
    /// The port the client is behind.
    client_port: Port,
    stage: Stage<H>,
    last_seen: Instant,
    /// FIN seen from the client, from the server.
    fin: [bool; 2],
    /// The server's SYN/ACK was seen (the handshake's second step).
    synack_seen: bool,
    /// Its start (or abnormal start) was recorded.
    started: bool,
    /// Its end was recorded, or it was handed to the sweeper.
    ended: bool,
    /// A bypassed TLS flow waits in userspace until the server's first payload (its
    /// ServerHello, read for the session log) or this deadline, then goes to the kernel.
    server_hello_due: Option<Instant>,
    mirror: Mirroring,
    /// The real handshake's frames, kept while the flow may still be intercepted.
    handshake: Option<Box<HandshakeFrames>>,
    info: Arc<SessionInfo>,
    counts: Counts,
}

/// A flow's SYN and SYN/ACK as they crossed the bridge: what a takeover is built from.
#[derive(Debug, Clone, Default)]
pub struct HandshakeFrames {
    pub syn: Vec<u8>,
    pub syn_ack: Vec<u8>,
}

/// Plaintext mirroring of one flow (with `mirror_plaintext`).
#[derive(Debug)]
enum Mirroring {
    Off,
    /// Undecided: its frames are copied (up to [`MIRROR_PRECAPTURE_BYTES`]) in case it
    /// turns out not to be TLS. `false`: the copies stopped at the limit.
    Recording(Vec<u8>, bool),
    /// Not TLS: every frame goes to the mirror; the flow stays out of the kernel.
    On,
}

impl<H> Flow<H> {
    /// The kernel forwards this flow's frames (its bypass verdict was written).
    fn in_kernel(&self, fast_path: bool) -> bool {
        fast_path
            && matches!(self.stage, Stage::Passing)
            && self.server_hello_due.is_none()
            && !matches!(self.mirror, Mirroring::On)
    }

    /// One of this session's events, as an output.
    fn event(
        &self,
        at: Instant,
        kind: SessionEventKind,
        volume: Option<Volume>,
        reason: Option<&'static str>,
    ) -> Output<H> {
        Output::Session(SessionEvent {
            at,
            kind,
            session: self.info.clone(),
            volume,
            reason,
        })
    }
}

#[derive(Debug)]
enum Stage<H> {
    /// SYN seen; no payload yet. `payload_start`: sequence number of the client's first
    /// payload byte.
    Handshake {
        payload_start: u32,
    },
    Classifying(Box<Classifying<H>>),
    /// Decided to let through: bypassed to the kernel (fast path) or forwarded here.
    Passing,
    /// Taken over: its frames go to its interception session.
    Intercepted,
    /// Its interception session ended; late frames are dropped (the two real peers'
    /// sequence spaces no longer match each other) until the linger is over.
    InterceptClosed,
    /// Reset and dropped.
    Blocked,
}

#[derive(Debug)]
struct Classifying<H> {
    payload_start: u32,
    assembler: ClientHelloAssembler,
    /// The client's frames since its first payload, in arrival order, not yet sent on.
    held: Vec<H>,
    /// The latest acknowledgement number from the client: the server's next sequence
    /// number, where a reset toward the client must sit to be accepted.
    client_ack: Option<u32>,
    /// The sequence number just past the client's latest payload.
    client_next: u32,
}

/// Decides, per frame, whether it is forwarded, held or dropped; keeps the worker's flow
/// table. Call [`Forwarder::on_frame`] for every received frame and drain
/// [`Forwarder::outputs`] after each call; call [`Forwarder::poll`] regularly.
#[derive(Debug)]
pub struct Forwarder<H> {
    cfg: FlowConfig,
    policy: Arc<Policy>,
    stats: Arc<WorkerStats>,
    flows: HashMap<FlowKey, Flow<H>, KeyedFoldHash>,
    held_total: usize,
    outputs: Vec<Output<H>>,
    next_sweep: Option<Instant>,
    next_session: u64,
    /// (client, server, SNI) triples not to intercept for a while, shared by workers.
    pinned: Option<Arc<std::sync::Mutex<tls::bypass::BypassList>>>,
}

impl<H: Copy> Forwarder<H> {
    pub fn new(cfg: FlowConfig, policy: Arc<Policy>, stats: Arc<WorkerStats>) -> Self {
        Self {
            flows: HashMap::with_capacity_and_hasher(cfg.capacity, KeyedFoldHash::new()),
            outputs: Vec::with_capacity(cfg.max_held_per_flow + 8),
            held_total: 0,
            cfg,
            policy,
            stats,
            next_sweep: None,
            next_session: 0,
            pinned: None,
        }
    }

    /// Sessions whose client rejected a forgery are not intercepted again while on
    /// `list`.
    pub fn with_bypass_list(mut self, list: Arc<std::sync::Mutex<tls::bypass::BypassList>>) -> Self {
        self.pinned = Some(list);
        self
    }

    /// Decisions from now on use `policy`; flows already decided keep their verdict.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// Work produced by the last calls, in the order it must be done.
    pub fn outputs(&mut self) -> std::vec::Drain<'_, Output<H>> {
        self.outputs.drain(..)
    }

    pub fn has_outputs(&self) -> bool {
        !self.outputs.is_empty()
    }

    /// Client frames held now, waiting for their flow's decision.
    pub fn frames_held(&self) -> usize {
        self.held_total
    }

    /// Flows in the table now.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    #[must_use]
    pub fn on_frame(&mut self, from: Port, frame: &[u8], handle: H, now: Instant) -> Action {
        let port = from.of(&self.stats.ports);
        port.rx_frames.incr();
        port.rx_bytes.add(frame.len() as u64);
        let parsed = match parse_frame(frame) {
            Ok(p) => p,
            Err(e) => {
                port.drop_malformed.incr();
                if let Some(c) = from.of(&self.stats.parse_drops).get(e.index()) {
                    c.incr();
                }
                return Action::Drop;
            }
        };
        match parsed.l3 {
            L3::Ip {
                flow: Some((key, dir)),
                tcp: Some(tcp),
                ..
            } => self.on_tcp(from, frame, key, dir, &tcp, handle, now),
            _ => Action::Forward,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_tcp(
        &mut self,
        from: Port,
        frame: &[u8],
        key: FlowKey,
        dir: Direction,
        tcp: &TcpSummary<'_>,
        handle: H,
        now: Instant,
    ) -> Action {
        if let Some(action) = self.on_tracked(frame, key, dir, tcp, handle, now) {
            return action;
        }
        let fs = &self.stats.flows;
        let opening = tcp.syn && !tcp.ack;
        if tcp.rst || (tcp.payload.is_empty() && !opening) {
            // A SYN/ACK, ACK or FIN of a flow not tracked: nothing to decide on.
            return Action::Forward;
        }
        if self.flows.len() >= self.cfg.capacity {
            fs.flow_table_full.incr();
            return Action::Forward;
        }
        self.next_session = self.next_session.wrapping_add(1);
        let (client, server) = endpoints(&key, dir);
        let mut flow = Flow {
            client_dir: dir,
            client_port: from,
            stage: Stage::Handshake {
                payload_start: tcp.seq.wrapping_add(1),
            },
            last_seen: now,
            fin: [false; 2],
            synack_seen: false,
            started: false,
            ended: false,
            server_hello_due: None,
            handshake: (self.cfg.intercept && opening).then(|| {
                Box::new(HandshakeFrames {
                    syn: frame.to_vec(),
                    syn_ack: Vec::new(),
                })
            }),
            mirror: if self.cfg.mirror_plaintext {
                Mirroring::Recording(Vec::with_capacity(512), true)
            } else {
                Mirroring::Off
            },
            info: Arc::new(SessionInfo {
                id: self.cfg.session_id_base | (self.next_session & SESSION_SEQ_MASK),
                client,
                server,
                opened_from: from,
                verdict: None,
                rule: None,
                hello: None,
                server_hello: None,
                upstream_cert: None,
            }),
            counts: Counts::new(now),
        };
        if opening {
            fs.started.incr();
            flow.counts.add(true, frame.len() as u64);
            record_copy(&mut flow.mirror, frame, fs);
            self.flows.insert(key, flow);
            fs.tracked.set(self.flows.len() as u64);
            return Action::Forward;
        }
        // Payload with no handshake seen: the bridge started after the connection did,
        // or its entry was evicted. The sender of this first payload is taken as the
        // client.
        fs.midstream.incr();
        flow.stage = Stage::Handshake {
            payload_start: tcp.seq,
        };
        flow.started = true;
        self.outputs
            .push(flow.event(now, SessionEventKind::StartAbnormal, None, Some("midstream")));
        self.flows.insert(key, flow);
        fs.tracked.set(self.flows.len() as u64);
        self.on_tracked(frame, key, dir, tcp, handle, now)
            .unwrap_or(Action::Forward)
    }

    /// A frame of a flow in the table; `None` if the flow is not in it. One lookup
    /// either way: this is the per-frame path.
    fn on_tracked(
        &mut self,
        frame: &[u8],
        key: FlowKey,
        dir: Direction,
        tcp: &TcpSummary<'_>,
        handle: H,
        now: Instant,
    ) -> Option<Action> {
        let fs = &self.stats.flows;
        let flow = self.flows.get_mut(&key)?;
        let opening = tcp.syn && !tcp.ack;
        if opening
            && matches!(
                flow.stage,
                Stage::Passing | Stage::InterceptClosed | Stage::Blocked
            )
        {
            // A new connection on the ports of one that is over (clients and NATs reuse
            // ports): a flow of its own, classified like any other. A blocked one too:
            // its verdict was for the old connection's hello, not for whatever the new
            // one will say.
            self.reopen(key, now);
            return None;
        }
        flow.last_seen = now;
        let from_client = dir == flow.client_dir;
        flow.counts.add(from_client, frame.len() as u64);
        record_copy(&mut flow.mirror, frame, fs);
        match flow.stage {
            // Everything, resets included, belongs to the session now.
            Stage::Intercepted => return Some(Action::Intercept(key)),
            Stage::InterceptClosed => {
                fs.intercept_late_frames.incr();
                // The session is gone, yet this end still sends data or a FIN: its last
                // segments were never acknowledged. A reset in the other end's name (at
                // the sequence number it expects) stops its retransmissions.
                if tcp.ack && !tcp.rst && (tcp.fin || !tcp.payload.is_empty()) {
                    let from = if from_client {
                        flow.client_port
                    } else {
                        flow.client_port.peer()
                    };
                    match tcp_reset(frame, Toward::Sender, tcp.ack_number, None) {
                        Ok(reset) => {
                            fs.resets_sent.incr();
                            self.outputs.push(Output::Emit {
                                to: from,
                                frame: reset,
                            });
                        }
                        Err(_) => fs.reset_build_errors.incr(),
                    }
                }
                return Some(Action::Drop);
            }
            _ => {}
        }
        if tcp.rst {
            // Either end gave up on the connection: nothing left to decide or hold.
            let blocked = matches!(flow.stage, Stage::Blocked);
            if let Stage::Classifying(c) = &mut flow.stage {
                self.held_total -= c.held.len();
                fs.frames_held.set(self.held_total as u64);
                self.outputs.extend(c.held.drain(..).map(Output::Free));
            }
            let reason = if from_client {
                "rst_from_client"
            } else {
                "rst_from_server"
            };
            end_session(
                &mut self.outputs,
                flow,
                now,
                SessionEventKind::EndAbnormal,
                Some(reason),
            );
            self.flows.remove(&key);
            fs.tracked.set(self.flows.len() as u64);
            fs.closed_by_rst.incr();
            return Some(if blocked { Action::Drop } else { Action::Forward });
        }
        if !tcp.payload.is_empty() && flow.fin == [true, true] && !flow.ended {
            // Data after both sides closed: not a session that ended normally.
            end_session(
                &mut self.outputs,
                flow,
                now,
                SessionEventKind::EndAbnormal,
                Some("after_close"),
            );
        }
        if tcp.fin {
            if let Some(f) = flow.fin.get_mut(usize::from(!from_client)) {
                *f = true;
            }
        }
        let action = match &mut flow.stage {
            Stage::Blocked => {
                fs.dropped_blocked.incr();
                Action::Drop
            }
            // Returned above; here only for the match to be whole.
            Stage::Intercepted => Action::Intercept(key),
            Stage::InterceptClosed => Action::Drop,
            Stage::Passing => {
                let mirrored = matches!(flow.mirror, Mirroring::On);
                if !from_client && !tcp.payload.is_empty() && flow.server_hello_due.take().is_some() {
                    read_server_hello(flow, tcp.payload, fs);
                    self.pass(key);
                }
                if mirrored {
                    Action::ForwardMirrored
                } else {
                    Action::Forward
                }
            }
            Stage::Handshake { payload_start } => {
                if !from_client && tcp.syn && tcp.ack {
                    flow.synack_seen = true;
                    if let Some(h) = flow.handshake.as_mut() {
                        h.syn_ack.clear();
                        h.syn_ack.extend_from_slice(frame);
                    }
                }
                if from_client && tcp.syn {
                    // A retransmitted (or new) SYN moves the stream's start.
                    *payload_start = tcp.seq.wrapping_add(1);
                    if let Some(h) = flow.handshake.as_mut() {
                        h.syn.clear();
                        h.syn.extend_from_slice(frame);
                    }
                }
                let payload_start = *payload_start;
                if from_client && tcp.ack && flow.synack_seen && !flow.started {
                    flow.started = true;
                    self.outputs
                        .push(flow.event(now, SessionEventKind::Start, None, None));
                }
                if tcp.payload.is_empty() {
                    return Some(Action::Forward);
                }
                if !from_client {
                    // The server spoke first (SMTP, SSH, ...): not a TLS client.
                    fs.not_tls.incr();
                    flow.stage = Stage::Passing;
                    set_decision(flow, "pass", "not_tls".into(), None);
                    // This frame is among the copies already.
                    start_mirroring(&mut self.outputs, flow);
                    self.pass(key);
                    return Some(Action::Forward);
                }
                flow.stage = Stage::Classifying(Box::new(Classifying {
                    payload_start,
                    assembler: ClientHelloAssembler::new(self.cfg.hello.clone(), now),
                    held: Vec::with_capacity(4),
                    client_ack: None,
                    client_next: payload_start,
                }));
                self.hold_client_frame(frame, key, dir, tcp, handle, now)
            }
            Stage::Classifying(_) if !from_client => Action::Forward,
            Stage::Classifying(_) => self.hold_client_frame(frame, key, dir, tcp, handle, now),
        };
        Some(action)
    }

    /// A client frame of a flow whose hello is being read: held, and fed to the reader.
    fn hold_client_frame(
        &mut self,
        frame: &[u8],
        key: FlowKey,
        dir: Direction,
        tcp: &TcpSummary<'_>,
        handle: H,
        now: Instant,
    ) -> Action {
        let fs = &self.stats.flows;
        let Some(Stage::Classifying(c)) = self.flows.get_mut(&key).map(|f| &mut f.stage) else {
            return Action::Forward;
        };
        // Every client frame is held while the hello is read, so what is released later
        // keeps its order (a FIN or an ACK must not overtake held data).
        c.held.push(handle);
        self.held_total += 1;
        if tcp.ack {
            c.client_ack = Some(tcp.ack_number);
        }
        let end = tcp.seq.wrapping_add(tcp.payload.len() as u32);
        if end.wrapping_sub(c.client_next) as i32 > 0 {
            c.client_next = end;
        }
        let progress = if tcp.payload.is_empty() {
            Progress::NeedMore
        } else {
            c.assembler
                .push(tcp.seq.wrapping_sub(c.payload_start), tcp.payload)
        };
        let over_limit =
            c.held.len() > self.cfg.max_held_per_flow || self.held_total > self.cfg.max_held_total;
        let decision = match progress {
            Progress::NeedMore if over_limit => {
                fs.held_limit.incr();
                Some((self.unclassified(), None))
            }
            Progress::NeedMore => None,
            other => Some(self.decide(&key, dir, other)),
        };
        fs.frames_held.set(self.held_total as u64);
        if let Some((decision, hello)) = decision {
            self.apply(key, decision, hello, frame, now);
        }
        Action::Hold
    }

    /// Times out flows: handshakes that never carried data, hellos that never completed,
    /// decided flows whose time in the table is over.
    pub fn poll<'a>(&mut self, now: Instant, frame_bytes: impl Fn(&H) -> &'a [u8]) {
        if self.next_sweep.is_some_and(|t| now < t) {
            return;
        }
        self.next_sweep = now.checked_add(SWEEP_EVERY);
        let mut expired_hellos: Vec<FlowKey> = Vec::new();
        let cfg = &self.cfg;
        let fs = &self.stats.flows;
        let outputs = &mut self.outputs;
        self.flows.retain(|key, flow| {
            let idle = now.saturating_duration_since(flow.last_seen);
            let closed = flow.fin == [true, true];
            if flow.server_hello_due.is_some_and(|due| now >= due) {
                // The server has not answered: the flow goes to the kernel anyway.
                flow.server_hello_due = None;
                fs.server_hello_timeouts.incr();
                if cfg.fast_path {
                    outputs.push(Output::Verdict {
                        key: *key,
                        verdict: Verdict::Bypass,
                        session: flow.info.id,
                    });
                }
            }
            let keep = match &mut flow.stage {
                Stage::Handshake { .. } => idle < cfg.handshake_timeout,
                Stage::Classifying(c) => {
                    if let Progress::GaveUp(_) = c.assembler.handle_timeout(now) {
                        expired_hellos.push(*key);
                    }
                    true
                }
                Stage::Passing if closed => idle < cfg.closed_linger,
                Stage::Passing if cfg.fast_path && !matches!(flow.mirror, Mirroring::On) => {
                    idle < cfg.decided_linger
                }
                Stage::Passing => idle < cfg.idle_timeout,
                Stage::Blocked | Stage::InterceptClosed => idle < cfg.decided_linger,
                // The worker ends it with its session; this is only a backstop.
                Stage::Intercepted => idle < cfg.idle_timeout + Duration::from_secs(60),
            };
            if !keep {
                if closed {
                    fs.evicted_closed.incr();
                } else {
                    fs.evicted_idle.incr();
                }
                let in_kernel = flow.in_kernel(cfg.fast_path);
                if in_kernel && !flow.ended {
                    // The kernel has carried this flow since its verdict; the sweeper
                    // sees how it ends, and gets what was counted here.
                    outputs.push(Output::Handoff(KernelSession {
                        key: *key,
                        client_dir: flow.client_dir,
                        info: flow.info.clone(),
                        counts: flow.counts,
                        reopened: None,
                    }));
                    flow.ended = true;
                } else if closed {
                    end_session(outputs, flow, now, SessionEventKind::EndNormal, None);
                } else {
                    end_session(outputs, flow, now, SessionEventKind::EndIdle, None);
                }
            } else if flow.started
                && !flow.ended
                && now.saturating_duration_since(flow.counts.interval_start) >= cfg.volume_interval
            {
                let volume = flow.counts.take_interval(now);
                outputs.push(flow.event(now, SessionEventKind::Volume, Some(volume), None));
            }
            keep
        });
        for key in expired_hellos {
            let decision = self.unclassified();
            let first = match self.flows.get(&key).map(|f| &f.stage) {
                Some(Stage::Classifying(c)) => c.held.first().copied(),
                _ => None,
            };
            let bytes = first.as_ref().map(&frame_bytes).unwrap_or_default();
            self.apply(key, decision, None, bytes, now);
        }
        self.stats.flows.tracked.set(self.flows.len() as u64);
    }

    /// The bridge is stopping: every session still open ends here (`end_abnormal`,
    /// `bridge_stopped`, with its last volume; `end_normal` if both FINs were seen and
    /// only the linger was left), except those the kernel carries, which
    /// go to the sweeper to be ended with the kernel's counts. Held frames are freed.
    /// The table is empty afterwards.
    pub fn shutdown(&mut self, now: Instant) {
        let fast_path = self.cfg.fast_path;
        let outputs = &mut self.outputs;
        for (key, mut flow) in self.flows.drain() {
            if let Stage::Classifying(c) = &mut flow.stage {
                outputs.extend(c.held.drain(..).map(Output::Free));
            }
            let in_kernel = flow.in_kernel(fast_path);
            if in_kernel && !flow.ended {
                flow.ended = true;
                outputs.push(Output::Handoff(KernelSession {
                    key,
                    client_dir: flow.client_dir,
                    info: flow.info.clone(),
                    counts: flow.counts,
                    reopened: None,
                }));
            } else if flow.fin == [true, true] {
                end_session(outputs, &mut flow, now, SessionEventKind::EndNormal, None);
            } else {
                end_session(
                    outputs,
                    &mut flow,
                    now,
                    SessionEventKind::EndAbnormal,
                    Some("bridge_stopped"),
                );
            }
        }
        self.held_total = 0;
        self.stats.flows.frames_held.set(0);
        self.stats.flows.tracked.set(0);
    }

    /// The policy's decision for a flow whose classification finished with `progress`,
    /// and the hello when there was one.
    fn decide(
        &self,
        key: &FlowKey,
        client_dir: Direction,
        progress: Progress,
    ) -> (Decision, Option<Box<ClientHelloInfo>>) {
        let fs = &self.stats.flows;
        match progress {
            Progress::Done(hello) => {
                fs.tls_hellos.incr();
                let (client, server) = endpoints(key, client_dir);
                let decision = self.policy.decide(&FlowFacts {
                    src: client.ip(),
                    dst: server.ip(),
                    dst_port: server.port(),
                    hello: &hello,
                });
                (decision, Some(hello))
            }
            Progress::NotTls(NotTls::Malformed(_)) | Progress::GaveUp(_) => (self.unclassified(), None),
            Progress::NotTls(_) | Progress::NeedMore => {
                fs.not_tls.incr();
                (not_tls(), None)
            }
        }
    }

    fn unclassified(&self) -> Decision {
        self.stats.flows.unclassified.incr();
        self.policy.unclassified()
    }

    /// Carries out `decision` for a flow being classified; `client_frame` is one of its
    /// client's frames (to address resets from).
    fn apply(
        &mut self,
        key: FlowKey,
        decision: Decision,
        hello: Option<Box<ClientHelloInfo>>,
        client_frame: &[u8],
        now: Instant,
    ) {
        let fs = &self.stats.flows;
        let intercept = decision.action == PolicyAction::Intercept
            && self
                .flows
                .get(&key)
                .is_some_and(|flow| self.intercept_possible(flow, hello.as_deref(), now));
        let Some(flow) = self.flows.get_mut(&key) else {
            return;
        };
        let verdict = match decision.action {
            PolicyAction::Block => "block",
            PolicyAction::Intercept if intercept => "intercept",
            _ if hello.is_none() && decision == not_tls() => "pass",
            _ => "bypass",
        };
        let rule = if verdict == "pass" {
            "not_tls".to_string()
        } else if decision.action == PolicyAction::Intercept && !intercept {
            format!("{} (not intercepted)", decision.rule)
        } else {
            decision.rule.to_string()
        };
        let hello: Option<Arc<ClientHelloInfo>> = hello.map(Arc::from);
        set_decision(flow, verdict, rule, hello.clone());
        if verdict == "pass" {
            // The copies include the held frames released below.
            start_mirroring(&mut self.outputs, flow);
        } else {
            flow.mirror = Mirroring::Off;
        }
        let to_server = flow.client_port.peer();
        let held = match std::mem::replace(&mut flow.stage, Stage::Passing) {
            Stage::Classifying(c) => *c,
            other => {
                flow.stage = other;
                return;
            }
        };
        self.held_total -= held.held.len();
        fs.frames_held.set(self.held_total as u64);
        match decision.action {
            PolicyAction::Intercept if intercept => {
                fs.decided_intercept.incr();
                flow.stage = Stage::Intercepted;
                let handshake = flow.handshake.take().unwrap_or_default();
                self.outputs.push(Output::Intercept {
                    key,
                    handshake,
                    held: held.held,
                    client_port: flow.client_port,
                    info: flow.info.clone(),
                });
            }
            PolicyAction::Bypass | PolicyAction::Intercept => {
                fs.decided_bypass.incr();
                self.outputs.extend(
                    held.held
                        .iter()
                        .map(|&frame| Output::Transmit { to: to_server, frame }),
                );
                if hello.is_some() {
                    // TLS: the kernel takes over once the ServerHello has been read.
                    flow.server_hello_due = now.checked_add(SERVER_HELLO_WAIT);
                } else {
                    self.pass(key);
                }
            }
            PolicyAction::Block => {
                fs.decided_block.incr();
                flow.stage = Stage::Blocked;
                let to_client = flow.client_port;
                self.outputs.extend(held.held.iter().map(|&h| Output::Free(h)));
                tracing::info!(
                    flow = %key,
                    sni = hello.as_ref().and_then(|h| h.sni.as_deref()).unwrap_or("-"),
                    rule = %decision.rule,
                    "blocked by policy"
                );
                // Toward the client from the server's address, where the server's next
                // byte would be; toward the server as if from the client, at the first
                // byte it never received.
                let resets = [
                    held.client_ack.map(|seq| {
                        (
                            to_client,
                            tcp_reset(client_frame, Toward::Sender, seq, Some(held.client_next)),
                        )
                    }),
                    Some((
                        to_server,
                        tcp_reset(client_frame, Toward::Receiver, held.payload_start, None),
                    )),
                ];
                for (to, frame) in resets.into_iter().flatten() {
                    match frame {
                        Ok(frame) => {
                            fs.resets_sent.incr();
                            self.outputs.push(Output::Emit { to, frame });
                        }
                        Err(_) => fs.reset_build_errors.incr(),
                    }
                }
                self.outputs.push(Output::Verdict {
                    key,
                    verdict: Verdict::Block,
                    session: flow.info.id,
                });
                end_session(
                    &mut self.outputs,
                    flow,
                    now,
                    SessionEventKind::EndAbnormal,
                    Some("blocked"),
                );
            }
        }
    }

    /// Whether a flow the policy would intercept can be: interception configured, its
    /// handshake seen (a mid-stream flow cannot be taken over), and its (client, server,
    /// SNI) not on the bypass list of clients that rejected a forgery. Counts why not.
    fn intercept_possible(&self, flow: &Flow<H>, hello: Option<&ClientHelloInfo>, now: Instant) -> bool {
        let fs = &self.stats.flows;
        if !self.cfg.intercept {
            // The daemon refuses intercept rules without [intercept]; a policy that
            // slipped one through is passed, not broken.
            fs.intercept_unavailable.incr();
            return false;
        }
        if !flow
            .handshake
            .as_ref()
            .is_some_and(|h| !h.syn.is_empty() && !h.syn_ack.is_empty())
        {
            fs.intercept_no_handshake.incr();
            return false;
        }
        if let Some(pinned) = &self.pinned {
            let key = tls::bypass::BypassKey {
                client: flow.info.client.ip(),
                server: flow.info.server.ip(),
                sni: hello.and_then(|h| h.sni.clone()),
            };
            if pinned.lock().map(|mut l| l.contains(&key, now)).unwrap_or(false) {
                fs.intercept_bypassed_pinned.incr();
                return false;
            }
        }
        true
    }

    /// What the interception session learned of the TLS session (for the log).
    pub fn intercept_established(
        &mut self,
        key: &FlowKey,
        server_hello: ServerHelloInfo,
        upstream_cert: Option<String>,
    ) {
        if let Some(flow) = self.flows.get_mut(key) {
            let info = Arc::make_mut(&mut flow.info);
            info.server_hello = Some(server_hello);
            info.upstream_cert = upstream_cert;
        }
    }

    /// The upstream certificate's verdict, known before (or without) an established
    /// session.
    pub fn intercept_upstream_cert(&mut self, key: &FlowKey, upstream_cert: String) {
        if let Some(flow) = self.flows.get_mut(key) {
            Arc::make_mut(&mut flow.info).upstream_cert = Some(upstream_cert);
        }
    }

    /// The flow could not be taken over: it is passed on (its held frames were sent on by
    /// the caller) and bypassed like any other.
    pub fn intercept_abandoned(&mut self, key: &FlowKey) {
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        flow.stage = Stage::Passing;
        let info = Arc::make_mut(&mut flow.info);
        info.verdict = Some("bypass");
        info.rule = info.rule.take().map(|r| format!("{r} (takeover failed)"));
        self.pass(*key);
    }

    /// The interception session of `key` is over: its end is recorded, and late frames
    /// are dropped for a while. `reason`: `None` for a normal end (both sides closed),
    /// else why (`rst_from_client`, `upstream_rejected`, `idle`, ...).
    pub fn intercept_ended(&mut self, key: &FlowKey, now: Instant, reason: Option<&'static str>) {
        let Some(flow) = self.flows.get_mut(key) else {
            return;
        };
        let kind = match reason {
            None => SessionEventKind::EndNormal,
            Some("idle") => SessionEventKind::EndIdle,
            Some(_) => SessionEventKind::EndAbnormal,
        };
        end_session(
            &mut self.outputs,
            flow,
            now,
            kind,
            reason.filter(|r| *r != "idle"),
        );
        flow.stage = Stage::InterceptClosed;
        flow.last_seen = now;
    }

    /// A SYN opened a new connection on the ports of `key`'s flow, which is over: its
    /// session ends (a passed one the kernel carried goes to the sweeper, which ends it
    /// with the kernel's counts: the worker reads them into `reopened` before the new
    /// connection's verdict resets them) and the flow leaves the table.
    fn reopen(&mut self, key: FlowKey, now: Instant) {
        let fs = &self.stats.flows;
        let Some(mut flow) = self.flows.remove(&key) else {
            return;
        };
        fs.tracked.set(self.flows.len() as u64);
        if matches!(flow.stage, Stage::InterceptClosed) {
            fs.intercept_reopened.incr();
            return;
        }
        fs.reopened.incr();
        // A blocked flow's session ended with the block: end_session does nothing.
        if flow.in_kernel(self.cfg.fast_path) && !flow.ended {
            flow.ended = true;
            self.outputs.push(Output::Handoff(KernelSession {
                key,
                client_dir: flow.client_dir,
                info: flow.info.clone(),
                counts: flow.counts,
                reopened: Some(xdp::FlowState::default()),
            }));
        } else if flow.fin == [true, true] {
            end_session(
                &mut self.outputs,
                &mut flow,
                now,
                SessionEventKind::EndNormal,
                None,
            );
        } else {
            end_session(
                &mut self.outputs,
                &mut flow,
                now,
                SessionEventKind::EndAbnormal,
                Some("reopened"),
            );
        }
    }

    /// The flow is let through from now on; with the fast path, by the kernel (unless it
    /// is mirrored: the kernel does not copy frames).
    fn pass(&mut self, key: FlowKey) {
        let Some(flow) = self.flows.get(&key) else {
            return;
        };
        if self.cfg.fast_path && !matches!(flow.mirror, Mirroring::On) {
            self.outputs.push(Output::Verdict {
                key,
                verdict: Verdict::Bypass,
                session: flow.info.id,
            });
        }
    }
}

/// Copies a frame of a flow whose fate is open, for the mirror, within the limit.
fn record_copy(mirror: &mut Mirroring, frame: &[u8], fs: &crate::stats::FlowCounters) {
    let Mirroring::Recording(copies, complete) = mirror else {
        return;
    };
    let Ok(len) = u16::try_from(frame.len()) else {
        return;
    };
    if !*complete || copies.len() + 2 + frame.len() > MIRROR_PRECAPTURE_BYTES {
        if *complete {
            fs.mirror_precapture_truncated.incr();
        }
        *complete = false;
        return;
    }
    copies.extend_from_slice(&len.to_be_bytes());
    copies.extend_from_slice(frame);
}

/// The flow is plaintext: what was copied goes to the mirror, and so will every frame.
fn start_mirroring<H>(outputs: &mut Vec<Output<H>>, flow: &mut Flow<H>) {
    if let Mirroring::Recording(copies, _) = std::mem::replace(&mut flow.mirror, Mirroring::Off) {
        flow.mirror = Mirroring::On;
        if !copies.is_empty() {
            outputs.push(Output::MirrorCopies(copies));
        }
    }
}

/// Notes what the server's first payload says of the session (version, cipher suite,
/// ALPN) when it is a readable ServerHello.
fn read_server_hello<H>(flow: &mut Flow<H>, payload: &[u8], fs: &crate::stats::FlowCounters) {
    match classify::parse_server_hello(payload) {
        Ok(info) => {
            fs.server_hellos.incr();
            Arc::make_mut(&mut flow.info).server_hello = Some(info);
        }
        Err(_) => fs.server_hello_unreadable.incr(),
    }
}

/// The decision for a flow that is not TLS: passed through.
fn not_tls() -> Decision {
    Decision {
        action: PolicyAction::Bypass,
        rule: RuleRef::Default,
    }
}

fn set_decision<H>(
    flow: &mut Flow<H>,
    verdict: &'static str,
    rule: String,
    hello: Option<Arc<ClientHelloInfo>>,
) {
    let info = Arc::make_mut(&mut flow.info);
    info.verdict = Some(verdict);
    info.rule = Some(rule);
    info.hello = hello;
}

/// The session's last interval and its end, once: a flow ends at most once, and a flow
/// whose start was never recorded (a SYN nobody answered) has no end either.
fn end_session<H>(
    outputs: &mut Vec<Output<H>>,
    flow: &mut Flow<H>,
    now: Instant,
    kind: SessionEventKind,
    reason: Option<&'static str>,
) {
    if flow.ended || !flow.started {
        return;
    }
    flow.ended = true;
    let last = flow.counts.take_interval(now);
    outputs.push(flow.event(now, SessionEventKind::Volume, Some(last), None));
    outputs.push(flow.event(now, kind, Some(flow.counts.totals(now)), reason));
}

#[cfg(test)]
mod tests;
