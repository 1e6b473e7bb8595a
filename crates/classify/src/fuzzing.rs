//! Entry points for the fuzz targets in `fuzz/` (and for the test that replays their
//! corpus under `cargo test`).

use std::time::Instant;

use crate::{ClientHelloAssembler, Config, Progress};

/// The `client_hello` fuzz target's body.
///
/// `data[0]` picks a split point in the rest. The rest is classified four ways — whole,
/// in two parts in order, in two parts second-first, and one byte at a time from the
/// end — and all four must agree: delivery order must never change the answer.
pub fn client_hello(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    // Small budgets too, so the give-up paths are reached with short inputs.
    let config = Config {
        max_bytes: if selector & 1 == 0 { 16 * 1024 } else { 512 },
        ..Config::default()
    };
    let split = usize::from(selector) * stream.len() / 256;
    let (head, tail) = stream.split_at(split.min(stream.len()));
    let tail_offset = u32::try_from(head.len()).unwrap_or(u32::MAX);

    let whole = run(&config, &[(0, stream)]);
    let in_order = run(&config, &[(0, head), (tail_offset, tail)]);
    let swapped = run(&config, &[(tail_offset, tail), (0, head)]);
    assert_eq!(whole, in_order, "split in order changed the answer");
    assert_eq!(whole, swapped, "out-of-order delivery changed the answer");

    if stream.len() <= 4096 {
        let mut asm = ClientHelloAssembler::new(config.clone(), Instant::now());
        let mut last = Progress::NeedMore;
        for (i, byte) in stream.iter().enumerate().rev() {
            last = asm.push(u32::try_from(i).unwrap_or(u32::MAX), std::slice::from_ref(byte));
        }
        assert_eq!(whole, last, "byte-at-a-time reverse delivery changed the answer");
        assert!(asm.heap_bytes() <= 2 * config.max_bytes + 1024);
    }
}

fn run(config: &Config, segments: &[(u32, &[u8])]) -> Progress {
    let mut asm = ClientHelloAssembler::new(config.clone(), Instant::now());
    let mut last = Progress::NeedMore;
    for &(offset, bytes) in segments {
        last = asm.push(offset, bytes);
        assert!(asm.heap_bytes() <= 2 * config.max_bytes + 1024);
    }
    last
}

#[cfg(test)]
mod tests {
    /// Replays every file of the fuzz seed corpus (and anything the fuzzer has added
    /// there) through the target's body, so plain `cargo test` exercises it.
    #[test]
    fn fuzz_corpus_replays() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/client_hello");
        let entries = std::fs::read_dir(&dir).expect("fuzz corpus directory exists");
        let mut count = 0;
        for entry in entries {
            let path = entry.expect("readable corpus entry").path();
            let data = std::fs::read(&path).expect("readable corpus file");
            super::client_hello(&data);
            count += 1;
        }
        assert!(count >= 5, "expected the seed corpus in {}", dir.display());
    }
}
