//! Kubernetes through containerd's CRI plugin: what the kubelet asks for, with the shim under
//! test as the pod's runtime handler. Each test ends with StopPodSandbox and RemovePodSandbox
//! and checks that no shim, mount or container cgroup of the pod is left.

use crate::common::cri::*;
use crate::common::*;
use crate::ensure;
use k8s_cri::v1::*;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The lines of a CRI log file as (stream, tag, text): `<time> <stream> <P|F> <text>`.
fn log_lines(path: &std::path::Path) -> Result<Vec<(String, String, String)>, String> {
    let body = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    body.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(format!("not a CRI log line: {l:?}"));
            };
            ensure!(time.contains('T'), "no timestamp in {l:?}");
            Ok((
                stream.to_string(),
                tag.to_string(),
                parts.next().unwrap_or("").to_string(),
            ))
        })
        .collect()
}

/// A pod's sandbox and five containers share one shim; each container keeps its own exit status; CRI's
/// log files get stdout and stderr apart and whole; removing the pod leaves nothing.
pub fn cri_a_pod_is_one_shim_with_logs_in_cri_format(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("onepod")?;
    let script = "for i in $(seq 1 200); do echo out-$i; echo err-$i >&2; done; exit 3";
    let talker = cri.run(&pod, "talker", &["sh", "-c", script], |_| {})?;
    let sleepers = (1..=4)
        .map(|i| cri.run(&pod, &format!("sleeper{i}"), &["sleep", "1000"], |_| {}))
        .collect::<Result<Vec<String>, String>>()?;
    let status = cri.wait_exited(&talker, LIMIT)?;
    ensure!(
        status.exit_code == 3,
        "talker exit code {}",
        status.exit_code
    );
    let shims = cri.shims();
    ensure!(
        shims.len() == 1,
        "a pod of a sandbox and five containers has shims {shims:?}, want one"
    );
    let (_, rss) = crate::direct_tests::footprint(shims[0])?;
    println!(
        "    [{}] one shim serves the pod's sandbox and five containers: RSS {rss} KiB",
        ctx.runtime
    );
    for sleeper in &sleepers {
        let sleeping = cri.status(sleeper)?;
        ensure!(
            sleeping.state == ContainerState::ContainerRunning as i32,
            "{sleeper} is in state {} after its neighbour's exit",
            sleeping.state
        );
    }
    let lines = log_lines(&pod.logs.join("talker.log"))?;
    for stream in ["stdout", "stderr"] {
        let prefix = if stream == "stdout" { "out" } else { "err" };
        let got: Vec<&str> = lines
            .iter()
            .filter(|(s, _, _)| s == stream)
            .map(
                |(_, tag, t)| {
                    if tag == "F" {
                        t.as_str()
                    } else {
                        "(partial)"
                    }
                },
            )
            .collect();
        let want: Vec<String> = (1..=200).map(|i| format!("{prefix}-{i}")).collect();
        ensure!(
            got == want,
            "{stream} in the CRI log: {} lines, first {:?}",
            got.len(),
            got.first()
        );
    }
    cri.remove_pod_and_check(&pod, ctx)
}

/// ExecSync gives the command's stdout, stderr and exit code, and a command past its timeout
/// is ended with an error that says so, while the container goes on running.
pub fn cri_exec_sync_gives_output_exit_code_and_a_timeout(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("execpod")?;
    let id = cri.run(&pod, "app", &["sleep", "1000"], |_| {})?;
    let request = ExecSyncRequest {
        container_id: id.clone(),
        cmd: ["sh", "-c", "echo to-out; echo to-err >&2; exit 4"]
            .map(String::from)
            .to_vec(),
        timeout: 10,
    };
    let reply = cri.call(
        "ExecSync",
        |mut c| async move { c.exec_sync(request).await },
    )?;
    ensure!(reply.exit_code == 4, "exit code {}", reply.exit_code);
    ensure!(
        text(&reply.stdout) == "to-out\n",
        "stdout {:?}",
        text(&reply.stdout)
    );
    ensure!(
        text(&reply.stderr) == "to-err\n",
        "stderr {:?}",
        text(&reply.stderr)
    );

    let slow = ExecSyncRequest {
        container_id: id.clone(),
        cmd: ["sleep", "30"].map(String::from).to_vec(),
        timeout: 1,
    };
    let t0 = Instant::now();
    let timed_out = cri.try_call(|mut c| async move { c.exec_sync(slow).await });
    let took = t0.elapsed();
    match timed_out {
        Err(status) => ensure!(
            status.message().contains("timeout"),
            "a timed-out ExecSync said {:?}: {}",
            status.code(),
            status.message()
        ),
        Ok(reply) => return Err(format!("sleep 30 with a 1 s timeout answered {reply:?}")),
    }
    ensure!(
        took < Duration::from_secs(15),
        "a 1 s ExecSync timeout took {took:?}"
    );
    let status = cri.status(&id)?;
    ensure!(
        status.state == ContainerState::ContainerRunning as i32,
        "the container is in state {} after a timed-out exec",
        status.state
    );
    cri.remove_pod_and_check(&pod, ctx)
}

/// StopContainer sends TERM and, once the grace period has passed, KILL: a container that
/// ignores TERM ends with 137 after the grace, one that handles it ends with its own code.
pub fn cri_stop_container_sends_term_then_kill_after_the_grace(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("stoppod")?;
    let stubborn = cri.run(
        &pod,
        "stubborn",
        &[
            "sh",
            "-c",
            "trap '' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        |_| {},
    )?;
    let polite = cri.run(
        &pod,
        "polite",
        &[
            "sh",
            "-c",
            "trap 'exit 4' TERM; echo ready; while :; do sleep 0.1; done",
        ],
        |_| {},
    )?;
    for name in ["stubborn", "polite"] {
        let log = pod.logs.join(format!("{name}.log"));
        eventually(LIMIT, || {
            let lines = log_lines(&log)?;
            ensure!(
                lines.iter().any(|(_, _, t)| t == "ready"),
                "{name} not ready"
            );
            Ok(())
        })?;
    }
    for (id, grace, code, at_least) in [(&stubborn, 2, 137, 2), (&polite, 30, 4, 0)] {
        let request = StopContainerRequest {
            container_id: id.clone(),
            timeout: grace,
        };
        let t0 = Instant::now();
        cri.call("StopContainer", |mut c| async move {
            c.stop_container(request).await
        })?;
        let took = t0.elapsed();
        let status = cri.wait_exited(id, LIMIT)?;
        ensure!(
            status.exit_code == code,
            "after StopContainer with {grace} s: exit code {}, want {code}",
            status.exit_code
        );
        ensure!(
            took >= Duration::from_secs(at_least as u64) && took < Duration::from_secs(12),
            "StopContainer with {grace} s of grace took {took:?}"
        );
    }
    cri.remove_pod_and_check(&pod, ctx)
}

/// ContainerStats shows the container's memory and cpu; UpdateContainerResources reaches its
/// cgroup.
pub fn cri_stats_and_updates_reach_the_cgroup(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("statspod")?;
    let script = "head -c 16777216 /dev/zero > /dev/shm/fill; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 1000";
    let id = cri.run(&pod, "app", &["sh", "-c", script], |_| {})?;
    let stats = eventually(LIMIT, || {
        let request = ContainerStatsRequest {
            container_id: id.clone(),
        };
        let stats = cri
            .call("ContainerStats", |mut c| async move {
                c.container_stats(request).await
            })?
            .stats
            .ok_or("no stats")?;
        let memory = stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes.as_ref())
            .map_or(0, |v| v.value);
        let cpu = stats
            .cpu
            .as_ref()
            .and_then(|c| c.usage_core_nano_seconds.as_ref())
            .map_or(0, |v| v.value);
        ensure!(
            memory >= 16 << 20 && cpu > 0,
            "stats: working set {memory} B (want the 16 MiB in /dev/shm), cpu {cpu} ns"
        );
        Ok(stats)
    })?;
    ensure!(
        stats.attributes.as_ref().is_some_and(|a| a.id == id),
        "stats are of {:?}",
        stats.attributes.map(|a| a.id)
    );

    let request = UpdateContainerResourcesRequest {
        container_id: id.clone(),
        linux: Some(LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 512,
            ..Default::default()
        }),
        ..Default::default()
    };
    cri.call("UpdateContainerResources", |mut c| async move {
        c.update_container_resources(request).await
    })?;
    let cgroup = |controller: &str, file: &str| {
        let path = std::path::Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(&ctx.ns)
            .join(&id)
            .join(file);
        std::fs::read_to_string(&path)
            .map(|s| s.trim().to_string())
            .map_err(|e| format!("{}: {e}", path.display()))
    };
    let memory = cgroup("memory", "memory.limit_in_bytes")?;
    ensure!(memory == (96u64 << 20).to_string(), "memory limit {memory}");
    let shares = cgroup("cpu", "cpu.shares")?;
    ensure!(shares == "512", "cpu shares {shares}");
    cri.remove_pod_and_check(&pod, ctx)
}

/// A container over its memory limit is OOM-killed, and CRI reports the reason OOMKilled.
pub fn cri_an_oom_kill_is_reported_as_oomkilled(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("oompod")?;
    let hog = r#"x="$(head -c 67108864 /dev/zero | tr '\000' a)"; echo survived"#;
    let id = cri.run(&pod, "hog", &["sh", "-c", hog], |config| {
        config.linux = Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: 16 << 20,
                ..Default::default()
            }),
            ..Default::default()
        });
    })?;
    let status = cri.wait_exited(&id, LIMIT)?;
    ensure!(
        status.exit_code == 137 && status.reason == "OOMKilled",
        "exit code {} and reason {:?}, want 137 and OOMKilled",
        status.exit_code,
        status.reason
    );
    cri.remove_pod_and_check(&pod, ctx)
}

/// ReopenContainerLog: after the kubelet moves a log file away (rotation), the container's
/// next lines go to a new file of the old name.
pub fn cri_reopen_container_log_starts_a_new_file(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("logpod")?;
    let ticker = "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.1; done";
    let id = cri.run(&pod, "ticker", &["sh", "-c", ticker], |_| {})?;
    let log = pod.logs.join("ticker.log");
    eventually(LIMIT, || {
        ensure!(log_lines(&log)?.len() >= 3, "fewer than 3 lines yet");
        Ok(())
    })?;
    let rotated = pod.logs.join("ticker.log.1");
    std::fs::rename(&log, &rotated).map_err(|e| e.to_string())?;
    let request = ReopenContainerLogRequest {
        container_id: id.clone(),
    };
    cri.call("ReopenContainerLog", |mut c| async move {
        c.reopen_container_log(request).await
    })?;
    let fresh = eventually(LIMIT, || {
        let lines = log_lines(&log)?;
        ensure!(
            lines.len() >= 3,
            "the reopened log has {} lines",
            lines.len()
        );
        Ok(lines)
    })?;
    let last_old = log_lines(&rotated)?
        .last()
        .map(|l| l.2.clone())
        .unwrap_or_default();
    let first_new = fresh.first().map(|l| l.2.clone()).unwrap_or_default();
    let number = |t: &str| t.trim_start_matches("tick-").parse::<u64>().unwrap_or(0);
    ensure!(
        number(&first_new) > number(&last_old),
        "the new file starts at {first_new:?} after the old one ended at {last_old:?}"
    );
    cri.remove_pod_and_check(&pod, ctx)
}

/// A logging runc wrapper named in the handler's options runs the pod's whole life: our
/// runtime type takes CRI's `runtimeoptions.v1.Options` (the options table as TOML on 1.7 and
/// 2.x; on 1.6, whose CRI sends only `ConfigPath`, a TOML file named there), the Go shim
/// takes runc's own options.
pub fn cri_options_table_reaches_the_shim(ctx: &mut Ctx) -> TestResult {
    let dir = std::path::PathBuf::from(format!("{}-wrapper", ctx.daemon.base.display()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let result = (|| {
        let (wrapper, log) = logging_runc(&dir)?;
        let table = format!("BinaryName = \"{}\"", wrapper.display());
        let cri = if ctx.runtime == GO_SHIM {
            // The Go shim's handler is io.containerd.runc.v2: its table is runc's options.
            Cri::start_go_with_options(ctx, &table)?
        } else if ctx.daemon.line.name == "1.6" {
            let file = dir.join("runtime.toml");
            std::fs::write(&file, format!("{table}\n")).map_err(|e| e.to_string())?;
            Cri::start(ctx, &format!("ConfigPath = \"{}\"", file.display()))?
        } else {
            Cri::start(ctx, &table)?
        };
        let pod = cri.run_pod("wrapped")?;
        let id = cri.run(&pod, "app", &["echo", "wrapped"], |_| {})?;
        let status = cri.wait_exited(&id, LIMIT)?;
        ensure!(status.exit_code == 0, "exit code {}", status.exit_code);
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        for command in ["create", "start"] {
            let runs = calls
                .lines()
                .filter(|l| l.split_whitespace().any(|w| w == command))
                .count();
            ensure!(
                runs >= 2,
                "{runs} `{command}` among the wrapper's calls (want the sandbox's and the \
                 container's):\n{calls}"
            );
        }
        cri.remove_pod_and_check(&pod, ctx)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Our binary configured the other way, as `io.containerd.runc.v2` with `runtime_path`
/// (containerd then sends runc's options): the pod runs under our shim.
pub fn cri_runtime_path_runs_our_binary_as_runc_v2(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start_with(ctx, OURS_AS_RUNC_HANDLER, "", "")?;
    let pod = cri.run_pod("aspath")?;
    let id = cri.run(&pod, "app", &["sleep", "1000"], |_| {})?;
    let ours = shim_bin();
    let shims = cri.shims();
    ensure!(shims.len() == 1, "shims {shims:?}, want one");
    let exe = std::fs::read_link(format!("/proc/{}/exe", shims[0])).map_err(|e| e.to_string())?;
    let want = std::fs::canonicalize(&ours).map_err(|e| e.to_string())?;
    ensure!(
        exe == want,
        "the pod's shim is {}, want {}",
        exe.display(),
        want.display()
    );
    let request = ExecSyncRequest {
        container_id: id,
        cmd: ["echo", "through-runtime-path"].map(String::from).to_vec(),
        timeout: 10,
    };
    let reply = cri.call(
        "ExecSync",
        |mut c| async move { c.exec_sync(request).await },
    )?;
    ensure!(
        text(&reply.stdout) == "through-runtime-path\n",
        "exec printed {:?}",
        text(&reply.stdout)
    );
    cri.remove_pod_and_check(&pod, ctx)
}

/// Exec and Attach through CRI's streaming server, as `kubectl exec -i` and `kubectl attach -i`
/// use them: input reaches the process, stdout and stderr come back apart, and an exec's exit
/// code comes back in the stream's status.
pub fn cri_streaming_exec_and_attach_carry_stdio_and_the_exit_code(ctx: &mut Ctx) -> TestResult {
    let cri = Cri::start(ctx, "")?;
    let pod = cri.run_pod("streampod")?;
    // CRI may pass the attach's input on before it has hooked up the output streams (seen once
    // for the Go shim on 1.7, stderr missing): the answer is repeated for two seconds.
    let app = "read x; i=0; while [ $i -lt 10 ]; do echo attached:$x; echo to-err >&2; \
               sleep 0.2; i=$((i+1)); done; exit 5";
    let id = cri.run(&pod, "app", &["sh", "-c", app], |config| {
        config.stdin = true
    })?;
    let request = ExecRequest {
        container_id: id.clone(),
        cmd: ["sh", "-c", "read x; echo got:$x; echo exec-err >&2; exit 3"]
            .map(String::from)
            .to_vec(),
        tty: false,
        stdin: true,
        stdout: true,
        stderr: true,
    };
    let url = cri
        .call("Exec", |mut c| async move { c.exec(request).await })?
        .url;
    let got = stream(&url, b"hello\n", LIMIT)?;
    ensure!(
        text(&got.stdout) == "got:hello\n",
        "exec stdout {:?}",
        text(&got.stdout)
    );
    ensure!(
        text(&got.stderr) == "exec-err\n",
        "exec stderr {:?}",
        text(&got.stderr)
    );
    ensure!(
        got.status.contains("NonZeroExitCode") && got.status.contains("\"3\""),
        "exec status {:?}, want exit code 3",
        got.status
    );

    let request = AttachRequest {
        container_id: id.clone(),
        stdin: true,
        tty: false,
        stdout: true,
        stderr: true,
    };
    let url = cri
        .call("Attach", |mut c| async move { c.attach(request).await })?
        .url;
    let got = stream(&url, b"world\n", LIMIT)?;
    ensure!(
        text(&got.stdout).contains("attached:world"),
        "attach stdout {:?}",
        text(&got.stdout)
    );
    ensure!(
        text(&got.stderr).contains("to-err"),
        "attach stderr {:?}",
        text(&got.stderr)
    );
    let status = cri.wait_exited(&id, LIMIT)?;
    ensure!(
        status.exit_code == 5,
        "the attached container's exit code {}",
        status.exit_code
    );
    cri.remove_pod_and_check(&pod, ctx)
}
