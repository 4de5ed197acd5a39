//! Adapters from the core's needs to real services: Postgres (metadata), ClickHouse
//! (build logs), S3 (artifacts) and Kafka (log and event transport). The same code
//! serves both shapes; only endpoints and credentials differ.

pub mod aws;
pub mod clickhouse;
pub mod kafka;
pub mod pg;
pub mod s3;
pub mod signing;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The HTTP client of every AWS SDK client of the platform: HTTPS through rustls (ring)
/// with the system's trusted roots, and plain HTTP for local servers and emulators.
pub fn aws_http_client() -> aws_sdk_s3::config::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// A new secret token: `prefix` and 64 hex characters (256 random bits).
pub fn new_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("{prefix}{}", hex::encode(bytes))
}

/// How a token is stored: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}
