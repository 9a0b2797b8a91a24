//! The daemon's log: lines in logrus's text form written to the bundle's `log` FIFO, which
//! containerd copies into its own log. A full or absent reader costs lines, never a stall.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

struct FifoLogger {
    out: Mutex<File>,
    level: log::LevelFilter,
}

impl log::Log for FifoLogger {
    fn enabled(&self, meta: &log::Metadata) -> bool {
        meta.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Error => "error",
            log::Level::Warn => "warning",
            log::Level::Info => "info",
            log::Level::Debug => "debug",
            log::Level::Trace => "trace",
        };
        let msg = record.args().to_string().replace('"', "\\\"");
        let line = format!(
            "time=\"{}\" level={level} msg=\"{msg}\" runtime=rust-v1\n",
            crate::time::rfc3339(std::time::SystemTime::now())
        );
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Logs into the FIFO at `path` (opened read-write and non-blocking, so opening never waits);
/// without it, logging is off.
pub fn init(path: &Path, debug: bool) {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    let Ok(out) = file else {
        return;
    };
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = FifoLogger {
        out: Mutex::new(out),
        level,
    };
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
}
