//! `-info`: the RuntimeInfo containerd 2.x asks a shim for (for `ctr plugins inspect-runtime`,
//! CRI's feature checks and, from 2.2, at every Create with empty stdin): our name and version,
//! the options it sent us, runc's features document, and the mount types we mount ourselves.

use crate::options;
use crate::protos::introspection::{RuntimeInfo, RuntimeVersion};
use protobuf::well_known_types::any::Any;
use protobuf::{Message, MessageField};
use std::io::Read;
use std::process::{Command, Stdio};

/// The type URL containerd registers for the runtime-spec `features.Features` document.
const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

pub fn run() -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    std::io::stdin()
        .read_to_end(&mut raw)
        .map_err(|e| format!("failed to read options from stdin: {e}"))?;
    let options_any = if raw.is_empty() {
        None
    } else {
        Some(Any::parse_from_bytes(&raw).map_err(|e| format!("malformed options on stdin: {e}"))?)
    };
    let options = options::decode(options_any.as_ref()).map_err(|e| e.to_string())?;
    let runc = crate::runc::find_binary(options.binary()).map_err(|e| e.to_string())?;
    let mut info = RuntimeInfo::new();
    info.name = crate::NAME.to_string();
    info.version = MessageField::some(RuntimeVersion {
        version: crate::VERSION.to_string(),
        revision: crate::REVISION.to_string(),
        ..Default::default()
    });
    info.options = options_any.into();
    // containerd 2.2+ leaves these mount types for the shim to mount.
    info.annotations.insert(
        "containerd.io/runtime-allow-mounts".to_string(),
        crate::mount::ALLOWED_TYPES.to_string(),
    );
    // A runc without `features` (before 1.1) leaves the field empty, as the Go shim does.
    if let Some(features) = runc_features(&runc) {
        let mut any = Any::new();
        any.type_url = FEATURES_TYPE_URL.to_string();
        any.value = features;
        info.features = MessageField::some(any);
    }
    info.write_to_bytes().map_err(|e| e.to_string())
}

fn runc_features(runc: &std::path::Path) -> Option<Vec<u8>> {
    let out = Command::new(runc)
        .arg("features")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let valid = out.status.success()
        && serde_json::from_slice::<serde_json::Value>(&out.stdout).is_ok_and(|v| v.is_object());
    valid.then_some(out.stdout)
}
