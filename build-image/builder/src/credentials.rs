//! The build's credentials: it starts with none, only a one-time grant
//! (`DEPLOYSPHERE_BUILD_GRANT`), which it exchanges at the API for credentials that
//! reach its own deployment's objects (and, on AWS, the log topics), the key it signs
//! its events and log lines with, and the next grant. Before those credentials expire
//! the next grant fetches fresh ones (in the background, whether or not anything
//! asks), so a build may run longer than one credential lifetime. The launch
//! parameters carry only the first grant, which is exchanged before any user command
//! runs; after that it is worth nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use deploysphere_adapters::signing::BuildKey;
use deploysphere_core::BuildCredentials;

/// Credentials with less than this left are renewed.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(10 * 60);
/// Attempts of one exchange (the API accepts a used grant again for a minute).
const ATTEMPTS: u32 = 4;
/// One exchange request; the SDK's credentials cache waits about 20 s in all.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The API was unreachable or failed: trying again may work.
    #[error("exchanging the build grant at {url}: {message}")]
    Unavailable { url: String, message: String },
    /// The API refused the grant (used, expired, or the build has ended): final.
    #[error("the API refused the build grant ({status}): {message}")]
    Refused { status: u16, message: String },
}

/// The build's credentials provider; clones share one grant chain.
#[derive(Clone)]
pub struct GrantCredentials {
    inner: Arc<Inner>,
}

struct Inner {
    /// `http(s)://host[:port]` of the platform's API.
    api_url: String,
    client: reqwest::Client,
    refresh_before: Duration,
    state: tokio::sync::Mutex<State>,
    exchanges: AtomicU64,
}

struct State {
    /// The grant for the next exchange.
    grant: String,
    current: Option<Credentials>,
    /// The deployment's signing key, from the first exchange on.
    build_key: Option<BuildKey>,
}

impl fmt::Debug for GrantCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantCredentials")
            .field("api_url", &self.inner.api_url)
            .field("exchanges", &self.exchanges())
            .finish_non_exhaustive()
    }
}

impl GrantCredentials {
    pub fn new(api_url: &str, grant: &str) -> GrantCredentials {
        GrantCredentials::with_refresh_before(api_url, grant, REFRESH_BEFORE)
    }

    /// As [`GrantCredentials::new`], renewing credentials that have less than
    /// `refresh_before` left.
    pub fn with_refresh_before(
        api_url: &str,
        grant: &str,
        refresh_before: Duration,
    ) -> GrantCredentials {
        GrantCredentials {
            inner: Arc::new(Inner {
                api_url: api_url.trim_end_matches('/').to_string(),
                client: reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()
                    .unwrap_or_default(),
                refresh_before,
                state: tokio::sync::Mutex::new(State {
                    grant: grant.to_string(),
                    current: None,
                    build_key: None,
                }),
                exchanges: AtomicU64::new(0),
            }),
        }
    }

    pub fn provider(&self) -> SharedCredentialsProvider {
        SharedCredentialsProvider::new(self.clone())
    }

    /// Successful exchanges so far.
    pub fn exchanges(&self) -> u64 {
        self.inner.exchanges.load(Ordering::Relaxed)
    }

    /// Renews the credentials `refresh_before` ahead of their expiry from now on,
    /// whether or not anything asks for them (a build may upload nothing for an
    /// hour, then need them). Stops when every clone is dropped.
    pub fn renew_in_background(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { return };
                let this = GrantCredentials { inner };
                let wait = match this.current().await.and_then(|c| c.expiry()) {
                    Some(expiry) => expiry
                        .checked_sub(this.inner.refresh_before)
                        .and_then(|due| due.duration_since(SystemTime::now()).ok())
                        .unwrap_or(Duration::ZERO),
                    // Nothing to renew yet, or keys that never expire.
                    None => Duration::from_secs(30),
                };
                drop(this);
                tokio::time::sleep(wait.max(Duration::from_secs(1))).await;
                let Some(inner) = weak.upgrade() else { return };
                let this = GrantCredentials { inner };
                if let Err(e) = this.renew_if_due().await {
                    // The current credentials may still serve a while; try again later.
                    tracing::warn!("renewing the build's credentials failed: {e}");
                    drop(this);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        });
    }

    async fn current(&self) -> Option<Credentials> {
        self.inner.state.lock().await.current.clone()
    }

    /// The current credentials, renewed when there are none or they have less than
    /// `refresh_before` left. When a renewal fails, credentials that are still valid
    /// are returned (the next call tries again). Callers share one exchange.
    pub async fn get(&self) -> Result<Credentials, CredentialsError> {
        let mut state = self.inner.state.lock().await;
        let now = SystemTime::now();
        if let Some(current) = &state.current
            && current
                .expiry()
                .is_none_or(|at| at > now + self.inner.refresh_before)
        {
            return Ok(current.clone());
        }
        match self.exchange_with_retries(&mut state).await {
            Ok(credentials) => Ok(credentials),
            Err(e) => match &state.current {
                Some(current) if current.expiry().is_some_and(|at| at > now) => {
                    tracing::warn!("{e}; the current credentials are still valid");
                    Ok(current.clone())
                }
                _ => Err(CredentialsError::provider_error(e)),
            },
        }
    }

    /// Renews when the current credentials have less than `refresh_before` left.
    async fn renew_if_due(&self) -> Result<(), ExchangeError> {
        let mut state = self.inner.state.lock().await;
        let due = state
            .current
            .as_ref()
            .and_then(Credentials::expiry)
            .is_some_and(|at| at <= SystemTime::now() + self.inner.refresh_before);
        if due {
            self.exchange_with_retries(&mut state).await?;
        }
        Ok(())
    }

    /// The key this build signs its events and log lines with; exchanges the grant
    /// first when that has not happened yet.
    pub async fn build_key(&self) -> Result<BuildKey, ExchangeError> {
        let mut state = self.inner.state.lock().await;
        if state.build_key.is_none() {
            self.exchange_with_retries(&mut state).await?;
        }
        state
            .build_key
            .clone()
            .ok_or_else(|| ExchangeError::Unavailable {
                url: format!("{}/v1/build-credentials", self.inner.api_url),
                message: "the answer has no build_key".into(),
            })
    }

    /// Exchanges the grant now, whatever the current credentials' age.
    pub async fn renew(&self) -> Result<Credentials, ExchangeError> {
        let mut state = self.inner.state.lock().await;
        self.exchange_with_retries(&mut state).await
    }

    async fn exchange_with_retries(&self, state: &mut State) -> Result<Credentials, ExchangeError> {
        let mut attempt = 1;
        let issued = loop {
            match self.exchange(&state.grant).await {
                Ok(issued) => break issued,
                Err(e @ ExchangeError::Unavailable { .. }) if attempt < ATTEMPTS => {
                    tracing::warn!("{e}; trying again");
                    tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
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
        if !issued.build_key.is_empty() {
            // A key the API got wrong will not get better by asking again.
            let key = BuildKey::from_hex(&issued.build_key).map_err(|message| {
                ExchangeError::Refused {
                    status: 200,
                    message,
                }
            })?;
            state.build_key = Some(key);
        }
        state.grant = issued.next_grant;
        state.current = Some(credentials.clone());
        self.inner.exchanges.fetch_add(1, Ordering::Relaxed);
        Ok(credentials)
    }

    async fn exchange(&self, grant: &str) -> Result<BuildCredentials, ExchangeError> {
        let url = format!("{}/v1/build-credentials", self.inner.api_url);
        let unavailable = |message: String| ExchangeError::Unavailable {
            url: url.clone(),
            message,
        };
        let response = self
            .inner
            .client
            .post(&url)
            .bearer_auth(grant)
            .send()
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let status = response.status();
        if status.is_success() {
            return response
                .json()
                .await
                .map_err(|e| unavailable(format!("the answer is not valid: {e}")));
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
            .unwrap_or(body);
        if status.is_server_error() || status.as_u16() == 429 {
            Err(unavailable(format!("{status}: {message}")))
        } else {
            Err(ExchangeError::Refused {
                status: status.as_u16(),
                message,
            })
        }
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
