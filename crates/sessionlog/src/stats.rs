//! The logger's counters, each declared once with its description: the getters, the JSON
//! snapshot, `LogStats::FIELDS` (for `--describe` and the docs' table) come from this one
//! list. Unlike the data path's single-writer counters these are shared by every clone of
//! `LogSender`, so they are atomic read-modify-writes.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! log_stats {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[doc = $doc:literal])+ $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl $name {
            /// Each counter's name and what it counts.
            pub const FIELDS: &'static [(&'static str, &'static str)] =
                &[$((stringify!($field), concat!($($doc),+)),)*];

            $($(#[doc = $doc])+
            pub fn $field(&self) -> u64 {
                self.$field.load(Ordering::Relaxed)
            })*

            /// All counters as one JSON object, `{"records_in": 12, ...}`.
            pub fn snapshot(&self) -> serde_json::Value {
                let mut m = serde_json::Map::new();
                $(m.insert(stringify!($field).to_string(), self.$field().into());)*
                serde_json::Value::Object(m)
            }
        }
    };
}

log_stats! {
    /// Counters of the logger; read them with the getters or [`LogStats::snapshot`].
    pub struct LogStats {
        /// records accepted by LogSender::send into the logger's channel
        records_in,
        /// records refused by LogSender::send because the channel was full (the data path never waits)
        records_dropped_channel_full,
        /// records refused by LogSender::send because the logger had shut down
        records_dropped_shutdown,
        /// records written to a JSON Lines file (handed to the kernel with write(2))
        jsonl_written,
        /// JSON Lines files closed because of their size or age
        jsonl_rotations,
        /// failed JSON Lines file operations (open, write, fsync)
        jsonl_errors,
        /// records lost for the JSON Lines sink because a file operation failed
        jsonl_dropped,
        /// records appended to the syslog spool
        syslog_spooled,
        /// bytes of the syslog spool's files on disk (a gauge)
        syslog_spool_bytes,
        /// records not spooled (so never sent to syslog) because the spool was full or its disk failed
        syslog_spool_dropped,
        /// records written to the syslog TLS connection, resends included
        syslog_sent,
        /// records to be written again after a lost connection, because their delivery was not confirmed
        syslog_resent,
        /// records confirmed delivered and released from the spool (see docs/sessionlog.md)
        syslog_delivered,
        /// TLS connections established to the syslog server
        syslog_connects,
        /// failed attempts to connect to the syslog server (TCP or TLS handshake)
        syslog_connect_failures,
        /// established syslog connections that were lost (closed by the server, reset, write error)
        syslog_disconnects,
    }
}

/// Adds `n` to a counter of [`LogStats`].
pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Sets a gauge of [`LogStats`].
pub(crate) fn set(gauge: &AtomicU64, v: u64) {
    gauge.store(v, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_every_field() {
        let s = LogStats::default();
        add(&s.records_in, 3);
        set(&s.syslog_spool_bytes, 42);
        let snap = s.snapshot();
        assert_eq!(snap["records_in"], 3);
        assert_eq!(snap["syslog_spool_bytes"], 42);
        assert_eq!(s.records_in(), 3);
        let obj = snap.as_object().unwrap();
        assert_eq!(obj.len(), LogStats::FIELDS.len());
        for (name, doc) in LogStats::FIELDS {
            assert!(obj.contains_key(*name), "{name}");
            assert!(!doc.trim().is_empty(), "{name}");
        }
    }
}
