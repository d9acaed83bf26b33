//! Stdout and stderr as log sinks, never dependencies: lines go through a
//! bounded queue to a thread of their own that writes them, so a pipe that
//! nobody drains (`keepalive-agent run | sleep 60`, a FIFO without a
//! reader, a stalled journald) costs lines, counted, and never blocks the
//! event pipeline, the HTTP API or a signal.

use std::{
    fs::File,
    io::Write,
    os::fd::AsFd as _,
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
    },
    time::Duration,
};

/// Lines queued per stream before new ones are dropped.
const QUEUE_LINES: usize = 8192;

enum Message {
    Line(Vec<u8>),
    /// Answered once every line queued before it is written.
    Flush(mpsc::Sender<()>),
}

/// One output stream.
pub struct Outlet {
    queue: SyncSender<Message>,
    dropped: AtomicU64,
}

impl Outlet {
    /// Writes to a duplicate of `fd` (not through `std::io::stdout`, whose
    /// lock a blocked write would hold) from a thread named `name`.
    fn start(name: &str, fd: std::os::fd::BorrowedFd<'_>) -> Outlet {
        let (queue, lines) = mpsc::sync_channel(QUEUE_LINES);
        match fd.try_clone_to_owned() {
            Ok(fd) => {
                let spawned = std::thread::Builder::new()
                    .name(name.into())
                    .spawn(move || write_all(File::from(fd), lines));
                if let Err(e) = spawned {
                    eprintln!("keepalive-agent: no {name} writer thread: {e}");
                }
            }
            Err(e) => eprintln!("keepalive-agent: cannot duplicate {name}: {e}"),
        }
        Outlet {
            queue,
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues one line (with its newline); false, and counted, when the
    /// queue is full.
    pub fn send(&self, line: Vec<u8>) -> bool {
        match self.queue.try_send(Message::Line(line)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Waits up to `timeout` for every line queued so far to be written;
    /// false when the stream did not take them in time.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (done, written) = mpsc::channel();
        if self.queue.try_send(Message::Flush(done)).is_err() {
            return false;
        }
        written.recv_timeout(timeout).is_ok()
    }
}

/// Writes lines as they come, flushing when the queue runs dry. A write
/// that fails (the reader went away) ends the thread: later lines count
/// as dropped.
fn write_all(file: File, lines: Receiver<Message>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, file);
    while let Ok(first) = lines.recv() {
        let mut next = Some(first);
        while let Some(message) = next {
            match message {
                Message::Line(line) => {
                    if out.write_all(&line).is_err() {
                        return;
                    }
                }
                Message::Flush(done) => {
                    if out.flush().is_err() {
                        return;
                    }
                    let _ = done.send(());
                }
            }
            next = lines.try_recv().ok();
        }
        if out.flush().is_err() {
            return;
        }
    }
}

/// The agent's stdout.
pub fn stdout() -> &'static Outlet {
    static OUT: OnceLock<Outlet> = OnceLock::new();
    OUT.get_or_init(|| Outlet::start("stdout", std::io::stdout().as_fd()))
}

/// The agent's stderr (its log).
pub fn stderr() -> &'static Outlet {
    static ERR: OnceLock<Outlet> = OnceLock::new();
    ERR.get_or_init(|| Outlet::start("stderr", std::io::stderr().as_fd()))
}

/// A `Write` for env_logger: each record is one write of one line.
pub struct LogPipe;

impl Write for LogPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        stderr().send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
