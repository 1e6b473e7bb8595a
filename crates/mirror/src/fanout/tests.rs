use super::*;
use crate::conversation::{ConversationOptions, Direction, Endpoints};
use crate::sink::{PcapFileOptions, PcapFileSink, SinkError};
use pcap_file::pcap::PcapReader;
use std::net::{IpAddr, Ipv4Addr};

type Recorded = Arc<Mutex<Vec<(Timestamp, Vec<u8>)>>>;

/// Records frames; blocks while `gate` is held by the test (a stuck sink).
#[derive(Debug, Default)]
struct MemSink {
    frames: Recorded,
    gate: Arc<Mutex<()>>,
    counters: SinkCounters,
    flushes: Arc<AtomicU64>,
}

impl Sink for MemSink {
    fn name(&self) -> &str {
        "mem"
    }
    fn write(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        let _g = self.gate.lock().unwrap();
        self.frames.lock().unwrap().push((ts, frame.to_vec()));
        self.counters.frames += 1;
        self.counters.bytes += frame.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> Result<(), SinkError> {
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
    fn counters(&self) -> SinkCounters {
        self.counters
    }
}

fn endpoints() -> Endpoints {
    Endpoints {
        client_mac: [2, 0, 0, 0, 0, 1],
        server_mac: [2, 0, 0, 0, 0, 2],
        client_ip: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
        client_port: 45000,
        server_ip: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2)),
        server_port: 443,
    }
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("mirror-fanout-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn mirror_as_is_reaches_every_sink_byte_identical() {
    let dir = tempdir("asis");
    let path = dir.join("asis.pcap");
    let mem = MemSink::default();
    let seen = Arc::clone(&mem.frames);
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(PcapFileSink::new(PcapFileOptions::new(&path))),
        Box::new(mem),
    ];
    let fanout = Fanout::spawn(sinks, FanoutOptions::default()).unwrap();
    let mut tx = fanout.sender();
    // Arbitrary real frames, including odd sizes and a jumbo one.
    let frames: Vec<(Timestamp, Vec<u8>)> = (0..50u32)
        .map(|i| {
            (
                Duration::new(1_700_000_000 + u64::from(i), i * 1000),
                (0..(60 + i * 191)).map(|b| (b ^ i) as u8).collect(),
            )
        })
        .collect();
    for (ts, f) in &frames {
        assert!(tx.mirror_as_is(*ts, f));
    }
    let (snap, _) = fanout.shutdown();
    assert_eq!(snap.enqueued, 50);
    assert_eq!(snap.written, 50);
    assert_eq!(*seen.lock().unwrap(), frames);
    let mut r = PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        assert_eq!((p.timestamp, &p.data[..]), (frames[n].0, &frames[n].1[..]));
        n += 1;
    }
    assert_eq!(n, 50);
    assert_eq!(snap.sinks.len(), 2);
    assert!(snap.sinks.iter().all(|s| s.counters.frames == 50), "{snap:?}");
    assert!(snap.sinks[0].name.starts_with("pcap:"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stuck_mirror_drops_and_counts_but_never_blocks_workers() {
    let mem = MemSink::default();
    let gate = Arc::clone(&mem.gate);
    let seen = Arc::clone(&mem.frames);
    let held = gate.lock().unwrap();
    let opts = FanoutOptions {
        channel_depth: 8,
        pool_per_sender: 16,
        ..Default::default()
    };
    let fanout = Fanout::spawn(vec![Box::new(mem)], opts).unwrap();
    let mut tx = fanout.sender();
    let start = Instant::now();
    let mut ok = 0;
    for i in 0..10_000u64 {
        if tx.mirror_as_is(Duration::from_micros(i), &[0u8; 100]) {
            ok += 1;
        }
    }
    assert!(start.elapsed() < Duration::from_secs(5), "sender blocked");
    let snap = fanout.snapshot();
    assert_eq!(snap.enqueued + snap.dropped_full, 10_000);
    assert!(snap.dropped_full >= 10_000 - 16 - 1, "{snap:?}");
    assert_eq!(snap.enqueued, ok);
    drop(held);
    let (snap, _) = fanout.shutdown();
    assert_eq!(seen.lock().unwrap().len() as u64, snap.enqueued);
    // After shutdown, sends are counted as closed drops.
    assert!(!tx.mirror_as_is(Duration::ZERO, &[0u8; 60]));
    let s2 = tx.shared.snapshot();
    assert_eq!(s2.dropped_closed, 1);
}

#[test]
fn conversation_frames_flow_through_pooled_buffers() {
    let mem = MemSink::default();
    let seen = Arc::clone(&mem.frames);
    let flushes = Arc::clone(&mem.flushes);
    let opts = FanoutOptions {
        flush_interval: Duration::from_millis(5),
        ..Default::default()
    };
    let fanout = Fanout::spawn(vec![Box::new(mem)], opts).unwrap();
    let mut tx = fanout.sender();
    let mut conv = Conversation::new(endpoints(), &ConversationOptions::default()).unwrap();
    let t = Duration::from_secs(1_700_000_000);
    let mut want = 0;
    conv.push(t, Direction::ClientToServer, b"GET / HTTP/1.1\r\n\r\n")
        .unwrap();
    want += tx.drain(&mut conv);
    for _ in 0..20 {
        conv.push(t, Direction::ServerToClient, &[7u8; 8000]).unwrap();
        want += tx.drain(&mut conv);
        // Let the mirror return buffers so the pool is reused rather than grown.
        std::thread::sleep(Duration::from_millis(1));
    }
    conv.close_normal(t, Direction::ClientToServer);
    want += tx.drain(&mut conv);
    std::thread::sleep(Duration::from_millis(30));
    assert!(flushes.load(Ordering::Relaxed) > 0, "idle flush ran");
    let snap = fanout.snapshot();
    assert_eq!(
        snap.sinks[0].counters.frames, want as u64,
        "published while running"
    );
    let (snap, _) = fanout.shutdown();
    assert_eq!(snap.dropped_full, 0);
    assert_eq!(seen.lock().unwrap().len(), want);
    // 3 handshake + (1 + 20*6) data/ack pairs + 3 close.
    assert_eq!(want, 3 + 2 * (1 + 20 * 6) + 3);
    assert!(tx.allocated <= 1024);
}
