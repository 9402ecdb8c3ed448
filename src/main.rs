//! The `cong` command: parses arguments and calls into the library.

use clap::{Parser, Subcommand};
use cong::config::Config;
use cong::gateway::Snapshot;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where `cong run` and `cong check` look when no `-c` is given.
const SYSTEM_CONFIG: &str = "/etc/cong/cong.toml";

#[derive(Parser)]
#[command(
    name = "cong",
    version,
    about = "Gateway for provincial government web portals"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gateway.
    Run {
        /// Main configuration file. Default: /etc/cong/cong.toml if it exists, else the
        /// built-in demo configuration.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Take the listening sockets over from a running cong (binary upgrade).
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate the configuration without starting.
    Check {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Certificates: list them, or renew one now.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum CertsCmd {
    /// Every certificate: name, source, issuer, not-after, days left, next renewal.
    List {
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Renew an ACME-managed certificate now, through the running gateway's admin listener.
    Renew {
        /// Tenant id of the certificate.
        name: String,
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| {
        Path::new(SYSTEM_CONFIG)
            .exists()
            .then(|| PathBuf::from(SYSTEM_CONFIG))
    });
    match path {
        Some(p) => Config::load(&p).map_err(|e| e.to_string()),
        None => Config::builtin().map_err(|e| e.to_string()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("cong {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Check { config } => match load(config).and_then(|c| {
            Snapshot::build(&c)
                .map(|s| (c, s))
                .map_err(|e| e.to_string())
        }) {
            Ok((cfg, snap)) => {
                let hosts: usize = snap.tenants.iter().map(|t| t.hosts.len()).sum();
                let pools: usize = snap.tenants.iter().map(|t| t.pools.len()).sum();
                println!(
                    "{}: ok ({} tenants, {} host names, {} pools)",
                    cfg.main_source.path,
                    snap.tenants.len(),
                    hosts,
                    pools
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Certs { cmd } => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
                .init();
            let (config, renew) = match cmd {
                CertsCmd::List { config } => (config, None),
                CertsCmd::Renew { name, config } => (config, Some(name)),
            };
            let res = load(config).and_then(|c| {
                Snapshot::build(&c)
                    .map(|s| (c, s))
                    .map_err(|e| e.to_string())
            });
            let (_cfg, snap) = match res {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let out = match renew {
                None => cong::certs::cli::list(&snap).map(|t| {
                    print!("{t}");
                }),
                Some(name) => cong::certs::cli::renew(&snap, &name),
            };
            match out {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run { config, upgrade } => {
            env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
                .format_timestamp_millis()
                .init();
            let cfg = match load(config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            if cfg.builtin {
                log::info!("no configuration file given: using the built-in demo configuration");
            }
            if let Err(e) = cong::server::run(cfg, upgrade) {
                eprintln!("error: {e:#}");
                return ExitCode::from(1);
            }
            ExitCode::SUCCESS
        }
    }
}
