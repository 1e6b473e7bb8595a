//! The syslog sink against an in-process RFC 5425 server (rustls), so the delivery rules
//! are checked on every machine, rsyslog or not, and the two ways a server can go away
//! are produced on purpose:
//! - it reads everything and closes (FIN): nothing is lost or repeated;
//! - it stops reading, lets its TCP acknowledge more, and closes with that data unread
//!   (RST): the acknowledged-but-unread records must be sent again.

mod common;

use common::{free_port, id_counts, ids_in_order, make_pki, record, wait_until, Pki};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};
use sessionlog::{LogConfig, Logger, SyslogConfig};
use std::io::{self, Read};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

const READING: u8 = 0;
const PAUSED: u8 = 1;
/// Read what has arrived, then close.
const CLOSE_ORDERLY: u8 = 2;
/// Close at once, whatever is unread.
const CLOSE_NOW: u8 = 3;

/// A syslog-over-TLS server that appends each message it reads to `messages`.
struct Server {
    state: Arc<AtomicU8>,
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(port: u16, pki: &Pki, messages: Arc<Mutex<Vec<String>>>) -> Server {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pki.server_cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&pki.server_key).unwrap();
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap(),
        );
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let state = Arc::new(AtomicU8::new(READING));
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, done) = (state.clone(), done.clone());
            std::thread::spawn(move || serve(listener, config, state, done, messages))
        };
        Server {
            state,
            done,
            thread: Some(thread),
        }
    }

    fn pause(&self) {
        self.state.store(PAUSED, Ordering::SeqCst);
    }

    /// Closes the connection and the listener (connects are refused from then on).
    fn stop(mut self, how: u8) {
        self.state.store(how, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.state.store(CLOSE_NOW, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = self.done.load(Ordering::SeqCst);
    }
}

fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    state: Arc<AtomicU8>,
    done: Arc<AtomicBool>,
    messages: Arc<Mutex<Vec<String>>>,
) {
    loop {
        if state.load(Ordering::SeqCst) >= CLOSE_ORDERLY {
            done.store(true, Ordering::SeqCst);
            return;
        }
        let sock = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(e) => panic!("accept: {e}"),
        };
        sock.set_nonblocking(false).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let conn = ServerConnection::new(config.clone()).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        let mut pending = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let st = state.load(Ordering::SeqCst);
            if st == CLOSE_NOW {
                // Unread data in the socket makes the kernel answer with RST.
                return;
            }
            if st == PAUSED {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            if st == CLOSE_ORDERLY {
                // Read what has arrived, then close(): with nothing unread the kernel
                // sends a FIN.
                tls.sock.set_nonblocking(true).unwrap();
                loop {
                    match tls.read(&mut buf) {
                        Ok(n) if n > 0 => {
                            pending.extend_from_slice(&buf[..n]);
                            take_frames(&mut pending, &messages);
                        }
                        _ => return,
                    }
                }
            }
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    take_frames(&mut pending, &messages);
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
    }
}

fn take_frames(pending: &mut Vec<u8>, messages: &Mutex<Vec<String>>) {
    loop {
        let Some(sp) = pending.iter().position(|b| *b == b' ') else {
            return;
        };
        let len: usize = std::str::from_utf8(&pending[..sp]).unwrap().parse().unwrap();
        if pending.len() < sp + 1 + len {
            return;
        }
        let msg = String::from_utf8(pending[sp + 1..sp + 1 + len].to_vec()).unwrap();
        messages.lock().unwrap().push(msg);
        pending.drain(..sp + 1 + len);
    }
}

fn config(port: u16, pki: &Pki, spool: &std::path::Path) -> LogConfig {
    let mut s = SyslogConfig::new(format!("127.0.0.1:{port}"), &pki.ca, spool);
    s.hostname = Some("bridge-test".into());
    s.reconnect_min = Duration::from_millis(50);
    s.reconnect_max = Duration::from_millis(200);
    LogConfig {
        syslog: Some(s),
        ..LogConfig::default()
    }
}

fn text(messages: &Mutex<Vec<String>>) -> String {
    messages.lock().unwrap().join("\n")
}

#[test]
fn orderly_close_loses_and_repeats_nothing() {
    common::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let server = Server::start(port, &pki, messages.clone());
    let (logger, tx) = Logger::start(config(port, &pki, &tmp.path().join("spool"))).unwrap();
    let stats = logger.stats();
    for id in 0..200 {
        assert!(tx.send(record(id)));
    }
    wait_until(Duration::from_secs(30), "200 records", || {
        messages.lock().unwrap().len() == 200
    });
    // The server reads all and closes well within the settle time (2 s) of the last
    // records: only the FIN tells the sender they were read.
    server.stop(CLOSE_ORDERLY);
    // Records keep coming while the server is away.
    for id in 200..400 {
        assert!(tx.send(record(id)));
        std::thread::sleep(Duration::from_millis(2));
    }
    let _server = Server::start(port, &pki, messages.clone());
    wait_until(Duration::from_secs(30), "400 records", || {
        id_counts(&text(&messages)).len() == 400
    });
    logger.shutdown().unwrap();
    assert_eq!(ids_in_order(&text(&messages)), (0..400).collect::<Vec<_>>());
    assert_eq!(stats.syslog_resent(), 0);
    assert_eq!(stats.syslog_delivered(), 400);
    assert!(stats.syslog_connects() >= 2);
    assert_eq!(stats.syslog_disconnects(), 1);
    // The messages are RFC 5424 with the record as MSG.
    let first = messages.lock().unwrap()[0].clone();
    assert!(
        first.starts_with("<134>1 ")
            && first.contains(" bridge-test glasswire ")
            && first.contains(" start - {\"session_id\":\"0000000000000000\""),
        "{first}"
    );
}

#[test]
fn records_acknowledged_but_unread_at_a_reset_are_sent_again() {
    common::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let server = Server::start(port, &pki, messages.clone());
    let mut cfg = config(port, &pki, &tmp.path().join("spool"));
    cfg.syslog.as_mut().unwrap().settle = Duration::from_millis(700);
    let (logger, tx) = Logger::start(cfg).unwrap();
    let stats = logger.stats();
    for id in 0..50 {
        assert!(tx.send(record(id)));
    }
    // Read, acknowledged, and settled: delivered.
    wait_until(Duration::from_secs(30), "50 records delivered", || {
        stats.syslog_delivered() == 50
    });
    // The server stops reading; its TCP still acknowledges what fits in its buffer.
    server.pause();
    for id in 50..100 {
        assert!(tx.send(record(id)));
    }
    wait_until(Duration::from_secs(10), "records written", || {
        stats.syslog_sent() >= 100
    });
    std::thread::sleep(Duration::from_millis(200));
    // ... and dies with them unread: a RST. Their settle time has not passed, so the
    // sender must not have taken them as delivered.
    server.stop(CLOSE_NOW);
    std::thread::sleep(Duration::from_millis(300));
    let _server = Server::start(port, &pki, messages.clone());
    wait_until(Duration::from_secs(30), "100 records", || {
        id_counts(&text(&messages)).len() == 100
    });
    logger.shutdown().unwrap();
    let counts = id_counts(&text(&messages));
    // Delivered before the pause: never sent again.
    assert!((0..50).all(|id| counts[&id] == 1), "{counts:?}");
    // The unread ones all arrived after the reset (a record the server happened to read
    // as it paused may arrive twice: at least once is the promise for those).
    assert!((50..100).all(|id| counts[&id] >= 1), "{counts:?}");
    assert_eq!(stats.syslog_resent(), 50, "{}", stats.snapshot());
    assert_eq!(stats.syslog_delivered(), 100);
}

#[test]
fn a_server_with_a_certificate_from_another_ca_gets_nothing() {
    common::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let messages = Arc::new(Mutex::new(Vec::new()));
    let _server = Server::start(port, &pki, messages.clone());
    let mut cfg = config(port, &pki, &tmp.path().join("spool"));
    if let Some(s) = &mut cfg.syslog {
        s.ca_file = pki.other_ca.clone();
    }
    let (logger, tx) = Logger::start(cfg).unwrap();
    let stats = logger.stats();
    assert!(tx.send(record(1)));
    wait_until(Duration::from_secs(10), "connect failures", || {
        stats.syslog_connect_failures() >= 2
    });
    logger.shutdown().unwrap();
    assert_eq!(stats.syslog_connects(), 0);
    assert_eq!(stats.syslog_spooled(), 1);
    assert!(messages.lock().unwrap().is_empty());
}

#[test]
fn the_server_name_is_verified() {
    common::init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let port = free_port();
    let _server = Server::start(port, &pki, Arc::default());
    let mut cfg = config(port, &pki, &tmp.path().join("spool"));
    if let Some(s) = &mut cfg.syslog {
        s.server_name = "logs.example.net".into();
    }
    let (logger, _tx) = Logger::start(cfg).unwrap();
    let stats = logger.stats();
    wait_until(Duration::from_secs(10), "connect failures", || {
        stats.syslog_connect_failures() >= 1
    });
    logger.shutdown().unwrap();
    assert_eq!(stats.syslog_connects(), 0);
}

#[test]
fn start_errors_name_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = make_pki(tmp.path());
    let spool = tmp.path().join("spool");
    let err = |f: &dyn Fn(&mut SyslogConfig)| {
        let mut cfg = config(1, &pki, &spool);
        f(cfg.syslog.as_mut().unwrap());
        format!("{:#}", Logger::start(cfg).unwrap_err())
    };
    let e = err(&|s| s.ca_file = tmp.path().join("missing.pem"));
    assert!(e.starts_with("log.syslog.ca_file:"), "{e}");
    let e = err(&|s| s.ca_file = pki.server_key.clone());
    assert!(e.starts_with("log.syslog.ca_file:"), "{e}");
    let e = err(&|s| s.client_cert = Some(pki.client_cert.clone()));
    assert!(
        e.starts_with("log.syslog.client_cert and log.syslog.client_key"),
        "{e}"
    );
    let e = err(&|s| {
        s.client_cert = Some(pki.client_cert.clone());
        s.client_key = Some(pki.server_key.clone());
    });
    assert!(e.starts_with("log.syslog.client_key:"), "{e}");
    let e = err(&|s| s.server = "nowhere".into());
    assert!(e.starts_with("log.syslog.server:"), "{e}");
    let e = err(&|s| s.server_name = "not a name".into());
    assert!(e.starts_with("log.syslog.server_name:"), "{e}");
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let e = err(&|s| s.spool_dir = file.join("spool"));
    assert!(e.starts_with("log.syslog.spool_dir:"), "{e}");
    // A good configuration starts, with a client certificate too.
    let mut cfg = config(free_port(), &pki, &spool);
    if let Some(s) = &mut cfg.syslog {
        s.client_cert = Some(pki.client_cert.clone());
        s.client_key = Some(pki.client_key.clone());
    }
    let (logger, _tx) = Logger::start(cfg).unwrap();
    drop(logger);
    let _ = TcpStream::connect(("127.0.0.1", 1));
}
