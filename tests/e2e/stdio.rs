//! stdio through ctr's FIFOs: bulk bytes both ways exact, and the both-ends rule (output
//! waits for a consumer that comes back; stdin outlives a client that dies).

use crate::common::direct::*;
use crate::common::*;
use crate::ensure;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

pub const MIB_64: usize = 64 << 20;

pub fn stdout_64mib_is_exact(ctx: &mut Ctx) -> TestResult {
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

pub fn stdin_64mib_round_trip_is_exact(ctx: &mut Ctx) -> TestResult {
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
    // All of it written means the container has read all but a pipe's worth: it runs, so
    // the end of input that follows cannot come before the task exists (ctr 1.6 would drop
    // that one).
    let writer = std::thread::spawn(move || stdin.write_all(&data));
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

/// The shim holds both ends of stdout (invariant 3): output written while no client reads
/// waits for the next one, and a client that leaves costs nothing.
pub fn output_waits_for_a_consumer_that_comes_back(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("attach");
    // Each line is written only when the test says so (a file in the rootfs), and is followed
    // by a mark that says it was written: so each is written while no client reads.
    let script = "for n in first second; do \
        until [ -e /tmp/go-$n ]; do sleep 0.05; done; echo $n; touch /tmp/wrote-$n; \
        done; sleep 1000";
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sh", "-c", script]))?;
    let rootfs = ctx.daemon.bundles(&ctx.ns).join(&id).join("rootfs/tmp");
    for line in ["first", "second"] {
        std::fs::write(rootfs.join(format!("go-{line}")), "")
            .map_err(|e| format!("go-{line}: {e}"))?;
        eventually(Duration::from_secs(10), || {
            ensure!(
                rootfs.join(format!("wrote-{line}")).exists(),
                "the container did not write {line}"
            );
            Ok(())
        })?;
        let got = next_attached_line(ctx, &id)?;
        ensure!(
            got == line,
            "an attach after {line} was written while nobody read got {got:?}"
        );
    }
    ensure!(
        ctx.task_status(&id)?.as_deref() == Some("RUNNING"),
        "the task did not survive its readers leaving"
    );
    ctx.remove(&id)
}

/// The shim keeps a write end of stdin until CloseIO (invariant 3): a client killed in the
/// middle of its input does not end the container's input.
pub fn stdin_survives_a_client_that_dies(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("stdin");
    // Counts the first 100000 bytes of input, keeps the next 5 (from a second client), then
    // records when its input ends.
    let script = "head -c 100000 | wc -c > /tmp/count; head -c 5 > /tmp/more; \
        cat >/dev/null; echo eof > /tmp/eof";
    let mut client = ctx
        .ctr_unbounded(&ctx.run_args(&[], &id, &["sh", "-c", script]))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mut stdin = client.stdin.take().ok_or("no stdin")?;
    stdin
        .write_all(&[b'x'; 100_000])
        .map_err(|e| e.to_string())?;
    let rootfs = ctx.daemon.bundles(&ctx.ns).join(&id).join("rootfs");
    eventually(Duration::from_secs(10), || {
        let count = std::fs::read_to_string(rootfs.join("tmp/count")).unwrap_or_default();
        ensure!(
            count.trim() == "100000",
            "the process counted {count:?} bytes of input"
        );
        Ok(())
    })?;
    // SIGKILL: the client gets no chance to close anything or call CloseIO.
    let _ = client.kill();
    let _ = client.wait();
    drop(stdin);
    // Input from a second client reaches the process only if its input did not end when the
    // first died: an end of input, once passed on, cannot be taken back.
    let mut second = ctx
        .ctr_unbounded(&["tasks", "attach", &id])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let sent = second.stdin.as_mut().ok_or("no stdin")?.write_all(b"hello");
    let more = eventually(Duration::from_secs(10), || {
        let more = std::fs::read_to_string(rootfs.join("tmp/more")).unwrap_or_default();
        ensure!(
            more == "hello",
            "the process got {more:?} from a second client; ended input: {}",
            rootfs.join("tmp/eof").exists()
        );
        Ok(())
    });
    let _ = second.kill();
    let _ = second.wait();
    sent.map_err(|e| format!("second client: {e}"))?;
    more?;
    ensure!(
        !rootfs.join("tmp/eof").exists(),
        "the process saw the end of its input when a client died"
    );
    ensure!(
        ctx.task_status(&id)?.as_deref() == Some("RUNNING"),
        "the task did not survive its clients"
    );
    close_stdin(ctx, &id)?;
    eventually(Duration::from_secs(10), || {
        ensure!(
            rootfs.join("tmp/eof").exists(),
            "no end of input after CloseIO"
        );
        Ok(())
    })?;
    ctx.wait_status(&id, "STOPPED")?;
    ctx.remove(&id)
}

/// CloseIO straight to the task's shim, as containerd would send it for a client.
pub fn close_stdin(ctx: &Ctx, id: &str) -> TestResult {
    let address = ctx.daemon.address.to_string_lossy().into_owned();
    let socket = shim::bootstrap::socket_address(&address, &ctx.ns, id);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let req = shim::protos::shim::CloseIORequest {
        id: id.into(),
        stdin: true,
        ..Default::default()
    };
    // containerd 2.x's Go shim serves the task API as v3 only; 1.x shims as v2.
    let mut errors = Vec::new();
    for version in [2, 3] {
        let result = rt.block_on(async {
            let api = crate::common::direct::TaskApi::dial(&socket, version).await?;
            api.close_io(DirectShim::ctx(), &req)
                .await
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(_) => return Ok(()),
            Err(e) => errors.push(e),
        }
    }
    Err(format!("CloseIO {id}: {errors:?}"))
}

/// Attaches to `id`, returns the first line it prints, and detaches by killing the client.
pub fn next_attached_line(ctx: &Ctx, id: &str) -> Result<String, String> {
    let (mut attach, lines) = ctx.ctr_streaming(&["tasks", "attach", id])?;
    let line = lines.recv_timeout(Duration::from_secs(10));
    let _ = attach.kill();
    let _ = attach.wait();
    line.map_err(|_| format!("attach to {id} printed nothing"))
}
