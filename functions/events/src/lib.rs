//! Deployment events: applies build-task reports to Postgres through the core state
//! machine, moves the production alias, and schedules waiting deployments onto free
//! build slots. The same functions run in both shapes: locally they are called by a
//! Kafka consumer loop and by the process launcher; on AWS by the Lambda entry points.

use std::sync::Arc;

use deploysphere_adapters::pg::{Db, DbError, Deployment, GrantUse, StateChange};
use deploysphere_adapters::s3::ObjectStore;
pub use deploysphere_adapters::signing::PlatformKey;
use deploysphere_core::{
    BuildCredentials, BuildEvent, BuildEventKind, BuildSpec, DeploymentState, Launcher, Limits,
    Transition, TransitionError, transition,
};
use tracing::{info, warn};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Transition(#[from] TransitionError),
    #[error("deployment {0} does not exist")]
    UnknownDeployment(String),
    /// The sites bucket failed (a host record or a blob could not be written): retry.
    #[error("sites bucket: {0}")]
    Storage(String),
    /// Records that can never apply could not be set aside: retry the batch.
    #[error("dead letters: {0}")]
    DeadLetters(String),
}

/// Why a build grant was not exchanged.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    #[error("the build grant is unknown, used or expired")]
    Invalid,
    #[error("the build has ended ({0}): it gets no more credentials")]
    Ended(DeploymentState),
    #[error("issuing build credentials failed: {0}")]
    Unavailable(String),
}

/// How long a build task has to start and exchange its first grant (Fargate may pull
/// a large image first). Until then the grant is as good as the credentials.
const FIRST_GRANT_SECONDS: i64 = 20 * 60;
/// How long past its time limit a silent build is given before the sweep fails it.
const OVERDUE_GRACE_SECONDS: i64 = 1800;
/// How long a used grant still works: the build trying again after an answer it did
/// not get (a lost connection, a failure on this side).
const GRANT_RETRY_SECONDS: i64 = 60;
/// How long a next grant outlives the credentials it came with.
const GRANT_MARGIN_SECONDS: i64 = 600;

/// Scheduling limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Builds running at once on the whole platform.
    pub max_concurrent_builds: i64,
    /// Builds running at once per account.
    pub max_concurrent_builds_per_account: i64,
    /// Deployments an account may have waiting for a slot; the API refuses more (429).
    pub max_queued_per_account: i64,
    /// How long a launched build has to report that it started before the sweep
    /// fails it and frees its slot (on AWS a task that has not exchanged its first
    /// grant by then never can: the grant has expired).
    pub start_timeout_secs: i64,
    /// Limits applied to every build (a project's timeout overrides the wall clock).
    pub limits: Limits,
    /// Whose builds may fetch their source from this machine or a private network.
    pub private_sources: PrivateSources,
}

/// Whose builds may fetch from this machine's loopback or a private network: the
/// local shape's rule for local paths, applied at the network by the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PrivateSources {
    /// Nobody (AWS).
    #[default]
    Never,
    /// The admin account's builds only (the local default).
    AdminOnly,
    /// Every account's (`DEPLOYSPHERE_ALLOW_LOCAL_PATHS=1`).
    Everyone,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrent_builds: 2,
            max_concurrent_builds_per_account: 2,
            max_queued_per_account: 25,
            start_timeout_secs: FIRST_GRANT_SECONDS,
            limits: Limits::default(),
            private_sources: PrivateSources::Never,
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Launches that never started, failed.
    pub lost: usize,
    /// Silent builds past their time limit, failed.
    pub overdue: usize,
    /// Waiting deployments launched.
    pub launched: usize,
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The deployment moved to this state.
    Moved(DeploymentState),
    /// Replayed, late or informational: no state change.
    Unchanged,
}

/// The routes the edge router reads: one record per host label in the sites bucket,
/// `edge/hosts/<slug>.json` (the production alias) and `edge/hosts/<slug>-<8 chars of
/// the id>.json` (one immutable deployment), each `{deployment_id, manifest_key}`.
/// Written after Postgres changed, from what Postgres says then. A failed write fails
/// the event (it is delivered again, and a replayed READY publishes again) or the
/// promote request (a 503; promoting again publishes again). Racing
/// writers of one alias settle on what Postgres says (see `publish_production`).
#[derive(Clone)]
pub struct EdgeRoutes {
    store: ObjectStore,
}

/// How often one writer rewrites a production alias that moves under it before it
/// gives up (the event fails and is delivered again).
const MAX_ALIAS_WRITES: usize = 10;

pub fn edge_host_key(label: &str) -> String {
    format!("edge/hosts/{label}.json")
}

impl EdgeRoutes {
    pub fn new(store: ObjectStore) -> Self {
        EdgeRoutes { store }
    }

    /// Publishes a READY deployment's own host, then its project's production alias.
    pub async fn publish(&self, db: &Db, deployment: &Deployment) -> Result<(), EventError> {
        if deployment.state == DeploymentState::Ready
            && let Some(manifest_key) = &deployment.manifest_key
        {
            let id = deployment.id.to_string();
            let label = format!("{}-{}", deployment.project_slug, &id[..8]);
            self.put(&label, &id, manifest_key).await?;
        }
        self.publish_production(db, &deployment.project_slug).await
    }

    /// Publishes where a project's production alias points now. Two writers can race
    /// (a READY and a promote of one project, in two Lambdas): each reads the alias,
    /// writes it, and reads it again after its write landed; when it moved in between,
    /// the write may have replaced a newer one, so it writes again. The last write to
    /// land is then always followed by a read that sees the alias as it stands.
    pub async fn publish_production(&self, db: &Db, slug: &str) -> Result<(), EventError> {
        let mut route = db.route(slug, None).await?;
        for _ in 0..MAX_ALIAS_WRITES {
            let Some((id, manifest_key)) = &route else {
                return Ok(());
            };
            self.put(slug, &id.to_string(), manifest_key).await?;
            let now = db.route(slug, None).await?;
            if now == route {
                return Ok(());
            }
            route = now;
        }
        warn!(
            slug,
            "edge route: the production alias kept moving while it was written"
        );
        Err(EventError::Storage(format!(
            "the production alias of {slug} moved {MAX_ALIAS_WRITES} times while it was written"
        )))
    }

    async fn put(
        &self,
        label: &str,
        deployment_id: &str,
        manifest_key: &str,
    ) -> Result<(), EventError> {
        let record = serde_json::json!({
            "deployment_id": deployment_id,
            "manifest_key": manifest_key,
        });
        self.store
            .put_json(&edge_host_key(label), &record)
            .await
            .map_err(|e| {
                warn!(error = %e, label, "edge route: writing the host record failed");
                EventError::Storage(e.to_string())
            })
    }
}

/// The deployment lifecycle service: state changes, promotion and scheduling.
#[derive(Clone)]
pub struct Deployments {
    pub db: Db,
    launcher: Arc<dyn Launcher>,
    config: SchedulerConfig,
    edge: Option<EdgeRoutes>,
    sites: Option<ObjectStore>,
    /// Derives each build's signing key: handed out with its credentials, checked on
    /// every event it sends.
    build_keys: PlatformKey,
}

impl Deployments {
    /// The scheduling limits this platform runs with.
    pub fn scheduler_config(&self) -> &SchedulerConfig {
        &self.config
    }

    pub fn new(
        db: Db,
        launcher: Arc<dyn Launcher>,
        config: SchedulerConfig,
        build_keys: PlatformKey,
    ) -> Self {
        Deployments {
            db,
            launcher,
            config,
            edge: None,
            sites: None,
            build_keys,
        }
    }

    /// Works with the sites bucket: publishes the blobs a build staged when it
    /// finishes, and keeps the edge router's host records up to date.
    pub fn with_sites_bucket(mut self, store: ObjectStore) -> Self {
        self.edge = Some(EdgeRoutes::new(store.clone()));
        self.sites = Some(store);
        self
    }

    /// Cleans up after a build that ended: its grants (so it gets no fresh
    /// credentials) and the spec the launcher left for it (it holds the project's
    /// secrets; a leftover expires with `staging/` anyway).
    pub async fn build_ended(&self, deployment_id: &str) {
        if let Ok(id) = Uuid::parse_str(deployment_id)
            && let Err(e) = self.db.forget_build_grants(id).await
        {
            warn!(error = %e, deployment_id, "removing the build's grants failed (they expire)");
        }
        if let Some(store) = &self.sites {
            let key = deploysphere_core::manifest::build_spec_key(deployment_id);
            if let Err(e) = store.delete(&key).await {
                warn!(error = %e, deployment_id, "removing the build spec failed");
            }
        }
    }

    /// A new one-time grant for a build, valid `valid_for_s` seconds.
    async fn new_build_grant(&self, id: Uuid, valid_for_s: i64) -> Result<String, EventError> {
        let grant = deploysphere_adapters::new_token("dsb_");
        self.db
            .insert_build_grant(id, &deploysphere_adapters::hash_token(&grant), valid_for_s)
            .await?;
        Ok(grant)
    }

    /// Exchanges a build's grant for credentials of its own deployment and the next
    /// grant. A grant works until a short while after its first use (so that a build
    /// that lost the answer, or met a failure here, can try again); a build that has
    /// ended gets nothing new.
    pub async fn exchange_build_grant(&self, grant: &str) -> Result<BuildCredentials, GrantError> {
        let (id, usable) = self
            .db
            .redeem_build_grant(
                &deploysphere_adapters::hash_token(grant),
                GRANT_RETRY_SECONDS,
            )
            .await
            .map_err(|e| GrantError::Unavailable(e.to_string()))?
            .ok_or(GrantError::Invalid)?;
        match usable {
            GrantUse::Good => {}
            GrantUse::Expired => return Err(GrantError::Invalid),
            GrantUse::UsedBefore => {
                warn!(deployment_id = %id, "a build grant was presented again long after its use: someone else holds a copy");
                return Err(GrantError::Invalid);
            }
        }
        let deployment = self
            .db
            .deployment(id)
            .await
            .map_err(|e| GrantError::Unavailable(e.to_string()))?
            .ok_or(GrantError::Invalid)?;
        if deployment.state.is_final() {
            return Err(GrantError::Ended(deployment.state));
        }
        let mut credentials = self
            .launcher
            .credentials(&id.to_string(), &deployment.project_id.to_string())
            .await
            .map_err(|e| GrantError::Unavailable(e.to_string()))?;
        // The next grant outlives these credentials by a margin, to fetch new ones.
        let valid_for_s = credentials
            .expires_at_ms
            .map(|at| (at - deploysphere_adapters::now_ms()) / 1000)
            .unwrap_or(FIRST_GRANT_SECONDS)
            + GRANT_MARGIN_SECONDS;
        credentials.next_grant = self
            .new_build_grant(id, valid_for_s)
            .await
            .map_err(|e| GrantError::Unavailable(e.to_string()))?;
        credentials.build_key = self.build_keys.build_key(&id.to_string()).to_hex();
        info!(deployment_id = %id, "build credentials issued");
        Ok(credentials)
    }

    /// Points a project's production alias at one of its READY deployments (rollback
    /// or roll-forward); false when it is not one.
    pub async fn promote(
        &self,
        project_id: Uuid,
        deployment_id: Uuid,
        pin: bool,
    ) -> Result<bool, EventError> {
        if !self.db.promote(project_id, deployment_id, pin).await? {
            return Ok(false);
        }
        if let (Some(edge), Some(deployment)) =
            (&self.edge, self.db.deployment(deployment_id).await?)
        {
            edge.publish_production(&self.db, &deployment.project_slug)
                .await?;
        }
        Ok(true)
    }

    /// Moves a deployment towards `target` with a compare-and-set, retrying when
    /// another writer changed it in between. Idempotent. A move to READY moves the
    /// production alias in the same transaction (unless a newer deployment is
    /// production already).
    pub async fn apply_state(
        &self,
        id: Uuid,
        target: DeploymentState,
        error: Option<&str>,
        manifest_key: Option<&str>,
    ) -> Result<(Applied, Deployment), EventError> {
        loop {
            let deployment = self
                .db
                .deployment(id)
                .await?
                .ok_or_else(|| EventError::UnknownDeployment(id.to_string()))?;
            match transition(deployment.state, target)? {
                Transition::Unchanged => {
                    // A replayed READY publishes again: an earlier write may have failed.
                    if deployment.state == DeploymentState::Ready
                        && target == DeploymentState::Ready
                        && let Some(edge) = &self.edge
                    {
                        edge.publish(&self.db, &deployment).await?;
                    }
                    return Ok((Applied::Unchanged, deployment));
                }
                Transition::To(next) => {
                    match self
                        .db
                        .set_state(id, deployment.state, next, error, manifest_key)
                        .await?
                    {
                        StateChange::Stale => continue,
                        StateChange::Changed { promoted } => {
                            info!(deployment_id = %id, from = %deployment.state, to = %next, reason = error.unwrap_or(""), "deployment state changed");
                            if promoted {
                                info!(deployment_id = %id, project_id = %deployment.project_id, "production alias moved");
                            }
                            let mut deployment = deployment;
                            deployment.state = next;
                            deployment.is_production = deployment.is_production || promoted;
                            if let Some(key) = manifest_key {
                                deployment.manifest_key = Some(key.to_string());
                            }
                            if next == DeploymentState::Ready
                                && let Some(edge) = &self.edge
                            {
                                edge.publish(&self.db, &deployment).await?;
                            }
                            return Ok((Applied::Moved(next), deployment));
                        }
                    }
                }
            }
        }
    }

    /// Applies one report of a build task. A replayed event changes nothing; an event
    /// for a deployment that is already final (canceled, say) is ignored.
    pub async fn handle_event(&self, event: &BuildEvent) -> Result<Applied, EventError> {
        let id = Uuid::parse_str(&event.deployment_id)
            .map_err(|_| EventError::UnknownDeployment(event.deployment_id.clone()))?;
        if let BuildEventKind::Planned { commit_sha, plan } = &event.kind {
            let plan = serde_json::to_value(plan).unwrap_or_default();
            self.db.set_plan(id, commit_sha, &plan).await?;
            return Ok(Applied::Unchanged);
        }
        let Some(target) = event.kind.target_state() else {
            return Ok(Applied::Unchanged);
        };
        let (error, manifest_key) = match &event.kind {
            BuildEventKind::Failed { reason, .. } | BuildEventKind::TaskStopped { reason } => {
                (Some(reason.as_str()), None)
            }
            BuildEventKind::Finished { manifest_key, .. } => (None, Some(manifest_key.as_str())),
            _ => (None, None),
        };
        if let Some(lines) = event.kind.log_lines() {
            self.db.set_log_lines(id, lines).await?;
        }
        if !event.kind.phases().is_empty() {
            self.db.set_phases(id, event.kind.phases()).await?;
        }
        if let (BuildEventKind::Finished { manifest_key, .. }, Some(store)) =
            (&event.kind, &self.sites)
        {
            match publish_staged_blobs(store, &event.deployment_id, manifest_key).await {
                Ok(()) => {}
                Err(StagedError::Content(reason)) => {
                    return match self
                        .apply_state(id, DeploymentState::Failed, Some(&reason), None)
                        .await
                    {
                        Ok((applied, _)) => {
                            self.build_ended(&event.deployment_id).await;
                            self.schedule_best_effort().await;
                            Ok(applied)
                        }
                        Err(e) => ignore_transition(id, e),
                    };
                }
                Err(StagedError::Store(e)) => return Err(EventError::Storage(e)),
            }
        }
        // A finished build passed through UPLOADING even if that report was lost. A
        // deployment past UPLOADING already (READY, or ended) goes on to the READY
        // step, which decides: a replayed READY publishes its routes again.
        if target == DeploymentState::Ready {
            match self
                .apply_state(id, DeploymentState::Uploading, None, None)
                .await
            {
                Ok(_) | Err(EventError::Transition(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let applied = match self.apply_state(id, target, error, manifest_key).await {
            Ok((applied, _)) => applied,
            Err(e) => return ignore_transition(id, e),
        };
        if matches!(applied, Applied::Moved(state) if state.is_final()) {
            self.build_ended(&event.deployment_id).await;
            self.schedule_best_effort().await;
        }
        Ok(applied)
    }

    /// Launches what can be launched; a failure is logged (the next state change or
    /// the periodic tick schedules again).
    pub async fn schedule_best_effort(&self) {
        if let Err(e) = self.schedule().await {
            warn!(error = %e, "scheduling failed; will retry");
        }
    }

    /// The periodic sweep (every 10 s locally, every minute on AWS from an EventBridge
    /// schedule): fails lost launches and silent builds, freeing their slots, then
    /// launches what waits.
    pub async fn tick(&self) -> Result<TickReport, EventError> {
        let lost = self.fail_lost_launches().await?;
        let overdue = self.fail_overdue(OVERDUE_GRACE_SECONDS).await?;
        let launched = self.schedule().await?;
        Ok(TickReport {
            lost,
            overdue,
            launched,
        })
    }

    /// Fails deployments claimed for a launch that never reported it started within
    /// the start timeout (the launcher died between the claim and RunTask, or the
    /// task never came up). A task that did start late is stopped.
    async fn fail_lost_launches(&self) -> Result<usize, EventError> {
        let minutes = (self.config.start_timeout_secs + 59) / 60;
        let reason = format!(
            "the build task did not start within {minutes} min (its launch was lost); deploy again"
        );
        let mut failed = 0;
        for id in self
            .db
            .lost_launches(self.config.start_timeout_secs)
            .await?
        {
            // Only from QUEUED: a build that reported it started in the meantime is
            // left alone.
            if let StateChange::Changed { .. } = self
                .db
                .set_state(
                    id,
                    DeploymentState::Queued,
                    DeploymentState::Failed,
                    Some(&reason),
                    None,
                )
                .await?
            {
                warn!(deployment_id = %id, "lost build launch failed; its slot is free");
                let _ = self.launcher.cancel(&id.to_string()).await;
                self.build_ended(&id.to_string()).await;
                failed += 1;
            }
        }
        Ok(failed)
    }

    /// Fails live deployments whose build task has stayed silent past its time limit
    /// plus `grace_secs` (a build task that died without any report).
    pub async fn fail_overdue(&self, grace_secs: i64) -> Result<usize, EventError> {
        let overdue = self
            .db
            .overdue_deployments(self.config.limits.timeout_seconds as i64, grace_secs)
            .await?;
        let mut failed = 0;
        for id in overdue {
            let reason =
                "the build task stopped reporting and did not finish within its time limit";
            if let Ok((Applied::Moved(_), _)) = self
                .apply_state(id, DeploymentState::Failed, Some(reason), None)
                .await
            {
                let _ = self.launcher.cancel(&id.to_string()).await;
                self.build_ended(&id.to_string()).await;
                failed += 1;
            }
        }
        if failed > 0 {
            self.schedule_best_effort().await;
        }
        Ok(failed)
    }

    /// Cancels a live deployment: CANCELED at once, then every process of its build
    /// task is killed. A final deployment cannot be canceled.
    pub async fn cancel(&self, id: Uuid) -> Result<Deployment, EventError> {
        let (applied, deployment) = self
            .apply_state(
                id,
                DeploymentState::Canceled,
                Some("canceled by user"),
                None,
            )
            .await?;
        if applied != Applied::Unchanged {
            if let Err(e) = self.launcher.cancel(&id.to_string()).await {
                warn!(deployment_id = %id, error = %e, "could not stop the build task");
            }
            self.build_ended(&id.to_string()).await;
            self.schedule_best_effort().await;
        }
        Ok(deployment)
    }

    /// Launches waiting deployments while the platform and their accounts are under
    /// their limits. Returns how many were launched.
    pub async fn schedule(&self) -> Result<usize, EventError> {
        let mut launched = 0;
        while let Some(id) = self
            .db
            .claim_next(
                self.config.max_concurrent_builds,
                self.config.max_concurrent_builds_per_account,
            )
            .await?
        {
            let Some(deployment) = self.db.deployment(id).await? else {
                continue;
            };
            let Some(project) = self.db.project_by_id(deployment.project_id).await? else {
                continue;
            };
            let mut limits = self.config.limits.clone();
            if let Some(timeout) = project.build.timeout_seconds {
                limits.timeout_seconds = timeout;
            }
            let spec = BuildSpec {
                deployment_id: id.to_string(),
                project_id: project.id.to_string(),
                git_url: project.git_url.clone(),
                git_ref: deployment.git_ref.clone(),
                settings: project.build.clone(),
                env: project.env.clone(),
                limits,
                no_cache: deployment.no_cache,
                private_network: match self.config.private_sources {
                    PrivateSources::Never => false,
                    PrivateSources::Everyone => true,
                    PrivateSources::AdminOnly => {
                        self.db.account_is_admin(project.account_id).await?
                    }
                },
            };
            let started = match self.new_build_grant(id, FIRST_GRANT_SECONDS).await {
                Ok(grant) => self.launcher.launch(spec, &grant).await,
                Err(e) => Err(deploysphere_core::LaunchError(format!(
                    "no grant for the build: {e}"
                ))),
            };
            match started {
                Ok(()) => {
                    info!(deployment_id = %id, "build task launched");
                    launched += 1;
                    // A cancel that landed between the claim and the launch found no task
                    // to stop: stop it now.
                    if self
                        .db
                        .deployment(id)
                        .await?
                        .is_some_and(|d| d.state.is_final())
                    {
                        let _ = self.launcher.cancel(&id.to_string()).await;
                    }
                }
                Err(e) => {
                    warn!(deployment_id = %id, error = %e, "build task did not start");
                    let reason = format!("the build task could not start: {e}");
                    match self
                        .apply_state(id, DeploymentState::Failed, Some(&reason), None)
                        .await
                    {
                        Ok(_) | Err(EventError::Transition(_)) => {}
                        Err(e) => return Err(e),
                    }
                    self.build_ended(&id.to_string()).await;
                }
            }
        }
        Ok(launched)
    }
}

/// A transition the state machine refuses (an event for a deployment that is final
/// already, say canceled) is logged and ignored; other errors are returned.
/// Why a finished build's files cannot be published.
#[derive(Debug)]
pub enum StagedError {
    /// The upload is missing or not what the manifest says: the deployment fails.
    Content(String),
    /// S3 failed: retry.
    Store(String),
}

/// Publishes the blobs a build staged under `staging/<id>/`: each manifest blob that
/// is not in `blobs/` yet must be staged with the SHA-256 S3 verified on upload equal
/// to its name; it is then copied to `blobs/` and the staged copy removed. A build
/// task cannot write `blobs/` itself, so it cannot replace another site's content.
pub async fn publish_staged_blobs(
    store: &ObjectStore,
    deployment_id: &str,
    manifest_key: &str,
) -> Result<(), StagedError> {
    use deploysphere_core::manifest::{blob_key, staged_key};
    use futures::{StreamExt, TryStreamExt};
    if manifest_key != deploysphere_core::manifest::manifest_key(deployment_id) {
        return Err(StagedError::Content(format!(
            "the build reported a manifest that is not its own: {manifest_key}"
        )));
    }
    let manifest = store
        .get_manifest(manifest_key)
        .await
        .map_err(|e| StagedError::Store(e.to_string()))?
        .ok_or_else(|| StagedError::Content("the build's manifest was not uploaded".into()))?;
    let mut blobs: Vec<(String, String)> = manifest
        .files
        .into_iter()
        .map(|(path, entry)| (entry.blob, path))
        .collect();
    blobs.sort();
    blobs.dedup_by(|a, b| a.0 == b.0);
    futures::stream::iter(blobs)
        .map(|(blob, path)| async move {
            let blob = blob.as_str();
            let store_error =
                |e: deploysphere_adapters::s3::StoreError| StagedError::Store(e.to_string());
            if store.blob_exists(blob).await.map_err(store_error)? {
                return Ok(());
            }
            let staged = staged_key(deployment_id, blob);
            match store.sha256_of(&staged).await.map_err(store_error)? {
                Some(Some(sha)) if sha == blob => {}
                Some(_) => {
                    return Err(StagedError::Content(format!(
                        "the upload of {path} does not match its content hash"
                    )));
                }
                None => {
                    return Err(StagedError::Content(format!("{path} was not uploaded")));
                }
            }
            store
                .copy(&staged, &blob_key(blob))
                .await
                .map_err(store_error)?;
            store.delete(&staged).await.map_err(store_error)
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn ignore_transition(id: Uuid, error: EventError) -> Result<Applied, EventError> {
    match error {
        EventError::Transition(e) => {
            info!(deployment_id = %id, error = %e, "event ignored");
            Ok(Applied::Unchanged)
        }
        e => Err(e),
    }
}

impl EventError {
    /// True when retrying can never help (the event names no deployment, or stored
    /// data is broken): the event is set aside instead of blocking the partition.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            EventError::UnknownDeployment(_) | EventError::Db(DbError::Corrupt(_))
        )
    }
}
pub mod ecs;
mod records;

pub use records::EventsReport;
