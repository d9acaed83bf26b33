//! Several runtimes on one node (Docker's containerd beside dockerd, a
//! containerd beside CRI-O): each is asked in turn until one knows the
//! container. A failing runtime does not hide an answer from the next;
//! only when none answered and one failed is the lookup a failure.

use super::{Answer, ContainerInfo, ContainerRuntime, RuntimeError, RuntimeKind};

pub struct Chain {
    runtimes: Vec<Box<dyn ContainerRuntime>>,
}

impl Chain {
    pub fn new(runtimes: Vec<Box<dyn ContainerRuntime>>) -> Self {
        Chain { runtimes }
    }

    async fn ask(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        let mut failed = None;
        for r in &self.runtimes {
            match r.container(id).await {
                Ok(Some(info)) => return Ok(Some(info)),
                Ok(None) => {}
                Err(e) => failed = Some(e),
            }
        }
        failed.map_or(Ok(None), Err)
    }
}

impl ContainerRuntime for Chain {
    /// The first runtime's (the one the metrics name).
    fn kind(&self) -> RuntimeKind {
        self.runtimes
            .first()
            .map_or(RuntimeKind::Containerd, |r| r.kind())
    }

    fn container<'a>(&'a self, id: &'a str) -> Answer<'a> {
        Box::pin(self.ask(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runtime that knows one id, or fails.
    struct Knows(RuntimeKind, Option<&'static str>);

    impl ContainerRuntime for Knows {
        fn kind(&self) -> RuntimeKind {
            self.0
        }

        fn container<'a>(&'a self, id: &'a str) -> Answer<'a> {
            let answer = match self.1 {
                None => Err(RuntimeError::Timeout {
                    runtime: self.0,
                    seconds: 2,
                }),
                Some(known) => Ok((known == id).then(|| ContainerInfo {
                    name: Some(known.into()),
                    ..ContainerInfo::default()
                })),
            };
            Box::pin(async move { answer })
        }
    }

    fn ask(chain: &Chain, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(chain.container(id))
    }

    #[test]
    fn each_runtime_is_asked_until_one_knows() {
        let chain = Chain::new(vec![
            Box::new(Knows(RuntimeKind::Containerd, Some("a"))),
            Box::new(Knows(RuntimeKind::Crio, None)),
            Box::new(Knows(RuntimeKind::Docker, Some("b"))),
        ]);
        assert_eq!(chain.kind(), RuntimeKind::Containerd);
        assert!(ask(&chain, "a").unwrap().is_some());
        // Past a failing runtime, the next one's answer counts.
        assert_eq!(
            ask(&chain, "b").unwrap().unwrap().name.as_deref(),
            Some("b")
        );
        // Nobody knows it and one failed: a failure, asked again later.
        assert!(ask(&chain, "c").is_err());
        let healthy = Chain::new(vec![Box::new(Knows(RuntimeKind::Containerd, Some("a")))]);
        assert!(ask(&healthy, "c").unwrap().is_none());
    }
}
