//! Start-up: turns a validated snapshot into a running pingora server with the citizen
//! listeners, the admin listener and the background maintainer, after checking that every
//! address can be bound (pingora would otherwise retry a busy port quietly and never listen).

use crate::admin::AdminApp;
use crate::config::Config;
use crate::gateway::{Gateway, ListenSpec, Snapshot};
use crate::proxy::Proxy;
use crate::upstream::health::Maintainer;
use anyhow::{bail, Context};
use pingora::apps::HttpServerOptions;
use pingora::listeners::TcpSocketOptions;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::RunArgs;
use pingora::services::listening::Service;
use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use std::sync::Arc;

/// Binds and releases each address, so a busy or forbidden port fails start-up loudly.
pub fn check_binds(listen: &[ListenSpec], admin: SocketAddr) -> anyhow::Result<()> {
    let mut all: Vec<(SocketAddr, bool)> = listen.iter().map(|l| (l.addr, l.ipv6_only)).collect();
    all.push((admin, admin.is_ipv6()));
    for (addr, v6only) in all {
        let domain = if addr.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let sock = Socket::new(domain, Type::STREAM, None)
            .with_context(|| format!("socket for {addr}"))?;
        // Same options pingora uses, so the probe fails exactly when pingora's bind would.
        sock.set_reuse_address(true).ok();
        if addr.is_ipv6() {
            sock.set_only_v6(v6only).ok();
        }
        if let Err(e) = sock.bind(&addr.into()).and_then(|_| sock.listen(1)) {
            bail!("cannot listen on {addr}: {e}");
        }
    }
    Ok(())
}

fn socket_options(l: &ListenSpec) -> TcpSocketOptions {
    let mut o = TcpSocketOptions::default();
    if l.addr.is_ipv6() {
        o.ipv6_only = Some(l.ipv6_only);
    }
    o
}

/// Runs the gateway until it is told to stop. Never returns on success.
pub fn run(cfg: Config, upgrade: bool) -> anyhow::Result<()> {
    let snapshot = Snapshot::build(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let soc_settings = crate::soc::Settings::build(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let settings = snapshot.settings.clone();
    crate::cache::init(&snapshot.cache).map_err(|e| anyhow::anyhow!(e))?;
    if !upgrade {
        check_binds(&settings.listen, settings.admin)?;
    }
    let gateway = Gateway::with_source(snapshot, cfg.source_path(), cfg.files.clone());
    let config_path = cfg.main_source.path.clone();
    // The parsed files are not needed once the snapshot exists (and `run_forever` never
    // returns): with 10,000 tenants they are tens of MB.
    drop(cfg);
    if let Some(soc) = soc_settings {
        crate::soc::start(soc).context("start SOC log shipping")?;
    }

    // Certificates: loaded before any listener accepts, so the first handshake has them.
    crate::tls::install_crypto_provider();
    let certs = Arc::new(crate::tls::CertResolver::new(
        crate::tls::generated_default()?,
    ));
    // In cluster mode the directory is this node's mirror of the shared store.
    let dir_store = crate::certs::DirStore::new(settings.tls.cert_dir.clone());
    let cluster = match &settings.cluster {
        Some(c) => Some(crate::cluster::Cluster::new(
            c.clone(),
            dir_store.clone(),
            certs.clone(),
        )?),
        None => None,
    };
    let store: Arc<dyn crate::certs::CertStore> = match &cluster {
        Some(c) => Arc::new(crate::cluster::RedisStore::new(dir_store, c.clone())),
        None => Arc::new(dir_store),
    };
    crate::tls::load_all(&gateway.snapshot(), store.as_ref(), &certs);
    let challenges = Arc::new(crate::acme::Challenges::default());
    if let Some(c) = &cluster {
        c.install_hooks(&challenges);
        // Newer certificates from the other nodes before the first handshake.
        c.initial_sync();
    }
    let acme = crate::acme::Manager::new(
        gateway.clone(),
        store.clone(),
        certs.clone(),
        challenges.clone(),
    );

    let mut conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.grace_period.as_secs()),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_timeout.as_secs()),
        upgrade_sock: settings.upgrade_sock.clone(),
        pid_file: settings.pid_file.clone(),
        ..ServerConf::default()
    };
    // Retries are decided per pool by the pipeline; this is only pingora's upper bound.
    conf.max_retries = 8;
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let mut app = pingora::proxy::HttpProxy::new(
        Proxy::new(gateway.clone(), certs.clone(), challenges),
        server.configuration.clone(),
    );
    app.handle_init_modules();
    let mut opts = HttpServerOptions::default();
    opts.h2c = settings.h2c;
    let conn = &gateway.snapshot().limits.conn;
    opts.h2_idle_timeout = Some(conn.keepalive_timeout);
    app.server_options = Some(opts);
    let mut h2 = pingora::protocols::http::v2::server::default_h2_options();
    h2.max_concurrent_streams(conn.h2_max_streams);
    app.h2_options = Some(h2);
    // Connection caps, bans at accept and header/idle timeouts wrap pingora's application.
    let mut proxy = Service::new(
        "cong proxy".to_string(),
        crate::limits::conn::Guarded {
            inner: Arc::new(app),
            gateway: gateway.clone(),
        },
    );
    for l in &settings.listen {
        if l.tls {
            let tls = crate::tls::listener_settings(certs.clone())?;
            proxy.add_tls_with_settings(&l.addr.to_string(), Some(socket_options(l)), tls);
        } else {
            // A write buffer that holds a typical page: a response from the page cache then
            // leaves in one send (header and body) instead of two.
            proxy.add_listener(
                pingora::listeners::ListenerConfig::tcp(l.addr.to_string())
                    .tcp_socket_options(socket_options(l))
                    .l4_buffer(
                        pingora::protocols::l4::stream::L4BufferSettings::default()
                            .write(crate::cache::LISTENER_WRITE_BUFFER),
                    ),
            );
        }
    }

    let mut admin = Service::new(
        "cong admin".to_string(),
        AdminApp::new(gateway.clone(), Some(acme.clone()), Some(certs.clone())),
    );
    match &settings.admin_tls {
        Some(t) => {
            let tls = admin_tls_settings(t)?;
            admin.add_tls_with_settings(&settings.admin.to_string(), None, tls);
        }
        None => admin.add_tcp(&settings.admin.to_string()),
    }

    let g = gateway.clone();
    let maintainer = background_service(
        "backend maintainer",
        Maintainer::new(
            Arc::new(move || g.snapshot().pools()),
            gateway.ready.clone(),
        ),
    );

    server.add_service(proxy);
    server.add_service(admin);
    let reloader = background_service(
        "config reloader",
        crate::reload::Reloader {
            gateway: gateway.clone(),
        },
    );
    if settings.availability.enabled {
        server.add_service(background_service(
            "availability prober",
            crate::availability::Prober {
                gateway: gateway.clone(),
                tracker: gateway.availability.clone(),
            },
        ));
    }
    server.add_service(maintainer);
    server.add_service(reloader);
    if let Some(c) = cluster {
        server.add_service(background_service("cluster", crate::cluster::Service(c)));
    }
    write_pid_file(&settings.pid_file);
    crate::upgrade::notify_systemd_ready();
    server.add_service(background_service("acme", crate::acme::Scheduler(acme)));
    server.add_service(background_service(
        "certificate files",
        crate::tls::Watcher::new(
            gateway.clone(),
            store.clone(),
            certs.clone(),
            settings.tls.reload_interval,
        ),
    ));
    log::info!(
        "cong {} starting: listen={} admin={} tenants={} config={}",
        env!("CARGO_PKG_VERSION"),
        settings
            .listen
            .iter()
            .map(|l| l.addr.to_string())
            .collect::<Vec<_>>()
            .join(","),
        settings.admin,
        gateway.snapshot().tenants.len(),
        config_path
    );
    server.run(RunArgs::default());
    // Requests have stopped: hand what is still queued to the sinks (and their spools).
    crate::soc::shutdown(settings.shutdown_timeout);
    std::process::exit(0)
}

/// TLS for the admin listener; with `client_ca`, clients must present a certificate it signed.
fn admin_tls_settings(
    t: &crate::gateway::AdminTls,
) -> anyhow::Result<pingora::listeners::tls::TlsSettings> {
    let mut tls = pingora::listeners::tls::TlsSettings::intermediate(&t.cert, &t.key)
        .map_err(|e| anyhow::anyhow!("admin TLS: {e}"))?;
    if let Some(ca) = &t.client_ca {
        let mut roots = rustls::RootCertStore::empty();
        for c in crate::upstream::tls::read_pem_certs(std::path::Path::new(ca))
            .map_err(|e| anyhow::anyhow!(e))?
        {
            roots.add(c).context("admin client CA")?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .context("admin client certificate verifier")?;
        tls.set_client_cert_verifier(verifier);
    }
    Ok(tls)
}

/// Writes our PID where `server.pid_file` says (an upgraded process overwrites its
/// predecessor's). A failure is logged, not fatal: the gateway serves without it.
fn write_pid_file(path: &str) {
    let tmp = format!("{path}.tmp");
    let res = std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = res {
        crate::events::emit(
            crate::events::Event::new("pid_file_error", crate::events::Severity::Warning)
                .field("path", path)
                .field("cause", e),
        );
    }
}
