//! The in-memory smoltcp device each half's interface runs on: one IP packet in (the
//! translated segment from the real peer), a short queue of IP packets out (what the
//! half wants to send, translated on the way to the real peer by [`crate::Splice`]).

use std::collections::VecDeque;

use smoltcp::phy::{self, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant as SmolInstant;

/// More than one egress pass ever queues (smoltcp dispatches one segment per socket
/// per pass, plus an immediate reply to an ingress segment); a full queue makes
/// smoltcp hold the segment back and retry, which is the back-pressure we want.
const TX_QUEUE_LIMIT: usize = 8;

#[derive(Debug)]
pub(crate) struct PacketDevice {
    /// IP MTU smoltcp sizes its segments by.
    mtu: usize,
    rx: Vec<u8>,
    rx_ready: bool,
    tx: VecDeque<Vec<u8>>,
    /// Emptied packet buffers, reused so that steady state allocates nothing.
    spare: Vec<Vec<u8>>,
}

impl PacketDevice {
    pub(crate) fn new(mtu: usize) -> Self {
        Self {
            mtu,
            rx: Vec::with_capacity(mtu),
            rx_ready: false,
            tx: VecDeque::with_capacity(TX_QUEUE_LIMIT),
            spare: Vec::with_capacity(TX_QUEUE_LIMIT),
        }
    }

    /// Stages one IP packet for the next ingress poll; `fill` writes it into a buffer of
    /// exactly `len` bytes.
    pub(crate) fn stage_rx(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) {
        self.rx.clear();
        self.rx.resize(len, 0);
        fill(&mut self.rx);
        self.rx_ready = true;
    }

    /// Drops a staged packet that the interface did not consume.
    pub(crate) fn clear_rx(&mut self) {
        self.rx_ready = false;
    }

    pub(crate) fn has_tx(&self) -> bool {
        !self.tx.is_empty()
    }

    pub(crate) fn pop_tx(&mut self) -> Option<Vec<u8>> {
        self.tx.pop_front()
    }

    /// Returns a buffer taken with [`Self::pop_tx`] for reuse.
    pub(crate) fn recycle(&mut self, mut packet: Vec<u8>) {
        if self.spare.len() < TX_QUEUE_LIMIT {
            packet.clear();
            self.spare.push(packet);
        }
    }
}

impl phy::Device for PacketDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _: SmolInstant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if !self.rx_ready {
            return None;
        }
        self.rx_ready = false;
        Some((
            RxToken(&self.rx),
            TxToken {
                tx: &mut self.tx,
                spare: &mut self.spare,
            },
        ))
    }

    fn transmit(&mut self, _: SmolInstant) -> Option<TxToken<'_>> {
        if self.tx.len() >= TX_QUEUE_LIMIT {
            return None;
        }
        Some(TxToken {
            tx: &mut self.tx,
            spare: &mut self.spare,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // smoltcp clamps the advertised window to burst size × MSS when a burst size is
        // set; segments are handed over one by one here, so no burst limit applies.
        caps.max_burst_size = None;
        // Real segments are verified when they are parsed and every segment leaving is
        // re-emitted with fresh checksums, so checksums inside the device are wasted work.
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }
}

#[derive(Debug)]
pub(crate) struct RxToken<'a>(&'a [u8]);

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(self.0)
    }
}

#[derive(Debug)]
pub(crate) struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut packet = self.spare.pop().unwrap_or_default();
        packet.resize(len, 0);
        let result = f(&mut packet);
        self.tx.push_back(packet);
        result
    }
}
