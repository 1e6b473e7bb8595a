//! Replays a capture through the forwarding decision, for instruction counts:
//!
//!     cargo build --release -p dataplane --example replay
//!     valgrind --tool=callgrind --toggle-collect='*decide_all*' \
//!         target/release/examples/replay perf/testdata/mixed.pcap 100
//!
//! Only `decide_all` is measured (parse, flow table, classification, policy, counters),
//! not reading the file; `perf/callgrind` does this and divides by the frames decided.
//! The policy is the default one (every flow bypassed); later rounds see decided flows.

use classify::policy::{Policy, PolicySpec};
use dataplane::{Action, FlowConfig, Forwarder, Port, WorkerStats};
use std::sync::Arc;
use std::time::Instant;

#[inline(never)]
fn decide_all(fwd: &mut Forwarder<usize>, frames: &[(Port, Vec<u8>)], rounds: usize) -> usize {
    let mut forwarded = 0;
    let now = Instant::now();
    for _ in 0..rounds {
        for (i, (port, frame)) in frames.iter().enumerate() {
            if fwd.on_frame(*port, frame, i, now) == Action::Forward {
                forwarded += 1;
            }
            // Drained as the worker drains them, after each frame that produced any.
            if fwd.has_outputs() {
                forwarded += fwd.outputs().count();
            }
        }
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
    let policy = Policy::compile(&PolicySpec::default(), std::path::Path::new("."), &|p| {
        std::fs::read_to_string(p)
    })?;
    let mut fwd = Forwarder::new(
        FlowConfig::default(),
        Arc::new(policy),
        Arc::new(WorkerStats::default()),
    );
    let forwarded = decide_all(&mut fwd, &frames, rounds);
    println!("frames_decided={} forwarded={forwarded}", frames.len() * rounds);
    Ok(())
}
