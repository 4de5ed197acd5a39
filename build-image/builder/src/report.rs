//! What a build tells the world: log lines on `build-logs` (gapless `seq` from 1,
//! secrets masked) and state reports on `deployment-events`, each signed with the
//! deployment's key (see `deploysphere_adapters::signing`): the consumers take
//! nothing that this build did not sign for its own deployment.
//!
//! Every line is also written to a journal in the build's work folder. The journal
//! backs two promises: a producer queue that is full spills to it (the rest is sent in
//! order at the end), and after the broker was seen down (all connections lost) the
//! whole journal is sent again before the end state is reported, because a broker that
//! came back may have lost lines it had acknowledged. The log store keeps one copy of
//! each `(deployment_id, seq)`, so a line sent twice is stored once.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::FutureExt;
use rdkafka::producer::Producer;

use deploysphere_adapters::kafka::{
    BUILD_LOGS, DEPLOYMENT_EVENTS, KafkaContext, KafkaSettings, signature_header,
};
use deploysphere_adapters::now_ms;
use deploysphere_adapters::signing::{BuildKey, sealed};
use deploysphere_core::logs::{SecretMasker, truncate_message};
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
    producer: FutureProducer<KafkaContext>,
    /// Notes when every broker connection was lost.
    context: KafkaContext,
    /// Signs every record and live line.
    key: BuildKey,
    deployment_id: String,
    project_id: String,
    secrets: SecretMasker,
    next_seq: u64,
    /// Delivery reports of queued lines, oldest first.
    pending: VecDeque<DeliveryFuture>,
    /// Lines the broker refused for good.
    failed: u64,
    /// Every line so far, one JSON object per line, in `seq` order.
    journal_path: PathBuf,
    journal: Option<std::io::BufWriter<std::fs::File>>,
    /// The `seq` of the first line that did not fit the producer's bounded queue: from
    /// there on, lines wait in the journal until the end of the build.
    spilled_from: Option<u64>,
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
    /// A reporter whose journal is in `work_dir`.
    pub fn new(
        kafka: &KafkaSettings,
        context: KafkaContext,
        key: BuildKey,
        deployment_id: &str,
        project_id: &str,
        secrets: Vec<String>,
        work_dir: &Path,
    ) -> anyhow::Result<Self> {
        let producer: FutureProducer<KafkaContext> = kafka
            .producer_config()
            // A broker that is down delays lines, it does not lose them: no message
            // timeout, a bounded queue (64 MB) and the journal past it.
            .set("message.timeout.ms", "0")
            .set("queue.buffering.max.kbytes", "65536")
            .set("queue.buffering.max.messages", "200000")
            .create_with_context(context.clone())?;
        let journal_path = work_dir.join("log-journal.jsonl");
        // The journal holds the build's log: the builder's alone (0600).
        let journal = std::os::unix::fs::OpenOptionsExt::mode(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            0o600,
        )
        .open(&journal_path)
        .map(std::io::BufWriter::new)
        .map_err(|e| {
            eprintln!("[builder] no log journal ({e}): lines the broker loses cannot be sent again")
        })
        .ok();
        Ok(Reporter {
            producer,
            context,
            key,
            deployment_id: deployment_id.to_string(),
            project_id: project_id.to_string(),
            secrets: SecretMasker::new(&secrets),
            next_seq: 1,
            pending: VecDeque::new(),
            failed: 0,
            journal_path,
            journal,
            spilled_from: None,
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
        self.secrets.mask(text)
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
        let message = truncate_message(self.secrets.mask(message));
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
        // One signature serves the live path and the broker (same topic, same bytes).
        let signature = self.key.sign(BUILD_LOGS, &payload);
        if let Some(live) = &self.live {
            live.publish(sealed(&signature, &payload));
        }
        let journaled = self.journal(&payload);
        if self.spilled_from.is_some() {
            // Once spilling, keep spilling: the journal is sent in order at the end.
            if !journaled {
                self.failed += 1;
            }
        } else if !self.enqueue(&payload, &signature) {
            if journaled {
                self.spilled_from = Some(line.seq);
            } else {
                self.failed += 1;
            }
        }
        self.reap();
    }

    /// Hands a line to the producer with its signature; false when its queue is full.
    fn enqueue(&mut self, payload: &[u8], signature: &str) -> bool {
        let record = FutureRecord::to(BUILD_LOGS)
            .key(&self.deployment_id)
            .payload(payload)
            .headers(signature_header(signature));
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

    /// Appends a line to the journal; false if it could not be written.
    fn journal(&mut self, payload: &[u8]) -> bool {
        let Some(journal) = self.journal.as_mut() else {
            return false;
        };
        let written = journal
            .write_all(payload)
            .and_then(|()| journal.write_all(b"\n"));
        if let Err(e) = written {
            eprintln!("[builder] the log journal failed ({e}); no longer journaling");
            self.journal = None;
            return false;
        }
        true
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
            .payload(&payload)
            .headers(signature_header(
                &self.key.sign(DEPLOYMENT_EVENTS, &payload),
            ));
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
                "could not report {:?}: the broker was unreachable for {} s (last error: {})",
                event.kind,
                EVENT_TIMEOUT.as_secs(),
                self.context.last_error().as_deref().unwrap_or("none")
            ),
        }
    }

    /// Sends the lines waiting in the journal (all of them after a broker outage), then
    /// waits (at most [`FLUSH_TIMEOUT`]) until the broker has every line. Returns how
    /// many lines could not be delivered.
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
        // After an outage, wait for the broker before deciding what to send again.
        self.flush_until(deadline).await;
        let resend_from = if self.context.brokers_down_seen() {
            // Every line goes again: refusals from before count only if they recur.
            self.failed = 0;
            self.system("The log broker was unreachable during the build: sending the whole log again (the log store keeps one copy of each line)")
                .await;
            Some(1)
        } else {
            self.spilled_from
        };
        if let Some(from) = resend_from {
            let total = self.lines_sent();
            let sent = self.resend(from, deadline).await;
            unsent = (total + 1 - from).saturating_sub(sent);
        }
        self.flush_until(deadline).await;
        let _ = std::fs::remove_file(&self.journal_path);
        let undelivered = unsent + self.failed + self.producer.in_flight_count().max(0) as u64;
        undelivered.min(self.lines_sent())
    }

    /// Waits until the producer's queue is empty or `deadline` passes.
    async fn flush_until(&mut self, deadline: tokio::time::Instant) {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let producer = self.producer.clone();
        let _ = tokio::task::spawn_blocking(move || producer.flush(remaining)).await;
        self.reap();
    }

    /// Sends the journal's lines from `seq` `from` on, in order; returns how many were
    /// handed to the producer before `deadline`.
    async fn resend(&mut self, from: u64, deadline: tokio::time::Instant) -> u64 {
        // The journal may have stopped early (a failed write): what it holds is sent.
        if let Some(mut journal) = self.journal.take() {
            let _ = journal.flush();
        }
        let Ok(file) = std::fs::File::open(&self.journal_path) else {
            return 0;
        };
        let mut sent = 0;
        let lines = std::io::BufReader::new(file)
            .split(b'\n')
            .map_while(Result::ok);
        for payload in lines.skip((from - 1) as usize) {
            let signature = self.key.sign(BUILD_LOGS, &payload);
            while !self.enqueue(&payload, &signature) {
                if tokio::time::Instant::now() > deadline {
                    return sent;
                }
                self.reap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent += 1;
        }
        sent
    }
}
