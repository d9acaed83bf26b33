//! A pod of the test's containerd with a keepalive client in it: a
//! sandbox holding the pod's network namespace and an app container
//! running [`PROGRAM`], which reports its client's port and, when the
//! connection dies, the application's errno.

use std::{fs, path::Path, time::Duration};

use crate::{
    containerd::{Containerd, Driver, Net, Pod},
    wait::eventually_some,
};

/// Opens a keepalive client and its server on loopback (in the caller's
/// network namespace), waits for a file `gate` if given, writes the client's
/// port to /tmp/ready and, when the connection dies, its errno name to
/// /tmp/result.
pub const PROGRAM: &str = r#"
import errno, os, socket, sys, time
port, idle, intvl, cnt = map(int, sys.argv[1:5])
gate = sys.argv[5] if len(sys.argv) > 5 else None
while gate and not os.path.exists(gate):
    time.sleep(0.05)
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen()
c = socket.socket()
c.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, intvl)
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, cnt)
c.connect(("127.0.0.1", port))
a, _ = srv.accept()
with open("/tmp/ready.tmp", "w") as f:
    f.write(str(c.getsockname()[1]))
os.rename("/tmp/ready.tmp", "/tmp/ready")
try:
    c.recv(1)
    result = "EOF"
except OSError as e:
    result = errno.errorcode.get(e.errno, str(e.errno))
with open("/tmp/result", "w") as f:
    f.write(result)
time.sleep(1e6)
"#;

pub const SANDBOX: &[&str] = &["/usr/bin/sleep", "1000000"];

/// A pod: its sandbox (own namespace) and an app container in it running
/// [`PROGRAM`] on `port` with keepalive `k` (idle, intvl, cnt).
pub struct RunningPod {
    pub pod: Pod,
    pub sandbox_pid: u32,
    pub app_id: String,
    pub app_root: std::path::PathBuf,
}

pub fn run_pod(
    c: &mut Containerd,
    pod: Pod,
    driver: Driver,
    port: u16,
    k: (u32, u32, u32),
    gate: bool,
) -> RunningPod {
    let sandbox_pid = c.run(&pod, None, Net::Own, driver, &[], SANDBOX).pid;
    let args = [
        port.to_string(),
        k.0.to_string(),
        k.1.to_string(),
        k.2.to_string(),
    ];
    let mut cmd = vec!["/usr/bin/python3", "/tmp/ka.py"];
    cmd.extend(args.iter().map(String::as_str));
    if gate {
        cmd.push("/tmp/go");
    }
    let app = c.run(
        &pod,
        Some("app"),
        Net::Join(sandbox_pid),
        driver,
        &[("ka.py", PROGRAM)],
        &cmd,
    );
    RunningPod {
        pod,
        sandbox_pid,
        app_id: app.id.clone(),
        app_root: app.rootfs.clone(),
    }
}

/// The local port of the app's keepalive client, once it connected.
pub fn ready_port(root: &Path) -> u16 {
    eventually_some(Duration::from_secs(20), || {
        fs::read_to_string(root.join("tmp/ready"))
            .ok()?
            .trim()
            .parse()
            .ok()
    })
    .unwrap_or_else(|| panic!("the program in {} never connected", root.display()))
}

pub fn netns_of(pid: u32) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    fs::metadata(format!("/proc/{pid}/ns/net"))
        .expect("a process's netns")
        .ino() as u32
}
