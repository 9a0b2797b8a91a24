//! A container: its bundle, its root filesystem mounts, its runc, its init process and its
//! exec processes by id. It acts (mounts, runs runc, signals, waits for its processes); it does
//! not validate requests beyond what only it knows, and it does not publish events.

use crate::cgroups::oom::OomWatch;
use crate::cgroups::Cgroup;
use crate::error::{Error, Result};
use crate::memfile::MemFile;
use crate::mount;
use crate::options::RuntimeOptions;
use crate::process::{Kind, Process, Status};
use crate::protos::mount::Mount;
use crate::reaper::Reaper;
use crate::runc::{CheckpointOpts, CreateOpts, ExecOpts, RestoreOpts, Runc};
use crate::stdio::{self, OpenContext, Plan, StdioPaths};
use protobuf::well_known_types::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// The bundle file where `delete` finds the runtime options after a shim has died.
pub const OPTIONS_FILE: &str = "options.json";
pub const INIT_PID_FILE: &str = "init.pid";
/// Left in the bundle once `runc delete` of the container has succeeded: containerd's
/// `<shim> delete` after a shim that exited cleanly then has no runc container to remove and
/// skips a runc run (about 5 ms of CPU and a process per container).
pub const RUNC_DELETED_FILE: &str = "runc-deleted";

/// How long the output of an exited process may make no progress before its exit is reported
/// anyway; output that keeps flowing is always waited for (invariant 2).
const OUTPUT_IDLE_LIMIT: Duration = Duration::from_secs(2);
/// How long an init's exit waits for the exits of the execs that die with it.
const EXEC_EXIT_WAIT: Duration = Duration::from_secs(10);

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// Set when the shim mounted the rootfs and so must unmount it.
    mounted_rootfs: Option<PathBuf>,
    runc: Runc,
    /// Owner of the process's ends of the stdio pipes (io_uid, io_gid).
    io_owner: (u32, u32),
    /// The container shares the host's pid namespace: its processes do not die with init.
    kill_all_on_exit: bool,
    namespace: String,
    reaper: Arc<Reaper>,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Exec>>,
    /// CRIU's image and work directories from the runtime options; empty for the defaults.
    criu_image_path: String,
    criu_work_path: String,
    /// Set for a container created from a checkpoint: its init is restored at Start.
    pending_restore: Mutex<Option<Restore>>,
    /// Where runc placed the init, found once it exists.
    cgroup: OnceLock<Cgroup>,
    /// OOM kills in that cgroup, from the kernel.
    oom: OnceLock<Arc<OomWatch>>,
}

struct Restore {
    opts: RestoreOpts,
    plan: Plan,
}

struct Exec {
    process: Arc<Process>,
    /// The OCI process spec as the client sent it (validated), handed to `runc exec`.
    spec: Vec<u8>,
    plan: Plan,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    /// The directory that holds this shim's task bundles (see `check_bundle`); None when the
    /// shim could not tell, and then any bundle is taken.
    pub bundles: Option<&'a Path>,
    pub namespace: &'a str,
    pub rootfs: &'a [Mount],
    pub stdio: StdioPaths,
    /// `stdio` as read before any side effect.
    pub plan: Plan,
    pub options: RuntimeOptions,
    /// The checkpoint image to restore from at Start; empty for a new container.
    pub checkpoint: &'a str,
}

impl Container {
    /// Mounts the rootfs, opens the streams and runs `runc create`; on failure nothing of it
    /// is left behind.
    pub async fn create(req: CreateRequest<'_>, reaper: Arc<Reaper>) -> Result<Container> {
        let bundle = req.bundle.to_path_buf();
        let (id, bundles) = (req.id.to_string(), req.bundles.map(Path::to_path_buf));
        let spec = blocking(move || {
            if let Some(bundles) = &bundles {
                check_bundle(&id, &bundle, bundles)?;
            }
            read_spec(&bundle)
        })
        .await?;
        let mut runc = Runc::new(
            req.options.binary(),
            Path::new(req.options.root()).join(req.namespace),
            req.options.systemd_cgroup,
            reaper.clone(),
        )?;
        if !req.options.criu_path.is_empty() {
            runc.criu = Some(req.options.criu_path.clone().into());
        }
        let (bundle, options, mounts) = (
            req.bundle.to_path_buf(),
            req.options.clone(),
            req.rootfs.to_vec(),
        );
        let mounted_rootfs = blocking(move || {
            write_options(&bundle, &options)?;
            if mounts.is_empty() {
                return Ok(None);
            }
            let rootfs = bundle.join("rootfs");
            std::fs::create_dir_all(&rootfs).map_err(|e| {
                Error::Internal(format!("failed to create {}: {e}", rootfs.display()))
            })?;
            mount::mount_all(&mounts, &rootfs)?;
            Ok(Some(rootfs))
        })
        .await?;
        let container = Container {
            id: req.id.to_string(),
            bundle: req.bundle.to_path_buf(),
            mounted_rootfs,
            runc,
            io_owner: (req.options.io_uid, req.options.io_gid),
            kill_all_on_exit: !has_own_pid_namespace(&spec),
            namespace: req.namespace.to_string(),
            reaper,
            init: Arc::new(Process::new(req.id, Kind::Init, req.stdio)),
            execs: Mutex::new(HashMap::new()),
            criu_image_path: req.options.criu_image_path.clone(),
            criu_work_path: req.options.criu_work_path.clone(),
            pending_restore: Mutex::new(None),
            cgroup: OnceLock::new(),
            oom: OnceLock::new(),
        };
        if !req.checkpoint.is_empty() {
            // As with the Go shim, nothing runs until Start restores the checkpoint.
            let work_path = container.criu_work_dir().0;
            *container.restore_slot() = Some(Restore {
                opts: RestoreOpts {
                    bundle: container.bundle.clone(),
                    image_path: req.checkpoint.into(),
                    work_path,
                    pid_file: container.bundle.join(INIT_PID_FILE),
                    no_pivot_root: req.options.no_pivot_root,
                    no_new_keyring: req.options.no_new_keyring,
                },
                plan: req.plan,
            });
            return Ok(container);
        }
        match container.create_init(&req.options, &req.plan).await {
            Ok(()) => Ok(container),
            Err(e) => {
                // runc may have got as far as creating it; a container it never made is fine.
                let _ = container.destroy().await;
                Err(e)
            }
        }
    }

    fn open_context<'a>(&'a self, process: &'a Process) -> OpenContext<'a> {
        OpenContext {
            owner: self.io_owner,
            process_id: process.id(),
            namespace: &self.namespace,
            reaper: &self.reaper,
        }
    }

    async fn create_init(&self, options: &RuntimeOptions, plan: &Plan) -> Result<()> {
        let (opened, child_stdio) = stdio::open(plan, &self.open_context(&self.init)).await?;
        let pid_file = self.bundle.join(INIT_PID_FILE);
        let opts = CreateOpts {
            pid_file: pid_file.clone(),
            no_pivot_root: options.no_pivot_root,
            no_new_keyring: options.no_new_keyring,
        };
        self.runc
            .create(&self.id, &self.bundle, &opts, child_stdio)
            .await?;
        let pid = read_pid(&pid_file)?;
        self.init.set_pid(pid);
        self.found_init(pid);
        self.init.set_io(opened.start(&self.id)?);
        Ok(())
    }

    /// Learns where the new init is accounted, and watches it for OOM kills from now on.
    /// The container runs without either, so a failure is logged, not returned.
    fn found_init(&self, pid: i32) {
        let cgroup = match Cgroup::of_pid(pid) {
            Ok(cgroup) => cgroup,
            Err(e) => return log::warn!("cgroup of {} (pid {pid}): {e}", self.id),
        };
        match OomWatch::start(&cgroup) {
            Ok(Some(watch)) => {
                let _ = self.oom.set(Arc::new(watch));
            }
            Ok(None) => {}
            Err(e) => log::warn!("OOM kills of {} will not be reported: {e}", self.id),
        }
        let _ = self.cgroup.set(cgroup);
    }

    /// The OOM watch of the container's cgroup, once its init exists.
    pub fn oom_watch(&self) -> Option<Arc<OomWatch>> {
        self.oom.get().cloned()
    }

    /// Whether the kernel has told of an OOM kill that nobody has reported yet.
    pub fn oom_pending(&self) -> bool {
        self.oom.get().is_some_and(|w| w.take_pending())
    }

    /// The container's resource figures, as containerd's metrics message for the host's
    /// cgroup version.
    pub async fn stats(&self) -> Result<Any> {
        let cgroup = self.cgroup.get().cloned().ok_or_else(|| {
            Error::NotFound(format!(
                "container {:?} has no known cgroup: its init has not been created",
                self.id
            ))
        })?;
        // Many small reads of kernel files; off the thread that serves and copies.
        tokio::task::spawn_blocking(move || cgroup.metrics())
            .await
            .map_err(|e| Error::Internal(format!("stats task failed: {e}")))?
    }

    fn restore_slot(&self) -> MutexGuard<'_, Option<Restore>> {
        self.pending_restore
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// CRIU's work directory, and whether it is the shim's own (to be removed after use).
    fn criu_work_dir(&self) -> (PathBuf, bool) {
        if self.criu_work_path.is_empty() {
            (self.bundle.join("criu-work"), true)
        } else {
            (PathBuf::from(&self.criu_work_path), false)
        }
    }

    /// Refuses an exec while the init cannot take one, with the reason.
    fn check_init_takes_execs(&self) -> Result<()> {
        match self.init.snapshot().status {
            Status::Created | Status::Running => Ok(()),
            Status::Pausing | Status::Paused => Err(Error::FailedPrecondition(format!(
                "cannot exec in container {:?}: it is paused",
                self.id
            ))),
            Status::Stopped | Status::Deleted => Err(Error::FailedPrecondition(format!(
                "cannot exec in container {:?}: its init process is not running",
                self.id
            ))),
        }
    }

    fn execs(&self) -> MutexGuard<'_, HashMap<String, Exec>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The process a request names: init for an empty exec id.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs()
            .get(exec_id)
            .map(|e| e.process.clone())
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "exec {exec_id:?} not found in container {:?}",
                    self.id
                ))
            })
    }

    /// Records an exec process, to be run by `start`. `spec` is the OCI process as JSON.
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioPaths,
        plan: Plan,
        spec: Vec<u8>,
    ) -> Result<()> {
        let mut execs = self.execs();
        if execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!(
                "exec {exec_id:?} already exists in container {:?}",
                self.id
            )));
        }
        // As with the Go shim, an exec may join a container whose init is created or running.
        self.check_init_takes_execs()?;
        let process = Arc::new(Process::new(&self.id, Kind::Exec(exec_id.into()), stdio));
        execs.insert(
            exec_id.to_string(),
            Exec {
                process,
                spec,
                plan,
            },
        );
        Ok(())
    }

    /// Runs a created process: `runc start` for init, `runc exec` for an exec. Returns its pid.
    pub async fn start(&self, process: &Process) -> Result<i32> {
        match &process.kind {
            Kind::Init => {
                let restore = self.restore_slot().take();
                if let Some(restore) = restore {
                    return self.restore_init(restore).await;
                }
                self.runc.start(&self.id).await?;
                Ok(process.pid())
            }
            Kind::Exec(exec_id) => self.start_exec(process, exec_id).await,
        }
    }

    /// `runc restore` of a checkpointed init, with its streams as Create asked.
    async fn restore_init(&self, restore: Restore) -> Result<i32> {
        let (opened, child_stdio) =
            stdio::open(&restore.plan, &self.open_context(&self.init)).await?;
        let ran = self
            .runc
            .restore(&self.id, &restore.opts, child_stdio)
            .await;
        let ran = ran.map_err(|e| {
            let log = restore.opts.work_path.join("restore.log");
            let cause = std::fs::read_to_string(log)
                .map(|log| criu_errors(&log))
                .unwrap_or_default();
            let text = e.to_string();
            let summary = text.lines().next().unwrap_or_default();
            if cause.is_empty() {
                Error::Internal(format!("restore of {:?} failed: {summary}", self.id))
            } else {
                Error::Internal(format!(
                    "restore of {:?} failed: {summary} (CRIU: {cause})",
                    self.id
                ))
            }
        });
        if self.criu_work_path.is_empty() {
            let _ = std::fs::remove_dir_all(&restore.opts.work_path);
        }
        if let Err(e) = ran {
            // A later Start may try again.
            *self.restore_slot() = Some(restore);
            return Err(e);
        }
        let pid = read_pid(&restore.opts.pid_file)?;
        self.init.set_pid(pid);
        self.found_init(pid);
        self.init.set_io(opened.start(&self.id)?);
        Ok(pid)
    }

    /// Freezes every process of the container.
    pub async fn pause(&self) -> Result<()> {
        self.init.begin_pause()?;
        let paused = self.runc.pause(&self.id).await;
        self.init.finish_pause(paused.is_ok());
        paused
    }

    /// Thaws a paused container.
    pub async fn resume(&self) -> Result<()> {
        self.init.begin_resume()?;
        let resumed = self.runc.resume(&self.id).await;
        self.init.finish_resume(resumed.is_ok());
        resumed
    }

    /// Sets the container's resources: `resources` is a checked OCI LinuxResources (JSON).
    pub async fn update(&self, resources: &[u8]) -> Result<()> {
        match self.init.snapshot().status {
            Status::Stopped | Status::Deleted => Err(Error::FailedPrecondition(format!(
                "cannot update container {:?}: it has stopped",
                self.id
            ))),
            _ if self.restore_slot().is_some() => Err(Error::FailedPrecondition(format!(
                "cannot update container {:?}: it is not restored yet",
                self.id
            ))),
            _ => self.runc.update(&self.id, resources).await,
        }
    }

    /// Dumps the running (or paused) container to `opts.image_path` with CRIU. Where the
    /// request names no work directory, the shim's own is used and removed afterwards.
    pub async fn checkpoint(&self, mut opts: CheckpointOpts) -> Result<()> {
        let status = self.init.snapshot().status;
        if !matches!(status, Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "cannot checkpoint container {:?}: it is {}",
                self.id,
                format!("{status:?}").to_lowercase()
            )));
        }
        if opts.image_path.as_os_str().is_empty() {
            opts.image_path = PathBuf::from(&self.criu_image_path);
        }
        if opts.image_path.as_os_str().is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint names no image path".into(),
            ));
        }
        let mut own_work_dir = false;
        if opts.work_path.as_os_str().is_empty() {
            (opts.work_path, own_work_dir) = self.criu_work_dir();
        }
        let done = self.runc.checkpoint(&self.id, &opts).await;
        let dump_log = opts.work_path.join("dump.log");
        let kept_log = self.bundle.join("criu-dump.log");
        let done = done.map_err(|e| {
            // runc's first line is its summary; the next names a log in the work directory,
            // which is about to go: CRIU's own words and a kept copy of its log say more.
            let text = e.to_string();
            let summary = text.lines().next().unwrap_or_default();
            let cause = std::fs::read_to_string(&dump_log)
                .map(|log| criu_errors(&log))
                .unwrap_or_default();
            let cause = if cause.is_empty() {
                String::new()
            } else {
                format!(" (CRIU: {cause})")
            };
            let log = match std::fs::copy(&dump_log, &kept_log) {
                Ok(_) => format!("; CRIU's log: {}", kept_log.display()),
                Err(_) => String::new(),
            };
            Error::Internal(format!(
                "checkpoint of {:?} to {} failed: {summary}{cause}{log}",
                self.id,
                opts.image_path.display()
            ))
        });
        if own_work_dir {
            let _ = std::fs::remove_dir_all(&opts.work_path);
        }
        done
    }

    async fn start_exec(&self, process: &Process, exec_id: &str) -> Result<i32> {
        self.check_init_takes_execs()?;
        let (spec, plan) = self
            .execs()
            .get(exec_id)
            .map(|e| (e.spec.clone(), e.plan.clone()))
            .ok_or_else(|| Error::NotFound(format!("exec {exec_id:?} was deleted")))?;
        // The spec goes to runc in memory (see memfile.rs); the pid file must be on a
        // filesystem, as runc writes it beside itself and renames it into place.
        let spec_file = MemFile::with(c"exec-spec", &spec).map_err(|e| {
            Error::Internal(format!("failed to hold the spec of exec {exec_id:?}: {e}"))
        })?;
        let pid_file = self.bundle.join(format!("exec-{exec_id}.pid"));
        let (opened, child_stdio) = stdio::open(&plan, &self.open_context(process)).await?;
        let opts = ExecOpts {
            process_file: spec_file.path(),
            pid_file: pid_file.clone(),
        };
        let ran = self.runc.exec(&self.id, &opts, child_stdio).await;
        drop(spec_file);
        let pid = read_pid(&pid_file);
        let _ = std::fs::remove_file(&pid_file);
        ran?;
        let pid = pid?;
        process.set_pid(pid);
        // A pty that cannot be taken leaves a started process with no streams: it still runs
        // and is reported; the failure is the shim's, so it is logged, not returned.
        match opened.start(&format!("{}/{exec_id}", self.id)) {
            Ok(io) => process.set_io(io),
            Err(e) => log::error!("streams of exec {exec_id} in {}: {e}", self.id),
        }
        Ok(pid)
    }

    /// Signals a process: through runc for init (all of the container's processes with
    /// `all`), directly for an exec.
    pub async fn kill(&self, process: &Process, signal: u32, all: bool) -> Result<()> {
        if process.is_init() {
            return self.runc.kill(&self.id, signal, all).await;
        }
        let pid = process.pid();
        if pid <= 0 {
            return Err(Error::FailedPrecondition(format!(
                "exec {:?} has not been started",
                process.id()
            )));
        }
        let signal = i32::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {signal}")))?;
        // Any number the kernel takes (0 and real-time signals too), as the Go shim passes it.
        // SAFETY: kill takes plain integers; the pid is the exec's, which has not been reaped
        // (Kill is refused once its exit is known).
        if unsafe { libc::kill(pid, signal) } == 0 {
            return Ok(());
        }
        match nix::errno::Errno::last() {
            nix::errno::Errno::ESRCH => Err(Error::NotFound("process already finished".into())),
            nix::errno::Errno::EINVAL => {
                Err(Error::InvalidArgument(format!("invalid signal {signal}")))
            }
            e => Err(Error::Internal(format!(
                "failed to signal exec {:?}: {e}",
                process.id()
            ))),
        }
    }

    /// Removes a process that is not running: an exec is forgotten; for init, runc's
    /// container is deleted and the rootfs unmounted. A never-started init is killed first
    /// and its exit waited for.
    pub async fn delete(&self, process: &Process, never_started: bool) -> Result<()> {
        if !process.is_init() {
            if !never_started {
                // An exec deleted without a Wait: its output drains (bounded) before it goes.
                let _ = tokio::time::timeout(OUTPUT_IDLE_LIMIT * 5, process.wait()).await;
            }
            self.execs().remove(process.id());
            return Ok(());
        }
        if never_started && self.restore_slot().take().is_some() {
            // Never restored: there is no process and no runc container, only the mounts.
            self.release_rootfs().await;
            return Ok(());
        }
        if never_started {
            // runc delete --force kills the waiting init; its exit arrives through the reaper.
            match self.runc.delete(&self.id, true).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        // Past the exec waits and the drain that come before the exit is reported.
        let limit = EXEC_EXIT_WAIT + OUTPUT_IDLE_LIMIT * 5;
        tokio::time::timeout(limit, process.wait())
            .await
            .map_err(|_| {
                Error::Internal(format!(
                    "the exit of {:?} is still not reported after {limit:?}: its execs or its \
                 output are still draining",
                    self.id
                ))
            })?;
        self.destroy().await
    }

    /// The pids of every process in the container, each with its exec id if it is an exec.
    pub async fn pids(&self) -> Result<Vec<(i32, Option<String>)>> {
        let pids = self.runc.ps(&self.id).await?;
        let execs: HashMap<i32, String> = self
            .execs()
            .values()
            .map(|e| (e.process.pid(), e.process.id().to_string()))
            .filter(|(pid, _)| *pid > 0)
            .collect();
        Ok(pids
            .into_iter()
            .map(|pid| (pid, execs.get(&pid).cloned()))
            .collect())
    }

    /// Everything that has to happen between a process's exit and its exit event: for init,
    /// the container's other processes are gone and reported first; then its output drains.
    pub async fn finish_exit(&self, process: &Process) {
        if process.is_init() {
            if self.kill_all_on_exit {
                // Without its own pid namespace nothing else dies with init.
                if let Err(e) = self.runc.kill(&self.id, libc::SIGKILL as u32, true).await {
                    log::debug!("kill --all after the exit of {}: {e}", self.id);
                }
            }
            // Execs starting now are waited for too: runc exec fails once init has gone, and
            // one that got in first dies with it. One deadline for all of them.
            let live: Vec<Arc<Process>> = self
                .execs()
                .values()
                .map(|e| e.process.clone())
                .filter(|p| p.is_live())
                .collect();
            let deadline = tokio::time::Instant::now() + EXEC_EXIT_WAIT;
            for exec in live {
                if tokio::time::timeout_at(deadline, exec.wait())
                    .await
                    .is_err()
                {
                    log::warn!(
                        "exec {} of {} did not exit with its init",
                        exec.id(),
                        self.id
                    );
                }
            }
        }
        if let Some(io) = process.io() {
            if !io.drained(OUTPUT_IDLE_LIMIT).await {
                // Still open elsewhere (a process outside the container's pid namespace) or
                // nobody reads: the copies go on until Delete, but the exit is reported.
                log::warn!(
                    "output of {} {} still open {OUTPUT_IDLE_LIMIT:?} after exit with no progress",
                    self.id,
                    process.id()
                );
            }
        }
    }

    /// Runs `runc delete` and unmounts the rootfs. A container runc no longer knows is fine.
    pub async fn destroy(&self) -> Result<()> {
        let deleted = match self.runc.delete(&self.id, true).await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        };
        if let Some(watch) = self.oom.get() {
            watch.close();
        }
        // The deleted mark and the unmount in one trip to the blocking pool: each trip is a
        // pair of thread switches, and a Delete is on every container's path.
        let mark = deleted.is_ok().then(|| self.bundle.join(RUNC_DELETED_FILE));
        let rootfs = self.mounted_rootfs.clone();
        if mark.is_none() && rootfs.is_none() {
            return deleted;
        }
        let id = self.id.clone();
        let released = blocking(move || {
            if let Some(mark) = mark {
                if let Err(e) = std::fs::write(&mark, b"") {
                    // Only costs the later `delete` a runc run.
                    log::warn!("failed to mark {id} deleted: {e}");
                }
            }
            rootfs.map_or(Ok(()), |rootfs| unmount(&rootfs))
        })
        .await;
        if let Err(e) = released {
            log::error!("{e}");
        }
        deleted
    }

    async fn release_rootfs(&self) {
        let Some(rootfs) = self.mounted_rootfs.clone() else {
            return;
        };
        // An unmount can block on the filesystem (a busy overlay, a hung network mount): not
        // on the thread that serves requests, reaps and copies.
        if let Err(e) = blocking(move || unmount(&rootfs)).await {
            log::error!("{e}");
        }
    }
}

fn unmount(rootfs: &Path) -> Result<()> {
    mount::unmount_all(rootfs)
        .map_err(|e| Error::Internal(format!("failed to unmount {}: {e}", rootfs.display())))
}

/// Runs file and mount work on tokio's blocking pool: a bundle on a slow or hung filesystem
/// must not stall the one thread that serves requests, reaps children and copies output.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("bundle task failed: {e}")))?
}

/// Exits are handed to a process with the reaper's mark of when it was spawned; see exits.rs.
pub type Owner = (Arc<Container>, Arc<Process>);

/// A task's bundle must be the directory named by its id beside the shim's own: containerd
/// makes each task's bundle so, one directory per namespace, and starts the shim in the first.
/// Anything else is refused before the shim mounts, writes or runs anything there, so that a
/// second client on the socket cannot make the shim act on another path. A bundle that does
/// not resolve is left to `read_spec` to refuse.
fn check_bundle(id: &str, bundle: &Path, bundles: &Path) -> Result<()> {
    let Ok(resolved) = bundle.canonicalize() else {
        return Ok(());
    };
    if resolved.parent() == Some(bundles) && resolved.file_name() == Some(id.as_ref()) {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "bundle {} is not task {id:?}'s: this shim's task bundles are {}/<id>",
        bundle.display(),
        bundles.display()
    )))
}

fn read_spec(bundle: &Path) -> Result<oci_spec::runtime::Spec> {
    if !bundle.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "bundle path {} is not absolute",
            bundle.display()
        )));
    }
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).map_err(|e| {
        Error::InvalidArgument(format!(
            "bundle {} has no readable config.json: {e}",
            bundle.display()
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| {
        Error::InvalidArgument(format!("{} is not a valid OCI spec: {e}", config.display()))
    })
}

fn has_own_pid_namespace(spec: &oci_spec::runtime::Spec) -> bool {
    use oci_spec::runtime::LinuxNamespaceType;
    let namespaces = spec.linux().as_ref().and_then(|l| l.namespaces().as_ref());
    namespaces.is_some_and(|ns| {
        ns.iter()
            .any(|n| n.typ() == LinuxNamespaceType::Pid && n.path().is_none())
    })
}

/// Checks an exec's OCI process spec and returns what runc gets: the client's JSON with
/// `terminal` set as the request says, every other field as sent (so fields newer than our
/// spec types are kept).
pub fn prepare_exec_spec(json: &[u8], terminal: bool) -> Result<Vec<u8>> {
    let malformed =
        |e: serde_json::Error| Error::InvalidArgument(format!("malformed exec process spec: {e}"));
    let process: oci_spec::runtime::Process = serde_json::from_slice(json).map_err(malformed)?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(Error::InvalidArgument(
            "exec process spec has no args".into(),
        ));
    }
    let mut value: serde_json::Value = serde_json::from_slice(json).map_err(malformed)?;
    // serde reads a struct from an array too; runc wants an object.
    let object = value.as_object_mut().ok_or_else(|| {
        Error::InvalidArgument("malformed exec process spec: not a JSON object".into())
    })?;
    object.insert("terminal".into(), serde_json::Value::Bool(terminal));
    serde_json::to_vec(&value).map_err(malformed)
}

/// The last few errors CRIU wrote to its log, without their source positions.
fn criu_errors(log: &str) -> String {
    let errors: Vec<&str> = log
        .lines()
        .filter_map(|l| l.find("Error (").map(|at| &l[at + "Error (".len()..]))
        .map(|l| l.split_once("): ").map_or(l, |(_, msg)| msg).trim())
        .filter(|m| !m.starts_with("exited, status"))
        .collect();
    errors[errors.len().saturating_sub(3)..].join("; ")
}

/// Checks an Update's resources (an OCI LinuxResources as JSON) and returns them as runc gets
/// them: as sent, so fields newer than our spec types are kept.
pub fn check_resources(json: &[u8]) -> Result<Vec<u8>> {
    let malformed =
        |e: serde_json::Error| Error::InvalidArgument(format!("malformed resources: {e}"));
    let _: oci_spec::runtime::LinuxResources = serde_json::from_slice(json).map_err(malformed)?;
    // serde reads a struct from an array too; runc wants an object.
    let value: serde_json::Value = serde_json::from_slice(json).map_err(malformed)?;
    if !value.is_object() {
        return Err(Error::InvalidArgument(
            "malformed resources: not a JSON object".into(),
        ));
    }
    Ok(json.to_vec())
}

fn write_options(bundle: &Path, options: &RuntimeOptions) -> Result<()> {
    let path = bundle.join(OPTIONS_FILE);
    let text = serde_json::to_vec(options)
        .map_err(|e| Error::Internal(format!("failed to encode runtime options: {e}")))?;
    std::fs::write(&path, text)
        .map_err(|e| Error::Internal(format!("failed to write {}: {e}", path.display())))
}

/// The runtime options a shim wrote into a bundle, for `delete`; defaults when absent.
pub fn read_options(bundle: &Path) -> RuntimeOptions {
    std::fs::read(bundle.join(OPTIONS_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

/// Reads the pid runc wrote. On this thread, unlike the bundle's other file work: runc has just
/// written the file in that directory and renamed it into place, so the filesystem answers,
/// and the file is in the page cache; the blocking pool would cost a thread's wake-up and
/// the runtime's, per process started.
pub fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Internal(format!("failed to read pid file {}: {e}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e| Error::Internal(format!("bad pid in {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_specs_are_checked_before_anything_runs() {
        let good = br#"{"args":["sh"],"cwd":"/","user":{"uid":0,"gid":0},"future":1}"#;
        let ready: serde_json::Value =
            serde_json::from_slice(&prepare_exec_spec(good, true).unwrap()).unwrap();
        assert_eq!(ready["terminal"], true, "the request decides the terminal");
        assert_eq!(ready["future"], 1, "fields we do not know reach runc");
        assert!(matches!(
            prepare_exec_spec(b"{ not json", false),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            prepare_exec_spec(br#"{"args":[],"cwd":"/","user":{"uid":0,"gid":0}}"#, false),
            Err(Error::InvalidArgument(m)) if m.contains("no args")
        ));
        assert!(matches!(
            prepare_exec_spec(
                br#"{"args":"sh","cwd":"/","user":{"uid":0,"gid":0}}"#,
                false
            ),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn criu_errors_name_the_cause_without_source_positions() {
        let log = "(00.001) Version: 3.17\n\
            (00.01) Error (criu/util.c:642): exited, status=1\n\
            (00.02) Error (criu/vdso.c:381): vdso: Unexpected rt vDSO area bounds\n\
            Error (criu/kerndat.c:1615): kerndat_vdso_fill_symtable failed\n\
            Error (criu/crtools.c:260): Could not initialize kernel features detection.\n";
        assert_eq!(
            criu_errors(log),
            "vdso: Unexpected rt vDSO area bounds; kerndat_vdso_fill_symtable failed; \
             Could not initialize kernel features detection."
        );
        assert_eq!(criu_errors("(00.0) all fine\n"), "");
    }

    #[test]
    fn resources_are_checked_and_passed_as_sent() {
        let good = br#"{"memory":{"limit":33554432},"pids":{"limit":20},"future":1}"#;
        assert_eq!(check_resources(good).unwrap(), good.to_vec());
        for bad in [
            &b"not json"[..],
            br#"[1]"#,
            br#"{"memory":{"limit":"lots"}}"#,
        ] {
            assert!(
                matches!(check_resources(bad), Err(Error::InvalidArgument(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn only_a_new_pid_namespace_of_its_own_keeps_execs_with_init() {
        let spec = |ns: &str| -> oci_spec::runtime::Spec {
            serde_json::from_str(&format!(
                r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":[{ns}]}}}}"#
            ))
            .unwrap()
        };
        assert!(has_own_pid_namespace(&spec(r#"{"type":"pid"}"#)));
        assert!(!has_own_pid_namespace(&spec(r#"{"type":"mount"}"#)));
        assert!(!has_own_pid_namespace(&spec(
            r#"{"type":"pid","path":"/proc/1/ns/pid"}"#
        )));
    }
}
