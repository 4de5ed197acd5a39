//! Which installed Node.js a build runs on.
//!
//! The build image keeps one Node.js per release line under [`DEFAULT_VERSIONS_DIR`]
//! (`/opt/node/<major>/bin/node`, with a `VERSION` file written when the image was
//! built). The build runs on the newest one that satisfies what the project asks for
//! (see [`deploysphere_core::node_version`]). As on Vercel, which ships one Node.js per
//! major, a range no install satisfies but whose major line is installed (`20.11.1`,
//! `~22.3.0`) runs on that line's install with a warning; only a range that allows no
//! installed line (`>=26`, `18`) fails the build, and the failure lists the versions
//! there are. Without that folder (the builder running on a developer's
//! machine) the build runs on the system `node`, and a version that does not satisfy
//! the project is only a warning.
//!
//! A range that cannot be read fails the build in both cases, as it does on Netlify
//! (nvm cannot install it) and on Vercel ("Found invalid Node.js Version"): running on
//! a version the project did not ask for would hide the mistake until something breaks.
//!
//! [`choose`] blocks (it may run `node --version`, up to 10 s): async code calls it
//! through `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_core::node_version::{
    NodeRequirement, NodeVersion, RangeError, allows_major, pick, satisfies,
};

/// Where the build image installs Node.js, one `<major>` folder per release line.
pub const DEFAULT_VERSIONS_DIR: &str = "/opt/node";
/// The variable that moves [`DEFAULT_VERSIONS_DIR`].
pub const VERSIONS_DIR_ENV: &str = "DEPLOYSPHERE_NODE_VERSIONS";
/// Where the system `node` is looked for, and the `PATH` it runs with.
const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";
/// `node --version` answers in milliseconds; past this the install is broken.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);

/// The Node.js folder of this process: [`VERSIONS_DIR_ENV`], else
/// [`DEFAULT_VERSIONS_DIR`].
pub fn versions_dir() -> PathBuf {
    std::env::var_os(VERSIONS_DIR_ENV)
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_VERSIONS_DIR), PathBuf::from)
}

/// The Node.js a build runs on, and what its log says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeChoice {
    /// The folder to put first on `PATH` (it holds `node`, `npm`, `npx`, `corepack`
    /// and corepack's `pnpm`/`yarn`), links resolved; `None` means the system `node`.
    pub bin_dir: Option<PathBuf>,
    /// `None` when the system `node` did not say its version.
    pub version: Option<NodeVersion>,
    /// The log line: `Node.js 22.12.0 (engines.node in package.json: >=20)`.
    pub message: String,
    /// Said in the log when the build runs on a Node.js the project did not ask for.
    pub warning: Option<String>,
}

/// Picks the Node.js for a project's `requirement` from the installs in
/// `versions_dir` or, when that folder does not exist, the system `node`. The error
/// is the build's failure message, written for the user.
pub fn choose(
    requirement: Option<&NodeRequirement>,
    versions_dir: &Path,
) -> Result<NodeChoice, String> {
    choose_with(requirement, versions_dir, SYSTEM_PATH, VERSION_TIMEOUT)
}

fn choose_with(
    requirement: Option<&NodeRequirement>,
    versions_dir: &Path,
    system_path: &str,
    timeout: Duration,
) -> Result<NodeChoice, String> {
    if versions_dir.is_dir() {
        let installs = installs(versions_dir, timeout)?;
        from_installs(requirement, &installs)
    } else {
        from_system(requirement, system_path, timeout)
    }
}

/// One Node.js in the versions folder.
#[derive(Debug)]
struct Install {
    version: NodeVersion,
    bin_dir: PathBuf,
}

/// Every `<name>/bin/node` in `dir`, oldest first. A folder without `bin/node` is not
/// an install and is skipped; an install whose version cannot be read is a broken
/// image, and an error.
fn installs(dir: &Path, timeout: Duration) -> Result<Vec<Install>, String> {
    let unlisted = |e: std::io::Error| {
        format!(
            "could not list the Node.js installs in {}: {e}",
            dir.display()
        )
    };
    let mut installs = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unlisted)? {
        let root = entry.map_err(unlisted)?.path();
        // The resolved folder goes on PATH: the sandbox mounts /usr, not /opt, so the
        // image keeps Node.js under /usr and links /opt/node there.
        let root = std::fs::canonicalize(&root).unwrap_or(root);
        let bin_dir = root.join("bin");
        let node = bin_dir.join("node");
        if !node.is_file() {
            continue;
        }
        let version = match std::fs::read_to_string(root.join("VERSION")) {
            Ok(text) => NodeVersion::parse(&text).map_err(|e| {
                format!(
                    "the Node.js in {} is unusable: VERSION: {e}",
                    root.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => node_version(&node, timeout)
                .map_err(|e| format!("the Node.js in {} is unusable: {e}", root.display()))?,
            Err(e) => {
                return Err(format!(
                    "the Node.js in {} is unusable: VERSION: {e}",
                    root.display()
                ));
            }
        };
        installs.push(Install { version, bin_dir });
    }
    if installs.is_empty() {
        return Err(format!(
            "no Node.js is installed in {} (it should hold <major>/bin/node folders)",
            dir.display()
        ));
    }
    installs.sort_by(|a, b| (a.version, &a.bin_dir).cmp(&(b.version, &b.bin_dir)));
    Ok(installs)
}

fn from_installs(
    requirement: Option<&NodeRequirement>,
    installs: &[Install],
) -> Result<NodeChoice, String> {
    let newest = installs.last().expect("installs() returns at least one");
    let Some(requirement) = requirement else {
        return Ok(NodeChoice {
            bin_dir: Some(newest.bin_dir.clone()),
            version: Some(newest.version),
            message: format!("Node.js {} (default)", newest.version),
            warning: None,
        });
    };
    let versions: Vec<NodeVersion> = installs.iter().map(|install| install.version).collect();
    let list = || {
        let list: Vec<String> = versions.iter().map(ToString::to_string).collect();
        list.join(", ")
    };
    let asked = format!("{}: {}", requirement.source, requirement.range);
    let chosen = |install: &Install, warning| NodeChoice {
        bin_dir: Some(install.bin_dir.clone()),
        version: Some(install.version),
        message: format!("Node.js {} ({asked})", install.version),
        warning,
    };
    if let Some(version) =
        pick(&requirement.range, &versions).map_err(|e| unreadable(requirement, &e))?
    {
        let install = installs
            .iter()
            .rev()
            .find(|install| install.version == version)
            .expect("pick() returns one of the versions given");
        return Ok(chosen(install, None));
    }
    // One Node.js per major line, as on Vercel: a pin like `20.11.1` runs on the 20 the
    // platform has (Node.js keeps semver within a line), with a warning.
    let same_line = installs
        .iter()
        .rev()
        .find(|install| allows_major(&requirement.range, install.version.major) == Ok(true));
    match same_line {
        Some(install) => Ok(chosen(
            install,
            Some(format!(
                "Node.js {} does not satisfy {} \"{}\"; this platform has one Node.js per \
                 major line ({}) and runs the build on its {}.x",
                install.version,
                requirement.source,
                requirement.range,
                list(),
                install.version.major
            )),
        )),
        None => Err(format!(
            "{} asks for \"{}\"; this platform has Node.js {}",
            requirement.source,
            requirement.range,
            list()
        )),
    }
}

/// The build's failure for a range that cannot be read.
fn unreadable(requirement: &NodeRequirement, error: &RangeError) -> String {
    format!(
        "{}: {error}; write a version or range like 22, 22.x or >=20",
        requirement.source
    )
}

fn from_system(
    requirement: Option<&NodeRequirement>,
    system_path: &str,
    timeout: Duration,
) -> Result<NodeChoice, String> {
    if let Some(requirement) = requirement {
        pick(&requirement.range, &[]).map_err(|e| unreadable(requirement, &e))?;
    }
    let node = std::env::split_paths(system_path)
        .map(|dir| dir.join("node"))
        .find(|node| node.is_file())
        .ok_or_else(|| {
            format!(
                "Node.js is not installed here (no node in {system_path}): install it, or set \
                 {VERSIONS_DIR_ENV} to a folder of <major>/bin/node installs"
            )
        })?;
    let asked = requirement.map_or_else(
        || "default".to_string(),
        |requirement| format!("{}: {}", requirement.source, requirement.range),
    );
    let version = match node_version(&node, timeout) {
        Ok(version) => version,
        Err(e) => {
            return Ok(NodeChoice {
                bin_dir: None,
                version: None,
                message: format!("Node.js from {} ({asked})", node.display()),
                warning: Some(format!(
                    "could not tell which Node.js {} is ({e}); the build runs on it anyway",
                    node.display()
                )),
            });
        }
    };
    let warning = match requirement {
        Some(requirement) if satisfies(&requirement.range, &version) == Ok(false) => Some(format!(
            "Node.js {version} on this platform does not satisfy {} \"{}\"; the build runs \
                 on it anyway",
            requirement.source, requirement.range
        )),
        _ => None,
    };
    Ok(NodeChoice {
        bin_dir: None,
        version: Some(version),
        message: format!("Node.js {version} from {} ({asked})", node.display()),
        warning,
    })
}

/// What `node --version` says. The binary is the platform's own (image or host), not
/// the user's, so it runs outside the sandbox; with an empty environment, and killed
/// after `timeout`.
fn node_version(node: &Path, timeout: Duration) -> Result<NodeVersion, String> {
    let mut child = spawn_retrying(
        Command::new(node)
            .arg("--version")
            .env_clear()
            .env("PATH", SYSTEM_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    )
    .map_err(|e| format!("could not run {} --version: {e}", node.display()))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} --version did not answer in {}s",
                    node.display(),
                    timeout.as_secs_f32()
                ));
            }
            Err(e) => return Err(format!("could not run {} --version: {e}", node.display())),
        }
    };
    // The answer is a few bytes: it sits in the pipe until the child is gone.
    let mut stdout = String::new();
    if let Some(mut pipe) = child.stdout.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stdout);
    }
    if !status.success() {
        return Err(format!("{} --version failed ({status})", node.display()));
    }
    NodeVersion::parse(&stdout).map_err(|e| format!("{} --version printed {e}", node.display()))
}

/// Spawns, retrying while the executable is still open for writing elsewhere
/// (`ETXTBSY`): a file written just before, while another thread forked, stays
/// "busy" until that fork execs.
fn spawn_retrying(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deploysphere_core::node_version::node_requirement;
    use serde_json::json;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A fresh folder under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static COUNT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "deploysphere-node-{}-{}-{name}",
                std::process::id(),
                COUNT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        fn path(&self) -> &Path {
            &self.0
        }

        /// `rel` in this folder, links resolved, as [`NodeChoice::bin_dir`] has it.
        fn resolved(&self, rel: &str) -> PathBuf {
            std::fs::canonicalize(&self.0).unwrap().join(rel)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn script(path: &Path, body: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// `<major>/bin/node` for each version; with a VERSION file, or answering
    /// `--version` when `run` is set.
    fn image(versions: &[&str], run: bool) -> TempDir {
        let dir = TempDir::new("image");
        for version in versions {
            let major = version.split('.').next().unwrap();
            let root = dir.path().join(major);
            if run {
                script(&root.join("bin/node"), &format!("echo v{version}"));
            } else {
                script(&root.join("bin/node"), "exit 1");
                std::fs::write(root.join("VERSION"), format!("{version}\n")).unwrap();
            }
        }
        dir
    }

    fn platform() -> TempDir {
        image(&["20.20.2", "22.23.0", "24.17.0"], false)
    }

    fn engines(range: &str) -> NodeRequirement {
        node_requirement(Some(&json!({"engines": {"node": range}})), None, None).unwrap()
    }

    fn nvmrc(text: &str) -> NodeRequirement {
        node_requirement(None, Some(text), None).unwrap()
    }

    fn choose_image(
        requirement: Option<&NodeRequirement>,
        dir: &TempDir,
    ) -> Result<NodeChoice, String> {
        choose_with(
            requirement,
            dir.path(),
            "/nonexistent",
            Duration::from_secs(10),
        )
    }

    /// The system `node` in `bin` (a fake one), as if the versions folder were absent.
    fn choose_system(
        requirement: Option<&NodeRequirement>,
        bin: &TempDir,
    ) -> Result<NodeChoice, String> {
        let missing = bin.path().join("no-versions-here");
        let path = format!("{}:/nonexistent", bin.path().display());
        choose_with(requirement, &missing, &path, Duration::from_secs(10))
    }

    #[test]
    fn default_is_the_newest_install() {
        let dir = platform();
        let choice = choose_image(None, &dir).unwrap();
        assert_eq!(choice.bin_dir, Some(dir.resolved("24/bin")));
        assert_eq!(choice.version, Some(NodeVersion::new(24, 17, 0)));
        assert_eq!(choice.message, "Node.js 24.17.0 (default)");
        assert_eq!(choice.warning, None);
    }

    #[test]
    fn the_newest_satisfying_install_wins() {
        let dir = platform();
        let choice = choose_image(Some(&engines(">=20 <23")), &dir).unwrap();
        assert_eq!(choice.bin_dir, Some(dir.resolved("22/bin")));
        assert_eq!(
            choice.message,
            "Node.js 22.23.0 (engines.node in package.json: >=20 <23)"
        );
        assert_eq!(choice.warning, None);

        let choice = choose_image(Some(&nvmrc("lts/iron\n")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(20, 20, 2)));
        assert_eq!(choice.message, "Node.js 20.20.2 (.nvmrc: 20.x)");

        // Real package.json floors run on the newest line.
        for range in [
            ">=18.17.0",
            "^18.0.0 || >=20.0.0",
            ">=18.0",
            "^18.17.1 || ^20.3.0 || >=21.0.0",
        ] {
            let choice = choose_image(Some(&engines(range)), &dir).unwrap();
            assert_eq!(choice.version, Some(NodeVersion::new(24, 17, 0)), "{range}");
        }
        let choice = choose_image(Some(&engines("^18.13.0 || ^20.9.0")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(20, 20, 2)));
    }

    #[test]
    fn the_path_entry_is_the_linked_folder() {
        let dir = platform();
        let links = TempDir::new("links");
        let opt_node = links.path().join("node");
        std::os::unix::fs::symlink(dir.path(), &opt_node).unwrap();
        let choice = choose_with(None, &opt_node, "/nonexistent", Duration::from_secs(10)).unwrap();
        assert_eq!(choice.bin_dir, Some(dir.resolved("24/bin")));
    }

    #[test]
    fn nothing_satisfying_fails_the_build_with_the_list() {
        let dir = platform();
        let error = choose_image(Some(&engines(">=26")), &dir).unwrap_err();
        assert_eq!(
            error,
            "engines.node in package.json asks for \">=26\"; this platform has Node.js \
             20.20.2, 22.23.0, 24.17.0"
        );
        let error = choose_image(Some(&nvmrc("18")), &dir).unwrap_err();
        assert!(error.starts_with(".nvmrc asks for \"18\";"), "{error}");
    }

    #[test]
    fn a_pin_runs_on_its_major_line_with_a_warning() {
        let dir = platform();
        let choice = choose_image(Some(&nvmrc("v20.11.1\n")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(20, 20, 2)));
        assert_eq!(choice.bin_dir, Some(dir.resolved("20/bin")));
        assert_eq!(choice.message, "Node.js 20.20.2 (.nvmrc: 20.11.1)");
        assert_eq!(
            choice.warning.as_deref(),
            Some(
                "Node.js 20.20.2 does not satisfy .nvmrc \"20.11.1\"; this platform has one \
                 Node.js per major line (20.20.2, 22.23.0, 24.17.0) and runs the build on its 20.x"
            )
        );
        let choice = choose_image(Some(&engines("~22.3.0")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(22, 23, 0)));
        assert!(choice.warning.is_some());
        // The newest line the range allows.
        let choice = choose_image(Some(&engines(">=24.99 || 22.1.0")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(24, 17, 0)));
    }

    #[test]
    fn a_malformed_range_fails_the_build() {
        let dir = platform();
        let error = choose_image(Some(&engines(">=18 <")), &dir).unwrap_err();
        assert_eq!(
            error,
            "engines.node in package.json: \"<\" in the range \">=18 <\" is not understood: an \
             operator needs a version after it; write a version or range like 22, 22.x or >=20"
        );
        let error = choose_image(Some(&nvmrc("lts/unobtainium")), &dir).unwrap_err();
        assert!(error.starts_with(".nvmrc: \"lts/unobtainium\""), "{error}");
    }

    #[test]
    fn versions_are_read_by_running_node_without_a_version_file() {
        let dir = image(&["20.18.1", "22.12.0", "24.1.0"], true);
        let choice = choose_image(Some(&engines("22")), &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(22, 12, 0)));
        assert_eq!(choice.bin_dir, Some(dir.resolved("22/bin")));
        let error = choose_image(Some(&engines(">=26")), &dir).unwrap_err();
        assert!(
            error.ends_with("this platform has Node.js 20.18.1, 22.12.0, 24.1.0"),
            "{error}"
        );
    }

    #[test]
    fn folders_without_node_are_not_installs() {
        let dir = platform();
        std::fs::create_dir_all(dir.path().join("cache/bin")).unwrap();
        std::fs::write(dir.path().join("README"), "Node.js installs").unwrap();
        let choice = choose_image(None, &dir).unwrap();
        assert_eq!(choice.version, Some(NodeVersion::new(24, 17, 0)));

        let empty = TempDir::new("empty");
        let error = choose_image(None, &empty).unwrap_err();
        assert!(error.starts_with("no Node.js is installed in"), "{error}");
    }

    #[test]
    fn a_broken_install_is_an_error() {
        let dir = platform();
        script(
            &dir.path().join("25/bin/node"),
            "echo 'segfault' >&2; exit 139",
        );
        let error = choose_image(None, &dir).unwrap_err();
        assert!(error.contains("25 is unusable"), "{error}");
        assert!(error.contains("--version failed"), "{error}");

        let dir = platform();
        std::fs::write(dir.path().join("22/VERSION"), "twenty-two").unwrap();
        let error = choose_image(None, &dir).unwrap_err();
        assert!(error.contains("22 is unusable: VERSION"), "{error}");
    }

    #[test]
    fn a_hanging_node_times_out() {
        let dir = TempDir::new("hang");
        let node = dir.path().join("node");
        script(&node, "exec sleep 5");
        let started = Instant::now();
        let error = node_version(&node, Duration::from_millis(200)).unwrap_err();
        assert!(error.contains("did not answer"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(4));
    }

    #[test]
    fn system_node_that_does_not_satisfy_is_a_warning() {
        let bin = TempDir::new("system");
        script(&bin.path().join("node"), "echo v20.20.2");
        let choice = choose_system(Some(&nvmrc("22")), &bin).unwrap();
        assert_eq!(choice.bin_dir, None);
        assert_eq!(choice.version, Some(NodeVersion::new(20, 20, 2)));
        assert_eq!(
            choice.warning.as_deref(),
            Some(
                "Node.js 20.20.2 on this platform does not satisfy .nvmrc \"22\"; the build \
                 runs on it anyway"
            )
        );
        assert_eq!(
            choice.message,
            format!(
                "Node.js 20.20.2 from {}/node (.nvmrc: 22)",
                bin.path().display()
            )
        );

        let choice = choose_system(Some(&engines(">=18.17.0")), &bin).unwrap();
        assert_eq!(choice.warning, None);
        let choice = choose_system(None, &bin).unwrap();
        assert_eq!(choice.warning, None);
        assert!(choice.message.ends_with("(default)"), "{}", choice.message);
    }

    #[test]
    fn system_node_with_a_malformed_range_fails() {
        let bin = TempDir::new("system-malformed");
        script(&bin.path().join("node"), "echo v22.12.0");
        let error = choose_system(Some(&engines("^^22")), &bin).unwrap_err();
        assert!(
            error.starts_with("engines.node in package.json: \"^^22\""),
            "{error}"
        );

        let bin = TempDir::new("system-silent");
        script(&bin.path().join("node"), "echo hello");
        let error = choose_system(Some(&engines("^^22")), &bin).unwrap_err();
        assert!(error.contains("not understood"), "{error}");
    }

    #[test]
    fn system_node_that_does_not_say_its_version_is_a_warning() {
        let bin = TempDir::new("system-odd");
        script(&bin.path().join("node"), "echo hello");
        let choice = choose_system(Some(&engines("22")), &bin).unwrap();
        assert_eq!(choice.version, None);
        assert_eq!(choice.bin_dir, None);
        let warning = choice.warning.unwrap();
        assert!(
            warning.starts_with("could not tell which Node.js"),
            "{warning}"
        );
        assert!(warning.contains("\"hello\""), "{warning}");
    }

    #[test]
    fn no_system_node_is_an_error() {
        let bin = TempDir::new("system-none");
        let error = choose_system(None, &bin).unwrap_err();
        assert!(
            error.starts_with("Node.js is not installed here"),
            "{error}"
        );
        assert!(error.contains(VERSIONS_DIR_ENV), "{error}");
    }
}
