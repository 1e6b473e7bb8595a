//! The session record: one event in the life of one session, as it is written to every
//! sink. The JSON shape is the contract with the log server (docs/sessionlog.md); the
//! tests below pin it field by field.

use crate::time::Rfc3339Millis;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::net::SocketAddr;
use std::time::SystemTime;

/// Identifies a session; every record of a session carries it. Serialised as 16
/// lowercase hex digits (`"00000000deadbeef"`), so that log servers that read JSON numbers
/// as doubles cannot round it.
pub type SessionId = u64;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A session was opened with a handshake the bridge saw (SYN, SYN-ACK).
    Start,
    /// A session ended with FIN in both directions.
    EndNormal,
    /// A session was forgotten after it was idle too long.
    EndIdle,
    /// Traffic for a session whose start the bridge did not see (for example it began
    /// before the bridge did); `reason` says why it is abnormal.
    StartAbnormal,
    /// A session ended any other way (RST, data after close); `reason` says how.
    EndAbnormal,
    /// Traffic counts of one interval of a session that is still open.
    Volume,
}

impl EventKind {
    /// The name used in JSON and as the syslog MSGID.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Start => "start",
            EventKind::EndNormal => "end_normal",
            EventKind::EndIdle => "end_idle",
            EventKind::StartAbnormal => "start_abnormal",
            EventKind::EndAbnormal => "end_abnormal",
            EventKind::Volume => "volume",
        }
    }

    /// Whether the event is one of the `*_abnormal` ones (logged with severity warning).
    pub const fn is_abnormal(self) -> bool {
        matches!(self, EventKind::StartAbnormal | EventKind::EndAbnormal)
    }
}

/// One of the bridge's two ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    A,
    B,
}

/// One event of one session. See docs/sessionlog.md for the meaning of each field and a
/// JSON example of each event.
#[derive(Debug, Clone, Serialize)]
pub struct SessionRecord {
    #[serde(serialize_with = "ser_session_id")]
    pub session_id: SessionId,
    /// When the event happened; `"2026-11-23T12:00:00.123Z"`.
    #[serde(serialize_with = "ser_time")]
    pub time: SystemTime,
    pub event: EventKind,
    /// `"tcp"`.
    pub proto: &'static str,
    /// The side that opened the session (sent the SYN); for `start_abnormal` the side that
    /// sent the first payload the bridge saw. Written as `client_ip`, `client_port`.
    #[serde(flatten, serialize_with = "ser_client")]
    pub client: SocketAddr,
    /// Written as `server_ip`, `server_port`.
    #[serde(flatten, serialize_with = "ser_server")]
    pub server: SocketAddr,
    /// Behind which bridge port the client is.
    pub opened_from: Port,
    /// `"bypass"`, `"block"`, `"intercept"` or `"pass"`; absent before it is decided.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
    /// The rule that decided the verdict.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSummary>,
    /// On `volume` events the interval's counts; on `end_*` events the session's totals.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<Volume>,
    /// A short machine word for `*_abnormal` events: `rst_from_client`,
    /// `rst_from_server`, `rst`, `after_close`, `blocked`, `kernel_map_full`,
    /// `bridge_stopped`, `midstream` (docs/sessionlog.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SessionRecord {
    /// A TCP record with only the required fields set; fill in the rest as known.
    pub fn new(
        session_id: SessionId,
        time: SystemTime,
        event: EventKind,
        client: SocketAddr,
        server: SocketAddr,
        opened_from: Port,
    ) -> Self {
        SessionRecord {
            session_id,
            time,
            event,
            proto: "tcp",
            client,
            server,
            opened_from,
            verdict: None,
            rule: None,
            tls: None,
            volume: None,
            reason: None,
        }
    }

    /// The record as one line of JSON, without the newline.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising this type into a Vec cannot fail: every field is a string, number or
        // plain struct, and a Vec's writes do not fail. Should that ever change, an empty
        // object is still a valid line rather than a panic in the logger thread.
        serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec())
    }
}

/// What the bridge saw of a session's TLS handshake.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSummary {
    /// Server Name Indication from the ClientHello.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sni: Option<String>,
    /// The version in the record layer of the ClientHello, e.g. `"TLS1.0"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_version: Option<String>,
    /// Versions the client offered (supported_versions, or the legacy version).
    pub offered_versions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negotiated_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher_suite: Option<String>,
    pub alpn_offered: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alpn_chosen: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ja4: Option<String>,
    /// The verdict on the upstream server's certificate, when the bridge checked it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_cert: Option<String>,
}

/// Packets and bytes in each direction over an interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Volume {
    #[serde(serialize_with = "ser_time")]
    pub interval_start: SystemTime,
    #[serde(serialize_with = "ser_time")]
    pub interval_end: SystemTime,
    pub packets_c2s: u64,
    pub bytes_c2s: u64,
    pub packets_s2c: u64,
    pub bytes_s2c: u64,
}

fn ser_session_id<S: Serializer>(id: &SessionId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("{id:016x}"))
}

fn ser_time<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&Rfc3339Millis(*t))
}

fn ser_endpoint<S: Serializer>(
    addr: &SocketAddr,
    s: S,
    ip_key: &'static str,
    port_key: &'static str,
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(2))?;
    m.serialize_entry(ip_key, &addr.ip())?;
    m.serialize_entry(port_key, &addr.port())?;
    m.end()
}

fn ser_client<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    ser_endpoint(addr, s, "client_ip", "client_port")
}

fn ser_server<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
    ser_endpoint(addr, s, "server_ip", "server_port")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// 2026-11-23T12:00:00.123Z
    pub(crate) fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_795_435_200_123)
    }

    pub(crate) fn record(id: SessionId, event: EventKind) -> SessionRecord {
        SessionRecord::new(
            id,
            t0(),
            event,
            "192.0.2.10:51514".parse().unwrap(),
            "198.51.100.7:443".parse().unwrap(),
            Port::A,
        )
    }

    fn tls() -> TlsSummary {
        TlsSummary {
            sni: Some("example.com".into()),
            record_version: Some("TLS1.0".into()),
            offered_versions: vec!["TLS1.3".into(), "TLS1.2".into()],
            negotiated_version: Some("TLS1.3".into()),
            cipher_suite: Some("TLS_AES_128_GCM_SHA256".into()),
            alpn_offered: vec!["h2".into(), "http/1.1".into()],
            alpn_chosen: Some("h2".into()),
            ja4: Some("t13d1516h2_8daaf6152771_02713d6af862".into()),
            upstream_cert: Some("valid".into()),
        }
    }

    fn volume(start_ms: u64, end_ms: u64) -> Volume {
        Volume {
            interval_start: t0() + Duration::from_millis(start_ms),
            interval_end: t0() + Duration::from_millis(end_ms),
            packets_c2s: 12,
            bytes_c2s: 1834,
            packets_s2c: 20,
            bytes_s2c: 24_310,
        }
    }

    fn json(r: &SessionRecord) -> String {
        String::from_utf8(r.to_json()).unwrap()
    }

    const HEAD: &str = r#""session_id":"00000000deadbeef","time":"2026-11-23T12:00:00.123Z""#;
    const ENDS: &str = r#""proto":"tcp","client_ip":"192.0.2.10","client_port":51514,"server_ip":"198.51.100.7","server_port":443,"opened_from":"a""#;
    const TLS: &str = r#""tls":{"sni":"example.com","record_version":"TLS1.0","offered_versions":["TLS1.3","TLS1.2"],"negotiated_version":"TLS1.3","cipher_suite":"TLS_AES_128_GCM_SHA256","alpn_offered":["h2","http/1.1"],"alpn_chosen":"h2","ja4":"t13d1516h2_8daaf6152771_02713d6af862","upstream_cert":"valid"}"#;

    #[test]
    fn start_with_verdict_and_tls() {
        let mut r = record(0xdead_beef, EventKind::Start);
        r.verdict = Some("intercept".into());
        r.rule = Some("inspect-all".into());
        r.tls = Some(tls());
        assert_eq!(
            json(&r),
            format!(r#"{{{HEAD},"event":"start",{ENDS},"verdict":"intercept","rule":"inspect-all",{TLS}}}"#)
        );
    }

    #[test]
    fn start_before_verdict_has_no_optional_fields() {
        let r = record(0xdead_beef, EventKind::Start);
        assert_eq!(json(&r), format!(r#"{{{HEAD},"event":"start",{ENDS}}}"#));
    }

    #[test]
    fn volume_event() {
        let mut r = record(0xdead_beef, EventKind::Volume);
        r.verdict = Some("pass".into());
        r.volume = Some(volume(0, 60_000));
        assert_eq!(
            json(&r),
            format!(
                r#"{{{HEAD},"event":"volume",{ENDS},"verdict":"pass","volume":{{"interval_start":"2026-11-23T12:00:00.123Z","interval_end":"2026-11-23T12:01:00.123Z","packets_c2s":12,"bytes_c2s":1834,"packets_s2c":20,"bytes_s2c":24310}}}}"#
            )
        );
    }

    #[test]
    fn end_events_carry_totals_and_reasons() {
        for (kind, name) in [
            (EventKind::EndNormal, "end_normal"),
            (EventKind::EndIdle, "end_idle"),
        ] {
            let mut r = record(1, kind);
            r.volume = Some(volume(0, 1));
            let j = json(&r);
            assert!(j.contains(&format!(r#""event":"{name}""#)), "{j}");
            assert!(j.starts_with(r#"{"session_id":"0000000000000001","#), "{j}");
            assert!(j.contains(r#""volume":{"interval_start""#), "{j}");
            assert!(!j.contains("reason"), "{j}");
        }
        let mut r = record(u64::MAX, EventKind::EndAbnormal);
        r.reason = Some("rst_from_server".into());
        r.volume = Some(volume(0, 1));
        let j = json(&r);
        assert!(j.starts_with(r#"{"session_id":"ffffffffffffffff","#), "{j}");
        assert!(j.contains(r#""event":"end_abnormal""#), "{j}");
        assert!(j.ends_with(r#""reason":"rst_from_server"}"#), "{j}");
    }

    #[test]
    fn start_abnormal_with_ipv6_and_port_b() {
        let mut r = SessionRecord::new(
            0x10,
            t0(),
            EventKind::StartAbnormal,
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::2]:443".parse().unwrap(),
            Port::B,
        );
        r.reason = Some("midstream".into());
        assert_eq!(
            json(&r),
            r#"{"session_id":"0000000000000010","time":"2026-11-23T12:00:00.123Z","event":"start_abnormal","proto":"tcp","client_ip":"2001:db8::1","client_port":40000,"server_ip":"2001:db8::2","server_port":443,"opened_from":"b","reason":"midstream"}"#
        );
    }

    #[test]
    fn event_names_match_serde() {
        for k in [
            EventKind::Start,
            EventKind::EndNormal,
            EventKind::EndIdle,
            EventKind::StartAbnormal,
            EventKind::EndAbnormal,
            EventKind::Volume,
        ] {
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::from(k.as_str())
            );
        }
        assert!(EventKind::StartAbnormal.is_abnormal());
        assert!(!EventKind::EndIdle.is_abnormal());
    }
}
