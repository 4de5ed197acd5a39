//! `make bench-logs`: log ingest throughput, against a reference measured in the same
//! run (the same rows inserted straight into ClickHouse by the same client):
//! 1. 100,000 log records put on `build-logs` at once, until ClickHouse holds them all;
//! 2. a build that prints 100,000 lines: how long after its last line all are stored.

use std::time::{Duration, Instant};

use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_core::{LogLine, LogStream};
use deploysphere_e2e::*;
use serde_json::json;

const LINES: u64 = 100_000;

#[tokio::main]
async fn main() {
    eprintln!("bench-logs: starting the platform (release build)...");
    let p = platform();
    let store = LogStore::new(&p.clickhouse_url, "deploysphere", "default", "");

    // Reference: the same number of rows straight into ClickHouse, 10,000 per insert.
    let deployment_id = uuid::Uuid::new_v4().to_string();
    let rows: Vec<LogLine> = (1..=LINES)
        .map(|seq| LogLine {
            deployment_id: deployment_id.clone(),
            project_id: "bench".into(),
            seq,
            ts_ms: 1_764_201_600_000 + seq as i64,
            stream: LogStream::Stdout,
            message: format!("build line {seq}"),
        })
        .collect();
    let t0 = Instant::now();
    for chunk in rows.chunks(10_000) {
        store.insert(chunk).await.expect("insert");
    }
    let direct = t0.elapsed().as_secs_f64();

    // The ingest path alone: records on Kafka -> consumer -> handler -> ClickHouse.
    let queued_id = uuid::Uuid::new_v4().to_string();
    let producer: rdkafka::producer::FutureProducer =
        deploysphere_adapters::kafka::producer_config(&p.kafka_brokers)
            .set("queue.buffering.max.messages", "200000")
            .create()
            .unwrap();
    let t0 = Instant::now();
    let mut deliveries = Vec::new();
    for seq in 1..=LINES {
        let line = LogLine {
            deployment_id: queued_id.clone(),
            seq,
            ..rows[seq as usize - 1].clone()
        };
        let payload = serde_json::to_vec(&line).unwrap();
        let record = rdkafka::producer::FutureRecord::to(deploysphere_adapters::kafka::BUILD_LOGS)
            .key(&queued_id)
            .payload(&payload);
        deliveries.push(producer.send_result(record).expect("queued"));
    }
    for delivery in deliveries {
        delivery.await.unwrap().unwrap();
    }
    let produced = t0.elapsed().as_secs_f64();
    while store.count(&queued_id).await.unwrap() < LINES {
        assert!(t0.elapsed() < Duration::from_secs(300), "records missing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ingested = t0.elapsed().as_secs_f64();

    // The platform: a build prints 100,000 lines; they travel builder -> Kafka ->
    // ingest -> ClickHouse. Measured from the first line's timestamp to the moment
    // ClickHouse holds every line.
    let api = Api::new_account("bench-logs").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("many lines");
    let project = api
        .create_project(json!({"name": "bench logs", "git_url": repo.url(), "env": {"LINES": LINES.to_string()}}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap().to_string();
    // Watch ClickHouse fill up: the moment of the last new line is when all are in.
    let (mut count, mut last_change_ms, mut final_state) = (0u64, now_ms(), false);
    let mut last_state_check = Instant::now();
    let watch = Instant::now();
    loop {
        let now = store.count(&id).await.unwrap();
        if now > count {
            count = now;
            last_change_ms = now_ms();
        }
        if last_state_check.elapsed() > Duration::from_millis(500) {
            last_state_check = Instant::now();
            let state = api.get(&format!("/v1/deployments/{id}")).await.body["state"].clone();
            final_state = matches!(state.as_str(), Some("READY" | "FAILED" | "CANCELED"));
            assert_ne!(state, "FAILED", "the build failed");
        }
        if final_state && now_ms() - last_change_ms > 3000 {
            break;
        }
        assert!(watch.elapsed() < Duration::from_secs(600), "lines missing");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = count;
    let lines = api.logs(&id).await;
    assert_gapless(&lines);
    assert_eq!(lines.len() as u64, total);
    let first_ms = chrono_ms(lines[0]["ts"].as_str().unwrap());
    let last_ms = chrono_ms(lines[lines.len() - 1]["ts"].as_str().unwrap());
    let all_in_ms = last_change_ms;
    let pipeline = (all_in_ms - first_ms) as f64 / 1000.0;
    let printing = (last_ms - first_ms) as f64 / 1000.0;
    assert!(total > LINES, "the build printed every line");

    let lag = (all_in_ms - last_ms) as f64 / 1000.0;
    println!("Log ingest into ClickHouse, 100,000 lines");
    println!("  {:<52} {:>9} {:>12}", "", "seconds", "lines/s");
    println!(
        "  {:<52} {:>9.2} {:>12.0}",
        "direct inserts, 10,000 rows each (reference)",
        direct,
        LINES as f64 / direct
    );
    println!(
        "  {:<52} {:>9.2} {:>12.0}",
        "Kafka -> ingest -> ClickHouse (records queued at once)",
        ingested,
        LINES as f64 / ingested
    );
    println!("    (putting them on Kafka took {produced:.2} s of that)");
    println!(
        "  ratio ingest/direct: {:.2}x",
        (LINES as f64 / ingested) / (LINES as f64 / direct)
    );
    println!("A build printing {total} lines (100,000 plus the builder's own):");
    println!(
        "  first to last line printed {printing:.2} s; all stored {lag:.2} s after the last; first line to all stored {pipeline:.2} s"
    );
    println!(
        "  live delivery latency (builder -> WebSocket client): not measured, the WebSocket path is not built yet"
    );
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Milliseconds since the epoch of an RFC 3339 UTC time like 2026-11-26T22:20:21.922Z.
fn chrono_ms(ts: &str) -> i64 {
    let output = std::process::Command::new("date")
        .args(["-u", "-d", ts, "+%s%3N"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}
