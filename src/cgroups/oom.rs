//! OOM kills in a container's memory cgroup as they happen: on v1 an eventfd registered on
//! memory.oom_control through cgroup.event_control, on v2 inotify on memory.events and its
//! oom_kill counter. No polling: the watch sleeps until the kernel speaks, and ends when the
//! cgroup goes or the container is deleted.

use super::Cgroup;
use crate::error::{Error, Result};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

pub struct OomWatch {
    source: Source,
    closed: Notify,
}

enum Source {
    V1 {
        eventfd: AsyncFd<OwnedFd>,
        /// The memory cgroup; its removal also signals the eventfd.
        dir: PathBuf,
        /// memory.oom_control, open for as long as the registration lives.
        _control: OwnedFd,
    },
    V2 {
        inotify: AsyncFd<InotifyFd>,
        events: PathBuf,
        /// The oom_kill count already reported.
        seen: AtomicU64,
    },
}

impl OomWatch {
    /// Starts watching; None when the container has no memory cgroup to watch.
    pub fn start(cgroup: &Cgroup) -> Result<Option<OomWatch>> {
        let source = match cgroup {
            Cgroup::V1(paths) => match paths.get("memory") {
                Some(dir) => v1_source(dir)?,
                None => return Ok(None),
            },
            Cgroup::V2(dir) => v2_source(&dir.join("memory.events"))?,
        };
        Ok(Some(OomWatch {
            source,
            closed: Notify::new(),
        }))
    }

    /// Waits for the next OOM kill; false once the cgroup is gone or the watch is closed.
    pub async fn next(&self) -> bool {
        tokio::select! {
            oom = self.next_from_kernel() => oom,
            () = self.closed.notified() => false,
        }
    }

    /// Ends the watch: a waiting `next` returns false, and so does every later one.
    pub fn close(&self) {
        self.closed.notify_one();
    }

    async fn next_from_kernel(&self) -> bool {
        loop {
            let ready = match &self.source {
                Source::V1 { eventfd, .. } => eventfd.readable().await.map(|mut g| g.clear_ready()),
                Source::V2 { inotify, .. } => inotify.readable().await.map(|mut g| g.clear_ready()),
            };
            if ready.is_err() {
                return false;
            }
            match self.check() {
                Check::Oom => return true,
                Check::Gone => return false,
                Check::Nothing => {}
            }
        }
    }

    /// An OOM kill the kernel has told of and nobody has reported yet, without waiting: the
    /// last look before the init's exit is reported, so TaskOOM comes first.
    pub fn take_pending(&self) -> bool {
        matches!(self.check(), Check::Oom)
    }

    /// Consumes what the kernel has said so far.
    fn check(&self) -> Check {
        match &self.source {
            Source::V1 { eventfd, dir, .. } => {
                let mut count = [0u8; 8];
                // SAFETY: reads at most 8 bytes into a buffer of 8 from an fd we own.
                let n = unsafe {
                    libc::read(eventfd.get_ref().as_raw_fd(), count.as_mut_ptr().cast(), 8)
                };
                if n != 8 {
                    // EAGAIN: no event since the last read.
                    return Check::Nothing;
                }
                if dir.is_dir() {
                    Check::Oom
                } else {
                    Check::Gone
                }
            }
            Source::V2 {
                inotify,
                events,
                seen,
            } => {
                let gone = inotify.get_ref().0.read_events().is_ok_and(|evs| {
                    evs.iter()
                        .any(|e| e.mask.contains(AddWatchFlags::IN_IGNORED))
                });
                match read_oom_kills(events) {
                    Some(kills) if kills > seen.load(Ordering::SeqCst) => {
                        seen.store(kills, Ordering::SeqCst);
                        Check::Oom
                    }
                    None => Check::Gone,
                    Some(_) if gone => Check::Gone,
                    Some(_) => Check::Nothing,
                }
            }
        }
    }
}

enum Check {
    Oom,
    Nothing,
    Gone,
}

fn v1_source(dir: &Path) -> Result<Source> {
    let failed = |what: &str, e: std::io::Error| {
        Error::Internal(format!(
            "failed to watch OOM in {}: {what}: {e}",
            dir.display()
        ))
    };
    let control = std::fs::File::open(dir.join("memory.oom_control"))
        .map_err(|e| failed("memory.oom_control", e))?;
    // SAFETY: eventfd takes plain flags and returns a new fd or -1.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(failed("eventfd", std::io::Error::last_os_error()));
    }
    // SAFETY: raw is a new fd that nothing else owns.
    let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
    let registration = format!("{} {}", eventfd.as_raw_fd(), control.as_raw_fd());
    std::fs::write(dir.join("cgroup.event_control"), registration)
        .map_err(|e| failed("cgroup.event_control", e))?;
    Ok(Source::V1 {
        eventfd: register(eventfd).map_err(|e| failed("registering the eventfd", e))?,
        dir: dir.to_path_buf(),
        _control: control.into(),
    })
}

fn v2_source(events: &Path) -> Result<Source> {
    let failed =
        |e: String| Error::Internal(format!("failed to watch OOM in {}: {e}", events.display()));
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
        .map_err(|e| failed(e.to_string()))?;
    inotify
        .add_watch(events, AddWatchFlags::IN_MODIFY)
        .map_err(|e| failed(e.to_string()))?;
    // Kills before the watch began are not this container's news.
    let seen = read_oom_kills(events).unwrap_or(0);
    Ok(Source::V2 {
        inotify: register(InotifyFd(inotify)).map_err(|e| failed(e.to_string()))?,
        events: events.to_path_buf(),
        seen: AtomicU64::new(seen),
    })
}

/// nix's Inotify as the reactor takes it.
struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

fn register<T: AsRawFd>(fd: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: the AsyncFd owns `fd`, so the descriptor stays open and the same for the
    // registration's whole life.
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(|e| e.into_parts().1)
}

/// The oom_kill count of a v2 memory.events file; None when it is gone.
fn read_oom_kills(events: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(events).ok()?;
    Some(
        super::keyed(&text)
            .into_iter()
            .find(|(k, _)| k == "oom_kill")
            .map_or(0, |(_, v)| v),
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::Fixture;
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_v2_oom_kill_is_reported_once_and_older_kills_are_not() {
        let events = "low 0\nhigh 0\nmax 0\noom 1\noom_kill 1\n";
        let fx = Fixture::new("oomv2", &[("memory.events", events)]);
        let rt = runtime();
        rt.block_on(async {
            let watch = OomWatch::start(&Cgroup::V2(fx.0.clone())).unwrap().unwrap();
            assert!(!watch.take_pending(), "a kill before the watch is old news");
            std::fs::write(
                fx.0.join("memory.events"),
                events.replace("kill 1", "kill 2"),
            )
            .unwrap();
            let woke = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
                .await
                .expect("the kernel's inotify wakes the watch");
            assert!(woke);
            assert!(!watch.take_pending(), "reported once");
            std::fs::write(
                fx.0.join("memory.events"),
                events.replace("kill 1", "kill 3"),
            )
            .unwrap();
            assert!(watch.take_pending(), "the last look before an exit sees it");
            watch.close();
            assert!(!watch.next().await, "a closed watch ends");
        });
    }

    #[test]
    fn a_v2_watch_ends_when_the_cgroup_goes() {
        let fx = Fixture::new("oomv2gone", &[("memory.events", "oom_kill 0\n")]);
        let rt = runtime();
        rt.block_on(async {
            let watch = OomWatch::start(&Cgroup::V2(fx.0.clone())).unwrap().unwrap();
            std::fs::remove_file(fx.0.join("memory.events")).unwrap();
            let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next());
            assert!(!next.await.expect("removal wakes the watch"));
        });
    }
}
