//! Runtime options: the Any that arrives on `start`'s stdin and in CreateTaskRequest.options,
//! decoded by its type URL into the one set of settings the shim acts on.

use crate::error::{Error, Result};
use crate::protos::{runc_options, runctypes, runtimeoptions};
use protobuf::well_known_types::any::Any;
use protobuf::Message;
use serde::{Deserialize, Serialize};

const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";
const LEGACY_CREATE_OPTIONS: &str = "containerd.linux.runc.CreateOptions";
const CRI_RUNTIME_OPTIONS: &str = "runtimeoptions.v1.Options";

/// What the shim takes from any of the option types; empty strings mean "the default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeOptions {
    pub binary_name: String,
    pub root: String,
    pub systemd_cgroup: bool,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub shim_cgroup: String,
    pub io_uid: u32,
    pub io_gid: u32,
    pub criu_path: String,
    pub criu_image_path: String,
    pub criu_work_path: String,
}

impl RuntimeOptions {
    pub const DEFAULT_BINARY: &'static str = "runc";
    pub const DEFAULT_ROOT: &'static str = "/run/containerd/runc";

    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            Self::DEFAULT_BINARY
        } else {
            &self.binary_name
        }
    }

    pub fn root(&self) -> &str {
        if self.root.is_empty() {
            Self::DEFAULT_ROOT
        } else {
            &self.root
        }
    }
}

/// The message name of a type URL: `types.googleapis.com/a.b.C` and `a.b.C` both give `a.b.C`.
fn message_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

/// Decodes runtime options; an absent or empty Any gives the defaults.
pub fn decode(any: Option<&Any>) -> Result<RuntimeOptions> {
    let Some(any) = any.filter(|a| !a.type_url.is_empty()) else {
        return Ok(RuntimeOptions::default());
    };
    let invalid =
        |e: protobuf::Error| Error::InvalidArgument(format!("malformed {}: {e}", any.type_url));
    match message_name(&any.type_url) {
        RUNC_OPTIONS => {
            let o = runc_options::Options::parse_from_bytes(&any.value).map_err(invalid)?;
            Ok(RuntimeOptions {
                binary_name: o.binary_name,
                root: o.root,
                systemd_cgroup: o.systemd_cgroup,
                no_pivot_root: o.no_pivot_root,
                no_new_keyring: o.no_new_keyring,
                shim_cgroup: o.shim_cgroup,
                io_uid: o.io_uid,
                io_gid: o.io_gid,
                criu_path: o.criu_path,
                criu_image_path: o.criu_image_path,
                criu_work_path: o.criu_work_path,
            })
        }
        LEGACY_CREATE_OPTIONS => {
            let o = runctypes::CreateOptions::parse_from_bytes(&any.value).map_err(invalid)?;
            Ok(RuntimeOptions {
                no_pivot_root: o.no_pivot_root,
                no_new_keyring: o.no_new_keyring,
                shim_cgroup: o.shim_cgroup,
                io_uid: o.io_uid,
                io_gid: o.io_gid,
                criu_image_path: o.criu_image_path,
                criu_work_path: o.criu_work_path,
                ..Default::default()
            })
        }
        CRI_RUNTIME_OPTIONS => {
            let o = runtimeoptions::Options::parse_from_bytes(&any.value).map_err(invalid)?;
            let body = if o.config_body.is_empty() && !o.config_path.is_empty() {
                std::fs::read_to_string(&o.config_path).map_err(|e| {
                    Error::InvalidArgument(format!(
                        "failed to read runtime config {}: {e}",
                        o.config_path
                    ))
                })?
            } else {
                o.config_body
            };
            from_toml_table(&body)
        }
        other => Err(Error::InvalidArgument(format!(
            "unsupported runtime options type {other:?} (expected {RUNC_OPTIONS}, \
             {LEGACY_CREATE_OPTIONS} or {CRI_RUNTIME_OPTIONS})"
        ))),
    }
}

/// Reads the flat TOML table containerd's CRI plugin sends (`BinaryName = "runc"` per line).
/// Keys the shim does not know are ignored, as the Go shim ignores unknown option fields.
fn from_toml_table(body: &str) -> Result<RuntimeOptions> {
    let mut o = RuntimeOptions::default();
    for (n, raw) in body.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            Error::InvalidArgument(format!(
                "runtime options line {}: expected key = value",
                n + 1
            ))
        })?;
        let key = key.trim().trim_matches('"');
        let value = TomlValue::parse(value.trim()).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "runtime options line {}: cannot read value of {key}",
                n + 1
            ))
        })?;
        let field = |v: TomlValue| {
            Error::InvalidArgument(format!("runtime option {key} has the wrong type: {v:?}"))
        };
        match key {
            "BinaryName" => o.binary_name = value.string().map_err(field)?,
            "Root" => o.root = value.string().map_err(field)?,
            "SystemdCgroup" => o.systemd_cgroup = value.boolean().map_err(field)?,
            "NoPivotRoot" => o.no_pivot_root = value.boolean().map_err(field)?,
            "NoNewKeyring" => o.no_new_keyring = value.boolean().map_err(field)?,
            "ShimCgroup" => o.shim_cgroup = value.string().map_err(field)?,
            "IoUid" => o.io_uid = value.integer().map_err(field)?,
            "IoGid" => o.io_gid = value.integer().map_err(field)?,
            "CriuPath" => o.criu_path = value.string().map_err(field)?,
            "CriuImagePath" => o.criu_image_path = value.string().map_err(field)?,
            "CriuWorkPath" => o.criu_work_path = value.string().map_err(field)?,
            // As containerd's own decoding does: a key of another shim's is no error.
            other => log::warn!("runtime option {other} is not one of runc's: ignored"),
        }
    }
    Ok(o)
}

#[derive(Debug, Clone, PartialEq)]
enum TomlValue {
    Str(String),
    Bool(bool),
    Int(i64),
}

impl TomlValue {
    fn parse(text: &str) -> Option<TomlValue> {
        if let Some(inner) = text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return Some(TomlValue::Str(
                inner.replace("\\\"", "\"").replace("\\\\", "\\"),
            ));
        }
        if let Some(inner) = text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
            return Some(TomlValue::Str(inner.to_string()));
        }
        match text {
            "true" => Some(TomlValue::Bool(true)),
            "false" => Some(TomlValue::Bool(false)),
            _ => text.parse().ok().map(TomlValue::Int),
        }
    }

    fn string(self) -> std::result::Result<String, TomlValue> {
        match self {
            TomlValue::Str(s) => Ok(s),
            v => Err(v),
        }
    }

    fn boolean(self) -> std::result::Result<bool, TomlValue> {
        match self {
            TomlValue::Bool(b) => Ok(b),
            v => Err(v),
        }
    }

    fn integer(self) -> std::result::Result<u32, TomlValue> {
        match self {
            TomlValue::Int(i) if u32::try_from(i).is_ok() => Ok(i as u32),
            v => Err(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any_of(name: &str, msg: &dyn protobuf::MessageDyn) -> Any {
        let mut any = Any::new();
        any.type_url = name.to_string();
        any.value = msg.write_to_bytes_dyn().unwrap();
        any
    }

    #[test]
    fn absent_options_are_the_defaults() {
        let o = decode(None).unwrap();
        assert_eq!(o.binary(), "runc");
        assert_eq!(o.root(), "/run/containerd/runc");
        assert_eq!(decode(Some(&Any::new())).unwrap(), o);
    }

    #[test]
    fn runc_options_decode_with_or_without_url_prefix() {
        let mut m = runc_options::Options::new();
        m.binary_name = "/usr/sbin/runc".into();
        m.root = "/tmp/r".into();
        m.systemd_cgroup = true;
        for url in [
            RUNC_OPTIONS,
            "types.googleapis.com/containerd.runc.v1.Options",
        ] {
            let o = decode(Some(&any_of(url, &m))).unwrap();
            assert_eq!(o.binary(), "/usr/sbin/runc");
            assert_eq!(o.root(), "/tmp/r");
            assert!(o.systemd_cgroup);
        }
    }

    #[test]
    fn legacy_create_options_keep_io_ids() {
        let mut m = runctypes::CreateOptions::new();
        m.io_uid = 7;
        m.no_pivot_root = true;
        let o = decode(Some(&any_of(LEGACY_CREATE_OPTIONS, &m))).unwrap();
        assert_eq!((o.io_uid, o.no_pivot_root, o.binary()), (7, true, "runc"));
    }

    #[test]
    fn cri_options_read_the_toml_config_body() {
        let mut m = runtimeoptions::Options::new();
        // Every key of runc's options, as containerd 1.7 (double quotes) and 2.x (single) write
        // them, and a key of another runtime's, which is ignored.
        m.config_body = "BinaryName = \"/opt/runc\"\nRoot = '/run/r'\nSystemdCgroup = true\n\
            NoPivotRoot = true\nNoNewKeyring = true\nIoUid = 5\nIoGid = 6\n\
            ShimCgroup = '/shims'\nCriuPath = '/bin/criu'\nCriuImagePath = '/img'\n\
            CriuWorkPath = '/work'\nOther = 'x'\n"
            .into();
        let o = decode(Some(&any_of(CRI_RUNTIME_OPTIONS, &m))).unwrap();
        assert_eq!(o.binary(), "/opt/runc");
        assert_eq!(o.root, "/run/r");
        assert!(o.systemd_cgroup && o.no_pivot_root && o.no_new_keyring);
        assert_eq!((o.io_uid, o.io_gid), (5, 6));
        assert_eq!(o.shim_cgroup, "/shims");
        assert_eq!(o.criu_path, "/bin/criu");
        assert_eq!(
            (o.criu_image_path.as_str(), o.criu_work_path.as_str()),
            ("/img", "/work")
        );
    }

    #[test]
    fn malformed_and_unknown_options_are_invalid_arguments() {
        let mut unknown = Any::new();
        unknown.type_url = "example.Unknown".into();
        assert!(matches!(
            decode(Some(&unknown)),
            Err(Error::InvalidArgument(_))
        ));

        let mut garbage = Any::new();
        garbage.type_url = RUNC_OPTIONS.into();
        garbage.value = vec![0xff, 0xff, 0xff];
        assert!(matches!(
            decode(Some(&garbage)),
            Err(Error::InvalidArgument(_))
        ));

        let mut bad_type = runtimeoptions::Options::new();
        bad_type.config_body = "SystemdCgroup = \"yes\"".into();
        let r = decode(Some(&any_of(CRI_RUNTIME_OPTIONS, &bad_type)));
        assert!(matches!(r, Err(Error::InvalidArgument(_))));
    }
}
