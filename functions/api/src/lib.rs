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
    /// Local mode: accept local paths and `file://` git URLs.
    pub allow_local_sources: bool,
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
