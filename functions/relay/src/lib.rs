//! The relay: Redis pub/sub (`logs:*`) -> `PostToConnection`. It cannot be a Lambda
//! (a Lambda cannot hold a subscription): on AWS it is a small ECS service; locally a
//! task of `deploysphere dev`. Either way it calls [`deploysphere_ws::deliver`], which
//! decides what each client still needs, so a missed pub/sub message only delays a
//! line until the next wake-up (at most [`TICK`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deploysphere_ws::{WATCHED_KEY, WsContext, deliver, subs_key};
use futures::StreamExt;
use redis::AsyncCommands;
use tracing::warn;

/// How often every open subscription is looked at, whatever pub/sub said.
pub const TICK: Duration = Duration::from_millis(500);
const SUBSCRIBERS_TTL: Duration = Duration::from_millis(200);

/// Runs deliveries, at most one at a time per (connection, deployment); a wake-up
/// during a delivery makes it go round once more.
#[derive(Clone)]
pub struct Scheduler {
    ctx: WsContext,
    running: Arc<Mutex<HashMap<(String, String), bool>>>,
}

impl Scheduler {
    pub fn new(ctx: WsContext) -> Self {
        Scheduler {
            ctx,
            running: Arc::default(),
        }
    }

    pub fn wake(&self, connection_id: &str, deployment_id: &str) {
        let key = (connection_id.to_string(), deployment_id.to_string());
        {
            let mut running = self.running.lock().expect("scheduler lock");
            if let Some(again) = running.get_mut(&key) {
                *again = true;
                return;
            }
            running.insert(key.clone(), false);
        }
        let (ctx, running) = (self.ctx.clone(), self.running.clone());
        tokio::spawn(async move {
            loop {
                deliver(&ctx, &key.0, &key.1).await;
                let mut map = running.lock().expect("scheduler lock");
                match map.get_mut(&key) {
                    Some(again) if *again => *again = false,
                    _ => {
                        map.remove(&key);
                        return;
                    }
                }
            }
        });
    }
}

/// Subscribes to every deployment's channel and wakes the deliveries of its
/// subscribers; also wakes every open subscription each [`TICK`].
pub async fn run(ctx: WsContext, redis_url: &str) -> anyhow::Result<()> {
    let client = redis::Client::open(redis_url)?;
    let scheduler = Scheduler::new(ctx.clone());
    let ticker = {
        let (scheduler, mut redis) = (scheduler.clone(), ctx.redis.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TICK).await;
                let now = deploysphere_adapters::now_ms() / 1000;
                let watched: redis::RedisResult<Vec<String>> = redis::pipe()
                    .zrembyscore(WATCHED_KEY, "-inf", now)
                    .ignore()
                    .zrange(WATCHED_KEY, 0, -1)
                    .query_async::<(Vec<String>,)>(&mut redis)
                    .await
                    .map(|(watched,)| watched);
                let watched = match watched {
                    Ok(watched) => watched,
                    Err(e) => {
                        warn!(error = %e, "relay: listing subscriptions failed");
                        continue;
                    }
                };
                for deployment_id in watched {
                    let members: Vec<String> = redis
                        .smembers(subs_key(&deployment_id))
                        .await
                        .unwrap_or_default();
                    for connection_id in members {
                        scheduler.wake(&connection_id, &deployment_id);
                    }
                }
            }
        })
    };
    let mut subscribers: HashMap<String, (Instant, Vec<String>)> = HashMap::new();
    let mut redis = ctx.redis.clone();
    loop {
        let mut pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                warn!(error = %e, "relay: redis unavailable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = pubsub.psubscribe("logs:*").await {
            warn!(error = %e, "relay: subscribe failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let channel = message.get_channel_name().to_string();
            let Some(deployment_id) = channel.strip_prefix("logs:") else {
                continue;
            };
            let fresh = subscribers
                .get(deployment_id)
                .is_some_and(|(at, _)| at.elapsed() < SUBSCRIBERS_TTL);
            if !fresh {
                let members: Vec<String> = redis
                    .smembers(subs_key(deployment_id))
                    .await
                    .unwrap_or_default();
                subscribers.insert(deployment_id.to_string(), (Instant::now(), members));
            }
            if let Some((_, members)) = subscribers.get(deployment_id) {
                for connection_id in members {
                    scheduler.wake(connection_id, deployment_id);
                }
            }
            if subscribers.len() > 10_000 {
                subscribers.retain(|_, (at, _)| at.elapsed() < SUBSCRIBERS_TTL);
            }
        }
        warn!("relay: redis subscription ended; resubscribing");
        tokio::time::sleep(Duration::from_millis(200)).await;
        if ticker.is_finished() {
            anyhow::bail!("relay ticker stopped");
        }
    }
}
