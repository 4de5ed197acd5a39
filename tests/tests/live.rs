//! The live path of build logs: Redis pub/sub plus a recent list per deployment.

use std::time::{Duration, Instant};

use deploysphere_e2e::*;
use futures::StreamExt;
use serde_json::{Value, json};

/// A live line as Redis holds it (`v1=<signature> <json>`), once its signature is
/// checked to be the build's.
fn signed_line(key: &deploysphere_adapters::signing::BuildKey, sealed: &[u8]) -> Value {
    let (signature, payload) = deploysphere_adapters::signing::unseal(sealed);
    let signature = signature.expect("every live line is signed");
    assert!(
        key.verify(deploysphere_adapters::kafka::BUILD_LOGS, payload, signature),
        "signed with the deployment's key"
    );
    serde_json::from_slice(payload).expect("a log line")
}

#[tokio::test]
async fn lines_are_published_live_in_order_and_kept_in_the_recent_list() {
    let p = platform();
    let client = redis::Client::open(p.redis_url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.psubscribe("logs:*").await.unwrap();
    let mut published = pubsub.into_on_message();

    let api = Api::new_account("live").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("node build");
    let project = api
        .create_project(
            json!({"name": "live logs", "git_url": repo.url(), "env": {"LINES": "300"}}),
        )
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_final(&id).await["state"], "READY");
    let stored = api.logs_containing(&id, "Deployed").await;

    // Everything the stored log has came live, in order, once, signed by the build.
    let key = p.build_key(&id);
    let channel = format!("logs:{id}");
    let mut live: Vec<Value> = Vec::new();
    let start = Instant::now();
    while live.len() < stored.len() && start.elapsed() < Duration::from_secs(10) {
        let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(1), published.next()).await
        else {
            continue;
        };
        if message.get_channel_name() == channel {
            live.push(signed_line(&key, message.get_payload_bytes()));
        }
    }
    assert_gapless(&live);
    assert_eq!(messages(&live), messages(&stored));

    // The recent list holds the same lines for viewers who come late.
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let recent: Vec<Vec<u8>> = redis::cmd("LRANGE")
        .arg(format!("logs:recent:{id}"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let recent: Vec<Value> = recent.iter().map(|r| signed_line(&key, r)).collect();
    assert_gapless(&recent);
    assert_eq!(recent.len(), stored.len());
    let ttl: i64 = redis::cmd("TTL")
        .arg(format!("logs:recent:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 3600, "the recent list expires: {ttl}");
}
