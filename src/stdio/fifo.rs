//! Opening the client's FIFOs the way the design asks: the shim holds both ends.

use crate::error::{Error, Result};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::{fstat, Mode, SFlag};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

/// The stdin FIFO's read end, and a write end the shim keeps until CloseIO so that a client
/// that goes away does not end the container's input.
pub fn open_stdin(path: &Path) -> Result<(OwnedFd, OwnedFd)> {
    let reader = open_fifo(path, OFlag::O_RDONLY)?;
    super::widen(&reader);
    let holder = open_fifo(path, OFlag::O_WRONLY)?;
    Ok((reader, holder))
}

/// A stdout/stderr FIFO opened for reading and writing: opening never waits for a consumer, and
/// a consumer that leaves and comes back loses nothing, while the container gets no SIGPIPE.
pub fn open_output(path: &Path) -> Result<OwnedFd> {
    let fd = open_fifo(path, OFlag::O_RDWR)?;
    super::widen(&fd);
    Ok(fd)
}

fn open_fifo(path: &Path, access: OFlag) -> Result<OwnedFd> {
    let flags = access | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let raw = open(path, flags, Mode::empty()).map_err(|e| {
        Error::InvalidArgument(format!("failed to open fifo {}: {e}", path.display()))
    })?;
    // SAFETY: `open` just returned this descriptor and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let stat = fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).map_err(|e| {
        Error::InvalidArgument(format!("failed to stat fifo {}: {e}", path.display()))
    })?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFIFO {
        return Err(Error::InvalidArgument(format!(
            "{} is not a fifo",
            path.display()
        )));
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::{mkfifo, read, write};

    fn temp_fifo(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fifo-test-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        let _ = std::fs::remove_file(&path);
        mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[test]
    fn output_fifo_opens_without_a_consumer_and_keeps_data_for_a_late_one() {
        let path = temp_fifo("out");
        let fd = open_output(&path).unwrap();
        assert_eq!(write(&fd, b"kept").unwrap(), 4);
        let late = std::fs::File::open(&path).unwrap();
        let mut buf = [0u8; 8];
        let n = read(std::os::fd::AsRawFd::as_raw_fd(&late), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
        drop((fd, late));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_fifo_gets_more_room_but_one_its_client_widened_keeps_its_own() {
        let path = temp_fifo("room");
        // The client's end, as ctr opens it before the Create.
        let client = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let client = OwnedFd::from(client);
        let fd = open_output(&path).unwrap();
        assert_eq!(super::super::room(&fd), Some(super::super::PIPE_BYTES));
        drop(fd);
        // As much as any user may ask for (fs/pipe-max-size's default).
        super::super::set_room(&client, 1 << 20);
        assert_eq!(
            super::super::room(&client),
            Some(1 << 20),
            "the client's widening"
        );
        let fd = open_output(&path).unwrap();
        assert_eq!(
            super::super::room(&fd),
            Some(1 << 20),
            "the client's room, kept"
        );
        drop((fd, client));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn stdin_does_not_end_while_the_shim_holds_its_write_end() {
        let path = temp_fifo("in");
        let (reader, holder) = open_stdin(&path).unwrap();
        let mut buf = [0u8; 1];
        // No data, but a writer exists: EAGAIN rather than end of file.
        assert_eq!(
            read(std::os::fd::AsRawFd::as_raw_fd(&reader), &mut buf),
            Err(nix::errno::Errno::EAGAIN)
        );
        drop(holder);
        assert_eq!(
            read(std::os::fd::AsRawFd::as_raw_fd(&reader), &mut buf),
            Ok(0)
        );
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn missing_fifos_and_plain_files_are_invalid_arguments() {
        let missing = Path::new("/nonexistent/dir/fifo");
        assert!(matches!(
            open_output(missing),
            Err(Error::InvalidArgument(_))
        ));
        let dir = std::env::temp_dir().join(format!("fifo-test-{}-plain", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plain = dir.join("plain");
        std::fs::write(&plain, b"").unwrap();
        assert!(matches!(
            open_output(&plain),
            Err(Error::InvalidArgument(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
