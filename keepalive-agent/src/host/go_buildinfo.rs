//! A Go binary's toolchain version, from its `.go.buildinfo` section
//! (`debug/buildinfo` in Go's standard library). The executable is another
//! process's to choose: every size in it is bounded before it is read.

use std::{
    fs::File,
    io::{Read, Seek},
    path::Path,
};

use object::{Object, ObjectSection, ReadCache, ReadCacheOps, ReadRef};

/// Build info's magic, at the start of `.go.buildinfo`
/// (`debug/buildinfo` in Go's standard library).
const GO_BUILDINFO_MAGIC: &[u8] = b"\xff Go buildinf:";

/// The most one read of an executable may take: its section headers (64
/// bytes each, 65535 at most). Any process can run a binary whose headers
/// declare a section of any size (the kernel ignores section headers; a
/// sparse file costs nothing): every size comes from the file, so none is
/// read unbounded.
const MAX_ELF_READ: u64 = 4 << 20;

/// A Go version is a few dozen bytes (`go1.22.5`, `go1.23rc1`,
/// `go1.21.0-X:boringcrypto` is refused like anything else unusual).
const MAX_GO_VERSION: usize = 64;

/// Go build info refused as unlike any Go toolchain's: counted for the
/// agent's metrics (`keepalive_agent_untrusted_refused_total`).
pub static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A [`ReadCache`] whose every read is at most [`MAX_ELF_READ`] bytes
/// (strings are bounded by `object` itself, to 4 KiB).
struct Bounded<'a, R: ReadCacheOps>(&'a ReadCache<R>);

// By hand: derived ones would ask R to be Copy; only a reference is copied.
impl<R: ReadCacheOps> Clone for Bounded<'_, R> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<R: ReadCacheOps> Copy for Bounded<'_, R> {}

impl<'a, R: ReadCacheOps> ReadRef<'a> for Bounded<'a, R> {
    fn len(self) -> Result<u64, ()> {
        self.0.len()
    }

    fn read_bytes_at(self, offset: u64, size: u64) -> Result<&'a [u8], ()> {
        if size > MAX_ELF_READ {
            return Err(());
        }
        self.0.read_bytes_at(offset, size)
    }

    fn read_bytes_at_until(
        self,
        range: std::ops::Range<u64>,
        delimiter: u8,
    ) -> Result<&'a [u8], ()> {
        self.0.read_bytes_at_until(range, delimiter)
    }
}

/// A Go binary's toolchain version: Some(None) for a Go binary whose
/// version is not inline (Go < 1.18 stores pointers) or is refused, None
/// for any other. Reads the headers and the start of that section only
/// (its 32-byte header and the version after it), whatever size the
/// section claims.
pub fn version(proc: &Path) -> Option<Option<String>> {
    version_in(File::open(proc.join("exe")).ok()?)
}

/// [`version`] of an executable's bytes (a file, or the fuzz targets'
/// input).
pub fn version_in<R: Read + Seek>(executable: R) -> Option<Option<String>> {
    let cache = ReadCache::new(executable);
    let elf = object::File::parse(Bounded(&cache)).ok()?;
    let section = elf.section_by_name(".go.buildinfo")?;
    let (offset, size) = section.file_range()?;
    // Header, the version's uvarint length (one byte for a short one),
    // the version.
    let wanted = size.min((32 + 10 + MAX_GO_VERSION) as u64);
    let data = Bounded(&cache).read_bytes_at(offset, wanted).ok()?;
    buildinfo_version(data)
}

/// The version in the start of a `.go.buildinfo` section (see
/// [`version`]).
fn buildinfo_version(data: &[u8]) -> Option<Option<String>> {
    if !data.starts_with(GO_BUILDINFO_MAGIC) || data.len() < 32 {
        return None;
    }
    // Flag 2: version and module info inline at offset 32, each a uvarint
    // length then the bytes.
    const FLAGS_VERSION_INLINE: u8 = 2;
    if data[15] & FLAGS_VERSION_INLINE == 0 {
        return Some(None);
    }
    let version = uvarint(&data[32..]).and_then(|(len, used)| {
        let start = 32 + used;
        data.get(start..start.checked_add(len)?)
    });
    match version.and_then(go_version_text) {
        Some(v) => Some(Some(v)),
        None => {
            REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(None)
        }
    }
}

/// A version as Go's toolchains write it: at most [`MAX_GO_VERSION`]
/// bytes of `[0-9A-Za-z.+-]`; anything else is refused.
fn go_version_text(bytes: &[u8]) -> Option<String> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-');
    (!bytes.is_empty() && bytes.len() <= MAX_GO_VERSION && bytes.iter().all(allowed))
        .then(|| String::from_utf8_lossy(bytes).into_owned())
}

fn uvarint(bytes: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0usize;
    for (i, b) in bytes.iter().enumerate().take(9) {
        value |= ((b & 0x7f) as usize) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uvarint_is_read_as_go_writes_it() {
        assert_eq!(uvarint(&[0x96, 0x01]), Some((150, 2)));
    }

    /// An ELF64 whose `.go.buildinfo` section header declares `size`
    /// bytes at 4096, holding the build info header and `version`; the
    /// file is sparse up to the declared end (the red team's 12 KiB file).
    fn crafted_elf(size: u64, version: &[u8]) -> File {
        let mut elf = vec![0u8; 4096];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4..7].copy_from_slice(&[2, 1, 1]);
        let put = |b: &mut Vec<u8>, at: usize, v: &[u8]| b[at..at + v.len()].copy_from_slice(v);
        put(&mut elf, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut elf, 18, &62u16.to_le_bytes()); // x86-64
        put(&mut elf, 20, &1u32.to_le_bytes());
        put(&mut elf, 40, &64u64.to_le_bytes()); // e_shoff
        put(&mut elf, 52, &64u16.to_le_bytes()); // e_ehsize
        put(&mut elf, 54, &56u16.to_le_bytes());
        put(&mut elf, 58, &64u16.to_le_bytes()); // e_shentsize
        put(&mut elf, 60, &3u16.to_le_bytes()); // e_shnum
        put(&mut elf, 62, &1u16.to_le_bytes()); // e_shstrndx
        let names = b"\0.shstrtab\0.go.buildinfo\0";
        let section = |b: &mut Vec<u8>, i: usize, name: u32, kind: u32, off: u64, len: u64| {
            let at = 64 + i * 64;
            b[at..at + 4].copy_from_slice(&name.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&kind.to_le_bytes());
            b[at + 24..at + 32].copy_from_slice(&off.to_le_bytes());
            b[at + 32..at + 40].copy_from_slice(&len.to_le_bytes());
        };
        section(&mut elf, 1, 1, 3, 256, names.len() as u64);
        section(&mut elf, 2, 11, 1, 4096, size);
        put(&mut elf, 256, names);
        let mut info = GO_BUILDINFO_MAGIC.to_vec();
        info.extend_from_slice(&[8, 2]);
        info.resize(32, 0);
        let mut len = version.len();
        while len >= 0x80 {
            info.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        info.push(len as u8);
        info.extend_from_slice(version);
        elf.extend_from_slice(&info);
        let path = std::env::temp_dir().join(format!("ka-elf-{}-{size}", std::process::id()));
        std::fs::write(&path, &elf).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.set_len(4096 + size).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }

    #[test]
    fn a_section_of_any_declared_size_is_read_only_for_its_version() {
        // 32 GiB declared (more than the machine's memory, in a sparse
        // file): only the header and the version are read.
        let file = crafted_elf(32 << 30, b"go1.22.5");
        assert_eq!(version_in(file), Some(Some("go1.22.5".into())));
    }

    #[test]
    fn a_version_unlike_go_s_is_refused_and_counted() {
        let refused = || REFUSED.load(std::sync::atomic::Ordering::Relaxed);
        let before = refused();
        let control = vec![0x1b; 1 << 20];
        assert_eq!(version_in(crafted_elf(2 << 20, &control)), Some(None));
        assert_eq!(version_in(crafted_elf(4096, b"go1.22\n[fake]")), Some(None));
        assert!(refused() >= before + 2);
        assert_eq!(go_version_text(b"go1.23rc1"), Some("go1.23rc1".into()));
        assert_eq!(go_version_text(&[b'1'; 65]), None);
    }
}
