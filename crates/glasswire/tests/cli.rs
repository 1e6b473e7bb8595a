//! The command line's own behaviour: help, config errors, testbed ownership rules.

mod common;

use common::*;

#[test]
fn help_explains_every_subcommand() {
    let out = run_ok(&[BIN, "--help"]);
    for sub in ["run", "stats", "testbed", "demo", "config"] {
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
