//! The shim's children and their exits (invariant 1).
//!
//! As child subreaper the shim inherits every container process that runc leaves behind, and
//! it also runs `runc` itself. One `waitpid(-1)` loop sees every exit; an exit goes to the
//! `runc` invocation that spawned that pid if there is one, else to the stream of container
//! exits, never both and never neither. Spawning happens under the routing lock, so a command
//! that exits at once is still known when its exit is routed.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::{mpsc, oneshot};

/// One child's end, with its status in the shell's terms (128 + signal when killed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    pub status: i32,
    pub at: SystemTime,
    /// The reaper's count of exits when this one was seen: orders exits without trusting the
    /// wall clock, which can step.
    pub seq: u64,
}

pub struct Reaper {
    commands: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
    container_exits: mpsc::UnboundedSender<Exit>,
    seen: AtomicU64,
}

impl Reaper {
    /// The reaper and the stream on which exits of children it did not spawn arrive.
    pub fn new() -> (Arc<Reaper>, mpsc::UnboundedReceiver<Exit>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let reaper = Reaper {
            commands: Mutex::new(HashMap::new()),
            container_exits: tx,
            seen: AtomicU64::new(0),
        };
        (Arc::new(reaper), rx)
    }

    /// Spawns a command whose exit comes back on the returned receiver only.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut commands = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        commands.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// A point in the sequence of exits: every exit reaped after this call has a larger `seq`.
    pub fn mark(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Collects every child that has exited; call on each SIGCHLD.
    pub fn reap(&self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => self.route(self.stamp(pid, code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    self.route(self.stamp(pid, 128 + sig as i32))
                }
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    log::error!("waitpid failed: {e}");
                    return;
                }
            }
        }
    }

    fn route(&self, exit: Exit) {
        let waiter = self.lock().remove(&exit.pid);
        match waiter {
            // A command whose caller stopped waiting has no one left to tell.
            Some(tx) => drop(tx.send(exit)),
            None => drop(self.container_exits.send(exit)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, oneshot::Sender<Exit>>> {
        // The map stays consistent even if a holder panicked: every operation is one insert
        // or remove.
        self.commands.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reaper {
    fn stamp(&self, pid: Pid, status: i32) -> Exit {
        Exit {
            pid: pid.as_raw(),
            status,
            at: SystemTime::now(),
            seq: self.seen.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit_of(pid: i32) -> Exit {
        Exit {
            pid,
            status: 0,
            at: SystemTime::now(),
            seq: 1,
        }
    }

    #[test]
    fn exits_of_unknown_pids_go_to_the_container_stream() {
        let (reaper, mut exits) = Reaper::new();
        reaper.route(exit_of(4242));
        assert_eq!(exits.try_recv().unwrap().pid, 4242);
    }

    #[test]
    fn exits_of_commands_go_only_to_their_spawner() {
        let (reaper, mut exits) = Reaper::new();
        let (tx, mut rx) = oneshot::channel();
        reaper.lock().insert(77, tx);
        reaper.route(exit_of(77));
        assert_eq!(rx.try_recv().unwrap().pid, 77);
        assert!(
            exits.try_recv().is_err(),
            "a command exit must not reach containers"
        );
        // The registration is used once: a later reuse of the pid is a container's.
        reaper.route(exit_of(77));
        assert_eq!(exits.try_recv().unwrap().pid, 77);
    }
}
