//! Kafka: client settings shared by every producer and consumer of the platform.
//!
//! The local broker speaks plain TCP. Amazon MSK (the AWS shape) accepts only TLS with
//! SASL/OAUTHBEARER, where the bearer token is an "MSK IAM" token: a SigV4-presigned
//! `kafka-cluster:Connect` URL, base64url-encoded, that the broker checks against the
//! signer's IAM policy. [`KafkaContext`] signs those tokens with this process's AWS
//! credentials whenever librdkafka asks for one (at connect, then before expiry).

use std::error::Error;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::OAuthToken;
use rdkafka::consumer::ConsumerContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, ClientContext};

/// Build-log lines, keyed by deployment id (per-deployment order).
pub const BUILD_LOGS: &str = "build-logs";
/// Build-log records that can never be inserted, set aside with the reason.
pub const BUILD_LOGS_DEAD_LETTER: &str = "build-logs-dead-letter";
/// Build-task reports, keyed by deployment id.
pub const DEPLOYMENT_EVENTS: &str = "deployment-events";
/// Deployment events that can never be applied, set aside with the reason.
pub const DEPLOYMENT_EVENTS_DEAD_LETTER: &str = "deployment-events-dead-letter";

/// How long an MSK IAM token is valid (what AWS's own signers use).
pub const MSK_TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// How clients prove who they are to the brokers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaAuth {
    /// Plain TCP, no authentication: the local broker on loopback.
    Plaintext,
    /// TLS, no client authentication.
    Tls,
    /// TLS with SASL/OAUTHBEARER carrying MSK IAM tokens (MSK's port 9098).
    MskIam,
}

impl KafkaAuth {
    pub const ALLOWED: &'static str = "none, tls or msk-iam";

    pub fn parse(value: &str) -> Option<KafkaAuth> {
        match value {
            "none" | "" => Some(KafkaAuth::Plaintext),
            "tls" => Some(KafkaAuth::Tls),
            "msk-iam" => Some(KafkaAuth::MskIam),
            _ => None,
        }
    }
}

/// Where the brokers are and how to reach them.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `host:port[,host:port...]`.
    pub brokers: String,
    pub auth: KafkaAuth,
    /// PEM file of the CA that signs the brokers' certificates; `None` looks for the
    /// system's CA bundle (what MSK's publicly trusted certificates need).
    pub ca_file: Option<PathBuf>,
    /// The AWS region MSK IAM tokens are signed for.
    pub region: String,
}

impl KafkaSettings {
    pub fn plaintext(brokers: &str) -> KafkaSettings {
        KafkaSettings {
            brokers: brokers.to_string(),
            auth: KafkaAuth::Plaintext,
            ca_file: None,
            region: String::new(),
        }
    }

    /// From the process settings: `DEPLOYSPHERE_KAFKA_BROKERS`,
    /// `DEPLOYSPHERE_KAFKA_AUTH` (none, tls or msk-iam; default none),
    /// `DEPLOYSPHERE_KAFKA_CA_FILE` and, for msk-iam, `AWS_REGION`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<KafkaSettings, String> {
        let brokers = var("DEPLOYSPHERE_KAFKA_BROKERS")
            .filter(|b| !b.trim().is_empty())
            .ok_or("DEPLOYSPHERE_KAFKA_BROKERS is not set (host:port of the Kafka brokers)")?;
        let auth_name = var("DEPLOYSPHERE_KAFKA_AUTH").unwrap_or_default();
        let auth = KafkaAuth::parse(&auth_name).ok_or_else(|| {
            format!(
                "DEPLOYSPHERE_KAFKA_AUTH is {auth_name:?}: allowed are {}",
                KafkaAuth::ALLOWED
            )
        })?;
        let region = var("AWS_REGION").unwrap_or_default();
        if auth == KafkaAuth::MskIam && region.is_empty() {
            return Err(
                "DEPLOYSPHERE_KAFKA_AUTH=msk-iam needs AWS_REGION (the cluster's region)".into(),
            );
        }
        Ok(KafkaSettings {
            brokers,
            auth,
            ca_file: var("DEPLOYSPHERE_KAFKA_CA_FILE")
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
            region,
        })
    }

    /// The connection part of every client's configuration.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        let protocol = match self.auth {
            KafkaAuth::Plaintext => "plaintext",
            KafkaAuth::Tls => "ssl",
            KafkaAuth::MskIam => "sasl_ssl",
        };
        config.set("security.protocol", protocol);
        if self.auth != KafkaAuth::Plaintext {
            let ca = match &self.ca_file {
                Some(file) => file.display().to_string(),
                // The OpenSSL built into librdkafka does not know where this system
                // keeps its CAs; "probe" finds the bundle (Debian, Amazon Linux, ...).
                None => "probe".to_string(),
            };
            config
                .set("ssl.ca.location", ca)
                .set("ssl.endpoint.identification.algorithm", "https");
        }
        if self.auth == KafkaAuth::MskIam {
            config.set("sasl.mechanism", "OAUTHBEARER");
        }
        config
    }

    pub fn producer_config(&self) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("acks", "all")
            .set("linger.ms", "5")
            .set("message.timeout.ms", "30000")
            // One request in flight per connection keeps a partition's order on retries.
            .set("max.in.flight.requests.per.connection", "1");
        config
    }

    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.client_config();
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            // The local broker answers an empty fetch only after the full wait: keep it
            // short so a state change reaches Postgres within tens of milliseconds.
            .set("fetch.wait.max.ms", "50")
            .set("isolation.level", "read_uncommitted");
        config
    }

    /// The client context for these settings: for MSK IAM, one that signs tokens with
    /// `credentials`, which must then be given.
    pub fn context(
        &self,
        credentials: Option<SharedCredentialsProvider>,
    ) -> Result<KafkaContext, String> {
        let signer = match (self.auth, credentials) {
            (KafkaAuth::MskIam, Some(credentials)) => Some(Arc::new(MskIamSigner {
                region: self.region.clone(),
                credentials,
                runtime: tokio::runtime::Handle::try_current().ok(),
                cached: Mutex::new(None),
            })),
            (KafkaAuth::MskIam, None) => {
                return Err("Kafka auth msk-iam needs AWS credentials to sign with".into());
            }
            _ => None,
        };
        Ok(KafkaContext {
            signer,
            ..KafkaContext::without_signer()
        })
    }
}

pub fn producer_config(brokers: &str) -> ClientConfig {
    KafkaSettings::plaintext(brokers).producer_config()
}

pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    KafkaSettings::plaintext(brokers).consumer_config(group)
}

/// The platform's client context: signs MSK IAM tokens when asked, and notes when
/// every broker connection was lost (a broker that comes back may have lost what it
/// had acknowledged).
#[derive(Clone)]
pub struct KafkaContext {
    signer: Option<Arc<MskIamSigner>>,
    brokers_down: Arc<AtomicBool>,
    last_error: Arc<Mutex<Option<String>>>,
}

impl KafkaContext {
    /// A context for brokers that need no token (plain TCP or TLS only).
    pub fn without_signer() -> KafkaContext {
        KafkaContext {
            signer: None,
            brokers_down: Arc::new(AtomicBool::new(false)),
            last_error: Arc::new(Mutex::new(None)),
        }
    }

    /// A context for another client: the same signer, its own error state.
    pub fn for_another_client(&self) -> KafkaContext {
        KafkaContext {
            signer: self.signer.clone(),
            ..KafkaContext::without_signer()
        }
    }

    /// The client's latest error other than "all brokers down" (a refused token, a
    /// failed TLS handshake, ...), for messages that say why nothing was delivered.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok()?.clone()
    }

    /// Whether all brokers were unreachable at some point.
    pub fn brokers_down_seen(&self) -> bool {
        self.brokers_down.load(Ordering::Relaxed)
    }

    /// Hands a fresh token to a client that does not poll for token refreshes itself
    /// (rdkafka's `AdminClient` never polls its main queue, where librdkafka asks).
    async fn prime_token<C: ClientContext>(
        &self,
        client: &rdkafka::client::Client<C>,
    ) -> anyhow::Result<()> {
        let Some(signer) = &self.signer else {
            return Ok(());
        };
        let credentials = signer
            .credentials
            .provide_credentials()
            .await
            .map_err(|e| SigningError(format!("no AWS credentials: {e}")))?;
        signer.remember(&credentials);
        let token = signer.token_with(&credentials)?;
        let token_value = std::ffi::CString::new(token.token)?;
        let principal = std::ffi::CString::new(token.principal_name)?;
        let mut error = [0 as std::ffi::c_char; 512];
        // SAFETY: the client pointer is live for the borrow; the strings and the error
        // buffer outlive the call, and the buffer's length is passed with it.
        let code = unsafe {
            rdkafka::bindings::rd_kafka_oauthbearer_set_token(
                client.native_ptr(),
                token_value.as_ptr(),
                token.lifetime_ms,
                principal.as_ptr(),
                std::ptr::null_mut(),
                0,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if code != rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            // SAFETY: librdkafka writes a NUL-terminated message into the buffer.
            let message = unsafe { std::ffi::CStr::from_ptr(error.as_ptr()) };
            anyhow::bail!("setting the MSK IAM token: {}", message.to_string_lossy());
        }
        Ok(())
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!("kafka: {error}: {reason}");
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            // The consequence, not the cause: keep the error that said why.
            self.brokers_down.store(true, Ordering::Relaxed);
        } else if let Ok(mut last) = self.last_error.lock() {
            *last = Some(format!("{error}: {reason}"));
        }
    }

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        match &self.signer {
            Some(signer) => Ok(signer.token()?),
            None => Err("no MSK IAM signer: set DEPLOYSPHERE_KAFKA_AUTH=msk-iam".into()),
        }
    }
}

impl ConsumerContext for KafkaContext {}

/// Signs MSK IAM tokens with a credentials provider.
struct MskIamSigner {
    region: String,
    credentials: SharedCredentialsProvider,
    /// The runtime the provider may need (the ECS endpoint and the build's grant
    /// exchange are HTTP calls).
    runtime: Option<tokio::runtime::Handle>,
    /// The credentials last resolved; reused while they have a while left.
    cached: Mutex<Option<Credentials>>,
}

/// Credentials with less than this left are resolved again before signing.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(120);
/// How long a token request may wait for the credentials provider; librdkafka asks
/// again after a failure.
const CREDENTIALS_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct SigningError(String);

impl fmt::Display for SigningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MSK IAM token: {}", self.0)
    }
}

impl Error for SigningError {}

impl MskIamSigner {
    fn token(&self) -> Result<OAuthToken, SigningError> {
        self.token_with(&self.current_credentials()?)
    }

    fn token_with(&self, credentials: &Credentials) -> Result<OAuthToken, SigningError> {
        let (token, mut expires) = msk_iam_token(&self.region, credentials, SystemTime::now())?;
        // A token cannot outlive the credentials that signed it.
        if let Some(expiry) = credentials.expiry() {
            expires = expires.min(expiry);
        }
        let lifetime_ms = expires
            .duration_since(UNIX_EPOCH)
            .map_err(|e| SigningError(e.to_string()))?
            .as_millis();
        Ok(OAuthToken {
            token,
            principal_name: credentials.access_key_id().to_string(),
            lifetime_ms: i64::try_from(lifetime_ms).map_err(|e| SigningError(e.to_string()))?,
        })
    }

    fn remember(&self, credentials: &Credentials) {
        if let Ok(mut cached) = self.cached.lock() {
            *cached = Some(credentials.clone());
        }
    }

    /// The cached credentials while they have a while left; else resolved again.
    /// librdkafka asks from rdkafka's polling threads or from inside an async poll:
    /// the provider runs on a thread of our own, which may block on the runtime in
    /// either case, and a provider that hangs fails this token, not the client.
    fn current_credentials(&self) -> Result<Credentials, SigningError> {
        if let Ok(cached) = self.cached.lock()
            && let Some(credentials) = cached.as_ref()
            && credentials
                .expiry()
                .is_none_or(|at| at > SystemTime::now() + CREDENTIALS_MARGIN)
        {
            return Ok(credentials.clone());
        }
        let provider = self.credentials.clone();
        let runtime = self.runtime.clone();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let future = provider.provide_credentials();
            let resolved = match runtime {
                Some(runtime) => runtime.block_on(future).map_err(|e| e.to_string()),
                None => tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())
                    .and_then(|runtime| runtime.block_on(future).map_err(|e| e.to_string())),
            };
            let _ = sender.send(resolved);
        });
        let credentials = receiver
            .recv_timeout(CREDENTIALS_TIMEOUT)
            .map_err(|e| match e {
                std::sync::mpsc::RecvTimeoutError::Timeout => SigningError(format!(
                    "no AWS credentials within {} s",
                    CREDENTIALS_TIMEOUT.as_secs()
                )),
                std::sync::mpsc::RecvTimeoutError::Disconnected => {
                    SigningError("the credentials provider panicked".into())
                }
            })?
            .map_err(|e| SigningError(format!("no AWS credentials: {e}")))?;
        self.remember(&credentials);
        Ok(credentials)
    }
}

/// An MSK IAM auth token: `https://kafka.<region>.amazonaws.com/?Action=kafka-cluster:Connect`
/// presigned with SigV4 (service `kafka-cluster`, valid 15 minutes from `now`),
/// base64url-encoded without padding. Returns the token and when it expires.
pub fn msk_iam_token(
    region: &str,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<(String, SystemTime), SigningError> {
    use base64::Engine;
    let fail = |e: &dyn fmt::Display| SigningError(e.to_string());
    let host = format!("kafka.{region}.amazonaws.com");
    let url = format!("https://{host}/?Action=kafka-cluster%3AConnect");
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(MSK_TOKEN_LIFETIME);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("kafka-cluster")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| fail(&e))?
        .into();
    let request = SignableRequest::new(
        "GET",
        &url,
        std::iter::once(("host", host.as_str())),
        SignableBody::Bytes(&[]),
    )
    .map_err(|e| fail(&e))?;
    let (instructions, _) = sign(request, &params).map_err(|e| fail(&e))?.into_parts();
    let mut signed = url;
    for (name, value) in instructions.params() {
        signed.push('&');
        signed.push_str(name);
        signed.push('=');
        signed.push_str(&uri_encode(value));
    }
    signed.push_str("&User-Agent=deploysphere");
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signed);
    // Signed at whole seconds, like the X-Amz-Date in the URL.
    let signed_at = now
        .duration_since(UNIX_EPOCH)
        .map_err(|e| fail(&e))?
        .as_secs();
    Ok((
        token,
        UNIX_EPOCH + Duration::from_secs(signed_at) + MSK_TOKEN_LIFETIME,
    ))
}

/// SigV4's URI encoding: unreserved characters stay, all else is `%XX`.
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Creates the platform's topics; topics that exist already are fine. A `replication`
/// of -1 takes the cluster's default (what MSK wants).
pub async fn create_topics(
    settings: &KafkaSettings,
    context: &KafkaContext,
    partitions: i32,
    replication: i32,
) -> anyhow::Result<()> {
    let context = context.for_another_client();
    let admin: AdminClient<KafkaContext> = settings
        .client_config()
        .create_with_context(context.clone())?;
    context.prime_token(admin.inner()).await?;
    let topics: Vec<NewTopic> = [
        BUILD_LOGS,
        DEPLOYMENT_EVENTS,
        BUILD_LOGS_DEAD_LETTER,
        DEPLOYMENT_EVENTS_DEAD_LETTER,
    ]
    .iter()
    .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
    .collect();
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(15)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

static SET_ASIDE_TOTAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records this process has set aside on a dead-letter topic since it started.
pub fn set_aside_total() -> u64 {
    SET_ASIDE_TOTAL.load(Ordering::Relaxed)
}

/// A record that can never be used, with where it came from and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub topic: String,
    pub partition: i64,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub reason: String,
}

impl DeadLetter {
    /// A record of an MSK event (key and value in base64, as the event source mapping
    /// delivers them; a value that is not base64 is kept as it is).
    pub fn from_msk(
        record: &aws_lambda_events::event::kafka::KafkaRecord,
        reason: String,
    ) -> DeadLetter {
        DeadLetter {
            topic: record.topic.clone().unwrap_or_default(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.as_deref().map(msk_bytes),
            payload: record.value.as_deref().map(msk_bytes).unwrap_or_default(),
            reason,
        }
    }
}

/// The bytes of an MSK record's key or value.
pub fn msk_bytes(field: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(field)
        .unwrap_or_else(|_| field.as_bytes().to_vec())
}

/// The value of header `name` of an MSK record (the event source mapping delivers
/// header values as arrays of signed bytes).
pub fn msk_header(
    record: &aws_lambda_events::event::kafka::KafkaRecord,
    name: &str,
) -> Option<Vec<u8>> {
    record
        .headers
        .iter()
        .find_map(|headers| headers.get(name))
        .map(|value| value.iter().map(|b| *b as u8).collect())
}

/// The headers of a build's record: its signature (see [`crate::signing`]).
pub fn signature_header(signature: &str) -> rdkafka::message::OwnedHeaders {
    rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
        key: crate::signing::SIGNATURE_HEADER,
        value: Some(signature),
    })
}

/// Whether an MSK record on `topic` (its `payload` names `deployment_id`) carries
/// that deployment's signature; the reason to set it aside when it does not.
pub fn check_msk_signature(
    checker: &mut crate::signing::Checker<'_>,
    topic: &str,
    deployment_id: &str,
    payload: &[u8],
    record: &aws_lambda_events::event::kafka::KafkaRecord,
) -> Result<(), String> {
    let signature = msk_header(record, crate::signing::SIGNATURE_HEADER);
    checker
        .check(topic, deployment_id, payload, signature.as_deref())
        .map_err(|e| e.to_string())
}

/// Where dead letters go. Guarantee: `Ok` means every letter is durably stored, and
/// each was counted and logged (with the process's running total).
#[async_trait::async_trait]
pub trait DeadLetters: Send + Sync {
    async fn set_aside(&self, letters: &[DeadLetter]) -> Result<(), String>;
}

/// Dead letters on a dead-letter topic, with the reason and origin
/// (`topic/partition/offset`) as headers and the record's own key.
pub struct KafkaDeadLetters {
    producer: FutureProducer<KafkaContext>,
    topic: &'static str,
}

impl KafkaDeadLetters {
    /// Letters go to `topic` ([`BUILD_LOGS_DEAD_LETTER`] or
    /// [`DEPLOYMENT_EVENTS_DEAD_LETTER`]).
    pub fn new(
        settings: &KafkaSettings,
        context: KafkaContext,
        topic: &'static str,
    ) -> Result<Self, KafkaError> {
        Ok(KafkaDeadLetters {
            producer: settings.producer_config().create_with_context(context)?,
            topic,
        })
    }
}

#[async_trait::async_trait]
impl DeadLetters for KafkaDeadLetters {
    async fn set_aside(&self, letters: &[DeadLetter]) -> Result<(), String> {
        for letter in letters {
            let origin = format!("{}/{}/{}", letter.topic, letter.partition, letter.offset);
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "reason",
                    value: Some(letter.reason.as_str()),
                })
                .insert(Header {
                    key: "origin",
                    value: Some(origin.as_str()),
                });
            let mut record = FutureRecord::to(self.topic)
                .payload(&letter.payload)
                .headers(headers);
            if let Some(key) = &letter.key {
                record = record.key(key);
            }
            self.producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| format!("{}: {e}", self.topic))?;
        }
        SET_ASIDE_TOTAL.fetch_add(letters.len() as u64, Ordering::Relaxed);
        for letter in letters {
            tracing::warn!(
                topic = %letter.topic,
                partition = letter.partition,
                offset = letter.offset,
                reason = %letter.reason,
                dead_letter_topic = self.topic,
                total = set_aside_total(),
                "record set aside"
            );
        }
        Ok(())
    }
}
