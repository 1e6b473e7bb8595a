use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count with one writer (the worker that owns it) and any
/// number of readers (the stats socket).
///
/// Single-writer is what makes `add` a plain load and store rather than a locked
/// read-modify-write: the per-packet path pays no bus lock, and readers still see a
/// value that was true at some recent instant.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }

    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Overwrites the value; for counters mirrored from elsewhere (kernel statistics).
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    crate::counter_set! {
        struct Demo {
            /// frames seen
            frames,
            /// bytes seen
            bytes,
        }
    }

    #[test]
    fn counter_set_snapshots_every_field_with_its_doc() {
        let d = Demo::default();
        d.frames.incr();
        d.bytes.add(1500);
        d.bytes.add(60);
        let snap = d.snapshot();
        assert_eq!(snap["frames"], 1);
        assert_eq!(snap["bytes"], 1560);
        assert_eq!(
            Demo::FIELDS,
            &[("frames", " frames seen"), ("bytes", " bytes seen")]
        );
    }
}
