//! The local site router: `Host` -> deployment -> manifest -> blob, served from S3.
//! Each step is the shared routing crate's; this file only adds I/O and caches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use deploysphere_adapters::pg::Db;
use deploysphere_adapters::s3::ObjectStore;
use deploysphere_core::Manifest;
use deploysphere_core::manifest::blob_key;
use deploysphere_edge_router::{
    ByteRange, Decision, HostTarget, RouteOptions, byte_range, decide, decide_host, messages,
    parse_host,
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
            .ok_or_else(|| plain(StatusCode::NOT_FOUND, messages::NO_SITE))?;
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
            plain(StatusCode::BAD_GATEWAY, messages::UNAVAILABLE)
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
                plain(StatusCode::BAD_GATEWAY, messages::UNAVAILABLE)
            })?
            .ok_or_else(|| plain(StatusCode::NOT_FOUND, messages::NO_FILES))?;
        let manifest = Arc::new(manifest);
        let mut manifests = self.manifests.lock().expect("manifests lock");
        if manifests.len() >= MAX_CACHED_MANIFESTS {
            manifests.clear();
        }
        manifests.insert(key.to_string(), manifest.clone());
        Ok(manifest)
    }

    /// Step 4: a blob's bytes, all or `range`: from memory when the blob is small
    /// (content-addressed, so cached without expiry), else streamed from S3 and never
    /// held whole.
    async fn blob(
        &self,
        sha: &str,
        size: u64,
        range: Option<(u64, u64)>,
    ) -> Result<Body, Response> {
        let unavailable = || plain(StatusCode::BAD_GATEWAY, messages::UNAVAILABLE);
        let slice = |bytes: Bytes| match range {
            Some((start, end)) if (end as usize) < bytes.len() => {
                bytes.slice(start as usize..=end as usize)
            }
            _ => bytes,
        };
        if let Some(bytes) = self.blobs.lock().expect("blobs lock").1.get(sha)
            && bytes.len() as u64 == size
        {
            return Ok(Body::from(slice(bytes.clone())));
        }
        if size > BLOB_CACHE_MAX_FILE as u64 {
            let stream = self
                .store
                .get_stream(&blob_key(sha), range)
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "blob fetch failed");
                    unavailable()
                })?
                .ok_or_else(unavailable)?;
            return Ok(Body::from_stream(stream));
        }
        let bytes = self
            .store
            .get(&blob_key(sha))
            .await
            .ok()
            .flatten()
            .filter(|bytes| bytes.len() as u64 == size)
            .ok_or_else(unavailable)?;
        let mut cache = self.blobs.lock().expect("blobs lock");
        if cache.0 + bytes.len() > BLOB_CACHE_BYTES {
            cache.1.clear();
            cache.0 = 0;
        }
        cache.0 += bytes.len();
        cache.1.insert(sha.to_string(), bytes.clone());
        drop(cache);
        Ok(Body::from(slice(bytes)))
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    respond(Decision::plain(status.as_u16(), text), None, None)
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

/// Carries out the routing crate's decisions: the lookups in between are the only
/// part of this router that is not shared with the edge handler.
async fn route(
    sites: &Sites,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<Response, Response> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.host())
        .unwrap_or("");
    decide_host(method.as_str(), host, &sites.domain).map_err(|d| respond(d, None, None))?;
    let (deployment_id, manifest_key) = sites
        .deployment_for(host)
        .await?
        .ok_or_else(|| plain(StatusCode::NOT_FOUND, messages::NO_DEPLOYMENT))?;
    let manifest = sites.manifest(&manifest_key).await?;
    let condition = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let decision = decide(
        method.as_str(),
        uri.path(),
        condition,
        &deployment_id,
        &manifest,
        &RouteOptions::default(),
    );
    let Decision::File {
        status: 200,
        blob,
        size,
        body: true,
        headers: file_headers,
    } = &decision
    else {
        // HEAD, 304, a custom 404 page, a plain answer.
        let body = match &decision {
            Decision::File {
                blob,
                size,
                body: true,
                ..
            } => Some(sites.blob(blob, *size, None).await?),
            _ => None,
        };
        return Ok(respond(decision, body, None));
    };
    let etag = file_headers
        .iter()
        .find(|(name, _)| name == "etag")
        .map(|(_, value)| value.as_str())
        .unwrap_or_default();
    let header_text = |name| headers.get(name).and_then(|v| v.to_str().ok());
    match byte_range(
        header_text(header::RANGE),
        header_text(header::IF_RANGE),
        etag,
        *size,
    ) {
        ByteRange::Full => {
            let body = sites.blob(blob, *size, None).await?;
            Ok(respond(decision, Some(body), None))
        }
        ByteRange::Partial { start, end } => {
            let body = sites.blob(blob, *size, Some((start, end))).await?;
            Ok(respond(decision, Some(body), Some((start, end))))
        }
        ByteRange::Unsatisfiable => Ok(Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .header(header::CONTENT_RANGE, format!("bytes */{size}"))
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
            .body(Body::from(
                "the requested range starts past the end of the file\n",
            ))
            .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, messages::UNAVAILABLE))),
    }
}

/// The HTTP response for a decision; `body` is the file's content when it has one,
/// `range` the bytes of it that `body` holds (a 206).
fn respond(decision: Decision, body: Option<Body>, range: Option<(u64, u64)>) -> Response {
    let status = match range {
        Some(_) => StatusCode::PARTIAL_CONTENT,
        None => {
            StatusCode::from_u16(decision.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
        }
    };
    let mut builder = Response::builder().status(status);
    for (name, value) in decision.headers() {
        builder = builder.header(name.as_str(), value.as_str());
    }
    let body = match decision {
        Decision::File { size, .. } => {
            builder = builder.header(header::ACCEPT_RANGES, "bytes");
            match range {
                Some((start, end)) => {
                    builder = builder
                        .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"))
                        .header(header::CONTENT_LENGTH, end - start + 1);
                }
                None => builder = builder.header(header::CONTENT_LENGTH, size),
            }
            body.unwrap_or_else(Body::empty)
        }
        Decision::NotModified { .. } => Body::empty(),
        Decision::Plain { message, .. } => Body::from(message),
    };
    builder
        .body(body)
        .unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, messages::UNAVAILABLE))
}
