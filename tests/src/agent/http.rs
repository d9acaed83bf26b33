//! Asking the running agent over its HTTP API, typed.

use keepalive_api::{PathRow, SocketRow};

use super::Agent;

impl Agent {
    /// `host:port` of the HTTP API.
    pub fn addr(&self) -> String {
        self.ready.listen.clone()
    }

    /// Where the per-socket endpoints are: the loopback listener when
    /// there is one.
    pub fn api_addr(&self) -> &str {
        self.ready
            .local_listen
            .as_deref()
            .unwrap_or(&self.ready.listen)
    }

    /// GET `path` (plain HTTP, on [`Self::api_addr`]): (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        crate::http::get(self.api_addr(), path, "*/*")
    }

    pub fn get_with_accept(&self, path: &str, accept: &str) -> (u16, String) {
        crate::http::get(self.api_addr(), path, accept)
    }

    /// `/sockets?QUERY` as rows.
    pub fn sockets(&self, query: &str) -> Vec<SocketRow> {
        let path = if query.is_empty() {
            "/sockets".to_string()
        } else {
            format!("/sockets?{query}")
        };
        let (status, body) = self.get(&path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not rows ({e}): {body}"))
    }

    /// `/paths` as rows.
    pub fn paths(&self) -> Vec<PathRow> {
        let (status, body) = self.get("/paths");
        assert_eq!(status, 200, "GET /paths: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /paths: not rows ({e}): {body}"))
    }

    /// The value of one series in /metrics (labels: a subset).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200, "{text}");
        crate::metrics::value(&text, name, labels)
    }
}
