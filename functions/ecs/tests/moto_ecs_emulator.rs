//! The ECS launcher against moto_server (an AWS API emulator on loopback: ECS and STS
//! cannot run here). Checks what RunTask was asked for (cluster, task definition,
//! Fargate, private networking, the builder's overrides), that the builder gets
//! narrowed credentials, and that cancel stops the task.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, NetworkMode};
use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_core::{BuildSpec, Launcher};
use deploysphere_ecs::{AwsAccess, BUILD_CONTAINER, EcrImage, EcsLauncher, EcsSettings};

struct Moto {
    child: Child,
    endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install moto[server])");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "moto_server did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto {
        child,
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

/// One EC2 Query API call to the emulator (no EC2 SDK here: it is a large crate for
/// three calls); returns the text of the first `<tag>` of the answer.
async fn ec2(moto: &Moto, params: &str, tag: &str) -> String {
    let body = reqwest::Client::new()
        .post(&moto.endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=testing/20261127/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0",
        )
        .body(format!("{params}&Version=2016-11-15"))
        .send()
        .await
        .expect("EC2 call")
        .text()
        .await
        .expect("EC2 answer");
    let open = format!("<{tag}>");
    let start = body
        .find(&open)
        .unwrap_or_else(|| panic!("no {tag} in {body}"))
        + open.len();
    let end = start + body[start..].find('<').expect("closing tag");
    body[start..end].to_string()
}

/// A VPC with two private subnets and a security group; returns their ids.
async fn network(moto: &Moto) -> (Vec<String>, String) {
    let vpc = ec2(moto, "Action=CreateVpc&CidrBlock=10.0.0.0%2F16", "vpcId").await;
    // Task network interfaces get DNS names, as in a VPC with DNS hostnames on (moto
    // fails RunTask without it).
    let params = format!("Action=ModifyVpcAttribute&VpcId={vpc}&EnableDnsHostnames.Value=true");
    ec2(moto, &params, "requestId").await;
    let mut subnets = Vec::new();
    for cidr in ["10.0.1.0%2F24", "10.0.2.0%2F24"] {
        let params = format!("Action=CreateSubnet&VpcId={vpc}&CidrBlock={cidr}");
        subnets.push(ec2(moto, &params, "subnetId").await);
    }
    let params = format!(
        "Action=CreateSecurityGroup&GroupName=builds&GroupDescription=build%20tasks&VpcId={vpc}"
    );
    (subnets, ec2(moto, &params, "groupId").await)
}

/// moto 5.2 answers a task's containers with `cpu` and `memory` as JSON numbers where
/// the ECS API (and so the SDK) has strings. This proxy in front of it turns them into
/// strings and changes nothing else; returns the proxy's endpoint.
async fn string_fixing_proxy(moto: &Moto) -> String {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    let upstream = moto.endpoint.clone();
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let upstream = upstream.clone();
        async move {
            let mut request = reqwest::Client::new().request(
                reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                format!("{upstream}{uri}"),
            );
            for (name, value) in &headers {
                if name != "host" {
                    request = request.header(name.as_str(), value.as_bytes());
                }
            }
            let response = request.body(body.to_vec()).send().await.expect("moto");
            let status = response.status().as_u16();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let mut body = response.bytes().await.expect("moto body").to_vec();
            if let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(&body) {
                stringify_container_numbers(&mut json);
                body = serde_json::to_vec(&json).unwrap();
            }
            (
                axum::http::StatusCode::from_u16(status).unwrap(),
                [("content-type", content_type)],
                body,
            )
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(handler))
            .await
            .unwrap()
    });
    format!("http://{address}")
}

fn stringify_container_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(containers)) = map.get_mut("containers") {
                for container in containers.iter_mut() {
                    for field in ["cpu", "memory"] {
                        if let Some(number) = container.get(field).filter(|v| v.is_number()) {
                            container[field] = serde_json::Value::String(number.to_string());
                        }
                    }
                }
            }
            map.values_mut().for_each(stringify_container_numbers);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(stringify_container_numbers),
        _ => {}
    }
}

/// [`access`] through [`string_fixing_proxy`].
async fn proxied_access(moto: &Moto) -> AwsAccess {
    AwsAccess {
        endpoint: Some(string_fixing_proxy(moto).await),
        ..access(moto)
    }
}

fn access(moto: &Moto) -> AwsAccess {
    AwsAccess {
        region: "us-east-1".into(),
        endpoint: Some(moto.endpoint.clone()),
        credentials: Some(("testing".into(), "testing".into(), None)),
    }
}

/// The sites bucket, on the emulator's S3.
async fn sites(moto: &Moto) -> ObjectStore {
    let store = ObjectStore::new(&S3Config {
        endpoint: Some(moto.endpoint.clone()),
        region: "us-east-1".into(),
        bucket: "deploysphere-sites".into(),
        access_key: "testing".into(),
        secret_key: "testing".into(),
        session_token: None,
    });
    store.ensure_bucket().await.expect("bucket");
    store
}

fn settings(task_definition: &str, subnets: Vec<String>, security_group: String) -> EcsSettings {
    EcsSettings {
        cluster: "deploysphere".into(),
        task_definition: task_definition.into(),
        subnets,
        security_group,
        upload_role_arn: "arn:aws:iam::123456789012:role/deploysphere-build-upload".into(),
        bucket: "deploysphere-sites".into(),
        partition: "aws".into(),
        build_image: Some(BUILD_IMAGE.into()),
    }
}

/// The build image the task definition names, pushed to the emulator's ECR.
const BUILD_IMAGE: &str = "123456789012.dkr.ecr.us-east-1.amazonaws.com/deploysphere-build:1";

/// The build repository in the emulator's ECR, with tag `1` pushed.
async fn ecr_with_build_image(moto: &Moto) {
    let ecr = aws_sdk_ecr::Client::new(&access(moto).sdk_config().unwrap());
    ecr.create_repository()
        .repository_name("deploysphere-build")
        .send()
        .await
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:b5b2b2c507a0944348e0303114d8d93aaaa081732b86451d9bce1f432a537bc7"
        },
        "layers": []
    });
    ecr.put_image()
        .repository_name("deploysphere-build")
        .image_tag("1")
        .image_manifest(manifest.to_string())
        .send()
        .await
        .unwrap();
}

async fn ecs_with_build_task(moto: &Moto) -> aws_sdk_ecs::Client {
    ecr_with_build_image(moto).await;
    let ecs = aws_sdk_ecs::Client::new(&access(moto).sdk_config().unwrap());
    ecs.create_cluster()
        .cluster_name("deploysphere")
        .send()
        .await
        .unwrap();
    ecs.register_task_definition()
        .family("deploysphere-build")
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("2048")
        .memory("4096")
        .container_definitions(
            ContainerDefinition::builder()
                .name(BUILD_CONTAINER)
                .image(BUILD_IMAGE)
                .memory(4096)
                .essential(true)
                .build(),
        )
        .send()
        .await
        .unwrap();
    ecs
}

fn spec(id: &str) -> BuildSpec {
    serde_json::from_value(serde_json::json!({
        "limits": {"timeout_seconds": 21600, "memory_mb": 2048, "cpu_millis": 2000, "max_processes": 512},
        "deployment_id": id,
        "project_id": "0f0e0d0c-0b0a-4909-8807-060504030201",
        "git_url": "https://github.com/acme/site.git",
        "git_ref": "main",
        "env": {"API_KEY": {"value": "s3cr3t", "secret": true}}
    }))
    .unwrap()
}

#[tokio::test]
async fn run_task_carries_the_deployment_and_cancel_stops_it_on_the_moto_emulator() {
    let moto = moto();
    ecs_with_build_task(&moto).await;
    let (subnets, group) = network(&moto).await;
    let proxied = proxied_access(&moto).await;
    let store = sites(&moto).await;
    let launcher = EcsLauncher::new(
        &proxied,
        settings("deploysphere-build", subnets.clone(), group),
        store.clone(),
    )
    .unwrap();
    let ecs = aws_sdk_ecs::Client::new(&proxied.sdk_config().unwrap());
    let id = "5f0c6b7e-2a4d-4c1b-9a8e-3d2f1e0c9b8a";
    launcher
        .launch(spec(id), "dsb_one-time-grant")
        .await
        .expect("launched");

    let arns = launcher.tasks_of(id).await.unwrap();
    assert_eq!(arns.len(), 1, "one task per build");
    let described = ecs
        .describe_tasks()
        .cluster("deploysphere")
        .tasks(&arns[0])
        .send()
        .await
        .unwrap();
    let task = &described.tasks()[0];
    assert!(
        task.cluster_arn()
            .unwrap()
            .ends_with(":cluster/deploysphere")
    );
    assert!(
        task.task_definition_arn()
            .unwrap()
            .contains(":task-definition/deploysphere-build:")
    );
    assert_eq!(task.started_by(), Some(id));
    assert_eq!(task.launch_type().map(|t| t.as_str()), Some("FARGATE"));
    let overrides = &task.overrides().unwrap().container_overrides()[0];
    assert_eq!(overrides.name(), Some(BUILD_CONTAINER));
    let env: std::collections::HashMap<&str, &str> = overrides
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    assert_eq!(env["DEPLOYSPHERE_DEPLOYMENT_ID"], id);
    // The spec, with the project's secret, is an object for the build, not an override.
    assert!(!env.contains_key("DEPLOYSPHERE_BUILD_SPEC"));
    assert!(
        !env.values().any(|v| v.contains("s3cr3t")),
        "no secret value in the task's overrides"
    );
    let key = env["DEPLOYSPHERE_BUILD_SPEC_KEY"];
    assert_eq!(key, format!("staging/{id}/build-spec.json"));
    let sent: BuildSpec =
        serde_json::from_slice(&store.get(key).await.unwrap().expect("the spec object")).unwrap();
    assert_eq!(sent.git_url, spec(id).git_url);
    assert_eq!(sent.env, spec(id).env);
    assert_eq!(
        sent.limits.timeout_seconds,
        spec(id).limits.timeout_seconds,
        "the project's whole timeout: the build refreshes its credentials"
    );
    // No credentials in the overrides (DescribeTasks and CloudTrail show them): only
    // the one-time grant the build exchanges at the API.
    assert_eq!(env["DEPLOYSPHERE_BUILD_GRANT"], "dsb_one-time-grant");
    for (key, value) in &env {
        assert!(
            !key.contains("ACCESS_KEY") && !key.contains("SECRET") && !key.contains("SESSION"),
            "{key}={value} in the overrides"
        );
    }
    // What the grant is exchanged for: STS credentials of the upload role.
    let issued = launcher
        .credentials(id, "p-1")
        .await
        .expect("assumed the upload role");
    assert!(issued.access_key_id.starts_with("ASIA"), "{issued:?}");
    assert_ne!(
        issued.access_key_id, "testing",
        "not the launcher's own keys"
    );
    assert!(!issued.secret_access_key.is_empty());
    assert!(issued.session_token.is_some_and(|t| !t.is_empty()));
    let left_ms =
        issued.expires_at_ms.expect("STS credentials expire") - deploysphere_adapters::now_ms();
    assert!(
        (3_000_000..=3_600_000).contains(&left_ms),
        "an hour's session, {left_ms} ms left"
    );
    // Private networking, as asked.
    let attachment_subnet = task
        .attachments()
        .iter()
        .flat_map(|a| a.details())
        .find(|d| d.name() == Some("subnetId"))
        .and_then(|d| d.value());
    assert_eq!(attachment_subnet, Some(subnets[0].as_str()));

    launcher.cancel(id).await.expect("canceled");
    let stopped = ecs
        .describe_tasks()
        .cluster("deploysphere")
        .tasks(&arns[0])
        .send()
        .await
        .unwrap();
    let task = &stopped.tasks()[0];
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert_eq!(task.stopped_reason(), Some("Deployment canceled"));
    // Canceling again (nothing left, or already stopped) is fine.
    launcher.cancel(id).await.expect("idempotent");
}

#[tokio::test]
async fn a_task_that_cannot_run_is_a_launch_error_on_the_moto_emulator() {
    let moto = moto();
    ecs_with_build_task(&moto).await;
    let (subnets, group) = network(&moto).await;
    let proxied = proxied_access(&moto).await;
    let launcher = EcsLauncher::new(
        &proxied,
        settings("no-such-family", subnets, group),
        sites(&moto).await,
    )
    .unwrap();
    let error = launcher
        .launch(spec("0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9"), "dsb_grant")
        .await
        .expect_err("no such task definition");
    assert!(
        error.0.contains("RunTask") && error.0.contains("no-such-family"),
        "the error names the task definition: {error}"
    );
}

#[test]
fn the_session_policy_lets_a_build_write_only_its_own_objects() {
    let launcher = EcsLauncher::new(
        &AwsAccess {
            region: "us-east-1".into(),
            endpoint: Some("http://127.0.0.1:1".into()),
            credentials: Some(("k".into(), "s".into(), None)),
        },
        settings("deploysphere-build", vec!["subnet-1".into()], "sg-1".into()),
        ObjectStore::new(&S3Config {
            endpoint: Some("http://127.0.0.1:1".into()),
            region: "us-east-1".into(),
            bucket: "deploysphere-sites".into(),
            access_key: "k".into(),
            secret_key: "s".into(),
            session_token: None,
        }),
    )
    .unwrap();
    let policy: serde_json::Value =
        serde_json::from_str(&launcher.session_policy("d-1", "p-1")).unwrap();
    let writes: Vec<&str> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| {
            s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "s3:PutObject")
        })
        .flat_map(|s| s["Resource"].as_array().unwrap())
        .map(|r| r.as_str().unwrap())
        .collect();
    assert_eq!(
        writes,
        [
            "arn:aws:s3:::deploysphere-sites/staging/d-1/*",
            "arn:aws:s3:::deploysphere-sites/manifests/d-1.json",
            "arn:aws:s3:::deploysphere-sites/build-cache/p-1/*"
        ]
    );
    let spec_reads: Vec<&serde_json::Value> = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["Sid"] == "OwnBuildSpec")
        .flat_map(|s| s["Resource"].as_array().unwrap())
        .collect();
    assert_eq!(
        spec_reads,
        ["arn:aws:s3:::deploysphere-sites/staging/d-1/build-spec.json"]
    );
}

#[tokio::test]
async fn a_build_image_missing_from_ecr_fails_the_launch_with_the_reason_on_the_moto_emulator() {
    let moto = moto();
    ecs_with_build_task(&moto).await;
    let (subnets, group) = network(&moto).await;
    let proxied = proxied_access(&moto).await;
    let missing = BUILD_IMAGE.replace(":1", ":not-pushed");
    let launcher = EcsLauncher::new(
        &proxied,
        EcsSettings {
            build_image: Some(missing.clone()),
            ..settings("deploysphere-build", subnets, group)
        },
        sites(&moto).await,
    )
    .unwrap();
    let id = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let error = launcher
        .launch(spec(id), "dsb_grant")
        .await
        .expect_err("the image is not in ECR");
    assert_eq!(
        error.0,
        format!(
            "the build image {missing} is not in ECR: push it (`make deploy` builds and pushes it)"
        )
    );
    assert!(
        launcher.tasks_of(id).await.unwrap().is_empty(),
        "no task was started"
    );
}

#[test]
fn ecr_image_references_are_parsed_and_others_are_left_alone() {
    let tagged = EcrImage::parse(BUILD_IMAGE).expect("an ECR image");
    assert_eq!(
        tagged,
        EcrImage {
            registry: "123456789012".into(),
            region: "us-east-1".into(),
            repository: "deploysphere-build".into(),
            tag: Some("1".into()),
            digest: None,
        }
    );
    let pinned =
        EcrImage::parse("123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/build@sha256:abc")
            .expect("an ECR image");
    assert_eq!(pinned.repository, "team/build");
    assert_eq!(pinned.digest.as_deref(), Some("sha256:abc"));
    assert_eq!(pinned.tag, None);
    let untagged = EcrImage::parse("123456789012.dkr.ecr.us-east-1.amazonaws.com/build").unwrap();
    assert_eq!(untagged.tag.as_deref(), Some("latest"));
    for other in [
        "node:22-bookworm-slim",
        "docker.io/library/node:22",
        "ghcr.io/acme/build:1",
    ] {
        assert_eq!(EcrImage::parse(other), None, "{other}");
    }
}
