//! Load on one shim, driven over its socket as a pod's containers and a kubelet's exec probes
//! would: every exit must reach its waiter, and what the shim holds (descriptors, memory) must
//! come back to its level once the work is gone. The figures are printed for the record; only
//! losses and growth are asserted, never a time.

use super::direct_tests::footprint;
use crate::common::direct::*;
use crate::common::*;
use crate::ensure;
use shim::protos::shim::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A pod's worth of containers, created this many at a time.
const CONTAINERS: usize = 100;
const CREATE_WAVE: usize = 20;
/// Execs on one container, this many at a time.
const EXECS: usize = 2000;
const EXEC_WAVE: usize = 50;
/// Ample for an exec of `true` to be reported (it takes milliseconds); past it the exit is
/// lost.
const EXIT_LIMIT: Duration = Duration::from_secs(60);
/// How much a shim's RSS may move between two waves of the same work: the allocator's slack.
const RSS_SLACK_KIB: u64 = 1024;

const EXEC_SPEC: &str =
    r#"{"args":["true"],"cwd":"/","user":{"uid":0,"gid":0},"env":["PATH=/bin"]}"#;

/// Runs `work(i)` for each `i` in `range` at once on the shim's client runtime; the errors of
/// those that failed, first by index.
fn all_at_once<F, Fut>(
    sh: &DirectShim,
    range: std::ops::Range<usize>,
    work: F,
) -> Result<(), String>
where
    F: Fn(Arc<TaskApi>, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let client = Arc::new(sh.client.clone());
    sh.rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for i in range {
            set.spawn(work(client.clone(), i));
        }
        let mut errors = Vec::new();
        while let Some(done) = set.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(e) => errors.push(format!("task failed: {e}")),
            }
        }
        errors.sort();
        match errors.first() {
            None => Ok(()),
            Some(first) => Err(format!("{} failed, first: {first}", errors.len())),
        }
    })
}

/// Ample for any request of an exec of `true` (they take milliseconds): past it the shim is
/// stuck.
const REQUEST_LIMIT: Duration = Duration::from_secs(20);

/// One exec of `true` in `id`, from Exec to Delete, with its Wait sent right after its Start.
async fn one_exec(c: Arc<TaskApi>, id: String, exec_id: String) -> Result<(), String> {
    let cx = || ttrpc::context::with_timeout(REQUEST_LIMIT.as_nanos() as i64);
    let mut spec = protobuf::well_known_types::any::Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = EXEC_SPEC.as_bytes().to_vec();
    let exec = ExecProcessRequest {
        id: id.clone(),
        exec_id: exec_id.clone(),
        spec: protobuf::MessageField::some(spec),
        ..Default::default()
    };
    c.exec(cx(), &exec)
        .await
        .map_err(|e| format!("Exec {exec_id}: {e}"))?;
    let start = StartRequest {
        id: id.clone(),
        exec_id: exec_id.clone(),
        ..Default::default()
    };
    c.start(cx(), &start)
        .await
        .map_err(|e| format!("Start {exec_id}: {e}"))?;
    let wait = WaitRequest {
        id: id.clone(),
        exec_id: exec_id.clone(),
        ..Default::default()
    };
    let waited = tokio::time::timeout(EXIT_LIMIT, c.wait(cx(), &wait))
        .await
        .map_err(|_| format!("Wait {exec_id}: no exit in {EXIT_LIMIT:?}, it was lost"))?
        .map_err(|e| format!("Wait {exec_id}: {e}"))?;
    ensure!(
        waited.exit_status == 0,
        "{exec_id} exited {}",
        waited.exit_status
    );
    let delete = DeleteRequest {
        id,
        exec_id: exec_id.clone(),
        ..Default::default()
    };
    c.delete(cx(), &delete)
        .await
        .map_err(|e| format!("Delete {exec_id}: {e}"))?;
    Ok(())
}

/// How long descriptors of finished execs may take to be closed after their Delete returned.
const FDS_SETTLE: Duration = Duration::from_secs(5);

/// The shim's footprint once its descriptors are down to `fds`, or after `FDS_SETTLE`: a
/// shim may close an exec's last descriptors just after answering its Delete.
fn fds_back_to(pid: i32, fds: usize) -> Result<(usize, u64), String> {
    let deadline = Instant::now() + FDS_SETTLE;
    loop {
        let now = footprint(pid)?;
        if now.0 <= fds || Instant::now() >= deadline {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn create_and_start_one(sh: &DirectShim, id: &str) -> Result<(), String> {
    sh.create(&sh.create_request(id, None))?;
    sh.start_task(id).map(drop)
}

/// One shim serving 100 containers, created 20 at a time, then 2000 execs of `true` in one of
/// them, 50 at a time: every exit reaches its waiter, the shim's descriptors after each exec
/// wave are those after the first, its RSS stays within an allocator's slack of it, and once
/// every container is gone the shim holds what it held with one.
pub fn a_pod_shim_under_load_loses_no_exit_and_leaks_nothing(ctx: &mut Ctx) -> TestResult {
    let ids: Vec<String> = (0..CONTAINERS).map(|i| format!("pod{i}")).collect();
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, &ids[0], &["sleep", "1000"])?;
    let pid = sh.pid()?;
    let runtime = ctx.runtime;
    for id in &ids[1..] {
        sh.bundle(id, &["sleep", "1000"])?;
    }
    let create_and_start = |c: Arc<TaskApi>, id: String, req: CreateTaskRequest| async move {
        c.create(DirectShim::ctx(), &req)
            .await
            .map_err(|e| format!("Create {id}: {e}"))?;
        let start = StartRequest {
            id: id.clone(),
            ..Default::default()
        };
        c.start(DirectShim::ctx(), &start)
            .await
            .map(drop)
            .map_err(|e| format!("Start {id}: {e}"))
    };
    create_and_start_one(&sh, &ids[0])?;
    let one_container = footprint(pid)?;
    let began = Instant::now();
    for (wave, chunk) in (1..CONTAINERS)
        .collect::<Vec<_>>()
        .chunks(CREATE_WAVE)
        .enumerate()
    {
        let wave_began = Instant::now();
        let range = chunk[0]..chunk[chunk.len() - 1] + 1;
        all_at_once(&sh, range, |c, i| {
            create_and_start(c, ids[i].clone(), sh.create_request(&ids[i], None))
        })
        .map_err(|e| format!("container wave {wave}: {e}"))?;
        let (fds, rss) = footprint(pid)?;
        println!(
            "    [{runtime}] containers {}..{}: created and started in {:.2}s; shim fds {fds}, anonymous RSS {rss} KiB",
            chunk[0],
            chunk[chunk.len() - 1],
            wave_began.elapsed().as_secs_f64()
        );
    }
    println!(
        "    [{runtime}] {} more containers in {:.1}s (with one: fds {}, anonymous RSS {} KiB)",
        CONTAINERS - 1,
        began.elapsed().as_secs_f64(),
        one_container.0,
        one_container.1
    );

    let target = ids[0].clone();
    let before_execs = footprint(pid)?;
    let mut first_wave = (0, 0);
    let mut worst = (0, 0);
    let began = Instant::now();
    let mut stuck = false;
    for wave in 0..EXECS / EXEC_WAVE {
        let range = wave * EXEC_WAVE..(wave + 1) * EXEC_WAVE;
        let done = all_at_once(&sh, range, |c, i| {
            one_exec(c, target.clone(), format!("x{i}"))
        })
        .map_err(|e| format!("exec wave {wave}: {e}"));
        match done {
            Ok(()) => {}
            Err(e) if ctx.runtime == GO_SHIM => {
                // Known difference: with 50 execs at once, the Go shim leaves some of their
                // requests unanswered; what it holds after that says nothing of load.
                println!("    [{runtime}] known difference: {e}; the exec waves stop here");
                stuck = true;
                break;
            }
            Err(e) => return Err(e),
        }
        let now = fds_back_to(pid, before_execs.0)?;
        if wave == 0 {
            first_wave = now;
        }
        worst = (worst.0.max(now.0), worst.1.max(now.1));
        if now.0 > before_execs.0 && ctx.runtime == GO_SHIM {
            println!(
                "    [{runtime}] known difference: after exec wave {wave} it holds {} fds, {} \
                 before the execs; the exec waves stop here",
                now.0, before_execs.0
            );
            stuck = true;
            break;
        }
        ensure!(
            now.0 <= before_execs.0,
            "after exec wave {wave} the shim holds {} fds, {} before the execs",
            now.0,
            before_execs.0
        );
    }
    let after_execs = footprint(pid)?;
    if !stuck {
        println!(
            "    [{runtime}] {EXECS} execs, {EXEC_WAVE} at a time, in {:.1}s; after each wave: \
             fds {} (first wave) / {} (most), anonymous RSS {} (first wave) / {} (most) / {} (last) KiB",
            began.elapsed().as_secs_f64(),
            first_wave.0,
            worst.0,
            first_wave.1,
            worst.1,
            after_execs.1
        );
        let grew = after_execs.1 > first_wave.1 + RSS_SLACK_KIB;
        if ctx.runtime == OURS {
            ensure!(
                !grew,
                "anonymous RSS grew from {} KiB after the first exec wave to {} KiB after the last",
                first_wave.1,
                after_execs.1
            );
        } else if grew {
            println!(
                "    [{runtime}] known difference: anonymous RSS grew by more than {RSS_SLACK_KIB} KiB \
                 over the execs"
            );
        }
    }

    // Every container ends with SIGKILL, its exit waited for, and is deleted, 20 at a time.
    for chunk in (0..CONTAINERS).collect::<Vec<_>>().chunks(CREATE_WAVE) {
        let range = chunk[0]..chunk[chunk.len() - 1] + 1;
        all_at_once(&sh, range, |c, i| {
            let id = ids[i].clone();
            async move {
                let kill = KillRequest {
                    id: id.clone(),
                    signal: 9,
                    ..Default::default()
                };
                c.kill(DirectShim::ctx(), &kill)
                    .await
                    .map_err(|e| format!("Kill {id}: {e}"))?;
                let wait = WaitRequest {
                    id: id.clone(),
                    ..Default::default()
                };
                let waited = tokio::time::timeout(EXIT_LIMIT, c.wait(DirectShim::ctx(), &wait))
                    .await
                    .map_err(|_| format!("Wait {id}: no exit in {EXIT_LIMIT:?}, it was lost"))?
                    .map_err(|e| format!("Wait {id}: {e}"))?;
                ensure!(
                    waited.exit_status == 128 + 9,
                    "{id} exited {}, not 137",
                    waited.exit_status
                );
                if i == 0 {
                    // The shim's first container is deleted last, on its own.
                    return Ok(());
                }
                let delete = DeleteRequest {
                    id: id.clone(),
                    ..Default::default()
                };
                c.delete(DirectShim::ctx(), &delete)
                    .await
                    .map(drop)
                    .map_err(|e| format!("Delete {id}: {e}"))
            }
        })?;
    }
    let (fds, rss) = footprint(pid)?;
    println!(
        "    [{runtime}] back to one container: fds {fds}, anonymous RSS {rss} KiB (with one at the start: \
         fds {}, anonymous RSS {} KiB)",
        one_container.0, one_container.1
    );
    ensure!(
        stuck || fds <= one_container.0,
        "with one container left the shim holds {fds} fds, {} with one at the start",
        one_container.0
    );
    sh.delete_task(&ids[0])?;
    sh.finish()
}
