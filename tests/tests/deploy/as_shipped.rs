//! The DaemonSet as shipped: the image `cargo xtask image` built from
//! deploy/docker/Dockerfile, run under a real containerd and runc with the
//! container spec of the rendered DaemonSet (`kubectl kustomize`, each
//! overlay), translated as a kubelet would ([`keepalive_tests::kubelet`]).
//! Against that container: the manifest's own probes, the kernel's view
//! of its privileges, a pod's probes counted exactly and named through
//! the mounted runtime socket, a keepalive kill with its cause, the scrape
//! with the Secret's credentials, SIGTERM within the grace period leaving
//! nothing in the kernel, and memory against the limit.

use std::{net::IpAddr, time::Instant};

use keepalive_tests::{
    bpf,
    cgroup::MemoryCgroup,
    containerd::{Containerd, Driver, Pod},
    http,
    keepalive_pod::{netns_of, ready_port, run_pod},
    kubelet::{self, Node, Plan, Volumes},
    netstat,
    oci::{self, ImageConfig},
    tls::{Curl, Pki, curl, write},
    wait::{eventually, eventually_some},
};

use super::web::{PASSWORD, USER, hash};
use super::*;

/// How each overlay's `/metrics` is reached, as its comments say.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Scrape {
    /// TLS and basic auth on the node's address.
    Tls,
    /// As Tls, with a client certificate of the Secret's CA.
    Mtls,
    /// Plain HTTP on the node's loopback.
    Loopback,
}

/// The test's side of the node: the image, its containerd, the Secret.
struct Shipped {
    containerd: Containerd,
    node: Node,
    pki: Pki,
    secret: PathBuf,
    scrape: Scrape,
    plan: Plan,
    id: String,
    pid: u32,
    started: Instant,
}

/// The Secret keepalive-agent-web: web.yml, tls.crt, tls.key (and the CA
/// for client certificates), as deploy/web-config.md describes it.
fn web_secret(dir: &Path, node: &Node, scrape: Scrape) -> Pki {
    let pki = Pki::new(dir);
    let ip = node.ip.to_string();
    let (crt, key) = pki.write_server_for("server", &node.name, &[&ip, "127.0.0.1"]);
    let secret = dir.join("secret");
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::copy(crt, secret.join("tls.crt")).unwrap();
    std::fs::copy(key, secret.join("tls.key")).unwrap();
    std::fs::copy(&pki.ca, secret.join("ca.crt")).unwrap();
    let client_auth = match scrape {
        Scrape::Mtls => {
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
        }
        _ => "",
    };
    write(
        &secret.join("web.yml"),
        &format!(
            "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n{client_auth}basic_auth_users:\n  {USER}: {}\n",
            hash(PASSWORD)
        ),
    );
    pki
}

/// Starts the rendered DaemonSet's `agent` container from the built image.
fn start(overlay: &str, scrape: Scrape) -> Shipped {
    let archive = oci::built_archive();
    let image = ImageConfig::read(&archive);
    let docs = kubelet::render(&deploy(overlay));
    let daemonset = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap_or_else(|| panic!("{overlay} renders no DaemonSet"));
    let node = Node::this();
    let mut containerd = Containerd::start();
    let dir = prometheus::temp_dir("keepalive-shipped");
    let pki = web_secret(&dir, &node, scrape);
    let secret = dir.join("secret");
    let mut volumes = Volumes::default();
    // The node's runtime socket is this test's containerd's.
    volumes.host_paths.insert(
        "/run/containerd/containerd.sock".into(),
        containerd.socket.clone(),
    );
    volumes
        .secrets
        .insert("keepalive-agent-web".into(), secret.clone());
    let pod_uid = Pod::new("keepalive-agent-x", "keepalive-system").uid;
    let plan = Plan::new(daemonset, "agent", &image, &node, &volumes, &pod_uid);
    eprintln!(
        "{overlay}: image {} ({} as {}), argv {:?}, node {} {}",
        archive.display(),
        image.name,
        plan.image,
        plan.argv,
        node.name,
        node.ip
    );
    for f in &plan.not_honoured {
        eprintln!("{overlay}: NOT HONOURED: {f}");
    }
    for f in &plan.not_runtime {
        eprintln!("{overlay}: the scheduler's, not run: {f}");
    }
    containerd.import(&archive, &plan.image);
    let id = format!("keepalive-agent-{}", keepalive_tests::rng::hex(8));
    let started = Instant::now();
    let cgroup = format!("{}/{id}", plan.pod_cgroup);
    let pid = containerd
        .run_image(&id, &plan.flags, &cgroup, &plan.image, &plan.argv)
        .pid;
    Shipped {
        containerd,
        node,
        pki,
        secret,
        scrape,
        plan,
        id,
        pid,
        started,
    }
}

impl Shipped {
    fn exec(&self) -> impl Fn(&[String], Duration) -> Result<(), String> + '_ {
        move |argv, timeout| self.containerd.exec(&self.id, argv, timeout)
    }

    fn output(&self) -> String {
        self.containerd.output_of(&self.id)
    }

    /// Startup until its first success within the manifest's budget, then
    /// readiness and liveness once each: the time to ready.
    fn probes_pass(&self, overlay: &str) -> Duration {
        let exec = self.exec();
        let mut ready = Duration::ZERO;
        for p in &self.plan.probes {
            eprintln!("{overlay}: {}", p.describe(self.node.ip));
            let took = if p.kind == "startupProbe" {
                p.until_success(self.started, self.node.ip, &exec)
            } else {
                p.once(self.node.ip, &exec).map(|()| self.started.elapsed())
            };
            let took = took.unwrap_or_else(|e| {
                panic!(
                    "{overlay}: {} failed: {e}\ncontainer output:\n{}",
                    p.kind,
                    self.output()
                )
            });
            assert!(took <= p.budget() + Duration::from_secs(1) || p.kind != "startupProbe");
            ready = ready.max(took);
        }
        ready
    }

    /// `/metrics` as Prometheus scrapes it with the Secret's credentials.
    fn scrape(&self) -> Curl {
        let url = match self.scrape {
            Scrape::Loopback => "http://127.0.0.1:9977/metrics".to_string(),
            _ => format!("https://{}/metrics", host_port(self.node.ip)),
        };
        let auth = format!("{USER}:{PASSWORD}");
        let ca = self.pki.ca.to_string_lossy().into_owned();
        let (cert, key) = (
            self.pki.client_cert.to_string_lossy().into_owned(),
            self.pki.client_key.to_string_lossy().into_owned(),
        );
        let mut args = vec!["--cacert", &ca, "--user", &auth];
        if self.scrape == Scrape::Mtls {
            args.extend(["--cert", &cert, "--key", &key]);
        }
        curl(&args, &url)
    }

    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let c = self.scrape();
        assert_eq!(c.status, 200, "scrape: {}", c.stderr);
        value(&c.text(), name, labels)
    }

    /// SIGTERM as the kubelet sends it: stopped with status 0 within the
    /// grace period, every BPF object it held gone from the kernel.
    fn terminate(mut self, overlay: &str) -> Duration {
        let held = bpf::held_by(self.pid);
        assert!(!held.progs.is_empty(), "the agent holds no BPF program");
        let memory = MemoryCgroup::existing(&format!("{}/{}", self.plan.pod_cgroup, self.id));
        let (peak, limit) = (memory.peak(), memory.limit());
        if let Some(l) = self.plan.memory_limit {
            assert_eq!(limit, l, "the container's memory limit");
            assert!(peak < l, "{overlay}: peak {peak} over the limit {l}");
        }
        eprintln!(
            "{overlay}: memory peak {:.1} MiB of the {:.0} MiB limit ({:?} cgroup {})",
            peak as f64 / (1 << 20) as f64,
            limit as f64 / (1 << 20) as f64,
            memory.version,
            memory.path.display()
        );
        let signalled = Instant::now();
        self.containerd.signal(&self.id, "SIGTERM");
        let stopped = eventually(self.plan.grace, || {
            self.containerd.task_status(&self.id).as_deref() == Some("STOPPED")
        });
        let took = signalled.elapsed();
        assert!(
            stopped,
            "{overlay}: still running {:?} after SIGTERM:\n{}",
            self.plan.grace,
            self.output()
        );
        assert_eq!(
            self.containerd.delete_task(&self.id),
            0,
            "{overlay}: exit status after SIGTERM:\n{}",
            self.output()
        );
        let gone = eventually(Duration::from_secs(10), || {
            bpf::still_alive(&held).is_empty()
        });
        assert!(
            gone,
            "{overlay}: left in the kernel: {:?}",
            bpf::still_alive(&held)
        );
        assert_eq!(bpf::orphans(), Vec::<String>::new());
        let _ = std::fs::remove_dir_all(self.secret.parent().unwrap());
        self.containerd.remove(&self.id.clone());
        took
    }
}

fn host_port(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:9977"),
        IpAddr::V6(a) => format!("[{a}]:9977"),
    }
}

/// What every overlay must do: privileges as the manifest says, probes,
/// the scrape with the Secret's credentials.
fn assert_runs(overlay: &str, s: &Shipped) -> Duration {
    s.plan.assert_applied(s.pid);
    let ready = s.probes_pass(overlay);
    let c = s.scrape();
    assert_eq!(c.status, 200, "{overlay}: scrape: {}", c.stderr);
    assert!(c.text().contains("keepalive_agent_build_info"));
    if s.scrape != Scrape::Loopback {
        // Without credentials: refused.
        let bare = curl(
            &["--cacert", &s.pki.ca.to_string_lossy()],
            &format!("https://{}/metrics", host_port(s.node.ip)),
        );
        assert_ne!(bare.status, 200, "{overlay}: /metrics without credentials");
    }
    ready
}

#[test]
fn the_shipped_daemonset_runs_from_its_image_under_containerd() {
    let overlay = "kubernetes";
    // metrics-tls is the base as it is: one run covers both.
    let base = kubelet::render(&deploy("kubernetes"));
    let tls = kubelet::render(&deploy("overlays/metrics-tls"));
    assert_eq!(base, tls, "overlays/metrics-tls renders the base unchanged");
    let mut s = start(overlay, Scrape::Tls);
    let ready = assert_runs(overlay, &s);
    // The host's cgroup hierarchy is mounted: option changes are followed
    // at the cgroup v2 root, not left to inventories.
    assert_eq!(
        s.metric("keepalive_agent_hook_up", &[("hook", "setsockopt")]),
        Some(1.0),
        "the setsockopt hook is down in the shipped DaemonSet"
    );

    // A pod's probes, counted exactly; the pod named through the mounted
    // runtime socket. The pod's program waits until the agent has named
    // its network namespace, so that no probe precedes the name.
    let web = run_pod(
        &mut s.containerd,
        Pod::new("web-0", "shop"),
        Driver::Cgroupfs,
        7300,
        (1, 1, 9),
        true,
    );
    let web_ns = netns_of(web.sandbox_pid).to_string();
    let named = eventually(Duration::from_secs(30), || {
        s.metric(
            "keepalive_sysctl_time_seconds",
            &[("netns", &web_ns), ("pod", "web-0")],
        )
        .is_some()
    });
    assert!(named, "the agent never named web-0's namespace");
    std::fs::write(web.app_root.join("tmp/go"), "").unwrap();
    let web_port = ready_port(&web.app_root);
    std::thread::sleep(Duration::from_secs(4));
    // /sockets: only on the node's loopback, naming the pod.
    let rows = eventually_some(Duration::from_secs(30), || {
        let (status, body) = http::get("127.0.0.1:9977", "/sockets?pod=web-0", "application/json");
        let rows: Vec<keepalive_api::SocketRow> = serde_json::from_str(&body).ok()?;
        (status == 200
            && rows
                .iter()
                .any(|r| r.local.map(|a| a.port()) == Some(web_port)))
        .then_some(rows)
    })
    .expect("web-0's client in /sockets on the loopback");
    assert!(rows.iter().all(|r| r.namespace.as_deref() == Some("shop")));
    let auth = format!("{USER}:{PASSWORD}");
    let remote = curl(
        &["--cacert", &s.pki.ca.to_string_lossy(), "--user", &auth],
        &format!("https://{}/sockets", host_port(s.node.ip)),
    );
    assert_eq!(remote.status, 404, "/sockets on the node's address");
    s.containerd.remove(&web.app_id);
    std::thread::sleep(Duration::from_secs(2));
    let kernel = netstat::tcp_ext_of(web.sandbox_pid, "TCPKeepAlive") as f64;
    assert!(kernel >= 2.0, "web-0 sent too few probes: {kernel}");
    let labels = [("namespace", "shop"), ("pod", "web-0")];
    let counted = eventually_some(Duration::from_secs(15), || {
        s.metric("keepalive_probes_total", &labels)
            .filter(|v| *v == kernel)
    });
    assert_eq!(
        counted,
        Some(kernel),
        "keepalive_probes_total{{pod=web-0}} against its namespace's TCPKeepAlive: {}\nthe agent's output:\n{}",
        s.scrape().text(),
        s.output()
    );

    // A keepalive kill in a pod, with its cause.
    let dead = run_pod(
        &mut s.containerd,
        Pod::new("web-1", "shop"),
        Driver::Systemd,
        7301,
        (1, 1, 3),
        false,
    );
    ready_port(&dead.app_root);
    world::load_nft_at(
        dead.sandbox_pid,
        "table inet kapod {\n  chain out {\n    type filter hook output priority 0; policy accept;\n    tcp sport 7301 drop\n  }\n}\n",
    );
    let result = eventually_some(Duration::from_secs(20), || {
        std::fs::read_to_string(dead.app_root.join("tmp/result")).ok()
    });
    assert_eq!(
        result.as_deref(),
        Some("ETIMEDOUT"),
        "the application's errno"
    );
    let killed = eventually_some(Duration::from_secs(15), || {
        s.metric(
            "keepalive_connection_timeouts_total",
            &[("pod", "web-1"), ("cause", "keepalive")],
        )
        .filter(|v| *v >= 1.0)
    });
    assert_eq!(killed, Some(1.0), "web-1's kill by keepalive, its cause");

    let stop = s.terminate(overlay);
    eprintln!(
        "{overlay}: ready {:.1} s after start, web-0's {kernel} probes counted exactly, web-1's kill counted with its cause, stopped {:.2} s after SIGTERM",
        ready.as_secs_f64(),
        stop.as_secs_f64()
    );
}

#[test]
fn the_metrics_mtls_overlay_runs_with_its_client_certificate() {
    let overlay = "overlays/metrics-mtls";
    let s = start(overlay, Scrape::Mtls);
    let ready = assert_runs(overlay, &s);
    // The client certificate is required: basic auth alone is refused.
    let auth = format!("{USER}:{PASSWORD}");
    let without = curl(
        &["--cacert", &s.pki.ca.to_string_lossy(), "--user", &auth],
        &format!("https://{}/metrics", host_port(s.node.ip)),
    );
    assert_ne!(without.status, 200, "no client certificate");
    let stop = s.terminate(overlay);
    eprintln!(
        "{overlay}: ready {:.1} s, stopped {:.2} s after SIGTERM",
        ready.as_secs_f64(),
        stop.as_secs_f64()
    );
}

#[test]
fn the_loopback_only_overlay_serves_nothing_on_the_network() {
    let overlay = "overlays/loopback-only";
    let s = start(overlay, Scrape::Loopback);
    let ready = assert_runs(overlay, &s);
    let remote = curl(&[], &format!("http://{}/metrics", host_port(s.node.ip)));
    assert_eq!(remote.status, 0, "{overlay}: the node's address answered");
    let stop = s.terminate(overlay);
    eprintln!(
        "{overlay}: ready {:.1} s, stopped {:.2} s after SIGTERM",
        ready.as_secs_f64(),
        stop.as_secs_f64()
    );
}
