//! The `cong` command: parses arguments and calls into the library.

use clap::{Parser, Subcommand};
use cong::config::scaffold::{self, NewTenant};
use cong::config::{Config, TenantFile};
use cong::gateway::Snapshot;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// mimalloc instead of glibc's allocator: the request path (rule evaluation above all) makes
/// many small short-lived allocations, which it serves with less CPU and less fragmentation
/// over weeks of uptime.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
        /// Also check DNS (A, AAAA, CAA) of every tenant host and that backends accept
        /// connections.
        #[arg(long)]
        online: bool,
        /// With --online: print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// With --online: ask this DNS server (IP:PORT) instead of the system resolver.
        #[arg(long)]
        resolver: Option<std::net::SocketAddr>,
    },
    /// Replace the running cong with this binary without dropping a connection: starts
    /// `cong run --upgrade`, hands the listening sockets over, waits for confirmation.
    Upgrade {
        #[arg(short, long, default_value = SYSTEM_CONFIG)]
        config: PathBuf,
        /// Give up after this many seconds (the old process keeps serving).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Reports built from the gateway's records.
    Report {
        #[command(subcommand)]
        cmd: ReportCmd,
    },
    /// Admin API tokens.
    Token {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Tenant files.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// Certificates: list them, or renew one now.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
    /// Bans of a running gateway (through its admin API).
    Bans {
        #[command(subcommand)]
        cmd: BansCmd,
        /// Admin API address. Default: admin.address of the configuration.
        #[arg(long, global = true)]
        admin: Option<std::net::SocketAddr>,
        /// Configuration to read admin.address from.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// Page cache of a running gateway (through its admin API).
    Cache {
        #[command(subcommand)]
        cmd: CacheCmd,
        /// Admin API address. Default: admin.address of the configuration.
        #[arg(long, global = true)]
        admin: Option<std::net::SocketAddr>,
        /// Configuration to read admin.address from.
        #[arg(short, long, global = true)]
        config: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand)]
enum CacheCmd {
    /// Purge one URL, a path prefix or a whole tenant. The token is read from CONG_ADMIN_TOKEN.
    Purge {
        #[arg(long)]
        tenant: String,
        /// scheme://host/path?query (all its Vary variants).
        #[arg(long, group = "scope")]
        url: Option<String>,
        /// Path prefix, e.g. /tin-tuc/.
        #[arg(long, group = "scope")]
        prefix: Option<String>,
        /// Everything of the tenant.
        #[arg(long, group = "scope")]
        all: bool,
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

#[derive(Subcommand)]
enum BansCmd {
    /// List active bans. The token is read from CONG_ADMIN_TOKEN.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lift the ban on an address or prefix as listed (e.g. 2001:db8:1:2::/64).
    Lift { key: String },
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
    /// Per tenant uptime, incidents, requests, visitors, bandwidth and IPv6 share of a month.
    Availability {
        /// The month, e.g. 2026-11.
        #[arg(long)]
        month: String,
        /// csv, html or json.
        #[arg(long, default_value = "csv")]
        format: String,
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Make a random token and print it with the line to put in the configuration.
    New {
        /// Who will hold it (written in audit events).
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Write a new tenant file, checked against the rest of the configuration first.
    New {
        #[arg(long)]
        id: String,
        #[arg(long)]
        name: Option<String>,
        /// Host name (repeat for aliases and wildcards).
        #[arg(long = "host", required = true)]
        hosts: Vec<String>,
        /// Backend address (repeat for several).
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// Add an HTTP health check of this path.
        #[arg(long)]
        health_path: Option<String>,
        /// Main configuration file; the tenant file goes into its tenants directory.
        #[arg(short, long, default_value = SYSTEM_CONFIG)]
        config: PathBuf,
        /// Write the file here instead of the configuration's tenants directory.
        #[arg(long)]
        out: Option<PathBuf>,
    },
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

fn check(
    config: Option<PathBuf>,
    online: bool,
    json: bool,
    resolver: Option<std::net::SocketAddr>,
) -> ExitCode {
    let (cfg, snap) = match load(config).and_then(|c| {
        cong::soc::Settings::build(&c).map_err(|e| e.to_string())?;
        Snapshot::build(&c)
            .map(|s| (c, s))
            .map_err(|e| e.to_string())
    }) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    for w in &snap.warnings {
        eprintln!("warning: {w}");
    }
    let hosts: usize = snap.tenants.iter().map(|t| t.hosts.len()).sum();
    let pools: usize = snap.tenants.iter().map(|t| t.pools.len()).sum();
    if !online {
        println!(
            "{}: ok ({} tenants, {} host names, {} pools)",
            cfg.main_source.path,
            snap.tenants.len(),
            hosts,
            pools
        );
        let wafs: Vec<&cong::waf::TenantWaf> = snap.tenants.iter().map(|t| &t.waf).collect();
        for line in cong::waf::check_summary(&wafs) {
            println!("{line}");
        }
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let report = rt.block_on(cong::online::run(&snap, &snap.online, resolver));
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print!("{}", cong::online::render_text(&report));
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn report_availability(config: Option<PathBuf>, month: &str, format: &str) -> ExitCode {
    let snap = match load(config).and_then(|c| Snapshot::build(&c).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(dir) = snap.settings.state_dir.clone() else {
        eprintln!(
            "error: the configuration has no server.state_dir, so there is no history to report on"
        );
        return ExitCode::from(2);
    };
    let rows = match cong::report::build(&snap, &dir, month, cong::maintenance::now_s()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match format {
        "csv" => print!("{}", cong::report::csv(&rows)),
        "html" => print!("{}", cong::report::html(month, &rows)),
        "json" => println!(
            "{}",
            serde_json::to_string_pretty(&rows).unwrap_or_default()
        ),
        other => {
            eprintln!("error: unknown format `{other}`: use csv, html or json");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn tenant_new(t: NewTenant, config: PathBuf, out: Option<PathBuf>) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("error: {msg}");
        ExitCode::from(2)
    };
    let text = scaffold::render(&t);
    // Check it together with the existing configuration when there is one.
    let (target, mut cfg) = match Config::load(&config) {
        Ok(cfg) => {
            let dir = cfg.resolve(
                cfg.main
                    .server
                    .tenants_dir
                    .as_ref()
                    .map(|d| d.get_ref().as_str())
                    .unwrap_or("tenants.d"),
            );
            (dir.join(format!("{}.toml", t.id)), Some(cfg))
        }
        Err(e) if out.is_some() => {
            eprintln!("note: not checked against {}: {e}", config.display());
            (PathBuf::new(), None)
        }
        Err(e) => {
            return fail(format!(
                "{e} (give --out to write the file without a configuration)"
            ))
        }
    };
    let target = out.unwrap_or(target);
    let path = target.display().to_string();
    if target.exists() {
        return fail(format!("{path} exists already: not overwritten"));
    }
    let tenant = match scaffold::parse(&path, &text) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    if let Some(cfg) = cfg.as_mut() {
        cfg.tenants.push(TenantFile {
            source: cong::config::SourceFile {
                path: path.clone(),
                text: text.clone(),
            },
            tenant,
        });
        if let Err(e) = Snapshot::build(cfg) {
            return fail(e.to_string());
        }
    }
    let tmp = target.with_extension("toml.tmp");
    if let Err(e) = std::fs::write(&tmp, &text).and_then(|_| std::fs::rename(&tmp, &target)) {
        return fail(format!("cannot write {path}: {e}"));
    }
    println!("wrote {path}");
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("cong {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Report {
            cmd:
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
        Cmd::Bans { cmd, admin, config } => bans(cmd, admin, config),
        Cmd::Cache { cmd, admin, config } => cache_cmd(cmd, admin, config),
        Cmd::Check {
            config,
            online,
            json,
            resolver,
        } => check(config, online, json, resolver),
        Cmd::Upgrade { config, timeout } => {
            let snap = match Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| Snapshot::build(&c).map_err(|e| e.to_string()))
            {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let s = &snap.settings;
            match cong::upgrade::upgrade(
                &config,
                &s.pid_file,
                &s.upgrade_sock,
                std::time::Duration::from_secs(timeout),
            ) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Report {
            cmd:
                ReportCmd::Availability {
                    month,
                    format,
                    config,
                },
        } => report_availability(config, &month, &format),
        Cmd::Token {
            cmd: TokenCmd::New { name },
        } => {
            let token = format!(
                "{}{}",
                cong::forwarded::new_request_id(),
                cong::forwarded::new_request_id()
            );
            let hash: String = cong::admin::auth::token_hash(&token)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            println!("token (give it to {name}; it is not stored anywhere): {token}");
            println!();
            println!("[[admin.token]]");
            println!("name = \"{}\"", name.replace('"', ""));
            println!("sha256 = \"{hash}\"");
            ExitCode::SUCCESS
        }
        Cmd::Tenant {
            cmd:
                TenantCmd::New {
                    id,
                    name,
                    hosts,
                    backends,
                    health_path,
                    config,
                    out,
                },
        } => tenant_new(
            NewTenant {
                id,
                name,
                hosts,
                backends,
                health_path,
            },
            config,
            out,
        ),
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
                .format(log_line)
                .target(env_logger::Target::Pipe(Box::new(cong::events::LogOutput)))
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

fn cache_cmd(
    cmd: CacheCmd,
    admin: Option<std::net::SocketAddr>,
    config: Option<PathBuf>,
) -> ExitCode {
    let CacheCmd::Purge {
        tenant,
        url,
        prefix,
        all,
    } = cmd;
    use cong::cache::purge::Purge;
    let p = match (url, prefix, all) {
        (Some(url), None, false) => Purge::Url { tenant, url },
        (None, Some(prefix), false) => Purge::Prefix { tenant, prefix },
        (None, None, true) => Purge::Tenant { tenant },
        _ => {
            eprintln!("error: give one of --url, --prefix or --all");
            return ExitCode::from(2);
        }
    };
    let admin = match admin_addr(admin, config) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let token = std::env::var("CONG_ADMIN_TOKEN").unwrap_or_default();
    match cong::cache::cli::purge(admin, &token, &p) {
        Ok(n) => {
            println!("purged {n} objects");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn admin_addr(
    admin: Option<std::net::SocketAddr>,
    config: Option<PathBuf>,
) -> Result<std::net::SocketAddr, String> {
    match admin {
        Some(a) => Ok(a),
        None => load(config).and_then(|c| {
            c.main
                .admin
                .address
                .get_ref()
                .parse()
                .map_err(|_| "admin.address is not IP:PORT".to_string())
        }),
    }
}

fn bans(cmd: BansCmd, admin: Option<std::net::SocketAddr>, config: Option<PathBuf>) -> ExitCode {
    let admin = match admin {
        Some(a) => a,
        None => match load(config).and_then(|c| {
            c.main
                .admin
                .address
                .get_ref()
                .parse()
                .map_err(|_| "admin.address is not IP:PORT".to_string())
        }) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        },
    };
    let token = std::env::var("CONG_ADMIN_TOKEN").unwrap_or_default();
    let res = match cmd {
        BansCmd::List { json } => cong::limits::cli::list(admin, &token, json),
        BansCmd::Lift { key } => cong::limits::cli::lift(admin, &token, &key),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// One log line as env_logger writes it by default (`[time LEVEL target] message`), without
/// styles. env_logger is built without its colour support, which stripped styles from every
/// byte and asked the kernel whether stderr is a terminal (an `ioctl`) for every line: the
/// WAF's security events log a line per rule match on the request path. An escape byte in a
/// message is written as `\e`, not obeyed.
fn log_line(buf: &mut env_logger::fmt::Formatter, r: &log::Record<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let ts = buf.timestamp_millis();
    match r.args().as_str() {
        Some(m) if !m.contains('\x1b') => {
            writeln!(buf, "[{ts} {:<5} {}] {m}", r.level(), r.target())
        }
        // Events come escaped (`Event::to_logfmt`): written as they are, not copied twice
        // on the way (a WAF refusal logs a dozen of them on the request path).
        None if r.target() == "event" => {
            writeln!(buf, "[{ts} {:<5} event] {}", r.level(), r.args())
        }
        _ => {
            let m = r.args().to_string().replace('\x1b', "\\e");
            writeln!(buf, "[{ts} {:<5} {}] {m}", r.level(), r.target())
        }
    }
}
