//! The local stand-ins for AWS event sources: Kafka consumer loops that call the same
//! handlers the Lambdas call.

use std::path::PathBuf;
use std::time::Duration;

use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::kafka::{
    BUILD_LOGS, BUILD_LOGS_DEAD_LETTER, DEPLOYMENT_EVENTS, DEPLOYMENT_EVENTS_DEAD_LETTER,
    KafkaContext, KafkaSettings, consumer_config, create_topics,
};
use deploysphere_core::BuildEvent;
use deploysphere_events::Deployments;
use deploysphere_log_ingest::{
    KafkaDeadLetters, MAX_BATCH_LINES, PlatformKey, RawRecord, handle_kafka_event, kafka_event,
};
use rdkafka::Message;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::services::{Service, start_kafka};

/// Runs the Kafka broker together with the consumers that read it. When the broker
/// dies, the consumers are stopped first (a client that meets a broker which lost its
/// topics can crash inside librdkafka), then the broker is started again on the same
/// port with its topics, and fresh consumers read the new log from its start. Lines
/// the old broker held are sent again by the builders (they replay their journal
/// after an outage), and the log store keeps one copy of each line.
///
/// When `shutdown` turns true, the consumers and then the broker are stopped (the
/// broker with SIGINT, as any other server), and it returns `Ok`.
pub async fn supervise_kafka(
    mut broker: Service,
    logs: PathBuf,
    port: u16,
    deployments: Deployments,
    store: LogStore,
    build_keys: PlatformKey,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let brokers = format!("127.0.0.1:{port}");
    loop {
        let mut consumers = AbortOnDrop(vec![
            tokio::spawn(deployment_events(brokers.clone(), deployments.clone())),
            tokio::spawn(build_logs(
                brokers.clone(),
                store.clone(),
                build_keys.clone(),
            )),
        ]);
        let status = tokio::select! {
            // Turned true (the only change), or the platform is gone.
            _ = shutdown.changed() => {
                consumers.stop().await;
                broker.stop().await;
                return Ok(());
            }
            status = broker.exited() => status,
            (result, index, _) = futures::future::select_all(consumers.0.iter_mut()) => {
                let name = ["deployment-events", "build-logs"][index];
                anyhow::bail!("the {name} consumer stopped: {result:?}");
            }
        };
        // Wait until the old clients are gone: one that meets the new broker can crash.
        consumers.stop().await;
        warn!(?status, "the kafka broker stopped; starting it again");
        let mut delay = Duration::from_millis(500);
        broker = loop {
            tokio::time::sleep(delay).await;
            match start_kafka(&logs, port).await {
                Ok(broker) => break broker,
                Err(e) => {
                    error!(error = %e, "the kafka broker could not start again; retrying");
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        };
        if let Err(e) = create_local_topics(&brokers).await {
            error!(error = %e, "creating the kafka topics again failed");
        }
        warn!("the kafka broker is back");
    }
}

/// The platform's topics on the local broker: one partition, one replica.
pub async fn create_local_topics(brokers: &str) -> anyhow::Result<()> {
    create_topics(
        &KafkaSettings::plaintext(brokers),
        &KafkaContext::without_signer(),
        1,
        1,
    )
    .await
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<JoinHandle<anyhow::Result<()>>>);

impl AbortOnDrop {
    /// Aborts the tasks and waits until each has ended (its clients dropped).
    async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.0);
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Applies `deployment-events` in order, through the handler the events Lambda runs;
/// the offset is committed only after the event was applied or set aside on
/// `deployment-events-dead-letter` (replays are harmless: events are idempotent).
pub async fn deployment_events(brokers: String, deployments: Deployments) -> anyhow::Result<()> {
    let consumer: StreamConsumer = consumer_config(&brokers, "deploysphere-events").create()?;
    consumer.subscribe(&[DEPLOYMENT_EVENTS])?;
    let dead_letters = KafkaDeadLetters::new(
        &KafkaSettings::plaintext(&brokers),
        KafkaContext::without_signer(),
        DEPLOYMENT_EVENTS_DEAD_LETTER,
    )?;
    loop {
        let message = match consumer.recv().await {
            Ok(message) => message,
            Err(e) => {
                warn!(error = %e, "deployment-events consumer");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let event = kafka_event(&[raw_record(&message)]);
        let mut delay = Duration::from_millis(200);
        while let Err(e) = deployments.handle_msk_event(&dead_letters, &event).await {
            error!(error = %e, offset = message.offset(), "applying a deployment event failed; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            warn!(error = %e, "commit failed");
        }
    }
}

/// A consumed message as the MSK event shape's handlers take it.
fn raw_record(message: &rdkafka::message::BorrowedMessage<'_>) -> RawRecord {
    RawRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .filter_map(|h| Some((h.key.to_string(), h.value?.to_vec())))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Applies one event, retrying transient failures with backoff; an event that can
/// never apply (unknown deployment) is logged and set aside.
pub async fn apply_with_retry(deployments: &Deployments, event: &BuildEvent) {
    let mut delay = Duration::from_millis(200);
    loop {
        match deployments.handle_event(event).await {
            Ok(_) => return,
            Err(e) if e.is_permanent() => {
                warn!(error = %e, deployment_id = %event.deployment_id, "deployment event set aside");
                return;
            }
            Err(e) => {
                error!(error = %e, deployment_id = %event.deployment_id, "applying a deployment event failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Batches `build-logs` (up to 10,000 lines or [`BATCH_WINDOW`]) into the MSK event shape and hands
/// it to the same handler the Lambda runs; offsets are committed only after the
/// handler succeeded (ClickHouse took the lines, dead letters are stored), else the
/// same batch is retried.
/// How long a batch of log lines waits to fill: the longest a line waits to become
/// searchable while a build is quiet. A few inserts a second suit ClickHouse well.
const BATCH_WINDOW: Duration = Duration::from_millis(250);

pub async fn build_logs(
    brokers: String,
    store: LogStore,
    build_keys: PlatformKey,
) -> anyhow::Result<()> {
    let consumer: StreamConsumer = consumer_config(&brokers, "deploysphere-log-ingest").create()?;
    consumer.subscribe(&[BUILD_LOGS])?;
    let dead_letters = KafkaDeadLetters::new(
        &KafkaSettings::plaintext(&brokers),
        KafkaContext::without_signer(),
        BUILD_LOGS_DEAD_LETTER,
    )?;
    loop {
        let mut batch = Vec::new();
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH_LINES {
            let message = if batch.is_empty() {
                consumer.recv().await.map(Some)
            } else {
                match tokio::time::timeout_at(deadline, consumer.recv()).await {
                    Ok(result) => result.map(Some),
                    Err(_) => Ok(None),
                }
            };
            match message {
                Ok(Some(m)) => batch.push(raw_record(&m)),
                Ok(None) => break,
                Err(e) => {
                    warn!(error = %e, "build-logs consumer");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    break;
                }
            }
        }
        if batch.is_empty() {
            continue;
        }
        let event = kafka_event(&batch);
        let mut delay = Duration::from_millis(200);
        while let Err(e) = handle_kafka_event(&store, &build_keys, &dead_letters, &event).await {
            error!(error = %e, records = batch.len(), "log ingest failed; retrying the batch");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        if let Err(e) = consumer.commit_consumer_state(CommitMode::Async) {
            warn!(error = %e, "commit failed");
        }
    }
}
