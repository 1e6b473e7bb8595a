//! Downloads through the bridge over impaired links: on both sides of the bridge a
//! seeded impairment stage (`tests/impair.py`, this kernel has no netem) drops,
//! duplicates and reorders TCP segments. An intercepted HTTPS download (the bridge's own
//! TCP halves must recover from all of it, toward both peers) and a bypassed plain one
//! still arrive with the right sha256.

mod common;

use common::tls::{intercept_pki, start_www_nginx, KillOnDrop};
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An impairment stage spliced into one side of the testbed: the veth pair between an
/// end namespace and the bridge is replaced by two pairs with a namespace of impair.py
/// in between. Its namespace goes when dropped.
struct Impairment {
    ns: String,
    relay: Option<KillOnDrop>,
    stats: PathBuf,
}

impl Impairment {
    /// `end_ns`/`end_if`: the client or server side; `port`: the bridge's port facing it;
    /// `mac`, `ip4`, `ip6`: the end's addresses, restored on its new interface.
    #[allow(clippy::too_many_arguments)]
    fn splice_in(
        tb: &Testbed,
        name: &str,
        end_ns: &str,
        end_if: &str,
        port: &str,
        (mac, ip4, ip6): (&str, &str, &str),
        seed: u32,
        dir: &Path,
    ) -> Self {
        let bridge_ns = tb.s("bridge_ns");
        let ns = format!("{}-{name}", tb.prefix);
        let _ = run(&["ip", "netns", "del", &ns]);
        run_ok(&["ip", "netns", "add", &ns]);
        let mut me = Self {
            ns: ns.clone(),
            relay: None,
            stats: dir.join(format!("impair-{name}.json")),
        };
        // The old pair goes (deleting one end deletes both).
        run_ok(&["ip", "-n", end_ns, "link", "del", end_if]);
        run_ok(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
        ]);
        run_ok(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-qw",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        run_ok(&[
            "ip", "link", "add", end_if, "netns", end_ns, "type", "veth", "peer", "name", "ia", "netns", &ns,
        ]);
        run_ok(&[
            "ip", "link", "add", "ib", "netns", &ns, "type", "veth", "peer", "name", port, "netns",
            &bridge_ns,
        ]);
        run_ok(&["ip", "-n", end_ns, "link", "set", end_if, "address", mac]);
        run_ok(&[
            "ip",
            "-n",
            end_ns,
            "addr",
            "add",
            &format!("{ip4}/24"),
            "dev",
            end_if,
        ]);
        run_ok(&[
            "ip",
            "-n",
            end_ns,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            end_if,
            "nodad",
        ]);
        // As the testbed does: no partial checksums, no segments larger than the MTU.
        for (n, dev) in [
            (end_ns, end_if),
            (ns.as_str(), "ia"),
            (ns.as_str(), "ib"),
            (bridge_ns.as_str(), port),
        ] {
            run_ok(&[
                "ip", "netns", "exec", n, "ethtool", "-K", dev, "tx", "off", "gso", "off", "gro", "off",
            ]);
            run_ok(&["ip", "-n", n, "link", "set", dev, "up"]);
        }
        // Frames the bridge redirects into its port arrive at `ib`, which needs an XDP
        // program of its own to take them (veth), as the testbed's end interfaces have.
        let pass = PathBuf::from(tb.s("state_dir")).join("xdp_pass.bpf.o");
        run_ok(&[
            "ip",
            "-n",
            &ns,
            "link",
            "set",
            "dev",
            "ib",
            "xdpdrv",
            "obj",
            pass.to_str().expect("path"),
            "sec",
            "xdp",
        ]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/impair.py");
        let relay = tb.spawn_in(
            &ns,
            &[
                "python3",
                script,
                "--a",
                "ia",
                "--b",
                "ib",
                "--seed",
                &seed.to_string(),
                "--loss",
                "0.02",
                "--dup",
                "0.01",
                "--reorder",
                "0.02",
                "--stats-file",
                me.stats.to_str().expect("path"),
            ],
        );
        me.relay = Some(KillOnDrop(relay));
        me
    }

    /// SIGTERM (the relay writes its final counts), then the counts.
    fn stop(&mut self) -> Value {
        if let Some(mut r) = self.relay.take() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &r.0.id().to_string()])
                .status();
            let _ = r.0.wait();
        }
        let text = std::fs::read_to_string(&self.stats).unwrap_or_default();
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("impair stats {}: {e}: {text:?}", self.stats.display()))
    }
}

impl Drop for Impairment {
    fn drop(&mut self) {
        self.relay.take();
        let _ = run(&["ip", "netns", "del", &self.ns]);
    }
}

/// The bridge's port facing the clients (0) or the servers (1).
fn port(tb: &Testbed, i: usize) -> String {
    tb.status["ports"][i].as_str().expect("testbed ports").to_string()
}

fn impaired(stats: &Value, what: &str) -> u64 {
    ["a_to_b", "b_to_a"]
        .iter()
        .map(|d| stats[d][what].as_u64().unwrap_or(0))
        .sum()
}

#[test]
fn downloads_survive_loss_duplication_and_reordering_on_both_sides() {
    if !can_run(&["curl", "python3", "nginx", "openssl", "ethtool", "ss"]) {
        return;
    }
    let tb = Testbed::up("e2eimp");
    let dir = Scratch::new("e2eimp");
    let mut client_side = Impairment::splice_in(
        &tb,
        "impc",
        &tb.s("client_ns"),
        &tb.s("client_if"),
        &port(&tb, 0),
        (&tb.s("client_mac"), &tb.s("client_ip"), &tb.s("client_ip6")),
        11,
        &dir.0,
    );
    let mut server_side = Impairment::splice_in(
        &tb,
        "imps",
        &tb.s("server_ns"),
        &tb.s("server_if"),
        &port(&tb, 1),
        (&tb.s("server_mac"), &tb.s("server_ip"), &tb.s("server_ip6")),
        12,
        &dir.0,
    );
    intercept_pki(&dir.0);
    let www = dir.0.join("www");
    std::fs::create_dir_all(&www).expect("www");
    let want = random_file(&www.join("file.bin"), 8);
    let _nginx = start_www_nginx(&tb, &dir.0);
    let _http = HttpServer::start(&tb, &www, 8080);
    let d = dir.0.display();
    let config = format!(
        "[intercept]\nca_cert = \"{d}/ica/ca.crt\"\nca_key = \"{d}/ica/ca.key\"\nupstream_ca_file = \"{d}/www-ca.pem\"\nsystem_roots = false\n\n\
         [[policy.rule]]\nname = \"inspect\"\nsni = [\"*.test\"]\naction = \"intercept\"\n"
    );
    let bridge = tb.start_bridge_with(&dir.0, &config, &[]);

    let resolve = format!("www.test:443:{}", tb.s("server_ip"));
    let ica = format!("{d}/ica/ca.crt");
    for (what, url, extra) in [
        (
            "intercepted HTTPS",
            "https://www.test/file.bin".to_string(),
            vec!["--cacert", ica.as_str(), "--resolve", resolve.as_str()],
        ),
        (
            "bypassed plain HTTP",
            format!("http://{}:8080/file.bin", tb.s("server_ip")),
            vec![],
        ),
    ] {
        let got = dir.0.join("got.bin");
        let _ = std::fs::remove_file(&got);
        let mut argv = vec![
            "curl",
            "-sS",
            "--max-time",
            "120",
            "-o",
            got.to_str().expect("path"),
        ];
        argv.extend(extra);
        argv.push(&url);
        let out = tb.client(&argv);
        assert!(
            out.status.success(),
            "{what}: curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256_file(&got), want, "{what}: the file arrived changed");
    }
    let stats = bridge.stats();
    assert_eq!(u(&stats, &["intercept", "established"]), 1, "{stats}");
    let (c, s) = (client_side.stop(), server_side.stop());
    eprintln!("impairment, client side: {c}\nimpairment, server side: {s}");
    for (side, st) in [("client", &c), ("server", &s)] {
        for what in ["dropped", "duplicated", "reordered"] {
            assert!(impaired(st, what) > 0, "the {side} side {what} nothing: {st}");
        }
    }
}
