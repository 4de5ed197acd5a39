//! The build cache: the package manager's download cache and the frameworks' own
//! caches (`.next/cache`, `node_modules/.vite`, …), saved after a successful build as
//! one tar object per project, package manager and lockfile, and restored before the
//! next build's install. The same code serves both shapes: the object lives in the
//! sites bucket under [`build_cache_prefix`] (locally the S3 server in the data
//! folder), which a build's own credentials may read and write for its project only.
//!
//! Archives are written by user builds, so they are untrusted: they are unpacked only
//! inside the build's own folders, without following links out of them (the tar
//! crate refuses entries that would land outside the folder they unpack into).

use std::path::{Path, PathBuf};
use std::time::Instant;

use deploysphere_adapters::s3::{ObjectStore, StoreError};
use deploysphere_core::events::build_cache_prefix;
use deploysphere_core::{BuildPlan, PackageManager};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// The most all of a project's cache archives may take; the oldest go first.
pub const DEFAULT_PROJECT_CAP_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// The installed dependencies, relative to the app's root folder: restored before the
/// install step, which then has little left to do (as Netlify and Vercel do). The
/// frameworks' caches inside it (`node_modules/.cache`, `node_modules/.vite`) come
/// with it.
pub const DEPENDENCIES: &str = "node_modules";

/// Framework caches outside `node_modules`, relative to the app's root folder: they
/// make the build step faster, and go in after the install step.
pub const FRAMEWORK_CACHES: &[&str] = &[".next/cache", ".astro", ".parcel-cache"];

/// The environment that points a package manager's downloads into `cache_dir` (the
/// path the sandbox sees), and corepack's copies of pnpm and yarn with them. npm's
/// cache serves pnpm, yarn and bun too when they run npm for a lifecycle script.
pub fn cache_env(manager: PackageManager, cache_dir: &str) -> Vec<(String, String)> {
    let mut env = vec![("npm_config_cache", "npm"), ("COREPACK_HOME", "corepack")];
    env.extend(match manager {
        PackageManager::Npm => vec![],
        // pnpm 9 reads `npm_config_*`, pnpm 10 `pnpm_config_*`.
        PackageManager::Pnpm => vec![
            ("npm_config_store_dir", "pnpm-store"),
            ("pnpm_config_store_dir", "pnpm-store"),
        ],
        // Classic yarn's cache; berry's global cache is under its global folder.
        PackageManager::Yarn => vec![
            ("YARN_CACHE_FOLDER", "yarn"),
            ("YARN_GLOBAL_FOLDER", "yarn-berry"),
        ],
        PackageManager::Bun => vec![("BUN_INSTALL_CACHE_DIR", "bun")],
    });
    env.into_iter()
        .map(|(name, folder)| (name.to_string(), format!("{cache_dir}/{folder}")))
        .collect()
}

/// One project's cache entry for one package manager and lockfile.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    pub key: String,
    prefix: String,
    cap_bytes: u64,
}

impl CacheEntry {
    /// The most all of the project's archives may take.
    pub fn cap_bytes(&self) -> u64 {
        self.cap_bytes
    }

    /// The entry of this build: `build-cache/<project>/<manager>-<hash>.tar`, where the
    /// hash is of `variant` (the Node.js line and CPU), package.json and the manager's
    /// lockfile: the restored `node_modules` is then what the same install of the same
    /// files made, on the same Node.js. `None` for a build without
    /// a package manager: nothing to cache.
    pub fn for_build(
        project_id: &str,
        plan: &BuildPlan,
        root: &Path,
        variant: &str,
        cap_bytes: u64,
    ) -> Option<CacheEntry> {
        let manager = plan.package_manager?;
        plan.install_command.as_ref()?;
        let mut digest = Sha256::new();
        digest.update(variant.as_bytes());
        digest.update(b"\0");
        digest.update(std::fs::read(root.join("package.json")).ok()?);
        if let Some(lockfile) = manager
            .lockfiles()
            .iter()
            .map(|name| root.join(name))
            .find(|path| path.is_file())
        {
            digest.update(b"\0");
            digest.update(std::fs::read(lockfile).ok()?);
        }
        let hash = hex::encode(&digest.finalize()[..12]);
        let prefix = build_cache_prefix(project_id);
        Some(CacheEntry {
            key: format!("{prefix}{}-{hash}.tar", manager.as_str()),
            prefix,
            cap_bytes,
        })
    }
}

/// What a restore found.
#[derive(Debug)]
pub enum Restored {
    /// No archive for this lockfile yet (the first build, or the lockfile changed).
    Missing,
    Found {
        bytes: u64,
        /// The unpacked app folders: `node_modules` goes in before the install
        /// ([`move_dependencies`]), the framework caches after it ([`move_into`]).
        framework: PathBuf,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// Downloads and unpacks the entry: the package managers' caches into `tools_cache`,
/// the framework caches into `staging/app` for [`move_into`].
pub async fn restore(
    store: &ObjectStore,
    entry: &CacheEntry,
    tools_cache: &Path,
    staging: &Path,
) -> Result<Restored, CacheError> {
    let Some(mut stream) = store.get_stream(&entry.key, None).await? else {
        return Ok(Restored::Missing);
    };
    std::fs::create_dir_all(staging)?;
    let archive = staging.join("cache.tar");
    let mut file = tokio::fs::File::create(&archive).await?;
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        bytes += chunk.len() as u64;
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    drop(file);
    let unpacked = staging.join("unpacked");
    let (archive_path, target) = (archive.clone(), unpacked.clone());
    tokio::task::spawn_blocking(move || unpack(&archive_path, &target))
        .await
        .map_err(|e| CacheError::Other(e.to_string()))??;
    let _ = std::fs::remove_file(&archive);
    let managers = unpacked.join("pm");
    if managers.is_dir() {
        if tools_cache.exists() {
            std::fs::remove_dir_all(tools_cache)?;
        }
        if let Some(parent) = tools_cache.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::rename(&managers, tools_cache)?;
    }
    Ok(Restored::Found {
        bytes,
        framework: unpacked.join("app"),
    })
}

fn unpack(archive: &Path, target: &Path) -> Result<(), CacheError> {
    std::fs::create_dir_all(target)?;
    let mut archive = tar::Archive::new(std::fs::File::open(archive)?);
    // Modes without setuid, setgid or sticky bits.
    archive.set_preserve_permissions(false);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        // Plain files, folders and links only: no devices, fifos or hard links (a
        // hard link could name a file outside the archive's folder).
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink()) {
            continue;
        }
        // Only the two folders an archive holds.
        let path = entry.path()?.into_owned();
        if !(path.starts_with("pm") || path.starts_with("app")) {
            continue;
        }
        // Refuses paths with `..` and any that would pass through a link.
        entry.unpack_in(target)?;
    }
    Ok(())
}

/// Moves the restored `node_modules` into the app folder, unless the checkout has one
/// (committed, or a link); true when it did.
pub fn move_dependencies(framework: &Path, root: &Path) -> bool {
    let from = framework.join(DEPENDENCIES);
    let to = root.join(DEPENDENCIES);
    is_real_dir(&from) && to.symlink_metadata().is_err() && std::fs::rename(&from, &to).is_ok()
}

/// Moves the restored framework caches into the app folder (`root`, a real folder:
/// see [`is_real_path`]), each only where the install step did not create it. Returns
/// the top folders it created or moved (`.next` for `.next/cache`), for the caller to
/// hand to the sandbox's uid.
pub fn move_into(framework: &Path, root: &Path) -> Vec<&'static str> {
    let mut moved = Vec::new();
    for cache in FRAMEWORK_CACHES {
        let from = framework.join(cache);
        let to = root.join(cache);
        if !is_real_dir(&from) || to.symlink_metadata().is_ok() {
            continue;
        }
        let top = cache.split('/').next().unwrap_or(cache);
        let created_top = root.join(top).symlink_metadata().is_err();
        // Each folder on the way must be a real folder of the app, not a link the
        // build left.
        let parent_ok = to
            .parent()
            .is_some_and(|p| std::fs::create_dir_all(p).is_ok() && is_real_path(root, p));
        if parent_ok && std::fs::rename(&from, &to).is_ok() {
            moved.push(if created_top { top } else { *cache });
        }
    }
    moved
}

/// Whether `path`, a folder at or under `root`, has no link on the way from `root`
/// (and `root` resolves to itself).
pub fn is_real_path(root: &Path, path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(root) else {
        return false;
    };
    root.canonicalize().is_ok_and(|real| real == root)
        && rest
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| is_real_dir(&root.join(a)))
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

/// What a save did.
#[derive(Debug)]
pub enum Saved {
    Stored {
        bytes: u64,
        evicted: usize,
    },
    /// The archive alone is over the project's cap.
    TooLarge {
        bytes: u64,
    },
    Empty,
}

/// Archives the package managers' caches (`tools_cache`), `node_modules` of
/// `install_root` and the framework caches under `root` (the app folder), stores the
/// archive as the entry, and evicts the project's oldest entries until all fit in its
/// cap.
pub async fn save(
    store: &ObjectStore,
    entry: &CacheEntry,
    tools_cache: &Path,
    install_root: &Path,
    root: &Path,
    staging: &Path,
) -> Result<Saved, CacheError> {
    std::fs::create_dir_all(staging)?;
    let archive = staging.join("save.tar");
    let (path, tools) = (archive.clone(), tools_cache.to_path_buf());
    let (deps, app) = (install_root.to_path_buf(), root.to_path_buf());
    let bytes = tokio::task::spawn_blocking(move || pack(&path, &tools, &deps, &app))
        .await
        .map_err(|e| CacheError::Other(e.to_string()))??;
    if bytes == 0 {
        let _ = std::fs::remove_file(&archive);
        return Ok(Saved::Empty);
    }
    if bytes > entry.cap_bytes {
        let _ = std::fs::remove_file(&archive);
        return Ok(Saved::TooLarge { bytes });
    }
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&archive)
        .await
        .map_err(|e| CacheError::Other(e.to_string()))?;
    let stored = store
        .put(&entry.key, body, "application/x-tar", Some("no-store"))
        .await;
    let _ = std::fs::remove_file(&archive);
    stored?;
    let evicted = evict(store, entry).await?;
    Ok(Saved::Stored { bytes, evicted })
}

/// Deletes the project's least recently saved entries (never this one) until the
/// rest fits in the cap.
async fn evict(store: &ObjectStore, entry: &CacheEntry) -> Result<usize, CacheError> {
    let mut objects = store.list_objects(&entry.prefix).await?;
    objects.sort_by_key(|o| std::cmp::Reverse((o.key == entry.key, o.last_modified)));
    let mut total = 0u64;
    let mut evicted = 0;
    for object in objects {
        total += object.size;
        if total > entry.cap_bytes && object.key != entry.key {
            store.delete(&object.key).await?;
            total -= object.size;
            evicted += 1;
        }
    }
    Ok(evicted)
}

/// Writes the archive; returns its size, 0 when there was nothing to keep. Links are
/// kept as links, never followed.
fn pack(
    archive: &Path,
    tools_cache: &Path,
    install_root: &Path,
    root: &Path,
) -> Result<u64, CacheError> {
    let mut builder = tar::Builder::new(std::fs::File::create(archive)?);
    builder.follow_symlinks(false);
    let mut any = false;
    if is_real_dir(tools_cache) && std::fs::read_dir(tools_cache)?.next().is_some() {
        builder.append_dir_all("pm", tools_cache)?;
        any = true;
    }
    let folders = std::iter::once((install_root, DEPENDENCIES))
        .chain(FRAMEWORK_CACHES.iter().map(|cache| (root, *cache)));
    for (root, cache) in folders {
        let path = root.join(cache);
        // Each step of the path must be a real folder of the app.
        let real = Path::new(cache)
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| is_real_dir(&root.join(a)));
        if real {
            builder.append_dir_all(Path::new("app").join(cache), &path)?;
            any = true;
        }
    }
    builder.into_inner()?.sync_all()?;
    if !any {
        return Ok(0);
    }
    Ok(std::fs::metadata(archive)?.len())
}

/// `12.3 MB`.
pub fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

/// Seconds since `started`, for log lines.
pub fn seconds(started: Instant) -> String {
    format!("{:.1} s", started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("deploysphere-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn pack_keeps_caches_and_links_as_links_and_unpack_stays_inside() {
        let dir = temp("pack");
        let tools = dir.join("tools-cache");
        let root = dir.join("app");
        std::fs::create_dir_all(tools.join("npm/_cacache")).unwrap();
        std::fs::write(tools.join("npm/_cacache/index"), b"cached").unwrap();
        std::fs::create_dir_all(root.join(".next/cache/images")).unwrap();
        std::fs::write(root.join(".next/cache/images/a.webp"), b"img").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join(".next/cache/leak")).unwrap();
        // .astro through a link is not a real folder of the app: skipped.
        std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
        std::fs::write(dir.join("elsewhere/secret"), b"x").unwrap();
        std::os::unix::fs::symlink(dir.join("elsewhere"), root.join(".astro")).unwrap();
        std::fs::create_dir_all(root.join("node_modules/.bin")).unwrap();
        std::fs::write(root.join("node_modules/vite.js"), b"vite").unwrap();

        let archive = dir.join("a.tar");
        assert!(pack(&archive, &tools, &root, &root).unwrap() > 0);
        let out = dir.join("out");
        unpack(&archive, &out).unwrap();
        assert_eq!(
            std::fs::read(out.join("pm/npm/_cacache/index")).unwrap(),
            b"cached"
        );
        assert_eq!(
            std::fs::read(out.join("app/.next/cache/images/a.webp")).unwrap(),
            b"img"
        );
        let link = out.join("app/.next/cache/leak");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert!(!out.join("app/.astro").exists());
        assert_eq!(
            std::fs::read(out.join("app/node_modules/vite.js")).unwrap(),
            b"vite"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_archive_cannot_write_outside_its_folder() {
        let dir = temp("escape");
        let archive = dir.join("evil.tar");
        {
            let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
            // A link to the parent, then a file through it.
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            builder
                .append_link(&mut link, "app/up", dir.as_path())
                .unwrap();
            let mut file = tar::Header::new_gnu();
            file.set_size(4);
            file.set_mode(0o644);
            file.set_cksum();
            builder
                .append_data(&mut file, "app/up/pwned", &b"evil"[..])
                .unwrap();
            builder.finish().unwrap();
        }
        let out = dir.join("out");
        let result = unpack(&archive, &out);
        assert!(result.is_err(), "{result:?}");
        assert!(!dir.join("pwned").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn framework_caches_go_in_only_where_install_left_nothing() {
        let dir = temp("move");
        let framework = dir.join("app");
        std::fs::create_dir_all(framework.join("node_modules/.vite/deps")).unwrap();
        std::fs::create_dir_all(framework.join(".next/cache")).unwrap();
        std::fs::create_dir_all(framework.join(".astro")).unwrap();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join(".next/cache")).unwrap();
        assert!(move_dependencies(&framework, &root));
        assert!(root.join("node_modules/.vite/deps").is_dir());
        let moved = move_into(&framework, &root);
        assert_eq!(moved, vec![".astro"]);
        // A parent the build replaced by a link is not followed.
        let elsewhere = dir.join("elsewhere-next");
        std::fs::create_dir_all(&elsewhere).unwrap();
        let linked = dir.join("linked");
        std::fs::create_dir_all(&linked).unwrap();
        std::os::unix::fs::symlink(&elsewhere, linked.join(".next")).unwrap();
        std::fs::create_dir_all(framework.join(".next/cache")).unwrap();
        assert!(move_into(&framework, &linked).is_empty());
        assert!(!elsewhere.join("cache").exists());
        // A checkout that has its own node_modules keeps it.
        let other = dir.join("other");
        std::fs::create_dir_all(other.join("node_modules")).unwrap();
        std::fs::create_dir_all(framework.join("node_modules")).unwrap();
        assert!(!move_dependencies(&framework, &other));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
