//! One build, phase by phase: fetch -> plan -> restore cache -> install -> build ->
//! collect output -> upload -> save cache. Each phase is a method with its own errors;
//! [`Build::phase`] times it, ends it in the log (`Installed dependencies in 12.4 s`)
//! and records it for the deployment's `phases`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use deploysphere_core::node_version::{NodeRequirement, node_requirement};
use deploysphere_core::plan::{Origin, Workspace, resolve_plan, resolve_root_dir};
use deploysphere_core::project_config::parse_project_config;
use deploysphere_core::{
    BuildEventKind, BuildPlan, BuildSpec, LogStream, PackageManager, Phase, validate,
};
use tokio::sync::mpsc;

use crate::cache::{self, CacheEntry, Restored, Saved};
use crate::node::NodeChoice;
use crate::report::Reporter;
use crate::sandbox::{self, Exit, Sandbox, WORKSPACE};
use crate::upload::{self, OutputFile, UploadStats};
use crate::{BuilderConfig, Failure, disk_full_note, node, source};

/// The system's CA certificates, which Node.js is told to trust too (a registry behind
/// a proxy with its own CA).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The install over a restored `node_modules` (see [`Build::run`]).
const NPM_OVER_CACHE: &str = "npm install --prefer-offline --no-audit --no-fund";

/// The phases, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Fetch,
    Plan,
    RestoreCache,
    Install,
    Build,
    Collect,
    Upload,
    SaveCache,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Fetch => "fetch",
            Step::Plan => "plan",
            Step::RestoreCache => "restore_cache",
            Step::Install => "install",
            Step::Build => "build",
            Step::Collect => "collect",
            Step::Upload => "upload",
            Step::SaveCache => "save_cache",
        }
    }

    /// How the log ends the phase when it succeeds; the cache phases say it
    /// themselves, with sizes.
    fn done(self) -> Option<&'static str> {
        match self {
            Step::Fetch => Some("Fetched the source"),
            Step::Plan => Some("Planned the build"),
            Step::Install => Some("Installed dependencies"),
            Step::Build => Some("Built the site"),
            Step::Collect => Some("Collected the output"),
            Step::Upload => Some("Uploaded the output"),
            Step::RestoreCache | Step::SaveCache => None,
        }
    }
}

/// The checked-out repository.
struct Checkout {
    dir: PathBuf,
    commit: String,
}

/// The checked-out source, planned.
struct Source {
    checkout: PathBuf,
    /// The app's folder (`root_dir`) inside the checkout.
    root: PathBuf,
    /// Where the install runs: the app's folder, or its monorepo's workspace root.
    install_root: PathBuf,
    /// Variables from the config file (netlify.toml `[build.environment]`, vercel.json
    /// `build.env`), under the project's own.
    file_env: BTreeMap<String, String>,
    /// The folder of the chosen Node.js, first on `PATH`; `None`: the system's.
    node_bin: Option<PathBuf>,
    /// The install command is detection's (not the project's or the config file's).
    install_detected: bool,
    /// What else the build cache's key holds: the Node.js line and the CPU.
    cache_variant: String,
}

pub(crate) struct Build<'a> {
    spec: &'a BuildSpec,
    config: &'a BuilderConfig,
    work: &'a Path,
    pub reporter: &'a mut Reporter,
    deadline: Instant,
    /// The phases that ran, with their durations.
    pub phases: Vec<Phase>,
    sandbox: Option<Sandbox>,
    /// Restored framework caches, waiting for the install step to end.
    framework_cache: Option<PathBuf>,
}

impl<'a> Build<'a> {
    pub fn new(
        spec: &'a BuildSpec,
        config: &'a BuilderConfig,
        work: &'a Path,
        reporter: &'a mut Reporter,
    ) -> Self {
        Build {
            spec,
            config,
            work,
            reporter,
            deadline: Instant::now() + Duration::from_secs(spec.limits.timeout_seconds),
            phases: Vec::new(),
            sandbox: None,
            framework_cache: None,
        }
    }

    /// Every phase in turn; the first failure ends the build. The cache phases never
    /// fail it: a cache that cannot be read or written costs time, not the deploy.
    pub async fn run(&mut self) -> Result<UploadStats, Failure> {
        let checkout = self.phase(Step::Fetch, async |b| b.fetch().await).await?;
        let (source, plan) = self
            .phase(Step::Plan, async |b| b.plan(checkout).await)
            .await?;
        let cache = self.cache_entry(&source, &plan).await;
        if let Some(entry) = &cache {
            self.phase(Step::RestoreCache, async |b| {
                b.restore_cache(entry).await;
                Ok(())
            })
            .await?;
        }
        let mut plan = plan;
        if let Some(framework) = &self.framework_cache
            && cache::move_dependencies(framework, &source.install_root)
        {
            let mut note = format!("Restored {}", cache::DEPENDENCIES);
            // `npm ci` deletes node_modules first; over one that the same package.json
            // and lockfile installed, `npm install` has next to nothing to do.
            if source.install_detected && plan.install_command.as_deref() == Some("npm ci") {
                plan.install_command = Some(NPM_OVER_CACHE.to_string());
                note.push_str(&format!(
                    " (installed from this package.json and lockfile): running {NPM_OVER_CACHE} over it instead of npm ci"
                ));
            }
            self.reporter.system(note).await;
        }
        if let Some(command) = &plan.install_command {
            self.phase(Step::Install, async |b| {
                let dir = source.install_root.clone();
                b.run_command("install", command, &dir, &source, &plan)
                    .await
            })
            .await?;
        }
        if let Some(framework) = self.framework_cache.take() {
            let moved = cache::move_into(&framework, &source.root);
            if !moved.is_empty() {
                if let Err(e) = sandbox::hand_over(&source.root, &moved) {
                    self.reporter
                        .system(format!("Warning: the framework caches stay unused: {e}"))
                        .await;
                }
                self.reporter
                    .system(format!("Restored framework caches: {}", moved.join(", ")))
                    .await;
            }
        }
        if let Some(command) = &plan.build_command {
            self.phase(Step::Build, async |b| {
                let dir = source.root.clone();
                b.run_command("build", command, &dir, &source, &plan).await
            })
            .await?;
        }
        let files = self
            .phase(Step::Collect, async |b| b.collect(&source, &plan))
            .await?;
        let stats = self
            .phase(Step::Upload, async |b| {
                b.upload(files, &plan.immutable_folders).await
            })
            .await?;
        if let Some(entry) = &cache {
            self.phase(Step::SaveCache, async |b| {
                b.save_cache(entry, &source).await;
                Ok(())
            })
            .await?;
        }
        Ok(stats)
    }

    /// Runs one phase: records how long it took, whatever its outcome, and ends it in
    /// the log when it succeeds.
    async fn phase<T>(
        &mut self,
        step: Step,
        body: impl AsyncFnOnce(&mut Self) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let started = Instant::now();
        let outcome = body(self).await;
        let elapsed = started.elapsed();
        self.phases.push(Phase {
            name: step.name().to_string(),
            ms: elapsed.as_millis() as u64,
        });
        if let (Ok(_), Some(done)) = (&outcome, step.done()) {
            self.reporter
                .system(format!("{done} in {:.1} s", elapsed.as_secs_f64()))
                .await;
        }
        outcome
    }

    async fn fetch(&mut self) -> Result<Checkout, Failure> {
        let (spec, config, work) = (self.spec, self.config, self.work);
        let source = validate::git_url(&spec.git_url, config.allow_local_sources)
            .map_err(|e| Failure(e.to_string()))?;
        validate::git_ref("ref", &spec.git_ref).map_err(|e| Failure(e.to_string()))?;
        let checkout = work.join("src");
        self.reporter
            .system(format!(
                "Cloning {} ({})",
                validate::redact_url(source.url()),
                spec.git_ref
            ))
            .await;
        let commit = source::checkout(
            self.reporter,
            source.url(),
            &spec.git_ref,
            &checkout,
            &work.join("git-home"),
            source::FetchRules {
                allow_private: config.allow_local_sources && spec.private_network,
                max_bytes: spec.limits.max_fetch_mb.saturating_mul(1024 * 1024),
            },
        )
        .await
        .map_err(|e| {
            Failure(format!(
                "could not clone the repository: {e}{}",
                disk_full_note(work)
            ))
        })?
        .map_err(|e| {
            Failure(format!(
                "could not clone {} at {}: {e}{}",
                validate::redact_url(source.url()),
                spec.git_ref,
                disk_full_note(work)
            ))
        })?;
        self.reporter
            .system(format!("Checked out commit {commit}"))
            .await;
        let dir = checkout
            .canonicalize()
            .map_err(|e| Failure(e.to_string()))?;
        Ok(Checkout { dir, commit })
    }

    /// A folder of the checkout, which must stay inside it.
    fn folder_of(checkout: &Path, relative: &str, name: &str) -> Result<PathBuf, Failure> {
        checkout
            .join(relative)
            .canonicalize()
            .ok()
            .filter(|p| p.starts_with(checkout) && p.is_dir())
            .ok_or_else(|| {
                Failure(format!(
                    "{name} {relative:?} is not a folder of the repository"
                ))
            })
    }

    /// Reads the config file (netlify.toml or vercel.json, in the project's `root_dir`
    /// or the repository's root), finds the app folder, detects the framework, and
    /// settles each setting: the project's, else the file's, else detection's.
    async fn plan(&mut self, checkout: Checkout) -> Result<(Source, BuildPlan), Failure> {
        let settings = &self.spec.settings;
        let app_dir = match &settings.root_dir {
            Some(dir) => Some(Self::folder_of(&checkout.dir, dir, "root_dir")?),
            None => None,
        };
        // The app folder's config file, else the repository root's (a monorepo's
        // netlify.toml at the top, as Netlify reads it).
        let config_dir = app_dir
            .iter()
            .find(|dir| {
                ["vercel.json", "netlify.toml"]
                    .iter()
                    .any(|f| dir.join(f).is_file())
            })
            .cloned()
            .unwrap_or_else(|| checkout.dir.clone());
        let read = |name: &str| std::fs::read_to_string(config_dir.join(name)).ok();
        let mut file = parse_project_config(
            read("vercel.json").as_deref(),
            read("netlify.toml").as_deref(),
        )
        .map_err(|e| Failure(format!("{e}")))?;
        if let Some(file) = &mut file {
            // netlify.toml's `[context.production]` (and the branch's) over `[build]`.
            let merged = file.build_for_context("production", &self.spec.git_ref);
            file.build = merged.build;
            file.environment = merged.environment;
            let shown = config_dir
                .strip_prefix(&checkout.dir)
                .ok()
                .filter(|p| !p.as_os_str().is_empty())
                .map(|p| format!("{}/", p.display()))
                .unwrap_or_default();
            self.reporter
                .system(format!(
                    "Reading build settings from {shown}{}",
                    file.file.name()
                ))
                .await;
            for warning in &file.warnings {
                self.reporter.system(format!("Warning: {warning}")).await;
            }
        }
        let root_setting = resolve_root_dir(settings, file.as_ref());
        let root_rel = root_setting.value.clone().unwrap_or_else(|| ".".into());
        let root = if let (Origin::Project, Some(dir)) = (root_setting.origin, &app_dir) {
            dir.clone()
        } else {
            Self::folder_of(&checkout.dir, &root_rel, "the root folder")?
        };
        let workspace_root = workspace_root(&checkout.dir, &root);
        let workspace_tree = workspace_root.as_ref().map(|dir| source::FsTree::new(dir));
        let workspace = workspace_root
            .as_ref()
            .zip(workspace_tree.as_ref())
            .map(|(dir, tree)| {
                let path = dir.strip_prefix(&checkout.dir).unwrap_or(Path::new(""));
                Workspace {
                    tree,
                    path: match path.as_os_str().is_empty() {
                        true => ".".to_string(),
                        false => path.display().to_string(),
                    },
                }
            });
        let (plan, chosen) = resolve_plan(
            &source::FsTree::new(&root),
            workspace.as_ref(),
            settings,
            file.as_ref(),
        )
        .map_err(|e| Failure(e.to_string()))?;
        if let Some(dir) = &plan.install_dir {
            self.reporter
                .system(format!(
                    "Workspace root: {dir} (the monorepo the app belongs to): the install runs there"
                ))
                .await;
        }
        self.reporter
            .system(format!(
                "Detected {} ({})",
                plan.framework, plan.framework_name
            ))
            .await;
        for setting in std::iter::once(&root_setting).chain(&chosen) {
            self.reporter
                .system(format!("Build setting {setting}"))
                .await;
        }
        if let Some(manager) = plan.package_manager
            && plan.install_command.is_some()
        {
            self.reporter
                .system(format!(
                    "Package manager: {}{} ({}){}",
                    manager.as_str(),
                    plan.package_manager_version
                        .as_deref()
                        .map(|v| format!(" {v}"))
                        .unwrap_or_default(),
                    plan.package_manager_source.as_deref().unwrap_or("detected"),
                    if manager.through_corepack() {
                        ", run through corepack"
                    } else {
                        ""
                    }
                ))
                .await;
        }
        let file_env = file.map(|f| f.environment).unwrap_or_default();
        let node = match plan.package_manager {
            Some(_) => Some(self.choose_node(&checkout.dir, &root, &file_env).await?),
            None => None,
        };
        let node_bin = node.as_ref().and_then(|n| n.bin_dir.clone());
        // Native addons in node_modules are built for one Node.js line and CPU.
        let node_line = node.as_ref().and_then(|n| n.version).map_or_else(
            || "node-unknown".to_string(),
            |v| format!("node{}", v.major),
        );
        let _ = self
            .reporter
            .event(BuildEventKind::Planned {
                commit_sha: checkout.commit.clone(),
                plan: plan.clone(),
            })
            .await;
        let detected = |name: &str| {
            chosen
                .iter()
                .any(|s| s.name == name && s.origin == Origin::Detected)
        };
        // A build command of the user's own may bring its own tool.
        if let Some(tool) = &plan.tool
            && plan.build_command.is_some()
            && detected("build command")
            && !installed(tool)
        {
            return Err(Failure(format!(
                "{tool} is not installed on this platform: {} sites need it to build (set a build command of your own, or deploy the built folder)",
                plan.framework_name
            )));
        }
        let install_root = match &plan.install_dir {
            Some(_) => workspace_root.clone().unwrap_or_else(|| root.clone()),
            None => root.clone(),
        };
        let source = Source {
            checkout: checkout.dir,
            root,
            install_root,
            file_env,
            node_bin,
            cache_variant: format!("{node_line}-{}", std::env::consts::ARCH),
            install_detected: detected("install command"),
        };
        Ok((source, plan))
    }

    /// The Node.js of the build, from `.nvmrc`, `.node-version`, `NODE_VERSION` (the
    /// project's variables or the config file's, as on Netlify) or `engines.node`.
    async fn choose_node(
        &mut self,
        checkout: &Path,
        root: &Path,
        file_env: &BTreeMap<String, String>,
    ) -> Result<NodeChoice, Failure> {
        let read = |name: &str| std::fs::read_to_string(root.join(name)).ok();
        let package = read("package.json").and_then(|text| serde_json::from_str(&text).ok());
        // The app folder's version files, else the repository root's (a monorepo's).
        let read_up =
            |name: &str| read(name).or_else(|| std::fs::read_to_string(checkout.join(name)).ok());
        let (nvmrc, node_version) = (read_up(".nvmrc"), read_up(".node-version"));
        let from_files = node_requirement(None, nvmrc.as_deref(), node_version.as_deref());
        let from_variable = self
            .spec
            .env
            .get("NODE_VERSION")
            .map(|v| v.value.clone())
            .or_else(|| file_env.get("NODE_VERSION").cloned())
            .filter(|v| !v.trim().is_empty())
            .map(|range| NodeRequirement {
                range: range.trim().trim_start_matches('v').to_string(),
                source: "NODE_VERSION",
            });
        let requirement = from_files
            .or(from_variable)
            .or_else(|| node_requirement(package.as_ref(), None, None));
        let versions = node::versions_dir();
        let choice =
            tokio::task::spawn_blocking(move || node::choose(requirement.as_ref(), &versions))
                .await
                .map_err(|e| Failure(format!("could not choose the Node.js version: {e}")))?
                .map_err(Failure)?;
        self.reporter.system(&choice.message).await;
        if let Some(warning) = &choice.warning {
            self.reporter.system(format!("Warning: {warning}")).await;
        }
        Ok(choice)
    }

    /// This build's cache entry, or `None` when the cache is off (for the project or
    /// this deployment) or there is nothing to cache; the log says which.
    async fn cache_entry(&mut self, source: &Source, plan: &BuildPlan) -> Option<CacheEntry> {
        let entry = CacheEntry::for_build(
            &self.spec.project_id,
            plan,
            &source.install_root,
            &source.cache_variant,
            self.config.cache_cap_bytes,
        )?;
        let reason = if self.spec.no_cache {
            Some("this deployment asked for a build without it (no_cache)")
        } else if self.spec.settings.build_cache == Some(false) {
            Some("the project turned it off (build.build_cache = false)")
        } else {
            None
        };
        if let Some(reason) = reason {
            self.reporter
                .system(format!("Build cache skipped: {reason}"))
                .await;
            return None;
        }
        Some(entry)
    }

    /// What is left of the build's wall-clock limit.
    fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    fn tools(&self) -> PathBuf {
        self.work.join("tools")
    }

    async fn restore_cache(&mut self, entry: &CacheEntry) {
        let started = Instant::now();
        let tools_cache = self.tools().join("cache");
        let store = self.config.store();
        let staging = self.work.join("cache");
        let restore = cache::restore(&store, entry, &tools_cache, &staging);
        match within(self.time_left(), restore).await {
            Ok(Restored::Missing) => {
                self.reporter
                    .system("No build cache for this lockfile yet: installing from scratch")
                    .await;
            }
            Ok(Restored::Found { bytes, framework }) => {
                self.framework_cache = Some(framework);
                self.reporter
                    .system(format!(
                        "Restored build cache ({}) in {}",
                        cache::megabytes(bytes),
                        cache::seconds(started)
                    ))
                    .await;
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tools_cache);
                self.reporter
                    .system(format!(
                        "Warning: the build cache could not be restored ({e}); installing from scratch"
                    ))
                    .await;
            }
        }
    }

    async fn save_cache(&mut self, entry: &CacheEntry, source: &Source) {
        let started = Instant::now();
        let store = self.config.store();
        let (tools_cache, staging) = (self.tools().join("cache"), self.work.join("cache"));
        let save = cache::save(
            &store,
            entry,
            &tools_cache,
            &source.install_root,
            &source.root,
            &staging,
        );
        let saved = within(self.time_left(), save).await;
        let message = match saved {
            Ok(Saved::Stored { bytes, evicted }) => format!(
                "Saved build cache ({}) in {}{}",
                cache::megabytes(bytes),
                cache::seconds(started),
                match evicted {
                    0 => String::new(),
                    n => format!("; evicted {n} older cache(s) over the project's cap"),
                }
            ),
            Ok(Saved::TooLarge { bytes }) => format!(
                "Build cache not saved: it is {}, over the project's cap of {}",
                cache::megabytes(bytes),
                cache::megabytes(entry.cap_bytes())
            ),
            Ok(Saved::Empty) => "Build cache not saved: there was nothing to keep".to_string(),
            Err(e) => format!("Warning: the build cache could not be saved: {e}"),
        };
        self.reporter.system(message).await;
    }

    /// The sandbox of the user commands, prepared on first use.
    async fn sandbox(&mut self, plan: &BuildPlan, source: &Source) -> Result<&Sandbox, Failure> {
        if self.sandbox.is_none() {
            let sandbox = self.prepare_sandbox(plan, source).await?;
            self.reporter
                .system(sandbox.describe(&self.spec.limits))
                .await;
            self.sandbox = Some(sandbox);
        }
        Ok(self.sandbox.as_ref().expect("set just above"))
    }

    async fn prepare_sandbox(
        &mut self,
        plan: &BuildPlan,
        source: &Source,
    ) -> Result<Sandbox, Failure> {
        let tools = self.tools();
        std::fs::create_dir_all(tools.join("bin"))
            .and_then(|()| std::fs::create_dir_all(tools.join("cache")))
            .map_err(|e| Failure(format!("could not prepare the build's tools folder: {e}")))?;
        let mut path = "/usr/local/bin:/usr/bin:/bin".to_string();
        if let Some(node) = &source.node_bin {
            path = format!("{}:{path}", node.display());
        }
        let mut env: Vec<(String, String)> = vec![
            ("HOME".into(), "/tmp/home".into()),
            ("CI".into(), "1".into()),
            ("DEPLOYSPHERE".into(), "1".into()),
            ("LANG".into(), "C.UTF-8".into()),
        ];
        if Path::new(CA_BUNDLE).exists() {
            env.push(("NODE_EXTRA_CA_CERTS".into(), CA_BUNDLE.into()));
        }
        if let Some(manager) = plan.package_manager {
            env.extend(cache::cache_env(
                manager,
                &format!("{}/cache", sandbox::TOOLS),
            ));
        }
        if plan.package_manager == Some(PackageManager::Bun) {
            let version = plan.package_manager_version.as_deref().unwrap_or("latest");
            let installed = tokio::time::timeout(self.time_left(), bun_tool(&tools, version))
                .await
                .map_err(|_| {
                    Failure(format!(
                        "could not fetch bun {version} before the build's time limit"
                    ))
                })?
                .map_err(Failure)?;
            self.reporter.system(installed).await;
            path = format!("{}/bin:{path}", sandbox::TOOLS);
        }
        if plan.package_manager.is_some_and(|m| m.through_corepack()) {
            corepack_shims(&tools, source.node_bin.as_deref())
                .await
                .map_err(Failure)?;
            path = format!("{}/bin:{path}", sandbox::TOOLS);
            env.extend([
                ("COREPACK_ENABLE_DOWNLOAD_PROMPT".into(), "0".into()),
                // Yarn 2+ from the npm registry (@yarnpkg/cli-dist) rather than
                // repo.yarnpkg.com: one registry for every package manager.
                (
                    "COREPACK_NPM_REGISTRY".into(),
                    "https://registry.npmjs.org".into(),
                ),
                // Registry mirrors often strip npm's signatures, which corepack then
                // refuses; the tarball is still checked against the registry's
                // integrity hash, and against a `+sha512.` pin in packageManager.
                ("COREPACK_INTEGRITY_KEYS".into(), "0".into()),
            ]);
        }
        env.insert(0, ("PATH".into(), path));
        let project_env = &self.spec.env;
        env.extend(
            source
                .file_env
                .iter()
                .filter(|(k, _)| !project_env.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        env.extend(
            project_env
                .iter()
                .map(|(k, v)| (k.clone(), v.value.clone())),
        );
        Sandbox::new(
            &self.spec.deployment_id,
            &source.checkout,
            Some(&tools),
            env,
            &self.spec.limits,
        )
        .map_err(|e| Failure(format!("could not prepare the sandbox: {e}")))
    }

    /// Runs one user command in the sandbox, in `dir` of the checkout, its output into
    /// the log.
    async fn run_command(
        &mut self,
        name: &str,
        command: &str,
        dir: &Path,
        source: &Source,
        plan: &BuildPlan,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        self.sandbox(plan, source).await?;
        self.reporter
            .system(format!("Running {name} command: {command}"))
            .await;
        let workdir = Path::new(WORKSPACE)
            .join(dir.strip_prefix(&source.checkout).unwrap_or(Path::new("")))
            .display()
            .to_string();
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        let (tx, mut rx) = mpsc::channel::<(LogStream, String)>(1024);
        let sandbox = self.sandbox.as_ref().expect("prepared above");
        let run = sandbox.run(command, &workdir, remaining, tx);
        tokio::pin!(run);
        let mut telling: Option<String> = None;
        let mut note = |line: &str| {
            if telling.is_none() {
                telling = telling_error(line);
            }
        };
        let exit = loop {
            tokio::select! {
                Some((stream, line)) = rx.recv() => {
                    note(&line);
                    self.reporter.line(stream, &line).await;
                }
                exit = &mut run => break exit,
            }
        };
        while let Ok((stream, line)) = rx.try_recv() {
            note(&line);
            self.reporter.line(stream, &line).await;
        }
        let said = telling.map(|line| format!(": {line}")).unwrap_or_default();
        match exit {
            Ok((Exit::Code(0), _))
                if !cache::is_real_path(&source.checkout, &source.root)
                    || !cache::is_real_path(&source.checkout, &source.install_root) =>
            {
                // What the builder does next (caches, output) must stay in the checkout.
                Err(Failure(format!(
                    "the {name} command replaced the app folder (or a folder above it) by a link; nothing was uploaded"
                )))
            }
            Ok((Exit::Code(0), command_time)) => {
                let own = command_time.as_secs_f64();
                let setup = started.elapsed().as_secs_f64() - own;
                self.reporter
                    .system(format!(
                        "The {name} command finished in {own:.3} s (sandbox set-up {setup:.3} s)"
                    ))
                    .await;
                Ok(())
            }
            Ok((exit, _)) => Err(Failure(format!(
                "the {name} command {exit}{said}{}",
                disk_full_note(self.work)
            ))),
            Err(e) => Err(Failure(format!(
                "the {name} command could not run: {e}{}",
                disk_full_note(self.work)
            ))),
        }
    }

    /// The files of the output folder, which must be a real folder of the checkout.
    fn collect(&mut self, source: &Source, plan: &BuildPlan) -> Result<Vec<OutputFile>, Failure> {
        let output = source.root.join(&plan.output_dir);
        // The build may have replaced the output folder by a link: it must stay inside.
        let output = match output.canonicalize() {
            Ok(real) if real.starts_with(&source.checkout) && real.is_dir() => real,
            Ok(real) if !real.starts_with(&source.checkout) => {
                return Err(Failure(format!(
                    "the output folder {:?} is a link that points outside the repository; nothing was uploaded",
                    plan.output_dir
                )));
            }
            _ => {
                return Err(Failure(format!(
                    "the output folder {:?} does not exist after the build",
                    plan.output_dir
                )));
            }
        };
        let files = upload::collect(&output).map_err(Failure)?;
        if files.is_empty() {
            return Err(Failure(format!(
                "the output folder {:?} is empty",
                plan.output_dir
            )));
        }
        Ok(files)
    }

    async fn upload(
        &mut self,
        files: Vec<OutputFile>,
        immutable_folders: &[String],
    ) -> Result<UploadStats, Failure> {
        let _ = self.reporter.event(BuildEventKind::Uploading).await;
        self.reporter
            .system(format!("Uploading {} files", files.len()))
            .await;
        let store = self.config.store();
        upload::upload(&store, &self.spec.deployment_id, files, immutable_folders)
            .await
            .map_err(|e| Failure(format!("upload failed: {e}")))
    }
}

/// Puts corepack's pnpm and yarn shims in `tools/bin`: inside the sandbox they run the
/// version the project pins in `packageManager` (downloaded into `COREPACK_HOME`, in
/// the build cache), or corepack's default.
async fn corepack_shims(tools: &Path, node_bin: Option<&Path>) -> Result<(), String> {
    let bin = tools.join("bin");
    std::fs::create_dir_all(&bin)
        .map_err(|e| format!("could not prepare the package manager: {e}"))?;
    let corepack = node_bin.map_or_else(|| PathBuf::from("corepack"), |dir| dir.join("corepack"));
    let output = tokio::process::Command::new(corepack)
        .args(["enable", "--install-directory"])
        .arg(&bin)
        .args(["pnpm", "yarn"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .await
        .map_err(|e| {
            format!("corepack is not installed on this platform ({e}): pnpm and yarn need it")
        })?;
    if !output.status.success() {
        return Err(format!(
            "corepack could not set up pnpm and yarn: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// A cache step bounded by the build's time left: past it, the step is an error (the
/// build goes on without the cache, or ends on time).
async fn within<T>(
    left: Duration,
    step: impl std::future::Future<Output = Result<T, cache::CacheError>>,
) -> Result<T, cache::CacheError> {
    tokio::time::timeout(left, step).await.unwrap_or_else(|_| {
        Err(cache::CacheError::Other(
            "the build's time limit came first".into(),
        ))
    })
}

/// Installs bun `version` (as `packageManager` pins it, else `latest`) from its npm
/// package for this machine (`@oven/bun-linux-x64`, `-baseline` without AVX2,
/// `-aarch64`) into `tools/bun`, with `bun` and `bunx` in `tools/bin`. It runs outside
/// the sandbox: it only fetches that one package, whose download lands in the build
/// cache with npm's own. Returns the log line.
async fn bun_tool(tools: &Path, version: &str) -> Result<String, String> {
    let package = match std::env::consts::ARCH {
        "x86_64" => {
            let avx2 = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|c| c.contains(" avx2"));
            if avx2 {
                "@oven/bun-linux-x64"
            } else {
                "@oven/bun-linux-x64-baseline"
            }
        }
        "aarch64" => "@oven/bun-linux-aarch64",
        arch => {
            return Err(format!(
                "bun is not available for this platform's CPU ({arch})"
            ));
        }
    };
    let prefix = tools.join("bun");
    // A cache of its own, new and empty: the build cache's npm folder is the previous
    // build's to write, and this npm runs outside the sandbox.
    let npm_cache = tools.with_file_name("bun-npm-cache");
    let mut npm = tokio::process::Command::new("npm");
    npm.env_clear().kill_on_drop(true);
    let ca = Path::new(CA_BUNDLE);
    if ca.exists() {
        npm.env("NODE_EXTRA_CA_CERTS", ca);
    }
    let output = npm
        .args([
            "install",
            "--no-save",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--ignore-scripts",
            "--prefer-online",
            "--prefix",
        ])
        .arg(&prefix)
        .arg(format!("{package}@{version}"))
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", &npm_cache)
        .env("npm_config_cache", &npm_cache)
        .output()
        .await
        .map_err(|e| {
            format!("npm is not installed on this platform ({e}): bun is fetched with it")
        })?;
    if !output.status.success() {
        return Err(format!(
            "could not fetch bun {version} ({package}) from the npm registry: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    let bin = tools.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("could not install bun: {e}"))?;
    let binary = Path::new("../bun/node_modules")
        .join(package)
        .join("bin/bun");
    for name in ["bun", "bunx"] {
        let link = bin.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&binary, &link)
            .map_err(|e| format!("could not install bun: {e}"))?;
    }
    Ok(format!(
        "Installed bun {version} from the npm registry ({package})"
    ))
}

/// The line of a failed command's output that says what went wrong, in the tool's
/// own words: the first that reads as an error sentence (at least six words, naming an
/// error or a refusal), without colour codes, at most 300 characters. Package managers
/// say why a frozen install refused (`npm ci` out of sync with package.json, pnpm's
/// `ERR_PNPM_OUTDATED_LOCKFILE`, yarn's "explicitly forbidden") before pages of help.
fn telling_error(line: &str) -> Option<String> {
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        plain.push(c);
    }
    let plain = plain.trim();
    let lower = plain.to_lowercase();
    let names_error = ["error", "err_", "forbidden", "failed"]
        .iter()
        .any(|word| lower.contains(word));
    let sentence = plain.split_whitespace().count() >= 6;
    (names_error && sentence && !lower.contains("complete log of this run")).then(|| {
        let mut cut: String = plain.chars().take(300).collect();
        if cut.len() < plain.len() {
            cut.push('…');
        }
        cut
    })
}

/// The closest folder above the app folder, up to the checkout's root, that declares
/// workspaces (see [`Workspace::declared_in`]); `None` for an app at the root or
/// outside any.
fn workspace_root(checkout: &Path, root: &Path) -> Option<PathBuf> {
    root.ancestors()
        .skip(1)
        .take_while(|dir| dir.starts_with(checkout))
        .find(|dir| Workspace::declared_in(&source::FsTree::new(dir)))
        .map(Path::to_path_buf)
}

/// Whether a program is on the sandbox's `PATH` (which sees the host's `/usr`).
fn installed(tool: &str) -> bool {
    ["/usr/local/bin", "/usr/bin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).is_file())
}

#[cfg(test)]
mod tests {
    use super::telling_error;

    /// Real messages of frozen installs that disagree with package.json, and lines that
    /// are not the reason.
    #[test]
    fn the_reason_line_of_a_failed_install_is_found() {
        for (line, told) in [
            (
                "npm error `npm ci` can only install packages when your package.json and package-lock.json or npm-shrinkwrap.json are in sync. Please update your lock file with `npm install` before continuing.",
                true,
            ),
            (
                " ERR_PNPM_OUTDATED_LOCKFILE  Cannot install with \"frozen-lockfile\" because pnpm-lock.yaml is not up to date with <ROOT>/package.json",
                true,
            ),
            (
                "\u{1b}[94m➤\u{1b}[39m YN0028: │ The lockfile would have been modified by this install, which is explicitly forbidden.",
                true,
            ),
            (
                "error Your lockfile needs to be updated, but yarn was run with `--frozen-lockfile`.",
                true,
            ),
            ("error: lockfile had changes, but lockfile is frozen", true),
            ("npm error code EUSAGE", false),
            ("npm error", false),
            (
                "npm error A complete log of this run can be found in: /tmp/home/.npm/_logs/x.log",
                false,
            ),
            ("added 10 packages in 2s", false),
        ] {
            assert_eq!(telling_error(line).is_some(), told, "{line}");
        }
        assert_eq!(
            telling_error("\u{1b}[94m➤\u{1b}[39m YN0028: │ The lockfile would have been modified by this install, which is explicitly forbidden.").unwrap(),
            "➤ YN0028: │ The lockfile would have been modified by this install, which is explicitly forbidden."
        );
    }
}
