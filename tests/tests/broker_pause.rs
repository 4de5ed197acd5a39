//! The log pipeline across a broker that stops answering: its own test binary,
//! because it freezes the platform's Kafka broker.

use std::time::Duration;

use deploysphere_e2e::*;

#[tokio::test]
async fn a_build_keeps_logging_through_a_frozen_broker_and_loses_no_line() {
    let api = Api::new_account("frozen").await;
    let id = &start_slow_build(&api, "frozen broker", 4000, 6, 50).await;

    // Freeze the broker for longer than a Kafka client's default message timeout (30 s)
    // while the build goes on printing.
    let listener = format!("tcp://{}", platform().kafka_brokers);
    let pid = server_pid("tansu", &listener).expect("the platform's broker");
    let frozen = Frozen::new(pid);
    tokio::time::sleep(Duration::from_secs(40)).await;
    drop(frozen);

    let done = api
        .wait_for(id, Duration::from_secs(180), |d| {
            matches!(d["state"].as_str(), Some("READY" | "FAILED" | "CANCELED"))
        })
        .await;
    assert_eq!(done["state"], "READY", "{done}");
    let lines = api.logs_containing(id, "Deployed").await;
    assert_gapless(&lines);
    let slow: Vec<String> = messages(&lines)
        .into_iter()
        .filter(|m| m.starts_with("slow line "))
        .collect();
    assert_eq!(slow.len(), 4000);
    assert_eq!(slow.last().map(String::as_str), Some("slow line 4000"));
}
