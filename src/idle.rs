//! What an idle shim keeps resident. A shim spends nearly all its life waiting for its
//! container to exit, so after a quiet spell (no request, no exit) it gives back what it
//! only needed while busy: the free heap, and its mappings of its own binary's pages. Those
//! pages stay in the page cache, shared by every shim; dropping this process's mappings of
//! them (MADV_DONTNEED on a read-only file mapping) loses nothing, but the next request
//! faults them back in, with the heap: an exec every 2 s cost the shim 1.78 ms of CPU with a
//! release between each two, 1.41 to 1.46 ms without (41 minor faults against 0 or 1, and
//! the timer's wake-ups). So the quiet spell starts at a second and doubles each time
//! activity comes back soon after a release (a probe that execs every 10 s stops paying
//! after four), and starts again at a second once a release has held.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Notify;

/// How long nothing must happen before the shim first lets go.
const QUIET: Duration = Duration::from_secs(1);

/// The longest quiet spell it comes to wait for.
const QUIET_MAX: Duration = Duration::from_secs(64);

/// A release that held this long paid off: the next quiet spell is `QUIET` again.
const HELD: Duration = Duration::from_secs(30);

#[derive(Default)]
pub struct Idle {
    /// Requests and exits seen so far.
    activity: AtomicU64,
    woken: Notify,
}

impl Idle {
    /// Something happened: the next release waits for a quiet second after it.
    pub fn touch(&self) {
        self.activity.fetch_add(1, Ordering::Relaxed);
        self.woken.notify_one();
    }

    /// Calls `release` after each quiet spell that follows some activity (and once after
    /// the first quiet second of all). Between a release and the next activity it sleeps
    /// without a timer, so an idle shim never wakes.
    pub async fn run(&self, mut release: impl FnMut()) {
        // The activity count the last release followed, and when it was.
        let mut released: Option<(u64, tokio::time::Instant)> = None;
        let mut quiet = QUIET;
        loop {
            while released.map(|(seen, _)| seen) == Some(self.activity.load(Ordering::Relaxed)) {
                self.woken.notified().await;
            }
            if let Some((_, at)) = released {
                quiet = if at.elapsed() < HELD {
                    (quiet * 2).min(QUIET_MAX)
                } else {
                    QUIET
                };
            }
            let seen = loop {
                let seen = self.activity.load(Ordering::Relaxed);
                tokio::time::sleep(quiet).await;
                if self.activity.load(Ordering::Relaxed) == seen {
                    break seen;
                }
            };
            release();
            released = Some((seen, tokio::time::Instant::now()));
        }
    }
}

/// Gives back the free heap and drops this process's mappings of its binary's clean
/// read-only pages. Each step is best effort: a failure leaves memory resident, nothing else.
pub fn release_memory() {
    // SAFETY: malloc_trim only walks and releases glibc's own free lists.
    unsafe { libc::malloc_trim(0) };
    // The binary's mappings are made once, at exec: found on the first release, kept.
    static RANGES: std::sync::OnceLock<Vec<(usize, usize)>> = std::sync::OnceLock::new();
    let ranges = RANGES.get_or_init(|| {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_default();
        clean_read_only_ranges(&smaps, &exe.to_string_lossy())
    });
    for &(start, end) in ranges {
        // SAFETY: every page of the range is a clean copy of our executable file (a private,
        // read-only mapping with no anonymous page), so dropping it loses nothing and the
        // next access, this very code returning included, faults it back from the page cache.
        unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
    }
}

/// The address ranges of `path`'s mappings that are private, not writable, and hold no
/// anonymous page, from the text of /proc/self/smaps: the binary's code and constants. A
/// read-only mapping with anonymous pages (relocations written before it was made read-only,
/// RELRO) holds data the file does not have, and is left alone.
fn clean_read_only_ranges(smaps: &str, path: &str) -> Vec<(usize, usize)> {
    let mut ranges = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some(kib) = line.strip_prefix("Anonymous:") {
            let clean = kib.split_whitespace().next() == Some("0");
            if let (Some(range), true) = (current.take(), clean) {
                ranges.push(range);
            }
            continue;
        }
        let Some((range, perms, name)) = mapping_header(line) else {
            continue;
        };
        current = None;
        if name != path || perms.contains('w') || !perms.ends_with('p') {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (
            usize::from_str_radix(start, 16),
            usize::from_str_radix(end, 16),
        ) else {
            continue;
        };
        current = (start < end).then_some((start, end));
    }
    ranges
}

/// A mapping's first line: its range, permissions and path. The range, permissions, offset,
/// device and inode are one space apart; the path comes after padding and may hold spaces.
fn mapping_header(line: &str) -> Option<(&str, &str, &str)> {
    let mut fields = line.splitn(6, ' ');
    let range = fields.next()?;
    let perms = fields.next()?;
    if !range.contains('-') || perms.len() != 4 {
        return None;
    }
    let name = fields.nth(3)?.trim_start();
    Some((range, perms, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(range: &str, perms: &str, path: &str, anonymous: u32) -> String {
        format!(
            "{range} {perms} 00000000 fe:01 1234                               {path}\n\
             Size:                  4 kB\nRss:                   4 kB\n\
             Anonymous:           {anonymous} kB\nVmFlags: rd mr mw me\n"
        )
    }

    #[test]
    fn only_the_binarys_clean_private_read_only_mappings_are_dropped() {
        let exe = "/usr/local/bin/a shim";
        let smaps = [
            mapping("00400000-00401000", "r--p", exe, 0),
            mapping("00401000-00800000", "r-xp", exe, 0),
            mapping("00800000-00900000", "r--p", exe, 0),
            // RELRO: relocated, then made read-only.
            mapping("00900000-00901000", "r--p", exe, 4),
            mapping("00901000-00910000", "rw-p", exe, 0),
            mapping("00910000-00920000", "r--s", exe, 0),
            mapping("00920000-00930000", "r-xp", "/usr/local/bin/a shimmer", 0),
            mapping("01000000-01100000", "rw-p", "[heap]", 0),
            mapping("7ffd0000-7ffd1000", "r-xp", "[vdso]", 0),
        ]
        .concat();
        assert_eq!(
            clean_read_only_ranges(&smaps, exe),
            [
                (0x400000, 0x401000),
                (0x401000, 0x800000),
                (0x800000, 0x900000)
            ]
        );
        assert!(clean_read_only_ranges(&smaps, "/elsewhere").is_empty());
        let cut = "00400000-00401000 r-xp 00000000 fe:01 1 /x\nAnonymous: 0 kB\nzz-00 r-xp";
        assert_eq!(clean_read_only_ranges(cut, "/x"), [(0x400000, 0x401000)]);
        assert!(clean_read_only_ranges("garbage\n\n00-zz r-xp", "garbage").is_empty());
    }

    #[test]
    fn releasing_keeps_the_process_working() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let before = clean_read_only_ranges(&smaps, &exe.to_string_lossy());
        assert!(!before.is_empty(), "no clean mapping of {exe:?}");
        release_memory();
        // This code, its constants and std's were dropped and come back on use. Each range
        // is still mapped; another test thread may have mapped more (a panic's backtrace
        // maps the binary again), so only those must be there.
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let after = clean_read_only_ranges(&smaps, &exe.to_string_lossy());
        for range in &before {
            assert!(after.contains(range), "{range:?} unmapped by the release");
        }
        assert_eq!(format!("{:?}", (1, "two")), "(1, \"two\")");
    }

    #[tokio::test(start_paused = true)]
    async fn release_comes_after_a_quiet_second_and_never_while_idle() {
        let idle = std::sync::Arc::new(Idle::default());
        let released = std::sync::Arc::new(AtomicU64::new(0));
        let run = {
            let (idle, released) = (idle.clone(), released.clone());
            tokio::spawn(async move {
                idle.run(|| {
                    released.fetch_add(1, Ordering::SeqCst);
                })
                .await
            })
        };
        let count = || released.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(count(), 1, "the first quiet second releases");
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(count(), 1, "nothing new happened: no release");
        for _ in 0..5 {
            idle.touch();
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(count(), 1, "busy: no release");
        }
        tokio::time::sleep(Duration::from_millis(2100)).await;
        assert_eq!(
            count(),
            2,
            "a quiet second after the last touch releases once"
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(count(), 2);
        run.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn activity_soon_after_each_release_makes_the_quiet_spell_longer() {
        let idle = std::sync::Arc::new(Idle::default());
        let released = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let start = tokio::time::Instant::now();
        let run = {
            let (idle, released) = (idle.clone(), released.clone());
            tokio::spawn(async move {
                idle.run(|| released.lock().unwrap().push(start.elapsed().as_secs()))
                    .await
            })
        };
        // A probe every 10 s: releases 1, 2, 4 and 8 s after one; then none.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(10)).await;
            idle.touch();
        }
        assert_eq!(
            *released.lock().unwrap(),
            [1, 12, 24, 38],
            "releases, in seconds"
        );
        // The probe stops: a release at the end of the first whole spell (16 s) without a
        // touch. Once that release has held past `HELD`, the next is after a second again.
        tokio::time::sleep(Duration::from_secs(21)).await;
        assert_eq!(released.lock().unwrap().last(), Some(&120));
        tokio::time::sleep(Duration::from_secs(40)).await;
        idle.touch();
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(released.lock().unwrap().last(), Some(&162));
        run.abort();
    }
}
