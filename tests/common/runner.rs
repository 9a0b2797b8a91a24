//! The end-to-end runner: every selected test on every containerd line, for our shim and the
//! line's Go shim, each under a time limit and followed by the leak check; then the report
//! (counts, every test not run with its reason, and the compatibility table).

use super::*;
use std::path::Path;
use std::time::Duration;

pub type Test = fn(&mut Ctx) -> TestResult;
/// Why a test cannot run on a line for a runtime (test, line, runtime), if it cannot.
pub type NotSupported = fn(&str, &str, &str) -> Option<String>;

pub const RUNTIMES: &[&str] = &[OURS, GO_SHIM];

/// Runs the tests named on the command line (all when none is), on the lines
/// CONTAINERD_VERSIONS names (else `default_lines`), and exits with the outcome. The tests
/// named in `together` run first, at once (see `run_together`).
pub fn main(
    tests: &'static [(&'static str, Test)],
    default_lines: &str,
    together: &[&str],
    not_supported: NotSupported,
) {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected: Vec<&(&str, Test)> = tests
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let lines = std::env::var("CONTAINERD_VERSIONS").unwrap_or_else(|_| default_lines.into());
    let lines: Vec<&str> = lines
        .split(',')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if lines.is_empty() {
        println!("CONTAINERD_VERSIONS names no containerd line: nothing would be tested");
        std::process::exit(1);
    }
    if selected.is_empty() {
        println!("no end-to-end test matches {filters:?}: nothing would be tested");
        std::process::exit(1);
    }
    sweep_earlier_runs();
    let mut report = Report::default();
    if let Err(e) = check_prerequisites() {
        report.fail(format!("prerequisites: {e}"));
    } else {
        let plan = Plan {
            together,
            not_supported,
        };
        run_together(&lines, &selected, &plan, &mut report);
        for line in &lines {
            run_line(line, &selected, &plan, &mut report);
        }
    }
    std::process::exit(report.finish(tests, &lines));
}

#[derive(Clone, Copy, PartialEq)]
enum Outcome {
    Passed,
    Failed,
    NotRun,
}

#[derive(Default)]
struct Report {
    passed: usize,
    failed: Vec<String>,
    not_run: Vec<String>,
    /// (test, line, runtime, outcome), for the compatibility table.
    cells: Vec<(String, String, &'static str, Outcome)>,
}

impl Report {
    fn fail(&mut self, label: String) {
        println!("test {label} ... FAILED");
        self.failed.push(label);
    }

    fn record(&mut self, test: &str, line: &str, runtime: &'static str, outcome: Outcome) {
        self.cells
            .push((test.into(), line.into(), runtime, outcome));
    }

    fn finish(&self, tests: &[(&str, Test)], lines: &[&str]) -> i32 {
        if !self.not_run.is_empty() {
            println!("\nnot run (the line cannot run them; not counted as passed):");
            self.not_run.iter().for_each(|f| println!("    {f}"));
        }
        let table = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-compat.md");
        match std::fs::write(&table, self.compat_table(tests, lines)) {
            Ok(()) => println!("\ncompatibility table: {}", table.display()),
            Err(e) => println!("\ncould not write {}: {e}", table.display()),
        }
        // Last, so that a log cut to its tail (as CI's is) still names every failure; then
        // the names alone, which a long message (a daemon's log) would otherwise push out.
        if !self.failed.is_empty() {
            println!("\nfailures:");
            self.failed.iter().for_each(|f| println!("    {f}"));
            println!("\nfailed:");
            for f in &self.failed {
                let name = f.lines().next().unwrap_or_default();
                println!("    {}", name.chars().take(200).collect::<String>());
            }
        }
        println!(
            "\ne2e: {} passed, {} failed, {} skipped",
            self.passed,
            self.failed.len(),
            self.not_run.len()
        );
        i32::from(!self.failed.is_empty())
    }

    /// A Markdown table: one row per test, one column per containerd line and runtime.
    fn compat_table(&self, tests: &[(&str, Test)], lines: &[&str]) -> String {
        let mut out = String::from("| test |");
        let mut rule = String::from("|---|");
        for line in lines {
            for runtime in RUNTIMES {
                out += &format!(" {line} {} |", short(runtime));
                rule += "---|";
            }
        }
        out += &format!("\n{rule}\n");
        for (name, _) in tests {
            out += &format!("| {name} |");
            for line in lines {
                for runtime in RUNTIMES {
                    let cell = self
                        .cells
                        .iter()
                        .find(|(t, l, r, _)| t == name && l == line && r == runtime)
                        .map_or("", |c| match c.3 {
                            Outcome::Passed => "pass",
                            Outcome::Failed => "**FAIL**",
                            Outcome::NotRun => "n/a",
                        });
                    out += &format!(" {cell} |");
                }
            }
            out += "\n";
        }
        out
    }
}

fn short(runtime: &str) -> &'static str {
    if runtime == OURS {
        "rust-v1"
    } else {
        "runc.v2 (Go)"
    }
}

/// Which test runs where: what a line cannot run, and what runs with the others that mostly
/// wait.
struct Plan<'a> {
    together: &'a [&'a str],
    not_supported: NotSupported,
}

impl Plan<'_> {
    /// Whether `test` runs on `line` for `runtime` in `run_together`, not with its line. A
    /// crun line is never run there: its tests find crun through the runner's own PATH, which
    /// threads cannot each set.
    fn runs_together(&self, test: &str, line: &str, runtime: &str) -> bool {
        self.together.contains(&test)
            && !line.contains('+')
            && (self.not_supported)(test, line, runtime).is_none()
    }
}

/// One test run in `run_together`.
struct Job<'a> {
    name: &'static str,
    test: Test,
    line: &'a Line,
    runtime: &'static str,
}

/// Runs the tests that spend most of their time waiting (containerd kept down for a minute and
/// a half), on every line and for both runtimes, all at once, before anything else: each on a
/// containerd of its own, so their waits overlap instead of adding up. No test is checked for
/// leftovers until every one has finished, and then one at a time: the host-wide places the
/// check reads (shim sockets, runc's root) do not say whose an entry is, so a check made while
/// another test runs would take that test's containers for leftovers. A leftover is still
/// found, though it may be reported under another test of this group.
fn run_together(
    lines: &[&str],
    selected: &[&(&'static str, Test)],
    plan: &Plan,
    report: &mut Report,
) {
    let mut provided = Vec::new();
    for line in lines {
        let wanted = selected.iter().any(|(name, _)| {
            RUNTIMES
                .iter()
                .any(|runtime| plan.runs_together(name, line, runtime))
        });
        if wanted {
            match Line::provide(line) {
                Ok(l) => provided.push(l),
                Err(e) => report.fail(format!("containerd {line}: cannot provide: {e}")),
            }
        }
    }
    let mut jobs = Vec::new();
    for line in &provided {
        for runtime in RUNTIMES {
            for (name, test) in selected {
                if plan.runs_together(name, &line.label(), runtime) {
                    jobs.push(Job {
                        name,
                        test: *test,
                        line,
                        runtime,
                    });
                }
            }
        }
    }
    if jobs.is_empty() {
        return;
    }
    println!(
        "== {} tests at once, each on a containerd of its own",
        jobs.len()
    );
    let started = std::time::Instant::now();
    let finished = std::sync::Barrier::new(jobs.len());
    let checks = std::sync::Mutex::new(());
    // A test's time is its own: the wait for the others to finish is left out.
    let run = |job: &Job, n: usize| -> (TestResult, f64) {
        let t0 = std::time::Instant::now();
        let mut daemon = Containerd::start_apart(job.line, &format!("together{n}"));
        let mut ctx = match &mut daemon {
            Ok(d) => Ctx::new(d, job.name, job.runtime),
            Err(e) => Err(format!("containerd cannot start: {e}")),
        };
        let outcome = match &mut ctx {
            Ok(ctx) => run_watched(ctx, job.test),
            Err(e) => Err(e.clone()),
        };
        let ran = t0.elapsed();
        finished.wait();
        let _turn = checks.lock().unwrap_or_else(|p| p.into_inner());
        let t1 = std::time::Instant::now();
        let outcome = match &mut ctx {
            Ok(ctx) => outcome.and(ctx.clean_and_check()),
            Err(_) => outcome,
        };
        (outcome, (ran + t1.elapsed()).as_secs_f64())
    };
    let outcomes: Vec<(TestResult, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(n, job)| {
                let run = &run;
                s.spawn(move || run(job, n))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| (Err("the test's thread panicked".into()), 0.0))
            })
            .collect()
    });
    for (job, (outcome, took)) in jobs.iter().zip(outcomes) {
        let line = job.line.label();
        let label = format!("{} [{} @ containerd {line}]", job.name, job.runtime);
        match outcome {
            Ok(()) => {
                report.passed += 1;
                report.record(job.name, &line, job.runtime, Outcome::Passed);
                println!("test {label} ... ok ({took:.1}s)");
            }
            Err(e) => {
                report.record(job.name, &line, job.runtime, Outcome::Failed);
                report.fail(format!("{label}\n    {e}"));
            }
        }
    }
    println!(
        "== {} tests at once: {:.0}s",
        jobs.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Every selected test, for our shim and the line's Go shim, on one private containerd; those
/// `run_together` ran are left out.
fn run_line(line: &str, selected: &[&(&str, Test)], plan: &Plan, report: &mut Report) {
    let started = std::time::Instant::now();
    let daemon = Line::provide(line).and_then(|l| Containerd::start(&l));
    let mut daemon = match daemon {
        Ok(d) => d,
        Err(e) => return report.fail(format!("containerd {line}: cannot start: {e}")),
    };
    println!("== containerd {line} ({})", daemon.line.bin.display());
    // On a crun line the tests' own runc calls (bundles, direct shims, wrappers) get crun too.
    let own_path = std::env::var_os("PATH").unwrap_or_default();
    if daemon.line.oci == Oci::Crun {
        let mut dirs = vec![daemon.base.join("bin")];
        dirs.extend(std::env::split_paths(&own_path));
        if let Ok(path) = std::env::join_paths(dirs) {
            std::env::set_var("PATH", path);
        }
    }
    for runtime in RUNTIMES {
        for (name, test) in selected {
            let label = format!("{name} [{runtime} @ containerd {line}]");
            if plan.runs_together(name, line, runtime) {
                continue;
            }
            if let Some(why) = (plan.not_supported)(name, line, runtime) {
                println!("test {label} ... not run: {why}");
                report.not_run.push(format!("{label}: {why}"));
                report.record(name, line, runtime, Outcome::NotRun);
                continue;
            }
            let t0 = std::time::Instant::now();
            if let Err(e) = daemon.ensure_running() {
                report.record(name, line, runtime, Outcome::Failed);
                report.fail(format!("{label}\n    {e}"));
                continue;
            }
            match run_one(&mut daemon, name, runtime, *test) {
                Ok(()) => {
                    report.passed += 1;
                    report.record(name, line, runtime, Outcome::Passed);
                    println!("test {label} ... ok ({:.1}s)", t0.elapsed().as_secs_f64());
                }
                Err(e) => {
                    report.record(name, line, runtime, Outcome::Failed);
                    report.fail(format!("{label}\n    {e}"));
                }
            }
        }
    }
    std::env::set_var("PATH", own_path);
    println!(
        "== containerd {line}: {:.0}s",
        started.elapsed().as_secs_f64()
    );
}

/// How long one test may take (the slowest, 50 concurrent execs on the 1.6 Go shim, takes about
/// a minute; E2E_TEST_LIMIT_SECS overrides). Past it, every process of the test's namespace
/// is killed, so the call it hangs in returns, and the test fails by name while the rest run.
fn test_limit() -> Duration {
    let secs = std::env::var("E2E_TEST_LIMIT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    Duration::from_secs(secs)
}

fn run_one(daemon: &mut Containerd, name: &str, runtime: &'static str, test: Test) -> TestResult {
    let mut ctx = Ctx::new(daemon, name, runtime)?;
    let outcome = run_watched(&mut ctx, test);
    let cleanup = ctx.clean_and_check();
    outcome.and(cleanup)
}

/// Runs `test` under the time limit; its leftovers are not checked here.
fn run_watched(ctx: &mut Ctx, test: Test) -> TestResult {
    let (done, finished) = std::sync::mpsc::channel::<()>();
    let limit = test_limit();
    let watchdog = {
        let ns = ctx.ns.clone();
        std::thread::spawn(move || {
            let expired = matches!(
                finished.recv_timeout(limit),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout)
            );
            if expired {
                for pid in processes_mentioning(&ns) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            expired
        })
    };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(ctx)))
        .unwrap_or_else(|_| Err("test panicked".into()));
    let _ = done.send(());
    match watchdog.join() {
        Ok(true) => Err(format!(
            "took longer than {limit:?}: its processes were killed ({})",
            outcome.err().unwrap_or_default()
        )),
        _ => outcome,
    }
}
