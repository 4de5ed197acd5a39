//! The log table's migrations on a modern ClickHouse engine (chDB 26.9, in-process,
//! through python3; `make setup` installs it). The local server is 18.16, which has no
//! TTL, so this is where the retention migration really runs.

use std::io::Write;
use std::process::{Command, Stdio};

const TABLE: &str = include_str!("../../../schemas/clickhouse/0001_build_logs.sql");
const RETENTION: &str = include_str!("../../../schemas/clickhouse/0002_build_logs_ttl.sql");

/// Runs the statements in a fresh chDB session and returns what the script prints.
fn chdb(script: &str) -> String {
    let mut child = Command::new("python3")
        .arg("-")
        .env("TABLE_SQL", TABLE)
        .env("RETENTION_SQL", RETENTION.replace("{retention_days}", "30"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("script");
    let output = child.wait_with_output().expect("python3 ran");
    assert!(
        output.status.success(),
        "chDB failed (is it installed? `make setup`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn retention_drops_lines_older_than_the_setting_and_replays_stay_single_on_chdb() {
    let out = chdb(
        r#"
import os
from chdb import session
s = session.Session()
s.query("CREATE DATABASE logs")
s.query("USE logs")
s.query(os.environ["TABLE_SQL"])
s.query(os.environ["RETENTION_SQL"])
print(s.query("SHOW CREATE TABLE build_logs", "TSVRaw"))
row = "('d1', 'p1', {seq}, {ts}, 0, 'stdout', '{msg}')"
old = row.format(seq=1, ts="now() - INTERVAL 31 DAY", msg="old line")
new = row.format(seq=2, ts="now() - INTERVAL 29 DAY", msg="recent line")
s.query("INSERT INTO build_logs VALUES " + old + ", " + new)
s.query("INSERT INTO build_logs VALUES " + new)  # a replayed batch
s.query("OPTIMIZE TABLE build_logs FINAL")
print("ROWS", s.query("SELECT seq, message FROM build_logs FINAL ORDER BY seq", "CSV"))
"#,
    );
    assert!(out.contains("TTL ts + toIntervalDay(30)"), "{out}");
    let rows = out.split("ROWS").nth(1).unwrap_or_default().trim();
    assert_eq!(rows, "2,\"recent line\"", "{out}");
}
