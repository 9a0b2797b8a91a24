//! The daemon copy of the shim: child subreaper, log, reaper, event publisher and the ttrpc
//! server on the inherited socket; it exits after Shutdown once no task is left.

use crate::bootstrap::LISTENER_FD;
use crate::cli::Flags;
use crate::events::Publisher;
use crate::idle::{self, Idle};
use crate::options;
use crate::protos::shim_ttrpc::create_task;
use crate::reaper::Reaper;
use crate::service::{Service, TaskService};
use protobuf::Message;
use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

pub fn run(flags: &Flags) -> Result<(), String> {
    crate::logger::init(std::path::Path::new("log"), flags.debug);
    // Our stderr is /dev/null: failures and panics are only seen if they reach the log.
    std::panic::set_hook(Box::new(|info| log::error!("panic: {info}")));
    let result = run_logged(flags);
    if let Err(e) = &result {
        log::error!("shim daemon failed: {e}");
    }
    result
}

fn run_logged(flags: &Flags) -> Result<(), String> {
    let raw_options = read_stdin();
    let default_options = if raw_options.is_empty() {
        Default::default()
    } else {
        protobuf::well_known_types::any::Any::parse_from_bytes(&raw_options)
            .map_err(|e| e.to_string())
            .and_then(|any| options::decode(Some(&any)).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                log::warn!("ignoring runtime options from start: {e}");
                Default::default()
            })
    };
    if let Err(e) = crate::placement::raise_open_files_limit() {
        log::warn!("open-files limit stays as inherited: {e}");
    }
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes a plain integer.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(format!(
            "failed to become child subreaper: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Blocking-pool threads (file writes, mounts) end after a second without work
    // instead of tokio's ten: an idle shim is then one thread, with no stack or malloc arena
    // of a helper kept resident, and no thread exit to wake for long after the last request.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(Duration::from_secs(1))
        .build()
        .map_err(|e| format!("failed to start runtime: {e}"))?;
    runtime.block_on(serve(flags, default_options))
}

/// Reads what `start` passed on our stdin, then lets go of it.
fn read_stdin() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut buf);
    if let Ok(null) = std::fs::File::open("/dev/null") {
        use std::os::fd::AsRawFd;
        unsafe { libc::dup2(null.as_raw_fd(), 0) };
    }
    buf
}

/// Marks every fd from `first` up close-on-exec; open files stay open.
fn close_on_exec_from(first: i32) {
    // close_range(2) marks them all in one call (Linux 5.11); older kernels answer EINVAL or
    // ENOSYS, and each open fd is marked on its own.
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag; it closes nothing.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        if fd >= first {
            // SAFETY: F_GETFD/F_SETFD on a number that may not be open fail harmlessly.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
    }
}

/// The one Task implementation under both wire names: containerd.task.v2.Task, and
/// containerd.task.v3.Task, which containerd 2.x calls with the same messages.
fn task_services(
    task: Arc<TaskService>,
    idle: &Arc<Idle>,
) -> std::collections::HashMap<String, ttrpc::r#async::Service> {
    let mut services = create_task(task.clone());
    for (name, service) in create_task(task) {
        services.insert(name.replace(".task.v2.", ".task.v3."), service);
    }
    for service in services.values_mut() {
        let methods = std::mem::take(&mut service.methods);
        service.methods = methods
            .into_iter()
            .map(|(name, method)| (name, Box::new(Decoded(method, idle.clone())) as Box<_>))
            .collect();
    }
    services
}

/// What ttrpc-rust's generated handlers return for a payload that is not their request
/// message; they answer it with UNKNOWN.
const UNDECODABLE: &str = "Unpack request error";

/// A method whose undecodable requests are InvalidArgument, as every other malformed request
/// is: the client sent bytes that are no request, nothing failed in the shim. Each request
/// also counts as activity, which keeps the shim's memory resident while it is busy.
struct Decoded(
    Box<dyn ttrpc::r#async::MethodHandler + Send + Sync>,
    Arc<Idle>,
);

#[async_trait::async_trait]
impl ttrpc::r#async::MethodHandler for Decoded {
    async fn handler(
        &self,
        ctx: ttrpc::r#async::TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        self.1.touch();
        match self.0.handler(ctx, req).await {
            Err(ttrpc::Error::Others(message)) if message.starts_with(UNDECODABLE) => {
                // An error from a handler would reach the client as UNKNOWN: the status goes
                // in the response, as the handlers' own do.
                let mut response = ttrpc::Response::new();
                response.set_status(ttrpc::get_status(ttrpc::Code::INVALID_ARGUMENT, message));
                Ok(response)
            }
            other => other,
        }
    }
}

async fn serve(flags: &Flags, default_options: options::RuntimeOptions) -> Result<(), String> {
    // The listener comes inherited without close-on-exec, and so may whatever the one who
    // started containerd leaked to it (containerd passes on what it inherited). Before
    // anything is spawned every fd from 3 up gets the flag, and the listener's is checked, or
    // the shim does not serve: a runc, logger or container holding our socket is the kind of
    // leaked fd CVE-2024-21626 was made of.
    close_on_exec_from(LISTENER_FD);
    // SAFETY: fcntl on the fd `start` handed us, which nothing else owns.
    let fd_flags = unsafe { libc::fcntl(LISTENER_FD, libc::F_GETFD) };
    if fd_flags < 0 || fd_flags & libc::FD_CLOEXEC == 0 {
        return Err(format!(
            "failed to make the listener close-on-exec: {}",
            std::io::Error::last_os_error()
        ));
    }
    // Registered before any child exists, so no SIGCHLD is missed.
    let mut sigchld =
        signal(SignalKind::child()).map_err(|e| format!("failed to watch SIGCHLD: {e}"))?;
    let (reaper, mut exits) = Reaper::new();
    let publisher = Publisher::start(std::env::var("TTRPC_ADDRESS").ok(), &flags.namespace);
    let shutdown = Arc::new(Notify::new());
    // `start` runs the daemon in the first task's bundle; every task's bundle sits beside it.
    let bundles = std::env::current_dir()
        .ok()
        .and_then(|dir| Some(dir.parent()?.to_path_buf()));
    if bundles.is_none() {
        log::warn!("no bundle directory: Create takes a bundle anywhere");
    }
    let service = Service::new(
        &flags.namespace,
        reaper.clone(),
        publisher.clone(),
        default_options,
        shutdown.clone(),
        bundles,
    );

    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reaper.reap();
        }
    });
    let idle = Arc::new(Idle::default());
    let routed = (service.clone(), idle.clone());
    tokio::spawn(async move {
        while let Some(exit) = exits.recv().await {
            routed.1.touch();
            routed.0.handle_exit(exit);
        }
    });
    let released = idle.clone();
    tokio::spawn(async move { released.run(idle::release_memory).await });

    // SAFETY: `start` hands us the listening socket on this fd and nothing else owns it.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTENER_FD) };
    let socket_path = std_listener
        .local_addr()
        .ok()
        .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()));
    std_listener
        .set_nonblocking(true)
        .map_err(|e| format!("listener: {e}"))?;
    let listener =
        tokio::net::UnixListener::from_std(std_listener).map_err(|e| format!("listener: {e}"))?;
    let mut server = ttrpc::r#async::Server::new()
        .add_listener(crate::conn::listener(listener))
        .register_service(task_services(Arc::new(TaskService(service)), &idle));
    server
        .start()
        .await
        .map_err(|e| format!("failed to serve: {e}"))?;
    log::info!("serving on {socket_path:?}");

    shutdown.notified().await;
    log::info!("shutting down");
    if let Some(path) = &socket_path {
        let _ = std::fs::remove_file(path);
    }
    publisher.flush(Duration::from_secs(5)).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), server.shutdown()).await;
    Ok(())
}
