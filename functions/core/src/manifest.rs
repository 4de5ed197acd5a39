//! The per-deployment manifest: URL path -> content-addressed blob. Stored as
//! `manifests/<deployment_id>.json`; blobs as `blobs/<sha256>`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Hex SHA-256 of the content; the object key is `blobs/<blob>`.
    pub blob: String,
    pub size: u64,
    pub content_type: String,
    pub cache_control: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub deployment_id: String,
    /// Keys are URL paths starting with `/`, e.g. `/assets/app-3f2a9c1d.js`.
    pub files: BTreeMap<String, ManifestEntry>,
}

impl Manifest {
    pub fn get(&self, path: &str) -> Option<&ManifestEntry> {
        self.files.get(path)
    }
}

pub fn manifest_key(deployment_id: &str) -> String {
    format!("manifests/{deployment_id}.json")
}

pub fn blob_key(sha256_hex: &str) -> String {
    format!("blobs/{sha256_hex}")
}

/// Where a build task uploads a new blob: under its own deployment, until the control
/// plane has checked it and copied it to [`blob_key`] (build tasks cannot write
/// `blobs/`: a hostile build could otherwise replace another site's file).
pub fn staged_key(deployment_id: &str, sha256_hex: &str) -> String {
    format!("staging/{deployment_id}/{sha256_hex}")
}

/// Where the launcher leaves a build's spec for the build task (AWS shape): the spec
/// holds the project's env values, secrets included, which must not travel in
/// RunTask's overrides (visible to `DescribeTasks`, capped at 8 KiB).
pub fn build_spec_key(deployment_id: &str) -> String {
    format!("staging/{deployment_id}/build-spec.json")
}

pub const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
pub const CACHE_REVALIDATE: &str = "public, max-age=0, must-revalidate";

/// Cache-Control for a file of the output: a year, immutable, for assets whose name
/// carries a content hash (what bundlers emit); revalidate for HTML and anything else.
pub fn cache_control_for(path: &str) -> &'static str {
    if path.ends_with(".html") || path.ends_with(".htm") {
        return CACHE_REVALIDATE;
    }
    if path.starts_with("/_next/static/") || path.starts_with("/_astro/") {
        return CACHE_IMMUTABLE;
    }
    let file_name = path.rsplit('/').next().unwrap_or(path);
    if has_content_hash(file_name) {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    }
}

/// True when a dot- or dash-separated part of the file stem looks like a bundler hash:
/// 8 or more characters of `[A-Za-z0-9_]` mixing digits and letters (`index-4f3a2b1c`,
/// `main.8e2c1f0a`, `chunk-Bx3_9aQd`).
fn has_content_hash(file_name: &str) -> bool {
    let stem = match file_name.rfind('.') {
        Some(dot) => &file_name[..dot],
        None => return false,
    };
    stem.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part.chars().any(|c| c.is_ascii_digit())
            && part.chars().any(|c| c.is_ascii_alphabetic())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_assets_are_immutable_html_revalidates() {
        assert_eq!(
            cache_control_for("/assets/index-4f3a2b1c.js"),
            CACHE_IMMUTABLE
        );
        assert_eq!(
            cache_control_for("/static/js/main.8e2c1f0a.js"),
            CACHE_IMMUTABLE
        );
        assert_eq!(
            cache_control_for("/_next/static/chunks/app.js"),
            CACHE_IMMUTABLE
        );
        assert_eq!(cache_control_for("/index.html"), CACHE_REVALIDATE);
        assert_eq!(cache_control_for("/about.4f3a2b1c9.html"), CACHE_REVALIDATE);
        assert_eq!(cache_control_for("/style.css"), CACHE_REVALIDATE);
        assert_eq!(cache_control_for("/my-component.js"), CACHE_REVALIDATE);
        assert_eq!(cache_control_for("/favicon.ico"), CACHE_REVALIDATE);
    }
}
