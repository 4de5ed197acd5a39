//! ClickHouse: the build-log store. Rows are keyed by (deployment_id, seq) in a
//! ReplacingMergeTree, so a retried insert never shows a line twice (reads use FINAL).

use clickhouse::Row;
use deploysphere_core::{LogLine, LogStream};
use serde::{Deserialize, Serialize};

/// The DDL of `schemas/clickhouse/`, applied in order (each is idempotent).
const MIGRATIONS: &[&str] = &[include_str!(
    "../../../schemas/clickhouse/0001_build_logs.sql"
)];

#[derive(Debug, Clone, Row, Serialize, Deserialize)]
struct LogRow {
    deployment_id: String,
    project_id: String,
    seq: u64,
    ts: u32,
    ts_ms: u16,
    stream: String,
    message: String,
}

impl From<&LogLine> for LogRow {
    fn from(line: &LogLine) -> Self {
        LogRow {
            deployment_id: line.deployment_id.clone(),
            project_id: line.project_id.clone(),
            seq: line.seq,
            ts: (line.ts_ms.max(0) / 1000) as u32,
            ts_ms: (line.ts_ms.max(0) % 1000) as u16,
            stream: line.stream.as_str().to_string(),
            message: line.message.clone(),
        }
    }
}

impl From<LogRow> for LogLine {
    fn from(row: LogRow) -> Self {
        LogLine {
            deployment_id: row.deployment_id,
            project_id: row.project_id,
            seq: row.seq,
            ts_ms: row.ts as i64 * 1000 + row.ts_ms as i64,
            stream: LogStream::parse(&row.stream).unwrap_or(LogStream::System),
            message: row.message,
        }
    }
}

pub use clickhouse::error::Error as ClickHouseError;

#[derive(Clone)]
pub struct LogStore {
    client: clickhouse::Client,
    server: clickhouse::Client,
    database: String,
}

impl LogStore {
    pub fn new(url: &str, database: &str, user: &str, password: &str) -> Self {
        let server = clickhouse::Client::default()
            .with_url(url)
            .with_user(user)
            .with_password(password)
            .with_validation(false);
        LogStore {
            client: server.clone().with_database(database),
            server,
            database: database.to_string(),
        }
    }

    /// Creates the database and applies the DDL.
    pub async fn migrate(&self) -> Result<(), ClickHouseError> {
        self.server
            .query(&format!(
                "CREATE DATABASE IF NOT EXISTS `{}`",
                self.database
            ))
            .execute()
            .await?;
        for ddl in MIGRATIONS {
            self.client.query(ddl).execute().await?;
        }
        Ok(())
    }

    /// Inserts a batch in one request. Replaying a batch is harmless.
    pub async fn insert(&self, lines: &[LogLine]) -> Result<(), ClickHouseError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut insert = self.client.insert::<LogRow>("build_logs").await?;
        for line in lines {
            insert.write(&LogRow::from(line)).await?;
        }
        insert.end().await
    }

    /// Lines of a deployment with `seq > after_seq`, in order, at most `limit`.
    pub async fn lines(
        &self,
        deployment_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<LogLine>, ClickHouseError> {
        let rows = self
            .client
            .query("SELECT ?fields FROM build_logs FINAL WHERE deployment_id = ? AND seq > ? ORDER BY seq LIMIT ?")
            .bind(deployment_id)
            .bind(after_seq)
            .bind(limit)
            .fetch_all::<LogRow>()
            .await?;
        Ok(rows.into_iter().map(LogLine::from).collect())
    }
}
