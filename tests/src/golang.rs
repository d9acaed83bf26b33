//! Go programs the tests build (Debian's golang-go, installed by `cargo
//! xtask setup`), offline: GOPATH mode, caches in the test's folder.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

/// Builds `src` (a `main` package's one file) into `dir/name`.
pub fn build(dir: &Path, src: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(src)
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPATH", dir.join("gopath"))
        .env("GO111MODULE", "off")
        .env("GOFLAGS", "")
        .env("HOME", dir)
        .status()
        .expect("go is installed by cargo xtask setup");
    assert!(status.success(), "go build {name}");
    out
}
