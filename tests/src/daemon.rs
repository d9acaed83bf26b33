//! Real servers and clients (redis-server, postgres, nginx, psql, Go and
//! Python programs) run inside a test's network namespace, optionally as
//! another user, each in its own process group: dropped, the whole group
//! is killed (a server's workers too). Their output goes to a log file
//! the panics quote.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{wait, world::Netns};

pub struct Daemon {
    pub name: String,
    child: Child,
    log: PathBuf,
}

/// Who a daemon runs as.
#[derive(Clone, Copy)]
pub enum User {
    Root,
    /// uid and gid 65534 (PostgreSQL refuses to run as root).
    Nobody,
}

impl Daemon {
    /// Starts `argv` in `ns` as `user`; its output goes to `log_dir`.
    pub fn spawn(ns: &Netns, user: User, name: &str, argv: &[&str], log_dir: &Path) -> Daemon {
        let log = log_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).expect("creating a daemon's log");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.name]);
        if let User::Nobody = user {
            cmd.args([
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ]);
        }
        cmd.args(argv)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log fd"))
            .stderr(out)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({}): {e}", argv.join(" ")));
        Daemon {
            name: name.to_owned(),
            child,
            log,
        }
    }

    /// What it printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until something accepts connections at `addr` inside `ns`;
    /// panics with the daemon's log when it does not within 20 s.
    pub fn wait_listening(&mut self, ns: &Netns, addr: SocketAddr) {
        let up = wait::eventually(Duration::from_secs(20), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited ({status}):\n{}", self.name, self.log());
            }
            ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
        });
        assert!(up, "{} not listening on {addr}:\n{}", self.name, self.log());
    }

    /// Waits until its log says `needle`; panics with the log when it
    /// does not within 20 s.
    pub fn wait_log(&mut self, needle: &str) {
        let said = wait::eventually(Duration::from_secs(20), || {
            self.assert_running();
            self.log().contains(needle)
        });
        assert!(said, "{} never said {needle:?}:\n{}", self.name, self.log());
    }

    /// Panics with its log if it exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The group: `ip netns exec` and setpriv exec, but a server's
        // workers are its children.
        let pgid = self.child.id() as i32;
        // SAFETY: kill on a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// nginx in `ns` as root, its files under `dir`, one `server` block
/// (`listen …;` and what it serves) inside an `http` block with the
/// directives `http` adds to the kit's (temp paths, no access log).
pub fn nginx(ns: &Netns, dir: &Path, http: &str, server: &str) -> Daemon {
    let d = dir.to_string_lossy();
    let conf = format!(
        "worker_processes 1;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/nginx-error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {d}/nginx-body;\n\
         proxy_temp_path {d}/nginx-proxy;\n\
         fastcgi_temp_path {d}/nginx-fastcgi;\n\
         uwsgi_temp_path {d}/nginx-uwsgi;\n\
         scgi_temp_path {d}/nginx-scgi;\n\
         {http}\n\
         server {{\n{server}\n}}\n\
         }}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("writing nginx.conf");
    let error_log = dir.join("nginx-error.log");
    let argv = [
        "nginx",
        "-p",
        &d,
        "-c",
        &path.to_string_lossy(),
        "-e",
        &error_log.to_string_lossy(),
        "-g",
        "daemon off;",
    ];
    Daemon::spawn(ns, User::Root, "nginx", &argv, dir)
}

/// A binary of a versioned Debian PostgreSQL (`/usr/lib/postgresql/15/bin/initdb`).
pub fn postgres_bin(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed by cargo xtask setup")
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    dirs.sort();
    dirs.pop()
        .unwrap_or_else(|| panic!("no /usr/lib/postgresql/*/bin/{name}"))
}
