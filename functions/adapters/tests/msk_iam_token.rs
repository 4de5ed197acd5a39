//! MSK accepts only IAM-signed OAUTHBEARER tokens, and a token it refuses means no
//! build log reaches the platform. Our signer is checked against AWS's own reference
//! signer (PyPI `aws-msk-iam-sasl-signer-python`, run here with a fixed clock): for
//! the same credentials and instant, both must produce the same signed URL.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_credential_types::Credentials;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use deploysphere_adapters::kafka::{MSK_TOKEN_LIFETIME, msk_iam_token};

const REFERENCE: &str = r#"
import datetime, json, sys
from unittest import mock
import botocore.auth
from botocore.credentials import CredentialProvider, Credentials
from aws_msk_iam_sasl_signer import MSKAuthTokenProvider

region, key, secret, token, epoch = sys.argv[1:6]

class Fixed(CredentialProvider):
    def load(self):
        return Credentials(key, secret, token or None)

at = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc).replace(tzinfo=None)
with mock.patch.object(botocore.auth, "get_current_datetime", return_value=at):
    signed, expiry_ms = MSKAuthTokenProvider.generate_auth_token_from_credentials_provider(region, Fixed())
print(json.dumps({"token": signed, "expiry_ms": expiry_ms}))
"#;

/// The reference signer's token and expiry (ms) for these inputs.
fn reference(region: &str, credentials: &Credentials, at: SystemTime) -> (String, i64) {
    let epoch = at.duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let output = Command::new("python3")
        .args(["-c", REFERENCE, region])
        .arg(credentials.access_key_id())
        .arg(credentials.secret_access_key())
        .arg(credentials.session_token().unwrap_or(""))
        .arg(epoch)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the reference signer failed (make setup installs it): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    (
        answer["token"].as_str().unwrap().to_string(),
        answer["expiry_ms"].as_i64().unwrap(),
    )
}

/// The signed URL in a token: base, and its query parameters by name, as encoded
/// (MSK decodes them: an encoding that differs from SigV4's breaks the signature).
fn decode(token: &str) -> (String, BTreeMap<String, String>) {
    assert!(
        !token.contains('=') && !token.contains('+') && !token.contains('/'),
        "base64url without padding: {token}"
    );
    let url = String::from_utf8(URL_SAFE_NO_PAD.decode(token).unwrap()).unwrap();
    let (base, query) = url.split_once('?').expect("a query string");
    let params = query
        .split('&')
        .map(|pair| {
            let (name, value) = pair.split_once('=').expect("name=value");
            (name.to_string(), value.to_string())
        })
        .collect();
    (base.to_string(), params)
}

fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&value[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap()
}

fn check_against_reference(region: &str, credentials: Credentials) {
    // A fixed instant with a fraction of a second: tokens carry whole seconds.
    let at = UNIX_EPOCH + Duration::from_millis(1_795_000_123_456);
    let (ours, expires) = msk_iam_token(region, &credentials, at).unwrap();
    let (theirs, their_expiry_ms) = reference(region, &credentials, at);

    let (our_base, mut our_params) = decode(&ours);
    let (their_base, mut their_params) = decode(&theirs);
    assert_eq!(our_base, format!("https://kafka.{region}.amazonaws.com/"));
    assert_eq!(our_base, their_base);
    // The user agent is added after signing and names the signing library.
    assert_eq!(
        our_params.remove("User-Agent").as_deref(),
        Some("deploysphere")
    );
    assert!(their_params.remove("User-Agent").is_some());
    assert_eq!(our_params, their_params, "signed parameters differ");
    assert_eq!(our_params["Action"], "kafka-cluster%3AConnect");
    assert_eq!(our_params["X-Amz-Expires"], "900");
    assert_eq!(
        credentials.session_token().map(str::to_string),
        our_params
            .get("X-Amz-Security-Token")
            .map(|token| percent_decode(token))
    );

    let expiry_ms = expires.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert_eq!(expiry_ms, their_expiry_ms);
    assert_eq!(
        expiry_ms,
        1_795_000_123_000 + MSK_TOKEN_LIFETIME.as_millis() as i64
    );
}

#[test]
fn msk_iam_token_matches_the_aws_reference_signer_with_a_session_token() {
    // Task credentials carry a session token with `/`, `+` and `=`: all must be
    // encoded the way SigV4 encodes them, or the signature does not match.
    check_against_reference(
        "eu-west-1",
        Credentials::new(
            "ASIAEXAMPLEKEY123456",
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            Some("IQoJb3JpZ2luX2VjEHwaCXVzLWVhc3QtMSJH+MEUCIQD/abc==".into()),
            None,
            "test",
        ),
    );
}

#[test]
fn msk_iam_token_matches_the_aws_reference_signer_with_long_term_keys() {
    check_against_reference(
        "us-east-1",
        Credentials::new(
            "AKIAEXAMPLEKEY123456",
            "another+secret/key=",
            None,
            None,
            "test",
        ),
    );
}

#[test]
fn a_different_secret_gives_a_different_signature() {
    let at = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
    let sign = |secret: &str| {
        let credentials = Credentials::new("AKIAEXAMPLE", secret, None, None, "test");
        let (token, _) = msk_iam_token("us-east-1", &credentials, at).unwrap();
        decode(&token).1["X-Amz-Signature"].clone()
    };
    assert_ne!(sign("secret-one"), sign("secret-two"));
    assert_eq!(sign("secret-one").len(), 64, "hex SHA-256");
}
