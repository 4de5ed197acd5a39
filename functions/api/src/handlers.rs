//! Request handlers. Each checks its input before it changes anything.

use std::collections::BTreeMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use deploysphere_adapters::clickhouse::LogQuery;
use deploysphere_adapters::pg::{Deployment, Project};
use deploysphere_core::{BuildSettings, DeploymentState, EnvVar, LogStream, validate};
use deploysphere_events::GrantError;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::{Auth, hash_token, new_token};
use crate::error::ApiError;
use crate::views::{DeploymentView, LogLineView, ProjectView};
use crate::{AppState, LocalSources};

type ApiResult<T> = Result<T, ApiError>;

/// Parses a JSON body whatever its Content-Type, naming the bad field on error.
fn parse_body<T: DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The query parameters, or a 400 that says which one is wrong.
fn query_params<T>(query: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    query
        .map(|Query(query)| query)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

fn parse_uuid(id: &str, what: &str) -> ApiResult<Uuid> {
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(what))
}

async fn owned_project(state: &AppState, auth: &Auth, id_or_slug: &str) -> ApiResult<Project> {
    state
        .db
        .project(auth.0.id, id_or_slug)
        .await?
        .ok_or_else(|| ApiError::not_found("project"))
}

async fn owned_deployment(state: &AppState, auth: &Auth, id: &str) -> ApiResult<Deployment> {
    let id = parse_uuid(id, "deployment")?;
    state
        .db
        .deployment_of(auth.0.id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("deployment"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAccount {
    name: String,
}

pub async fn create_account(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    if !auth.0.is_admin {
        return Err(ApiError::forbidden(
            "only the admin token can create accounts",
        ));
    }
    let request: CreateAccount = parse_body(&body)?;
    let name = request.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::bad_request("name: must be 1 to 100 characters"));
    }
    let token = new_token();
    let account = state
        .db
        .create_account(name, false, &hash_token(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": account.id.to_string(), "name": account.name, "token": token})),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateProject {
    name: String,
    git_url: String,
    #[serde(default)]
    branch: Option<String>,
    #[serde(default)]
    build: Option<BuildSettings>,
    #[serde(default)]
    env: Option<BTreeMap<String, EnvVar>>,
}

fn validate_build(build: &BuildSettings) -> ApiResult<()> {
    if let Some(dir) = &build.root_dir {
        validate::relative_dir("build.root_dir", dir)?;
    }
    if let Some(dir) = &build.output_dir {
        validate::relative_dir("build.output_dir", dir)?;
    }
    if let Some(command) = &build.install_command {
        validate::command("build.install_command", command)?;
    }
    if let Some(command) = &build.build_command {
        validate::command("build.build_command", command)?;
    }
    if let Some(timeout) = build.timeout_seconds
        && !(10..=6 * 3600).contains(&timeout)
    {
        return Err(ApiError::bad_request(
            "build.timeout_seconds: must be between 10 and 21600",
        ));
    }
    Ok(())
}

/// Whether the account may build from this machine (a path, a `file://` URL, or a
/// host on its loopback or private network): the admin (unless every account may).
/// Returns the data folder, which stays out of reach.
fn this_machine_allowed(local: &LocalSources, is_admin: bool) -> ApiResult<&std::path::PathBuf> {
    match local {
        LocalSources::Never => Err(ApiError::bad_request("git_url: must be an https:// URL")),
        LocalSources::AdminOnly { .. } if !is_admin => Err(ApiError::forbidden(
            "git_url: local paths, file:// URLs and hosts on this machine or its private network \
             are for the admin token only on this platform \
             (use a public https:// URL, or start it with DEPLOYSPHERE_ALLOW_LOCAL_PATHS=1)",
        )),
        LocalSources::AdminOnly { data_dir } | LocalSources::Everyone { data_dir } => Ok(data_dir),
    }
}

/// A repository on the platform's machine: the admin's (unless every account may), and
/// never inside the data folder, however the path is spelled.
fn local_source_allowed(local: &LocalSources, is_admin: bool, url: &str) -> ApiResult<()> {
    let data_dir = this_machine_allowed(local, is_admin)?;
    let path = std::path::Path::new(url.strip_prefix("file://").unwrap_or(url));
    // git may resolve `..` by itself, against folders that do not exist yet here.
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(ApiError::bad_request(
            "git_url: a local path must not contain '..' (nor lead into the platform's data folder)",
        ));
    }
    // Symlinks resolve against what exists; the rest is taken as spelled.
    let mut existing = path;
    let mut rest = Vec::new();
    let resolved = loop {
        if let Ok(real) = existing.canonicalize() {
            break rest.iter().rev().fold(real, |p, part| p.join(part));
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => break path.to_path_buf(),
        }
    };
    let data_dir = data_dir.canonicalize().unwrap_or_else(|_| data_dir.clone());
    if resolved.starts_with(&data_dir) {
        return Err(ApiError::bad_request(
            "git_url: must not be inside the platform's data folder",
        ));
    }
    Ok(())
}

pub async fn create_project(
    State(state): State<AppState>,
    auth: Auth,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<ProjectView>)> {
    let request: CreateProject = parse_body(&body)?;
    validate::project_name(&request.name)?;
    let name = request.name.trim();
    let source = validate::git_url(&request.git_url, state.config.local_sources.allowed())?;
    match &source {
        validate::GitSource::Local(url) => {
            local_source_allowed(&state.config.local_sources, auth.0.is_admin, url)?;
        }
        validate::GitSource::Remote(url) if validate::names_private_host(url) => {
            this_machine_allowed(&state.config.local_sources, auth.0.is_admin)?;
        }
        validate::GitSource::Remote(_) => {}
    }
    if let Some(branch) = &request.branch {
        validate::git_ref("branch", branch)?;
    }
    let build = request.build.unwrap_or_default();
    validate_build(&build)?;
    let env = request.env.unwrap_or_default();
    if env.len() > 200 {
        return Err(ApiError::bad_request("env: at most 200 variables"));
    }
    for (key, var) in &env {
        validate::env_key(key)?;
        validate::env_value(key, &var.value)?;
        if var.secret {
            validate::secret_value(key, &var.value)?;
        }
    }
    let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.value.len()).sum();
    if env_bytes > validate::MAX_ENV_BYTES {
        return Err(ApiError::bad_request(format!(
            "env: names and values may hold at most {} KiB in all (these hold {env_bytes} bytes)",
            validate::MAX_ENV_BYTES / 1024
        )));
    }
    let existing = state.db.list_projects(auth.0.id).await?;
    if existing.iter().any(|p| p.name.eq_ignore_ascii_case(name)) {
        return Err(ApiError::conflict(format!(
            "a project named {name:?} already exists"
        )));
    }
    let base = validate::slugify(name)?;
    for attempt in 1..=50 {
        let slug = if attempt == 1 {
            base.clone()
        } else {
            format!("{base}-{attempt}")
        };
        if state.db.slug_taken(&slug).await? {
            continue;
        }
        match state
            .db
            .insert_project(
                auth.0.id,
                name,
                &slug,
                source.url(),
                request.branch.as_deref(),
                &build,
                &env,
            )
            .await
        {
            Ok(project) => {
                return Ok((
                    StatusCode::CREATED,
                    Json(ProjectView::new(&project, &state.config.sites)),
                ));
            }
            Err(e) if e.violated_constraint() == Some("projects_account_name") => {
                return Err(ApiError::conflict(format!(
                    "a project named {name:?} already exists"
                )));
            }
            Err(e) if e.is_unique_violation() => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::conflict(
        "no free slug for this name; choose another name",
    ))
}

pub async fn list_projects(State(state): State<AppState>, auth: Auth) -> ApiResult<Json<Value>> {
    let projects = state.db.list_projects(auth.0.id).await?;
    let views: Vec<ProjectView> = projects
        .iter()
        .map(|p| ProjectView::new(p, &state.config.sites))
        .collect();
    Ok(Json(json!({ "projects": views })))
}

pub async fn get_project(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<ProjectView>> {
    let project = owned_project(&state, &auth, &id).await?;
    Ok(Json(ProjectView::new(&project, &state.config.sites)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateDeployment {
    #[serde(default, rename = "ref")]
    git_ref: Option<String>,
    /// Build without restoring or saving the build cache.
    #[serde(default)]
    no_cache: bool,
}

pub async fn create_deployment(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<DeploymentView>)> {
    let project = owned_project(&state, &auth, &id).await?;
    let request: CreateDeployment = if body.iter().all(u8::is_ascii_whitespace) {
        CreateDeployment::default()
    } else {
        parse_body(&body)?
    };
    if let Some(git_ref) = &request.git_ref {
        validate::git_ref("ref", git_ref)?;
    }
    let git_ref = request
        .git_ref
        .or_else(|| project.branch.clone())
        .unwrap_or_else(|| "HEAD".to_string());
    let max_waiting = state.deployments.scheduler_config().max_queued_per_account;
    let Some(deployment) = state
        .db
        .insert_deployment(&project, &git_ref, request.no_cache, max_waiting)
        .await?
    else {
        return Err(ApiError::too_many_requests(format!(
            "this account already has {max_waiting} deployments waiting for a build slot \
             (the limit of queued deployments per account); wait for some to start or cancel them"
        )));
    };
    // The deployment exists now: scheduling is best effort (the periodic tick retries).
    state.deployments.schedule_best_effort().await;
    let deployment = state
        .db
        .deployment(deployment.id)
        .await?
        .unwrap_or(deployment);
    Ok((
        StatusCode::ACCEPTED,
        Json(DeploymentView::new(&deployment, &state.config.sites)),
    ))
}

#[derive(Deserialize)]
pub struct ListQuery {
    limit: Option<i64>,
}

pub async fn list_deployments(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let query = query_params(query)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 1000"));
    }
    let project = owned_project(&state, &auth, &id).await?;
    let deployments = state.db.list_deployments(project.id, limit).await?;
    let views: Vec<DeploymentView> = deployments
        .iter()
        .map(|d| DeploymentView::new(d, &state.config.sites))
        .collect();
    Ok(Json(json!({ "deployments": views })))
}

pub async fn get_deployment(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentView>> {
    let deployment = owned_deployment(&state, &auth, &id).await?;
    Ok(Json(DeploymentView::new(&deployment, &state.config.sites)))
}

pub async fn cancel_deployment(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
) -> ApiResult<Json<DeploymentView>> {
    let deployment = owned_deployment(&state, &auth, &id).await?;
    if deployment.state.is_final() {
        return Err(ApiError::conflict(format!(
            "deployment is {}; only QUEUED, BUILDING or UPLOADING deployments can be canceled",
            deployment.state
        )));
    }
    let deployment = state.deployments.cancel(deployment.id).await?;
    Ok(Json(DeploymentView::new(&deployment, &state.config.sites)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Promote {
    deployment_id: String,
    /// Keep production on this deployment (the default, as after a rollback), or let
    /// READY deployments take production over again (`false`).
    pin: Option<bool>,
}

pub async fn promote(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let project = owned_project(&state, &auth, &id).await?;
    let request: Promote = parse_body(&body)?;
    let deployment_id = Uuid::parse_str(&request.deployment_id)
        .map_err(|_| ApiError::bad_request("deployment_id: must be a deployment id (UUID)"))?;
    let deployment = state
        .db
        .deployment_of(auth.0.id, deployment_id)
        .await?
        .filter(|d| d.project_id == project.id)
        .ok_or_else(|| ApiError::not_found("deployment"))?;
    if deployment.state != DeploymentState::Ready {
        return Err(ApiError::conflict(format!(
            "deployment is {}; only READY deployments can be promoted",
            deployment.state
        )));
    }
    let pin = request.pin.unwrap_or(true);
    if !state
        .deployments
        .promote(project.id, deployment.id, pin)
        .await?
    {
        return Err(ApiError::conflict("deployment is no longer READY"));
    }
    let project = owned_project(&state, &auth, &id).await?;
    let deployment = state
        .db
        .deployment(deployment.id)
        .await?
        .unwrap_or(deployment);
    Ok(Json(json!({
        "project": ProjectView::new(&project, &state.config.sites),
        "deployment": DeploymentView::new(&deployment, &state.config.sites),
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    after_seq: Option<u64>,
    limit: Option<u64>,
    /// Case-insensitive text the message contains.
    q: Option<String>,
    stream: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch, inclusive.
    since: Option<String>,
    until: Option<String>,
}

fn parse_time(field: &str, value: &str) -> ApiResult<i64> {
    if let Ok(ms) = value.parse::<i64>() {
        return Ok(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{field}: must be an RFC 3339 time (2026-01-31T12:00:00Z) or milliseconds since the epoch"
            ))
        })
}

/// The filters shared by the deployment and project log routes.
fn log_filters(query: &LogsQuery) -> ApiResult<LogQuery> {
    let limit = query.limit.unwrap_or(1000);
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::bad_request("limit: must be between 1 and 10000"));
    }
    let text = match query.q.as_deref() {
        None | Some("") => None,
        Some(q) if q.len() > 500 || q.contains('\0') => {
            return Err(ApiError::bad_request(
                "q: must be at most 500 bytes without NUL",
            ));
        }
        Some(q) => Some(q.to_string()),
    };
    let stream = match query.stream.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            LogStream::parse(s)
                .ok_or_else(|| ApiError::bad_request("stream: must be stdout, stderr or system"))?,
        ),
    };
    let since_ms = query
        .since
        .as_deref()
        .map(|v| parse_time("since", v))
        .transpose()?;
    let until_ms = query
        .until
        .as_deref()
        .map(|v| parse_time("until", v))
        .transpose()?;
    Ok(LogQuery {
        after_seq: query.after_seq.unwrap_or(0),
        text,
        stream,
        since_ms,
        until_ms,
        limit,
        ..LogQuery::default()
    })
}

async fn search_logs(
    state: &AppState,
    filters: &LogQuery,
) -> ApiResult<Vec<deploysphere_core::LogLine>> {
    state
        .logs
        .search(filters)
        .await
        .map_err(|e| ApiError::unavailable("log store", &e))
}

/// A deployment's log lines in `seq` order, filtered; page with `after_seq`.
pub async fn deployment_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let query = query_params(query)?;
    let mut filters = log_filters(&query)?;
    let deployment = owned_deployment(&state, &auth, &id).await?;
    filters.deployment_id = Some(deployment.id.to_string());
    let lines = search_logs(&state, &filters).await?;
    let next_after_seq = lines.last().map_or(filters.after_seq, |line| line.seq);
    let lines: Vec<LogLineView> = lines.into_iter().map(LogLineView::from).collect();
    Ok(Json(
        json!({ "lines": lines, "next_after_seq": next_after_seq }),
    ))
}

/// Log lines across every deployment of a project, newest first, filtered.
pub async fn project_logs(
    State(state): State<AppState>,
    auth: Auth,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let query = query_params(query)?;
    if query.after_seq.is_some() {
        return Err(ApiError::bad_request(
            "after_seq: only applies to one deployment's log (use since/until here)",
        ));
    }
    let mut filters = log_filters(&query)?;
    let project = owned_project(&state, &auth, &id).await?;
    let ids = state.db.deployment_ids(project.id, 500).await?;
    filters.deployment_ids = Some(ids.iter().map(Uuid::to_string).collect());
    let lines = search_logs(&state, &filters).await?;
    let lines: Vec<Value> = lines
        .into_iter()
        .map(|line| {
            let deployment_id = line.deployment_id.clone();
            let mut view = serde_json::to_value(LogLineView::from(line)).unwrap_or_default();
            view["deployment_id"] = Value::String(deployment_id);
            view
        })
        .collect();
    Ok(Json(json!({ "lines": lines })))
}

/// A build task's exchange: its one-time grant (as the bearer token) for credentials
/// of its own deployment and the next grant. Not for accounts: a build holds no API
/// token.
pub async fn build_credentials(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> ApiResult<Json<deploysphere_core::BuildCredentials>> {
    let invalid = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_grant",
            "send the build's grant as 'Authorization: Bearer <grant>'; a grant works once",
        )
    };
    let grant = crate::auth::bearer(&headers).ok_or_else(invalid)?;
    match state.deployments.exchange_build_grant(grant).await {
        Ok(credentials) => Ok(Json(credentials)),
        Err(GrantError::Invalid) => Err(invalid()),
        Err(e @ GrantError::Ended(_)) => Err(ApiError::conflict(e.to_string())),
        Err(GrantError::Unavailable(e)) => Err(ApiError::unavailable("build credentials", &e)),
    }
}
