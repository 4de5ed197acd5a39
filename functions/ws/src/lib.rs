//! The WebSocket side of live build logs, written against the API Gateway WebSocket
//! event shape: `$connect` (bearer token in `?token=` or `Authorization`),
//! `$disconnect`, and `subscribe` (`{"action":"subscribe","deployment_id":..,"after_seq":N}`).
//! Connection and subscription records live in Redis with a TTL.
//!
//! [`deliver`] is the one path that pushes frames to a client, used by `subscribe`
//! (backlog) and by the relay (live lines): under a per-subscription lock it sends the
//! lines after the client's cursor, in order, from Redis's recent list and, for older
//! ones, ClickHouse, then moves the cursor. Every line reaches each client once and
//! in order, whenever it joins; the final state frame comes after the last line.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyResponse, ApiGatewayWebsocketProxyRequest};
use aws_lambda_events::encodings::Body;
use chrono::{SecondsFormat, TimeZone, Utc};
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::kafka::BUILD_LOGS;
use deploysphere_adapters::pg::Db;
pub use deploysphere_adapters::signing::PlatformKey;
use deploysphere_adapters::signing::unseal;
use deploysphere_core::{DeploymentState, LogLine};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde_json::{Value, json};
use tracing::warn;
use uuid::Uuid;

/// API Gateway's limit for one frame is 32 KB; frames stay under it.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Connection and subscription records expire after two idle hours.
const RECORD_TTL_SECS: i64 = 2 * 3600;
const LOCK_MILLIS: u64 = 15_000;

/// Why a push to a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum PostError {
    /// The client is gone (API Gateway answers 410): forget the connection.
    #[error("connection gone")]
    Gone,
    #[error("{0}")]
    Other(String),
}

/// Pushes data to a WebSocket connection (`PostToConnection`). Guarantee: `Ok` means
/// the gateway accepted the frame for that connection.
#[async_trait::async_trait]
pub trait Poster: Send + Sync {
    async fn post(&self, connection_id: &str, data: &[u8]) -> Result<(), PostError>;
}

/// Token hashing is the API's: the same SHA-256 of the bearer token.
pub type TokenHasher = fn(&str) -> String;

#[derive(Clone)]
pub struct WsContext {
    pub db: Db,
    pub logs: LogStore,
    pub redis: MultiplexedConnection,
    pub poster: Arc<dyn Poster>,
    pub hash_token: TokenHasher,
    /// Tells the lines a deployment's build wrote to Redis from lines another wrote.
    pub build_keys: PlatformKey,
}

fn conn_key(connection_id: &str) -> String {
    format!("ws:conn:{connection_id}")
}
fn conn_subs_key(connection_id: &str) -> String {
    format!("ws:conn-subs:{connection_id}")
}
pub fn subs_key(deployment_id: &str) -> String {
    format!("ws:subs:{deployment_id}")
}
/// The deployments that have (or recently had) a subscriber, scored by when their
/// subscription records expire: the relay's tick walks this sorted set instead of
/// scanning the key space, and drops the expired entries.
pub const WATCHED_KEY: &str = "ws:watched";
fn cursor_key(connection_id: &str, deployment_id: &str) -> String {
    format!("ws:cursor:{connection_id}:{deployment_id}")
}
fn state_key(connection_id: &str, deployment_id: &str) -> String {
    format!("ws:state:{connection_id}:{deployment_id}")
}
fn lock_key(connection_id: &str, deployment_id: &str) -> String {
    format!("ws:lock:{connection_id}:{deployment_id}")
}
fn recent_key(deployment_id: &str) -> String {
    format!("logs:recent:{deployment_id}")
}

fn response(status: i64, body: Option<String>) -> ApiGatewayProxyResponse {
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = status;
    response.body = body.map(Body::Text);
    response
}

fn bearer(event: &ApiGatewayWebsocketProxyRequest) -> Option<String> {
    if let Some(token) = event.query_string_parameters.first("token") {
        return Some(token.to_string());
    }
    event
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
}

/// Handles one API Gateway WebSocket event.
pub async fn handle(
    ctx: &WsContext,
    event: ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let route = event.request_context.route_key.clone().unwrap_or_default();
    let Some(connection_id) = event.request_context.connection_id.clone() else {
        return response(400, Some("no connection id".into()));
    };
    match route.as_str() {
        "$connect" => connect(ctx, &connection_id, &event).await,
        "$disconnect" => {
            forget(ctx, &connection_id).await;
            response(200, None)
        }
        _ => message(ctx, &connection_id, event.body.as_deref().unwrap_or("")).await,
    }
}

async fn connect(
    ctx: &WsContext,
    connection_id: &str,
    event: &ApiGatewayWebsocketProxyRequest,
) -> ApiGatewayProxyResponse {
    let Some(token) = bearer(event).filter(|t| !t.is_empty()) else {
        return response(
            401,
            Some("send a token as ?token= or Authorization: Bearer".into()),
        );
    };
    let account = match ctx
        .db
        .account_by_token_hash(&(ctx.hash_token)(&token))
        .await
    {
        Ok(Some(account)) => account,
        Ok(None) => return response(401, Some("invalid token".into())),
        Err(e) => {
            warn!(error = %e, "ws connect: database");
            return response(503, None);
        }
    };
    let mut redis = ctx.redis.clone();
    let stored: redis::RedisResult<()> = redis
        .set_ex(
            conn_key(connection_id),
            account.id.to_string(),
            RECORD_TTL_SECS as u64,
        )
        .await;
    match stored {
        Ok(()) => response(200, None),
        Err(e) => {
            warn!(error = %e, "ws connect: redis");
            response(503, None)
        }
    }
}

/// Drops a connection's records (disconnect, or a 410 from the gateway).
pub async fn forget(ctx: &WsContext, connection_id: &str) {
    let mut redis = ctx.redis.clone();
    let deployments: Vec<String> = redis
        .smembers(conn_subs_key(connection_id))
        .await
        .unwrap_or_default();
    for deployment_id in deployments {
        let _: redis::RedisResult<()> = redis.srem(subs_key(&deployment_id), connection_id).await;
        let _: redis::RedisResult<()> = redis
            .del(&[
                cursor_key(connection_id, &deployment_id),
                state_key(connection_id, &deployment_id),
            ])
            .await;
    }
    let _: redis::RedisResult<()> = redis
        .del(&[conn_key(connection_id), conn_subs_key(connection_id)])
        .await;
}

async fn send_error(ctx: &WsContext, connection_id: &str, message: &str) {
    let frame = json!({"type": "error", "message": message}).to_string();
    let _ = ctx.poster.post(connection_id, frame.as_bytes()).await;
}

async fn message(ctx: &WsContext, connection_id: &str, body: &str) -> ApiGatewayProxyResponse {
    let request: Value = match serde_json::from_str(body) {
        Ok(value) => value,
        Err(_) => {
            send_error(
                ctx,
                connection_id,
                "messages must be JSON, e.g. {\"action\":\"subscribe\",\"deployment_id\":\"...\"}",
            )
            .await;
            return response(400, None);
        }
    };
    if request["action"] != "subscribe" {
        send_error(
            ctx,
            connection_id,
            "action: the only action is \"subscribe\"",
        )
        .await;
        return response(400, None);
    }
    let Some(deployment_id) = request["deployment_id"]
        .as_str()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        send_error(ctx, connection_id, "deployment_id: must be a deployment id").await;
        return response(400, None);
    };
    let after_seq = match &request["after_seq"] {
        Value::Null => 0,
        value => match value.as_u64() {
            Some(n) => n,
            None => {
                send_error(ctx, connection_id, "after_seq: must be a whole number >= 0").await;
                return response(400, None);
            }
        },
    };
    let mut redis = ctx.redis.clone();
    let account: Option<String> = redis.get(conn_key(connection_id)).await.unwrap_or(None);
    let Some(account_id) = account.and_then(|a| Uuid::parse_str(&a).ok()) else {
        send_error(ctx, connection_id, "not connected: reconnect with a token").await;
        return response(403, None);
    };
    match ctx.db.deployment_of(account_id, deployment_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            send_error(ctx, connection_id, "deployment not found").await;
            return response(404, None);
        }
        Err(e) => {
            warn!(error = %e, "ws subscribe: database");
            return response(503, None);
        }
    }
    let dep = deployment_id.to_string();
    let ttl = RECORD_TTL_SECS;
    let stored: redis::RedisResult<()> = redis::pipe()
        .set_ex(cursor_key(connection_id, &dep), after_seq, ttl as u64)
        .ignore()
        .del(state_key(connection_id, &dep))
        .ignore()
        .sadd(subs_key(&dep), connection_id)
        .ignore()
        .expire(subs_key(&dep), ttl)
        .ignore()
        .zadd(
            WATCHED_KEY,
            &dep,
            deploysphere_adapters::now_ms() / 1000 + ttl,
        )
        .ignore()
        .sadd(conn_subs_key(connection_id), &dep)
        .ignore()
        .expire(conn_subs_key(connection_id), ttl)
        .ignore()
        .expire(conn_key(connection_id), ttl)
        .ignore()
        .query_async(&mut redis)
        .await;
    if let Err(e) = stored {
        warn!(error = %e, "ws subscribe: redis");
        return response(503, None);
    }
    deliver(ctx, connection_id, &dep).await;
    response(200, None)
}

fn line_json(line: &LogLine) -> Value {
    let ts = Utc
        .timestamp_millis_opt(line.ts_ms)
        .single()
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
        .unwrap_or_default();
    json!({"seq": line.seq, "ts": ts, "stream": line.stream.as_str(), "message": line.message})
}

/// Splits lines into `{"type":"log","lines":[...]}` frames under [`MAX_FRAME_BYTES`];
/// a single line too long for a frame is cut with a marker.
pub fn log_frames(lines: &[LogLine]) -> Vec<(u64, String)> {
    const ENVELOPE: usize = 64;
    let mut frames = Vec::new();
    let mut batch: Vec<String> = Vec::new();
    let (mut size, mut last) = (ENVELOPE, 0);
    for line in lines {
        let mut item = line_json(line).to_string();
        if item.len() + ENVELOPE > MAX_FRAME_BYTES {
            let mut short = line.clone();
            let mut cut = MAX_FRAME_BYTES - ENVELOPE - 512;
            while !short.message.is_char_boundary(cut) {
                cut -= 1;
            }
            short.message.truncate(cut);
            short.message.push_str(" […cut to fit a WebSocket frame]");
            item = line_json(&short).to_string();
        }
        if !batch.is_empty() && size + item.len() + 1 > MAX_FRAME_BYTES {
            frames.push((
                last,
                format!("{{\"type\":\"log\",\"lines\":[{}]}}", batch.join(",")),
            ));
            batch.clear();
            size = ENVELOPE;
        }
        size += item.len() + 1;
        last = line.seq;
        batch.push(item);
    }
    if !batch.is_empty() {
        frames.push((
            last,
            format!("{{\"type\":\"log\",\"lines\":[{}]}}", batch.join(",")),
        ));
    }
    frames
}

/// Lines of a deployment after `cursor`, in order and without gaps: Redis's recent
/// list first, ClickHouse for what the list no longer (or not yet) holds.
async fn lines_after(ctx: &WsContext, deployment_id: &str, cursor: u64) -> Vec<LogLine> {
    let mut redis = ctx.redis.clone();
    let recent: Vec<Vec<u8>> = redis
        .lrange(recent_key(deployment_id), 0, -1)
        .await
        .unwrap_or_default();
    let mut by_seq: BTreeMap<u64, LogLine> = BTreeMap::new();
    let mut refused = 0;
    let mut checker = ctx.build_keys.checker();
    for raw in &recent {
        let (signature, payload) = unseal(raw);
        let Ok(line) = serde_json::from_slice::<LogLine>(payload) else {
            refused += 1;
            continue;
        };
        if line.seq <= cursor {
            continue;
        }
        // Every build can write to Redis: a line counts only when the build of this
        // deployment signed it (the stored log stands in for what is refused).
        let own = line.deployment_id == deployment_id
            && checker
                .check(BUILD_LOGS, deployment_id, payload, signature)
                .is_ok();
        if own {
            by_seq.insert(line.seq, line);
        } else {
            refused += 1;
        }
    }
    if refused > 0 {
        warn!(
            deployment_id,
            refused, "ws: lines in the live list that its build did not sign were skipped"
        );
    }
    if by_seq.keys().next() != Some(&(cursor + 1)) {
        match ctx.logs.lines(deployment_id, cursor, 10_000).await {
            Ok(stored) => {
                for line in stored {
                    by_seq.entry(line.seq).or_insert(line);
                }
            }
            Err(e) => warn!(error = %e, "ws: reading the stored log failed"),
        }
    }
    let mut contiguous = Vec::new();
    for (expected, (seq, line)) in (cursor + 1..).zip(by_seq) {
        if seq != expected {
            break;
        }
        contiguous.push(line);
    }
    contiguous
}

/// Pushes what a subscription has not seen yet; see the crate doc. Returns true when
/// it sent something (the caller may call again for lines that arrived meanwhile).
pub async fn deliver(ctx: &WsContext, connection_id: &str, deployment_id: &str) -> bool {
    let mut redis = ctx.redis.clone();
    let lock = lock_key(connection_id, deployment_id);
    let locked: Option<String> = redis::cmd("SET")
        .arg(&lock)
        .arg(1)
        .arg("NX")
        .arg("PX")
        .arg(LOCK_MILLIS)
        .query_async(&mut redis)
        .await
        .unwrap_or(None);
    if locked.is_none() {
        return false;
    }
    let sent = deliver_locked(ctx, &mut redis, connection_id, deployment_id).await;
    let _: redis::RedisResult<()> = redis.del(&lock).await;
    sent
}

async fn deliver_locked(
    ctx: &WsContext,
    redis: &mut MultiplexedConnection,
    connection_id: &str,
    deployment_id: &str,
) -> bool {
    let cursor: Option<u64> = redis
        .get(cursor_key(connection_id, deployment_id))
        .await
        .unwrap_or(None);
    let Some(mut cursor) = cursor else {
        return false; // not subscribed (any more)
    };
    let sent_state: Option<String> = redis
        .get(state_key(connection_id, deployment_id))
        .await
        .unwrap_or(None);
    if sent_state
        .as_deref()
        .and_then(DeploymentState::parse)
        .is_some_and(DeploymentState::is_final)
    {
        return false;
    }
    let mut sent = false;
    // The state first, when it moved (BUILDING, UPLOADING): the final one comes last.
    let deployment = match Uuid::parse_str(deployment_id) {
        Ok(id) => ctx.db.deployment(id).await.ok().flatten(),
        Err(_) => None,
    };
    let lines = lines_after(ctx, deployment_id, cursor).await;
    for (last_seq, frame) in log_frames(&lines) {
        match ctx.poster.post(connection_id, frame.as_bytes()).await {
            Ok(()) => {
                cursor = last_seq;
                sent = true;
                let _: redis::RedisResult<()> = redis
                    .set_ex(
                        cursor_key(connection_id, deployment_id),
                        cursor,
                        RECORD_TTL_SECS as u64,
                    )
                    .await;
            }
            Err(PostError::Gone) => {
                forget(ctx, connection_id).await;
                return false;
            }
            Err(PostError::Other(e)) => {
                warn!(error = %e, connection_id, "ws: push failed; will retry");
                return sent;
            }
        }
    }
    let Some(deployment) = deployment else {
        return sent;
    };
    let state = deployment.state;
    let all_lines_out = match deployment.log_lines {
        Some(total) => cursor >= total,
        // Unknown count (a build that was stopped): nothing more to read right now.
        None => lines.is_empty(),
    };
    let due = if state.is_final() {
        all_lines_out
    } else {
        sent_state.as_deref() != Some(state.as_str())
    };
    if due {
        let frame = json!({"type": "state", "state": state.as_str()}).to_string();
        match ctx.poster.post(connection_id, frame.as_bytes()).await {
            Ok(()) => {
                let _: redis::RedisResult<()> = redis
                    .set_ex(
                        state_key(connection_id, deployment_id),
                        state.as_str(),
                        RECORD_TTL_SECS as u64,
                    )
                    .await;
                if state.is_final() {
                    let _: redis::RedisResult<()> =
                        redis.srem(subs_key(deployment_id), connection_id).await;
                }
                sent = true;
            }
            Err(PostError::Gone) => forget(ctx, connection_id).await,
            Err(PostError::Other(e)) => {
                warn!(error = %e, connection_id, "ws: push failed; will retry")
            }
        }
    }
    sent
}

/// `PostToConnection` through the API Gateway management API (`aws-sdk-apigatewaymanagement`),
/// with an endpoint override: API Gateway's `https://{api}.execute-api.{region}.amazonaws.com/{stage}`
/// on AWS, the local gateway's `http://127.0.0.1:3001` locally.
pub struct ApiGatewayPoster {
    client: aws_sdk_apigatewaymanagement::Client,
}

impl ApiGatewayPoster {
    pub fn new(endpoint: &str, region: &str, access_key: &str, secret_key: &str) -> Self {
        use aws_sdk_apigatewaymanagement::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_apigatewaymanagement::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new(
                access_key,
                secret_key,
                None,
                None,
                "deploysphere",
            ))
            .http_client(deploysphere_adapters::aws_http_client())
            .endpoint_url(endpoint)
            .build();
        ApiGatewayPoster {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }
}

impl ApiGatewayPoster {
    /// A poster signing with the credentials of an AWS SDK configuration (a Lambda's
    /// or a task role's), to the API's management endpoint.
    pub fn from_sdk_config(sdk_config: &aws_types::SdkConfig, endpoint: &str) -> Self {
        let config = aws_sdk_apigatewaymanagement::config::Builder::from(sdk_config)
            .endpoint_url(endpoint)
            .build();
        ApiGatewayPoster {
            client: aws_sdk_apigatewaymanagement::Client::from_conf(config),
        }
    }
}

#[async_trait::async_trait]
impl Poster for ApiGatewayPoster {
    async fn post(&self, connection_id: &str, data: &[u8]) -> Result<(), PostError> {
        let sent = self
            .client
            .post_to_connection()
            .connection_id(connection_id)
            .data(aws_sdk_apigatewaymanagement::primitives::Blob::new(
                data.to_vec(),
            ))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if e.as_service_error().is_some_and(|e| e.is_gone_exception()) => {
                Err(PostError::Gone)
            }
            Err(e) => Err(PostError::Other(format!("{e:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploysphere_core::LogStream;

    fn line(seq: u64, message: &str) -> LogLine {
        LogLine {
            deployment_id: "d".into(),
            project_id: "p".into(),
            seq,
            ts_ms: 1_764_201_600_000,
            stream: LogStream::Stdout,
            message: message.into(),
        }
    }

    #[test]
    fn frames_stay_under_the_limit_and_keep_every_line_in_order() {
        let lines: Vec<LogLine> = (1..=2000).map(|i| line(i, &"x".repeat(100))).collect();
        let frames = log_frames(&lines);
        assert!(frames.len() > 1);
        let mut seqs = Vec::new();
        for (_, frame) in &frames {
            assert!(frame.len() <= MAX_FRAME_BYTES, "{}", frame.len());
            let value: Value = serde_json::from_str(frame).unwrap();
            seqs.extend(
                value["lines"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["seq"].as_u64().unwrap()),
            );
        }
        assert_eq!(seqs, (1..=2000).collect::<Vec<_>>());
        assert_eq!(frames.last().unwrap().0, 2000);
    }

    #[test]
    fn a_line_too_long_for_a_frame_is_cut_with_a_marker() {
        let frames = log_frames(&[line(1, &"é".repeat(40_000))]);
        assert_eq!(frames.len(), 1);
        assert!(frames[0].1.len() <= MAX_FRAME_BYTES);
        assert!(frames[0].1.contains("cut to fit a WebSocket frame"));
    }
}
