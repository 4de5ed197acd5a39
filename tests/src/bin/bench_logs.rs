//! `make bench-logs`: log ingest throughput, against a reference measured in the same
//! run (the same rows inserted straight into ClickHouse by the same client):
//! 1. 100,000 log records put on `build-logs` at once, until ClickHouse holds them all
//!    (after one warm-up line, so that the consumer's first group join is not counted);
//! 2. a build that prints 100,000 lines: how long after its last line all are stored,
//!    and the live delivery latency to a WebSocket client watching from the start.

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
    // Warm-up: right after start the ingest consumer is still joining its group (the
    // broker holds a first join about 3 s); one line stored means it is reading.
    let warm_id = uuid::Uuid::new_v4().to_string();
    let warm_line = serde_json::to_vec(&LogLine {
        deployment_id: warm_id.clone(),
        seq: 1,
        ..rows[0].clone()
    })
    .unwrap();
    let t_warm = Instant::now();
    producer
        .send(
            rdkafka::producer::FutureRecord::to(deploysphere_adapters::kafka::BUILD_LOGS)
                .key(&warm_id)
                .payload(&warm_line)
                .headers(deploysphere_adapters::kafka::signature_header(
                    &p.build_key(&warm_id)
                        .sign(deploysphere_adapters::kafka::BUILD_LOGS, &warm_line),
                )),
            Duration::from_secs(10),
        )
        .await
        .expect("warm-up line queued");
    while store.count(&warm_id).await.unwrap() < 1 {
        assert!(
            t_warm.elapsed() < Duration::from_secs(60),
            "the warm-up line was not stored"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let warm_up = t_warm.elapsed().as_secs_f64();
    // Signed as a build signs its lines (the ingest refuses others).
    let queued_key = p.build_key(&queued_id);
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
            .payload(&payload)
            .headers(deploysphere_adapters::kafka::signature_header(
                &queued_key.sign(deploysphere_adapters::kafka::BUILD_LOGS, &payload),
            ));
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
    // A live viewer from the start: latency = arrival time - the line's timestamp
    // (taken by the builder when it read the line from the build).
    let viewer = {
        let (token, id) = (api.token.clone(), id.clone());
        tokio::spawn(async move { live_latencies(&token, &id).await })
    };
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
    let first_ms = parse_ts(lines[0]["ts"].as_str().unwrap());
    let last_ms = parse_ts(lines[lines.len() - 1]["ts"].as_str().unwrap());
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
        "    (measured after a warm-up line, which took {warm_up:.2} s: the ingest consumer's first group join after start)"
    );
    println!(
        "  ratio ingest/direct: {:.2}x",
        (LINES as f64 / ingested) / (LINES as f64 / direct)
    );
    println!("A build printing {total} lines (100,000 plus the builder's own):");
    println!(
        "  first to last line printed {printing:.2} s; all stored {lag:.2} s after the last; first line to all stored {pipeline:.2} s"
    );
    let mut latencies = viewer.await.unwrap();
    assert_eq!(
        latencies.len() as u64,
        total,
        "the live viewer got every line"
    );
    latencies.sort_unstable();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    println!(
        "Live delivery, builder -> Redis -> relay -> gateway -> WebSocket client, {} lines: p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        pct(0.50),
        pct(0.99),
        latencies[latencies.len() - 1]
    );
}

/// Subscribes over WebSocket and returns, per line, arrival minus line timestamp (ms).
async fn live_latencies(token: &str, deployment_id: &str) -> Vec<i64> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("{}/?token={token}", platform().ws_url);
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let subscribe = json!({"action": "subscribe", "deployment_id": deployment_id, "after_seq": 0});
    socket
        .send(Message::text(subscribe.to_string()))
        .await
        .unwrap();
    let mut latencies = Vec::new();
    while let Some(Ok(frame)) = socket.next().await {
        let Message::Text(text) = frame else { continue };
        let arrived = now_ms();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        match value["type"].as_str() {
            Some("log") => {
                for line in value["lines"].as_array().unwrap() {
                    latencies.push(arrived - parse_ts(line["ts"].as_str().unwrap()));
                }
            }
            Some("state")
                if matches!(
                    value["state"].as_str(),
                    Some("READY" | "FAILED" | "CANCELED")
                ) =>
            {
                break;
            }
            _ => {}
        }
    }
    latencies
}

/// Milliseconds since the epoch of `2026-11-26T22:20:21.922Z`.
fn parse_ts(ts: &str) -> i64 {
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|x| x.parse().unwrap()).collect();
    let (hms, ms) = time.split_once('.').unwrap_or((time, "0"));
    let t: Vec<i64> = hms.split(':').map(|x| x.parse().unwrap()).collect();
    // Days since the epoch from a civil date.
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + t[0]) * 60 + t[1]) * 60_000 + t[2] * 1000 + ms.parse::<i64>().unwrap()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
