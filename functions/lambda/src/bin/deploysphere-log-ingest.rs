//! Log ingest: the MSK event source mapping on `build-logs` hands batches to the same
//! handler the local consumer calls. An error fails the invocation, so the mapping
//! retries the batch (replays are harmless: the log store keeps one copy per line).

use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use deploysphere_lambda::lambda_runtime::{self, LambdaEvent, service_fn};
use deploysphere_lambda::{Settings, init_tracing};
use deploysphere_log_ingest::{KafkaDeadLetters, handle_kafka_event};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let store = settings.log_store().await?;
    store.migrate().await?;
    let build_keys = settings.build_keys().await?;
    let (kafka, context) = settings.kafka()?;
    let dead_letters = Arc::new(KafkaDeadLetters::new(
        &kafka,
        context,
        deploysphere_adapters::kafka::BUILD_LOGS_DEAD_LETTER,
    )?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KafkaEvent>| {
        let (store, build_keys, dead_letters) =
            (store.clone(), build_keys.clone(), dead_letters.clone());
        async move {
            let report =
                handle_kafka_event(&store, &build_keys, dead_letters.as_ref(), &event.payload)
                    .await?;
            tracing::info!(
                inserted = report.inserted,
                set_aside = report.set_aside,
                "batch stored"
            );
            Ok::<_, lambda_runtime::Error>(())
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
