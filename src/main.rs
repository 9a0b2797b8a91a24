//! Entry point: argv to one of the shim's commands.

use shim::cli::{self, Action};
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match cli::parse(std::env::args().skip(1)) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{}: {e}", shim::NAME);
            return ExitCode::from(2);
        }
    };
    if flags.version {
        println!(
            "{}:\n  Version:  {}\n  Revision: {}",
            shim::NAME,
            shim::VERSION,
            shim::REVISION
        );
        return ExitCode::SUCCESS;
    }
    if flags.info {
        return match shim::info::run() {
            Ok(bytes) if std::io::stdout().write_all(&bytes).is_ok() => ExitCode::SUCCESS,
            Ok(_) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("{}: {e}", shim::NAME);
                ExitCode::FAILURE
            }
        };
    }
    let result = match flags.action {
        Action::Start => shim::bootstrap::run(&flags)
            .map_err(|e| e.to_string())
            .and_then(|reply| {
                std::io::stdout()
                    .write_all(&reply)
                    .map_err(|e| e.to_string())
            }),
        Action::Delete => shim::cleanup::run(&flags).and_then(|bytes| {
            std::io::stdout()
                .write_all(&bytes)
                .map_err(|e| e.to_string())
        }),
        Action::Serve => shim::daemon::run(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", shim::NAME);
            ExitCode::FAILURE
        }
    }
}
