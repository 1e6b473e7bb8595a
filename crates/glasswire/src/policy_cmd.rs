//! `glasswire policy check`: validate a policy and explain its decision for one flow.

use crate::config::Config;
use anyhow::{bail, Result};
use classify::policy::{FlowFacts, TlsVersionMatch};
use classify::{ClientHelloInfo, VersionFamily};
use std::net::IpAddr;
use std::path::Path;

/// A flow to ask the policy about, from the command line.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    pub sni: Option<String>,
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    pub port: Option<u16>,
    pub alpn: Vec<String>,
    pub tls_version: Option<String>,
}

impl Probe {
    fn asks_anything(&self) -> bool {
        self.sni.is_some()
            || self.src.is_some()
            || self.dst.is_some()
            || self.port.is_some()
            || !self.alpn.is_empty()
            || self.tls_version.is_some()
    }
}

/// Loads the config's policy (an error names the file and line) and, when the probe
/// names anything, the decision for it. Returns the text to print.
pub fn check(config: &Path, probe: &Probe) -> Result<String> {
    let (cfg, policy) = Config::load(config)?;
    let mut out = format!("{}: policy valid: {}\n", config.display(), policy.summary());
    if let Err(e) = cfg.check_runnable(&policy) {
        out.push_str(&format!("note: `glasswire run` refuses it: {e:#}\n"));
    }
    if !probe.asks_anything() {
        return Ok(out);
    }
    let family = match probe.tls_version.as_deref() {
        None => VersionFamily::Tls13,
        Some(v) => match TlsVersionMatch::parse(v).map_err(anyhow::Error::msg)? {
            TlsVersionMatch::Sslv2 => VersionFamily::LegacySslv2,
            TlsVersionMatch::Ssl3 => VersionFamily::Ssl3,
            TlsVersionMatch::Tls10 => VersionFamily::Tls10,
            TlsVersionMatch::Tls11 => VersionFamily::Tls11,
            TlsVersionMatch::Tls12 => VersionFamily::Tls12,
            TlsVersionMatch::Tls13 => VersionFamily::Tls13,
        },
    };
    let unspecified: IpAddr = [0, 0, 0, 0].into();
    let alpn: Vec<&str> = probe.alpn.iter().map(String::as_str).collect();
    let hello = ClientHelloInfo::with_policy_fields(probe.sni.clone(), &alpn, family);
    let src = probe.src.unwrap_or(unspecified);
    let dst = probe.dst.unwrap_or(unspecified);
    if src.is_ipv4() != dst.is_ipv4() && probe.src.is_some() && probe.dst.is_some() {
        bail!("--src and --dst must be of the same address family");
    }
    let decision = policy.decide(&FlowFacts {
        src,
        dst,
        dst_port: probe.port.unwrap_or(443),
        hello: &hello,
    });
    out.push_str(&format!(
        "flow: sni {}, src {}, dst {}, port {}, alpn [{}], {}\n",
        probe.sni.as_deref().unwrap_or("(none)"),
        probe.src.map_or("(any)".into(), |a| a.to_string()),
        probe.dst.map_or("(any)".into(), |a| a.to_string()),
        probe.port.unwrap_or(443),
        probe.alpn.join(", "),
        probe.tls_version.as_deref().unwrap_or("tls1.3"),
    ));
    out.push_str(&format!("decision: {decision}\n"));
    Ok(out)
}
