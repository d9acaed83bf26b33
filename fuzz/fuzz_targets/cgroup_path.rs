//! A process's `/proc/PID/cgroup` and the identity its path claims (pod
//! uid, container id, unit): names a user can choose in a delegated
//! subtree.
#![no_main]

use keepalive_agent::host::cgroup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let path = cgroup::path_of(&text);
    let _ = cgroup::identity(path);
    let _ = cgroup::container_id(path);
    let _ = cgroup::pod_uid(path);
    let _ = cgroup::service(path);
});
