//! Moving bytes between two pipes (a runc pipe and a client FIFO) with splice(2), so each byte
//! is copied once, inside the kernel (invariant 7).

use super::relay::{Handed, Relay, Rooms};
use nix::fcntl::{splice, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub(super) const CHUNK: usize = 1 << 20;

/// Copies from `src` to `dst` until `src` reports end of file, then closes both (so the reader
/// of `dst` sees the end too); returns the bytes moved and adds them to `progress` as they go.
/// Both must be non-blocking pipes or FIFOs. This is a client's input going to a process,
/// which mostly reads as fast as the client writes: see `Stall`.
pub async fn splice_all(src: OwnedFd, dst: OwnedFd, progress: &Arc<AtomicU64>) -> io::Result<u64> {
    copy(src, dst, progress, Stall::WaitForEither, Busy::new())
        .await
        .map(|copied| copied.bytes)
}

/// As `splice_all`, into a client's output FIFO, which is kept open until its reader has taken
/// what is in it: a FIFO's bytes vanish when its last holder closes it, and the client may not
/// have opened its end yet (a busy `ctr exec` opens it late).
pub async fn splice_to_fifo(
    src: OwnedFd,
    fifo: OwnedFd,
    progress: &Arc<AtomicU64>,
) -> io::Result<u64> {
    let copied = copy(src, fifo, progress, Stall::Ask, Busy::new()).await?;
    until_read(&copied.dst).await;
    if let Some(rooms) = copied.rooms {
        rooms.give_back(None, Some(&copied.dst)); // now that it is read, it can be narrowed
    }
    Ok(copied.bytes)
}

/// What a finished copy leaves.
struct Copied {
    bytes: u64,
    dst: OwnedFd,
    /// How many times the copy moved to the relay thread on the way.
    #[cfg_attr(not(test), allow(dead_code))] // what the tests check
    relayed: u32,
    /// An output copy's room before the relay thread widened it, if it went there.
    rooms: Option<Rooms>,
}

/// Copies in the event loop while the stream is calm, on the relay thread while it is busy
/// (`busy` tells; the thread hands a copy back once it goes quiet), and on here when no thread
/// can be had.
async fn copy(
    mut src: OwnedFd,
    mut dst: OwnedFd,
    progress: &Arc<AtomicU64>,
    stall: Stall,
    mut busy: Busy,
) -> io::Result<Copied> {
    let (mut bytes, mut relayed) = (0, 0);
    // An output's reader is the client, which lags (see `Stall::Ask`): its pipes get more
    // room on the relay thread, and this is the room they had before their first turn there.
    let mut rooms: Option<Rooms> = None;
    loop {
        let (events_src, events_dst) = (
            register(src, Interest::READABLE)?,
            register(dst, Interest::WRITABLE)?,
        );
        bytes += splice_loop(&events_src, &events_dst, progress, stall, &mut busy).await?;
        // Out of epoll either way: a registered pipe would still wake the event loop.
        (src, dst) = (events_src.into_inner(), events_dst.into_inner());
        if !busy.is_busy() {
            return Ok(Copied {
                bytes,
                dst,
                relayed,
                rooms,
            });
        }
        if matches!(stall, Stall::Ask) && rooms.is_none() {
            rooms = Some(Rooms::of(&src, &dst));
        }
        match Relay::spawn(src, dst, progress.clone(), rooms) {
            Ok(relay) => {
                relayed += 1;
                match relay.finish().await? {
                    Handed::Ended(moved, dst) => {
                        return Ok(Copied {
                            bytes: bytes + moved,
                            dst,
                            relayed,
                            rooms,
                        })
                    }
                    Handed::Quiet(moved, back_src, back_dst) => {
                        bytes += moved;
                        (src, dst) = (back_src, back_dst);
                        busy = busy.renewed();
                    }
                }
            }
            Err(back) => {
                log::debug!("no thread for a busy copy; it stays in the event loop");
                (src, dst) = back;
                busy = Busy::never();
            }
        }
    }
}

/// When a copy counts as busy: it moved `BUSY_BYTES` within `BUSY_WINDOW`. A person typing,
/// an exec's reply or a chatty log stays below; a stream that fills the pipes (megabytes in
/// milliseconds) does not, and is the one whose wake-ups cost.
struct Busy {
    limit: u64,
    since: Instant,
    moved: u64,
    busy: bool,
}

const BUSY_BYTES: u64 = 8 << 20;
const BUSY_WINDOW: Duration = Duration::from_secs(1);

impl Busy {
    fn new() -> Busy {
        Busy::with_limit(BUSY_BYTES)
    }

    fn never() -> Busy {
        Busy::with_limit(u64::MAX)
    }

    fn with_limit(limit: u64) -> Busy {
        Busy {
            limit,
            since: Instant::now(),
            moved: 0,
            busy: false,
        }
    }

    /// Counts `n` bytes moved; true once the copy is busy.
    fn count(&mut self, n: u64) -> bool {
        self.moved = self.moved.saturating_add(n);
        if self.moved >= self.limit {
            if self.since.elapsed() < BUSY_WINDOW {
                self.busy = true;
            } else {
                self.since = Instant::now();
                self.moved = 0;
            }
        }
        self.busy
    }

    fn is_busy(&self) -> bool {
        self.busy
    }

    /// The same measure, from now on.
    fn renewed(&self) -> Busy {
        Busy::with_limit(self.limit)
    }
}

/// Waits until nothing is left unread in the FIFO `fd`. Polled with a growing interval: this
/// is the end of a stream, and nothing tells a writer that its FIFO has been emptied.
pub async fn until_read(fd: &OwnedFd) {
    let mut interval = std::time::Duration::from_millis(2);
    loop {
        let mut unread: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                libc::FIONREAD,
                &mut unread,
            )
        };
        if rc != 0 || unread == 0 {
            return;
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(std::time::Duration::from_secs(1));
    }
}

/// What a copy does when a splice moves less than asked: the source ran dry, or the
/// destination filled up. Measured with scripts/bench.sh (stdout 1 GiB, stdin 256 MiB), both
/// ways side by side in each of two runs; run to run, the figures move by up to 15%.
#[derive(Clone, Copy)]
enum Stall {
    /// Ask which, in one poll, and wait for that end only. An output's reader is the client,
    /// often slower than the process (ctr copies 32 KiB at a time), so its FIFO is full and
    /// the copy wakes once per read; waiting for either end would also wake it, for nothing,
    /// at each write of the process (shim CPU per GiB of stdout +13% and +23%).
    Ask,
    /// After a splice that moved bytes, wait for the next change of either end and let the
    /// next splice tell. An input's reader is the process, which mostly keeps up, so the
    /// source running dry is the usual stall; not asking saves a poll per wake-up, that is
    /// per write of the client (stdin through cat +6% and +10% MiB/s, with less shim CPU).
    /// After a splice that moved nothing it asks, as `Ask` does: an end that stays ready
    /// (a process that closed its stdin while the client's FIFO stays open and empty) would
    /// otherwise wake the copy again at once, for ever.
    WaitForEither,
}

async fn splice_loop(
    src: &AsyncFd<OwnedFd>,
    dst: &AsyncFd<OwnedFd>,
    progress: &AtomicU64,
    stall: Stall,
    busy: &mut Busy,
) -> io::Result<u64> {
    let mut total = 0u64;
    let flags = SpliceFFlags::SPLICE_F_NONBLOCK | SpliceFFlags::SPLICE_F_MOVE;
    loop {
        let readable = match stall {
            Stall::Ask => Some(src.readable().await?),
            // Woken by either end: the splice tells whether the source has bytes.
            Stall::WaitForEither => None,
        };
        let moved = match splice(src.get_ref(), None, dst.get_ref(), None, CHUNK, flags) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                total += n as u64;
                progress.fetch_add(n as u64, Ordering::Relaxed);
                if busy.count(n as u64) {
                    return Ok(total);
                }
                if n == CHUNK {
                    continue;
                }
                true
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => false,
            Err(e) => return Err(e.into()),
        };
        match (stall, readable) {
            (Stall::Ask, Some(mut readable)) => match readiness(src.get_ref(), dst.get_ref())? {
                (false, _) => readable.clear_ready(),
                (true, true) => {}
                (true, false) => {
                    drop(readable);
                    wait_writable(dst).await?;
                }
            },
            _ if moved => until_changed(Some(src), Some(dst)).await?,
            _ => match readiness(src.get_ref(), dst.get_ref())? {
                (false, _) => until_changed(Some(src), None).await?,
                (true, true) => {}
                (true, false) => until_changed(None, Some(dst)).await?,
            },
        }
    }
}

/// Waits until `src` turns readable or `dst` writable (those given) after this call, not
/// before.
///
/// Everything tokio has recorded so far was seen by the splice or poll just made (nothing
/// runs the I/O driver between them and here), so it is forgotten; a pipe then signals each
/// change that matters, as epoll is edge-triggered: a write into the source (each one wakes
/// its epoll readers), a read from a full destination, or a hang-up or error, which tokio
/// keeps ready for good.
async fn until_changed(
    src: Option<&AsyncFd<OwnedFd>>,
    dst: Option<&AsyncFd<OwnedFd>>,
) -> io::Result<()> {
    let mut forgotten = false;
    std::future::poll_fn(|cx| {
        if !forgotten {
            forgotten = true;
            if let Some(Poll::Ready(guard)) = src.map(|fd| fd.poll_read_ready(cx)) {
                guard?.clear_ready();
            }
            if let Some(Poll::Ready(guard)) = dst.map(|fd| fd.poll_write_ready(cx)) {
                guard?.clear_ready();
            }
        }
        let read = src.map(|fd| fd.poll_read_ready(cx).map_ok(drop));
        let write = dst.map(|fd| fd.poll_write_ready(cx).map_ok(drop));
        match (read, write) {
            (Some(Poll::Ready(ready)), _) | (_, Some(Poll::Ready(ready))) => Poll::Ready(ready),
            _ => Poll::Pending,
        }
    })
    .await
}

/// Whether `src` has bytes to read and `dst` room to write, in one poll (hang-up and error
/// count as ready: the next splice reports them).
fn readiness(src: &OwnedFd, dst: &OwnedFd) -> io::Result<(bool, bool)> {
    let mut fds = [
        PollFd::new(src.as_fd(), PollFlags::POLLIN),
        PollFd::new(dst.as_fd(), PollFlags::POLLOUT),
    ];
    poll(&mut fds, PollTimeout::ZERO)?;
    let got = |fd: &PollFd, events: PollFlags| {
        let revents = fd.revents().unwrap_or(PollFlags::empty());
        revents.intersects(events | PollFlags::POLLHUP | PollFlags::POLLERR)
    };
    Ok((
        got(&fds[0], PollFlags::POLLIN),
        got(&fds[1], PollFlags::POLLOUT),
    ))
}

/// Copies from the pipe `src` into the regular file `dst` until `src` reports end of file.
/// splice(2) refuses files opened for appending (EINVAL), and appending is what keeps other
/// writers of the same log intact, so this one reads and writes through a buffer. A file
/// cannot be polled (it is always ready), and a write to one on a hung or full filesystem
/// blocks: the pipe is waited on here, each write runs on the blocking pool, so a stuck log
/// stalls only its own copy, never the thread that serves requests and reaps.
pub async fn append_to_file(src: OwnedFd, dst: OwnedFd, progress: &AtomicU64) -> io::Result<u64> {
    let src = register(src, Interest::READABLE)?;
    let file = std::sync::Arc::new(std::fs::File::from(dst));
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        let mut readable = src.readable().await?;
        match nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(src.get_ref()), &mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => {
                let file = file.clone();
                let (back, written) = tokio::task::spawn_blocking(move || {
                    let written = std::io::Write::write_all(&mut &*file, &buf[..n]);
                    (buf, written)
                })
                .await
                .map_err(io::Error::other)?;
                buf = back;
                written?;
                total += n as u64;
                progress.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) => readable.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the OwnedFd, so the descriptor stays open and the same for the
    // registration's whole life.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

async fn wait_writable(dst: &AsyncFd<OwnedFd>) -> io::Result<()> {
    loop {
        let mut guard = dst.writable().await?;
        if ready(dst.get_ref(), PollFlags::POLLOUT)? {
            return Ok(());
        }
        guard.clear_ready();
    }
}

/// Whether `fd` is ready for `events` right now (hang-up and error count as ready: the next
/// splice reports them).
fn ready(fd: &OwnedFd, events: PollFlags) -> io::Result<bool> {
    let mut fds = [PollFd::new(fd.as_fd(), events)];
    poll(&mut fds, PollTimeout::ZERO)?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    Ok(revents.intersects(events | PollFlags::POLLHUP | PollFlags::POLLERR))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use nix::unistd::pipe2;
    use std::io::{Read, Write};
    use std::os::unix::fs::OpenOptionsExt;

    #[tokio::test]
    async fn copies_every_byte_through_a_slow_reader() {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(src_w);
            set_blocking(&f);
            f.write_all(&data).unwrap();
        });
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(dst_r);
            set_blocking(&f);
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                std::thread::sleep(std::time::Duration::from_micros(20));
                match f.read(&mut buf).unwrap() {
                    0 => break got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let progress = Arc::new(AtomicU64::new(0));
        let n = splice_all(src_r, dst_w, &progress).await.unwrap();
        assert_eq!(progress.load(Ordering::Relaxed), n);
        writer.join().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(n as usize, expected.len());
        assert!(got == expected, "copied bytes differ");
    }

    #[tokio::test]
    async fn a_copy_waiting_on_a_slow_writer_sees_each_write_and_the_end() {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        // Each write finds the copy asleep on an empty source; the last one is followed at
        // once by the hang-up, which must end the copy with every byte through.
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(src_w);
            set_blocking(&f);
            for i in 0..50u8 {
                f.write_all(&[i; 1000]).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(dst_r);
            set_blocking(&f);
            let mut got = Vec::new();
            f.read_to_end(&mut got).unwrap();
            got
        });
        let progress = Arc::new(AtomicU64::new(0));
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            splice_all(src_r, dst_w, &progress),
        )
        .await
        .expect("the copy ends at the writer's hang-up")
        .unwrap();
        writer.join().unwrap();
        let got = reader.join().unwrap();
        assert_eq!(n, 50_000);
        let expected: Vec<u8> = (0..50u8).flat_map(|i| [i; 1000]).collect();
        assert!(got == expected, "copied bytes differ");
    }

    #[tokio::test]
    async fn an_input_whose_reader_left_waits_without_spinning() {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        // The process closed its stdin; the client's FIFO stays open and empty: the error of
        // the destination stays ready, and must not wake the copy over and over.
        drop(dst_r);
        let progress = Arc::new(AtomicU64::new(0));
        let copy = splice_all(src_r, dst_w, &progress);
        tokio::pin!(copy);
        let before = thread_cpu();
        let waited = tokio::time::timeout(std::time::Duration::from_millis(300), &mut copy).await;
        assert!(waited.is_err(), "nothing to copy yet: the copy waits");
        let spent = thread_cpu() - before;
        assert!(
            spent < std::time::Duration::from_millis(100),
            "waiting 300 ms cost {spent:?} of CPU"
        );
        // The next bytes find no reader: the copy ends with the error.
        nix::unistd::write(&src_w, b"late").unwrap();
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), copy).await;
        assert!(matches!(ended, Ok(Err(_))), "{ended:?}");
    }

    /// Streams `len` patterned bytes through `copy` from a blocking writer to a blocking
    /// reader that takes 32 KiB at a time, as ctr does, the writer pausing halfway if asked;
    /// returns the bytes the copy moved, how often it moved to the relay thread, and whether
    /// the reader got every byte in order.
    async fn stream(
        len: usize,
        stall: Stall,
        busy: Busy,
        pause: Option<Duration>,
    ) -> (u64, u32, bool) {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let data: Vec<u8> = (0..len as u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = data.clone();
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(src_w);
            set_blocking(&f);
            let (first, second) = data.split_at(len / 2);
            first.chunks(64 << 10).for_each(|c| f.write_all(c).unwrap());
            if let Some(pause) = pause {
                std::thread::sleep(pause);
            }
            second
                .chunks(64 << 10)
                .for_each(|c| f.write_all(c).unwrap());
        });
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(dst_r);
            set_blocking(&f);
            let mut got = Vec::with_capacity(len);
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match f.read(&mut buf).unwrap() {
                    0 => break got,
                    n => got.extend_from_slice(&buf[..n]),
                }
            }
        });
        let progress = Arc::new(AtomicU64::new(0));
        let copied = copy(src_r, dst_w, &progress, stall, busy).await.unwrap();
        assert_eq!(progress.load(Ordering::Relaxed), copied.bytes);
        writer.join().unwrap();
        let Copied {
            bytes,
            dst,
            relayed,
            ..
        } = copied;
        drop(dst); // the reader's end of file
        let got = reader.join().unwrap();
        (bytes, relayed, got == expected)
    }

    #[tokio::test]
    async fn a_busy_stream_moves_to_a_thread_of_its_own_and_loses_no_byte() {
        for stall in [Stall::Ask, Stall::WaitForEither] {
            let len = 40 << 20;
            let (bytes, relayed, intact) = stream(len, stall, Busy::new(), None).await;
            assert_eq!(relayed, 1, "40 MiB at full speed counts as busy");
            assert_eq!(bytes, len as u64);
            assert!(intact, "copied bytes differ");
        }
    }

    #[tokio::test]
    async fn an_output_fifo_left_full_gets_its_room_back_once_read() {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let before = super::super::room(&dst_r);
        let (probe, watch) = (dst_r.try_clone().unwrap(), dst_r.try_clone().unwrap());
        let len = 24 << 20;
        let writer = std::thread::spawn(move || {
            let mut f = std::fs::File::from(src_w);
            set_blocking(&f);
            let chunk = vec![7u8; 64 << 10];
            for _ in 0..len / chunk.len() {
                f.write_all(&chunk).unwrap();
            }
        });
        // A reader that lags, as ctr does, so the FIFO is full when the process ends: too full
        // to be narrowed as the copy leaves the relay thread. The widest room it saw is kept.
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::from(dst_r);
            set_blocking(&f);
            let (mut got, mut widest) = (0, 0);
            let mut buf = vec![0u8; 32 << 10];
            loop {
                widest = widest.max(super::super::room(&watch).unwrap_or(0));
                match f.read(&mut buf).unwrap() {
                    0 => break (got, widest),
                    n => got += n,
                }
                std::thread::sleep(Duration::from_micros(500));
            }
        });
        let progress = Arc::new(AtomicU64::new(0));
        let n = splice_to_fifo(src_r, dst_w, &progress).await.unwrap();
        assert_eq!(n, len as u64);
        assert_eq!(
            super::super::room(&probe),
            before,
            "the room given back once read"
        );
        drop(probe);
        writer.join().unwrap();
        let (got, widest) = reader.join().unwrap();
        assert_eq!(got, len);
        assert!(
            widest > before.unwrap(),
            "the copy never had more room: {widest}"
        );
    }

    #[tokio::test]
    async fn busy_streams_share_one_relay_thread_which_ends_with_them() {
        let relays = || {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
                .filter(|comm| comm.trim() == "stdio-relay")
                .count()
        };
        let watching = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let watcher = {
            let watching = watching.clone();
            std::thread::spawn(move || {
                let mut most = 0;
                while watching.load(Ordering::Relaxed) {
                    most = most.max(relays());
                    std::thread::sleep(Duration::from_millis(1));
                }
                most
            })
        };
        let len = 40 << 20;
        let (a, b, c) = tokio::join!(
            stream(len, Stall::Ask, Busy::new(), None),
            stream(len, Stall::Ask, Busy::new(), None),
            stream(len, Stall::WaitForEither, Busy::new(), None),
        );
        watching.store(false, Ordering::Relaxed);
        let most = watcher.join().unwrap();
        for (bytes, relayed, intact) in [a, b, c] {
            assert!(relayed == 1 && bytes == len as u64 && intact);
        }
        assert_eq!(most, 1, "threads named stdio-relay at most at once");
        // Other tests' copies may still use it for a moment.
        let deadline = Instant::now() + Duration::from_secs(20);
        while relays() > 0 {
            assert!(
                Instant::now() < deadline,
                "the relay thread outlives its copies"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[tokio::test]
    async fn a_busy_stream_gone_quiet_comes_back_to_the_event_loop() {
        // 40 MiB at once, three quiet seconds, 40 MiB again: two turns on the relay thread,
        // the event loop in between, every byte through in order.
        let len = 80 << 20;
        let pause = Some(Duration::from_secs(3));
        let (bytes, relayed, intact) = stream(len, Stall::Ask, Busy::new(), pause).await;
        assert_eq!(relayed, 2, "turns on the relay thread");
        assert!(bytes == len as u64 && intact, "copied bytes differ");
    }

    #[tokio::test]
    async fn a_stream_below_the_busy_rate_stays_in_the_event_loop() {
        let (bytes, relayed, intact) = stream(3 << 20, Stall::Ask, Busy::new(), None).await;
        assert_eq!(relayed, 0);
        assert!(bytes == 3 << 20 && intact, "copied bytes differ");
        let (bytes, relayed, intact) = stream(20 << 20, Stall::Ask, Busy::never(), None).await;
        assert_eq!(relayed, 0);
        assert!(bytes == 20 << 20 && intact, "copied bytes differ");
    }

    #[test]
    fn busy_means_the_limit_within_the_window() {
        let mut busy = Busy::with_limit(100);
        assert!(!busy.count(60));
        assert!(busy.count(60), "120 bytes at once");
        let mut slow = Busy::with_limit(100);
        slow.since = Instant::now() - BUSY_WINDOW * 2;
        assert!(!slow.count(120), "120 bytes over two windows");
        assert_eq!(slow.moved, 0, "a new window starts");
        assert!(slow.count(120), "then 120 bytes at once");
    }

    #[tokio::test]
    async fn a_stopped_relay_closes_both_ends() {
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let (dst_r, dst_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        let room = nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&dst_w),
            nix::fcntl::FcntlArg::F_GETPIPE_SZ,
        )
        .unwrap() as usize;
        let relay = match Relay::spawn(src_r, dst_w, Arc::new(AtomicU64::new(0)), None) {
            Ok(relay) => relay,
            Err(_) => panic!("no thread"),
        };
        // Fill the destination and leave more waiting: the thread sleeps on the full end.
        let mut src_w = std::fs::File::from(src_w);
        let mut written = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while written < room + 4096 && Instant::now() < deadline {
            match src_w.write(&[1u8; 4096]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(written, room + 4096);
        // The stop comes once the thread has filled the destination, not while it still moves
        // bytes (under a loaded machine the writes above can outrun it).
        let deadline = Instant::now() + Duration::from_secs(5);
        while waiting_in(&dst_r) < room {
            assert!(
                Instant::now() < deadline,
                "the relay never filled the destination"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(relay);
        let mut dst_r = std::fs::File::from(dst_r);
        let mut got = 0;
        let mut buf = [0u8; 4096];
        loop {
            match dst_r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the destination stays open");
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, room, "what was moved before the stop is there");
        let closed = loop {
            match src_w.write(&[2u8; 1]) {
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => break true,
                _ if Instant::now() > deadline => break false,
                _ => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        assert!(closed, "the source stays open");
    }

    /// Bytes waiting in the pipe behind `fd`.
    fn waiting_in(fd: &OwnedFd) -> usize {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int, the bytes waiting in the pipe.
        let rc =
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::FIONREAD, &mut n) };
        assert_eq!(rc, 0, "FIONREAD: {}", io::Error::last_os_error());
        usize::try_from(n).unwrap()
    }

    fn thread_cpu() -> std::time::Duration {
        let mut t = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec through the pointer, which outlives it.
        assert_eq!(
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) },
            0
        );
        std::time::Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
    }

    #[tokio::test]
    async fn output_stays_in_a_fifo_until_a_late_reader_has_taken_it() {
        let dir = std::env::temp_dir().join(format!("copy-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map(OwnedFd::from)
            .unwrap();
        let (src_r, src_w) = pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC).unwrap();
        nix::unistd::write(&src_w, b"late").unwrap();
        drop(src_w);
        let copy = tokio::spawn(async move {
            let progress = Arc::new(AtomicU64::new(0));
            splice_to_fifo(src_r, fifo, &progress).await.unwrap()
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!copy.is_finished(), "closed the FIFO with its bytes unread");
        let mut reader = std::fs::File::open(&path).unwrap();
        let mut got = [0u8; 4];
        reader.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"late");
        assert_eq!(copy.await.unwrap(), 4);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn set_blocking(f: &std::fs::File) {
        use nix::fcntl::{fcntl, FcntlArg};
        fcntl(
            std::os::fd::AsRawFd::as_raw_fd(f),
            FcntlArg::F_SETFL(OFlag::empty()),
        )
        .unwrap();
    }
}
