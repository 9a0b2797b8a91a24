//! The command line containerd uses to run a shim, parsed the way Go's `flag` package does
//! (`-name value`, `-name=value`, `--name`, booleans without a value; flags stop at the first
//! word that is not one).

use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub namespace: String,
    pub id: String,
    /// containerd's gRPC socket; part of the shim socket's name.
    pub address: String,
    pub publish_binary: String,
    pub bundle: String,
    pub socket: String,
    pub debug: bool,
    pub version: bool,
    pub info: bool,
    pub action: Action,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Action {
    /// No action word: this is the daemon copy, serving the task API.
    #[default]
    Serve,
    Start,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Flags, UsageError> {
    let mut flags = Flags::default();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            flags.action = parse_action(&arg)?;
            if let Some(extra) = args.next() {
                return Err(UsageError(format!(
                    "unexpected argument {extra:?} after {arg}"
                )));
            }
            break;
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        if let Some(slot) = bool_flag(&mut flags, name) {
            *slot = match inline.as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(v) => return Err(UsageError(format!("invalid value {v:?} for -{name}"))),
            };
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .ok_or_else(|| UsageError(format!("flag needs an argument: -{name}")))?,
        };
        *string_flag(&mut flags, name)
            .ok_or_else(|| UsageError(format!("flag provided but not defined: -{name}")))? = value;
    }
    Ok(flags)
}

fn parse_action(word: &str) -> Result<Action, UsageError> {
    match word {
        "start" => Ok(Action::Start),
        "delete" => Ok(Action::Delete),
        other => Err(UsageError(format!("unknown action {other:?}"))),
    }
}

fn bool_flag<'a>(flags: &'a mut Flags, name: &str) -> Option<&'a mut bool> {
    match name {
        "debug" => Some(&mut flags.debug),
        "v" | "version" => Some(&mut flags.version),
        "info" => Some(&mut flags.info),
        _ => None,
    }
}

fn string_flag<'a>(flags: &'a mut Flags, name: &str) -> Option<&'a mut String> {
    match name {
        "namespace" => Some(&mut flags.namespace),
        "id" => Some(&mut flags.id),
        "address" => Some(&mut flags.address),
        "publish-binary" => Some(&mut flags.publish_binary),
        "bundle" => Some(&mut flags.bundle),
        "socket" => Some(&mut flags.socket),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_containerds_start_invocation() {
        let f = parse(args(
            "-namespace default -address /run/containerd/containerd.sock -publish-binary /usr/bin/containerd -id abc -debug start",
        ))
        .unwrap();
        assert_eq!(f.namespace, "default");
        assert_eq!(f.address, "/run/containerd/containerd.sock");
        assert_eq!(f.publish_binary, "/usr/bin/containerd");
        assert_eq!(f.id, "abc");
        assert!(f.debug);
        assert_eq!(f.action, Action::Start);
    }

    #[test]
    fn no_action_means_serve_and_equals_form_works() {
        let f = parse(args("--namespace=ns -id=x -debug=false")).unwrap();
        assert_eq!((f.namespace.as_str(), f.id.as_str()), ("ns", "x"));
        assert!(!f.debug);
        assert_eq!(f.action, Action::Serve);
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        assert!(parse(args("-nosuch x start")).is_err());
        assert!(parse(args("-id")).is_err());
        assert!(parse(args("-id x frobnicate")).is_err());
        assert!(parse(args("-id x delete extra")).is_err());
    }
}
