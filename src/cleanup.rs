//! `delete`: containerd's call after a shim died or its start failed. Force-deletes the runc
//! container (unless the shim's own Delete already removed it), unmounts the rootfs and
//! reports the task as killed.

use crate::cli::Flags;
use crate::container::{read_options, read_pid, INIT_PID_FILE, RUNC_DELETED_FILE};
use crate::protos::shim::DeleteResponse;
use protobuf::{Message, MessageField};
use std::path::Path;
use std::process::{Command, Stdio};

/// What the Go shim reports for a task it had to kill: 128 + SIGKILL.
const KILLED_STATUS: u32 = 128 + 9;

pub fn run(flags: &Flags) -> Result<Vec<u8>, String> {
    let bundle = crate::bootstrap::bundle_dir(flags).map_err(|e| e.to_string())?;
    let options = read_options(&bundle);
    let root = Path::new(options.root()).join(&flags.namespace);
    if !bundle.join(RUNC_DELETED_FILE).exists() {
        match crate::runc::find_binary(options.binary()) {
            Ok(runc) => force_delete(&runc, &root, &bundle, &flags.id),
            Err(e) => eprintln!("{e}"),
        }
    }
    if let Err(e) = crate::mount::unmount_all(&bundle.join("rootfs")) {
        eprintln!("failed to unmount rootfs: {e}");
    }
    remove_dead_socket(flags, &bundle);
    let pid = read_pid(&bundle.join(INIT_PID_FILE)).unwrap_or(0);
    let response = DeleteResponse {
        pid: pid as u32,
        exit_status: KILLED_STATUS,
        exited_at: MessageField::some(crate::time::now()),
        ..Default::default()
    };
    response.write_to_bytes().map_err(|e| e.to_string())
}

/// The socket of a shim that died stays on disk; nothing answers on it any more. Its address
/// is the one `start` recorded in the bundle (containerd 2.3 may have placed it elsewhere).
fn remove_dead_socket(flags: &Flags, bundle: &Path) {
    let address = std::fs::read_to_string(bundle.join("address"))
        .ok()
        .filter(|a| a.starts_with("unix://"))
        .unwrap_or_else(|| {
            let group = crate::bootstrap::grouping_id(bundle, &flags.id);
            crate::bootstrap::socket_address(&flags.address, &flags.namespace, &group)
        });
    let path = crate::bootstrap::socket_path(address.trim());
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Err(e) = std::fs::remove_file(path) {
            eprintln!("failed to remove {}: {e}", path.display());
        }
    }
}

fn force_delete(runc: &Path, root: &Path, bundle: &Path, id: &str) {
    let out = Command::new(runc)
        .arg("--root")
        .arg(root)
        .arg("--log")
        .arg(bundle.join("log.json"))
        .args(["--log-format", "json", "delete", "--force", id])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if !o.status.success() => {
            let msg = String::from_utf8_lossy(&o.stderr);
            // A container runc no longer has is the usual case after a clean stop.
            if !msg.contains("does not exist") && !msg.contains("not exist") {
                eprintln!("runc delete --force {id}: {}", msg.trim());
            }
        }
        Ok(_) => {}
        Err(e) => eprintln!("failed to run {}: {e}", runc.display()),
    }
}
