//! Fault drill: Postgres restarted in the middle of a build (its own test binary, as
//! it stops the platform's Postgres). While it is down the API answers 503 with a JSON
//! error; it recovers by itself once Postgres is back; the build's reports made
//! during the outage are applied, not lost, and the build ends READY with its whole log.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_e2e::*;

/// The platform's postmaster and its command line (its arguments name our port).
fn postmaster() -> Option<(i32, Vec<String>)> {
    let needle = format!("\0-p\0{}\0", platform().postgres_port);
    let pid = server_pid("postgres", &needle)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).to_string())
        .collect();
    Some((pid, args))
}

/// Postgres started again by the test; stopped (fast shutdown) when dropped.
struct Restarted(Child);

impl Drop for Restarted {
    fn drop(&mut self) {
        send_signal(self.0.id() as i32, 2);
        let _ = self.0.wait();
    }
}

fn start_again(args: &[String]) -> Restarted {
    // As the platform starts it: as the postgres user when we are root.
    // SAFETY: geteuid(2) has no preconditions.
    let mut command = if unsafe { geteuid() } == 0 {
        let mut command = Command::new("setpriv");
        command.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ]);
        command.args(args);
        command
    } else {
        let mut command = Command::new(&args[0]);
        command.args(&args[1..]);
        command
    };
    Restarted(
        command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres again"),
    )
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

#[tokio::test]
async fn a_build_survives_a_postgres_restart_and_the_api_answers_503_meanwhile() {
    let api = Api::new_account("pg restart").await;
    let id = &start_slow_build(&api, "pg restart", 2000, 8, 100).await;

    let (pid, args) = postmaster().expect("the platform's postmaster");
    send_signal(pid, 2); // SIGINT: fast shutdown, as a restart does
    let start = Instant::now();
    while postmaster().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "postgres did not stop"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Down: every database route answers 503 with a JSON error, and changes nothing.
    for reply in [
        api.get("/v1/projects").await,
        api.get(&format!("/v1/deployments/{id}")).await,
        api.post(
            "/v1/projects",
            serde_json::json!({"name": "during outage", "git_url": "https://github.com/a/b.git"}),
        )
        .await,
    ] {
        assert_eq!(reply.status, 503, "{reply:?}");
        assert_eq!(reply.body["error"]["code"], "unavailable", "{reply:?}");
        assert!(reply.error_message().contains("database"), "{reply:?}");
    }
    // The build goes on and finishes while Postgres is away: its last line reaches
    // ClickHouse, so its final report is on the broker, not yet applied.
    let store = deploysphere_adapters::clickhouse::LogStore::new(
        &platform().clickhouse_url,
        "deploysphere",
        "default",
        "",
    );
    let start = Instant::now();
    loop {
        let lines = store.lines(id, 0, 100_000).await.unwrap_or_default();
        if lines.iter().any(|l| l.message.starts_with("Deployed")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the build did not finish while postgres was down"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        api.get(&format!("/v1/deployments/{id}")).await.status == 503,
        "postgres is still down"
    );
    let _restarted = start_again(&args);

    // The API recovers by itself.
    let start = Instant::now();
    loop {
        let reply = api.get("/v1/projects").await;
        if reply.status == 200 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the API did not recover: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let projects = api.get("/v1/projects").await.body;
    let names: Vec<&str> = projects["projects"]
        .as_array()
        .map(|p| p.iter().filter_map(|p| p["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        ["pg restart"],
        "the request during the outage created nothing"
    );

    assert_slow_build_complete(&api, id, 2000).await;
    let done = api.get(&format!("/v1/deployments/{id}")).await.body;
    for field in ["started_at", "ready_at", "finished_at", "commit_sha"] {
        assert!(done[field].is_string(), "{field} is missing: {done}");
    }
    assert_eq!(done["is_production"], true, "{done}");
}
