//! A process's standard streams: the client's FIFOs, a log file or a logging program on one
//! side, runc's pipes or the pty master on the other, and the copies between them.

pub mod binary;
pub mod console;
pub mod copy;
pub mod fifo;
mod relay;
pub mod uri;

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use crate::runc::ProcessStdio;
use console::ConsoleSocket;
use nix::fcntl::OFlag;
use nix::unistd::pipe2;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;
pub use uri::{Output, Plan};

/// The stream paths of a create or exec request; an empty path means no stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Where an output pipe's bytes go.
pub enum Sink {
    Fifo(OwnedFd),
    /// A regular file opened for appending.
    File(OwnedFd),
}

/// The shim's side of the streams, opened before runc runs and not yet copying.
pub enum OpenedIo {
    Pipes {
        /// The stdin FIFO's read end and held write end, and the pipe the process reads.
        stdin: Option<(OwnedFd, OwnedFd, OwnedFd)>,
        /// Each output pipe's read end and where it goes.
        outputs: Vec<(OwnedFd, Sink)>,
        /// A logging program that reads the output pipes itself.
        logger: Option<binary::Logger>,
    },
    /// The process gets a pty from runc; its master comes over the socket. stdout and stderr
    /// are one stream on a terminal: only the stdout FIFO gets it.
    Terminal {
        socket: ConsoleSocket,
        stdin: Option<(OwnedFd, OwnedFd)>,
        /// The stdout FIFO, or the pipe a logging program reads.
        stdout: Option<OwnedFd>,
        logger: Option<binary::Logger>,
    },
}

/// The running copies of one process.
pub struct ProcessIo {
    stdin_holder: Mutex<Option<OwnedFd>>,
    stdin_copy: Option<JoinHandle<()>>,
    output_copies: tokio::sync::Mutex<Vec<JoinHandle<()>>>,
    /// Bytes the output copies have moved, to tell a slow drain from a stuck one.
    output_progress: Arc<AtomicU64>,
    /// The pty master while the output copy holds it; it closes when the terminal hangs up.
    console: Option<Weak<AsyncFd<OwnedFd>>>,
    /// Dropped with the streams: a logging program still running is then stopped.
    _logger_stop: Option<tokio::sync::oneshot::Sender<()>>,
}

/// What opening a process's streams needs besides the plan.
pub struct OpenContext<'a> {
    /// Owner of the process's ends of the pipes (io_uid/io_gid), so that a process in a user
    /// namespace can reopen them.
    pub owner: (u32, u32),
    /// The process's id for a logging program: the container's for init, else the exec's.
    pub process_id: &'a str,
    pub namespace: &'a str,
    pub reaper: &'a Arc<Reaper>,
}

/// Opens the FIFOs, file or logging program of `plan` and makes the pipes (or the console
/// socket) runc hands to the process.
pub async fn open(plan: &Plan, cx: &OpenContext<'_>) -> Result<(OpenedIo, ProcessStdio)> {
    let stdin = match &plan.stdin {
        Some(path) => Some(fifo::open_stdin(path)?),
        None => None,
    };
    if plan.terminal {
        let (stdout, logger) = match &plan.output {
            Output::Fifos { stdout, .. } => match stdout {
                Some(path) => (Some(fifo::open_output(path)?), None),
                None => (None, None),
            },
            Output::Binary { .. } => {
                // The program gets the terminal's one stream on fd 3 and an empty stderr.
                let (logger, out_w, err_w) = start_logger(&plan.output, cx).await?;
                drop(err_w);
                (Some(out_w), Some(logger))
            }
            Output::File(_) => {
                return Err(Error::InvalidArgument(
                    "a terminal's output must go to a FIFO or a logging program".into(),
                ))
            }
        };
        let socket = ConsoleSocket::new()?;
        let child = ProcessStdio {
            console_socket: Some(socket.path().to_path_buf()),
            ..Default::default()
        };
        let opened = OpenedIo::Terminal {
            socket,
            stdin,
            stdout,
            logger,
        };
        return Ok((opened, child));
    }
    let mut child = ProcessStdio::default();
    let stdin = match stdin {
        Some((fifo_reader, holder)) => {
            let (pipe_r, pipe_w) = pipe()?;
            set_nonblocking(&pipe_w)?;
            give_to(&pipe_r, cx.owner)?;
            child.stdin = Some(pipe_r);
            Some((fifo_reader, holder, pipe_w))
        }
        None => None,
    };
    let mut outputs = Vec::new();
    let mut logger = None;
    match &plan.output {
        Output::Fifos { stdout, stderr } => {
            for (path, slot) in [(stdout, &mut child.stdout), (stderr, &mut child.stderr)] {
                if let Some(path) = path {
                    let fifo = fifo::open_output(path)?;
                    let (pipe_r, pipe_w) = output_pipe(cx.owner)?;
                    *slot = Some(pipe_w);
                    outputs.push((pipe_r, Sink::Fifo(fifo)));
                }
            }
        }
        Output::File(path) => {
            // Off the serving thread: the log may sit on a slow or hung filesystem.
            let path = path.clone();
            let file = tokio::task::spawn_blocking(move || open_log_file(&path))
                .await
                .map_err(|e| Error::Internal(format!("log file task failed: {e}")))??;
            // One pipe for both streams keeps their lines in the order they were written.
            let (pipe_r, pipe_w) = output_pipe(cx.owner)?;
            child.stderr =
                Some(pipe_w.try_clone().map_err(|e| {
                    Error::Internal(format!("failed to share the output pipe: {e}"))
                })?);
            child.stdout = Some(pipe_w);
            outputs.push((pipe_r, Sink::File(file)));
        }
        Output::Binary { .. } => {
            let (started, out_w, err_w) = start_logger(&plan.output, cx).await?;
            logger = Some(started);
            child.stdout = Some(out_w);
            child.stderr = Some(err_w);
        }
    }
    Ok((
        OpenedIo::Pipes {
            stdin,
            outputs,
            logger,
        },
        child,
    ))
}

/// Starts the logging program of a `binary://` output on two new pipes; returns it with the
/// pipes' write ends, which belong to the io owner. Blocking pipes: the program reads them as
/// any program reads its input.
async fn start_logger(
    output: &Output,
    cx: &OpenContext<'_>,
) -> Result<(binary::Logger, OwnedFd, OwnedFd)> {
    let Output::Binary {
        path,
        args,
        needs_ready_byte,
    } = output
    else {
        return Err(Error::Internal("no logging program to start".into()));
    };
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    give_to(&out_w, cx.owner)?;
    give_to(&err_w, cx.owner)?;
    let spec = binary::Spec {
        path,
        args,
        needs_ready_byte: *needs_ready_byte,
        process_id: cx.process_id,
        namespace: cx.namespace,
    };
    let logger = binary::start(&spec, cx.reaper, out_r, err_r).await?;
    Ok((logger, out_w, err_w))
}

/// A pipe for one output: our read end non-blocking, the process's end given to `owner`.
fn output_pipe(owner: (u32, u32)) -> Result<(OwnedFd, OwnedFd)> {
    let (pipe_r, pipe_w) = pipe()?;
    set_nonblocking(&pipe_r)?;
    give_to(&pipe_w, owner)?;
    Ok((pipe_r, pipe_w))
}

/// The `file://` target, its directory made as needed, opened for appending.
fn open_log_file(path: &Path) -> Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::InvalidArgument(format!("failed to create log dir {}: {e}", dir.display()))
        })?;
    }
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|e| {
            Error::InvalidArgument(format!("failed to open log file {}: {e}", path.display()))
        })
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC)
        .map_err(|e| Error::Internal(format!("failed to create pipe: {e}")))?;
    // A new pipe has the kernel's default, less than PIPE_BYTES: no need to ask.
    set_room(&r, PIPE_BYTES);
    Ok((r, w))
}

/// Bytes a stdio pipe or FIFO holds (the kernel's default is 64 KiB). Measured with
/// scripts/bench.sh: at 256 KiB the writer and the copy each wake a quarter as often, which
/// doubled stdout throughput and halved the shim's CPU per byte, and 1 MiB gained nothing
/// more in the event loop (a busy output copy gets more on the relay thread: see
/// `relay::ROOM`). The pages are only allocated while bytes wait in the pipe, so an idle
/// stream costs nothing; a stream nobody reads holds at most this much (`relay::ROOM` if its
/// reader stopped while it was busy: see `relay::Rooms`).
const PIPE_BYTES: libc::c_int = 256 << 10;

/// Gives the client's FIFO behind `fd` at least `PIPE_BYTES` of room: one its client made
/// wider keeps its size. Best effort: an unprivileged shim over its user's pipe quota keeps
/// the default size, which only costs speed.
pub(crate) fn widen(fd: &OwnedFd) {
    if room(fd).is_none_or(|room| room < PIPE_BYTES) {
        set_room(fd, PIPE_BYTES);
    }
}

/// The room of the pipe or FIFO behind `fd`, in bytes; None if it cannot be read.
pub(crate) fn room(fd: &OwnedFd) -> Option<libc::c_int> {
    // SAFETY: F_GETPIPE_SZ takes no argument and only reads.
    let room = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(fd), libc::F_GETPIPE_SZ) };
    (room > 0).then_some(room)
}

/// Gives the pipe or FIFO behind `fd` `bytes` of room. Best effort: a pipe over its user's
/// quota keeps its size (which only costs speed), and so does one whose bytes fill more
/// slots than `bytes` has (the kernel keeps every byte).
pub(crate) fn set_room(fd: &OwnedFd, bytes: libc::c_int) {
    // SAFETY: F_SETPIPE_SZ takes an int and changes only the pipe's capacity.
    let rc = unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            libc::F_SETPIPE_SZ,
            bytes,
        )
    };
    if rc < 0 {
        log::debug!("pipe keeps its size: {}", std::io::Error::last_os_error());
    }
}

fn give_to(fd: &OwnedFd, (uid, gid): (u32, u32)) -> Result<()> {
    if (uid, gid) == (0, 0) {
        return Ok(());
    }
    let (u, g) = (
        nix::unistd::Uid::from_raw(uid),
        nix::unistd::Gid::from_raw(gid),
    );
    nix::unistd::fchown(std::os::fd::AsRawFd::as_raw_fd(fd), Some(u), Some(g))
        .map_err(|e| Error::Internal(format!("failed to give a stdio pipe to {uid}:{gid}: {e}")))
}

fn set_nonblocking(fd: &OwnedFd) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg};
    fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .map(drop)
    .map_err(|e| Error::Internal(format!("failed to make pipe non-blocking: {e}")))
}

impl OpenedIo {
    /// Starts copying; call once runc has the process's ends (and has let go of them).
    pub fn start(self, name: &str) -> Result<ProcessIo> {
        match self {
            OpenedIo::Pipes {
                stdin,
                outputs,
                logger,
            } => Ok(start_pipes(name, stdin, outputs, logger)),
            OpenedIo::Terminal {
                socket,
                stdin,
                stdout,
                logger,
            } => start_terminal(name, &socket, stdin, stdout, logger),
        }
    }
}

fn start_pipes(
    name: &str,
    stdin: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    outputs: Vec<(OwnedFd, Sink)>,
    logger: Option<binary::Logger>,
) -> ProcessIo {
    let mut holder = None;
    let stdin_copy = stdin.map(|(fifo_reader, fifo_holder, pipe_w)| {
        holder = Some(fifo_holder);
        let name = name.to_string();
        tokio::spawn(async move {
            let ignored = Arc::new(AtomicU64::new(0));
            if let Err(e) = copy::splice_all(fifo_reader, pipe_w, &ignored).await {
                // The process closing its stdin early is normal.
                log::debug!("stdin copy of {name} ended: {e}");
            }
        })
    });
    let output_progress = Arc::new(AtomicU64::new(0));
    let mut copies: Vec<JoinHandle<()>> = outputs
        .into_iter()
        .map(|(pipe_r, sink)| {
            let name = name.to_string();
            let progress = output_progress.clone();
            tokio::spawn(async move {
                let copied = match sink {
                    Sink::Fifo(fifo) => copy::splice_to_fifo(pipe_r, fifo, &progress).await,
                    Sink::File(file) => copy::append_to_file(pipe_r, file, &progress).await,
                };
                if let Err(e) = copied {
                    log::warn!("output copy of {name} failed: {e}");
                }
            })
        })
        .collect();
    let logger_stop = logger.map(|logger| supervise(logger, &mut copies));
    ProcessIo {
        stdin_holder: Mutex::new(holder),
        stdin_copy,
        output_copies: tokio::sync::Mutex::new(copies),
        output_progress,
        console: None,
        _logger_stop: logger_stop,
    }
}

/// A logging program's output is drained when it has gone: it reads the pipes itself. Returns
/// what stops it when dropped.
fn supervise(
    logger: binary::Logger,
    copies: &mut Vec<JoinHandle<()>>,
) -> tokio::sync::oneshot::Sender<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    logger.supervise(stop_rx, done_tx);
    copies.push(tokio::spawn(async move {
        let _ = done_rx.await;
    }));
    stop_tx
}

fn start_terminal(
    name: &str,
    socket: &ConsoleSocket,
    stdin: Option<(OwnedFd, OwnedFd)>,
    stdout: Option<OwnedFd>,
    logger: Option<binary::Logger>,
) -> Result<ProcessIo> {
    let master = socket.receive()?;
    let master = console::register(master, Interest::READABLE | Interest::WRITABLE)
        .map(Arc::new)
        .map_err(|e| Error::Internal(format!("failed to watch the pty of {name}: {e}")))?;
    let output_progress = Arc::new(AtomicU64::new(0));
    // The output copy owns the master: when the terminal hangs up (the process and everything
    // that shared its pty are gone) the copy ends and the master closes with it.
    let hung_up = Arc::new(tokio::sync::Notify::new());
    // The end of input (CloseIO, and the client's end closed) hangs the terminal up, as with
    // the Go shim: the master closes and the process gets SIGHUP, so a shell left by a client
    // that went away does not stay for ever.
    let input_ended = Arc::new(tokio::sync::Notify::new());
    let output = {
        let (master, progress, hung_up, input_ended) = (
            master.clone(),
            output_progress.clone(),
            hung_up.clone(),
            input_ended.clone(),
        );
        let name = name.to_string();
        let stdout = stdout
            .map(|fd| console::register(fd, Interest::WRITABLE))
            .transpose()
            .map_err(|e| Error::Internal(format!("failed to watch the stdout of {name}: {e}")))?;
        tokio::spawn(async move {
            tokio::select! {
                // With no stdout the pty is still read, or the process would block on it.
                result = console::copy(&master, stdout.as_ref(), &progress) => {
                    if let Err(e) = result {
                        log::warn!("terminal output copy of {name} failed: {e}");
                    }
                    if let Some(out) = &stdout {
                        copy::until_read(out.get_ref()).await;
                    }
                }
                () = input_ended.notified() => {}
            }
            hung_up.notify_one();
        })
    };
    let mut holder = None;
    let stdin_copy = match stdin {
        Some((fifo_reader, fifo_holder)) => {
            holder = Some(fifo_holder);
            let reader = console::register(fifo_reader, Interest::READABLE).map_err(|e| {
                Error::Internal(format!("failed to watch the stdin of {name}: {e}"))
            })?;
            let weak = Arc::downgrade(&master);
            let name = name.to_string();
            Some(tokio::spawn(async move {
                let ignored = AtomicU64::new(0);
                let Some(master) = weak.upgrade() else { return };
                tokio::select! {
                    result = console::copy(&reader, Some(&master), &ignored) => {
                        match result {
                            Ok(_) => input_ended.notify_one(),
                            Err(e) => log::debug!("terminal input copy of {name} ended: {e}"),
                        }
                    }
                    () = hung_up.notified() => {}
                }
            }))
        }
        None => None,
    };
    let console = Some(Arc::downgrade(&master));
    drop(master);
    let mut copies = vec![output];
    let logger_stop = logger.map(|logger| supervise(logger, &mut copies));
    Ok(ProcessIo {
        stdin_holder: Mutex::new(holder),
        stdin_copy,
        output_copies: tokio::sync::Mutex::new(copies),
        output_progress,
        console,
        _logger_stop: logger_stop,
    })
}

impl ProcessIo {
    /// Lets go of the shim's write end of stdin: the process sees end of input once the client
    /// has closed its end too.
    pub fn close_stdin(&self) {
        self.stdin_holder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
    }

    /// Sets the window size of the process's terminal; a process without one (or whose
    /// terminal has hung up) has nothing to resize.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = self.console.as_ref().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let clamp = |v: u32| u16::try_from(v).unwrap_or(u16::MAX);
        console::resize(master.get_ref(), clamp(width), clamp(height))
    }

    /// Waits until stdout and stderr have reached end of file and were flushed to the FIFOs;
    /// true when they did. Gives up (false) only once no byte has moved for `idle_limit`: then
    /// either another process holds the stream open or nobody reads the FIFO, and waiting longer
    /// would hang the exit forever. The copies go on regardless.
    pub async fn drained(&self, idle_limit: Duration) -> bool {
        const TICK: Duration = Duration::from_millis(200);
        let mut copies = self.output_copies.lock().await;
        let mut moved = self.output_progress.load(Ordering::Relaxed);
        let mut idle_since = Instant::now();
        while let Some(copy) = copies.last_mut() {
            // A panicked or aborted copy has nothing more to deliver either. Popped right after
            // it finishes, so a finished handle is never polled again.
            if tokio::time::timeout(TICK, copy).await.is_ok() {
                copies.pop();
                continue;
            }
            let now = self.output_progress.load(Ordering::Relaxed);
            if now != moved {
                moved = now;
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= idle_limit {
                return false;
            }
        }
        true
    }
}

impl Drop for ProcessIo {
    fn drop(&mut self) {
        if let Some(copy) = &self.stdin_copy {
            copy.abort();
        }
        if let Ok(copies) = self.output_copies.try_lock() {
            copies.iter().for_each(JoinHandle::abort);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;
    use std::io::Read;

    fn fifo_in_temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("stdio-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("stdout");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        path
    }

    #[test]
    fn stdio_pipes_and_fifos_get_the_wider_buffer() {
        let (r, w) = pipe().unwrap();
        assert_eq!(room(&r), Some(PIPE_BYTES));
        assert_eq!(room(&w), Some(PIPE_BYTES), "both ends share one buffer");
        let out = fifo_in_temp("wide-out");
        assert_eq!(room(&fifo::open_output(&out).unwrap()), Some(PIPE_BYTES));
        let input = out.with_file_name("stdin");
        nix::unistd::mkfifo(&input, Mode::from_bits_truncate(0o600)).unwrap();
        let (reader, holder) = fifo::open_stdin(&input).unwrap();
        assert_eq!(room(&reader), Some(PIPE_BYTES));
        assert_eq!(room(&holder), Some(PIPE_BYTES));
        std::fs::remove_dir_all(out.parent().unwrap()).unwrap();
    }

    async fn open_now(paths: &StdioPaths, owner: (u32, u32)) -> (OpenedIo, ProcessStdio) {
        let (reaper, _) = Reaper::new();
        let cx = OpenContext {
            owner,
            process_id: "test",
            namespace: "test",
            reaper: &reaper,
        };
        let plan = uri::parse(paths).unwrap();
        open(&plan, &cx).await.unwrap()
    }

    /// Copies of a process whose stdout goes to the FIFO at `path`, and the process's ends.
    async fn stdout_to(path: &std::path::Path) -> (ProcessIo, ProcessStdio) {
        let paths = StdioPaths {
            stdout: path.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (opened, child) = open_now(&paths, (0, 0)).await;
        (opened.start("test").unwrap(), child)
    }

    #[tokio::test]
    async fn drain_gives_up_only_when_a_stream_stays_open_without_progress() {
        let path = fifo_in_temp("held");
        let (io, child) = stdout_to(&path).await;
        // The write end stands for a process that outlives the one that exited.
        let held = child.stdout.unwrap();
        assert!(!io.drained(Duration::from_millis(300)).await);
        drop(held);
        assert!(io.drained(Duration::from_millis(300)).await);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn the_process_ends_of_the_pipes_belong_to_the_io_owner() {
        let dir = fifo_in_temp("owner");
        let stdin = dir.with_file_name("stdin");
        nix::unistd::mkfifo(&stdin, Mode::from_bits_truncate(0o600)).unwrap();
        let paths = StdioPaths {
            stdin: stdin.to_string_lossy().into_owned(),
            stdout: dir.to_string_lossy().into_owned(),
            ..Default::default()
        };
        let (_opened, child) = open_now(&paths, (4321, 8765)).await;
        for fd in [child.stdin.unwrap(), child.stdout.unwrap()] {
            let st = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&fd)).unwrap();
            assert_eq!((st.st_uid, st.st_gid), (4321, 8765));
        }
        std::fs::remove_dir_all(dir.parent().unwrap()).unwrap();
    }

    #[tokio::test]
    async fn drain_waits_for_output_that_keeps_flowing() {
        let path = fifo_in_temp("flow");
        let (io, child) = stdout_to(&path).await;
        let mut consumer = std::fs::File::open(&path).unwrap();
        let writer = std::thread::spawn(move || {
            let mut out = std::fs::File::from(child.stdout.unwrap());
            // 1.5 s of output, longer than the idle limit but never idle.
            for _ in 0..30 {
                std::io::Write::write_all(&mut out, &[7u8; 4096]).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            let _ = consumer.read_to_end(&mut got);
            got.len()
        });
        assert!(io.drained(Duration::from_millis(500)).await);
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), 30 * 4096);
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
