//! Task events: their order and payloads, and exits that race the Start which announces them.

use crate::common::direct::*;
use crate::common::*;
use crate::ensure;
use std::time::Duration;

/// create < start < exit < delete, each with what CRI reads from it: the pid, and on exit and
/// delete the exit status and time.
pub fn events_arrive_in_lifecycle_order(ctx: &mut Ctx) -> TestResult {
    let events = ctx.events()?;
    let id = ctx.id("ev");
    let run = ctx.ctr(&ctx.run_args(&["--rm"], &id, &["sh", "-c", "exit 3"]));
    ensure!(
        run.status.code() == Some(3),
        "run ended with {}: {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    // Events may still be on their way when `ctr run` returns: collect until the last one.
    let got = events.collect(&id, Duration::from_secs(10), |e| {
        e.iter().any(|e| e.topic == "/tasks/delete")
    });
    let topics: Vec<&str> = got.iter().map(|e| e.topic.as_str()).collect();
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    // Known difference: containerd 2.1's Go shim publishes TaskDelete just before it shuts
    // down and sometimes exits before the event leaves; ours flushes its queue first.
    let go_dropped_delete =
        ctx.runtime == GO_SHIM && ctx.daemon.line.name == "2.1" && topics == expected[..3];
    ensure!(
        topics == expected || go_dropped_delete,
        "task events were {topics:?}, want {expected:?}"
    );
    let pid = got[0].u64("pid");
    ensure!(pid > 0, "create event without a pid: {:?}", got[0].body);
    ensure!(got[1].u64("pid") == pid, "start event {:?}", got[1].body);
    for e in &got[2..] {
        ensure!(
            e.u64("pid") == pid && e.u64("exit_status") == 3 && !e.body["exited_at"].is_null(),
            "{} event {:?}, want pid {pid}, exit status 3 and a time",
            e.topic,
            e.body
        );
    }
    Ok(())
}

/// Whether one task's events are create, start, exit, delete. Known difference: containerd
/// 2.1's Go shim now and then publishes /tasks/delete before /tasks/exit (seen in this suite);
/// accepted from it alone, and reported.
pub fn in_lifecycle_order(ctx: &Ctx, topics: &[String]) -> bool {
    let want = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    if topics == want {
        return true;
    }
    let swapped = [want[0], want[1], want[3], want[2]];
    let go_swap = ctx.runtime == GO_SHIM && ctx.daemon.line.name == "2.1" && topics == swapped;
    if go_swap {
        println!(
            "    [{}] published /tasks/delete before /tasks/exit",
            ctx.runtime
        );
    }
    go_swap
}

/// A process that exits at once may be reaped before `runc start` returns (invariant 1).
pub fn exits_racing_start_are_never_lost(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "race0", &["true"])?;
    for i in 0..20 {
        let id = format!("race{i}");
        let bundle = if i == 0 {
            sh.bundle_path(&id)
        } else {
            sh.bundle(&id, &["true"])?
        };
        sh.create(&create_request(&id, &bundle))?;
        sh.start_task(&id)?;
        let waited = sh.wait_exit(&id, Duration::from_secs(20))?;
        ensure!(
            waited.exit_status == 0,
            "{id} exit status {}",
            waited.exit_status
        );
        sh.delete_task(&id)?;
    }
    let topics = eventually(Duration::from_secs(10), || {
        let t = sh.topics();
        ensure!(t.len() >= 80, "{} events so far", t.len());
        Ok(t)
    })?;
    for (n, chunk) in topics.chunks(4).enumerate() {
        ensure!(
            in_lifecycle_order(ctx, chunk),
            "events of task {n} were {chunk:?}"
        );
    }
    sh.finish()
}
