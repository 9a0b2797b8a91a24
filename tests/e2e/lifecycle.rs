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
