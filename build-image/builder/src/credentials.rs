//! The build's credentials: it starts with none, only a one-time grant
//! (`DEPLOYSPHERE_BUILD_GRANT`), which it exchanges at the API for credentials that
//! reach its own deployment's objects (and, on AWS, the log topics), plus the next
//! grant. Before those credentials expire the next grant fetches fresh ones, so a
//! build may run longer than one credential lifetime. Nothing secret travels in the
//! task's launch parameters: a grant is worth nothing once used.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use deploysphere_core::BuildCredentials;

/// Credentials with less than this left are replaced before use.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

#[derive(Debug)]
pub struct GrantCredentials {
    /// `http(s)://host[:port]` of the platform's API.
    api_url: String,
    client: reqwest::Client,
    refresh_before: Duration,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The grant for the next exchange.
    grant: String,
    current: Option<Credentials>,
}

impl GrantCredentials {
    pub fn new(api_url: &str, grant: &str) -> GrantCredentials {
        GrantCredentials::with_refresh_before(api_url, grant, REFRESH_BEFORE)
    }

    /// As [`GrantCredentials::new`], replacing credentials that have less than
    /// `refresh_before` left.
    pub fn with_refresh_before(
        api_url: &str,
        grant: &str,
        refresh_before: Duration,
    ) -> GrantCredentials {
        GrantCredentials {
            api_url: api_url.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            refresh_before,
            state: tokio::sync::Mutex::new(State {
                grant: grant.to_string(),
                current: None,
            }),
        }
    }

    pub fn into_provider(self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(self)
    }

    /// The current credentials, exchanging the grant when there are none or they are
    /// about to expire. Callers share one exchange at a time.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut state = self.state.lock().await;
        if let Some(current) = &state.current {
            let fresh = current
                .expiry()
                .is_none_or(|at| at > SystemTime::now() + self.refresh_before);
            if fresh {
                return Ok(current.clone());
            }
        }
        let issued = self
            .exchange(&state.grant)
            .await
            .map_err(CredentialsError::provider_error)?;
        let expiry = issued
            .expires_at_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let credentials = Credentials::new(
            issued.access_key_id,
            issued.secret_access_key,
            issued.session_token,
            expiry,
            "deploysphere-build-grant",
        );
        state.grant = issued.next_grant;
        state.current = Some(credentials.clone());
        Ok(credentials)
    }

    async fn exchange(&self, grant: &str) -> Result<BuildCredentials, String> {
        let url = format!("{}/v1/build-credentials", self.api_url);
        let response = self
            .client
            .post(&url)
            .bearer_auth(grant)
            .send()
            .await
            .map_err(|e| format!("exchanging the build grant at {url}: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
                .unwrap_or(body);
            return Err(format!(
                "the API refused the build grant ({status}): {message}"
            ));
        }
        response
            .json()
            .await
            .map_err(|e| format!("the API's build credentials are not valid: {e}"))
    }
}

impl ProvideCredentials for GrantCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.get())
    }
}
