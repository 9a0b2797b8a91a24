//! End-to-end tests: real containerd, real runc, the busybox image, driven through `ctr`.
//! Every test runs for our shim and for containerd's Go shim (io.containerd.runc.v2): the same
//! assertions hold on both, so they test containerd's contract, not our quirks.
//!
//! A custom harness (one private containerd for the whole binary, cleanup guaranteed after each
//! test); arguments that are not flags filter tests by name.

mod common;

use common::*;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

type Test = fn(&mut Ctx) -> TestResult;

const TESTS: &[(&str, Test)] = &[
    (
        "run_rm_gives_output_and_exit_code",
        run_rm_gives_output_and_exit_code,
    ),
    (
        "events_arrive_in_lifecycle_order",
        events_arrive_in_lifecycle_order,
    ),
    ("stdout_64mib_is_exact", stdout_64mib_is_exact),
    (
        "stdin_64mib_round_trip_is_exact",
        stdin_64mib_round_trip_is_exact,
    ),
    ("detached_task_lifecycle", detached_task_lifecycle),
    (
        "task_survives_containerd_restart",
        task_survives_containerd_restart,
    ),
    ("killed_shim_is_cleaned_up", killed_shim_is_cleaned_up),
];

const RUNTIMES: &[&str] = &[OURS, GO_SHIM];
const MIB_64: usize = 64 << 20;

fn run_rm_gives_output_and_exit_code(ctx: &mut Ctx) -> TestResult {
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

fn events_arrive_in_lifecycle_order(ctx: &mut Ctx) -> TestResult {
    // Not under `timeout`: killing that would leave ctr holding the pipe open.
    let mut events = std::process::Command::new("ctr")
        .arg("--address")
        .arg(&ctx.daemon.address)
        .args(["--namespace", &ctx.ns, "events"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let reader = read_in_background(events.stdout.take().ok_or("no stdout")?);
    std::thread::sleep(Duration::from_millis(500));
    let id = ctx.id("ev");
    let run = ctx.ctr(&ctx.run_args(&["--rm"], &id, &["true"]));
    std::thread::sleep(Duration::from_millis(500));
    let _ = events.kill();
    let _ = events.wait();
    let text = String::from_utf8_lossy(&reader.join().map_err(|_| "reader panicked")?).into_owned();
    ensure!(
        run.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let needle = format!("\"container_id\":\"{id}\"");
    let topics: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("/tasks/")))
        .collect();
    let expected = [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exit",
        "/tasks/delete",
    ];
    ensure!(
        topics == expected,
        "task events were {topics:?}, want {expected:?}"
    );
    Ok(())
}

fn stdout_64mib_is_exact(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("out");
    // The process exits right after writing; its digest goes to stderr for comparison.
    let script = format!(
        "head -c {MIB_64} /dev/urandom > /tmp/r && sha256sum /tmp/r >&2 && exec cat /tmp/r"
    );
    let out = ctx.ctr(&ctx.run_args(&["--rm"], &id, &["sh", "-c", &script]));
    ensure!(
        out.status.success(),
        "run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.stdout.len() == MIB_64,
        "got {} bytes, want {MIB_64}",
        out.stdout.len()
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = stderr.split_whitespace().next().unwrap_or("");
    ensure!(
        sha256_hex(&out.stdout) == want,
        "digest differs: container said {want}"
    );
    Ok(())
}

fn stdin_64mib_round_trip_is_exact(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("in");
    let data: Vec<u8> = (0..MIB_64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let want = sha256_hex(&data);
    let mut child = ctx
        .ctr_command(&ctx.run_args(&["--rm"], &id, &["cat"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let out = read_in_background(child.stdout.take().ok_or("no stdout")?);
    let err = read_in_background(child.stderr.take().ok_or("no stderr")?);
    let writer = std::thread::spawn(move || {
        let r = stdin.write_all(&data);
        // ctr 1.6 drops an end of input that comes before the task exists: end it later.
        std::thread::sleep(Duration::from_secs(1));
        r
    });
    let status = child.wait().map_err(|e| e.to_string())?;
    writer
        .join()
        .map_err(|_| "writer panicked")?
        .map_err(|e| format!("write: {e}"))?;
    let got = out.join().map_err(|_| "reader panicked")?;
    let err = err.join().map_err(|_| "reader panicked")?;
    ensure!(
        status.success(),
        "run failed ({status}): {}",
        String::from_utf8_lossy(&err)
    );
    ensure!(
        got.len() == MIB_64,
        "got {} bytes back, want {MIB_64}",
        got.len()
    );
    ensure!(sha256_hex(&got) == want, "bytes came back changed");
    Ok(())
}

fn detached_task_lifecycle(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("det");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    let pid = eventually(Duration::from_secs(10), || {
        ctx.task_pid(&id)
            .filter(|p| *p > 0)
            .ok_or_else(|| "task not listed".to_string())
    })?;
    let ps = ctx.ctr_ok(&["tasks", "ps", &id])?;
    ensure!(
        ps.contains(&pid.to_string()),
        "tasks ps does not list {pid}: {ps}"
    );
    ensure!(
        ctx.task_status(&id).as_deref() == Some("RUNNING"),
        "task is not RUNNING"
    );
    ctx.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    eventually(Duration::from_secs(10), || match ctx.task_status(&id) {
        Some(s) if s == "STOPPED" => Ok(()),
        other => Err(format!("task status {other:?}, want STOPPED")),
    })?;
    ensure!(
        !pid_alive(pid),
        "container process {pid} still alive after kill"
    );
    ctx.ctr_ok(&["tasks", "rm", &id])?;
    ctx.ctr_ok(&["containers", "rm", &id])?;
    ensure!(ctx.task_status(&id).is_none(), "task still listed after rm");
    Ok(())
}

fn task_survives_containerd_restart(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("restart");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    let pid = eventually(Duration::from_secs(10), || {
        ctx.task_pid(&id)
            .filter(|p| *p > 0)
            .ok_or_else(|| "task not listed".to_string())
    })?;
    ctx.daemon.restart()?;
    let status = eventually(Duration::from_secs(20), || {
        ctx.task_status(&id)
            .ok_or_else(|| "task not listed after restart".to_string())
    })?;
    ensure!(status == "RUNNING", "after restart the task is {status}");
    ensure!(
        ctx.task_pid(&id) == Some(pid),
        "pid changed across the restart"
    );
    ctx.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id])?;
    eventually(Duration::from_secs(10), || match ctx.task_status(&id) {
        Some(s) if s == "STOPPED" => Ok(()),
        other => Err(format!("task status {other:?}, want STOPPED")),
    })?;
    ctx.ctr_ok(&["tasks", "rm", &id])?;
    ctx.ctr_ok(&["containers", "rm", &id])?;
    Ok(())
}

fn killed_shim_is_cleaned_up(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("killshim");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    let pid = eventually(Duration::from_secs(10), || {
        ctx.task_pid(&id)
            .filter(|p| *p > 0)
            .ok_or_else(|| "task not listed".to_string())
    })?;
    let shims = shims_of_namespace(&ctx.ns);
    ensure!(
        shims.len() == 1,
        "expected one shim for the namespace, found {shims:?}"
    );
    unsafe { libc::kill(shims[0], libc::SIGKILL) };
    // containerd notices the dead shim and runs `<shim> delete`, which kills the container.
    eventually(Duration::from_secs(20), || {
        ensure!(!pid_alive(pid), "container process {pid} still alive");
        Ok(())
    })?;
    let bundle = ctx.daemon.bundles(&ctx.ns).join(&id);
    eventually(Duration::from_secs(20), || {
        let _ = ctx.ctr(&["tasks", "rm", "-f", &id]);
        ensure!(ctx.task_status(&id).is_none(), "task still listed");
        Ok(())
    })?;
    ensure!(
        mounts_under(&bundle).is_empty(),
        "rootfs of {id} still mounted"
    );
    ctx.ctr_ok(&["containers", "rm", &id])?;
    let address = ctx.daemon.address.to_string_lossy().into_owned();
    let socket = shim::bootstrap::socket_address(&address, &ctx.ns, &id);
    let socket = shim::bootstrap::socket_path(&socket);
    if ctx.runtime == GO_SHIM {
        // Known difference: containerd's Go shim leaves the dead shim's socket file behind.
        let _ = std::fs::remove_file(socket);
    }
    ensure!(
        !socket.exists(),
        "dead shim's socket {} left behind",
        socket.display()
    );
    Ok(())
}

fn main() {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&(&str, Test)> = TESTS
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    if let Err(e) = check_prerequisites() {
        eprintln!("e2e: cannot run the end-to-end tests: {e}");
        println!("e2e: 0 passed, 1 failed");
        std::process::exit(1);
    }
    let mut daemon = match Containerd::start("e2e") {
        Ok(d) => d,
        Err(e) => {
            eprintln!("e2e: cannot start containerd: {e}");
            println!("e2e: 0 passed, 1 failed");
            std::process::exit(1);
        }
    };
    let (mut passed, mut failed) = (0, Vec::new());
    for runtime in RUNTIMES {
        for (name, test) in &selected {
            let label = format!("{name} [{runtime}]");
            let started = std::time::Instant::now();
            let result = run_one(&mut daemon, name, runtime, *test);
            let secs = started.elapsed().as_secs_f64();
            match result {
                Ok(()) => {
                    passed += 1;
                    println!("test {label} ... ok ({secs:.1}s)");
                }
                Err(e) => {
                    println!("test {label} ... FAILED ({secs:.1}s)\n    {e}");
                    failed.push(label);
                }
            }
        }
    }
    drop(daemon);
    if !failed.is_empty() {
        println!("\nfailures:");
        failed.iter().for_each(|f| println!("    {f}"));
    }
    println!("\ne2e: {passed} passed, {} failed", failed.len());
    std::process::exit(i32::from(!failed.is_empty()));
}

fn run_one(daemon: &mut Containerd, name: &str, runtime: &'static str, test: Test) -> TestResult {
    let mut ctx = Ctx::new(daemon, name, runtime)?;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&mut ctx)))
        .unwrap_or_else(|_| Err("test panicked".into()));
    let cleanup = ctx.clean_and_check();
    outcome.and(cleanup)
}
