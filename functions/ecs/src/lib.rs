//! The AWS shape's build launcher: one ECS Fargate task per build.
//!
//! `launch` runs the build task definition in the platform's private subnets with the
//! deployment in the `builder` container's overrides, tagged (`startedBy`) with the
//! deployment id so that `cancel` finds it again with `ListTasks` and the EventBridge
//! handler can name the deployment of a stopped task. The task definition has no task
//! role: user build code runs in the task and could read a task role's credentials.
//! Instead the builder gets short-lived credentials of the build upload role, narrowed
//! by a session policy to this deployment's own objects (`staging/<id>/*` and
//! `manifests/<id>.json`), read access to the shared blobs (to skip uploads that are
//! there already) and writing to the log topics. Those credentials are not in the
//! overrides (which `DescribeTasks` and CloudTrail show): the overrides carry a
//! one-time grant, which the build exchanges at the API for `credentials`, and again
//! for fresh ones before they expire. The build spec, which holds the
//! project's env values (secrets too), is left in S3 for the build
//! (`staging/<id>/build-spec.json`), not in the overrides: those are capped at 8 KiB
//! and shown by `DescribeTasks`.

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_ecr::operation::describe_images::DescribeImagesError;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, ContainerOverride, KeyValuePair, LaunchType,
    NetworkConfiguration, TaskOverride,
};
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_types::SdkConfig;
use aws_types::region::Region;
use deploysphere_adapters::s3::ObjectStore;
use deploysphere_core::events::build_cache_prefix;
use deploysphere_core::manifest::build_spec_key;
use deploysphere_core::{BuildCredentials, BuildSpec, LaunchError, Launcher};
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{info, warn};

/// The build task definition's container that runs the builder.
pub const BUILD_CONTAINER: &str = "builder";

/// Where and how build tasks run.
#[derive(Debug, Clone)]
pub struct EcsSettings {
    pub cluster: String,
    /// Family, `family:revision` or ARN of the build task definition.
    pub task_definition: String,
    pub subnets: Vec<String>,
    pub security_group: String,
    /// The role whose narrowed credentials the builder gets.
    pub upload_role_arn: String,
    pub bucket: String,
    /// `aws`, `aws-cn` or `aws-us-gov`.
    pub partition: String,
    /// The build task definition's image (`DEPLOYSPHERE_BUILD_IMAGE`); an ECR image is
    /// looked up before the first launch.
    pub build_image: Option<String>,
}

/// An image in an ECR registry: `<account>.dkr.ecr.<region>.amazonaws.com/<repository>`
/// with `:<tag>` or `@<digest>`.
#[derive(Debug, PartialEq, Eq)]
pub struct EcrImage {
    pub registry: String,
    pub region: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl EcrImage {
    /// `None` for an image that is not in ECR (a public registry, say).
    pub fn parse(image: &str) -> Option<EcrImage> {
        let (host, path) = image.split_once('/')?;
        let mut labels = host.split('.');
        let (registry, dkr, ecr, region) = (
            labels.next()?,
            labels.next()?,
            labels.next()?,
            labels.next()?,
        );
        if dkr != "dkr" || ecr != "ecr" || !registry.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let (repository, tag, digest) = match path.split_once('@') {
            Some((repository, digest)) => (repository, None, Some(digest.to_string())),
            None => match path.rsplit_once(':') {
                Some((repository, tag)) => (repository, Some(tag.to_string()), None),
                None => (path, Some("latest".to_string()), None),
            },
        };
        Some(EcrImage {
            registry: registry.to_string(),
            region: region.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }
}

/// How to reach AWS: the region, and for tests an endpoint (an emulator) and keys.
#[derive(Debug, Clone, Default)]
pub struct AwsAccess {
    pub region: String,
    pub endpoint: Option<String>,
    /// Key, secret and session token to sign with; `None` takes this process's own
    /// ([`process_credentials`]).
    pub credentials: Option<(String, String, Option<String>)>,
}

impl AwsAccess {
    /// The SDK configuration for these settings.
    pub fn sdk_config(&self) -> Result<SdkConfig, LaunchError> {
        let credentials = match &self.credentials {
            Some((key, secret, token)) => SharedCredentialsProvider::new(Credentials::new(
                key,
                secret,
                token.clone(),
                None,
                "deploysphere",
            )),
            None => process_credentials()?,
        };
        let mut builder = SdkConfig::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(credentials)
            .http_client(deploysphere_adapters::aws_http_client());
        if let Some(endpoint) = &self.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(builder.build())
    }
}

/// This process's own credentials: see [`deploysphere_adapters::aws::process_credentials`].
pub fn process_credentials() -> Result<SharedCredentialsProvider, LaunchError> {
    deploysphere_adapters::aws::process_credentials().map_err(LaunchError)
}

pub struct EcsLauncher {
    ecs: aws_sdk_ecs::Client,
    ecr: aws_sdk_ecr::Client,
    region: String,
    /// The build image was found in ECR once: it is not looked up again.
    image_found: AtomicBool,
    sts: aws_sdk_sts::Client,
    settings: EcsSettings,
    /// The sites bucket, where each build's spec is left for it.
    store: ObjectStore,
}

impl EcsLauncher {
    pub fn new(
        access: &AwsAccess,
        settings: EcsSettings,
        store: ObjectStore,
    ) -> Result<Self, LaunchError> {
        let config = access.sdk_config()?;
        Ok(EcsLauncher {
            ecs: aws_sdk_ecs::Client::new(&config),
            ecr: aws_sdk_ecr::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            region: access.region.clone(),
            image_found: AtomicBool::new(false),
            settings,
            store,
        })
    }

    /// The session policy that narrows the upload role to one deployment, and to its
    /// project's build cache.
    pub fn session_policy(&self, deployment_id: &str, project_id: &str) -> String {
        let cache = build_cache_prefix(project_id);
        let bucket = format!(
            "arn:{}:s3:::{}",
            self.settings.partition, self.settings.bucket
        );
        serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "OwnObjects",
                    "Effect": "Allow",
                    "Action": ["s3:PutObject"],
                    "Resource": [
                        format!("{bucket}/staging/{deployment_id}/*"),
                        format!("{bucket}/manifests/{deployment_id}.json"),
                    ],
                },
                {
                    "Sid": "OwnBuildSpec",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [format!("{bucket}/{}", build_spec_key(deployment_id))],
                },
                {
                    "Sid": "SharedBlobsReadOnly",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject"],
                    "Resource": [format!("{bucket}/blobs/*")],
                },
                {
                    // Without it S3 answers a missing blob with 403, not 404.
                    "Sid": "SharedBlobsList",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [bucket.clone()],
                    "Condition": {"StringLike": {"s3:prefix": ["blobs/*"]}},
                },
                {
                    // The project's build cache: read, replace, and evict the oldest.
                    "Sid": "OwnProjectBuildCache",
                    "Effect": "Allow",
                    "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
                    "Resource": [format!("{bucket}/{cache}*")],
                },
                {
                    "Sid": "OwnProjectBuildCacheList",
                    "Effect": "Allow",
                    "Action": ["s3:ListBucket"],
                    "Resource": [bucket.clone()],
                    "Condition": {"StringLike": {"s3:prefix": [format!("{cache}*")]}},
                },
                {
                    "Sid": "LogTopics",
                    "Effect": "Allow",
                    "Action": [
                        "kafka-cluster:Connect",
                        "kafka-cluster:DescribeTopic",
                        "kafka-cluster:WriteData",
                    ],
                    "Resource": "*",
                },
            ],
        })
        .to_string()
    }

    /// Short-lived credentials for one build (an hour, the role's maximum session).
    async fn assume_upload_role(
        &self,
        deployment_id: &str,
        project_id: &str,
    ) -> Result<BuildCredentials, LaunchError> {
        let assumed = self
            .sts
            .assume_role()
            .role_arn(&self.settings.upload_role_arn)
            .role_session_name(format!(
                "build-{}",
                &deployment_id[..deployment_id.len().min(36)]
            ))
            .policy(self.session_policy(deployment_id, project_id))
            .duration_seconds(3600)
            .send()
            .await
            .map_err(|e| {
                LaunchError(format!(
                    "assuming the build upload role {}: {}",
                    self.settings.upload_role_arn,
                    DisplayErrorContext(&e)
                ))
            })?;
        let credentials = assumed
            .credentials()
            .ok_or_else(|| LaunchError("STS returned no credentials".into()))?;
        Ok(BuildCredentials {
            access_key_id: credentials.access_key_id().to_string(),
            secret_access_key: credentials.secret_access_key().to_string(),
            session_token: Some(credentials.session_token().to_string()),
            expires_at_ms: credentials.expiration().to_millis().ok(),
            next_grant: String::new(),
            build_key: String::new(),
        })
    }

    /// Fails a launch early, with a clear reason, when the build image is not in ECR
    /// (not pushed yet, or deleted): a RunTask of it would fail only after Fargate
    /// tried to pull it. Looked up until found once; a lookup that fails for another
    /// reason lets the launch go on.
    pub async fn ensure_build_image(&self) -> Result<(), LaunchError> {
        if self.image_found.load(Ordering::Relaxed) {
            return Ok(());
        }
        let Some(image) = &self.settings.build_image else {
            return Ok(());
        };
        let Some(ecr) = EcrImage::parse(image).filter(|ecr| ecr.region == self.region) else {
            return Ok(());
        };
        let id = aws_sdk_ecr::types::ImageIdentifier::builder()
            .set_image_tag(ecr.tag.clone())
            .set_image_digest(ecr.digest.clone())
            .build();
        let missing = || {
            LaunchError(format!(
                "the build image {image} is not in ECR: push it (`make deploy` builds and pushes it)"
            ))
        };
        match self
            .ecr
            .describe_images()
            .registry_id(&ecr.registry)
            .repository_name(&ecr.repository)
            .image_ids(id)
            .send()
            .await
        {
            Ok(found) if !found.image_details().is_empty() => {
                self.image_found.store(true, Ordering::Relaxed);
                Ok(())
            }
            Ok(_) => Err(missing()),
            Err(e) => match e.as_service_error() {
                Some(
                    DescribeImagesError::ImageNotFoundException(_)
                    | DescribeImagesError::RepositoryNotFoundException(_),
                ) => Err(missing()),
                _ => {
                    warn!(image, error = %DisplayErrorContext(&e), "could not look up the build image in ECR; launching anyway");
                    Ok(())
                }
            },
        }
    }

    /// The ARNs of the running (or starting) tasks of a deployment.
    pub async fn tasks_of(&self, deployment_id: &str) -> Result<Vec<String>, LaunchError> {
        let listed = self
            .ecs
            .list_tasks()
            .cluster(&self.settings.cluster)
            .started_by(deployment_id)
            .send()
            .await
            .map_err(|e| {
                LaunchError(format!("listing build tasks: {}", DisplayErrorContext(&e)))
            })?;
        Ok(listed.task_arns().to_vec())
    }
}

fn env(name: &str, value: &str) -> KeyValuePair {
    KeyValuePair::builder().name(name).value(value).build()
}

#[async_trait::async_trait]
impl Launcher for EcsLauncher {
    async fn launch(&self, spec: BuildSpec, grant: &str) -> Result<(), LaunchError> {
        self.ensure_build_image().await?;
        let id = spec.deployment_id.clone();
        let spec_key = self
            .store
            .put_build_spec(&spec)
            .await
            .map_err(|e| LaunchError(format!("leaving the build spec in S3: {e}")))?;
        let environment = vec![
            env("DEPLOYSPHERE_DEPLOYMENT_ID", &id),
            env("DEPLOYSPHERE_BUILD_SPEC_KEY", &spec_key),
            env("DEPLOYSPHERE_S3_BUCKET", &self.settings.bucket),
            env("DEPLOYSPHERE_BUILD_GRANT", grant),
        ];
        let overrides = TaskOverride::builder()
            .container_overrides(
                ContainerOverride::builder()
                    .name(BUILD_CONTAINER)
                    .set_environment(Some(environment))
                    .build(),
            )
            .build();
        let network = NetworkConfiguration::builder()
            .awsvpc_configuration(
                AwsVpcConfiguration::builder()
                    .set_subnets(Some(self.settings.subnets.clone()))
                    .security_groups(&self.settings.security_group)
                    .assign_public_ip(AssignPublicIp::Disabled)
                    .build()
                    .map_err(|e| LaunchError(e.to_string()))?,
            )
            .build();
        let ran = self
            .ecs
            .run_task()
            .cluster(&self.settings.cluster)
            .task_definition(&self.settings.task_definition)
            .launch_type(LaunchType::Fargate)
            .count(1)
            .started_by(&id)
            .network_configuration(network)
            .overrides(overrides)
            .send()
            .await
            .map_err(|e| {
                LaunchError(format!(
                    "RunTask of {} on cluster {}: {}",
                    self.settings.task_definition,
                    self.settings.cluster,
                    DisplayErrorContext(&e)
                ))
            })?;
        if let Some(failure) = ran.failures().first() {
            return Err(LaunchError(format!(
                "RunTask failed: {} {}",
                failure.reason().unwrap_or("unknown reason"),
                failure.detail().unwrap_or("")
            )));
        }
        let arn = ran
            .tasks()
            .first()
            .and_then(|t| t.task_arn())
            .ok_or_else(|| LaunchError("RunTask started no task".into()))?;
        info!(deployment_id = %id, task = arn, "build task started");
        Ok(())
    }

    async fn credentials(
        &self,
        deployment_id: &str,
        project_id: &str,
    ) -> Result<BuildCredentials, LaunchError> {
        self.assume_upload_role(deployment_id, project_id).await
    }

    async fn cancel(&self, deployment_id: &str) -> Result<(), LaunchError> {
        for arn in self.tasks_of(deployment_id).await? {
            self.ecs
                .stop_task()
                .cluster(&self.settings.cluster)
                .task(&arn)
                .reason("Deployment canceled")
                .send()
                .await
                .map_err(|e| LaunchError(format!("StopTask {arn}: {}", DisplayErrorContext(&e))))?;
        }
        Ok(())
    }
}
