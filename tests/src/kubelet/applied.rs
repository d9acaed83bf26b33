//! The kernel's view of a container's first process, against its plan.

use super::{
    Plan,
    caps::{cap_mask, cap_names, status_field},
};

impl Plan {
    /// The kernel's view of the container's first process matches the
    /// plan: capabilities (bounding set exactly), no_new_privs, seccomp
    /// filter mode, user, read-only root, and the node's namespaces.
    pub fn assert_applied(&self, pid: u32) {
        let bounding = cap_names(cap_mask(pid, "CapBnd"));
        let mut expected = self.capabilities.clone();
        expected.sort();
        let mut got = bounding.clone();
        got.sort();
        assert_eq!(got, expected, "the container's bounding set");
        assert_eq!(
            status_field(pid, "NoNewPrivs") == "1",
            self.no_new_privileges,
            "no_new_privs"
        );
        assert_eq!(
            status_field(pid, "Seccomp") == "2",
            self.seccomp,
            "seccomp filter mode"
        );
        if let Some((uid, gid)) = self.run_as {
            let uids = status_field(pid, "Uid");
            let gids = status_field(pid, "Gid");
            assert_eq!(
                uids.split_whitespace().next(),
                Some(uid.to_string().as_str())
            );
            assert_eq!(
                gids.split_whitespace().next(),
                Some(gid.to_string().as_str())
            );
        }
        let mountinfo =
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
        let root = mountinfo
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("/"))
            .expect("the container's root mount");
        let root_ro = root
            .split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|o| o == "ro"));
        assert_eq!(root_ro, self.read_only_root, "read-only root: {root}");
        let ns = |p: u32, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
        let me = std::process::id();
        assert_eq!(
            ns(pid, "net") == ns(me, "net"),
            self.host_network,
            "host network"
        );
        assert_eq!(ns(pid, "pid") == ns(me, "pid"), self.host_pid, "host PID");
    }
}
