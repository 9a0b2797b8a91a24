//! One process of a container, init or exec: its streams, its lifecycle state and its exit.
//! It knows nothing of ttrpc or events; the service drives it.

pub mod state;

use crate::reaper::Exit;
use crate::stdio::{ProcessIo, StdioPaths};
pub use state::{State, Status};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub struct Process {
    pub container_id: String,
    /// Empty for the container's init process.
    pub exec_id: String,
    pub stdio: StdioPaths,
    state: Mutex<State>,
    io: Mutex<Option<Arc<ProcessIo>>>,
    /// Carries the exit once the process is Stopped (exited and drained).
    stopped: watch::Sender<Option<Exit>>,
}

impl Process {
    pub fn new(container_id: &str, exec_id: &str, stdio: StdioPaths) -> Process {
        Process {
            container_id: container_id.to_string(),
            exec_id: exec_id.to_string(),
            stdio,
            state: Mutex::new(State::new()),
            io: Mutex::new(None),
            stopped: watch::channel(None).0,
        }
    }

    pub fn is_init(&self) -> bool {
        self.exec_id.is_empty()
    }

    /// The lifecycle state; hold the guard only across code that does not await.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn pid(&self) -> i32 {
        self.state().pid
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

    /// Marks the process Stopped (its output has drained) and wakes every waiter.
    pub fn mark_stopped(&self, state: &mut State) {
        state.stop();
        self.stopped.send_replace(state.exit);
    }

    /// Waits until the process is Stopped and returns its exit.
    pub async fn wait(&self) -> Exit {
        let mut rx = self.stopped.subscribe();
        loop {
            if let Some(exit) = *rx.borrow_and_update() {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as self, which the caller holds.
                unreachable!("process dropped while waited on");
            }
        }
    }
}
