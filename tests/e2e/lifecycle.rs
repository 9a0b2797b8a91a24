//! A task's life through `ctr`: run, detach, a containerd restart, a shim that dies, and
//! containerd asking the shim who it is.

use crate::common::*;
use crate::ensure;
use std::time::Duration;

pub fn run_rm_gives_output_and_exit_code(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("hi");
    let out = ctx.ctr(&ctx.run_args(&["--rm"], &id, &["sh", "-c", "echo hi; exit 3"]));
    ensure!(
        String::from_utf8_lossy(&out.stdout) == "hi\n",
        "stdout was {:?} (stderr {:?})",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.code() == Some(3),
        "exit status was {}",
        out.status
    );
    Ok(())
}

pub fn detached_task_lifecycle(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("det");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    let pid = ctx.listed_pid(&id)?;
    let ps = ctx.ctr_ok(&["tasks", "ps", &id])?;
    ensure!(
        ps.contains(&pid.to_string()),
        "tasks ps does not list {pid}: {ps}"
    );
    ensure!(
        ctx.task_status(&id)?.as_deref() == Some("RUNNING"),
        "task is not RUNNING"
    );
    ctx.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    ctx.wait_status(&id, "STOPPED")?;
    ensure!(
        !pid_alive(pid),
        "container process {pid} still alive after kill"
    );
    ctx.ctr_ok(&["tasks", "rm", &id])?;
    ctx.ctr_ok(&["containers", "rm", &id])?;
    ensure!(
        ctx.task_status(&id)?.is_none(),
        "task still listed after rm"
    );
    Ok(())
}

pub fn task_survives_containerd_restart(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("restart");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    let pid = ctx.listed_pid(&id)?;
    ctx.daemon.restart()?;
    let status = eventually(Duration::from_secs(20), || {
        ctx.task_status(&id)?
            .ok_or_else(|| "task not listed after restart".to_string())
    })?;
    ensure!(status == "RUNNING", "after restart the task is {status}");
    ensure!(
        ctx.task_pid(&id)? == Some(pid),
        "pid changed across the restart"
    );
    ctx.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    ctx.wait_status(&id, "STOPPED")?;
    ctx.ctr_ok(&["tasks", "rm", &id])?;
    ctx.ctr_ok(&["containers", "rm", &id])?;
    Ok(())
}

/// containerd notices a shim that died, runs `<shim> delete`, reports the task as killed and
/// forgets it: the container process is dead, its rootfs unmounted, and (ours) the dead
/// shim's socket removed. Nothing here cleans up for containerd.
pub fn killed_shim_is_cleaned_up(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("killshim");
    // No stdio: ctr's FIFOs would outlive a task that containerd, not ctr, deletes.
    ctx.ctr_ok(&ctx.run_args(&["-d", "--null-io"], &id, &["sleep", "1000"]))?;
    let pid = ctx.listed_pid(&id)?;
    kill_the_shim(ctx, &id)?;
    eventually(Duration::from_secs(20), || {
        ensure!(!pid_alive(pid), "container process {pid} still alive");
        ensure!(ctx.task_status(&id)?.is_none(), "task still listed");
        Ok(())
    })?;
    cleaned_up_after_the_dead_shim(ctx, &id)
}

/// SIGKILLs the namespace's one shim; containerd must then report `id` killed (137).
fn kill_the_shim(ctx: &Ctx, id: &str) -> TestResult {
    let shims = shims_of_namespace(&ctx.ns);
    ensure!(shims.len() == 1, "want one shim, found {shims:?}");
    let events = ctx.events()?;
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    let exit = events.collect(id, Duration::from_secs(20), |e| {
        e.iter().any(|e| e.topic == "/tasks/exit")
    });
    let exit = exit.iter().find(|e| e.topic == "/tasks/exit");
    ensure!(
        exit.is_some_and(|e| e.u64("exit_status") == 137),
        "containerd reported no killed task: {exit:?}"
    );
    Ok(())
}

/// What containerd's clean-up of a dead shim must leave: the rootfs unmounted, the container
/// removable, and (ours) no socket of the dead shim; the Go shim's leftover is reported.
fn cleaned_up_after_the_dead_shim(ctx: &Ctx, id: &str) -> TestResult {
    let bundle = ctx.daemon.bundles(&ctx.ns).join(id);
    ensure!(
        mounts_under(&bundle).is_empty(),
        "rootfs of {id} still mounted"
    );
    ctx.ctr_ok(&["containers", "rm", id])?;
    let address = ctx.daemon.address.to_string_lossy().into_owned();
    let socket = shim::bootstrap::socket_address(&address, &ctx.ns, id);
    let socket = shim::bootstrap::socket_path(&socket);
    if ctx.runtime == OURS {
        ensure!(
            !socket.exists(),
            "dead shim's socket {} left behind",
            socket.display()
        );
    } else if socket.exists() {
        // Known difference: containerd's Go shim leaves the dead shim's socket file behind.
        println!("    [{}] left the dead shim's socket behind", ctx.runtime);
        let _ = std::fs::remove_file(socket);
    }
    Ok(())
}

/// A shim killed while its container runs a terminal exec and a detached one: containerd's
/// clean-up of the dead shim ends every process of the container, the exec's client ends
/// too, and no mount, socket or console dir is left.
pub fn killed_shim_with_execs_and_a_tty_is_cleaned_up(ctx: &mut Ctx) -> TestResult {
    use crate::common::tty::Pty;
    let id = ctx.id("killexecs");
    ctx.ctr_ok(&ctx.run_args(&["-d", "--null-io"], &id, &["sleep", "1000"]))?;
    ctx.listed_pid(&id)?;
    let fifos = ctx.exec_fifo_dir().to_string_lossy().into_owned();
    let exec = ["tasks", "exec", "--fifo-dir", &fifos, "--exec-id"];
    ctx.ctr_ok(&[&exec[..], &["bg", "-d", &id, "sleep", "1001"]].concat())?;
    let tty = [
        &exec[..],
        &["tty", "-t", &id, "sh", "-c", "echo ready; exec sleep 1002"],
    ]
    .concat();
    let mut client = Pty::spawn(&mut ctx.ctr_unbounded(&tty), 24, 80)?;
    client.wait_for("ready", Duration::from_secs(20))?;
    let ps = ctx.ctr_ok(&["tasks", "ps", &id])?;
    let pids: Vec<i32> = ps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    ensure!(pids.len() == 3, "want init and two execs: {ps}");
    kill_the_shim(ctx, &id)?;
    eventually(Duration::from_secs(20), || {
        let alive: Vec<&i32> = pids.iter().filter(|p| pid_alive(**p)).collect();
        ensure!(
            alive.is_empty(),
            "container processes {alive:?} still alive"
        );
        ensure!(ctx.task_status(&id)?.is_none(), "task still listed");
        Ok(())
    })?;
    client
        .wait(Duration::from_secs(20))
        .map_err(|e| format!("the terminal exec's client: {e}"))?;
    cleaned_up_after_the_dead_shim(ctx, &id)
}

/// Only root may talk to a shim: its socket is root's and 0600, in a directory nobody else
/// may write to (so nobody can put a socket of their own in its place).
pub fn the_shims_socket_is_root_only(ctx: &mut Ctx) -> TestResult {
    use std::os::unix::fs::MetadataExt;
    let id = ctx.id("private");
    ctx.ctr_ok(&ctx.run_args(&["-d", "--null-io"], &id, &["sleep", "1000"]))?;
    ctx.listed_pid(&id)?;
    let address = ctx.daemon.address.to_string_lossy().into_owned();
    let socket = shim::bootstrap::socket_address(&address, &ctx.ns, &id);
    let socket = shim::bootstrap::socket_path(&socket).to_path_buf();
    let meta = std::fs::metadata(&socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    ensure!(
        meta.mode() & 0o777 == 0o600 && meta.uid() == 0,
        "socket {} has mode {:o}, owner {}",
        socket.display(),
        meta.mode() & 0o777,
        meta.uid()
    );
    let dir = socket.parent().ok_or("socket without a directory")?;
    let meta = std::fs::metadata(dir).map_err(|e| e.to_string())?;
    ensure!(
        meta.mode() & 0o022 == 0 && meta.uid() == 0,
        "socket directory {} has mode {:o}, owner {}",
        dir.display(),
        meta.mode() & 0o777,
        meta.uid()
    );
    ctx.remove(&id)
}

/// containerd 2.x runs `<shim> -info` for `ctr plugins inspect-runtime` and CRI's checks.
pub fn inspect_runtime_reports_the_shim(ctx: &mut Ctx) -> TestResult {
    let out = ctx.ctr_ok(&["plugins", "inspect-runtime", "--runtime", ctx.runtime])?;
    let info: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| format!("inspect-runtime printed {out:?}: {e}"))?;
    let name = info["Name"].as_str().unwrap_or("");
    ensure!(!name.is_empty(), "no runtime name in {out}");
    ensure!(
        info["Features"]["ociVersionMin"].is_string(),
        "runc features missing from {out}"
    );
    if ctx.runtime == OURS {
        ensure!(name == "containerd-shim-rust-v1", "name {name:?}");
        ensure!(
            info["Version"]["Version"] == shim::VERSION,
            "version in {out}"
        );
    }
    Ok(())
}

/// How long containerd stays down: past the Go shim's last try of an event (about 13 s while
/// containerd refuses connections) and past the 75 s our shim once gave up after.
const LONG_OUTAGE: Duration = Duration::from_secs(90);
const CONTAINERS_DOWN: usize = 10;
const EXECS_DOWN: usize = 5;

/// containerd stopped for 90 s while 10 containers exit and 5 execs end: once it is back, each
/// task is STOPPED with its own exit code (1.6; later lines forget such tasks), each exec's
/// code is its own, every exit that can still be watched reaches a `ctr events` subscriber
/// that came after the restart, and nothing is left after removal.
pub fn containerd_down_90s_loses_no_exit(ctx: &mut Ctx) -> TestResult {
    let gate = ctx.daemon.base.join(format!("gate-{}", ctx.ns));
    std::fs::create_dir_all(&gate).map_err(|e| format!("{}: {e}", gate.display()))?;
    let outcome = exits_while_containerd_is_down(ctx, &gate);
    // Whatever happened, containerd goes back to its usual config for the tests after this.
    let restarted = ctx.daemon.restart();
    let _ = std::fs::remove_dir_all(&gate);
    outcome.and(restarted)
}

fn exits_while_containerd_is_down(ctx: &mut Ctx, gate: &std::path::Path) -> TestResult {
    // Each process waits for its file in the gate dir, so it ends only once containerd is
    // down, with its own exit code.
    let mount = format!(
        "type=bind,src={},dst=/gate,options=rbind:ro",
        gate.display()
    );
    let waiting = |file: &str, code: usize| {
        format!("until [ -e /gate/{file} ]; do sleep 1; done; exit {code}")
    };
    let mut inits = Vec::new();
    for i in 0..CONTAINERS_DOWN {
        let id = ctx.id("down");
        let script = waiting("inits", 20 + i);
        let extra = ["-d", "--null-io", "--mount", &mount];
        ctx.ctr_ok(&ctx.run_args(&extra, &id, &["sh", "-c", &script]))?;
        inits.push((id, 20 + i));
    }
    let host = ctx.id("host");
    ctx.ctr_ok(&ctx.run_args(
        &["-d", "--null-io", "--mount", &mount],
        &host,
        &["sleep", "1000"],
    ))?;
    ctx.wait_status(&host, "RUNNING")?;
    let fifos = ctx.exec_fifo_dir().to_string_lossy().into_owned();
    let mut execs = Vec::new();
    for j in 0..EXECS_DOWN {
        let exec_id = format!("e{j}");
        let script = waiting("execs", 40 + j);
        ctx.ctr_ok(&[
            "tasks",
            "exec",
            "-d",
            "--fifo-dir",
            &fifos,
            "--exec-id",
            &exec_id,
            &host,
            "sh",
            "-c",
            &script,
        ])?;
        execs.push((exec_id, 40 + j));
    }
    for (id, _) in &inits {
        ctx.wait_status(id, "RUNNING")?;
    }

    ctx.daemon.stop();
    let down = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    for file in ["inits", "execs"] {
        std::fs::write(gate.join(file), "").map_err(|e| format!("gate {file}: {e}"))?;
    }
    std::thread::sleep(LONG_OUTAGE.saturating_sub(down.elapsed()));
    ctx.daemon.restart_with_events_held()?;
    let events = ctx.events()?;
    ctx.daemon.release_events()?;

    // containerd 1.7 and later, loading its shims as it starts, end each one whose task has no
    // process left and forget the task (containerd#6860), before a client can subscribe:
    // there an init that ended while containerd was down is gone after the restart, with
    // its shim, and only the execs' exits (their container still runs) can be watched for.
    // 1.6 keeps such a task, STOPPED, with its shim.
    let forgets_ended_tasks = ctx.daemon.line.name != "1.6";
    if forgets_ended_tasks {
        for (id, _) in &inits {
            eventually(Duration::from_secs(20), || match ctx.task_status(id)? {
                None => Ok(()),
                Some(s) => Err(format!("task {id} is {s}, want it gone")),
            })?;
        }
        eventually(Duration::from_secs(20), || {
            let shims = shims_of_namespace(&ctx.ns);
            ensure!(
                shims.len() == 1,
                "want the host's shim alone, found {shims:?}"
            );
            Ok(())
        })?;
    } else {
        // What containerd reads from the shims themselves: each init STOPPED.
        for (id, _) in &inits {
            ctx.wait_status(id, "STOPPED")?;
        }
    }
    let watched: &[(String, usize)] = if forgets_ended_tasks { &[] } else { &inits };
    let ids: Vec<&str> = watched
        .iter()
        .map(|(id, _)| id.as_str())
        .chain([host.as_str()])
        .collect();
    let exits = events.collect_of(&ids, Duration::from_secs(12), |got| {
        got.iter().filter(|e| e.topic == "/tasks/exit").count() >= watched.len() + EXECS_DOWN
    });
    let delivered = check_exits(&exits, watched, &host, &execs);
    match delivered {
        Ok(()) => {}
        // Known difference: the Go shim tries an event a few times, then drops it.
        Err(e) if ctx.runtime == GO_SHIM => {
            println!("    [{}] known difference: {e}", ctx.runtime)
        }
        Err(e) => return Err(e),
    }
    for (exec_id, code) in &execs {
        let out = ctx.ctr(&["tasks", "rm", "--exec-id", exec_id, &host]);
        ensure!(
            out.status.code() == Some(*code as i32),
            "exec {exec_id}: `ctr tasks rm` says {}, want exit code {code}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for (id, code) in &inits {
        if forgets_ended_tasks {
            ctx.ctr_ok(&["containers", "rm", id])?;
            continue;
        }
        let out = ctx.ctr(&["tasks", "rm", id]);
        let said = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && said.contains(&format!("exit code {code}")),
            "{id}: `ctr tasks rm` says {}, want exit code {code}: {said}",
            out.status
        );
        ctx.ctr_ok(&["containers", "rm", id])?;
    }
    ctx.remove(&host)?;
    ensure!(
        shims_of_namespace(&ctx.ns).is_empty(),
        "shims left after removal: {:?}",
        shims_of_namespace(&ctx.ns)
    );
    let mounts = mounts_under(&ctx.daemon.base);
    ensure!(mounts.is_empty(), "mounts left after removal: {mounts:?}");
    Ok(())
}

/// Every init's and exec's exit, once each, with its own code.
fn check_exits(
    got: &[Event],
    inits: &[(String, usize)],
    host: &str,
    execs: &[(String, usize)],
) -> TestResult {
    let wanted = inits
        .iter()
        .map(|(id, code)| (id.as_str(), id.as_str(), *code))
        .chain(execs.iter().map(|(e, code)| (host, e.as_str(), *code)));
    let exits: Vec<&Event> = got.iter().filter(|e| e.topic == "/tasks/exit").collect();
    for (container, process, code) in wanted {
        let seen: Vec<u64> = exits
            .iter()
            .filter(|e| e.container() == container && e.process() == process)
            .map(|e| e.u64("exit_status"))
            .collect();
        ensure!(
            seen == [code as u64],
            "exit of {container}/{process}: events {seen:?}, want one with {code} (of {} exits)",
            exits.len()
        );
    }
    Ok(())
}
