//! The lifecycle of one process as a state machine: which operation each state allows, and a
//! FailedPrecondition for every other.
//!
//! Created → (starting) → Running → Stopped → Deleted. An exit seen while a start is in flight
//! is held back until the start has been announced, so events stay in order (invariant 6).

use crate::error::{Error, Result};
use crate::reaper::Exit;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// Exited and its output drained; its exit status is known.
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub status: Status,
    pub pid: i32,
    pub starting: bool,
    /// A Delete is under way; a second one is refused.
    pub deleting: bool,
    /// Set when the reaper reports the exit, before the output has drained.
    pub exit: Option<Exit>,
    /// An exit that arrived while a start was in flight.
    held_exit: Option<Exit>,
}

impl State {
    pub fn new() -> State {
        State {
            status: Status::Created,
            pid: 0,
            starting: false,
            deleting: false,
            exit: None,
            held_exit: None,
        }
    }

    pub fn begin_start(&mut self) -> Result<()> {
        match (self.status, self.starting, self.exit) {
            (Status::Created, false, None) => {
                self.starting = true;
                Ok(())
            }
            (Status::Created, true, _) => Err(precondition("process is already starting")),
            (Status::Created, false, Some(_)) => Err(precondition("process has already exited")),
            (status, _, _) => Err(precondition(&format!(
                "cannot start a process that is {}",
                status.word()
            ))),
        }
    }

    /// The start succeeded; returns an exit that arrived meanwhile, now to be handled.
    pub fn finish_start(&mut self, pid: i32) -> Option<Exit> {
        self.starting = false;
        self.pid = pid;
        self.status = Status::Running;
        self.held_exit.take()
    }

    /// The start failed; an exit that arrived meanwhile is returned to be handled.
    pub fn abort_start(&mut self) -> Option<Exit> {
        self.starting = false;
        self.held_exit.take()
    }

    /// Records an exit; returns it if it is to be handled now, or None when it is held back
    /// until the start in flight has been announced.
    pub fn record_exit(&mut self, exit: Exit) -> Option<Exit> {
        if self.starting {
            self.held_exit = Some(exit);
            return None;
        }
        self.exit = Some(exit);
        Some(exit)
    }

    /// The output has drained: the process is now Stopped.
    pub fn stop(&mut self) {
        if self.status != Status::Deleted {
            self.status = Status::Stopped;
        }
    }

    pub fn check_delete(&self) -> Result<()> {
        if self.deleting {
            return Err(precondition("process is already being deleted"));
        }
        match (self.status, self.starting) {
            (Status::Created, true) => Err(precondition("cannot delete a process while it starts")),
            (Status::Created, false) | (Status::Stopped, _) => Ok(()),
            (Status::Running, _) => Err(precondition("cannot delete a running process")),
            (Status::Deleted, _) => Err(Error::NotFound("process is already deleted".into())),
        }
    }

    /// Claims the Delete; returns whether the process never started (and so must be killed).
    pub fn begin_delete(&mut self) -> Result<bool> {
        self.check_delete()?;
        self.deleting = true;
        Ok(self.status == Status::Created)
    }

    /// The Delete failed: the process may be deleted again.
    pub fn abort_delete(&mut self) {
        self.deleting = false;
    }

    pub fn check_kill(&self) -> Result<()> {
        if self.exit.is_some() || matches!(self.status, Status::Stopped | Status::Deleted) {
            return Err(Error::NotFound("process already finished".into()));
        }
        Ok(())
    }

    pub fn exit_status(&self) -> u32 {
        self.exit.map_or(0, |e| e.status as u32)
    }
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

impl Status {
    fn word(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Deleted => "deleted",
        }
    }
}

fn precondition(msg: &str) -> Error {
    Error::FailedPrecondition(msg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn exit(pid: i32, status: i32) -> Exit {
        Exit {
            pid,
            status,
            at: SystemTime::now(),
        }
    }

    #[test]
    fn start_twice_is_a_failed_precondition() {
        let mut s = State::new();
        s.begin_start().unwrap();
        assert!(matches!(s.begin_start(), Err(Error::FailedPrecondition(_))));
        assert_eq!(s.finish_start(10), None);
        assert!(matches!(s.begin_start(), Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn an_exit_during_start_is_held_until_the_start_is_announced() {
        let mut s = State::new();
        s.begin_start().unwrap();
        assert_eq!(s.record_exit(exit(10, 3)), None);
        assert!(s.exit.is_none());
        let held = s.finish_start(10).expect("held exit is handed back");
        assert_eq!(s.record_exit(held), Some(held));
        assert_eq!(s.exit_status(), 3);
    }

    #[test]
    fn delete_is_allowed_only_before_start_or_after_stop() {
        let mut s = State::new();
        assert!(s.check_delete().is_ok());
        s.begin_start().unwrap();
        s.finish_start(1);
        assert!(matches!(
            s.check_delete(),
            Err(Error::FailedPrecondition(_))
        ));
        s.record_exit(exit(1, 0));
        assert!(
            s.check_delete().is_err(),
            "not deletable before output drained"
        );
        s.stop();
        assert!(s.check_delete().is_ok());
        s.status = Status::Deleted;
        assert!(matches!(s.check_delete(), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_second_delete_during_the_first_is_refused() {
        let mut s = State::new();
        assert_eq!(s.begin_delete(), Ok(true));
        assert!(matches!(
            s.begin_delete(),
            Err(Error::FailedPrecondition(_))
        ));
        s.abort_delete();
        assert_eq!(s.begin_delete(), Ok(true));
    }

    #[test]
    fn kill_after_exit_is_not_found() {
        let mut s = State::new();
        assert!(s.check_kill().is_ok());
        s.record_exit(exit(1, 137));
        assert!(matches!(s.check_kill(), Err(Error::NotFound(_))));
    }
}
