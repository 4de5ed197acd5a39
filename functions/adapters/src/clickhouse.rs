//! ClickHouse: the build-log store. Rows are keyed by (deployment_id, seq) in a
//! ReplacingMergeTree, so a retried insert never shows a line twice (reads use FINAL).

use clickhouse::Row;
use deploysphere_core::{LogLine, LogStream};
use serde::{Deserialize, Serialize};

/// The DDL of `schemas/clickhouse/`, applied in order (each is idempotent).
const MIGRATIONS: &[&str] = &[include_str!(
    "../../../schemas/clickhouse/0001_build_logs.sql"
)];

/// The retention step, for servers with TTL only.
const RETENTION: &str = include_str!("../../../schemas/clickhouse/0002_build_logs_ttl.sql");

/// True from ClickHouse 19.6, the first release with table TTL.
fn supports_ttl(version: &str) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (19, 6)
}

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

    /// Sets the log retention (days) where the server supports TTL (19.6+). Returns the
    /// server version when it does not, and then keeps every line.
    pub async fn apply_retention(&self, days: u32) -> Result<Result<(), String>, ClickHouseError> {
        let version: String = self.server.query("SELECT version()").fetch_one().await?;
        if !supports_ttl(&version) {
            return Ok(Err(version));
        }
        let ddl = RETENTION.replace("{retention_days}", &days.max(1).to_string());
        self.client.query(&ddl).execute().await?;
        Ok(Ok(()))
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

    /// How many distinct lines of a deployment are stored.
    pub async fn count(&self, deployment_id: &str) -> Result<u64, ClickHouseError> {
        self.client
            .query("SELECT count() FROM build_logs FINAL WHERE deployment_id = ?")
            .bind(deployment_id)
            .fetch_one::<u64>()
            .await
    }

    /// Lines of a deployment with `seq > after_seq`, in order, at most `limit`.
    pub async fn lines(
        &self,
        deployment_id: &str,
        after_seq: u64,
        limit: u64,
    ) -> Result<Vec<LogLine>, ClickHouseError> {
        self.search(&LogQuery {
            deployment_id: Some(deployment_id.to_string()),
            after_seq,
            limit,
            ..LogQuery::default()
        })
        .await
    }

    /// Lines matching every filter of `query`: in `seq` order for one deployment,
    /// newest first across a project.
    pub async fn search(&self, query: &LogQuery) -> Result<Vec<LogLine>, ClickHouseError> {
        let mut sql = String::from("SELECT ?fields FROM build_logs FINAL WHERE 1");
        if query.deployment_id.is_some() {
            sql.push_str(" AND deployment_id = ?");
        }
        if let Some(ids) = &query.deployment_ids {
            // Uuids only (checked below): safe to inline, and the primary key serves IN.
            let list: Vec<String> = ids
                .iter()
                .filter(|id| id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
                .map(|id| format!("'{id}'"))
                .collect();
            if list.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(&format!(" AND deployment_id IN ({})", list.join(",")));
        }
        if query.after_seq > 0 {
            sql.push_str(" AND seq > ?");
        }
        if query.text.is_some() {
            sql.push_str(" AND positionCaseInsensitiveUTF8(message, ?) > 0");
        }
        if query.stream.is_some() {
            sql.push_str(" AND stream = ?");
        }
        if query.since_ms.is_some() {
            sql.push_str(" AND toUInt64(ts) * 1000 + ts_ms >= ?");
        }
        if query.until_ms.is_some() {
            sql.push_str(" AND toUInt64(ts) * 1000 + ts_ms <= ?");
        }
        if query.deployment_id.is_some() {
            sql.push_str(" ORDER BY seq LIMIT ?");
        } else {
            sql.push_str(" ORDER BY ts DESC, ts_ms DESC, deployment_id, seq DESC LIMIT ?");
        }
        let mut statement = self.client.query(&sql);
        if let Some(id) = &query.deployment_id {
            statement = statement.bind(id.as_str());
        }
        if query.after_seq > 0 {
            statement = statement.bind(query.after_seq);
        }
        if let Some(text) = &query.text {
            statement = statement.bind(text.as_str());
        }
        if let Some(stream) = query.stream {
            statement = statement.bind(stream.as_str());
        }
        if let Some(since) = query.since_ms {
            statement = statement.bind(since.max(0) as u64);
        }
        if let Some(until) = query.until_ms {
            statement = statement.bind(until.max(0) as u64);
        }
        let rows = statement.bind(query.limit).fetch_all::<LogRow>().await?;
        Ok(rows.into_iter().map(LogLine::from).collect())
    }
}

/// Filters of a log search; `None` means "any".
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub deployment_id: Option<String>,
    /// Any of these deployments (a project's), served by the primary key.
    pub deployment_ids: Option<Vec<String>>,
    pub after_seq: u64,
    /// Case-insensitive substring of the message.
    pub text: Option<String>,
    pub stream: Option<LogStream>,
    /// Milliseconds since the epoch, inclusive.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_needs_19_6_or_later() {
        assert!(!supports_ttl("18.16.1"));
        assert!(!supports_ttl("19.5.3.8"));
        assert!(supports_ttl("19.6.2.11"));
        assert!(supports_ttl("24.8.4.13"));
        assert!(!supports_ttl("nonsense"));
    }

    #[test]
    fn the_retention_statement_is_filled_in() {
        let ddl = RETENTION.replace("{retention_days}", "30");
        assert!(ddl.contains("MODIFY TTL ts + INTERVAL 30 DAY"));
        assert!(!ddl.contains('{'));
    }
}
