//! The `serve` phase: the HTTP API's listeners, bound and their web
//! configuration loaded before the kernel is touched ([`Listeners::bind`]),
//! then served, each on its own task, with the configuration's watch.

use std::sync::{Arc, atomic::AtomicUsize};

use anyhow::Context as _;
use keepalive_api::{Record, Scheme};
use log::info;
use tokio::sync::broadcast;

use super::lock;
use crate::{
    api::{
        routes::{self, Exposure},
        server,
        state::Shared,
        web::{Guard, WebSecurity},
    },
    cli::args::{RunArgs, UsageError},
    host::process,
};

/// The HTTP API's sockets and the main one's security, made before the
/// kernel is touched: a busy address or a bad web configuration is a
/// usage error (exit 2).
pub(super) struct Listeners {
    main: std::net::TcpListener,
    web: WebSecurity,
    /// The loopback listener of the per-socket endpoints.
    local: Option<std::net::TcpListener>,
}

impl Listeners {
    pub(super) fn bind(args: &RunArgs) -> Result<Self, UsageError> {
        let bind = |flag: &str, addr: std::net::SocketAddr| {
            std::net::TcpListener::bind(addr).map_err(|e| UsageError(format!("{flag} {addr}: {e}")))
        };
        let web = match &args.web_config_file {
            Some(path) => {
                WebSecurity::load(path).map_err(|e| UsageError(format!("--web.config.file {e}")))?
            }
            None => WebSecurity::plain(),
        };
        Ok(Listeners {
            main: bind("--listen", args.listen)?,
            web,
            local: args
                .local_listen
                .map(|addr| bind("--local-listen", addr))
                .transpose()?,
        })
    }
}

/// Where the API is served.
pub(super) struct Served {
    pub(super) listen: std::net::SocketAddr,
    pub(super) scheme: Scheme,
    pub(super) local: Option<std::net::SocketAddr>,
}

/// The HTTP API on the listeners bound at start, each on its own task,
/// and the web configuration's watch.
pub(super) fn serve(
    args: &RunArgs,
    listeners: Listeners,
    nofile: u64,
    state: &Shared,
    events: &broadcast::Sender<Arc<Record>>,
) -> anyhow::Result<Served> {
    let api = routes::Api {
        state: state.clone(),
        events: events.clone(),
        clients: Arc::new(AtomicUsize::new(0)),
        max_clients: args.max_event_clients as usize,
        listings: Arc::new(tokio::sync::Semaphore::new(
            crate::api::listing::CONCURRENT_LISTINGS,
        )),
        scrapes: Arc::new(tokio::sync::Semaphore::new(
            args.max_metrics_requests as usize,
        )),
    };
    // One descriptor budget for both listeners.
    let max_connections = process::connection_cap(args.max_connections, nofile);
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    let (counters, unauthorized, reloads) = {
        let s = lock(state)?;
        let a = &s.metrics.agent;
        let counters = server::ServerCounters {
            stalled: a.clients_dropped.clone(),
            refused: a.http_refused.clone(),
            accept_errors: a.http_accept_errors.clone(),
            handshake_errors: a.http_tls_handshake_errors.clone(),
        };
        (counters, a.http_unauthorized.clone(), a.web_reload.clone())
    };
    let tokio_listener = |l: std::net::TcpListener| -> anyhow::Result<_> {
        l.set_nonblocking(true).context("the HTTP API's socket")?;
        let l = tokio::net::TcpListener::from_std(l).context("the HTTP API's socket")?;
        let addr = l.local_addr().context("reading the HTTP API's address")?;
        Ok((l, addr))
    };
    let (main, listen) = tokio_listener(listeners.main)?;
    let mut local_addr = None;
    let exposure = match listeners.local {
        Some(local) => {
            let (local, addr) = tokio_listener(local)?;
            info!("per-socket endpoints (/sockets, /events, /paths) on http://{addr} only");
            let guard = Guard {
                web: WebSecurity::plain(),
                refused: unauthorized.clone(),
            };
            tokio::spawn(server::serve(
                local,
                routes::router(api.clone(), Exposure::All, guard),
                slots.clone(),
                counters.clone(),
                WebSecurity::plain(),
            ));
            local_addr = Some(addr);
            Exposure::MetricsOnly { local: addr }
        }
        None => Exposure::All,
    };
    let web = listeners.web;
    let security = web.current();
    info!(
        "HTTP API on {}://{listen}{} (at most {max_connections} connections; {nofile} descriptors)",
        security.scheme(),
        if security.auth.is_some() {
            ", basic auth"
        } else {
            ""
        },
    );
    let guard = Guard {
        web: web.clone(),
        refused: unauthorized,
    };
    tokio::spawn(server::serve(
        main,
        routes::router(api, exposure, guard),
        slots,
        counters,
        web.clone(),
    ));
    tokio::spawn(web.watch(reloads));
    Ok(Served {
        listen,
        scheme: if security.tls.is_some() {
            Scheme::Https
        } else {
            Scheme::Http
        },
        local: local_addr,
    })
}
