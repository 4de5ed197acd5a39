//! A build starts without credentials: it exchanges a one-time grant at the API
//! (`POST /v1/build-credentials`) for credentials of its own deployment and the next
//! grant, and exchanges that before the credentials expire. Every deploy of the other
//! tests goes through this exchange (the local launcher hands out grants as the ECS
//! one does); these tests pin down what a grant is worth: one use (and a retry right
//! after it), renewal along the chain, also with nothing asking, nothing once the
//! build has ended, nothing after it expired.

use deploysphere_adapters::{hash_token, new_token};
use deploysphere_builder::credentials::{ExchangeError, GrantCredentials};
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

/// Moves a grant's first use `seconds` into the past.
async fn used_ago(grant: &str, seconds: i64) {
    let pool = deploysphere_adapters::pg::connect(&postgres_url(), 1).unwrap();
    let updated = pool
        .get()
        .await
        .unwrap()
        .execute(
            "UPDATE build_grants SET used_at = now() - make_interval(secs => $2::bigint) WHERE token_hash = $1",
            &[&hash_token(grant), &seconds],
        )
        .await
        .unwrap();
    assert_eq!(updated, 1);
}

#[tokio::test]
async fn a_grant_works_once_give_or_take_a_retry_and_a_build_renews_along_the_chain() {
    let api = Api::new_account("grants").await;
    let id = start_slow_build(&api, "grant site", 400, 30, 1).await;

    let grant = grant_for(&id, 60).await;
    let (status, body) = exchange(Some(&grant)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["access_key_id"],
        platform().s3.access_key.as_str(),
        "the local shape's build credentials are the local S3 user's"
    );
    let next = body["next_grant"]
        .as_str()
        .expect("a next grant")
        .to_string();
    assert!(next.starts_with("dsb_") && next != grant);
    // The key the build signs its reports with: its own deployment's, every exchange.
    let build_key = body["build_key"].as_str().expect("a build key");
    assert_eq!(build_key, platform().build_key(&id).to_hex());
    assert_ne!(
        build_key,
        platform().build_key(&Uuid::new_v4().to_string()).to_hex()
    );

    // A build that lost the answer tries again at once: that works...
    let (status, body) = exchange(Some(&grant)).await;
    assert_eq!(status, 200, "a retry right after the first use: {body}");
    assert_eq!(body["build_key"], build_key);
    // ...but not a while later (someone else holds a copy), nor made-up or no grants.
    used_ago(&grant, 120).await;
    for (grant, why) in [
        (Some(grant.as_str()), "a grant used two minutes ago"),
        (Some("dsb_made-up"), "an unknown grant"),
        (None, "no grant"),
    ] {
        let (status, body) = exchange(grant).await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"]["code"], "invalid_grant", "{why}");
    }

    // The builder's provider renews along the chain (forced here on every use).
    let api_url = format!("http://127.0.0.1:{}", platform().api_port);
    let provider =
        GrantCredentials::with_refresh_before(&api_url, &next, Duration::from_secs(24 * 3600));
    for round in 1..=3 {
        let credentials = provider
            .get()
            .await
            .unwrap_or_else(|e| panic!("renewal {round} failed: {e:?}"));
        assert_eq!(credentials.access_key_id(), platform().s3.access_key);
        assert!(credentials.expiry().is_some(), "handed out for an hour");
        assert_eq!(provider.exchanges(), round);
    }

    // Once the build has ended it gets nothing new; what it has stays usable until
    // it expires (it cannot be taken back).
    let reply = api
        .post(&format!("/v1/deployments/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let error = provider
        .renew()
        .await
        .expect_err("an ended build is refused");
    assert!(
        matches!(&error, ExchangeError::Refused { .. }),
        "the builder says why: {error}"
    );
    assert!(
        provider.get().await.is_ok(),
        "the current credentials are kept"
    );
}

#[tokio::test]
async fn an_idle_build_renews_its_credentials_before_they_expire() {
    let api = Api::new_account("grants-idle").await;
    let id = start_slow_build(&api, "grant idle", 400, 30, 1).await;
    let grant = grant_for(&id, 60).await;
    // Due for renewal two seconds after each exchange (credentials last an hour).
    let provider = GrantCredentials::with_refresh_before(
        &format!("http://127.0.0.1:{}", platform().api_port),
        &grant,
        Duration::from_secs(3600 - 2),
    );
    provider.get().await.expect("first exchange");
    provider.renew_in_background();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while provider.exchanges() < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} exchanges in 30 s with nothing asking",
            provider.exchanges()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let reply = api
        .post(&format!("/v1/deployments/{id}/cancel"), Value::Null)
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
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
