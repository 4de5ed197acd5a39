//! Log ingest against the real broker and ClickHouse: the MSK event handler, retries,
//! and the dead-letter topic.

use std::time::Duration;

use aws_lambda_events::event::kafka::KafkaEvent;
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::kafka::{
    BUILD_LOGS, BUILD_LOGS_DEAD_LETTER, DEPLOYMENT_EVENTS, DEPLOYMENT_EVENTS_DEAD_LETTER,
    KafkaContext, KafkaSettings, producer_config,
};
use deploysphere_e2e::*;
use deploysphere_log_ingest::{KafkaDeadLetters, handle_kafka_event};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

#[tokio::test]
async fn msk_event_fixture_is_ingested_once_even_when_replayed() {
    let p = platform();
    let store = LogStore::new(&p.clickhouse_url, "deploysphere", "default", "");
    let dead_letters = KafkaDeadLetters::new(
        &KafkaSettings::plaintext(&p.kafka_brokers),
        KafkaContext::without_signer(),
        BUILD_LOGS_DEAD_LETTER,
    )
    .unwrap();
    let event: KafkaEvent =
        serde_json::from_str(include_str!("../fixtures/events/msk-build-logs.json")).unwrap();
    for _ in 0..2 {
        // The event source mapping retries a batch whose handler failed: replays must be harmless.
        let report = handle_kafka_event(&store, &fixture_build_keys(), &dead_letters, &event)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.set_aside), (2, 3));
    }
    let lines = store
        .lines("0b9f4f63-3c55-4bb1-9a43-2f1f6f0c1c11", 0, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [1, 2], "each line exactly once");
    assert_eq!(lines[1].message, "Cloning into '.'...");
    let (payload, reason) = find_dead_letter(BUILD_LOGS_DEAD_LETTER, "this is not json").await;
    assert_eq!(payload, "this is not json");
    assert!(reason.contains("not a log line"), "{reason}");
    // Lines the deployment's build did not sign are set aside, not stored.
    let (_, reason) = find_dead_letter(BUILD_LOGS_DEAD_LETTER, "forged by another build").await;
    assert!(
        reason.contains("not deployment 0b9f4f63-3c55-4bb1-9a43-2f1f6f0c1c11's"),
        "{reason}"
    );
    let (_, reason) = find_dead_letter(BUILD_LOGS_DEAD_LETTER, "a line nobody signed").await;
    assert!(reason.starts_with("unsigned"), "{reason}");
}

#[tokio::test]
async fn a_bad_record_on_the_log_topic_is_set_aside_and_blocks_nothing() {
    let p = platform();
    let marker = format!("garbage-{}", uuid::Uuid::new_v4());
    let producer: FutureProducer = producer_config(&p.kafka_brokers).create().unwrap();
    producer
        .send(
            FutureRecord::to(BUILD_LOGS)
                .key("whatever")
                .payload(&marker),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // Lines produced after it still reach ClickHouse.
    let api = Api::new_account("ingest").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "after garbage", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    assert_eq!(api.wait_final(id).await["state"], "READY");
    api.logs_containing(id, "Deployed").await;
    let (payload, reason) = find_dead_letter(BUILD_LOGS_DEAD_LETTER, &marker).await;
    assert_eq!(payload, marker);
    assert!(reason.contains("not a log line"), "{reason}");
}

#[tokio::test]
async fn an_unreadable_deployment_event_is_set_aside_and_blocks_nothing() {
    let p = platform();
    let marker = format!("not an event {}", uuid::Uuid::new_v4());
    let producer: FutureProducer = producer_config(&p.kafka_brokers).create().unwrap();
    producer
        .send(
            FutureRecord::to(DEPLOYMENT_EVENTS)
                .key("whatever")
                .payload(&marker),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    // Events produced after it still apply: a build goes all the way to READY.
    let api = Api::new_account("events after garbage").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "after bad event", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    assert_eq!(api.wait_final(id).await["state"], "READY");
    let (payload, reason) = find_dead_letter(DEPLOYMENT_EVENTS_DEAD_LETTER, &marker).await;
    assert_eq!(payload, marker);
    assert!(reason.contains("not a deployment event"), "{reason}");
}
