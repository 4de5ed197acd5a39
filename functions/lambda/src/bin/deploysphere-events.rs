//! Deployment events: build reports from the MSK event source on `deployment-events`,
//! EventBridge's "ECS Task State Change" for build tasks that stopped without a
//! report, and the EventBridge schedule of the periodic sweep. All go through the
//! same service as the local platform; a transient failure fails the invocation so
//! that the batch or event is delivered again. A record that can never apply goes to
//! `deployment-events-dead-letter`.

use std::sync::Arc;

use deploysphere_adapters::kafka::{DEPLOYMENT_EVENTS_DEAD_LETTER, KafkaDeadLetters};
use deploysphere_lambda::lambda_runtime::{self, LambdaEvent, service_fn};
use deploysphere_lambda::{Settings, handle_events_invocation, init_tracing};
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let db = settings.db().await?;
    // A stack update may reach this function before the api: both migrate (the
    // migrations are serialized by a lock and applied once).
    deploysphere_adapters::pg::migrate(&db.pool).await?;
    let deployments = settings.deployments(db).await?;
    let (kafka, context) = settings.kafka()?;
    let dead_letters = Arc::new(KafkaDeadLetters::new(
        &kafka,
        context,
        DEPLOYMENT_EVENTS_DEAD_LETTER,
    )?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let (deployments, dead_letters) = (deployments.clone(), dead_letters.clone());
        async move {
            handle_events_invocation(&deployments, dead_letters.as_ref(), &event.payload)
                .await
                .map_err(|e| lambda_runtime::Error::from(format!("{e:#}")))
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
