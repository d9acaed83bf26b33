//! A real containerd of the test's own (its own root, state and socket
//! under a temp dir, never the node's) running real containers with runc:
//! no image is pulled, each container's root is a directory whose `bin` and
//! `lib` link into the host's `/usr`, bind-mounted read-only, so the host's
//! own python3 runs inside. Containers get kubelet-style labels and cgroup
//! paths; [`Containerd::drop`] removes them, their cgroups and the daemon.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use crate::{prometheus::temp_dir, rng, wait::eventually};

/// A pod's identity as the kubelet labels its containers.
#[derive(Clone, Debug)]
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl Pod {
    pub fn new(name: &str, namespace: &str) -> Pod {
        let h = rng::hex(32);
        Pod {
            name: name.into(),
            namespace: namespace.into(),
            uid: format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ),
        }
    }
}

/// Where a container's network is.
#[derive(Clone, Copy, Debug)]
pub enum Net {
    /// A namespace of its own (a pod's sandbox).
    Own,
    /// The namespace of the process with this pid (a pod's app container).
    Join(u32),
    /// The host's (a hostNetwork pod).
    Host,
}

/// The kubelet's two cgroup drivers, as they name a container's cgroup.
#[derive(Clone, Copy, Debug)]
pub enum Driver {
    /// `/kubepods/<qos>/pod<uid>/<id>`.
    Cgroupfs,
    /// `/kubepods.slice/kubepods-<qos>.slice/kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope`.
    Systemd,
}

pub struct Container {
    pub id: String,
    /// The container's first process, as the host sees it.
    pub pid: u32,
    /// Its root directory (files the test and the program share: `/tmp`).
    pub rootfs: PathBuf,
    pub cgroup: String,
}

pub struct Containerd {
    dir: PathBuf,
    daemon: Option<Child>,
    pub socket: PathBuf,
    containers: Vec<Container>,
}

impl Containerd {
    pub fn start() -> Containerd {
        crate::require_root();
        let dir = temp_dir("keepalive-containerd");
        let mut c = Containerd {
            socket: dir.join("containerd.sock"),
            dir,
            daemon: None,
            containers: Vec::new(),
        };
        c.start_daemon();
        c
    }

    fn start_daemon(&mut self) {
        let log = fs::File::create(self.dir.join("containerd.log")).expect("containerd log");
        let child = Command::new("containerd")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--state")
            .arg(self.dir.join("state"))
            .arg("--address")
            .arg(&self.socket)
            .args(["--config", "/dev/null"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "starting containerd (Debian package containerd; cargo xtask setup installs it)",
            );
        self.daemon = Some(child);
        let up = eventually(Duration::from_secs(20), || {
            self.ctr(&["version"]).status.success()
        });
        assert!(up, "containerd never answered:\n{}", self.log());
    }

    /// Kills the daemon (its shims, and so the containers, keep running).
    pub fn stop_daemon(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Starts the daemon again on the same root and state.
    pub fn restart_daemon(&mut self) {
        self.stop_daemon();
        self.start_daemon();
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io"])
            .args(args)
            .output()
            .expect("running ctr")
    }

    /// Runs a container of `pod` (`container`: its name; None for the
    /// pod's sandbox) running `cmd`, with `files` written into its `/tmp`.
    pub fn run(
        &mut self,
        pod: &Pod,
        container: Option<&str>,
        net: Net,
        driver: Driver,
        files: &[(&str, &str)],
        cmd: &[&str],
    ) -> &Container {
        let id = rng::hex(64);
        let rootfs = self.dir.join(format!("rootfs-{}", &id[..12]));
        for d in ["usr", "proc", "dev", "sys", "tmp", "etc", "run"] {
            fs::create_dir_all(rootfs.join(d)).expect("rootfs dirs");
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
            ("sbin", "usr/sbin"),
        ] {
            std::os::unix::fs::symlink(target, rootfs.join(link)).expect("rootfs links");
        }
        for (name, text) in files {
            fs::write(rootfs.join("tmp").join(name), text).expect("writing a container's file");
        }
        let cgroup = match driver {
            Driver::Cgroupfs => format!("/kubepods/besteffort/pod{}/{id}", pod.uid),
            Driver::Systemd => format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/cri-containerd-{id}.scope",
                pod.uid.replace('-', "_")
            ),
        };
        let mut labels = vec![
            format!("io.kubernetes.pod.name={}", pod.name),
            format!("io.kubernetes.pod.namespace={}", pod.namespace),
            format!("io.kubernetes.pod.uid={}", pod.uid),
        ];
        match container {
            Some(name) => {
                labels.push(format!("io.kubernetes.container.name={name}"));
                labels.push("io.cri-containerd.kind=container".into());
            }
            None => labels.push("io.cri-containerd.kind=sandbox".into()),
        }
        let mut args: Vec<String> = vec!["run".into(), "-d".into()];
        for l in &labels {
            args.extend(["--label".into(), l.clone()]);
        }
        args.extend(["--cgroup".into(), cgroup.clone()]);
        args.extend([
            "--mount".into(),
            "type=bind,src=/usr,dst=/usr,options=rbind:ro".into(),
        ]);
        match net {
            Net::Own => {}
            Net::Join(pid) => {
                args.extend(["--with-ns".into(), format!("network:/proc/{pid}/ns/net")])
            }
            Net::Host => args.push("--net-host".into()),
        }
        // ctr 1.6: --rootfs is a switch, last of the flags, then DIR ID CMD.
        args.push("--rootfs".into());
        args.push(rootfs.to_string_lossy().into_owned());
        args.push(id.clone());
        args.extend(cmd.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "ctr run failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let pid = self.task_pid(&id);
        self.containers.push(Container {
            id,
            pid,
            rootfs,
            cgroup,
        });
        self.containers.last().expect("just pushed")
    }

    /// Imports an OCI image archive and names it `name` too (the
    /// reference the kubelet would ask for).
    pub fn import(&self, archive: &Path, name: &str) {
        let archive = archive.to_string_lossy();
        let out = self.ctr(&["images", "import", &archive]);
        assert!(
            out.status.success(),
            "ctr images import {archive}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let imported = crate::oci::ImageConfig::read(Path::new(archive.as_ref())).name;
        if imported != name {
            let out = self.ctr(&["images", "tag", "--force", &imported, name]);
            assert!(
                out.status.success(),
                "ctr images tag {imported} {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Runs `image` as container `id` with `ctr run` `flags`, in cgroup
    /// `cgroup`, running `argv`; its output goes to [`Containerd::output_of`].
    pub fn run_image(
        &mut self,
        id: &str,
        flags: &[String],
        cgroup: &str,
        image: &str,
        argv: &[String],
    ) -> &Container {
        let log = format!("file://{}", self.dir.join(format!("{id}.log")).display());
        let mut args: Vec<&str> = vec!["run", "-d", "--log-uri", &log, "--cgroup", cgroup];
        args.extend(flags.iter().map(String::as_str));
        args.extend([image, id]);
        args.extend(argv.iter().map(String::as_str));
        let out = self.ctr(&args);
        assert!(
            out.status.success(),
            "ctr {}: {}
{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        let pid = self.task_pid(id);
        self.containers.push(Container {
            id: id.to_string(),
            pid,
            rootfs: PathBuf::new(),
            cgroup: cgroup.to_string(),
        });
        self.containers.last().expect("just pushed")
    }

    /// What a container run by [`Containerd::run_image`] printed.
    pub fn output_of(&self, id: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{id}.log"))).unwrap_or_default()
    }

    /// Runs `argv` in a running container (`ctr task exec`), as a probe
    /// does: Ok on exit 0 within `timeout`.
    pub fn exec(&self, id: &str, argv: &[String], timeout: Duration) -> Result<(), String> {
        let exec_id = format!("exec-{}", rng::hex(8));
        let mut child = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(["-n", "k8s.io", "task", "exec", "--exec-id", &exec_id, id])
            .args(argv)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ctr task exec: {e}"))?;
        let started = std::time::Instant::now();
        loop {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(status) if status.success() => return Ok(()),
                Some(status) => {
                    let mut err = String::new();
                    use std::io::Read as _;
                    if let Some(mut e) = child.stderr.take() {
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!(
                        "{} exited {status}: {}",
                        argv.join(" "),
                        err.trim()
                    ));
                }
                None if started.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{} timed out after {timeout:?}", argv.join(" ")));
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// Sends `signal` (`SIGTERM`) to a container's process.
    pub fn signal(&self, id: &str, signal: &str) {
        let out = self.ctr(&["task", "kill", "-s", signal, id]);
        assert!(
            out.status.success(),
            "ctr task kill -s {signal} {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The task's status as `ctr task ls` prints it (RUNNING, STOPPED).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(&["task", "ls"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split_whitespace().nth(2).map(String::from))
    }

    /// Deletes a stopped task: its exit code (`ctr task delete` exits
    /// with the task's code).
    pub fn delete_task(&self, id: &str) -> i32 {
        self.ctr(&["task", "delete", id])
            .status
            .code()
            .unwrap_or(-1)
    }

    /// The pid of a running container's process (`ctr task ls`).
    fn task_pid(&self, id: &str) -> u32 {
        let mut pid = None;
        eventually(Duration::from_secs(10), || {
            let out = self.ctr(&["task", "ls"]);
            pid = String::from_utf8_lossy(&out.stdout)
                .lines()
                .find(|l| l.starts_with(id))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .filter(|p| *p != 0);
            pid.is_some()
        });
        pid.unwrap_or_else(|| panic!("container {id} has no running task"))
    }

    /// Kills a container's process and removes it.
    pub fn remove(&mut self, id: &str) {
        let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
        eventually(Duration::from_secs(10), || {
            self.ctr(&["task", "rm", "-f", id]).status.success()
                || !String::from_utf8_lossy(&self.ctr(&["task", "ls"]).stdout).contains(id)
        });
        let _ = self.ctr(&["container", "rm", id]);
        if let Some(i) = self.containers.iter().position(|c| c.id == id) {
            let c = self.containers.remove(i);
            remove_cgroup(&c.cgroup);
            let _ = fs::remove_dir_all(&c.rootfs);
        }
    }
}

/// Removes what runc left of a container's cgroup path (the pod's and
/// QoS class's directories) in every mounted hierarchy, innermost first.
fn remove_cgroup(path: &str) {
    let mut roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    let mut dirs: Vec<&str> = Vec::new();
    let mut at = path.trim_end_matches('/');
    while let Some((parent, _)) = at.rsplit_once('/') {
        dirs.push(at);
        at = parent;
    }
    for root in &roots {
        for dir in &dirs {
            let _ = fs::remove_dir(Path::new(root).join(dir.trim_start_matches('/')));
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let ids: Vec<String> = self.containers.iter().rev().map(|c| c.id.clone()).collect();
        if self.daemon.is_none() {
            // Removing containers needs the daemon.
            self.start_daemon();
        }
        for id in ids {
            self.remove(&id);
        }
        self.stop_daemon();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
