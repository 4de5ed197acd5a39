//! Log ingest against the real broker and ClickHouse: the MSK event handler, retries,
//! and the dead-letter topic.

use std::time::{Duration, Instant};

use aws_lambda_events::event::kafka::KafkaEvent;
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::kafka::{
    BUILD_LOGS, BUILD_LOGS_DEAD_LETTER, KafkaContext, KafkaSettings, consumer_config,
    producer_config,
};
use deploysphere_e2e::*;
use deploysphere_log_ingest::{KafkaDeadLetters, handle_kafka_event};
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Reads the dead-letter topic from the start until a record whose payload contains
/// `marker` shows up; returns its payload and `reason` header.
async fn find_dead_letter(marker: &str) -> (String, String) {
    let group = format!("test-{}", uuid::Uuid::new_v4());
    let consumer: StreamConsumer = consumer_config(&platform().kafka_brokers, &group)
        .create()
        .unwrap();
    consumer.subscribe(&[BUILD_LOGS_DEAD_LETTER]).unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
        else {
            continue;
        };
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        if payload.contains(marker) {
            let reason = message
                .headers()
                .and_then(|h| {
                    h.iter()
                        .find(|h| h.key == "reason")
                        .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).to_string()))
                })
                .unwrap_or_default();
            return (payload, reason);
        }
    }
    panic!("no dead letter containing {marker:?}");
}

#[tokio::test]
async fn msk_event_fixture_is_ingested_once_even_when_replayed() {
    let p = platform();
    let store = LogStore::new(&p.clickhouse_url, "deploysphere", "default", "");
    let dead_letters = KafkaDeadLetters::new(
        &KafkaSettings::plaintext(&p.kafka_brokers),
        KafkaContext::without_signer(),
    )
    .unwrap();
    let event: KafkaEvent =
        serde_json::from_str(include_str!("../fixtures/events/msk-build-logs.json")).unwrap();
    for _ in 0..2 {
        // The event source mapping retries a batch whose handler failed: replays must be harmless.
        let report = handle_kafka_event(&store, &dead_letters, &event)
            .await
            .unwrap();
        assert_eq!((report.inserted, report.set_aside), (2, 1));
    }
    let lines = store
        .lines("0b9f4f63-3c55-4bb1-9a43-2f1f6f0c1c11", 0, 100)
        .await
        .unwrap();
    let seqs: Vec<u64> = lines.iter().map(|l| l.seq).collect();
    assert_eq!(seqs, [1, 2], "each line exactly once");
    assert_eq!(lines[1].message, "Cloning into '.'...");
    let (payload, reason) = find_dead_letter("this is not json").await;
    assert_eq!(payload, "this is not json");
    assert!(reason.contains("not a log line"), "{reason}");
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
    let (payload, reason) = find_dead_letter(&marker).await;
    assert_eq!(payload, marker);
    assert!(reason.contains("not a log line"), "{reason}");
}
