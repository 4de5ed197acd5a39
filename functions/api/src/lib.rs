//! The HTTP API: one axum [`Router`], served by axum locally and by `lambda_http` on
//! AWS. JSON in and out; errors as `{"error": {"code", "message"}}`.

mod auth;
mod error;
mod handlers;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::pg::Db;
use deploysphere_events::Deployments;

pub use auth::{hash_token, new_token};
pub use error::ApiError;

/// Where sites are served, to build their URLs: `{scheme}://{label}.{domain}{:port}`.
#[derive(Debug, Clone)]
pub struct SitesConfig {
    pub scheme: String,
    pub domain: String,
    pub port: Option<u16>,
}

impl SitesConfig {
    pub fn url(&self, label: &str) -> String {
        match self.port {
            Some(port) => format!("{}://{label}.{}:{port}", self.scheme, self.domain),
            None => format!("{}://{label}.{}", self.scheme, self.domain),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub sites: SitesConfig,
    /// Who may deploy local paths and `file://` git URLs (local mode only).
    pub local_sources: LocalSources,
}

/// Who may build from a repository on the platform's own machine. Such a repository
/// is read by the builder (as root locally), so by default only the admin may, and
/// never from inside the platform's data folder (its Postgres, S3 objects, token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalSources {
    /// Cloud mode: only `https://` URLs to public hosts.
    Never,
    /// The admin token only (the local default).
    AdminOnly { data_dir: std::path::PathBuf },
    /// Every account (`DEPLOYSPHERE_ALLOW_LOCAL_PATHS=1`).
    Everyone { data_dir: std::path::PathBuf },
}

impl LocalSources {
    pub fn allowed(&self) -> bool {
        *self != LocalSources::Never
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub logs: LogStore,
    pub deployments: Deployments,
    pub config: Arc<ApiConfig>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/accounts", post(handlers::create_account))
        .route("/v1/build-credentials", post(handlers::build_credentials))
        .route(
            "/v1/projects",
            post(handlers::create_project).get(handlers::list_projects),
        )
        .route("/v1/projects/{id}", get(handlers::get_project))
        .route(
            "/v1/projects/{id}/deployments",
            post(handlers::create_deployment).get(handlers::list_deployments),
        )
        .route("/v1/projects/{id}/promote", post(handlers::promote))
        .route("/v1/projects/{id}/logs", get(handlers::project_logs))
        .route("/v1/deployments/{id}", get(handlers::get_deployment))
        .route(
            "/v1/deployments/{id}/cancel",
            post(handlers::cancel_deployment),
        )
        .route("/v1/deployments/{id}/logs", get(handlers::deployment_logs))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("route") })
        .with_state(state)
}
