//! Tests that drive the shim directly over ttrpc, where containerd would stand between the
//! test and what it checks: requests cut off by their deadline, and exec churn measured on
//! the shim process itself.

use crate::common::direct::shim_binary;
use crate::common::direct::DirectShim;
use crate::common::*;
use crate::ensure;
use shim::protos::shim::*;
use shim::protos::task::Status as TaskStatus;
use std::time::Duration;

fn state(sh: &DirectShim, id: &str, exec_id: &str) -> Result<StateResponse, String> {
    let req = StateRequest {
        id: id.into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    sh.rt
        .block_on(sh.client.state(DirectShim::ctx(), &req))
        .map_err(|e| format!("State {id} {exec_id}: {e}"))
}

fn wait_for_status(sh: &DirectShim, id: &str, want: TaskStatus) -> TestResult {
    eventually(Duration::from_secs(20), || {
        let s = state(sh, id, "")?;
        ensure!(
            s.status.value() == want as i32,
            "{id} is {:?}, want {want:?}",
            s.status
        );
        Ok(())
    })
}

/// A Create and a Start whose deadlines pass while they run still finish: the task reaches
/// RUNNING, and then a clean end (nothing is stuck in Starting or half-created).
pub fn requests_cut_off_by_their_deadline_still_finish(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "hasty", &["sleep", "1000"])?;
    let c = &sh.client;
    let create = CreateTaskRequest {
        id: "hasty".into(),
        bundle: sh.bundle_path("hasty").to_string_lossy().into_owned(),
        ..Default::default()
    };
    let cut_off = ttrpc::Code::DEADLINE_EXCEEDED;
    let status = sh.call_with_shim_deadline("Create", &create, Duration::from_millis(1))?;
    ensure!(
        status.code.value() == cut_off as i32,
        "a Create with a 1 ms deadline answered {status:?}, not {cut_off:?}"
    );
    wait_for_status(&sh, "hasty", TaskStatus::CREATED).map_err(|e| {
        // Without the polls' own failures, which would bury the rest.
        let log = sh.log_text();
        let log: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("State failed"))
            .collect();
        format!("{e}; log {}", log.join("\n"))
    })?;
    let start = StartRequest {
        id: "hasty".into(),
        ..Default::default()
    };
    let status = sh.call_with_shim_deadline("Start", &start, Duration::from_millis(1))?;
    ensure!(
        status.code.value() == cut_off as i32,
        "a Start with a 1 ms deadline answered {status:?}, not {cut_off:?}"
    );
    wait_for_status(&sh, "hasty", TaskStatus::RUNNING)?;
    let kill = KillRequest {
        id: "hasty".into(),
        signal: 9,
        ..Default::default()
    };
    sh.rt
        .block_on(c.kill(DirectShim::ctx(), &kill))
        .map_err(|e| format!("Kill: {e}"))?;
    let wait = WaitRequest {
        id: "hasty".into(),
        ..Default::default()
    };
    let waited = sh
        .rt
        .block_on(c.wait(DirectShim::ctx(), &wait))
        .map_err(|e| format!("Wait: {e}"))?;
    ensure!(
        waited.exit_status == 137,
        "exit status {}",
        waited.exit_status
    );
    let delete = DeleteRequest {
        id: "hasty".into(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.delete(DirectShim::ctx(), &delete))
        .map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

/// The shim's open descriptors and its anonymous resident memory (heap, stacks) in KiB: what
/// a leak grows. The pages of the binary come and go with the code a request happens to run.
pub fn footprint(pid: i32) -> Result<(usize, u64), String> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| e.to_string())?
        .count();
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or("no RssAnon")?;
    Ok((fds, rss))
}

const EXEC_SPEC: &str =
    r#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0},"env":["PATH=/bin"]}"#;

/// 1000 execs one after another on one container: the shim holds no more descriptors after
/// them than after the first 50, and its memory stays within a page-allocator's slack.
pub fn a_thousand_execs_leak_nothing(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "churn", &["sleep", "1000"])?;
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let create = CreateTaskRequest {
        id: "churn".into(),
        bundle: sh.bundle_path("churn").to_string_lossy().into_owned(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.create(cx(), &create))
        .map_err(|e| format!("Create: {e}"))?;
    let start = |exec_id: &str| StartRequest {
        id: "churn".into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.start(cx(), &start("")))
        .map_err(|e| format!("Start: {e}"))?;
    let pid = sh.pid()?;
    let mut spec = protobuf::well_known_types::any::Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = EXEC_SPEC.as_bytes().to_vec();
    let mut after_50 = (0, 0);
    let began = std::time::Instant::now();
    for i in 0..1000 {
        let exec_id = format!("x{i}");
        let exec = ExecProcessRequest {
            id: "churn".into(),
            exec_id: exec_id.clone(),
            spec: protobuf::MessageField::some(spec.clone()),
            ..Default::default()
        };
        sh.rt
            .block_on(c.exec(cx(), &exec))
            .map_err(|e| format!("Exec {exec_id}: {e}"))?;
        sh.start_process("churn", &exec_id)?;
        let waited = sh.wait_process("churn", &exec_id, Duration::from_secs(15))?;
        ensure!(
            waited.exit_status == 0,
            "{exec_id} exited {}",
            waited.exit_status
        );
        sh.delete_process("churn", &exec_id)?;
        if i == 49 {
            after_50 = footprint(pid)?;
        }
    }
    let after_1000 = footprint(pid)?;
    println!(
        "    [{}] 1000 execs in {:.1}s; fds {} -> {}, anonymous RSS {} -> {} KiB",
        ctx.runtime,
        began.elapsed().as_secs_f64(),
        after_50.0,
        after_1000.0,
        after_50.1,
        after_1000.1
    );
    ensure!(
        after_1000.0 <= after_50.0,
        "open fds grew from {} to {}",
        after_50.0,
        after_1000.0
    );
    let grew = after_1000.1 > after_50.1 + 512;
    if ctx.runtime == OURS {
        ensure!(
            !grew,
            "anonymous RSS grew from {} to {} KiB",
            after_50.1,
            after_1000.1
        );
    } else if grew {
        // Known difference: the Go shim's memory grows with the number of execs it has run.
        println!(
            "    [{}] anonymous RSS grew by more than 512 KiB",
            ctx.runtime
        );
    }
    let kill = KillRequest {
        id: "churn".into(),
        signal: 9,
        ..Default::default()
    };
    sh.rt
        .block_on(c.kill(cx(), &kill))
        .map_err(|e| format!("Kill: {e}"))?;
    sh.rt
        .block_on(c.wait(
            cx(),
            &WaitRequest {
                id: "churn".into(),
                ..Default::default()
            },
        ))
        .map_err(|e| format!("Wait: {e}"))?;
    sh.rt
        .block_on(c.delete(
            cx(),
            &DeleteRequest {
                id: "churn".into(),
                ..Default::default()
            },
        ))
        .map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

/// Ample for a Wait that is answered once its exec is settled (it takes milliseconds); the Go
/// shim's Wait on a deleted exec never returns and runs into it.
const WAIT_RETURNS_IN: Duration = Duration::from_secs(4);

/// A Wait sent before the Start of an exec that runc refuses (as ctr and CRI send it) returns
/// once the Start has failed; a Wait on an exec deleted without running does not hang either.
pub fn waits_on_an_exec_that_never_runs_return(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "norun", &["sleep", "1000"])?;
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let create = CreateTaskRequest {
        id: "norun".into(),
        bundle: sh.bundle_path("norun").to_string_lossy().into_owned(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.create(cx(), &create))
        .map_err(|e| format!("Create: {e}"))?;
    let start = |exec_id: &str| StartRequest {
        id: "norun".into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.start(cx(), &start("")))
        .map_err(|e| format!("Start: {e}"))?;
    let mut spec = protobuf::well_known_types::any::Any::new();
    spec.value = br#"{"args":["/no/such/binary"],"cwd":"/","user":{"uid":0,"gid":0}}"#.to_vec();
    for exec_id in ["bad", "unstarted"] {
        let exec = ExecProcessRequest {
            id: "norun".into(),
            exec_id: exec_id.into(),
            spec: protobuf::MessageField::some(spec.clone()),
            ..Default::default()
        };
        sh.rt
            .block_on(c.exec(cx(), &exec))
            .map_err(|e| format!("Exec {exec_id}: {e}"))?;
    }
    let wait = |exec_id: &str| WaitRequest {
        id: "norun".into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let (wait_bad, wait_unstarted) = (wait("bad"), wait("unstarted"));
    let outcome = sh.rt.block_on(async {
        let waiter = c.wait(cx(), &wait_bad);
        let starter = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.start(cx(), &start("bad")).await
        };
        let (waited, started) =
            tokio::join!(tokio::time::timeout(WAIT_RETURNS_IN, waiter), starter);
        (waited, started)
    });
    ensure!(outcome.1.is_err(), "Start of a missing binary succeeded");
    ensure!(
        matches!(outcome.0, Ok(Ok(_))),
        "the Wait on the exec that failed to start did not return: {:?}",
        outcome.0
    );
    let outcome = sh.rt.block_on(async {
        let waiter = c.wait(cx(), &wait_unstarted);
        let deleter = async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let delete = DeleteRequest {
                id: "norun".into(),
                exec_id: "unstarted".into(),
                ..Default::default()
            };
            c.delete(cx(), &delete).await
        };
        tokio::join!(tokio::time::timeout(WAIT_RETURNS_IN, waiter), deleter)
    });
    ensure!(
        outcome.1.is_ok(),
        "Delete of an unstarted exec: {:?}",
        outcome.1
    );
    if ctx.runtime == OURS {
        ensure!(
            outcome.0.is_ok(),
            "the Wait on the exec deleted without running did not return"
        );
    } else if outcome.0.is_err() {
        // Known difference: containerd's Go shim (seen on 1.6 to 2.1) never answers that Wait.
        println!(
            "    [{}] the Wait on an exec deleted without running never returned",
            ctx.runtime
        );
    }
    let kill = KillRequest {
        id: "norun".into(),
        signal: 9,
        ..Default::default()
    };
    sh.rt
        .block_on(c.kill(cx(), &kill))
        .map_err(|e| format!("Kill: {e}"))?;
    sh.rt
        .block_on(c.wait(cx(), &wait("")))
        .map_err(|e| format!("Wait: {e}"))?;
    let delete = DeleteRequest {
        id: "norun".into(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.delete(cx(), &delete))
        .map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

fn create_req(sh: &DirectShim, id: &str) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: sh.bundle_path(id).to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// One shim serves several containers (a pod's): two Creates of one id race and exactly one
/// wins; a Shutdown while a task lives leaves the shim serving; only after the last Delete
/// does a Shutdown end it (and `finish` checks it ends cleanly).
pub fn one_shim_serves_a_group_until_its_last_task_is_gone(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "pod-a", &["sleep", "1000"])?;
    sh.bundle("pod-b", &["sleep", "1000"])?;
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let (first, second) = sh.rt.block_on(async {
        let a = create_req(&sh, "pod-a");
        tokio::join!(c.create(cx(), &a), c.create(cx(), &a))
    });
    let wins = [&first, &second].iter().filter(|r| r.is_ok()).count();
    ensure!(
        wins == 1,
        "two concurrent Creates of one id: {first:?} and {second:?}"
    );
    let loser = if first.is_ok() { second } else { first };
    ensure!(
        matches!(&loser, Err(ttrpc::Error::RpcStatus(s)) if s.code() == ttrpc::Code::ALREADY_EXISTS)
            || ctx.runtime != OURS,
        "the losing Create answered {loser:?}"
    );
    sh.rt
        .block_on(c.create(cx(), &create_req(&sh, "pod-b")))
        .map_err(|e| format!("Create pod-b: {e}"))?;
    let shutdown = ShutdownRequest::default();
    let _ = sh.rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), c.shutdown(cx(), &shutdown)).await
    });
    state(&sh, "pod-a", "").map_err(|e| format!("after a Shutdown with tasks alive: {e}"))?;
    for id in ["pod-a", "pod-b"] {
        let delete = DeleteRequest {
            id: id.into(),
            ..Default::default()
        };
        sh.rt
            .block_on(c.delete(cx(), &delete))
            .map_err(|e| format!("Delete {id}: {e}"))?;
        if id == "pod-a" {
            let _ = sh.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), c.shutdown(cx(), &shutdown)).await
            });
            state(&sh, "pod-b", "").map_err(|e| format!("with pod-b left: {e}"))?;
        }
    }
    sh.finish()
}

/// Runtime options on `start`'s stdin that do not decode are logged, and the shim goes on
/// with its defaults.
pub fn malformed_start_options_are_logged_and_ignored(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start_with_options(
        &shim_binary(ctx),
        &ctx.ns,
        "badopts",
        &["true"],
        &[0xff, 0xff, 0xff],
    )?;
    let log = eventually(Duration::from_secs(5), || {
        let text = sh.log_text();
        ensure!(
            text.contains("ignoring runtime options from start"),
            "the shim's log does not mention the options: {text:?}"
        );
        Ok(text)
    })?;
    ensure!(!log.is_empty(), "empty log");
    let (c, cx) = (&sh.client, DirectShim::ctx);
    sh.rt
        .block_on(c.create(cx(), &create_req(&sh, "badopts")))
        .map_err(|e| format!("Create under the defaults: {e}"))?;
    let delete = DeleteRequest {
        id: "badopts".into(),
        ..Default::default()
    };
    sh.rt
        .block_on(c.delete(cx(), &delete))
        .map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}
