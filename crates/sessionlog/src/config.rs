//! The logger's configuration, as the binary embeds it in its TOML file under `[log]`,
//! `[log.jsonl]` and `[log.syslog]`. Unknown keys are errors (a typo must not silently
//! disable a sink); every check names the key it failed on.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[log]`: which sinks, and the size of the channel from the data path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `[log.jsonl]`: write JSON Lines files; absent: no files.
    pub jsonl: Option<JsonlConfig>,
    /// `[log.syslog]`: send to a syslog server over TLS; absent: no syslog.
    pub syslog: Option<SyslogConfig>,
    /// Records the channel from the data path to the logger thread holds; when it is full,
    /// records are dropped and counted (`records_dropped_channel_full`). Default 65536.
    pub channel_capacity: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            jsonl: None,
            syslog: None,
            channel_capacity: 65_536,
        }
    }
}

/// `[log.jsonl]`: JSON Lines files, one record per line.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JsonlConfig {
    /// Directory of the files; created if missing.
    pub dir: PathBuf,
    /// Files are named `<file_prefix>-<UTC time opened>.jsonl`. Default `sessions`.
    #[serde(default = "default_file_prefix")]
    pub file_prefix: String,
    /// A file is closed and a new one begun before it would grow past this. Default 64 MiB.
    #[serde(default = "default_rotate_bytes")]
    pub rotate_bytes: u64,
    /// A file that holds records is closed once it is this old. Default 1 h.
    #[serde(default = "default_rotate_interval", with = "crate::time::duration")]
    pub rotate_interval: Duration,
    /// How many files to keep, the one being written included; 0 keeps all. Default 0.
    #[serde(default)]
    pub keep_files: usize,
}

impl JsonlConfig {
    /// Defaults for everything but the directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JsonlConfig {
            dir: dir.into(),
            file_prefix: default_file_prefix(),
            rotate_bytes: default_rotate_bytes(),
            rotate_interval: default_rotate_interval(),
            keep_files: 0,
        }
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.file_prefix.is_empty()
            || self.file_prefix.contains(['/', '\0'])
            || self.file_prefix.starts_with('.')
        {
            bail!(
                "log.jsonl.file_prefix: {:?} is not a file name prefix",
                self.file_prefix
            );
        }
        if self.rotate_bytes == 0 {
            bail!("log.jsonl.rotate_bytes: must be more than 0");
        }
        if self.rotate_interval.is_zero() {
            bail!("log.jsonl.rotate_interval: must be more than 0");
        }
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("log.jsonl.dir: cannot create {}", self.dir.display()))?;
        Ok(())
    }
}

/// `[log.syslog]`: RFC 5424 messages over TLS (RFC 5425) to one log server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogConfig {
    /// `host:port` of the server (`[v6addr]:port` for IPv6); resolved at each connect.
    pub server: String,
    /// The name the server's certificate must carry (DNS name or IP address); empty or
    /// absent: the host part of `server`.
    #[serde(default)]
    pub server_name: String,
    /// PEM file of the CA certificate(s) the server's certificate must chain to.
    pub ca_file: PathBuf,
    /// PEM certificate chain to present to the server; with `client_key`.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Directory of the spool (created if missing); one logger at a time may use it.
    pub spool_dir: PathBuf,
    /// The spool's files never grow past this; records that do not fit are dropped and
    /// counted (`syslog_spool_dropped`). Default 256 MiB.
    #[serde(default = "default_spool_max_bytes")]
    pub spool_max_bytes: u64,
    /// RFC 5424 APP-NAME. Default `glasswire`.
    #[serde(default = "default_app_name")]
    pub app_name: String,
    /// RFC 5424 HOSTNAME; absent: this machine's host name.
    #[serde(default)]
    pub hostname: Option<String>,
    /// First wait after a failed connect; doubled after each failure. Default 1 s.
    #[serde(default = "default_reconnect_min", with = "crate::time::duration")]
    pub reconnect_min: Duration,
    /// Longest wait between connect attempts. Default 30 s.
    #[serde(default = "default_reconnect_max", with = "crate::time::duration")]
    pub reconnect_max: Duration,
    /// How long a record must have been acknowledged by the server's TCP, on a connection
    /// still open, before it is taken as delivered and released from the spool (see
    /// "Delivery guarantee" in docs/sessionlog.md). Default 2 s.
    #[serde(default = "default_settle", with = "crate::time::duration")]
    pub settle: Duration,
}

impl SyslogConfig {
    /// Defaults for everything but the server, its CA and the spool directory.
    pub fn new(
        server: impl Into<String>,
        ca_file: impl Into<PathBuf>,
        spool_dir: impl Into<PathBuf>,
    ) -> Self {
        SyslogConfig {
            server: server.into(),
            server_name: String::new(),
            ca_file: ca_file.into(),
            client_cert: None,
            client_key: None,
            spool_dir: spool_dir.into(),
            spool_max_bytes: default_spool_max_bytes(),
            app_name: default_app_name(),
            hostname: None,
            reconnect_min: default_reconnect_min(),
            reconnect_max: default_reconnect_max(),
            settle: default_settle(),
        }
    }

    /// The host part of `server`, checking that a port follows it.
    pub(crate) fn server_host(&self) -> anyhow::Result<&str> {
        let s = self.server.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            match rest.split_once("]:") {
                Some(hp) => hp,
                None => bail!("log.syslog.server: {s:?} is not [address]:port"),
            }
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (h, p),
                _ => bail!("log.syslog.server: {s:?} is not host:port"),
            }
        };
        if host.is_empty() {
            bail!("log.syslog.server: {s:?} has no host");
        }
        match port.parse::<u16>() {
            Ok(p) if p != 0 => Ok(host),
            _ => bail!("log.syslog.server: {s:?} has no valid port"),
        }
    }

    /// The TLS name to verify: `server_name`, or the host part of `server`.
    pub(crate) fn tls_name(&self) -> anyhow::Result<String> {
        let host = self.server_host()?;
        Ok(if self.server_name.trim().is_empty() {
            host.to_string()
        } else {
            self.server_name.trim().to_string()
        })
    }

    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        self.server_host()?;
        if self.spool_max_bytes < 4096 {
            bail!("log.syslog.spool_max_bytes: must be at least 4096");
        }
        if self.reconnect_min.is_zero() {
            bail!("log.syslog.reconnect_min: must be more than 0");
        }
        if self.reconnect_max < self.reconnect_min {
            bail!("log.syslog.reconnect_max: must not be less than log.syslog.reconnect_min");
        }
        if self.app_name.is_empty() {
            bail!("log.syslog.app_name: must not be empty");
        }
        Ok(())
    }
}

fn default_file_prefix() -> String {
    "sessions".into()
}
fn default_rotate_bytes() -> u64 {
    64 << 20
}
fn default_rotate_interval() -> Duration {
    Duration::from_secs(3600)
}
fn default_spool_max_bytes() -> u64 {
    256 << 20
}
fn default_app_name() -> String {
    "glasswire".into()
}
fn default_reconnect_min() -> Duration {
    Duration::from_secs(1)
}
fn default_reconnect_max() -> Duration {
    Duration::from_secs(30)
}
fn default_settle() -> Duration {
    Duration::from_secs(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        log: LogConfig,
    }

    #[test]
    fn toml_shape_with_defaults() {
        let f: File = serde_json::from_value(serde_json::json!({
            "log": {
                "jsonl": { "dir": "/var/log/glasswire" },
                "syslog": {
                    "server": "logs.example.net:6514",
                    "ca_file": "/etc/glasswire/log-ca.pem",
                    "spool_dir": "/var/spool/glasswire",
                    "reconnect_max": "10s",
                    "settle": 3
                }
            }
        }))
        .unwrap();
        let j = f.log.jsonl.unwrap();
        assert_eq!(j.file_prefix, "sessions");
        assert_eq!(j.rotate_bytes, 64 << 20);
        assert_eq!(j.rotate_interval, Duration::from_secs(3600));
        assert_eq!(j.keep_files, 0);
        let s = f.log.syslog.unwrap();
        assert_eq!(s.tls_name().unwrap(), "logs.example.net");
        assert_eq!(s.app_name, "glasswire");
        assert_eq!(s.spool_max_bytes, 256 << 20);
        assert_eq!(s.reconnect_min, Duration::from_secs(1));
        assert_eq!(s.reconnect_max, Duration::from_secs(10));
        assert_eq!(s.settle, Duration::from_secs(3));
        assert_eq!(f.log.channel_capacity, 65_536);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = serde_json::from_value::<LogConfig>(serde_json::json!({
            "jsonl": { "dir": "/tmp", "rotate_byte": 5 }
        }))
        .unwrap_err();
        assert!(e.to_string().contains("rotate_byte"), "{e}");
    }

    #[test]
    fn server_forms() {
        let mut c = SyslogConfig::new("[2001:db8::1]:6514", "/ca", "/spool");
        assert_eq!(c.tls_name().unwrap(), "2001:db8::1");
        c.server_name = "logs.example.net".into();
        assert_eq!(c.tls_name().unwrap(), "logs.example.net");
        for bad in ["logs", "logs:", ":6514", "logs:0", "2001:db8::1:6514", "[::1]"] {
            c.server = bad.into();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.starts_with("log.syslog.server:"), "{bad}: {e}");
        }
    }
}
