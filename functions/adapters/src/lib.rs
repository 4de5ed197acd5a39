//! Adapters from the core's needs to real services: Postgres (metadata), ClickHouse
//! (build logs), S3 (artifacts) and Kafka (log and event transport). The same code
//! serves both shapes; only endpoints and credentials differ.

pub mod clickhouse;
pub mod kafka;
pub mod pg;
pub mod s3;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
