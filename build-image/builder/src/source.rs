//! Fetching the source: a shallow fetch of one ref into an empty repository.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::os::unix::process::ExitStatusExt;

use deploysphere_core::{LogStream, SourceTree, validate};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::report::Reporter;

/// How the source may be fetched.
#[derive(Debug, Clone, Copy)]
pub struct FetchRules {
    /// Hosts that resolve to loopback, private, link-local or reserved addresses may
    /// be fetched from (the local shape, for a trusted account).
    pub allow_private: bool,
    /// The most the fetch may write (the pack git receives), in bytes.
    pub max_bytes: u64,
}

/// Where a fetch over http(s) goes: the address the host resolved to, checked, which
/// git is pinned to (so a second lookup cannot answer differently).
async fn pinned_address(url: &str, rules: FetchRules) -> Result<Option<String>, String> {
    let Some((host, port)) = validate::remote_endpoint(url) else {
        return Ok(None);
    };
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        // An address as the host: nothing to resolve, nothing to pin.
        if !rules.allow_private && validate::is_private_ip(ip) {
            return Err(format!(
                "{host} is a loopback, private, link-local or reserved address: \
                 builds fetch only from public hosts"
            ));
        }
        return Ok(None);
    }
    let addresses: Vec<std::net::IpAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("{host} does not resolve: {e}"))?
        .map(|addr| addr.ip())
        .collect();
    if !rules.allow_private
        && let Some(private) = addresses.iter().find(|ip| validate::is_private_ip(**ip))
    {
        return Err(format!(
            "{host} resolves to {private}, a loopback, private, link-local or reserved address: \
             builds fetch only from public hosts"
        ));
    }
    let address = addresses
        .first()
        .ok_or_else(|| format!("{host} does not resolve"))?;
    let address = match address {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        std::net::IpAddr::V4(v4) => v4.to_string(),
    };
    // Every name on this port (`*`): curl looks the host up as spelled (a trailing
    // dot, another case), and git connects to no other host (no redirects).
    Ok(Some(format!("http.curloptResolve=*:{port}:{address}")))
}

/// git's own settings for a fetch of `url`: only its own protocol, no redirects, and
/// the host pinned to the address that was checked.
async fn fetch_config(url: &str, rules: FetchRules) -> Result<Vec<String>, String> {
    let protocol = url.split("://").next().unwrap_or("");
    let mut config = vec![
        "protocol.allow=never".to_string(),
        format!("protocol.{protocol}.allow=always"),
        "http.followRedirects=false".to_string(),
        // One pack file, never loose objects, so the file-size limit caps the fetch.
        "transfer.unpackLimit=1".to_string(),
        "fetch.unpackLimit=1".to_string(),
    ];
    config.extend(pinned_address(url, rules).await?);
    Ok(config)
}

/// Runs git with a clean environment; its output goes to the build log. `config`
/// adds `-c` settings; `max_file_bytes` caps what any of its processes may write to
/// one file.
async fn git(
    reporter: &mut Reporter,
    dir: &Path,
    home: &Path,
    config: &[String],
    max_file_bytes: Option<u64>,
    args: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let mut command = Command::new("git");
    command
        .args(["-c", "safe.directory=*", "-c", "advice.detachedHead=false"])
        .args(config.iter().flat_map(|c| ["-c", c.as_str()]))
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
        .kill_on_drop(true);
    if let Some(limit) = max_file_bytes {
        // SAFETY: setrlimit and signal are async-signal-safe, and nothing else runs in
        // the child between fork and exec. With SIGXFSZ ignored, a write past the limit
        // fails with EFBIG ("File too large"), which git reports, instead of killing
        // whichever of its processes wrote it.
        unsafe {
            command.pre_exec(move || {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_FSIZE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = command.spawn()?;
    let mut stdout = String::new();
    let mut last_error = String::new();
    let mut too_large = false;
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
                        too_large |= line.contains("File too large");
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
    } else if let Some(limit) = max_file_bytes
        && (too_large || status.signal() == Some(libc::SIGXFSZ))
    {
        Ok(Err(format!(
            "the repository is larger than the {} MB fetch limit",
            limit / (1024 * 1024)
        )))
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
    rules: FetchRules,
) -> anyhow::Result<Result<String, String>> {
    std::fs::create_dir_all(dir)?;
    std::fs::create_dir_all(home)?;
    if let Err(e) = git(reporter, dir, home, &[], None, &["init", "-q", "."]).await? {
        return Ok(Err(e));
    }
    let config = match fetch_config(url, rules).await {
        Ok(config) => config,
        Err(e) => return Ok(Err(e)),
    };
    let fetched = git(
        reporter,
        dir,
        home,
        &config,
        Some(rules.max_bytes),
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
        &[],
        None,
        &["checkout", "-q", "--detach", "FETCH_HEAD"],
    )
    .await?
    {
        return Ok(Err(e));
    }
    match git(reporter, dir, home, &[], None, &["rev-parse", "HEAD"]).await? {
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
