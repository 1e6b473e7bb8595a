//! Any bytes as a policy: the first half as a `[policy]` TOML table, the second as a list
//! file used by SNI and by destination rules. Parsing and compiling must never panic; a
//! policy that compiles must answer a decision for a hello and addresses taken from the
//! same bytes.
#![no_main]

use classify::policy::{FlowFacts, Policy, PolicySpec};
use classify::{ClientHelloInfo, ProtocolVersion, VersionFamily};
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fn hello(sni: Option<String>) -> ClientHelloInfo {
    ClientHelloInfo {
        version_family: VersionFamily::Tls13,
        record_version: Some(ProtocolVersion::TLS1_0),
        legacy_version: ProtocolVersion::TLS1_2,
        offered_versions: vec![ProtocolVersion::TLS1_3],
        max_version: ProtocolVersion::TLS1_3,
        sni,
        alpn: vec![b"h2".to_vec()],
        cipher_suites: Vec::new(),
        extensions: Vec::new(),
        ech_offered: false,
        supported_groups: Vec::new(),
        key_share_groups: Vec::new(),
        signature_algorithms: Vec::new(),
        grease_seen: false,
        ja4: String::new(),
        ja4_raw: String::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let (toml_part, list_part) = data.split_at(data.len() / 2);
    let list = String::from_utf8_lossy(list_part).into_owned();
    let read = |_: &Path| Ok(list.clone());
    let sni = list.lines().next().map(str::to_string);
    let h = hello(sni);
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

