//! Reading a request's stdio into a plan before anything is opened or mounted, so that a bad
//! URI fails the request with nothing to undo. As with containerd, stdout's scheme decides
//! where output goes: a FIFO path (no scheme, or `fifo://`), `file://` (stdout and stderr
//! appended to one file), or `binary://` / `binary-v2://` (a logging program).

use super::StdioPaths;
use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub stdin: Option<PathBuf>,
    pub output: Output,
    pub terminal: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// FIFOs, each stream its own (None: no stream). With a terminal, stdout carries both.
    Fifos {
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    },
    /// stdout and stderr appended to one file.
    File(PathBuf),
    /// A logging program reads stdout on fd 3 and stderr on fd 4 and signals readiness on
    /// fd 5; `binary-v2` must write a byte there, `binary` may also just close it.
    Binary {
        path: PathBuf,
        args: Vec<String>,
        needs_ready_byte: bool,
    },
}

pub fn parse(paths: &StdioPaths) -> Result<Plan> {
    let stdin = fifo_path(&paths.stdin, "stdin")?;
    let output = match split_scheme(&paths.stdout) {
        None => Output::Fifos {
            stdout: fifo_path(&paths.stdout, "stdout")?,
            stderr: fifo_path(&paths.stderr, "stderr")?,
        },
        Some(("fifo", _)) => Output::Fifos {
            stdout: fifo_path(&paths.stdout, "stdout")?,
            stderr: fifo_path(&paths.stderr, "stderr")?,
        },
        Some(("file", rest)) => {
            let (path, _) = path_and_query(rest, &paths.stdout)?;
            Output::File(path)
        }
        Some((scheme @ ("binary" | "binary-v2"), rest)) => {
            let (path, query) = path_and_query(rest, &paths.stdout)?;
            Output::Binary {
                path,
                args: query_args(query)?,
                needs_ready_byte: scheme == "binary-v2",
            }
        }
        Some((scheme, _)) => {
            return Err(Error::InvalidArgument(format!(
                "unknown stdio scheme {scheme:?} in {:?} (known: fifo, file, binary, binary-v2)",
                paths.stdout
            )))
        }
    };
    if paths.terminal && matches!(output, Output::File(_)) {
        return Err(Error::InvalidArgument(format!(
            "a terminal's output must go to a FIFO or a logging program, not {:?}",
            paths.stdout
        )));
    }
    Ok(Plan {
        stdin,
        output,
        terminal: paths.terminal,
    })
}

fn split_scheme(uri: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = uri.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    valid.then_some((scheme, rest))
}

/// A stream's FIFO: a plain path, or `fifo://` and a path; empty is no stream.
fn fifo_path(value: &str, stream: &str) -> Result<Option<PathBuf>> {
    if value.is_empty() {
        return Ok(None);
    }
    let path = match split_scheme(value) {
        None => value,
        Some(("fifo", rest)) => rest,
        Some(_) => {
            return Err(Error::InvalidArgument(format!(
                "{stream} {value:?} must be a FIFO path"
            )))
        }
    };
    if !path.starts_with('/') {
        return Err(Error::InvalidArgument(format!(
            "{stream} FIFO path {value:?} is not absolute"
        )));
    }
    Ok(Some(PathBuf::from(path)))
}

/// `[host]/path[?query]` after the scheme: the absolute path, decoded, and the raw query.
fn path_and_query<'a>(rest: &'a str, uri: &str) -> Result<(PathBuf, &'a str)> {
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    // A host part (`scheme://host/path`) has no meaning here; containerd ignores it too.
    let path = match location.find('/') {
        Some(i) => &location[i..],
        None => "",
    };
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "stdio URI {uri:?} names no absolute path"
        )));
    }
    Ok((PathBuf::from(decode(path, false, uri)?), query))
}

/// A query as arguments, in the order given: each key, then its value if it has one.
fn query_args(query: &str) -> Result<Vec<String>> {
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (pair, None),
        };
        args.push(decode(key, true, query)?);
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            args.push(decode(v, true, query)?);
        }
    }
    Ok(args)
}

/// Percent-decoding (and `+` as space in a query, as URL queries have it).
fn decode(text: &str, plus_is_space: bool, whole: &str) -> Result<String> {
    let bad = || Error::InvalidArgument(format!("bad percent-encoding in stdio URI {whole:?}"));
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(stdout: &str, stderr: &str, terminal: bool) -> StdioPaths {
        StdioPaths {
            stdin: String::new(),
            stdout: stdout.into(),
            stderr: stderr.into(),
            terminal,
        }
    }

    #[test]
    fn fifo_paths_stay_fifos() {
        let plan = parse(&paths("/run/f/out", "fifo:///run/f/err", false)).unwrap();
        assert_eq!(
            plan.output,
            Output::Fifos {
                stdout: Some("/run/f/out".into()),
                stderr: Some("/run/f/err".into())
            }
        );
    }

    #[test]
    fn file_uris_name_one_file_for_both_streams() {
        let plan = parse(&paths("file:///var/log/c%201.log", "file:///x", false)).unwrap();
        assert_eq!(plan.output, Output::File("/var/log/c 1.log".into()));
    }

    #[test]
    fn binary_uris_give_a_program_and_its_arguments_in_order() {
        let plan = parse(&paths(
            "binary:///usr/bin/logger?--tag=a+b&-v&--file=%2Ftmp%2Fx",
            "",
            false,
        ))
        .unwrap();
        assert_eq!(
            plan.output,
            Output::Binary {
                path: "/usr/bin/logger".into(),
                args: vec![
                    "--tag".into(),
                    "a b".into(),
                    "-v".into(),
                    "--file".into(),
                    "/tmp/x".into()
                ],
                needs_ready_byte: false,
            }
        );
        let v2 = parse(&paths("binary-v2://host/bin/l", "", false)).unwrap();
        assert!(matches!(
            v2.output,
            Output::Binary { needs_ready_byte: true, ref path, .. } if path.to_str() == Some("/bin/l")
        ));
    }

    #[test]
    fn a_terminal_may_go_to_a_logging_program() {
        let plan = parse(&paths("binary:///bin/logger", "", true)).unwrap();
        assert!(plan.terminal && matches!(plan.output, Output::Binary { .. }));
    }

    #[test]
    fn bad_uris_fail_before_anything_is_opened() {
        for (stdout, terminal) in [
            ("http://example/x", false),
            ("relative/fifo", false),
            ("file://", false),
            ("binary:///bin/l?%zz", false),
            ("file:///var/log/x", true),
        ] {
            assert!(
                matches!(
                    parse(&paths(stdout, "", terminal)),
                    Err(Error::InvalidArgument(_))
                ),
                "{stdout}"
            );
        }
        let err = parse(&paths("syslog://x/y", "", false)).unwrap_err();
        assert!(
            err.message().contains("unknown stdio scheme \"syslog\""),
            "{err}"
        );
    }
}
