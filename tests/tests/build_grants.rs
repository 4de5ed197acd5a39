//! A build starts without credentials: it exchanges a one-time grant at the API
//! (`POST /v1/build-credentials`) for credentials of its own deployment and the next
//! grant, and exchanges that before the credentials expire. Every deploy of the other
//! tests goes through this exchange (the local launcher hands out grants as the ECS
//! one does); these tests pin down what a grant is worth: one use, nothing once the
//! build has ended, nothing after it expired.

use deploysphere_adapters::{hash_token, new_token};
use deploysphere_builder::credentials::GrantCredentials;
use deploysphere_e2e::*;
use serde_json::Value;
use std::time::Duration;
use uuid::Uuid;

/// A grant for `deployment_id`, valid `seconds`, as the scheduler makes them.
async fn grant_for(deployment_id: &str, seconds: i64) -> String {
    let grant = new_token("dsb_");
    db().insert_build_grant(
        Uuid::parse_str(deployment_id).unwrap(),
        &hash_token(&grant),
        seconds,
    )
    .await
    .unwrap();
    grant
}

/// Status and body of an exchange.
async fn exchange(grant: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(format!(
        "http://127.0.0.1:{}/v1/build-credentials",
        platform().api_port
    ));
    if let Some(grant) = grant {
        request = request.bearer_auth(grant);
    }
    let response = request.send().await.expect("the API answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_grant_is_good_once_and_a_running_build_can_renew_its_credentials() {
    let api = Api::new_account("grants").await;
    let id = start_slow_build(&api, "grant site", 400, 20, 1).await;

    let grant = grant_for(&id, 60).await;
    let (status, body) = exchange(Some(&grant)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["access_key_id"],
        platform().s3.access_key.as_str(),
        "the local shape's build credentials are the local S3 user's"
    );
    let next = body["next_grant"].as_str().expect("a next grant");
    assert!(next.starts_with("dsb_") && next != grant);

    // Used: worth nothing now, as are made-up and missing grants.
    for (grant, why) in [
        (Some(grant.as_str()), "a used grant"),
        (Some("dsb_made-up"), "an unknown grant"),
        (None, "no grant"),
    ] {
        let (status, body) = exchange(grant).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"]["code"], "invalid_grant", "{why}");
    }

    // The builder's provider renews along the chain (forced here on every use).
    let provider = GrantCredentials::with_refresh_before(
        &format!("http://127.0.0.1:{}", platform().api_port),
        next,
        Duration::from_secs(24 * 3600),
    );
    for round in 0..3 {
        let credentials = provider.get().await.unwrap_or_else(|e| {
            panic!("renewal {round} failed: {e:?}");
        });
        assert_eq!(credentials.access_key_id(), platform().s3.access_key);
        assert!(credentials.expiry().is_some(), "handed out for an hour");
    }
    // The provider went along the chain: the grant it started with is used up.
    let (status, _) = exchange(Some(next)).await;
    assert_eq!(status, 401, "the provider's first grant was exchanged");

    // Once the build has ended it gets nothing more.
    let reply = api
        .post(&format!("/v1/deployments/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let error = provider.get().await.expect_err("an ended build is refused");
    let message = format!("{error:?}");
    assert!(
        message.contains("refused the build grant"),
        "the builder says why: {message}"
    );
}

#[tokio::test]
async fn an_expired_grant_and_a_grant_of_an_ended_build_get_nothing() {
    let api = Api::new_account("grants-ended").await;
    let id = start_slow_build(&api, "grant ended", 400, 20, 1).await;

    let expired = grant_for(&id, -1).await;
    let (status, body) = exchange(Some(&expired)).await;
    assert_eq!(status, 401, "an expired grant: {body}");

    let kept = grant_for(&id, 600).await;
    let reply = api
        .post(&format!("/v1/deployments/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let (status, body) = exchange(Some(&kept)).await;
    assert_eq!(
        status, 401,
        "the grants of a canceled build are gone: {body}"
    );

    // A grant made after the end (none should be) is refused for the state.
    let late = grant_for(&id, 600).await;
    let (status, body) = exchange(Some(&late)).await;
    assert_eq!(status, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("has ended (CANCELED)"), "{message}");
    assert!(body["access_key_id"].is_null(), "{body}");
}
