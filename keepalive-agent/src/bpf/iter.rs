//! Inventory of every TCP socket through the kernel programs' `iter/tcp`
//! iterator: tuple, state, namespace, inode, uid, SO_KEEPALIVE, the
//! per-socket TCP_KEEP* options and the keepalive timer. An iterator walks
//! the namespace it is created in, so each namespace is read from a thread
//! inside it.

use std::io::Read as _;

use aya::{Btf as AyaBtf, Ebpf, programs::Iter};
use keepalive_common::{SOCKET_RECORD_SIZE, SocketRecord};

use super::{error::ProgramFailure, hooks::program};
use crate::host::{
    netns::{self, Netns, NetnsError},
    sockstat,
};

pub const PROGRAM: &str = "dump_tcp";

#[derive(Debug, thiserror::Error)]
pub enum IterError {
    #[error("the socket iterator: {0}")]
    Program(#[from] ProgramFailure),
    #[error("starting the socket iterator in netns {netns}: {error}")]
    Start {
        netns: u64,
        error: aya::programs::links::LinkError,
    },
    #[error("socket iterator: {0}")]
    Netns(#[from] NetnsError),
    #[error("reading the socket iterator in netns {netns}: {source}")]
    Read { netns: u64, source: std::io::Error },
}

/// Loads the iterator program (once, at start).
pub fn load(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<(), IterError> {
    let prog: &mut Iter = program(ebpf, PROGRAM)?;
    prog.load("tcp", btf)
        .map_err(ProgramFailure::failed(PROGRAM))?;
    Ok(())
}

/// Records per read: an inventory of a namespace with 100k sockets
/// never holds them all at once.
const CHUNK_RECORDS: usize = 1024;

/// Every TCP socket of `ns`, handed to `each` a chunk at a time (from a
/// thread inside the namespace); returns how many there were. A namespace
/// whose sockstat counts none is not walked.
pub fn scan(
    ebpf: &mut Ebpf,
    ns: &Netns,
    mut each: impl FnMut(&[SocketRecord]) + Send,
) -> Result<usize, IterError> {
    let netns = ns.inode;
    let read = |source| IterError::Read { netns, source };
    let prog: &mut Iter = program(ebpf, PROGRAM)?;
    let id = prog.attach().map_err(ProgramFailure::failed(PROGRAM))?;
    let link = prog
        .take_link(id)
        .map_err(ProgramFailure::failed(PROGRAM))?;
    netns::run_in(&ns.path, move || -> Result<usize, IterError> {
        // The iterator walks every bucket of the node's established hash
        // (established_get_first) for each namespace it is made in: a few
        // ms a namespace, for nothing where there is no TCP socket.
        if sockstat::tcp_sockets_here() == Some(0) {
            return Ok(0);
        }
        let mut file = link
            .into_file()
            .map_err(|error| IterError::Start { netns, error })?;
        let mut buf = vec![0u8; CHUNK_RECORDS * SOCKET_RECORD_SIZE];
        // One records buffer for every chunk: a fresh one each time is an
        // mmap of its own (past malloc's threshold) and its page faults.
        let mut records = Vec::with_capacity(CHUNK_RECORDS);
        let (mut filled, mut total) = (0, 0);
        loop {
            let n = file.read(&mut buf[filled..]).map_err(read)?;
            if n == 0 {
                return Ok(total);
            }
            filled += n;
            // A read may end inside a record: the rest waits for the next.
            let whole = filled - filled % SOCKET_RECORD_SIZE;
            parse(&buf[..whole], &mut records);
            total += records.len();
            each(&records);
            buf.copy_within(whole..filled, 0);
            filled -= whole;
        }
    })?
}

fn parse(bytes: &[u8], records: &mut Vec<SocketRecord>) {
    records.clear();
    records.extend(
        bytes
            .chunks_exact(SOCKET_RECORD_SIZE)
            // SAFETY: SocketRecord is plain old data of exactly this size.
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<SocketRecord>()) }),
    );
}
