//! The live path of build logs: each line is published on the Redis channel
//! `logs:<deployment_id>` and appended to the list `logs:recent:<deployment_id>` (the
//! last [`RECENT_LINES`] lines, kept an hour), so a viewer who subscribes late can
//! catch up on lines ClickHouse does not have yet.
//!
//! Best effort by design: publishing never waits on Redis, and what Redis misses
//! (slow, down) is counted and still delivered through Kafka to ClickHouse.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines kept in the recent list of a deployment.
pub const RECENT_LINES: isize = 10_000;
/// How long the recent list outlives the last line.
pub const RECENT_TTL_SECS: i64 = 3600;
/// Lines waiting for Redis before new ones are dropped.
const QUEUE: usize = 20_000;
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

pub fn channel(deployment_id: &str) -> String {
    format!("logs:{deployment_id}")
}

pub fn recent_list(deployment_id: &str) -> String {
    format!("logs:recent:{deployment_id}")
}

pub struct LivePublisher {
    tx: mpsc::Sender<Vec<u8>>,
    missed: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl LivePublisher {
    pub fn start(redis_url: &str, deployment_id: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let missed = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(run(
            redis_url.to_string(),
            deployment_id.to_string(),
            rx,
            missed.clone(),
        ));
        LivePublisher { tx, missed, task }
    }

    /// Queues a line (sealed: see `deploysphere_adapters::signing::sealed`) for Redis;
    /// never waits.
    pub fn publish(&self, line: Vec<u8>) {
        if self.tx.try_send(line).is_err() {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what is queued (waiting at most `timeout`); returns how many lines
    /// Redis missed.
    pub async fn finish(self, timeout: Duration) -> u64 {
        let LivePublisher {
            tx,
            missed,
            mut task,
        } = self;
        drop(tx);
        if tokio::time::timeout(timeout, &mut task).await.is_err() {
            task.abort();
        }
        missed.load(Ordering::Relaxed)
    }
}

async fn run(
    url: String,
    deployment_id: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    missed: Arc<AtomicU64>,
) {
    let client = match redis::Client::open(url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("[builder] live logs are off: {e}");
            while rx.recv().await.is_some() {
                missed.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
    };
    let (channel, list) = (channel(&deployment_id), recent_list(&deployment_id));
    let mut connection: Option<redis::aio::MultiplexedConnection> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < 500 {
            match rx.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        if connection.is_none() {
            connection =
                tokio::time::timeout(COMMAND_TIMEOUT, client.get_multiplexed_async_connection())
                    .await
                    .ok()
                    .and_then(Result::ok);
        }
        let Some(conn) = connection.as_mut() else {
            missed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        };
        let mut pipe = redis::pipe();
        for line in &batch {
            pipe.rpush(&list, line.as_slice()).ignore();
            pipe.publish(&channel, line.as_slice()).ignore();
        }
        pipe.ltrim(&list, -RECENT_LINES, -1).ignore();
        pipe.expire(&list, RECENT_TTL_SECS).ignore();
        let sent = tokio::time::timeout(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await;
        if !matches!(sent, Ok(Ok(()))) {
            missed.fetch_add(batch.len() as u64, Ordering::Relaxed);
            connection = None;
        }
    }
}
