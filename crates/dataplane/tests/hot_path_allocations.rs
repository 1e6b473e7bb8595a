//! The per-frame path allocates nothing once its flows are known: a fixed capture of the
//! testbed (ARP, ICMP v4/v6, UDP, an HTTP download) is decided once to warm the flow
//! table, then decided again while a counting allocator watches this thread. A connection that
//! starts again on the same ports (each round replays the capture's) costs a few for its
//! new flow, never one per frame.

use classify::policy::{Policy, PolicySpec};
use dataplane::{FlowConfig, Forwarder, Port, WorkerStats};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Instant;

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// Safety: every call is forwarded to the system allocator unchanged; the count is a
// side effect on a thread-local cell that needs no allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // Safety: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Safety: as above; `ptr` came from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // Safety: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn capture() -> Vec<(Port, Vec<u8>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../perf/testdata/mixed.pcap");
    let file = std::fs::File::open(path).expect("perf/testdata/mixed.pcap");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("a pcap file");
    let mut frames = Vec::new();
    let mut client_mac: Option<Vec<u8>> = None;
    while let Some(pkt) = reader.next_packet() {
        let data = pkt.expect("a readable packet").data.into_owned();
        let src = data.get(6..12).unwrap_or_default().to_vec();
        let port = if client_mac.get_or_insert_with(|| src.clone()) == &src {
            Port::A
        } else {
            Port::B
        };
        frames.push((port, data));
    }
    frames
}

fn decide(fwd: &mut Forwarder<usize>, frames: &[(Port, Vec<u8>)], now: Instant) {
    for (i, (port, frame)) in frames.iter().enumerate() {
        let _ = fwd.on_frame(*port, frame, i, now);
        if fwd.has_outputs() {
            fwd.outputs().for_each(drop);
        }
    }
}

#[test]
fn known_flows_are_forwarded_without_allocating() {
    let frames = capture();
    assert!(frames.len() > 200, "the capture holds {} frames", frames.len());
    let tcp_frames = frames
        .iter()
        .filter(|(_, f)| f.get(12..14) == Some(&[0x08, 0x00]) && f.get(23) == Some(&6))
        .count();
    assert!(tcp_frames > 100, "the capture holds {tcp_frames} IPv4 TCP frames");

    let policy = Policy::compile(&PolicySpec::default(), std::path::Path::new("."), &|p| {
        std::fs::read_to_string(p)
    })
    .expect("the default policy");
    // Userspace sees every frame (no kernel fast path), as with --userspace-forward.
    let flows = FlowConfig {
        fast_path: false,
        ..FlowConfig::default()
    };
    let stats = Arc::new(WorkerStats::default());
    let mut fwd = Forwarder::new(flows, Arc::new(policy), stats.clone());
    let flows_started = || stats.flows.started.get() + stats.flows.midstream.get();
    let now = Instant::now();

    let before_warm_up = allocations();
    decide(&mut fwd, &frames, now);
    // The counter counts: the first round creates the capture's flows.
    assert!(
        allocations() > before_warm_up,
        "the warm-up round allocated nothing: the counter is not counting"
    );

    let (before, started_before) = (allocations(), flows_started());
    for _ in 0..3 {
        decide(&mut fwd, &frames, now);
    }
    let steady = allocations() - before;
    let started = flows_started() - started_before;
    assert!(started <= 3 * 2, "{started} flows started again in 3 rounds");
    // A new flow costs a few: its session record, the end of the flow it replaces.
    const PER_NEW_FLOW: u64 = 8;
    assert!(
        steady <= PER_NEW_FLOW * started,
        "{steady} allocations while deciding {} frames, of which {started} started a flow",
        3 * frames.len()
    );
}
