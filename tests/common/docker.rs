//! Docker Engine as a front end: a private dockerd per test, against the test's own containerd
//! and namespace, with the runtime under test as its default runtime.
//!
//! dockerd runs with its own data root, exec root, socket, pid file and cgroup parent (the
//! test's namespace, so the leak checks see its cgroups), in a network namespace of its own;
//! no iptables, no bridge, the vfs storage driver (nothing mounted for images). The busybox
//! image comes in by `docker import`.

use super::*;
use crate::ensure;
use std::sync::OnceLock;

/// The name of the runtime under test in daemon.json; it is also the default runtime, as the
/// README tells users to make it.
pub const RUNTIME_NAME: &str = "under-test";
pub const DOCKER_IMAGE: &str = "busybox-shim-test:latest";

/// Docker's directory (bin/docker, sbin/dockerd), from scripts/docker.sh, once per run; an
/// error says why Docker cannot be had on this machine.
pub fn docker_dir() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/docker.sh");
        let out = Command::new(script)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("scripts/docker.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/docker.sh could not provide Docker Engine ({})",
                out.status
            ));
        }
        Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
    })
    .as_ref()
    .map(PathBuf::as_path)
    .map_err(Clone::clone)
}

/// A private dockerd, stopped (and its directories removed) on drop.
pub struct Docker {
    pub base: PathBuf,
    sock: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
}

impl Docker {
    /// Starts dockerd for the test, with `options` (daemon.json's `options` of the runtime under
    /// test) if any, and imports the busybox image.
    pub fn start(ctx: &Ctx, options: Option<serde_json::Value>) -> Result<Docker, String> {
        let dir = docker_dir()?.to_path_buf();
        let base = PathBuf::from(format!("{}-docker", ctx.daemon.base.display()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(&base).map_err(|e| format!("mkdir {}: {e}", base.display()))?;
        let mut runtime = serde_json::json!({ "runtimeType": ctx.runtime });
        if let Some(options) = options {
            runtime["options"] = options;
        }
        let config = serde_json::json!({
            "runtimes": { RUNTIME_NAME: runtime },
            "default-runtime": RUNTIME_NAME,
        });
        let config_path = base.join("daemon.json");
        fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let log = fs::File::create(base.join("dockerd.log")).map_err(|e| e.to_string())?;
        let sock = base.join("docker.sock");
        // A network namespace of its own: with no bridge, dockerd deletes any `docker0` it
        // sees, and the host's is not the test's to touch.
        let child = Command::new("unshare")
            .args(["--net", "--"])
            .arg(dir.join("sbin/dockerd"))
            .arg("--config-file")
            .arg(&config_path)
            .arg("--containerd")
            .arg(&ctx.daemon.address)
            .args(["--containerd-namespace", &ctx.ns])
            .args([
                "--containerd-plugins-namespace",
                &format!("{}-plugins", ctx.ns),
            ])
            .arg("--data-root")
            .arg(base.join("data"))
            .arg("--exec-root")
            .arg(base.join("exec"))
            .arg("--pidfile")
            .arg(base.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .args(["--cgroup-parent", &format!("/{}", ctx.ns)])
            .args(["--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--userland-proxy=false", "--storage-driver=vfs"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("failed to start dockerd: {e}"))?;
        let docker = Docker {
            base,
            sock,
            dir,
            child: Some(child),
        };
        eventually(Duration::from_secs(30), || {
            docker.ok(&["version"]).map(drop)
        })
        .map_err(|e| {
            format!(
                "dockerd did not answer ({e}); see its log:\n{}",
                docker.log()
            )
        })?;
        let rootfs = docker.base.join("rootfs.tar");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/busybox-image.py");
        run_ok(
            Command::new("python3")
                .arg(script)
                .arg("--rootfs")
                .arg(&rootfs),
        )?;
        let rootfs = rootfs.to_string_lossy().into_owned();
        docker.ok(&[
            "import",
            "-c",
            "ENV PATH=/bin",
            "-c",
            "CMD [\"sh\"]",
            &rootfs,
            DOCKER_IMAGE,
        ])?;
        Ok(docker)
    }

    /// The last lines of dockerd's log, for error messages.
    pub fn log(&self) -> String {
        let text = fs::read_to_string(self.base.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `docker ARGS` bounded by a KILL timeout.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.args(["-s", "KILL", "120"]);
        cmd.arg(self.dir.join("bin/docker"));
        cmd.arg("-H").arg(format!("unix://{}", self.sock.display()));
        cmd.args(args);
        cmd
    }

    /// `docker ARGS` without a timeout around it, for a client the test drives from a pty.
    pub fn unbounded(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.dir.join("bin/docker"));
        cmd.arg("-H").arg(format!("unix://{}", self.sock.display()));
        cmd.args(args);
        cmd
    }

    pub fn out(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| Output {
                status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
                stdout: Vec::new(),
                stderr: format!("failed to run docker: {e}").into_bytes(),
            })
    }

    /// stdout of `docker ARGS`, or an error with its status and stderr.
    pub fn ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.out(args);
        if !out.status.success() {
            return Err(format!(
                "docker {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `docker inspect -f FORMAT ID`, trimmed.
    pub fn inspect(&self, id: &str, format: &str) -> Result<String, String> {
        Ok(self.ok(&["inspect", "-f", format, id])?.trim().to_string())
    }

    /// Waits until `docker inspect -f FORMAT ID` prints `want`.
    pub fn wait_for(&self, id: &str, format: &str, want: &str, limit: Duration) -> TestResult {
        eventually(limit, || {
            let got = self.inspect(id, format)?;
            ensure!(got == want, "{id}: {format} is {got:?}, want {want:?}");
            Ok(())
        })
    }

    /// Removes every container (`docker rm -f`), then checks that nothing of them is left
    /// below containerd: no container or task in the namespace, no shim, no cgroup.
    pub fn remove_all_and_check(&self, ctx: &Ctx) -> TestResult {
        let ids = self.ok(&["ps", "-aq"])?;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(&ids);
            self.ok(&args)?;
        }
        eventually(Duration::from_secs(15), || {
            let left = ctx.ctr_ok(&["containers", "ls", "-q"])?;
            ensure!(
                left.trim().is_empty(),
                "containerd containers left: {left:?}"
            );
            let shims = shims_of_namespace(&ctx.ns);
            ensure!(shims.is_empty(), "shim processes left: {shims:?}");
            no_container_cgroups(&ctx.ns)
        })
    }
}

impl Drop for Docker {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child, Duration::from_secs(20));
        }
        let base = self.base.to_string_lossy().into_owned();
        for pid in processes_mentioning(&base) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        unmount_under(&self.base);
        let _ = fs::remove_dir_all(&self.base);
    }
}
