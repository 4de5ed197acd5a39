//! ECS build tasks seen from EventBridge: an "ECS Task State Change" for a build task
//! that stopped without its builder reporting a result (the builder exits 0 only once
//! its final report is delivered) becomes a `TaskStopped` report, which fails the
//! deployment with the stop reason unless it already ended.

use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use deploysphere_core::{BuildEvent, BuildEventKind};
use serde::{Deserialize, Serialize};

/// The build task definition's container that runs the builder.
pub const BUILD_CONTAINER: &str = "builder";
/// The environment variable (in the container overrides) naming the deployment.
pub const DEPLOYMENT_ID_ENV: &str = "DEPLOYSPHERE_DEPLOYMENT_ID";

/// The parts of an ECS task state change this platform reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskStateChange {
    #[serde(default)]
    pub cluster_arn: String,
    #[serde(default)]
    pub task_arn: String,
    #[serde(default)]
    pub last_status: String,
    #[serde(default)]
    pub started_by: Option<String>,
    #[serde(default)]
    pub stop_code: Option<String>,
    #[serde(default)]
    pub stopped_reason: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub overrides: Overrides,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    pub name: String,
    #[serde(default)]
    pub exit_code: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Overrides {
    #[serde(default)]
    pub container_overrides: Vec<ContainerOverride>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerOverride {
    pub name: String,
    #[serde(default)]
    pub environment: Vec<KeyValue>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct KeyValue {
    pub name: String,
    pub value: String,
}

pub type TaskStateChangeEvent = EventBridgeEvent<TaskStateChange>;

impl TaskStateChange {
    /// The deployment this task built: `startedBy` (set by the launcher), else the
    /// deployment id in the builder's environment overrides.
    pub fn deployment_id(&self) -> Option<String> {
        if let Some(id) = self.started_by.as_deref().filter(|id| !id.is_empty()) {
            return Some(id.to_string());
        }
        self.overrides
            .container_overrides
            .iter()
            .filter(|o| o.name == BUILD_CONTAINER)
            .flat_map(|o| &o.environment)
            .find(|kv| kv.name == DEPLOYMENT_ID_ENV)
            .map(|kv| kv.value.clone())
    }
}

/// The report an ECS task state change stands for: `None` unless a build task stopped
/// without its builder exiting 0.
pub fn task_stopped(event: &TaskStateChangeEvent) -> Option<BuildEvent> {
    let task = &event.detail;
    if event.source != "aws.ecs" || task.last_status != "STOPPED" {
        return None;
    }
    let deployment_id = task.deployment_id()?;
    let builder = task.containers.iter().find(|c| c.name == BUILD_CONTAINER);
    if builder.and_then(|c| c.exit_code) == Some(0) {
        return None;
    }
    let mut reason = String::from("the build task stopped without reporting a result");
    let details: Vec<String> = [
        task.stop_code.clone(),
        task.stopped_reason.clone(),
        builder.and_then(|c| c.reason.clone()),
        builder
            .and_then(|c| c.exit_code)
            .map(|code| format!("exit code {code}")),
    ]
    .into_iter()
    .flatten()
    .filter(|d| !d.is_empty())
    .collect();
    if !details.is_empty() {
        reason = format!("{reason}: {}", details.join("; "));
    }
    Some(BuildEvent {
        deployment_id,
        at_ms: event.time.map(|t| t.timestamp_millis()).unwrap_or_default(),
        kind: BuildEventKind::TaskStopped { reason },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> TaskStateChangeEvent {
        let path = format!(
            "{}/../../tests/fixtures/events/{name}",
            std::env::var("CARGO_MANIFEST_DIR")
                .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
        );
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("event")
    }

    #[test]
    fn an_out_of_memory_build_task_fails_its_deployment_with_the_reason() {
        let event = task_stopped(&fixture("ecs-task-stopped-oom.json")).expect("a report");
        assert_eq!(event.deployment_id, "5f0c6b7e-2a4d-4c1b-9a8e-3d2f1e0c9b8a");
        let BuildEventKind::TaskStopped { reason } = event.kind else {
            panic!("not a TaskStopped report")
        };
        assert!(reason.contains("OutOfMemoryError"), "{reason}");
        assert!(reason.contains("exit code 137"), "{reason}");
    }

    #[test]
    fn a_task_that_never_started_fails_its_deployment() {
        let event = task_stopped(&fixture("ecs-task-stopped-pull-error.json")).expect("a report");
        assert_eq!(event.deployment_id, "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9");
        let BuildEventKind::TaskStopped { reason } = event.kind else {
            panic!("not a TaskStopped report")
        };
        assert!(reason.contains("CannotPullContainerError"), "{reason}");
        assert!(reason.contains("TaskFailedToStart"), "{reason}");
    }

    #[test]
    fn a_builder_that_exited_0_already_reported_its_result() {
        assert!(task_stopped(&fixture("ecs-task-stopped-ok.json")).is_none());
    }

    #[test]
    fn a_running_task_is_not_a_report() {
        let mut event = fixture("ecs-task-stopped-oom.json");
        event.detail.last_status = "RUNNING".into();
        assert!(task_stopped(&event).is_none());
    }
}
