//! Busy streams' copies, on one thread of their own.
//!
//! The event loop is woken through epoll, and a pipe that epoll watches wakes its watcher at
//! every write into it, whatever the copy is waiting for: a process streaming into a full
//! client FIFO wakes the shim at each of its writes, for nothing, on top of the wake-up at
//! each read of the client. poll(2) waits only on the ends it is given, for that call alone,
//! so a copy that waits in poll on the one end it lacks is woken only by that end. Measured
//! under ctr 1.6 (4 GiB of stdout, six rounds each, medians of the shim's CPU per GiB): 310
//! ms in the event loop, 270 ms here, where a blocking splice on a thread per stream took
//! 271. A copy moves here only once it is busy (see `copy::Busy`): an exec's few bytes and
//! an idle container's quiet streams stay in the event loop, and a copy that goes quiet
//! comes back to it. The thread serves every busy stream of the shim (not a thread per
//! stream), and ends when none is left, so an idle shim is one thread.

use super::copy::CHUNK;
use nix::errno::Errno;
use nix::fcntl::{splice, OFlag, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Enough for the loop below, whose frames are a few hundred bytes.
const STACK: usize = 64 << 10;

/// A copy handed to the relay thread. Dropping it stops the copy, which then closes both
/// ends, as dropping a copy in the event loop does.
pub struct Relay {
    done: oneshot::Receiver<Outcome>,
    /// The thread also waits on the other end of this pipe: closing it (dropping the Relay)
    /// ends the copy.
    _stop: OwnedFd,
}

/// How a copy left the relay thread.
pub enum Handed {
    /// At the source's end of file, with the bytes moved here and the destination.
    Ended(u64, OwnedFd),
    /// Quiet from one sweep to the next (`QUIET` apart): back to the event loop, with the
    /// bytes moved here, the source and the destination.
    Quiet(u64, OwnedFd, OwnedFd),
}

type Outcome = io::Result<Handed>;

/// A copy that moves nothing for this long goes back to the event loop, so that a container
/// that streamed once and went quiet does not keep a thread for the rest of its life.
const QUIET: Duration = Duration::from_secs(1);

/// The room an output copy's pipes (the process's and the client's FIFO) get while on the
/// thread, and give back when they leave it: the most an unprivileged process may ask for by
/// default. Measured against 256 KiB, in four paired runs of scripts/bench/shimbench.sh
/// (five rounds each): stdout 0.96 to 1.41 times as fast (median 1.24) with 0.70 to 1.05 of
/// the shim's CPU per GiB (median 0.83), and stdin through cat 1.07 to 1.22 times as fast,
/// its output copy being one of these. Input copies keep their room: widened as well, stdin
/// gained only 1.01 and 1.04 (two runs).
/// Pages are taken only while bytes wait in a pipe, but an unprivileged user's pipe quota
/// counts the room, hence the giving back (see `Rooms`).
const ROOM: libc::c_int = 1 << 20;

/// The room an output copy's pipes had before its first turn on the thread: what they get
/// back at each exit from it, and at the copy's end. A pipe whose bytes fill more slots than
/// that cannot be narrowed (the kernel refuses, keeping every byte): a copy that went quiet
/// because its reader stopped keeps the wider FIFO until the next exit or its end, when the
/// FIFO has been read (see `copy::splice_to_fifo`). Pipes that had `ROOM` or more (a client
/// may have widened its FIFO) are left alone.
#[derive(Clone, Copy, Debug)]
pub struct Rooms {
    src: Option<libc::c_int>,
    dst: Option<libc::c_int>,
}

impl Rooms {
    pub fn of(src: &OwnedFd, dst: &OwnedFd) -> Rooms {
        Rooms {
            src: super::room(src),
            dst: super::room(dst),
        }
    }

    fn widen(&self, src: &OwnedFd, dst: &OwnedFd) {
        for (fd, room) in [(src, self.src), (dst, self.dst)] {
            if room.is_some_and(|room| room < ROOM) {
                super::set_room(fd, ROOM);
            }
        }
    }

    /// Gives the room back to those given (best effort: see above).
    pub fn give_back(&self, src: Option<&OwnedFd>, dst: Option<&OwnedFd>) {
        for (fd, room) in [(src, self.src), (dst, self.dst)] {
            if let (Some(fd), Some(room)) = (fd, room.filter(|&room| room < ROOM)) {
                super::set_room(fd, room);
            }
        }
    }
}

/// One copy as the thread holds it.
struct Stream {
    src: OwnedFd,
    dst: OwnedFd,
    stop: OwnedFd,
    progress: Arc<AtomicU64>,
    moved: u64,
    /// `moved` at the last sweep for quiet copies.
    swept: u64,
    done: oneshot::Sender<Outcome>,
    /// The end it waits for; None while it should try to move bytes.
    waits: Option<End>,
    /// The end that lacked last: the one to wait for after the next short splice.
    guess: End,
    /// Whether the end it waited for has just turned ready.
    woke: bool,
    /// An output copy's room, to give back as it leaves; None for an input copy.
    rooms: Option<Rooms>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum End {
    Src,
    Dst,
}

/// Copies handed over and not yet taken by the thread, and whether the thread runs.
#[derive(Default)]
struct Handover {
    new: Vec<Stream>,
    running: bool,
}

struct Shared {
    handover: Mutex<Handover>,
    /// Written to when a copy is handed over, so the thread's poll returns.
    wake_r: OwnedFd,
    wake_w: OwnedFd,
}

fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let (wake_r, wake_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
            Some(Shared {
                handover: Mutex::default(),
                wake_r,
                wake_w,
            })
        })
        .as_ref()
}

fn lock(shared: &Shared) -> MutexGuard<'_, Handover> {
    shared.handover.lock().unwrap_or_else(|e| e.into_inner())
}

impl Relay {
    /// Hands the copy from `src` to `dst` (non-blocking pipes or FIFOs) to the relay thread,
    /// starting it if it is not running; the bytes moved are added to `progress`. An output
    /// copy (`rooms` given) has `ROOM` while there. Gives both ends back when no thread can
    /// be started.
    pub fn spawn(
        src: OwnedFd,
        dst: OwnedFd,
        progress: Arc<AtomicU64>,
        rooms: Option<Rooms>,
    ) -> Result<Relay, (OwnedFd, OwnedFd)> {
        let Some(shared) = shared() else {
            return Err((src, dst));
        };
        let Ok((stop, stop_w)) = nix::unistd::pipe2(OFlag::O_CLOEXEC) else {
            return Err((src, dst));
        };
        if let Some(rooms) = rooms {
            rooms.widen(&src, &dst);
        }
        let (done_tx, done) = oneshot::channel();
        let stream = Stream {
            src,
            dst,
            stop,
            progress,
            moved: 0,
            swept: u64::MAX, // a sweep for quiet copies first takes note of it
            done: done_tx,
            waits: None,
            guess: End::Src,
            woke: false,
            rooms,
        };
        let mut handover = lock(shared);
        handover.new.push(stream);
        if handover.running {
            // A full wake pipe already has the thread's attention.
            let _ = nix::unistd::write(&shared.wake_w, &[1]);
        } else {
            let started = std::thread::Builder::new()
                .name("stdio-relay".into())
                .stack_size(STACK)
                .spawn(move || serve(shared));
            if started.is_err() {
                let stream = handover.new.pop().expect("pushed above");
                stream.give_room_back();
                return Err((stream.src, stream.dst));
            }
            handover.running = true;
        }
        Ok(Relay {
            done,
            _stop: stop_w,
        })
    }

    /// Waits until the copy leaves the thread: at the source's end of file (the caller may
    /// still need the destination: an output FIFO is kept until its reader has taken all), or
    /// gone quiet.
    pub async fn finish(self) -> io::Result<Handed> {
        let Relay { done, _stop } = self;
        done.await
            .map_err(|_| io::Error::other("the relay thread dropped the copy"))?
    }
}

/// The relay thread: moves what can be moved, then waits in one poll for the ends that lack,
/// the copies' stops and new copies; ends when no copy is left.
fn serve(shared: &Shared) {
    let mut streams: Vec<Stream> = Vec::new();
    // Which entries of the poll set woke; kept across wake-ups, one comes per 32 KiB moved.
    let mut woke: Vec<bool> = Vec::new();
    let mut last_sweep = Instant::now();
    loop {
        {
            let mut handover = lock(shared);
            streams.append(&mut handover.new);
            if streams.is_empty() {
                handover.running = false;
                return;
            }
        }
        let mut i = 0;
        while i < streams.len() {
            match pump(&mut streams[i]) {
                Ok(Some(())) => i += 1,
                Ok(None) => {
                    let s = streams.swap_remove(i);
                    s.give_room_back();
                    let _ = s.done.send(Ok(Handed::Ended(s.moved, s.dst)));
                }
                Err(e) => {
                    let s = streams.swap_remove(i);
                    s.give_room_back();
                    let _ = s.done.send(Err(e));
                }
            }
        }
        if streams.is_empty() {
            continue; // to end, unless a copy came meanwhile
        }
        // Sized at once: the wake pipe, and a stop and at most one end per copy.
        let mut fds = Vec::with_capacity(1 + 2 * streams.len());
        fds.push(PollFd::new(shared.wake_r.as_fd(), PollFlags::POLLIN));
        for s in &streams {
            fds.push(PollFd::new(s.stop.as_fd(), PollFlags::POLLIN));
            match s.waits {
                Some(End::Src) => fds.push(PollFd::new(s.src.as_fd(), PollFlags::POLLIN)),
                Some(End::Dst) => fds.push(PollFd::new(s.dst.as_fd(), PollFlags::POLLOUT)),
                None => {}
            }
        }
        let timeout = PollTimeout::try_from(QUIET).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => {
                // Not expected (the set is small and valid); stop every copy rather than spin.
                let e = io::Error::from(e);
                for s in streams.drain(..) {
                    s.give_room_back();
                    let _ = s.done.send(Err(io::Error::new(e.kind(), e.to_string())));
                }
                continue;
            }
        }
        woke.clear();
        woke.extend(
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty())),
        );
        drop(fds);
        if woke[0] {
            let mut sink = [0u8; 64];
            let wake_r = std::os::fd::AsRawFd::as_raw_fd(&shared.wake_r);
            while matches!(nix::unistd::read(wake_r, &mut sink), Ok(n) if n > 0) {}
        }
        // The same walk as above, to tell each copy's results apart.
        let mut k = 1;
        let mut stopped = Vec::new();
        for (i, s) in streams.iter_mut().enumerate() {
            if woke[k] {
                stopped.push(i);
            }
            k += 1;
            if s.waits.is_some() {
                if woke[k] {
                    s.waits = None;
                    s.woke = true;
                }
                k += 1;
            }
        }
        // Stopped copies are dropped, which closes their ends; nobody waits for them.
        for i in stopped.into_iter().rev() {
            streams.swap_remove(i).give_room_back();
        }
        if last_sweep.elapsed() >= QUIET {
            last_sweep = Instant::now();
            let mut i = 0;
            while i < streams.len() {
                let s = &mut streams[i];
                if s.moved != s.swept || s.waits.is_none() {
                    s.swept = s.moved;
                    i += 1;
                    continue;
                }
                let s = streams.swap_remove(i);
                s.give_room_back();
                let _ = s.done.send(Ok(Handed::Quiet(s.moved, s.src, s.dst)));
            }
        }
    }
}

/// Moves what `s` can move now. None at the source's end of file; otherwise sets the end to
/// wait for in `s.waits`.
///
/// Which end lacks is guessed, not asked: asking takes a poll of its own at each wake-up,
/// and a wake-up is one 32 KiB read of the client or write of the process (a third of the
/// system calls). A short splice keeps the guess (a stream's bottleneck seldom moves); a
/// splice that moves nothing right after a wake-up proves it wrong (the end waited for is
/// ready, so the other one lacks), and the other end is waited for.
fn pump(s: &mut Stream) -> io::Result<Option<()>> {
    if s.waits.is_some() {
        return Ok(Some(()));
    }
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    let woke = std::mem::take(&mut s.woke);
    loop {
        match splice(&s.src, None, &s.dst, None, CHUNK, flags) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                s.moved += n as u64;
                s.progress.fetch_add(n as u64, Ordering::Relaxed);
                if n == CHUNK {
                    continue;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) if woke => {
                s.guess = match s.guess {
                    End::Src => End::Dst,
                    End::Dst => End::Src,
                };
            }
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e.into()),
        }
        s.waits = Some(s.guess);
        return Ok(Some(()));
    }
}

impl Stream {
    /// Gives an output copy's room back as it leaves the thread, whichever way.
    fn give_room_back(&self) {
        if let Some(rooms) = self.rooms {
            rooms.give_back(Some(&self.src), Some(&self.dst));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::{pipe2, read, write};

    #[tokio::test]
    async fn an_output_copy_has_more_room_on_the_thread_and_gives_it_back() {
        for output in [true, false] {
            let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
            let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
            let before = Rooms::of(&src_r, &dst_w);
            assert!(before.src < Some(ROOM) && before.dst < Some(ROOM));
            let rooms = output.then_some(before);
            let Ok(relay) = Relay::spawn(src_r, dst_w, Arc::new(AtomicU64::new(0)), rooms) else {
                panic!("no relay thread");
            };
            let there = (super::super::room(&src_w), super::super::room(&dst_r));
            if output {
                assert_eq!(
                    there,
                    (Some(ROOM), Some(ROOM)),
                    "an output copy's room there"
                );
            } else {
                assert_eq!(
                    there,
                    (before.src, before.dst),
                    "an input copy keeps its room"
                );
            }
            write(&src_w, b"bytes").unwrap();
            // The end of file. A test thread held up for two sweeps would see the copy handed
            // back quiet: the room comes back either way.
            drop(src_w);
            let (moved, dst) = match relay.finish().await {
                Ok(Handed::Ended(moved, dst)) => (moved, dst),
                Ok(Handed::Quiet(moved, _, dst)) => (moved, dst),
                Err(e) => panic!("{e}"),
            };
            assert!(moved <= 5);
            assert_eq!(super::super::room(&dst), before.dst, "the room given back");
            if moved == 5 {
                let mut got = [0u8; 8];
                let n = read(std::os::fd::AsRawFd::as_raw_fd(&dst_r), &mut got).unwrap();
                assert_eq!(&got[..n], b"bytes");
            }
        }
    }
}
