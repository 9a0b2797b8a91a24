//! A container: its bundle, its root filesystem mounts, its runc and its init process.
//! It acts (mounts, runs runc); it does not validate requests or publish events.

use crate::error::{Error, Result};
use crate::mount;
use crate::options::RuntimeOptions;
use crate::process::Process;
use crate::protos::mount::Mount;
use crate::reaper::Reaper;
use crate::runc::{CreateOpts, Runc};
use crate::stdio::{self, StdioPaths};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The bundle file where `delete` finds the runtime options after a shim has died.
pub const OPTIONS_FILE: &str = "options.json";
pub const INIT_PID_FILE: &str = "init.pid";

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    /// Set when the shim mounted the rootfs and so must unmount it.
    mounted_rootfs: Option<PathBuf>,
    pub runc: Runc,
    pub init: Arc<Process>,
}

pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub namespace: &'a str,
    pub rootfs: &'a [Mount],
    pub stdio: StdioPaths,
    pub options: RuntimeOptions,
}

impl Container {
    /// Mounts the rootfs, opens the streams and runs `runc create`; on failure nothing of it
    /// is left behind.
    pub async fn create(req: CreateRequest<'_>, reaper: Arc<Reaper>) -> Result<Container> {
        check_bundle(req.bundle)?;
        let runc = Runc::new(
            req.options.binary(),
            Path::new(req.options.root()).join(req.namespace),
            req.bundle.join("log.json"),
            req.options.systemd_cgroup,
            reaper,
        )?;
        write_options(req.bundle, &req.options)?;
        let rootfs = req.bundle.join("rootfs");
        let mounted_rootfs = if req.rootfs.is_empty() {
            None
        } else {
            std::fs::create_dir_all(&rootfs).map_err(|e| {
                Error::Internal(format!("failed to create {}: {e}", rootfs.display()))
            })?;
            // A mount can block on the filesystem; keep it off the thread that serves requests.
            let (mounts, target) = (req.rootfs.to_vec(), rootfs.clone());
            tokio::task::spawn_blocking(move || mount::mount_all(&mounts, &target))
                .await
                .map_err(|e| Error::Internal(format!("mount task failed: {e}")))??;
            Some(rootfs)
        };
        let mut container = Container {
            id: req.id.to_string(),
            bundle: req.bundle.to_path_buf(),
            mounted_rootfs,
            runc,
            init: Arc::new(Process::new(req.id, "", req.stdio)),
        };
        match container.create_init(&req.options).await {
            Ok(()) => Ok(container),
            Err(e) => {
                // runc may have got as far as creating it; a container it never made is fine.
                let _ = container.destroy().await;
                Err(e)
            }
        }
    }

    async fn create_init(&mut self, options: &RuntimeOptions) -> Result<()> {
        let owner = (options.io_uid, options.io_gid);
        let (opened, child_stdio) = stdio::open(&self.init.stdio, owner)?;
        let pid_file = self.bundle.join(INIT_PID_FILE);
        let opts = CreateOpts {
            pid_file: pid_file.clone(),
            no_pivot_root: options.no_pivot_root,
            no_new_keyring: options.no_new_keyring,
        };
        self.runc
            .create(&self.id, &self.bundle, &opts, child_stdio)
            .await?;
        let pid = read_pid(&pid_file)?;
        self.init.state().pid = pid;
        self.init.set_io(opened.start(&self.id));
        Ok(())
    }

    /// Runs `runc delete` and unmounts the rootfs. A container runc no longer knows is fine.
    pub async fn destroy(&self) -> Result<()> {
        let deleted = match self.runc.delete(&self.id, true).await {
            Err(Error::NotFound(_)) => Ok(()),
            other => other,
        };
        self.release_rootfs();
        deleted
    }

    fn release_rootfs(&self) {
        if let Some(rootfs) = &self.mounted_rootfs {
            if let Err(e) = mount::unmount_all(rootfs) {
                log::error!("failed to unmount {}: {e}", rootfs.display());
            }
        }
    }
}

fn check_bundle(bundle: &Path) -> Result<()> {
    if !bundle.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "bundle path {} is not absolute",
            bundle.display()
        )));
    }
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).map_err(|e| {
        Error::InvalidArgument(format!(
            "bundle {} has no readable config.json: {e}",
            bundle.display()
        ))
    })?;
    serde_json::from_slice::<serde_json::Value>(&text)
        .map_err(|e| {
            Error::InvalidArgument(format!("{} is not valid JSON: {e}", config.display()))
        })?
        .as_object()
        .ok_or_else(|| {
            Error::InvalidArgument(format!("{} is not a JSON object", config.display()))
        })?;
    Ok(())
}

fn write_options(bundle: &Path, options: &RuntimeOptions) -> Result<()> {
    let path = bundle.join(OPTIONS_FILE);
    let text = serde_json::to_vec(options)
        .map_err(|e| Error::Internal(format!("failed to encode runtime options: {e}")))?;
    std::fs::write(&path, text)
        .map_err(|e| Error::Internal(format!("failed to write {}: {e}", path.display())))
}

/// The runtime options a shim wrote into a bundle, for `delete`; defaults when absent.
pub fn read_options(bundle: &Path) -> RuntimeOptions {
    std::fs::read(bundle.join(OPTIONS_FILE))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default()
}

pub fn read_pid(path: &Path) -> Result<i32> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Internal(format!("failed to read pid file {}: {e}", path.display())))?;
    text.trim()
        .parse()
        .map_err(|e| Error::Internal(format!("bad pid in {}: {e}", path.display())))
}
