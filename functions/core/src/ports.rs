//! Ports: the capabilities the core's callers need from the outside world, one small
//! trait each. Adapters implement them per shape.

use crate::events::BuildSpec;

#[derive(Debug, thiserror::Error)]
#[error("build launcher: {0}")]
pub struct LaunchError(pub String);

/// Starts and stops build tasks: a local process (bubblewrap sandbox) or an ECS task.
///
/// Guarantee: after `launch` returns `Ok`, the task either reports a final
/// deployment event or the launcher reports that it stopped (a `task_stopped` event),
/// so no deployment stays live forever. `cancel` kills every process of the task and
/// is idempotent (cancelling a task that is gone is `Ok`).
///
/// A build task holds no credentials when it starts: `launch` hands it a one-time
/// grant (see [`BuildCredentials`]), which the build exchanges at the API for
/// `credentials` of its own deployment.
#[async_trait::async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, spec: BuildSpec, grant: &str) -> Result<(), LaunchError>;
    async fn cancel(&self, deployment_id: &str) -> Result<(), LaunchError>;
    /// Fresh credentials that reach only this deployment's own objects, its project's
    /// build cache (and, on AWS, the log topics).
    async fn credentials(
        &self,
        deployment_id: &str,
        project_id: &str,
    ) -> Result<BuildCredentials, LaunchError>;
}

/// What a build gets for its grant (`POST /v1/build-credentials`): credentials for
/// its own objects, and the next grant, which fetches fresh credentials before these
/// expire. A grant works once; a build that has ended gets nothing.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BuildCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
    /// Milliseconds since the Unix epoch; `None` for keys that do not expire.
    pub expires_at_ms: Option<i64>,
    /// The grant for the next exchange (empty from a launcher; the API sets it).
    #[serde(default)]
    pub next_grant: String,
    /// The key the build signs its events and log lines with, 64 hex characters: its
    /// deployment's alone (empty from a launcher; the API sets it).
    #[serde(default)]
    pub build_key: String,
}

/// Names the key and the expiry; the secret, session token and next grant stay out of
/// logs.
impl std::fmt::Debug for BuildCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"** redacted **")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "** redacted **"),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .field("next_grant", &"** redacted **")
            .field("build_key", &"** redacted **")
            .finish()
    }
}
