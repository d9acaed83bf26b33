//! The middleware that asks for credentials: every request but the health
//! checks (`/healthz`, `/livez`, which name only hooks, for the kubelet's
//! probes that cannot send any) must carry a user of the current
//! configuration; the file's response headers are added to every reply.

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::metrics::counter::Counter;

use super::WebSecurity;

/// Paths served without credentials.
const OPEN: [&str; 2] = ["/healthz", "/livez"];

#[derive(Clone)]
pub struct Guard {
    pub web: WebSecurity,
    /// Requests refused for missing or wrong credentials.
    pub refused: Counter,
}

pub async fn guard(State(g): State<Guard>, request: Request, next: Next) -> Response {
    let security = g.web.current();
    if let Some(auth) = &security.auth
        && !OPEN.contains(&request.uri().path())
    {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !auth.allows(given).await {
            g.refused.inc();
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"keepalive-agent\"")],
                "unauthorized\n",
            )
                .into_response();
        }
    }
    let mut response = next.run(request).await;
    for (name, value) in &security.headers {
        response.headers_mut().insert(name.clone(), value.clone());
    }
    response
}
