//! Counters of one worker, declared once here with what they count.

use telemetry::{counter_set, Counter};
use wire::ParseError;

counter_set! {
    /// What one worker did on one port (frames received from that port's socket and
    /// transmitted out of it).
    pub struct PortStats {
        /// frames received from this port's AF_XDP socket
        rx_frames,
        /// bytes of those frames
        rx_bytes,
        /// frames transmitted out of this port
        tx_frames,
        /// bytes of those frames
        tx_bytes,
        /// frames from this port dropped because the other port's TX ring was full
        drop_tx_ring_full,
        /// frames built for this port (TCP resets) dropped for want of a free buffer
        drop_no_buffer,
        /// frames from this port dropped because they could not be parsed (see parse_drops)
        drop_malformed,
        /// frames the kernel dropped on this port's AF_XDP socket for want of a fill buffer (or too large for one), from XDP_STATISTICS rx_dropped
        xsk_rx_dropped,
        /// frames the kernel dropped because this socket's RX ring was full (the worker fell behind), from XDP_STATISTICS rx_ring_full
        xsk_rx_ring_full,
        /// times the kernel found this socket's fill ring empty, from XDP_STATISTICS
        xsk_fill_ring_empty,
        /// TX descriptors the kernel rejected as invalid, from XDP_STATISTICS
        xsk_tx_invalid,
        /// 1 if this port's AF_XDP socket runs in zero-copy mode, 0 in copy mode (the driver decides; copy mode costs the worker a copy per frame each way) (gauge)
        xsk_zero_copy,
    }
}

counter_set! {
    /// What one worker did, beyond per-port frame counts.
    pub struct WorkerCounters {
        /// TCP flows whose bypass verdict this worker wrote to the kernel's flow map
        bypass_verdicts,
        /// TCP flows whose block verdict this worker wrote to the kernel's flow map
        block_verdicts,
        /// verdict map writes the kernel refused
        verdict_write_errors,
        /// times the worker slept in poll(2) because all its rings were idle
        idle_polls,
        /// TX wakeups (sendto) issued to push frames out in copy mode
        tx_wakeups,
        /// session events the session log could not take (its queue was full)
        session_events_dropped,
        /// sessions handed to the kernel whose handoff the sweeper could not take (queue full): their end goes unrecorded
        session_handoffs_dropped,
    }
}

counter_set! {
    /// One worker's flow table: how flows came, were classified, decided and left.
    pub struct FlowCounters {
        /// flows in the table now (gauge)
        tracked,
        /// flows that entered the table at their SYN
        started,
        /// flows that entered the table at a payload with no handshake seen (mid-stream)
        midstream,
        /// new flows forwarded untracked because the table was full (never classified)
        flow_table_full,
        /// flows whose first client bytes were a whole TLS (or SSL) ClientHello
        tls_hellos,
        /// flows passed through because their first payload was not TLS (or came from the server)
        not_tls,
        /// flows whose hello could not be read (malformed, over budget, too slow): policy `unclassified`
        unclassified,
        /// bypassed TLS flows whose ServerHello was read (version and cipher suite for the session log)
        server_hellos,
        /// bypassed TLS flows whose server's first payload was not a whole ServerHello (logged without those fields)
        server_hello_unreadable,
        /// bypassed TLS flows whose server sent nothing within 3 s of the decision (verdict written without waiting more)
        server_hello_timeouts,
        /// plaintext flows (mirror_plaintext) whose frames before the decision exceeded the 8 KiB copied for the mirror: the mirror lacks some of them
        mirror_precapture_truncated,
        /// flows decided bypass (let through; in the kernel when the fast path is on)
        decided_bypass,
        /// flows decided block (reset both ways, dropped)
        decided_block,
        /// flows decided intercept (taken over by an interception session)
        decided_intercept,
        /// intercept decisions passed through because interception is not configured
        intercept_unavailable,
        /// intercept decisions passed through because the flow's handshake was not seen (mid-stream)
        intercept_no_handshake,
        /// intercept decisions passed through because the client rejected a forgery for the same client, server and SNI recently (pinning)
        intercept_bypassed_pinned,
        /// frames of an intercepted flow after its session ended, dropped
        intercept_late_frames,
        /// SYNs that opened a new connection on the ports of an intercepted session that had ended (tracked as a new flow)
        intercept_reopened,
        /// SYNs that opened a new connection on the ports of a passed (bypassed) or blocked flow: the old session ended, the new one is classified
        reopened,
        /// client frames held now while their flow's hello is read (gauge)
        frames_held,
        /// flows that hit the per-flow or total limit of held frames (treated as unclassified)
        held_limit,
        /// TCP resets sent (two per blocked flow; one per data or FIN segment a peer sends into an interception session that has ended)
        resets_sent,
        /// resets that could not be built from the flow's frames
        reset_build_errors,
        /// frames of blocked flows dropped in userspace
        dropped_blocked,
        /// flows removed from the table because either end sent RST
        closed_by_rst,
        /// flows removed after their time in the table ran out (handshake, idle, decided)
        evicted_idle,
        /// flows removed after both ends sent FIN
        evicted_closed,
    }
}

counter_set! {
    /// One worker's intercepted sessions.
    pub struct InterceptCounters {
        /// sessions taken over (an intercept decision with its handshake seen)
        sessions,
        /// intercepted sessions now (gauge)
        active,
        /// sessions whose client accepted the forged certificate (plaintext flowed)
        established,
        /// sessions refused because the upstream certificate failed verification
        upstream_rejected,
        /// sessions whose client rejected the forged certificate (pinning, or it does not trust the inspection CA); put on the bypass list
        client_rejected_forgery,
        /// sessions refused because the server asked for a client certificate; put on the bypass list
        client_cert_requested,
        /// sessions that ended with a TLS error on either side
        tls_errors,
        /// takeovers that could not be set up (the flow was passed on instead)
        setup_errors,
        /// frames of intercepted flows handed to their sessions
        frames_in,
        /// frames the sessions sent toward the real peers
        frames_out,
        /// frames a session wanted to send but no buffer was free (TCP retransmits them)
        drop_no_buffer,
    }
}

/// Everything one worker counts; shared with the stats socket.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub ports: [PortStats; 2],
    /// Frames dropped as unparseable, per port, per [`ParseError`] (indexed by
    /// [`ParseError::index`]).
    pub parse_drops: [[Counter; ParseError::ALL.len()]; 2],
    pub worker: WorkerCounters,
    pub flows: FlowCounters,
    pub intercept: InterceptCounters,
}

impl WorkerStats {
    pub fn snapshot(&self, names: &[String; 2]) -> serde_json::Value {
        let mut ports = serde_json::Map::new();
        for (i, (name, p)) in names.iter().zip(&self.ports).enumerate() {
            let mut m = p.snapshot();
            let mut drops = serde_json::Map::new();
            if let Some(row) = self.parse_drops.get(i) {
                for (reason, c) in ParseError::ALL.iter().zip(row) {
                    drops.insert(reason.reason().to_string(), c.get().into());
                }
            }
            m.insert("parse_drops".into(), drops.into());
            ports.insert(name.clone(), m.into());
        }
        let mut out = self.worker.snapshot();
        out.insert("ports".into(), ports.into());
        out.insert("flows".into(), self.flows.snapshot().into());
        out.insert("intercept".into(), self.intercept.snapshot().into());
        out.into()
    }
}
