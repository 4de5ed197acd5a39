//! This process's AWS identity, for clients that sign requests themselves.

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

/// This process's own credentials: the keys in the environment (what Lambda sets),
/// else the ECS container credentials endpoint (a task role; the SDK caches what it
/// returns until shortly before it expires).
pub fn process_credentials() -> Result<SharedCredentialsProvider, String> {
    if let (Ok(key), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) {
        return Ok(SharedCredentialsProvider::new(Credentials::new(
            key,
            secret,
            std::env::var("AWS_SESSION_TOKEN").ok(),
            None,
            "environment",
        )));
    }
    if let Ok(path) = std::env::var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        return Ok(SharedCredentialsProvider::new(ContainerCredentials {
            url: format!("http://169.254.170.2{path}"),
        }));
    }
    Err(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run in a task with a role".into(),
    )
}

/// The ECS task role's credentials, from the container credentials endpoint.
#[derive(Debug)]
struct ContainerCredentials {
    url: String,
}

impl ContainerCredentials {
    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let answer: serde_json::Value = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(CredentialsError::provider_error)?
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(CredentialsError::provider_error)?
            .json()
            .await
            .map_err(CredentialsError::provider_error)?;
        let field = |name: &str| {
            answer[name].as_str().map(str::to_string).ok_or_else(|| {
                CredentialsError::unhandled(format!("the container credentials have no {name}"))
            })
        };
        let expiry = field("Expiration")
            .ok()
            .and_then(|at| {
                aws_smithy_types::DateTime::from_str(
                    &at,
                    aws_smithy_types::date_time::Format::DateTime,
                )
                .ok()
            })
            .and_then(|at| std::time::SystemTime::try_from(at).ok());
        Ok(Credentials::new(
            field("AccessKeyId")?,
            field("SecretAccessKey")?,
            field("Token").ok(),
            expiry,
            "ecs-container",
        ))
    }
}

impl ProvideCredentials for ContainerCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.fetch())
    }
}
