//! A WebSocket client that stops reading cannot make the gateway hold a build's whole
//! log: once 4 MiB wait for it, it is dropped with close code 1008 (its own test
//! binary: it pushes a 15 MB log).

use std::time::Duration;

use deploysphere_e2e::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const LINES: u64 = 150_000;

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_not_buffered() {
    let api = Api::new_account("slow reader").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    // 150,000 lines of 100 characters: about 15 MB of log.
    let project = api
        .create_project(json!({
            "name": "loud build",
            "git_url": repo.url(),
            "build": {"build_command": format!(
                "line=$(head -c 100 /dev/zero | tr '\\\\0' x); yes \"$line\" | head -n {LINES}"
            )}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap().to_string();

    // A client with a tiny receive buffer subscribes, then reads nothing.
    let url = format!("{}/?token={}", platform().ws_url, api.token);
    let address = url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(address.parse().unwrap()).await.unwrap();
    let (mut client, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("websocket");
    client
        .send(Message::text(
            json!({"action": "subscribe", "deployment_id": id, "after_seq": 0}).to_string(),
        ))
        .await
        .unwrap();
    let done = api.wait_final(&id).await;
    assert_eq!(done["state"], "READY", "{done}");
    // Wait until the platform is done with the stalled client: its subscription ends
    // either when the gateway drops it (the pusher gets 410 and forgets it) or when it
    // was sent the final state (everything was buffered). However long the build took.
    let mut redis = redis::Client::open(platform().redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let subscribers: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("ws:subs:{id}"))
            .query_async(&mut redis)
            .await
            .unwrap();
        if subscribers.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the stalled client is still subscribed after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Now read: the connection ends long before the whole log.
    let mut lines = 0u64;
    let mut close = None;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), client.next())
            .await
            .expect("the gateway neither closed nor sent anything for 30 s");
        match frame {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "log" {
                    lines += value["lines"].as_array().map_or(0, |l| l.len() as u64);
                }
                if value["type"] == "state" && value["state"] == "READY" {
                    panic!("the stalled client got the whole log ({lines} lines): it was buffered");
                }
            }
            Some(Ok(Message::Close(frame))) => {
                close = frame;
                break;
            }
            Some(Ok(_)) => {}
            // Dropped before its close frame got through.
            Some(Err(_)) | None => break,
        }
    }
    assert!(lines < LINES, "{lines} lines");
    if let Some(frame) = close {
        assert_eq!(u16::from(frame.code), 1008, "{frame:?}");
        assert!(frame.reason.contains("too slowly"), "{frame:?}");
    }
    eprintln!("the stalled client got {lines} of {LINES} lines before it was dropped");

    // A client that reads keeps getting everything.
    let seen = watch(&api.token, &id, 0).await;
    assert_gapless(&seen.lines);
    assert!(
        seen.lines.len() as u64 > LINES,
        "{} lines",
        seen.lines.len()
    );
    assert_eq!(seen.states.last().map(String::as_str), Some("READY"));
}
