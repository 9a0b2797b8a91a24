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
use std::sync::Mutex;
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
}

/// Opens the FIFOs and makes the pipes runc hands to the process.
pub fn open(paths: &StdioPaths) -> Result<(OpenedIo, ProcessStdio)> {
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
                if let Err(e) = copy::splice_all(fifo_reader, pipe_w).await {
                    // The process closing its stdin early is normal.
                    log::debug!("stdin copy of {name} ended: {e}");
                }
            })
        });
        let outputs = self
            .outputs
            .into_iter()
            .map(|(pipe_r, fifo)| {
                let name = name.to_string();
                tokio::spawn(async move {
                    if let Err(e) = copy::splice_all(pipe_r, fifo).await {
                        log::warn!("output copy of {name} failed: {e}");
                    }
                })
            })
            .collect();
        ProcessIo {
            stdin_holder: Mutex::new(holder),
            stdin_copy,
            output_copies: tokio::sync::Mutex::new(outputs),
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

    /// Returns once stdout and stderr have reached end of file and were flushed to the FIFOs.
    pub async fn drained(&self) {
        let mut copies = self.output_copies.lock().await;
        while let Some(copy) = copies.last_mut() {
            // A panicked or aborted copy has nothing more to deliver either. Popped right after
            // it finishes, so a cancelled wait never polls a finished handle again.
            let _ = copy.await;
            copies.pop();
        }
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
