//! The relay as an ECS service: subscribes to Redis and pushes log frames to
//! WebSocket clients through API Gateway's management API (a Lambda cannot hold a
//! Redis subscription). The same code runs inside `deploysphere dev`.

use std::sync::Arc;

use deploysphere_lambda::{Settings, init_tracing};
use deploysphere_ws::{ApiGatewayPoster, WsContext};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let redis_url = settings.redis_url().await?;
    let redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let context = WsContext {
        db: settings.db().await?,
        logs: settings.log_store().await?,
        redis,
        poster: Arc::new(ApiGatewayPoster::from_sdk_config(
            &settings.sdk_config()?,
            &settings.var("DEPLOYSPHERE_WS_ENDPOINT")?,
        )),
        hash_token: deploysphere_api::hash_token,
    };
    deploysphere_relay::run(context, &redis_url).await
}
