//! Fault drill: the platform process killed (SIGKILL) in the middle of a build and
//! started again (its own test binary, as it kills the platform). The build dies with
//! it (no build runs on unwatched), the next start fails it with a clear reason (never
//! left BUILDING), and its slot comes back.

use std::time::{Duration, Instant};

use deploysphere_e2e::*;
use serde_json::json;

/// Processes whose command line, environment or cgroup names the deployment (its
/// builder, and the sandboxed commands in the build's cgroup).
fn processes_of(deployment_id: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let environ = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cgroup = std::fs::read(entry.path().join("cgroup")).unwrap_or_default();
            let names = |bytes: &[u8]| String::from_utf8_lossy(bytes).contains(deployment_id);
            (names(&environ) || names(&cmdline) || names(&cgroup)).then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn a_build_running_when_the_platform_is_killed_is_failed_and_its_slot_freed() {
    let p = platform();
    let api = Api::new_account("killed").await;
    let id = start_slow_build(&api, "killed", 4000, 30, 100).await;
    // The builder knows its deployment through its build spec key.
    assert!(
        !processes_of(&id).is_empty(),
        "the build's processes are visible"
    );

    p.kill_and_restart();
    // A client of its own: the old one's pooled connections died with the platform.
    let api = Api::on(p, &api.token);

    let start = Instant::now();
    loop {
        let left = processes_of(&id);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the build kept running after the platform died: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let done = api.get(&format!("/v1/deployments/{id}")).await.body;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(
        done["error"], "the platform stopped while this build ran",
        "{done}"
    );

    // Its slot is free: the next build starts and finishes.
    let repo = Repo::from_fixture("static-site");
    repo.commit("after the crash");
    let project = api
        .create_project(json!({"name": "after crash", "git_url": repo.url()}))
        .await;
    let next = api.deploy(project["id"].as_str().unwrap()).await;
    let next = api.wait_final(next["id"].as_str().unwrap()).await;
    assert_eq!(next["state"], "READY", "{next}");
    wait_served(&host("after-crash"), "/", "Static fixture v1").await;
}
