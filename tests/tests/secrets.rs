//! What a build can learn of a project's secrets, and what the platform leaves on disk:
//! every form of a secret is masked in the log, no secret is on any process's command
//! line while a build runs, and the platform's own secrets are private files.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use deploysphere_e2e::*;
use serde_json::json;

const KEY: &str = "Zx9/k3y value(77)";
const PEM: &str = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7q1w2e3r4t5y6\n-----END PRIVATE KEY-----";

#[tokio::test]
async fn secrets_are_masked_in_every_form_and_on_no_command_line() {
    let api = Api::new_account("secrets").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("mask probes");
    let long = format!("{KEY}-and-more-of-it");
    let project = api
        .create_project(json!({
            "name": "mask probes",
            "git_url": repo.url(),
            "env": {
                "MASK_PROBES": "1",
                "API_KEY": {"value": KEY, "secret": true},
                "API_KEY_LONG": {"value": long, "secret": true},
                "PEM_KEY": {"value": PEM, "secret": true}
            }
        }))
        .await;

    // Watch every command line from before the build is queued until it has ended.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        let needles = [KEY, "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC"];
        std::thread::spawn(move || {
            let (mut leaks, mut saw_sandbox) = (Vec::new(), false);
            while !stop.load(Ordering::Relaxed) {
                for line in command_lines() {
                    saw_sandbox |= line.starts_with("bwrap ");
                    if needles.iter().any(|n| line.contains(n)) {
                        leaks.push(line);
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            (leaks, saw_sandbox)
        })
    };
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    stop.store(true, Ordering::Relaxed);
    let (leaks, saw_sandbox) = watcher.join().expect("watcher");
    assert_eq!(done["state"], "READY", "{done}");
    assert!(
        saw_sandbox,
        "the watcher never saw the build's sandbox running"
    );
    assert!(leaks.is_empty(), "secrets on a command line: {leaks:?}");

    let lines = api.logs_containing(id, "Deployed").await;
    let text = messages(&lines);
    let line = |prefix: &str| {
        text.iter()
            .find(|m| m.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line: {text:?}"))
            .clone()
    };
    // base64 padding (`=`) carries nothing of the secret and may stay.
    assert_eq!(line("b64=").trim_end_matches('='), "b64=***");
    assert_eq!(line("b64-echo=").trim_end_matches('='), "b64-echo=***");
    assert_eq!(line("url="), "url=***");
    assert_eq!(line("longer="), "longer=***");
    assert_eq!(line("split="), "split=***");
    let pem: Vec<&String> = text.iter().filter(|m| m.starts_with("pem> ")).collect();
    assert_eq!(pem.len(), 4, "{text:?}");
    assert!(pem.iter().all(|m| *m == "pem> ***"), "{pem:?}");
    for forbidden in [KEY, "more-of-it", "MIIEvQ", "BKcwgg", &KEY[5..]] {
        assert!(
            !text.iter().any(|m| m.contains(forbidden)),
            "{forbidden} leaked: {text:?}"
        );
    }
}

#[tokio::test]
async fn a_secret_too_short_to_mask_is_refused_and_nothing_is_created() {
    let api = Api::new_account("short secret").await;
    let reply = api
        .post(
            "/v1/projects",
            json!({"name": "short", "git_url": "/tmp/x", "env": {"PIN": {"value": "1234", "secret": true}}}),
        )
        .await;
    assert_eq!(reply.status, 400, "{reply:?}");
    let message = reply.error_message();
    assert!(
        message.contains("env.PIN") && message.contains("at least 6"),
        "{message}"
    );
    assert_eq!(api.get("/v1/projects").await.body["projects"], json!([]));
    // The same value as a plain variable is fine.
    let reply = api
        .post(
            "/v1/projects",
            json!({"name": "short", "git_url": "/tmp/x", "env": {"PIN": "1234"}}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");
}

#[test]
fn the_platforms_secrets_are_private_files() {
    let p = platform();
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(&p.home), 0o700, "the data folder");
    for file in [
        "token",
        "platform.json",
        "s3-secret",
        "build-signing-key",
        "redis-password",
        "redis-build-password",
        "redis/users.acl",
    ] {
        assert_eq!(mode(&p.home.join(file)), 0o600, "{file}");
    }
}
