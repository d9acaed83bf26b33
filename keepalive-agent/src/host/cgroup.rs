//! What a process's cgroup path says about who it is: the container (a
//! 64-hex-digit id, bare under the cgroupfs driver or wrapped in a scope by
//! the systemd driver), the Kubernetes pod (`pod<uid>` under the kubelet's
//! `kubepods` tree, with `_` for `-` in systemd slice names) and, outside
//! containers, the systemd unit (`system.slice/postgresql@15-main.service`).
//! Both cgroup versions: the unified (`0::`) line where there is one, else
//! the v1 `name=systemd` hierarchy, else the first v1 controller's.
//!
//! A cgroup's name is chosen by whoever may create it: root, systemd and
//! the runtimes at the top, but below a user's manager
//! (`user.slice/user-1000.slice/user@1000.service`) any user process can
//! make `kubepods-…-pod<victim uid>.slice/cri-containerd-<id>.scope` or
//! `postgresql.service`. So nothing below a user manager names anyone (the
//! manager itself does: `user@1000.service`), and of the segments left the
//! outermost name wins: a container (or a unit with `Delegate=yes`) can
//! create cgroups below its own, but not above it. A pod uid counts only
//! below the kubelet's root (`kubepods`, `kubepods.slice`, or a
//! `*-kubepods.slice` under another cgroup root).

/// Who a cgroup path names; every part is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub container_id: Option<String>,
    pub pod_uid: Option<String>,
    /// The systemd unit of a process that is in no container.
    pub service: Option<String>,
}

/// The segments of `path` that root, systemd or a runtime named: those
/// down to a user manager (`user@UID.service`) included, none below it.
fn trusted_segments(path: &str) -> impl Iterator<Item = &str> {
    let mut below_user_manager = false;
    path.split('/')
        .filter(|s| !s.is_empty())
        .take_while(move |s| {
            let trusted = !below_user_manager;
            below_user_manager |= s.starts_with("user@") && s.ends_with(".service");
            trusted
        })
}

/// The identity `path` names.
pub fn identity(path: &str) -> Identity {
    let container_id = container_id(path);
    Identity {
        pod_uid: pod_uid(path),
        service: container_id.is_none().then(|| service(path)).flatten(),
        container_id,
    }
}

/// The cgroup path of a `/proc/<pid>/cgroup` text: the unified hierarchy's
/// (`0::PATH`), else v1's `name=systemd` one, else the first line's.
pub fn path_of(text: &str) -> &str {
    let mut v1_systemd = None;
    let mut first = None;
    for line in text.lines() {
        // ID:CONTROLLERS:PATH, and PATH may hold ':' itself.
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            return path;
        }
        if controllers == "name=systemd" {
            v1_systemd.get_or_insert(path);
        }
        first.get_or_insert(path);
    }
    v1_systemd.or(first).unwrap_or("")
}

/// The container id a cgroup path names: a 64-hex-digit segment, bare
/// (cgroupfs driver: `/docker/<id>`, `/kubepods/burstable/pod<uid>/<id>`)
/// or wrapped by the systemd driver (`docker-<id>.scope`,
/// `cri-containerd-<id>.scope`, `crio-<id>.scope`, `libpod-<id>.scope`).
/// The outermost trusted match wins: a container nested in another (kind)
/// is the outer one's, which the node's runtime knows and the inner one
/// cannot forge. `crio-conmon-<id>.scope` is CRI-O's monitor, not the
/// container, and does not match.
pub fn container_id(cgroup_path: &str) -> Option<String> {
    const PREFIXES: [&str; 5] = [
        "docker-",
        "cri-containerd-",
        "crio-",
        "libpod-",
        "containerd-",
    ];
    trusted_segments(cgroup_path).find_map(|segment| {
        let base = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = PREFIXES
            .iter()
            .find_map(|prefix| base.strip_prefix(prefix))
            .unwrap_or(base);
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

/// The pod uid of the kubelet's layout: `pod<uid>` (cgroupfs) or
/// `kubepods-<qos>-pod<uid>.slice` with `_` for `-` (systemd), the
/// outermost below the kubelet's root.
pub fn pod_uid(cgroup_path: &str) -> Option<String> {
    let is_kubepods_root =
        |s: &str| s == "kubepods" || s == "kubepods.slice" || s.ends_with("-kubepods.slice");
    trusted_segments(cgroup_path)
        .skip_while(|s| !is_kubepods_root(s))
        .find_map(|segment| {
            let base = segment.strip_suffix(".slice").unwrap_or(segment);
            let at = base.rfind("pod")?;
            let uid = base[at + 3..].replace('_', "-");
            is_uid(&uid).then_some(uid)
        })
}

/// 8-4-4-4-12 hex digits.
fn is_uid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The outermost systemd service a path names (`postgresql@15-main.service`;
/// a user's processes: `user@1000.service`): systemd made it, and what
/// lies below it is the unit's own to name.
pub fn service(cgroup_path: &str) -> Option<String> {
    trusted_segments(cgroup_path)
        .find(|s| s.len() > ".service".len() && s.ends_with(".service"))
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f1e9c2b7a4d5e6f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
    const UID: &str = "0c1d2e3f-1111-2222-3333-444455556666";

    #[test]
    fn container_id_patterns() {
        let cases = [
            (format!("/system.slice/docker-{ID}.scope"), Some(ID)),
            (format!("/docker/{ID}"), Some(ID)),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234_5678.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podab_cd.slice/crio-{ID}.scope"
                ),
                Some(ID),
            ),
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Some(ID)),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                Some(ID),
            ),
            (
                format!("/system.slice/docker-{ID}.scope/init.scope"),
                Some(ID),
            ),
            (format!("/kubepods.slice/crio-conmon-{ID}.scope"), None),
            ("/user.slice/user-0.slice/session-3.scope".to_owned(), None),
            ("/".to_owned(), None),
            (String::new(), None),
            // 63 and 65 digits are not ids.
            (format!("/docker/{}", &ID[1..]), None),
            (format!("/docker/{ID}0"), None),
            (format!("/docker-{}z.scope", &ID[1..]), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_id(&path).as_deref(), want, "{path}");
        }
    }

    /// The kubelet's layouts, both drivers (cgroup v1 and v2 name them
    /// alike), and a plain host's units.
    #[test]
    fn identities_of_both_drivers_and_plain_units() {
        let systemd_uid = UID.replace('-', "_");
        let cases = [
            (
                format!("/kubepods/burstable/pod{UID}/{ID}"),
                Identity {
                    container_id: Some(ID.into()),
                    pod_uid: Some(UID.into()),
                    service: None,
                },
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                Identity {
                    container_id: Some(ID.into()),
                    pod_uid: Some(UID.into()),
                    service: None,
                },
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice/cri-containerd-{ID}.scope"
                ),
                Identity {
                    container_id: Some(ID.into()),
                    pod_uid: Some(UID.into()),
                    service: None,
                },
            ),
            (
                format!("/kubepods.slice/kubepods-pod{systemd_uid}.slice"),
                Identity {
                    container_id: None,
                    pod_uid: Some(UID.into()),
                    service: None,
                },
            ),
            (
                "/system.slice/postgresql@15-main.service".into(),
                Identity {
                    service: Some("postgresql@15-main.service".into()),
                    ..Identity::default()
                },
            ),
            (
                "/user.slice/user-1000.slice/user@1000.service/app.slice/app-x.service".into(),
                Identity {
                    service: Some("user@1000.service".into()),
                    ..Identity::default()
                },
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                Identity {
                    container_id: Some(ID.into()),
                    ..Identity::default()
                },
            ),
            (
                "/user.slice/user-0.slice/session-3.scope".into(),
                Identity::default(),
            ),
            // Not a uid: a pod uid has 36 characters in 5 groups.
            ("/kubepods/podnotauid/x".into(), Identity::default()),
        ];
        for (path, want) in cases {
            assert_eq!(identity(&path), want, "{path}");
        }
    }

    /// What a user (or a container) creates below its own cgroup names no
    /// one else: the red team's victim pod and `postgresql.service` inside
    /// a delegated subtree.
    #[test]
    fn names_inside_a_delegated_subtree_are_not_trusted() {
        let systemd_uid = UID.replace('-', "_");
        let user = "/user.slice/user-65534.slice/user@65534.service";
        let forged_pod = format!(
            "{user}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{systemd_uid}.slice/cri-containerd-{ID}.scope"
        );
        assert_eq!(
            identity(&forged_pod),
            Identity {
                service: Some("user@65534.service".into()),
                ..Identity::default()
            }
        );
        let forged_unit = format!("{user}/app.slice/postgresql.service");
        assert_eq!(service(&forged_unit).as_deref(), Some("user@65534.service"));
        // A pod whose container makes cgroups of its own (a kind node, or
        // a forger): the outer pod and container are its.
        let outer_uid = "11111111-2222-3333-4444-555555555555";
        let other = ID.replace('3', "9");
        let nested = format!("/kubepods/burstable/pod{outer_uid}/{ID}/kubepods/pod{UID}/{other}");
        assert_eq!(pod_uid(&nested).as_deref(), Some(outer_uid));
        assert_eq!(container_id(&nested).as_deref(), Some(ID));
        // A pod uid outside the kubelet's tree names no pod.
        assert_eq!(pod_uid(&format!("/system.slice/x-pod{UID}.slice")), None);
        // Another cgroup root (kind's kubelet.slice) is the kubelet's too.
        let kind = format!(
            "/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{systemd_uid}.slice"
        );
        assert_eq!(pod_uid(&kind).as_deref(), Some(UID));
    }

    #[test]
    fn the_path_of_either_cgroup_version() {
        // Unified (v2 or hybrid): the 0:: line.
        let hybrid = "12:memory:/docker/abc\n1:name=systemd:/system.slice/x.service\n0::/system.slice/foo.service\n";
        assert_eq!(path_of(hybrid), "/system.slice/foo.service");
        // v1 only: the systemd hierarchy, else the first controller's.
        let v1 = "12:memory:/kubepods/pod1\n1:name=systemd:/kubepods/pod1/c\n";
        assert_eq!(path_of(v1), "/kubepods/pod1/c");
        assert_eq!(path_of("3:cpu,cpuacct:/x\n"), "/x");
        assert_eq!(path_of(""), "");
        // A path may hold ':' itself.
        assert_eq!(path_of("0::/a:b\n"), "/a:b");
    }
}
