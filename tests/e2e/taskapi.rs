//! The rest of the Task API through containerd and the shim's own socket: pause and resume,
//! update, checkpoint (which CRIU cannot do on this kernel), stats and OOM.

use crate::common::direct::shim_binary;
use crate::common::direct::{task_api_of, DirectShim};
use crate::common::*;
use crate::ensure;
use shim::protos::shim::{
    CheckpointTaskRequest, CreateTaskRequest, DeleteRequest, PauseRequest, StartRequest,
    StateRequest, UpdateTaskRequest,
};
use shim::protos::task::Status as TaskStatus;
use std::path::PathBuf;
use std::time::Duration;

/// A running container: `sleep 1000` started detached.
fn sleeper(ctx: &mut Ctx, name: &str, extra: &[&str]) -> Result<String, String> {
    let id = ctx.id(name);
    let mut args = vec!["-d"];
    args.extend_from_slice(extra);
    ctx.ctr_ok(&ctx.run_args(&args, &id, &["sleep", "1000"]))?;
    ctx.wait_status(&id, "RUNNING")?;
    Ok(id)
}

/// A file of the container's cgroup on this cgroup v1 host: ctr places a container at
/// `/<namespace>/<id>` in every hierarchy.
fn cgroup_file(ctx: &Ctx, id: &str, controller: &str, file: &str) -> PathBuf {
    PathBuf::from("/sys/fs/cgroup")
        .join(controller)
        .join(&ctx.ns)
        .join(id)
        .join(file)
}

fn read_trimmed(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Pause freezes every process of the container and Resume thaws them, each with its event;
/// a paused container takes no exec and no Delete, but a SIGKILL ends it.
pub fn pause_freezes_and_resume_thaws(ctx: &mut Ctx) -> TestResult {
    let id = sleeper(ctx, "pause", &[])?;
    let events = ctx.events()?;
    let freezer = cgroup_file(ctx, &id, "freezer", "freezer.state");
    ctx.ctr_ok(&["tasks", "pause", &id])?;
    ctx.wait_status(&id, "PAUSED")?;
    ensure!(
        read_trimmed(&freezer)? == "FROZEN",
        "freezer.state after pause: {}",
        read_trimmed(&freezer)?
    );
    let again = ctx.ctr(&["tasks", "pause", &id]);
    ensure!(!again.status.success(), "a second pause succeeded");
    let exec = ctx.ctr(&["tasks", "exec", "--exec-id", "x1", &id, "true"]);
    ensure!(
        !exec.status.success() && text(&exec.stderr).contains("paused"),
        "exec in a paused container: {} {:?}",
        exec.status,
        text(&exec.stderr)
    );
    let (rt, api) = task_api_of(ctx, &id)?;
    let delete = DeleteRequest {
        id: id.clone(),
        ..Default::default()
    };
    match rt.block_on(api.delete(DirectShim::ctx(), &delete)) {
        // The Go shim says so too, as Unknown; ours with the code for a request in the wrong
        // state.
        Err(ttrpc::Error::RpcStatus(s)) => ensure!(
            (s.code() == ttrpc::Code::FAILED_PRECONDITION || ctx.runtime == GO_SHIM)
                && s.message().contains("paused"),
            "Delete of a paused container: {:?} {:?}",
            s.code(),
            s.message()
        ),
        other => return Err(format!("Delete of a paused container: {other:?}")),
    }
    ctx.ctr_ok(&["tasks", "resume", &id])?;
    ctx.wait_status(&id, "RUNNING")?;
    ensure!(
        read_trimmed(&freezer)? == "THAWED",
        "freezer.state after resume: {}",
        read_trimmed(&freezer)?
    );
    let exec = ctx.ctr(&["tasks", "exec", "--exec-id", "x2", &id, "true"]);
    ensure!(
        exec.status.success(),
        "exec after resume: {}",
        text(&exec.stderr)
    );
    ctx.ctr_ok(&["tasks", "pause", &id])?;
    ctx.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    if ctx.daemon.line.oci == Oci::Crun {
        // runc thaws a frozen cgroup for a SIGKILL; crun leaves that to a resume.
        ctx.ctr_ok(&["tasks", "resume", &id])?;
    }
    ctx.wait_status(&id, "STOPPED")?;
    let crun = ctx.daemon.line.oci == Oci::Crun;
    let init_exit = |e: &Event| e.topic == "/tasks/exit" && e.process() == id;
    let resumes = |e: &[Event]| e.iter().filter(|e| e.topic == "/tasks/resumed").count();
    let got = events.collect(&id, Duration::from_secs(10), |e| {
        e.iter().any(init_exit) && (!crun || resumes(e) == 2)
    });
    // The exec's own events are another test's subject.
    let got: Vec<&Event> = got.iter().filter(|e| e.process() != "x2").collect();
    let mut topics: Vec<&str> = got.iter().map(|e| e.topic.as_str()).collect();
    let mut want = vec!["/tasks/paused", "/tasks/resumed", "/tasks/paused"];
    if crun {
        // The resume that lets the SIGKILL land races the exit it causes.
        want.extend(["/tasks/exit", "/tasks/resumed"]);
        if let Some(tail) = topics.get_mut(3..) {
            tail.sort();
        }
    } else {
        want.push("/tasks/exit");
    }
    ensure!(topics == want, "events {topics:?}, want {want:?}");
    let exit = got.iter().find(|e| init_exit(e)).ok_or("no exit event")?;
    ensure!(exit.u64("exit_status") == 137, "exit event {:?}", exit.body);
    ctx.remove(&id)
}

/// Update through the shim's socket (no ctr of ours has `tasks update`) sets the container's
/// memory, cpu and pids limits; a malformed resource set is refused and changes nothing.
pub fn update_sets_the_cgroup_limits(ctx: &mut Ctx) -> TestResult {
    let id = sleeper(ctx, "update", &[])?;
    let (rt, api) = task_api_of(ctx, &id)?;
    let resources = serde_json::json!({
        "memory": {"limit": 64 << 20},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000},
        "pids": {"limit": 50},
    });
    let mut any = protobuf::well_known_types::any::Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = serde_json::to_vec(&resources).map_err(|e| e.to_string())?;
    let mut req = UpdateTaskRequest {
        id: id.clone(),
        resources: protobuf::MessageField::some(any.clone()),
        ..Default::default()
    };
    req.annotations
        .insert("io.example/update".into(), "yes".into());
    rt.block_on(api.update(DirectShim::ctx(), &req))
        .map_err(|e| format!("Update: {e}"))?;
    let expect = [
        ("memory", "memory.limit_in_bytes", "67108864"),
        ("cpu", "cpu.shares", "512"),
        ("cpu", "cpu.cfs_quota_us", "50000"),
        ("cpu", "cpu.cfs_period_us", "100000"),
        ("pids", "pids.max", "50"),
    ];
    for (controller, file, want) in expect {
        let got = read_trimmed(&cgroup_file(ctx, &id, controller, file))?;
        ensure!(got == want, "{file} is {got}, want {want}");
    }
    any.value = br#"{"memory": {"limit": "lots"}}"#.to_vec();
    req.resources = protobuf::MessageField::some(any);
    match rt.block_on(api.update(DirectShim::ctx(), &req)) {
        Ok(_) => return Err("a malformed Update succeeded".into()),
        // The Go shim answers a JSON error as Unknown; ours says the argument is wrong.
        Err(ttrpc::Error::RpcStatus(s)) if ctx.runtime == OURS => ensure!(
            s.code() == ttrpc::Code::INVALID_ARGUMENT && s.message().contains("resources"),
            "malformed Update: {:?} {:?}",
            s.code(),
            s.message()
        ),
        Err(_) => {}
    }
    let limit = read_trimmed(&cgroup_file(ctx, &id, "memory", "memory.limit_in_bytes"))?;
    ensure!(
        limit == "67108864",
        "memory limit after a refused update: {limit}"
    );
    let state = ctx.task_status(&id)?;
    ensure!(
        state.as_deref() == Some("RUNNING"),
        "task after updates: {state:?}"
    );
    ctx.remove(&id)
}

/// CRIU cannot dump on this kernel: the checkpoint fails with CRIU named as the cause, the
/// task keeps running, and no CRIU work directory is left in the bundle.
pub fn checkpoint_without_a_working_criu_fails_clearly(ctx: &mut Ctx) -> TestResult {
    let id = sleeper(ctx, "ckpt", &[])?;
    let out = ctx.ctr(&["tasks", "checkpoint", &id]);
    ensure!(!out.status.success(), "checkpoint succeeded on this kernel");
    let err = text(&out.stderr).to_lowercase();
    if std::env::var_os("E2E_VERBOSE").is_some() {
        println!("    [{}] ctr tasks checkpoint: {err}", ctx.runtime);
    }
    // (The paths in the message name the test, which names CRIU: look for its failure.)
    ensure!(
        err.contains("criu failed"),
        "checkpoint error names no cause: {err:?}"
    );
    // Ours passes on CRIU's own words for why it failed.
    ensure!(
        ctx.runtime == GO_SHIM || err.contains("(criu: "),
        "checkpoint error without CRIU's cause: {err:?}"
    );
    ctx.wait_status(&id, "RUNNING")?;
    let work = ctx.daemon.bundles(&ctx.ns).join(&id).join("criu-work");
    ensure!(!work.exists(), "{} was left behind", work.display());
    // Straight to the shim too, with an image path of our own: the same answer.
    let (rt, api) = task_api_of(ctx, &id)?;
    let image = std::env::temp_dir().join(format!("shim-ckpt-{}", ctx.ns));
    let req = CheckpointTaskRequest {
        id: id.clone(),
        path: image.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let direct = rt.block_on(api.checkpoint(DirectShim::ctx(), &req));
    let _ = std::fs::remove_dir_all(&image);
    match direct {
        Ok(_) => return Err("a direct checkpoint succeeded on this kernel".into()),
        Err(ttrpc::Error::RpcStatus(s)) => ensure!(
            s.message().contains("criu failed")
                && (ctx.runtime == GO_SHIM || s.message().contains(&req.path)),
            "direct checkpoint error names no cause: {:?}",
            s.message()
        ),
        Err(e) => return Err(format!("direct checkpoint: {e}")),
    }
    let paused = rt.block_on(api.pause(
        DirectShim::ctx(),
        &PauseRequest {
            id: id.clone(),
            ..Default::default()
        },
    ));
    ensure!(
        paused.is_ok(),
        "the shim serves on after checkpoints: {paused:?}"
    );
    ctx.ctr_ok(&["tasks", "resume", &id])?;
    ctx.wait_status(&id, "RUNNING")?;
    ctx.remove(&id)
}

/// A Create from a checkpoint image waits for Start to run `runc restore`, which fails here
/// (CRIU cannot run on this kernel) with CRIU named; the task can then be deleted cleanly.
pub fn restore_without_a_working_criu_fails_clearly(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "restored", &["sleep", "1000"])?;
    let image = sh.bundle_path("restored").join("image");
    std::fs::create_dir_all(&image).map_err(|e| e.to_string())?;
    // What runc reads of an image before it hands the restore to CRIU.
    std::fs::write(
        image.join("descriptors.json"),
        r#"["/dev/null","/dev/null","/dev/null"]"#,
    )
    .map_err(|e| e.to_string())?;
    let create = CreateTaskRequest {
        id: "restored".into(),
        bundle: sh.bundle_path("restored").to_string_lossy().into_owned(),
        checkpoint: image.to_string_lossy().into_owned(),
        ..Default::default()
    };
    sh.rt
        .block_on(sh.client.create(DirectShim::ctx(), &create))
        .map_err(|e| format!("Create from a checkpoint: {e}"))?;
    let state = StateRequest {
        id: "restored".into(),
        ..Default::default()
    };
    let s = sh
        .rt
        .block_on(sh.client.state(DirectShim::ctx(), &state))
        .map_err(|e| format!("State: {e}"))?;
    ensure!(
        s.status.value() == TaskStatus::CREATED as i32,
        "a task from a checkpoint is {:?} before Start",
        s.status
    );
    let start = StartRequest {
        id: "restored".into(),
        ..Default::default()
    };
    match sh.rt.block_on(sh.client.start(DirectShim::ctx(), &start)) {
        Ok(r) => return Err(format!("restore succeeded on this kernel: pid {}", r.pid)),
        Err(ttrpc::Error::RpcStatus(s)) => ensure!(
            s.message().contains("criu failed")
                && (ctx.runtime == GO_SHIM || s.message().contains("(CRIU: ")),
            "restore error names no cause: {:?}",
            s.message()
        ),
        Err(e) => return Err(format!("Start: {e}")),
    }
    let delete = DeleteRequest {
        id: "restored".into(),
        ..Default::default()
    };
    sh.rt
        .block_on(sh.client.delete(DirectShim::ctx(), &delete))
        .map_err(|e| format!("Delete of a task never restored: {e}"))?;
    sh.finish()
}

/// `ctr tasks metrics` shows the container's cgroup figures: a container that filled 40 MiB
/// of its /dev/shm is charged at least 32 MiB, runs one process or more, and has used CPU.
pub fn metrics_show_the_containers_memory_and_cpu(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("metrics");
    let fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=40 2>/dev/null; sleep 1000";
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sh", "-c", fill]))?;
    ctx.wait_status(&id, "RUNNING")?;
    let metrics = eventually(Duration::from_secs(15), || {
        let out = ctx.ctr_ok(&["tasks", "metrics", "--format", "json", &id])?;
        let m: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| format!("metrics JSON {out:?}: {e}"))?;
        let usage = m["memory"]["usage"]["usage"].as_u64().unwrap_or(0);
        ensure!(usage >= 32 << 20, "memory usage {usage} < 32 MiB: {out}");
        Ok(m)
    })?;
    ensure!(
        metrics["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "pids {}",
        metrics["pids"]
    );
    ensure!(
        metrics["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "cpu {}",
        metrics["cpu"]
    );
    let table = ctx.ctr_ok(&["tasks", "metrics", &id])?;
    ensure!(
        table.contains("memory.usage_in_bytes") && table.contains("pids.current"),
        "metrics table: {table}"
    );
    ctx.remove(&id)
}

/// A container limited to 16 MiB that takes more is OOM-killed: `/tasks/oom` comes before the
/// init's `/tasks/exit` (CRI decides "OOMKilled" from that order), and the exit is 137.
pub fn an_oom_kill_is_told_before_the_exit(ctx: &mut Ctx) -> TestResult {
    let events = ctx.events()?;
    let id = ctx.id("oom");
    // The shell holds the 64 MiB it reads, so it is the process the kernel picks.
    let hog = r#"x="$(head -c 67108864 /dev/zero | tr '\000' a)"; echo survived"#;
    let run = ctx.ctr(&ctx.run_args(
        &["--rm", "--memory-limit", "16777216"],
        &id,
        &["sh", "-c", hog],
    ));
    ensure!(
        run.status.code() == Some(137),
        "run ended with {} (stdout {:?}, stderr {:?})",
        run.status,
        text(&run.stdout),
        text(&run.stderr)
    );
    let got = events.collect(&id, Duration::from_secs(10), |e| {
        e.iter().any(|e| e.topic == "/tasks/exit")
    });
    let topics: Vec<&str> = got.iter().map(|e| e.topic.as_str()).collect();
    let oom = topics.iter().position(|t| *t == "/tasks/oom");
    let exit = topics.iter().position(|t| *t == "/tasks/exit");
    if oom.is_none() && ctx.runtime == GO_SHIM && ctx.daemon.line.oci == Oci::Crun {
        // Known difference: under crun the Go shim's cgroup library sometimes watches no
        // memory cgroup and reports no OOM at all; ours reads the init's cgroup itself.
        println!("    [{}] reported no OOM kill under crun", ctx.runtime);
        return Ok(());
    }
    ensure!(
        matches!((oom, exit), (Some(o), Some(x)) if o < x),
        "events {topics:?}: want /tasks/oom before /tasks/exit"
    );
    Ok(())
}
