//! The `deployment-events` records of an MSK event, as the events Lambda's event
//! source mapping delivers them and the local consumer builds them: each is applied
//! in order; one that can never apply (not a build event, not signed by the build of
//! the deployment it names, or naming no deployment) goes to
//! `deployment-events-dead-letter` with the reason, counted in the log, and never
//! blocks the partition.

use aws_lambda_events::event::kafka::{KafkaEvent, KafkaRecord};
use deploysphere_adapters::kafka::{
    DEPLOYMENT_EVENTS, DeadLetter, DeadLetters, check_msk_signature, msk_bytes,
};
use deploysphere_adapters::signing::Checker;
use deploysphere_core::BuildEvent;

use crate::{Deployments, EventError};

/// What one batch of deployment events did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EventsReport {
    pub applied: usize,
    pub set_aside: usize,
}

/// The event of a record, once its signature shows the build of the deployment it
/// names wrote it.
fn decode(keys: &mut Checker<'_>, record: &KafkaRecord) -> Result<BuildEvent, String> {
    let value = record.value.as_deref().ok_or("the record has no value")?;
    let payload = msk_bytes(value);
    let event: BuildEvent =
        serde_json::from_slice(&payload).map_err(|e| format!("not a deployment event: {e}"))?;
    check_msk_signature(
        keys,
        DEPLOYMENT_EVENTS,
        &event.deployment_id,
        &payload,
        record,
    )?;
    Ok(event)
}

impl Deployments {
    /// Applies the records of `event`, partition by partition, in offset order. An
    /// error is transient (the database or the sites bucket): nothing of the batch may
    /// be acknowledged, and applying it again is harmless (events are idempotent).
    pub async fn handle_msk_event(
        &self,
        dead_letters: &dyn DeadLetters,
        event: &KafkaEvent,
    ) -> Result<EventsReport, EventError> {
        let mut letters = Vec::new();
        let mut applied = 0;
        let mut checker = self.build_keys.checker();
        let mut partitions: Vec<&String> = event.records.keys().collect();
        partitions.sort();
        for partition in partitions {
            for record in &event.records[partition] {
                let report = match decode(&mut checker, record) {
                    Ok(report) => report,
                    Err(reason) => {
                        letters.push(DeadLetter::from_msk(record, reason));
                        continue;
                    }
                };
                match self.handle_event(&report).await {
                    Ok(_) => applied += 1,
                    Err(e) if e.is_permanent() => {
                        letters.push(DeadLetter::from_msk(record, e.to_string()))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !letters.is_empty() {
            dead_letters
                .set_aside(&letters)
                .await
                .map_err(EventError::DeadLetters)?;
        }
        Ok(EventsReport {
            applied,
            set_aside: letters.len(),
        })
    }
}
