//! The JSON shapes the API returns.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, TimeZone, Utc};
use deploysphere_adapters::pg::{Deployment, Project};
use deploysphere_core::{BuildSettings, LogLine, Phase};
use serde::Serialize;

use crate::SitesConfig;

fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[derive(Serialize)]
pub struct EnvView {
    /// Secret values are never returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub secret: bool,
}

#[derive(Serialize)]
pub struct ProjectView {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub url: String,
    pub git_url: String,
    pub branch: Option<String>,
    pub build: BuildSettings,
    pub env: BTreeMap<String, EnvView>,
    pub production_deployment_id: Option<String>,
    /// Since when production is pinned to its deployment (after a promote or
    /// rollback); `null` while READY deployments move it.
    pub production_pinned_at: Option<String>,
    pub created_at: String,
}

impl ProjectView {
    pub fn new(project: &Project, sites: &SitesConfig) -> Self {
        ProjectView {
            id: project.id.to_string(),
            name: project.name.clone(),
            slug: project.slug.clone(),
            url: sites.url(&project.slug),
            git_url: project.git_url.clone(),
            branch: project.branch.clone(),
            build: project.build.clone(),
            env: project
                .env
                .iter()
                .map(|(key, var)| {
                    let value = (!var.secret).then(|| var.value.clone());
                    (
                        key.clone(),
                        EnvView {
                            value,
                            secret: var.secret,
                        },
                    )
                })
                .collect(),
            production_deployment_id: project.production_deployment_id.map(|id| id.to_string()),
            production_pinned_at: project.production_pinned_at.as_ref().map(rfc3339),
            created_at: rfc3339(&project.created_at),
        }
    }
}

#[derive(Serialize)]
pub struct DeploymentView {
    pub id: String,
    pub project_id: String,
    pub state: &'static str,
    /// The immutable URL of this deployment.
    pub url: String,
    pub git_ref: String,
    pub commit_sha: Option<String>,
    pub is_production: bool,
    pub created_at: String,
    pub started_at: Option<String>,
    pub ready_at: Option<String>,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    /// What the build detected and ran, once planned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    /// How long each phase of the build took, once it has ended.
    pub phases: Vec<Phase>,
    pub no_cache: bool,
}

impl DeploymentView {
    pub fn new(deployment: &Deployment, sites: &SitesConfig) -> Self {
        let id = deployment.id.to_string();
        DeploymentView {
            url: sites.url(&format!("{}-{}", deployment.project_slug, &id[..8])),
            id,
            project_id: deployment.project_id.to_string(),
            state: deployment.state.as_str(),
            git_ref: deployment.git_ref.clone(),
            commit_sha: deployment.commit_sha.clone(),
            is_production: deployment.is_production,
            created_at: rfc3339(&deployment.created_at),
            started_at: deployment.started_at.as_ref().map(rfc3339),
            ready_at: deployment.ready_at.as_ref().map(rfc3339),
            finished_at: deployment.finished_at.as_ref().map(rfc3339),
            error: deployment.error.clone(),
            plan: deployment.plan.clone(),
            phases: deployment.phases.clone(),
            no_cache: deployment.no_cache,
        }
    }
}

#[derive(Serialize)]
pub struct LogLineView {
    pub seq: u64,
    pub ts: String,
    pub stream: &'static str,
    pub message: String,
}

impl From<LogLine> for LogLineView {
    fn from(line: LogLine) -> Self {
        let ts = Utc
            .timestamp_millis_opt(line.ts_ms)
            .single()
            .map(|t| rfc3339(&t))
            .unwrap_or_default();
        LogLineView {
            seq: line.seq,
            ts,
            stream: line.stream.as_str(),
            message: line.message,
        }
    }
}
