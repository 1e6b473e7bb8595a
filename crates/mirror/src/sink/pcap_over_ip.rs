//! PCAP-over-IP: a TCP listener; every connected reader gets a classic pcap global header,
//! then a record per frame (what `tcpdump -r <(nc host port)` and NetworkMiner expect).
//!
//! Each reader has a bounded byte queue drained with non-blocking writes; a reader that
//! does not keep up loses whole frames (counted), and never stalls the mirror thread or the
//! other readers. Everything runs on the fanout thread: no thread per reader.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};

use super::{pcap_global_header, pcap_record_header, Sink, SinkCounters, SinkError};
use crate::conversation::Timestamp;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct PcapOverIpOptions {
    /// Local address to listen on (a management address: these are plaintext frames).
    pub listen: SocketAddr,
    /// Per-reader queue bound, in bytes, on top of the socket's own send buffer.
    pub queue_bytes: usize,
    /// Readers beyond this are refused (counted as errors).
    pub max_readers: usize,
    pub snaplen: u32,
}

impl PcapOverIpOptions {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            queue_bytes: 4 << 20,
            max_readers: 8,
            snaplen: 65535,
        }
    }
}

#[derive(Debug)]
struct Reader {
    stream: TcpStream,
    peer: SocketAddr,
    queue: VecDeque<u8>,
    dropped: u64,
}

impl Reader {
    /// Writes as much of the queue as the socket takes. `Err` means the reader is gone.
    fn drain(&mut self) -> io::Result<()> {
        while !self.queue.is_empty() {
            let (front, _) = self.queue.as_slices();
            match self.stream.write(front) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.queue.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A [`Sink`] serving PCAP-over-IP readers.
#[derive(Debug)]
pub struct PcapOverIpSink {
    opts: PcapOverIpOptions,
    name: String,
    listener: TcpListener,
    local: SocketAddr,
    readers: Vec<Reader>,
    counters: SinkCounters,
}

impl PcapOverIpSink {
    /// Binds the listener (non-blocking).
    pub fn bind(opts: PcapOverIpOptions) -> io::Result<Self> {
        let listener = TcpListener::bind(opts.listen)?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        Ok(Self {
            name: format!("pcap-over-ip:{local}"),
            opts,
            listener,
            local,
            readers: Vec::new(),
            counters: SinkCounters::default(),
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Readers connected now.
    pub fn readers(&self) -> usize {
        self.readers.len()
    }

    /// Frames each connected reader has lost, with its address.
    pub fn reader_drops(&self) -> impl Iterator<Item = (SocketAddr, u64)> + '_ {
        self.readers.iter().map(|r| (r.peer, r.dropped))
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    if self.readers.len() >= self.opts.max_readers || stream.set_nonblocking(true).is_err() {
                        self.counters.errors += 1;
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let mut queue = VecDeque::with_capacity(self.opts.queue_bytes.min(1 << 20));
                    queue.extend(pcap_global_header(self.opts.snaplen));
                    self.readers.push(Reader {
                        stream,
                        peer,
                        queue,
                        dropped: 0,
                    });
                    self.counters.reopens += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // ECONNABORTED, EMFILE...: try again at the next frame or flush.
                    self.counters.errors += 1;
                    return;
                }
            }
        }
    }

    fn drain_all(&mut self) {
        let before = self.readers.len();
        self.readers.retain_mut(|r| r.drain().is_ok());
        self.counters.errors += (before - self.readers.len()) as u64;
    }
}

impl Sink for PcapOverIpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        self.accept();
        let caplen = frame.len().min(self.opts.snaplen as usize);
        let data = frame.get(..caplen).unwrap_or(frame);
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let header = pcap_record_header(ts, caplen as u32, orig_len);
        let mut taken = false;
        for r in &mut self.readers {
            // Make room first; whole records only, so the stream stays parseable.
            let _ = r.drain();
            if r.queue.len() + header.len() + data.len() > self.opts.queue_bytes {
                r.dropped += 1;
                self.counters.dropped += 1;
                continue;
            }
            r.queue.extend(header);
            r.queue.extend(data);
            taken = true;
        }
        self.drain_all();
        if taken {
            self.counters.frames += 1;
            self.counters.bytes += frame.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.accept();
        self.drain_all();
        Ok(())
    }

    fn counters(&self) -> SinkCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ConversationOptions;
    use crate::sink::test_support::frames;
    use pcap_file::pcap::PcapReader;
    use std::io::Read;
    use std::net::{IpAddr, Ipv4Addr};
    use std::time::Duration;

    fn sink() -> PcapOverIpSink {
        PcapOverIpSink::bind(PcapOverIpOptions::new("127.0.0.1:0".parse().unwrap())).unwrap()
    }

    fn endpoints() -> crate::Endpoints {
        crate::Endpoints {
            client_mac: [2, 0, 0, 0, 0, 1],
            server_mac: [2, 0, 0, 0, 0, 2],
            client_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 1)),
            client_port: 33000,
            server_ip: IpAddr::V4(Ipv4Addr::new(10, 1, 0, 2)),
            server_port: 443,
        }
    }

    /// Waits until the listener has accepted `n` readers (accept runs inside flush).
    fn accept_n(s: &mut PcapOverIpSink, n: usize) {
        for _ in 0..500 {
            s.flush().unwrap();
            if s.readers() == n {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        panic!("readers not accepted");
    }

    #[test]
    fn reader_gets_a_pcap_stream_of_the_frames() {
        let mut s = sink();
        let mut client = TcpStream::connect(s.local_addr()).unwrap();
        accept_n(&mut s, 1);
        let want = frames(endpoints(), &ConversationOptions::default());
        for (ts, f) in &want {
            s.write(*ts, f).unwrap();
        }
        // Closing the sink's end ends the stream once everything is drained.
        for _ in 0..500 {
            s.flush().unwrap();
            if s.readers.iter().all(|r| r.queue.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(s);
        let mut bytes = Vec::new();
        client.read_to_end(&mut bytes).unwrap();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let mut got = Vec::new();
        while let Some(p) = r.next_packet() {
            let p = p.unwrap();
            got.push((p.timestamp, p.data.into_owned()));
        }
        assert_eq!(got, want);
    }

    #[test]
    fn a_reader_that_never_reads_loses_frames_but_never_stalls_the_writer() {
        let mut s = sink();
        s.opts.queue_bytes = 256 * 1024;
        let _stalled = TcpStream::connect(s.local_addr()).unwrap();
        accept_n(&mut s, 1);
        let frame = vec![0x5au8; 1514];
        let start = std::time::Instant::now();
        // 60 MB: far more than socket buffers and the queue hold.
        for i in 0..40_000u64 {
            s.write(Duration::from_micros(i), &frame).unwrap();
        }
        assert!(start.elapsed() < Duration::from_secs(10), "writer stalled");
        let c = s.counters();
        assert!(c.dropped > 30_000, "{c:?}");
        assert_eq!(c.frames + c.dropped, 40_000);
        assert_eq!(s.reader_drops().map(|(_, d)| d).sum::<u64>(), c.dropped);
        assert_eq!(s.readers(), 1, "a slow reader is not disconnected");
    }

    #[test]
    fn a_reader_that_goes_away_is_dropped_and_counted() {
        let mut s = sink();
        let gone = TcpStream::connect(s.local_addr()).unwrap();
        accept_n(&mut s, 1);
        drop(gone);
        let frame = vec![1u8; 1000];
        for i in 0..200u64 {
            s.write(Duration::from_micros(i), &frame).unwrap();
            if s.readers() == 0 {
                break;
            }
        }
        assert_eq!(s.readers(), 0);
        assert_eq!(s.counters().errors, 1);
    }
}
