//! The listener's security from `--web.config.file` (the exporter-toolkit's
//! format: [`config`]): TLS ([`tls`]), basic auth ([`auth`]) and response
//! headers, re-read when the file or a file it names changes (certificate
//! rotation) — a change that does not load is logged and the configuration
//! in use kept. Each connection takes the configuration current when it
//! was accepted; each request is checked against the current users.

pub mod auth;
pub mod config;
mod guard;
pub mod tls;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use axum::http::{HeaderName, HeaderValue};
use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge};

pub use config::WebConfigError;
pub use guard::{Guard, guard};

use self::{auth::BasicAuth, config::WebConfigFile};
use super::metrics::agent::ResultLabels;
use crate::model::clock::unix_now_s;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// One loaded web configuration.
#[derive(Default)]
pub struct Security {
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub auth: Option<BasicAuth>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The configuration file and the files it names.
    files: Vec<PathBuf>,
}

impl Security {
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let file = WebConfigFile::read(path)?;
        let mut files = vec![path.to_owned()];
        let tls = match file.tls() {
            Some(t) => {
                let built = tls::build(path, t)?;
                files.extend(built.files);
                Some(built.config)
            }
            None => None,
        };
        let auth = (!file.basic_auth_users.is_empty())
            .then(|| BasicAuth::new(file.basic_auth_users.clone()));
        let mut headers = Vec::new();
        for (name, value) in file.http_server_config.iter().flat_map(|h| &h.headers) {
            let field = || format!("http_server_config.headers.{name}");
            let name = HeaderName::try_from(name.as_str())
                .map_err(|e| WebConfigError::field(path, field(), e.to_string()))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| WebConfigError::field(path, field(), e.to_string()))?;
            headers.push((name, value));
        }
        Ok(Security {
            tls,
            auth,
            headers,
            files,
        })
    }

    /// `https` or `http`, for the log.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// What reloads count.
#[derive(Clone, Default)]
pub struct ReloadCounters {
    pub reloads: Family<ResultLabels, Counter>,
    pub last_successful: Gauge,
    pub last_success_time: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// A listener's security, swapped whole when its files change.
#[derive(Clone, Default)]
pub struct WebSecurity {
    current: Arc<RwLock<Arc<Security>>>,
    path: Option<PathBuf>,
}

impl WebSecurity {
    /// Plain HTTP, no auth.
    pub fn plain() -> Self {
        Self::default()
    }

    /// Loads `path`: an error here is the caller's to report (exit 2).
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let security = Security::load(path)?;
        Ok(WebSecurity {
            current: Arc::new(RwLock::new(Arc::new(security))),
            path: Some(path.to_owned()),
        })
    }

    pub fn current(&self) -> Arc<Security> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Looks at the files every second and reloads when one changed; runs
    /// until the task is dropped. Nothing to watch without a file.
    pub async fn watch(self, counters: ReloadCounters) {
        let Some(path) = self.path.clone() else {
            return;
        };
        counters.last_successful.set(1);
        counters.last_success_time.set(unix_now_s());
        for result in ["success", "failure"] {
            let _ = counters.reloads.get_or_create(&ResultLabels { result });
        }
        let mut seen = fingerprint(&self.current().files);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tick.tick().await;
            let now = fingerprint(&self.current().files);
            if now == seen {
                continue;
            }
            seen = now;
            match tokio::task::spawn_blocking({
                let path = path.clone();
                move || Security::load(&path)
            })
            .await
            {
                Ok(Ok(security)) => {
                    log::info!(
                        "web config {}: reloaded ({}, {})",
                        path.display(),
                        security.scheme(),
                        if security.auth.is_some() {
                            "basic auth"
                        } else {
                            "no auth"
                        }
                    );
                    seen = fingerprint(&security.files);
                    if let Ok(mut c) = self.current.write() {
                        *c = Arc::new(security);
                    }
                    counters
                        .reloads
                        .get_or_create(&ResultLabels { result: "success" })
                        .inc();
                    counters.last_successful.set(1);
                    counters.last_success_time.set(unix_now_s());
                }
                Ok(Err(e)) => {
                    log::warn!("web config not reloaded, the one in use kept: {e}");
                    counters
                        .reloads
                        .get_or_create(&ResultLabels { result: "failure" })
                        .inc();
                    counters.last_successful.set(0);
                }
                Err(e) => log::warn!("web config reload: {e}"),
            }
        }
    }
}

/// What identifies a file's content without reading it: a Kubernetes
/// Secret's update swaps a symlink (new inode), `cp` rewrites in place
/// (new mtime and length).
type Fingerprint = Vec<Option<(u64, u64, i64, i64, u64)>>;

fn fingerprint(files: &[PathBuf]) -> Fingerprint {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.dev(), m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
        })
        .collect()
}
