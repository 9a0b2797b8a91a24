//! A pseudo-terminal for driving `ctr -t` as a person at a terminal would: the client runs
//! with the pty as its controlling terminal, the test types into the master, reads what
//! appears, and resizes the window (the client gets SIGWINCH).

use nix::pty::{openpty, Winsize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pty {
    master: OwnedFd,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    reader: std::thread::JoinHandle<()>,
}

fn winsize(rows: u16, cols: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

impl Pty {
    /// Runs `cmd` on a new terminal of `rows` x `cols`.
    pub fn spawn(cmd: &mut Command, rows: u16, cols: u16) -> Result<Pty, String> {
        let pty = openpty(Some(&winsize(rows, cols)), None).map_err(|e| e.to_string())?;
        let slave = std::fs::File::from(pty.slave);
        let io = |f: &std::fs::File| f.try_clone().map(Stdio::from).map_err(|e| e.to_string());
        cmd.stdin(io(&slave)?)
            .stdout(io(&slave)?)
            .stderr(io(&slave)?);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawn {cmd:?}: {e}"))?;
        drop(slave);
        let output = Arc::new(Mutex::new(Vec::new()));
        let master = pty.master.try_clone().map_err(|e| e.to_string())?;
        let sink = output.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            // Ends with EIO once every holder of the slave has gone.
            while let Ok(n) = nix::unistd::read(master.as_raw_fd(), &mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(Pty {
            master: pty.master,
            child,
            output,
            reader,
        })
    }

    pub fn type_in(&self, bytes: &[u8]) -> Result<(), String> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = nix::unistd::write(&self.master, rest).map_err(|e| e.to_string())?;
            rest = &rest[n..];
        }
        Ok(())
    }

    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), String> {
        let size = winsize(rows, cols);
        // SAFETY: TIOCSWINSZ reads one winsize from a pointer that outlives the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &size) };
        if rc != 0 {
            return Err(format!("resize: {}", std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Everything the terminal showed so far.
    /// Waits, for at most `limit`, until every byte written to the terminal has been read:
    /// the reader ends once the last holder of the terminal has gone.
    pub fn drained(&self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !self.reader.is_finished() {
            if Instant::now() > deadline {
                return Err(format!("the terminal is still open after {limit:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    pub fn output(&self) -> Vec<u8> {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Waits until the terminal shows `needle`.
    pub fn wait_for(&self, needle: &str, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        while !self.text().contains(needle) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "terminal never showed {needle:?}; it shows {:?}",
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn tail(&self) -> String {
        let text = self.text();
        let start = text.len().saturating_sub(400);
        text.get(start..).unwrap_or(&text).to_string()
    }

    /// Waits for the client to exit; kills it when `limit` passes.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(format!(
                    "client still running after {limit:?}; terminal shows {:?}",
                    self.tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
