//! Kafka: client settings shared by every producer and consumer of the platform.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// Build-log lines, keyed by deployment id (per-deployment order).
pub const BUILD_LOGS: &str = "build-logs";
/// Build-log records that can never be inserted, set aside with the reason.
pub const BUILD_LOGS_DEAD_LETTER: &str = "build-logs-dead-letter";
/// Build-task reports, keyed by deployment id.
pub const DEPLOYMENT_EVENTS: &str = "deployment-events";

pub fn producer_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        // One request in flight per connection keeps a partition's order on retries.
        .set("max.in.flight.requests.per.connection", "1");
    config
}

pub fn consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        // The local broker answers an empty fetch only after the full wait: keep it
        // short so a state change reaches Postgres within tens of milliseconds.
        .set("fetch.wait.max.ms", "50")
        .set("isolation.level", "read_uncommitted");
    config
}

/// Creates the platform's topics; topics that exist already are fine. A `replication`
/// of -1 takes the cluster's default (what MSK wants).
pub async fn create_topics(brokers: &str, partitions: i32, replication: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let topics: Vec<NewTopic> = [BUILD_LOGS, DEPLOYMENT_EVENTS, BUILD_LOGS_DEAD_LETTER]
        .iter()
        .map(|name| NewTopic::new(name, partitions, TopicReplication::Fixed(replication)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}
