//! The lifecycle of one process as a state machine: which operation each state allows, and a
//! FailedPrecondition (or NotFound, for a process that is gone) for every other.
//!
//! Created → Starting → Running → Exited (output draining) → Stopped → Deleting → Deleted.
//! A running init can be frozen and thawed: Running → Pausing → Paused → Resuming → Running;
//! it can exit (killed) from any of those.
//! An exit seen while a start is in flight is held back until the start has been announced, so
//! events stay in order (invariant 6). A Delete of a never-started init kills it, so Deleting
//! still takes the exit and the drain of the state it came from.

use crate::error::{Error, Result};
use crate::reaper::Exit;

/// What the outside sees of a process's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// `runc pause` is under way.
    Pausing,
    /// Frozen: its processes do not run until resumed.
    Paused,
    /// Exited (its output may still be draining); the exit is known.
    Stopped,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum State {
    Created,
    Starting {
        held: Option<Exit>,
    },
    Running,
    Pausing,
    Paused,
    Resuming,
    /// The process is gone; its output is still draining.
    Exited(Exit),
    /// Exited and drained.
    Stopped(Exit),
    /// A Delete is under way from the state inside (Created, Exited or Stopped).
    Deleting(Box<State>),
    Deleted(Option<Exit>),
}

impl State {
    pub fn begin_start(&mut self) -> Result<()> {
        match self {
            State::Created => {
                *self = State::Starting { held: None };
                Ok(())
            }
            State::Starting { .. } => Err(precondition("process is already starting")),
            other => Err(precondition(&format!(
                "cannot start a process that is {}",
                other.word()
            ))),
        }
    }

    /// The start succeeded; returns an exit that arrived meanwhile, now to be handled.
    pub fn finish_start(&mut self) -> Option<Exit> {
        match std::mem::replace(self, State::Running) {
            State::Starting { held } => held,
            other => {
                // Only the holder of the start gets here; keep whatever changed it.
                *self = other;
                None
            }
        }
    }

    /// The start failed: back to Created; an exit that arrived meanwhile is returned.
    pub fn abort_start(&mut self) -> Option<Exit> {
        match std::mem::replace(self, State::Created) {
            State::Starting { held } => held,
            other => {
                *self = other;
                None
            }
        }
    }

    /// Records an exit; returns it when it is to be handled now (drain, then report), or None
    /// when it is held back until the start in flight has been announced, or is not news.
    pub fn exited(&mut self, exit: Exit) -> Option<Exit> {
        match self {
            State::Starting { held } => {
                *held = Some(exit);
                None
            }
            State::Created | State::Running | State::Pausing | State::Paused | State::Resuming => {
                *self = State::Exited(exit);
                Some(exit)
            }
            State::Deleting(from) => from.exited(exit),
            State::Exited(_) | State::Stopped(_) | State::Deleted(_) => None,
        }
    }

    /// The output of the exited process has drained.
    pub fn stop(&mut self) {
        match self {
            State::Exited(exit) => *self = State::Stopped(*exit),
            State::Deleting(from) => from.stop(),
            _ => {}
        }
    }

    /// Claims the Delete; returns whether the process never started (and so must be killed).
    /// An exited process may be deleted while its output drains: the Delete waits for it.
    pub fn begin_delete(&mut self) -> Result<bool> {
        match self {
            State::Created | State::Exited(_) | State::Stopped(_) => {
                let never_started = matches!(self, State::Created);
                let from = std::mem::replace(self, State::Created);
                *self = State::Deleting(Box::new(from));
                Ok(never_started)
            }
            State::Starting { .. } => Err(precondition("cannot delete a process while it starts")),
            State::Running => Err(precondition("cannot delete a running process")),
            State::Pausing | State::Paused | State::Resuming => Err(precondition(
                "cannot delete a paused container: resume or kill it first",
            )),
            State::Deleting(_) => Err(precondition("process is already being deleted")),
            State::Deleted(_) => Err(Error::NotFound("process is already deleted".into())),
        }
    }

    /// The Delete failed: the process is as it was (or as its exit made it meanwhile).
    pub fn abort_delete(&mut self) {
        if let State::Deleting(from) = self {
            let from = std::mem::replace(from.as_mut(), State::Created);
            *self = from;
        }
    }

    /// The Delete succeeded; returns the exit, if the process had one.
    pub fn finish_delete(&mut self) -> Option<Exit> {
        let exit = self.exit();
        *self = State::Deleted(exit);
        exit
    }

    pub fn check_kill(&self) -> Result<()> {
        match self {
            State::Exited(_) | State::Stopped(_) | State::Deleted(_) => {
                Err(Error::NotFound("process already finished".into()))
            }
            State::Deleting(from) => from.check_kill(),
            _ => Ok(()),
        }
    }

    /// Claims a `runc pause`: only a running process can be frozen.
    pub fn begin_pause(&mut self) -> Result<()> {
        match self {
            State::Running => {
                *self = State::Pausing;
                Ok(())
            }
            State::Pausing | State::Paused => Err(precondition("container is already paused")),
            other => Err(precondition(&format!(
                "cannot pause a container that is {}",
                other.word()
            ))),
        }
    }

    /// The pause ended, frozen or not; an exit meanwhile is kept.
    pub fn finish_pause(&mut self, paused: bool) {
        if matches!(self, State::Pausing) {
            *self = if paused {
                State::Paused
            } else {
                State::Running
            };
        }
    }

    /// Claims a `runc resume`: only a paused process can be thawed.
    pub fn begin_resume(&mut self) -> Result<()> {
        match self {
            State::Paused => {
                *self = State::Resuming;
                Ok(())
            }
            State::Resuming => Err(precondition("container is already being resumed")),
            other => Err(precondition(&format!(
                "cannot resume a container that is {}",
                other.word()
            ))),
        }
    }

    /// The resume ended, thawed or not; an exit meanwhile is kept.
    pub fn finish_resume(&mut self, resumed: bool) {
        if matches!(self, State::Resuming) {
            *self = if resumed {
                State::Running
            } else {
                State::Paused
            };
        }
    }

    /// Whether the container's processes are (being) frozen.
    pub fn is_paused(&self) -> bool {
        matches!(self, State::Pausing | State::Paused | State::Resuming)
    }

    /// Whether the process may still produce an exit: starting, running, or exited with its
    /// output still draining.
    pub fn is_live(&self) -> bool {
        matches!(
            self,
            State::Starting { .. }
                | State::Running
                | State::Pausing
                | State::Paused
                | State::Resuming
                | State::Exited(_)
        )
    }

    /// A start that never ran the process (an exec runc refused): it ends here, with `exit`.
    pub fn give_up(&mut self, exit: Exit) {
        if matches!(self, State::Created | State::Starting { .. }) {
            *self = State::Stopped(exit);
        }
    }

    /// The exit, once reaped (whether or not the output has drained).
    pub fn exit(&self) -> Option<Exit> {
        match self {
            State::Exited(e) | State::Stopped(e) => Some(*e),
            State::Deleting(from) => from.exit(),
            State::Deleted(e) => *e,
            _ => None,
        }
    }

    /// The status as the outside sees it, with the exit once there is one: an exit is
    /// reported when it happens, even while the output still drains.
    pub fn public(&self) -> (Status, Option<Exit>) {
        match self {
            // Until runc has started it, a process is as created as the Go shim says.
            State::Created | State::Starting { .. } => (Status::Created, None),
            State::Running => (Status::Running, None),
            State::Pausing => (Status::Pausing, None),
            // Until runc has thawed it, it is as paused as the Go shim says.
            State::Paused | State::Resuming => (Status::Paused, None),
            State::Exited(e) | State::Stopped(e) => (Status::Stopped, Some(*e)),
            State::Deleting(from) => from.public(),
            State::Deleted(e) => (Status::Deleted, *e),
        }
    }

    fn word(&self) -> &'static str {
        match self {
            State::Created => "created",
            State::Starting { .. } => "starting",
            State::Running => "running",
            State::Pausing => "pausing",
            State::Paused => "paused",
            State::Resuming => "resuming",
            State::Exited(_) => "exited",
            State::Stopped(_) => "stopped",
            State::Deleting(_) => "being deleted",
            State::Deleted(_) => "deleted",
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
            seq: 1,
        }
    }

    #[test]
    fn start_twice_is_a_failed_precondition() {
        let mut s = State::Created;
        s.begin_start().unwrap();
        assert!(matches!(s.begin_start(), Err(Error::FailedPrecondition(_))));
        assert_eq!(s.finish_start(), None);
        assert!(matches!(s.begin_start(), Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn an_exit_during_start_is_held_until_the_start_is_announced() {
        let mut s = State::Created;
        s.begin_start().unwrap();
        assert_eq!(s.exited(exit(10, 3)), None);
        assert_eq!(s.exit(), None);
        let held = s.finish_start().expect("held exit is handed back");
        assert_eq!(s.exited(held), Some(held));
        assert_eq!(s.exit().map(|e| e.status), Some(3));
    }

    #[test]
    fn an_exit_during_a_failed_start_is_handed_back() {
        let mut s = State::Created;
        s.begin_start().unwrap();
        assert_eq!(s.exited(exit(10, 1)), None);
        let held = s.abort_start().expect("held exit is handed back");
        assert_eq!(s, State::Created);
        assert_eq!(s.exited(held), Some(held));
    }

    #[test]
    fn a_running_process_never_shows_an_exit_and_an_exited_one_always_does() {
        let mut s = State::Created;
        s.begin_start().unwrap();
        s.finish_start();
        assert_eq!(s.public(), (Status::Running, None));
        let e = exit(1, 7);
        s.exited(e);
        assert_eq!(s.public(), (Status::Stopped, Some(e)), "while draining");
        s.stop();
        assert_eq!(s.public(), (Status::Stopped, Some(e)));
    }

    #[test]
    fn delete_is_allowed_only_before_start_or_after_stop() {
        let mut s = State::Created;
        s.begin_start().unwrap();
        s.finish_start();
        assert!(matches!(
            s.begin_delete(),
            Err(Error::FailedPrecondition(_))
        ));
        s.exited(exit(1, 0));
        s.stop();
        assert_eq!(s.begin_delete(), Ok(false));
        assert_eq!(s.finish_delete().map(|e| e.status), Some(0));
        assert!(matches!(s.begin_delete(), Err(Error::NotFound(_))));
    }

    #[test]
    fn a_second_delete_during_the_first_is_refused_and_an_abort_restores() {
        let mut s = State::Created;
        assert_eq!(s.begin_delete(), Ok(true));
        assert!(matches!(
            s.begin_delete(),
            Err(Error::FailedPrecondition(_))
        ));
        s.abort_delete();
        assert_eq!(s, State::Created);
        assert_eq!(s.begin_delete(), Ok(true));
    }

    #[test]
    fn a_killed_never_started_process_exits_and_drains_while_deleting() {
        let mut s = State::Created;
        assert_eq!(s.begin_delete(), Ok(true));
        let e = exit(5, 137);
        assert_eq!(s.exited(e), Some(e));
        s.stop();
        assert_eq!(s.public(), (Status::Stopped, Some(e)));
        s.abort_delete();
        assert_eq!(s, State::Stopped(e), "a failed delete keeps the exit");
    }

    #[test]
    fn a_paused_container_can_be_killed_but_not_deleted() {
        let mut s = State::Running;
        assert!(matches!(
            s.begin_resume(),
            Err(Error::FailedPrecondition(_))
        ));
        s.begin_pause().unwrap();
        assert_eq!(s.public(), (Status::Pausing, None));
        assert!(matches!(s.begin_pause(), Err(Error::FailedPrecondition(_))));
        s.finish_pause(true);
        assert_eq!(s.public(), (Status::Paused, None));
        assert!(s.check_kill().is_ok());
        assert!(matches!(
            s.begin_delete(),
            Err(Error::FailedPrecondition(m)) if m.contains("paused")
        ));
        let e = exit(1, 137);
        assert_eq!(s.exited(e), Some(e), "a killed paused container exits");
        s.finish_resume(true);
        assert_eq!(s.public(), (Status::Stopped, Some(e)), "the exit is kept");
    }

    #[test]
    fn a_failed_pause_or_resume_leaves_the_state_as_it_was() {
        let mut s = State::Running;
        s.begin_pause().unwrap();
        s.finish_pause(false);
        assert_eq!(s, State::Running);
        s.begin_pause().unwrap();
        s.finish_pause(true);
        s.begin_resume().unwrap();
        assert_eq!(s.public(), (Status::Paused, None));
        s.finish_resume(false);
        assert_eq!(s, State::Paused);
        s.begin_resume().unwrap();
        s.finish_resume(true);
        assert_eq!(s, State::Running);
    }

    #[test]
    fn kill_after_exit_is_not_found() {
        let mut s = State::Running;
        assert!(s.check_kill().is_ok());
        s.exited(exit(1, 137));
        assert!(matches!(s.check_kill(), Err(Error::NotFound(_))));
    }
}
