//! The log pipeline across a broker crash: its own test binary, because it kills the
//! platform's Kafka broker. The local broker keeps its log in memory, so the broker
//! that comes back has lost every line it held: the harshest case there is.

use std::time::{Duration, Instant};

use deploysphere_e2e::*;

#[tokio::test]
async fn every_line_reaches_clickhouse_exactly_once_across_a_broker_crash_and_restart() {
    let api = Api::new_account("restart").await;
    let id = &start_slow_build(&api, "broker restart", 4000, 8, 100).await;

    // Hold the log consumer back (ClickHouse frozen, so no batch is accepted) so that
    // the broker holds lines it acknowledged but nobody has stored yet.
    let clickhouse = server_pid("clickhouse", &platform().home.display().to_string())
        .expect("the platform's clickhouse-server");
    let frozen = Frozen::new(clickhouse);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Kill the broker in the middle of the build, as a crash would.
    let listener = format!("tcp://{}", platform().kafka_brokers);
    let pid = server_pid("tansu", &listener).expect("the platform's broker");
    send_signal(pid, 9);

    // The platform starts it again on the same port.
    let start = Instant::now();
    loop {
        match server_pid("tansu", &listener) {
            Some(new) if new != pid => break,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the platform did not start its broker again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(frozen);

    assert_slow_build_complete(&api, id, 4000).await;
    let logs = api.logs_containing(id, "sending the whole log again").await;
    assert!(
        !logs.is_empty(),
        "the build log says the log was sent again"
    );
}
