//! The local build launcher: one `builder` process per deployment, in its own process
//! group. A builder that exits without its final report is reported as
//! `task_stopped`, as the ECS task-state event does on AWS.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deploysphere_adapters::now_ms;
use deploysphere_adapters::s3::ObjectStore;
use deploysphere_core::{
    BuildCredentials, BuildEvent, BuildEventKind, BuildSpec, LaunchError, Launcher,
};
use tokio::process::Command;
use tokio::sync::mpsc;

/// How long the credentials for a grant are valid (as an STS session on AWS).
const CREDENTIALS_LIFETIME_MS: i64 = 3_600_000;

pub struct LocalLauncher {
    pub builder_bin: PathBuf,
    /// The platform endpoints the builder needs (Kafka, S3), nothing else.
    pub env: Vec<(String, String)>,
    pub logs_dir: PathBuf,
    running: Arc<Mutex<HashMap<String, u32>>>,
    stopped: mpsc::UnboundedSender<BuildEvent>,
    /// The sites bucket, where each build's spec is left for it.
    store: ObjectStore,
    /// What a build's grant gets it: the local S3 server's keys (one local user).
    credentials: BuildCredentials,
}

impl LocalLauncher {
    pub fn new(
        builder_bin: PathBuf,
        env: Vec<(String, String)>,
        logs_dir: PathBuf,
        stopped: mpsc::UnboundedSender<BuildEvent>,
        store: ObjectStore,
        credentials: BuildCredentials,
    ) -> Self {
        LocalLauncher {
            builder_bin,
            env,
            logs_dir,
            running: Arc::default(),
            stopped,
            store,
            credentials,
        }
    }

    /// Kills every build still running (platform shutdown).
    pub fn kill_all(&self) {
        let ids: Vec<String> = self
            .running
            .lock()
            .expect("running lock")
            .keys()
            .cloned()
            .collect();
        for id in ids {
            kill_build(&self.running, &id);
        }
    }
}

/// SIGKILLs a build's process group and whatever is left in its cgroups.
fn kill_build(running: &Mutex<HashMap<String, u32>>, deployment_id: &str) {
    if let Some(pid) = running
        .lock()
        .expect("running lock")
        .get(deployment_id)
        .copied()
    {
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the group.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
    }
    for _ in 0..3 {
        let mut found = false;
        for dir in [
            format!("/sys/fs/cgroup/pids/deploysphere/{deployment_id}"),
            format!("/sys/fs/cgroup/memory/deploysphere/{deployment_id}"),
            format!("/sys/fs/cgroup/cpu/deploysphere/{deployment_id}"),
            format!("/sys/fs/cgroup/deploysphere/{deployment_id}"),
        ] {
            if let Ok(pids) = std::fs::read_to_string(format!("{dir}/cgroup.procs")) {
                for pid in pids
                    .split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok())
                {
                    found = true;
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        if !found {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the build's cgroups; true when none is left.
pub fn remove_cgroups(deployment_id: &str) -> bool {
    let mut all_gone = true;
    for dir in [
        format!("/sys/fs/cgroup/pids/deploysphere/{deployment_id}"),
        format!("/sys/fs/cgroup/memory/deploysphere/{deployment_id}"),
        format!("/sys/fs/cgroup/cpu/deploysphere/{deployment_id}"),
        format!("/sys/fs/cgroup/deploysphere/{deployment_id}"),
    ] {
        let path = std::path::Path::new(&dir);
        if path.exists() && std::fs::remove_dir(path).is_err() {
            all_gone = false;
        }
    }
    all_gone
}

#[async_trait::async_trait]
impl Launcher for LocalLauncher {
    async fn launch(&self, spec: BuildSpec, grant: &str) -> Result<(), LaunchError> {
        let id = spec.deployment_id.clone();
        // As on AWS, the spec (secrets included) is an object the build reads, not
        // part of its command line or environment.
        let spec_key = self
            .store
            .put_build_spec(&spec)
            .await
            .map_err(|e| LaunchError(format!("leaving the build spec in S3: {e}")))?;
        std::fs::create_dir_all(&self.logs_dir).map_err(|e| LaunchError(e.to_string()))?;
        let log = std::fs::File::create(self.logs_dir.join(format!("{id}.log")))
            .map_err(|e| LaunchError(e.to_string()))?;
        let log_err = log.try_clone().map_err(|e| LaunchError(e.to_string()))?;
        let mut command = Command::new(&self.builder_bin);
        command
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("DEPLOYSPHERE_BUILD_SPEC_KEY", spec_key)
            .env("DEPLOYSPHERE_BUILD_GRANT", grant)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0);
        // A build dies with the platform (its sandbox with it: bwrap runs with
        // --die-with-parent), so none runs on unwatched after a crash; the next start
        // fails it with a clear reason and its slot is free.
        // SAFETY: prctl(2) is async-signal-safe and touches only the child.
        let platform = std::process::id() as libc::pid_t;
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The platform died between the fork and the prctl: no signal comes.
                if libc::getppid() != platform {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| LaunchError(format!("{}: {e}", self.builder_bin.display())))?;
        let pid = child.id().unwrap_or(0);
        self.running
            .lock()
            .expect("running lock")
            .insert(id.clone(), pid);
        let running = self.running.clone();
        let stopped = self.stopped.clone();
        tokio::spawn(async move {
            let status = child.wait().await;
            running.lock().expect("running lock").remove(&id);
            // The sandbox's processes may still be exiting: retry for a few seconds.
            for _ in 0..50 {
                if remove_cgroups(&id) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let reason = match status {
                Ok(status) if status.success() => return,
                Ok(status) => {
                    format!("the build task stopped ({status}) without reporting a result")
                }
                Err(e) => format!("the build task could not be watched: {e}"),
            };
            // The final report may still be on its way through Kafka: give it time.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = stopped.send(BuildEvent {
                deployment_id: id,
                at_ms: now_ms(),
                kind: BuildEventKind::TaskStopped { reason },
            });
        });
        Ok(())
    }

    async fn credentials(
        &self,
        _deployment_id: &str,
        _project_id: &str,
    ) -> Result<BuildCredentials, LaunchError> {
        // The local keys do not expire, but they are handed out for an hour, as on
        // AWS, so that a long local build renews them the same way.
        Ok(BuildCredentials {
            expires_at_ms: Some(deploysphere_adapters::now_ms() + CREDENTIALS_LIFETIME_MS),
            ..self.credentials.clone()
        })
    }

    async fn cancel(&self, deployment_id: &str) -> Result<(), LaunchError> {
        let running = self.running.clone();
        let id = deployment_id.to_string();
        tokio::task::spawn_blocking(move || kill_build(&running, &id))
            .await
            .map_err(|e| LaunchError(e.to_string()))?;
        Ok(())
    }
}
