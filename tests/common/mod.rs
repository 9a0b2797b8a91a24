//! The end-to-end harness: a private containerd (own dirs, socket and config), the busybox
//! test image, one namespace per test, and cleanup that runs even when a test fails.

#![allow(dead_code)]

pub mod cri;
pub mod direct;
pub mod docker;
pub mod tty;

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub type TestResult = Result<(), String>;

pub const IMAGE: &str = "docker.io/library/busybox-shim-test:latest";
pub const OURS: &str = "io.containerd.rustshim.v1";
pub const GO_SHIM: &str = "io.containerd.runc.v2";

/// The shim binary under test: `SHIM_UNDER_TEST` when set (scripts/test.sh points it at the
/// release binary it installs), else the one cargo built beside the tests.
pub fn shim_bin() -> String {
    std::env::var("SHIM_UNDER_TEST")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_containerd-shim-rust-v1").to_string())
}

/// Fails the test with a message when the condition does not hold.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// What must be on the machine; the suite fails, naming what is missing, without it.
pub fn check_prerequisites() -> Result<(), String> {
    if unsafe { libc::geteuid() } != 0 {
        return Err("the end-to-end tests need root (they run containers)".into());
    }
    for bin in [
        "containerd",
        "ctr",
        "runc",
        "containerd-shim-runc-v2",
        "python3",
        "timeout",
    ] {
        if !on_path(bin) {
            return Err(format!("{bin} is not installed (run scripts/install.sh)"));
        }
    }
    if !Path::new("/bin/busybox").exists() {
        return Err("/bin/busybox is missing (apt-get install busybox-static)".into());
    }
    Ok(())
}

pub fn on_path(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}

/// A containerd release line and the directory with its containerd, ctr and Go shim, with the
/// OCI runtime its shims run as `runc`.
#[derive(Clone, Debug)]
pub struct Line {
    /// The release line: "1.6", "1.7", "2.1".
    pub name: String,
    pub bin: PathBuf,
    pub oci: Oci,
}

/// What the shims of a line find as `runc` on containerd's PATH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oci {
    Runc,
    /// crun, through a `runc` wrapper placed first on containerd's PATH.
    Crun,
}

/// crun as `runc`. crun 1.8 refuses a hybrid cgroup host whose unified hierarchy holds a
/// controller (hugetlb on this machine); in a mount namespace of its own, where that hierarchy
/// is unmounted (the host's mounts are untouched), it sees cgroup v1 and runs.
const CRUN_AS_RUNC: &str = "#!/bin/sh\nexec unshare --mount --propagation private sh -c \\\n  \
    'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"' crun \"$@\"\n";

impl Line {
    /// Provides the line through scripts/containerd.sh (fetched once, then cached). A label
    /// `1.6+crun` is that line with crun as its shims' runtime.
    pub fn provide(label: &str) -> Result<Line, String> {
        let (name, oci) = match label.split_once('+') {
            None => (label, Oci::Runc),
            Some((name, "crun")) => (name, Oci::Crun),
            Some(_) => return Err(format!("unknown runtime in {label:?} (known: +crun)")),
        };
        if oci == Oci::Crun && !on_path("crun") {
            return Err("crun is not installed (scripts/install.sh installs Debian's)".into());
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/containerd.sh");
        let out = Command::new(script)
            .arg(name)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/containerd.sh {name}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/containerd.sh {name} failed ({})",
                out.status
            ));
        }
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        let line = Line {
            name: name.to_string(),
            bin,
            oci,
        };
        line.check_versions()?;
        Ok(line)
    }

    /// Checks that the line's containerd, ctr and Go shim are that line's own, so a line
    /// never falls back to another's binaries.
    fn check_versions(&self) -> Result<(), String> {
        for (tool, flag) in [
            ("containerd", "--version"),
            ("ctr", "--version"),
            ("containerd-shim-runc-v2", "-v"),
        ] {
            let path = self.tool(tool);
            let out = Command::new(&path)
                .arg(flag)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("containerd {}: {}: {e}", self.name, path.display()))?;
            let text = String::from_utf8_lossy(&out.stdout);
            let want = format!(" {}.", self.name);
            let version = text.split_whitespace().find(|w| w.starts_with(&want[1..]));
            ensure!(
                version.is_some(),
                "containerd {}: {} is not of that line: {:?}",
                self.name,
                path.display(),
                text.trim()
            );
        }
        Ok(())
    }

    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// A namespace-safe tag: 1.7 -> v17, 1.6+crun -> v16crun.
    pub fn tag(&self) -> String {
        let oci = if self.oci == Oci::Crun { "crun" } else { "" };
        format!("v{}{oci}", self.name.replace('.', ""))
    }

    /// As the report names the line: 1.7, 1.6+crun.
    pub fn label(&self) -> String {
        match self.oci {
            Oci::Runc => self.name.clone(),
            Oci::Crun => format!("{}+crun", self.name),
        }
    }
}

/// A private containerd daemon.
pub struct Containerd {
    pub line: Line,
    pub base: PathBuf,
    pub address: PathBuf,
    config: PathBuf,
    image_archive: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    pub fn start(line: &Line) -> Result<Containerd, String> {
        let base = PathBuf::from(format!(
            "/tmp/shim-e2e-{}-{}",
            std::process::id(),
            line.tag()
        ));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("bin")).map_err(|e| format!("mkdir {base:?}: {e}"))?;
        // containerd finds io.containerd.rustshim.v1 as containerd-shim-rustshim-v1 on PATH:
        // point it at the binary under test, not at whatever is installed.
        std::os::unix::fs::symlink(shim_bin(), base.join("bin/containerd-shim-rustshim-v1"))
            .map_err(|e| format!("symlink shim: {e}"))?;
        if line.oci == Oci::Crun {
            let runc = base.join("bin/runc");
            fs::write(&runc, CRUN_AS_RUNC).map_err(|e| format!("{}: {e}", runc.display()))?;
            let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            fs::set_permissions(&runc, mode).map_err(|e| e.to_string())?;
        }
        let address = base.join("c.sock");
        let config = base.join("config.toml");
        fs::write(&config, config_toml(&base, &address)).map_err(|e| e.to_string())?;
        let image_archive = base.join("busybox.oci.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image.py");
        run_ok(
            Command::new("python3")
                .arg(script)
                .arg(&image_archive)
                .arg(IMAGE),
        )?;
        let mut daemon = Containerd {
            line: line.clone(),
            base,
            address,
            config,
            image_archive,
            child: None,
        };
        daemon.launch()?;
        Ok(daemon)
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.base.join("containerd.log"))
            .map_err(|e| e.to_string())?;
        // Our shim's alias first, then this line's own Go shim.
        let path = format!(
            "{}:{}:{}",
            self.base.join("bin").display(),
            self.line.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let child = Command::new(self.line.tool("containerd"))
            .arg("--config")
            .arg(&self.config)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("failed to start containerd: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = self.ctr("default", &["version"]);
            if out.status.success() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err(format!(
            "containerd did not answer; see {}",
            self.base.join("containerd.log").display()
        ))
    }

    /// Stops the daemon (SIGTERM, then SIGKILL); its shims keep running, as in production.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(15));
        }
    }

    /// Answers, or is started again; an error names a containerd that stays down.
    /// containerd's own pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn ensure_running(&mut self) -> Result<(), String> {
        if self.ctr("default", &["version"]).status.success() {
            return Ok(());
        }
        self.restart().map_err(|e| {
            format!(
                "containerd {} is down and did not restart: {e}",
                self.line.name
            )
        })
    }

    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.launch()
    }

    pub fn ctr(&self, ns: &str, args: &[&str]) -> Output {
        self.ctr_command(ns, args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("failed to run ctr: {e}").into_bytes(),
            })
    }

    /// `ctr` bounded by a KILL timeout: ctr forwards TERM to the container.
    pub fn ctr_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "180"])
            .arg(self.line.tool("ctr"))
            .arg("--address")
            .arg(&self.address)
            .args(["--namespace", ns])
            .args(args);
        cmd
    }

    pub fn ctr_ok(&self, ns: &str, args: &[&str]) -> Result<String, String> {
        let out = self.ctr(ns, args);
        if !out.status.success() {
            return Err(format!(
                "ctr {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn import_image(&self, ns: &str) -> Result<(), String> {
        let archive = self.image_archive.to_string_lossy().into_owned();
        self.ctr_ok(ns, &["images", "import", &archive]).map(drop)
    }

    pub fn ttrpc_address(&self) -> PathBuf {
        self.base.join("c.sock.ttrpc")
    }

    /// Where containerd keeps the bundles of a namespace.
    pub fn bundles(&self, ns: &str) -> PathBuf {
        self.base
            .join("state/io.containerd.runtime.v2.task")
            .join(ns)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
        let address = self.address.to_string_lossy().into_owned();
        for pid in shim_pids(|args| args.iter().any(|a| *a == address)) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_under(&self.base);
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// containerd's config: its own root, state and sockets, no CRI; nothing shared with the host's
/// containerd (the opt plugin's directory is the daemon's own, NRI's socket is off).
fn config_toml(base: &Path, address: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{address}.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
"#,
        root = base.join("root").display(),
        state = base.join("state").display(),
        address = address.display(),
        opt = base.join("opt").display(),
    )
}

/// Stops a daemon: SIGTERM, then SIGKILL when it has not ended after `grace`.
pub fn terminate(mut child: Child, grace: Duration) {
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn run_ok(cmd: &mut Command) -> Result<String, String> {
    run_with_input(cmd, b"")
}

/// Runs `cmd` with `input` on its stdin; its stdout, or an error with its stderr.
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<String, String> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("failed to run {cmd:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("writing stdin of {cmd:?}: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Removes what a killed earlier run of the suite left: its daemons and shims, mounts and
/// scratch directories (each named with the pid of a run that is gone).
pub fn sweep_earlier_runs() {
    let Ok(dir) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in dir.filter_map(|e| e.ok()) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix("shim-e2e-")
            .or_else(|| name.strip_prefix("shim-direct-"))
        else {
            continue;
        };
        let pid: i32 = rest
            .split('-')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if pid <= 0 || pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        let text = path.to_string_lossy().into_owned();
        for left in processes_mentioning(&text) {
            unsafe { libc::kill(left, libc::SIGKILL) };
        }
        unmount_under(&path);
        let _ = fs::remove_dir_all(&path);
        println!("removed what an earlier run left in {text}");
    }
}

/// Pids of processes with an argument that contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|raw| String::from_utf8_lossy(&raw).contains(needle))
        })
        .collect()
}

/// Pids of containerd shim processes whose arguments match.
pub fn shim_pids(matches: impl Fn(&[&str]) -> bool) -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let text = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
            args.first().is_some_and(|a| a.contains("containerd-shim")) && matches(&args)
        })
        .collect()
}

/// Shim processes serving namespace `ns` (the daemon copies carry `-namespace ns`).
pub fn shims_of_namespace(ns: &str) -> Vec<i32> {
    shim_pids(|args| args.windows(2).any(|w| w[0] == "-namespace" && w[1] == ns))
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut found: Vec<String> = fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .filter(|m| m == &prefix || m.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

pub fn unmount_under(dir: &Path) {
    for m in mounts_under(dir) {
        let c = std::ffi::CString::new(m).unwrap_or_default();
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid)
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()
                .map(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Polls `check` until it returns Ok or the time is up; returns the last error.
pub fn eventually<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One test's world: its daemon, namespace and runtime; cleans its namespace up on drop.
pub struct Ctx<'a> {
    pub daemon: &'a mut Containerd,
    pub ns: String,
    pub runtime: &'static str,
    ids: Vec<String>,
    /// Console socket dirs (/tmp/pty*) there before the test: any other is the test's leak.
    ptys_before: Vec<PathBuf>,
}

/// The console socket directories shims make for terminals: /tmp/pty-XXXXXX (ours) and
/// /tmp/ptyNNNN (the Go shim's).
fn console_dirs() -> Vec<PathBuf> {
    fs::read_dir("/tmp")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("pty"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

impl<'a> Ctx<'a> {
    pub fn new(
        daemon: &'a mut Containerd,
        test: &str,
        runtime: &'static str,
    ) -> Result<Ctx<'a>, String> {
        let short = if runtime == OURS { "rust" } else { "go" };
        // The run's pid keeps a run clear of what a killed earlier run left in runc's root.
        let ns = format!(
            "{}-{short}-{}-{}",
            test.replace('_', "-"),
            daemon.line.tag(),
            std::process::id()
        );
        daemon.import_image(&ns)?;
        Ok(Ctx {
            daemon,
            ns,
            runtime,
            ids: Vec::new(),
            ptys_before: console_dirs(),
        })
    }

    /// A container id for this test, remembered for the leak checks.
    pub fn id(&mut self, name: &str) -> String {
        let id = format!("{name}-{}", self.ids.len());
        self.ids.push(id.clone());
        id
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.daemon.ctr(&self.ns, args)
    }

    pub fn ctr_ok(&self, args: &[&str]) -> Result<String, String> {
        self.daemon.ctr_ok(&self.ns, args)
    }

    pub fn ctr_command(&self, args: &[&str]) -> Command {
        self.daemon.ctr_command(&self.ns, args)
    }

    /// ctr without a `timeout` around it, for a test that kills the client itself.
    pub fn ctr_unbounded(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.daemon.line.tool("ctr"));
        cmd.arg("--address")
            .arg(&self.daemon.address)
            .args(["--namespace", &self.ns])
            .args(args);
        cmd
    }

    /// A long-running ctr (events, attach) whose stdout lines arrive on the receiver; the
    /// caller kills it. Not under `timeout`: killing that would leave ctr holding the pipe.
    pub fn ctr_streaming(
        &self,
        args: &[&str],
    ) -> Result<(Child, std::sync::mpsc::Receiver<String>), String> {
        let mut child = self
            .ctr_unbounded(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ctr {}: {e}", args.join(" ")))?;
        let stdout = child.stdout.take().ok_or("ctr has no stdout")?;
        Ok((child, lines_in_background(stdout)))
    }

    /// `ctr run --runtime R <extra> IMAGE ID cmd...` as argument vector.
    pub fn run_args<'b>(&'b self, extra: &[&'b str], id: &'b str, cmd: &[&'b str]) -> Vec<&'b str> {
        let mut args = vec!["run", "--runtime", self.runtime];
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.push(id);
        args.extend_from_slice(cmd);
        args
    }

    /// The status column of `ctr tasks ls` for `id`, or None when it is not listed. A failing
    /// `ctr` (containerd down, say) is an error, never "not listed".
    pub fn task_status(&self, id: &str) -> Result<Option<String>, String> {
        let out = self.ctr_ok(&["tasks", "ls"])?;
        Ok(out.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.last().unwrap_or(&"").to_string())
        }))
    }

    /// The pid column of `ctr tasks ls` for `id`; an error when `ctr` fails.
    pub fn task_pid(&self, id: &str) -> Result<Option<i32>, String> {
        let out = self.ctr_ok(&["tasks", "ls"])?;
        Ok(out.lines().skip(1).find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&id))
                .then(|| cols.get(1)?.parse().ok())
                .flatten()
        }))
    }

    /// Removes every task and container of the namespace, then checks nothing of them is left:
    /// no shim process, no mount, no shim socket.
    pub fn clean_and_check(&mut self) -> TestResult {
        let tasks = self.ctr_ok(&["tasks", "ls", "-q"]).unwrap_or_default();
        for id in tasks.split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
        }
        let containers = self.ctr_ok(&["containers", "ls", "-q"]).unwrap_or_default();
        for id in containers.split_whitespace() {
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
            let _ = self.ctr(&["containers", "rm", id]);
        }
        let shims = eventually(Duration::from_secs(10), || {
            let left = shims_of_namespace(&self.ns);
            ensure!(left.is_empty(), "shim processes left: {left:?}");
            Ok(())
        });
        let bundles = self.daemon.bundles(&self.ns);
        let mounts = mounts_under(&bundles);
        unmount_under(&bundles);
        for pid in shims_of_namespace(&self.ns) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        let address = self.daemon.address.to_string_lossy().into_owned();
        let sockets: Vec<String> = self
            .ids
            .iter()
            .map(|id| shim::bootstrap::socket_address(&address, &self.ns, id))
            .filter(|a| shim::bootstrap::socket_path(a).exists())
            .collect();
        for s in &sockets {
            let _ = fs::remove_file(shim::bootstrap::socket_path(s));
        }
        shims?;
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        ensure!(sockets.is_empty(), "shim sockets left: {sockets:?}");
        let ptys: Vec<PathBuf> = console_dirs()
            .into_iter()
            .filter(|d| !self.ptys_before.contains(d))
            .collect();
        for d in &ptys {
            let _ = fs::remove_dir_all(d);
        }
        ensure!(ptys.is_empty(), "console socket dirs left: {ptys:?}");
        let cgroups = namespace_cgroups(&self.ns);
        let leaked: Vec<&PathBuf> = cgroups
            .iter()
            .filter(|c| c.depth > 0)
            .map(|c| &c.path)
            .collect();
        let leaked = format!("{leaked:?}");
        remove_cgroups(cgroups);
        ensure!(leaked == "[]", "container cgroups left: {leaked}");
        Ok(())
    }
}

/// A cgroup directory under a namespace's cgroup (`/<ns>` in each v1 hierarchy, where ctr
/// puts `/<ns>/<id>`); depth 0 is the namespace's own, which runc leaves behind empty.
pub struct CgroupDir {
    pub path: PathBuf,
    pub depth: usize,
}

/// Every cgroup directory of namespace `ns`, deepest first.
pub fn namespace_cgroups(ns: &str) -> Vec<CgroupDir> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<CgroupDir>) {
        if let Ok(entries) = fs::read_dir(dir) {
            for e in entries.filter_map(|e| e.ok()) {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&e.path(), depth + 1, out);
                }
            }
        }
        out.push(CgroupDir {
            path: dir.to_path_buf(),
            depth,
        });
    }
    let mut out = Vec::new();
    if let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") {
        for h in hierarchies.filter_map(|e| e.ok()) {
            let dir = h.path().join(ns);
            if dir.is_dir() {
                walk(&dir, 0, &mut out);
            }
        }
    }
    out
}

/// Fails when namespace `ns` still has a container's cgroup (below its own, which runc
/// leaves empty).
pub fn no_container_cgroups(ns: &str) -> Result<(), String> {
    let left: Vec<PathBuf> = namespace_cgroups(ns)
        .into_iter()
        .filter(|c| c.depth > 0)
        .map(|c| c.path)
        .collect();
    ensure!(left.is_empty(), "container cgroups left: {left:?}");
    Ok(())
}

/// Writes `dir/logging-runc`, a runc that appends each of its command lines to
/// `dir/calls.log` and then runs runc; returns (wrapper, log).
pub fn logging_runc(dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let wrapper = dir.join("logging-runc");
    let log = dir.join("calls.log");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> {}\nexec runc \"$@\"\n",
        log.display()
    );
    fs::write(&wrapper, script).map_err(|e| format!("{}: {e}", wrapper.display()))?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    fs::set_permissions(&wrapper, mode).map_err(|e| e.to_string())?;
    Ok((wrapper, log))
}

/// Removes cgroup directories (deepest first); one that still has processes stays.
pub fn remove_cgroups(dirs: Vec<CgroupDir>) {
    for d in dirs {
        let _ = fs::remove_dir(&d.path);
    }
}

/// Reads a child's whole stdout on a thread, so a large output never blocks the child.
pub fn read_in_background(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Sends each line a child prints as it comes.
pub fn lines_in_background(r: impl Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// One event from `ctr events`: its topic and its payload as JSON (zero values are omitted).
#[derive(Debug, Clone)]
pub struct Event {
    pub topic: String,
    pub body: serde_json::Value,
}

impl Event {
    fn parse(line: &str) -> Option<Event> {
        let topic = line.split_whitespace().find(|w| w.starts_with('/'))?;
        let body = serde_json::from_str(&line[line.find('{')?..]).ok()?;
        Some(Event {
            topic: topic.to_string(),
            body,
        })
    }

    pub fn container(&self) -> &str {
        self.body["container_id"].as_str().unwrap_or("")
    }

    /// The process id of an exit event (exec id, or the container id for init), or the exec
    /// id of an exec event.
    pub fn process(&self) -> &str {
        self.body["id"]
            .as_str()
            .or_else(|| self.body["exec_id"].as_str())
            .unwrap_or("")
    }

    pub fn u64(&self, field: &str) -> u64 {
        self.body[field].as_u64().unwrap_or(0)
    }
}

/// A live `ctr events` subscription, killed on drop.
pub struct Events {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Events {
    /// The events of container `id`, in arrival order, until `enough` says so or `limit`
    /// passes; what came by then.
    pub fn collect(
        &self,
        id: &str,
        limit: Duration,
        enough: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        self.collect_of(&[id], limit, enough)
    }

    /// The events of any of the containers `ids`, in arrival order, until `enough` says so
    /// or `limit` passes.
    pub fn collect_of(
        &self,
        ids: &[&str],
        limit: Duration,
        enough: impl Fn(&[Event]) -> bool,
    ) -> Vec<Event> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        while !enough(&got) {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            if let Some(e) = Event::parse(&line).filter(|e| ids.contains(&e.container())) {
                got.push(e);
            }
        }
        got
    }
}

impl Ctx<'_> {
    /// Subscribes to the namespace's events; returns once the subscription is live (a label
    /// change on the namespace, published as an event, has come through it).
    pub fn events(&self) -> Result<Events, String> {
        let (child, lines) = self.ctr_streaming(&["events"])?;
        let events = Events { child, lines };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let mark = format!("sync{nanos}");
        let label = format!("shim-test-sync={mark}");
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            self.ctr_ok(&["namespaces", "label", &self.ns, &label])?;
            while let Ok(line) = events.lines.recv_timeout(Duration::from_millis(300)) {
                if line.contains(&mark) {
                    return Ok(events);
                }
            }
        }
        Err("ctr events never showed the namespace label change".into())
    }

    /// Waits until the task `id` has the status `want` in `ctr tasks ls`.
    pub fn wait_status(&self, id: &str, want: &str) -> TestResult {
        eventually(Duration::from_secs(15), || match self.task_status(id)? {
            Some(s) if s == want => Ok(()),
            other => Err(format!("task {id} status {other:?}, want {want}")),
        })
    }
}
