//! Generates the protobuf messages and ttrpc services from protos/ into OUT_DIR.
//!
//! The generated files carry inner attributes (`#![...]`) and inner doc comments, which
//! `include!` cannot take inside a module, so they are stripped after generation.

use std::fs;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "mount.proto",
    "task.proto",
    "shim.proto",
    "events.proto",
    "forward.proto",
    "runc_options.proto",
    "runctypes.proto",
    "runtimeoptions.proto",
    "introspection.proto",
    "cgroups_v1.proto",
    "cgroups_v2.proto",
    "bootstrap.proto",
];

fn main() {
    let revision = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SHIM_GIT_REVISION={revision}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    // HEAD names a branch; a commit moves the branch's ref, not HEAD.
    if let Ok(head) = fs::read_to_string(".git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{branch}");
        }
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let inputs: Vec<String> = PROTOS.iter().map(|p| format!("protos/{p}")).collect();
    for input in &inputs {
        println!("cargo:rerun-if-changed={input}");
    }
    ttrpc_codegen::Codegen::new()
        .out_dir(&out_dir)
        .include("protos")
        .inputs(&inputs)
        .rust_protobuf()
        .customize(ttrpc_codegen::Customize {
            async_all: true,
            ..Default::default()
        })
        .run()
        .expect("generating code from protos/ failed");

    for entry in fs::read_dir(&out_dir).expect("OUT_DIR is readable") {
        let path = entry.expect("OUT_DIR entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let text = fs::read_to_string(&path).expect("generated file is readable");
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| !l.starts_with("#![") && !l.starts_with("//!"))
                .collect();
            fs::write(&path, kept.join("\n")).expect("generated file is writable");
        }
    }
}
