//! In-memory files that runc opens by path: an exec's process spec, one call's log.
//!
//! A file in the bundle costs a create, a write, a close and an unlink on the bundle's
//! filesystem for every exec and every runc call, each a trip to the blocking pool or a
//! journal write on the one thread that serves requests. A memfd costs none of that: runc
//! (our child, in our pid namespace) opens it as `/proc/<shim pid>/fd/<n>`, and it is gone
//! when the shim drops it, so nothing is left behind on any path out.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub struct MemFile {
    file: File,
}

impl MemFile {
    /// An empty file; `name` only shows in /proc's links, for whoever debugs.
    pub fn new(name: &std::ffi::CStr) -> io::Result<MemFile> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags and returns a new fd
        // that nothing else owns.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh, open descriptor owned by nothing else.
        Ok(MemFile {
            file: unsafe { File::from_raw_fd(fd) },
        })
    }

    /// A file holding `bytes`.
    pub fn with(name: &std::ffi::CStr, bytes: &[u8]) -> io::Result<MemFile> {
        let mut file = MemFile::new(name)?;
        file.file.write_all(bytes)?;
        Ok(file)
    }

    /// The path another process of this pid namespace opens it by. Opening it there gives a
    /// description of its own (own offset and flags) on the same memory.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.file.as_raw_fd()
        ))
    }

    /// Everything written to it, by us or through its path.
    pub fn contents(&self) -> io::Result<Vec<u8>> {
        let len = self.file.metadata()?.len();
        let mut bytes = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        self.file.read_exact_at(&mut bytes, 0)?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_another_opener_writes_through_the_path_is_read_back() {
        let log = MemFile::new(c"log").unwrap();
        let mut other = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log.path())
            .unwrap();
        other.write_all(b"{\"level\":\"error\"}\n").unwrap();
        other.write_all(b"more\n").unwrap();
        assert_eq!(log.contents().unwrap(), b"{\"level\":\"error\"}\nmore\n");
    }

    #[test]
    fn a_file_with_contents_reads_whole_through_its_path() {
        let spec = MemFile::with(c"spec", b"{\"args\":[\"true\"]}").unwrap();
        assert_eq!(
            std::fs::read(spec.path()).unwrap(),
            b"{\"args\":[\"true\"]}",
            "an opener through the path starts at offset 0, not where we stopped writing"
        );
    }
}
