//! Reading what other processes control in `/proc`: their names and
//! cgroup paths are bytes of their choosing, so each file is read with a
//! byte budget and decoded lossily (a non-UTF-8 `comm` is shown with
//! U+FFFD, never dropped: dropping it hid the socket's owner and pod).

use std::{
    fs::File,
    io::{self, Read as _},
    path::Path,
};

/// The most of one such file read: `comm` is 16 bytes, a cgroup line a
/// path per hierarchy (at most a dozen of PATH_MAX).
pub const MAX_BYTES: u64 = 64 * 1024;

/// The file's first [`MAX_BYTES`], as text (invalid UTF-8 replaced).
pub fn read_lossy(path: impl AsRef<Path>) -> io::Result<String> {
    let mut bytes = Vec::new();
    File::open(path)?.take(MAX_BYTES).read_to_end(&mut bytes)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_are_replaced_not_dropped() {
        let path = std::env::temp_dir().join(format!("ka-procfs-{}", std::process::id()));
        std::fs::write(&path, b"evil\xff\xfename\n").unwrap();
        assert_eq!(read_lossy(&path).unwrap(), "evil\u{fffd}\u{fffd}name\n");
        std::fs::write(&path, vec![b'a'; 2 * MAX_BYTES as usize]).unwrap();
        assert_eq!(read_lossy(&path).unwrap().len(), MAX_BYTES as usize);
        std::fs::remove_file(&path).unwrap();
    }
}
