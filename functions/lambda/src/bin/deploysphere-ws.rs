//! The WebSocket routes (`$connect`, `$disconnect`, `subscribe`) behind API Gateway's
//! WebSocket API: the same handler as the local gateway's.

use std::sync::Arc;

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use deploysphere_lambda::lambda_runtime::{self, LambdaEvent, service_fn};
use deploysphere_lambda::{Settings, init_tracing};
use deploysphere_ws::handle;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let context = Arc::new(settings.ws_context(&settings.redis_url().await?).await?);
    lambda_runtime::run(service_fn(
        move |event: LambdaEvent<ApiGatewayWebsocketProxyRequest>| {
            let context = context.clone();
            async move { Ok::<_, lambda_runtime::Error>(handle(&context, event.payload).await) }
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))
}
