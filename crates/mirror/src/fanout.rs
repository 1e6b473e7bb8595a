//! The mirror thread: owns the sinks, fed by workers through a bounded channel.
//!
//! Workers must never wait for the mirror. Each [`FanoutSender`] copies a frame into a
//! buffer from its own small pool and `try_send`s it; a full channel, an exhausted pool (the
//! mirror is behind) or a stopped mirror drops the frame and counts it. The mirror thread
//! writes each frame to every sink and hands the buffer back to the sender's pool, so after
//! warm-up no frame allocates.
//!
//! The thread flushes every sink when the channel has been idle for `flush_interval`, and at
//! least that often under load; it publishes counter snapshots just as often.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::conversation::{Conversation, Timestamp};
use crate::sink::{Sink, SinkCounters};

/// Sizes and periods of the fanout.
#[derive(Debug, Clone)]
pub struct FanoutOptions {
    /// Frames in flight between all senders and the mirror thread.
    pub channel_depth: usize,
    /// Buffers each sender may have in flight (its pool's size).
    pub pool_per_sender: usize,
    /// Capacity of each pooled buffer; longer frames still pass but grow their buffer once.
    pub frame_capacity: usize,
    /// Flush sinks and publish counters at least this often.
    pub flush_interval: Duration,
}

impl Default for FanoutOptions {
    fn default() -> Self {
        Self {
            channel_depth: 4096,
            pool_per_sender: 1024,
            frame_capacity: 1536,
            flush_interval: Duration::from_millis(100),
        }
    }
}

/// Counters of one sink, with its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkSnapshot {
    pub name: String,
    pub counters: SinkCounters,
}

/// What the fanout did so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FanoutSnapshot {
    /// Frames queued to the mirror thread.
    pub enqueued: u64,
    /// Frames dropped because the channel or the sender's pool was full.
    pub dropped_full: u64,
    /// Frames dropped because the mirror thread had stopped.
    pub dropped_closed: u64,
    /// Frames the mirror thread handed to the sinks.
    pub written: u64,
    /// Per-sink counters as last published by the mirror thread.
    pub sinks: Vec<SinkSnapshot>,
}

#[derive(Debug, Default)]
struct Shared {
    enqueued: AtomicU64,
    dropped_full: AtomicU64,
    dropped_closed: AtomicU64,
    written: AtomicU64,
    sinks: Mutex<Vec<SinkSnapshot>>,
}

impl Shared {
    fn snapshot(&self) -> FanoutSnapshot {
        FanoutSnapshot {
            enqueued: self.enqueued.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_closed: self.dropped_closed.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            sinks: self.sinks.lock().map(|s| s.clone()).unwrap_or_default(),
        }
    }
}

#[derive(Debug)]
enum Msg {
    Frame {
        ts: Timestamp,
        buf: Vec<u8>,
        home: SyncSender<Vec<u8>>,
    },
    Stop,
}

/// The running mirror thread.
#[derive(Debug)]
pub struct Fanout {
    tx: SyncSender<Msg>,
    shared: Arc<Shared>,
    opts: FanoutOptions,
    thread: Option<JoinHandle<Vec<Box<dyn Sink>>>>,
}

impl Fanout {
    /// Starts the mirror thread owning `sinks`.
    pub fn spawn(sinks: Vec<Box<dyn Sink>>, opts: FanoutOptions) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(opts.channel_depth.max(1));
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        let interval = opts.flush_interval;
        let thread = std::thread::Builder::new()
            .name("mirror".into())
            .spawn(move || run(sinks, rx, &thread_shared, interval))?;
        Ok(Self {
            tx,
            shared,
            opts,
            thread: Some(thread),
        })
    }

    /// A sender for one worker (each has its own buffer pool).
    pub fn sender(&self) -> FanoutSender {
        let (free_tx, free_rx) = mpsc::sync_channel(self.opts.pool_per_sender.max(1));
        FanoutSender {
            tx: self.tx.clone(),
            free_tx,
            free_rx,
            allocated: 0,
            pool: self.opts.pool_per_sender.max(1),
            frame_capacity: self.opts.frame_capacity,
            scratch: Vec::new(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// Counters now (sink counters as of the last publication).
    pub fn snapshot(&self) -> FanoutSnapshot {
        self.shared.snapshot()
    }

    /// Stops the thread after the frames already queued, flushes and closes every sink, and
    /// returns the final counters and the sinks. Later sends are counted in
    /// `dropped_closed`.
    pub fn shutdown(mut self) -> (FanoutSnapshot, Vec<Box<dyn Sink>>) {
        // A blocking send: shutdown may wait for the mirror to make room, workers never do.
        let _ = self.tx.send(Msg::Stop);
        let sinks = self.thread.take().and_then(|t| t.join().ok()).unwrap_or_default();
        (self.shared.snapshot(), sinks)
    }
}

impl Drop for Fanout {
    fn drop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = self.tx.send(Msg::Stop);
            let _ = t.join();
        }
    }
}

fn publish(sinks: &[Box<dyn Sink>], shared: &Shared) {
    if let Ok(mut snap) = shared.sinks.lock() {
        snap.clear();
        snap.extend(sinks.iter().map(|s| SinkSnapshot {
            name: s.name().to_owned(),
            counters: s.counters(),
        }));
    }
}

fn run(
    mut sinks: Vec<Box<dyn Sink>>,
    rx: Receiver<Msg>,
    shared: &Shared,
    interval: Duration,
) -> Vec<Box<dyn Sink>> {
    publish(&sinks, shared);
    let mut last_flush = Instant::now();
    loop {
        match rx.recv_timeout(interval) {
            Ok(Msg::Frame { ts, buf, home }) => {
                for s in &mut sinks {
                    // Failures are counted by the sink itself.
                    let _ = s.write(ts, &buf);
                }
                shared.written.fetch_add(1, Ordering::Relaxed);
                // The sender may be gone; then the buffer is simply freed.
                let _ = home.try_send(buf);
                if last_flush.elapsed() >= interval {
                    for s in &mut sinks {
                        let _ = s.flush();
                    }
                    publish(&sinks, shared);
                    last_flush = Instant::now();
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                for s in &mut sinks {
                    let _ = s.flush();
                }
                publish(&sinks, shared);
                last_flush = Instant::now();
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for s in &mut sinks {
        let _ = s.close();
    }
    publish(&sinks, shared);
    sinks
}

/// A worker's handle to the mirror: never blocks, counts what it could not hand over.
#[derive(Debug)]
pub struct FanoutSender {
    tx: SyncSender<Msg>,
    free_tx: SyncSender<Vec<u8>>,
    free_rx: Receiver<Vec<u8>>,
    allocated: usize,
    pool: usize,
    frame_capacity: usize,
    /// Where a frame is polled out of a conversation when no pooled buffer is free.
    scratch: Vec<u8>,
    shared: Arc<Shared>,
}

impl FanoutSender {
    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if let Ok(b) = self.free_rx.try_recv() {
            return Some(b);
        }
        if self.allocated < self.pool {
            self.allocated += 1;
            return Some(Vec::with_capacity(self.frame_capacity));
        }
        None
    }

    fn hand_over(&mut self, ts: Timestamp, buf: Vec<u8>) -> bool {
        let home = self.free_tx.clone();
        match self.tx.try_send(Msg::Frame { ts, buf, home }) {
            Ok(()) => {
                self.shared.enqueued.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(msg)) => {
                self.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
                self.recycle(msg);
                false
            }
            Err(TrySendError::Disconnected(msg)) => {
                self.shared.dropped_closed.fetch_add(1, Ordering::Relaxed);
                self.recycle(msg);
                false
            }
        }
    }

    fn recycle(&mut self, msg: Msg) {
        if let Msg::Frame { buf, .. } = msg {
            let _ = self.free_tx.try_send(buf);
        }
    }

    /// Mirrors a real frame unchanged (a plaintext flow mirrored as-is). `false` if it was
    /// dropped (counted).
    pub fn mirror_as_is(&mut self, ts: Timestamp, frame: &[u8]) -> bool {
        let Some(mut buf) = self.take_buffer() else {
            self.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        buf.clear();
        buf.extend_from_slice(frame);
        self.hand_over(ts, buf)
    }

    /// Drains every pending frame of `conv` into the mirror, polling straight into pooled
    /// buffers (no extra copy). Returns how many were handed over; the rest were dropped
    /// and counted.
    pub fn drain(&mut self, conv: &mut Conversation) -> usize {
        let need = conv.max_frame_len();
        let mut sent = 0;
        while conv.has_pending() {
            match self.take_buffer() {
                Some(mut buf) => {
                    buf.resize(need, 0);
                    let Some(f) = conv.poll_frame(&mut buf) else {
                        let _ = self.free_tx.try_send(buf);
                        break;
                    };
                    buf.truncate(f.len);
                    if self.hand_over(f.timestamp, buf) {
                        sent += 1;
                    }
                }
                None => {
                    // The mirror is behind: consume the frame anyway so the conversation
                    // does not grow without bound, and count it.
                    self.scratch.resize(need, 0);
                    if conv.poll_frame(&mut self.scratch).is_some() {
                        self.shared.dropped_full.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
        sent
    }
}

#[cfg(test)]
mod tests;
