//! Error classification shared by every part.

use serde::Serialize;

/// Whose fault an error is; the API maps it to a status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The caller sent something invalid: 4xx, not retryable as is.
    User,
    /// A service we depend on failed: 5xx, retryable.
    Upstream,
    /// A bug or broken invariant on our side: 5xx.
    Internal,
}

/// A rejected input: which field, and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InputError {
    pub field: String,
    pub message: String,
}

impl InputError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}
