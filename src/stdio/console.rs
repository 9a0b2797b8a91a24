//! Terminals: the console socket runc sends a pty master over, and the copies between the
//! master and the client's FIFOs. A pty is not a pipe, so splice(2) cannot move its bytes:
//! these copies read and write through a buffer.

use crate::error::{Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

const BUFFER: usize = 32 << 10;

/// A listening socket in a private directory of its own, for runc's `--console-socket`;
/// removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        // A short path of its own: a bundle path can be longer than a socket address allows.
        let dir = nix::unistd::mkdtemp("/tmp/pty-XXXXXX")
            .map_err(|e| Error::Internal(format!("failed to make a console socket dir: {e}")))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(|e| {
            let _ = std::fs::remove_dir(&dir);
            Error::Internal(format!(
                "failed to listen on console socket {}: {e}",
                path.display()
            ))
        })?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master runc sent. runc sends it before `create` or `exec --detach` returns,
    /// so call this after runc succeeded: the connection is already queued.
    pub fn receive(&self) -> Result<OwnedFd> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Internal(format!(
                "console socket {}: {what}: {e}",
                self.path.display()
            ))
        };
        self.listener
            .set_nonblocking(true)
            .map_err(|e| fail("set non-blocking", &e))?;
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|e| fail("runc did not connect", &e))?;
        stream
            .set_nonblocking(false)
            .and_then(|()| stream.set_read_timeout(Some(Duration::from_secs(10))))
            .map_err(|e| fail("configure", &e))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| fail("receive", &e))?;
        let mut master = None;
        for cmsg in msg.cmsgs().map_err(|e| fail("read control message", &e))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                for fd in fds {
                    // SAFETY: the kernel just installed this descriptor for us; we own it.
                    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                    if master.is_none() {
                        master = Some(owned);
                    }
                }
            }
        }
        master.ok_or_else(|| fail("no pty master in the message", &"none"))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Registers a non-blocking descriptor with the runtime for the given interest.
pub fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    set_nonblocking(&fd)?;
    // SAFETY: the AsyncFd owns the descriptor for the registration's whole life.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Copies from `src` to `dst` (or nowhere) by read and write until `src` ends: end of file, or
/// EIO, which is how a pty master says the last holder of its other side has gone. Adds to
/// `progress`.
pub async fn copy(
    src: &AsyncFd<OwnedFd>,
    dst: Option<&AsyncFd<OwnedFd>>,
    progress: &AtomicU64,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = loop {
            let mut ready = src.readable().await?;
            match ready.try_io(|fd| read(fd.get_ref(), &mut buf)) {
                Ok(result) => break result?,
                Err(_would_block) => continue,
            }
        };
        if n == 0 {
            return Ok(total);
        }
        let mut sent = if dst.is_none() { n } else { 0 };
        while let (true, Some(dst)) = (sent < n, dst) {
            let mut ready = dst.writable().await?;
            if let Ok(result) = ready.try_io(|fd| write(fd.get_ref(), &buf[sent..n])) {
                sent += result?;
            }
        }
        total += n as u64;
        progress.fetch_add(n as u64, Ordering::Relaxed);
    }
}

fn read(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    match nix::unistd::read(fd.as_raw_fd(), buf) {
        Ok(n) => Ok(n),
        Err(Errno::EIO) => Ok(0),
        Err(Errno::EINTR) => Err(std::io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e.into()),
    }
}

fn write(fd: &OwnedFd, buf: &[u8]) -> std::io::Result<usize> {
    match nix::unistd::write(fd.as_fd(), buf) {
        Ok(n) => Ok(n),
        Err(Errno::EINTR) => Err(std::io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e.into()),
    }
}

/// Sets the terminal's window size.
pub fn resize(master: &OwnedFd, width: u16, height: u16) -> Result<()> {
    let size = libc::winsize {
        ws_row: height,
        ws_col: width,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which lives across the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
    if rc != 0 {
        return Err(Error::Internal(format!(
            "failed to resize the terminal: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_master_sent_over_the_socket_is_received() {
        let socket = ConsoleSocket::new().unwrap();
        let pty = nix::pty::openpty(None, None).unwrap();
        let client = std::os::unix::net::UnixStream::connect(socket.path()).unwrap();
        let fds = [pty.master.as_raw_fd()];
        let cmsg = [nix::sys::socket::ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"/dev/ptmx")];
        nix::sys::socket::sendmsg::<()>(client.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
            .unwrap();
        let master = socket.receive().unwrap();
        resize(&master, 120, 40).unwrap();
        let size = nix::sys::termios::tcgetattr(&pty.slave).map(drop);
        assert!(size.is_ok());
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::ioctl(pty.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) },
            0
        );
        assert_eq!((ws.ws_col, ws.ws_row), (120, 40));
        let dir = socket.dir.clone();
        drop(socket);
        assert!(!dir.exists(), "the socket dir is removed");
    }

    #[tokio::test]
    async fn output_copy_ends_when_the_terminal_hangs_up() {
        let pty = nix::pty::openpty(None, None).unwrap();
        let (r, w) = nix::unistd::pipe().unwrap();
        let master = register(pty.master, Interest::READABLE).unwrap();
        let out = register(w, Interest::WRITABLE).unwrap();
        nix::unistd::write(&pty.slave, b"hello\n").unwrap();
        drop(pty.slave);
        let progress = AtomicU64::new(0);
        let n = tokio::time::timeout(Duration::from_secs(5), copy(&master, Some(&out), &progress))
            .await
            .expect("the copy ends at hang-up")
            .unwrap();
        assert!(n >= 6, "copied {n}");
        drop(out);
        let mut got = String::new();
        std::io::Read::read_to_string(&mut std::fs::File::from(r), &mut got).unwrap();
        assert!(got.starts_with("hello"), "{got:?}");
    }
}
