//! `glasswire`: the command line. It reads the config, runs the daemon, builds the
//! namespace testbed, runs the demo and reads the stats socket. Per-packet work lives
//! in the `dataplane` crate; nothing here touches a frame.

mod config;
mod daemon;
mod demo;
mod demo_tls;
mod mirror_sinks;
mod policy_cmd;
mod sessions;
mod stats_cmd;
mod testbed;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// glasswire: a transparent, kernel-bypass TLS visibility bridge.
///
/// Cabled inline between a switch and a router, it forwards every frame between its
/// two ports through AF_XDP, keeps flows that need no inspection in the kernel's XDP
/// fast path, and (as those capabilities land) decrypts the TLS sessions policy selects
/// for the passive tools on its mirror port.
///
/// New here? `glasswire demo` brings up a namespace testbed, runs the bridge, sends
/// traffic across it, prints what crossed and cleans up.
#[derive(Debug, Parser)]
#[command(name = "glasswire", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the bridge (needs root: XDP and AF_XDP).
    ///
    /// Attaches the XDP program to both ports, starts one worker per queue, serves
    /// counters on the stats socket, and runs until SIGINT or SIGTERM, when it detaches
    /// everything. A restart after a crash (even SIGKILL) needs no cleanup.
    Run {
        /// TOML config; `glasswire config example` prints an annotated one.
        #[arg(long, short)]
        config: PathBuf,
        /// Send every frame through AF_XDP, including ARP, UDP and bypassed TCP
        /// (overrides `bridge.userspace_forward`).
        #[arg(long)]
        userspace_forward: bool,
        /// Keep every TCP frame in userspace (overrides `bridge.fast_path`).
        #[arg(long)]
        no_fast_path: bool,
        /// How the XDP program attaches (overrides `bridge.xdp_mode`): `native`, in the
        /// driver, which the kernel fast path needs; or `generic`, on the skb path of any
        /// device (on veth with --userspace-forward, the shorter round trip:
        /// perf/RESULTS.md).
        #[arg(long, value_name = "MODE", value_parser = ["native", "generic"])]
        xdp_mode: Option<String>,
    },
    /// Print the running bridge's counters.
    Stats {
        /// The stats socket (`stats.socket` in the config).
        #[arg(long, default_value_os_t = config::default_stats_socket())]
        socket: PathBuf,
        /// Print the raw JSON document instead of a summary.
        #[arg(long)]
        json: bool,
        /// Describe every counter instead of reading them (no bridge needed).
        #[arg(long, conflicts_with = "json")]
        describe: bool,
    },
    /// Build or remove the namespace testbed: client, bridge and server namespaces.
    Testbed {
        #[command(subcommand)]
        action: TestbedCmd,
    },
    /// Testbed up, bridge running, traffic across it, a summary, testbed down.
    Demo {
        /// Keep the artifacts (config, stats, bridge log, testbed description, session log
        /// as sessions.jsonl, the decrypted mirror as mirror.pcap, the inspection CA's
        /// certificate) in DIR.
        #[arg(long, value_name = "DIR")]
        keep: Option<PathBuf>,
        /// Size of the file downloaded across the bridge, in MiB.
        #[arg(long, default_value_t = 20)]
        size_mb: u64,
        /// Run the bridge with every frame through AF_XDP.
        #[arg(long)]
        userspace_forward: bool,
    },
    /// Configuration helpers.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Policy helpers (docs/policy.md).
    Policy {
        #[command(subcommand)]
        action: PolicyCmd,
    },
    /// The inspection CA whose forged certificates intercepted clients see
    /// (docs/intercept.md).
    Ca {
        #[command(subcommand)]
        action: CaCmd,
    },
}

#[derive(Debug, Subcommand)]
enum CaCmd {
    /// Create an inspection CA: DIR/ca.crt (give it to the clients' trust stores) and
    /// DIR/ca.key (mode 0600, created so; it never leaves this file). Refuses to
    /// overwrite either.
    Init {
        /// Directory to write ca.crt and ca.key to (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The CA's common name, as clients will show it.
        #[arg(long, default_value = "glasswire inspection CA")]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
enum PolicyCmd {
    /// Check the config's `[policy]` and its lists; with flow options, print which rule
    /// matches that flow and the verdict.
    ///
    /// Example: glasswire policy check -c glasswire.toml --sni www.bank.example --dst 192.0.2.7 --port 443
    Check {
        #[arg(long, short)]
        config: PathBuf,
        /// Server name in the ClientHello (leave out for a hello without SNI).
        #[arg(long)]
        sni: Option<String>,
        /// Client address.
        #[arg(long)]
        src: Option<std::net::IpAddr>,
        /// Server address.
        #[arg(long)]
        dst: Option<std::net::IpAddr>,
        /// Server port (default 443).
        #[arg(long)]
        port: Option<u16>,
        /// ALPN protocol offered (repeat for several).
        #[arg(long)]
        alpn: Vec<String>,
        /// Newest version offered: sslv2, ssl3, tls1.0, tls1.1, tls1.2, tls1.3 (default).
        #[arg(long)]
        tls_version: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum TestbedCmd {
    /// Create the namespaces, veth pairs, mirror TAP and a config for them.
    ///
    /// Refuses when a namespace it would create exists and is not its own.
    Up {
        #[arg(long, default_value = testbed::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Remove everything `up` made (and stop processes left in its namespaces).
    Down {
        #[arg(long, default_value = testbed::DEFAULT_PREFIX)]
        prefix: String,
    },
    /// Describe a testbed that is up.
    Status {
        #[arg(long, default_value = testbed::DEFAULT_PREFIX)]
        prefix: String,
        /// One JSON object: namespaces, addresses, ports, mirror, config, run argv.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCmd {
    /// Print an annotated config with every key and its default.
    Example,
    /// Check a config file and print it with defaults filled in.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GLASSWIRE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = dispatch(Cli::parse()) {
        eprintln!("glasswire: error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Run {
            config,
            userspace_forward,
            no_fast_path,
            xdp_mode,
        } => {
            let (mut cfg, policy) = config::Config::load(&config)?;
            cfg.bridge.userspace_forward |= userspace_forward;
            cfg.bridge.fast_path &= !no_fast_path;
            if let Some(mode) = xdp_mode {
                cfg.bridge.xdp_mode = mode;
            }
            daemon::run(cfg, policy, config)
        }
        Cmd::Stats { describe: true, .. } => {
            print!("{}", stats_cmd::describe());
            Ok(())
        }
        Cmd::Stats { socket, json, .. } => {
            let v = telemetry::fetch(&socket)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", stats_cmd::render(&v));
            }
            Ok(())
        }
        Cmd::Testbed { action } => match action {
            TestbedCmd::Up { prefix } => {
                let (st, existed) = testbed::up(&prefix)?;
                let what = if existed { "already up" } else { "up" };
                println!("testbed {prefix:?} {what}:\n{}", testbed::describe(&st));
                Ok(())
            }
            TestbedCmd::Down { prefix } => {
                if testbed::down(&prefix)? {
                    println!("testbed {prefix:?} removed");
                } else {
                    println!("no testbed {prefix:?}: nothing to remove");
                }
                Ok(())
            }
            TestbedCmd::Status { prefix, json } => {
                let st = testbed::status(&prefix)?;
                if json {
                    println!("{}", serde_json::to_string(&st)?);
                } else {
                    println!("testbed {prefix:?}:\n{}", testbed::describe(&st));
                }
                Ok(())
            }
        },
        Cmd::Demo {
            keep,
            size_mb,
            userspace_forward,
        } => demo::run(demo::DemoOptions {
            keep,
            size_mb,
            userspace_forward,
        }),
        Cmd::Policy {
            action:
                PolicyCmd::Check {
                    config,
                    sni,
                    src,
                    dst,
                    port,
                    alpn,
                    tls_version,
                },
        } => {
            let probe = policy_cmd::Probe {
                sni,
                src,
                dst,
                port,
                alpn,
                tls_version,
            };
            print!("{}", policy_cmd::check(&config, &probe)?);
            Ok(())
        }
        Cmd::Ca {
            action: CaCmd::Init { out, name },
        } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            let opts = tls::ca::InitOptions {
                common_name: name,
                ..tls::ca::InitOptions::default()
            };
            let files = tls::ca::init_with(&out, &opts, std::time::SystemTime::now())?;
            println!(
                "inspection CA created:\n  certificate {} (install it in the clients' trust stores)\n  private key {} (mode 0600; keep it there)\n\nin the config:\n[intercept]\nca_cert = {:?}\nca_key = {:?}",
                files.cert.display(),
                files.key.display(),
                files.cert,
                files.key
            );
            Ok(())
        }
        Cmd::Config { action } => match action {
            ConfigCmd::Example => {
                print!("{}", config::EXAMPLE);
                Ok(())
            }
            ConfigCmd::Check { config } => {
                let (cfg, policy) = config::Config::load(&config)?;
                cfg.check_runnable(&policy)?;
                if let Some(ic) = &cfg.intercept {
                    // The CA files as `run` will load them: mode, match, CA-ness.
                    let ic = ic.resolve(&cfg.base_dir);
                    let ca = tls::ca::InspectionCa::load(&ic.ca_cert, &ic.ca_key)
                        .context("intercept.ca_cert / intercept.ca_key")?;
                    println!("inspection CA {:?} loads", ca.name());
                }
                println!(
                    "{} is valid (policy: {}):\n\n{}",
                    config.display(),
                    policy.summary(),
                    toml::to_string_pretty(&cfg)?
                );
                Ok(())
            }
        },
    }
}
