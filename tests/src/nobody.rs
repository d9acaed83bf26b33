//! Clients any local user can run against the agent: a process of uid
//! 65534 (nobody) opening many connections to the HTTP API, optionally
//! sending one request each, with a tiny receive buffer, then holding them
//! without reading. Killed on drop.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
};

const SCRIPT: &str = r#"
import resource, socket, sys, time
host, port, n, path, hold = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
held, ok = [], 0
for i in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(2)
    try:
        s.connect((host, port))
        if path != "-":
            s.sendall(("GET %s HTTP/1.1\r\nHost: agent\r\n\r\n" % path).encode())
        ok += 1
    except OSError:
        pass
    held.append(s)
print("ready %d" % ok, flush=True)
time.sleep(hold)
"#;

/// The clients, holding their connections until dropped.
pub struct Clients {
    child: Child,
    /// Connections that were established.
    pub connected: usize,
}

impl Clients {
    /// `n` connections to `addr` (`host:port`) from uid nobody, each
    /// sending `GET path` (None: nothing), held for up to `hold_s`.
    pub fn start(addr: &str, n: usize, path: Option<&str>, hold_s: u32) -> Clients {
        let (host, port) = addr.rsplit_once(':').expect("host:port");
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["/usr/bin/python3", "-c", SCRIPT, host, port])
            .arg(n.to_string())
            .arg(path.unwrap_or("-"))
            .arg(hold_s.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting clients as nobody (setpriv, python3)");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        BufReader::new(out)
            .read_line(&mut line)
            .expect("reading the clients' ready line");
        let connected = line
            .trim()
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("clients did not start: {line:?}"));
        Clients { child, connected }
    }
}

impl Drop for Clients {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
