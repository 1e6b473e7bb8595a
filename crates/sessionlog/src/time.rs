//! Wall-clock formatting (RFC 3339, UTC, milliseconds) and the duration syntax of the
//! configuration. Both are small enough to keep here rather than pull in a date crate;
//! neither can panic, whatever the clock says.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The last second RFC 3339's four-digit year can name: 9999-12-31T23:59:59Z.
const MAX_SECS: u64 = 253_402_300_799;

/// Formats `t` as RFC 3339 in UTC with milliseconds, `2026-11-23T12:00:00.123Z`.
///
/// Sub-millisecond digits are truncated, not rounded, so a record is never stamped later
/// than it happened. A time before 1970 is written as the epoch and one past year 9999 as
/// its last millisecond: a log line with a clamped stamp is better than a logger that dies.
pub fn format_rfc3339_millis(t: SystemTime) -> String {
    Rfc3339Millis(t).to_string()
}

/// [`format_rfc3339_millis`] as a `Display`, to write without an intermediate `String`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rfc3339Millis(pub SystemTime);

impl fmt::Display for Rfc3339Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (secs, millis) = match self.0.duration_since(UNIX_EPOCH) {
            Ok(d) if d.as_secs() > MAX_SECS => (MAX_SECS, 999),
            Ok(d) => (d.as_secs(), d.subsec_millis()),
            Err(_) => (0, 0),
        };
        let (year, month, day) = civil_from_days(secs / 86_400);
        let rem = secs % 86_400;
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            rem / 3600,
            rem % 3600 / 60,
            rem % 60
        )
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day); Howard Hinnant's
/// `civil_from_days`, restricted to non-negative day counts.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// A compact form of `t` for file names: `20261123T120000.123Z`.
pub(crate) fn file_stamp(t: SystemTime) -> String {
    let s = format_rfc3339_millis(t);
    s.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Parses the configuration's duration syntax: a whole number with a unit (`500ms`,
/// `30s`, `5m`, `1h`, `1d`), or a bare number of seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (examples: 500ms, 30s, 5m, 1h)"))?;
    let per_unit_ms: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("{s:?}: unknown unit {other:?} (use ms, s, m, h or d)")),
    };
    n.checked_mul(per_unit_ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is too long"))
}

/// `#[serde(with = "crate::time::duration")]`: a duration as a string in the syntax of
/// [`parse_duration`] or as a number of seconds.
pub(crate) mod duration {
    use serde::de::{self, Deserializer, Visitor};
    use std::fmt;
    use std::time::Duration;

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Duration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"500ms\", \"30s\", \"1h\", or a number of seconds")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                Ok(Duration::from_secs(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                u64::try_from(v)
                    .map(Duration::from_secs)
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                super::parse_duration(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_millis(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_millis(at(1_700_000_000, 123)),
            "2023-11-14T22:13:20.123Z"
        );
        // A leap day, and the turn of a century that is a leap year.
        assert_eq!(
            format_rfc3339_millis(at(951_782_400, 5)),
            "2000-02-29T00:00:00.005Z"
        );
        assert_eq!(
            format_rfc3339_millis(at(1_795_435_200, 999)),
            "2026-11-23T12:00:00.999Z"
        );
    }

    #[test]
    fn truncates_sub_millisecond_digits() {
        let t = at(1_700_000_000, 0) + Duration::from_micros(123_999);
        assert_eq!(format_rfc3339_millis(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn clamps_out_of_range_times() {
        let before = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(format_rfc3339_millis(before), "1970-01-01T00:00:00.000Z");
        let after = at(MAX_SECS + 100, 0);
        assert_eq!(format_rfc3339_millis(after), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn file_stamp_has_no_colons() {
        assert_eq!(file_stamp(at(1_700_000_000, 7)), "20231114T221320.007Z");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
    }
}
