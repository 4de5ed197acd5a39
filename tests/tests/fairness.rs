//! One account cannot take every build slot: free slots go round-robin to the
//! accounts with builds waiting, and each account's queue is capped (429).
//!
//! The platform here has 2 build slots, each account may use both, and an account
//! may have 10 deployments waiting.

use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::{Value, json};

fn small_platform() -> &'static Platform {
    platform_with(Options {
        max_builds: 2,
        args: vec!["--max-queued-per-account".into(), "10".into()],
        ..Options::default()
    })
}

fn started_at(deployment: &Value) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let text = deployment["started_at"].as_str()?;
    Some(chrono::DateTime::parse_from_rfc3339(text).expect("started_at is RFC 3339"))
}

#[tokio::test]
async fn a_second_account_builds_before_the_first_accounts_queue_drains() {
    let p = small_platform();
    let a = Api::new_account_on(p, "busy").await;
    let b = Api::new_account_on(p, "patient").await;
    let (a_project, _a_repo) = slow_project(&a, "busy site", 20, 3).await;
    let (b_project, _b_repo) = slow_project(&b, "patient site", 20, 3).await;

    // A fills both slots and queues ten more: the queue cap.
    let mut a_ids = Vec::new();
    for _ in 0..12 {
        a_ids.push(
            a.deploy(&a_project).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let refused = a
        .post(&format!("/v1/projects/{a_project}/deployments"), json!({}))
        .await;
    assert_eq!(refused.status, 429, "{refused:?}");
    assert_eq!(refused.body["error"]["code"], "too_many_requests");
    let message = refused.error_message();
    assert!(
        message.contains("10 deployments waiting") && message.contains("per account"),
        "{message}"
    );
    let listed = a
        .get(&format!("/v1/projects/{a_project}/deployments"))
        .await;
    assert_eq!(
        listed.body["deployments"].as_array().map(Vec::len),
        Some(12),
        "the refused deployment was not created"
    );

    // B's one deployment takes the first slot that frees, ahead of A's ten.
    let b_id = b.deploy(&b_project).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b_started = b
        .wait_for(&b_id, Duration::from_secs(120), |d| started_at(d).is_some())
        .await;
    let b_started = started_at(&b_started).unwrap();
    let mut a_started_before_b = 0;
    for id in &a_ids {
        let d = a.get(&format!("/v1/deployments/{id}")).await.body;
        if started_at(&d).is_some_and(|t| t < b_started) {
            a_started_before_b += 1;
        }
    }
    // The two that held the slots, and at most one more that took the other slot
    // when two freed together.
    assert!(
        a_started_before_b <= 3,
        "{a_started_before_b} of A's builds started before B's (B waited behind A's queue)"
    );
    let b_done = b.wait_final(&b_id).await;
    assert_eq!(b_done["state"], "READY", "{b_done}");

    // Canceling frees queue places: the cap counts waiting deployments only.
    for id in &a_ids {
        a.post(&format!("/v1/deployments/{id}/cancel"), json!({}))
            .await;
    }
    let again = a
        .post(&format!("/v1/projects/{a_project}/deployments"), json!({}))
        .await;
    assert_eq!(again.status, 202, "{again:?}");
    let again = again.body["id"].as_str().unwrap().to_string();
    let again = a.wait_final(&again).await;
    assert_eq!(again["state"], "READY", "{again}");
}
