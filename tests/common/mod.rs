//! The end-to-end harness: a private containerd (own dirs, socket and config), the busybox
//! test image, one namespace per test, and cleanup that runs even when a test fails.

#![allow(dead_code)]

pub mod cri;
pub mod direct;
pub mod docker;
pub mod runner;
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
        Containerd::start_in(line, "")
    }

    /// A daemon of `line` beside another of the same line: `apart` tells their directories
    /// (and so their sockets) apart.
    pub fn start_apart(line: &Line, apart: &str) -> Result<Containerd, String> {
        Containerd::start_in(line, &format!("-{apart}"))
    }

    fn start_in(line: &Line, suffix: &str) -> Result<Containerd, String> {
        let base = PathBuf::from(format!(
            "/tmp/shim-e2e-{}-{}{suffix}",
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
        let ttrpc = ttrpc_of(&address);
        fs::write(&config, config_toml(&base, &address, &ttrpc)).map_err(|e| e.to_string())?;
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
        let config = self.config.clone();
        self.launch_with(&config)
    }

    fn launch_with(&mut self, config: &Path) -> Result<(), String> {
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
        let child = stdio_only(&mut Command::new(self.line.tool("containerd")))
            .arg("--config")
            .arg(config)
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

    /// Stops containerd if it runs, then starts it with its ttrpc socket (where shims send
    /// their events) at another path, so no shim reaches it until `release_events`: a test
    /// can subscribe to events first, with no race against a shim's next try. `restart`
    /// puts the usual config back.
    pub fn restart_with_events_held(&mut self) -> Result<(), String> {
        self.stop();
        let config = self.base.join("config-events-held.toml");
        let held = self.held_ttrpc();
        fs::write(&config, config_toml(&self.base, &self.address, &held))
            .map_err(|e| e.to_string())?;
        self.launch_with(&config)
    }

    /// Links the shims' ttrpc path to the socket `restart_with_events_held` made, in one
    /// rename, so every shim's next try reaches containerd.
    pub fn release_events(&self) -> Result<(), String> {
        let link = self.base.join("ttrpc-link");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(self.held_ttrpc(), &link)
            .and_then(|()| fs::rename(&link, self.ttrpc_address()))
            .map_err(|e| format!("linking the ttrpc socket: {e}"))
    }

    fn held_ttrpc(&self) -> PathBuf {
        self.base.join("held.ttrpc")
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
        ttrpc_of(&self.address)
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

/// Where shims send containerd their events: the gRPC socket's path with ".ttrpc" added.
fn ttrpc_of(address: &Path) -> PathBuf {
    let mut path = address.as_os_str().to_owned();
    path.push(".ttrpc");
    PathBuf::from(path)
}

/// containerd's config: its own root, state and sockets, no CRI; nothing shared with the host's
/// containerd (the opt plugin's directory is the daemon's own, NRI's socket is off).
fn config_toml(base: &Path, address: &Path, ttrpc: &Path) -> String {
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{address}"
[ttrpc]
  address = "{ttrpc}"
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
        ttrpc = ttrpc.display(),
        opt = base.join("opt").display(),
    )
}

/// Starts `cmd` with nothing but its stdio, as a service manager starts a daemon: whatever the
/// test runner inherited from its own parent (a CI agent's pipes, say) stays out of the
/// daemons and shims under test, so the fd checks see only what they made.
pub fn stdio_only(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: close_range(2) is async-signal-safe; CLOSE_RANGE_CLOEXEC (1 << 2) only marks
    // the fds from 3 up, so exec closes them and std's own exec-error pipe still works.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 1u32 << 2);
            Ok(())
        })
    }
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
    /// What the host held before the test: anything more afterwards is the test's leak.
    before: HostLeftovers,
}

/// Host-wide places a test can leave something in, beyond its namespace: shared by every
/// containerd (ours, CRI's k8s.io, Docker's), so they are compared before and after a test.
#[derive(Default, Clone, PartialEq, Debug)]
pub struct HostLeftovers {
    /// Console socket dirs shims make for terminals: /tmp/pty-XXXXXX (ours), /tmp/ptyNNNN (Go).
    ptys: Vec<PathBuf>,
    /// Container state dirs under runc's default root, /run/containerd/runc/<ns>/<id>.
    runc_states: Vec<PathBuf>,
    /// ctr's FIFO dirs, /run/containerd/fifo/<n>; `ctr tasks rm` removes a task's.
    fifo_dirs: Vec<PathBuf>,
    /// Shim sockets, /run/containerd/s/<hash>.
    shim_sockets: Vec<PathBuf>,
}

pub const RUNC_ROOT: &str = "/run/containerd/runc";
const FIFO_DIR: &str = "/run/containerd/fifo";
const SHIM_SOCKETS: &str = "/run/containerd/s";

fn entries(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| keep(&e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

impl HostLeftovers {
    pub fn now() -> HostLeftovers {
        HostLeftovers {
            ptys: entries(Path::new("/tmp"), |n| n.starts_with("pty")),
            runc_states: entries(Path::new(RUNC_ROOT), |_| true)
                .iter()
                .flat_map(|ns| entries(ns, |_| true))
                .collect(),
            fifo_dirs: entries(Path::new(FIFO_DIR), |_| true),
            shim_sockets: entries(Path::new(SHIM_SOCKETS), |_| true),
        }
    }

    /// What is here now and was not in `before`.
    pub fn since(before: &HostLeftovers) -> HostLeftovers {
        let now = HostLeftovers::now();
        let new = |now: Vec<PathBuf>, old: &[PathBuf]| -> Vec<PathBuf> {
            now.into_iter().filter(|p| !old.contains(p)).collect()
        };
        HostLeftovers {
            ptys: new(now.ptys, &before.ptys),
            runc_states: new(now.runc_states, &before.runc_states),
            fifo_dirs: new(now.fifo_dirs, &before.fifo_dirs),
            shim_sockets: new(now.shim_sockets, &before.shim_sockets),
        }
    }

    /// Removes what is listed (runc's state through `runc delete --force`, which also kills
    /// a process left in it), and says what it was; None when nothing is listed.
    pub fn remove(&self) -> Option<String> {
        if *self == HostLeftovers::default() {
            return None;
        }
        for state in &self.runc_states {
            if let (Some(root), Some(id)) = (state.parent(), state.file_name()) {
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(root)
                    .args(["delete", "--force"])
                    .arg(id)
                    .output();
            }
            let _ = fs::remove_dir_all(state);
        }
        for dir in self.ptys.iter().chain(&self.fifo_dirs) {
            let _ = fs::remove_dir_all(dir);
        }
        for socket in &self.shim_sockets {
            let _ = fs::remove_file(socket);
        }
        Some(format!("{self:?}"))
    }
}

impl<'a> Ctx<'a> {
    pub fn new(
        daemon: &'a mut Containerd,
        test: &str,
        runtime: &'static str,
    ) -> Result<Ctx<'a>, String> {
        let short = if runtime == OURS { "rust" } else { "go" };
        // The run's pid keeps a run clear of what a killed earlier run left in runc's root.
        let suffix = format!("-{short}-{}-{}", daemon.line.tag(), std::process::id());
        // containerd's identifier rule allows 76 characters: a long test name is cut.
        let name = test.replace('_', "-");
        let name = &name[..name.len().min(76usize.saturating_sub(suffix.len()))];
        let ns = format!("{}{suffix}", name.trim_end_matches('-'));
        daemon.import_image(&ns)?;
        Ok(Ctx {
            daemon,
            ns,
            runtime,
            ids: Vec::new(),
            before: HostLeftovers::now(),
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

    /// Where the test's detached execs keep their FIFOs (ctr leaves those behind).
    pub fn exec_fifo_dir(&self) -> PathBuf {
        self.daemon.base.join(format!("exec-fifos-{}", self.ns))
    }

    /// The pid of `id`'s init, once `ctr tasks ls` lists one.
    pub fn listed_pid(&self, id: &str) -> Result<i32, String> {
        eventually(Duration::from_secs(10), || {
            self.task_pid(id)?
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("task {id} not listed with a pid"))
        })
    }

    /// Checks the test removed what it made, then removes whatever is left and checks nothing
    /// of that stays: no shim process, mount, shim socket, runc state, FIFO or console dir,
    /// or container cgroup. A container still listed is a leak of the test's own (a `--rm`
    /// that left it, a test that forgot it), reported before anything is forced.
    pub fn clean_and_check(&mut self) -> TestResult {
        let containers = self.ctr_ok(&["containers", "ls", "-q"]);
        let tasks = self.ctr_ok(&["tasks", "ls", "-q"]).unwrap_or_default();
        for id in tasks.split_whitespace() {
            let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = self.ctr(&["tasks", "rm", "-f", id]);
        }
        let containers = containers.unwrap_or_default();
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
        let left = HostLeftovers::since(&self.before).remove();
        let _ = fs::remove_dir_all(self.exec_fifo_dir());
        // runc makes its namespace directory and never removes it.
        let _ = fs::remove_dir(Path::new(RUNC_ROOT).join(&self.ns));
        let cgroups = namespace_cgroups(&self.ns);
        let leaked: Vec<&PathBuf> = cgroups
            .iter()
            .filter(|c| c.depth > 0)
            .map(|c| &c.path)
            .collect();
        let leaked = format!("{leaked:?}");
        remove_cgroups(cgroups);
        let containers: Vec<&str> = containers.split_whitespace().collect();
        ensure!(
            containers.is_empty(),
            "the test left containers behind: {containers:?}"
        );
        shims?;
        ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        if let Some(left) = left {
            return Err(format!("left on the host: {left}"));
        }
        ensure!(leaked == "[]", "container cgroups left: {leaked}");
        Ok(())
    }

    /// Ends a container the way a user would: SIGKILL, wait for the exit, delete the task
    /// (which also removes ctr's FIFO dir) and the container. Every step must succeed.
    pub fn remove(&self, id: &str) -> TestResult {
        if self.task_status(id)?.is_some() {
            if self.task_status(id)?.as_deref() != Some("STOPPED") {
                self.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", id])?;
                self.wait_status(id, "STOPPED")?;
            }
            self.ctr_ok(&["tasks", "rm", id])?;
        }
        self.ctr_ok(&["containers", "rm", id])?;
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

/// A shell command line that appends `== <label>` and the fds its shell holds, one
/// `N -> target` a line, to `log`. Python lists them, as a child of the shell: it inherits
/// what the shell holds apart from the shell's own close-on-exec fds (its script), and no
/// redirection changes the table it lists.
pub fn fd_lister(log: &Path, label: &str) -> String {
    let lister = "import os, sys
fds = []
for n in sorted(os.listdir('/proc/self/fd'), key=int):
    try:
        fds.append(n + ' -> ' + os.readlink('/proc/self/fd/' + n))
    except OSError:
        pass
open(sys.argv[1], 'a').write('== ' + sys.argv[2] + chr(10) + ''.join(f + chr(10) for f in fds))";
    format!("python3 -c \"{lister}\" '{}' \"{label}\"", log.display())
}

/// The (fd, target) pairs of one `fd_lister` entry (its lines after the label).
pub fn fd_listing(entry: &str) -> Vec<(u32, String)> {
    entry
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (fd, target) = l.split_once(" -> ")?;
            Some((fd.trim().parse().ok()?, target.to_string()))
        })
        .collect()
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
