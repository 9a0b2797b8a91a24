//! Runtime options that change how the shim runs its runtime: another binary (a wrapper that
//! logs its calls, and crun), and the systemd cgroup driver where systemd does not run.

use crate::common::direct::shim_binary;
use crate::common::direct::DirectShim;
use crate::common::*;
use crate::ensure;
use shim::protos::runc_options::Options;
use shim::protos::shim::*;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

fn create_with(sh: &DirectShim, id: &str, options: Options) -> CreateTaskRequest {
    sh.create_request(id, Some(options))
}

/// Create, Start, Wait for the exit status, Delete: a container's whole life.
fn run_to_exit(sh: &DirectShim, create: &CreateTaskRequest) -> Result<u32, String> {
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let id = create.id.clone();
    sh.rt
        .block_on(c.create(cx(), create))
        .map_err(|e| format!("Create: {e}"))?;
    sh.start_task(&id)?;
    let waited = sh.wait_exit(&id, Duration::from_secs(20))?;
    let delete = DeleteRequest {
        id,
        ..Default::default()
    };
    sh.rt
        .block_on(c.delete(cx(), &delete))
        .map_err(|e| format!("Delete: {e}"))?;
    Ok(waited.exit_status)
}

/// Every runc option of `containerd.runc.v1.Options` reaches the runtime binary it names: a
/// wrapper that logs its command lines sees the state root and NoPivotRoot/NoNewKeyring on
/// create, CriuPath on the checkpoint (which fails here: CRIU cannot run on this kernel), and
/// the container's whole life through it.
pub fn runc_options_reach_the_binary_they_name(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "wrapped", &["sleep", "1000"])?;
    let dir = sh.bundle_path("wrapped");
    let (wrapper, calls) = logging_runc(&dir)?;
    let root = dir.join("runc-root").to_string_lossy().into_owned();
    let (image, work) = (dir.join("ckpt-image"), dir.join("ckpt-work"));
    let options = Options {
        binary_name: wrapper.to_string_lossy().into_owned(),
        root: root.clone(),
        no_pivot_root: true,
        no_new_keyring: true,
        criu_path: "/usr/sbin/criu".into(),
        criu_image_path: image.to_string_lossy().into_owned(),
        criu_work_path: work.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let create = create_with(&sh, "wrapped", options);
    sh.rt
        .block_on(c.create(cx(), &create))
        .map_err(|e| format!("Create: {e}"))?;
    sh.start_task("wrapped")?;
    let checkpoint = CheckpointTaskRequest {
        id: "wrapped".into(),
        ..Default::default()
    };
    let checkpointed = sh.rt.block_on(c.checkpoint(cx(), &checkpoint));
    ensure!(
        checkpointed.is_err(),
        "a checkpoint succeeded on this kernel"
    );
    let kill = KillRequest {
        id: "wrapped".into(),
        signal: 9,
        ..Default::default()
    };
    sh.rt
        .block_on(c.kill(cx(), &kill))
        .map_err(|e| format!("Kill: {e}"))?;
    let waited = sh.wait_exit("wrapped", Duration::from_secs(20))?;
    ensure!(
        waited.exit_status == 137,
        "exit status {}",
        waited.exit_status
    );
    sh.delete_task("wrapped")?;
    let log = std::fs::read_to_string(&calls).map_err(|e| format!("no calls logged: {e}"))?;
    let call = |command: &str| -> Option<&str> {
        log.lines()
            .find(|l| l.split_whitespace().any(|w| w == command))
    };
    for command in ["create", "start", "kill", "delete"] {
        let line = call(command).ok_or(format!("no {command} in the wrapper's log:\n{log}"))?;
        ensure!(
            line.contains(&root),
            "{command} without the state root {root}: {line}"
        );
    }
    let create_line = call("create").unwrap_or_default();
    for flag in ["--no-pivot", "--no-new-keyring"] {
        ensure!(
            create_line.contains(flag),
            "create without {flag}: {create_line}"
        );
    }
    let checkpoint_line = call("checkpoint").ok_or(format!("no checkpoint call:\n{log}"))?;
    // containerd 1.7 deprecated CriuPath and its Go shim ignores it from then on.
    let go_ignores_criu_path = ctx.runtime == GO_SHIM && ctx.daemon.line.name != "1.6";
    ensure!(
        checkpoint_line.contains("--criu /usr/sbin/criu") || go_ignores_criu_path,
        "checkpoint without CriuPath: {checkpoint_line}"
    );
    // Where the request names no image, ours takes CriuImagePath and CriuWorkPath from the
    // runtime options; the Go shim passes the request's (empty) path.
    if ctx.runtime == OURS {
        for path in [&image, &work] {
            ensure!(
                checkpoint_line.contains(&*path.to_string_lossy()),
                "checkpoint without {}: {checkpoint_line}",
                path.display()
            );
        }
    }
    sh.finish()
}

/// crun, Debian's second OCI runtime, runs a container through the shim from start to exit.
/// crun 1.8 refuses a hybrid host whose unified hierarchy holds a controller (hugetlb here), so
/// it runs under a wrapper that hides that hierarchy in a mount namespace of crun's own (the
/// host's mounts are untouched) and crun sees plain cgroup v1; every argument is the shim's,
/// as runc would get it.
pub fn crun_as_binary_name_runs_a_container(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(
        &shim_binary(ctx),
        &ctx.ns,
        "crunned",
        &["sh", "-c", "exit 4"],
    )?;
    let wrapper = sh.bundle_path("crunned").join("crun-without-cgroups");
    let script = "#!/bin/sh\nexec unshare --mount --propagation private sh -c \\\n  \
                  'umount /sys/fs/cgroup/unified 2>/dev/null; exec crun \"$@\"' crun \"$@\"\n";
    std::fs::write(&wrapper, script).map_err(|e| e.to_string())?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&wrapper, mode).map_err(|e| e.to_string())?;
    let options = Options {
        binary_name: wrapper.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let status = run_to_exit(&sh, &create_with(&sh, "crunned", options))?;
    ensure!(status == 4, "exit status {status}, want 4");
    sh.finish()
}

/// SystemdCgroup where systemd is not the init: Create fails with systemd named, and the shim
/// serves on.
pub fn systemd_cgroup_without_systemd_is_a_clear_error(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "sysd", &["true"])?;
    let options = Options {
        systemd_cgroup: true,
        ..Default::default()
    };
    let created = sh.rt.block_on(
        sh.client
            .create(DirectShim::ctx(), &create_with(&sh, "sysd", options)),
    );
    match created {
        Ok(_) => return Err("Create with the systemd driver succeeded without systemd".into()),
        // crun says it cannot reach systemd's bus, sd-bus.
        Err(ttrpc::Error::RpcStatus(s)) => ensure!(
            s.message().contains("systemd") || s.message().contains("sd-bus"),
            "the error does not name systemd: {:?}",
            s.message()
        ),
        Err(e) => return Err(format!("Create: {e}")),
    }
    let status = run_to_exit(&sh, &create_with(&sh, "sysd", Options::default()))?;
    ensure!(status == 0, "exit status {status} after the refused Create");
    sh.finish()
}

/// IoUid/IoGid own the process's ends of its stdio pipes, so the root of a user namespace
/// mapped to that host user can reopen them (`/proc/self/fd/1`); under the default owner,
/// host root, it cannot. (Without a user namespace runc itself hands the pipes to the
/// process's user, so only a user namespace shows what the option does.)
pub fn io_uid_and_gid_let_a_user_namespace_root_reopen_its_stdio(ctx: &mut Ctx) -> TestResult {
    let reopen = ["sh", "-c", "echo reopened > /proc/self/fd/1"];
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "asuser", &reopen)?;
    sh.bundle("asroot", &reopen)?;
    let mut outcomes = Vec::new();
    for (id, owner) in [("asuser", 1000), ("asroot", 0)] {
        let bundle = sh.bundle_path(id);
        let config = bundle.join("config.json");
        let text = std::fs::read(&config).map_err(|e| e.to_string())?;
        let mut spec: serde_json::Value =
            serde_json::from_slice(&text).map_err(|e| e.to_string())?;
        let mapping = serde_json::json!([{"containerID": 0, "hostID": 1000, "size": 65536}]);
        let linux = &mut spec["linux"];
        linux["uidMappings"] = mapping.clone();
        linux["gidMappings"] = mapping;
        if let Some(namespaces) = linux["namespaces"].as_array_mut() {
            namespaces.push(serde_json::json!({"type": "user"}));
        }
        std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
        let mut readers = Vec::new();
        let mut create = create_with(
            &sh,
            id,
            Options {
                io_uid: owner,
                io_gid: owner,
                ..Default::default()
            },
        );
        for stream in ["stdout", "stderr"] {
            let fifo = bundle.join(stream);
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
                .map_err(|e| e.to_string())?;
            // The reader's end, held for the container's life: read+write so opening never
            // waits, non-blocking so reading stops at what is there.
            let reader = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&fifo)
                .map_err(|e| e.to_string())?;
            readers.push(reader);
            let path = fifo.to_string_lossy().into_owned();
            if stream == "stdout" {
                create.stdout = path;
            } else {
                create.stderr = path;
            }
        }
        let status = run_to_exit(&sh, &create)?;
        let mut out = String::new();
        let _ = std::io::Read::read_to_string(&mut readers[0], &mut out);
        outcomes.push((status, out));
    }
    ensure!(
        outcomes[0] == (0, "reopened\n".to_string()),
        "namespace root (host uid 1000) with its stdout owned by IoUid 1000: {:?}",
        outcomes[0]
    );
    ensure!(
        outcomes[1].0 != 0 && outcomes[1].1.is_empty(),
        "namespace root (host uid 1000) reopened a stdout owned by host root: {:?}",
        outcomes[1]
    );
    sh.finish()
}
