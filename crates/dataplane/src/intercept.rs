//! One intercepted session: the TCP takeover ([`splice::Splice`]), the two TLS halves
//! ([`tls::pair::Interception`]) and, when a mirror is configured, the decrypted
//! conversation ([`mirror::Conversation`]), tied together without I/O.
//!
//! Frames of the real connection go in ([`InterceptSession::handle_frame`]); frames to
//! send toward either peer come out ([`InterceptSession::poll_transmit`]). In between,
//! [`InterceptSession::pump`] moves bytes: TLS bytes the client sent (starting with its
//! held ClientHello) to the client-facing TLS half, TLS bytes for the server to the
//! server-facing TCP half, and the other way round; decrypted bytes to the mirror. Every
//! buffer on the way is bounded: when one side does not drain, the other is not read
//! (and TCP's windows slow the sender down).
//!
//! A driver, per session: [`InterceptSession::new`]; for each frame
//! [`InterceptSession::handle_frame`]; then [`InterceptSession::pump`],
//! [`InterceptSession::poll_transmit`] until `None`, [`InterceptSession::poll_event`]
//! until `None`, and [`InterceptSession::drain_mirror`]; at
//! [`InterceptSession::poll_timeout`] call [`InterceptSession::handle_timeout`] and the
//! same again. Drop it once [`InterceptSession::is_finished`].

use crate::port::Port;
use splice::{HandshakeRecord, Side, Splice};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tls::pair::{Direction as TlsDirection, Event, InterceptConfig, Interception, Side as TlsSide};

/// Shared by all intercepted sessions of a worker.
#[derive(Debug, Clone)]
pub struct InterceptContext {
    pub tls: Arc<InterceptConfig>,
    pub splice: splice::Config,
    /// Decrypted sessions are re-framed for the mirror like this; `None`: no mirror.
    pub mirror: Option<mirror::ConversationOptions>,
}

/// Bytes read from one TCP half, not yet taken by its TLS half (or the reverse).
#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    start: usize,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.start >= self.buf.len()
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or_default()
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.is_empty() {
            self.buf.clear();
            self.start = 0;
        }
    }
}

/// How far a session's TCP close has gone, per real peer.
#[derive(Debug, Default, Clone, Copy)]
struct Ends {
    /// The peer's EOF was handed to TLS.
    eof_seen: bool,
    /// The other end finished: this peer gets a FIN once it has all it is owed.
    fin_due: bool,
    /// A FIN (or RST) was asked for toward this peer.
    closed: bool,
}

/// One intercepted session.
#[derive(Debug)]
pub struct InterceptSession {
    splice: Splice,
    tls: Interception,
    conversation: Option<mirror::Conversation>,
    /// The bridge port the client is behind.
    client_port: Port,
    from_client: Pending,
    from_server: Pending,
    to_client: Pending,
    to_server: Pending,
    ends: [Ends; 2],
    scratch: Vec<u8>,
    /// The session failed (an error, a refusal): both ends are reset once the last
    /// bytes (an alert to the client) are out.
    failed: bool,
    established: bool,
    events: std::collections::VecDeque<Event>,
}

/// Bytes read from a TCP half per call; bounded so one session cannot hog a pass.
const READ_CHUNK: usize = 16 * 1024;

impl InterceptSession {
    /// Takes the connection over. `syn` and `syn_ack` are the real handshake's frames,
    /// `held` the client frames that carried the ClientHello, in arrival order.
    pub fn new<F: AsRef<[u8]>>(
        now: Instant,
        wall: SystemTime,
        syn: &[u8],
        syn_ack: &[u8],
        held: &[F],
        client_port: Port,
        ctx: &InterceptContext,
    ) -> Result<Self, String> {
        let record = HandshakeRecord::from_frames(syn, syn_ack).map_err(|e| format!("handshake: {e:?}"))?;
        let server_ip: IpAddr = record.server.endpoint.ip;
        let conversation = if let Some(opts) = &ctx.mirror {
            let endpoints = mirror::Endpoints {
                client_mac: record.client.endpoint.mac,
                server_mac: record.server.endpoint.mac,
                client_ip: record.client.endpoint.ip,
                client_port: record.client.endpoint.port,
                server_ip,
                server_port: record.server.endpoint.port,
            };
            mirror::Conversation::new(endpoints, opts).ok()
        } else {
            None
        };
        let splice = Splice::new(now, &record, held, &ctx.splice).map_err(|e| format!("takeover: {e:?}"))?;
        Ok(Self {
            splice,
            tls: Interception::new(ctx.tls.clone(), Some(server_ip), wall),
            conversation,
            client_port,
            from_client: Pending::default(),
            from_server: Pending::default(),
            to_client: Pending::default(),
            to_server: Pending::default(),
            ends: [Ends::default(); 2],
            scratch: vec![0; READ_CHUNK],
            failed: false,
            established: false,
            events: Default::default(),
        })
    }

    /// A frame of the connection from bridge port `from`. Frames the takeover cannot
    /// use (foreign, malformed, a late SYN) are counted by the splice and dropped.
    pub fn handle_frame(&mut self, now: Instant, from: Port, frame: &[u8]) {
        let _ = if from == self.client_port {
            self.splice.handle_from_client(now, frame)
        } else {
            self.splice.handle_from_server(now, frame)
        };
    }

    /// Moves bytes between the TCP halves and the TLS halves until nothing moves.
    pub fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            moved |= self.feed_tls(Side::Client);
            moved |= self.feed_tls(Side::Server);
            moved |= self.feed_tcp(Side::Client);
            moved |= self.feed_tcp(Side::Server);
            self.take_events();
            self.close_when_due();
            if !moved {
                break;
            }
        }
    }

    /// TCP bytes from the peer on `side` into its TLS half, and its EOF once all is in.
    fn feed_tls(&mut self, side: Side) -> bool {
        let mut moved = false;
        loop {
            let wants = match side {
                Side::Client => self.tls.wants_client_tls(),
                Side::Server => self.tls.wants_server_tls(),
            };
            let pending = match side {
                Side::Client => &mut self.from_client,
                Side::Server => &mut self.from_server,
            };
            if pending.is_empty() {
                if !wants {
                    break;
                }
                let n = self.splice.recv(side, &mut self.scratch);
                if n == 0 {
                    break;
                }
                pending
                    .buf
                    .extend_from_slice(self.scratch.get(..n).unwrap_or_default());
                moved = true;
            }
            let taken = match side {
                Side::Client => self.tls.handle_client_tls(pending.bytes()),
                Side::Server => self.tls.handle_server_tls(pending.bytes()),
            };
            pending.consume(taken);
            if taken == 0 {
                break;
            }
            moved = true;
        }
        let st = self.splice.status(side);
        let idx = side as usize;
        let pending_empty = match side {
            Side::Client => self.from_client.is_empty(),
            Side::Server => self.from_server.is_empty(),
        };
        if let Some(ends) = self.ends.get_mut(idx) {
            if !ends.eof_seen && st.peer_closed && st.recv_queue == 0 && pending_empty {
                ends.eof_seen = true;
                match side {
                    Side::Client => self.tls.handle_client_eof(),
                    Side::Server => self.tls.handle_server_eof(),
                }
                moved = true;
            }
            if st.peer_reset && !self.failed {
                // One real peer gave up: the other is reset too, as the peer would have.
                self.failed = true;
                moved = true;
            }
        }
        moved
    }

    /// TLS bytes for the peer on `side` into its TCP half, as far as its buffer takes.
    fn feed_tcp(&mut self, side: Side) -> bool {
        let mut moved = false;
        loop {
            let pending = match side {
                Side::Client => &mut self.to_client,
                Side::Server => &mut self.to_server,
            };
            if pending.is_empty() {
                let n = match side {
                    Side::Client => self.tls.poll_client_tls(&mut pending.buf),
                    Side::Server => self.tls.poll_server_tls(&mut pending.buf),
                };
                if n == 0 {
                    break;
                }
            }
            let sent = self.splice.send(side, pending.bytes());
            pending.consume(sent);
            if sent == 0 {
                break;
            }
            moved = true;
        }
        moved
    }

    fn take_events(&mut self) {
        while let Some(ev) = self.tls.poll_event() {
            match &ev {
                Event::Established { .. } => self.established = true,
                // One end finished sending (its close_notify, if any, is relayed by TLS
                // itself): the other end gets a FIN once what it is owed is out.
                Event::Closed { by, .. } => {
                    let toward = match by {
                        TlsSide::Client => Side::Server,
                        TlsSide::Server => Side::Client,
                    };
                    if let Some(e) = self.ends.get_mut(toward as usize) {
                        e.fin_due = true;
                    }
                }
                Event::Error { .. } => self.failed = true,
                _ => {}
            }
            self.events.push_back(ev);
        }
    }

    /// FINs (or, after a failure, RSTs) toward the peers once all they are owed has been
    /// handed to TCP; when TLS is over, both ends close; when one peer reset, the other
    /// is reset.
    fn close_when_due(&mut self) {
        let over = self.tls.is_done() || self.failed;
        // A peer that reset the connection gets nothing more, and the other is reset in
        // its name at once: left open, it would retransmit into a session that is gone
        // (and its frames, dropped as late, would keep the ports blocked for a new one).
        let reset = [Side::Client, Side::Server]
            .into_iter()
            .any(|side| self.splice.status(side).peer_reset);
        for side in [Side::Client, Side::Server] {
            let owed = match side {
                Side::Client => !self.to_client.is_empty(),
                Side::Server => !self.to_server.is_empty(),
            };
            let Some(e) = self.ends.get_mut(side as usize) else {
                continue;
            };
            if e.closed || (!reset && (owed || !(over || e.fin_due))) {
                continue;
            }
            e.closed = true;
            if self.failed || reset {
                self.splice.abort(side);
            } else {
                self.splice.close(side);
            }
        }
    }

    /// The next frame to send: written into `buf`, toward the returned port.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut [u8]) -> Option<(Port, usize)> {
        let t = self.splice.poll_transmit(now, buf)?;
        let to = match t.toward {
            Side::Client => self.client_port,
            Side::Server => self.client_port.peer(),
        };
        Some((to, t.len))
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        self.splice.poll_timeout()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        self.splice.handle_timeout(now);
    }

    /// What the TLS halves reported (for the log, the bypass list, the counters).
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Decrypted bytes re-framed for the mirror, handed to `sender` (or discarded when no
    /// mirror is configured). `at` stamps them.
    pub fn drain_mirror(&mut self, at: Duration, sender: Option<&mut mirror::FanoutSender>) {
        let conversation = &mut self.conversation;
        self.tls.drain_plaintext(|dir, bytes| {
            if let Some(conv) = conversation.as_mut() {
                let dir = match dir {
                    TlsDirection::ClientToServer => mirror::Direction::ClientToServer,
                    TlsDirection::ServerToClient => mirror::Direction::ServerToClient,
                };
                let _ = conv.push(at, dir, bytes);
            }
        });
        self.finish_conversation(at);
        match (self.conversation.as_mut(), sender) {
            (Some(conv), Some(sender)) => {
                sender.drain(conv);
            }
            // Nothing to hand the frames to: stop re-framing rather than let them pile up.
            (Some(_), None) => self.conversation = None,
            _ => {}
        }
    }

    /// The mirror's conversation ends as the real one did.
    fn finish_conversation(&mut self, at: Duration) {
        let Some(conv) = self.conversation.as_mut() else {
            return;
        };
        if conv.is_closed() {
            return;
        }
        let client_done = self.splice.status(Side::Client).closed;
        let server_done = self.splice.status(Side::Server).closed;
        if self.failed && (client_done || server_done) {
            conv.abort(at, mirror::Direction::ServerToClient);
        } else if client_done && server_done && self.established {
            conv.close_normal(at, mirror::Direction::ClientToServer);
        }
    }

    /// The session completed its TLS handshake toward the client (plaintext flowed).
    pub fn established(&self) -> bool {
        self.established
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The upstream certificate's verdict, once checked: `valid`, or `invalid: REASON`.
    pub fn upstream_cert(&self) -> Option<String> {
        let verdict = self.tls.upstream_record()?.verdict()?;
        Some(match verdict {
            tls::upstream::Verdict::Trusted => "valid".into(),
            tls::upstream::Verdict::Rejected(reason) => format!("invalid: {reason}"),
        })
    }

    pub fn sni(&self) -> Option<&str> {
        self.tls.sni()
    }

    /// Nothing more will happen: both halves closed and all frames out.
    pub fn is_finished(&self) -> bool {
        self.splice.is_finished()
    }

    /// Which real peer reset the connection, if one did.
    pub fn reset_by(&self) -> Option<&'static str> {
        if self.splice.status(Side::Client).peer_reset {
            Some("rst_from_client")
        } else if self.splice.status(Side::Server).peer_reset {
            Some("rst_from_server")
        } else {
            None
        }
    }

    /// The idle timer ended it.
    pub fn idle_expired(&self) -> bool {
        self.splice.idle_expired()
    }

    pub fn client_port(&self) -> Port {
        self.client_port
    }
}
