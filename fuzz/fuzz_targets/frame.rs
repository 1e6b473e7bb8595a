//! Any bytes as an Ethernet frame: `wire::parse_frame` must never panic, and what it
//! reports must be consistent with the bytes it was given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wire::{parse_frame, L3};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = parse_frame(data) {
        if let L3::Ip { flow: Some((key, _)), tcp: Some(tcp), .. } = frame.l3 {
            assert!(key.family == 4 || key.family == 6);
            // The payload is a view into the frame, never past its end.
            assert!(tcp.payload.len() <= data.len());
        }
    }
});
