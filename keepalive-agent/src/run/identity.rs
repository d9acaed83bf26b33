//! The resolver task: asks the container runtime about the container ids
//! the event path could not name, one at a time, each with a deadline, and
//! writes the answers into the directory. It never holds the state's lock
//! while it waits: a slow or dead runtime costs the ring reader nothing.

use std::time::Duration;

use log::{info, warn};
use tokio::sync::mpsc;

use crate::{
    api::state::Shared,
    cli::args::RunArgs,
    host::runtime::{
        self, ContainerRuntime, PodIdentity, RuntimeError,
        directory::{Directory, Resolved},
    },
    model::clock::monotonic_ns,
};

/// Ids waiting for the resolver; more are counted as dropped.
const QUEUE: usize = 256;
/// Containers whose answers are kept (a node runs a few hundred).
const CAPACITY: usize = 16_384;
/// One question's deadline.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Resolver {
    runtime: Box<dyn ContainerRuntime>,
    queue: mpsc::Receiver<String>,
}

/// The directory the agent names owners from, and the resolver that fills
/// it (none without a runtime).
pub fn start(args: &RunArgs) -> (Directory, Option<Resolver>) {
    let found = if args.no_runtime {
        Vec::new()
    } else {
        runtime::locate(args.runtime_socket.as_deref(), args.runtime)
    };
    let names: Vec<String> = found
        .iter()
        .map(|(kind, socket)| format!("{kind} at {}", socket.display()))
        .collect();
    let Some(client) = runtime::clients(found, &args.containerd_namespace) else {
        info!(
            "no container runtime socket{}: pods and containers are named from cgroup paths only (pod uid, container id)",
            if args.no_runtime {
                " (--no-runtime)"
            } else {
                " found"
            }
        );
        return (Directory::new(None, CAPACITY), None);
    };
    info!("container identities from {}", names.join(", then "));
    let kind = client.kind();
    let (tx, rx) = mpsc::channel(QUEUE);
    (
        Directory::new(Some((kind, tx)), CAPACITY),
        Some(Resolver {
            runtime: client,
            queue: rx,
        }),
    )
}

impl Resolver {
    pub async fn run(mut self, state: Shared) {
        let mut was_up = true;
        while let Some(id) = self.queue.recv().await {
            let answer = match tokio::time::timeout(ASK_TIMEOUT, self.runtime.container(&id)).await
            {
                Ok(answer) => answer,
                Err(_) => Err(RuntimeError::Timeout {
                    runtime: self.runtime.kind(),
                    seconds: ASK_TIMEOUT.as_secs(),
                }),
            };
            // One line per change of the runtime's health, not per lookup.
            let resolved: Resolved = match answer {
                Ok(info) => {
                    if !was_up {
                        info!("{} answers again", self.runtime.kind());
                        was_up = true;
                    }
                    Ok(info.map(|i| PodIdentity::from_labels(&i.labels, i.name.as_deref())))
                }
                Err(e) => {
                    if was_up {
                        warn!("{e}; naming containers from cgroup paths until it answers");
                        was_up = false;
                    }
                    Err(())
                }
            };
            let Ok(mut s) = state.lock() else { return };
            s.naming.directory.answered(id, resolved, monotonic_ns());
            s.names_changed();
        }
    }
}
