//! The unix-socket byte streams under ttrpc, both ways: requests from containerd, events to it.
//!
//! tokio's own UnixStream costs the shim a wake-up per message it could do without. It asks
//! epoll for writability too, so every reply containerd reads wakes the shim for nothing; and
//! ttrpc reads a header of ten bytes, then the body, then fails a third read, three recvs a
//! message. A `Conn` is registered for reading alone and reads ahead into a buffer: one recv a
//! message, and a recv shorter than the buffer says the socket is empty, so the next read waits
//! without a syscall. Writes go straight to the socket, which nearly always has room; only a
//! write that finds it full registers a duplicate of the socket for writability, until it has
//! gone through.

use crate::stdio::console::register;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Bytes read ahead: a whole request but for an exec with long arguments, which a larger
/// read takes directly.
const READ_AHEAD: usize = 4096;

pub struct Conn {
    socket: AsyncFd<OwnedFd>,
    /// A duplicate of the socket registered for writability while a write waits for room.
    waiting_write: Option<AsyncFd<OwnedFd>>,
    /// Read ahead, allocated at the first read; `ahead[start..end]` is still unread.
    ahead: Vec<u8>,
    start: usize,
    end: usize,
}

impl Conn {
    pub fn new(socket: OwnedFd) -> io::Result<Conn> {
        Ok(Conn {
            socket: register(socket, Interest::READABLE)?,
            waiting_write: None,
            ahead: Vec::new(),
            start: 0,
            end: 0,
        })
    }

    /// Connects to the socket at `path` without blocking the thread: a connect to a containerd
    /// too busy to accept (its backlog full) fails at once (WouldBlock), and the caller tries
    /// again later, while the shim serves on.
    pub async fn connect(path: &Path) -> io::Result<Conn> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        Conn::new(stream.into_std()?.into())
    }

    /// Moves buffered bytes into `out`.
    fn take_ahead(&mut self, out: &mut ReadBuf<'_>) {
        let n = out.remaining().min(self.end - self.start);
        out.put_slice(&self.ahead[self.start..self.start + n]);
        self.start += n;
    }

    fn send(&self, data: &[u8]) -> io::Result<usize> {
        nix::sys::socket::send(
            self.socket.as_raw_fd(),
            data,
            nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
        )
        .map_err(io::Error::from)
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        if this.start < this.end {
            this.take_ahead(out);
            return Poll::Ready(Ok(()));
        }
        let direct = out.remaining() >= READ_AHEAD;
        if !direct && this.ahead.is_empty() {
            this.ahead = vec![0; READ_AHEAD];
        }
        loop {
            let mut guard = ready!(this.socket.poll_read_ready(cx))?;
            let into: &mut [u8] = if direct {
                out.initialize_unfilled()
            } else {
                &mut this.ahead
            };
            let wanted = into.len();
            match guard.try_io(|s| recv(s.get_ref(), into)) {
                Ok(Ok(n)) => {
                    // Shorter than asked: the socket is empty now, so the next read can
                    // wait for epoll's next edge instead of failing a recv first (tokio does
                    // the same). Not at the end of the stream, which no edge follows.
                    if n > 0 && n < wanted {
                        guard.clear_ready();
                    }
                    if direct {
                        out.advance(n);
                    } else {
                        (this.start, this.end) = (0, n);
                        this.take_ahead(out);
                    }
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Would block: the guard has cleared the readiness.
                Err(_) => continue,
            }
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if let Some(waiting) = &this.waiting_write {
                let mut guard = ready!(waiting.poll_write_ready(cx))?;
                let sent = match guard.try_io(|_| this.send(data)) {
                    Ok(sent) => sent,
                    Err(_would_block) => continue,
                };
                drop(guard);
                if let Err(e) = &sent {
                    if e.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                }
                // Dropping the duplicate takes it out of epoll: no wake-up for room again.
                this.waiting_write = None;
                return Poll::Ready(sent);
            }
            match this.send(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let dup = this.socket.get_ref().as_fd().try_clone_to_owned()?;
                    this.waiting_write = Some(register(dup, Interest::WRITABLE)?);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                sent => return Poll::Ready(sent),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut =
            nix::sys::socket::shutdown(self.socket.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        Poll::Ready(shut.map_err(io::Error::from))
    }
}

/// The connections a listening socket accepts, as ttrpc's server takes them.
pub fn listener(listener: tokio::net::UnixListener) -> ttrpc::r#async::transport::Listener {
    ttrpc::r#async::transport::Listener::new(Accepted(listener))
}

struct Accepted(tokio::net::UnixListener);

impl futures_core::Stream for Accepted {
    type Item = io::Result<Conn>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let (stream, _) = ready!(self.0.poll_accept(cx))?;
        // Out of tokio's registration (for both ways) into a Conn's (for reading).
        Poll::Ready(Some(
            stream.into_std().map(OwnedFd::from).and_then(Conn::new),
        ))
    }
}

fn recv(socket: &OwnedFd, into: &mut [u8]) -> io::Result<usize> {
    nix::sys::socket::recv(
        socket.as_raw_fd(),
        into,
        nix::sys::socket::MsgFlags::empty(),
    )
    .map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream as StdUnixStream;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One entry of an epoll instance of this process, from its fdinfo: the watched
    /// descriptor, the events waited for, the watched file's inode, and the line itself.
    struct EpollEntry {
        tfd: i32,
        events: u32,
        ino: u64,
        line: String,
    }

    /// Every entry of every epoll instance this process holds. An instance that tokio holds
    /// under two descriptors lists each of its entries twice.
    fn epoll_entries() -> Vec<EpollEntry> {
        let mut entries = Vec::new();
        for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
            let Ok(info) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            for line in info.lines().filter(|l| l.starts_with("tfd:")) {
                let words: Vec<&str> = line.split_whitespace().collect();
                let after = |name: &str| {
                    let at = words.iter().position(|w| *w == name)?;
                    words.get(at + 1).copied()
                };
                let tfd = after("tfd:").and_then(|v| v.parse().ok());
                let events = after("events:").and_then(|v| u32::from_str_radix(v, 16).ok());
                let ino = words
                    .iter()
                    .find_map(|w| w.strip_prefix("ino:"))
                    .and_then(|v| u64::from_str_radix(v, 16).ok());
                if let (Some(tfd), Some(events), Some(ino)) = (tfd, events, ino) {
                    let line = line.to_string();
                    entries.push(EpollEntry {
                        tfd,
                        events,
                        ino,
                        line,
                    });
                }
            }
        }
        entries
    }

    /// The epoll event masks under which descriptor `fd` of this process is registered.
    fn epoll_masks(fd: i32) -> Vec<u32> {
        let entries = epoll_entries().into_iter();
        entries.filter(|e| e.tfd == fd).map(|e| e.events).collect()
    }

    /// The descriptors of this process open on the same file as `fd` (itself included).
    fn same_file(fd: i32) -> Vec<i32> {
        let link = |n: i32| std::fs::read_link(format!("/proc/self/fd/{n}")).ok();
        let target = link(fd);
        (0..4096).filter(|&n| link(n) == target).collect()
    }

    /// The epoll entries, in any epoll instance of this process, that wait for room on the
    /// file `fd` is open on: matched by the file's inode, so an entry left behind under a
    /// descriptor that has since been closed counts too.
    fn waiting_for_room(fd: i32) -> Vec<String> {
        let ino = nix::sys::stat::fstat(fd).unwrap().st_ino;
        let mut waiting: Vec<String> = epoll_entries()
            .into_iter()
            .filter(|e| e.ino == ino && e.events & OUT != 0)
            .map(|e| e.line)
            .collect();
        waiting.sort();
        waiting.dedup();
        waiting
    }

    const IN: u32 = libc::EPOLLIN as u32;
    const OUT: u32 = libc::EPOLLOUT as u32;

    #[tokio::test]
    async fn a_conn_waits_for_reading_alone() {
        let (ours, _peer) = StdUnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let _conn = Conn::new(ours.into()).unwrap();
        // An epoll descriptor tokio has duplicated lists the registration twice.
        let masks = epoll_masks(fd);
        assert!(
            !masks.is_empty() && masks.iter().all(|m| m & IN != 0 && m & OUT == 0),
            "masks {masks:x?}"
        );
    }

    #[tokio::test]
    async fn messages_read_in_pieces_arrive_whole_and_in_order_then_the_end() {
        let (ours, mut peer) = StdUnixStream::pair().unwrap();
        let mut conn = Conn::new(ours.into()).unwrap();
        // Three frames in one write: a header of ten bytes, then a body; the last body is
        // longer than the read-ahead, so part of it is read straight into the caller's buffer.
        let bodies: Vec<Vec<u8>> = [5usize, 300, 3 * READ_AHEAD]
            .iter()
            .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        let mut wire = Vec::new();
        for body in &bodies {
            wire.extend_from_slice(&(body.len() as u32).to_be_bytes());
            wire.extend_from_slice(&[0; 6]);
            wire.extend_from_slice(body);
        }
        let writer = std::thread::spawn(move || {
            peer.write_all(&wire).unwrap();
            peer
        });
        for body in &bodies {
            let mut header = [0u8; 10];
            conn.read_exact(&mut header).await.unwrap();
            let len = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
            let mut got = vec![0; len];
            conn.read_exact(&mut got).await.unwrap();
            assert!(&got == body, "a body of {len} bytes came back changed");
        }
        drop(writer.join().unwrap());
        let mut rest = Vec::new();
        let end = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            conn.read_to_end(&mut rest),
        );
        assert_eq!(end.await.expect("the end never came").unwrap(), 0);
    }

    #[tokio::test]
    async fn a_write_that_finds_the_socket_full_waits_for_room_then_stops_waiting() {
        let (ours, mut peer) = StdUnixStream::pair().unwrap();
        let fd = ours.as_raw_fd();
        let mut conn = Conn::new(ours.into()).unwrap();
        // Far more than a unix socket buffers: the write must wait for the peer to read.
        let data: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            // Read nothing until told that the writer waits.
            rx.recv().unwrap();
            let mut got = Vec::new();
            peer.read_to_end(&mut got).unwrap();
            got
        });
        let write = conn.write_all(&data);
        tokio::pin!(write);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(200), &mut write).await;
        assert!(waited.is_err(), "8 MiB written with nobody reading");
        let waiting = waiting_for_room(fd);
        let _ = tx.send(());
        assert!(
            waiting.len() == 1 && !waiting[0].starts_with(&format!("tfd: {fd:8} ")),
            "want one duplicate registered for room, have {waiting:?}"
        );
        write.await.unwrap();
        let waiting = waiting_for_room(fd);
        assert!(waiting.is_empty(), "still registered for room: {waiting:?}");
        assert_eq!(same_file(fd), [fd], "the duplicate is still open");
        conn.shutdown().await.unwrap();
        assert!(reader.join().unwrap() == data, "the bytes arrived changed");
    }

    #[tokio::test]
    async fn a_connected_conn_carries_both_ways() {
        let dir = std::env::temp_dir().join(format!("conn-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut conn = Conn::connect(&path).await.unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        peer.write_all(b"pong").unwrap();
        // A read into no room takes nothing from the socket.
        assert_eq!(conn.read(&mut []).await.unwrap(), 0);
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
        unsafe { libc::ioctl(conn.socket.as_raw_fd(), libc::FIONREAD, &mut queued) };
        assert_eq!(
            queued, 4,
            "bytes left in the socket after a read into no room"
        );
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connecting_to_a_listener_that_accepts_nothing_more_does_not_block() {
        use nix::sys::socket::{
            bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
        };
        let dir = std::env::temp_dir().join(format!("conn-full-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let addr = UnixAddr::new(&path).unwrap();
        let stream = || {
            socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap()
        };
        let listener = stream();
        bind(listener.as_raw_fd(), &addr).unwrap();
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        // Connections nobody accepts, until the listener's queue is full.
        let mut queued = Vec::new();
        loop {
            let fd = stream();
            match connect(fd.as_raw_fd(), &addr) {
                Ok(()) => queued.push(fd),
                Err(nix::errno::Errno::EAGAIN) => break,
                Err(e) => panic!("connect: {e}"),
            }
            assert!(queued.len() < 64, "the listener's queue never filled");
        }
        // On a thread of its own, so that a connect that blocks fails the test, not hangs it.
        let (tx, rx) = std::sync::mpsc::channel();
        let target = path.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _ = tx.send(rt.block_on(Conn::connect(&target)).map(drop));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
        match got {
            Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "{e}"),
            Ok(Ok(())) => panic!("connected to a listener whose queue is full"),
            Err(_) => panic!("the connect blocked the thread for 5 s"),
        }
        drop((queued, listener));
    }
}
