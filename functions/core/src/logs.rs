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

/// Shortest secret value the API accepts: a shorter one would mask ordinary words.
pub const MIN_SECRET_LEN: usize = 6;

/// What a build log must never show of the project's secrets: each secret, each line of
/// a multi-line one (a PEM key printed line by line), and their base64 and
/// percent-encoded forms, longest first, so a secret that is a prefix of another never
/// leaves the rest of the longer one visible.
#[derive(Debug, Clone, Default)]
pub struct SecretMasker {
    needles: Vec<String>,
}

impl SecretMasker {
    pub fn new(secrets: &[String]) -> SecretMasker {
        let mut needles = Vec::new();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            // The value itself, whatever its length (the API refuses short new ones;
            // older values and URL credentials are masked as they are).
            needles.push(secret.clone());
            let mut forms: Vec<&str> = vec![secret.as_str()];
            if secret.contains('\n') {
                forms.extend(secret.lines().map(|line| line.trim_end_matches('\r')));
            }
            for form in forms {
                if form.trim().chars().count() < MIN_SECRET_LEN {
                    continue;
                }
                needles.push(form.to_string());
                needles.extend(percent_encodings(form));
                // `echo "$SECRET" | base64` encodes the newline too.
                for bytes in [form.to_string(), format!("{form}\n")] {
                    let encoded = base64(bytes.as_bytes(), STANDARD);
                    needles.push(encoded.trim_end_matches('=').to_string());
                    needles.push(base64(bytes.as_bytes(), URL_SAFE));
                }
            }
        }
        // Encoded forms shorter than the floor would mask ordinary text.
        needles.retain(|n| !n.is_empty());
        needles.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        needles.dedup();
        SecretMasker { needles }
    }

    /// `message` with every form of every secret replaced by `***`.
    pub fn mask(&self, message: &str) -> String {
        let mut out = message.to_string();
        for needle in &self.needles {
            if out.contains(needle.as_str()) {
                out = out.replace(needle.as_str(), "***");
            }
        }
        out
    }
}

/// Replaces every form of each secret in `message` with `***` (see [`SecretMasker`]).
pub fn mask_secrets(message: &str, secrets: &[String]) -> String {
    SecretMasker::new(secrets).mask(message)
}

/// The percent-encoded forms of `text` that differ from it: every byte outside RFC
/// 3986's unreserved set as `%XX` (upper- and lower-case hex), as JavaScript's
/// `encodeURIComponent` writes it (`!'()*` left as they are), and as an HTML form
/// writes it (a space as `+`).
fn percent_encodings(text: &str) -> Vec<String> {
    let encode = |keep: &[u8], space_plus: bool, lower: bool| {
        let mut out = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
                out.push(byte as char);
            } else if byte == b' ' && space_plus {
                out.push('+');
            } else if lower {
                out.push_str(&format!("%{byte:02x}"));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    let mut forms = Vec::new();
    for lower in [false, true] {
        forms.push(encode(b"-._~", false, lower));
        forms.push(encode(b"-._~!'()*", false, lower));
        forms.push(encode(b"-._*", true, lower));
    }
    forms.retain(|form| form != text);
    forms
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 of `bytes` in `alphabet`; padded with `=` for the standard alphabet only.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let pad = alphabet[62] == b'+';
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        let digits = chunk.len() + 1;
        for i in 0..4 {
            if i < digits {
                out.push(alphabet[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else if pad {
                out.push('=');
            }
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

    #[test]
    fn base64_matches_the_standard_encoding() {
        assert_eq!(base64(b"", STANDARD), "");
        assert_eq!(base64(b"f", STANDARD), "Zg==");
        assert_eq!(base64(b"fo", STANDARD), "Zm8=");
        assert_eq!(base64(b"foo", STANDARD), "Zm9v");
        assert_eq!(base64(b"foobar\n", STANDARD), "Zm9vYmFyCg==");
        assert_eq!(base64(&[0xfb, 0xff], URL_SAFE), "-_8");
    }

    #[test]
    fn a_secret_that_prefixes_another_leaves_nothing_of_the_longer_one() {
        let masker = SecretMasker::new(&["abc123".into(), "abc123-and-more".into()]);
        assert_eq!(masker.mask("k=abc123-and-more"), "k=***");
        assert_eq!(masker.mask("k=abc123"), "k=***");
    }

    #[test]
    fn each_line_of_a_multi_line_secret_is_masked() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n";
        let masker = SecretMasker::new(&[pem.into()]);
        for line in pem.lines() {
            assert_eq!(masker.mask(&format!("> {line}")), "> ***", "{line}");
        }
    }

    #[test]
    fn encoded_forms_of_a_secret_are_masked() {
        let secret = "p@ss word/+=?xyz";
        let masker = SecretMasker::new(&[secret.into()]);
        // base64, with and without the newline `echo | base64` adds, and URL-safe.
        assert_eq!(masker.mask("cEBzcyB3b3JkLys9P3h5eg=="), "***==");
        assert_eq!(masker.mask("cEBzcyB3b3JkLys9P3h5ego="), "***=");
        assert_eq!(masker.mask("x cEBzcyB3b3JkLys9P3h5eg y"), "x *** y");
        assert_eq!(masker.mask("q=p%40ss%20word%2F%2B%3D%3Fxyz&"), "q=***&");
        assert_eq!(masker.mask("q=p%40ss%20word%2f%2b%3d%3fxyz"), "q=***");
        // Capitals stay capitals when only the hex digits are lower-case; JavaScript's
        // encodeURIComponent keeps `!'()*`; a form writes a space as `+`.
        let masker = SecretMasker::new(&["Sec ret!(x)/Y".into()]);
        assert_eq!(masker.mask("Sec%20ret%21%28x%29%2fY"), "***");
        assert_eq!(masker.mask("Sec%20ret!(x)%2FY"), "***");
        assert_eq!(masker.mask("Sec+ret%21%28x%29%2FY"), "***");
    }

    #[test]
    fn a_short_value_is_masked_whole_but_its_encodings_are_not() {
        // Values from before the 6-character floor, and URL credentials.
        let masker = SecretMasker::new(&["tok".into()]);
        assert_eq!(masker.mask("user:tok@"), "user:***@");
        assert_eq!(
            masker.mask("dG9r is tok in base64"),
            "dG9r is *** in base64"
        );
    }

    #[test]
    fn short_forms_are_never_masked() {
        // A line of a multi-line secret shorter than the minimum would mask words.
        let masker = SecretMasker::new(&["secret-line-one\nab\n".into()]);
        assert_eq!(masker.mask("ab cd"), "ab cd");
        assert_eq!(masker.mask("secret-line-one"), "***");
    }
}
