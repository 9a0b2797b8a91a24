//! Terminals through `ctr run -t` and `ctr tasks exec -t`, driven from a pty as a person at a
//! terminal: the process sees a tty of the client's size, follows resizes, ends on Ctrl-D, and
//! large output arrives whole.

use crate::common::tty::Pty;
use crate::common::*;
use crate::ensure;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);
/// Shell input that waits, at most 5 s, until the terminal has a size (busybox's `stty size`
/// prints nothing on stdout while it is 0x0).
const SIZED: &str =
    "i=0; while [ $i -lt 50 ] && [ -z \"$(stty size 2>/dev/null)\" ]; do sleep 0.1; i=$((i+1)); done";

pub fn tty_run_is_a_terminal_and_ends_on_ctrl_d(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("ttyrun");
    let args = ctx.run_args(&["-t", "--rm"], &id, &["sh"]);
    let mut pty = Pty::spawn(&mut ctx.ctr_unbounded(&args), 40, 120)?;
    pty.wait_for("/ # ", LIMIT)?;
    // ctr sets the size with ResizePty after Start: wait (bounded) until it has.
    pty.type_in(format!("{SIZED}; tty; stty size; echo fini''shed\n").as_bytes())?;
    pty.wait_for("finished", LIMIT)?;
    let text = pty.text();
    ensure!(text.contains("/dev/pts/"), "tty printed {text:?}");
    ensure!(text.contains("40 120"), "stty size in {text:?}");
    pty.type_in(&[4])?;
    let status = pty.wait(LIMIT)?;
    ensure!(
        status.success(),
        "ctr run -t ended with {status} after Ctrl-D"
    );
    Ok(())
}

pub fn tty_exec_follows_a_resize(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("ttyexec");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    ctx.wait_status(&id, "RUNNING")?;
    // Prints the size, then waits (bounded) for it to change and prints it again.
    let script = format!(
        "{SIZED}; s=$(stty size); echo first $s; i=0; \
         while [ $i -lt 100 ] && [ \"$(stty size)\" = \"$s\" ]; do sleep 0.1; i=$((i+1)); done; \
         echo final $(stty size)"
    );
    let args = [
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "t1",
        &id,
        "sh",
        "-c",
        &script,
    ];
    let mut pty = Pty::spawn(&mut ctx.ctr_unbounded(&args), 30, 90)?;
    pty.wait_for("first 30 90", LIMIT)?;
    pty.resize(50, 100)?;
    let status = pty.wait(LIMIT)?;
    let text = pty.text();
    ensure!(status.success(), "exec -t ended with {status}: {text:?}");
    ensure!(text.contains("final 50 100"), "after the resize: {text:?}");
    ctx.remove(&id)
}

pub fn tty_exec_32mib_arrives_whole(ctx: &mut Ctx) -> TestResult {
    let id = ctx.id("ttybig");
    ctx.ctr_ok(&ctx.run_args(&["-d"], &id, &["sleep", "1000"]))?;
    ctx.wait_status(&id, "RUNNING")?;
    // 24 MiB of random bytes as 32 MiB of base64 lines (a terminal would mangle raw bytes),
    // after a line with their digest.
    let script = "head -c 25165824 /dev/urandom | base64 > /tmp/d; sha256sum /tmp/d; cat /tmp/d";
    let args = [
        "tasks",
        "exec",
        "-t",
        "--exec-id",
        "big",
        &id,
        "sh",
        "-c",
        script,
    ];
    let mut pty = Pty::spawn(&mut ctx.ctr_unbounded(&args), 24, 80)?;
    let status = pty.wait(Duration::from_secs(120))?;
    ensure!(status.success(), "exec -t ended with {status}");
    pty.drained(Duration::from_secs(10))?;
    // Each terminal on the way may turn a newline into CR LF: base64 has no CR of its own.
    let text = pty.text().replace('\r', "");
    let (digest_line, data) = text.split_once('\n').ok_or("no output")?;
    let want = digest_line.split_whitespace().next().unwrap_or("");
    ensure!(
        data.len() >= 32 << 20,
        "got {} bytes of base64, want at least {}",
        data.len(),
        32 << 20
    );
    ensure!(
        sha256_hex(data.as_bytes()) == want,
        "the {} bytes that arrived differ from what the container wrote",
        data.len()
    );
    ctx.remove(&id)
}
