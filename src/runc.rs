//! `runc` invocations. Knows runc's command line and its error log, nothing of containerd;
//! every command is spawned through the reaper so that its exit comes back to its caller.

use crate::error::{Error, Result};
use crate::memfile::MemFile;
use crate::reaper::Reaper;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;

#[derive(Clone)]
pub struct Runc {
    pub binary: PathBuf,
    /// runc's state root for this namespace, `<root>/<namespace>`.
    pub root: PathBuf,
    pub systemd_cgroup: bool,
    /// CRIU binary for checkpoint and restore (`--criu`); runc's own default when None.
    pub criu: Option<PathBuf>,
    reaper: Arc<Reaper>,
}

/// The standard streams a container process gets from runc; `None` is /dev/null.
#[derive(Default)]
pub struct ProcessStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// Where runc sends the master of the process's new pty (`--console-socket`).
    pub console_socket: Option<PathBuf>,
}

#[derive(Default)]
pub struct CreateOpts {
    pub pid_file: PathBuf,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
}

/// `runc checkpoint`: where the image goes, and what CRIU may leave as it is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckpointOpts {
    pub image_path: PathBuf,
    pub work_path: PathBuf,
    /// Stop the container once dumped (otherwise `--leave-running`).
    pub exit: bool,
    pub open_tcp: bool,
    pub external_unix_sockets: bool,
    pub terminal: bool,
    pub file_locks: bool,
    pub empty_namespaces: Vec<String>,
    /// `--manage-cgroups-mode` (soft, full, strict, ignore); runc's default when empty.
    pub cgroups_mode: String,
}

/// `runc restore --detach`: a created container from a checkpoint image.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RestoreOpts {
    pub bundle: PathBuf,
    pub image_path: PathBuf,
    pub work_path: PathBuf,
    pub pid_file: PathBuf,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
}

/// `runc exec --detach`: the process spec file and where runc writes the new pid.
pub struct ExecOpts {
    pub process_file: PathBuf,
    pub pid_file: PathBuf,
}

impl Runc {
    pub fn new(
        binary: &str,
        root: PathBuf,
        systemd_cgroup: bool,
        reaper: Arc<Reaper>,
    ) -> Result<Runc> {
        let binary = find_binary(binary)?;
        Ok(Runc {
            binary,
            root,
            systemd_cgroup,
            criu: None,
            reaper,
        })
    }

    /// A call with a JSON log of its own, so two calls at once never report each other's
    /// errors.
    fn command(&self) -> Result<Call> {
        let log = MemFile::new(c"runc-log")
            .map_err(|e| Error::Internal(format!("failed to make a log for runc: {e}")))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd.arg("--log")
            .arg(log.path())
            .args(["--log-format", "json"]);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        if let Some(criu) = &self.criu {
            cmd.arg("--criu").arg(criu);
        }
        Ok(Call { cmd, log })
    }

    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &CreateOpts,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.arg("create").arg("--bundle").arg(bundle);
        cmd.arg("--pid-file").arg(&opts.pid_file);
        if opts.no_pivot_root {
            cmd.arg("--no-pivot");
        }
        if opts.no_new_keyring {
            cmd.arg("--no-new-keyring");
        }
        if let Some(socket) = &stdio.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        self.run_with_stdio("create", cmd, stdio).await
    }

    /// Runs a command that hands `stdio` on to the container process it makes.
    async fn run_with_stdio(&self, what: &str, mut cmd: Call, stdio: ProcessStdio) -> Result<()> {
        cmd.stdin(stdio.stdin.map_or_else(Stdio::null, Stdio::from));
        cmd.stdout(stdio.stdout.map_or_else(Stdio::null, Stdio::from));
        cmd.stderr(stdio.stderr.map_or_else(Stdio::null, Stdio::from));
        self.run(what, cmd).await.map(drop)
    }

    /// Runs a process in the container and returns once it is started (`--detach`).
    pub async fn exec(&self, id: &str, opts: &ExecOpts, stdio: ProcessStdio) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["exec", "--detach", "--process"])
            .arg(&opts.process_file)
            .arg("--pid-file")
            .arg(&opts.pid_file);
        if let Some(socket) = &stdio.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        self.run_with_stdio("exec", cmd, stdio).await
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        self.simple(&["pause", id]).await
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        self.simple(&["resume", id]).await
    }

    /// `runc update --resources -`: `resources` is an OCI LinuxResources as JSON.
    pub async fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(["update", "--resources", "-", id]);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run_fed("update", cmd, resources).await.map(drop)
    }

    pub async fn checkpoint(&self, id: &str, opts: &CheckpointOpts) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(checkpoint_args(id, opts));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run("checkpoint", cmd).await.map(drop)
    }

    /// Restores a checkpointed container and returns once its init runs (`--detach`).
    pub async fn restore(&self, id: &str, opts: &RestoreOpts, stdio: ProcessStdio) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(restore_args(id, opts, stdio.console_socket.as_deref()));
        self.run_with_stdio("restore", cmd, stdio).await
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        self.simple(&["start", id]).await
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let signal = signal.to_string();
        let mut args = vec!["kill"];
        if all {
            args.push("--all");
        }
        args.extend([id, signal.as_str()]);
        self.simple(&args).await
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut args = vec!["delete"];
        if force {
            args.push("--force");
        }
        args.push(id);
        self.simple(&args).await
    }

    /// The pids of every process in the container.
    pub async fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let mut cmd = self.command()?;
        cmd.args(["ps", "--format", "json", id]);
        let out = self.run_captured("ps", cmd).await?;
        let text = String::from_utf8_lossy(&out);
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(trimmed)
            .map_err(|e| Error::Internal(format!("runc ps printed unreadable output: {e}")))
    }

    async fn simple(&self, args: &[&str]) -> Result<()> {
        let mut cmd = self.command()?;
        cmd.args(args);
        self.run_captured(args[0], cmd).await.map(drop)
    }

    /// Runs with stdout captured; stderr is captured too, for the error message.
    async fn run_captured(&self, what: &str, mut cmd: Call) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.run(what, cmd).await
    }

    async fn run(&self, what: &str, cmd: Call) -> Result<Vec<u8>> {
        self.run_fed(what, cmd, &[]).await
    }

    /// Runs `cmd`, writing `input` to its stdin when that is piped.
    async fn run_fed(&self, what: &str, mut cmd: Call, input: &[u8]) -> Result<Vec<u8>> {
        let (mut child, exited) = self.reaper.spawn(&mut cmd.cmd).map_err(|e| {
            Error::FailedPrecondition(format!(
                "failed to run runc binary {}: {e}",
                self.binary.display()
            ))
        })?;
        let stdin = child.stdin.take().map(OwnedFd::from);
        let stdout = child.stdout.take().map(OwnedFd::from);
        let stderr = child.stderr.take().map(OwnedFd::from);
        let (_, out, err) =
            tokio::join!(write_all(stdin, input), read_all(stdout), read_all(stderr));
        let exit = exited
            .await
            .map_err(|_| Error::Internal(format!("runc {what}: exit status lost")))?;
        if exit.status == 0 {
            return Ok(out);
        }
        let detail = cmd
            .log
            .contents()
            .ok()
            .and_then(|log| last_log_error(&log))
            .or_else(|| Some(String::from_utf8_lossy(&err).trim().to_string()))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("exit status {}", exit.status));
        // runc's own log line often already says "runc create failed: ...".
        let prefix = format!("runc {what} failed: ");
        let detail = detail.strip_prefix(&prefix).unwrap_or(&detail);
        Err(classify(format!("{prefix}{detail}")))
    }
}

/// One runc invocation: its command line and the log only it writes.
struct Call {
    cmd: Command,
    log: MemFile,
}

impl std::ops::Deref for Call {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.cmd
    }
}

impl std::ops::DerefMut for Call {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }
}

/// Feeds a child's stdin and closes it. A child that exits without reading it fails on its
/// own terms, so a write error is not the error to report.
async fn write_all(fd: Option<OwnedFd>, input: &[u8]) {
    use tokio::io::AsyncWriteExt;
    if let Some(fd) = fd {
        if let Ok(mut tx) = pipe::Sender::from_owned_fd(fd) {
            let _ = tx.write_all(input).await;
        }
    }
}

fn checkpoint_args(id: &str, opts: &CheckpointOpts) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["checkpoint".into()];
    args.extend(["--image-path".into(), opts.image_path.clone().into()]);
    args.extend(["--work-path".into(), opts.work_path.clone().into()]);
    let flags = [
        (!opts.exit, "--leave-running"),
        (opts.open_tcp, "--tcp-established"),
        (opts.external_unix_sockets, "--ext-unix-sk"),
        (opts.terminal, "--shell-job"),
        (opts.file_locks, "--file-locks"),
    ];
    args.extend(flags.iter().filter(|(on, _)| *on).map(|(_, f)| f.into()));
    for ns in &opts.empty_namespaces {
        args.extend(["--empty-ns".into(), ns.into()]);
    }
    if !opts.cgroups_mode.is_empty() {
        args.extend([
            "--manage-cgroups-mode".into(),
            opts.cgroups_mode.clone().into(),
        ]);
    }
    args.push(id.into());
    args
}

fn restore_args(
    id: &str,
    opts: &RestoreOpts,
    console_socket: Option<&Path>,
) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["restore".into(), "--detach".into()];
    args.extend(["--bundle".into(), opts.bundle.clone().into()]);
    args.extend(["--image-path".into(), opts.image_path.clone().into()]);
    args.extend(["--work-path".into(), opts.work_path.clone().into()]);
    args.extend(["--pid-file".into(), opts.pid_file.clone().into()]);
    if opts.no_pivot_root {
        args.push("--no-pivot".into());
    }
    if opts.no_new_keyring {
        args.push("--no-new-keyring".into());
    }
    if let Some(socket) = console_socket {
        args.extend(["--console-socket".into(), socket.into()]);
    }
    args.push(id.into());
    args
}

async fn read_all(fd: Option<OwnedFd>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(fd) = fd {
        if let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) {
            // A read error just ends what we know of the output.
            let _ = rx.read_to_end(&mut buf).await;
        }
    }
    buf
}

/// runc's answers for a process that is gone are NotFound to containerd.
fn classify(message: String) -> Error {
    let gone = [
        "not running",
        "process already finished",
        "no such process",
        "does not exist",
    ];
    if gone.iter().any(|g| message.contains(g)) {
        Error::NotFound(message)
    } else {
        Error::Internal(message)
    }
}

/// The message of the last error runc wrote to a call's JSON log.
fn last_log_error(log: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(log);
    text.lines().rev().find_map(|line| {
        let entry: serde_json::Value = serde_json::from_str(line).ok()?;
        let level = entry.get("level")?.as_str()?;
        if level == "error" || level == "fatal" {
            entry.get("msg")?.as_str().map(str::to_string)
        } else {
            None
        }
    })
}

/// Resolves a runc binary name against PATH, so that a missing binary is named clearly.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let missing = || {
        let searched = if name.contains('/') {
            String::new()
        } else {
            format!(" in PATH={}", std::env::var("PATH").unwrap_or_default())
        };
        Error::FailedPrecondition(format!("runc binary {name:?} not found{searched}"))
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(missing())
        };
    }
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
        .ok_or_else(missing)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_log_error_takes_the_newest_error_line() {
        let log = b"{\"level\":\"error\",\"msg\":\"old\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n\
            {\"level\":\"error\",\"msg\":\"container_linux.go: starting failed\"}\nnot json\n";
        assert_eq!(
            last_log_error(log).as_deref(),
            Some("container_linux.go: starting failed")
        );
        assert_eq!(last_log_error(b""), None);
    }

    #[test]
    fn a_missing_binary_is_a_clear_failed_precondition() {
        let err = find_binary("/nonexistent/runc").unwrap_err();
        assert!(matches!(&err, Error::FailedPrecondition(m) if m.contains("/nonexistent/runc")));
        assert!(find_binary("no-such-runc-binary-anywhere").is_err());
        assert!(find_binary("sh").is_ok());
    }

    fn words(args: Vec<std::ffi::OsString>) -> Vec<String> {
        args.into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn checkpoint_arguments_follow_the_options() {
        let mut opts = CheckpointOpts {
            image_path: "/img".into(),
            work_path: "/work".into(),
            ..Default::default()
        };
        assert_eq!(
            words(checkpoint_args("c1", &opts)),
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/work",
                "--leave-running",
                "c1"
            ]
        );
        opts.exit = true;
        opts.open_tcp = true;
        opts.external_unix_sockets = true;
        opts.terminal = true;
        opts.file_locks = true;
        opts.empty_namespaces = vec!["network".into(), "ipc".into()];
        opts.cgroups_mode = "soft".into();
        assert_eq!(
            words(checkpoint_args("c1", &opts)),
            [
                "checkpoint",
                "--image-path",
                "/img",
                "--work-path",
                "/work",
                "--tcp-established",
                "--ext-unix-sk",
                "--shell-job",
                "--file-locks",
                "--empty-ns",
                "network",
                "--empty-ns",
                "ipc",
                "--manage-cgroups-mode",
                "soft",
                "c1"
            ]
        );
    }

    #[test]
    fn restore_arguments_follow_the_options() {
        let opts = RestoreOpts {
            bundle: "/b".into(),
            image_path: "/img".into(),
            work_path: "/w".into(),
            pid_file: "/b/init.pid".into(),
            no_pivot_root: true,
            no_new_keyring: false,
        };
        assert_eq!(
            words(restore_args("c1", &opts, Some(Path::new("/tmp/pty")))),
            [
                "restore",
                "--detach",
                "--bundle",
                "/b",
                "--image-path",
                "/img",
                "--work-path",
                "/w",
                "--pid-file",
                "/b/init.pid",
                "--no-pivot",
                "--console-socket",
                "/tmp/pty",
                "c1"
            ]
        );
    }

    #[test]
    fn runc_errors_for_finished_processes_are_not_found() {
        assert!(matches!(
            classify("runc kill failed: container not running".into()),
            Error::NotFound(_)
        ));
        assert!(matches!(
            classify("runc start failed: boom".into()),
            Error::Internal(_)
        ));
    }
}
