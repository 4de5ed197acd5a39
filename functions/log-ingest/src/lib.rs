//! Log ingest: a batch of `build-logs` records -> ClickHouse. The handler takes the
//! MSK event shape (`aws_lambda_events` `KafkaEvent`), so the Lambda on AWS and the
//! local consumer loop (which builds the same event) run the same code.
//!
//! Guarantees: a batch is acknowledged only after ClickHouse accepted every line of
//! it; replaying a batch is harmless (rows are keyed by (deployment_id, seq) in a
//! ReplacingMergeTree); a record that can never be inserted (not a log line, or not
//! signed by the build of the deployment it names) is set aside with its reason and
//! counted, and never blocks the partition.

use aws_lambda_events::encodings::MillisecondTimestamp;
use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use deploysphere_adapters::clickhouse::{ClickHouseError, LogStore};
use deploysphere_adapters::kafka::{BUILD_LOGS, check_msk_signature};
pub use deploysphere_adapters::kafka::{DeadLetter, DeadLetters, KafkaDeadLetters};
use deploysphere_adapters::signing::Checker;
pub use deploysphere_adapters::signing::PlatformKey;
use deploysphere_core::LogLine;

/// Lines per ClickHouse insert.
pub const MAX_BATCH_LINES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// ClickHouse did not take the batch: retry it whole.
    #[error("log store: {0}")]
    Store(#[from] ClickHouseError),
    /// The dead letters could not be stored: retry the batch.
    #[error("{0}")]
    DeadLetters(String),
}

/// What one batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub inserted: usize,
    pub set_aside: usize,
}

/// The line of a record, once its signature shows the build of the deployment it
/// names wrote it.
fn decode(keys: &mut Checker<'_>, record: &KafkaRecord) -> Result<LogLine, String> {
    let value = record.value.as_deref().ok_or("the record has no value")?;
    let payload = BASE64
        .decode(value)
        .map_err(|e| format!("the value is not base64: {e}"))?;
    let line: LogLine =
        serde_json::from_slice(&payload).map_err(|e| format!("not a log line: {e}"))?;
    if line.seq == 0 || line.deployment_id.is_empty() {
        return Err("a log line needs a deployment_id and a seq from 1".into());
    }
    check_msk_signature(keys, BUILD_LOGS, &line.deployment_id, &payload, record)?;
    Ok(line)
}

/// Handles one MSK event: inserts its lines (in order, in batches of up to
/// [`MAX_BATCH_LINES`]) and sets aside what is not a log line. An error means nothing
/// of the event may be acknowledged; retrying it is safe.
pub async fn handle_kafka_event(
    store: &LogStore,
    keys: &PlatformKey,
    dead_letters: &dyn DeadLetters,
    event: &KafkaEvent,
) -> Result<IngestReport, IngestError> {
    let mut lines = Vec::new();
    let mut letters = Vec::new();
    let mut checker = keys.checker();
    let mut partitions: Vec<&String> = event.records.keys().collect();
    partitions.sort();
    for partition in partitions {
        for record in &event.records[partition] {
            match decode(&mut checker, record) {
                Ok(line) => lines.push(line),
                Err(reason) => letters.push(DeadLetter::from_msk(record, reason)),
            }
        }
    }
    for chunk in lines.chunks(MAX_BATCH_LINES) {
        store.insert(chunk).await?;
    }
    if !letters.is_empty() {
        dead_letters
            .set_aside(&letters)
            .await
            .map_err(IngestError::DeadLetters)?;
    }
    Ok(IngestReport {
        inserted: lines.len(),
        set_aside: letters.len(),
    })
}

/// A record as a local Kafka consumer reads it.
#[derive(Debug, Clone, Default)]
pub struct RawRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// The MSK event for records read by a local consumer: what the event source mapping
/// would hand the Lambda (records grouped by `topic-partition`, base64 key and value).
pub fn kafka_event(records: &[RawRecord]) -> KafkaEvent {
    let mut event = KafkaEvent::default();
    event.event_source = Some("aws:kafka".into());
    event.event_source_arn = Some("local:deploysphere".into());
    for raw in records {
        let mut record = KafkaRecord::default();
        record.topic = Some(raw.topic.clone());
        record.partition = raw.partition.into();
        record.offset = raw.offset;
        record.timestamp = MillisecondTimestamp(
            chrono::DateTime::from_timestamp_millis(raw.timestamp_ms).unwrap_or_default(),
        );
        record.timestamp_type = Some("CREATE_TIME".into());
        record.key = raw.key.as_ref().map(|k| BASE64.encode(k));
        record.value = raw.value.as_ref().map(|v| BASE64.encode(v));
        record.headers = raw
            .headers
            .iter()
            .map(|(name, value)| {
                let bytes = value.iter().map(|b| *b as i8).collect();
                std::collections::HashMap::from([(name.clone(), bytes)])
            })
            .collect();
        event
            .records
            .entry(format!("{}-{}", raw.topic, raw.partition))
            .or_default()
            .push(record);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real MSK event as the event source mapping delivers it (fixture JSON).
    const FIXTURE: &str = include_str!("../../../tests/fixtures/events/msk-build-logs.json");

    /// The key the fixtures are signed with.
    fn fixture_keys() -> PlatformKey {
        let key = include_str!("../../../tests/fixtures/events/build-signing-key.txt");
        PlatformKey::new(key.trim().as_bytes()).unwrap()
    }

    #[test]
    fn decodes_the_msk_event_fixture_and_refuses_lines_its_build_did_not_sign() {
        let event: KafkaEvent = serde_json::from_str(FIXTURE).unwrap();
        let records = &event.records["build-logs-0"];
        assert_eq!(records.len(), 5);
        let keys = fixture_keys();
        let mut keys = keys.checker();
        let line = decode(&mut keys, &records[0]).unwrap();
        assert_eq!(line.seq, 1);
        assert_eq!(
            line.message,
            "Cloning https://github.com/acme/site.git (main)"
        );
        assert!(
            decode(&mut keys, &records[2])
                .unwrap_err()
                .contains("not a log line")
        );
        let letter = DeadLetter::from_msk(&records[2], "x".into());
        assert_eq!((letter.partition, letter.offset), (0, 42));
        assert_eq!(letter.payload, b"this is not json");
        // Signed with another deployment's key, and not signed at all.
        let forged = decode(&mut keys, &records[3]).unwrap_err();
        assert!(
            forged.contains("not deployment 0b9f4f63-3c55-4bb1-9a43-2f1f6f0c1c11's"),
            "{forged}"
        );
        assert!(
            decode(&mut keys, &records[4])
                .unwrap_err()
                .starts_with("unsigned")
        );
        // Under another platform's key even the build's own lines are refused.
        let other = PlatformKey::new(&[1u8; 32]).unwrap();
        assert!(decode(&mut other.checker(), &records[0]).is_err());
    }

    #[test]
    fn local_records_make_the_same_event_shape() {
        let event = kafka_event(&[RawRecord {
            topic: "build-logs".into(),
            offset: 7,
            timestamp_ms: 1_700_000_000_000,
            key: Some(b"d1".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: vec![("deploysphere-signature".into(), b"v1=ab".to_vec())],
            ..RawRecord::default()
        }]);
        let record = &event.records["build-logs-0"][0];
        assert_eq!(record.offset, 7);
        assert_eq!(record.value.as_deref(), Some("e30="));
        assert_eq!(event.event_source.as_deref(), Some("aws:kafka"));
        assert_eq!(
            deploysphere_adapters::kafka::msk_header(record, "deploysphere-signature").as_deref(),
            Some(&b"v1=ab"[..])
        );
    }
}
