//! The demo's TLS part: an inspection CA for the bridge, a "real" server certificate
//! issued by a CA of the demo's own (the bridge trusts it upstream), an HTTPS server in
//! the server namespace, and reading the decrypted exchange back from the mirror pcap.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use std::path::{Path, PathBuf};

/// The name the demo's HTTPS server answers to.
pub const SERVER_NAME: &str = "www.demo.test";

/// Files the demo's TLS part made.
#[derive(Debug)]
pub struct DemoPki {
    /// The inspection CA (the client trusts it).
    pub inspection_cert: PathBuf,
    pub inspection_key: PathBuf,
    /// The CA that issued the server's certificate (the bridge trusts it upstream).
    pub server_ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

pub fn make_pki(dir: &Path) -> Result<DemoPki> {
    let ica = dir.join("inspection-ca");
    let files = tls::ca::init_with(
        &ica,
        &tls::ca::InitOptions {
            common_name: "glasswire demo inspection CA".into(),
            ..tls::ca::InitOptions::default()
        },
        std::time::SystemTime::now(),
    )
    .context("creating the demo's inspection CA")?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).context("CA parameters")?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "demo server CA");
    let issuer =
        CertifiedIssuer::self_signed(ca, KeyPair::generate().context("CA key")?).context("demo server CA")?;
    let key = KeyPair::generate().context("server key")?;
    let mut leaf =
        CertificateParams::new(vec![SERVER_NAME.to_string()]).context("server certificate parameters")?;
    leaf.distinguished_name.push(DnType::CommonName, SERVER_NAME);
    let cert = leaf.signed_by(&key, &issuer).context("server certificate")?;
    let write = |name: &str, text: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        Ok(p)
    };
    Ok(DemoPki {
        inspection_cert: files.cert,
        inspection_key: files.key,
        server_ca: write("server-ca.pem", &issuer.pem())?,
        server_cert: write("server.pem", &cert.pem())?,
        server_key: write("server.key", &key.serialize_pem())?,
    })
}

/// Python's http.server behind TLS on `ip:443`, serving `dir`.
pub fn https_server_code(ip: &str, dir: &Path, pki: &DemoPki) -> String {
    format!(
        "import functools, http.server, ssl\n\
         h = functools.partial(http.server.SimpleHTTPRequestHandler, directory={dir:?})\n\
         s = http.server.ThreadingHTTPServer(({ip:?}, 443), h)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({cert:?}, {key:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        dir = dir.display().to_string(),
        cert = pki.server_cert.display().to_string(),
        key = pki.server_key.display().to_string(),
    )
}

/// The first bytes each way of the first TCP conversation in a mirror pcap: the
/// decrypted request and response. The mirror's synthetic streams are in order and
/// without retransmissions, so payloads simply follow each other.
pub fn first_exchange(pcap: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let file = std::fs::File::open(pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let mut reader = pcap_file::pcap::PcapReader::new(file).context("reading the mirror pcap")?;
    let mut client: Option<(std::net::IpAddr, u16)> = None;
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    while let Some(pkt) = reader.next_packet() {
        let pkt = pkt.context("a mirror pcap record")?;
        let Ok(frame) = wire::parse_frame(&pkt.data) else {
            continue;
        };
        let wire::L3::Ip {
            flow: Some((key, dir)),
            tcp: Some(tcp),
            ..
        } = frame.l3
        else {
            continue;
        };
        let (src, dst) = match dir {
            wire::Direction::LoToHi => (key.lo(), key.hi()),
            wire::Direction::HiToLo => (key.hi(), key.lo()),
        };
        if tcp.syn && !tcp.ack && client.is_none() {
            client = Some(src);
        }
        match client {
            Some(c) if c == src => c2s.extend_from_slice(tcp.payload),
            Some(c) if c == dst => s2c.extend_from_slice(tcp.payload),
            _ => {}
        }
        if c2s.len() > 4096 && s2c.len() > 4096 {
            break;
        }
    }
    Ok((c2s, s2c))
}
