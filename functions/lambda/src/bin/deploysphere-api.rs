//! The HTTPS API: the same axum router as `deploysphere dev`, behind API Gateway's
//! HTTP API (payload format 2.0) on Lambda. Without `AWS_LAMBDA_RUNTIME_API` it
//! serves on `DEPLOYSPHERE_API_ADDRESS` (default 127.0.0.1:3000) instead.

use std::sync::Arc;

use deploysphere_api::{ApiConfig, AppState, SitesConfig};
use deploysphere_lambda::{Settings, init_tracing};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let settings = Settings::from_env()?;
    let db = settings.db().await?;
    deploysphere_adapters::pg::migrate(&db.pool).await?;
    let state = AppState {
        db: db.clone(),
        logs: settings.log_store().await?,
        deployments: settings.deployments(db).await?,
        config: Arc::new(ApiConfig {
            sites: SitesConfig {
                scheme: "https".into(),
                domain: settings.var("DEPLOYSPHERE_DOMAIN")?,
                port: None,
            },
            local_sources: deploysphere_api::LocalSources::Never,
        }),
    };
    // MSK has no CloudFormation resource for topics: the API creates them at start.
    match settings.kafka() {
        Ok((kafka, context)) => {
            if let Err(e) =
                deploysphere_adapters::kafka::create_topics(&kafka, &context, 6, -1).await
            {
                tracing::warn!(error = %e, "creating the kafka topics failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, "no kafka settings: topics not created"),
    }
    let router = deploysphere_api::router(state);
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        deploysphere_lambda::lambda_http::run(router)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    } else {
        let address = settings.var_or("DEPLOYSPHERE_API_ADDRESS", "127.0.0.1:3000");
        let listener = tokio::net::TcpListener::bind(&address).await?;
        axum_serve(listener, router).await
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, router: axum::Router) -> anyhow::Result<()> {
    axum::serve(listener, router).await?;
    Ok(())
}
