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

/// A message's full protobuf name, which is the type URL containerd's typeurl registry knows
/// it by. Spelled out here so that packing an event builds no descriptor: rust-protobuf's
/// descriptor of events.proto alone is about 70 KiB of heap, kept for the process's life.
pub trait FullName: protobuf::Message {
    const FULL_NAME: &'static str;
}

macro_rules! full_names {
    ($($module:ident in $package:literal: $($message:ident),*;)*) => {
        $($(impl FullName for $module::$message {
            const FULL_NAME: &'static str = concat!($package, ".", stringify!($message));
        })*)*
        /// Each spelled-out name against the one the generated descriptor gives.
        #[cfg(test)]
        fn spelled_and_described() -> Vec<(&'static str, String)> {
            use protobuf::MessageFull;
            vec![$($((
                <$module::$message as FullName>::FULL_NAME,
                $module::$message::descriptor().full_name().to_string(),
            ),)*)*]
        }
    };
}

full_names!(
    events in "containerd.events": TaskCreate, TaskStart, TaskDelete, TaskExit, TaskOOM,
        TaskExecAdded, TaskExecStarted, TaskPaused, TaskResumed, TaskCheckpointed;
    cgroups_v1 in "io.containerd.cgroups.v1": Metrics;
    cgroups_v2 in "io.containerd.cgroups.v2": Metrics;
    runc_options in "containerd.runc.v1": ProcessDetails;
);

#[cfg(test)]
mod tests {
    #[test]
    fn spelled_out_names_are_the_descriptors_names() {
        for (spelled, described) in super::spelled_and_described() {
            assert_eq!(spelled, described);
        }
    }
}
