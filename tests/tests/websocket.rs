//! Live build logs over WebSockets, through the local gateway that behaves like API
//! Gateway, the relay and the `ws` handler.

use std::time::Duration;

use deploysphere_e2e::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn clients_joining_before_during_and_after_a_build_each_get_every_line_once_in_order() {
    let api = Api::new_account("ws-live").await;
    let repo = Repo::from_fixture("slow-lines");
    repo.commit("slow");
    let project = api
        .create_project(json!({"name": "ws live", "git_url": repo.url(), "env": {"LINES": "50000", "SECONDS": "6"}}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap().to_string();
    let token = api.token.clone();

    let before = tokio::spawn({
        let (token, id) = (token.clone(), id.clone());
        async move { watch(&token, &id, 0).await }
    });
    api.logs_containing(&id, "slow line 20000").await;
    let during = tokio::spawn({
        let (token, id) = (token.clone(), id.clone());
        async move { watch(&token, &id, 0).await }
    });
    assert_eq!(api.wait_final(&id).await["state"], "READY");
    let after = watch(&token, &id, 0).await;
    // A client that saw part of it resumes after the last seq it had.
    let resumed = watch(&token, &id, 30_000).await;

    let stored = api.logs_containing(&id, "Deployed").await;
    for (name, seen) in [
        ("before", before.await.unwrap()),
        ("during", during.await.unwrap()),
        ("after", after),
    ] {
        assert_gapless(&seen.lines);
        assert_eq!(seen.lines.len(), stored.len(), "{name}: every line");
        assert_eq!(
            seen.order.last().map(String::as_str),
            Some("state:READY"),
            "{name}: the final state comes last"
        );
        assert_eq!(messages(&seen.lines), messages(&stored), "{name}");
    }
    assert_eq!(
        resumed.lines.first().and_then(|l| l["seq"].as_u64()),
        Some(30_001)
    );
    assert_eq!(resumed.lines.len(), stored.len() - 30_000);
}

#[tokio::test]
async fn connections_need_a_valid_token_and_see_only_their_accounts_deployments() {
    let url = platform().ws_url.clone();
    for bad in [format!("{url}/"), format!("{url}/?token=dsp_nope")] {
        let refused = tokio_tungstenite::connect_async(bad.as_str()).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401)
            }
            other => panic!("{bad}: expected a 401, got {other:?}"),
        }
    }
    let alice = Api::new_account("ws-alice").await;
    // The token may also come as an Authorization header (non-browser clients).
    {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("{url}/").into_client_request().unwrap();
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", alice.token).parse().unwrap(),
        );
        let connected = tokio_tungstenite::connect_async(request).await;
        assert!(connected.is_ok(), "{connected:?}");
    }
    let bob = Api::new_account("ws-bob").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = alice
        .create_project(json!({"name": "ws private", "git_url": repo.url()}))
        .await;
    let deployment = alice.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    alice.wait_final(id).await;

    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{url}/?token={}", bob.token))
        .await
        .unwrap();
    socket
        .send(Message::text(
            json!({"action": "subscribe", "deployment_id": id}).to_string(),
        ))
        .await
        .unwrap();
    let frame = tokio::time::timeout(Duration::from_secs(10), socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let value: Value = serde_json::from_str(frame.to_text().unwrap()).unwrap();
    assert_eq!(value["type"], "error", "{value}");
    assert_eq!(value["message"], "deployment not found");
    let nothing_else = tokio::time::timeout(Duration::from_secs(2), socket.next()).await;
    assert!(
        nothing_else.is_err(),
        "no log frame for another account's deployment: {nothing_else:?}"
    );
}

#[tokio::test]
async fn post_to_connection_follows_api_gateway_410_and_128_kb_rules() {
    use deploysphere_ws::{ApiGatewayPoster, PostError, Poster};
    let poster = ApiGatewayPoster::new(
        &platform().ws_url.replace("ws://", "http://"),
        "us-east-1",
        "local",
        "local",
    );
    assert!(matches!(
        poster.post("no-such-connection", b"{}").await,
        Err(PostError::Gone)
    ));
    let api = Api::new_account("ws-limits").await;
    let (_socket, _) =
        tokio_tungstenite::connect_async(format!("{}/?token={}", platform().ws_url, api.token))
            .await
            .unwrap();
    let http = reqwest::Client::new();
    let base = platform().ws_url.replace("ws://", "http://");
    let too_big = vec![b'x'; 128 * 1024 + 1];
    let reply = http
        .post(format!("{base}/@connections/no-such-connection"))
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status().as_u16(), 413);
}
