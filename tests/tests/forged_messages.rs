//! A build, or whatever escapes its sandbox, holds its own deployment's signing key,
//! the log brokers' address and the Redis token every build shares. With them it tries
//! to write another tenant's deployment while that one builds: a "finished" report
//! that points at its own files, a failure, log lines (one at a `seq` the victim's
//! build already used) and live lines in Redis. None of it lands: the victim's
//! deployment, stored log and live viewer see only what its own build wrote, and each
//! forged Kafka record is on the dead-letter topic with the reason.

use std::time::Duration;

use deploysphere_adapters::kafka::{
    BUILD_LOGS, BUILD_LOGS_DEAD_LETTER, DEPLOYMENT_EVENTS, DEPLOYMENT_EVENTS_DEAD_LETTER,
    producer_config,
};
use deploysphere_adapters::now_ms;
use deploysphere_adapters::signing::BuildKey;
use deploysphere_core::{BuildEvent, BuildEventKind, LogLine, LogStream};
use deploysphere_e2e::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Puts `payload` on `topic` as a build would, signed with `key` (or not at all).
async fn produce(topic: &str, key_of: &str, payload: &[u8], key: Option<&BuildKey>) {
    let producer: FutureProducer = producer_config(&platform().kafka_brokers)
        .create()
        .expect("producer");
    let mut record = FutureRecord::to(topic).key(key_of).payload(payload);
    if let Some(key) = key {
        record = record.headers(signature_headers(key, topic, payload));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("the broker takes the record");
}

#[tokio::test]
async fn a_build_cannot_write_another_deployments_state_or_log() {
    let p = platform();
    // The attacker's own deployment: its build held this deployment's key.
    let attacker = Api::new_account("attacker").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("attacker's site");
    let project = attacker
        .create_project(json!({"name": "attacker site", "git_url": repo.url()}))
        .await;
    let own = attacker.deploy(project["id"].as_str().unwrap()).await;
    let own_id = own["id"].as_str().unwrap().to_string();
    assert_eq!(attacker.wait_final(&own_id).await["state"], "READY");
    let stolen_key = p.build_key(&own_id);

    // The victim: a build that takes a while, watched live from its first line.
    let victim = Api::new_account("victim").await;
    let (victim_project, _victim_repo) = slow_project(&victim, "victim site", 600, 30).await;
    let deployment = victim.deploy(&victim_project).await;
    let victim_id = deployment["id"].as_str().unwrap().to_string();
    let viewer = {
        let (token, id) = (victim.token.clone(), victim_id.clone());
        tokio::spawn(async move { watch(&token, &id, 0).await })
    };
    victim.logs_containing(&victim_id, "slow line 1").await;

    // Kafka: the victim is "finished" with the attacker's files, or "failed".
    let marker = uuid::Uuid::new_v4().to_string();
    let own_manifest = deploysphere_core::manifest::manifest_key(&own_id);
    let finished = BuildEvent {
        deployment_id: victim_id.clone(),
        at_ms: now_ms(),
        kind: BuildEventKind::Finished {
            manifest_key: own_manifest.clone(),
            files: 1,
            bytes: 1,
            blobs_uploaded: 0,
            log_lines: Some(1),
        },
    };
    let failed = BuildEvent {
        deployment_id: victim_id.clone(),
        at_ms: now_ms(),
        kind: BuildEventKind::Failed {
            reason: format!("forged failure {marker}"),
            log_lines: None,
        },
    };
    let json = |v: &BuildEvent| serde_json::to_vec(v).unwrap();
    produce(
        DEPLOYMENT_EVENTS,
        &victim_id,
        &json(&finished),
        Some(&stolen_key),
    )
    .await;
    produce(DEPLOYMENT_EVENTS, &victim_id, &json(&failed), None).await;
    // Log lines: one replacing the victim's first line, one past its end, one unsigned.
    let line = |seq: u64, text: &str| {
        serde_json::to_vec(&LogLine {
            deployment_id: victim_id.clone(),
            project_id: victim_project.clone(),
            seq,
            ts_ms: now_ms(),
            stream: LogStream::Stdout,
            message: format!("{text} {marker}"),
        })
        .unwrap()
    };
    let stolen = Some(&stolen_key);
    produce(
        BUILD_LOGS,
        &victim_id,
        &line(1, "forged first line"),
        stolen,
    )
    .await;
    produce(
        BUILD_LOGS,
        &victim_id,
        &line(500, "forged late line"),
        stolen,
    )
    .await;
    produce(BUILD_LOGS, &victim_id, &line(2, "unsigned line"), None).await;
    // Redis: lines ahead of the victim's build in its live list, sealed with the
    // attacker's key and not sealed at all, and a wake-up for its viewers.
    let client = redis::Client::open(p.redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let recent = format!("logs:recent:{victim_id}");
    for seq in 1..=1000 {
        let forged = stolen_key.seal(BUILD_LOGS, &line(seq, "forged live line"));
        let plain = line(seq, "plain live line");
        let _: () = redis::pipe()
            .rpush(&recent, forged)
            .rpush(&recent, plain)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("PUBLISH")
        .arg(format!("logs:{victim_id}"))
        .arg("wake up")
        .query_async(&mut redis)
        .await
        .unwrap();

    // Each forged record is set aside, saying why...
    let not_victims = format!("not deployment {victim_id}'s");
    let (_, reason) = find_dead_letter(DEPLOYMENT_EVENTS_DEAD_LETTER, &own_manifest).await;
    assert!(reason.contains(&not_victims), "{reason}");
    let (_, reason) = find_dead_letter(
        DEPLOYMENT_EVENTS_DEAD_LETTER,
        &format!("forged failure {marker}"),
    )
    .await;
    assert!(reason.starts_with("unsigned"), "{reason}");
    // (events apply in order: both were read past, and the victim is still building)
    let now = victim
        .get(&format!("/v1/deployments/{victim_id}"))
        .await
        .body;
    assert_eq!(now["state"], "BUILDING", "{now}");
    for (text, why) in [
        ("forged first line", not_victims.as_str()),
        ("forged late line", not_victims.as_str()),
        ("unsigned line", "unsigned"),
    ] {
        let (_, reason) =
            find_dead_letter(BUILD_LOGS_DEAD_LETTER, &format!("{text} {marker}")).await;
        assert!(reason.contains(why), "{text}: {reason}");
    }

    // The victim's build ends as its own build says, with its own files and log.
    assert_slow_build_complete(&victim, &victim_id, 600).await;
    let stored = victim.logs_containing(&victim_id, "Deployed").await;
    assert!(
        messages(&stored).iter().all(|m| !m.contains(&marker)),
        "no forged line is stored"
    );
    assert!(
        stored[0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Cloning"),
        "line 1 is the victim's own: {}",
        stored[0]
    );
    let seen = viewer.await.expect("the viewer");
    assert_eq!(seen.states.last().map(String::as_str), Some("READY"));
    let forged_seen = messages(&seen.lines)
        .iter()
        .filter(|m| m.contains(&marker))
        .count();
    assert_eq!(forged_seen, 0, "forged lines reached the live viewer");
    assert_eq!(
        messages(&seen.lines),
        messages(&stored),
        "the live viewer saw exactly the stored log, none of the forged lines"
    );
    let slug = victim
        .get(&format!("/v1/projects/{victim_project}"))
        .await
        .body["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    wait_served(&host(&slug), "/", "600 lines").await;
}
