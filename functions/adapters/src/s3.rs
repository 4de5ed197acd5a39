//! S3: content-addressed blobs and per-deployment manifests. Works against AWS S3 and
//! any S3-compatible server on loopback (endpoint override, path-style addressing).

use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use deploysphere_core::Manifest;
use deploysphere_core::manifest::{blob_key, manifest_key};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    /// Seconds since the epoch.
    pub last_modified: i64,
}

#[derive(Debug, Clone)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:19000`; `None` for AWS's own endpoint.
    pub endpoint: Option<String>,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
    /// Set with temporary credentials (a build task's narrowed STS session).
    pub session_token: Option<String>,
}

/// An object's bytes, chunk by chunk.
pub type ObjectStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("S3: {0}")]
    Service(String),
    #[error("object {0} is not valid: {1}")]
    Invalid(String, String),
}

fn service_error<E>(context: &str) -> impl FnOnce(E) -> StoreError + '_
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata,
{
    move |e| StoreError::Service(readable(context, &e))
}

/// An S3 error as a person reads it: what failed and S3's own code and message
/// ("put staging/…: ServiceUnavailable: Please reduce your request rate"), or the
/// chain of causes when S3 did not answer ("… dispatch failure: io error: connection
/// refused"), not the SDK's debug dump.
fn readable<E>(context: &str, error: &E) -> String
where
    E: std::error::Error + aws_sdk_s3::error::ProvideErrorMetadata,
{
    if let Some(code) = error.code() {
        return match error.message() {
            Some(message) => format!("{context}: {code}: {message}"),
            None => format!("{context}: {code}"),
        };
    }
    let mut text = format!("{context}: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

#[derive(Clone)]
pub struct ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl ObjectStore {
    pub fn new(config: &S3Config) -> Self {
        let credentials = Credentials::new(
            &config.access_key,
            &config.secret_key,
            config.session_token.clone(),
            None,
            "deploysphere",
        );
        ObjectStore::with_credentials(config, SharedCredentialsProvider::new(credentials))
    }

    /// A store that signs with `credentials` (which may refresh), not the config's keys.
    pub fn with_credentials(config: &S3Config, credentials: SharedCredentialsProvider) -> Self {
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(crate::aws_http_client())
            // S3 answers 503 SlowDown/ServiceUnavailable and 500s under load: retried
            // with exponential backoff (about 0.2 + 0.4 + 0.8 + 1.6 s, with jitter).
            .retry_config(
                aws_sdk_s3::config::retry::RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(std::time::Duration::from_millis(200)),
            )
            .force_path_style(true);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        ObjectStore {
            client: aws_sdk_s3::Client::from_conf(builder.build()),
            bucket: config.bucket.clone(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Creates the bucket if it does not exist yet.
    pub async fn ensure_bucket(&self) -> Result<(), StoreError> {
        if self
            .client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .is_ok()
        {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map(|_| ())
            .map_err(service_error("create bucket"))
    }

    /// The object's metadata; `None` when it does not exist.
    /// With `checksum`, also the checksums S3 verified on upload.
    async fn head(
        &self,
        key: &str,
        checksum: bool,
    ) -> Result<Option<aws_sdk_s3::operation::head_object::HeadObjectOutput>, StoreError> {
        let mut request = self.client.head_object().bucket(&self.bucket).key(key);
        if checksum {
            request = request.checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled);
        }
        match request.send().await {
            Ok(head) => Ok(Some(head)),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(e) => Err(StoreError::Service(readable(&format!("head {key}"), &e))),
        }
    }

    pub async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.head(key, false).await?.is_some())
    }

    /// When an object was last written (seconds since the epoch); `None` if absent.
    pub async fn last_modified(&self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .head(key, false)
            .await?
            .and_then(|head| head.last_modified().map(|t| t.secs())))
    }

    pub async fn blob_exists(&self, sha256_hex: &str) -> Result<bool, StoreError> {
        self.exists(&blob_key(sha256_hex)).await
    }

    pub async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: &str,
        cache_control: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_type(content_type)
            .set_cache_control(cache_control.map(str::to_string))
            .send()
            .await
            .map(|_| ())
            .map_err(service_error(key))
    }

    /// Writes a small JSON object that readers must not cache (routing records).
    pub async fn put_json(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        let body = serde_json::to_vec(value)
            .map_err(|e| StoreError::Invalid(key.to_string(), e.to_string()))?;
        self.put(
            key,
            ByteStream::from(body),
            "application/json",
            Some("no-cache"),
        )
        .await
    }

    /// Uploads a file under a key with its SHA-256, which S3 checks against the bytes
    /// it receives and keeps (see [`ObjectStore::sha256_of`]).
    pub async fn put_checked(
        &self,
        key: &str,
        body: ByteStream,
        sha256_hex: &str,
        content_type: &str,
        cache_control: &str,
    ) -> Result<(), StoreError> {
        let digest = hex::decode(sha256_hex)
            .map_err(|e| StoreError::Invalid(key.to_string(), e.to_string()))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body)
            .content_type(content_type)
            .cache_control(cache_control)
            .checksum_sha256(base64_encode(&digest))
            .send()
            .await
            .map(|_| ())
            .map_err(service_error(key))
    }

    /// The SHA-256 (hex) S3 verified when the object was uploaded with one; `None`
    /// when the object does not exist, `Some(None)` when it has no checksum.
    pub async fn sha256_of(&self, key: &str) -> Result<Option<Option<String>>, StoreError> {
        Ok(self.head(key, true).await?.map(|head| {
            head.checksum_sha256()
                .and_then(base64_decode)
                .map(hex::encode)
        }))
    }

    /// Copies an object within the bucket (server side).
    pub async fn copy(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.client
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{from}", self.bucket))
            .key(to)
            .send()
            .await
            .map(|_| ())
            .map_err(service_error(to))
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(service_error(key))
    }

    /// Reads a whole object; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(StoreError::Service(readable(&format!("get {key}"), &e))),
        };
        let body = output
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Service(format!("reading {key}: {e}")))?;
        Ok(Some(body.into_bytes()))
    }

    /// An object's bytes as a stream, all of them or bytes `start..=end` (never held
    /// in memory whole: a site may hold files of gigabytes). `None` when it is absent.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<ObjectStream>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_range(range.map(|(start, end)| format!("bytes={start}-{end}")))
            .send()
            .await
        {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(StoreError::Service(readable(&format!("get {key}"), &e))),
        };
        let stream = futures::stream::unfold(output.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(std::io::Error::other), body))
        });
        Ok(Some(Box::pin(stream)))
    }

    pub async fn put_manifest(&self, manifest: &Manifest) -> Result<String, StoreError> {
        let key = manifest_key(&manifest.deployment_id);
        let body = serde_json::to_vec(manifest)
            .map_err(|e| StoreError::Invalid(key.clone(), e.to_string()))?;
        self.put(
            &key,
            ByteStream::from(body),
            "application/json",
            Some("no-cache"),
        )
        .await?;
        Ok(key)
    }

    /// Leaves a build's spec for its build task; returns the key.
    pub async fn put_build_spec(
        &self,
        spec: &deploysphere_core::BuildSpec,
    ) -> Result<String, StoreError> {
        let key = deploysphere_core::manifest::build_spec_key(&spec.deployment_id);
        let value = serde_json::to_value(spec)
            .map_err(|e| StoreError::Invalid(key.clone(), e.to_string()))?;
        self.put_json(&key, &value).await?;
        Ok(key)
    }

    pub async fn get_manifest(&self, key: &str) -> Result<Option<Manifest>, StoreError> {
        let Some(bytes) = self.get(key).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Invalid(key.to_string(), e.to_string()))
    }

    /// Lists keys under a prefix (tests and tooling).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .list_objects(prefix)
            .await?
            .into_iter()
            .map(|object| object.key)
            .collect())
    }

    /// Lists the objects under a prefix with their sizes and ages.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<ListedObject>, StoreError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(service_error("list"))?;
            keys.extend(page.contents().iter().filter_map(|o| {
                Some(ListedObject {
                    key: o.key()?.to_string(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    last_modified: o.last_modified().map_or(0, |t| t.secs()),
                })
            }));
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}
