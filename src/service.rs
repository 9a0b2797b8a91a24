//! The `containerd.task.v2.Task` service: validates each request, has the container or process
//! act, replies, and publishes the event. Also routes container exits to their processes.

use crate::container::{Container, CreateRequest};
use crate::error::{Error, Result};
use crate::events::{self, Publisher};
use crate::options::{self, RuntimeOptions};
use crate::process::{Process, Status};
use crate::protos::events::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use crate::protos::shim::*;
use crate::protos::shim_ttrpc::Task;
use crate::protos::task::ProcessInfo;
use crate::protos::task::Status as WireStatus;
use crate::reaper::{Exit, Reaper};
use crate::stdio::StdioPaths;
use crate::time::timestamp;
use async_trait::async_trait;
use protobuf::well_known_types::empty::Empty;
use protobuf::MessageField;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};
use tokio::sync::Notify;
use ttrpc::r#async::TtrpcContext;

/// How long an exit of a pid no process claims is kept for a process that may yet claim it.
const UNCLAIMED_EXIT_TTL: Duration = Duration::from_secs(60);
/// How long the output of an exited process may make no progress before its exit is reported
/// anyway; output that keeps flowing is always waited for (invariant 2).
const OUTPUT_IDLE_LIMIT: Duration = Duration::from_secs(2);
/// How long Delete of a never-started init waits for runc's kill to be reaped.
const CREATED_DELETE_WAIT: Duration = Duration::from_secs(10);

pub struct Service {
    namespace: String,
    reaper: Arc<Reaper>,
    publisher: Publisher,
    /// Options from `start`'s stdin, used when a Create carries none.
    default_options: RuntimeOptions,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    /// Ids whose Create is under way: reserved before any side effect, so a second Create of
    /// the same id fails at once, and Shutdown does not take the shim down under a Create.
    creating: Mutex<HashSet<String>>,
    /// Exits of pids no process has claimed yet. Its lock also orders exit routing against a
    /// process learning its pid, so an exit is never missed between the two.
    unclaimed_exits: Mutex<HashMap<i32, Exit>>,
    shutdown: Arc<Notify>,
}

impl Service {
    pub fn new(
        namespace: &str,
        reaper: Arc<Reaper>,
        publisher: Publisher,
        default_options: RuntimeOptions,
        shutdown: Arc<Notify>,
    ) -> Arc<Service> {
        Arc::new(Service {
            namespace: namespace.to_string(),
            reaper,
            publisher,
            default_options,
            containers: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
            unclaimed_exits: Mutex::new(HashMap::new()),
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

    fn unclaimed(&self) -> MutexGuard<'_, HashMap<i32, Exit>> {
        self.unclaimed_exits
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id:?} not found")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let container = self.container(id)?;
        if !exec_id.is_empty() {
            return Err(Error::NotFound(format!(
                "exec {exec_id:?} not found in container {id:?}"
            )));
        }
        let init = container.init.clone();
        Ok((container, init))
    }

    /// Routes one exit from the reaper to the process that had that pid.
    pub fn handle_exit(self: &Arc<Self>, exit: Exit) {
        let mut unclaimed = self.unclaimed();
        let owner = self
            .containers()
            .values()
            .map(|c| c.init.clone())
            .find(|p| {
                let s = p.state();
                s.pid == exit.pid && s.exit.is_none()
            });
        match owner {
            Some(process) => {
                let now = process.state().record_exit(exit);
                drop(unclaimed);
                if let Some(exit) = now {
                    self.finish_exit(process, exit);
                }
            }
            None => {
                unclaimed.retain(|_, e| {
                    exit.at.duration_since(e.at).unwrap_or_default() < UNCLAIMED_EXIT_TTL
                });
                unclaimed.insert(exit.pid, exit);
            }
        }
    }

    /// Once the process's output has drained: Stopped, TaskExit, waiters woken.
    fn finish_exit(self: &Arc<Self>, process: Arc<Process>, exit: Exit) {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if let Some(io) = process.io() {
                if !io.drained(OUTPUT_IDLE_LIMIT).await {
                    // Still open elsewhere (a child outside the container's pid namespace) or
                    // nobody reads: the copies go on until Delete, but the exit is reported.
                    log::warn!(
                        "output of {} {} still open {OUTPUT_IDLE_LIMIT:?} after exit with no progress",
                        process.container_id,
                        process.exec_id
                    );
                }
            }
            let mut state = process.state();
            process.mark_stopped(&mut state);
            let mut event = TaskExit::new();
            event.container_id = process.container_id.clone();
            event.id = if process.is_init() {
                process.container_id.clone()
            } else {
                process.exec_id.clone()
            };
            event.pid = exit.pid as u32;
            event.exit_status = exit.status as u32;
            event.exited_at = MessageField::some(timestamp(exit.at));
            service.publisher.publish(events::TASK_EXIT, &event);
        });
    }

    async fn create(self: &Arc<Self>, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        if req.id.is_empty() {
            return Err(Error::InvalidArgument("container id is empty".into()));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented(
                "restore from checkpoint is not supported yet".into(),
            ));
        }
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
        let create = CreateRequest {
            id: &req.id,
            bundle: Path::new(&req.bundle),
            namespace: &self.namespace,
            rootfs: &req.rootfs,
            stdio,
            options,
        };
        let reservation = self.reserve(&req.id)?;
        // An unclaimed exit from before runc ran belongs to an earlier holder of the pid.
        let spawned_at = SystemTime::now();
        let container = Arc::new(Container::create(create, self.reaper.clone()).await?);
        let pid = container.init.pid();

        let mut unclaimed = self.unclaimed();
        self.containers().insert(req.id.clone(), container.clone());
        drop(reservation);
        let mut event = TaskCreate::new();
        event.container_id = req.id.clone();
        event.bundle = req.bundle.clone();
        event.rootfs = req.rootfs.clone();
        event.io = MessageField::some(TaskIO {
            stdin: req.stdin,
            stdout: req.stdout,
            stderr: req.stderr,
            terminal: req.terminal,
            ..Default::default()
        });
        event.checkpoint = req.checkpoint;
        event.pid = pid as u32;
        self.publisher.publish(events::TASK_CREATE, &event);
        let early = unclaimed.remove(&pid).filter(|e| e.at >= spawned_at);
        drop(unclaimed);
        if let Some(exit) = early {
            let now = container.init.state().record_exit(exit);
            if let Some(exit) = now {
                self.finish_exit(container.init.clone(), exit);
            }
        }
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(self: &Arc<Self>, req: StartRequest) -> Result<StartResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        process.state().begin_start()?;
        if let Err(e) = container.runc.start(&container.id).await {
            let held = process.state().abort_start();
            if let Some(exit) = held {
                self.handle_exit(exit);
            }
            return Err(e);
        }
        let pid = process.pid();
        let held = {
            let mut state = process.state();
            let mut event = TaskStart::new();
            event.container_id = container.id.clone();
            event.pid = pid as u32;
            self.publisher.publish(events::TASK_START, &event);
            state.finish_start(pid)
        };
        if let Some(exit) = held {
            let now = process.state().record_exit(exit);
            if let Some(exit) = now {
                self.finish_exit(process, exit);
            }
        }
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn delete(self: &Arc<Self>, req: DeleteRequest) -> Result<DeleteResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        let never_started = process.state().begin_delete()?;
        if let Err(e) = self
            .remove_runtime_state(&container, &process, never_started)
            .await
        {
            process.state().abort_delete();
            return Err(e);
        }
        process.close_io();
        let (pid, exit) = {
            let mut state = process.state();
            state.status = Status::Deleted;
            (state.pid, state.exit)
        };
        self.containers().remove(&container.id);
        let exit_status = exit.map_or(0, |e| e.status as u32);
        let exited_at = timestamp(exit.map_or_else(SystemTime::now, |e| e.at));
        let mut event = TaskDelete::new();
        event.container_id = container.id.clone();
        event.pid = pid as u32;
        event.exit_status = exit_status;
        event.exited_at = MessageField::some(exited_at.clone());
        event.id = container.id.clone();
        self.publisher.publish(events::TASK_DELETE, &event);
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status,
            exited_at: MessageField::some(exited_at),
            ..Default::default()
        })
    }

    async fn remove_runtime_state(
        &self,
        container: &Container,
        process: &Process,
        never_started: bool,
    ) -> Result<()> {
        if never_started {
            // runc delete --force kills the waiting init; its exit arrives through the reaper.
            match container.runc.delete(&container.id, true).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            tokio::time::timeout(CREATED_DELETE_WAIT, process.wait())
                .await
                .map_err(|_| Error::Internal("killed init process was never reaped".into()))?;
        }
        container.destroy().await
    }

    fn state(&self, req: StateRequest) -> Result<StateResponse> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        let state = process.state().clone();
        let status = match state.status {
            Status::Created => WireStatus::CREATED,
            Status::Running => WireStatus::RUNNING,
            Status::Stopped | Status::Deleted => WireStatus::STOPPED,
        };
        Ok(StateResponse {
            id: req.id,
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: state.pid as u32,
            status: status.into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: state.exit_status(),
            exited_at: match (state.status, state.exit) {
                (Status::Stopped | Status::Deleted, Some(e)) => MessageField::some(timestamp(e.at)),
                _ => MessageField::none(),
            },
            exec_id: req.exec_id,
            ..Default::default()
        })
    }

    async fn kill(&self, req: KillRequest) -> Result<()> {
        let (container, process) = self.process(&req.id, &req.exec_id)?;
        process.state().check_kill()?;
        container
            .runc
            .kill(&container.id, req.signal, req.all)
            .await
    }

    async fn pids(&self, req: PidsRequest) -> Result<PidsResponse> {
        let container = self.container(&req.id)?;
        let pids = container.runc.ps(&container.id).await?;
        let processes = pids
            .into_iter()
            .map(|pid| ProcessInfo {
                pid: pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
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

    async fn wait(&self, req: WaitRequest) -> Result<WaitResponse> {
        let (_, process) = self.process(&req.id, &req.exec_id)?;
        let exit = process.wait().await;
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

struct Reservation<'a> {
    service: &'a Service,
    id: String,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.service.creating().remove(&self.id);
    }
}

fn unimplemented<T>(method: &str) -> ttrpc::Result<T> {
    Err(Error::Unimplemented(format!("{method} is not implemented by this shim yet")).into())
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
        reply("Create", self.0.create(req).await)
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> ttrpc::Result<StartResponse> {
        reply("Start", self.0.start(req).await)
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> ttrpc::Result<DeleteResponse> {
        reply("Delete", self.0.delete(req).await)
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> ttrpc::Result<PidsResponse> {
        reply("Pids", self.0.pids(req).await)
    }

    async fn pause(&self, _: &TtrpcContext, _: PauseRequest) -> ttrpc::Result<Empty> {
        unimplemented("Pause")
    }

    async fn resume(&self, _: &TtrpcContext, _: ResumeRequest) -> ttrpc::Result<Empty> {
        unimplemented("Resume")
    }

    async fn checkpoint(&self, _: &TtrpcContext, _: CheckpointTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Checkpoint")
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> ttrpc::Result<Empty> {
        reply("Kill", self.0.kill(req).await.map(|()| Empty::new()))
    }

    async fn exec(&self, _: &TtrpcContext, _: ExecProcessRequest) -> ttrpc::Result<Empty> {
        unimplemented("Exec")
    }

    async fn resize_pty(&self, _: &TtrpcContext, _: ResizePtyRequest) -> ttrpc::Result<Empty> {
        unimplemented("ResizePty")
    }

    async fn close_io(&self, _: &TtrpcContext, req: CloseIORequest) -> ttrpc::Result<Empty> {
        reply("CloseIO", self.0.close_io(req).map(|()| Empty::new()))
    }

    async fn update(&self, _: &TtrpcContext, _: UpdateTaskRequest) -> ttrpc::Result<Empty> {
        unimplemented("Update")
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> ttrpc::Result<WaitResponse> {
        reply("Wait", self.0.wait(req).await)
    }

    async fn stats(&self, _: &TtrpcContext, _: StatsRequest) -> ttrpc::Result<StatsResponse> {
        unimplemented("Stats")
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
