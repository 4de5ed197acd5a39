//! The log pipeline across a ClickHouse outage: its own test binary, because it stops
//! and restarts the platform's ClickHouse.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_e2e::*;

/// The pid of the platform's clickhouse-server (its command line names our home).
fn clickhouse_pid() -> Option<i32> {
    server_pid("clickhouse", &platform().home.display().to_string())
}

struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn every_line_reaches_clickhouse_exactly_once_across_a_clickhouse_outage() {
    let api = Api::new_account("outage").await;
    let id = &start_slow_build(&api, "outage", 3000, 8, 100).await;

    // Stop ClickHouse in the middle of the build.
    let pid = clickhouse_pid().expect("the platform's clickhouse-server");
    send_signal(pid, 9); // SIGKILL, as a crash would

    let start = Instant::now();
    while clickhouse_pid().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "clickhouse did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        api.get(&format!("/v1/deployments/{id}/logs")).await.status,
        503,
        "the log store is down"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;

    // Start it again on the same data.
    let folder = platform().home.join("clickhouse");
    let _restarted = Restarted(
        Command::new("clickhouse-server")
            .arg(format!("--config-file={}/config.xml", folder.display()))
            .current_dir(&folder)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clickhouse-server"),
    );

    assert_slow_build_complete(&api, id, 3000).await;
}
