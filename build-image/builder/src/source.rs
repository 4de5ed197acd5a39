//! Fetching the source: a shallow fetch of one ref into an empty repository.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use deploysphere_core::{LogStream, SourceTree};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::report::Reporter;

/// Runs git with a clean environment; its output goes to the build log.
async fn git(
    reporter: &mut Reporter,
    dir: &Path,
    home: &Path,
    args: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let mut child = Command::new("git")
        .args([
            "-c",
            "safe.directory=*",
            "-c",
            "protocol.file.allow=always",
            "-c",
            "advice.detachedHead=false",
        ])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdout = String::new();
    let mut last_error = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
    let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
    let (mut out_done, mut err_done) = (false, false);
    let work = async {
        while !(out_done && err_done) {
            tokio::select! {
                line = out.next_line(), if !out_done => match line? {
                    Some(line) => { stdout.push_str(&line); stdout.push('\n'); }
                    None => out_done = true,
                },
                line = err.next_line(), if !err_done => match line? {
                    Some(line) => {
                        reporter.line(LogStream::Stderr, &line).await;
                        if !line.trim().is_empty() { last_error = line; }
                    }
                    None => err_done = true,
                },
            }
        }
        anyhow::Ok(child.wait().await?)
    };
    let status = match tokio::time::timeout(Duration::from_secs(600), work).await {
        Ok(status) => status?,
        Err(_) => return Ok(Err("git took longer than 10 minutes".into())),
    };
    if status.success() {
        Ok(Ok(stdout))
    } else {
        Ok(Err(if last_error.is_empty() {
            format!("git {status}")
        } else {
            last_error
        }))
    }
}

/// Fetches `git_ref` of `url` (depth 1) into `dir` and checks it out. Returns the
/// commit SHA, or git's own reason on failure.
pub async fn checkout(
    reporter: &mut Reporter,
    url: &str,
    git_ref: &str,
    dir: &Path,
    home: &Path,
) -> anyhow::Result<Result<String, String>> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(home)?;
    if let Err(e) = git(reporter, dir, home, &["init", "-q", "."]).await? {
        return Ok(Err(e));
    }
    let fetched = git(
        reporter,
        dir,
        home,
        &["fetch", "--depth", "1", "--no-tags", "--", url, git_ref],
    )
    .await?;
    if let Err(e) = fetched {
        return Ok(Err(e));
    }
    if let Err(e) = git(
        reporter,
        dir,
        home,
        &["checkout", "-q", "--detach", "FETCH_HEAD"],
    )
    .await?
    {
        return Ok(Err(e));
    }
    match git(reporter, dir, home, &["rev-parse", "HEAD"]).await? {
        Ok(sha) => Ok(Ok(sha.trim().to_string())),
        Err(e) => Ok(Err(e)),
    }
}

/// A checked-out folder as the planner sees it. Refuses paths that leave the folder.
pub struct FsTree {
    root: PathBuf,
}

impl FsTree {
    pub fn new(root: &Path) -> Self {
        FsTree {
            root: root.to_path_buf(),
        }
    }

    fn inside(&self, path: &str) -> Option<PathBuf> {
        let full = self.root.join(path).canonicalize().ok()?;
        full.starts_with(&self.root).then_some(full)
    }
}

impl SourceTree for FsTree {
    fn exists(&self, path: &str) -> bool {
        self.inside(path).is_some()
    }

    fn read_to_string(&self, path: &str) -> Option<String> {
        let full = self.inside(path)?;
        let meta = std::fs::metadata(&full).ok()?;
        if !meta.is_file() || meta.len() > 4 * 1024 * 1024 {
            return None;
        }
        std::fs::read_to_string(full).ok()
    }
}
