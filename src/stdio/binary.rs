//! A logging program for a process's output (`binary://`, `binary-v2://`): it reads stdout on
//! fd 3 and stderr on fd 4, and says it is ready on fd 5 before the process starts. It is
//! spawned through the reaper, so its exit goes to us and never to a container process.

use crate::error::{Error, Result};
use crate::reaper::{Exit, Reaper};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::oneshot;

/// How long a logger may take to say it is ready.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// How long a logger may take to stop after SIGTERM before it is killed (as containerd).
pub const STOP_LIMIT: Duration = Duration::from_secs(12);

pub struct Spec<'a> {
    pub path: &'a Path,
    pub args: &'a [String],
    pub needs_ready_byte: bool,
    /// CONTAINER_ID: the container's id for init, the exec's id for an exec.
    pub process_id: &'a str,
    pub namespace: &'a str,
}

/// A running logger: its pid, and its exit once the reaper has seen it. Dropped before it is
/// supervised (runc failed, say), it is killed.
pub struct Logger {
    pid: i32,
    exited: Option<oneshot::Receiver<Exit>>,
}

impl Drop for Logger {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the logger on the read ends of the process's output pipes and waits until it is
/// ready; a logger that fails to start, or to get ready in time, is a clear error (and is
/// killed).
pub async fn start(
    spec: &Spec<'_>,
    reaper: &Arc<Reaper>,
    stdout: OwnedFd,
    stderr: OwnedFd,
) -> Result<Logger> {
    let program = spec.path.display();
    let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::Internal(format!("failed to create a pipe: {e}")))?;
    let mut cmd = Command::new(spec.path);
    cmd.args(spec.args)
        .env_clear()
        .env("CONTAINER_ID", spec.process_id)
        .env("CONTAINER_NAMESPACE", spec.namespace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let fds = [stdout.as_raw_fd(), stderr.as_raw_fd(), ready_w.as_raw_fd()];
    // SAFETY: only fcntl and dup2 run between fork and exec, both async-signal-safe. The
    // sources are first copied above 10, so placing one never overwrites another; dup2 onto
    // 3, 4 and 5 gives copies without close-on-exec while ours keep it.
    unsafe {
        cmd.pre_exec(move || {
            let mut high = [0; 3];
            for (slot, fd) in high.iter_mut().zip(fds) {
                *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
                if *slot < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, fd) in (3..).zip(high) {
                if libc::dup2(fd, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let (child, exited) = reaper.spawn(&mut cmd).map_err(|e| {
        Error::InvalidArgument(format!("failed to start logging binary {program}: {e}"))
    })?;
    drop((cmd, stdout, stderr, ready_w));
    let logger = Logger {
        pid: child.id() as i32,
        exited: Some(exited),
    };
    match tokio::time::timeout(READY_LIMIT, read_ready(ready_r)).await {
        Ok(Ok(n)) if n > 0 || !spec.needs_ready_byte => Ok(logger),
        Ok(Ok(_)) => {
            drop(logger);
            Err(Error::FailedPrecondition(format!(
                "logging binary {program} did not signal ready (it closed fd 5 without writing; \
                 it may have crashed or exited early)"
            )))
        }
        Ok(Err(e)) => {
            drop(logger);
            Err(Error::Internal(format!(
                "reading the readiness of logging binary {program}: {e}"
            )))
        }
        Err(_) => {
            drop(logger);
            Err(Error::FailedPrecondition(format!(
                "logging binary {program} did not signal ready within {READY_LIMIT:?}"
            )))
        }
    }
}

/// Bytes read from the readiness pipe: one is enough, end of file gives 0.
async fn read_ready(fd: OwnedFd) -> std::io::Result<usize> {
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut byte = [0u8; 1];
    rx.read(&mut byte).await
}

impl Logger {
    /// Kills the logger unless it has already been reaped (then its pid may be another's) or
    /// is supervised.
    fn kill(&mut self) {
        if let Some(exited) = &mut self.exited {
            if matches!(exited.try_recv(), Err(oneshot::error::TryRecvError::Empty)) {
                signal(self.pid, libc::SIGKILL);
            }
        }
    }

    /// Watches the logger until it ends: on its own (its input ended), or, once `stop` fires,
    /// after SIGTERM and, if it lingers, SIGKILL. `done` fires when it is gone.
    pub fn supervise(mut self, stop: oneshot::Receiver<()>, done: oneshot::Sender<()>) {
        let pid = self.pid;
        let Some(mut exited) = self.exited.take() else {
            return;
        };
        tokio::spawn(async move {
            tokio::select! {
                // An exit that is already known wins, so the pid is never signalled once free.
                biased;
                _ = &mut exited => {}
                _ = stop => {
                    signal(pid, libc::SIGTERM);
                    if tokio::time::timeout(STOP_LIMIT, &mut exited).await.is_err() {
                        signal(pid, libc::SIGKILL);
                        let _ = exited.await;
                    }
                }
            }
            let _ = done.send(());
        });
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill takes plain integers; the caller knows the pid is still its child's.
    unsafe { libc::kill(pid, sig) };
}
