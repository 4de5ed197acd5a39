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
#[async_trait::async_trait]
pub trait Launcher: Send + Sync {
    async fn launch(&self, spec: BuildSpec) -> Result<(), LaunchError>;
    async fn cancel(&self, deployment_id: &str) -> Result<(), LaunchError>;
}
