//! Docker Engine as a front end: what a Docker user does every day, through a private dockerd
//! whose default runtime is the shim under test (daemon.json `runtimeType`), on the test's
//! containerd. Each test ends by removing its containers with `docker rm -f` and checking
//! that nothing of them is left below containerd.

use crate::common::docker::{Docker, DOCKER_IMAGE as IMAGE};
use crate::common::tty::Pty;
use crate::common::*;
use crate::ensure;
use std::process::Stdio;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(60);
/// How long the healthchecked container must stay healthy.
const HEALTHY_FOR: Duration = Duration::from_secs(40);
/// Shell input that waits, at most 5 s, until its terminal has a size.
const SIZED: &str =
    "i=0; while [ $i -lt 50 ] && [ -z \"$(stty size 2>/dev/null)\" ]; do sleep 0.1; i=$((i+1)); done";

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `docker run -d ARGS IMAGE CMD...`; the container's id.
fn run_detached(docker: &Docker, args: &[&str], cmd: &[&str]) -> Result<String, String> {
    let mut all = vec!["run", "-d", "--network", "none"];
    all.extend_from_slice(args);
    all.push(IMAGE);
    all.extend_from_slice(cmd);
    Ok(docker.ok(&all)?.trim().to_string())
}

/// `docker run --rm ...` prints the container's stdout and stderr apart, ends with its exit
/// code, passes `-i` input through whole with its end, and leaves no container behind.
pub fn docker_run_gives_output_exit_code_and_stdin(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let out = docker.out(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        "echo to-out; echo to-err >&2; exit 3",
    ]);
    ensure!(
        out.status.code() == Some(3),
        "docker run ended with {} ({})",
        out.status,
        text(&out.stderr)
    );
    ensure!(
        text(&out.stdout) == "to-out\n",
        "stdout {:?}",
        text(&out.stdout)
    );
    ensure!(
        text(&out.stderr).contains("to-err"),
        "stderr {:?}",
        text(&out.stderr)
    );
    let input: String = (0..2000).map(|i| format!("line {i}\n")).collect();
    let echoed = run_with_input(
        &mut docker.command(&[
            "run",
            "--rm",
            "-i",
            "--network",
            "none",
            IMAGE,
            "sh",
            "-c",
            "cat; echo end-of-input",
        ]),
        input.as_bytes(),
    )?;
    ensure!(
        echoed == format!("{input}end-of-input\n"),
        "docker run -i gave {} bytes back of {} (ends {:?})",
        echoed.len(),
        input.len() + 13,
        &echoed[echoed.len().saturating_sub(40)..]
    );
    let left = docker.ok(&["ps", "-aq"])?;
    ensure!(left.trim().is_empty(), "--rm left containers: {left:?}");
    docker.remove_all_and_check(ctx)
}

/// Runs the docker client `args` on a terminal of `rows` x `cols`; checks that the process
/// saw a tty of that size and that the client ended well.
fn sized_terminal(docker: &Docker, what: &str, args: &[&str], rows: u16, cols: u16) -> TestResult {
    let mut pty = Pty::spawn(&mut docker.unbounded(args), rows, cols)?;
    pty.wait_for("finished", LIMIT)?;
    let status = pty.wait(LIMIT)?;
    let shown = pty.text();
    ensure!(status.success(), "{what} ended with {status}: {shown:?}");
    ensure!(shown.contains("/dev/pts/"), "{what}: tty printed {shown:?}");
    ensure!(
        shown.contains(&format!("{rows} {cols}")),
        "{what}: stty size in {shown:?}"
    );
    Ok(())
}

/// `docker run -it` and `docker exec -it` give the process a terminal of the client's size.
pub fn docker_terminals_have_the_clients_size(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let script = format!("{SIZED}; tty; stty size; echo fini''shed");
    let run = [
        "run",
        "--rm",
        "-it",
        "--network",
        "none",
        IMAGE,
        "sh",
        "-c",
        &script,
    ];
    sized_terminal(&docker, "docker run -it", &run, 33, 111)?;
    let id = run_detached(&docker, &[], &["sleep", "1000"])?;
    let exec = ["exec", "-it", &id, "sh", "-c", &script];
    sized_terminal(&docker, "docker exec -it", &exec, 27, 95)?;
    docker.remove_all_and_check(ctx)
}

/// `docker logs` keeps stdout and stderr apart; `docker logs -f` follows a running container
/// to its end.
pub fn docker_logs_follow_and_keep_streams_apart(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(
        &docker,
        &[],
        &[
            "sh",
            "-c",
            "echo out-1; echo err-1 >&2; sleep 2; echo out-2; echo err-2 >&2",
        ],
    )?;
    let followed = docker.out(&["logs", "-f", &id]);
    ensure!(
        followed.status.success(),
        "docker logs -f: {}",
        followed.status
    );
    ensure!(
        text(&followed.stdout) == "out-1\nout-2\n",
        "logs -f stdout {:?}",
        text(&followed.stdout)
    );
    ensure!(
        text(&followed.stderr) == "err-1\nerr-2\n",
        "logs -f stderr {:?}",
        text(&followed.stderr)
    );
    docker.wait_for(
        &id,
        "{{.State.Status}} {{.State.ExitCode}}",
        "exited 0",
        LIMIT,
    )?;
    let again = docker.out(&["logs", &id]);
    ensure!(
        text(&again.stdout) == "out-1\nout-2\n" && text(&again.stderr) == "err-1\nerr-2\n",
        "docker logs after the exit: {:?} / {:?}",
        text(&again.stdout),
        text(&again.stderr)
    );
    docker.remove_all_and_check(ctx)
}

/// `docker attach` to a running `-i` container sends it input, shows its output and ends
/// with its exit code.
pub fn docker_attach_sends_input_and_gets_the_exit_code(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(
        &docker,
        &["-i"],
        &["sh", "-c", "echo ready; read x; echo got:$x; exit 7"],
    )?;
    eventually(LIMIT, || {
        let logs = docker.ok(&["logs", &id])?;
        ensure!(logs.contains("ready"), "no output yet");
        Ok(())
    })?;
    let mut attach = docker.command(&["attach", &id]);
    let out = attach
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("docker attach: {e}"))?;
    let out = {
        use std::io::Write;
        let mut child = out;
        let mut stdin = child.stdin.take().ok_or("attach has no stdin")?;
        stdin
            .write_all(b"hello\n")
            .map_err(|e| format!("writing to attach: {e}"))?;
        // Keep stdin open until the container has answered: its end would detach stdin.
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        drop(stdin);
        out
    };
    ensure!(
        text(&out.stdout).contains("got:hello"),
        "attach showed {:?} (stderr {:?})",
        text(&out.stdout),
        text(&out.stderr)
    );
    ensure!(
        out.status.code() == Some(7),
        "docker attach ended with {}, want the container's 7",
        out.status
    );
    docker.wait_for(&id, "{{.State.ExitCode}}", "7", LIMIT)?;
    docker.remove_all_and_check(ctx)
}

/// `docker exec` gives the process's output and exit code, passes `-i` input, and a failing
/// command's error reaches the user.
pub fn docker_exec_gives_output_exit_code_and_stdin(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(&docker, &[], &["sleep", "1000"])?;
    let out = docker.out(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo exec-out; echo exec-err >&2; exit 5",
    ]);
    ensure!(
        out.status.code() == Some(5),
        "docker exec ended with {}",
        out.status
    );
    ensure!(
        text(&out.stdout) == "exec-out\n",
        "stdout {:?}",
        text(&out.stdout)
    );
    ensure!(
        text(&out.stderr) == "exec-err\n",
        "stderr {:?}",
        text(&out.stderr)
    );
    let echoed = run_with_input(
        &mut docker.command(&["exec", "-i", &id, "sh", "-c", "cat; echo eof"]),
        b"through exec\n",
    )?;
    ensure!(echoed == "through exec\neof\n", "exec -i gave {echoed:?}");
    let missing = docker.out(&["exec", &id, "/no/such/binary"]);
    ensure!(
        missing.status.code() == Some(127),
        "exec of a missing binary ended with {}",
        missing.status
    );
    // docker prints the runtime's error on stdout.
    let said = format!("{}{}", text(&missing.stdout), text(&missing.stderr));
    ensure!(
        said.contains("/no/such/binary") && said.contains("no such file"),
        "exec of a missing binary said {said:?}"
    );
    // The container is still running after its execs.
    docker.wait_for(&id, "{{.State.Status}}", "running", LIMIT)?;
    docker.remove_all_and_check(ctx)
}

/// The shim serving the test's one container, its fds and resident KiB. The fewest fds seen
/// over a second of samples: a healthcheck runs every second, and one in flight holds its
/// pipes for a moment; a leak shows in every sample.
fn shim_footprint(ns: &str) -> Result<(i32, usize, u64), String> {
    let pids = shims_of_namespace(ns);
    let [pid] = pids[..] else {
        return Err(format!("want one shim for the container, found {pids:?}"));
    };
    let (mut fds, rss) = crate::direct_tests::footprint(pid)?;
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(50));
        fds = fds.min(crate::direct_tests::footprint(pid)?.0);
    }
    Ok((pid, fds, rss))
}

/// Docker runs a healthcheck as an exec every interval: a container checked every second
/// becomes healthy and stays so for 40 s, and the shim's fds and memory do not grow with the
/// checks (measured from the tenth check on, once buffers have reached their size).
pub fn docker_healthchecks_stay_healthy_without_growth(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(
        &docker,
        &["--health-cmd", "test -e /proc/1", "--health-interval", "1s"],
        &["sleep", "1000"],
    )?;
    docker.wait_for(&id, "{{.State.Health.Status}}", "healthy", LIMIT)?;
    let started = Instant::now();
    let mut baseline = None;
    let mut looks = 0;
    while started.elapsed() < HEALTHY_FOR {
        std::thread::sleep(Duration::from_secs(1));
        let state = docker.inspect(
            &id,
            "{{.State.Health.Status}} {{.State.Health.FailingStreak}}",
        )?;
        ensure!(
            state == "healthy 0",
            "after {:?} the health is {state:?}: {}",
            started.elapsed(),
            docker.inspect(&id, "{{json .State.Health.Log}}")?
        );
        looks += 1;
        if baseline.is_none() && started.elapsed() >= Duration::from_secs(10) {
            baseline = Some(shim_footprint(&ctx.ns)?);
        }
    }
    let (pid, fds_before, rss_before) = baseline.ok_or("no baseline was taken")?;
    let (pid_after, fds_after, rss_after) = shim_footprint(&ctx.ns)?;
    ensure!(
        pid_after == pid,
        "the shim changed from {pid} to {pid_after}"
    );
    println!(
        "    [{}] healthy at {looks} looks over {HEALTHY_FOR:?}; from 10 s on, shim fds \
         {fds_before} -> {fds_after}, anonymous RSS {rss_before} -> {rss_after} KiB",
        ctx.runtime
    );
    ensure!(
        fds_after <= fds_before,
        "shim fds grew from {fds_before} to {fds_after} over the healthchecks"
    );
    // About 30 execs: a leak of a few KiB each shows; allocator noise stays well under.
    let grew = rss_after > rss_before + 128;
    if ctx.runtime == OURS {
        ensure!(
            !grew,
            "shim anonymous RSS grew from {rss_before} to {rss_after} KiB over the healthchecks"
        );
    } else if grew {
        // Known difference: the Go shim's memory grows with the number of execs it has run.
        println!(
            "    [{}] anonymous RSS grew by more than 128 KiB",
            ctx.runtime
        );
    }
    docker.remove_all_and_check(ctx)
}

/// The v1 memory cgroup docker gave the container (under the test's cgroup parent).
fn memory_cgroup(ctx: &Ctx, id: &str) -> std::path::PathBuf {
    std::path::Path::new("/sys/fs/cgroup/memory")
        .join(&ctx.ns)
        .join(id)
}

/// `docker stats` shows the container's memory and pids, `docker top` its processes,
/// `docker pause` and `unpause` freeze and thaw it, and `docker update --memory` reaches its
/// cgroup.
pub fn docker_stats_top_pause_and_update_reach_the_container(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(
        &docker,
        &[],
        &[
            "sh",
            "-c",
            "head -c 8388608 /dev/zero > /dev/shm/fill; sleep 1000",
        ],
    )?;
    eventually(LIMIT, || {
        let top = docker.ok(&["top", &id])?;
        ensure!(top.contains("sleep 1000"), "docker top shows {top:?}");
        Ok(())
    })?;
    let stats = docker.ok(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.MemUsage}}|{{.PIDs}}",
        &id,
    ])?;
    let (mem, pids) = stats
        .trim()
        .split_once('|')
        .ok_or(format!("stats {stats:?}"))?;
    ensure!(pids.trim() == "1", "docker stats pids {pids:?} ({stats:?})");
    let used = mem.split('/').next().unwrap_or("").trim();
    ensure!(
        used.ends_with("MiB")
            && used
                .trim_end_matches("MiB")
                .parse::<f64>()
                .is_ok_and(|m| m >= 8.0),
        "docker stats memory {used:?}, want at least the 8 MiB in /dev/shm ({stats:?})"
    );

    docker.ok(&["pause", &id])?;
    docker.wait_for(&id, "{{.State.Status}}", "paused", LIMIT)?;
    let freezer = std::path::Path::new("/sys/fs/cgroup/freezer")
        .join(&ctx.ns)
        .join(&id)
        .join("freezer.state");
    let frozen = std::fs::read_to_string(&freezer).unwrap_or_default();
    ensure!(
        frozen.trim() == "FROZEN",
        "{} is {frozen:?}",
        freezer.display()
    );
    docker.ok(&["unpause", &id])?;
    docker.wait_for(&id, "{{.State.Status}}", "running", LIMIT)?;
    let thawed = std::fs::read_to_string(&freezer).unwrap_or_default();
    ensure!(
        thawed.trim() == "THAWED",
        "{} is {thawed:?}",
        freezer.display()
    );

    docker.ok(&["update", "--memory", "64m", "--memory-swap", "128m", &id])?;
    let limit = memory_cgroup(ctx, &id).join("memory.limit_in_bytes");
    let set = std::fs::read_to_string(&limit).map_err(|e| format!("{}: {e}", limit.display()))?;
    ensure!(
        set.trim() == "67108864",
        "memory limit {set:?} after docker update"
    );
    ensure!(
        docker.inspect(&id, "{{.HostConfig.Memory}}")? == "67108864",
        "docker inspect does not show the update"
    );
    docker.remove_all_and_check(ctx)
}

/// `docker kill -s` delivers the signal, `docker stop` sends TERM and then, after its grace
/// period, KILL; each exit code is what the container's end was.
pub fn docker_kill_and_stop_end_containers_as_asked(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let handler = "trap 'echo got-usr1; exit 9' USR1; echo ready; while :; do sleep 0.1; done";
    let usr1 = run_detached(&docker, &[], &["sh", "-c", handler])?;
    let stubborn = run_detached(
        &docker,
        &[],
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    )?;
    let polite = run_detached(
        &docker,
        &[],
        &[
            "sh",
            "-c",
            "trap 'exit 4' TERM; echo ready; while :; do sleep 0.1; done",
        ],
    )?;
    for id in [&usr1, &stubborn, &polite] {
        eventually(LIMIT, || {
            ensure!(
                docker.ok(&["logs", id])?.contains("ready"),
                "{id} not ready"
            );
            Ok(())
        })?;
    }
    docker.ok(&["kill", "-s", "USR1", &usr1])?;
    docker.wait_for(
        &usr1,
        "{{.State.Status}} {{.State.ExitCode}}",
        "exited 9",
        LIMIT,
    )?;
    ensure!(
        docker.ok(&["logs", &usr1])?.contains("got-usr1"),
        "the USR1 handler did not run"
    );

    let t0 = Instant::now();
    docker.ok(&["stop", "-t", "2", &stubborn])?;
    let took = t0.elapsed();
    docker.wait_for(&stubborn, "{{.State.ExitCode}}", "137", LIMIT)?;
    ensure!(
        took >= Duration::from_secs(2),
        "a container ignoring TERM was stopped after {took:?}, before its 2 s grace"
    );
    let t0 = Instant::now();
    docker.ok(&["stop", "-t", "30", &polite])?;
    let took = t0.elapsed();
    docker.wait_for(&polite, "{{.State.ExitCode}}", "4", LIMIT)?;
    ensure!(
        took < Duration::from_secs(10),
        "a container that ends on TERM took {took:?} to stop"
    );
    docker.remove_all_and_check(ctx)
}

/// `docker restart` starts the container's init again, and `--restart on-failure:2` restarts
/// a failing container twice and then leaves it exited with its code.
pub fn docker_restart_and_restart_policies_follow_the_exits(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let id = run_detached(&docker, &[], &["sleep", "1000"])?;
    let first = docker.inspect(&id, "{{.State.Pid}}")?;
    docker.ok(&["restart", "-t", "1", &id])?;
    docker.wait_for(&id, "{{.State.Status}}", "running", LIMIT)?;
    let second = docker.inspect(&id, "{{.State.Pid}}")?;
    ensure!(
        second != first && second != "0",
        "restart kept pid {first} (now {second})"
    );

    let failing = run_detached(
        &docker,
        &["--restart", "on-failure:2"],
        &["sh", "-c", "echo run; exit 3"],
    )?;
    docker.wait_for(
        &failing,
        "{{.State.Status}} {{.State.ExitCode}} {{.RestartCount}}",
        "exited 3 2",
        LIMIT,
    )?;
    let runs = docker.ok(&["logs", &failing])?;
    ensure!(
        runs.matches("run").count() == 3,
        "want three runs in the logs, got {runs:?}"
    );
    docker.remove_all_and_check(ctx)
}

/// A container over its `--memory` is OOM-killed: exit 137 and `OOMKilled` true.
pub fn docker_memory_limit_reports_oom_killed(ctx: &mut Ctx) -> TestResult {
    let docker = Docker::start(ctx, None)?;
    let hog = r#"x="$(head -c 67108864 /dev/zero | tr '\000' a)"; echo survived"#;
    let id = run_detached(
        &docker,
        &["--memory", "16m", "--memory-swap", "16m"],
        &["sh", "-c", hog],
    )?;
    docker.wait_for(&id, "{{.State.Status}}", "exited", LIMIT)?;
    let state = docker.inspect(&id, "{{.State.ExitCode}} {{.State.OOMKilled}}")?;
    ensure!(
        state == "137 true",
        "exit code and OOMKilled: {state:?}, want 137 true"
    );
    docker.remove_all_and_check(ctx)
}

/// `options` beside `runtimeType` in daemon.json reach the shim: a BinaryName wrapper that
/// logs its calls runs the container's whole life. Docker sends runc's own options only to
/// io.containerd.runc.v2; to any other runtime type it sends CRI's `runtimeoptions.v1.Options`,
/// taking just `ConfigPath` (a TOML file of runc options, as CRI's `config_path`) from there.
pub fn docker_runtime_options_reach_the_shim(ctx: &mut Ctx) -> TestResult {
    let dir = std::path::PathBuf::from(format!("{}-wrapper", ctx.daemon.base.display()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        let (wrapper, log) = logging_runc(&dir)?;
        let options = if ctx.runtime == GO_SHIM {
            serde_json::json!({ "BinaryName": wrapper.to_string_lossy() })
        } else {
            let toml = dir.join("runtime.toml");
            let body = format!("BinaryName = \"{}\"\n", wrapper.display());
            std::fs::write(&toml, body).map_err(|e| e.to_string())?;
            serde_json::json!({ "ConfigPath": toml.to_string_lossy() })
        };
        let docker = Docker::start(ctx, Some(options))?;
        let out = docker.ok(&["run", "--rm", "--network", "none", IMAGE, "echo", "wrapped"])?;
        ensure!(out == "wrapped\n", "docker run printed {out:?}");
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        for command in ["create", "start", "delete"] {
            ensure!(
                calls
                    .lines()
                    .any(|l| l.split_whitespace().any(|w| w == command)),
                "no `{command}` among the wrapper's calls:\n{calls}"
            );
        }
        docker.remove_all_and_check(ctx)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}
