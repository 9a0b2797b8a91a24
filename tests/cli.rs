//! The shim binary's command-like flags and `delete`, run as containerd runs them.

use protobuf::Message;
use shim::protos::introspection::RuntimeInfo;
use shim::protos::shim::DeleteResponse;
use std::process::{Command, Stdio};

/// The shim binary under test: `SHIM_UNDER_TEST` when set (scripts/test.sh points it at the
/// release binary), else the one cargo built beside the tests.
fn shim() -> String {
    std::env::var("SHIM_UNDER_TEST")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_containerd-shim-rust-v1").to_string())
}

#[test]
fn version_flag_names_the_shim_version_and_revision() {
    let out = Command::new(shim()).arg("-v").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("containerd-shim-rust-v1"), "{text}");
    assert!(
        text.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(text.contains("Revision:"), "{text}");
}

#[test]
fn info_flag_prints_runtime_info_with_the_options_it_was_given() {
    let opts = shim::protos::runc_options::Options {
        binary_name: "runc".into(),
        ..Default::default()
    };
    let mut any = protobuf::well_known_types::any::Any::new();
    any.type_url = "containerd.runc.v1.Options".into();
    any.value = opts.write_to_bytes().unwrap();
    let mut child = Command::new(shim())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        &any.write_to_bytes().unwrap(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(info.name, "containerd-shim-rust-v1");
    assert_eq!(info.version.version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
}

/// containerd 2.2 runs `-info` at Create with empty stdin and reads which mount types it may
/// leave to the shim.
#[test]
fn info_with_empty_stdin_names_the_mounts_the_shim_takes() {
    let out = Command::new(shim())
        .arg("-info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).unwrap();
    assert!(info.options.is_none());
    let allowed = info
        .annotations
        .get("containerd.io/runtime-allow-mounts")
        .expect("the allow-mounts annotation");
    let types: Vec<&str> = allowed.split(',').collect();
    assert!(
        types.contains(&"overlay") && types.contains(&"bind"),
        "{allowed}"
    );
    assert!(
        !types.iter().any(|t| *t == "erofs" || t.contains('/')),
        "nothing the mount manager must resolve: {allowed}"
    );
}

#[test]
fn info_flag_rejects_malformed_options() {
    let mut child = Command::new(shim())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &[0xff, 0xff]).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("malformed options"));
}

#[test]
fn delete_of_a_bundle_with_nothing_left_reports_a_killed_task() {
    let bundle = std::env::temp_dir().join(format!("cli-delete-{}", std::process::id()));
    std::fs::create_dir_all(&bundle).unwrap();
    // The pid runc wrote when it created the task: what containerd reports for the task.
    std::fs::write(bundle.join("init.pid"), "4242").unwrap();
    let out = Command::new(shim())
        .args([
            "-namespace",
            "cli-test",
            "-address",
            "/nonexistent/containerd.sock",
        ])
        .args(["-publish-binary", "/bin/true", "-id", "gone", "-bundle"])
        .arg(&bundle)
        .arg("delete")
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    std::fs::remove_dir_all(&bundle).unwrap();
    // runc made the namespace's directory under its root for the delete; empty, it goes.
    let _ = std::fs::remove_dir("/run/containerd/runc/cli-test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let resp = DeleteResponse::parse_from_bytes(&out.stdout).unwrap();
    assert_eq!(resp.exit_status, 137);
    assert_eq!(resp.pid, 4242);
    assert!(resp.exited_at.seconds > 0);
}

#[test]
fn bad_command_lines_fail_with_usage() {
    let out = Command::new(shim())
        .args(["-nosuchflag", "x", "start"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nosuchflag"));
    assert!(
        out.stdout.is_empty(),
        "nothing but an address may reach stdout"
    );
}

/// `delete` after a shim died uses the runc binary and root the shim saved in the bundle, and
/// removes the shim's socket only when nothing listens on it any more.
#[test]
fn delete_uses_the_saved_runc_and_keeps_a_live_socket() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cli-delete-saved-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    // A runc that records how it was called.
    let runc = dir.join("fake-runc");
    let calls = dir.join("calls");
    std::fs::write(
        &runc,
        format!("#!/bin/sh\necho \"$@\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&runc, std::fs::Permissions::from_mode(0o755)).unwrap();
    let options = shim::options::RuntimeOptions {
        binary_name: runc.to_string_lossy().into_owned(),
        root: dir.join("root").to_string_lossy().into_owned(),
        ..Default::default()
    };
    std::fs::write(
        bundle.join(shim::container::OPTIONS_FILE),
        serde_json::to_vec(&options).unwrap(),
    )
    .unwrap();
    let (ns, id) = ("cli-saved", format!("saved-{}", std::process::id()));
    let address = dir.join("containerd.sock").to_string_lossy().into_owned();
    let socket = shim::bootstrap::socket_address(&address, ns, &id);
    let socket = shim::bootstrap::socket_path(&socket).to_path_buf();
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&socket);
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let delete = || {
        Command::new(shim())
            .args(["-namespace", ns, "-address", &address])
            .args(["-publish-binary", "/bin/true", "-id", &id, "-bundle"])
            .arg(&bundle)
            .arg("delete")
            .current_dir(&bundle)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = delete();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    let root = dir.join("root").join(ns);
    assert!(
        called.contains(&format!("--root {}", root.display()))
            && called.contains(&format!("delete --force {id}")),
        "runc was called as {called:?}"
    );
    assert!(socket.exists(), "a live shim's socket was removed");
    drop(listener);
    let out = delete();
    assert!(out.status.success());
    assert!(!socket.exists(), "a dead shim's socket was kept");
    // After the shim's own Delete removed the runc container, runc is not run again.
    std::fs::remove_file(&calls).unwrap();
    std::fs::write(bundle.join(shim::container::RUNC_DELETED_FILE), b"").unwrap();
    let out = delete();
    assert!(out.status.success());
    let called = std::fs::read_to_string(&calls).unwrap_or_default();
    assert!(called.is_empty(), "runc was called again as {called:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
