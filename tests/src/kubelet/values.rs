//! How the kubelet reads a container's values: `$(VAR)` references in
//! env, command and args (k8s.io/kubernetes third_party/forked/golang/expansion),
//! and resource quantities.

use std::collections::BTreeMap;

/// Expands `$(NAME)` from `vars`; `$$` is a literal `$`; an undefined or
/// unterminated reference stays as written, as the kubelet leaves it.
pub fn expand(input: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&format!("$({name})")),
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// A memory quantity in bytes (`256Mi`, `1G`, `1000`).
pub fn bytes(q: &str) -> Option<u64> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (s, m) in SUFFIXES {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<u64>().ok().map(|n| n * m);
        }
    }
    q.parse().ok()
}

/// A CPU quantity in cores (`500m`, `2`).
pub fn cores(q: &str) -> Option<f64> {
    match q.strip_suffix('m') {
        Some(m) => m.parse::<f64>().ok().map(|m| m / 1000.0),
        None => q.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_as_the_kubelet() {
        let vars: BTreeMap<String, String> = [("HOST_IP".to_string(), "10.0.0.5".to_string())]
            .into_iter()
            .collect();
        assert_eq!(expand("$(HOST_IP):9977", &vars), "10.0.0.5:9977");
        assert_eq!(expand("[$(HOST_IP)]", &vars), "[10.0.0.5]");
        assert_eq!(expand("$$(HOST_IP)", &vars), "$(HOST_IP)");
        assert_eq!(expand("$(NOPE) $(HOST_IP", &vars), "$(NOPE) $(HOST_IP");
        assert_eq!(expand("a$b", &vars), "a$b");
    }

    #[test]
    fn reads_quantities() {
        assert_eq!(bytes("256Mi"), Some(256 << 20));
        assert_eq!(bytes("96Mi"), Some(96 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(cores("500m"), Some(0.5));
        assert_eq!(cores("2"), Some(2.0));
    }
}
