//! containerd's containers service over its gRPC socket
//! (`containerd.services.containers.v1.Containers/Get`), in the
//! containerd namespace the kubelet's containers live in (`k8s.io`).

use std::path::PathBuf;

use containerd_client::services::v1::{GetContainerRequest, containers_client::ContainersClient};
use tokio::sync::Mutex;
use tonic::{Code, Request, transport::Channel};

use super::{Answer, ContainerInfo, ContainerRuntime, RuntimeError, RuntimeKind};

pub struct Containerd {
    socket: PathBuf,
    namespace: String,
    /// Connected on first use; dropped after a failure so that a restarted
    /// containerd is reached through a fresh connection.
    channel: Mutex<Option<Channel>>,
}

impl Containerd {
    pub fn new(socket: PathBuf, namespace: String) -> Self {
        Containerd {
            socket,
            namespace,
            channel: Mutex::new(None),
        }
    }

    async fn channel(&self) -> Result<Channel, RuntimeError> {
        let mut held = self.channel.lock().await;
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let c = containerd_client::connect(&self.socket)
            .await
            .map_err(|e| RuntimeError::Unreachable {
                runtime: RuntimeKind::Containerd,
                socket: self.socket.clone(),
                reason: error_chain(&e),
            })?;
        *held = Some(c.clone());
        Ok(c)
    }

    async fn get(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let mut client = ContainersClient::new(self.channel().await?);
        let mut request = Request::new(GetContainerRequest { id: id.to_owned() });
        let namespace = self.namespace.parse().map_err(|_| RuntimeError::Protocol {
            runtime: RuntimeKind::Containerd,
            reason: format!("namespace {:?} is not a valid header value", self.namespace),
        })?;
        request
            .metadata_mut()
            .insert("containerd-namespace", namespace);
        match client.get(request).await {
            Ok(reply) => Ok(reply.into_inner().container.map(|c| ContainerInfo {
                labels: c.labels,
                name: None,
            })),
            Err(status) if status.code() == Code::NotFound => Ok(None),
            Err(status) => {
                *self.channel.lock().await = None;
                Err(RuntimeError::Protocol {
                    runtime: RuntimeKind::Containerd,
                    reason: format!("{:?}: {}", status.code(), status.message()),
                })
            }
        }
    }
}

impl ContainerRuntime for Containerd {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Containerd
    }

    fn container<'a>(&'a self, id: &'a str) -> Answer<'a> {
        Box::pin(self.get(id))
    }
}

/// An error and its sources, one line (tonic's own message is only
/// "transport error").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
