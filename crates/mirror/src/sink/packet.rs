//! Transmit on a named interface (a NIC's mirror port) with an `AF_PACKET`/`SOCK_RAW`
//! socket: each frame is one non-blocking `sendto(2)`, link header included.
//!
//! The socket is opened with protocol 0, so it receives nothing: the mirror is TX-only and
//! must not pay for copies of the interface's traffic. A full queue (`EAGAIN`/`ENOBUFS`)
//! drops the frame (counted); an interface that disappeared (`ENXIO`/`ENODEV`) is counted
//! as an error and looked up by name again with backoff.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{Backoff, Sink, SinkCounters, SinkError};
use crate::conversation::Timestamp;

/// A [`Sink`] sending frames out of an interface through a packet socket.
#[derive(Debug)]
pub struct PacketSocketSink {
    ifname: String,
    name: String,
    fd: OwnedFd,
    /// 0 while the interface is missing.
    ifindex: i32,
    backoff: Backoff,
    next_lookup: Instant,
    counters: SinkCounters,
}

fn ifindex(ifname: &str) -> io::Result<i32> {
    let cname = CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cname` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(cname.as_ptr()) } {
        0 => Err(io::ErrorKind::NotFound.into()),
        i => i32::try_from(i).map_err(|_| io::ErrorKind::InvalidData.into()),
    }
}

impl PacketSocketSink {
    /// Opens the socket for `ifname`, which must exist. Needs CAP_NET_RAW.
    pub fn open(ifname: &str) -> io::Result<Self> {
        let index = ifindex(ifname)?;
        // SAFETY: plain socket(2) call; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a freshly opened fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            ifname: ifname.to_owned(),
            name: format!("packet:{ifname}"),
            fd,
            ifindex: index,
            backoff: Backoff::new(Duration::from_millis(50), Duration::from_secs(5)),
            next_lookup: Instant::now(),
            counters: SinkCounters {
                reopens: 1,
                ..Default::default()
            },
        })
    }

    fn relookup(&mut self) {
        let now = Instant::now();
        if now < self.next_lookup {
            return;
        }
        match ifindex(&self.ifname) {
            Ok(i) => {
                self.ifindex = i;
                self.backoff.reset();
                self.counters.reopens += 1;
            }
            Err(_) => self.next_lookup = now + self.backoff.next_delay(),
        }
    }
}

impl Sink for PacketSocketSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn write(&mut self, _ts: Timestamp, frame: &[u8]) -> Result<(), SinkError> {
        if self.ifindex == 0 {
            self.relookup();
            if self.ifindex == 0 {
                self.counters.dropped += 1;
                return Err(SinkError::Unavailable);
            }
        }
        // SAFETY: all-zero sockaddr_ll is valid; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = self.ifindex;
        // SAFETY: `frame` is valid for its length and `sll` for the size passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                libc::MSG_DONTWAIT,
                (&raw const sll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n >= 0 {
            self.counters.frames += 1;
            self.counters.bytes += frame.len() as u64;
            return Ok(());
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN | libc::ENOBUFS) => {
                self.counters.dropped += 1;
                Err(SinkError::WouldBlock)
            }
            Some(libc::ENXIO | libc::ENODEV) => {
                self.counters.errors += 1;
                self.ifindex = 0;
                self.next_lookup = Instant::now() + self.backoff.next_delay();
                Err(err.into())
            }
            _ => {
                // ENETDOWN, EMSGSIZE...: this frame is lost; the next may pass.
                self.counters.errors += 1;
                Err(err.into())
            }
        }
    }

    fn flush(&mut self) -> Result<(), SinkError> {
        if self.ifindex == 0 {
            self.relookup();
        }
        Ok(())
    }

    fn counters(&self) -> SinkCounters {
        self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::ConversationOptions;
    use crate::sink::test_support::{frames, in_netns, ip, skip_unless_root, Capture};
    use std::net::{IpAddr, Ipv6Addr};

    #[test]
    fn frames_leave_the_interface_and_errors_are_counted() {
        if skip_unless_root("packet socket sink test") {
            return;
        }
        in_netns(|| {
            ip(&["link", "add", "gwmpa", "type", "veth", "peer", "name", "gwmpb"]);
            ip(&["link", "set", "gwmpa", "up"]);
            ip(&["link", "set", "gwmpb", "up"]);
            let cap = Capture::open("gwmpb");
            let mut sink = PacketSocketSink::open("gwmpa").unwrap();
            let endpoints = crate::Endpoints {
                client_mac: [2, 0, 0, 0, 1, 1],
                server_mac: [2, 0, 0, 0, 1, 2],
                client_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
                client_port: 40001,
                server_ip: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2)),
                server_port: 443,
            };
            let want = frames(endpoints, &ConversationOptions::default());
            for (ts, f) in &want {
                // A veth queue can be briefly full: that is a counted drop, not a failure.
                let _ = sink.write(*ts, f);
            }
            let c = sink.counters();
            assert_eq!(c.frames + c.dropped, want.len() as u64, "{c:?}");
            let got = cap.collect(Duration::from_millis(200));
            let arrived = want.iter().filter(|(_, f)| got.contains(f)).count() as u64;
            assert_eq!(arrived, c.frames);

            ip(&["link", "del", "gwmpa"]);
            for (ts, f) in &want {
                let _ = sink.write(*ts, f);
            }
            let after = sink.counters();
            assert!(after.errors >= 1, "{after:?}");
            assert_eq!(after.frames, c.frames);
        });
    }
}
