//! The trusted part of a build task: fetch the source, plan the build, run the user's
//! commands in the sandbox, upload the output, and report every step.

mod build;
pub mod cache;
pub mod credentials;
pub mod live;
pub mod node;
pub mod report;
pub mod sandbox;
pub mod source;
pub mod upload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_credential_types::provider::SharedCredentialsProvider;
use deploysphere_adapters::kafka::{KafkaAuth, KafkaContext, KafkaSettings};
use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_core::{BuildEventKind, BuildSpec, validate};

use crate::credentials::GrantCredentials;
use crate::report::Reporter;

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
    /// The most a project's build cache archives may take in all.
    pub cache_cap_bytes: u64,
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
    let mut build = build::Build::new(spec, config, &work, &mut reporter);
    let outcome = build.run().await;
    let phases = std::mem::take(&mut build.phases);
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
                phases,
            }
        }
        Err(Failure(reason)) => {
            let reason = reporter.mask(&reason);
            reporter.system(format!("Build failed: {reason}")).await;
            BuildEventKind::Failed {
                reason,
                log_lines: None,
                phases,
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
    let mut final_event = final_event;
    if let BuildEventKind::Finished { log_lines, .. } | BuildEventKind::Failed { log_lines, .. } =
        &mut final_event
    {
        *log_lines = Some(total);
    }
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
            phases: Vec::new(),
        })
        .await
}

/// When the disk that holds `path` is (nearly) full, why a step that failed there
/// failed: "; the disk of the build folder is full (No space left on device: …)".
pub(crate) fn disk_full_note(path: &Path) -> String {
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
