//! The log pipeline across a broker that stops answering: its own test binary,
//! because it freezes the platform's Kafka broker.

use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::json;

/// The pid of the platform's tansu broker (its command line names our port).
fn broker_pid() -> Option<i32> {
    let listener = format!("tcp://{}", platform().kafka_brokers);
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let comm = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (comm.starts_with("tansu") && String::from_utf8_lossy(&cmdline).contains(&listener))
                .then_some(pid)
        })
}

fn signal(pid: i32, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, signal) };
}

const SIGCONT: i32 = 18;
const SIGSTOP: i32 = 19;

/// Thaws the broker even when the test fails half-way.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, SIGCONT);
    }
}

#[tokio::test]
async fn a_build_keeps_logging_through_a_frozen_broker_and_loses_no_line() {
    let api = Api::new_account("frozen").await;
    let repo = Repo::from_fixture("slow-lines");
    repo.commit("slow");
    let project = api
        .create_project(json!({"name": "frozen broker", "git_url": repo.url(), "env": {"LINES": "4000", "SECONDS": "6"}}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    api.logs_containing(id, "slow line 50").await;

    // Freeze the broker for longer than a Kafka client's default message timeout (30 s)
    // while the build goes on printing.
    let pid = broker_pid().expect("the platform's broker");
    let frozen = Frozen(pid);
    signal(pid, SIGSTOP);
    tokio::time::sleep(Duration::from_secs(40)).await;
    drop(frozen);

    let done = api
        .wait_for(id, Duration::from_secs(180), |d| {
            matches!(d["state"].as_str(), Some("READY" | "FAILED" | "CANCELED"))
        })
        .await;
    assert_eq!(done["state"], "READY", "{done}");
    let lines = api.logs_containing(id, "Deployed").await;
    assert_gapless(&lines);
    let slow: Vec<String> = messages(&lines)
        .into_iter()
        .filter(|m| m.starts_with("slow line "))
        .collect();
    assert_eq!(slow.len(), 4000);
    assert_eq!(slow.last().map(String::as_str), Some("slow line 4000"));
}
