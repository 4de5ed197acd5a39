//! Uploading the output: walk regular files only (a symlink that leaves the output
//! folder is an error, never followed), hash each, upload missing blobs, then the
//! manifest.

use std::path::{Path, PathBuf};

use aws_sdk_s3::primitives::ByteStream;
use deploysphere_adapters::s3::ObjectStore;
use deploysphere_core::manifest::{cache_control_in, staged_key};
use deploysphere_core::{Manifest, ManifestEntry};
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

pub const MAX_FILES: usize = 50_000;
pub const MAX_TOTAL_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug)]
pub struct OutputFile {
    pub url_path: String,
    pub source: PathBuf,
}

/// Lists the files of the output folder. Symlinks are resolved: one that points inside
/// the folder serves its target's content, one that points outside fails the build.
pub fn collect(output: &Path) -> Result<Vec<OutputFile>, String> {
    let root = output
        .canonicalize()
        .map_err(|e| format!("the output folder cannot be read: {e}"))?;
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        for entry in entries {
            let entry = entry.map_err(|e| e.to_string())?;
            if entry.file_name() == ".git" {
                continue;
            }
            let path = entry.path();
            let relative = path
                .strip_prefix(&root)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
            let source = if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default();
                let Ok(resolved) = path.canonicalize() else {
                    // A dangling link names nothing that could be served.
                    continue;
                };
                match resolved.starts_with(&root).then_some(resolved) {
                    Some(resolved) if resolved.is_file() => resolved,
                    Some(_) => continue,
                    None => {
                        return Err(format!(
                            "the output contains a symlink that points outside the output folder: {relative} -> {target}; nothing was uploaded"
                        ));
                    }
                }
            } else if meta.is_dir() {
                stack.push(path);
                continue;
            } else if meta.is_file() {
                path
            } else {
                continue;
            };
            let url_path = format!("/{}", relative.replace('\\', "/"));
            files.push(OutputFile { url_path, source });
            if files.len() > MAX_FILES {
                return Err(format!("the output has more than {MAX_FILES} files"));
            }
        }
    }
    files.sort_by(|a, b| a.url_path.cmp(&b.url_path));
    Ok(files)
}

fn content_type_for(path: &str) -> String {
    let mime = mime_guess::from_path(path).first_or_octet_stream();
    let essence = mime.essence_str();
    let texty = mime.type_() == "text"
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "image/svg+xml"
                | "application/xml"
                | "application/manifest+json"
        );
    if texty {
        format!("{essence}; charset=utf-8")
    } else {
        essence.to_string()
    }
}

/// SHA-256 (hex) and size of a file, read in chunks.
async fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    use tokio::io::AsyncReadExt;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok((hex::encode(hasher.finalize()), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

pub struct UploadStats {
    pub manifest_key: String,
    pub files: u64,
    pub bytes: u64,
    pub blobs_uploaded: u64,
}

/// Hashes and uploads every file (16 at a time), skipping blobs that exist, then
/// writes the manifest. The manifest is written last: a deployment is only routable
/// once all its blobs are in place.
pub async fn upload(
    store: &ObjectStore,
    deployment_id: &str,
    files: Vec<OutputFile>,
    immutable_folders: &[String],
) -> anyhow::Result<UploadStats> {
    let total: u64 = files
        .iter()
        .map(|f| std::fs::metadata(&f.source).map(|m| m.len()).unwrap_or(0))
        .sum();
    if total > MAX_TOTAL_BYTES {
        anyhow::bail!("the output is {total} bytes; the limit is {MAX_TOTAL_BYTES}");
    }
    let results: Vec<(String, ManifestEntry, bool)> = futures::stream::iter(files)
        .map(|file| async move {
            let (sha, size) = hash_file(&file.source).await?;
            let content_type = content_type_for(&file.url_path);
            let cache_control = cache_control_in(&file.url_path, immutable_folders).to_string();
            let uploaded = if store.blob_exists(&sha).await? {
                false
            } else {
                // New content goes under this deployment; the control plane checks it
                // and publishes it to `blobs/` when the build reports success.
                let body = ByteStream::from_path(&file.source).await?;
                store
                    .put_checked(
                        &staged_key(deployment_id, &sha),
                        body,
                        &sha,
                        &content_type,
                        &cache_control,
                    )
                    .await?;
                true
            };
            let entry = ManifestEntry {
                blob: sha,
                size,
                content_type,
                cache_control,
            };
            anyhow::Ok((file.url_path, entry, uploaded))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    let blobs_uploaded = results.iter().filter(|(_, _, uploaded)| *uploaded).count() as u64;
    let manifest = Manifest {
        deployment_id: deployment_id.to_string(),
        files: results
            .into_iter()
            .map(|(path, entry, _)| (path, entry))
            .collect(),
    };
    let files = manifest.files.len() as u64;
    let manifest_key = store.put_manifest(&manifest).await?;
    Ok(UploadStats {
        manifest_key,
        files,
        bytes: total,
        blobs_uploaded,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(content_type_for("/index.html"), "text/html; charset=utf-8");
        let js = content_type_for("/app.js");
        assert!(
            js.contains("javascript") && js.ends_with("; charset=utf-8"),
            "{js}"
        );
        assert_eq!(content_type_for("/logo.png"), "image/png");
        assert_eq!(content_type_for("/data.bin"), "application/octet-stream");
    }

    #[test]
    fn symlink_escape_is_refused_and_inner_links_are_served() {
        let dir = std::env::temp_dir().join(format!("ds-upload-test-{}", std::process::id()));
        let out = dir.join("out");
        std::fs::create_dir_all(out.join("sub")).unwrap();
        std::fs::write(out.join("index.html"), "hi").unwrap();
        std::os::unix::fs::symlink("../index.html", out.join("sub/alias.html")).unwrap();
        let files = collect(&out).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.url_path.as_str()).collect();
        assert_eq!(paths, ["/index.html", "/sub/alias.html"]);
        std::os::unix::fs::symlink("/etc/passwd", out.join("passwd")).unwrap();
        let error = collect(&out).unwrap_err();
        assert!(error.contains("passwd -> /etc/passwd"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
