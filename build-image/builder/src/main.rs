//! `builder`: runs one build task. Exchanges its grant (`DEPLOYSPHERE_BUILD_GRANT`)
//! at the API (`DEPLOYSPHERE_API_URL`) for its credentials, reads the deployment's
//! [`BuildSpec`] from the S3 object `DEPLOYSPHERE_BUILD_SPEC_KEY` and the platform
//! endpoints from the environment; exits 0
//! once its final report is delivered (whatever the build's outcome), non-zero when
//! it could not report.

use std::path::PathBuf;

use anyhow::Context;
use deploysphere_adapters::kafka::KafkaSettings;
use deploysphere_adapters::s3::S3Config;
use deploysphere_builder::credentials::GrantCredentials;
use deploysphere_builder::{BuilderConfig, run};
use deploysphere_core::BuildSpec;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} must be set"))
}

/// The build spec: the object named by `DEPLOYSPHERE_BUILD_SPEC_KEY` in the sites
/// bucket. The launcher leaves it there (both shapes) so that the project's secrets
/// are in neither the task's overrides nor the process environment.
/// Reads the build spec, trying again for a minute while S3 fails (each read is
/// itself retried by the S3 client).
async fn spec(config: &BuilderConfig, key: &str) -> anyhow::Result<BuildSpec> {
    let store = config.store();
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let json = loop {
        match store.get(key).await {
            Ok(json) => break json,
            Err(e) if std::time::Instant::now() < give_up => {
                eprintln!("[builder] reading the build spec failed, trying again: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            Err(e) => {
                return Err(anyhow::anyhow!(
                    "the build could not read its build spec from S3: {e}"
                ));
            }
        }
    };
    let json = json.with_context(|| format!("the build spec {key} does not exist"))?;
    serde_json::from_slice(&json).with_context(|| format!("the build spec {key} is not valid"))
}

/// The deployment a build spec key belongs to (`staging/<id>/build-spec.json`).
fn deployment_of_spec(key: &str) -> Option<&str> {
    key.strip_prefix("staging/")?.split('/').next()
}

/// The Redis URL: `DEPLOYSPHERE_REDIS_URL`, or (AWS shape) host, port, the builds'
/// Redis user (`DEPLOYSPHERE_REDIS_USER`, which may only append live lines) and its
/// password, over TLS.
fn redis_url() -> Option<String> {
    if let Ok(url) = std::env::var("DEPLOYSPHERE_REDIS_URL") {
        return Some(url);
    }
    let host = std::env::var("DEPLOYSPHERE_REDIS_HOST").ok()?;
    let port = std::env::var("DEPLOYSPHERE_REDIS_PORT").unwrap_or_else(|_| "6379".into());
    let user = std::env::var("DEPLOYSPHERE_REDIS_USER").unwrap_or_default();
    Some(match std::env::var("DEPLOYSPHERE_REDIS_AUTH") {
        Ok(token) => format!("rediss://{user}:{token}@{host}:{port}"),
        Err(_) => format!("redis://{host}:{port}"),
    })
}

fn config() -> anyhow::Result<BuilderConfig> {
    let credentials = GrantCredentials::new(
        &env("DEPLOYSPHERE_API_URL")?,
        &env("DEPLOYSPHERE_BUILD_GRANT")?,
    );
    credentials.renew_in_background();
    let config = BuilderConfig {
        kafka: KafkaSettings::from_vars(|name| std::env::var(name).ok())
            .map_err(anyhow::Error::msg)?,
        s3: S3Config {
            endpoint: std::env::var("DEPLOYSPHERE_S3_ENDPOINT").ok(),
            region: std::env::var("DEPLOYSPHERE_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            bucket: env("DEPLOYSPHERE_S3_BUCKET")?,
            access_key: String::new(),
            secret_key: String::new(),
            session_token: None,
        },
        grant: credentials,
        redis_url: redis_url(),
        work_dir: PathBuf::from(
            std::env::var("DEPLOYSPHERE_WORK_DIR")
                .unwrap_or_else(|_| "/tmp/deploysphere-builds".into()),
        ),
        allow_local_sources: std::env::var("DEPLOYSPHERE_ALLOW_LOCAL_SOURCES")
            .is_ok_and(|v| v == "1"),
        cache_cap_bytes: match std::env::var("DEPLOYSPHERE_BUILD_CACHE_MAX_MB") {
            Ok(mb) => {
                mb.trim().parse::<u64>().map_err(|_| {
                    anyhow::anyhow!(
                        "DEPLOYSPHERE_BUILD_CACHE_MAX_MB must be a whole number of MB, not {mb:?}"
                    )
                })? * 1024
                    * 1024
            }
            Err(_) => deploysphere_builder::cache::DEFAULT_PROJECT_CAP_BYTES,
        },
    };
    Ok(config)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The platform's clients (Kafka above all) log through tracing: into the task's
    // own log, where a refused token or a failed handshake must show.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let config = config()?;
    let key = env("DEPLOYSPHERE_BUILD_SPEC_KEY")?;
    let spec = match spec(&config, &key).await {
        Ok(spec) => spec,
        Err(e) => {
            if let Some(id) = deployment_of_spec(&key) {
                let reason = format!("{e:#}");
                if let Err(report) =
                    deploysphere_builder::report_early_failure(&config, id, &reason).await
                {
                    eprintln!("[builder] could not report the failure: {report:#}");
                }
            }
            return Err(e);
        }
    };
    std::fs::create_dir_all(&config.work_dir)?;
    let succeeded = run(&spec, &config).await?;
    eprintln!(
        "[builder] deployment {} {}",
        spec.deployment_id,
        if succeeded { "READY" } else { "FAILED" }
    );
    Ok(())
}
