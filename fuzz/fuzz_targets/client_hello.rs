//! Arbitrary bytes as a client's first payload, split at a fuzzer-chosen point and
//! delivered in several orders; see `classify::fuzzing::client_hello`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    classify::fuzzing::client_hello(data);
});
