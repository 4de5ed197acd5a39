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

    assert_slow_build_complete(&api, id, 4000).await;
}
