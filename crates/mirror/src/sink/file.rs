//! pcap and pcapng files, rotated by size and by frame time.
//!
//! Flush policy (what a crash can lose): frames go through a `BufWriter` (64 KiB), which
//! is flushed to the kernel every `flush_every_frames` frames, whenever the frame time has
//! advanced `flush_interval` since the last flush, on every [`Sink::flush`] (the fanout
//! calls it when idle), on rotation and on close. A crash of the process thus loses at most
//! the unflushed buffer: fewer than `flush_every_frames` frames, or `flush_interval` of frame
//! time, whichever is less. No fsync: a power loss is the page cache's business.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

use super::{pcap_global_header, pcap_record_header, Sink, SinkCounters, SinkError};
use crate::conversation::Timestamp;

const BUF_SIZE: usize = 64 * 1024;

/// On-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcapFormat {
    /// Classic libpcap, microsecond timestamps: read by everything.
    Pcap,
    /// pcapng, one Ethernet interface, nanosecond timestamps.
    PcapNg,
}

/// Where and how the files are written.
#[derive(Debug, Clone)]
pub struct PcapFileOptions {
    /// Without rotation, the file itself. With rotation, a template: `dir/name.ext` becomes
    /// `dir/name-000001.ext`, `dir/name-000002.ext`, ...
    pub path: PathBuf,
    pub format: PcapFormat,
    /// Start a new file before one would grow past this many bytes.
    pub rotate_bytes: Option<u64>,
    /// Start a new file when a frame's time is this far past the current file's first frame.
    pub rotate_interval: Option<Duration>,
    /// Flush the buffer after this many frames.
    pub flush_every_frames: u32,
    /// Flush the buffer when frame time has advanced this much since the last flush.
    pub flush_interval: Duration,
    /// Frames are cut to this length in the file (the original length is recorded).
    pub snaplen: u32,
}

impl PcapFileOptions {
    /// A classic pcap at `path`, no rotation, default flush policy.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            format: PcapFormat::Pcap,
            rotate_bytes: None,
            rotate_interval: None,
            flush_every_frames: 256,
            flush_interval: Duration::from_millis(200),
            snaplen: 65535,
        }
    }
}

enum Writer {
    Pcap(BufWriter<File>),
    PcapNg(PcapNgWriter<BufWriter<File>>),
}

// PcapNgWriter has no Debug; the variant is all there is to say.
impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Writer::Pcap(_) => "Writer::Pcap",
            Writer::PcapNg(_) => "Writer::PcapNg",
        })
    }
}

impl Writer {
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Writer::Pcap(w) => w.flush(),
            Writer::PcapNg(w) => w.get_mut().flush(),
        }
    }
}

/// A [`Sink`] writing pcap or pcapng files. A file is created at the first frame after
/// start or rotation; a write error ends the current file (the next frame starts a new one).
#[derive(Debug)]
pub struct PcapFileSink {
    opts: PcapFileOptions,
    name: String,
    writer: Option<Writer>,
    /// Index of the current (or last) file; 0 before the first.
    index: u64,
    file_bytes: u64,
    file_start: Timestamp,
    file_frames: u64,
    unflushed: u32,
    last_flush: Timestamp,
    files: Vec<PathBuf>,
    counters: SinkCounters,
}

impl PcapFileSink {
    /// Nothing is opened until the first frame.
    pub fn new(opts: PcapFileOptions) -> Self {
        let name = format!("pcap:{}", opts.path.display());
        Self {
            opts,
            name,
            writer: None,
            index: 0,
            file_bytes: 0,
            file_start: Duration::ZERO,
            file_frames: 0,
            unflushed: 0,
            last_flush: Duration::ZERO,
            files: Vec::new(),
            counters: SinkCounters::default(),
        }
    }

    /// Files created so far, oldest first.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    fn rotating(&self) -> bool {
        self.opts.rotate_bytes.is_some() || self.opts.rotate_interval.is_some()
    }

    fn path_for(&self, index: u64) -> PathBuf {
        if !self.rotating() {
            return self.opts.path.clone();
        }
        let p: &Path = &self.opts.path;
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "mirror".into());
        let name = match p.extension() {
            Some(ext) => format!("{stem}-{index:06}.{}", ext.to_string_lossy()),
            None => format!("{stem}-{index:06}"),
        };
        p.with_file_name(name)
    }

    fn open(&mut self, ts: Timestamp) -> Result<(), SinkError> {
        self.index += 1;
        let path = self.path_for(self.index);
        let file = File::create(&path)?;
        let mut buf = BufWriter::with_capacity(BUF_SIZE, file);
        let header_len = match self.opts.format {
            PcapFormat::Pcap => {
                let h = pcap_global_header(self.opts.snaplen);
                buf.write_all(&h)?;
                self.writer = Some(Writer::Pcap(buf));
                h.len() as u64
            }
            PcapFormat::PcapNg => {
                let mut w = PcapNgWriter::new(buf)?;
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: self.opts.snaplen,
                    // pcap-file writes EPB timestamps in nanoseconds: say so (pcapng §4.2).
                    options: vec![InterfaceDescriptionOption::IfTsResol(9)],
                };
                let idb_len = w.write_pcapng_block(idb)?;
                self.writer = Some(Writer::PcapNg(w));
                // Section header block without options: 28 bytes.
                28 + idb_len as u64
            }
        };
        self.files.push(path);
        self.counters.reopens += 1;
        self.file_bytes = header_len;
        self.file_start = ts;
        self.file_frames = 0;
        self.last_flush = ts;
        self.unflushed = 0;
        Ok(())
    }

    fn finish_file(&mut self) -> Result<(), SinkError> {
        self.unflushed = 0;
        match self.writer.take() {
            Some(mut w) => Ok(w.flush()?),
            None => Ok(()),
        }
    }

    fn record_len(&self, caplen: usize) -> u64 {
        match self.opts.format {
            PcapFormat::Pcap => 16 + caplen as u64,
            // EPB: 28 bytes of header and trailer, data padded to 4 bytes.
            PcapFormat::PcapNg => 32 + caplen.div_ceil(4) as u64 * 4,
        }
    }

    fn write_inner(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        let caplen = frame.len().min(self.opts.snaplen as usize);
        let data = frame.get(..caplen).unwrap_or(frame);
        let rec = self.record_len(caplen);
        if self.writer.is_some() && self.file_frames > 0 {
            let too_big = self
                .opts
                .rotate_bytes
                .is_some_and(|max| self.file_bytes + rec > max);
            let too_old = self
                .opts
                .rotate_interval
                .is_some_and(|i| ts.saturating_sub(self.file_start) >= i);
            if too_big || too_old {
                self.finish_file()?;
            }
        }
        if self.writer.is_none() {
            self.open(ts)?;
        }
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        match self.writer.as_mut() {
            Some(Writer::Pcap(w)) => {
                w.write_all(&pcap_record_header(ts, caplen as u32, orig_len))?;
                w.write_all(data)?;
            }
            Some(Writer::PcapNg(w)) => {
                let epb = EnhancedPacketBlock {
                    interface_id: 0,
                    timestamp: ts,
                    original_len: orig_len,
                    data: Cow::Borrowed(data),
                    options: Vec::new(),
                };
                w.write_pcapng_block(epb)?;
            }
            None => return Err(SinkError::Unavailable),
        }
        self.file_bytes += rec;
        self.file_frames += 1;
        self.unflushed += 1;
        self.counters.frames += 1;
        self.counters.bytes += frame.len() as u64;
        if self.unflushed >= self.opts.flush_every_frames
            || ts.saturating_sub(self.last_flush) >= self.opts.flush_interval
        {
            self.last_flush = ts;
            self.unflushed = 0;
            if let Some(w) = self.writer.as_mut() {
                w.flush()?;
            }
        }
        Ok(())
    }
}

impl Sink for PcapFileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        let r = self.write_inner(ts, frame);
        if r.is_err() {
            self.counters.errors += 1;
            // The file's tail is in an unknown state: end it, the next frame starts anew.
            self.writer = None;
        }
        r
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        self.unflushed = 0;
        match self.writer.as_mut() {
            Some(w) => w.flush().map_err(|e| {
                self.counters.errors += 1;
                SinkError::from(e)
            }),
            None => Ok(()),
        }
    }

    fn close(&mut self) -> Result<(), SinkError> {
        self.finish_file()
    }

    fn counters(&self) -> SinkCounters {
        self.counters
    }
}

impl Drop for PcapFileSink {
    fn drop(&mut self) {
        let _ = self.finish_file();
    }
}

#[cfg(test)]
mod tests;
