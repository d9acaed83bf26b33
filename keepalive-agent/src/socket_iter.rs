//! Inventory of every TCP socket through the kernel programs' `iter/tcp`
//! iterator: tuple, state, namespace, inode, uid, SO_KEEPALIVE, the
//! per-socket TCP_KEEP* options and the keepalive timer. An iterator walks
//! the namespace it is created in, so each namespace is read from a thread
//! inside it.

use std::io::Read as _;

use aya::{
    Btf as AyaBtf, Ebpf,
    programs::{Iter, ProgramError},
};
use keepalive_common::{SOCKET_RECORD_SIZE, SocketRecord};

use crate::netns::{self, Netns};

pub const PROGRAM: &str = "dump_tcp";

#[derive(Debug, thiserror::Error)]
pub enum IterError {
    #[error("program {PROGRAM} missing from the eBPF object")]
    Missing,
    #[error("loading the socket iterator: {0}")]
    Load(String),
    #[error("reading the socket iterator in netns {netns}: {reason}")]
    Read { netns: u64, reason: String },
}

/// Loads the iterator program (once, at start).
pub fn load(ebpf: &mut Ebpf, btf: &AyaBtf) -> Result<(), IterError> {
    let prog = program(ebpf)?;
    prog.load("tcp", btf)
        .map_err(|e| IterError::Load(crate::loader::short(e)))
}

fn program(ebpf: &mut Ebpf) -> Result<&mut Iter, IterError> {
    ebpf.program_mut(PROGRAM)
        .ok_or(IterError::Missing)?
        .try_into()
        .map_err(|e: ProgramError| IterError::Load(e.to_string()))
}

/// Every TCP socket of `ns`.
pub fn scan(ebpf: &mut Ebpf, ns: &Netns) -> Result<Vec<SocketRecord>, IterError> {
    let fail = |reason: String| IterError::Read {
        netns: ns.inode,
        reason,
    };
    let prog = program(ebpf)?;
    let id = prog.attach().map_err(|e| fail(e.to_string()))?;
    let link = prog.take_link(id).map_err(|e| fail(e.to_string()))?;
    let bytes = netns::run_in(&ns.path, move || -> Result<Vec<u8>, String> {
        let mut file = link.into_file().map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    })
    .map_err(|e| fail(e.to_string()))?
    .map_err(fail)?;
    Ok(parse(&bytes))
}

fn parse(bytes: &[u8]) -> Vec<SocketRecord> {
    bytes
        .chunks_exact(SOCKET_RECORD_SIZE)
        // SAFETY: SocketRecord is plain old data of exactly this size.
        .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<SocketRecord>()) })
        .collect()
}
