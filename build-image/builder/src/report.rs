//! What a build tells the world: log lines on `build-logs` (gapless `seq` from 1,
//! secrets masked) and state reports on `deployment-events`.

use std::time::Duration;

use deploysphere_adapters::kafka::{BUILD_LOGS, DEPLOYMENT_EVENTS, producer_config};
use deploysphere_adapters::now_ms;
use deploysphere_core::logs::{mask_secrets, truncate_message};
use deploysphere_core::{BuildEvent, BuildEventKind, LogLine, LogStream};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

pub struct Reporter {
    producer: FutureProducer,
    deployment_id: String,
    project_id: String,
    secrets: Vec<String>,
    next_seq: u64,
    pending: Vec<DeliveryFuture>,
    /// Bytes of user output logged so far, and lines dropped past the limit.
    output_bytes: u64,
    dropped: u64,
}

/// The most user output (stdout and stderr) one build may log; past it, lines are
/// counted, not sent, so a runaway build cannot flood the shared log pipeline.
pub const MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

impl Reporter {
    pub fn new(
        brokers: &str,
        deployment_id: &str,
        project_id: &str,
        secrets: Vec<String>,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = producer_config(brokers)
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        Ok(Reporter {
            producer,
            deployment_id: deployment_id.to_string(),
            project_id: project_id.to_string(),
            secrets,
            next_seq: 1,
            pending: Vec::new(),
            output_bytes: 0,
            dropped: 0,
        })
    }

    /// `text` with every secret masked.
    pub fn mask(&self, text: &str) -> String {
        mask_secrets(text, &self.secrets)
    }

    /// Lines sent so far.
    pub fn lines_sent(&self) -> u64 {
        self.next_seq - 1
    }

    /// Queues one log line; never blocks the build for long.
    pub async fn line(&mut self, stream: LogStream, message: &str) {
        if stream != LogStream::System {
            if self.output_bytes > MAX_OUTPUT_BYTES {
                self.dropped += 1;
                return;
            }
            self.output_bytes += message.len() as u64 + 1;
            if self.output_bytes > MAX_OUTPUT_BYTES {
                self.dropped += 1;
                let notice = format!(
                    "The build's output passed {} MiB: further lines are not logged",
                    MAX_OUTPUT_BYTES / (1024 * 1024)
                );
                Box::pin(self.line(LogStream::System, &notice)).await;
                return;
            }
        }
        let message = truncate_message(mask_secrets(message, &self.secrets));
        let line = LogLine {
            deployment_id: self.deployment_id.clone(),
            project_id: self.project_id.clone(),
            seq: self.next_seq,
            ts_ms: now_ms(),
            stream,
            message,
        };
        self.next_seq += 1;
        if stream == LogStream::System {
            eprintln!("[builder] {}", line.message);
        }
        let payload = serde_json::to_vec(&line).unwrap_or_default();
        loop {
            let record = FutureRecord::to(BUILD_LOGS)
                .key(&self.deployment_id)
                .payload(&payload);
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err((e, _)) => {
                    eprintln!("[builder] log line {} not queued: {e}", line.seq);
                    break;
                }
            }
        }
        if self.pending.len() >= 10_000 {
            self.settle().await;
        }
    }

    pub async fn system(&mut self, message: impl AsRef<str>) {
        self.line(LogStream::System, message.as_ref()).await;
    }

    /// Waits for queued lines; returns how many could not be delivered.
    async fn settle(&mut self) -> u64 {
        let mut failed = 0;
        for delivery in self.pending.drain(..) {
            if !matches!(delivery.await, Ok(Ok(_))) {
                failed += 1;
            }
        }
        failed
    }

    /// Sends a state report and waits until the broker has it.
    pub async fn event(&mut self, kind: BuildEventKind) -> anyhow::Result<()> {
        let event = BuildEvent {
            deployment_id: self.deployment_id.clone(),
            at_ms: now_ms(),
            kind,
        };
        let payload = serde_json::to_vec(&event)?;
        let record = FutureRecord::to(DEPLOYMENT_EVENTS)
            .key(&self.deployment_id)
            .payload(&payload);
        self.producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| anyhow::anyhow!("could not report {:?}: {e}", event.kind))?;
        Ok(())
    }

    /// Delivers every queued line. Returns how many lines could not be delivered.
    pub async fn finish(&mut self) -> u64 {
        if self.dropped > 0 {
            let notice = format!(
                "{} lines of output were not logged (over the limit)",
                self.dropped
            );
            self.line(LogStream::System, &notice).await;
        }
        self.settle().await
    }
}
