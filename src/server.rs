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
    let settings = snapshot.settings.clone();
    if !upgrade {
        check_binds(&settings.listen, settings.admin)?;
    }
    let gateway = Gateway::with_source(snapshot, cfg.source_path());

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

    let mut app =
        pingora::proxy::HttpProxy::new(Proxy::new(gateway.clone()), server.configuration.clone());
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
        proxy.add_tcp_with_settings(&l.addr.to_string(), socket_options(l));
    }

    let mut admin = Service::new("cong admin".to_string(), AdminApp::new(gateway.clone()));
    admin.add_tcp(&settings.admin.to_string());

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
    write_pid_file(&settings.pid_file);
    crate::upgrade::notify_systemd_ready();
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
        cfg.main_source.path
    );
    server.run_forever()
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
