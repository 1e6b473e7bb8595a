//! The session log: the data path's session events become `sessionlog` records.

use classify::ProtocolVersion;
use dataplane::{Port, SessionEvent, SessionEventKind};
use sessionlog::{EventKind, LogSender, SessionRecord, TlsSummary, Volume};
use std::time::{Instant, SystemTime};

/// Turns the data path's monotonic instants into wall-clock times: both clocks are read
/// once at start, and every event is placed relative to that moment.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            instant: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    pub fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.instant) {
            Some(d) => self.wall + d,
            None => self.wall - self.instant.duration_since(at),
        }
    }
}

fn version_name(v: ProtocolVersion) -> String {
    match v {
        ProtocolVersion::SSL2 => "SSL2".into(),
        ProtocolVersion::SSL3 => "SSL3".into(),
        ProtocolVersion::TLS1_0 => "TLS1.0".into(),
        ProtocolVersion::TLS1_1 => "TLS1.1".into(),
        ProtocolVersion::TLS1_2 => "TLS1.2".into(),
        ProtocolVersion::TLS1_3 => "TLS1.3".into(),
        ProtocolVersion(other) => format!("0x{other:04x}"),
    }
}

pub fn to_record(ev: &SessionEvent, clock: &Clock) -> SessionRecord {
    let s = &ev.session;
    let kind = match ev.kind {
        SessionEventKind::Start => EventKind::Start,
        SessionEventKind::StartAbnormal => EventKind::StartAbnormal,
        SessionEventKind::EndNormal => EventKind::EndNormal,
        SessionEventKind::EndIdle => EventKind::EndIdle,
        SessionEventKind::EndAbnormal => EventKind::EndAbnormal,
        SessionEventKind::Volume => EventKind::Volume,
    };
    let opened_from = match s.opened_from {
        Port::A => sessionlog::Port::A,
        Port::B => sessionlog::Port::B,
    };
    let mut rec = SessionRecord::new(s.id, clock.wall(ev.at), kind, s.client, s.server, opened_from);
    rec.verdict = s.verdict.map(str::to_string);
    rec.rule = s.rule.clone();
    rec.reason = ev.reason.map(str::to_string);
    rec.tls = s.hello.as_ref().map(|h| TlsSummary {
        sni: h.sni.clone(),
        record_version: h.record_version.map(version_name),
        offered_versions: if h.offered_versions.is_empty() {
            vec![version_name(h.legacy_version)]
        } else {
            h.offered_versions.iter().copied().map(version_name).collect()
        },
        alpn_offered: h
            .alpn
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
        ja4: Some(h.ja4.clone()),
        negotiated_version: s.server_hello.as_ref().map(|sh| version_name(sh.version)),
        cipher_suite: s.server_hello.as_ref().map(|sh| {
            classify::cipher_suite_name(sh.cipher_suite)
                .map(str::to_string)
                .unwrap_or_else(|| format!("0x{:04x}", sh.cipher_suite))
        }),
        alpn_chosen: s.server_hello.as_ref().and_then(|sh| sh.alpn.clone()),
        upstream_cert: s.upstream_cert.clone(),
    });
    rec.volume = ev.volume.map(|v| Volume {
        interval_start: clock.wall(v.since),
        interval_end: clock.wall(v.until),
        packets_c2s: v.packets[0],
        bytes_c2s: v.bytes[0],
        packets_s2c: v.packets[1],
        bytes_s2c: v.bytes[1],
    });
    rec
}

/// An event sink for the workers and the sweeper: converts and hands to the logger,
/// never waiting.
pub fn sink(sender: LogSender, clock: Clock) -> dataplane::EventSink {
    std::sync::Arc::new(move |ev: SessionEvent| sender.send(to_record(&ev, &clock)))
}
