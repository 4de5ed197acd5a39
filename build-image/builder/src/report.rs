//! What a build tells the world: log lines on `build-logs` (gapless `seq` from 1,
//! secrets masked) and state reports on `deployment-events`.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::producer::Producer;

use deploysphere_adapters::kafka::{BUILD_LOGS, DEPLOYMENT_EVENTS, producer_config};
use deploysphere_adapters::now_ms;
use deploysphere_core::logs::{mask_secrets, truncate_message};
use deploysphere_core::{BuildEvent, BuildEventKind, LogLine, LogStream};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};

/// How long the end of a build waits for the log pipeline before it reports what
/// could not be delivered.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a state report may wait for the broker.
pub const EVENT_TIMEOUT: Duration = Duration::from_secs(600);
/// Delivery reports tracked at once; past this, older ones are only counted at the end.
const MAX_TRACKED: usize = 200_000;

pub struct Reporter {
    producer: FutureProducer,
    deployment_id: String,
    project_id: String,
    secrets: Vec<String>,
    next_seq: u64,
    /// Delivery reports of queued lines, oldest first.
    pending: VecDeque<DeliveryFuture>,
    /// Lines the broker refused for good.
    failed: u64,
    /// Lines that did not fit the producer's bounded in-memory queue, kept on disk
    /// (one JSON line each) until the end of the build.
    spool_path: PathBuf,
    spool: Option<std::io::BufWriter<std::fs::File>>,
    spooled: u64,
    /// The live path (Redis), if on.
    live: Option<crate::live::LivePublisher>,
    /// Bytes of user output logged so far, and lines dropped past the limit.
    output_bytes: u64,
    dropped: u64,
}

/// The most user output (stdout and stderr) one build may log; past it, lines are
/// counted, not sent, so a runaway build cannot flood the shared log pipeline.
pub const MAX_OUTPUT_BYTES: u64 = 256 * 1024 * 1024;

impl Reporter {
    /// A reporter whose overflow goes to a spool file in `work_dir`.
    pub fn new(
        brokers: &str,
        deployment_id: &str,
        project_id: &str,
        secrets: Vec<String>,
        work_dir: &Path,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer = producer_config(brokers)
            // A broker that is down delays lines, it does not lose them: no message
            // timeout, a bounded queue (64 MB) and a disk spool past it.
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "200000")
            .create()?;
        Ok(Reporter {
            producer,
            deployment_id: deployment_id.to_string(),
            project_id: project_id.to_string(),
            secrets,
            next_seq: 1,
            pending: VecDeque::new(),
            failed: 0,
            spool_path: work_dir.join("log-spool.jsonl"),
            spool: None,
            spooled: 0,
            live: None,
            output_bytes: 0,
            dropped: 0,
        })
    }

    /// Also publishes every line on the live path.
    pub fn go_live(&mut self, live: crate::live::LivePublisher) {
        self.live = Some(live);
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
        if let Some(live) = &self.live {
            live.publish(&payload);
        }
        if self.spooled > 0 || !self.enqueue(&payload) {
            // Once spilling, keep spilling: the spool is sent in order at the end.
            self.spill(&payload);
        }
        self.reap();
    }

    /// Hands a line to the producer; false when its queue is full.
    fn enqueue(&mut self, payload: &[u8]) -> bool {
        let record = FutureRecord::to(BUILD_LOGS)
            .key(&self.deployment_id)
            .payload(payload);
        match self.producer.send_result(record) {
            Ok(delivery) => {
                self.pending.push_back(delivery);
                true
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => false,
            Err((e, _)) => {
                eprintln!("[builder] a log line was refused: {e}");
                self.failed += 1;
                true
            }
        }
    }

    fn spill(&mut self, payload: &[u8]) {
        if self.spool.is_none() {
            match std::fs::File::create(&self.spool_path) {
                Ok(file) => self.spool = Some(std::io::BufWriter::new(file)),
                Err(e) => {
                    eprintln!("[builder] cannot spool log lines: {e}");
                    self.failed += 1;
                    return;
                }
            }
        }
        let written = self.spool.as_mut().map(|spool| {
            spool
                .write_all(payload)
                .and_then(|()| spool.write_all(b"\n"))
        });
        match written {
            Some(Ok(())) => self.spooled += 1,
            _ => self.failed += 1,
        }
    }

    /// Takes the delivery reports that are in, without waiting.
    fn reap(&mut self) {
        while let Some(front) = self.pending.front_mut() {
            match front.now_or_never() {
                Some(Ok(Ok(_))) => {}
                Some(_) => self.failed += 1,
                None => break,
            }
            self.pending.pop_front();
        }
        while self.pending.len() > MAX_TRACKED {
            // Still queued in the producer: counted by `in_flight_count` at the end.
            self.pending.pop_front();
        }
    }

    pub async fn system(&mut self, message: impl AsRef<str>) {
        self.line(LogStream::System, message.as_ref()).await;
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
        // No message timeout: the producer retries until the broker takes it.
        match tokio::time::timeout(
            EVENT_TIMEOUT,
            self.producer.send(record, Duration::from_secs(30)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => anyhow::bail!("could not report {:?}: {e}", event.kind),
            Err(_) => anyhow::bail!(
                "could not report {:?}: the broker was unreachable for {} s",
                event.kind,
                EVENT_TIMEOUT.as_secs()
            ),
        }
    }

    /// Sends the spooled lines, then waits (at most [`FLUSH_TIMEOUT`]) until the broker
    /// has every line. Returns how many lines could not be delivered.
    pub async fn finish(&mut self) -> u64 {
        if self.dropped > 0 {
            let notice = format!(
                "{} lines of output were not logged (over the limit)",
                self.dropped
            );
            self.line(LogStream::System, &notice).await;
        }
        if let Some(live) = self.live.take() {
            let missed = live.finish(Duration::from_secs(5)).await;
            if missed > 0 {
                eprintln!(
                    "[builder] {missed} lines missed the live path (they are in the stored log)"
                );
            }
        }
        let deadline = tokio::time::Instant::now() + FLUSH_TIMEOUT;
        let mut unsent = 0;
        if let Some(mut spool) = self.spool.take() {
            let _ = spool.flush();
            drop(spool);
            let spooled = std::mem::take(&mut self.spooled);
            let mut sent = 0;
            if let Ok(file) = std::fs::File::open(&self.spool_path) {
                for payload in std::io::BufReader::new(file)
                    .split(b'\n')
                    .map_while(Result::ok)
                {
                    while !self.enqueue(&payload) {
                        if tokio::time::Instant::now() > deadline {
                            break;
                        }
                        self.reap();
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    if tokio::time::Instant::now() > deadline {
                        break;
                    }
                    sent += 1;
                }
            }
            unsent = spooled - sent;
            let _ = std::fs::remove_file(&self.spool_path);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(remaining)).await;
        self.reap();
        unsent + self.failed + self.producer.in_flight_count().max(0) as u64
    }
}
