//! The platform's Kafka clients against MSK's IAM listener, emulated
//! (`deploysphere_e2e::msk`: TLS plus SASL/OAUTHBEARER with SigV4-signed tokens, in
//! front of a real tansu broker). Everything here runs the production code: the
//! settings the Lambdas and the builder read, the token signer, topic creation and the
//! builder's log reporter. Does not start the platform.

use std::path::PathBuf;
use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use deploysphere_adapters::kafka::{
    BUILD_LOGS, DEPLOYMENT_EVENTS, KafkaAuth, KafkaContext, KafkaSettings, create_topics,
};
use deploysphere_builder::report::Reporter;
use deploysphere_core::{BuildEventKind, LogLine, LogStream};
use deploysphere_e2e::msk::MskEmulator;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};

const REGION: &str = "eu-west-1";
const KEY_ID: &str = "ASIAEMULATORTEST0001";
const SECRET: &str = "emulator/Secret+Key0000000000000000000000";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjE/session+token==";

/// What a Lambda or the builder reads from its environment on AWS.
fn msk_settings(emulator: &MskEmulator, ca_file: PathBuf) -> KafkaSettings {
    let vars = [
        ("DEPLOYSPHERE_KAFKA_BROKERS", emulator.brokers()),
        ("DEPLOYSPHERE_KAFKA_AUTH", "msk-iam".to_string()),
        ("DEPLOYSPHERE_KAFKA_CA_FILE", ca_file.display().to_string()),
        ("AWS_REGION", REGION.to_string()),
    ];
    let settings = KafkaSettings::from_vars(|name| {
        vars.iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.clone())
    })
    .expect("valid settings");
    assert_eq!(settings.auth, KafkaAuth::MskIam);
    settings
}

fn credentials(secret: &str) -> SharedCredentialsProvider {
    SharedCredentialsProvider::new(Credentials::new(
        KEY_ID,
        secret,
        Some(SESSION_TOKEN.to_string()),
        None,
        "test",
    ))
}

fn context(settings: &KafkaSettings, secret: &str) -> KafkaContext {
    settings
        .context(Some(credentials(secret)))
        .expect("a signing context")
}

/// Every message on `topic` (partition 0), read through the emulator.
async fn read_all(
    settings: &KafkaSettings,
    context: KafkaContext,
    topic: &str,
    want: usize,
) -> Vec<Vec<u8>> {
    let consumer: StreamConsumer<KafkaContext> = settings
        .consumer_config("msk-iam-reader")
        .create_with_context(context.clone())
        .expect("consumer");
    let mut partitions = TopicPartitionList::new();
    partitions
        .add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&partitions).expect("assign");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while received.len() < want {
        let message = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {want} messages read back; last client error: {:?}",
                    received.len(),
                    context.last_error()
                )
            })
            .expect("a message");
        received.push(message.payload().unwrap_or_default().to_vec());
    }
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_clients_create_topics_produce_and_consume_through_the_iam_listener() {
    let emulator = MskEmulator::start(REGION, KEY_ID, SECRET).await;
    let settings = msk_settings(&emulator, emulator.ca_file().to_path_buf());

    // What the API Lambda does at start (rdkafka's admin client never asks for a
    // token itself: the platform hands it one).
    create_topics(&settings, &context(&settings, SECRET), 1, 1)
        .await
        .expect("topics created through the IAM listener");

    let producer_context = context(&settings, SECRET);
    let producer: FutureProducer<KafkaContext> = settings
        .producer_config()
        .create_with_context(producer_context.clone())
        .expect("producer");
    let payloads: Vec<String> = (0..50).map(|i| format!("event {i}")).collect();
    for payload in &payloads {
        producer
            .send(
                FutureRecord::to(DEPLOYMENT_EVENTS)
                    .key("k")
                    .payload(payload),
                Duration::from_secs(0),
            )
            .await
            .unwrap_or_else(|(error, _)| {
                panic!(
                    "not delivered: {error}; last client error: {:?}; refused: {:?}",
                    producer_context.last_error(),
                    emulator.refused()
                )
            });
    }

    let received = read_all(&settings, context(&settings, SECRET), DEPLOYMENT_EVENTS, 50).await;
    let received: Vec<String> = received
        .into_iter()
        .map(|bytes| String::from_utf8(bytes).unwrap())
        .collect();
    assert_eq!(received, payloads);
    assert!(
        !emulator.accepted().is_empty(),
        "no connection authenticated"
    );
    assert!(
        emulator.refused().is_empty(),
        "refused: {:?}",
        emulator.refused()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_builds_log_reaches_msk_signed_with_the_builds_own_credentials() {
    let emulator = MskEmulator::start(REGION, KEY_ID, SECRET).await;
    let settings = msk_settings(&emulator, emulator.ca_file().to_path_buf());
    create_topics(&settings, &context(&settings, SECRET), 1, 1)
        .await
        .expect("topics");

    let work = tempfile::tempdir().unwrap();
    let deployment_id = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let key = deploysphere_adapters::signing::PlatformKey::new(&[7u8; 32])
        .unwrap()
        .build_key(deployment_id);
    let mut reporter = Reporter::new(
        &settings,
        context(&settings, SECRET),
        key,
        deployment_id,
        "project-1",
        vec!["hunter2".to_string()],
        work.path(),
    )
    .expect("reporter");
    for i in 1..=200 {
        reporter
            .line(LogStream::Stdout, &format!("line {i} with hunter2"))
            .await;
    }
    assert_eq!(reporter.finish().await, 0, "every line delivered");
    reporter
        .event(BuildEventKind::Started)
        .await
        .expect("state report delivered");

    let lines: Vec<LogLine> = read_all(&settings, context(&settings, SECRET), BUILD_LOGS, 200)
        .await
        .iter()
        .map(|bytes| serde_json::from_slice(bytes).expect("a log line"))
        .collect();
    let seqs: Vec<u64> = lines.iter().map(|line| line.seq).collect();
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>(), "gapless, in order");
    assert_eq!(lines[41].message, "line 42 with ***");
    assert!(lines.iter().all(|line| line.deployment_id == deployment_id));
    assert!(
        emulator.refused().is_empty(),
        "refused: {:?}",
        emulator.refused()
    );
}

/// Sends one message; waits at most 10 s for the broker to take it.
async fn send_one(settings: &KafkaSettings, context: &KafkaContext) -> Result<(), String> {
    let producer: FutureProducer<KafkaContext> = settings
        .producer_config()
        .set("message.timeout.ms", "10000")
        .create_with_context(context.clone())
        .expect("producer");
    producer
        .send(
            FutureRecord::to(DEPLOYMENT_EVENTS)
                .key("k")
                .payload("hello"),
            Duration::from_secs(0),
        )
        .await
        .map(|_| ())
        .map_err(|(error, _)| error.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_signed_with_the_wrong_secret_delivers_nothing() {
    let emulator = MskEmulator::start(REGION, KEY_ID, SECRET).await;
    emulator.create_topic(DEPLOYMENT_EVENTS, 1);
    let settings = msk_settings(&emulator, emulator.ca_file().to_path_buf());

    let wrong = context(&settings, "not-the-secret-of-this-access-key");
    let delivered = send_one(&settings, &wrong).await;
    assert!(
        delivered.is_err(),
        "a badly signed client delivered a message"
    );
    let refused = emulator.refused();
    assert!(
        refused
            .iter()
            .any(|reason| reason.contains("signature does not match")),
        "refused: {refused:?}"
    );
    assert!(emulator.accepted().is_empty());
    let error = wrong.last_error().unwrap_or_default();
    assert!(
        error.contains("signature does not match"),
        "the client's log should show MSK's reason: {error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_fails_the_tls_handshake() {
    let emulator = MskEmulator::start(REGION, KEY_ID, SECRET).await;
    emulator.create_topic(DEPLOYMENT_EVENTS, 1);
    let other = MskEmulator::start(REGION, KEY_ID, SECRET).await;
    let settings = msk_settings(&emulator, other.ca_file().to_path_buf());

    let context = context(&settings, SECRET);
    let delivered = send_one(&settings, &context).await;
    assert!(
        delivered.is_err(),
        "a client that does not trust the listener's CA delivered a message"
    );
    // Refused at TLS: no SASL exchange ever happened.
    assert!(emulator.accepted().is_empty());
    assert!(emulator.refused().is_empty(), "{:?}", emulator.refused());
    let error = context.last_error().unwrap_or_default();
    assert!(
        error.contains("certificate verify failed"),
        "the client's log should show the failed certificate check: {error:?}"
    );
}

#[test]
fn kafka_settings_name_the_field_and_what_is_allowed() {
    let vars = |auth: &'static str, region: &'static str| {
        move |name: &str| match name {
            "DEPLOYSPHERE_KAFKA_BROKERS" => Some("b-1.example:9098".to_string()),
            "DEPLOYSPHERE_KAFKA_AUTH" => Some(auth.to_string()),
            "AWS_REGION" => Some(region.to_string()),
            _ => None,
        }
    };
    let error = KafkaSettings::from_vars(vars("iam", "eu-west-1")).unwrap_err();
    assert!(
        error.contains("DEPLOYSPHERE_KAFKA_AUTH") && error.contains("none, tls or msk-iam"),
        "{error}"
    );
    let error = KafkaSettings::from_vars(vars("msk-iam", "")).unwrap_err();
    assert!(error.contains("AWS_REGION"), "{error}");
    let error = KafkaSettings::from_vars(|_| None).unwrap_err();
    assert!(error.contains("DEPLOYSPHERE_KAFKA_BROKERS"), "{error}");
    let plain = KafkaSettings::from_vars(vars("none", "")).unwrap();
    assert_eq!(plain.auth, KafkaAuth::Plaintext);
    // A signing context needs credentials to sign with.
    let msk = KafkaSettings::from_vars(vars("msk-iam", "eu-west-1")).unwrap();
    assert!(msk.context(None).is_err());
}
