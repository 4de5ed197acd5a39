-- Retention: build log lines older than the setting are dropped by ClickHouse.
-- Applied only on servers with TTL (ClickHouse 19.6 and later); the Debian 18.16
-- server used locally has none, and then logs are kept.
ALTER TABLE build_logs MODIFY TTL ts + INTERVAL {retention_days} DAY
