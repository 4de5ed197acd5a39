//! Deployment events: applies build-task reports to Postgres through the core state
//! machine, moves the production alias, and schedules waiting deployments onto free
//! build slots. The same functions run in both shapes: locally they are called by a
//! Kafka consumer loop and by the process launcher; on AWS by the Lambda entry points.

use std::sync::Arc;

use deploysphere_adapters::pg::{Db, DbError, Deployment};
use deploysphere_core::{
    BuildEvent, BuildEventKind, BuildSpec, DeploymentState, Launcher, Limits, Transition,
    TransitionError, transition,
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
}

/// Scheduling limits.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Builds running at once on the whole platform.
    pub max_concurrent_builds: i64,
    /// Builds running at once per account.
    pub max_concurrent_builds_per_account: i64,
    /// Limits applied to every build (a project's timeout overrides the wall clock).
    pub limits: Limits,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrent_builds: 2,
            max_concurrent_builds_per_account: 2,
            limits: Limits::default(),
        }
    }
}

/// What applying an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The deployment moved to this state.
    Moved(DeploymentState),
    /// Replayed, late or informational: no state change.
    Unchanged,
}

/// The deployment lifecycle service: state changes, promotion and scheduling.
#[derive(Clone)]
pub struct Deployments {
    pub db: Db,
    launcher: Arc<dyn Launcher>,
    config: SchedulerConfig,
}

impl Deployments {
    pub fn new(db: Db, launcher: Arc<dyn Launcher>, config: SchedulerConfig) -> Self {
        Deployments {
            db,
            launcher,
            config,
        }
    }

    /// Moves a deployment towards `target` with a compare-and-set, retrying when
    /// another writer changed it in between. Idempotent.
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
                Transition::Unchanged => return Ok((Applied::Unchanged, deployment)),
                Transition::To(next) => {
                    if self
                        .db
                        .set_state(id, deployment.state, next, error, manifest_key)
                        .await?
                    {
                        info!(deployment_id = %id, from = %deployment.state, to = %next, "deployment state changed");
                        let mut deployment = deployment;
                        deployment.state = next;
                        return Ok((Applied::Moved(next), deployment));
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
            BuildEventKind::Failed { reason } | BuildEventKind::TaskStopped { reason } => {
                (Some(reason.as_str()), None)
            }
            BuildEventKind::Finished { manifest_key, .. } => (None, Some(manifest_key.as_str())),
            _ => (None, None),
        };
        let (applied, deployment) = match self.apply_state(id, target, error, manifest_key).await {
            Ok(result) => result,
            Err(EventError::Transition(e)) => {
                warn!(deployment_id = %id, error = %e, "event ignored");
                return Ok(Applied::Unchanged);
            }
            Err(e) => return Err(e),
        };
        if applied == Applied::Moved(DeploymentState::Ready)
            && self.db.promote_if_newest(deployment.project_id, id).await?
        {
            info!(deployment_id = %id, project_id = %deployment.project_id, "production alias moved");
        }
        if matches!(applied, Applied::Moved(state) if state.is_final()) {
            self.schedule().await?;
        }
        Ok(applied)
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
            self.schedule().await?;
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
            };
            match self.launcher.launch(spec).await {
                Ok(()) => {
                    info!(deployment_id = %id, "build task launched");
                    launched += 1;
                }
                Err(e) => {
                    warn!(deployment_id = %id, error = %e, "build task did not start");
                    let reason = format!("the build task could not start: {e}");
                    self.apply_state(id, DeploymentState::Failed, Some(&reason), None)
                        .await?;
                }
            }
        }
        Ok(launched)
    }
}
