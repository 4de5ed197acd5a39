//! Postgres: the metadata store (accounts, tokens, projects, deployments, aliases).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use deploysphere_core::{BuildSettings, DeploymentState, EnvVar, Phase};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

pub use deadpool_postgres::{Pool as PgPool, PoolError};
pub use tokio_postgres::Error as PgError;

/// The numbered migrations of `schemas/postgres/`, applied in order.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_init",
        include_str!("../../../schemas/postgres/0001_init.sql"),
    ),
    (
        "0002_project_names",
        include_str!("../../../schemas/postgres/0002_project_names.sql"),
    ),
    (
        "0003_log_lines",
        include_str!("../../../schemas/postgres/0003_log_lines.sql"),
    ),
    (
        "0004_build_grants",
        include_str!("../../../schemas/postgres/0004_build_grants.sql"),
    ),
    (
        "0005_fair_scheduling",
        include_str!("../../../schemas/postgres/0005_fair_scheduling.sql"),
    ),
    (
        "0006_pinned_production",
        include_str!("../../../schemas/postgres/0006_pinned_production.sql"),
    ),
    (
        "0007_build_phases",
        include_str!("../../../schemas/postgres/0007_build_phases.sql"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    #[error("database: {0}")]
    Query(#[from] PgError),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

impl DbError {
    /// The constraint (or unique index) a unique violation broke.
    pub fn violated_constraint(&self) -> Option<&str> {
        match self {
            DbError::Query(e) if self.is_unique_violation() => {
                e.as_db_error().and_then(|d| d.constraint())
            }
            _ => None,
        }
    }

    /// True for a unique-constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Query(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION))
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// How the server's TLS certificate is checked when the URL asks for TLS
/// (`sslmode=require` or `prefer`).
#[derive(Debug, Clone)]
pub enum ServerCert {
    /// Against the system's trusted roots.
    SystemRoots,
    /// Against the CA certificates (PEM) in this file, e.g. Amazon RDS's bundle.
    CaFile(std::path::PathBuf),
}

/// Opens a pool on a `postgres://` URL, without TLS (local servers, `sslmode`
/// absent or `disable`).
pub fn connect(url: &str, max_size: usize) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse()?;
    let manager = Manager::from_config(config, NoTls, manager_config());
    Ok(Pool::builder(manager).max_size(max_size).build()?)
}

/// Opens a pool on a `postgres://` URL whose `sslmode` is `require` (RDS), checking
/// the server's certificate and host name with `certs`.
pub fn connect_tls(url: &str, max_size: usize, certs: &ServerCert) -> anyhow::Result<Pool> {
    let config: tokio_postgres::Config = url.parse()?;
    anyhow::ensure!(
        config.get_ssl_mode() == tokio_postgres::config::SslMode::Require,
        "the database URL must say sslmode=require to use TLS"
    );
    let mut roots = rustls::RootCertStore::empty();
    match certs {
        ServerCert::SystemRoots => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
        ServerCert::CaFile(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert?)?;
            }
        }
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "no trusted CA certificate for the database"
    );
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let manager = Manager::from_config(
        config,
        tokio_postgres_rustls::MakeRustlsConnect::new(tls),
        manager_config(),
    );
    Ok(Pool::builder(manager).max_size(max_size).build()?)
}

fn manager_config() -> ManagerConfig {
    ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    }
}

/// Applies every migration that has not run yet, each in its own transaction.
pub async fn migrate(pool: &Pool) -> DbResult<usize> {
    let mut client = pool.get().await?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut applied = 0;
    for (name, sql) in MIGRATIONS {
        let tx = client.transaction().await?;
        tx.batch_execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
            .await?;
        let done = tx
            .query_opt("SELECT 1 FROM schema_migrations WHERE name = $1", &[name])
            .await?;
        if done.is_none() {
            tx.batch_execute(sql).await?;
            tx.execute("INSERT INTO schema_migrations (name) VALUES ($1)", &[name])
                .await?;
            applied += 1;
        }
        tx.commit().await?;
    }
    Ok(applied)
}

#[derive(Debug, Clone)]
pub struct Account {
    pub id: Uuid,
    pub name: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone)]
pub struct Project {
    pub id: Uuid,
    pub account_id: Uuid,
    pub name: String,
    pub slug: String,
    pub git_url: String,
    pub branch: Option<String>,
    pub build: BuildSettings,
    pub env: BTreeMap<String, EnvVar>,
    pub created_at: DateTime<Utc>,
    pub production_deployment_id: Option<Uuid>,
    /// Since when production is pinned (an explicit promote or rollback): READY
    /// deployments no longer take the alias over.
    pub production_pinned_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct Deployment {
    pub id: Uuid,
    pub project_id: Uuid,
    pub account_id: Uuid,
    pub project_slug: String,
    pub git_ref: String,
    pub state: DeploymentState,
    pub commit_sha: Option<String>,
    pub error: Option<String>,
    pub manifest_key: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ready_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub is_production: bool,
    /// Lines the build logged in all, once its final report is in.
    pub log_lines: Option<u64>,
    /// What the build detected and ran (framework, commands, output folder), once
    /// planned.
    pub plan: Option<serde_json::Value>,
    /// How long each phase of the build took, once its final report is in.
    pub phases: Vec<Phase>,
    /// Built without the build cache, as asked.
    pub no_cache: bool,
}

const PROJECT_COLUMNS: &str = "p.id, p.account_id, p.name, p.slug, p.git_url, p.branch, p.build, p.env, p.created_at, a.deployment_id, a.pinned_at";
const PROJECT_FROM: &str = "projects p LEFT JOIN aliases a ON a.project_id = p.id";
const DEPLOYMENT_COLUMNS: &str = "d.id, d.project_id, d.account_id, p.slug, d.git_ref, d.state, d.commit_sha, d.error, d.manifest_key, d.created_at, d.started_at, d.ready_at, d.finished_at, (a.deployment_id IS NOT NULL AND a.deployment_id = d.id), d.log_lines, d.plan, d.phases, d.no_cache";
const DEPLOYMENT_FROM: &str = "deployments d JOIN projects p ON p.id = d.project_id LEFT JOIN aliases a ON a.project_id = d.project_id";

fn project_from_row(row: &Row) -> DbResult<Project> {
    let build: serde_json::Value = row.get(6);
    let env: serde_json::Value = row.get(7);
    Ok(Project {
        id: row.get(0),
        account_id: row.get(1),
        name: row.get(2),
        slug: row.get(3),
        git_url: row.get(4),
        branch: row.get(5),
        build: serde_json::from_value(build)
            .map_err(|e| DbError::Corrupt(format!("projects.build: {e}")))?,
        env: serde_json::from_value(env)
            .map_err(|e| DbError::Corrupt(format!("projects.env: {e}")))?,
        created_at: row.get(8),
        production_deployment_id: row.get(9),
        production_pinned_at: row.get(10),
    })
}

fn deployment_from_row(row: &Row) -> DbResult<Deployment> {
    let state: String = row.get(5);
    Ok(Deployment {
        id: row.get(0),
        project_id: row.get(1),
        account_id: row.get(2),
        project_slug: row.get(3),
        git_ref: row.get(4),
        state: DeploymentState::parse(&state)
            .ok_or_else(|| DbError::Corrupt(format!("deployments.state {state:?}")))?,
        commit_sha: row.get(6),
        error: row.get(7),
        manifest_key: row.get(8),
        created_at: row.get(9),
        started_at: row.get(10),
        ready_at: row.get(11),
        finished_at: row.get(12),
        is_production: row.get(13),
        log_lines: row.get::<_, Option<i64>>(14).map(|n| n.max(0) as u64),
        plan: row.get(15),
        phases: match row.get::<_, Option<serde_json::Value>>(16) {
            Some(phases) => serde_json::from_value(phases)
                .map_err(|e| DbError::Corrupt(format!("deployments.phases: {e}")))?,
            None => Vec::new(),
        },
        no_cache: row.get(17),
    })
}

/// What a compare-and-set of a deployment's state did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateChange {
    /// The state was no longer the expected one: nothing changed.
    Stale,
    /// The state changed; `promoted` when the production alias moved with it.
    Changed { promoted: bool },
}

/// Typed access to the metadata tables.
#[derive(Clone)]
pub struct Db {
    pub pool: Pool,
}

/// What a presented build grant is good for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantUse {
    /// Unused, or used moments ago (a retry): exchange it.
    Good,
    Expired,
    /// Used a while ago: someone else holds a copy of it.
    UsedBefore,
}

impl Db {
    pub fn new(pool: Pool) -> Self {
        Db { pool }
    }

    pub async fn create_account(
        &self,
        name: &str,
        is_admin: bool,
        token_hash: &str,
    ) -> DbResult<Account> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let id = Uuid::new_v4();
        tx.execute(
            "INSERT INTO accounts (id, name, is_admin) VALUES ($1, $2, $3)",
            &[&id, &name, &is_admin],
        )
        .await?;
        tx.execute(
            "INSERT INTO api_tokens (token_hash, account_id) VALUES ($1, $2)",
            &[&token_hash, &id],
        )
        .await?;
        tx.commit().await?;
        Ok(Account {
            id,
            name: name.to_string(),
            is_admin,
        })
    }

    /// Whether the account is the platform's admin (false for no such account).
    pub async fn account_is_admin(&self, id: Uuid) -> DbResult<bool> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt("SELECT is_admin FROM accounts WHERE id = $1", &[&id])
            .await?;
        Ok(row.is_some_and(|row| row.get(0)))
    }

    pub async fn account_by_token_hash(&self, token_hash: &str) -> DbResult<Option<Account>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT a.id, a.name, a.is_admin FROM api_tokens t JOIN accounts a ON a.id = t.account_id WHERE t.token_hash = $1",
                &[&token_hash],
            )
            .await?;
        Ok(row.map(|row| Account {
            id: row.get(0),
            name: row.get(1),
            is_admin: row.get(2),
        }))
    }

    /// Inserts a project; fails with a unique violation when the slug is taken.
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_project(
        &self,
        account_id: Uuid,
        name: &str,
        slug: &str,
        git_url: &str,
        branch: Option<&str>,
        build: &BuildSettings,
        env: &BTreeMap<String, EnvVar>,
    ) -> DbResult<Project> {
        let client = self.pool.get().await?;
        let id = Uuid::new_v4();
        let build_json =
            serde_json::to_value(build).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let env_json = serde_json::to_value(env).map_err(|e| DbError::Corrupt(e.to_string()))?;
        let row = client
            .query_one(
                "INSERT INTO projects (id, account_id, name, slug, git_url, branch, build, env) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING created_at",
                &[&id, &account_id, &name, &slug, &git_url, &branch, &build_json, &env_json],
            )
            .await?;
        Ok(Project {
            id,
            account_id,
            name: name.to_string(),
            slug: slug.to_string(),
            git_url: git_url.to_string(),
            branch: branch.map(str::to_string),
            build: build.clone(),
            env: env.clone(),
            created_at: row.get(0),
            production_deployment_id: None,
            production_pinned_at: None,
        })
    }

    pub async fn slug_taken(&self, slug: &str) -> DbResult<bool> {
        let client = self.pool.get().await?;
        Ok(client
            .query_opt("SELECT 1 FROM projects WHERE slug = $1", &[&slug])
            .await?
            .is_some())
    }

    pub async fn list_projects(&self, account_id: Uuid) -> DbResult<Vec<Project>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {PROJECT_COLUMNS} FROM {PROJECT_FROM} WHERE p.account_id = $1 ORDER BY p.created_at DESC"),
                &[&account_id],
            )
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// A project of this account, by id or slug.
    pub async fn project(&self, account_id: Uuid, id_or_slug: &str) -> DbResult<Option<Project>> {
        let client = self.pool.get().await?;
        let row = match Uuid::parse_str(id_or_slug) {
            Ok(id) => {
                client
                    .query_opt(
                        &format!("SELECT {PROJECT_COLUMNS} FROM {PROJECT_FROM} WHERE p.account_id = $1 AND p.id = $2"),
                        &[&account_id, &id],
                    )
                    .await?
            }
            Err(_) => {
                client
                    .query_opt(
                        &format!("SELECT {PROJECT_COLUMNS} FROM {PROJECT_FROM} WHERE p.account_id = $1 AND p.slug = $2"),
                        &[&account_id, &id_or_slug],
                    )
                    .await?
            }
        };
        row.as_ref().map(project_from_row).transpose()
    }

    pub async fn project_by_id(&self, id: Uuid) -> DbResult<Option<Project>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {PROJECT_COLUMNS} FROM {PROJECT_FROM} WHERE p.id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// Queues a deployment unless its account already has `max_waiting` deployments
    /// waiting for a build slot (then `None`). Serialized per account, so concurrent
    /// requests cannot overshoot the cap.
    pub async fn insert_deployment(
        &self,
        project: &Project,
        git_ref: &str,
        no_cache: bool,
        max_waiting: i64,
    ) -> DbResult<Option<Deployment>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(7213, hashtext($1::uuid::text))",
            &[&project.account_id],
        )
        .await?;
        let waiting: i64 = tx
            .query_one(
                "SELECT count(*) FROM deployments WHERE account_id = $1 AND state = 'QUEUED' AND launched_at IS NULL",
                &[&project.account_id],
            )
            .await?
            .get(0);
        if waiting >= max_waiting {
            return Ok(None);
        }
        let id = Uuid::new_v4();
        tx.execute(
            "INSERT INTO deployments (id, project_id, account_id, git_ref, state, no_cache) VALUES ($1, $2, $3, $4, 'QUEUED', $5)",
            &[&id, &project.id, &project.account_id, &git_ref, &no_cache],
        )
        .await?;
        tx.execute(
            "INSERT INTO deployment_transitions (deployment_id, state) VALUES ($1, 'QUEUED')",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        drop(client);
        self.deployment(id)
            .await?
            .ok_or_else(|| DbError::Corrupt("inserted deployment vanished".into()))
            .map(Some)
    }

    pub async fn deployment(&self, id: Uuid) -> DbResult<Option<Deployment>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                &format!("SELECT {DEPLOYMENT_COLUMNS} FROM {DEPLOYMENT_FROM} WHERE d.id = $1"),
                &[&id],
            )
            .await?;
        row.as_ref().map(deployment_from_row).transpose()
    }

    /// The deployment only if it belongs to `account_id`.
    pub async fn deployment_of(&self, account_id: Uuid, id: Uuid) -> DbResult<Option<Deployment>> {
        Ok(self
            .deployment(id)
            .await?
            .filter(|d| d.account_id == account_id))
    }

    /// Newest first.
    pub async fn list_deployments(
        &self,
        project_id: Uuid,
        limit: i64,
    ) -> DbResult<Vec<Deployment>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                &format!("SELECT {DEPLOYMENT_COLUMNS} FROM {DEPLOYMENT_FROM} WHERE d.project_id = $1 ORDER BY d.created_at DESC LIMIT $2"),
                &[&project_id, &limit],
            )
            .await?;
        rows.iter().map(deployment_from_row).collect()
    }

    /// Ids of a project's most recent deployments, newest first.
    pub async fn deployment_ids(&self, project_id: Uuid, limit: i64) -> DbResult<Vec<Uuid>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM deployments WHERE project_id = $1 ORDER BY created_at DESC LIMIT $2",
                &[&project_id, &limit],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Compare-and-set of a deployment's state, recording the time of the change and the
    /// fields that come with it. A move to READY also makes the deployment production
    /// unless a deployment created later already is, in the same transaction, so a
    /// READY deployment is never left behind by a crash between the two.
    pub async fn set_state(
        &self,
        id: Uuid,
        from: DeploymentState,
        to: DeploymentState,
        error: Option<&str>,
        manifest_key: Option<&str>,
    ) -> DbResult<StateChange> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let row = tx
            .query_opt(
                "UPDATE deployments SET state = $3,
                    error = COALESCE($4, error),
                    manifest_key = COALESCE($5, manifest_key),
                    started_at = CASE WHEN $3 = 'BUILDING' THEN clock_timestamp() ELSE started_at END,
                    ready_at = CASE WHEN $3 = 'READY' THEN clock_timestamp() ELSE ready_at END,
                    finished_at = CASE WHEN $3 IN ('READY', 'FAILED', 'CANCELED') THEN clock_timestamp() ELSE finished_at END
                 WHERE id = $1 AND state = $2
                 RETURNING project_id",
                &[&id, &from.as_str(), &to.as_str(), &error, &manifest_key],
            )
            .await?;
        let Some(row) = row else {
            return Ok(StateChange::Stale);
        };
        tx.execute(
            "INSERT INTO deployment_transitions (deployment_id, state) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            &[&id, &to.as_str()],
        )
        .await?;
        let mut promoted = false;
        if to == DeploymentState::Ready {
            let project_id: Uuid = row.get(0);
            promoted = tx
                .execute(
                    "INSERT INTO aliases (project_id, deployment_id) VALUES ($1, $2)
                     ON CONFLICT (project_id) DO UPDATE SET deployment_id = EXCLUDED.deployment_id, updated_at = clock_timestamp()
                     WHERE aliases.pinned_at IS NULL
                       AND (SELECT created_at FROM deployments WHERE id = aliases.deployment_id)
                         < (SELECT created_at FROM deployments WHERE id = EXCLUDED.deployment_id)",
                    &[&project_id, &id],
                )
                .await?
                == 1;
        }
        tx.commit().await?;
        Ok(StateChange::Changed { promoted })
    }

    /// Live deployments whose build task should have ended long ago: launched more
    /// than their time limit (the project's, else `default_timeout_secs`) plus
    /// `grace_secs` ago.
    pub async fn overdue_deployments(
        &self,
        default_timeout_secs: i64,
        grace_secs: i64,
    ) -> DbResult<Vec<Uuid>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT d.id FROM deployments d JOIN projects p ON p.id = d.project_id
                 WHERE d.state IN ('QUEUED', 'BUILDING', 'UPLOADING') AND d.launched_at IS NOT NULL
                   AND d.launched_at + make_interval(secs => COALESCE((p.build->>'timeout_seconds')::bigint, $1) + $2) < now()",
                &[&default_timeout_secs, &grace_secs],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    pub async fn set_log_lines(&self, id: Uuid, lines: u64) -> DbResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE deployments SET log_lines = $2 WHERE id = $1 AND log_lines IS NULL",
                &[&id, &(lines as i64)],
            )
            .await?;
        Ok(())
    }

    /// Records the phase timings of a build's final report (the first report wins).
    pub async fn set_phases(&self, id: Uuid, phases: &[Phase]) -> DbResult<()> {
        let phases = serde_json::to_value(phases)
            .map_err(|e| DbError::Corrupt(format!("deployments.phases: {e}")))?;
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE deployments SET phases = $2 WHERE id = $1 AND phases IS NULL",
                &[&id, &phases],
            )
            .await?;
        Ok(())
    }

    pub async fn set_plan(
        &self,
        id: Uuid,
        commit_sha: &str,
        plan: &serde_json::Value,
    ) -> DbResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "UPDATE deployments SET commit_sha = $2, plan = $3 WHERE id = $1",
                &[&id, &commit_sha, plan],
            )
            .await?;
        Ok(())
    }

    /// Stores a build grant (its SHA-256) valid for `valid_for_s` seconds.
    pub async fn insert_build_grant(
        &self,
        deployment_id: Uuid,
        token_hash: &str,
        valid_for_s: i64,
    ) -> DbResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO build_grants (token_hash, deployment_id, expires_at) VALUES ($1, $2, now() + make_interval(secs => $3::bigint))",
                &[&token_hash, &deployment_id, &valid_for_s],
            )
            .await?;
        Ok(())
    }

    /// Uses a build grant: the deployment it was for and whether it may be used now.
    /// A grant is good until it expires and, once used, for `retry_s` seconds more
    /// (the same build trying again after an answer it never got).
    pub async fn redeem_build_grant(
        &self,
        token_hash: &str,
        retry_s: i64,
    ) -> DbResult<Option<(Uuid, GrantUse)>> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "WITH before AS (SELECT deployment_id, expires_at, used_at FROM build_grants WHERE token_hash = $1 FOR UPDATE) \
                 UPDATE build_grants g SET used_at = COALESCE(g.used_at, now()) FROM before WHERE g.token_hash = $1 \
                 RETURNING before.deployment_id, before.expires_at > now(), \
                   before.used_at IS NULL OR before.used_at > now() - make_interval(secs => $2::bigint)",
                &[&token_hash, &retry_s],
            )
            .await?;
        Ok(row.map(|row| {
            let usable = match (row.get::<_, bool>(1), row.get::<_, bool>(2)) {
                (false, _) => GrantUse::Expired,
                (true, false) => GrantUse::UsedBefore,
                (true, true) => GrantUse::Good,
            };
            (row.get(0), usable)
        }))
    }

    /// Drops every grant of a deployment (its build ended), and expired ones.
    pub async fn forget_build_grants(&self, deployment_id: Uuid) -> DbResult<()> {
        let client = self.pool.get().await?;
        client
            .execute(
                "DELETE FROM build_grants WHERE deployment_id = $1 OR expires_at < now()",
                &[&deployment_id],
            )
            .await?;
        Ok(())
    }

    /// Points the production alias at a READY deployment of the project (rollback or
    /// roll-forward, no rebuild), pinned (later READY deployments leave it alone) or
    /// not (they take it over again). Returns false when it is not a READY deployment
    /// of the project. A READY transition racing it serializes on the alias row: the
    /// promote wins whichever commits first.
    pub async fn promote(
        &self,
        project_id: Uuid,
        deployment_id: Uuid,
        pin: bool,
    ) -> DbResult<bool> {
        let client = self.pool.get().await?;
        let changed = client
            .execute(
                "INSERT INTO aliases (project_id, deployment_id, pinned_at)
                 SELECT project_id, id, CASE WHEN $3 THEN clock_timestamp() END FROM deployments
                 WHERE id = $2 AND project_id = $1 AND state = 'READY'
                 ON CONFLICT (project_id) DO UPDATE SET deployment_id = EXCLUDED.deployment_id,
                     pinned_at = EXCLUDED.pinned_at, updated_at = clock_timestamp()",
                &[&project_id, &deployment_id, &pin],
            )
            .await?;
        Ok(changed == 1)
    }

    /// The deployment a host names: the production alias of `slug`, or the READY
    /// deployment of `slug` whose id starts with `short_id`.
    pub async fn route(
        &self,
        slug: &str,
        short_id: Option<&str>,
    ) -> DbResult<Option<(Uuid, String)>> {
        let client = self.pool.get().await?;
        let row = match short_id {
            None => {
                client
                    .query_opt(
                        "SELECT d.id, d.manifest_key FROM projects p JOIN aliases a ON a.project_id = p.id JOIN deployments d ON d.id = a.deployment_id WHERE p.slug = $1",
                        &[&slug],
                    )
                    .await?
            }
            Some(short_id) => {
                let pattern = format!("{short_id}%");
                client
                    .query_opt(
                        "SELECT d.id, d.manifest_key FROM projects p JOIN deployments d ON d.project_id = p.id WHERE p.slug = $1 AND d.state = 'READY' AND d.id::text LIKE $2 ORDER BY d.created_at DESC LIMIT 1",
                        &[&slug, &pattern],
                    )
                    .await?
            }
        };
        Ok(row.and_then(|row| {
            let key: Option<String> = row.get(1);
            key.map(|key| (row.get(0), key))
        }))
    }

    /// Claims a waiting deployment if the platform has fewer than `platform_limit`
    /// builds running, fairly across accounts: of the accounts under `account_limit`
    /// with builds waiting, the one with the fewest running, then the one served least
    /// recently (round-robin), gets its oldest waiting deployment. Serialized by an
    /// advisory lock so two schedulers never overshoot a limit.
    pub async fn claim_next(
        &self,
        platform_limit: i64,
        account_limit: i64,
    ) -> DbResult<Option<Uuid>> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock(7212)", &[])
            .await?;
        let running: i64 = tx
            .query_one(
                "SELECT count(*) FROM deployments WHERE state IN ('QUEUED', 'BUILDING', 'UPLOADING') AND launched_at IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        if running >= platform_limit {
            return Ok(None);
        }
        let row = tx
            .query_opt(
                "WITH waiting AS (
                     SELECT DISTINCT account_id FROM deployments WHERE state = 'QUEUED' AND launched_at IS NULL
                 ), ranked AS (
                     SELECT w.account_id,
                            (SELECT count(*) FROM deployments r WHERE r.account_id = w.account_id
                               AND r.state IN ('QUEUED', 'BUILDING', 'UPLOADING') AND r.launched_at IS NOT NULL) AS running,
                            (SELECT max(l.launched_at) FROM deployments l WHERE l.account_id = w.account_id
                               AND l.launched_at IS NOT NULL) AS served
                     FROM waiting w
                 ), next_account AS (
                     SELECT account_id FROM ranked WHERE running < $1
                     ORDER BY running, served NULLS FIRST, account_id LIMIT 1
                 )
                 SELECT d.id FROM deployments d JOIN next_account n ON n.account_id = d.account_id
                 WHERE d.state = 'QUEUED' AND d.launched_at IS NULL
                 ORDER BY d.created_at LIMIT 1",
                &[&account_limit],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        let id: Uuid = row.get(0);
        tx.execute(
            "UPDATE deployments SET launched_at = clock_timestamp() WHERE id = $1",
            &[&id],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(id))
    }

    /// Deployments claimed for a launch more than `start_timeout_secs` ago whose build
    /// never reported that it started: the launch was lost (the launcher died between
    /// the claim and RunTask) or the task never came up.
    pub async fn lost_launches(&self, start_timeout_secs: i64) -> DbResult<Vec<Uuid>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM deployments WHERE state = 'QUEUED' AND launched_at IS NOT NULL
                   AND launched_at + make_interval(secs => $1::bigint) < now()",
                &[&start_timeout_secs],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }

    /// Deployments handed to a build task that has not finished: after a restart of
    /// the local platform, their processes are gone.
    pub async fn launched_unfinished(&self) -> DbResult<Vec<Uuid>> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT id FROM deployments WHERE state IN ('QUEUED', 'BUILDING', 'UPLOADING') AND launched_at IS NOT NULL",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}
