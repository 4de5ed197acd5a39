//! The Lambda entry points' event shapes, on real event JSON fixtures, against the
//! platform's real Postgres, ClickHouse and Redis: API Gateway HTTP API (payload 2.0)
//! requests through the API router, and a WebSocket `$connect` through the ws handler.
//! The events function's handler on its MSK and EventBridge-schedule fixtures.
//! (ECS task state change and CloudFront fixtures are covered next to their handlers.)

use std::collections::HashMap;
use std::sync::Arc;

use deploysphere_api::{ApiConfig, AppState, SitesConfig};
use deploysphere_e2e::*;
use deploysphere_lambda::Settings;
use deploysphere_lambda::lambda_http::request::from_str;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

fn fixture(name: &str, token: &str) -> String {
    let path = manifest_dir().join("fixtures/events").join(name);
    std::fs::read_to_string(path)
        .expect("fixture")
        .replace("TOKEN", token)
}

/// The settings a Lambda would read, pointing at the platform's servers (the ECS
/// launcher is never reached by these requests).
fn settings() -> Settings {
    let p = platform();
    let vars: HashMap<String, String> = [
        ("DEPLOYSPHERE_DATABASE_URL", postgres_url()),
        ("DEPLOYSPHERE_CLICKHOUSE_URL", p.clickhouse_url.clone()),
        ("DEPLOYSPHERE_REDIS_URL", p.redis_url.clone()),
        ("DEPLOYSPHERE_ECS_CLUSTER", "deploysphere".into()),
        (
            "DEPLOYSPHERE_BUILD_TASK_DEFINITION",
            "deploysphere-build".into(),
        ),
        ("DEPLOYSPHERE_BUILD_SUBNETS", "subnet-1,subnet-2".into()),
        ("DEPLOYSPHERE_BUILD_SECURITY_GROUP", "sg-1".into()),
        (
            "DEPLOYSPHERE_BUILD_UPLOAD_ROLE_ARN",
            "arn:aws:iam::111122223333:role/upload".into(),
        ),
        ("DEPLOYSPHERE_BUCKET", p.s3.bucket.clone()),
        (
            "DEPLOYSPHERE_S3_ENDPOINT",
            p.s3.endpoint.clone().unwrap_or_default(),
        ),
        ("DEPLOYSPHERE_AWS_ENDPOINT", "http://127.0.0.1:9".into()),
        ("AWS_ACCESS_KEY_ID", p.s3.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY", p.s3.secret_key.clone()),
        // The sweep's start timeout: 60 s here, so that a launch lost 2 minutes ago
        // is this Lambda's to fail (the local platform's own sweep waits 20 min).
        ("DEPLOYSPHERE_BUILD_START_TIMEOUT", "60".into()),
        // The key the MSK fixtures are signed with (on AWS: the BuildSigningKey secret).
        ("DEPLOYSPHERE_BUILD_SIGNING_KEY", fixture_signing_key()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Settings::new(vars)
}

/// What the events function holds: the deployments service from its settings, and
/// the dead-letter producer on the platform's broker.
async fn events_function() -> (
    deploysphere_events::Deployments,
    deploysphere_adapters::kafka::KafkaDeadLetters,
) {
    use deploysphere_adapters::kafka::{
        DEPLOYMENT_EVENTS_DEAD_LETTER, KafkaContext, KafkaDeadLetters, KafkaSettings,
    };
    let settings = settings();
    let deployments = settings
        .deployments(settings.db().await.expect("db"))
        .await
        .expect("deployments");
    let dead_letters = KafkaDeadLetters::new(
        &KafkaSettings::plaintext(&platform().kafka_brokers),
        KafkaContext::without_signer(),
        DEPLOYMENT_EVENTS_DEAD_LETTER,
    )
    .expect("producer");
    (deployments, dead_letters)
}

async fn api_router() -> axum::Router {
    let settings = settings();
    let db = settings.db().await.expect("db");
    deploysphere_api::router(AppState {
        db: db.clone(),
        logs: settings.log_store().await.expect("log store"),
        deployments: settings.deployments(db).await.expect("deployments"),
        config: Arc::new(ApiConfig {
            sites: SitesConfig {
                scheme: "https".into(),
                domain: "sites.example.com".into(),
                port: None,
            },
            local_sources: deploysphere_api::LocalSources::Never,
        }),
    })
}

async fn call(router: axum::Router, event: &str) -> (u16, Value) {
    let request = from_str(event).expect("an API Gateway HTTP API event");
    let response = router.oneshot(request).await.expect("a response");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_api_function_answers_api_gateway_http_api_events() {
    let api = Api::new_account("lambda-http").await;
    api.create_project(
        json!({"name": "from lambda", "git_url": "https://github.com/acme/site.git"}),
    )
    .await;

    let (status, body) = call(
        api_router().await,
        &fixture("apigw-v2-list-projects.json", &api.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let projects = body["projects"].as_array().expect("projects");
    assert_eq!(projects.len(), 1);
    assert_eq!(projects[0]["slug"], "from-lambda");
    assert_eq!(projects[0]["url"], "https://from-lambda.sites.example.com");

    let (status, body) = call(
        api_router().await,
        &fixture("apigw-v2-list-projects.json", "dsp_wrong"),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = call(
        api_router().await,
        &fixture("apigw-v2-create-project-invalid.json", &api.token),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("name"),
        "the error names the field: {body}"
    );
    assert_eq!(
        api.get("/v1/projects").await.body["projects"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing created"
    );
}

#[tokio::test]
async fn the_ws_function_answers_api_gateway_websocket_connect_events() {
    let api = Api::new_account("lambda-ws").await;
    let settings = settings();
    let redis = redis::Client::open(platform().redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let context = deploysphere_ws::WsContext {
        db: settings.db().await.unwrap(),
        logs: settings.log_store().await.unwrap(),
        redis,
        poster: Arc::new(deploysphere_ws::ApiGatewayPoster::new(
            &platform().ws_url.replace("ws://", "http://"),
            "us-east-1",
            "local",
            "local",
        )),
        hash_token: deploysphere_api::hash_token,
        build_keys: settings.build_keys().await.unwrap(),
    };
    let connect = |token: &str| {
        serde_json::from_str::<aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest>(&fixture(
            "apigw-websocket-connect.json",
            token,
        ))
        .expect("a WebSocket event")
    };
    let answer = deploysphere_ws::handle(&context, connect(&api.token)).await;
    assert_eq!(answer.status_code, 200);
    let answer = deploysphere_ws::handle(&context, connect("dsp_wrong")).await;
    assert_eq!(answer.status_code, 401);
}

/// The events function's MSK handler on the `msk-deployment-events.json` fixture,
/// against the real Postgres and broker: a record that is not a deployment event,
/// events naming a deployment that does not exist, and an event one build signed for
/// another build's deployment go to the dead-letter topic with their reason, and the
/// batch succeeds (it is not retried forever).
#[tokio::test]
async fn msk_deployment_events_that_cannot_apply_go_to_the_dead_letter_topic() {
    let (deployments, dead_letters) = events_function().await;
    let event: aws_lambda_events::event::kafka::KafkaEvent =
        serde_json::from_str(&fixture("msk-deployment-events.json", "")).expect("MSK event");
    let report = deployments
        .handle_msk_event(&dead_letters, &event)
        .await
        .expect("the batch is handled");
    assert_eq!((report.applied, report.set_aside), (0, 4));
    let (_, reason) = find_dead_letter(
        deploysphere_adapters::kafka::DEPLOYMENT_EVENTS_DEAD_LETTER,
        "5f0c6b7e-2a4d-4c1b-9a8e-3d2f1e0c9b8a",
    )
    .await;
    assert!(
        reason.contains("deployment 5f0c6b7e-2a4d-4c1b-9a8e-3d2f1e0c9b8a does not exist"),
        "{reason}"
    );
    let (_, reason) = find_dead_letter(
        deploysphere_adapters::kafka::DEPLOYMENT_EVENTS_DEAD_LETTER,
        "an event forged by another build",
    )
    .await;
    assert!(
        reason.contains("not deployment 9d2c4e1a-6b3f-4a7d-8c5e-1f0a2b3c4d5e's"),
        "{reason}"
    );
}

/// A launch that died between the claim and RunTask (the deployment is claimed, no
/// task exists, no report ever comes): the EventBridge schedule's sweep, as the events
/// Lambda runs it on the `eventbridge-scheduled-sweep.json` fixture, fails it with a
/// clear reason and its slot comes back.
#[tokio::test]
async fn the_scheduled_sweep_fails_a_launch_lost_between_claim_and_run_task() {
    let api = Api::new_account("lost launch").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "lost launch", "git_url": repo.url()}))
        .await;
    let project_id = uuid::Uuid::parse_str(project["id"].as_str().unwrap()).unwrap();
    // What a launcher that died right after its claim leaves behind: QUEUED, claimed
    // (launched_at set) two minutes ago, no task.
    let id = uuid::Uuid::new_v4();
    let client = db().pool.get().await.expect("postgres");
    client
        .execute(
            "INSERT INTO deployments (id, project_id, account_id, git_ref, state, launched_at)
             SELECT $1, id, account_id, 'HEAD', 'QUEUED', now() - interval '2 minutes' FROM projects WHERE id = $2",
            &[&id, &project_id],
        )
        .await
        .expect("insert the claimed deployment");
    assert!(db().launched_unfinished().await.unwrap().contains(&id));

    let (deployments, dead_letters) = events_function().await;
    let tick: Value =
        serde_json::from_str(&fixture("eventbridge-scheduled-sweep.json", "")).expect("JSON");
    deploysphere_lambda::handle_events_invocation(&deployments, &dead_letters, &tick)
        .await
        .expect("the sweep runs");

    let deployment = api.get(&format!("/v1/deployments/{id}")).await.body;
    assert_eq!(deployment["state"], "FAILED", "{deployment}");
    let error = deployment["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("did not start within 1 min") && error.contains("deploy again"),
        "{error}"
    );
    assert!(
        !db().launched_unfinished().await.unwrap().contains(&id),
        "the slot is free again"
    );
}
