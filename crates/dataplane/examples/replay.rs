//! Replays a capture through the forwarding decision, for instruction counts:
//!
//!     cargo build --release -p dataplane --example replay
//!     valgrind --tool=callgrind --toggle-collect='*decide_all*' \
//!         target/release/examples/replay perf/testdata/mixed.pcap 100
//!
//! Only `decide_all` is measured (parse, flow key, decision, counters), not reading the
//! file; `perf/callgrind` does this and divides by the frames decided.

use dataplane::{Action, Forwarder, Port, WorkerStats};
use std::sync::Arc;

#[inline(never)]
fn decide_all(fwd: &mut Forwarder, frames: &[(Port, Vec<u8>)], rounds: usize) -> usize {
    let mut forwarded = 0;
    for _ in 0..rounds {
        for (port, frame) in frames {
            if fwd.on_frame(*port, frame) == Action::Forward {
                forwarded += 1;
            }
        }
        // Drained as the worker drains them once per batch.
        fwd.take_bypass_requests().for_each(drop);
    }
    forwarded
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: replay FILE.pcap [ROUNDS]"))?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path)?)?;
    let mut frames = Vec::new();
    let mut first_src: Option<Vec<u8>> = None;
    while let Some(pkt) = reader.next_packet() {
        let data = pkt?.data.into_owned();
        // Frames from the first sender seen came in on port A, the rest on port B.
        let src = data.get(6..12).map(<[u8]>::to_vec);
        let port =
            if first_src.get_or_insert_with(|| src.clone().unwrap_or_default()) == &src.unwrap_or_default() {
                Port::A
            } else {
                Port::B
            };
        frames.push((port, data));
    }
    let mut fwd = Forwarder::new(true, Arc::new(WorkerStats::default()));
    let forwarded = decide_all(&mut fwd, &frames, rounds);
    println!("frames_decided={} forwarded={forwarded}", frames.len() * rounds);
    Ok(())
}
