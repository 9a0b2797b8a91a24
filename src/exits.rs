//! The process table: which container process owns which pid, and the exits of pids that no
//! process has claimed yet (invariant 1). Fed by the reaper's stream of container exits.
//!
//! A process claims its pid once runc has told it (pid file); its exit may already have been
//! reaped by then, so `claim` hands back an exit of that pid seen after the claimant's mark.
//! Exits are ordered by the reaper's sequence number, never by the clock.

use crate::reaper::Exit;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// How many unclaimed exits are kept; beyond that the oldest go. Each belongs to a process
/// that died before anyone claimed it (a runc helper's child, a stray grandchild); the few a
/// claim is waiting for are the newest.
const UNCLAIMED_LIMIT: usize = 1024;

pub struct ProcessTable<T> {
    inner: Mutex<Inner<T>>,
}

struct Inner<T> {
    /// Each owner with the mark it claimed under: an exit from before it is not its own.
    owners: HashMap<i32, (T, u64)>,
    unclaimed: HashMap<i32, Exit>,
}

impl<T> Default for ProcessTable<T> {
    fn default() -> Self {
        ProcessTable {
            inner: Mutex::new(Inner {
                owners: HashMap::new(),
                unclaimed: HashMap::new(),
            }),
        }
    }
}

impl<T> ProcessTable<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Every operation is a few inserts and removes: the maps stay consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives `exit` to the process that owns its pid (and forgets the owner: a pid exits once),
    /// or keeps it for a claim that is still to come.
    pub fn route(&self, exit: Exit) -> Option<(T, Exit)> {
        let mut inner = self.lock();
        if inner
            .owners
            .get(&exit.pid)
            .is_some_and(|(_, since)| exit.seq > *since)
        {
            if let Some((owner, _)) = inner.owners.remove(&exit.pid) {
                return Some((owner, exit));
            }
        }
        if inner.unclaimed.len() >= UNCLAIMED_LIMIT {
            if let Some(oldest) = inner.unclaimed.values().map(|e| e.seq).min() {
                inner.unclaimed.retain(|_, e| e.seq != oldest);
            }
        }
        inner.unclaimed.insert(exit.pid, exit);
        None
    }

    /// Registers `owner` for `pid`. An exit of `pid` reaped after `since` (the reaper's mark
    /// taken before the process was spawned) is the owner's: it is returned instead, and the
    /// owner is not registered. An older one belonged to an earlier holder of the pid.
    pub fn claim(&self, pid: i32, owner: T, since: u64) -> Option<Exit> {
        let mut inner = self.lock();
        match inner.unclaimed.remove(&pid) {
            Some(exit) if exit.seq > since => Some(exit),
            _ => {
                inner.owners.insert(pid, (owner, since));
                None
            }
        }
    }

    /// Forgets the owner of `pid`, for a process that is gone without its exit being routed.
    pub fn release(&self, pid: i32) {
        self.lock().owners.remove(&pid);
    }

    #[cfg(test)]
    fn unclaimed_len(&self) -> usize {
        self.lock().unclaimed.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn exit(pid: i32, seq: u64) -> Exit {
        Exit {
            pid,
            status: 0,
            at: SystemTime::now(),
            seq,
        }
    }

    #[test]
    fn an_exit_goes_to_the_owner_of_its_pid_once() {
        let table = ProcessTable::default();
        assert_eq!(table.claim(10, "init", 0), None);
        assert_eq!(table.route(exit(10, 1)).map(|(o, _)| o), Some("init"));
        assert_eq!(table.route(exit(10, 2)), None, "the owner is forgotten");
    }

    #[test]
    fn an_exit_before_the_claim_is_handed_to_the_claimant() {
        let table = ProcessTable::default();
        let since = 4;
        assert_eq!(table.route(exit(20, 5)), None);
        assert_eq!(table.claim(20, "exec", since).map(|e| e.seq), Some(5));
        assert_eq!(
            table.route(exit(20, 6)),
            None,
            "not registered after a handed exit"
        );
    }

    #[test]
    fn an_exit_from_an_earlier_holder_of_the_pid_is_not_the_claimants() {
        let table = ProcessTable::default();
        assert_eq!(table.route(exit(30, 3)), None);
        assert_eq!(table.claim(30, "new", 3), None);
        assert_eq!(table.route(exit(30, 9)).map(|(o, _)| o), Some("new"));
    }

    #[test]
    fn an_exit_reaped_before_the_owner_was_spawned_is_not_its_own() {
        let table = ProcessTable::default();
        assert_eq!(table.claim(40, "new", 7), None);
        assert_eq!(
            table.route(exit(40, 6)),
            None,
            "seen before the owner's mark"
        );
        assert_eq!(table.route(exit(40, 8)).map(|(o, _)| o), Some("new"));
    }

    #[test]
    fn the_unclaimed_exits_are_bounded_and_the_oldest_go_first() {
        let table: ProcessTable<&str> = ProcessTable::default();
        for pid in 0..(UNCLAIMED_LIMIT as i32 + 10) {
            table.route(exit(pid + 1000, pid as u64 + 1));
        }
        assert_eq!(table.unclaimed_len(), UNCLAIMED_LIMIT);
        assert_eq!(table.claim(1000, "old", 0), None, "the oldest was dropped");
        let newest = UNCLAIMED_LIMIT as i32 + 9;
        assert!(table.claim(newest + 1000, "new", 0).is_some());
    }
}
