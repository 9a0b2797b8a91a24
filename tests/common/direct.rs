//! A shim driven directly over ttrpc, without containerd: `<shim> start` in a bundle, our
//! generated Task client, and a stand-in for containerd's events service that records what
//! the shim publishes. Used where containerd would stand between the test and the shim's
//! answer (error codes, request order).

use super::{run_ok, run_with_input, shim_bin, shim_pids, Ctx, OURS};
use shim::protos::forward::ForwardRequest;
use shim::protos::forward_ttrpc::{create_events, Events};
use shim::protos::shim::*;
use std::fs;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A Task API client for either wire name of the service: containerd.task.v2.Task, or
/// containerd.task.v3.Task (containerd 2.x; same messages), as the shim's bootstrap says.
/// Clones share one connection.
#[derive(Clone)]
pub struct TaskApi {
    client: ttrpc::r#async::Client,
    service: String,
}

impl TaskApi {
    /// A client of the shim listening at `address` (`unix://...`), for the task API version
    /// it serves.
    pub async fn dial(address: &str, version: u64) -> Result<TaskApi, String> {
        let client = ttrpc::r#async::Client::connect(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        Ok(TaskApi {
            client,
            service: format!("containerd.task.v{version}.Task"),
        })
    }
}

macro_rules! task_calls {
    ($($fn_name:ident, $method:literal, $req:ty, $resp:ty;)*) => {
        impl TaskApi {
            $(pub async fn $fn_name(&self, ctx: ttrpc::context::Context, req: &$req) -> ttrpc::Result<$resp> {
                let mut cres = <$resp>::new();
                ttrpc::async_client_request!(self, ctx, req, self.service, $method, cres);
            })*
        }
    };
}

task_calls! {
    state, "State", StateRequest, StateResponse;
    create, "Create", CreateTaskRequest, CreateTaskResponse;
    start, "Start", StartRequest, StartResponse;
    delete, "Delete", DeleteRequest, DeleteResponse;
    kill, "Kill", KillRequest, protobuf::well_known_types::empty::Empty;
    wait, "Wait", WaitRequest, WaitResponse;
    connect, "Connect", ConnectRequest, ConnectResponse;
    exec, "Exec", ExecProcessRequest, protobuf::well_known_types::empty::Empty;
    close_io, "CloseIO", CloseIORequest, protobuf::well_known_types::empty::Empty;
    pids, "Pids", PidsRequest, PidsResponse;
    shutdown, "Shutdown", ShutdownRequest, protobuf::well_known_types::empty::Empty;
    pause, "Pause", PauseRequest, protobuf::well_known_types::empty::Empty;
    resume, "Resume", ResumeRequest, protobuf::well_known_types::empty::Empty;
    update, "Update", UpdateTaskRequest, protobuf::well_known_types::empty::Empty;
    checkpoint, "Checkpoint", CheckpointTaskRequest, protobuf::well_known_types::empty::Empty;
    stats, "Stats", StatsRequest, StatsResponse;
}

/// A client of the shim containerd started for task `id`, found through the bundle: containerd
/// 2.x records the shim's bootstrap in `bootstrap.json`, 1.x's shims write `address`.
pub fn task_api_of(
    ctx: &super::Ctx,
    id: &str,
) -> Result<(tokio::runtime::Runtime, TaskApi), String> {
    let bundle = ctx.daemon.bundles(&ctx.ns).join(id);
    let (address, version) = ["bootstrap.json", "address"]
        .iter()
        .find_map(|f| fs::read_to_string(bundle.join(f)).ok())
        .ok_or_else(|| format!("{} names no shim address", bundle.display()))
        .and_then(|text| parse_bootstrap(&text))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let api = rt.block_on(TaskApi::dial(&address, version))?;
    Ok((rt, api))
}

/// A stand-in for containerd's events service at `sock`, recording what it is sent.
fn serve_events(
    rt: &tokio::runtime::Runtime,
    sock: &Path,
    recorder: &Arc<Recorder>,
) -> Result<ttrpc::r#async::Server, String> {
    rt.block_on(async {
        let mut server = ttrpc::r#async::Server::new()
            .bind(&format!("unix://{}", sock.display()))
            .map_err(|e| e.to_string())?
            .register_service(create_events(recorder.clone()));
        server.start().await.map_err(|e| e.to_string())?;
        Ok::<_, String>(server)
    })
}

/// `name`, or its head and a hash of the whole when it is long: the scratch dir holds unix
/// sockets, whose paths may not pass 107 bytes.
fn short_name(name: &str) -> String {
    if name.len() <= 48 {
        return name.to_string();
    }
    // FNV-1a: stable and dependency-free.
    let hash = name.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    });
    format!("{}-{:08x}", &name[..39], hash as u32)
}

/// How a test runs `start`: as containerd up to 2.2 does (the options Any, or nothing, on
/// stdin), or as 2.3 does (BootstrapParams).
enum StartAs<'a> {
    Legacy {
        stdin: &'a [u8],
        /// Unset as containerd 1.6 leaves it.
        max_shim_version: Option<&'a str>,
    },
    Bootstrap {
        options: Option<protobuf::well_known_types::any::Any>,
        socket_dir: Option<PathBuf>,
    },
}

/// Runs `cmd` with `input` on stdin and its stdout and stderr into one pipe, as containerd
/// 2.3 reads `start` (Go's CombinedOutput); the bytes, or an error when it fails.
fn run_combined(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let (mut reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
    let writer2 = writer.try_clone().map_err(|e| e.to_string())?;
    let mut child = cmd
        .stdin(std::process::Stdio::piped())
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(|e| format!("failed to run {cmd:?}: {e}"))?;
    // Our copies of the write end went into the child; only its copies keep the pipe open.
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .map_err(|e| format!("writing stdin of {cmd:?}: {e}"))?;
    }
    let mut out = Vec::new();
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!(
            "{cmd:?} failed ({status}): {}",
            String::from_utf8_lossy(&out).trim()
        ));
    }
    Ok(out)
}

/// Go's bytes.TrimSpace, which containerd 2.3.0 to 2.3.3 apply to `start`'s whole reply.
pub fn go_trim_space(mut b: &[u8]) -> &[u8] {
    let space = |c: u8| matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
    loop {
        match b {
            [c, rest @ ..] if space(*c) => b = rest,
            [0xc2, 0x85 | 0xa0, rest @ ..] => b = rest,
            _ => break,
        }
    }
    loop {
        match b {
            [rest @ .., c] if space(*c) => b = rest,
            [rest @ .., 0xc2, 0x85 | 0xa0] => b = rest,
            _ => break,
        }
    }
    b
}

/// The address and task API version a shim's `start` printed: a plain address (version 2), or
/// containerd 2.x's JSON bootstrap `{"version":3,"address":...,"protocol":"ttrpc"}`.
pub fn parse_bootstrap(out: &str) -> Result<(String, u64), String> {
    let out = out.trim();
    if !out.starts_with('{') {
        return Ok((out.to_string(), 2));
    }
    let v: serde_json::Value =
        serde_json::from_str(out).map_err(|e| format!("bootstrap {out}: {e}"))?;
    let address = v["address"]
        .as_str()
        .ok_or(format!("bootstrap without address: {out}"))?;
    Ok((address.to_string(), v["version"].as_u64().unwrap_or(2)))
}

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, String)>>);

#[async_trait::async_trait]
impl Events for Recorder {
    async fn forward(
        &self,
        _: &ttrpc::r#async::TtrpcContext,
        req: ForwardRequest,
    ) -> ttrpc::Result<protobuf::well_known_types::empty::Empty> {
        let env = req.envelope;
        let mut seen = self.0.lock().unwrap_or_else(|e| e.into_inner());
        seen.push((env.topic.clone(), env.event.type_url.clone()));
        Ok(Default::default())
    }
}

/// Everything a direct shim leaves on the machine, removed on drop: made first, so a start
/// that fails half-way cleans up too.
struct Scratch {
    dir: PathBuf,
    ns: String,
    fake_address: String,
    first_id: String,
    ids: Mutex<Vec<String>>,
    /// Where containerd 2.3's bootstrap put the socket; the default directory otherwise.
    socket_dir: Option<PathBuf>,
}

impl Scratch {
    fn socket(&self) -> PathBuf {
        let dir = self
            .socket_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(shim::bootstrap::SOCKET_DIR));
        let address =
            shim::bootstrap::socket_address_in(&dir, &self.fake_address, &self.ns, &self.first_id);
        shim::bootstrap::socket_path(&address).to_path_buf()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let address = self.fake_address.clone();
        for pid in shim_pids(|args| args.iter().any(|a| *a == address)) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        // A killed shim leaves its socket.
        let _ = fs::remove_file(self.socket());
        if let Some(dir) = &self.socket_dir {
            let _ = fs::remove_dir_all(dir);
        }
        let root = format!("/run/containerd/runc/{}", self.ns);
        for id in self.ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = Command::new("runc")
                .args(["--root", &root, "delete", "--force", id])
                .output();
        }
        let _ = fs::remove_dir_all(&root);
        super::unmount_under(&self.dir);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

pub struct DirectShim {
    pub client: TaskApi,
    /// The task API version the shim announced.
    pub version: u64,
    pub rt: tokio::runtime::Runtime,
    recorder: Arc<Recorder>,
    /// containerd's events service as the shim sees it, serving while the shim lives.
    _events: ttrpc::r#async::Server,
    log: fs::File,
    scratch: Scratch,
}

impl DirectShim {
    /// Starts `binary` for task `first_id`, whose bundle (running `args`) is made first: the Go
    /// shim reads the spec in its working directory at start.
    pub fn start(
        binary: &str,
        ns: &str,
        first_id: &str,
        args: &[&str],
    ) -> Result<DirectShim, String> {
        Self::start_with_options(binary, ns, first_id, args, &[])
    }

    /// As `start`, with `options` (a serialized Any) on the shim's stdin, as containerd sends
    /// the runtime options.
    pub fn start_with_options(
        binary: &str,
        ns: &str,
        first_id: &str,
        args: &[&str],
        options: &[u8],
    ) -> Result<DirectShim, String> {
        // Lets a shim announce the v3 task API, which the client here speaks.
        let how = StartAs::Legacy {
            stdin: options,
            max_shim_version: Some("3"),
        };
        Self::launch(binary, ns, first_id, args, how).map(|(shim, _)| shim)
    }

    /// Starts `binary` as containerd 2.3 does: BootstrapParams for this task on stdin (the
    /// runtime options as its extension, `socket_dir` when given), MAX_SHIM_VERSION=2, stdout
    /// and stderr read together and trimmed as 2.3.0 does before decoding a BootstrapResult.
    /// Returns the shim and the reply's bytes.
    pub fn start_bootstrapped(
        binary: &str,
        ns: &str,
        first_id: &str,
        args: &[&str],
        options: Option<protobuf::well_known_types::any::Any>,
        socket_dir: Option<&Path>,
    ) -> Result<(DirectShim, Vec<u8>), String> {
        let how = StartAs::Bootstrap {
            options,
            socket_dir: socket_dir.map(Path::to_path_buf),
        };
        Self::launch(binary, ns, first_id, args, how)
    }

    fn launch(
        binary: &str,
        ns: &str,
        first_id: &str,
        args: &[&str],
        how: StartAs,
    ) -> Result<(DirectShim, Vec<u8>), String> {
        let dir = PathBuf::from(format!(
            "/tmp/shim-direct-{}-{}",
            std::process::id(),
            short_name(ns)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let fake_address = dir.join("containerd.sock").to_string_lossy().into_owned();
        let socket_dir = match &how {
            StartAs::Bootstrap { socket_dir, .. } => socket_dir.clone(),
            StartAs::Legacy { .. } => None,
        };
        let scratch = Scratch {
            dir: dir.clone(),
            ns: ns.to_string(),
            fake_address: fake_address.clone(),
            first_id: first_id.to_string(),
            ids: Mutex::new(vec![first_id.to_string()]),
            socket_dir,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let recorder = Arc::new(Recorder::default());
        let events_sock = dir.join("events.sock");
        let events = serve_events(&rt, &events_sock, &recorder)?;
        let bundle = make_bundle(&dir, first_id, args)?;
        let log_fifo = bundle.join("log");
        nix::unistd::mkfifo(&log_fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|e| e.to_string())?;
        // Stands for containerd's reader of the shim log; read-write so opening never waits.
        let log = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&log_fifo)
            .map_err(|e| e.to_string())?;
        let mut start = Command::new(binary);
        start
            .args(["-namespace", ns, "-address", &fake_address])
            .args(["-publish-binary", "/bin/true", "-id", first_id, "start"])
            .current_dir(&bundle)
            .env("TTRPC_ADDRESS", &events_sock)
            .env_remove("MAX_SHIM_VERSION");
        let (address, version, reply) = match how {
            StartAs::Legacy {
                stdin,
                max_shim_version,
            } => {
                if let Some(v) = max_shim_version {
                    start.env("MAX_SHIM_VERSION", v);
                }
                let reply = run_with_input(&mut start, stdin)?;
                let (address, version) = parse_bootstrap(&reply)?;
                (address, version, reply.into_bytes())
            }
            StartAs::Bootstrap {
                options,
                socket_dir,
            } => {
                start.env("MAX_SHIM_VERSION", "2");
                let mut params = shim::protos::bootstrap::BootstrapParams {
                    instance_id: first_id.into(),
                    namespace: ns.into(),
                    containerd_version: "2.3.4".into(),
                    containerd_ttrpc_address: events_sock.to_string_lossy().into_owned(),
                    containerd_grpc_address: fake_address.clone(),
                    containerd_binary: "/usr/bin/containerd".into(),
                    socket_dir: socket_dir.map(|d| d.to_string_lossy().into_owned()),
                    ..Default::default()
                };
                if let Some(any) = options {
                    params.extensions.push(shim::protos::bootstrap::Extension {
                        value: protobuf::MessageField::some(any),
                        ..Default::default()
                    });
                }
                use protobuf::Message;
                let stdin = params.write_to_bytes().map_err(|e| e.to_string())?;
                let reply = run_combined(&mut start, &stdin)?;
                let result = shim::protos::bootstrap::BootstrapResult::parse_from_bytes(
                    go_trim_space(&reply),
                )
                .map_err(|e| format!("reply {reply:?} is no BootstrapResult: {e}"))?;
                crate::ensure!(
                    result.protocol == "ttrpc" && !result.address.is_empty(),
                    "BootstrapResult {result:?}"
                );
                (result.address, result.version as u64, reply)
            }
        };
        let client = rt
            .block_on(ttrpc::r#async::Client::connect(&address))
            .map_err(|e| format!("connect {address}: {e}"))?;
        let service = format!("containerd.task.v{version}.Task");
        let shim = DirectShim {
            client: TaskApi { client, service },
            version,
            rt,
            recorder,
            _events: events,
            log,
            scratch,
        };
        Ok((shim, reply))
    }

    /// Where the shim's socket is.
    pub fn socket(&self) -> PathBuf {
        self.scratch.socket()
    }

    pub fn bundle_path(&self, id: &str) -> PathBuf {
        self.scratch.dir.join(id)
    }

    /// A bundle for `id` running `args` in a busybox rootfs.
    pub fn bundle(&self, id: &str, args: &[&str]) -> Result<PathBuf, String> {
        self.scratch
            .ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id.to_string());
        make_bundle(&self.scratch.dir, id, args)
    }

    /// A Create of `id` in the bundle made for it, with `options` as
    /// `containerd.runc.v1.Options` when given.
    pub fn create_request(
        &self,
        id: &str,
        options: Option<shim::protos::runc_options::Options>,
    ) -> CreateTaskRequest {
        let options = options.map_or_else(protobuf::MessageField::none, |o| runc_options_any(&o));
        CreateTaskRequest {
            id: id.into(),
            bundle: self.bundle_path(id).to_string_lossy().into_owned(),
            options,
            ..Default::default()
        }
    }

    /// Creates a task; the error names the request's id.
    pub fn create(&self, req: &CreateTaskRequest) -> Result<CreateTaskResponse, String> {
        self.rt
            .block_on(self.client.create(Self::ctx(), req))
            .map_err(|e| format!("Create {}: {e}", req.id))
    }

    /// Starts `id`'s init; its pid.
    pub fn start_task(&self, id: &str) -> Result<u32, String> {
        self.start_process(id, "")
    }

    /// Starts a process of `id` (its init when `exec_id` is empty); its pid.
    pub fn start_process(&self, id: &str, exec_id: &str) -> Result<u32, String> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.start(Self::ctx(), &req))
            .map(|r| r.pid)
            .map_err(|e| format!("Start {id} {exec_id}: {e}"))
    }

    /// Sends `signal` to a process of `id` (its init when `exec_id` is empty).
    pub fn kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), String> {
        let req = KillRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        self.rt
            .block_on(self.client.kill(Self::ctx(), &req))
            .map(|_| ())
            .map_err(|e| format!("Kill {id} {exec_id}: {e}"))
    }

    /// Deletes `id`'s init (and with it the container).
    pub fn delete_task(&self, id: &str) -> Result<DeleteResponse, String> {
        self.delete_process(id, "")
    }

    /// Deletes a process of `id` (its init, and the container, when `exec_id` is empty).
    pub fn delete_process(&self, id: &str, exec_id: &str) -> Result<DeleteResponse, String> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.delete(Self::ctx(), &req))
            .map_err(|e| format!("Delete {id} {exec_id}: {e}"))
    }

    /// Waits for the exit of `id`'s init, for at most `limit`: past it the exit was lost.
    pub fn wait_exit(&self, id: &str, limit: Duration) -> Result<WaitResponse, String> {
        self.wait_process(id, "", limit)
    }

    /// Waits for the exit of a process of `id`, for at most `limit`: past it the exit was lost.
    pub fn wait_process(
        &self,
        id: &str,
        exec_id: &str,
        limit: Duration,
    ) -> Result<WaitResponse, String> {
        let req = WaitRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.rt
            .block_on(async {
                tokio::time::timeout(limit, self.client.wait(Self::ctx(), &req)).await
            })
            .map_err(|_| format!("Wait {id} {exec_id} never returned: the exit was lost"))?
            .map_err(|e| format!("Wait {id} {exec_id}: {e}"))
    }

    pub fn ctx() -> ttrpc::context::Context {
        ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
    }

    /// What the shim has written to its log so far (containerd would copy it into its own).
    pub fn log_text(&self) -> String {
        use std::io::Read;
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        // Non-blocking: reads what is there and stops at EAGAIN.
        while let Ok(n) = (&self.log).read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Sends one Task request whose deadline only the shim counts, and returns the status it
    /// answered with. ttrpc's client drops a request whose deadline passes before it is
    /// written, so a short deadline through it may never reach the shim; here the request is
    /// always written, on a connection of its own, and the clock starts when the shim reads it.
    pub fn call_with_shim_deadline(
        &self,
        method: &str,
        req: &impl protobuf::Message,
        deadline: Duration,
    ) -> Result<ttrpc::Status, String> {
        use protobuf::Message;
        use std::io::{Read, Write};
        let payload = ttrpc::Request {
            service: self.client.service.clone(),
            method: method.into(),
            payload: req.write_to_bytes().map_err(|e| e.to_string())?,
            timeout_nano: deadline.as_nanos() as i64,
            ..Default::default()
        }
        .write_to_bytes()
        .map_err(|e| e.to_string())?;
        let mut conn = std::os::unix::net::UnixStream::connect(self.socket())
            .map_err(|e| format!("connect {}: {e}", self.socket().display()))?;
        conn.set_read_timeout(Some(Duration::from_secs(60)))
            .map_err(|e| e.to_string())?;
        // Stream 1: a client's streams are odd.
        let mut frame: Vec<u8> = ttrpc::MessageHeader::new_request(1, payload.len() as u32).into();
        frame.extend_from_slice(&payload);
        conn.write_all(&frame)
            .map_err(|e| format!("{method}: write: {e}"))?;
        let mut header = [0u8; ttrpc::proto::MESSAGE_HEADER_LENGTH];
        conn.read_exact(&mut header)
            .map_err(|e| format!("{method}: no answer: {e}"))?;
        let header = ttrpc::MessageHeader::from(header);
        crate::ensure!(
            header.type_ == ttrpc::proto::MESSAGE_TYPE_RESPONSE
                && header.length as usize <= ttrpc::proto::MESSAGE_LENGTH_MAX,
            "{method}: answered with frame header {header:?}"
        );
        let mut body = vec![0u8; header.length as usize];
        conn.read_exact(&mut body)
            .map_err(|e| format!("{method}: answer cut short: {e}"))?;
        let response = ttrpc::Response::parse_from_bytes(&body)
            .map_err(|e| format!("{method}: answer is no ttrpc Response: {e}"))?;
        Ok(response.status.unwrap_or_default())
    }

    /// The shim's own pid (from Connect).
    pub fn pid(&self) -> Result<i32, String> {
        let req = ConnectRequest {
            id: self.scratch.first_id.clone(),
            ..Default::default()
        };
        self.rt
            .block_on(self.client.connect(Self::ctx(), &req))
            .map(|r| r.shim_pid as i32)
            .map_err(|e| format!("Connect: {e}"))
    }

    /// The topics published so far, in arrival order.
    pub fn topics(&self) -> Vec<String> {
        self.recorder
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, _)| t.clone())
            .collect()
    }
}

impl DirectShim {
    /// Ends a test that deleted its tasks: Shutdown, and the shim must go by itself, taking
    /// its socket with it and leaving no runc container, mount or process. What is left is a
    /// failure (and is then removed by force when the shim is dropped).
    pub fn finish(self) -> Result<(), String> {
        let pid = self.pid()?;
        let req = ShutdownRequest::default();
        let _ = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                self.client.shutdown(Self::ctx(), &req),
            )
            .await
        });
        super::eventually(Duration::from_secs(10), || {
            crate::ensure!(
                !super::pid_alive(pid),
                "the shim {pid} did not exit on Shutdown"
            );
            Ok(())
        })?;
        let s = &self.scratch;
        let socket = s.socket();
        crate::ensure!(
            !socket.exists(),
            "the shim left its socket {}",
            socket.display()
        );
        let root = PathBuf::from(format!("/run/containerd/runc/{}", s.ns));
        let containers: Vec<String> = fs::read_dir(&root)
            .map(|d| {
                d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect()
            })
            .unwrap_or_default();
        crate::ensure!(
            containers.is_empty(),
            "runc still has containers {containers:?} under {}",
            root.display()
        );
        let mounts = super::mounts_under(&s.dir);
        crate::ensure!(mounts.is_empty(), "mounts left: {mounts:?}");
        Ok(())
    }
}

impl Drop for DirectShim {
    /// Asks the shim to stop; the scratch dropped after this removes whatever is left.
    fn drop(&mut self) {
        let req = ShutdownRequest {
            now: true,
            ..Default::default()
        };
        let _ = self.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(5),
                self.client.shutdown(Self::ctx(), &req),
            )
            .await
        });
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A bundle `dir/id` with a busybox rootfs and runc's default spec running `args`.
pub fn make_bundle(dir: &Path, id: &str, args: &[&str]) -> Result<PathBuf, String> {
    let bundle = dir.join(id);
    let rootfs = bundle.join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).map_err(|e| e.to_string())?;
    for d in ["proc", "dev", "sys", "tmp"] {
        fs::create_dir_all(rootfs.join(d)).map_err(|e| e.to_string())?;
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox")).map_err(|e| e.to_string())?;
    for applet in ["sh", "sleep", "true", "cat", "echo"] {
        let _ = std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet));
    }
    run_ok(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle))?;
    let path = bundle.join("config.json");
    let text = fs::read(&path).map_err(|e| e.to_string())?;
    let mut spec: serde_json::Value = serde_json::from_slice(&text).map_err(|e| e.to_string())?;
    spec["process"]["terminal"] = serde_json::Value::Bool(false);
    spec["process"]["args"] = serde_json::json!(args);
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    fs::write(
        &path,
        serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    Ok(bundle)
}

/// The shim binary a direct test starts: ours, or this line's Go shim.
pub fn shim_binary(ctx: &Ctx) -> String {
    if ctx.runtime == OURS {
        shim_bin()
    } else {
        ctx.daemon
            .line
            .tool("containerd-shim-runc-v2")
            .to_string_lossy()
            .into_owned()
    }
}

/// A Create of `id` in `bundle`, without options.
pub fn create_request(id: &str, bundle: &std::path::Path) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.to_string(),
        bundle: bundle.to_string_lossy().into_owned(),
        ..Default::default()
    }
}

/// runc's options as the Any a Create or `start` carries them in.
pub fn runc_options_any(
    options: &shim::protos::runc_options::Options,
) -> protobuf::MessageField<protobuf::well_known_types::any::Any> {
    use protobuf::Message;
    options_any(
        "containerd.runc.v1.Options",
        options.write_to_bytes().unwrap_or_default(),
    )
}

/// An Any of `type_url` around `value`.
pub fn options_any(
    type_url: &str,
    value: Vec<u8>,
) -> protobuf::MessageField<protobuf::well_known_types::any::Any> {
    let mut any = protobuf::well_known_types::any::Any::new();
    any.type_url = type_url.to_string();
    any.value = value;
    protobuf::MessageField::some(any)
}
