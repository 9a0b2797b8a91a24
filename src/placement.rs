//! The shim's own place on the machine, set by `start` for the daemon it spawns: the cgroup
//! the runtime options name (ShimCgroup) and an OOM score just above containerd's, so the
//! kernel kills a shim before the daemon that tracks it; and, in the daemon, an open-files
//! limit big enough for a pod's worth of containers.

use std::io;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const OOM_SCORE_ADJ_MAX: i32 = 1000;

/// Moves `pid` into the cgroup `path` (relative to each hierarchy's root): on a unified host
/// the one directory, on v1 every hierarchy where that cgroup exists, as containerd's Go shim
/// does; a cgroup that exists in none of them is an error.
pub fn join_cgroup(pid: u32, path: &str) -> io::Result<()> {
    let relative = path.trim_start_matches('/');
    let unified = nix::sys::statfs::statfs(CGROUP_ROOT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    let dirs: Vec<PathBuf> = if unified {
        vec![Path::new(CGROUP_ROOT).join(relative)]
    } else {
        v1_hierarchies()?
            .into_iter()
            .map(|h| h.join(relative))
            .filter(|d| d.is_dir())
            .collect()
    };
    if dirs.is_empty() || (unified && !dirs[0].is_dir()) {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("shim cgroup {path:?} does not exist in any cgroup hierarchy"),
        ));
    }
    for dir in dirs {
        let procs = dir.join("cgroup.procs");
        std::fs::write(&procs, pid.to_string()).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("failed to join shim cgroup {}: {e}", procs.display()),
            )
        })?;
    }
    Ok(())
}

/// The mount points of the v1 hierarchies (each once, however many controllers it holds).
fn v1_hierarchies() -> io::Result<Vec<PathBuf>> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, tail) = line.split_once(" - ")?;
            (tail.split(' ').next() == Some("cgroup")).then(|| fields.split(' ').nth(4))?
        })
        .map(PathBuf::from)
        .collect();
    points.sort();
    points.dedup();
    Ok(points)
}

/// Sets the daemon's OOM score to containerd's plus one. Lowering a score needs a privilege
/// the machine may withhold; then the inherited score stays, as with the Go shim.
pub fn adjust_oom_score(pid: u32) -> io::Result<()> {
    let parent = std::os::unix::process::parent_id();
    let read = |pid: u32| -> io::Result<i32> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))?;
        text.trim()
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{e}")))
    };
    let score = (read(parent)? + 1).min(OOM_SCORE_ADJ_MAX);
    match std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("failed to set the shim's OOM score to {score}: {e}"),
        )),
    }
}

/// Raises the soft open-files limit to the hard one: a shim serving a pod holds a few fds per
/// container and process, and 1024 runs out.
pub fn raise_open_files_limit() -> io::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(())
}
