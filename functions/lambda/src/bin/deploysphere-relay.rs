//! The relay as an ECS service: subscribes to Redis and pushes log frames to
//! WebSocket clients through API Gateway's management API (a Lambda cannot hold a
//! Redis subscription). The same code runs inside `deploysphere dev`.

use deploysphere_lambda::{Settings, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let redis_url = settings.redis_url().await?;
    let context = settings.ws_context(&redis_url).await?;
    deploysphere_relay::run(context, &redis_url).await
}
