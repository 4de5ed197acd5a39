//! Bearer tokens: random, shown once, stored as SHA-256.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use deploysphere_adapters::pg::Account;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::error::ApiError;

/// A new API token: `dsp_` and 64 hex characters (256 random bits).
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    format!("dsp_{}", hex::encode(bytes))
}

pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The account of the request's bearer token.
pub struct Auth(pub Account);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(ApiError::unauthorized)?;
        state
            .db
            .account_by_token_hash(&hash_token(token))
            .await?
            .map(Auth)
            .ok_or_else(ApiError::unauthorized)
    }
}
