//! The agent's HTTP API: `/metrics` (OpenMetrics), `/sockets` (JSON
//! snapshot), `/events` (NDJSON stream), `/paths` (learned path idle
//! timeouts, JSON), `/advice` (each workload's fix, JSON), `/healthz`. Bad paths are 404, bad
//! filters 400 with the reason; `/events` clients are capped, and one that
//! reads too slowly to keep up is disconnected and counted, never buffered
//! without bound. `/metrics`, `/sockets` and `/paths` are gzipped for a
//! client that asks (`Accept-Encoding`); `/metrics` renders a few at a
//! time, the rest get 503, counted. A listener can serve the metrics alone
//! ([`Exposure::MetricsOnly`]): the per-socket endpoints, which name every
//! process and peer of the node, then answer 404 there and are served on
//! the loopback listener only.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::sync::{Semaphore, broadcast};
use tokio_stream::{StreamExt as _, wrappers::BroadcastStream};
use tower_http::compression::CompressionLayer;

use keepalive_api::Record;

use super::{
    filters::{EVENTS_PARAMS, Filter, FilterError, SOCKETS_PARAMS},
    metrics::{agent::ReasonLabels, to_prometheus_text},
    state::{AgentState, Shared},
    web::{Guard, guard},
};

/// Query parameters in the order given (so that none is lost unseen).
type Params = Query<Vec<(String, String)>>;

fn filter(
    q: &[(String, String)],
    allowed: &[super::filters::Param],
) -> Result<Filter, FilterError> {
    Filter::parse(q.iter().map(|(k, v)| (k.as_str(), v.as_str())), allowed)
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Clone)]
pub struct Api {
    pub state: Shared,
    pub events: broadcast::Sender<Arc<Record>>,
    pub clients: Arc<AtomicUsize>,
    pub max_clients: usize,
    /// `/sockets` listings being made (see [`super::listing`]).
    pub listings: Arc<Semaphore>,
    /// `/metrics` renderings at once; more get 503.
    pub scrapes: Arc<Semaphore>,
}

/// What one listener serves.
#[derive(Clone, Copy, Debug)]
pub enum Exposure {
    /// Every endpoint.
    All,
    /// `/metrics` and the health checks; the per-socket endpoints are on
    /// the loopback listener at `local`.
    MetricsOnly { local: SocketAddr },
}

/// The routes of a listener, behind `guard` (its credentials and headers).
pub fn router(api: Api, exposure: Exposure, guarded: Guard) -> Router {
    let gzip = CompressionLayer::new;
    let routes = Router::new()
        .route("/metrics", get(metrics).layer(gzip()))
        .route("/healthz", get(healthz))
        // Liveness only: a hook that can never attach on this node should
        // show in /healthz, not restart the pod in a loop.
        .route("/livez", get(|| async { "ok\n" }));
    let routes = match exposure {
        Exposure::All => routes
            .route("/sockets", get(sockets).layer(gzip()))
            .route("/events", get(events))
            .route("/paths", get(paths).layer(gzip()))
            .route("/advice", get(advice).layer(gzip()))
            .fallback(|| async {
                (
                    StatusCode::NOT_FOUND,
                    "not found: try /metrics, /sockets, /events, /paths, /healthz, /livez\n",
                )
            }),
        Exposure::MetricsOnly { local } => routes.fallback(move || async move {
            (
                StatusCode::NOT_FOUND,
                format!(
                    "not found: this listener serves /metrics, /healthz and /livez; /sockets, /events, /paths and /advice are on http://{local} only\n"
                ),
            )
        }),
    };
    routes
        .with_state(api)
        .layer(axum::middleware::from_fn_with_state(guarded, guard))
}

fn bad_request(reason: FilterError) -> Response {
    (StatusCode::BAD_REQUEST, format!("{reason}\n")).into_response()
}

fn locked(api: &Api) -> Result<std::sync::MutexGuard<'_, AgentState>, Box<Response>> {
    api.state.lock().map_err(|_| {
        Box::new((StatusCode::INTERNAL_SERVER_ERROR, "agent state poisoned\n").into_response())
    })
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the
/// classic text format.
async fn metrics(State(api): State<Api>, headers: axum::http::HeaderMap) -> Response {
    let Ok(_turn) = api.scrapes.clone().try_acquire_owned() else {
        if let Ok(s) = api.state.lock() {
            s.metrics
                .agent
                .http_refused
                .get_or_create(&ReasonLabels { reason: "metrics" })
                .inc();
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many concurrent /metrics requests, retry\n",
        )
            .into_response();
    };
    let body = match locked(&api) {
        Ok(mut s) => s.render_metrics(),
        Err(r) => return *r,
    };
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    if wants_openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS)], body).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&body),
        )
            .into_response()
    }
}

async fn sockets(State(api): State<Api>, Query(q): Params) -> Response {
    let f = match filter(&q, SOCKETS_PARAMS) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    super::listing::sockets(&api.state, &api.listings, f).unwrap_or_else(|r| *r)
}

async fn paths(State(api): State<Api>, Query(q): Params) -> Response {
    if let Err(e) = filter(&q, &[]) {
        return bad_request(e);
    }
    let rows = match locked(&api) {
        Ok(s) => super::paths::rows(&s),
        Err(r) => return *r,
    };
    let mut body = serde_json::to_vec(&rows).unwrap_or_default();
    body.push(b'\n');
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The workloads' advice, made off the async threads; it shares the
/// listings' slots (it walks the whole table as they do).
async fn advice(State(api): State<Api>, Query(q): Params) -> Response {
    let rules = match super::advice::rules(&q) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Ok(_slot) = api.listings.clone().try_acquire_owned() else {
        if let Ok(s) = api.state.lock() {
            let reason = ReasonLabels { reason: "advice" };
            s.metrics.agent.http_refused.get_or_create(&reason).inc();
        }
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many /sockets or /advice requests at once, retry\n",
        )
            .into_response();
    };
    let state = api.state.clone();
    let built =
        tokio::task::spawn_blocking(move || super::advice::build(&state, rules.as_deref())).await;
    match built {
        Ok(reply) => {
            let mut body = serde_json::to_vec(&reply).unwrap_or_default();
            body.push(b'\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("advice failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Decrements the client count when a stream ends, however it ends.
struct ClientSlot(Arc<AtomicUsize>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn events(State(api): State<Api>, Query(q): Params) -> Response {
    let f = match filter(&q, EVENTS_PARAMS) {
        Ok(f) => f,
        Err(e) => return bad_request(e),
    };
    if api.clients.fetch_add(1, Ordering::Relaxed) >= api.max_clients {
        api.clients.fetch_sub(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many /events clients\n",
        )
            .into_response();
    }
    let slot = ClientSlot(api.clients.clone());
    let state = api.state.clone();
    let stream = BroadcastStream::new(api.events.subscribe())
        .map_while(move |item| {
            let _slot = &slot;
            match item {
                Ok(r) => Some(r),
                // Too slow to keep up: disconnect rather than buffer.
                Err(_) => {
                    if let Ok(s) = state.lock() {
                        s.metrics.agent.clients_dropped.inc();
                    }
                    None
                }
            }
        })
        .filter(move |r| f.matches_record(r))
        .map(|r| {
            let mut line = serde_json::to_vec(&*r).unwrap_or_default();
            line.push(b'\n');
            Ok::<_, std::convert::Infallible>(line)
        });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn healthz(State(api): State<Api>) -> Response {
    let down: Vec<&str> = match locked(&api) {
        Ok(s) => s
            .hooks
            .iter()
            .filter(|h| h.is_down())
            .map(|h| h.hook.as_str())
            .collect(),
        Err(r) => return *r,
    };
    if down.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("hooks down: {}\n", down.join(", ")),
        )
            .into_response()
    }
}
