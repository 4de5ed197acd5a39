//! The build-log line: one JSON object per Kafka message on `build-logs`, keyed by
//! deployment id, one row in ClickHouse keyed by (deployment_id, seq).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
    /// The builder's own steps.
    System,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::System => "system",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Stdout, Self::Stderr, Self::System]
            .into_iter()
            .find(|stream| stream.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub deployment_id: String,
    pub project_id: String,
    /// Gapless per deployment, from 1.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub stream: LogStream,
    pub message: String,
}

/// Longest message kept in one line; longer output is cut with a marker.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;

/// Cuts `message` to [`MAX_MESSAGE_BYTES`] on a char boundary, with a visible marker.
pub fn truncate_message(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE_BYTES {
        return message;
    }
    let total = message.len();
    let mut cut = MAX_MESSAGE_BYTES;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    message.truncate(cut);
    message.push_str(&format!(" […truncated, {total} bytes in all]"));
    message
}

/// Replaces every occurrence of each secret in `message` with `***`.
pub fn mask_secrets(message: &str, secrets: &[String]) -> String {
    let mut out = message.to_string();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_a_marker() {
        let line = "é".repeat(MAX_MESSAGE_BYTES);
        let cut = truncate_message(line);
        assert!(cut.len() < MAX_MESSAGE_BYTES + 64);
        assert!(cut.ends_with(&format!("{} bytes in all]", MAX_MESSAGE_BYTES * 2)));
    }

    #[test]
    fn secrets_are_masked() {
        let secrets = vec!["hunter2".to_string(), String::new()];
        assert_eq!(mask_secrets("pw=hunter2 hunter2", &secrets), "pw=*** ***");
    }
}
