//! containerd-shim-rust-v1: a containerd runtime v2 shim for runc.

pub mod bootstrap;
pub mod cgroups;
pub mod cleanup;
pub mod cli;
pub mod conn;
pub mod container;
pub mod daemon;
pub mod error;
pub mod events;
pub mod exits;
pub mod idle;
pub mod info;
pub mod logger;
pub mod memfile;
pub mod mount;
pub mod options;
pub mod placement;
pub mod process;
pub mod protos;
pub mod reaper;
pub mod runc;
pub mod service;
pub mod stdio;
pub mod time;

pub const NAME: &str = env!("CARGO_PKG_NAME");
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("SHIM_GIT_REVISION");
