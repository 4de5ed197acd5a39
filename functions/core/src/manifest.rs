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

/// Folders whose files are all content-addressed by the framework that writes them:
/// Next.js, Astro, Nuxt (except its `builds/` manifests, which change every build) and
/// SvelteKit.
const IMMUTABLE_FOLDERS: &[&str] = &["/_next/static/", "/_astro/", "/_nuxt/", "/_app/immutable/"];
const MUTABLE_FOLDERS: &[&str] = &["/_nuxt/builds/"];

/// Cache-Control for a file of the output: a year, immutable, for assets whose name
/// carries a content hash (what bundlers emit); revalidate for HTML and anything else.
/// When unsure it revalidates: a file wrongly called immutable stays stale in browsers
/// for a year, one wrongly revalidated costs a round trip.
pub fn cache_control_for(path: &str) -> &'static str {
    cache_control_in(path, &[])
}

/// [`cache_control_for`] for a build whose preset names `immutable_folders`
/// (`BuildPlan::immutable_folders`, e.g. Gatsby's `/static/`): their files are
/// immutable too, except HTML and the folders that always revalidate. A folder must
/// look like `/name/`: `/` alone would make every file immutable.
pub fn cache_control_in(path: &str, immutable_folders: &[String]) -> &'static str {
    if path.ends_with(".html") || path.ends_with(".htm") {
        return CACHE_REVALIDATE;
    }
    if MUTABLE_FOLDERS
        .iter()
        .any(|folder| path.starts_with(folder))
    {
        return CACHE_REVALIDATE;
    }
    let in_folder = |folder: &str| {
        folder.len() > 2
            && folder.starts_with('/')
            && folder.ends_with('/')
            && path.starts_with(folder)
    };
    if IMMUTABLE_FOLDERS.iter().any(|folder| in_folder(folder))
        || immutable_folders.iter().any(|folder| in_folder(folder))
    {
        return CACHE_IMMUTABLE;
    }
    let file_name = path.rsplit('/').next().unwrap_or(path);
    if has_content_hash(file_name) {
        CACHE_IMMUTABLE
    } else {
        CACHE_REVALIDATE
    }
}

/// True when the file stem carries a bundler hash, either
/// - a dot- or dash-separated part after the first of 8 or more `[A-Za-z0-9_]` mixing
///   digits and letters (`main.8e2c1f0a`, `616-910d0397bafa52e0`, `chunk-Bx3_9aQd`), or
/// - Rollup's and Vite's base64url hash: the last 8 characters, after a `-` or `.`, of
///   `[A-Za-z0-9_-]`, letters only allowed, unless they read as a word
///   (`index-BaNwpQDn`, `colors.dMHbOPeL`, `STLUpload-D_LN-hbf`; not `Button-Controls`).
fn has_content_hash(file_name: &str) -> bool {
    let stem = match file_name.rfind('.') {
        Some(dot) => &file_name[..dot],
        None => return false,
    };
    let separated = stem.split(['.', '-']).skip(1).any(|part| {
        part.len() >= 8
            && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && part.chars().any(|c| c.is_ascii_digit())
            && part.chars().any(|c| c.is_ascii_alphabetic())
    });
    separated || ends_in_base64url_hash(stem)
}

fn ends_in_base64url_hash(stem: &str) -> bool {
    let bytes = stem.as_bytes();
    if bytes.len() < 10 {
        return false;
    }
    let (head, hash) = bytes.split_at(bytes.len() - 8);
    let base64url = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    matches!(head.last(), Some(b'-' | b'.'))
        && hash.iter().all(base64url)
        && (hash.iter().any(|b| !b.is_ascii_alphabetic()) || !reads_as_a_word(hash))
}

/// `controls`, `Controls`, `HomeIcon`, `homeIcon`, `OVERVIEW`: lower case, or capitals
/// each followed by lower case, or capitals only.
fn reads_as_a_word(letters: &[u8]) -> bool {
    if letters.iter().all(u8::is_ascii_uppercase) {
        return true;
    }
    letters.iter().enumerate().all(|(i, b)| {
        b.is_ascii_lowercase() || letters.get(i + 1).is_some_and(u8::is_ascii_lowercase)
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

    #[test]
    fn a_presets_folders_are_immutable_only_in_its_builds() {
        let gatsby = ["/static/".to_string()];
        let path = "/static/6a9f4e1c0b/d1b2c/hero.webp";
        assert_eq!(cache_control_for(path), CACHE_REVALIDATE);
        assert_eq!(cache_control_in(path, &gatsby), CACHE_IMMUTABLE);
        // HTML and the always-revalidated folders stay so inside a preset's folders.
        assert_eq!(
            cache_control_in("/static/page.html", &gatsby),
            CACHE_REVALIDATE
        );
        let nuxt = ["/_nuxt/".to_string()];
        assert_eq!(
            cache_control_in("/_nuxt/builds/latest.json", &nuxt),
            CACHE_REVALIDATE
        );
        // A folder is a prefix of whole segments, and never the root.
        assert_eq!(
            cache_control_in("/statics/logo.png", &gatsby),
            CACHE_REVALIDATE
        );
        for folder in ["/", "", "static/", "/static"] {
            assert_eq!(
                cache_control_in("/static/logo.png", &[folder.to_string()]),
                CACHE_REVALIDATE,
                "{folder:?}"
            );
        }
        // The folders every build shares still apply.
        assert_eq!(
            cache_control_in("/_next/static/Bq3LdZkkb8Qo_abc/_buildManifest.js", &gatsby),
            CACHE_IMMUTABLE
        );
    }

    /// File names as real builds write them (Vite 4 and 5, Rollup, Astro, Next.js,
    /// Nuxt, SvelteKit), and names a person would write.
    #[test]
    fn real_bundler_output_is_immutable_and_ordinary_names_are_not() {
        for path in [
            // Vite 5 / Rollup 4: base64url, letters only, `-` and `_` inside.
            "/assets/index-BaNwpQDn.css",
            "/assets/index-Bk9lnncF.css",
            "/assets/index-DZUnZWZM.js",
            "/assets/index-ktA5GlZY.js",
            "/assets/orientWorker-CRugqaXP.js",
            "/assets/STLUpload-D_LN-hbf.js",
            // Vite 4: hex.
            "/assets/index-e92ae01e.js",
            // Astro: `name.hash`.
            "/_astro/colors.dMHbOPeL.css",
            "/blog/_astro/hoisted.BH8Vx5rK.js",
            // Next.js: everything under _next/static, and hex hashes.
            "/_next/static/chunks/616-910d0397bafa52e0.js",
            "/_next/static/Bq3LdZkkb8Qo_abc/_buildManifest.js",
            // Nuxt 3 chunks are the hash alone; SvelteKit's immutable folder.
            "/_nuxt/DlAUqK2U.js",
            "/_app/immutable/entry/start.BxyqR3Lp.js",
        ] {
            assert_eq!(cache_control_for(path), CACHE_IMMUTABLE, "{path}");
        }
        for path in [
            "/Button-Controls.js",
            "/icons/icon-HomeIcon.svg",
            "/docs/guide-overview.pdf",
            "/docs/guide-OVERVIEW.pdf",
            "/assets/logo.png",
            "/assets/my-component.js",
            "/_nuxt/builds/latest.json",
            "/_app/version.json",
            "/robots.txt",
        ] {
            assert_eq!(cache_control_for(path), CACHE_REVALIDATE, "{path}");
        }
    }
}
