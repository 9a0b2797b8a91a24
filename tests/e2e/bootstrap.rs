//! `start` as each containerd line runs it, driven directly: containerd 2.3's BootstrapParams
//! on stdin and a protobuf BootstrapResult back (Debian has no containerd 2.3: the test plays
//! its part, built from containerd's code), 2.2's options Any, and 1.6's plain address.

use crate::common::direct::shim_binary;
use crate::common::direct::{go_trim_space, DirectShim};
use crate::common::*;
use crate::ensure;
use protobuf::Message;
use shim::protos::shim::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A socket directory short enough for a unix socket path, removed on drop.
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(tag: &str) -> SocketDir {
        SocketDir(PathBuf::from(format!(
            "/tmp/sd-{tag}-{}",
            std::process::id()
        )))
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runc_options(root: &Path) -> protobuf::well_known_types::any::Any {
    let options = shim::protos::runc_options::Options {
        root: root.to_string_lossy().into_owned(),
        ..Default::default()
    };
    let mut any = protobuf::well_known_types::any::Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = options.write_to_bytes().unwrap_or_default();
    any
}

/// Create, Start, Wait, Delete of the first task over the task API the shim announced.
fn lifecycle(sh: &DirectShim, id: &str) -> Result<u32, String> {
    let (c, cx) = (&sh.client, DirectShim::ctx);
    sh.rt
        .block_on(c.create(cx(), &sh.create_request(id, None)))
        .map_err(|e| format!("Create: {e}"))?;
    sh.start_task(id)?;
    let status = sh.wait_exit(id, Duration::from_secs(20))?.exit_status;
    sh.delete_task(id)?;
    Ok(status)
}

/// containerd 2.3: the options travel in the params' extension and are the default for
/// Create (here a runc root of the test's own), the socket goes to `socket_dir`, and the
/// reply is a BootstrapResult (version 3, ttrpc) that 2.3.0's whitespace trim leaves whole;
/// the task lives and ends over containerd.task.v3.Task.
pub fn a_23_bootstrap_with_options_and_a_socket_dir_serves_v3(ctx: &mut Ctx) -> TestResult {
    let socket_dir = SocketDir::new("opt");
    let root = PathBuf::from(format!("/run/shim-test-root-{}", std::process::id()));
    let (sh, reply) = DirectShim::start_bootstrapped(
        &shim_binary(ctx),
        &ctx.ns,
        "boot",
        &["sh", "-c", "exit 6"],
        Some(runc_options(&root)),
        Some(&socket_dir.0),
    )?;
    if std::env::var_os("E2E_VERBOSE").is_some() {
        println!("    BootstrapResult bytes: {reply:02x?}");
    }
    ensure!(
        go_trim_space(&reply) == &reply[..],
        "a whitespace trim changes the reply {reply:02x?}"
    );
    ensure!(sh.version == 3, "announced task API v{}", sh.version);
    ensure!(
        sh.socket().starts_with(&socket_dir.0) && sh.socket().exists(),
        "socket {} is not in the socket_dir {}",
        sh.socket().display(),
        socket_dir.0.display()
    );
    use std::os::unix::fs::MetadataExt;
    let made = std::fs::metadata(&socket_dir.0).map_err(|e| e.to_string())?;
    ensure!(
        made.mode() & 0o777 == 0o700,
        "the socket_dir the shim made has mode {:o}, want 700",
        made.mode() & 0o777
    );
    let (c, cx) = (&sh.client, DirectShim::ctx);
    sh.rt
        .block_on(c.create(cx(), &sh.create_request("boot", None)))
        .map_err(|e| format!("Create: {e}"))?;
    let state_dir = root.join(&ctx.ns).join("boot");
    let options_applied = state_dir.exists();
    sh.start_task("boot")?;
    let status = sh.wait_exit("boot", Duration::from_secs(20))?.exit_status;
    sh.delete_task("boot")?;
    let _ = std::fs::remove_dir_all(&root);
    ensure!(
        options_applied,
        "runc kept no state under the options' root {}",
        state_dir.display()
    );
    ensure!(status == 6, "exit status {status}");
    sh.finish()
}

/// containerd 2.3 sends BootstrapParams even with no runtime options: the defaults apply and
/// the socket is in the default directory.
pub fn a_23_bootstrap_without_options_starts_a_task(ctx: &mut Ctx) -> TestResult {
    let (sh, _) =
        DirectShim::start_bootstrapped(&shim_binary(ctx), &ctx.ns, "bare", &["true"], None, None)?;
    ensure!(
        sh.socket().starts_with(shim::bootstrap::SOCKET_DIR),
        "socket {}",
        sh.socket().display()
    );
    let status = lifecycle(&sh, "bare")?;
    ensure!(status == 0, "exit status {status}");
    sh.finish()
}

/// An options Any on stdin (containerd up to 2.2) decodes as BootstrapParams by accident,
/// naming another task: the shim takes it as options and answers the old way, a plain
/// address without MAX_SHIM_VERSION (1.6) and with MAX_SHIM_VERSION=2 (1.7 to 2.3).
pub fn an_options_any_on_stdin_still_starts_the_old_way(ctx: &mut Ctx) -> TestResult {
    let root = PathBuf::from(format!("/run/shim-test-root-old-{}", std::process::id()));
    let any = runc_options(&root);
    let raw = any.write_to_bytes().map_err(|e| e.to_string())?;
    let accidental = shim::protos::bootstrap::BootstrapParams::parse_from_bytes(&raw)
        .map_err(|e| format!("the options do not decode as params here: {e}"))?;
    ensure!(
        accidental.instance_id == any.type_url,
        "decoded as {accidental:?}"
    );
    let sh = DirectShim::start_with_options(&shim_binary(ctx), &ctx.ns, "old", &["true"], &raw)?;
    ensure!(sh.version == 3, "with MAX_SHIM_VERSION=3 ours announces v3");
    let (c, cx) = (&sh.client, DirectShim::ctx);
    sh.rt
        .block_on(c.create(cx(), &sh.create_request("old", None)))
        .map_err(|e| format!("Create: {e}"))?;
    let applied = root.join(&ctx.ns).join("old").exists();
    sh.delete_task("old")?;
    let _ = std::fs::remove_dir_all(&root);
    ensure!(
        applied,
        "the options on stdin were not the default for Create"
    );
    sh.finish()?;
    for max in [None, Some("2")] {
        let out = start_reply(ctx, &raw, max)?;
        ensure!(
            out.starts_with("unix:///run/containerd/s/") && !out.contains(['{', '\n']),
            "MAX_SHIM_VERSION {max:?}: reply {out:?}, want a plain address"
        );
    }
    Ok(())
}

/// What `start` prints for `stdin` under MAX_SHIM_VERSION `max` (unset for None); the shim it
/// started is shut down.
fn start_reply(ctx: &Ctx, stdin: &[u8], max: Option<&str>) -> Result<String, String> {
    let id = format!("plain{}", max.unwrap_or("0"));
    let dir = ctx.daemon.base.join(format!("plain-{}", ctx.ns));
    let bundle = crate::common::direct::make_bundle(&dir, &id, &["true"])?;
    let fake_address = dir.join("containerd.sock").to_string_lossy().into_owned();
    let mut start = std::process::Command::new(shim_binary(ctx));
    start
        .args(["-namespace", &ctx.ns, "-address", &fake_address])
        .args(["-publish-binary", "/bin/true", "-id", &id, "start"])
        .current_dir(&bundle)
        .env_remove("MAX_SHIM_VERSION");
    if let Some(max) = max {
        start.env("MAX_SHIM_VERSION", max);
    }
    let reply = run_with_input(&mut start, stdin);
    if let Ok(address) = &reply {
        let shutdown = ShutdownRequest {
            now: true,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let api = crate::common::direct::TaskApi::dial(address.trim(), 2).await?;
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                api.shutdown(DirectShim::ctx(), &shutdown),
            )
            .await;
            Ok::<_, String>(())
        })?;
        let socket = shim::bootstrap::socket_path(address.trim()).to_path_buf();
        eventually(Duration::from_secs(10), || {
            ensure!(!socket.exists(), "the shim left {}", socket.display());
            Ok(())
        })?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    reply
}

/// containerd 2.2's mount manager resolves some mounts before Create; one that still carries
/// its own `X-containerd.*` option would be mounted wrong, so Create refuses it by name and
/// leaves nothing mounted.
pub fn a_mount_containerd_should_have_resolved_is_refused(ctx: &mut Ctx) -> TestResult {
    let sh = DirectShim::start(&shim_binary(ctx), &ctx.ns, "unresolved", &["true"])?;
    let mut create = sh.create_request("unresolved", None);
    create.rootfs.push(shim::protos::mount::Mount {
        type_: "ext4".into(),
        source: "/var/lib/containerd/scratch.img".into(),
        options: vec!["rw".into(), "X-containerd.mkfs.size=64M".into()],
        ..Default::default()
    });
    match sh.rt.block_on(sh.client.create(DirectShim::ctx(), &create)) {
        Ok(_) => return Err("Create mounted an unresolved mount".into()),
        Err(ttrpc::Error::RpcStatus(s)) => ensure!(
            s.code() == ttrpc::Code::INVALID_ARGUMENT
                && s.message().contains("X-containerd.mkfs.size=64M"),
            "Create answered {:?} {:?}",
            s.code(),
            s.message()
        ),
        Err(e) => return Err(format!("Create: {e}")),
    }
    let mounts = mounts_under(&sh.bundle_path("unresolved"));
    ensure!(mounts.is_empty(), "mounted: {mounts:?}");
    sh.finish()
}

/// containerd 2.2 and later run `start` only for a pod's sandbox when its shim answered with
/// the version 3 bootstrap: every other container of the pod is created over the sandbox
/// shim's socket directly. Here the pod's app container arrives that way, after the sandbox;
/// it runs and ends with its own status, a Shutdown while the sandbox lives keeps the shim,
/// and the shim leaves after the sandbox's Delete and Shutdown.
pub fn a_23_pod_reuses_the_sandbox_shim_without_start(ctx: &mut Ctx) -> TestResult {
    let (sh, _) = DirectShim::start_bootstrapped(
        &shim_binary(ctx),
        &ctx.ns,
        "sandbox",
        &["sleep", "1000"],
        None,
        None,
    )?;
    ensure!(sh.version == 3, "announced task API v{}", sh.version);
    let (c, cx) = (&sh.client, DirectShim::ctx);
    sh.rt
        .block_on(c.create(cx(), &sh.create_request("sandbox", None)))
        .map_err(|e| format!("Create sandbox: {e}"))?;
    sh.start_task("sandbox")?;
    sh.bundle("app", &["sh", "-c", "exit 7"])?;
    let status = lifecycle(&sh, "app")?;
    ensure!(status == 7, "the app's exit status {status}");
    let shutdown = ShutdownRequest::default();
    sh.rt
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(5), c.shutdown(cx(), &shutdown)).await
        })
        .map_err(|_| "Shutdown with the sandbox alive did not answer".to_string())?
        .map_err(|e| format!("Shutdown with the sandbox alive: {e}"))?;
    let state = StateRequest {
        id: "sandbox".into(),
        ..Default::default()
    };
    let sandbox = sh
        .rt
        .block_on(c.state(cx(), &state))
        .map_err(|e| format!("the sandbox after a Shutdown: {e}"))?;
    ensure!(
        sandbox.status.value() == shim::protos::task::Status::RUNNING as i32,
        "the sandbox is {:?} after the app left",
        sandbox.status
    );
    let kill = KillRequest {
        id: "sandbox".into(),
        signal: 9,
        ..Default::default()
    };
    sh.rt
        .block_on(c.kill(cx(), &kill))
        .map_err(|e| format!("Kill sandbox: {e}"))?;
    sh.wait_exit("sandbox", Duration::from_secs(20))?;
    sh.delete_task("sandbox")?;
    sh.finish()
}
