//! A build, or whatever escapes its sandbox, holds its own deployment's signing key,
//! the log brokers' address and the Redis token every build shares. With them it tries
//! to write another tenant's deployment while that one builds: a "finished" report
//! that points at its own files, a failure, log lines (one at a `seq` the victim's
//! build already used) and live lines in Redis. None of it lands: the victim's
//! deployment, stored log and live viewer see only what its own build wrote, and each
//! forged Kafka record is on the dead-letter topic with the reason.

use std::time::Duration;

use deploysphere_adapters::kafka::{
    BUILD_LOGS, BUILD_LOGS_DEAD_LETTER, DEPLOYMENT_EVENTS, DEPLOYMENT_EVENTS_DEAD_LETTER,
    producer_config, signature_header,
};
use deploysphere_adapters::now_ms;
use deploysphere_adapters::signing::BuildKey;
use deploysphere_core::{BuildEvent, BuildEventKind, LogLine, LogStream};
use deploysphere_e2e::*;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::json;

/// Puts `payload` on `topic` as a build would, signed with `key` (or not at all).
async fn produce(topic: &str, key_of: &str, payload: &[u8], key: Option<&BuildKey>) {
    let producer: FutureProducer = producer_config(&platform().kafka_brokers)
        .create()
        .expect("producer");
    let mut record = FutureRecord::to(topic).key(key_of).payload(payload);
    if let Some(key) = key {
        record = record.headers(signature_header(&key.sign(topic, payload)));
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .expect("the broker takes the record");
}

#[tokio::test]
async fn a_build_cannot_write_another_deployments_state_or_log() {
    let p = platform();
    // The attacker's own deployment: its build held this deployment's key.
    let attacker = Api::new_account("attacker").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("attacker's site");
    let project = attacker
        .create_project(json!({"name": "attacker site", "git_url": repo.url()}))
        .await;
    let own = attacker.deploy(project["id"].as_str().unwrap()).await;
    let own_id = own["id"].as_str().unwrap().to_string();
    assert_eq!(attacker.wait_final(&own_id).await["state"], "READY");
    let stolen_key = p.build_key(&own_id);

    // The victim: a build that takes a while, watched live from its first line.
    let victim = Api::new_account("victim").await;
    let (victim_project, _victim_repo) = slow_project(&victim, "victim site", 900, 45).await;
    let deployment = victim.deploy(&victim_project).await;
    let victim_id = deployment["id"].as_str().unwrap().to_string();
    let viewer = {
        let (token, id) = (victim.token.clone(), victim_id.clone());
        tokio::spawn(async move { watch(&token, &id, 0).await })
    };
    victim.logs_containing(&victim_id, "slow line 1").await;

    // Kafka: the victim is "finished" with the attacker's files, or "failed".
    let marker = uuid::Uuid::new_v4().to_string();
    let own_manifest = deploysphere_core::manifest::manifest_key(&own_id);
    let finished = BuildEvent {
        deployment_id: victim_id.clone(),
        at_ms: now_ms(),
        kind: BuildEventKind::Finished {
            manifest_key: own_manifest.clone(),
            files: 1,
            bytes: 1,
            blobs_uploaded: 0,
            log_lines: Some(1),
            phases: Vec::new(),
        },
    };
    let failed = BuildEvent {
        deployment_id: victim_id.clone(),
        at_ms: now_ms(),
        kind: BuildEventKind::Failed {
            reason: format!("forged failure {marker}"),
            log_lines: None,
            phases: Vec::new(),
        },
    };
    let json = |v: &BuildEvent| serde_json::to_vec(v).unwrap();
    let stolen = Some(&stolen_key);
    produce(DEPLOYMENT_EVENTS, &victim_id, &json(&finished), stolen).await;
    produce(DEPLOYMENT_EVENTS, &victim_id, &json(&failed), None).await;
    // Both are set aside, saying why. Events apply in order, so both were read past
    // once they are there, and the victim is still building.
    let not_victims = format!("not deployment {victim_id}'s");
    let forged_failure = format!("forged failure {marker}");
    let letters = find_dead_letters(
        DEPLOYMENT_EVENTS_DEAD_LETTER,
        &[&own_manifest, &forged_failure],
    )
    .await;
    assert!(letters[0].1.contains(&not_victims), "{}", letters[0].1);
    assert!(letters[1].1.starts_with("unsigned"), "{}", letters[1].1);
    let now = victim.get(&format!("/v1/deployments/{victim_id}")).await;
    assert_eq!(now.body["state"], "BUILDING", "{}", now.body);

    // Log lines: one replacing the victim's first line, one past its end, one unsigned.
    let line_of = |deployment_id: &str, seq: u64, text: &str| {
        serde_json::to_vec(&LogLine {
            deployment_id: deployment_id.to_string(),
            project_id: victim_project.clone(),
            seq,
            ts_ms: now_ms(),
            stream: LogStream::Stdout,
            message: format!("{text} {marker}"),
        })
        .unwrap()
    };
    let line = |seq: u64, text: &str| line_of(&victim_id, seq, text);
    produce(
        BUILD_LOGS,
        &victim_id,
        &line(1, "forged first line"),
        stolen,
    )
    .await;
    produce(
        BUILD_LOGS,
        &victim_id,
        &line(500, "forged late line"),
        stolen,
    )
    .await;
    produce(BUILD_LOGS, &victim_id, &line(2, "unsigned line"), None).await;
    let texts = ["forged first line", "forged late line", "unsigned line"]
        .map(|text| format!("{text} {marker}"));
    let letters =
        find_dead_letters(BUILD_LOGS_DEAD_LETTER, &[&texts[0], &texts[1], &texts[2]]).await;
    for (letter, why) in letters.iter().zip([&not_victims, &not_victims, "unsigned"]) {
        assert!(letter.1.contains(why), "{}: {}", letter.0, letter.1);
    }

    // Redis: lines ahead of the victim's build in its live list, sealed with the
    // attacker's key, not sealed at all, and rightly sealed but naming the attacker's
    // own deployment; then a wake-up for the victim's viewers.
    let client = redis::Client::open(p.redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let recent = format!("logs:recent:{victim_id}");
    for seq in 1..=1500 {
        let _: () = redis::pipe()
            .rpush(
                &recent,
                stolen_key.seal(BUILD_LOGS, &line(seq, "forged live line")),
            )
            .rpush(&recent, line(seq, "plain live line"))
            .rpush(
                &recent,
                stolen_key.seal(BUILD_LOGS, &line_of(&own_id, seq, "own live line")),
            )
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let _: () = redis::cmd("PUBLISH")
        .arg(format!("logs:{victim_id}"))
        .arg("wake up")
        .query_async(&mut redis)
        .await
        .unwrap();

    // The victim's build ends as its own build says, with its own files and log.
    assert_slow_build_complete(&victim, &victim_id, 900).await;
    let stored = victim.logs_containing(&victim_id, "Deployed").await;
    assert!(
        messages(&stored).iter().all(|m| !m.contains(&marker)),
        "no forged line is stored"
    );
    assert!(
        stored[0]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Cloning"),
        "line 1 is the victim's own: {}",
        stored[0]
    );
    let seen = viewer.await.expect("the viewer");
    assert_eq!(seen.states.last().map(String::as_str), Some("READY"));
    let forged_seen = messages(&seen.lines)
        .iter()
        .filter(|m| m.contains(&marker))
        .count();
    assert_eq!(forged_seen, 0, "forged lines reached the live viewer");
    assert_eq!(
        messages(&seen.lines),
        messages(&stored),
        "the live viewer saw exactly the stored log, none of the forged lines"
    );
    let slug = victim
        .get(&format!("/v1/projects/{victim_project}"))
        .await
        .body["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    wait_served(&host(&slug), "/", "900 lines").await;
}

/// The Redis login builds get may append a deployment's live lines and publish on its
/// channel, and nothing else: it cannot read any log, subscribe, or touch the records
/// that decide who is sent which deployment's log (so an escaped build cannot have
/// another tenant's log pushed to its own connection, or hide lines from a viewer).
#[tokio::test]
async fn a_builds_redis_login_can_only_append_live_lines() {
    let p = platform();
    let password = std::fs::read_to_string(p.home.join("redis-build-password")).unwrap();
    let port = p.redis_url.rsplit(':').next().unwrap();
    let url = format!("redis://build:{}@127.0.0.1:{port}", password.trim());
    let mut build = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("builds log in");
    let id = uuid::Uuid::new_v4();
    let list = format!("logs:recent:{id}");
    let (cursor, subs) = (format!("ws:cursor:c1:{id}"), format!("ws:subs:{id}"));
    let (channel, id) = (format!("logs:{id}"), id.to_string());
    let allowed: [&[&str]; 4] = [
        &["RPUSH", &list, "v1=00 {}"],
        &["LTRIM", &list, "-10", "-1"],
        &["EXPIRE", &list, "60"],
        &["PUBLISH", &channel, "x"],
    ];
    for words in allowed {
        let answer: redis::RedisResult<redis::Value> = command(words).query_async(&mut build).await;
        assert!(answer.is_ok(), "{words:?}: {answer:?}");
    }
    let refused: [&[&str]; 13] = [
        &["LRANGE", &list, "0", "-1"],
        &["GET", &cursor],
        &["SET", &cursor, "0"],
        &["SADD", &subs, "c1"],
        &["ZADD", "ws:watched", "1", &id],
        &["RPUSH", "ws:conn:c1", "x"],
        &["DEL", &list],
        &["SCAN", "0"],
        &["KEYS", "*"],
        &["PUBLISH", "other", "x"],
        &["SUBSCRIBE", &channel],
        &["FLUSHALL"],
        &["CONFIG", "GET", "*"],
    ];
    for words in refused {
        let answer: redis::RedisResult<redis::Value> = command(words).query_async(&mut build).await;
        let error = answer.expect_err(&format!("{words:?} is refused"));
        assert!(error.to_string().contains("NOPERM"), "{words:?}: {error}");
    }
    // Without a password nobody gets in; the platform's own login can do it all.
    let anonymous = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let refused: redis::RedisResult<redis::Value> = match anonymous {
        Ok(mut connection) => {
            redis::cmd("GET")
                .arg("x")
                .query_async(&mut connection)
                .await
        }
        Err(e) => Err(e),
    };
    assert!(
        refused.is_err(),
        "an anonymous client is refused: {refused:?}"
    );
    let mut platform = redis::Client::open(p.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let lines: Vec<String> = redis::cmd("LRANGE")
        .arg(&list)
        .arg(0)
        .arg(-1)
        .query_async(&mut platform)
        .await
        .unwrap();
    assert_eq!(lines, ["v1=00 {}"]);
}

fn command(words: &[&str]) -> redis::Cmd {
    let mut command = redis::cmd(words[0]);
    for word in &words[1..] {
        command.arg(*word);
    }
    command
}
