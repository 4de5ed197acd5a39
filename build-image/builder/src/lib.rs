//! The trusted part of a build task: fetch the source, plan the build, run the user's
//! commands in the sandbox, upload the output, and report every step.

pub mod credentials;
pub mod live;
pub mod report;
pub mod sandbox;
pub mod source;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aws_credential_types::provider::SharedCredentialsProvider;
use deploysphere_adapters::kafka::{KafkaAuth, KafkaContext, KafkaSettings};
use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_core::{BuildEventKind, BuildSpec, LogStream, detect_plan, validate};
use tokio::sync::mpsc;

use crate::credentials::GrantCredentials;
use crate::report::Reporter;
use crate::sandbox::{Exit, Sandbox, WORKSPACE};

/// Where a build task runs, from its environment.
#[derive(Debug, Clone)]
pub struct BuilderConfig {
    pub kafka: KafkaSettings,
    /// Where the sites bucket is (its keys are unused: see `grant`).
    pub s3: S3Config,
    /// The build's own credentials (S3, and MSK IAM on AWS) and signing key, from its
    /// grant.
    pub grant: GrantCredentials,
    /// Redis for live log lines (`redis://127.0.0.1:6379`); `None` turns them off.
    pub redis_url: Option<String>,
    /// Parent of each build's work folder.
    pub work_dir: PathBuf,
    /// Local mode: local paths and `file://` git URLs are allowed.
    pub allow_local_sources: bool,
}

impl BuilderConfig {
    /// The Kafka client context: MSK IAM tokens are signed with the build's own
    /// narrowed credentials (the same ones that upload its files).
    pub fn kafka_context(&self) -> anyhow::Result<KafkaContext> {
        let credentials = (self.kafka.auth == KafkaAuth::MskIam).then(|| self.credentials());
        self.kafka.context(credentials).map_err(anyhow::Error::msg)
    }

    /// The build's own credentials, from its grant.
    pub fn credentials(&self) -> SharedCredentialsProvider {
        self.grant.provider()
    }

    /// What the build reports through: its deployment's log and events, signed with
    /// its key, journaled in `work`.
    async fn reporter(
        &self,
        deployment_id: &str,
        project_id: &str,
        secrets: Vec<String>,
        work: &Path,
    ) -> anyhow::Result<Reporter> {
        let key = self.grant.build_key().await?;
        Reporter::new(
            &self.kafka,
            self.kafka_context()?,
            key,
            deployment_id,
            project_id,
            secrets,
            work,
        )
    }

    /// The sites bucket, as this build may use it.
    pub fn store(&self) -> ObjectStore {
        ObjectStore::with_credentials(&self.s3, self.credentials())
    }
}

/// Why a build failed, as shown to the user.
#[derive(Debug)]
pub struct Failure(pub String);

/// Runs the whole build and reports its end: `Finished` or `Failed`. Returns an error
/// only when the final report itself could not be delivered.
pub async fn run(spec: &BuildSpec, config: &BuilderConfig) -> anyhow::Result<bool> {
    let mut secrets: Vec<String> = spec
        .env
        .values()
        .filter(|v| v.secret)
        .map(|v| v.value.clone())
        .collect();
    secrets.extend(url_credentials(&spec.git_url));
    let work = config.work_dir.join(&spec.deployment_id);
    // Others may pass through to the checkout (the sandbox's uid must) but not list it.
    std::fs::create_dir_all(&work)?;
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o711))?;
    let mut reporter = config
        .reporter(&spec.deployment_id, &spec.project_id, secrets, &work)
        .await?;
    if let Some(url) = &config.redis_url {
        reporter.go_live(live::LivePublisher::start(url, &spec.deployment_id));
    }
    reporter.event(BuildEventKind::Started).await?;
    let started = Instant::now();
    let outcome = build(spec, config, &work, &mut reporter).await;
    let _ = std::fs::remove_dir_all(work.join("src"));
    let succeeded = outcome.is_ok();
    let final_event = match outcome {
        Ok(stats) => {
            reporter
                .system(format!(
                    "Deployed {} files ({} bytes) in {:.1} s",
                    stats.files,
                    stats.bytes,
                    started.elapsed().as_secs_f64()
                ))
                .await;
            BuildEventKind::Finished {
                manifest_key: stats.manifest_key,
                files: stats.files,
                bytes: stats.bytes,
                blobs_uploaded: stats.blobs_uploaded,
                log_lines: None,
            }
        }
        Err(Failure(reason)) => {
            let reason = reporter.mask(&reason);
            reporter.system(format!("Build failed: {reason}")).await;
            BuildEventKind::Failed {
                reason,
                log_lines: None,
            }
        }
    };
    let undelivered = reporter.finish().await;
    let _ = std::fs::remove_dir_all(&work);
    if undelivered > 0 {
        eprintln!(
            "[builder] {undelivered} of {} log lines could not be delivered",
            reporter.lines_sent()
        );
    }
    let total = reporter.lines_sent();
    let final_event = match final_event {
        BuildEventKind::Finished {
            manifest_key,
            files,
            bytes,
            blobs_uploaded,
            ..
        } => BuildEventKind::Finished {
            manifest_key,
            files,
            bytes,
            blobs_uploaded,
            log_lines: Some(total),
        },
        BuildEventKind::Failed { reason, .. } => BuildEventKind::Failed {
            reason,
            log_lines: Some(total),
        },
        other => other,
    };
    reporter.event(final_event).await?;
    Ok(succeeded)
}

/// Reports a build that failed before it could read its build spec (S3 unreachable):
/// its log says why, and the final report makes the deployment FAILED with that
/// reason, not "stopped without reporting a result".
pub async fn report_early_failure(
    config: &BuilderConfig,
    deployment_id: &str,
    reason: &str,
) -> anyhow::Result<()> {
    let work = config.work_dir.join(deployment_id);
    std::fs::create_dir_all(&work)?;
    let mut reporter = config
        .reporter(deployment_id, "", Vec::new(), &work)
        .await?;
    reporter.system(format!("Build failed: {reason}")).await;
    reporter.finish().await;
    let _ = std::fs::remove_dir_all(&work);
    let log_lines = Some(reporter.lines_sent());
    reporter
        .event(BuildEventKind::Failed {
            reason: reason.to_string(),
            log_lines,
        })
        .await
}

/// When the disk that holds `path` is (nearly) full, why a step that failed there
/// failed: "; the disk of the build folder is full (No space left on device: …)".
fn disk_full_note(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return String::new();
    };
    // SAFETY: statvfs(3) writes only into the struct it is given.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return String::new();
    }
    let block = stat.f_frsize as u64;
    let free = stat.f_bavail as u64 * block;
    let total = stat.f_blocks as u64 * block;
    if free >= 1024 * 1024 {
        return String::new();
    }
    format!(
        "; the disk of the build folder is full (No space left on device: {} KiB free of {} MiB)",
        free / 1024,
        total / (1024 * 1024)
    )
}

async fn build(
    spec: &BuildSpec,
    config: &BuilderConfig,
    work: &Path,
    reporter: &mut Reporter,
) -> Result<upload::UploadStats, Failure> {
    let fail = |message: String| Failure(message);
    let deadline = Instant::now() + Duration::from_secs(spec.limits.timeout_seconds);
    let source = validate::git_url(&spec.git_url, config.allow_local_sources)
        .map_err(|e| fail(e.to_string()))?;
    validate::git_ref("ref", &spec.git_ref).map_err(|e| fail(e.to_string()))?;

    let checkout = work.join("src");
    reporter
        .system(format!(
            "Cloning {} ({})",
            validate::redact_url(source.url()),
            spec.git_ref
        ))
        .await;
    let commit = source::checkout(
        reporter,
        source.url(),
        &spec.git_ref,
        &checkout,
        &work.join("git-home"),
        source::FetchRules {
            allow_private: config.allow_local_sources && spec.private_network,
            max_bytes: spec.limits.max_fetch_mb.saturating_mul(1024 * 1024),
        },
    )
    .await
    .map_err(|e| {
        fail(format!(
            "could not clone the repository: {e}{}",
            disk_full_note(work)
        ))
    })?
    .map_err(|e| {
        fail(format!(
            "could not clone {} at {}: {e}{}",
            validate::redact_url(source.url()),
            spec.git_ref,
            disk_full_note(work)
        ))
    })?;
    reporter
        .system(format!("Checked out commit {commit}"))
        .await;

    let checkout = checkout.canonicalize().map_err(|e| fail(e.to_string()))?;
    let root_rel = spec.settings.root_dir.clone().unwrap_or_else(|| ".".into());
    let root = checkout
        .join(&root_rel)
        .canonicalize()
        .ok()
        .filter(|p| p.starts_with(&checkout) && p.is_dir())
        .ok_or_else(|| {
            fail(format!(
                "root_dir {root_rel:?} is not a folder of the repository"
            ))
        })?;
    let plan = detect_plan(&source::FsTree::new(&root), &spec.settings)
        .map_err(|e| fail(e.to_string()))?;
    reporter
        .system(format!(
            "Detected {}: install {:?}, build {:?}, output {:?}",
            plan.framework,
            plan.install_command.as_deref().unwrap_or("(none)"),
            plan.build_command.as_deref().unwrap_or("(none)"),
            plan.output_dir
        ))
        .await;
    if let Some(manager) = plan.package_manager
        && plan.install_command.is_some()
    {
        reporter
            .system(format!(
                "Package manager: {}{} ({}){}",
                manager.as_str(),
                plan.package_manager_version
                    .as_deref()
                    .map(|v| format!(" {v}"))
                    .unwrap_or_default(),
                plan.package_manager_source.as_deref().unwrap_or("detected"),
                if manager.through_corepack() {
                    ", run through corepack"
                } else {
                    ""
                }
            ))
            .await;
    }
    let _ = reporter
        .event(BuildEventKind::Planned {
            commit_sha: commit.clone(),
            plan: plan.clone(),
        })
        .await;

    let commands: Vec<(&str, &String)> = [
        ("install", &plan.install_command),
        ("build", &plan.build_command),
    ]
    .into_iter()
    .filter_map(|(name, command)| command.as_ref().map(|c| (name, c)))
    .collect();
    if !commands.is_empty() {
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("HOME".into(), "/tmp/home".into()),
            ("CI".into(), "1".into()),
            ("DEPLOYSPHERE".into(), "1".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        if Path::new("/etc/ssl/certs/ca-certificates.crt").exists() {
            env.push((
                "NODE_EXTRA_CA_CERTS".into(),
                "/etc/ssl/certs/ca-certificates.crt".into(),
            ));
        }
        let tools = match plan.package_manager {
            Some(manager) if manager.through_corepack() => {
                let tools = work.join("tools");
                corepack_shims(&tools).await.map_err(fail)?;
                if let Some((_, path)) = env.iter_mut().find(|(name, _)| name == "PATH") {
                    *path = format!("{}/bin:{path}", sandbox::TOOLS);
                }
                env.extend([
                    (
                        "COREPACK_HOME".into(),
                        format!("{}/corepack", sandbox::TOOLS),
                    ),
                    ("COREPACK_ENABLE_DOWNLOAD_PROMPT".into(), "0".into()),
                    // Registry mirrors often strip npm's signatures, which corepack
                    // then refuses; the tarball is still checked against the registry's
                    // integrity hash, and against a `+sha512.` pin in packageManager.
                    ("COREPACK_INTEGRITY_KEYS".into(), "0".into()),
                ]);
                Some(tools)
            }
            _ => None,
        };
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.value.clone())));
        let sandbox = Sandbox::new(
            &spec.deployment_id,
            &checkout,
            tools.as_deref(),
            env,
            &spec.limits,
        )
        .map_err(|e| fail(format!("could not prepare the sandbox: {e}")))?;
        reporter.system(sandbox.describe(&spec.limits)).await;
        let workdir = Path::new(WORKSPACE)
            .join(root.strip_prefix(&checkout).unwrap_or(Path::new("")))
            .display()
            .to_string();
        for (name, command) in commands {
            reporter
                .system(format!("Running {name} command: {command}"))
                .await;
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(Instant::now());
            let (tx, mut rx) = mpsc::channel::<(LogStream, String)>(1024);
            let run = sandbox.run(command, &workdir, remaining, tx);
            tokio::pin!(run);
            let exit = loop {
                tokio::select! {
                    Some((stream, line)) = rx.recv() => reporter.line(stream, &line).await,
                    exit = &mut run => break exit,
                }
            };
            while let Ok((stream, line)) = rx.try_recv() {
                reporter.line(stream, &line).await;
            }
            match exit {
                Ok((Exit::Code(0), command_time)) => {
                    let own = command_time.as_secs_f64();
                    let setup = started.elapsed().as_secs_f64() - own;
                    reporter
                        .system(format!(
                            "The {name} command finished in {own:.3} s (sandbox set-up {setup:.3} s)"
                        ))
                        .await;
                }
                Ok((exit, _)) => {
                    return Err(fail(format!(
                        "the {name} command {exit}{}",
                        disk_full_note(work)
                    )));
                }
                Err(e) => {
                    return Err(fail(format!(
                        "the {name} command could not run: {e}{}",
                        disk_full_note(work)
                    )));
                }
            }
        }
    }

    let output = root.join(&plan.output_dir);
    // The build may have replaced the output folder by a link: it must stay inside.
    let output = match output.canonicalize() {
        Ok(real) if real.starts_with(&checkout) && real.is_dir() => real,
        Ok(real) if !real.starts_with(&checkout) => {
            return Err(fail(format!(
                "the output folder {:?} is a link that points outside the repository; nothing was uploaded",
                plan.output_dir
            )));
        }
        _ => {
            return Err(fail(format!(
                "the output folder {:?} does not exist after the build",
                plan.output_dir
            )));
        }
    };
    let files = upload::collect(&output).map_err(fail)?;
    if files.is_empty() {
        return Err(fail(format!(
            "the output folder {:?} is empty",
            plan.output_dir
        )));
    }
    let _ = reporter.event(BuildEventKind::Uploading).await;
    reporter
        .system(format!("Uploading {} files", files.len()))
        .await;
    let store = config.store();
    upload::upload(&store, &spec.deployment_id, files)
        .await
        .map_err(|e| fail(format!("upload failed: {e}")))
}

/// Puts corepack's pnpm and yarn shims in `tools/bin` (and an empty `tools/corepack`
/// for what they download): inside the sandbox they run the version the project pins
/// in `packageManager`, or corepack's default.
async fn corepack_shims(tools: &Path) -> Result<(), String> {
    let bin = tools.join("bin");
    std::fs::create_dir_all(&bin)
        .and_then(|()| std::fs::create_dir_all(tools.join("corepack")))
        .map_err(|e| format!("could not prepare the package manager: {e}"))?;
    let output = tokio::process::Command::new("corepack")
        .args(["enable", "--install-directory"])
        .arg(&bin)
        .args(["pnpm", "yarn"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .await
        .map_err(|e| {
            format!("corepack is not installed on this platform ({e}): pnpm and yarn need it")
        })?;
    if !output.status.success() {
        return Err(format!(
            "corepack could not set up pnpm and yarn: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// The `user:password` of a URL and its password alone, to mask in every log line.
fn url_credentials(url: &str) -> Vec<String> {
    let redacted = validate::redact_url(url);
    if redacted == url {
        return Vec::new();
    }
    let rest = url.split_once("://").map_or("", |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let userinfo = authority
        .rsplit_once('@')
        .map_or("", |(userinfo, _)| userinfo);
    let mut found = vec![userinfo.to_string()];
    if let Some((_, password)) = userinfo.split_once(':') {
        found.push(password.to_string());
    }
    found.retain(|s| s.len() >= 3);
    found
}
