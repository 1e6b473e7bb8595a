//! A whole `[policy]` table as an operator writes it, parsed with `toml`, with lists read
//! from `testdata/policy/`, deciding for ClientHellos captured from real clients; and the
//! errors an operator sees for mistakes in either.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use classify::policy::{PortMatch, TlsVersionMatch};
use classify::{
    Action, ClientHelloAssembler, ClientHelloInfo, Config, Decision, FlowFacts, Policy, PolicyError,
    PolicySpec, Progress, RuleRef, RuleSpec, VersionFamily,
};
use serde::Deserialize;

/// The part of glasswire.toml this crate owns, as the binary's config embeds it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    policy: PolicySpec,
}

fn parse(toml_text: &str) -> Result<PolicySpec, toml::de::Error> {
    toml::from_str::<ConfigFile>(toml_text).map(|c| c.policy)
}

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/policy")
}

fn read_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

fn compile(toml_text: &str) -> Result<Policy, PolicyError> {
    let spec = parse(toml_text).expect("valid TOML");
    Policy::compile(&spec, &testdata(), &read_file)
}

/// A real client's first flight, classified the way the data path will.
fn captured(bytes: &[u8]) -> ClientHelloInfo {
    match ClientHelloAssembler::new(Config::default(), Instant::now()).push(0, bytes) {
        Progress::Done(info) => *info,
        other => panic!("expected a ClientHello, got {other:?}"),
    }
}

fn openssl() -> ClientHelloInfo {
    // SNI example.com, ALPN h2 + http/1.1, TLS 1.3.
    captured(include_bytes!("../testdata/openssl_s_client.bin"))
}

fn openssl_tls12_nosni() -> ClientHelloInfo {
    captured(include_bytes!("../testdata/openssl_tls12_nosni.bin"))
}

fn python() -> ClientHelloInfo {
    // SNI py.example, ALPN h2 + http/1.1.
    captured(include_bytes!("../testdata/python_ssl.bin"))
}

fn curl() -> ClientHelloInfo {
    captured(include_bytes!("../testdata/curl.bin"))
}

fn with_sni(mut hello: ClientHelloInfo, sni: &str) -> ClientHelloInfo {
    hello.sni = Some(sni.into());
    hello
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect(s)
}

fn decide(policy: &Policy, hello: &ClientHelloInfo, dst: &str, dst_port: u16) -> Decision {
    policy.decide(&FlowFacts {
        src: ip("172.16.5.5"),
        dst: ip(dst),
        dst_port,
        hello,
    })
}

/// Which rule decided, as the log shows it.
fn by(decision: &Decision) -> String {
    decision.rule.to_string()
}

const POLICY: &str = r#"
[policy]
default = "bypass"
unclassified = "block"

[policy.lists]
banks = "banks.txt"
corp = "corp-nets.txt"

[[policy.rule]]
name = "legacy"
tls_version = ["sslv2", "ssl3", "tls1.0", "tls1.1"]
action = "block"

[[policy.rule]]
name = "banks"
sni = "list:banks"
action = "bypass"

[[policy.rule]]
name = "no-sni-to-corp"
no_sni = true
dst = ["list:corp", "fd00::/8"]
action = "block"

[[policy.rule]]
sni = [".example.com", "PY.example."]
alpn = "h2"
dst_port = [443, "8000-8999"]
action = "intercept"
"#;

#[test]
fn full_policy_on_captured_hellos() {
    let policy = compile(POLICY).expect("policy compiles");
    assert_eq!(
        policy.summary(),
        "4 rules, 2 lists (3 domains, 4 networks), default bypass"
    );
    assert_eq!(policy.default_action(), Action::Bypass);
    assert_eq!(
        policy.unclassified(),
        Decision {
            action: Action::Block,
            rule: RuleRef::Unclassified
        }
    );
    assert_eq!(policy.rules_with_action(Action::Intercept), ["rule 4"]);
    assert_eq!(
        policy.rules_with_action(Action::Block),
        [r#"rule 1 "legacy""#, r#"rule 3 "no-sni-to-corp""#]
    );

    // example.com, h2, port 443 and 8443: the last rule.
    let d = decide(&policy, &openssl(), "192.0.2.1", 443);
    assert_eq!(
        d,
        Decision {
            action: Action::Intercept,
            rule: RuleRef::Rule { index: 3, name: None }
        }
    );
    assert_eq!(by(&decide(&policy, &openssl(), "192.0.2.1", 8443)), "rule 4");
    // Port outside the rule's: the default.
    assert_eq!(
        decide(&policy, &openssl(), "192.0.2.1", 80).rule,
        RuleRef::Default
    );
    // py.example matches "PY.example." (case and trailing dot ignored).
    assert_eq!(
        decide(&policy, &python(), "192.0.2.1", 443).action,
        Action::Intercept
    );
    // curl's test.example is in no rule.
    assert_eq!(decide(&policy, &curl(), "192.0.2.1", 443).rule, RuleRef::Default);

    // The banks list: suffix, wildcard, exact; bypass wins over the later intercept rule.
    for name in [
        "mybank.example",
        "www.mybank.example",
        "eu.cards.example",
        "login.payments.example",
    ] {
        let d = decide(&policy, &with_sni(openssl(), name), "192.0.2.1", 443);
        assert_eq!(
            (d.action, by(&d)),
            (Action::Bypass, r#"rule 2 "banks""#.into()),
            "{name}"
        );
    }
    for name in ["cards.example", "payments.example", "notmybank.example"] {
        assert_eq!(
            decide(&policy, &with_sni(openssl(), name), "192.0.2.1", 443).rule,
            RuleRef::Default,
            "{name}"
        );
    }

    // No SNI, TLS 1.2: blocked towards corporate networks and fd00::/8 only.
    let nosni = openssl_tls12_nosni();
    assert_eq!(nosni.sni, None);
    for dst in [
        "10.20.30.40",
        "192.168.10.9",
        "2001:db8:100::1",
        "198.51.100.7",
        "fd00::1",
    ] {
        let d = decide(&policy, &nosni, dst, 443);
        assert_eq!(
            (d.action, by(&d)),
            (Action::Block, r#"rule 3 "no-sni-to-corp""#.into()),
            "{dst}"
        );
    }
    for dst in ["192.168.11.1", "198.51.100.8", "2001:db8:101::1", "8.8.8.8"] {
        assert_eq!(decide(&policy, &nosni, dst, 443).rule, RuleRef::Default, "{dst}");
    }
    // With an SNI the same destination is not rule 3's business.
    assert_eq!(
        decide(&policy, &curl(), "10.20.30.40", 443).rule,
        RuleRef::Default
    );

    // A TLS 1.0 client is blocked by the first rule, whatever else it matches.
    let mut old = with_sni(openssl(), "www.mybank.example");
    old.version_family = VersionFamily::Tls10;
    let d = decide(&policy, &old, "10.0.0.1", 443);
    assert_eq!((d.action, by(&d)), (Action::Block, r#"rule 1 "legacy""#.into()));
}

#[test]
fn absent_table_and_defaults() {
    let spec = parse("").expect("empty config");
    assert_eq!(spec, PolicySpec::default());
    assert_eq!(
        (spec.default, spec.unclassified),
        (Action::Bypass, Action::Bypass)
    );
    let spec = parse("[policy]\n").expect("empty table");
    let policy = Policy::compile(&spec, &testdata(), &read_file).expect("compiles");
    assert_eq!(
        decide(&policy, &openssl(), "192.0.2.1", 443),
        Decision {
            action: Action::Bypass,
            rule: RuleRef::Default
        }
    );
    assert_eq!(policy.unclassified().action, Action::Bypass);
}

#[test]
fn values_parse_in_both_forms() {
    let spec = parse(
        r#"
        [[policy.rule]]
        dst_port = ["443", 8443, "1000-2000"]
        tls_version = "TLS1.2"
        action = "block"
        "#,
    )
    .expect("parses");
    let rule = &spec.rule.first().expect("one rule");
    assert_eq!(
        rule.dst_port,
        [
            PortMatch::single(443),
            PortMatch::single(8443),
            PortMatch::range(1000, 2000).expect("range")
        ]
    );
    assert_eq!(rule.tls_version, [TlsVersionMatch::Tls12]);
    let single = parse("[[policy.rule]]\ndst_port = 443\naction = \"bypass\"\n").expect("parses");
    assert_eq!(
        single.rule.first().map(|r| r.dst_port.clone()),
        Some(vec![PortMatch::single(443)])
    );
}

#[test]
fn spec_round_trips_through_toml() {
    let spec = parse(POLICY).expect("parses");
    let text = toml::to_string(&ConfigOut { policy: &spec }).expect("serializes");
    assert_eq!(parse(&text).expect("re-parses"), spec, "{text}");
}

#[derive(serde::Serialize)]
struct ConfigOut<'a> {
    policy: &'a PolicySpec,
}

/// toml's error for a value: the line, the column, and this crate's sentence.
fn toml_error(text: &str) -> String {
    parse(text).expect_err("rejected").to_string()
}

#[test]
fn bad_values_name_their_line() {
    let err = toml_error(
        r#"[policy]
default = "block"

[[policy.rule]]
name = "corp"
dst = ["10.0.0.0/8", "10.0.0.0/33"]
action = "bypass"
"#,
    );
    assert!(err.contains("line 6"), "{err}");
    assert!(
        err.contains(r#"invalid CIDR "10.0.0.0/33": prefix length 33 exceeds 32 for IPv4"#),
        "{err}"
    );

    let err = toml_error("[[policy.rule]]\ndst_port = [443, \"9000-8000\"]\naction = \"block\"\n");
    assert!(err.contains("line 2"), "{err}");
    assert!(
        err.contains(r#"invalid port range "9000-8000": start after end"#),
        "{err}"
    );

    let err = toml_error("[[policy.rule]]\naction = \"block\"\ntls_version = \"tls1.4\"\n");
    assert!(err.contains("line 3"), "{err}");
    assert!(
        err.contains(
            r#"unknown TLS version "tls1.4" (expected one of sslv2, ssl3, tls1.0, tls1.1, tls1.2, tls1.3)"#
        ),
        "{err}"
    );

    let err =
        toml_error("[[policy.rule]]\nsni = [\"ok.example\",\n  \"*.bad*.example\"]\naction = \"block\"\n");
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains(r#"invalid domain "*.bad*.example""#), "{err}");

    let err = toml_error("[[policy.rule]]\ndst_port = 70000\naction = \"block\"\n");
    assert!(
        err.contains("line 2") && err.contains("invalid port 70000"),
        "{err}"
    );

    let err = toml_error("[policy]\ndefault = \"drop\"\n");
    assert!(
        err.contains("line 2") && err.contains("intercept") && err.contains("drop"),
        "{err}"
    );

    let err = toml_error("[[policy.rule]]\ndst_ports = 443\naction = \"block\"\n");
    assert!(err.contains("unknown field `dst_ports`"), "{err}");

    let err = toml_error("[[policy.rule]]\ndst_port = 443\n");
    assert!(err.contains("missing field `action`"), "{err}");
}

#[test]
fn bad_list_line_names_file_and_line() {
    let err = compile(
        r#"
        [policy.lists]
        typo = "bad-domain.txt"
        [[policy.rule]]
        sni = "list:typo"
        action = "bypass"
        "#,
    )
    .expect_err("rejected");
    let message = err.to_string();
    let path = testdata().join("bad-domain.txt");
    assert!(
        message.starts_with(&format!("{}:4: ", path.display())),
        "{message}"
    );
    assert!(message.contains(r#"invalid domain "ex ample.com""#), "{message}");
    assert!(matches!(err, PolicyError::ListLine { line: 4, .. }));

    let err = compile("[policy.lists]\nmixed = \"mixed.txt\"\n").expect_err("rejected");
    let message = err.to_string();
    assert!(
        message.contains("mixed.txt:4: network \"203.0.113.0/24\""),
        "{message}"
    );
    assert!(message.contains("first entry (line 2) is a domain"), "{message}");

    let err = compile("[policy.lists]\ngone = \"missing.txt\"\n").expect_err("rejected");
    assert!(matches!(err, PolicyError::ListRead { .. }));
    let message = err.to_string();
    assert!(
        message.starts_with("cannot read list \"gone\" from "),
        "{message}"
    );
    assert!(message.contains("missing.txt"), "{message}");
}

#[test]
fn list_references_are_checked() {
    let err = compile(
        r#"
        [policy.lists]
        banks = "banks.txt"
        [[policy.rule]]
        name = "typo"
        sni = "list:bank"
        action = "bypass"
        "#,
    )
    .expect_err("rejected");
    assert_eq!(
        err.to_string(),
        r#"rule 1 "typo": unknown list "bank" in `sni` (defined: banks)"#
    );

    let err = compile(
        r#"
        [policy.lists]
        banks = "banks.txt"
        corp = "corp-nets.txt"
        [[policy.rule]]
        sni = "a.example"
        action = "bypass"
        [[policy.rule]]
        name = "swapped"
        src = "list:banks"
        action = "block"
        "#,
    )
    .expect_err("rejected");
    let message = err.to_string();
    assert!(
        message.starts_with(r#"rule 2 "swapped": list "banks" ("#)
            && message.ends_with(") holds domains, but `src` takes networks"),
        "{message}"
    );
    assert!(message.contains("banks.txt"), "{message}");

    let err = compile(
        "[policy.lists]\ncorp = \"corp-nets.txt\"\n[[policy.rule]]\nsni = \"list:corp\"\naction = \"bypass\"\n",
    )
    .expect_err("rejected");
    assert!(err.to_string().contains(r#"list "corp""#), "{err}");
    assert!(
        err.to_string()
            .contains("holds networks, but `sni` takes domain patterns"),
        "{err}"
    );

    let err = compile("[[policy.rule]]\nname = \"all\"\naction = \"block\"\n").expect_err("rejected");
    assert!(matches!(err, PolicyError::NoConditions { .. }));
    assert!(err.to_string().contains("has no conditions"), "{err}");
    assert!(err.to_string().contains("`default`"), "{err}");
}

#[test]
fn hundred_thousand_domain_list() {
    let mut list = String::from("# generated\n");
    for i in 0..100_000 {
        list.push_str(&format!("host{i}.zone{}.example\n", i % 97));
    }
    list.push_str("*.wild.example\n.suffix.example\n");
    let spec = PolicySpec {
        lists: [("big".to_owned(), PathBuf::from("big.txt"))].into(),
        rule: vec![RuleSpec {
            name: Some("big".into()),
            sni: vec!["list:big".parse().expect("list ref")],
            ..RuleSpec {
                action: Action::Block,
                ..RuleSpec::default()
            }
        }],
        ..PolicySpec::default()
    };
    let policy = Policy::compile(&spec, Path::new("/lists"), &|path: &Path| {
        assert_eq!(path, Path::new("/lists/big.txt"));
        Ok(list.clone())
    })
    .expect("compiles");
    assert_eq!(
        policy.summary(),
        "1 rule, 1 list (100002 domains, 0 networks), default bypass"
    );
    let block = |name: &str| decide(&policy, &with_sni(openssl(), name), "192.0.2.1", 443).action;
    assert_eq!(block("host99999.zone89.example"), Action::Block);
    assert_eq!(block("HOST0.zone0.example"), Action::Block);
    assert_eq!(block("a.b.wild.example"), Action::Block);
    assert_eq!(block("suffix.example"), Action::Block);
    assert_eq!(block("host99999.zone90.example"), Action::Bypass);
    assert_eq!(block("host100000.zone0.example"), Action::Bypass);
    assert_eq!(block("wild.example"), Action::Bypass);
}
