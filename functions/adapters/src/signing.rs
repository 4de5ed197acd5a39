//! Which build wrote a message. Builds share the log brokers and Redis, so a message's
//! `deployment_id` proves nothing by itself: each build holds a key of its own
//! deployment, handed out with its credentials (`POST /v1/build-credentials`), and
//! signs every record it puts on Kafka (the [`SIGNATURE_HEADER`] header) and every
//! live line it puts in Redis ([`BuildKey::seal`]). The consumers derive the key of
//! the deployment a message names from the platform key and refuse what does not
//! match ([`PlatformKey::check`]), so a build, or whatever escapes its sandbox, can
//! write its own deployment's state and log and nobody else's.
//!
//! The deployment key is `HMAC-SHA256(platform key, "deploysphere build key v1\0" ||
//! deployment_id)`: the consumers need no database to know it, and it is the same for
//! every exchange of one build. A signature is `v1=` and the hex of
//! `HMAC-SHA256(deployment key, topic || "\0" || payload)`, so a record is worth
//! nothing on another topic.

use std::collections::HashMap;

use ring::hmac;

/// The Kafka header that carries a record's signature.
pub const SIGNATURE_HEADER: &str = "deploysphere-signature";
/// The shortest platform key accepted, in bytes.
pub const MIN_PLATFORM_KEY_BYTES: usize = 32;
const VERSION: &str = "v1=";
const SIGNATURE_LEN: usize = VERSION.len() + 64;
const DERIVATION_LABEL: &[u8] = b"deploysphere build key v1\0";

/// The platform's secret that every deployment key is derived from (a 0600 file in the
/// data folder locally, a Secrets Manager secret on AWS). Builds never see it.
#[derive(Clone)]
pub struct PlatformKey {
    key: hmac::Key,
}

impl std::fmt::Debug for PlatformKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformKey(** redacted **)")
    }
}

/// Why a message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(
        "unsigned: only the build of deployment {0} may write its events and log lines, and this carries no signature"
    )]
    Unsigned(String),
    #[error(
        "the signature is not deployment {0}'s: another build wrote this, or it was altered on the way"
    )]
    Forged(String),
}

impl PlatformKey {
    /// The key from its secret (the bytes of the secret's text).
    pub fn new(secret: &[u8]) -> Result<PlatformKey, String> {
        if secret.len() < MIN_PLATFORM_KEY_BYTES {
            return Err(format!(
                "the build signing key must have at least {MIN_PLATFORM_KEY_BYTES} bytes, not {}",
                secret.len()
            ));
        }
        Ok(PlatformKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The key the build of `deployment_id` signs with.
    pub fn build_key(&self, deployment_id: &str) -> BuildKey {
        let mut message = DERIVATION_LABEL.to_vec();
        message.extend_from_slice(deployment_id.as_bytes());
        let tag = hmac::sign(&self.key, &message);
        let mut secret = [0u8; 32];
        secret.copy_from_slice(tag.as_ref());
        BuildKey::from_secret(secret)
    }

    /// Whether `payload`, read from `topic` and naming `deployment_id`, was signed by
    /// that deployment's build.
    pub fn check(
        &self,
        topic: &str,
        deployment_id: &str,
        payload: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<(), Refused> {
        self.checker()
            .check(topic, deployment_id, payload, signature)
    }

    /// Checks many messages (a batch), deriving each deployment's key once.
    pub fn checker(&self) -> Checker<'_> {
        Checker {
            keys: self,
            derived: HashMap::new(),
        }
    }
}

/// See [`PlatformKey::checker`].
pub struct Checker<'a> {
    keys: &'a PlatformKey,
    derived: HashMap<String, BuildKey>,
}

impl Checker<'_> {
    /// As [`PlatformKey::check`].
    pub fn check(
        &mut self,
        topic: &str,
        deployment_id: &str,
        payload: &[u8],
        signature: Option<&[u8]>,
    ) -> Result<(), Refused> {
        let Some(signature) = signature else {
            return Err(Refused::Unsigned(deployment_id.to_string()));
        };
        let key = match self.derived.get(deployment_id) {
            Some(key) => key,
            None => self
                .derived
                .entry(deployment_id.to_string())
                .or_insert_with(|| self.keys.build_key(deployment_id)),
        };
        if key.verify(topic, payload, signature) {
            Ok(())
        } else {
            Err(Refused::Forged(deployment_id.to_string()))
        }
    }
}

/// One deployment's key: what its build signs with.
#[derive(Clone)]
pub struct BuildKey {
    secret: [u8; 32],
    key: hmac::Key,
}

impl std::fmt::Debug for BuildKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BuildKey(** redacted **)")
    }
}

impl BuildKey {
    fn from_secret(secret: [u8; 32]) -> BuildKey {
        BuildKey {
            secret,
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
        }
    }

    /// The key as the credentials answer carries it: 64 hex characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.secret)
    }

    pub fn from_hex(text: &str) -> Result<BuildKey, String> {
        let mut secret = [0u8; 32];
        hex::decode_to_slice(text.trim(), &mut secret)
            .map_err(|e| format!("the build key is not 64 hex characters: {e}"))?;
        Ok(BuildKey::from_secret(secret))
    }

    /// What is signed: the topic, a NUL, the payload.
    fn signed(topic: &str, payload: &[u8]) -> Vec<u8> {
        let mut message = Vec::with_capacity(topic.len() + 1 + payload.len());
        message.extend_from_slice(topic.as_bytes());
        message.push(0);
        message.extend_from_slice(payload);
        message
    }

    /// The signature of `payload` on `topic`: `v1=` and 64 hex characters.
    pub fn sign(&self, topic: &str, payload: &[u8]) -> String {
        let tag = hmac::sign(&self.key, &Self::signed(topic, payload));
        format!("{VERSION}{}", hex::encode(tag))
    }

    /// Whether `signature` is this key's for `payload` on `topic` (in constant time).
    pub fn verify(&self, topic: &str, payload: &[u8], signature: &[u8]) -> bool {
        let Some(hex_tag) = signature.strip_prefix(VERSION.as_bytes()) else {
            return false;
        };
        let mut tag = [0u8; 32];
        if hex::decode_to_slice(hex_tag, &mut tag).is_err() {
            return false;
        }
        hmac::verify(&self.key, &Self::signed(topic, payload), &tag).is_ok()
    }

    /// `payload` with its signature in front (`v1=<hex> <payload>`): how a line is
    /// kept where there are no headers (Redis).
    pub fn seal(&self, topic: &str, payload: &[u8]) -> Vec<u8> {
        sealed(&self.sign(topic, payload), payload)
    }
}

/// `payload` with `signature` (from [`BuildKey::sign`]) in front: see [`BuildKey::seal`].
pub fn sealed(signature: &str, payload: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(signature.len() + 1 + payload.len());
    sealed.extend_from_slice(signature.as_bytes());
    sealed.push(b' ');
    sealed.extend_from_slice(payload);
    sealed
}

/// The signature and payload of a sealed message; no signature when it is not sealed.
pub fn unseal(sealed: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if sealed.len() > SIGNATURE_LEN
        && sealed.starts_with(VERSION.as_bytes())
        && sealed[SIGNATURE_LEN] == b' '
    {
        (Some(&sealed[..SIGNATURE_LEN]), &sealed[SIGNATURE_LEN + 1..])
    } else {
        (None, sealed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "5f0c6b7e-2a4d-4c1b-9a8e-3d2f1e0c9b8a";
    const OTHER: &str = "0b9f4f63-3c55-4bb1-9a43-2f1f6f0c1c11";

    fn platform() -> PlatformKey {
        PlatformKey::new(b"a platform key for unit tests, 32+ bytes").unwrap()
    }

    #[test]
    fn a_builds_signature_passes_for_its_own_deployment_only() {
        let keys = platform();
        let payload = br#"{"deployment_id":"x","type":"started"}"#;
        let signature = keys
            .build_key(DEPLOYMENT)
            .sign("deployment-events", payload);
        assert!(signature.starts_with("v1=") && signature.len() == 67);
        let check =
            |topic, id, payload: &[u8], sig: Option<&[u8]>| keys.check(topic, id, payload, sig);
        let sig = Some(signature.as_bytes());
        assert_eq!(check("deployment-events", DEPLOYMENT, payload, sig), Ok(()));
        assert_eq!(
            check("deployment-events", OTHER, payload, sig),
            Err(Refused::Forged(OTHER.into()))
        );
        assert!(check("build-logs", DEPLOYMENT, payload, sig).is_err());
        assert!(check("deployment-events", DEPLOYMENT, b"{}", sig).is_err());
        assert_eq!(
            check("deployment-events", DEPLOYMENT, payload, None),
            Err(Refused::Unsigned(DEPLOYMENT.into()))
        );
        for garbage in [
            &b""[..],
            b"v1=",
            b"v1=zz",
            b"v2=00",
            &signature.as_bytes()[..66],
        ] {
            assert!(check("deployment-events", DEPLOYMENT, payload, Some(garbage)).is_err());
        }
    }

    #[test]
    fn deployment_keys_differ_and_survive_the_hex_round_trip() {
        let keys = platform();
        let key = keys.build_key(DEPLOYMENT);
        assert_ne!(key.to_hex(), keys.build_key(OTHER).to_hex());
        assert_ne!(
            key.to_hex(),
            PlatformKey::new(&[7u8; 32])
                .unwrap()
                .build_key(DEPLOYMENT)
                .to_hex(),
            "another platform, another key"
        );
        let again = BuildKey::from_hex(&key.to_hex()).unwrap();
        assert_eq!(again.sign("t", b"p"), key.sign("t", b"p"));
        assert!(BuildKey::from_hex("abc").is_err());
        assert!(PlatformKey::new(b"short").is_err());
        assert_eq!(format!("{key:?}"), "BuildKey(** redacted **)");
    }

    #[test]
    fn a_sealed_line_opens_to_its_signature_and_payload() {
        let key = platform().build_key(DEPLOYMENT);
        let sealed = key.seal("build-logs", b"{\"seq\":1}");
        let (signature, payload) = unseal(&sealed);
        assert_eq!(payload, b"{\"seq\":1}");
        assert!(key.verify("build-logs", payload, signature.unwrap()));
        assert_eq!(unseal(b"{\"seq\":1}"), (None, &b"{\"seq\":1}"[..]));
    }
}
