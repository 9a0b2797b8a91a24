//! The `containerd.task.v2.Task` service: validates each request, has the container act,
//! replies, and publishes the event. Exits reach it from the process table and leave as
//! TaskExit once the container says the process is done.

use crate::container::{self, Container, CreateRequest, Owner};
use crate::error::{Error, Result};
use crate::events::{self, Publisher};
use crate::exits::ProcessTable;
use crate::options::{self, RuntimeOptions};
use crate::process::{Process, Status};
use crate::protos::events::{
    TaskCheckpointed, TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO,
    TaskOOM, TaskPaused, TaskResumed, TaskStart,
};
use crate::protos::runc_options::{CheckpointOptions, ProcessDetails};
use crate::protos::shim::*;
use crate::protos::shim_ttrpc::Task;
use crate::protos::task::ProcessInfo;
use crate::protos::task::Status as WireStatus;
use crate::reaper::{Exit, Reaper};
use crate::runc::CheckpointOpts;
use crate::stdio::{self, StdioPaths};
use crate::time::timestamp;
use async_trait::async_trait;
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;

/// The exit status a Wait reports for an exec that runc could not start.
const FAILED_START_STATUS: i32 = 255;

pub struct Service {
    namespace: String,
    reaper: Arc<Reaper>,
    table: ProcessTable<Owner>,
    publisher: Publisher,
    /// Options from `start`'s stdin, used when a Create carries none.
    default_options: RuntimeOptions,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids whose Create is under way: reserved before any side effect, so a second Create of
    /// the same id fails at once, and Shutdown does not take the shim down under a Create.
    creating: Mutex<HashSet<String>>,
    shutdown: Arc<Notify>,
    /// Where containerd keeps this shim's task bundles: the parent of the one it started in.
    bundles: Option<PathBuf>,
}

impl Service {
    pub fn new(
        namespace: &str,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        default_options: RuntimeOptions,
        shutdown: Arc<Notify>,
        bundles: Option<PathBuf>,
    ) -> Arc<Service> {
        Arc::new(Service {
            bundles,
            namespace: namespace.to_string(),
            reaper,
            table: ProcessTable::default(),
            publisher,
            default_options,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            shutdown,
        })
    }

    fn containers(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn creating(&self) -> MutexGuard<'_, HashSet<String>> {
        self.creating.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `id` for a Create; the claim ends when the returned guard drops.
    fn reserve(&self, id: &str) -> Result<Reservation<'_>> {
        let containers = self.containers();
        let mut creating = self.creating();
        if containers.contains_key(id) || !creating.insert(id.to_string()) {
            return Err(Error::AlreadyExists(format!(
                "container {id:?} already exists"
            )));
        }
        Ok(Reservation {
            service: self,
            id: id.to_string(),
        })
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let container = self.container(id)?;
        let process = container.process(exec_id)?;
        Ok((container, process))
    }

    /// One exit from the reaper: to the process that owns the pid, or kept for a later claim.
    pub fn handle_exit(self: &Arc<Self>, exit: Exit) {
        if let Some(((container, process), exit)) = self.table.route(exit) {
            self.exited(container, process, exit);
        }
    }

    /// Records the exit; unless it is held for a start in flight, reports it once the container
    /// says the process is done: TaskExit, then Stopped (waiters wake after the event).
    fn exited(self: &Arc<Self>, container: Arc<Container>, process: Arc<Process>, exit: Exit) {
        let Some(exit) = process.exited(exit) else {
            return;
        };
        let publisher = self.publisher.clone();
        tokio::spawn(async move {
            container.finish_exit(&process).await;
            // An OOM kill is told before the exit it caused: CRI reads "OOMKilled" from that
            // order.
            if process.is_init() && container.oom_pending() {
                publish_oom(&publisher, &container.id);
            }
            let event = TaskExit {
                container_id: container.id.clone(),
                id: process.id().to_string(),
                pid: exit.pid as u32,
                exit_status: exit.status as u32,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            };
            publisher.publish(events::TASK_EXIT, &event);
            process.stop();
        });
    }

    /// Reports the container's OOM kills as the kernel tells of them, until its cgroup goes.
    fn watch_oom(&self, container: &Container) {
        let Some(watch) = container.oom_watch() else {
            return;
        };
        let publisher = self.publisher.clone();
        let id = container.id.clone();
        tokio::spawn(async move {
            while watch.next().await {
                publish_oom(&publisher, &id);
            }
        });
    }

    async fn create(self: Arc<Self>, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        check_id("container id", &req.id)?;
        let options = match req.options.as_ref() {
            Some(any) if !any.type_url.is_empty() => options::decode(Some(any))?,
            _ => self.default_options.clone(),
        };
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let plan = stdio::uri::parse(&stdio)?;
        crate::mount::check(&req.rootfs)?;
        let create = CreateRequest {
            id: &req.id,
            bundle: Path::new(&req.bundle),
            bundles: self.bundles.as_deref(),
            namespace: &self.namespace,
            rootfs: &req.rootfs,
            stdio,
            plan,
            options,
            checkpoint: &req.checkpoint,
        };
        let reservation = self.reserve(&req.id)?;
        let since = self.reaper.mark();
        let container = Arc::new(Container::create(create, self.reaper.clone()).await?);
        let init = container.init.clone();
        let pid = init.pid();
        let early = self
            .table
            .claim(pid, (container.clone(), init.clone()), since);
        self.containers().insert(req.id.clone(), container.clone());
        drop(reservation);
        let event = TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin,
                stdout: req.stdout,
                stderr: req.stderr,
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint,
            pid: pid as u32,
            ..Default::default()
        };
        self.publisher.publish(events::TASK_CREATE, &event);
        self.watch_oom(&container);
        if let Some(exit) = early {
            self.exited(container, init, exit);
        }
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(self: Arc<Self>, req: StartRequest) -> Result<StartResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        process.begin_start()?;
        // An init's pid is claimed at Create, unless it comes from a checkpoint restored now.
        let claimed = process.pid() > 0;
        let since = self.reaper.mark();
        let pid = match container.start(&process).await {
            Ok(pid) => pid,
            Err(e) => {
                if let Some(exit) = process.abort_start() {
                    self.exited(container, process, exit);
                } else if !process.is_init() {
                    // runc refused the exec: it will never run, and its waiters (ctr and CRI
                    // Wait before they Start) must not wait for ever.
                    process.give_up(Exit {
                        pid: 0,
                        status: FAILED_START_STATUS,
                        at: SystemTime::now(),
                        seq: 0,
                    });
                }
                return Err(e);
            }
        };
        // An exit during the start is held by the process's state either way.
        let early = if claimed {
            None
        } else {
            self.table
                .claim(pid, (container.clone(), process.clone()), since)
        };
        if process.is_init() && !claimed {
            // Restored from a checkpoint: its cgroup is known only now.
            self.watch_oom(&container);
        }
        if process.is_init() {
            let event = TaskStart {
                container_id: container.id.clone(),
                pid: pid as u32,
                ..Default::default()
            };
            self.publisher.publish(events::TASK_START, &event);
        } else {
            let event = TaskExecStarted {
                container_id: container.id.clone(),
                exec_id: process.id().to_string(),
                pid: pid as u32,
                ..Default::default()
            };
            self.publisher.publish(events::TASK_EXEC_STARTED, &event);
        }
        if let Some(exit) = process.finish_start().or(early) {
            self.exited(container, process, exit);
        }
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn delete(self: Arc<Self>, req: DeleteRequest) -> Result<DeleteResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        let never_started = process.begin_delete()?;
        if let Err(e) = container.delete(&process, never_started).await {
            process.abort_delete();
            return Err(e);
        }
        let exit = process.finish_delete();
        let pid = process.pid();
        if pid > 0 && exit.is_none() {
            // A never-started exec has no pid; anything else that is gone has no exit to route.
            self.table.release(pid);
        }
        let exit_status = exit.map_or(0, |e| e.status as u32);
        let exited_at = timestamp(exit.map_or_else(SystemTime::now, |e| e.at));
        if process.is_init() {
            self.containers().remove(&container.id);
            let event = TaskDelete {
                container_id: container.id.clone(),
                pid: pid as u32,
                exit_status,
                exited_at: MessageField::some(exited_at.clone()),
                id: container.id.clone(),
                ..Default::default()
            };
            self.publisher.publish(events::TASK_DELETE, &event);
        }
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    fn exec(&self, req: ExecProcessRequest) -> Result<()> {
        check_exec_id(&req.exec_id)?;
        let spec = req
            .spec
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("exec request has no process spec".into()))?;
        let spec = container::prepare_exec_spec(&spec.value, req.terminal)?;
        let container = self.container(&req.id)?;
        let stdio = StdioPaths {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
        };
        let plan = stdio::uri::parse(&stdio)?;
        container.add_exec(&req.exec_id, stdio, plan, spec)?;
        let event = TaskExecAdded {
            container_id: req.id,
            exec_id: req.exec_id,
            ..Default::default()
        };
        self.publisher.publish(events::TASK_EXEC_ADDED, &event);
        Ok(())
    }

    fn state(&self, req: StateRequest) -> Result<StateResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        let snap = process.snapshot();
        // While the container is frozen, so are its running execs.
        let status = match (snap.status, container.init.snapshot().status) {
            (Status::Running, frozen @ (Status::Pausing | Status::Paused)) => frozen,
            (own, _) => own,
        };
        let status = match status {
            Status::Created => WireStatus::CREATED,
            Status::Running => WireStatus::RUNNING,
            Status::Pausing => WireStatus::PAUSING,
            Status::Paused => WireStatus::PAUSED,
            Status::Stopped | Status::Deleted => WireStatus::STOPPED,
        };
        Ok(StateResponse {
            id: process.id().to_string(),
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: snap.pid as u32,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: snap.exit.map_or(0, |e| e.status as u32),
            exited_at: snap
                .exit
                .map_or_else(MessageField::none, |e| MessageField::some(timestamp(e.at))),
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn kill(self: Arc<Self>, req: KillRequest) -> Result<()> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        process.check_kill()?;
        container.kill(&process, req.signal, req.all).await
    }

    async fn pids(self: Arc<Self>, req: PidsRequest) -> Result<PidsResponse> {
        let container = self.container(&req.id)?;
        let processes = container
            .pids()
            .await?
            .into_iter()
            .map(|(pid, exec_id)| ProcessInfo {
                pid: pid as u32,
                info: exec_id.map_or_else(MessageField::none, |exec_id| {
                    MessageField::some(events::pack(&ProcessDetails {
                        exec_id,
                        ..Default::default()
                    }))
                }),
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn pause(self: Arc<Self>, req: PauseRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        container.pause().await?;
        let event = TaskPaused {
            container_id: req.id,
            ..Default::default()
        };
        self.publisher.publish(events::TASK_PAUSED, &event);
        Ok(())
    }

    async fn resume(self: Arc<Self>, req: ResumeRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        container.resume().await?;
        let event = TaskResumed {
            container_id: req.id,
            ..Default::default()
        };
        self.publisher.publish(events::TASK_RESUMED, &event);
        Ok(())
    }

    async fn update(self: Arc<Self>, req: UpdateTaskRequest) -> Result<()> {
        let resources = req
            .resources
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("update request has no resources".into()))?;
        let resources = container::check_resources(&resources.value)?;
        // Annotations are accepted as containerd sends them; runc has no use for them.
        let container = self.container(&req.id)?;
        container.update(&resources).await
    }

    async fn checkpoint(self: Arc<Self>, req: CheckpointTaskRequest) -> Result<()> {
        let container = self.container(&req.id)?;
        let opts = checkpoint_options(&req)?;
        container.checkpoint(opts).await?;
        let event = TaskCheckpointed {
            container_id: req.id,
            checkpoint: req.path,
            ..Default::default()
        };
        self.publisher.publish(events::TASK_CHECKPOINTED, &event);
        Ok(())
    }

    async fn stats(self: Arc<Self>, req: StatsRequest) -> Result<StatsResponse> {
        let stats = self.container(&req.id)?.stats().await?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn close_io(&self, req: CloseIORequest) -> Result<()> {
        let (_, process) = self.process(&req.id, &req.exec_id)?;
        if req.stdin {
            if let Some(io) = process.io() {
                io.close_stdin();
            }
        }
        Ok(())
    }

    fn resize_pty(&self, req: ResizePtyRequest) -> Result<()> {
        let (_, process) = self.process(&req.id, &req.exec_id)?;
        match process.io() {
            Some(io) => io.resize(req.width, req.height),
            // Not started yet, or no terminal: nothing to resize, as with the Go shim.
            None => Ok(()),
        }
    }

    async fn wait(self: Arc<Self>, req: WaitRequest) -> Result<WaitResponse> {
        let (_, process) = self.process(&req.id, &req.exec_id)?;
        let exit = process.wait().await.ok_or_else(|| {
            Error::NotFound(format!(
                "process {:?} was deleted before it ran",
                process.id()
            ))
        })?;
        Ok(WaitResponse {
            exit_status: exit.status as u32,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    fn connect(&self, req: ConnectRequest) -> Result<ConnectResponse> {
        let task_pid = self.container(&req.id).map_or(0, |c| c.init.pid());
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: crate::VERSION.to_string(),
            ..Default::default()
        })
    }

    fn shutdown(&self, req: ShutdownRequest) {
        let idle = {
            let containers = self.containers();
            containers.is_empty() && self.creating().is_empty()
        };
        if req.now || idle {
            self.shutdown.notify_one();
        }
    }
}

fn publish_oom(publisher: &Publisher, container_id: &str) {
    let event = TaskOOM {
        container_id: container_id.to_string(),
        ..Default::default()
    };
    publisher.publish(events::TASK_OOM, &event);
}

/// Exec ids name files in the bundle: containerd's identifier rule (letters and digits,
/// separated by single `.`, `_` or `-`), at most 76 characters.
fn check_exec_id(id: &str) -> Result<()> {
    check_id("exec id", id)
}

/// containerd's rule for identifiers (it checks exec ids itself only from its runtime v2
/// manager, and a client on our socket checks nothing): letters and digits in runs joined by
/// single separators, at most 76 characters. Ids name runc containers and files of the
/// bundle, so nothing else may reach a path.
fn check_id(kind: &str, id: &str) -> Result<()> {
    let bad = |why: &str| {
        let shown: String = id.chars().take(80).collect();
        let more = if shown.len() < id.len() { "..." } else { "" };
        Err(Error::InvalidArgument(format!(
            "{kind} {shown:?}{more} {why}"
        )))
    };
    if id.is_empty() {
        return bad("is empty");
    }
    if id.len() > 76 {
        return bad("is longer than 76 characters");
    }
    let separator = |c: char| matches!(c, '.' | '_' | '-');
    let mut previous_separator = true;
    for c in id.chars() {
        if c.is_ascii_alphanumeric() {
            previous_separator = false;
        } else if separator(c) && !previous_separator {
            previous_separator = true;
        } else {
            return bad("must be letters and digits separated by single '.', '_' or '-'");
        }
    }
    if previous_separator {
        return bad("must end with a letter or digit");
    }
    Ok(())
}

/// A checkpoint request as runc takes it; the image path is the request's, else the options'.
fn checkpoint_options(req: &CheckpointTaskRequest) -> Result<CheckpointOpts> {
    let options = match req.options.as_ref().filter(|a| !a.type_url.is_empty()) {
        None => CheckpointOptions::default(),
        Some(any) => {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            if name != "containerd.runc.v1.CheckpointOptions" {
                return Err(Error::InvalidArgument(format!(
                    "unsupported checkpoint options type {:?} (expected \
                     containerd.runc.v1.CheckpointOptions)",
                    any.type_url
                )));
            }
            protobuf::Message::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("malformed checkpoint options: {e}")))?
        }
    };
    let image_path = if req.path.is_empty() {
        options.image_path
    } else {
        req.path.clone()
    };
    Ok(CheckpointOpts {
        image_path: image_path.into(),
        work_path: options.work_path.into(),
        exit: options.exit,
        open_tcp: options.open_tcp,
        external_unix_sockets: options.external_unix_sockets,
        terminal: options.terminal,
        file_locks: options.file_locks,
        empty_namespaces: options.empty_namespaces,
        cgroups_mode: options.cgroups_mode,
    })
}

struct Reservation<'a> {
    service: &'a Service,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.service.creating().remove(&self.id);
    }
}

/// Runs a request that changes state to its end even when ttrpc drops the handler because
/// the request's deadline passed: a Create or Start cut off half-way would leave a mount, a
/// runc container or a process stuck in Starting.
async fn to_completion<T: Send + 'static>(
    body: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    tokio::spawn(body)
        .await
        .map_err(|e| Error::Internal(format!("request task failed: {e}")))?
}

fn reply<T>(method: &str, result: Result<T>) -> ttrpc::Result<T> {
    result.map_err(|e| {
        log::info!("{method} failed: {e}");
        e.into()
    })
}

/// The ttrpc face of the service.
pub struct TaskService(pub Arc<Service>);

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> ttrpc::Result<StateResponse> {
        reply("State", self.0.state(req))
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> ttrpc::Result<CreateTaskResponse> {
        log::debug!("Create {} bundle {}", req.id, req.bundle);
        reply("Create", to_completion(self.0.clone().create(req)).await)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        reply("Start", to_completion(self.0.clone().start(req)).await)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        reply("Delete", to_completion(self.0.clone().delete(req)).await)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        reply("Pids", self.0.clone().pids(req).await)
    }

    async fn pause(&self, _: &TtrpcContext, req: PauseRequest) -> ttrpc::Result<Empty> {
        let done = to_completion(self.0.clone().pause(req)).await;
        reply("Pause", done.map(|()| Empty::new()))
    }

    async fn resume(&self, _: &TtrpcContext, req: ResumeRequest) -> ttrpc::Result<Empty> {
        let done = to_completion(self.0.clone().resume(req)).await;
        reply("Resume", done.map(|()| Empty::new()))
    }

    async fn checkpoint(
        &self,
        _: &TtrpcContext,
        req: CheckpointTaskRequest,
    ) -> ttrpc::Result<Empty> {
        let done = to_completion(self.0.clone().checkpoint(req)).await;
        reply("Checkpoint", done.map(|()| Empty::new()))
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        reply(
            "Kill",
            to_completion(self.0.clone().kill(req))
                .await
                .map(|()| Empty::new()),
        )
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> ttrpc::Result<Empty> {
        log::debug!("Exec {} {}", req.id, req.exec_id);
        reply("Exec", self.0.exec(req).map(|()| Empty::new()))
    }

    async fn resize_pty(&self, _: &TtrpcContext, req: ResizePtyRequest) -> ttrpc::Result<Empty> {
        reply("ResizePty", self.0.resize_pty(req).map(|()| Empty::new()))
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        reply("CloseIO", self.0.close_io(req).map(|()| Empty::new()))
    }

    async fn update(&self, _: &TtrpcContext, req: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        let done = to_completion(self.0.clone().update(req)).await;
        reply("Update", done.map(|()| Empty::new()))
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        reply("Wait", self.0.clone().wait(req).await)
    }

    async fn stats(&self, _: &TtrpcContext, req: StatsRequest) -> ttrpc::Result<StatsResponse> {
        reply("Stats", self.0.clone().stats(req).await)
    }

    async fn connect(
        &self,
        _: &TtrpcContext,
        req: ConnectRequest,
    ) -> ttrpc::Result<ConnectResponse> {
        reply("Connect", self.0.connect(req))
    }

    async fn shutdown(&self, _: &TtrpcContext, req: ShutdownRequest) -> ttrpc::Result<Empty> {
        self.0.shutdown(req);
        Ok(Empty::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_ids_follow_containerds_identifier_rule() {
        for good in ["x1", "exec-1", "a.b_c-d", "A9"] {
            assert!(check_exec_id(good).is_ok(), "{good}");
        }
        let long = "a".repeat(77);
        for bad in [
            "",
            "../etc",
            "a/b",
            "-a",
            "a-",
            "a--b",
            "a b",
            long.as_str(),
        ] {
            assert!(
                matches!(check_exec_id(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_huge_id_is_refused_with_a_short_message() {
        let huge = "a".repeat(64 << 10);
        let refused = check_id("container id", &huge);
        let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.starts_with("container id \"aaa"), "{message}");
        assert!(message.len() < 200, "{} bytes", message.len());
    }
}
