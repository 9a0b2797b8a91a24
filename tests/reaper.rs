//! The reaper against real children. In a test binary of its own: `waitpid(-1)` collects every
//! child of the process, so it must not run beside tests that wait for children of their own.

use shim::reaper::Reaper;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn a_spawned_command_that_exits_at_once_is_routed_to_its_spawner() {
    let (reaper, mut exits) = Reaper::new();
    let (child, mut rx) = reaper
        .spawn(Command::new("sh").args(["-c", "exit 3"]))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let got = loop {
        reaper.reap();
        if let Ok(e) = rx.try_recv() {
            break e;
        }
        assert!(Instant::now() < deadline, "exit never routed");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!((got.pid, got.status), (child.id() as i32, 3));
    assert!(
        exits.try_recv().is_err(),
        "a command's exit must not reach containers"
    );
}
