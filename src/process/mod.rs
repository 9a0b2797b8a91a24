//! One process of a container, init or exec: its streams, its lifecycle state and its exit.
//! It knows nothing of ttrpc, runc or events; the container acts on it and the service reports.

mod state;

use crate::error::Result;
use crate::reaper::Exit;
use crate::stdio::{ProcessIo, StdioPaths};
use state::State;
pub use state::Status;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Init,
    Exec(String),
}

/// A process as State and Wait report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub status: Status,
    pub pid: i32,
    pub exit: Option<Exit>,
}

pub struct Process {
    pub container_id: String,
    pub kind: Kind,
    pub stdio: StdioPaths,
    /// 0 until runc has told it.
    pid: AtomicI32,
    state: Mutex<State>,
    io: Mutex<Option<Arc<ProcessIo>>>,
    /// How the process ended, for its waiters.
    ending: watch::Sender<Ending>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Pending,
    /// Exited and drained (or never ran, with the exit its failed start was given).
    Stopped(Exit),
    /// Deleted without ever having an exit.
    Gone,
}

impl Process {
    pub fn new(container_id: &str, kind: Kind, stdio: StdioPaths) -> Process {
        Process {
            container_id: container_id.to_string(),
            kind,
            stdio,
            pid: AtomicI32::new(0),
            state: Mutex::new(State::Created),
            io: Mutex::new(None),
            ending: watch::channel(Ending::Pending).0,
        }
    }

    pub fn is_init(&self) -> bool {
        self.kind == Kind::Init
    }

    /// The id events carry for this process: the container's for init, else the exec's.
    pub fn id(&self) -> &str {
        match &self.kind {
            Kind::Init => &self.container_id,
            Kind::Exec(id) => id,
        }
    }

    /// The exec id requests name this process by: empty for init.
    pub fn exec_id(&self) -> &str {
        match &self.kind {
            Kind::Init => "",
            Kind::Exec(id) => id,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.pid.load(Ordering::SeqCst)
    }

    pub fn set_pid(&self, pid: i32) {
        self.pid.store(pid, Ordering::SeqCst);
    }

    pub fn snapshot(&self) -> Snapshot {
        let (status, exit) = self.state().public();
        Snapshot {
            status,
            pid: self.pid(),
            exit,
        }
    }

    pub fn begin_pause(&self) -> Result<()> {
        self.state().begin_pause()
    }

    pub fn finish_pause(&self, paused: bool) {
        self.state().finish_pause(paused)
    }

    pub fn begin_resume(&self) -> Result<()> {
        self.state().begin_resume()
    }

    pub fn finish_resume(&self, resumed: bool) {
        self.state().finish_resume(resumed)
    }

    /// Whether the process is (being) frozen.
    pub fn is_paused(&self) -> bool {
        self.state().is_paused()
    }

    pub fn begin_start(&self) -> Result<()> {
        self.state().begin_start()
    }

    /// The start was announced; an exit that came meanwhile is returned to be handled.
    pub fn finish_start(&self) -> Option<Exit> {
        self.state().finish_start()
    }

    pub fn abort_start(&self) -> Option<Exit> {
        self.state().abort_start()
    }

    /// Records the exit; returns it when it is to be handled now.
    pub fn exited(&self, exit: Exit) -> Option<Exit> {
        self.state().exited(exit)
    }

    pub fn check_kill(&self) -> Result<()> {
        self.state().check_kill()
    }

    pub fn begin_delete(&self) -> Result<bool> {
        self.state().begin_delete()
    }

    pub fn abort_delete(&self) {
        self.state().abort_delete()
    }

    /// Deleted: the streams are closed; returns the exit if there was one. Waiters of a process
    /// that never had one are told it is gone.
    pub fn finish_delete(&self) -> Option<Exit> {
        self.close_io();
        let exit = self.state().finish_delete();
        if exit.is_none() {
            self.ending.send_replace(Ending::Gone);
        }
        exit
    }

    /// A start that never ran the process: it is stopped with `exit`, and its waiters wake.
    pub fn give_up(&self, exit: Exit) {
        let mut state = self.state();
        state.give_up(exit);
        if let Some(exit) = state.exit() {
            self.ending.send_replace(Ending::Stopped(exit));
        }
    }

    /// Whether the process may still produce an exit (starting, running or draining).
    pub fn is_live(&self) -> bool {
        self.state().is_live()
    }

    pub fn set_io(&self, io: ProcessIo) {
        *self.io.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(io));
    }

    pub fn io(&self) -> Option<Arc<ProcessIo>> {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Drops the copies and the shim's FIFO ends.
    pub fn close_io(&self) {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The output has drained: the process is Stopped and every waiter wakes.
    pub fn stop(&self) {
        let mut state = self.state();
        state.stop();
        if let Some(exit) = state.exit() {
            self.ending.send_replace(Ending::Stopped(exit));
        }
    }

    /// Waits until the process is Stopped and returns its exit; None when it was deleted
    /// without ever having one.
    pub async fn wait(&self) -> Option<Exit> {
        let mut rx = self.ending.subscribe();
        loop {
            match *rx.borrow_and_update() {
                Ending::Stopped(exit) => return Some(exit),
                Ending::Gone => return None,
                Ending::Pending => {}
            }
            // The sender lives as long as self, which the caller holds: changed() cannot fail
            // while we wait, and if it did there would be nothing more to wait for.
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
