//! Syslog messages (RFC 5424) and their framing on a TLS stream (RFC 5425).

use crate::record::SessionRecord;
use crate::time::Rfc3339Millis;
use std::io::Write;

/// RFC 5424 section 6.2.1: facility local0.
const FACILITY_LOCAL0: u8 = 16;
/// RFC 5424 section 6.2.1: severities.
const SEVERITY_WARNING: u8 = 4;
const SEVERITY_INFO: u8 = 6;

/// The parts of the header that are the same in every message of this process.
#[derive(Debug, Clone)]
pub(crate) struct Header {
    hostname: String,
    app_name: String,
    procid: String,
}

impl Header {
    /// Each field is cut to the length RFC 5424 section 6 allows and restricted to
    /// PRINTUSASCII, so the header always parses; an empty one becomes the NILVALUE `-`.
    pub(crate) fn new(hostname: &str, app_name: &str, procid: u32) -> Header {
        Header {
            hostname: header_field(hostname, 255),
            app_name: header_field(app_name, 48),
            procid: header_field(&procid.to_string(), 128),
        }
    }
}

fn header_field(s: &str, max: usize) -> String {
    let v: String = s.chars().filter(|c| c.is_ascii_graphic()).take(max).collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// Appends to `out` one octet-counted frame (RFC 5425 section 4.3: `MSG-LEN SP
/// SYSLOG-MSG`) whose message is `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID -
/// MSG` (RFC 5424 section 6): MSGID is the event name, there is no structured data, and
/// MSG is the record's JSON, without a BOM (it is MSG-ANY, though always UTF-8).
pub(crate) fn encode_frame(out: &mut Vec<u8>, header: &Header, rec: &SessionRecord, json: &[u8]) {
    let severity = if rec.event.is_abnormal() {
        SEVERITY_WARNING
    } else {
        SEVERITY_INFO
    };
    let pri = u16::from(FACILITY_LOCAL0) * 8 + u16::from(severity);
    let mut msg = Vec::with_capacity(json.len() + 128);
    // Writes into a Vec cannot fail.
    let _ = write!(
        msg,
        "<{pri}>1 {} {} {} {} {} - ",
        Rfc3339Millis(rec.time),
        header.hostname,
        header.app_name,
        header.procid,
        rec.event.as_str()
    );
    msg.extend_from_slice(json);
    let _ = write!(out, "{} ", msg.len());
    out.extend_from_slice(&msg);
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame length: {0}")]
    BadLength(&'static str),
}

/// Reads the frame at the start of `buf`: `Ok(Some(total frame length))`, `Ok(None)` when
/// `buf` holds only part of it, or an error when `buf` does not start with a frame.
pub(crate) fn frame_len(buf: &[u8]) -> Result<Option<usize>, FrameError> {
    // MSG-LEN is NONZERO-DIGIT *DIGIT; ten digits are more than any frame we write.
    let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return match buf.first() {
            None => Ok(None),
            Some(_) => Err(FrameError::BadLength("does not start with a digit")),
        };
    }
    if digits > 10 {
        return Err(FrameError::BadLength("more than ten digits"));
    }
    if buf.first() == Some(&b'0') {
        return Err(FrameError::BadLength("leading zero"));
    }
    match buf.get(digits) {
        None => return Ok(None),
        Some(b' ') => {}
        Some(_) => return Err(FrameError::BadLength("not followed by a space")),
    }
    let len: usize = buf
        .get(..digits)
        .and_then(|d| std::str::from_utf8(d).ok())
        .and_then(|d| d.parse().ok())
        .ok_or(FrameError::BadLength("not a number"))?;
    let total = digits + 1 + len;
    Ok((buf.len() >= total).then_some(total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::record;
    use crate::record::EventKind;

    #[test]
    fn message_and_frame() {
        let h = Header::new("bridge-1", "glasswire", 4242);
        let r = record(0xdead_beef, EventKind::Start);
        let json = r.to_json();
        let mut out = Vec::new();
        encode_frame(&mut out, &h, &r, &json);
        let text = String::from_utf8(out.clone()).unwrap();
        let (len, msg) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), msg.len());
        assert_eq!(
            msg,
            format!(
                "<134>1 2026-11-23T12:00:00.123Z bridge-1 glasswire 4242 start - {}",
                String::from_utf8(json).unwrap()
            )
        );
        assert_eq!(frame_len(&out), Ok(Some(out.len())));
        assert_eq!(frame_len(&out[..out.len() - 1]), Ok(None));
        assert_eq!(frame_len(&out[..2]), Ok(None));
    }

    #[test]
    fn abnormal_events_are_warnings() {
        let h = Header::new("h", "a", 1);
        for (kind, pri) in [
            (EventKind::StartAbnormal, "<132>1 "),
            (EventKind::EndAbnormal, "<132>1 "),
            (EventKind::EndIdle, "<134>1 "),
        ] {
            let r = record(1, kind);
            let mut out = Vec::new();
            encode_frame(&mut out, &h, &r, b"{}");
            let text = String::from_utf8(out).unwrap();
            assert!(text.split_once(' ').unwrap().1.starts_with(pri), "{text}");
        }
    }

    #[test]
    fn header_fields_are_sanitised() {
        let h = Header::new("my host\u{e9}", "", 7);
        assert_eq!(h.hostname, "myhost");
        assert_eq!(h.app_name, "-");
        let long = "x".repeat(100);
        assert_eq!(Header::new(&long, &long, 1).app_name.len(), 48);
    }

    #[test]
    fn frame_len_rejects_garbage() {
        assert!(frame_len(b"x12 ab").is_err());
        assert!(frame_len(b"012 ab").is_err());
        assert!(frame_len(b"12xab").is_err());
        assert!(frame_len(b"12345678901 a").is_err());
        assert_eq!(frame_len(b""), Ok(None));
        assert_eq!(frame_len(b"3 abcde"), Ok(Some(5)));
    }
}
