//! One TLS connection to the syslog server: rustls 0.23 stays behind this module.
//!
//! The connection does its own socket I/O so that it can say what the delivery rules of
//! `delivery` need: how many bytes of the stream were written and how many of them the
//! server's TCP acknowledged, and whether the server closed with a FIN (read before any
//! error) or otherwise.

use crate::config::SyslogConfig;
use crate::delivery::Loss;
use anyhow::{anyhow, bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::debug;

/// Longest a write may block before the connection is given up (the server stopped
/// reading).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the sender needs to open connections: built and checked once, at start.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    server: String,
}

impl Connector {
    /// Reads the CA file and the client certificate; errors name the configuration key.
    pub(crate) fn new(cfg: &SyslogConfig) -> anyhow::Result<Connector> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let ca = CertificateDer::pem_file_iter(&cfg.ca_file)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| anyhow!("log.syslog.ca_file: cannot read {}: {e}", cfg.ca_file.display()))?;
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(ca);
        if added == 0 {
            bail!(
                "log.syslog.ca_file: no usable CA certificate in {}",
                cfg.ca_file.display()
            );
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("log.syslog: TLS provider")?
            .with_root_certificates(roots);
        let config = match (&cfg.client_cert, &cfg.client_key) {
            (Some(cert), Some(key)) => {
                let chain = CertificateDer::pem_file_iter(cert)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .map_err(|e| anyhow!("log.syslog.client_cert: cannot read {}: {e}", cert.display()))?;
                if chain.is_empty() {
                    bail!("log.syslog.client_cert: no certificate in {}", cert.display());
                }
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| anyhow!("log.syslog.client_key: cannot read {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .context("log.syslog.client_key: does not go with log.syslog.client_cert")?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => bail!("log.syslog.client_cert and log.syslog.client_key: give both or neither"),
        };
        let tls_name = cfg.tls_name()?;
        let name = ServerName::try_from(tls_name.clone())
            .map_err(|_| anyhow!("log.syslog.server_name: {tls_name:?} is not a DNS name or IP address"))?;
        Ok(Connector {
            config: Arc::new(config),
            name,
            server: cfg.server.trim().to_string(),
        })
    }

    /// Resolves the server, connects and completes the TLS handshake, each step within
    /// `timeout`.
    pub(crate) fn connect(&self, timeout: Duration) -> anyhow::Result<Conn> {
        let timeout = timeout.max(Duration::from_millis(100));
        let addrs: Vec<_> = self
            .server
            .to_socket_addrs()
            .with_context(|| format!("resolving {}", self.server))?
            .collect();
        let mut last = None;
        let mut sock = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, timeout) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last = Some(anyhow!("connecting to {a}: {e}")),
            }
        }
        let sock = match sock {
            Some(s) => s,
            None => return Err(last.unwrap_or_else(|| anyhow!("{} resolves to nothing", self.server))),
        };
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(timeout))?;
        sock.set_write_timeout(Some(timeout))?;
        let mut tls = ClientConnection::new(self.config.clone(), self.name.clone()).context("TLS client")?;
        let mut written = 0u64;
        while tls.is_handshaking() {
            if tls.wants_write() {
                let mut w = Counting {
                    sock: &sock,
                    n: &mut written,
                };
                tls.write_tls(&mut w).context("TLS handshake (write)")?;
            } else if tls.wants_read() {
                let n = tls.read_tls(&mut &sock).context("TLS handshake (read)")?;
                if n == 0 {
                    bail!("TLS handshake: the server closed the connection");
                }
                tls.process_new_packets().context("TLS handshake")?;
            } else {
                break;
            }
        }
        while tls.wants_write() {
            let mut w = Counting {
                sock: &sock,
                n: &mut written,
            };
            tls.write_tls(&mut w).context("TLS handshake (write)")?;
        }
        sock.set_read_timeout(None)?;
        sock.set_write_timeout(Some(WRITE_TIMEOUT))?;
        debug!(
            "sessionlog: syslog TLS to {}: {:?} {:?}",
            self.server,
            tls.protocol_version(),
            tls.negotiated_cipher_suite().map(|s| s.suite())
        );
        Ok(Conn {
            tls,
            sock,
            written,
            acked: 0,
            out: Vec::with_capacity(80 << 10),
        })
    }
}

/// Counts the bytes written to the socket.
struct Counting<'a> {
    sock: &'a TcpStream,
    n: &'a mut u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = (&mut &*self.sock).write(buf)?;
        *self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An established connection.
#[derive(Debug)]
pub(crate) struct Conn {
    tls: ClientConnection,
    sock: TcpStream,
    /// Bytes written to the socket since it was opened, handshake included.
    written: u64,
    /// The last count of bytes known acknowledged.
    acked: u64,
    /// Encrypted bytes not yet written to the socket.
    out: Vec<u8>,
}

impl Conn {
    /// Encrypts `frame` into the outgoing buffer; returns where its last byte will be in
    /// the connection's byte stream.
    pub(crate) fn queue(&mut self, frame: &[u8]) -> io::Result<u64> {
        let mut rest = frame;
        while !rest.is_empty() {
            let n = self.tls.writer().write(rest)?;
            rest = rest.get(n..).unwrap_or_default();
            let mut drained = false;
            while self.tls.wants_write() {
                self.tls.write_tls(&mut self.out)?;
                drained = true;
            }
            if n == 0 && !drained {
                return Err(io::Error::other("TLS connection refuses more data"));
            }
        }
        Ok(self.written + self.out.len() as u64)
    }

    /// Bytes queued and not yet sent.
    pub(crate) fn queued(&self) -> usize {
        self.out.len()
    }

    /// Writes the outgoing buffer to the socket (blocking, at most [`WRITE_TIMEOUT`] per
    /// write).
    pub(crate) fn send(&mut self) -> io::Result<()> {
        let mut sent = 0;
        let r = loop {
            let Some(rest) = self.out.get(sent..).filter(|r| !r.is_empty()) else {
                break Ok(());
            };
            match (&self.sock).write(rest) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.written += sent as u64;
        self.out.drain(..sent);
        r
    }

    /// Bytes of the stream the server's TCP has acknowledged: those written less those the
    /// socket still holds (SIOCOUTQ counts both unsent and sent-but-unacknowledged bytes).
    pub(crate) fn acked(&mut self) -> u64 {
        let mut outq: libc::c_int = 0;
        // Safety: TIOCOUTQ (SIOCOUTQ) writes one c_int through the pointer, which points to
        // a live c_int; the descriptor is our open socket.
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
        if r == 0 {
            if let Ok(q) = u64::try_from(outq) {
                self.acked = self.acked.max(self.written.saturating_sub(q));
            }
        }
        self.acked
    }

    /// Reads, without blocking, whatever the server sent (session tickets, alerts, its
    /// close). `Err` when the connection is over, saying how it ended.
    pub(crate) fn poll_peer(&mut self) -> Result<(), Loss> {
        let mut buf = [0u8; 4096];
        loop {
            match recv_nowait(&self.sock, &mut buf) {
                Ok(0) => return Err(Loss::Orderly),
                Ok(n) => {
                    let mut data = buf.get(..n).unwrap_or_default();
                    while !data.is_empty() {
                        match self.tls.read_tls(&mut data) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => {
                                debug!("sessionlog: syslog TLS: {e}");
                                return Err(Loss::Abortive);
                            }
                        }
                        match self.tls.process_new_packets() {
                            Ok(st) => {
                                // A syslog server has nothing to say; discard whatever it does.
                                let mut sink = vec![0u8; st.plaintext_bytes_to_read()];
                                let _ = self.tls.reader().read(&mut sink);
                                if st.peer_has_closed() {
                                    // close_notify says nothing about what the server read;
                                    // its TCP's way of closing does.
                                    return Err(self.await_tcp_end(Duration::from_secs(1)));
                                }
                            }
                            Err(e) => {
                                debug!("sessionlog: syslog TLS: {e}");
                                return Err(Loss::Abortive);
                            }
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    debug!("sessionlog: syslog connection: {e}");
                    return Err(Loss::Abortive);
                }
            }
        }
    }

    /// Waits up to `timeout` for the server's FIN, discarding what comes before it.
    fn await_tcp_end(&self, timeout: Duration) -> Loss {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            match recv_nowait(&self.sock, &mut buf) {
                Ok(0) => return Loss::Orderly,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Loss::Abortive,
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Loss::Abortive;
            }
            let mut pfd = libc::pollfd {
                fd: self.sock.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // Safety: one pollfd, valid for the call.
            unsafe { libc::poll(&mut pfd, 1, ms) };
        }
    }

    /// Ends the connection from our side (close_notify, FIN) and waits up to `timeout` for
    /// the server's FIN, which means it read the whole stream (rule 4 of `delivery`).
    pub(crate) fn close(mut self, timeout: Duration) -> bool {
        self.tls.send_close_notify();
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut self.out).is_err() {
                return false;
            }
        }
        if self.send().is_err() || self.sock.shutdown(Shutdown::Write).is_err() {
            return false;
        }
        self.await_tcp_end(timeout) == Loss::Orderly
    }

    /// A handle to the socket, to cut a connection stuck in a write from another thread.
    pub(crate) fn socket_handle(&self) -> io::Result<TcpStream> {
        self.sock.try_clone()
    }
}

fn recv_nowait(sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    // Safety: recv writes at most buf.len() bytes into buf, which is valid and writable.
    let n = unsafe {
        libc::recv(
            sock.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    usize::try_from(n).map_err(|_| io::Error::last_os_error())
}
