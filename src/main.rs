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
    /// Print the version.
    Version,
    /// Reports built from the local event archive.
    Report {
        #[command(subcommand)]
        what: ReportCmd,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// The SOC report for a period: attacked tenants, attacking addresses and countries,
    /// attack categories, blocks, bans, certificate and availability incidents.
    Soc {
        /// First day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        from: String,
        /// Last day, YYYY-MM-DD (inclusive).
        #[arg(long)]
        to: String,
        /// Only this tenant.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
        /// Archive file or directory. Default: the first JSON file sink of the configuration.
        #[arg(long)]
        archive: Option<PathBuf>,
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ReportFormat {
    Text,
    Json,
    Html,
}

fn report_soc(
    from: String,
    to: String,
    tenant: Option<String>,
    format: ReportFormat,
    archive: Option<PathBuf>,
    config: Option<PathBuf>,
) -> Result<String, String> {
    use cong::soc::report;
    report::check_date(&from).map_err(|e| e.to_string())?;
    report::check_date(&to).map_err(|e| e.to_string())?;
    let archive = match archive {
        Some(a) => a,
        None => {
            let cfg = load(config)?;
            let settings = cong::soc::Settings::build(&cfg).map_err(|e| e.to_string())?;
            settings
                .into_iter()
                .flat_map(|s| s.sinks)
                .find(|s| s.format == cong::config::SinkFormat::Json)
                .and_then(|s| s.file.map(|f| f.path))
                .ok_or("no JSON file sink in the configuration: give --archive")?
        }
    };
    let opts = report::Options {
        from,
        to,
        tenant,
        format: match format {
            ReportFormat::Text => report::OutFormat::Text,
            ReportFormat::Json => report::OutFormat::Json,
            ReportFormat::Html => report::OutFormat::Html,
        },
    };
    let r = report::build(&archive, &opts).map_err(|e| format!("{e:#}"))?;
    report::render(&r, opts.format).map_err(|e| format!("{e:#}"))
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
        Cmd::Report {
            what:
                ReportCmd::Soc {
                    from,
                    to,
                    tenant,
                    format,
                    archive,
                    config,
                },
        } => match report_soc(from, to, tenant, format, archive, config) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
        Cmd::Check { config } => match load(config).and_then(|c| {
            cong::soc::Settings::build(&c).map_err(|e| e.to_string())?;
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
