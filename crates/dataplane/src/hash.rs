//! The flow table's hasher.

use std::hash::{BuildHasher, Hasher};

/// A multiply-rotate hash over 64-bit words with a per-worker random seed, for the
/// flow table. SipHash (the std default) was 45% of the instructions of the
/// whole forwarding decision under callgrind (`perf/callgrind`); flow keys are 40 bytes
/// that this folds in five steps. The seed keeps collisions unpredictable to a sender,
/// and the table is bounded (its capacity is fixed), so a crafted flood costs little either way.
#[derive(Debug, Clone)]
pub(crate) struct KeyedFoldHash {
    seed: u64,
}

impl KeyedFoldHash {
    pub(crate) fn new() -> Self {
        Self {
            seed: std::collections::hash_map::RandomState::new().hash_one(0u64),
        }
    }
}

impl BuildHasher for KeyedFoldHash {
    type Hasher = FoldHasher;
    fn build_hasher(&self) -> FoldHasher {
        FoldHasher(self.seed)
    }
}

#[derive(Debug)]
pub(crate) struct FoldHasher(u64);

impl FoldHasher {
    #[inline]
    fn fold(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for FoldHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            for (d, s) in word.iter_mut().zip(chunk) {
                *d = *s;
            }
            self.fold(u64::from_ne_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.fold(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.fold(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.fold(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}
