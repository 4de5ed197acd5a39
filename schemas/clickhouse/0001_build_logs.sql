-- Build log lines, one row per line. A retried insert writes the same
-- (deployment_id, seq) again; ReplacingMergeTree folds the copies and reads use FINAL.
-- Kept within ClickHouse 18.16 (the Debian server); production-only clauses (TTL,
-- codecs) belong in a migration that runs only against a modern server.
CREATE TABLE IF NOT EXISTS build_logs (
    deployment_id String,
    project_id    String,
    seq           UInt64,
    ts            DateTime,
    ts_ms         UInt16,
    stream        String,
    message       String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (deployment_id, seq)
