//! Faults injected through a runc wrapper used as the runtime's BinaryName: a command that
//! fails, fails after doing its work, or returns only once the container's process has exited
//! and been reaped. Driven directly over ttrpc, so what is checked is the shim's answer.

use crate::common::direct::shim_binary;
use crate::common::direct::DirectShim;
use crate::common::*;
use crate::ensure;
use shim::protos::shim::*;
use shim::protos::task::Status as TaskStatus;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// runc, unless a line `COMMAND RULE` in `<wrapper>.rules` says otherwise: `fail`,
/// `fail-after` (do the work, then fail), `after-exit` (start, then return only once the
/// container's init is reaped), `fail-after-exit`, or `hang` (never return; its pid is in
/// `<wrapper>.hung`).
const WRAPPER: &str = r#"#!/bin/sh
rules="$0.rules"
log=""
globals=""
while [ $# -gt 0 ]; do
  case "$1" in
    --log) log=$2; globals="$globals $1 $2"; shift 2 ;;
    --root|--log-format|--criu) globals="$globals $1 $2"; shift 2 ;;
    -*) globals="$globals $1"; shift ;;
    *) break ;;
  esac
done
cmd=$1
for last; do :; done
rule=$(sed -n "s/^$cmd //p" "$rules" 2>/dev/null | head -n 1)
fail() {
  [ -n "$log" ] && printf '{"level":"error","msg":"injected %s failure"}\n' "$cmd" >> "$log"
  echo "injected $cmd failure" >&2
  exit 1
}
case "$rule" in
  fail) fail ;;
  hang) echo $$ > "$0.hung"; exec sleep 3600 ;;
  fail-after) runc $globals "$@" || exit $?; fail ;;
  after-exit|fail-after-exit)
    pid=$(runc $globals state "$last" | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' | head -n 1)
    runc $globals "$@" || exit $?
    i=0
    while [ -e "/proc/$pid" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
    [ "$rule" = fail-after-exit ] && fail
    exit 0 ;;
esac
exec runc $globals "$@"
"#;

struct Wrapper {
    path: PathBuf,
}

impl Wrapper {
    fn new(dir: &Path) -> Result<Wrapper, String> {
        let path = dir.join("runc-wrapper");
        std::fs::write(&path, WRAPPER).map_err(|e| e.to_string())?;
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        std::fs::set_permissions(&path, mode).map_err(|e| e.to_string())?;
        Ok(Wrapper { path })
    }

    /// Sets the rules (`"start after-exit"`, ...); empty for plain runc.
    fn rules(&self, rules: &[&str]) -> TestResult {
        let text: String = rules.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(self.path.with_extension("rules"), text).map_err(|e| e.to_string())
    }

    fn create(&self, sh: &DirectShim, id: &str) -> CreateTaskRequest {
        let options = shim::protos::runc_options::Options {
            binary_name: self.path.to_string_lossy().into_owned(),
            ..Default::default()
        };
        sh.create_request(id, Some(options))
    }
}

fn scratch(ctx: &Ctx) -> Result<PathBuf, String> {
    let dir = ctx.daemon.base.join(format!("faults-{}", ctx.ns));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

fn req_id<T: Default>(f: impl FnOnce(&mut T)) -> T {
    let mut t = T::default();
    f(&mut t);
    t
}

fn state(sh: &DirectShim, id: &str) -> ttrpc::Result<StateResponse> {
    let r: StateRequest = req_id(|r: &mut StateRequest| r.id = id.into());
    sh.rt.block_on(sh.client.state(DirectShim::ctx(), &r))
}

fn wait(sh: &DirectShim, id: &str) -> Result<WaitResponse, String> {
    sh.wait_exit(id, Duration::from_secs(15))
}

fn delete(sh: &DirectShim, id: &str) -> ttrpc::Result<DeleteResponse> {
    let r: DeleteRequest = req_id(|r: &mut DeleteRequest| r.id = id.into());
    sh.rt.block_on(sh.client.delete(DirectShim::ctx(), &r))
}

fn start(sh: &DirectShim, id: &str) -> ttrpc::Result<StartResponse> {
    let r: StartRequest = req_id(|r: &mut StartRequest| r.id = id.into());
    sh.rt.block_on(sh.client.start(DirectShim::ctx(), &r))
}

fn names(result: &ttrpc::Result<impl std::fmt::Debug>, needle: &str) -> bool {
    matches!(result, Err(ttrpc::Error::RpcStatus(s)) if s.message().contains(needle))
}

/// `runc start` returns only after the container's process has exited and been reaped: the
/// exit is held until the start is announced, so events stay in order and Wait returns.
pub fn exits_racing_start_are_held_until_the_start_is_announced(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "race0", &["true"])?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    wrapper.rules(&["start after-exit"])?;
    for i in 0..3 {
        let id = format!("race{i}");
        if i > 0 {
            sh.bundle(&id, &["true"])?;
        }
        sh.rt
            .block_on(
                sh.client
                    .create(DirectShim::ctx(), &wrapper.create(&sh, &id)),
            )
            .map_err(|e| format!("Create {id}: {e}"))?;
        start(&sh, &id).map_err(|e| format!("Start {id}: {e}"))?;
        let waited = wait(&sh, &id)?;
        ensure!(
            waited.exit_status == 0,
            "{id} exited {}",
            waited.exit_status
        );
        delete(&sh, &id).map_err(|e| format!("Delete {id}: {e}"))?;
    }
    let topics = eventually(Duration::from_secs(10), || {
        let t = sh.topics();
        ensure!(t.len() >= 12, "{} events so far", t.len());
        Ok(t)
    })?;
    for (n, chunk) in topics.chunks(4).enumerate() {
        ensure!(
            crate::events::in_lifecycle_order(ctx, chunk),
            "events of task {n} were {chunk:?}"
        );
    }
    sh.finish()
}

/// `runc start` fails after the process ran and exited: the Start error names the cause, the
/// exit held meanwhile is still reported, and the task can be deleted.
pub fn a_start_that_fails_after_the_exit_still_reports_it(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "failstart", &["true"])?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    wrapper.rules(&["start fail-after-exit"])?;
    sh.rt
        .block_on(
            sh.client
                .create(DirectShim::ctx(), &wrapper.create(&sh, "failstart")),
        )
        .map_err(|e| format!("Create: {e}"))?;
    let started = start(&sh, "failstart");
    ensure!(
        names(&started, "injected start failure"),
        "Start answered {started:?}"
    );
    wait(&sh, "failstart")?;
    delete(&sh, "failstart").map_err(|e| format!("Delete: {e}"))?;
    if ctx.runtime == OURS {
        let topics = eventually(Duration::from_secs(10), || {
            let t = sh.topics();
            ensure!(t.len() >= 3, "events so far: {t:?}");
            Ok(t)
        })?;
        ensure!(
            topics == ["/tasks/create", "/tasks/exit", "/tasks/delete"],
            "events {topics:?}"
        );
    }
    sh.finish()
}

/// `runc create` fails after it made the container, on a rootfs the shim mounted: the error
/// names the cause, and no runc container, mount or task is left; the shim goes on serving.
pub fn a_create_that_fails_half_way_leaves_nothing(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "halfmade", &["sleep", "1000"])?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    wrapper.rules(&["create fail-after"])?;
    let source = sh.bundle("rootsrc", &["true"])?.join("rootfs");
    let mut create = wrapper.create(&sh, "halfmade");
    create.rootfs.push(shim::protos::mount::Mount {
        type_: "bind".into(),
        source: source.to_string_lossy().into_owned(),
        options: vec!["rbind".into(), "rw".into()],
        ..Default::default()
    });
    let created = sh.rt.block_on(sh.client.create(DirectShim::ctx(), &create));
    ensure!(
        names(&created, "injected create failure"),
        "Create answered {created:?}"
    );
    let bundle = sh.bundle_path("halfmade");
    ensure!(
        mounts_under(&bundle).is_empty(),
        "mounts left: {:?}",
        mounts_under(&bundle)
    );
    let runc_state = Path::new("/run/containerd/runc")
        .join(&ctx.ns)
        .join("halfmade");
    if runc_state.exists() {
        ensure!(
            ctx.runtime != OURS,
            "runc still has the container: {}",
            runc_state.display()
        );
        // Known difference: the Go shim leaves runc's container of a failed Create (containerd
        // then runs `shim delete`, which removes it); do that here so the test can go on.
        println!(
            "    [{}] left runc's container of the failed Create",
            ctx.runtime
        );
        let root = Path::new("/run/containerd/runc").join(&ctx.ns);
        run_ok(
            std::process::Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(["delete", "--force", "halfmade"]),
        )?;
    }
    ensure!(
        matches!(state(&sh, "halfmade"), Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::NOT_FOUND),
        "the failed task is still known"
    );
    wrapper.rules(&[])?;
    sh.rt
        .block_on(sh.client.create(DirectShim::ctx(), &create))
        .map_err(|e| format!("Create after the failure: {e}"))?;
    delete(&sh, "halfmade").map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

/// `runc delete` fails: Delete says why, the task stays as it was, and a second Delete works.
pub fn a_delete_that_fails_can_be_tried_again(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "faildel", &["true"])?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    sh.rt
        .block_on(
            sh.client
                .create(DirectShim::ctx(), &wrapper.create(&sh, "faildel")),
        )
        .map_err(|e| format!("Create: {e}"))?;
    start(&sh, "faildel").map_err(|e| format!("Start: {e}"))?;
    wait(&sh, "faildel")?;
    wrapper.rules(&["delete fail"])?;
    let deleted = delete(&sh, "faildel");
    ensure!(
        names(&deleted, "injected delete failure"),
        "Delete answered {deleted:?}"
    );
    let s = state(&sh, "faildel").map_err(|e| format!("State after the failed Delete: {e}"))?;
    ensure!(
        s.status.value() == TaskStatus::STOPPED as i32,
        "after the failed Delete the task is {:?}",
        s.status
    );
    wrapper.rules(&[])?;
    delete(&sh, "faildel").map_err(|e| format!("second Delete: {e}"))?;
    sh.finish()
}

/// runc's error text belongs to the call that failed: Kills, a Pause and Pids that fail at
/// the same time on one container each report their own failure, and no call leaves its log
/// behind.
pub fn concurrent_runc_failures_each_report_their_own(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "twofail", &["sleep", "1000"])?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    sh.rt
        .block_on(
            sh.client
                .create(DirectShim::ctx(), &wrapper.create(&sh, "twofail")),
        )
        .map_err(|e| format!("Create: {e}"))?;
    start(&sh, "twofail").map_err(|e| format!("Start: {e}"))?;
    wrapper.rules(&["kill fail", "pause fail", "ps fail"])?;
    let kill: KillRequest = req_id(|r: &mut KillRequest| {
        r.id = "twofail".into();
        r.signal = 10;
    });
    let pause: PauseRequest = req_id(|r: &mut PauseRequest| r.id = "twofail".into());
    let pids: PidsRequest = req_id(|r: &mut PidsRequest| r.id = "twofail".into());
    // Kills and Pids run side by side; a Pause is one at a time (a second is refused while
    // the first runs), so one of it.
    let (kills, paused, listed) = sh.rt.block_on(async {
        let c = &sh.client;
        let kills = (0..8).map(|_| c.kill(DirectShim::ctx(), &kill));
        let listed = (0..8).map(|_| c.pids(DirectShim::ctx(), &pids));
        tokio::join!(
            futures_join_all(kills.collect()),
            c.pause(DirectShim::ctx(), &pause),
            futures_join_all(listed.collect())
        )
    });
    // (call, its own failure named, failed at all, the answer).
    fn judged(
        call: &'static str,
        own: &str,
        r: &ttrpc::Result<impl std::fmt::Debug>,
    ) -> (&'static str, bool, bool, String) {
        (call, names(r, own), r.is_err(), format!("{r:?}"))
    }
    let answers = kills
        .iter()
        .map(|r| judged("kill", "injected kill failure", r))
        .chain([judged("pause", "injected pause failure", &paused)])
        .chain(
            listed
                .iter()
                .map(|r| judged("Pids", "injected ps failure", r)),
        );
    let mut crossed = 0;
    for (call, own, failed, answer) in answers {
        if own {
            continue;
        }
        // Known difference: the Go shim reads runc's errors from one log file per
        // container, so a failure may be reported by another call running at the same time.
        ensure!(
            ctx.runtime == GO_SHIM && failed,
            "a failed {call} answered {answer}"
        );
        crossed += 1;
    }
    if crossed > 0 {
        println!(
            "    [{}] {crossed} of 17 failed calls reported another call's runc error",
            ctx.runtime
        );
    }
    wrapper.rules(&[])?;
    let logs: Vec<String> = std::fs::read_dir(sh.bundle_path("twofail"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with("runc-") && n.ends_with(".json"))
        .collect();
    ensure!(
        logs.is_empty() || ctx.runtime == GO_SHIM,
        "per-call logs left behind: {logs:?}"
    );
    let sigkill: KillRequest = req_id(|r: &mut KillRequest| {
        r.id = "twofail".into();
        r.signal = 9;
    });
    sh.rt
        .block_on(sh.client.kill(DirectShim::ctx(), &sigkill))
        .map_err(|e| format!("Kill: {e}"))?;
    wait(&sh, "twofail")?;
    delete(&sh, "twofail").map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

/// Awaits every future, in order: the test needs no more of an executor than this.
async fn futures_join_all<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut handles = Vec::new();
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    // Poll all together so the calls overlap: each is a request to the shim.
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if handles.len() <= i {
                handles.push(None);
            }
            if handles[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => handles[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    handles.into_iter().flatten().collect()
}

/// An ext4 image mounted on a loop device, which `fsfreeze` can stop taking writes: a hung
/// filesystem on demand. Dropped, it is thawed, unmounted and removed.
struct FreezableFs {
    image: PathBuf,
    dir: PathBuf,
}

impl FreezableFs {
    fn new(scratch: &Path) -> Result<FreezableFs, String> {
        let image = scratch.join("freezable.img");
        let dir = scratch.join("freezable");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| format!("{}: {e}", image.display()))?;
        run_ok(
            std::process::Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image),
        )?;
        run_ok(
            std::process::Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&dir),
        )?;
        Ok(FreezableFs { image, dir })
    }

    fn freeze(&self, frozen: bool) -> TestResult {
        let flag = if frozen { "--freeze" } else { "--unfreeze" };
        run_ok(
            std::process::Command::new("fsfreeze")
                .arg(flag)
                .arg(&self.dir),
        )
        .map(drop)
    }
}

impl Drop for FreezableFs {
    fn drop(&mut self) {
        let _ = self.freeze(false);
        let _ = std::process::Command::new("umount").arg(&self.dir).output();
        let _ = std::fs::remove_file(&self.image);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Threads of `pid` blocked in the kernel (state D), as a write to a frozen filesystem is.
fn blocked_threads(pid: i32) -> usize {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        // The state follows the command name, which ends at the last ')'.
        .filter(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('D'))
        })
        .count()
}

/// A `file://` log on a filesystem that stops taking writes (frozen with fsfreeze) stalls
/// that container's output and nothing else: the shim still answers for another container,
/// and once the filesystem thaws every byte reaches the log.
pub fn a_stuck_log_file_stalls_nothing_else(ctx: &mut Ctx) -> TestResult {
    const OUTPUT: usize = 1 << 20;
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "other", &["sleep", "1000"])?;
    sh.create(&sh.create_request("other", None))?;
    sh.start_task("other")?;
    let fs = FreezableFs::new(&scratch(ctx)?)?;
    let log = fs.dir.join("stuck.log");
    let script = format!("head -c {OUTPUT} /dev/zero");
    sh.bundle("stuck", &["sh", "-c", &script])?;
    let mut create = sh.create_request("stuck", None);
    // As containerd sends a log URI: the same for stdout and stderr.
    create.stdout = format!("file://{}", log.display());
    create.stderr = create.stdout.clone();
    sh.create(&create)?;
    let shim = sh.pid()?;
    fs.freeze(true)?;
    sh.start_task("stuck")?;
    let blocked = eventually(Duration::from_secs(10), || {
        ensure!(
            blocked_threads(shim) > 0,
            "no thread of the shim is blocked on the frozen log"
        );
        Ok(())
    });
    let state = StateRequest {
        id: "other".into(),
        ..Default::default()
    };
    let answered = sh.rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(5),
            sh.client.state(DirectShim::ctx(), &state),
        )
        .await
    });
    fs.freeze(false)?;
    blocked?;
    let status_other = match answered {
        Ok(Ok(s)) => s.status,
        Ok(Err(e)) => return Err(format!("State of the other container: {e}")),
        Err(_) => return Err("no answer for the other container while a log was stuck".into()),
    };
    let status = sh.wait_exit("stuck", Duration::from_secs(20))?.exit_status;
    sh.delete_task("stuck")?;
    sh.kill("other", "", 9)?;
    sh.wait_exit("other", Duration::from_secs(20))?;
    sh.delete_task("other")?;
    sh.finish()?;
    ensure!(
        status_other.enum_value() == Ok(TaskStatus::RUNNING),
        "the other container is {status_other:?}"
    );
    ensure!(status == 0, "the logging container exited {status}");
    let logged = std::fs::metadata(&log).map_err(|e| e.to_string())?.len();
    ensure!(
        logged == OUTPUT as u64,
        "the log got {logged} bytes, want {OUTPUT}"
    );
    Ok(())
}

/// The fds a shim inherits (containerd passes on whatever its own parent leaked to it) and
/// the ones it opens reach no runc call: each gets its stdio and nothing more. Here the shim
/// inherits a pipe without close-on-exec, and a runc wrapper lists what each call holds.
pub fn runc_gets_no_fd_the_shim_holds(ctx: &mut Ctx) -> TestResult {
    let dir = scratch(ctx)?;
    let wrapper = dir.join("fd-listing-runc");
    let listing = dir.join("fds.log");
    let _ = std::fs::remove_file(&listing);
    let script = format!(
        "#!/bin/sh\n{}\nexec runc \"$@\"\n",
        fd_lister(&listing, "$*")
    );
    std::fs::write(&wrapper, script).map_err(|e| e.to_string())?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&wrapper, mode).map_err(|e| e.to_string())?;
    // A careless parent's leak: a pipe without close-on-exec, inherited by the shim.
    let (leak_r, leak_w) = nix::unistd::pipe().map_err(|e| e.to_string())?;
    let started = DirectShim::start(&shim_binary(ctx), &ctx.ns, "fdless", &["true"]);
    drop((leak_r, leak_w));
    let sh = started?;
    let options = shim::protos::runc_options::Options {
        binary_name: wrapper.to_string_lossy().into_owned(),
        ..Default::default()
    };
    sh.create(&sh.create_request("fdless", Some(options)))?;
    sh.start_task("fdless")?;
    let status = sh.wait_exit("fdless", Duration::from_secs(20))?.exit_status;
    sh.delete_task("fdless")?;
    sh.finish()?;
    ensure!(status == 0, "exit status {status}");
    let text = std::fs::read_to_string(&listing).map_err(|e| e.to_string())?;
    let mut calls = 0;
    let mut extra = Vec::new();
    for call in text.split("== ").filter(|c| !c.is_empty()) {
        calls += 1;
        let command = call.lines().next().unwrap_or_default();
        for (fd, target) in fd_listing(call) {
            if fd > 2 {
                extra.push(format!("{command:?}: fd {fd} -> {target}"));
            }
        }
    }
    ensure!(calls >= 3, "the wrapper saw {calls} runc calls");
    if ctx.runtime == GO_SHIM && !extra.is_empty() {
        // Known difference: the Go shim passes on to runc the fds it inherited.
        println!("    [{}] runc got: {extra:?}", ctx.runtime);
        return Ok(());
    }
    ensure!(extra.is_empty(), "runc got more than its stdio: {extra:?}");
    Ok(())
}

/// Every runc command the shim runs can fail: each request gets an error that carries runc's
/// own message, the request can be made again once runc works, and the shim goes on serving
/// its other container all along.
pub fn each_runc_command_that_fails_is_a_clear_error(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "steady", &["sleep", "1000"])?;
    sh.create(&sh.create_request("steady", None))?;
    sh.start_task("steady")?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    sh.bundle("victim", &["sleep", "1000"])?;
    let c = &sh.client;
    // Runs `call` once with `command` failing in runc, then checks the error and that the
    // other container is still served; then once more with runc working, when `again`.
    let failing = |command: &str, call: &dyn Fn() -> ttrpc::Result<()>, again: bool| {
        wrapper.rules(&[&format!("{command} fail")])?;
        let failed = call();
        wrapper.rules(&[])?;
        let own = format!("injected {command} failure");
        ensure!(
            names(&failed, &own),
            "with runc {command} failing: {failed:?}, want an error naming {own:?}"
        );
        state(&sh, "steady").map_err(|e| format!("after runc {command} failed: {e}"))?;
        if again {
            call().map_err(|e| format!("again after runc {command} failed: {e}"))?;
        }
        Ok::<(), String>(())
    };
    let create = wrapper.create(&sh, "victim");
    failing(
        "create",
        &|| {
            sh.rt
                .block_on(c.create(DirectShim::ctx(), &create))
                .map(drop)
        },
        true,
    )?;
    let started = start(&sh, "victim");
    started.map_err(|e| format!("Start: {e}"))?;
    let mut spec = protobuf::well_known_types::any::Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = br#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec();
    let exec = ExecProcessRequest {
        id: "victim".into(),
        exec_id: "x".into(),
        spec: protobuf::MessageField::some(spec),
        ..Default::default()
    };
    sh.rt
        .block_on(c.exec(DirectShim::ctx(), &exec))
        .map_err(|e| format!("Exec: {e}"))?;
    failing(
        "exec",
        &|| {
            let r = StartRequest {
                id: "victim".into(),
                exec_id: "x".into(),
                ..Default::default()
            };
            sh.rt.block_on(c.start(DirectShim::ctx(), &r)).map(drop)
        },
        false,
    )?;
    sh.delete_process("victim", "x")?;
    let pause: PauseRequest = req_id(|r: &mut PauseRequest| r.id = "victim".into());
    let resume: ResumeRequest = req_id(|r: &mut ResumeRequest| r.id = "victim".into());
    failing(
        "pause",
        &|| sh.rt.block_on(c.pause(DirectShim::ctx(), &pause)).map(drop),
        true,
    )?;
    failing(
        "resume",
        &|| {
            sh.rt
                .block_on(c.resume(DirectShim::ctx(), &resume))
                .map(drop)
        },
        true,
    )?;
    let mut resources = protobuf::well_known_types::any::Any::new();
    resources.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    resources.value = br#"{"pids":{"limit":100}}"#.to_vec();
    let update = UpdateTaskRequest {
        id: "victim".into(),
        resources: protobuf::MessageField::some(resources),
        ..Default::default()
    };
    failing(
        "update",
        &|| {
            sh.rt
                .block_on(c.update(DirectShim::ctx(), &update))
                .map(drop)
        },
        true,
    )?;
    let pids: PidsRequest = req_id(|r: &mut PidsRequest| r.id = "victim".into());
    failing(
        "ps",
        &|| sh.rt.block_on(c.pids(DirectShim::ctx(), &pids)).map(drop),
        true,
    )?;
    let kill: KillRequest = req_id(|r: &mut KillRequest| {
        r.id = "victim".into();
        r.signal = 9;
    });
    failing(
        "kill",
        &|| sh.rt.block_on(c.kill(DirectShim::ctx(), &kill)).map(drop),
        true,
    )?;
    wait(&sh, "victim")?;
    failing("delete", &|| delete(&sh, "victim").map(drop), true)?;
    sh.kill("steady", "", 9)?;
    wait(&sh, "steady")?;
    sh.delete_task("steady")?;
    sh.finish()
}

/// A runc that hangs on one container (a stuck `runc pause`) holds up that request alone:
/// the shim answers for its other container meanwhile, and the hung request fails once that
/// runc is gone.
pub fn a_hung_runc_stalls_only_its_own_request(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "steady", &["sleep", "1000"])?;
    sh.create(&sh.create_request("steady", None))?;
    sh.start_task("steady")?;
    let wrapper = Wrapper::new(&scratch(ctx)?)?;
    sh.bundle("stuck", &["sleep", "1000"])?;
    sh.create(&wrapper.create(&sh, "stuck"))?;
    sh.start_task("stuck")?;
    let hung = wrapper.path.with_extension("hung");
    let _ = std::fs::remove_file(&hung);
    wrapper.rules(&["pause hang"])?;
    let pause: PauseRequest = req_id(|r: &mut PauseRequest| r.id = "stuck".into());
    let pids: PidsRequest = req_id(|r: &mut PidsRequest| r.id = "steady".into());
    let state_req: StateRequest = req_id(|r: &mut StateRequest| r.id = "steady".into());
    let c = &sh.client;
    let (paused, meanwhile) = sh.rt.block_on(async {
        let paused = c.pause(DirectShim::ctx(), &pause);
        let meanwhile = async {
            // Once runc pause is running (its pid written), ask about the other container.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !hung.exists() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let asked = async {
                let state = c.state(DirectShim::ctx(), &state_req).await?;
                let listed = c.pids(DirectShim::ctx(), &pids).await?;
                Ok::<_, ttrpc::Error>((state.status, listed.processes.len()))
            };
            let answer = tokio::time::timeout(Duration::from_secs(5), asked).await;
            // Then the stuck runc goes, and the Pause with it.
            if let Some(pid) = std::fs::read_to_string(&hung)
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            answer
        };
        tokio::join!(paused, meanwhile)
    });
    wrapper.rules(&[])?;
    ensure!(hung.exists(), "runc pause never ran");
    let (status, processes) = match meanwhile {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => return Err(format!("the other container, while runc hung: {e}")),
        Err(_) => return Err("no answer for the other container while runc hung".into()),
    };
    ensure!(
        status.enum_value() == Ok(TaskStatus::RUNNING) && processes == 1,
        "the other container while runc hung: {status:?}, {processes} processes"
    );
    ensure!(paused.is_err(), "the Pause of a killed runc succeeded");
    for id in ["stuck", "steady"] {
        sh.kill(id, "", 9)?;
        wait(&sh, id)?;
        sh.delete_task(id)?;
    }
    sh.finish()
}
