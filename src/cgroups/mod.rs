//! The container's cgroup: where its init was placed on this host (the v1 hierarchies or the
//! unified tree) and the figures Stats reports from it. Nothing here changes a cgroup: runc
//! does that; this only reads.

pub mod oom;
mod v1;
mod v2;

use crate::error::{Error, Result};
use protobuf::well_known_types::any::Any;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where a container's processes are accounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1 (or the v1 side of a hybrid host): one directory per controller.
    V1(HashMap<String, PathBuf>),
    /// The unified hierarchy: one directory.
    V2(PathBuf),
}

impl Cgroup {
    /// The cgroup of a live process, as the kernel lists it in /proc/<pid>/cgroup; the host's
    /// mode decides which figures are reported, as containerd decides it.
    pub fn of_pid(pid: i32) -> Result<Cgroup> {
        let read = |path: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| Error::Internal(format!("failed to read {path}: {e}")))
        };
        let membership = read(&format!("/proc/{pid}/cgroup"))?;
        if is_unified_host() {
            return v2_path(&membership, Path::new(CGROUP_ROOT))
                .map(Cgroup::V2)
                .ok_or_else(|| Error::Internal(format!("process {pid} is in no unified cgroup")));
        }
        let mounts = v1_mounts(&read("/proc/self/mountinfo")?);
        Ok(Cgroup::V1(v1_paths(&membership, &mounts)))
    }

    /// The figures as containerd's metrics message for this cgroup version, packed.
    pub fn metrics(&self) -> Result<Any> {
        match self {
            Cgroup::V1(paths) => v1::metrics(paths).map(|m| crate::events::pack(&m)),
            Cgroup::V2(dir) => v2::metrics(dir).map(|m| crate::events::pack(&m)),
        }
    }
}

/// Whether /sys/fs/cgroup is the unified hierarchy itself (not a hybrid host's v1 mounts).
fn is_unified_host() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// The unified cgroup directory in a /proc/<pid>/cgroup listing (its `0::/path` line).
fn v2_path(membership: &str, root: &Path) -> Option<PathBuf> {
    membership
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| root.join(p.trim_start_matches('/')))
}

/// A v1 hierarchy mount: the cgroup it shows at its mount point, and where that is.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    root: String,
    point: PathBuf,
}

/// Each v1 controller's mount, from /proc/self/mountinfo.
fn v1_mounts(mountinfo: &str) -> HashMap<String, Mount> {
    let mut mounts = HashMap::new();
    for line in mountinfo.lines() {
        let Some((fields, tail)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = fields.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        if tail.first() != Some(&"cgroup") || fields.len() < 5 {
            continue;
        }
        let mount = Mount {
            root: fields[3].to_string(),
            point: PathBuf::from(unescape(fields[4])),
        };
        let options = tail.get(2).copied().unwrap_or_default();
        for option in options.split(',') {
            mounts.entry(option.to_string()).or_insert(mount.clone());
        }
    }
    mounts
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(field: &str) -> String {
    field
        .replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Each controller's directory for a /proc/<pid>/cgroup listing (`id:controllers:path`).
fn v1_paths(membership: &str, mounts: &HashMap<String, Mount>) -> HashMap<String, PathBuf> {
    let mut paths = HashMap::new();
    for line in membership.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        for controller in controllers.split(',').filter(|c| !c.is_empty()) {
            if let Some(mount) = mounts.get(controller) {
                // A mount of a sub-tree (inside a container) shows paths below its root.
                let below = path.strip_prefix(mount.root.as_str()).unwrap_or(path);
                let dir = mount.point.join(below.trim_start_matches('/'));
                paths.insert(controller.to_string(), dir);
            }
        }
    }
    paths
}

/// Reads the files of one cgroup directory. A file the kernel does not offer (no swap
/// accounting, say) is None; a directory that is gone, because the container ended while
/// it was read, is NotFound.
struct Dir<'a>(&'a Path);

impl Dir<'_> {
    fn read(&self, file: &str) -> Result<Option<String>> {
        let path = self.0.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV) => {
                if self.0.is_dir() {
                    Ok(None)
                } else {
                    Err(Error::NotFound(format!(
                        "cgroup {} is gone: the container has ended",
                        self.0.display()
                    )))
                }
            }
            Err(e) => Err(Error::Internal(format!(
                "failed to read {}: {e}",
                path.display()
            ))),
        }
    }

    /// A file holding one number; `max` (no limit) reads as `unlimited`.
    fn number(&self, file: &str, unlimited: u64) -> Result<Option<u64>> {
        Ok(self.read(file)?.and_then(|t| parse_number(&t, unlimited)))
    }

    /// A flat keyed file (`key value` per line), such as memory.stat or cpu.stat.
    fn keyed(&self, file: &str) -> Result<Vec<(String, u64)>> {
        Ok(self.read(file)?.map(|t| keyed(&t)).unwrap_or_default())
    }
}

fn parse_number(text: &str, unlimited: u64) -> Option<u64> {
    match text.trim() {
        "max" => Some(unlimited),
        t => t.parse().ok(),
    }
}

fn keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (key, value) = l.split_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// The size names hugetlb files use (`2MB`, `1GB`), from the kernel's page size list.
fn huge_page_sizes() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut sizes: Vec<(u64, String)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some((kb, size_name(kb)))
        })
        .collect();
    sizes.sort();
    sizes.into_iter().map(|(_, n)| n).collect()
}

fn size_name(kb: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    let (mut size, mut unit) = (kb, 0);
    while size >= 1024 && size % 1024 == 0 && unit < UNITS.len() - 1 {
        size /= 1024;
        unit += 1;
    }
    format!("{size}{}", UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scratch directory of cgroup files, removed on drop.
    pub struct Fixture(pub PathBuf);

    impl Fixture {
        pub fn new(name: &str, files: &[(&str, &str)]) -> Fixture {
            let dir =
                std::env::temp_dir().join(format!("cgroup-fixture-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (file, text) in files {
                std::fs::write(dir.join(file), text).unwrap();
            }
            Fixture(dir)
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn v1_controllers_are_found_through_their_mounts() {
        let mountinfo = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
28 25 0:25 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 25 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
34 25 0:30 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
35 25 0:31 /inner /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let membership = "\
12:pids:/inner/ns/c1
5:cpu,cpuacct:/ns/c1
4:memory:/ns/c1
1:name=systemd:/user.slice
0::/user.slice
";
        let paths = v1_paths(membership, &v1_mounts(mountinfo));
        let at = |c: &str| paths.get(c).map(|p| p.display().to_string());
        assert_eq!(at("memory").as_deref(), Some("/sys/fs/cgroup/memory/ns/c1"));
        assert_eq!(
            at("cpu").as_deref(),
            Some("/sys/fs/cgroup/cpu,cpuacct/ns/c1")
        );
        assert_eq!(
            at("cpuacct").as_deref(),
            Some("/sys/fs/cgroup/cpu,cpuacct/ns/c1")
        );
        assert_eq!(at("pids").as_deref(), Some("/sys/fs/cgroup/pids/ns/c1"));
        assert_eq!(at("freezer"), None);
    }

    #[test]
    fn the_unified_path_is_the_zero_line() {
        let membership = "1:name=systemd:/x\n0::/kubepods/pod1/c1\n";
        assert_eq!(
            v2_path(membership, Path::new("/sys/fs/cgroup")),
            Some(PathBuf::from("/sys/fs/cgroup/kubepods/pod1/c1"))
        );
        assert_eq!(v2_path("4:memory:/x\n", Path::new("/sys/fs/cgroup")), None);
    }

    #[test]
    fn huge_page_sizes_are_named_as_hugetlb_files_name_them() {
        assert_eq!(size_name(2048), "2MB");
        assert_eq!(size_name(1048576), "1GB");
        assert_eq!(size_name(64), "64KB");
    }

    #[test]
    fn a_vanished_cgroup_is_not_found_and_a_missing_file_is_none() {
        let fx = Fixture::new("vanish", &[("pids.current", "3\n")]);
        let dir = Dir(&fx.0);
        assert_eq!(dir.number("pids.current", 0).unwrap(), Some(3));
        assert_eq!(dir.number("memory.memsw.usage_in_bytes", 0).unwrap(), None);
        let gone = fx.0.join("gone");
        assert!(matches!(
            Dir(&gone).number("pids.current", 0),
            Err(Error::NotFound(_))
        ));
    }
}
