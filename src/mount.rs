//! The container's root filesystem: mounting the request's mounts at `<bundle>/rootfs` and
//! unmounting them again. Option words follow mount(8), as containerd's own mount package does.

use crate::error::{Error, Result};
use crate::protos::mount::Mount;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::Path;

/// Mount options split into the flags for mount(2) and the filesystem's data string.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    flags: MsFlags,
    data: String,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for opt in options {
        let (clear, set) = match opt.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        if clear {
            flags.remove(set);
        } else {
            flags.insert(set);
        }
    }
    Parsed {
        flags,
        data: data.join(","),
    }
}

/// The mount types `-info` tells containerd 2.2+ this shim mounts itself
/// (`containerd.io/runtime-allow-mounts`): plain mount(2) types. Not erofs, nor the
/// `format/`, `mkfs/` or `mkdir/` templates, which containerd's mount manager must resolve.
pub const ALLOWED_TYPES: &str = "bind,overlay,tmpfs";

/// Refuses what containerd's mount manager should have resolved before Create: an option it
/// keeps for itself (`X-containerd.*`) or a template type (`mkfs/ext4`). Mounting either
/// as given would mount the wrong thing, silently.
pub fn check(mounts: &[Mount]) -> Result<()> {
    for m in mounts {
        if let Some(option) = m.options.iter().find(|o| o.starts_with("X-containerd.")) {
            return Err(Error::InvalidArgument(format!(
                "mount of {} ({}) carries containerd's own option {option:?}: containerd's \
                 mount manager must resolve it before Create",
                m.source, m.type_
            )));
        }
        if m.type_.contains('/') {
            return Err(Error::InvalidArgument(format!(
                "mount of {} has the template type {:?}: containerd's mount manager must \
                 resolve it before Create",
                m.source, m.type_
            )));
        }
    }
    Ok(())
}

/// Mounts every entry at `target`, in order; on failure, unmounts what it mounted.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            if i > 0 {
                let _ = unmount_all(target);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let parsed = parse_options(&m.options);
    let data = (!parsed.data.is_empty()).then_some(parsed.data.as_str());
    let fail = |e: Errno| {
        Error::Internal(format!(
            "failed to mount {} ({}) at {}: {e}",
            m.source,
            m.type_,
            target.display()
        ))
    };
    let fstype = (!m.type_.is_empty()).then_some(m.type_.as_str());
    let first = parsed.flags - MsFlags::MS_RDONLY;
    let bind = parsed.flags.contains(MsFlags::MS_BIND);
    // A bind mount ignores MS_RDONLY on the first call: it takes a remount to apply it.
    let initial = if bind { first } else { parsed.flags };
    mount(Some(m.source.as_str()), target, fstype, initial, data).map_err(fail)?;
    if bind && parsed.flags.contains(MsFlags::MS_RDONLY) {
        let remount = initial | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(None::<&str>, target, None::<&str>, remount, None::<&str>).map_err(fail)?;
    }
    Ok(())
}

/// Unmounts everything stacked at `target`; a target with nothing mounted is fine.
pub fn unmount_all(target: &Path) -> std::io::Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn overlay_options_become_data() {
        let p = parse_options(&opts(&[
            "index=off",
            "workdir=/w",
            "upperdir=/u",
            "lowerdir=/l",
        ]));
        assert_eq!(p.flags, MsFlags::empty());
        assert_eq!(p.data, "index=off,workdir=/w,upperdir=/u,lowerdir=/l");
    }

    #[test]
    fn flag_words_set_and_clear_flags() {
        let p = parse_options(&opts(&["rbind", "ro", "nosuid", "suid", "rw", "ro"]));
        assert_eq!(
            p.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(p.data, "");
    }

    #[test]
    fn mounts_containerd_should_have_resolved_are_refused() {
        let mount = |t: &str, options: &[&str]| Mount {
            type_: t.into(),
            source: "/src".into(),
            options: opts(options),
            ..Default::default()
        };
        assert!(check(&[
            mount("overlay", &["lowerdir=/l"]),
            mount("bind", &["rbind"])
        ])
        .is_ok());
        let sized = mount("ext4", &["rw", "X-containerd.mkfs.size=1G"]);
        assert!(matches!(
            check(&[sized]),
            Err(Error::InvalidArgument(m)) if m.contains("X-containerd.mkfs.size=1G")
        ));
        assert!(matches!(
            check(&[mount("mkfs/ext4", &[])]),
            Err(Error::InvalidArgument(m)) if m.contains("mkfs/ext4")
        ));
    }

    #[test]
    fn unmounting_an_unmounted_dir_is_fine() {
        let dir = std::env::temp_dir();
        assert!(unmount_all(&dir.join("definitely-not-mounted-xyz")).is_ok());
    }
}
