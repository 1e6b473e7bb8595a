//! Rule semantics on hand-built hellos and policies, lists served from memory.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::*;
use crate::client_hello::VersionFamily;

/// A hello with just what policy looks at.
fn hello(sni: Option<&str>, alpn: &[&str], version_family: VersionFamily) -> ClientHelloInfo {
    ClientHelloInfo::with_policy_fields(sni.map(str::to_owned), alpn, version_family)
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect(s)
}

/// A flow from 10.0.0.2 to 192.0.2.10:443 with TLS 1.3, the given SNI and ALPN.
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    hello: ClientHelloInfo,
}

impl Flow {
    fn sni(sni: &str) -> Self {
        Self::new(Some(sni))
    }

    fn new(sni: Option<&str>) -> Self {
        Flow {
            src: ip("10.0.0.2"),
            dst: ip("192.0.2.10"),
            port: 443,
            hello: hello(sni, &["h2", "http/1.1"], VersionFamily::Tls13),
        }
    }

    fn src(mut self, s: &str) -> Self {
        self.src = ip(s);
        self
    }

    fn dst(mut self, s: &str) -> Self {
        self.dst = ip(s);
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn alpn(mut self, alpn: &[&str]) -> Self {
        self.hello.alpn = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        self
    }

    fn version(mut self, family: VersionFamily) -> Self {
        self.hello.version_family = family;
        self
    }

    fn facts(&self) -> FlowFacts<'_> {
        FlowFacts {
            src: self.src,
            dst: self.dst,
            dst_port: self.port,
            hello: &self.hello,
        }
    }
}

fn no_files(path: &Path) -> io::Result<String> {
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no file {}", path.display()),
    ))
}

fn compile(spec: &PolicySpec) -> Policy {
    Policy::compile(spec, Path::new("/etc/glasswire"), &no_files).expect("policy compiles")
}

fn rule(action: Action) -> RuleSpec {
    RuleSpec {
        action,
        ..RuleSpec::default()
    }
}

fn sni(patterns: &[&str]) -> Vec<SniMatch> {
    patterns.iter().map(|p| SniMatch::parse(p).expect(p)).collect()
}

fn nets(cidrs: &[&str]) -> Vec<NetMatch> {
    cidrs.iter().map(|c| NetMatch::parse(c).expect(c)).collect()
}

fn one_rule(r: RuleSpec) -> Policy {
    compile(&PolicySpec {
        rule: vec![r],
        ..PolicySpec::default()
    })
}

/// Whether the single rule of `policy` matches `flow`.
fn hits(policy: &Policy, flow: &Flow) -> bool {
    matches!(policy.decide(&flow.facts()).rule, RuleRef::Rule { .. })
}

#[test]
fn sni_patterns_case_and_trailing_dot() {
    let policy = one_rule(RuleSpec {
        sni: sni(&["host.example.com", "*.wild.test", ".suffix.test"]),
        ..rule(Action::Block)
    });
    for name in [
        "host.example.com",
        "HOST.Example.Com",
        "host.example.com.",
        "a.wild.test",
        "a.b.wild.test",
        "suffix.test",
        "SUFFIX.TEST.",
        "deep.under.suffix.test",
    ] {
        assert!(hits(&policy, &Flow::sni(name)), "{name} should match");
    }
    for name in [
        "example.com",
        "a.host.example.com",
        "wild.test",
        "notsuffix.test",
        "test",
    ] {
        assert!(!hits(&policy, &Flow::sni(name)), "{name} should not match");
    }
    assert!(
        !hits(&policy, &Flow::new(None)),
        "a rule with sni never matches a hello without"
    );
}

#[test]
fn no_sni_true_and_false() {
    let without = one_rule(RuleSpec {
        no_sni: Some(true),
        ..rule(Action::Block)
    });
    assert!(hits(&without, &Flow::new(None)));
    assert!(!hits(&without, &Flow::sni("example.com")));

    let with = one_rule(RuleSpec {
        no_sni: Some(false),
        ..rule(Action::Block)
    });
    assert!(!hits(&with, &Flow::new(None)));
    assert!(hits(&with, &Flow::sni("example.com")));

    // no_sni = false with sni patterns is redundant but coherent.
    let both = one_rule(RuleSpec {
        no_sni: Some(false),
        sni: sni(&[".example.com"]),
        ..rule(Action::Block)
    });
    assert!(hits(&both, &Flow::sni("www.example.com")));
    assert!(!hits(&both, &Flow::sni("www.example.net")));
}

#[test]
fn cidrs_ipv4_and_ipv6() {
    let policy = one_rule(RuleSpec {
        dst: nets(&["192.0.2.0/24", "2001:db8::/32", "198.51.100.7"]),
        ..rule(Action::Block)
    });
    assert!(hits(&policy, &Flow::sni("a").dst("192.0.2.200")));
    assert!(hits(&policy, &Flow::sni("a").dst("198.51.100.7")));
    assert!(hits(&policy, &Flow::sni("a").dst("2001:db8:1::5")));
    assert!(
        hits(&policy, &Flow::sni("a").dst("::ffff:192.0.2.1")),
        "IPv4-mapped counts as IPv4"
    );
    assert!(!hits(&policy, &Flow::sni("a").dst("192.0.3.1")));
    assert!(!hits(&policy, &Flow::sni("a").dst("198.51.100.8")));
    assert!(!hits(&policy, &Flow::sni("a").dst("2001:db9::1")));

    let src = one_rule(RuleSpec {
        src: nets(&["10.0.0.0/8", "fd00::/8"]),
        ..rule(Action::Block)
    });
    assert!(hits(&src, &Flow::sni("a").src("10.9.9.9")));
    assert!(hits(&src, &Flow::sni("a").src("fd00::2")));
    assert!(!hits(&src, &Flow::sni("a").src("172.16.0.1")));
    // src and dst are not confused: the destination is in 10/8 here, the source not.
    assert!(!hits(&src, &Flow::sni("a").src("172.16.0.1").dst("10.0.0.1")));
}

#[test]
fn ports_and_ranges() {
    let policy = one_rule(RuleSpec {
        dst_port: vec![
            PortMatch::single(443),
            PortMatch::parse("8000-8999").expect("range"),
        ],
        ..rule(Action::Block)
    });
    for port in [443, 8000, 8443, 8999] {
        assert!(hits(&policy, &Flow::sni("a").port(port)), "{port}");
    }
    for port in [80, 444, 7999, 9000] {
        assert!(!hits(&policy, &Flow::sni("a").port(port)), "{port}");
    }
}

#[test]
fn alpn_offered() {
    let policy = one_rule(RuleSpec {
        alpn: vec!["h2".into()],
        ..rule(Action::Block)
    });
    assert!(hits(&policy, &Flow::sni("a").alpn(&["http/1.1", "h2"])));
    assert!(!hits(&policy, &Flow::sni("a").alpn(&["http/1.1"])));
    assert!(!hits(&policy, &Flow::sni("a").alpn(&[])));
    assert!(
        !hits(&policy, &Flow::sni("a").alpn(&["H2"])),
        "ALPN ids are exact bytes"
    );
    assert!(!hits(&policy, &Flow::sni("a").alpn(&["h2c"])));
}

#[test]
fn tls_versions() {
    let policy = one_rule(RuleSpec {
        tls_version: vec![
            TlsVersionMatch::Sslv2,
            TlsVersionMatch::Ssl3,
            TlsVersionMatch::Tls10,
        ],
        ..rule(Action::Block)
    });
    for family in [
        VersionFamily::LegacySslv2,
        VersionFamily::Ssl3,
        VersionFamily::Tls10,
    ] {
        assert!(hits(&policy, &Flow::sni("a").version(family)), "{family:?}");
    }
    for family in [
        VersionFamily::Tls11,
        VersionFamily::Tls12,
        VersionFamily::Tls13,
        VersionFamily::Unknown(0x7f17),
    ] {
        assert!(!hits(&policy, &Flow::sni("a").version(family)), "{family:?}");
    }
}

#[test]
fn and_across_fields_or_within() {
    let policy = one_rule(RuleSpec {
        sni: sni(&["a.test", "b.test"]),
        dst_port: vec![PortMatch::single(443)],
        ..rule(Action::Block)
    });
    assert!(hits(&policy, &Flow::sni("a.test")));
    assert!(hits(&policy, &Flow::sni("b.test")));
    assert!(!hits(&policy, &Flow::sni("c.test")), "sni fails");
    assert!(!hits(&policy, &Flow::sni("a.test").port(8443)), "port fails");
}

#[test]
fn first_match_wins_then_default() {
    let policy = compile(&PolicySpec {
        default: Action::Block,
        rule: vec![
            RuleSpec {
                name: Some("bypass-bank".into()),
                sni: sni(&["bank.example.com"]),
                ..rule(Action::Bypass)
            },
            RuleSpec {
                sni: sni(&[".example.com"]),
                ..rule(Action::Intercept)
            },
            RuleSpec {
                name: Some("all-443".into()),
                dst_port: vec![PortMatch::single(443)],
                ..rule(Action::Bypass)
            },
        ],
        ..PolicySpec::default()
    });
    let bank = policy.decide(&Flow::sni("bank.example.com").facts());
    assert_eq!(
        bank,
        Decision {
            action: Action::Bypass,
            rule: RuleRef::Rule {
                index: 0,
                name: Some("bypass-bank".into())
            }
        }
    );
    assert_eq!(bank.to_string(), r#"bypass (rule 1 "bypass-bank")"#);
    let other = policy.decide(&Flow::sni("www.example.com").facts());
    assert_eq!(
        other,
        Decision {
            action: Action::Intercept,
            rule: RuleRef::Rule { index: 1, name: None }
        }
    );
    assert_eq!(other.rule.to_string(), "rule 2");
    let third = policy.decide(&Flow::sni("example.net").facts());
    assert_eq!(
        (third.action, third.rule.to_string()),
        (Action::Bypass, r#"rule 3 "all-443""#.into())
    );
    let none = policy.decide(&Flow::sni("example.net").port(8443).facts());
    assert_eq!(
        none,
        Decision {
            action: Action::Block,
            rule: RuleRef::Default
        }
    );
    assert_eq!(none.to_string(), "block (default)");
    assert_eq!(policy.default_action(), Action::Block);
    assert_eq!(policy.rule_count(), 3);
    assert_eq!(
        policy.rules_with_action(Action::Bypass),
        [r#"rule 1 "bypass-bank""#, r#"rule 3 "all-443""#]
    );
    assert_eq!(policy.rules_with_action(Action::Intercept), ["rule 2"]);
    assert!(policy.rules_with_action(Action::Block).is_empty());
}

#[test]
fn defaults_and_unclassified() {
    let empty = compile(&PolicySpec::default());
    assert_eq!(
        empty.decide(&Flow::sni("a").facts()),
        Decision {
            action: Action::Bypass,
            rule: RuleRef::Default
        }
    );
    assert_eq!(
        empty.unclassified(),
        Decision {
            action: Action::Bypass,
            rule: RuleRef::Unclassified
        }
    );
    assert_eq!(
        empty.summary(),
        "0 rules, 0 lists (0 domains, 0 networks), default bypass"
    );

    let strict = compile(&PolicySpec {
        default: Action::Block,
        unclassified: Action::Block,
        ..PolicySpec::default()
    });
    assert_eq!(strict.unclassified().action, Action::Block);
    assert_eq!(strict.unclassified().to_string(), "block (unclassified)");
    assert_eq!(strict.unclassified_action(), Action::Block);
    assert_eq!(strict.decide(&Flow::new(None).facts()).action, Action::Block);
}

/// Lists served from a map, as `compile`'s `read` sees them.
fn compile_with(spec: &PolicySpec, files: &[(&str, &str)]) -> Result<Policy, PolicyError> {
    let files: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, text)| (PathBuf::from(p), (*text).to_owned()))
        .collect();
    Policy::compile(spec, Path::new("/etc/glasswire"), &|path: &Path| {
        files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "not found"))
    })
}

fn lists(entries: &[(&str, &str)]) -> std::collections::BTreeMap<String, PathBuf> {
    entries
        .iter()
        .map(|(n, p)| ((*n).to_owned(), PathBuf::from(p)))
        .collect()
}

#[test]
fn lists_resolve_relative_paths_and_match() {
    let spec = PolicySpec {
        lists: lists(&[
            ("banks", "lists/banks.txt"),
            ("corp", "/srv/corp.txt"),
            ("empty", "empty.txt"),
        ]),
        rule: vec![
            RuleSpec {
                sni: sni(&["list:banks", "extra.test", "list:empty"]),
                ..rule(Action::Bypass)
            },
            RuleSpec {
                dst: nets(&["list:corp", "list:empty"]),
                ..rule(Action::Block)
            },
            RuleSpec {
                src: nets(&["list:empty"]),
                ..rule(Action::Block)
            },
        ],
        ..PolicySpec::default()
    };
    let policy = compile_with(
        &spec,
        &[
            (
                "/etc/glasswire/lists/banks.txt",
                "# banks\n.bank.test\n*.pay.test\n",
            ),
            ("/srv/corp.txt", "10.0.0.0/8\n2001:db8::/32  # lab\n"),
            ("/etc/glasswire/empty.txt", "# to be filled\n"),
        ],
    )
    .expect("compiles");
    assert_eq!(
        policy
            .decide(&Flow::sni("www.bank.test").facts())
            .rule
            .to_string(),
        "rule 1"
    );
    assert_eq!(
        policy.decide(&Flow::sni("extra.test").facts()).rule.to_string(),
        "rule 1"
    );
    assert_eq!(
        policy.decide(&Flow::sni("pay.test").facts()).rule,
        RuleRef::Default
    );
    assert_eq!(
        policy
            .decide(&Flow::sni("x").dst("10.1.1.1").facts())
            .rule
            .to_string(),
        "rule 2"
    );
    assert_eq!(
        policy
            .decide(&Flow::sni("x").dst("2001:db8::9").facts())
            .rule
            .to_string(),
        "rule 2"
    );
    assert_eq!(
        policy
            .decide(&Flow::sni("x").src("10.0.0.1").dst("11.0.0.1").facts())
            .rule,
        RuleRef::Default,
        "rule 3's only list is empty: it matches nothing"
    );
    assert_eq!(
        policy.summary(),
        "3 rules, 3 lists (2 domains, 2 networks), default bypass"
    );
}

#[test]
fn list_errors() {
    let with_lists = |rule: RuleSpec| PolicySpec {
        lists: lists(&[("banks", "banks.txt"), ("nets", "nets.txt")]),
        rule: vec![rule],
        ..PolicySpec::default()
    };
    let files = [
        ("/etc/glasswire/banks.txt", "bank.test\n"),
        ("/etc/glasswire/nets.txt", "10.0.0.0/8\n"),
    ];

    let err = compile_with(
        &with_lists(RuleSpec {
            name: Some("corp".into()),
            sni: sni(&["list:bnaks"]),
            ..rule(Action::Bypass)
        }),
        &files,
    )
    .expect_err("unknown list");
    assert!(matches!(err, PolicyError::UnknownList { .. }));
    assert_eq!(
        err.to_string(),
        r#"rule 1 "corp": unknown list "bnaks" in `sni` (defined: banks, nets)"#
    );

    let err = compile_with(
        &with_lists(RuleSpec {
            dst: nets(&["list:banks"]),
            ..rule(Action::Bypass)
        }),
        &files,
    )
    .expect_err("wrong kind");
    assert_eq!(
        err.to_string(),
        r#"rule 1: list "banks" (/etc/glasswire/banks.txt) holds domains, but `dst` takes networks"#
    );

    let err = compile_with(
        &with_lists(RuleSpec {
            sni: sni(&["list:nets"]),
            ..rule(Action::Bypass)
        }),
        &files,
    )
    .expect_err("wrong kind");
    assert_eq!(
        err.to_string(),
        r#"rule 1: list "nets" (/etc/glasswire/nets.txt) holds networks, but `sni` takes domain patterns"#
    );

    let err = compile_with(
        &with_lists(RuleSpec {
            sni: sni(&["x.test"]),
            ..rule(Action::Bypass)
        }),
        &files[..1],
    )
    .expect_err("unreadable");
    assert!(matches!(err, PolicyError::ListRead { .. }));
    assert_eq!(
        err.to_string(),
        r#"cannot read list "nets" from /etc/glasswire/nets.txt: not found"#
    );

    let err = compile_with(
        &with_lists(RuleSpec {
            sni: sni(&["x.test"]),
            ..rule(Action::Bypass)
        }),
        &[
            files[0],
            ("/etc/glasswire/nets.txt", "# ok\n10.0.0.0/8\n10.0.0.0/40\n"),
        ],
    )
    .expect_err("bad line");
    assert_eq!(
        err.to_string(),
        r#"/etc/glasswire/nets.txt:3: invalid CIDR "10.0.0.0/40": prefix length 40 exceeds 32 for IPv4"#
    );

    let err = compile_with(
        &PolicySpec {
            rule: vec![RuleSpec {
                src: nets(&["list:any"]),
                ..rule(Action::Bypass)
            }],
            ..PolicySpec::default()
        },
        &[],
    )
    .expect_err("no lists");
    assert_eq!(
        err.to_string(),
        r#"rule 1: unknown list "any" in `src` (no lists are defined in [policy.lists])"#
    );
}

#[test]
fn rule_errors() {
    let compile_rules = |rules: Vec<RuleSpec>| {
        Policy::compile(
            &PolicySpec {
                rule: rules,
                ..PolicySpec::default()
            },
            Path::new("/"),
            &no_files,
        )
        .expect_err("rejected")
        .to_string()
    };
    assert_eq!(
        compile_rules(vec![
            RuleSpec {
                no_sni: Some(true),
                ..rule(Action::Block)
            },
            RuleSpec {
                name: Some("catch-all".into()),
                ..rule(Action::Block)
            },
        ]),
        "rule 2 \"catch-all\" has no conditions; to choose the action for flows that no rule matches, \
         set `default` in [policy]"
    );
    assert!(compile_rules(vec![RuleSpec {
        no_sni: Some(true),
        sni: sni(&["a.test"]),
        ..rule(Action::Block)
    }])
    .contains("can never both hold"));
    assert!(compile_rules(vec![RuleSpec {
        alpn: vec![String::new()],
        ..rule(Action::Block)
    }])
    .starts_with("rule 1: ALPN protocol id \"\" must be 1 to 255 bytes"));
}

#[test]
fn unclassified_cannot_be_intercept() {
    let err = Policy::compile(
        &PolicySpec {
            unclassified: Action::Intercept,
            ..PolicySpec::default()
        },
        Path::new("/"),
        &no_files,
    )
    .expect_err("rejected");
    assert!(matches!(err, PolicyError::UnclassifiedIntercept));
    assert!(
        err.to_string()
            .starts_with("`unclassified` cannot be \"intercept\""),
        "{err}"
    );
}

#[test]
fn policy_is_send_sync_and_debug_is_short() {
    fn shared<T: Send + Sync>() {}
    shared::<Policy>();
    let policy = one_rule(RuleSpec {
        sni: sni(&["a.test"]),
        ..rule(Action::Block)
    });
    assert_eq!(
        format!("{policy:?}"),
        r#"Policy { summary: "1 rule, 0 lists (0 domains, 0 networks), default bypass", unclassified: Bypass, .. }"#
    );
}
