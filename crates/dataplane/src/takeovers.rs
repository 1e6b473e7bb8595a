//! The worker's intercepted sessions: started from the forwarder's
//! [`crate::Output::Intercept`], fed the frames of their flows, serviced (bytes pumped,
//! frames sent, timers run) when they had input or a timer is due, and ended in the
//! forwarder's flow table (for the session log) when they finish.
//!
//! The only I/O here is taking UMEM buffers for the frames a session sends; everything
//! else is [`InterceptSession`].

use crate::forward::{Forwarder, HandshakeFrames};
use crate::intercept::{InterceptContext, InterceptSession};
use crate::port::Port;
use crate::session::SessionInfo;
use crate::stats::WorkerStats;
use crate::worker::{frame_in_free_buffer, MirrorClock};
use classify::{ProtocolVersion, ServerHelloInfo};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tls::bypass::{BypassKey, BypassList};
use tls::pair::Event;
use wire::FlowKey;
use xdp::{FrameDesc, QueueSockets};

/// A flow the forwarder decided to intercept, waiting to be taken over.
#[derive(Debug)]
pub(crate) struct Takeover {
    pub key: FlowKey,
    pub handshake: Box<HandshakeFrames>,
    pub held: Vec<FrameDesc>,
    pub client_port: Port,
    pub info: Arc<SessionInfo>,
}

#[derive(Debug)]
struct Entry {
    session: InterceptSession,
    info: Arc<SessionInfo>,
    deadline: Option<Instant>,
    touched: bool,
    /// Why it ended, when it ended other than normally.
    end_reason: Option<&'static str>,
    upstream: Option<ServerHelloInfo>,
}

/// One worker's intercepted sessions.
#[derive(Debug)]
pub(crate) struct Intercepted {
    ctx: InterceptContext,
    pinned: Arc<Mutex<BypassList>>,
    sessions: HashMap<FlowKey, Entry>,
    /// Sessions that had input since they were last serviced.
    touched: Vec<FlowKey>,
    /// Scratch lists of [`Intercepted::service`].
    due: Vec<FlowKey>,
    finished: Vec<FlowKey>,
    /// The earliest timer of all sessions.
    earliest: Option<Instant>,
    /// Where a session writes its next frame before it is copied into a UMEM buffer.
    frame: Vec<u8>,
    /// Wall-clock time for certificate validity and the mirror's timestamps.
    clock: MirrorClock,
}

impl Intercepted {
    pub fn new(ctx: InterceptContext, pinned: Arc<Mutex<BypassList>>, clock: MirrorClock) -> Self {
        let frame = vec![0; ctx.splice.max_frame_len];
        Self {
            ctx,
            pinned,
            sessions: HashMap::new(),
            touched: Vec::new(),
            due: Vec::new(),
            finished: Vec::new(),
            earliest: None,
            frame,
            clock,
        }
    }

    /// A frame of an intercepted flow.
    pub fn handle_frame(
        &mut self,
        key: FlowKey,
        from: Port,
        frame: &[u8],
        now: Instant,
        stats: &WorkerStats,
    ) {
        let Some(e) = self.sessions.get_mut(&key) else {
            return;
        };
        stats.intercept.frames_in.incr();
        e.session.handle_frame(now, from, frame);
        if !e.touched {
            e.touched = true;
            self.touched.push(key);
        }
    }

    /// Takes over the flows the forwarder just decided to intercept. One that cannot be
    /// taken over (its handshake frames do not parse) is passed on unchanged instead.
    pub fn start_pending(
        &mut self,
        forwarder: &mut Forwarder<FrameDesc>,
        socks: &mut QueueSockets,
        tx_descs: &mut [Vec<FrameDesc>; 2],
        takeovers: &mut Vec<Takeover>,
        now: Instant,
        stats: &WorkerStats,
    ) {
        for t in takeovers.drain(..) {
            let started = {
                // Safety: held descriptors are frames of this UMEM in no ring.
                let frames: Vec<&[u8]> = t
                    .held
                    .iter()
                    .map(|d| unsafe { socks.umem.data(d) }.contents())
                    .collect();
                InterceptSession::new(
                    now,
                    self.clock.wall(now),
                    &t.handshake.syn,
                    &t.handshake.syn_ack,
                    &frames,
                    t.client_port,
                    &self.ctx,
                )
            };
            match started {
                Ok(session) => {
                    stats.intercept.sessions.incr();
                    socks.free.extend_from_slice(&t.held);
                    self.sessions.insert(
                        t.key,
                        Entry {
                            session,
                            info: t.info,
                            deadline: None,
                            touched: true,
                            end_reason: None,
                            upstream: None,
                        },
                    );
                    self.touched.push(t.key);
                }
                Err(e) => {
                    stats.intercept.setup_errors.incr();
                    tracing::warn!(flow = %t.key, error = %e, "could not take the flow over; passing it on");
                    t.client_port.peer().of_mut(tx_descs).extend_from_slice(&t.held);
                    forwarder.intercept_abandoned(&t.key);
                }
            }
        }
        stats.intercept.active.set(self.sessions.len() as u64);
    }

    /// Services the sessions that had input or whose timer is due: bytes pumped, frames
    /// sent, events acted on, finished sessions ended.
    pub fn service(
        &mut self,
        forwarder: &mut Forwarder<FrameDesc>,
        socks: &mut QueueSockets,
        tx_descs: &mut [Vec<FrameDesc>; 2],
        mirror: &mut Option<mirror::FanoutSender>,
        now: Instant,
        stats: &WorkerStats,
    ) {
        // Kept between calls so that servicing allocates nothing once warm.
        let mut due = std::mem::take(&mut self.due);
        let mut finished = std::mem::take(&mut self.finished);
        due.append(&mut self.touched);
        if self.earliest.is_some_and(|t| t <= now) {
            due.extend(
                self.sessions
                    .iter()
                    .filter(|(_, e)| !e.touched && e.deadline.is_some_and(|t| t <= now))
                    .map(|(k, _)| *k),
            );
        }
        let serviced = !due.is_empty();
        for key in due.drain(..) {
            let Some(e) = self.sessions.get_mut(&key) else {
                continue;
            };
            e.touched = false;
            if e.deadline.is_some_and(|t| t <= now) {
                e.session.handle_timeout(now);
            }
            e.session.pump();
            while let Some((to, len)) = e.session.poll_transmit(now, &mut self.frame) {
                // Without a buffer the segment is lost here; TCP retransmits it.
                match frame_in_free_buffer(socks, self.frame.get(..len).unwrap_or_default()) {
                    Some(desc) => {
                        to.of_mut(tx_descs).push(desc);
                        stats.intercept.frames_out.incr();
                    }
                    None => stats.intercept.drop_no_buffer.incr(),
                }
            }
            while let Some(ev) = e.session.poll_event() {
                on_event(key, e, ev, forwarder, &self.pinned, now, stats);
            }
            e.session.drain_mirror(self.clock.at(now), mirror.as_mut());
            e.deadline = e.session.poll_timeout();
            if e.session.is_finished() {
                finished.push(key);
            }
        }
        let changed = !finished.is_empty();
        for key in finished.drain(..) {
            if let Some(e) = self.sessions.remove(&key) {
                let reason = e
                    .end_reason
                    .or_else(|| e.session.reset_by())
                    .or_else(|| e.session.idle_expired().then_some("idle"));
                forwarder.intercept_ended(&key, now, reason);
            }
        }
        self.due = due;
        self.finished = finished;
        if serviced || changed {
            self.earliest = self.sessions.values().filter_map(|e| e.deadline).min();
            stats.intercept.active.set(self.sessions.len() as u64);
        }
    }

    /// When the next session timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.earliest
    }

    /// The worker is stopping: buffers of takeovers not started yet go back.
    pub fn shutdown(&mut self, socks: &mut QueueSockets, takeovers: &mut Vec<Takeover>) {
        for t in takeovers.drain(..) {
            socks.free.extend_from_slice(&t.held);
        }
        self.sessions.clear();
    }
}

/// Acts on what a session's TLS halves report: counters, the log's TLS summary, the
/// bypass list for clients that refuse forgeries.
fn on_event(
    key: FlowKey,
    e: &mut Entry,
    ev: Event,
    forwarder: &mut Forwarder<FrameDesc>,
    pinned: &Mutex<BypassList>,
    now: Instant,
    stats: &WorkerStats,
) {
    let c = &stats.intercept;
    let bypass_key = || BypassKey {
        client: e.info.client.ip(),
        server: e.info.server.ip(),
        sni: e.session.sni().map(str::to_string),
    };
    match ev {
        Event::UpstreamVerified { alpn, version, suite } => {
            e.upstream = Some(ServerHelloInfo {
                version: ProtocolVersion(u16::from(version)),
                cipher_suite: u16::from(suite),
                alpn: alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            });
        }
        Event::Established { .. } => {
            c.established.incr();
            if let Some(upstream) = e.upstream.clone() {
                forwarder.intercept_established(&key, upstream, e.session.upstream_cert());
            }
        }
        Event::UpstreamRejected { reason } => {
            c.upstream_rejected.incr();
            e.end_reason = Some("upstream_rejected");
            tracing::warn!(flow = %key, sni = e.session.sni().unwrap_or("-"), %reason, "upstream certificate rejected; the session is refused");
            forwarder.intercept_upstream_cert(&key, format!("invalid: {reason}"));
        }
        Event::ClientRejectedForgery {
            alert,
            trusted_forgery,
        } => {
            c.client_rejected_forgery.incr();
            e.end_reason = Some("client_rejected_forgery");
            if trusted_forgery {
                if let Ok(mut list) = pinned.lock() {
                    list.insert(bypass_key(), now);
                }
            }
            tracing::info!(flow = %key, sni = e.session.sni().unwrap_or("-"), ?alert, "the client rejected the forged certificate; bypassing this client, server and name for a while");
        }
        Event::ClientCertRequested => {
            c.client_cert_requested.incr();
            e.end_reason = Some("client_cert_requested");
            if let Ok(mut list) = pinned.lock() {
                list.insert(bypass_key(), now);
            }
            tracing::info!(flow = %key, sni = e.session.sni().unwrap_or("-"), "the server asks for a client certificate; bypassing this client, server and name for a while");
        }
        Event::Error { side, reason } => {
            c.tls_errors.incr();
            e.end_reason.get_or_insert("tls_error");
            tracing::debug!(flow = %key, ?side, %reason, "TLS error in an intercepted session");
        }
        _ => {}
    }
}
