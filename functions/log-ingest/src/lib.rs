//! Log ingest: a batch of `build-logs` records -> ClickHouse. Written against raw
//! record payloads so the local consumer loop and the MSK event handler share it.

use deploysphere_adapters::clickhouse::{ClickHouseError, LogStore};
use deploysphere_core::LogLine;

/// What one batch did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IngestReport {
    pub inserted: usize,
    /// Records that can never be inserted (not a log line): index in the batch and why.
    pub rejected: Vec<(usize, String)>,
}

/// Parses and inserts a batch in one ClickHouse insert. Fails only when ClickHouse
/// does; then nothing of the batch may be acknowledged, and a retry is harmless
/// because rows are keyed by (deployment_id, seq).
pub async fn ingest(store: &LogStore, payloads: &[&[u8]]) -> Result<IngestReport, ClickHouseError> {
    let mut report = IngestReport::default();
    let mut lines = Vec::with_capacity(payloads.len());
    for (index, payload) in payloads.iter().enumerate() {
        match serde_json::from_slice::<LogLine>(payload) {
            Ok(line) => lines.push(line),
            Err(e) => report.rejected.push((index, e.to_string())),
        }
    }
    store.insert(&lines).await?;
    report.inserted = lines.len();
    Ok(report)
}
