//! `builder`: runs one build task. Reads the deployment's [`BuildSpec`] from
//! `DEPLOYSPHERE_BUILD_SPEC` and the platform endpoints from the environment; exits 0
//! once its final report is delivered (whatever the build's outcome), non-zero when
//! it could not report.

use std::path::PathBuf;

use anyhow::Context;
use deploysphere_adapters::s3::S3Config;
use deploysphere_builder::{BuilderConfig, run};
use deploysphere_core::BuildSpec;

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("{name} must be set"))
}

fn config() -> anyhow::Result<(BuildSpec, BuilderConfig)> {
    let spec: BuildSpec = serde_json::from_str(&env("DEPLOYSPHERE_BUILD_SPEC")?)
        .context("DEPLOYSPHERE_BUILD_SPEC is not a valid build spec")?;
    let config = BuilderConfig {
        kafka_brokers: env("DEPLOYSPHERE_KAFKA_BROKERS")?,
        s3: S3Config {
            endpoint: std::env::var("DEPLOYSPHERE_S3_ENDPOINT").ok(),
            region: std::env::var("DEPLOYSPHERE_S3_REGION").unwrap_or_else(|_| "us-east-1".into()),
            bucket: env("DEPLOYSPHERE_S3_BUCKET")?,
            access_key: env("DEPLOYSPHERE_S3_ACCESS_KEY")?,
            secret_key: env("DEPLOYSPHERE_S3_SECRET_KEY")?,
            session_token: std::env::var("DEPLOYSPHERE_S3_SESSION_TOKEN").ok(),
        },
        redis_url: std::env::var("DEPLOYSPHERE_REDIS_URL").ok(),
        work_dir: PathBuf::from(
            std::env::var("DEPLOYSPHERE_WORK_DIR")
                .unwrap_or_else(|_| "/tmp/deploysphere-builds".into()),
        ),
        allow_local_sources: std::env::var("DEPLOYSPHERE_ALLOW_LOCAL_SOURCES")
            .is_ok_and(|v| v == "1"),
    };
    Ok((spec, config))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (spec, config) = config()?;
    std::fs::create_dir_all(&config.work_dir)?;
    let succeeded = run(&spec, &config).await?;
    eprintln!(
        "[builder] deployment {} {}",
        spec.deployment_id,
        if succeeded { "READY" } else { "FAILED" }
    );
    Ok(())
}
