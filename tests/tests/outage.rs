//! The log pipeline across a ClickHouse outage: its own test binary, because it stops
//! and restarts the platform's ClickHouse.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_e2e::*;
use serde_json::json;

/// The pid of the platform's clickhouse-server (its command line names our home).
fn clickhouse_pid() -> Option<i32> {
    let home = platform().home.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline);
            (comm.starts_with("clickhouse") && cmdline.contains(&home)).then_some(pid)
        })
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
    let repo = Repo::from_fixture("slow-lines");
    repo.commit("slow");
    let project = api
        .create_project(json!({"name": "outage", "git_url": repo.url(), "env": {"LINES": "3000", "SECONDS": "8"}}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    api.logs_containing(id, "slow line 100").await;

    // Stop ClickHouse in the middle of the build.
    let pid = clickhouse_pid().expect("the platform's clickhouse-server");
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc_kill(pid) };
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

    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "READY", "{done}");
    let lines = api.logs_containing(id, "Deployed").await;
    assert_gapless(&lines);
    let slow: Vec<String> = messages(&lines)
        .into_iter()
        .filter(|m| m.starts_with("slow line "))
        .collect();
    assert_eq!(
        slow,
        (1..=3000)
            .map(|i| format!("slow line {i}"))
            .collect::<Vec<_>>()
    );
}

/// SIGKILL, as a crash would.
unsafe fn libc_kill(pid: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    unsafe { kill(pid, 9) };
}
