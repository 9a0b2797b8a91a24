//! `start`: read what containerd sent on stdin, find or make the shim socket for this task's
//! group, spawn the daemon copy of ourselves with the listener inherited, record the address
//! in the bundle and answer in the form containerd asked in.

use crate::cli::Flags;
use crate::protos::bootstrap::{BootstrapParams, BootstrapResult};
use protobuf::Message;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub const SOCKET_DIR: &str = "/run/containerd/s";
/// The fd on which the daemon copy finds its listening socket.
pub const LISTENER_FD: i32 = 3;
/// The annotations that put a container in a group served by one shim, in the order
/// containerd's Go shim reads them: containerd's own, then CRI's pod sandbox.
const GROUP_ANNOTATIONS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// `unix:///run/containerd/s/<sha256 of "<containerd address>/<namespace>/<group>">`, with the
/// joined path cleaned as Go's filepath.Join does, so both shims agree on it.
pub fn socket_address(containerd_address: &str, namespace: &str, group: &str) -> String {
    socket_address_in(Path::new(SOCKET_DIR), containerd_address, namespace, group)
}

/// As `socket_address`, in `dir` (containerd 2.3's socket_dir).
pub fn socket_address_in(
    dir: &Path,
    containerd_address: &str,
    namespace: &str,
    group: &str,
) -> String {
    let joined = clean_path(&format!("{containerd_address}/{namespace}/{group}"));
    let digest = Sha256::digest(joined.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}", dir.join(hex).display())
}

/// What containerd wrote on `start`'s stdin: containerd 2.3's BootstrapParams for this very
/// task, or, from earlier lines (and runc-v1 style shims), the runtime options Any alone or
/// nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum Handshake {
    Bootstrap {
        /// The runtime options Any from the params' extensions, serialized; empty for none.
        options: Vec<u8>,
        socket_dir: Option<PathBuf>,
    },
    Legacy {
        options: Vec<u8>,
    },
}

impl Handshake {
    /// Reads stdin's bytes. An options Any can decode as BootstrapParams by accident (both
    /// open with two string fields), so only params that name this task's id and namespace
    /// count as a bootstrap.
    pub fn read(flags: &Flags, stdin: Vec<u8>) -> Handshake {
        match BootstrapParams::parse_from_bytes(&stdin) {
            Ok(p) if p.instance_id == flags.id && p.namespace == flags.namespace => {
                let options = p
                    .extensions
                    .iter()
                    .find_map(|e| e.value.as_ref())
                    .map(|any| any.write_to_bytes().unwrap_or_default())
                    .unwrap_or_default();
                let socket_dir = p.socket_dir.filter(|d| !d.is_empty()).map(PathBuf::from);
                Handshake::Bootstrap {
                    options,
                    socket_dir,
                }
            }
            _ => Handshake::Legacy { options: stdin },
        }
    }

    fn options(&self) -> &[u8] {
        match self {
            Handshake::Bootstrap { options, .. } | Handshake::Legacy { options } => options,
        }
    }

    fn socket_dir(&self) -> &Path {
        match self {
            Handshake::Bootstrap {
                socket_dir: Some(dir),
                ..
            } => dir,
            _ => Path::new(SOCKET_DIR),
        }
    }

    /// What `start` prints for `address`: a BootstrapResult (version 3, the address, ttrpc;
    /// in field order, so its first byte is the version's tag and its last a letter of
    /// "ttrpc": containerd 2.3.0 to 2.3.3 trim whitespace off the reply before decoding it)
    /// to a bootstrap; else as earlier lines read it.
    pub fn reply(&self, address: &str) -> Vec<u8> {
        match self {
            Handshake::Bootstrap { .. } => {
                let result = BootstrapResult {
                    version: TASK_API_VERSION as i32,
                    address: address.to_string(),
                    protocol: "ttrpc".to_string(),
                    ..Default::default()
                };
                // Three set fields of a message we built: encoding cannot fail.
                result.write_to_bytes().unwrap_or_default()
            }
            Handshake::Legacy { .. } => announcement(address).into_bytes(),
        }
    }
}

/// Lexical cleaning as Go's path.Clean: no empty or `.` elements, `..` resolved.
fn clean_path(path: &str) -> String {
    let rooted = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            p => parts.push(p),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".to_string(),
        (false, false) => body,
    }
}

/// The group a task's shim serves: the one its annotations name (a pod sandbox for CRI
/// containers), else the task itself.
pub fn grouping_id(bundle: &Path, id: &str) -> String {
    std::fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|spec| {
            let annotations = spec.get("annotations")?;
            GROUP_ANNOTATIONS
                .iter()
                .find_map(|a| annotations.get(a)?.as_str().map(str::to_string))
        })
        .unwrap_or_else(|| id.to_string())
}

pub fn socket_path(address: &str) -> &Path {
    Path::new(address.strip_prefix("unix://").unwrap_or(address))
}

/// The task API version this shim serves at most: containerd.task.v3.Task (same messages as v2).
pub const TASK_API_VERSION: u32 = 3;

/// What `start` prints: containerd 2.x's JSON bootstrap when containerd says (MAX_SHIM_VERSION)
/// that it reads one of a version we serve; else the plain address every line understands.
/// containerd 1.7 and 2.1 set MAX_SHIM_VERSION=2, which a plain address already means.
pub fn announcement(address: &str) -> String {
    announcement_for(address, std::env::var("MAX_SHIM_VERSION").ok().as_deref())
}

fn announcement_for(address: &str, max_version: Option<&str>) -> String {
    let max = max_version
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if max >= TASK_API_VERSION {
        serde_json::json!({"version": TASK_API_VERSION, "address": address, "protocol": "ttrpc"})
            .to_string()
    } else {
        address.to_string()
    }
}

/// Runs `start`; returns what to print on stdout.
pub fn run(flags: &Flags) -> io::Result<Vec<u8>> {
    let handshake = Handshake::read(flags, read_stdin());
    let bundle = bundle_dir(flags)?;
    let group = grouping_id(&bundle, &flags.id);
    let address = socket_address_in(
        handshake.socket_dir(),
        &flags.address,
        &flags.namespace,
        &group,
    );
    let path = socket_path(&address).to_path_buf();
    let Some(listener) = bind(&path)? else {
        // A live shim already serves this group.
        write_address(&bundle, &address)?;
        return Ok(handshake.reply(&address));
    };
    let options = handshake.options();
    let mut daemon = match spawn_daemon(flags, &bundle, listener, options) {
        Ok(child) => child,
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
    };
    let placed = place_daemon(daemon.id(), options);
    if let Err(e) = placed.and_then(|()| write_address(&bundle, &address)) {
        // Misplaced, or without the address containerd never reaches it: do not leave it.
        let _ = daemon.kill();
        let _ = daemon.wait();
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok(handshake.reply(&address))
}

/// Puts the new daemon where the runtime options and containerd's own OOM score say.
fn place_daemon(pid: u32, options: &[u8]) -> io::Result<()> {
    // Options that do not decode are the daemon's to report (it logs and ignores them).
    let shim_cgroup = protobuf::well_known_types::any::Any::parse_from_bytes(options)
        .ok()
        .and_then(|any| crate::options::decode(Some(&any)).ok())
        .map(|o| o.shim_cgroup)
        .unwrap_or_default();
    if !shim_cgroup.is_empty() {
        crate::placement::join_cgroup(pid, &shim_cgroup)?;
    }
    crate::placement::adjust_oom_score(pid)
}

pub fn bundle_dir(flags: &Flags) -> io::Result<PathBuf> {
    if flags.bundle.is_empty() {
        std::env::current_dir()
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}

/// Binds the group's socket; None when a live shim already listens there. Binding comes first,
/// so of two concurrent starts only one wins, and only a socket nobody answers on (a dead
/// shim's leftover) is ever removed.
fn bind(path: &Path) -> io::Result<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        // A directory the shim makes only root may enter; one that exists is left as it is.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    for _ in 0..2 {
        match bind_private(path) {
            Ok(listener) => return Ok(Some(listener)),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                if UnixStream::connect(path).is_ok() {
                    return Ok(None);
                }
                let _ = std::fs::remove_file(path);
            }
            Err(e) => return Err(bind_error(path, e)),
        }
    }
    bind_private(path)
        .map(Some)
        .map_err(|e| bind_error(path, e))
}

/// Binds under a umask that leaves the socket 0600 from its first moment.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file mode mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    unsafe { libc::umask(old) };
    bound
}

fn bind_error(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("bind {}: {e}", path.display()))
}

/// What containerd wrote on our stdin; nothing when stdin is a terminal.
fn read_stdin() -> Vec<u8> {
    let mut buf = Vec::new();
    if unsafe { libc::isatty(0) } == 0 {
        let _ = io::stdin().read_to_end(&mut buf);
    }
    buf
}

fn spawn_daemon(
    flags: &Flags,
    bundle: &Path,
    listener: UnixListener,
    options: &[u8],
) -> io::Result<std::process::Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["-namespace", &flags.namespace, "-id", &flags.id]);
    cmd.args(["-address", &flags.address]);
    if !flags.publish_binary.is_empty() {
        cmd.args(["-publish-binary", &flags.publish_binary]);
    }
    if flags.debug {
        cmd.arg("-debug");
    }
    cmd.current_dir(bundle)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let listener_fd: OwnedFd = listener.into();
    let raw = listener_fd.as_raw_fd();
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if raw == LISTENER_FD {
                let flags = libc::fcntl(raw, libc::F_GETFD);
                libc::fcntl(raw, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(raw, LISTENER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    drop(listener_fd);
    if let Some(mut stdin) = child.stdin.take() {
        if let Err(e) = stdin.write_all(options) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    }
    Ok(child)
}

fn write_address(bundle: &Path, address: &str) -> io::Result<()> {
    let tmp = bundle.join(".address.tmp");
    std::fs::write(&tmp, address)?;
    std::fs::rename(&tmp, bundle.join("address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_address_is_the_sha256_of_the_cleaned_join() {
        // printf '%s' /run/containerd/containerd.sock/default/abc | sha256sum
        let a = socket_address("/run/containerd/containerd.sock", "default", "abc");
        let expected = format!(
            "unix:///run/containerd/s/{}",
            Sha256::digest(b"/run/containerd/containerd.sock/default/abc")
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(a, expected);
        assert_eq!(
            a,
            socket_address("/run/containerd//containerd.sock/", "default", "abc")
        );
        assert_ne!(
            a,
            socket_address("/run/containerd/containerd.sock", "other", "abc")
        );
    }

    #[test]
    fn plain_address_unless_containerd_reads_version_3() {
        let a = "unix:///run/containerd/s/x";
        assert_eq!(announcement_for(a, None), a);
        assert_eq!(announcement_for(a, Some("2")), a);
        assert_eq!(announcement_for(a, Some("junk")), a);
        let json: serde_json::Value =
            serde_json::from_str(&announcement_for(a, Some("3"))).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["address"], a);
        assert_eq!(json["protocol"], "ttrpc");
    }

    #[test]
    fn known_socket_address_vector() {
        assert_eq!(
            socket_address("/run/containerd/containerd.sock", "default", "abc"),
            "unix:///run/containerd/s/8cb244a719603fe00870d5ce1d8e1f1db43a654cb993d107df1f1ae23ddffa59"
        );
    }

    #[test]
    fn bind_reuses_a_live_socket_and_replaces_a_dead_one() {
        let dir = std::env::temp_dir().join(format!("bind-test-{}", std::process::id()));
        let path = dir.join("s");
        let live = bind(&path).unwrap().expect("first bind makes the socket");
        assert!(
            bind(&path).unwrap().is_none(),
            "a live shim's socket is reused"
        );
        drop(live);
        let again = bind(&path).unwrap();
        assert!(again.is_some(), "a dead shim's socket is replaced");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "the socket directory the shim made");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn clean_path_matches_go() {
        assert_eq!(clean_path("/a//b/./c/../d/"), "/a/b/d");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path("a/../.."), "..");
        assert_eq!(clean_path(""), ".");
    }

    #[test]
    fn grouping_follows_the_group_then_the_sandbox_annotation() {
        let dir = std::env::temp_dir().join(format!("grouping-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(grouping_id(&dir, "task"), "task");
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_id(&dir, "task"), "pod1");
        std::fs::write(
            dir.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1",
                "io.containerd.runc.v2.group":"g1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping_id(&dir, "task"), "g1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn task_flags() -> Flags {
        Flags {
            namespace: "k8s.io".into(),
            id: "task1".into(),
            ..Default::default()
        }
    }

    fn options_any() -> protobuf::well_known_types::any::Any {
        let options = crate::protos::runc_options::Options {
            binary_name: "crun".into(),
            ..Default::default()
        };
        let mut any = protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = options.write_to_bytes().unwrap();
        any
    }

    #[test]
    fn bootstrap_params_for_this_task_carry_the_options_and_socket_dir() {
        let mut params = BootstrapParams {
            instance_id: "task1".into(),
            namespace: "k8s.io".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            socket_dir: Some("/run/alt/s".into()),
            ..Default::default()
        };
        params.extensions.push(crate::protos::bootstrap::Extension {
            value: protobuf::MessageField::some(options_any()),
            ..Default::default()
        });
        let handshake = Handshake::read(&task_flags(), params.write_to_bytes().unwrap());
        assert_eq!(
            handshake,
            Handshake::Bootstrap {
                options: options_any().write_to_bytes().unwrap(),
                socket_dir: Some(PathBuf::from("/run/alt/s")),
            }
        );
        assert_eq!(handshake.socket_dir(), Path::new("/run/alt/s"));
        let no_options = BootstrapParams {
            instance_id: "task1".into(),
            namespace: "k8s.io".into(),
            ..Default::default()
        };
        let handshake = Handshake::read(&task_flags(), no_options.write_to_bytes().unwrap());
        assert_eq!(handshake.options(), b"");
        assert_eq!(handshake.socket_dir(), Path::new(SOCKET_DIR));
    }

    #[test]
    fn an_options_any_that_decodes_as_params_of_another_task_is_the_options() {
        // An Any's type URL and value are string fields 1 and 2, as instance_id and namespace.
        let raw = options_any().write_to_bytes().unwrap();
        let accidental = BootstrapParams::parse_from_bytes(&raw).expect("decodes by accident");
        assert_eq!(accidental.instance_id, "containerd.runc.v1.Options");
        assert_eq!(
            Handshake::read(&task_flags(), raw.clone()),
            Handshake::Legacy { options: raw }
        );
        assert_eq!(
            Handshake::read(&task_flags(), Vec::new()),
            Handshake::Legacy {
                options: Vec::new()
            }
        );
    }

    /// Go's bytes.TrimSpace, as containerd 2.3.0 to 2.3.3 apply it to the whole reply.
    fn go_trim_space(mut b: &[u8]) -> &[u8] {
        let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        while let Some((&c, rest)) = b.split_first() {
            if space(c) {
                b = rest;
            } else if b.starts_with(&[0xc2, 0x85]) || b.starts_with(&[0xc2, 0xa0]) {
                b = &b[2..];
            } else {
                break;
            }
        }
        while let Some((&c, rest)) = b.split_last() {
            if space(c) {
                b = rest;
            } else if b.ends_with(&[0xc2, 0x85]) || b.ends_with(&[0xc2, 0xa0]) {
                b = &b[..b.len() - 2];
            } else {
                break;
            }
        }
        b
    }

    #[test]
    fn the_bootstrap_result_survives_a_whitespace_trim_whatever_the_address() {
        let handshake = Handshake::Bootstrap {
            options: Vec::new(),
            socket_dir: None,
        };
        // Lengths that put a whitespace byte (9 to 13, 32) in the address's length prefix.
        for len in [9usize, 10, 11, 12, 13, 32, 60, 200] {
            let address = format!("unix:///{}", "a".repeat(len.saturating_sub(8)));
            let reply = handshake.reply(&address);
            assert_eq!(reply.first(), Some(&0x08), "the version's tag comes first");
            assert_eq!(reply.last(), Some(&b'c'), "\"ttrpc\" comes last");
            let trimmed = go_trim_space(&reply);
            assert_eq!(trimmed, &reply[..]);
            let result = BootstrapResult::parse_from_bytes(trimmed).unwrap();
            assert_eq!(
                (
                    result.version,
                    result.address.as_str(),
                    result.protocol.as_str()
                ),
                (3, address.as_str(), "ttrpc")
            );
            assert!(result.metadata.is_empty() && result.capabilities.is_empty());
        }
        let legacy = Handshake::Legacy {
            options: Vec::new(),
        };
        assert!(!legacy.reply("unix:///x").is_empty());
    }
}
