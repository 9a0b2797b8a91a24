//! A process's standard streams: the client's FIFOs on one side, runc's pipes on the other,
//! and the copies between them. Not terminals (a later issue) and not URIs other than paths.

pub mod copy;
pub mod fifo;

use crate::error::{Error, Result};
use crate::runc::ProcessStdio;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// The stream paths of a create or exec request; an empty path means no stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of the streams, opened before runc runs and not yet copying.
pub struct OpenedIo {
    stdin: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    outputs: Vec<(OwnedFd, OwnedFd)>,
}

/// The running copies of one process.
pub struct ProcessIo {
    stdin_holder: Mutex<Option<OwnedFd>>,
    stdin_copy: Option<JoinHandle<()>>,
    output_copies: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Bytes the output copies have moved, to tell a slow drain from a stuck one.
    output_progress: Arc<AtomicU64>,
}

/// Opens the FIFOs and makes the pipes runc hands to the process. The process's ends belong to
/// `owner` (the io_uid/io_gid options), so a process in a user namespace can reopen them.
pub fn open(paths: &StdioPaths, owner: (u32, u32)) -> Result<(OpenedIo, ProcessStdio)> {
    if paths.terminal {
        return Err(Error::Unimplemented(
            "terminal processes are not supported yet".into(),
        ));
    }
    let mut child = ProcessStdio::default();
    let mut opened = OpenedIo {
        stdin: None,
        outputs: Vec::new(),
    };
    if let Some(path) = stream_path(&paths.stdin)? {
        let (fifo_reader, holder) = fifo::open_stdin(path)?;
        let (pipe_r, pipe_w) = pipe()?;
        set_nonblocking(&pipe_w)?;
        give_to(&pipe_r, owner)?;
        child.stdin = Some(pipe_r);
        opened.stdin = Some((fifo_reader, holder, pipe_w));
    }
    for (path, slot) in [
        (&paths.stdout, &mut child.stdout),
        (&paths.stderr, &mut child.stderr),
    ] {
        if let Some(path) = stream_path(path)? {
            let fifo = fifo::open_output(path)?;
            let (pipe_r, pipe_w) = pipe()?;
            set_nonblocking(&pipe_r)?;
            give_to(&pipe_w, owner)?;
            *slot = Some(pipe_w);
            opened.outputs.push((pipe_r, fifo));
        }
    }
    Ok((opened, child))
}

fn stream_path(path: &str) -> Result<Option<&Path>> {
    if path.is_empty() {
        return Ok(None);
    }
    if path.contains("://") {
        return Err(Error::Unimplemented(format!(
            "stdio URI {path:?} is not supported yet; give a fifo path"
        )));
    }
    Ok(Some(Path::new(path)))
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::Internal(format!("failed to create pipe: {e}")))
}

fn give_to(fd: &OwnedFd, (uid, gid): (u32, u32)) -> Result<()> {
    if (uid, gid) == (0, 0) {
        return Ok(());
    }
    let (u, g) = (
        nix::unistd::Uid::from_raw(uid),
        nix::unistd::Gid::from_raw(gid),
    );
    nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(fd), Some(u), Some(g))
        .map_err(|e| Error::Internal(format!("failed to give a stdio pipe to {uid}:{gid}: {e}")))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| Error::Internal(format!("failed to make pipe non-blocking: {e}")))
}

impl OpenedIo {
    /// Starts copying; call once runc has the process's ends (and has let go of them).
    pub fn start(self, name: &str) -> ProcessIo {
        let mut holder = None;
        let stdin_copy = self.stdin.map(|(fifo_reader, fifo_holder, pipe_w)| {
            holder = Some(fifo_holder);
            let name = name.to_string();
            tokio::spawn(async move {
                let ignored = AtomicU64::new(0);
                if let Err(e) = copy::splice_all(fifo_reader, pipe_w, &ignored).await {
                    // The process closing its stdin early is normal.
                    log::debug!("stdin copy of {name} ended: {e}");
                }
            })
        });
        let output_progress = Arc::new(AtomicU64::new(0));
        let outputs = self
            .outputs
            .into_iter()
            .map(|(pipe_r, fifo)| {
                let name = name.to_string();
                let progress = output_progress.clone();
                tokio::spawn(async move {
                    if let Err(e) = copy::splice_all(pipe_r, fifo, &progress).await {
                        log::warn!("output copy of {name} failed: {e}");
                    }
                })
            })
            .collect();
        ProcessIo {
            stdin_holder: Mutex::new(holder),
            stdin_copy,
            output_copies: tokio::sync::Mutex::new(outputs),
            output_progress,
        }
    }
}

impl ProcessIo {
    /// Lets go of the shim's write end of stdin: the process sees end of input once the client
    /// has closed its end too.
    pub fn close_stdin(&self) {
        self.stdin_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Waits until stdout and stderr have reached end of file and were flushed to the FIFOs;
    /// true when they did. Gives up (false) only once no byte has moved for `idle_limit`: then
    /// either another process holds the stream open or nobody reads the FIFO, and waiting longer
    /// would hang the exit forever. The copies go on regardless.
    pub async fn drained(&self, idle_limit: Duration) -> bool {
        const TICK: Duration = Duration::from_millis(200);
        let mut copies = self.output_copies.lock().await;
        let mut moved = self.output_progress.load(Ordering::Relaxed);
        let mut idle_since = Instant::now();
        while let Some(copy) = copies.last_mut() {
            // A panicked or aborted copy has nothing more to deliver either. Popped right after
            // it finishes, so a finished handle is never polled again.
            if tokio::time::timeout(TICK, copy).await.is_ok() {
                copies.pop();
                continue;
            }
            let now = self.output_progress.load(Ordering::Relaxed);
            if now != moved {
                moved = now;
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= idle_limit {
                return false;
            }
        }
        true
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        if let Some(copy) = &self.stdin_copy {
            copy.abort();
        }
        if let Ok(copies) = self.output_copies.try_lock() {
            copies.iter().for_each(JoinHandle::abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use std::io::Read;

    fn fifo_in_temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("stdio-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdout");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    /// Copies of a process whose stdout goes to the FIFO at `path`, and the process's ends.
    fn stdout_to(path: &std::path::Path) -> (ProcessIo, ProcessStdio) {
        let paths = StdioPaths {
            stdout: path.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (opened, child) = open(&paths, (0, 0)).unwrap();
        (opened.start("test"), child)
    }

    #[tokio::test]
    async fn drain_gives_up_only_when_a_stream_stays_open_without_progress() {
        let path = fifo_in_temp("held");
        let (io, child) = stdout_to(&path);
        // The write end stands for a process that outlives the one that exited.
        let held = child.stdout.unwrap();
        assert!(!io.drained(Duration::from_millis(300)).await);
        drop(held);
        assert!(io.drained(Duration::from_millis(300)).await);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn the_process_ends_of_the_pipes_belong_to_the_io_owner() {
        let dir = fifo_in_temp("owner");
        let stdin = dir.with_file_name("stdin");
        nix::unistd::mkfifo(&stdin, Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdin: stdin.to_string_lossy().into_owned(),
            stdout: dir.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (_opened, child) = open(&paths, (4321, 8765)).unwrap();
        for fd in [child.stdin.unwrap(), child.stdout.unwrap()] {
            let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
            assert_eq!((st.st_uid, st.st_gid), (4321, 8765));
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn drain_waits_for_output_that_keeps_flowing() {
        let path = fifo_in_temp("flow");
        let (io, child) = stdout_to(&path);
        let mut consumer = std::fs::File::open(&path).unwrap();
        let writer = std::thread::spawn(move || {
            let mut out = std::fs::File::from(child.stdout.unwrap());
            // 1.5 s of output, longer than the idle limit but never idle.
            for _ in 0..30 {
                std::io::Write::write_all(&mut out, &[7u8; 4096]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = consumer.read_to_end(&mut got);
            got.len()
        });
        assert!(io.drained(Duration::from_millis(500)).await);
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), 30 * 4096);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
