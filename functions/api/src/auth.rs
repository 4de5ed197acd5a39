//! Bearer tokens: random, shown once, stored as SHA-256.

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use deploysphere_adapters::pg::Account;

use crate::AppState;
use crate::error::ApiError;

pub use deploysphere_adapters::hash_token;

/// A new API token: `dsp_` and 64 hex characters (256 random bits).
pub fn new_token() -> String {
    deploysphere_adapters::new_token("dsp_")
}

/// The bearer token of a request, if it has a non-empty one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty())
}

/// The account of the request's bearer token.
pub struct Auth(pub Account);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(&parts.headers).ok_or_else(ApiError::unauthorized)?;
        state
            .db
            .account_by_token_hash(&hash_token(token))
            .await?
            .map(Auth)
            .ok_or_else(ApiError::unauthorized)
    }
}
