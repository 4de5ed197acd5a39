//! Deployment events: build reports from the MSK event source on `deployment-events`,
//! and EventBridge's "ECS Task State Change" for build tasks that stopped without a
//! report. Both go through the same service as the local consumer loop; a transient
//! failure fails the invocation so that the batch or event is delivered again.

use deploysphere_lambda::lambda_runtime::{self, LambdaEvent, service_fn};
use deploysphere_lambda::{Settings, build_events, init_tracing};
use serde_json::Value;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let deployments = settings.deployments(settings.db().await?)?;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let deployments = deployments.clone();
        async move {
            for report in build_events(&event.payload)? {
                match deployments.handle_event(&report).await {
                    Ok(_) => {}
                    Err(e) if e.is_permanent() => {
                        tracing::warn!(error = %e, deployment_id = %report.deployment_id, "deployment event set aside");
                    }
                    Err(e) => return Err(lambda_runtime::Error::from(e.to_string())),
                }
            }
            Ok::<_, lambda_runtime::Error>(())
        }
    }))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
