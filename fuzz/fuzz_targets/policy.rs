//! Any bytes as a policy: the first half as a `[policy]` TOML table, the second as a list
//! file used by SNI and by destination rules. Parsing and compiling must never panic; a
//! policy that compiles must answer a decision for a hello and addresses taken from the
//! same bytes.
#![no_main]

use classify::policy::{FlowFacts, Policy, PolicySpec};
use classify::{ClientHelloInfo, VersionFamily};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let (toml_part, list_part) = data.split_at(data.len() / 2);
    let list = String::from_utf8_lossy(list_part).into_owned();
    let read = |_: &Path| Ok(list.clone());
    let sni = list.lines().next().map(str::to_string);
    let h = ClientHelloInfo::with_policy_fields(sni, &["h2"], VersionFamily::Tls13);
    let facts = FlowFacts {
        src: [10, 0, 0, 1].into(),
        dst: std::net::IpAddr::from([list_part.first().copied().unwrap_or(0), 0, 0, 2]),
        dst_port: 443,
        hello: &h,
    };

    if let Ok(text) = std::str::from_utf8(toml_part) {
        if let Ok(spec) = toml::from_str::<PolicySpec>(text) {
            if let Ok(policy) = Policy::compile(&spec, Path::new("."), &read) {
                let _ = policy.decide(&facts);
                let _ = policy.summary();
            }
        }
    }
    for field in ["sni", "dst"] {
        let text = format!("[lists]\nl = \"l.txt\"\n[[rule]]\n{field} = \"list:l\"\naction = \"block\"\n");
        let spec: PolicySpec = toml::from_str(&text).expect("a fixed spec parses");
        if let Ok(policy) = Policy::compile(&spec, Path::new("."), &read) {
            let _ = policy.decide(&facts);
        }
    }
});

