//! Deployment events: build reports from the MSK event source on `deployment-events`,
//! and EventBridge's "ECS Task State Change" for build tasks that stopped without a
//! report. Both go through the same service as the local consumer loop; a transient
//! failure fails the invocation so that the batch or event is delivered again. A
//! record that can never apply goes to `deployment-events-dead-letter`.

use deploysphere_adapters::kafka::{DEPLOYMENT_EVENTS_DEAD_LETTER, KafkaDeadLetters};
use deploysphere_lambda::lambda_runtime::{self, LambdaEvent, service_fn};
use deploysphere_lambda::{EventsInvocation, Settings, events_invocation, init_tracing};
use serde_json::Value;
use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let deployments = settings.deployments(settings.db().await?)?;
    let (kafka, context) = settings.kafka()?;
    let dead_letters = Arc::new(KafkaDeadLetters::new(
        &kafka,
        context,
        DEPLOYMENT_EVENTS_DEAD_LETTER,
    )?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (deployments, dead_letters) = (deployments.clone(), dead_letters.clone());
        async move {
            match events_invocation(&event.payload)? {
                EventsInvocation::Kafka(batch) => {
                    let report = deployments
                        .handle_msk_event(dead_letters.as_ref(), &batch)
                        .await
                        .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
                    tracing::info!(
                        applied = report.applied,
                        set_aside = report.set_aside,
                        "deployment events applied"
                    );
                }
                EventsInvocation::TaskStopped(None) => {}
                EventsInvocation::TaskStopped(Some(report)) => {
                    match deployments.handle_event(&report).await {
                        Ok(_) => {}
                        Err(e) if e.is_permanent() => {
                            tracing::warn!(error = %e, deployment_id = %report.deployment_id, "task stop of an unknown deployment ignored");
                        }
                        Err(e) => return Err(lambda_runtime::Error::from(e.to_string())),
                    }
                }
            }
            Ok::<_, lambda_runtime::Error>(())
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
