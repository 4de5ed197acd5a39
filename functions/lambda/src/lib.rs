//! What the AWS entry points share: settings from the environment (secrets from
//! Secrets Manager, named by ARN), the clients built from them, and the decoding of
//! the event shapes that are not already a handler's input.
//!
//! Every variable has a plain form for running an entry point by hand against local
//! servers (`DEPLOYSPHERE_DATABASE_URL`, `DEPLOYSPHERE_CLICKHOUSE_PASSWORD`,
//! `DEPLOYSPHERE_REDIS_URL`); on AWS the template sets the secret-backed forms.

use std::sync::Arc;

use anyhow::{Context, bail};
use aws_lambda_events::event::kafka::KafkaEvent;
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::kafka::{DeadLetters, KafkaAuth, KafkaContext, KafkaSettings};
use deploysphere_adapters::pg::{self, Db};
use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_core::{BuildEvent, Launcher};
use deploysphere_ecs::{AwsAccess, EcsLauncher, EcsSettings};
use deploysphere_events::ecs::{TaskStateChangeEvent, task_stopped};
use deploysphere_events::{Deployments, PlatformKey, SchedulerConfig};
use serde_json::Value;

pub use lambda_http;
pub use lambda_runtime;

/// Reads settings: the process environment, or a map in tests.
pub trait Source: Send + Sync {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct Environment;

impl Source for Environment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Source for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Settings and secrets of one entry point.
pub struct Settings {
    source: Box<dyn Source>,
    secrets: Option<aws_sdk_secretsmanager::Client>,
}

impl Settings {
    pub fn new(source: impl Source + 'static) -> Self {
        Settings {
            source: Box::new(source),
            secrets: None,
        }
    }

    /// The environment, with Secrets Manager reached through `access`.
    pub fn from_env() -> anyhow::Result<Self> {
        let mut settings = Settings::new(Environment);
        let config = settings.sdk_config()?;
        settings.secrets = Some(aws_sdk_secretsmanager::Client::new(&config));
        Ok(settings)
    }

    pub fn var(&self, name: &str) -> anyhow::Result<String> {
        self.source
            .var(name)
            .with_context(|| format!("{name} must be set (infra/template.yaml sets it)"))
    }

    pub fn var_or(&self, name: &str, default: &str) -> String {
        self.source.var(name).unwrap_or_else(|| default.to_string())
    }

    /// `plain` if set, else the secret whose ARN is in `arn_var`.
    async fn secret(&self, plain: &str, arn_var: &str) -> anyhow::Result<String> {
        if let Some(value) = self.source.var(plain) {
            return Ok(value);
        }
        let Some(arn) = self.source.var(arn_var) else {
            bail!("set {plain} or {arn_var}");
        };
        let client = self
            .secrets
            .as_ref()
            .with_context(|| format!("{arn_var} is set but Secrets Manager is not configured"))?;
        let value = client
            .get_secret_value()
            .secret_id(&arn)
            .send()
            .await
            .with_context(|| format!("reading the secret {arn}"))?;
        value
            .secret_string()
            .map(str::to_string)
            .with_context(|| format!("the secret {arn} has no string value"))
    }

    /// The AWS SDK configuration of this function or task.
    pub fn sdk_config(&self) -> anyhow::Result<aws_types::SdkConfig> {
        self.aws_access()?
            .sdk_config()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn aws_access(&self) -> anyhow::Result<AwsAccess> {
        Ok(AwsAccess {
            region: self.var_or("AWS_REGION", "us-east-1"),
            endpoint: self.source.var("DEPLOYSPHERE_AWS_ENDPOINT"),
            credentials: self
                .source
                .var("AWS_ACCESS_KEY_ID")
                .zip(self.source.var("AWS_SECRET_ACCESS_KEY"))
                .map(|(key, secret)| (key, secret, self.source.var("AWS_SESSION_TOKEN"))),
        })
    }

    /// The Kafka brokers and a client context for them: MSK IAM tokens are signed
    /// with this process's AWS identity (see [`KafkaSettings::from_vars`]).
    pub fn kafka(&self) -> anyhow::Result<(KafkaSettings, KafkaContext)> {
        let settings =
            KafkaSettings::from_vars(|name| self.source.var(name)).map_err(anyhow::Error::msg)?;
        let credentials = match settings.auth {
            KafkaAuth::MskIam => Some(
                self.aws_access()?
                    .sdk_config()
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .credentials_provider()
                    .context("no AWS credentials to sign MSK IAM tokens")?,
            ),
            _ => None,
        };
        let context = settings.context(credentials).map_err(anyhow::Error::msg)?;
        Ok((settings, context))
    }

    /// The Postgres URL: `DEPLOYSPHERE_DATABASE_URL`, or the RDS-managed secret
    /// (`{"username", "password"}`) with `DEPLOYSPHERE_DATABASE_HOST` and `_NAME`.
    pub async fn database_url(&self) -> anyhow::Result<String> {
        if let Some(url) = self.source.var("DEPLOYSPHERE_DATABASE_URL") {
            return Ok(url);
        }
        let secret = self
            .secret(
                "DEPLOYSPHERE_DATABASE_SECRET",
                "DEPLOYSPHERE_DATABASE_SECRET_ARN",
            )
            .await?;
        database_url_from_secret(
            &secret,
            &self.var("DEPLOYSPHERE_DATABASE_HOST")?,
            &self.var_or("DEPLOYSPHERE_DATABASE_NAME", "deploysphere"),
        )
    }

    /// The database pool: over TLS when the URL says `sslmode=require` (RDS forces
    /// TLS), checking the server against `DEPLOYSPHERE_DATABASE_CA_FILE` (Amazon RDS's
    /// bundle) or else the system's roots.
    pub async fn db(&self) -> anyhow::Result<Db> {
        let url = self.database_url().await?;
        let pool = if url.contains("sslmode=require") {
            let certs = match self.source.var("DEPLOYSPHERE_DATABASE_CA_FILE") {
                Some(path) => pg::ServerCert::CaFile(path.into()),
                None => pg::ServerCert::SystemRoots,
            };
            pg::connect_tls(&url, 4, &certs)?
        } else {
            pg::connect(&url, 4)?
        };
        Ok(Db::new(pool))
    }

    pub async fn log_store(&self) -> anyhow::Result<LogStore> {
        let password = match self
            .secret(
                "DEPLOYSPHERE_CLICKHOUSE_PASSWORD",
                "DEPLOYSPHERE_CLICKHOUSE_PASSWORD_SECRET_ARN",
            )
            .await
        {
            Ok(password) => password,
            Err(_)
                if self
                    .source
                    .var("DEPLOYSPHERE_CLICKHOUSE_PASSWORD_SECRET_ARN")
                    .is_none() =>
            {
                String::new()
            }
            Err(e) => return Err(e),
        };
        Ok(LogStore::new(
            &self.var("DEPLOYSPHERE_CLICKHOUSE_URL")?,
            &self.var_or("DEPLOYSPHERE_CLICKHOUSE_DATABASE", "deploysphere"),
            &self.var_or("DEPLOYSPHERE_CLICKHOUSE_USER", "default"),
            &password,
        ))
    }

    /// `DEPLOYSPHERE_REDIS_URL`, or host, port, the platform's Redis user
    /// (`DEPLOYSPHERE_REDIS_USER`) and its password secret (TLS).
    pub async fn redis_url(&self) -> anyhow::Result<String> {
        if let Some(url) = self.source.var("DEPLOYSPHERE_REDIS_URL") {
            return Ok(url);
        }
        let host = self.var("DEPLOYSPHERE_REDIS_HOST")?;
        let port = self.var_or("DEPLOYSPHERE_REDIS_PORT", "6379");
        let token = self
            .secret(
                "DEPLOYSPHERE_REDIS_AUTH",
                "DEPLOYSPHERE_REDIS_AUTH_SECRET_ARN",
            )
            .await?;
        let user = self.var_or("DEPLOYSPHERE_REDIS_USER", "");
        Ok(format!("rediss://{user}:{token}@{host}:{port}"))
    }

    /// The platform key every build's signing key is derived from:
    /// `DEPLOYSPHERE_BUILD_SIGNING_KEY`, or the secret in
    /// `DEPLOYSPHERE_BUILD_SIGNING_KEY_SECRET_ARN` (the template's `BuildSigningKey`).
    pub async fn build_keys(&self) -> anyhow::Result<PlatformKey> {
        let secret = self
            .secret(
                "DEPLOYSPHERE_BUILD_SIGNING_KEY",
                "DEPLOYSPHERE_BUILD_SIGNING_KEY_SECRET_ARN",
            )
            .await?;
        PlatformKey::new(secret.trim().as_bytes()).map_err(anyhow::Error::msg)
    }

    /// What the WebSocket handler and the relay need: the database, the log store,
    /// Redis at `redis_url`, and `PostToConnection` on `DEPLOYSPHERE_WS_ENDPOINT`.
    pub async fn ws_context(&self, redis_url: &str) -> anyhow::Result<deploysphere_ws::WsContext> {
        let redis = redis::Client::open(redis_url)?
            .get_multiplexed_async_connection()
            .await?;
        Ok(deploysphere_ws::WsContext {
            db: self.db().await?,
            logs: self.log_store().await?,
            redis,
            poster: Arc::new(deploysphere_ws::ApiGatewayPoster::from_sdk_config(
                &self.sdk_config()?,
                &self.var("DEPLOYSPHERE_WS_ENDPOINT")?,
            )),
            hash_token: deploysphere_api::hash_token,
            build_keys: self.build_keys().await?,
        })
    }

    /// The deployment service with the ECS launcher and the edge's host records.
    pub async fn deployments(&self, db: Db) -> anyhow::Result<Deployments> {
        let settings = EcsSettings {
            cluster: self.var("DEPLOYSPHERE_ECS_CLUSTER")?,
            task_definition: self.var("DEPLOYSPHERE_BUILD_TASK_DEFINITION")?,
            subnets: self
                .var("DEPLOYSPHERE_BUILD_SUBNETS")?
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            security_group: self.var("DEPLOYSPHERE_BUILD_SECURITY_GROUP")?,
            upload_role_arn: self.var("DEPLOYSPHERE_BUILD_UPLOAD_ROLE_ARN")?,
            bucket: self.var("DEPLOYSPHERE_BUCKET")?,
            partition: self.var_or("DEPLOYSPHERE_AWS_PARTITION", "aws"),
            build_image: self.source.var("DEPLOYSPHERE_BUILD_IMAGE"),
        };
        let launcher = EcsLauncher::new(&self.aws_access()?, settings, self.object_store()?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let number = |name: &str, default: &str| -> anyhow::Result<i64> {
            let value = self.var_or(name, default);
            match value.parse::<i64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => anyhow::bail!("{name} must be a whole number of at least 1, not {value:?}"),
            }
        };
        let max_builds = number("DEPLOYSPHERE_MAX_BUILDS", "4")?;
        let scheduler = SchedulerConfig {
            max_concurrent_builds: max_builds,
            max_concurrent_builds_per_account: number("DEPLOYSPHERE_MAX_BUILDS_PER_ACCOUNT", "2")?,
            max_queued_per_account: number("DEPLOYSPHERE_MAX_QUEUED_PER_ACCOUNT", "25")?,
            start_timeout_secs: number("DEPLOYSPHERE_BUILD_START_TIMEOUT", "1200")?,
            limits: deploysphere_core::Limits {
                max_fetch_mb: number("DEPLOYSPHERE_MAX_FETCH_MB", "2048")? as u64,
                ..deploysphere_core::Limits::default()
            },
            ..SchedulerConfig::default()
        };
        Ok(Deployments::new(
            db,
            Arc::new(launcher) as Arc<dyn Launcher>,
            scheduler,
            self.build_keys().await?,
        )
        .with_sites_bucket(self.object_store()?))
    }

    /// The sites bucket, through the task's or function's own credentials.
    pub fn object_store(&self) -> anyhow::Result<ObjectStore> {
        let var = |name: &str| self.var(name);
        Ok(ObjectStore::new(&S3Config {
            endpoint: self.source.var("DEPLOYSPHERE_S3_ENDPOINT"),
            region: self.var_or("AWS_REGION", "us-east-1"),
            bucket: var("DEPLOYSPHERE_BUCKET")?,
            access_key: var("AWS_ACCESS_KEY_ID")?,
            secret_key: var("AWS_SECRET_ACCESS_KEY")?,
            session_token: self.source.var("AWS_SESSION_TOKEN"),
        }))
    }
}

/// The Postgres URL for an RDS-managed master user secret.
pub fn database_url_from_secret(secret: &str, host: &str, name: &str) -> anyhow::Result<String> {
    let secret: Value = serde_json::from_str(secret).context("the database secret is not JSON")?;
    let field = |key: &str| {
        secret[key]
            .as_str()
            .with_context(|| format!("the database secret has no {key}"))
    };
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    Ok(format!(
        "postgres://{}:{}@{host}:5432/{name}?sslmode=require",
        encode(field("username")?),
        encode(field("password")?)
    ))
}

/// What an invocation of the events function carries.
#[derive(Debug)]
pub enum EventsInvocation {
    /// `deployment-events` records from the MSK event source mapping.
    Kafka(KafkaEvent),
    /// The report an ECS task state change stands for (none for a task that stopped
    /// after its build ended).
    TaskStopped(Option<BuildEvent>),
    /// The EventBridge schedule: the periodic sweep.
    Tick,
}

/// Reads an invocation of the events function.
pub fn events_invocation(payload: &Value) -> Result<EventsInvocation, String> {
    if payload["eventSource"] == "aws:kafka" {
        let event: KafkaEvent =
            serde_json::from_value(payload.clone()).map_err(|e| format!("MSK event: {e}"))?;
        return Ok(EventsInvocation::Kafka(event));
    }
    if payload["source"] == "aws.ecs" {
        let event: TaskStateChangeEvent = serde_json::from_value(payload.clone())
            .map_err(|e| format!("ECS task state change: {e}"))?;
        return Ok(EventsInvocation::TaskStopped(task_stopped(&event)));
    }
    if payload["source"] == "aws.events" && payload["detail-type"] == "Scheduled Event" {
        return Ok(EventsInvocation::Tick);
    }
    Err("neither an MSK event, an ECS task state change nor a scheduled event".into())
}

/// Handles one invocation of the events function. An error is transient: the
/// invocation fails and is delivered again (MSK batch, EventBridge retry), or the
/// next scheduled sweep does the work.
pub async fn handle_events_invocation(
    deployments: &Deployments,
    dead_letters: &dyn DeadLetters,
    payload: &Value,
) -> anyhow::Result<()> {
    match events_invocation(payload).map_err(|e| anyhow::anyhow!(e))? {
        EventsInvocation::Kafka(batch) => {
            let report = deployments.handle_msk_event(dead_letters, &batch).await?;
            tracing::info!(
                applied = report.applied,
                set_aside = report.set_aside,
                "deployment events applied"
            );
        }
        EventsInvocation::TaskStopped(None) => {}
        EventsInvocation::TaskStopped(Some(report)) => {
            match deployments.handle_event(&report).await {
                Ok(_) => {}
                Err(e) if e.is_permanent() => {
                    tracing::warn!(error = %e, deployment_id = %report.deployment_id, "task stop of an unknown deployment ignored");
                }
                Err(e) => return Err(e.into()),
            }
        }
        EventsInvocation::Tick => {
            let report = deployments.tick().await?;
            tracing::info!(
                lost = report.lost,
                overdue = report.overdue,
                launched = report.launched,
                "sweep"
            );
        }
    }
    Ok(())
}

/// Logs as JSON lines for CloudWatch.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!(
            "{}/../../tests/fixtures/events/{name}",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("JSON")
    }

    #[test]
    fn the_events_function_reads_msk_events_and_ecs_task_state_changes() {
        let EventsInvocation::Kafka(event) =
            events_invocation(&fixture("msk-deployment-events.json")).unwrap()
        else {
            panic!("an MSK event");
        };
        assert_eq!(event.records["deployment-events-0"].len(), 4);
        let stopped = events_invocation(&fixture("ecs-task-stopped-oom.json")).unwrap();
        assert!(
            matches!(stopped, EventsInvocation::TaskStopped(Some(_))),
            "{stopped:?}"
        );
        let stopped = events_invocation(&fixture("ecs-task-stopped-ok.json")).unwrap();
        assert!(
            matches!(stopped, EventsInvocation::TaskStopped(None)),
            "{stopped:?}"
        );
        let tick = events_invocation(&fixture("eventbridge-scheduled-sweep.json")).unwrap();
        assert!(matches!(tick, EventsInvocation::Tick), "{tick:?}");
        assert!(events_invocation(&serde_json::json!({"hello": 1})).is_err());
    }

    #[test]
    fn the_rds_secret_becomes_a_url_with_the_password_escaped() {
        let url = database_url_from_secret(
            r#"{"username":"dsadmin","password":"p@ss:w/rd"}"#,
            "db.example.internal",
            "deploysphere",
        )
        .unwrap();
        assert_eq!(
            url,
            "postgres://dsadmin:p%40ss%3Aw%2Frd@db.example.internal:5432/deploysphere?sslmode=require"
        );
        assert!(database_url_from_secret("{}", "h", "n").is_err());
    }

    #[tokio::test]
    async fn a_missing_setting_names_the_variable() {
        let settings = Settings::new(std::collections::HashMap::new());
        let error = settings.database_url().await.unwrap_err().to_string();
        assert!(
            error.contains("DEPLOYSPHERE_DATABASE_SECRET_ARN"),
            "{error}"
        );
        let error = settings.log_store().await.err().unwrap().to_string();
        assert!(error.contains("DEPLOYSPHERE_CLICKHOUSE_URL"), "{error}");
    }
}
