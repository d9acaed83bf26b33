//! Reading values out of OpenMetrics text, and promtool as its linter.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

/// The value of the series `name` whose labels include all of `labels`;
/// None when no series matches, the sum when several do.
pub fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, v) = match line.rsplit_once(' ') {
            Some(x) => x,
            None => continue,
        };
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        if labels
            .iter()
            .all(|(k, val)| l.split(',').any(|kv| kv == format!("{k}=\"{val}\"")))
        {
            let v: f64 = v.parse().unwrap_or_else(|_| panic!("bad value in {line}"));
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `promtool check metrics` on `text`: (success, output).
pub fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool (Debian package prometheus; cargo xtask setup installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), msg)
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_series_by_label_subset() {
        let t = "# HELP x y\nx_total{netns=\"1\",port=\"22\"} 3\nx_total{netns=\"2\",port=\"22\"} 4\ny 7\n";
        assert_eq!(super::value(t, "x_total", &[("netns", "1")]), Some(3.0));
        assert_eq!(super::value(t, "x_total", &[("port", "22")]), Some(7.0));
        assert_eq!(super::value(t, "y", &[]), Some(7.0));
        assert_eq!(super::value(t, "x_total", &[("netns", "3")]), None);
    }
}
