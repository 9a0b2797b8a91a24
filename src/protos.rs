//! Wire types and ttrpc services generated from protos/ by build.rs.
//!
//! The modules are siblings because the generated code names its imports as `super::<file>`.
#![allow(
    clippy::all,
    missing_docs,
    unused_imports,
    unused_mut,
    unused_qualifications,
    non_camel_case_types,
    non_upper_case_globals,
    non_snake_case,
    dead_code
)]

macro_rules! generated {
    ($($name:ident),* $(,)?) => {
        $(pub mod $name {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($name), ".rs"));
        })*
    };
}

generated!(
    mount,
    task,
    shim,
    shim_ttrpc,
    events,
    forward,
    forward_ttrpc,
    runc_options,
    runctypes,
    runtimeoptions,
    introspection,
    cgroups_v1,
    cgroups_v2,
    bootstrap,
);
