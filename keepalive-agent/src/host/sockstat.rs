//! How many TCP sockets the calling thread's namespace holds, from its
//! `/proc/net/sockstat` and `sockstat6`: hashed sockets per protocol
//! (`sock_prot_inuse_get`, listening and connected alike) and time-wait
//! ones. A namespace without any needs no `iter/tcp` pass, which walks the
//! node's whole established hash whatever namespace it is made in.

use std::{fs, io};

/// TCP sockets (IPv4, IPv6, time-wait) of the calling thread's network
/// namespace; `None` when that cannot be known, which means "read it".
pub fn tcp_sockets_here() -> Option<u64> {
    let v4 = fs::read_to_string("/proc/thread-self/net/sockstat").ok()?;
    let v6 = match fs::read_to_string("/proc/thread-self/net/sockstat6") {
        Ok(v6) => Some(v6),
        // No IPv6 in this kernel: no IPv6 socket either.
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(_) => return None,
    };
    tcp_sockets_in(&v4, v6.as_deref())
}

/// [`tcp_sockets_here`] from the texts of `sockstat` and `sockstat6`
/// (None: the kernel has no IPv6).
pub fn tcp_sockets_in(v4: &str, v6: Option<&str>) -> Option<u64> {
    let hashed_v6 = match v6 {
        Some(v6) => field(v6, "TCP6:", "inuse")?,
        None => 0,
    };
    let hashed_v4 = field(v4, "TCP:", "inuse")?;
    let time_wait = field(v4, "TCP:", "tw")?;
    hashed_v4.checked_add(time_wait)?.checked_add(hashed_v6)
}

/// The number after `name` on the line that starts with `line`
/// (`TCP: inuse 5 orphan 0 tw 2 alloc 7 mem 1`).
fn field(text: &str, line: &str, name: &str) -> Option<u64> {
    let mut words = text
        .lines()
        .find_map(|l| l.strip_prefix(line))?
        .split_whitespace();
    while let Some(word) = words.next() {
        if word == name {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::field;

    const SOCKSTAT: &str = "sockets: used 8\n\
        TCP: inuse 5 orphan 1 tw 2 alloc 7 mem 155\n\
        UDP: inuse 9 mem 0\n";

    #[test]
    fn counts_come_from_the_tcp_line() {
        assert_eq!(field(SOCKSTAT, "TCP:", "inuse"), Some(5));
        assert_eq!(field(SOCKSTAT, "TCP:", "tw"), Some(2));
        assert_eq!(
            field("TCP6: inuse 3\nUDP6: inuse 4\n", "TCP6:", "inuse"),
            Some(3)
        );
    }

    #[test]
    fn an_unreadable_count_is_unknown_not_zero() {
        assert_eq!(field(SOCKSTAT, "TCP6:", "inuse"), None);
        assert_eq!(field("TCP: inuse x tw 0\n", "TCP:", "inuse"), None);
        assert_eq!(field("TCP: orphan 0\n", "TCP:", "inuse"), None);
    }
}
