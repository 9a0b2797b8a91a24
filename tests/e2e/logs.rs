//! Output to a log file (`file://`) or a logging program (`binary://`, `binary-v2://`) through
//! `ctr run --log-uri`: every byte arrives, the program gets its fds and environment, and a
//! program that fails to get ready is a clear error.

use crate::common::*;
use crate::ensure;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What `seq 1 N` prints.
fn seq(n: u32) -> String {
    (1..=n).map(|i| format!("{i}\n")).collect()
}

const SCRIPT: &str = "seq 1 100000; echo err >&2";

fn scratch(ctx: &Ctx, name: &str) -> Result<PathBuf, String> {
    let dir = ctx.daemon.base.join(format!("{name}-{}", ctx.ns));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}

pub fn file_log_uri_gets_every_byte(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("logfile");
    // A directory that does not exist yet: the shim makes it.
    let file = scratch(ctx, "logs")?.join("new/dir/c.log");
    let uri = format!("file://{}", file.display());
    ctx.ctr_ok(&ctx.run_args(&["--rm", "--log-uri", &uri], &id, &["sh", "-c", SCRIPT]))?;
    let got = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    if ctx.runtime != OURS && !got.contains("err\n") {
        // Known difference: the Go shim copies stdout and stderr to the file separately and
        // once in a clean-clone run here the stderr line was missing when ctr returned.
        println!(
            "    [{}] the log lacked its stderr line when ctr returned",
            ctx.runtime
        );
        let stdout = got.clone();
        ensure!(
            stdout == seq(100_000),
            "log has {} bytes of stdout",
            stdout.len()
        );
        return Ok(());
    }
    ensure!(got.contains("err\n"), "no stderr line in the log");
    let stdout = got.replacen("err\n", "", 1);
    ensure!(
        stdout == seq(100_000),
        "log has {} bytes of stdout, want {}",
        stdout.len(),
        seq(100_000).len()
    );
    Ok(())
}

/// A logging program: records its environment, signals readiness as `ready` says, then copies
/// fd 3 and fd 4 to files in its directory (the value of its `--dir` argument).
fn logger(dir: &Path, ready: &str) -> Result<PathBuf, String> {
    let path = dir.join("logger.sh");
    let script = format!(
        "#!/bin/sh\n\
         dir=$2\n\
         echo \"$CONTAINER_ID $CONTAINER_NAMESPACE $#\" > \"$dir/env\"\n\
         {ready}\n\
         cat <&3 > \"$dir/out\" &\n\
         cat <&4 > \"$dir/err\" &\n\
         wait\n"
    );
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
    std::fs::set_permissions(&path, mode).map_err(|e| e.to_string())?;
    Ok(path)
}

fn logged(ctx: &mut Ctx, scheme: &str, name: &str) -> TestResult {
    let id = ctx.id(name);
    let dir = scratch(ctx, name)?;
    let program = logger(&dir, "printf x >&5; exec 5>&-")?;
    let uri = format!("{scheme}://{}?--dir={}", program.display(), dir.display());
    ctx.ctr_ok(&ctx.run_args(&["--rm", "--log-uri", &uri], &id, &["sh", "-c", SCRIPT]))?;
    // The program may still be writing when ctr returns.
    eventually(Duration::from_secs(10), || {
        let out = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
        ensure!(
            out == seq(100_000),
            "logger got {} bytes of stdout, want {}",
            out.len(),
            seq(100_000).len()
        );
        Ok(())
    })?;
    let err = std::fs::read_to_string(dir.join("err")).map_err(|e| e.to_string())?;
    ensure!(err == "err\n", "logger got stderr {err:?}");
    let env = std::fs::read_to_string(dir.join("env")).map_err(|e| e.to_string())?;
    ensure!(
        env.trim() == format!("{id} {} 2", ctx.ns),
        "logger saw CONTAINER_ID, CONTAINER_NAMESPACE and argc {env:?}"
    );
    Ok(())
}

pub fn binary_log_uri_gets_every_byte(ctx: &mut Ctx) -> TestResult {
    logged(ctx, "binary", "logbin")
}

pub fn binary_v2_log_uri_gets_every_byte(ctx: &mut Ctx) -> TestResult {
    logged(ctx, "binary-v2", "logbin2")
}

/// A logging program holds what it is given and nothing of the shim's: /dev/null on 0 to 2,
/// the two output pipes on 3 and 4 and the ready pipe on 5 (close-on-exec everywhere else in
/// the shim; CVE-2024-21626 came from one fd too many).
pub fn a_logging_program_gets_only_its_pipes(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("logfds");
    let dir = scratch(ctx, "logfds")?;
    let ready = format!(
        "{}; printf x >&5; exec 5>&-",
        fd_lister(&dir.join("fds"), "logger")
    );
    let program = logger(&dir, &ready)?;
    let uri = format!("binary://{}?--dir={}", program.display(), dir.display());
    ctx.ctr_ok(&ctx.run_args(&["--rm", "--log-uri", &uri], &id, &["true"]))?;
    let listing = std::fs::read_to_string(dir.join("fds")).map_err(|e| e.to_string())?;
    let fds = fd_listing(&listing);
    let numbers: Vec<u32> = fds.iter().map(|f| f.0).collect();
    ensure!(
        numbers == [0, 1, 2, 3, 4, 5],
        "the logging program holds {fds:?}"
    );
    for (fd, target) in &fds {
        let want = if *fd < 3 { "/dev/null" } else { "pipe:" };
        ensure!(
            target.starts_with(want),
            "fd {fd} of the logging program is {target}"
        );
    }
    Ok(())
}

/// binary-v2 asks for a byte on fd 5: a program that closes it without one, or never writes,
/// fails the start with a clear error, and nothing is left behind.
pub fn a_logger_that_never_gets_ready_is_a_clear_error(ctx: &mut Ctx) -> TestResult {
    for (name, ready) in [("closes", "exec 5>&-"), ("hangs", "exec sleep 30")] {
        let id = ctx.id(name);
        let dir = scratch(ctx, name)?;
        let program = logger(&dir, ready)?;
        let uri = format!("binary-v2://{}?--dir={}", program.display(), dir.display());
        let out = ctx.ctr(&ctx.run_args(&["--rm", "--log-uri", &uri], &id, &["true"]));
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success(),
            "a logger that {name} did not fail the run"
        );
        ensure!(
            stderr.contains("did not signal ready") && stderr.contains("logger.sh"),
            "error for a logger that {name}: {stderr:?}"
        );
        let _ = ctx.ctr(&["containers", "rm", &id]);
    }
    Ok(())
}

/// A terminal's output can go to a logging program too (nerdctl's `run -t -d` asks for
/// that); driven over ttrpc, since `ctr` refuses `-t` with `--log-uri`.
pub fn a_terminal_can_log_to_a_program(ctx: &mut Ctx) -> TestResult {
    use crate::common::direct::DirectShim;
    use shim::protos::shim::*;
    let dir = scratch(ctx, "ttylog")?;
    let program = logger(&dir, "printf x >&5; exec 5>&-")?;
    let sh = DirectShim::start(
        &crate::common::direct::shim_binary(ctx),
        &ctx.ns,
        "ttylog",
        &["sh", "-c", "tty; echo hi"],
    )?;
    let bundle = sh.bundle_path("ttylog");
    let config = bundle.join("config.json");
    let mut spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&config).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    spec["process"]["terminal"] = serde_json::Value::Bool(true);
    std::fs::write(&config, spec.to_string()).map_err(|e| e.to_string())?;
    let (c, cx) = (&sh.client, DirectShim::ctx);
    let create = CreateTaskRequest {
        id: "ttylog".into(),
        bundle: bundle.to_string_lossy().into_owned(),
        terminal: true,
        stdout: format!("binary://{}?--dir={}", program.display(), dir.display()),
        ..Default::default()
    };
    sh.rt
        .block_on(c.create(cx(), &create))
        .map_err(|e| format!("Create: {e}"))?;
    let id = |r: &mut String| *r = "ttylog".into();
    let mut start = StartRequest::default();
    id(&mut start.id);
    sh.rt
        .block_on(c.start(cx(), &start))
        .map_err(|e| format!("Start: {e}"))?;
    let mut wait = WaitRequest::default();
    id(&mut wait.id);
    sh.rt
        .block_on(c.wait(cx(), &wait))
        .map_err(|e| format!("Wait: {e}"))?;
    eventually(Duration::from_secs(10), || {
        let out = std::fs::read_to_string(dir.join("out")).unwrap_or_default();
        ensure!(
            out.contains("/dev/pts/") && out.contains("hi"),
            "the logging program got {out:?}"
        );
        Ok(())
    })?;
    let mut delete = DeleteRequest::default();
    id(&mut delete.id);
    sh.rt
        .block_on(c.delete(cx(), &delete))
        .map_err(|e| format!("Delete: {e}"))?;
    sh.finish()
}

/// A `file://` stdout with no stderr at all (a client on the shim's socket may send that;
/// containerd sends the URI for both): as the scheme says, both streams reach the file, and
/// the shim lives on.
pub fn a_file_log_for_stdout_alone_gets_the_output(ctx: &mut Ctx) -> TestResult {
    use crate::common::direct::{shim_binary, DirectShim};
    let dir = scratch(ctx, "stdoutlog")?;
    let log = dir.join("out.log");
    let sh = DirectShim::start(
        &shim_binary(ctx),
        &ctx.ns,
        "onlyout",
        &["sh", "-c", "echo to-the-log; echo err-too >&2"],
    )?;
    let mut create = sh.create_request("onlyout", None);
    create.stdout = format!("file://{}", log.display());
    let ran = (|| {
        sh.create(&create)?;
        sh.start_task("onlyout")?;
        let status = sh
            .wait_exit("onlyout", Duration::from_secs(20))?
            .exit_status;
        sh.delete_task("onlyout")?;
        Ok::<u32, String>(status)
    })();
    let status = match ran {
        Ok(status) => status,
        Err(e) if ctx.runtime == GO_SHIM => {
            // Known difference: containerd's Go shim dies on this task, at its Create or its
            // Start (seen on every line: the connection ends with no answer).
            println!("    [{}] {e}", ctx.runtime);
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    sh.finish()?;
    ensure!(status == 0, "exit status {status}");
    let got = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    ensure!(got == "to-the-log\nerr-too\n", "the log holds {got:?}");
    Ok(())
}
