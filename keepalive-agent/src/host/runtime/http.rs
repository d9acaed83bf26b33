//! CRI-O's and Docker's inspect APIs: HTTP/1.1 GET on the runtime's unix
//! socket, a JSON reply. CRI-O: `GET /containers/<id>` (`labels`); Docker:
//! `GET /containers/<id>/json` (`Config.Labels`, `Name`). 404: no such
//! container.

use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper::{StatusCode, client::conn::http1};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::{Answer, ContainerInfo, ContainerRuntime, RuntimeError, RuntimeKind};

/// An inspect reply is a few KiB; a runtime answering more is refused.
const MAX_REPLY: usize = 1 << 20;

pub struct HttpRuntime {
    kind: RuntimeKind,
    socket: PathBuf,
}

impl HttpRuntime {
    pub fn crio(socket: PathBuf) -> Self {
        HttpRuntime {
            kind: RuntimeKind::Crio,
            socket,
        }
    }

    pub fn docker(socket: PathBuf) -> Self {
        HttpRuntime {
            kind: RuntimeKind::Docker,
            socket,
        }
    }

    fn protocol(&self, reason: impl ToString) -> RuntimeError {
        RuntimeError::Protocol {
            runtime: self.kind,
            reason: reason.to_string(),
        }
    }

    async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        // Container ids are hex; anything else would change the request.
        if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Ok(None);
        }
        let path = match self.kind {
            RuntimeKind::Docker => format!("/containers/{id}/json"),
            RuntimeKind::Crio | RuntimeKind::Containerd => format!("/containers/{id}"),
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|e| RuntimeError::Unreachable {
                    runtime: self.kind,
                    socket: self.socket.clone(),
                    reason: e.to_string(),
                })?;
        let (mut sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.protocol(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.protocol(e))?;
        let reply = sender
            .send_request(request)
            .await
            .map_err(|e| self.protocol(e))?;
        let status = reply.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.protocol(format!("inspect answered {status}")));
        }
        let body = Limited::new(reply.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| self.protocol(e))?
            .to_bytes();
        let json: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| self.protocol(e))?;
        Ok(Some(parse(self.kind, &json)))
    }
}

/// The labels and name in CRI-O's or Docker's inspect reply.
pub fn parse(kind: RuntimeKind, json: &serde_json::Value) -> ContainerInfo {
    let (labels, name) = match kind {
        RuntimeKind::Docker => (&json["Config"]["Labels"], &json["Name"]),
        RuntimeKind::Crio | RuntimeKind::Containerd => (&json["labels"], &json["name"]),
    };
    ContainerInfo {
        labels: labels
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
        name: name.as_str().map(str::to_owned),
    }
}

impl ContainerRuntime for HttpRuntime {
    fn kind(&self) -> RuntimeKind {
        self.kind
    }

    fn container<'a>(&'a self, id: &'a str) -> Answer<'a> {
        Box::pin(self.inspect(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_replies_of_both_runtimes() {
        let docker = serde_json::json!({
            "Id": "ab", "Name": "/k8s_app_web-0_shop",
            "Config": {"Labels": {"io.kubernetes.pod.name": "web-0", "n": 1}}
        });
        let info = parse(RuntimeKind::Docker, &docker);
        assert_eq!(info.labels.len(), 1, "non-string values are skipped");
        assert_eq!(info.labels["io.kubernetes.pod.name"], "web-0");
        assert_eq!(info.name.as_deref(), Some("/k8s_app_web-0_shop"));
        let crio = serde_json::json!({
            "name": "k8s_app", "pid": 42,
            "labels": {"io.kubernetes.container.name": "app"}
        });
        let info = parse(RuntimeKind::Crio, &crio);
        assert_eq!(info.labels["io.kubernetes.container.name"], "app");
        assert_eq!(
            parse(RuntimeKind::Crio, &serde_json::json!({})),
            ContainerInfo::default()
        );
    }
}
