//! The local site router: `Host` -> deployment -> manifest -> blob, served from S3.
//! Each step is the shared routing crate's; this file only adds I/O and caches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use deploysphere_adapters::pg::Db;
use deploysphere_adapters::s3::ObjectStore;
use deploysphere_core::Manifest;
use deploysphere_core::manifest::blob_key;
use deploysphere_edge_router::{
    HostTarget, Resolved, RouteOptions, etag, if_none_match, normalize_path, parse_host, resolve,
};

/// How long a host -> deployment answer is reused: alias moves show within this time.
const ROUTE_TTL: Duration = Duration::from_millis(500);
const BLOB_CACHE_BYTES: usize = 256 * 1024 * 1024;
const BLOB_CACHE_MAX_FILE: usize = 8 * 1024 * 1024;
/// Entries kept in the host and manifest caches before they are emptied.
const MAX_CACHED_ROUTES: usize = 10_000;
const MAX_CACHED_MANIFESTS: usize = 1_000;

type RouteAnswer = Option<(String, String)>;

pub struct Sites {
    db: Db,
    store: ObjectStore,
    domain: String,
    routes: Mutex<HashMap<String, (Instant, RouteAnswer)>>,
    manifests: Mutex<HashMap<String, Arc<Manifest>>>,
    blobs: Mutex<(usize, HashMap<String, Bytes>)>,
}

impl Sites {
    pub fn new(db: Db, store: ObjectStore, domain: &str) -> Arc<Self> {
        Arc::new(Sites {
            db,
            store,
            domain: domain.to_string(),
            routes: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            blobs: Mutex::new((0, HashMap::new())),
        })
    }

    /// Step 1: host -> (deployment id, manifest key).
    async fn deployment_for(&self, host: &str) -> Result<RouteAnswer, Response> {
        let target = parse_host(host, &self.domain)
            .ok_or_else(|| plain(StatusCode::NOT_FOUND, "No site is served at this host.\n"))?;
        let cache_key = match &target {
            HostTarget::Production { slug } => slug.clone(),
            HostTarget::Deployment { slug, short_id } => format!("{slug}-{short_id}"),
        };
        if let Some((at, answer)) = self.routes.lock().expect("routes lock").get(&cache_key)
            && at.elapsed() < ROUTE_TTL
        {
            return Ok(answer.clone());
        }
        let answer = match &target {
            HostTarget::Production { slug } => self.db.route(slug, None).await,
            HostTarget::Deployment { slug, short_id } => self.db.route(slug, Some(short_id)).await,
        }
        .map_err(|e| {
            tracing::error!(error = %e, "route lookup failed");
            plain(
                StatusCode::BAD_GATEWAY,
                "The site is temporarily unavailable.\n",
            )
        })?
        .map(|(id, key)| (id.to_string(), key));
        let mut routes = self.routes.lock().expect("routes lock");
        if routes.len() >= MAX_CACHED_ROUTES {
            routes.retain(|_, (at, _)| at.elapsed() < ROUTE_TTL);
            if routes.len() >= MAX_CACHED_ROUTES {
                routes.clear();
            }
        }
        routes.insert(cache_key, (Instant::now(), answer.clone()));
        Ok(answer)
    }

    /// Step 2: the deployment's manifest (immutable, cached for good).
    async fn manifest(&self, key: &str) -> Result<Arc<Manifest>, Response> {
        if let Some(manifest) = self.manifests.lock().expect("manifests lock").get(key) {
            return Ok(manifest.clone());
        }
        let manifest = self
            .store
            .get_manifest(key)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "manifest fetch failed");
                plain(
                    StatusCode::BAD_GATEWAY,
                    "The site is temporarily unavailable.\n",
                )
            })?
            .ok_or_else(|| plain(StatusCode::NOT_FOUND, "This deployment has no files.\n"))?;
        let manifest = Arc::new(manifest);
        let mut manifests = self.manifests.lock().expect("manifests lock");
        if manifests.len() >= MAX_CACHED_MANIFESTS {
            manifests.clear();
        }
        manifests.insert(key.to_string(), manifest.clone());
        Ok(manifest)
    }

    /// Step 4: a blob's bytes (content-addressed, so cached without expiry).
    async fn blob(&self, sha: &str) -> Result<Bytes, Response> {
        if let Some(bytes) = self.blobs.lock().expect("blobs lock").1.get(sha) {
            return Ok(bytes.clone());
        }
        let bytes = self
            .store
            .get(&blob_key(sha))
            .await
            .ok()
            .flatten()
            .ok_or_else(|| {
                plain(
                    StatusCode::BAD_GATEWAY,
                    "The file is temporarily unavailable.\n",
                )
            })?;
        if bytes.len() <= BLOB_CACHE_MAX_FILE {
            let mut cache = self.blobs.lock().expect("blobs lock");
            if cache.0 + bytes.len() > BLOB_CACHE_BYTES {
                cache.1.clear();
                cache.0 = 0;
            }
            cache.0 += bytes.len();
            cache.1.insert(sha.to_string(), bytes.clone());
        }
        Ok(bytes)
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

pub async fn serve_site(
    State(sites): State<Arc<Sites>>,
    method: Method,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    match route(&sites, &method, &headers, &uri).await {
        Ok(response) | Err(response) => response,
    }
}

async fn route(
    sites: &Sites,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, Response> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "Only GET and HEAD are allowed.\n",
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Err(response);
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("");
    let (deployment_id, manifest_key) = sites.deployment_for(host).await?.ok_or_else(|| {
        plain(
            StatusCode::NOT_FOUND,
            "This project has no ready deployment.\n",
        )
    })?;
    let manifest = sites.manifest(&manifest_key).await?;
    let path = normalize_path(uri.path())
        .map_err(|_| plain(StatusCode::BAD_REQUEST, "Malformed path.\n"))?;
    let (entry, status) = match resolve(&manifest, &path, &RouteOptions::default()) {
        Resolved::File { entry, status, .. } => (entry, status),
        Resolved::NotFound => return Err(plain(StatusCode::NOT_FOUND, "Not found.\n")),
    };
    let tag = etag(entry);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, &entry.content_type)
        .header(header::CACHE_CONTROL, &entry.cache_control)
        .header(header::ETAG, &tag)
        .header("x-content-type-options", "nosniff")
        .header("x-deploysphere-deployment", &deployment_id);
    let not_modified = status == 200
        && headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|condition| if_none_match(condition, &tag));
    if not_modified {
        return Ok(builder
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .expect("valid response"));
    }
    builder = builder
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_LENGTH, entry.size);
    if method == Method::HEAD {
        return Ok(builder.body(Body::empty()).expect("valid response"));
    }
    let bytes = sites.blob(&entry.blob).await?;
    Ok(builder.body(Body::from(bytes)).expect("valid response"))
}
