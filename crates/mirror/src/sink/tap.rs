//! A TAP device by name: every frame is one non-blocking `write(2)` on `/dev/net/tun`
//! attached with `IFF_TAP | IFF_NO_PI`, so it appears on the interface as if received.
//!
//! The sink attaches only to a TAP that exists (created by the operator or the testbed with
//! `ip tuntap add ... mode tap`): attaching to a missing name would create a transient
//! device nobody configured, which vanishes with the sink. If the TAP disappears, writes
//! fail (`EBADFD`/`EIO`), are counted, the fd is closed, and reattaching is tried with
//! exponential backoff while frames are dropped (counted).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Backoff, Sink, SinkCounters, SinkError};
use crate::conversation::Timestamp;

/// A [`Sink`] writing frames to a TAP device.
#[derive(Debug)]
pub struct TapSink {
    ifname: String,
    name: String,
    fd: Option<OwnedFd>,
    backoff: Backoff,
    next_attempt: Instant,
    counters: SinkCounters,
}

impl TapSink {
    /// Attaches to the existing TAP `ifname`; fails if it is missing or not a TAP.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let fd = attach(ifname)?;
        Ok(Self {
            ifname: ifname.to_owned(),
            name: format!("tap:{ifname}"),
            fd: Some(fd),
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            next_attempt: Instant::now(),
            counters: SinkCounters {
                reopens: 1,
                ..Default::default()
            },
        })
    }

    /// Whether the device is attached now.
    pub fn is_attached(&self) -> bool {
        self.fd.is_some()
    }

    fn try_reattach(&mut self) {
        let now = Instant::now();
        if now < self.next_attempt {
            return;
        }
        match attach(&self.ifname) {
            Ok(fd) => {
                self.fd = Some(fd);
                self.backoff.reset();
                self.counters.reopens += 1;
            }
            Err(_) => self.next_attempt = now + self.backoff.next_delay(),
        }
    }

    fn detach(&mut self) {
        self.fd = None;
        self.next_attempt = Instant::now() + self.backoff.next_delay();
    }
}

/// Opens `/dev/net/tun` and attaches it to the TAP `ifname`.
fn attach(ifname: &str) -> io::Result<OwnedFd> {
    let cname = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let bytes = cname.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::if_nametoindex(cname.as_ptr()) } == 0 {
        return Err(io::ErrorKind::NotFound.into());
    }
    // SAFETY: a constant NUL-terminated path; the returned fd is checked below.
    let raw = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly opened fd that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `ifr` is.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF, &mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

impl Sink for TapSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, _ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        if self.fd.is_none() {
            self.try_reattach();
        }
        let Some(fd) = self.fd.as_ref() else {
            self.counters.dropped += 1;
            return Err(SinkError::Unavailable);
        };
        // SAFETY: `frame` is valid for `frame.len()` bytes; the fd is owned and open.
        let n = unsafe { libc::write(fd.as_raw_fd(), frame.as_ptr().cast(), frame.len()) };
        if n >= 0 {
            self.counters.frames += 1;
            self.counters.bytes += frame.len() as u64;
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::WouldBlock => {
                self.counters.dropped += 1;
                Err(SinkError::WouldBlock)
            }
            _ => {
                // EBADFD: the device was deleted; EIO and others: treat the same, reattach.
                self.counters.errors += 1;
                self.detach();
                Err(err.into())
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.fd.is_none() {
            self.try_reattach();
        }
        Ok(())
    }

    fn counters(&self) -> SinkCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests;
