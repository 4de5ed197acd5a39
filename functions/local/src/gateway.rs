//! The local WebSocket gateway: what API Gateway's WebSocket API does, on 127.0.0.1.
//! It turns connections and messages into the same API Gateway event JSON and calls
//! the same `ws` handler, and serves the `@connections/{id}` management API (POST,
//! GET, DELETE) that `PostToConnection` calls: 410 Gone for a connection that is not
//! open, 413 past API Gateway's 128 KB message limit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest;
use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{SecondsFormat, Utc};
use deploysphere_ws::{WsContext, handle};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

/// API Gateway's limit for one PostToConnection payload.
pub const MAX_POST_BYTES: usize = 128 * 1024;
/// What one connection may have waiting to be written to its client. A client that
/// reads slower than its logs arrive reaches it and is dropped (close code 1008, then
/// 410 Gone to the pusher, as API Gateway does for a connection that is gone), so a
/// slow or stalled client cannot make the gateway hold a build's whole log.
pub const MAX_QUEUED_BYTES: usize = 4 * 1024 * 1024;
/// How long a dropped slow client gets to take its close frame.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

struct Connection {
    tx: mpsc::UnboundedSender<Message>,
    /// Bytes sent to `tx` and not yet written to the socket.
    queued: Arc<std::sync::atomic::AtomicUsize>,
    /// Tells the writer to close the connection now (slow consumer).
    kick: Arc<tokio::sync::Notify>,
    connected_at: String,
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) => bytes.len(),
        _ => 0,
    }
}

#[derive(Clone)]
pub struct Gateway {
    ctx: WsContext,
    connections: Arc<Mutex<HashMap<String, Connection>>>,
}

impl Gateway {
    pub fn new(ctx: WsContext) -> Self {
        Gateway {
            ctx,
            connections: Arc::default(),
        }
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(upgrade))
            .route("/@connections/{id}", get(info).post(post).delete(close))
            .with_state(self)
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// An API Gateway WebSocket event, as the service would send it to the handler.
fn event(
    route_key: &str,
    event_type: &str,
    connection_id: &str,
    extra: serde_json::Value,
) -> ApiGatewayWebsocketProxyRequest {
    let epoch = Utc::now().timestamp_millis();
    let mut value = json!({
        "requestContext": {
            "routeKey": route_key,
            "eventType": event_type,
            "connectionId": connection_id,
            "domainName": "127.0.0.1",
            "stage": "local",
            "apiId": "local",
            "connectedAt": epoch,
            "requestTimeEpoch": epoch,
            "messageDirection": "IN",
        },
        "isBase64Encoded": false,
    });
    if let (Some(target), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        for (key, field) in extra {
            target.insert(key.clone(), field.clone());
        }
    }
    serde_json::from_value(value).expect("the API Gateway WebSocket event shape")
}

async fn upgrade(
    State(gateway): State<Gateway>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let connection_id = uuid::Uuid::new_v4().simple().to_string();
    let header_map: HashMap<String, String> = headers
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
        })
        .collect();
    let connect = event(
        "$connect",
        "CONNECT",
        &connection_id,
        json!({"headers": header_map, "queryStringParameters": query}),
    );
    let answer = handle(&gateway.ctx, connect).await;
    if answer.status_code != 200 {
        let status =
            StatusCode::from_u16(answer.status_code as u16).unwrap_or(StatusCode::FORBIDDEN);
        return (status, format!("connection refused ({status})\n")).into_response();
    }
    ws.on_upgrade(move |socket| session(gateway, connection_id, socket))
}

async fn session(gateway: Gateway, connection_id: String, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let kick = Arc::new(tokio::sync::Notify::new());
    gateway
        .connections
        .lock()
        .expect("connections lock")
        .insert(
            connection_id.clone(),
            Connection {
                tx,
                queued: queued.clone(),
                kick: kick.clone(),
                connected_at: now(),
            },
        );
    let writer = tokio::spawn(async move {
        loop {
            let message = tokio::select! {
                message = rx.recv() => message,
                _ = kick.notified() => break,
            };
            let Some(message) = message else { return };
            let len = message_len(&message);
            let closing = matches!(message, Message::Close(_));
            let sent = tokio::select! {
                sent = sink.send(message) => sent.is_ok(),
                _ = kick.notified() => break,
            };
            queued.fetch_sub(len, std::sync::atomic::Ordering::Relaxed);
            if !sent || closing {
                return;
            }
        }
        // Dropped as a slow consumer: say why, if the client takes it in time.
        let frame = axum::extract::ws::CloseFrame {
            code: 1008,
            reason: "the client read too slowly: more than 4 MiB waited for it".into(),
        };
        let _ = tokio::time::timeout(CLOSE_GRACE, sink.send(Message::Close(Some(frame)))).await;
    });
    let mut writer = writer;
    let reading = async {
        while let Some(Ok(message)) = stream.next().await {
            let body = match message {
                Message::Text(text) => text.to_string(),
                Message::Binary(bytes) => String::from_utf8_lossy(&bytes).to_string(),
                Message::Close(_) => break,
                _ => continue,
            };
            // Route selection as API Gateway's `$request.body.action`.
            let action = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["action"].as_str().map(str::to_string));
            let route = match action.as_deref() {
                Some("subscribe") => "subscribe",
                _ => "$default",
            };
            let request = event(route, "MESSAGE", &connection_id, json!({"body": body}));
            let ctx = gateway.ctx.clone();
            tokio::spawn(async move {
                handle(&ctx, request).await;
            });
        }
    };
    // The connection ends when the client leaves, or when the writer ends (the
    // client closed, or it was dropped as too slow: then the socket closes here, even
    // in the middle of a frame).
    tokio::select! {
        _ = reading => {}
        _ = &mut writer => {}
    }
    writer.abort();
    drop(stream);
    gateway
        .connections
        .lock()
        .expect("connections lock")
        .remove(&connection_id);
    handle(
        &gateway.ctx,
        event("$disconnect", "DISCONNECT", &connection_id, json!({})),
    )
    .await;
}

fn gone() -> Response {
    (
        StatusCode::GONE,
        [
            ("x-amzn-errortype", "GoneException"),
            ("content-type", "application/json"),
        ],
        "{\"message\":\"Connection is gone\"}",
    )
        .into_response()
}

async fn post(State(gateway): State<Gateway>, Path(id): Path<String>, body: Bytes) -> Response {
    if body.len() > MAX_POST_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            [
                ("x-amzn-errortype", "PayloadTooLargeException"),
                ("content-type", "application/json"),
            ],
            "{\"message\":\"Message too long\"}",
        )
            .into_response();
    }
    let mut connections = gateway.connections.lock().expect("connections lock");
    let Some(connection) = connections.get(&id) else {
        return gone();
    };
    let len = body.len();
    let queued = connection
        .queued
        .fetch_add(len, std::sync::atomic::Ordering::Relaxed);
    if queued + len > MAX_QUEUED_BYTES {
        tracing::warn!(
            connection_id = %id,
            queued,
            "websocket client reads too slowly: dropped"
        );
        if let Some(connection) = connections.remove(&id) {
            connection.kick.notify_one();
        }
        return gone();
    }
    let message = match String::from_utf8(body.to_vec()) {
        Ok(text) => Message::Text(text.into()),
        Err(_) => Message::Binary(body),
    };
    if connection.tx.send(message).is_err() {
        return gone();
    }
    StatusCode::OK.into_response()
}

async fn info(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let connections = gateway.connections.lock().expect("connections lock");
    match connections.get(&id) {
        Some(connection) => axum::Json(json!({
            "ConnectedAt": connection.connected_at,
            "LastActiveAt": now(),
            "Identity": {"SourceIp": "127.0.0.1", "UserAgent": ""},
        }))
        .into_response(),
        None => gone(),
    }
}

async fn close(State(gateway): State<Gateway>, Path(id): Path<String>) -> Response {
    let connection = gateway
        .connections
        .lock()
        .expect("connections lock")
        .remove(&id);
    match connection {
        Some(connection) => {
            let _ = connection.tx.send(Message::Close(None));
            StatusCode::NO_CONTENT.into_response()
        }
        None => gone(),
    }
}
