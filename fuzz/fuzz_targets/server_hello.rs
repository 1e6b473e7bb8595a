//! Arbitrary bytes as a server's first payload: the ServerHello reader must return an
//! answer or an error, never panic.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = classify::parse_server_hello(data) {
        let _ = classify::cipher_suite_name(info.cipher_suite);
    }
});
