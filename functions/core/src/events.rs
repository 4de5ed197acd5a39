//! What the launcher hands a build task ([`BuildSpec`]) and what a build task reports
//! back on the `deployment-events` topic ([`BuildEvent`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::plan::{BuildPlan, BuildSettings};
use crate::state::DeploymentState;

/// An environment variable of a project. In JSON either a plain string or
/// `{"value": "...", "secret": true}`; secret values are masked in build logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "EnvVarRepr")]
pub struct EnvVar {
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum EnvVarRepr {
    Plain(String),
    Full {
        value: String,
        #[serde(default)]
        secret: bool,
    },
}

impl From<EnvVarRepr> for EnvVar {
    fn from(repr: EnvVarRepr) -> Self {
        match repr {
            EnvVarRepr::Plain(value) => EnvVar {
                value,
                secret: false,
            },
            EnvVarRepr::Full { value, secret } => EnvVar { value, secret },
        }
    }
}

/// Resource limits of one build's user commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Wall-clock limit for the whole build, in seconds.
    pub timeout_seconds: u64,
    pub memory_mb: u64,
    /// CPU quota in thousandths of a core (1000 = one core).
    pub cpu_millis: u64,
    pub max_processes: u64,
    /// The most a fetch of the source may write (the pack git receives), in MiB.
    #[serde(default = "default_fetch_mb")]
    pub max_fetch_mb: u64,
}

fn default_fetch_mb() -> u64 {
    2048
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_seconds: 15 * 60,
            memory_mb: 2048,
            cpu_millis: 2000,
            max_processes: 512,
            max_fetch_mb: default_fetch_mb(),
        }
    }
}

/// Everything a build task needs to know about the deployment it builds. It carries
/// no platform credential: those come from the task's own environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildSpec {
    pub deployment_id: String,
    pub project_id: String,
    pub git_url: String,
    /// Branch, tag or commit to build.
    pub git_ref: String,
    #[serde(default)]
    pub settings: BuildSettings,
    #[serde(default)]
    pub env: BTreeMap<String, EnvVar>,
    #[serde(default)]
    pub limits: Limits,
    /// The source may be fetched from this machine's loopback or a private network
    /// (the local shape, for an account the local-paths rule trusts). Never set on
    /// AWS, and the builder ignores it unless it runs in the local shape.
    #[serde(default)]
    pub private_network: bool,
    /// Skip the build cache for this deployment (`{"no_cache": true}` in the API): no
    /// restore, and nothing saved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_cache: bool,
}

/// Where a project's build cache archives are kept: `build-cache/<project_id>/`. A
/// build task may read and write its own project's, no other's.
pub fn build_cache_prefix(project_id: &str) -> String {
    format!("build-cache/{project_id}/")
}

/// One step of a build and how long it took: `fetch`, `plan`, `restore_cache`,
/// `install`, `build`, `collect`, `upload`, `save_cache`, in the order they ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    pub ms: u64,
}

/// One report of a build task, keyed by deployment id on `deployment-events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildEvent {
    pub deployment_id: String,
    /// Milliseconds since the Unix epoch, when the build task saw it happen.
    pub at_ms: i64,
    #[serde(flatten)]
    pub kind: BuildEventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BuildEventKind {
    /// The build task runs: the deployment is BUILDING.
    Started,
    /// The source is checked out and the build planned.
    Planned { commit_sha: String, plan: BuildPlan },
    /// The build succeeded; the output is being uploaded.
    Uploading,
    /// Everything is uploaded: the deployment is READY.
    Finished {
        manifest_key: String,
        files: u64,
        bytes: u64,
        blobs_uploaded: u64,
        /// Log lines the build wrote in all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_lines: Option<u64>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        phases: Vec<Phase>,
    },
    /// The build failed; `reason` is shown to the user.
    Failed {
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        log_lines: Option<u64>,
        /// The phases that ran, the failed one last.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        phases: Vec<Phase>,
    },
    /// The launcher saw the task stop without a final report (process exit locally,
    /// ECS task state change on AWS).
    TaskStopped { reason: String },
}

impl BuildEventKind {
    /// The total number of log lines, in a final report.
    pub fn log_lines(&self) -> Option<u64> {
        match self {
            Self::Finished { log_lines, .. } | Self::Failed { log_lines, .. } => *log_lines,
            _ => None,
        }
    }

    /// How long each phase took, in a final report.
    pub fn phases(&self) -> &[Phase] {
        match self {
            Self::Finished { phases, .. } | Self::Failed { phases, .. } => phases,
            _ => &[],
        }
    }

    /// The state this event asks for, if it asks for one.
    pub fn target_state(&self) -> Option<DeploymentState> {
        match self {
            Self::Started => Some(DeploymentState::Building),
            Self::Planned { .. } => None,
            Self::Uploading => Some(DeploymentState::Uploading),
            Self::Finished { .. } => Some(DeploymentState::Ready),
            Self::Failed { .. } | Self::TaskStopped { .. } => Some(DeploymentState::Failed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_var_accepts_plain_and_secret_forms() {
        let env: BTreeMap<String, EnvVar> =
            serde_json::from_str(r#"{"A":"1","B":{"value":"s3cr3t","secret":true}}"#).unwrap();
        assert_eq!(
            env["A"],
            EnvVar {
                value: "1".into(),
                secret: false
            }
        );
        assert_eq!(
            env["B"],
            EnvVar {
                value: "s3cr3t".into(),
                secret: true
            }
        );
    }

    #[test]
    fn events_round_trip_as_tagged_json() {
        let event = BuildEvent {
            deployment_id: "d1".into(),
            at_ms: 5,
            kind: BuildEventKind::Failed {
                reason: "exit 1".into(),
                log_lines: Some(3),
                phases: vec![Phase {
                    name: "install".into(),
                    ms: 1200,
                }],
            },
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "failed");
        assert_eq!(json["reason"], "exit 1");
        assert_eq!(json["phases"][0]["name"], "install");
        let back: BuildEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.kind.target_state(), Some(DeploymentState::Failed));
        assert_eq!(back.kind.log_lines(), Some(3));
        assert_eq!(back.kind.phases()[0].ms, 1200);
        // Reports from builders that predate the line count still parse.
        let old: BuildEvent = serde_json::from_str(
            r#"{"deployment_id":"d1","at_ms":5,"type":"failed","reason":"x"}"#,
        )
        .unwrap();
        assert_eq!(old.kind.log_lines(), None);
        assert!(old.kind.phases().is_empty());
    }
}
