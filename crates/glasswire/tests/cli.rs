//! The command line's own behaviour: help, config errors, testbed ownership rules.

mod common;

use common::*;

#[test]
fn help_explains_every_subcommand() {
    let out = run_ok(&[BIN, "--help"]);
    for sub in ["run", "stats", "testbed", "demo", "config", "policy", "ca"] {
        assert!(out.contains(sub), "--help does not mention {sub}:\n{out}");
    }
    let run_help = run_ok(&[BIN, "run", "--help"]);
    assert!(run_help.contains("--userspace-forward") && run_help.contains("--config"));
}

#[test]
fn bad_config_gets_one_error_naming_the_field() {
    let dir = Scratch::new("badcfg");
    let path = dir.0.join("bad.toml");
    std::fs::write(
        &path,
        "[bridge]\nport_a = \"a\"\nport_b = \"b\"\nring_size = 1000\n",
    )
    .expect("write");
    let out = run(&[BIN, "run", "--config", path.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bridge.ring_size"), "{err}");
    assert_eq!(err.lines().filter(|l| l.contains("error")).count(), 1, "{err}");

    std::fs::write(&path, "[bridge]\nport_a = \"a\"\n").expect("write");
    let out = run(&[BIN, "config", "check", "--config", path.to_str().expect("path")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("port_b"));

    let out = run(&[BIN, "run", "--config", "/nonexistent/glasswire.toml"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/glasswire.toml"));
}

#[test]
fn example_config_is_valid() {
    let dir = Scratch::new("example");
    let path = dir.0.join("ex.toml");
    std::fs::write(&path, run_ok(&[BIN, "config", "example"])).expect("write");
    run_ok(&[BIN, "config", "check", "--config", path.to_str().expect("path")]);
}

#[test]
fn testbed_refuses_namespaces_it_did_not_make_and_down_removes_all() {
    if !can_run(&["ethtool"]) {
        return;
    }
    let prefix = "e2eown";
    let _ = run(&[BIN, "testbed", "down", "--prefix", prefix]);
    run_ok(&["ip", "netns", "add", "e2eown-server"]);
    let out = run(&[BIN, "testbed", "up", "--prefix", prefix]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let _ = run(&["ip", "netns", "del", "e2eown-server"]);
    assert!(!out.status.success(), "up took over a foreign namespace");
    assert!(err.contains("not made by"), "{err}");
    // Nothing was created by the refused attempt.
    let list = run_ok(&["ip", "netns", "list"]);
    assert!(!list.contains("e2eown-"), "{list}");

    {
        let tb = Testbed::up(prefix);
        assert_eq!(tb.s("bridge_ns"), "e2eown-bridge");
        for key in [
            "client_ns",
            "server_ns",
            "bridge_ns",
            "client_ip",
            "server_ip",
            "client_ip6",
            "server_ip6",
            "mirror",
            "config",
        ] {
            assert!(!tb.s(key).is_empty(), "{key} missing");
        }
        assert_eq!(tb.status["ports"].as_array().map(|a| a.len()), Some(2));
        // `up` again on its own testbed is harmless.
        assert!(run_ok(&[BIN, "testbed", "up", "--prefix", prefix]).contains("already up"));
        // A queue the port does not have is a config error naming the field.
        let cfg = std::fs::read_to_string(tb.s("config")).expect("testbed config");
        let dir = Scratch::new("badqueue");
        let bad = dir.0.join("q.toml");
        std::fs::write(&bad, cfg.replace("queues = [0]", "queues = [0, 3]")).expect("write");
        let out = tb.in_ns(
            &tb.s("bridge_ns"),
            &[BIN, "run", "--config", bad.to_str().expect("path")],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("bridge.queues: queue 3"),
            "{err}"
        );
        // The mirror TAP exists in the bridge namespace.
        run_ok(&["ip", "-n", "e2eown-bridge", "link", "show", &tb.s("mirror")]);
    }
    let list = run_ok(&["ip", "netns", "list"]);
    assert!(!list.contains("e2eown-"), "down left namespaces behind: {list}");
    assert!(!std::path::Path::new("/run/glasswire/testbed/e2eown").exists());
}

#[test]
fn docs_name_every_counter_the_stats_socket_serves() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/stats.md"))
        .expect("docs/stats.md");
    let described = run_ok(&[BIN, "stats", "--describe"]);
    let mut names = 0;
    for line in described.lines().filter(|l| l.starts_with("  ")) {
        let name = line.split_whitespace().next().expect("counter name");
        assert!(
            doc.contains(name),
            "docs/stats.md does not mention counter {name}"
        );
        names += 1;
    }
    assert!(names >= 20, "only {names} counters described");
}

#[test]
fn policy_check_explains_decisions_and_names_bad_lines() {
    let dir = Scratch::new("polcheck");
    let cfg = dir.0.join("glasswire.toml");
    std::fs::write(
        dir.0.join("banks.txt"),
        "# banks\n.bank.example\nwww.other-bank.example\n",
    )
    .expect("list");
    std::fs::write(
        &cfg,
        "[bridge]\nport_a = \"a\"\nport_b = \"b\"\n\n[policy]\ndefault = \"bypass\"\n\n[policy.lists]\nbanks = \"banks.txt\"\n\n\
         [[policy.rule]]\nname = \"old\"\ntls_version = [\"ssl3\", \"tls1.0\"]\naction = \"block\"\n\n\
         [[policy.rule]]\nname = \"banks\"\nsni = \"list:banks\"\naction = \"bypass\"\n\n\
         [[policy.rule]]\nname = \"lab\"\ndst = \"192.0.2.0/24\"\ndst_port = \"8000-8999\"\naction = \"block\"\n",
    )
    .expect("config");
    let c = cfg.to_str().expect("path");
    let ask = |args: &[&str]| {
        let mut argv = vec![BIN, "policy", "check", "--config", c];
        argv.extend_from_slice(args);
        run_ok(&argv)
    };
    let summary = ask(&[]);
    assert!(
        summary.contains("policy valid") && summary.contains("3 rules"),
        "{summary}"
    );
    let bank = ask(&["--sni", "login.bank.example"]);
    assert!(bank.contains("decision: bypass (rule 2 \"banks\")"), "{bank}");
    let old = ask(&["--sni", "login.bank.example", "--tls-version", "tls1.0"]);
    assert!(old.contains("decision: block (rule 1 \"old\")"), "{old}");
    let lab = ask(&["--sni", "x.example", "--dst", "192.0.2.9", "--port", "8443"]);
    assert!(lab.contains("decision: block (rule 3 \"lab\")"), "{lab}");
    let other = ask(&["--sni", "x.example", "--dst", "192.0.2.9", "--port", "443"]);
    assert!(other.contains("decision: bypass (default)"), "{other}");

    // A bad list line: one error naming the file and the line; run refuses to start.
    std::fs::write(dir.0.join("banks.txt"), "ok.example\n\nbad name.example\n").expect("list");
    for argv in [
        vec![BIN, "policy", "check", "--config", c],
        vec![BIN, "config", "check", "--config", c],
        vec![BIN, "run", "--config", c],
    ] {
        let out = run(&argv);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{argv:?} accepted a bad list");
        assert!(err.contains("banks.txt:3"), "{argv:?}: {err}");
    }
    // intercept is refused by `run` (not built yet) but explained by `policy check`.
    std::fs::write(dir.0.join("banks.txt"), "ok.example\n").expect("list");
    let text = std::fs::read_to_string(&cfg)
        .expect("config")
        .replace("default = \"bypass\"", "default = \"intercept\"");
    std::fs::write(&cfg, text).expect("config");
    let out = run(&[BIN, "run", "--config", c]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("policy.default") && err.contains("intercept"),
        "{err}"
    );
    assert!(ask(&[]).contains("refuses"));
}

#[test]
fn ca_init_makes_a_private_key_only_root_reads_and_config_check_refuses_a_readable_one() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::new("cainit");
    let ca_dir = dir.0.join("ca");
    let out = run_ok(&[BIN, "ca", "init", "--out", ca_dir.to_str().expect("path")]);
    assert!(out.contains("ca.crt") && !out.contains("PRIVATE KEY"), "{out}");
    let key = ca_dir.join("ca.key");
    let mode = std::fs::metadata(&key).expect("key").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A second init must not overwrite the CA.
    let again = run(&[BIN, "ca", "init", "--out", ca_dir.to_str().expect("path")]);
    assert!(!again.status.success());
    let cfg = dir.0.join("glasswire.toml");
    std::fs::write(
        &cfg,
        "[bridge]\nport_a = \"a\"\nport_b = \"b\"\n\n[intercept]\nca_cert = \"ca/ca.crt\"\nca_key = \"ca/ca.key\"\n\n\
         [[policy.rule]]\nsni = \"*.example\"\naction = \"intercept\"\n",
    )
    .expect("config");
    let ok = run_ok(&[BIN, "config", "check", "--config", cfg.to_str().expect("path")]);
    assert!(ok.contains("inspection CA"), "{ok}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = run(&[BIN, "config", "check", "--config", cfg.to_str().expect("path")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ca.key") && err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains("PRIVATE KEY") && !err.contains("BEGIN"),
        "no key material in errors: {err}"
    );
}
