//! Framework detection: a source tree in, a [`BuildPlan`] out. Planning is data;
//! running the plan is the builder's job. The frameworks are the table of
//! [`crate::presets`]; this module adds the package manager and its commands.

use serde::{Deserialize, Serialize};

use crate::project_config::{ConfigBuild, ConfigFile, ProjectConfig};

use crate::presets::{self, AppSource, Build};

/// A project's build settings; every field overrides what detection would choose.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSettings {
    /// Folder of the repository that holds the app (monorepos); default the root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_command: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_command: Option<String>,
    /// Folder, relative to `root_dir`, that holds the built site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<String>,
    /// Wall-clock limit of the build in seconds (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
    /// `false` turns the build cache off for this project (default on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_cache: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Npm,
    Pnpm,
    Yarn,
    Bun,
}

impl PackageManager {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pnpm => "pnpm",
            Self::Yarn => "yarn",
            Self::Bun => "bun",
        }
    }

    fn parse(name: &str) -> Option<PackageManager> {
        [Self::Npm, Self::Pnpm, Self::Yarn, Self::Bun]
            .into_iter()
            .find(|manager| manager.as_str() == name)
    }

    /// Its lockfiles' names (`bun.lock` and the older `bun.lockb` for bun).
    pub fn lockfiles(self) -> Vec<&'static str> {
        LOCKFILES
            .iter()
            .filter(|(_, manager)| *manager == self)
            .map(|(file, _)| *file)
            .collect()
    }

    /// Whether the build runs it through corepack (which fetches the version the
    /// project pins): pnpm and yarn; npm comes with Node, bun is not a corepack tool.
    pub fn through_corepack(self) -> bool {
        matches!(self, Self::Pnpm | Self::Yarn)
    }

    /// `version` is the one `packageManager` pins, if any: Yarn 2 and later ("berry")
    /// spell a frozen install `--immutable`.
    fn install_command(self, has_lockfile: bool, version: Option<&str>) -> &'static str {
        let berry = version
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok())
            .is_some_and(|major| major >= 2);
        match (self, has_lockfile) {
            (Self::Npm, true) => "npm ci",
            (Self::Npm, false) => "npm install",
            (Self::Pnpm, _) => "pnpm install --frozen-lockfile",
            (Self::Yarn, _) if berry => "yarn install --immutable",
            (Self::Yarn, _) => "yarn install --frozen-lockfile",
            (Self::Bun, _) => "bun install --frozen-lockfile",
        }
    }

    /// A command of a package in node_modules (`next build`), when package.json has no
    /// script for it.
    fn exec_command(self, command: &str) -> String {
        match self {
            Self::Npm => format!("npx {command}"),
            Self::Pnpm => format!("pnpm exec {command}"),
            Self::Yarn => format!("yarn run {command}"),
            Self::Bun => format!("bun run {command}"),
        }
    }

    fn run_command(self, script: &str) -> String {
        match self {
            Self::Npm => format!("npm run {script}"),
            Self::Pnpm => format!("pnpm run {script}"),
            Self::Yarn => format!("yarn run {script}"),
            Self::Bun => format!("bun run {script}"),
        }
    }
}

/// What the builder will run, in `root_dir`, and where the output will be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildPlan {
    /// The id of the preset detection chose: `nextjs`, `vite`, `hugo`, `node`,
    /// `static`, … (see [`presets::PRESETS`]).
    pub framework: String,
    /// Its display name, `Next.js (static export)`; `Vite (React)` names the UI library.
    #[serde(default)]
    pub framework_name: String,
    pub package_manager: Option<PackageManager>,
    /// The version `packageManager` in package.json pins (`9.1.1`), if it does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_manager_version: Option<String>,
    /// Why this package manager: `packageManager in package.json`, the lockfile's
    /// name, or `no lockfile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub package_manager_source: Option<String>,
    pub install_command: Option<String>,
    pub build_command: Option<String>,
    /// Relative to `root_dir`; `.` is the root folder itself.
    pub output_dir: String,
    /// URL folders of the output that hold only content-hashed files (`/_next/static/`),
    /// served immutable: see [`crate::manifest::cache_control_in`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub immutable_folders: Vec<String>,
    /// The program outside node_modules the build command runs (`hugo`), which the
    /// builder must find installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Where the install runs, relative to the repository's root, when it is not the
    /// app folder: the monorepo's workspace root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<String>,
}

/// Read access to a checked-out source tree, paths relative to the app's root folder.
pub trait SourceTree {
    fn exists(&self, path: &str) -> bool;
    fn read_to_string(&self, path: &str) -> Option<String>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("package.json is not valid JSON: {0}")]
pub struct PlanError(pub String);

/// A monorepo's root above the app folder: the folder whose package.json declares
/// `workspaces` (npm, yarn, bun) or that has a `pnpm-workspace.yaml`. The package
/// manager and the install come from it, and the install runs there.
pub struct Workspace<'a> {
    pub tree: &'a dyn SourceTree,
    /// The folder, relative to the repository's root (`.` for the root itself).
    pub path: String,
}

impl Workspace<'_> {
    /// Whether a folder with these files is a workspace root.
    pub fn declared_in(tree: &dyn SourceTree) -> bool {
        tree.exists("pnpm-workspace.yaml")
            || tree
                .read_to_string("package.json")
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .is_some_and(|package| package.get("workspaces").is_some())
    }
}

fn read_package(tree: &dyn SourceTree) -> Result<Option<serde_json::Value>, PlanError> {
    tree.read_to_string("package.json")
        .map(|text| serde_json::from_str(&text).map_err(|e| PlanError(e.to_string())))
        .transpose()
}

/// Detects the framework and package manager of the tree and returns the plan, with
/// `settings` overriding each detected field.
pub fn detect_plan(
    tree: &dyn SourceTree,
    settings: &BuildSettings,
) -> Result<BuildPlan, PlanError> {
    detect_plan_in(tree, None, settings)
}

/// [`detect_plan`] for an app that may be one package of a `workspace`: the framework
/// is the app's, the package manager and install are the workspace's.
pub fn detect_plan_in(
    tree: &dyn SourceTree,
    workspace: Option<&Workspace>,
    settings: &BuildSettings,
) -> Result<BuildPlan, PlanError> {
    let package = read_package(tree)?;
    let app = App {
        tree,
        package: package.as_ref(),
    };
    let preset = presets::detect(&app);
    let node = match (workspace, &package) {
        (Some(workspace), Some(_)) => {
            let root_package = read_package(workspace.tree)?.unwrap_or_default();
            Some(node_setup(workspace.tree, &root_package))
        }
        _ => package.as_ref().map(|package| node_setup(tree, package)),
    };
    let manager = node.as_ref().map(|node| node.manager);
    let build_command = build_command(preset.build, &app, manager);
    let mut plan = BuildPlan {
        framework: preset.id.into(),
        framework_name: preset.display_name(&app),
        package_manager: manager,
        package_manager_version: node.as_ref().and_then(|node| node.version.clone()),
        package_manager_source: node.as_ref().map(|node| node.source.clone()),
        install_command: node.and_then(|node| node.install_command),
        build_command,
        output_dir: preset.output_dir(&app),
        immutable_folders: preset
            .immutable_folders
            .iter()
            .map(|folder| folder.to_string())
            .collect(),
        tool: preset.tool.map(str::to_string),
        install_dir: workspace
            .filter(|_| package.is_some())
            .map(|w| w.path.clone()),
    };
    if let Some(install) = &settings.install_command {
        plan.install_command = non_empty(install);
    }
    if let Some(build) = &settings.build_command {
        plan.build_command = non_empty(build);
    }
    if let Some(output) = &settings.output_dir {
        plan.output_dir = output.clone();
    }
    Ok(plan)
}

/// Where one build setting of a plan came from, in the order they win.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The project's build settings (the API).
    Project,
    /// The repository's `netlify.toml` or `vercel.json`.
    File(ConfigFile),
    /// Framework detection, or the default.
    Detected,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Project => f.write_str("project settings"),
            Origin::File(file) => f.write_str(file.name()),
            Origin::Detected => f.write_str("detected"),
        }
    }
}

/// One setting of a plan as the build log shows it: `build command: pnpm build
/// (netlify.toml)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: &'static str,
    /// `None` when the plan runs no such command.
    pub value: Option<String>,
    pub origin: Origin,
}

impl std::fmt::Display for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value = self.value.as_deref().unwrap_or("(none)");
        write!(f, "{}: {value} ({})", self.name, self.origin)
    }
}

/// The app folder of the repository: the project's `root_dir`, else the config file's
/// (netlify.toml `base`), else the root.
pub fn resolve_root_dir(settings: &BuildSettings, file: Option<&ProjectConfig>) -> Setting {
    let (value, origin) = match (
        &settings.root_dir,
        file.and_then(|f| f.build.root_dir.as_ref()),
    ) {
        (Some(dir), _) => (dir.clone(), Origin::Project),
        (None, Some(dir)) => (
            dir.clone(),
            Origin::File(file.map_or(ConfigFile::NetlifyToml, |f| f.file)),
        ),
        (None, None) => (".".to_string(), Origin::Detected),
    };
    Setting {
        name: "root folder",
        value: Some(value),
        origin,
    }
}

/// The plan of the app in `tree` with each command and the output folder taken from
/// the project's settings, else the config file, else detection, and where each came
/// from. A command set to "" (in the settings or the file) runs nothing.
pub fn resolve_plan(
    tree: &dyn SourceTree,
    workspace: Option<&Workspace>,
    settings: &BuildSettings,
    file: Option<&ProjectConfig>,
) -> Result<(BuildPlan, Vec<Setting>), PlanError> {
    let mut plan = detect_plan_in(tree, workspace, &BuildSettings::default())?;
    let from_file = |field: fn(&ConfigBuild) -> &Option<String>| {
        file.and_then(|f| {
            field(&f.build)
                .clone()
                .map(|value| (value, Origin::File(f.file)))
        })
    };
    let pick = |project: &Option<String>, field: fn(&ConfigBuild) -> &Option<String>| {
        project
            .clone()
            .map(|value| (value, Origin::Project))
            .or_else(|| from_file(field))
    };
    // Each command: the chosen value ("" runs nothing), else detection's.
    let settle = |name, slot: &mut Option<String>, chosen: Option<(String, Origin)>| {
        let origin = match chosen {
            Some((command, origin)) => {
                *slot = non_empty(&command);
                origin
            }
            None => Origin::Detected,
        };
        Setting {
            name,
            value: slot.clone(),
            origin,
        }
    };
    let mut chosen = vec![
        settle(
            "install command",
            &mut plan.install_command,
            pick(&settings.install_command, |b| &b.install_command),
        ),
        settle(
            "build command",
            &mut plan.build_command,
            pick(&settings.build_command, |b| &b.build_command),
        ),
    ];
    let origin = match pick(&settings.output_dir, |b| &b.output_dir) {
        Some((folder, origin)) => {
            plan.output_dir = folder;
            origin
        }
        None => Origin::Detected,
    };
    chosen.push(Setting {
        name: "output folder",
        value: Some(plan.output_dir.clone()),
        origin,
    });
    Ok((plan, chosen))
}

fn non_empty(command: &str) -> Option<String> {
    let command = command.trim();
    (!command.is_empty()).then(|| command.to_string())
}

/// Lockfiles, in the order they decide when `packageManager` does not.
const LOCKFILES: &[(&str, PackageManager)] = &[
    ("pnpm-lock.yaml", PackageManager::Pnpm),
    ("yarn.lock", PackageManager::Yarn),
    ("bun.lockb", PackageManager::Bun),
    ("bun.lock", PackageManager::Bun),
    ("package-lock.json", PackageManager::Npm),
];

/// `pnpm@9.1.1` or `pnpm@9.1.1+sha512.…` (corepack's format) -> (pnpm, `9.1.1`);
/// `None` for anything else.
fn parse_package_manager_field(field: &str) -> Option<(PackageManager, String)> {
    let (name, version) = field.trim().split_once('@')?;
    let version = version.split('+').next()?;
    let valid = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
    Some((PackageManager::parse(name)?, version.to_string())).filter(|_| valid)
}

/// The app as presets see it: its files and its package.json, if it has one.
struct App<'a> {
    tree: &'a dyn SourceTree,
    package: Option<&'a serde_json::Value>,
}

impl AppSource for App<'_> {
    fn has_dependency(&self, name: &str) -> bool {
        self.package.is_some_and(|package| {
            ["dependencies", "devDependencies"].iter().any(|section| {
                package
                    .get(section)
                    .and_then(|deps| deps.get(name))
                    .is_some()
            })
        })
    }

    fn has_script(&self, name: &str) -> bool {
        self.package
            .and_then(|package| package.get("scripts"))
            .and_then(|scripts| scripts.get(name))
            .and_then(|script| script.as_str())
            .is_some_and(|script| !script.trim().is_empty())
    }

    fn exists(&self, path: &str) -> bool {
        self.tree.exists(path)
    }

    fn read(&self, path: &str) -> Option<String> {
        self.tree.read_to_string(path)
    }
}

/// The build command of the preset; `None` for a Node preset without package.json.
fn build_command(build: Build, app: &App, manager: Option<PackageManager>) -> Option<String> {
    match build {
        Build::Nothing => None,
        Build::Tool(command) => Some(command.to_string()),
        Build::Scripts { scripts, cli } => {
            let manager = manager?;
            match scripts.iter().find(|script| app.has_script(script)) {
                Some(script) => Some(manager.run_command(script)),
                None => cli.map(|cli| manager.exec_command(cli)),
            }
        }
    }
}

/// How an app with a package.json installs: which package manager, why, and the
/// install command (none when there is nothing to install).
struct NodeSetup {
    manager: PackageManager,
    version: Option<String>,
    source: String,
    install_command: Option<String>,
}

fn node_setup(tree: &dyn SourceTree, package: &serde_json::Value) -> NodeSetup {
    let lockfile = LOCKFILES.iter().find(|(file, _)| tree.exists(file));
    let pinned = package
        .get("packageManager")
        .and_then(|v| v.as_str())
        .and_then(parse_package_manager_field);
    let (package_manager, version, source) = match (pinned, lockfile) {
        (Some((manager, version)), _) => (
            manager,
            Some(version),
            "packageManager in package.json".to_string(),
        ),
        (None, Some((file, manager))) => (*manager, None, file.to_string()),
        (None, None) => (PackageManager::Npm, None, "no lockfile".to_string()),
    };
    // The chosen manager's own lockfile (another's does not make `npm ci` work).
    let has_lockfile = LOCKFILES
        .iter()
        .any(|(file, manager)| *manager == package_manager && tree.exists(file));
    let has_dependencies = ["dependencies", "devDependencies"].iter().any(|section| {
        package
            .get(section)
            .and_then(|deps| deps.as_object())
            .is_some_and(|deps| !deps.is_empty())
    });
    let install_command = (has_dependencies || has_lockfile).then(|| {
        package_manager
            .install_command(has_lockfile, version.as_deref())
            .to_string()
    });
    NodeSetup {
        manager: package_manager,
        version,
        source,
        install_command,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    struct Tree(BTreeMap<&'static str, &'static str>);

    impl SourceTree for Tree {
        fn exists(&self, path: &str) -> bool {
            self.0.contains_key(path)
        }
        fn read_to_string(&self, path: &str) -> Option<String> {
            self.0.get(path).map(|s| s.to_string())
        }
    }

    fn plan(files: &[(&'static str, &'static str)]) -> BuildPlan {
        detect_plan(
            &Tree(files.iter().copied().collect()),
            &BuildSettings::default(),
        )
        .unwrap()
    }

    #[test]
    fn plain_folder_is_served_as_is() {
        let plan = plan(&[("index.html", "<h1>hi</h1>")]);
        assert_eq!(plan.framework, "static");
        assert_eq!(plan.install_command, None);
        assert_eq!(plan.build_command, None);
        assert_eq!(plan.output_dir, ".");
    }

    #[test]
    fn vite_with_pnpm() {
        let plan = plan(&[
            (
                "package.json",
                r#"{"scripts":{"build":"vite build"},"devDependencies":{"vite":"^5"}}"#,
            ),
            ("pnpm-lock.yaml", ""),
        ]);
        assert_eq!(plan.framework, "vite");
        assert_eq!(plan.package_manager, Some(PackageManager::Pnpm));
        assert_eq!(
            plan.install_command.as_deref(),
            Some("pnpm install --frozen-lockfile")
        );
        assert_eq!(plan.build_command.as_deref(), Some("pnpm run build"));
        assert_eq!(plan.output_dir, "dist");
    }

    #[test]
    fn create_react_app_with_npm_lockfile() {
        let plan = plan(&[
            (
                "package.json",
                r#"{"scripts":{"build":"react-scripts build"},"dependencies":{"react-scripts":"5"}}"#,
            ),
            ("package-lock.json", "{}"),
        ]);
        assert_eq!(plan.framework, "create-react-app");
        assert_eq!(plan.install_command.as_deref(), Some("npm ci"));
        assert_eq!(plan.output_dir, "build");
    }

    #[test]
    fn next_static_export_and_astro_with_yarn() {
        let next = plan(&[(
            "package.json",
            r#"{"scripts":{"build":"next build"},"dependencies":{"next":"14"}}"#,
        )]);
        assert_eq!(
            (next.framework.as_str(), next.output_dir.as_str()),
            ("nextjs", "out")
        );
        assert_eq!(next.install_command.as_deref(), Some("npm install"));
        let astro = plan(&[
            (
                "package.json",
                r#"{"scripts":{"build":"astro build"},"dependencies":{"astro":"4"}}"#,
            ),
            ("yarn.lock", ""),
        ]);
        assert_eq!(
            (astro.framework.as_str(), astro.output_dir.as_str()),
            ("astro", "dist")
        );
        assert_eq!(astro.build_command.as_deref(), Some("yarn run build"));
    }

    #[test]
    fn build_script_without_dependencies_installs_nothing() {
        let plan = plan(&[("package.json", r#"{"scripts":{"build":"node build.js"}}"#)]);
        assert_eq!(plan.framework, "node");
        assert_eq!(plan.install_command, None);
        assert_eq!(plan.build_command.as_deref(), Some("npm run build"));
    }

    #[test]
    fn settings_override_detection() {
        let tree = Tree(
            [(
                "package.json",
                r#"{"scripts":{"build":"vite build"},"devDependencies":{"vite":"5"}}"#,
            )]
            .into_iter()
            .collect(),
        );
        let settings = BuildSettings {
            install_command: Some(String::new()),
            build_command: Some("node build.js".into()),
            output_dir: Some("public".into()),
            ..Default::default()
        };
        let plan = detect_plan(&tree, &settings).unwrap();
        assert_eq!(plan.install_command, None);
        assert_eq!(plan.build_command.as_deref(), Some("node build.js"));
        assert_eq!(plan.output_dir, "public");
    }

    #[test]
    fn package_manager_field_comes_first_with_its_version() {
        let plan = plan(&[
            (
                "package.json",
                r#"{"packageManager": "pnpm@9.1.1+sha512.14e915759c11f77eac07faba4d019c193ec8637229e62ec99eefb7cf3c3b75c64447882b7c485142451ee3a6b408059cdfb7b7fa0341b975f12d0f7629c71195",
                    "devDependencies": {"vite": "^5"}, "scripts": {"build": "vite build"}}"#,
            ),
            ("package-lock.json", "{}"),
        ]);
        assert_eq!(plan.package_manager, Some(PackageManager::Pnpm));
        assert_eq!(plan.package_manager_version.as_deref(), Some("9.1.1"));
        assert_eq!(
            plan.package_manager_source.as_deref(),
            Some("packageManager in package.json")
        );
        assert_eq!(
            plan.install_command.as_deref(),
            Some("pnpm install --frozen-lockfile")
        );
        assert_eq!(plan.build_command.as_deref(), Some("pnpm run build"));
    }

    #[test]
    fn yarn_berry_installs_immutable_and_classic_frozen() {
        for (package, install) in [
            (
                r#"{"packageManager": "yarn@4.1.0", "dependencies": {"a": "1"}}"#,
                "yarn install --immutable",
            ),
            (
                r#"{"packageManager": "yarn@1.22.19", "dependencies": {"a": "1"}}"#,
                "yarn install --frozen-lockfile",
            ),
        ] {
            let plan = plan(&[("package.json", package), ("yarn.lock", "")]);
            assert_eq!(plan.install_command.as_deref(), Some(install), "{package}");
            assert_eq!(
                plan.package_manager_source.as_deref(),
                Some("packageManager in package.json")
            );
        }
    }

    #[test]
    fn a_package_manager_field_that_is_not_one_falls_back_to_the_lockfile() {
        for field in ["pnpm", "cargo@1.0.0", "pnpm@", "pnpm@9; rm -rf /"] {
            let package =
                format!(r#"{{"packageManager": "{field}", "dependencies": {{"a": "1"}}}}"#);
            let files: Vec<(&'static str, &'static str)> = vec![
                ("package.json", Box::leak(package.into_boxed_str())),
                ("yarn.lock", ""),
            ];
            let plan = plan(&files);
            assert_eq!(plan.package_manager, Some(PackageManager::Yarn), "{field}");
            assert_eq!(plan.package_manager_version, None, "{field}");
            assert_eq!(
                plan.package_manager_source.as_deref(),
                Some("yarn.lock"),
                "{field}"
            );
        }
    }

    #[test]
    fn a_framework_without_its_build_script_runs_its_own_command() {
        for (lockfile, command) in [
            ("package-lock.json", "npx astro build"),
            ("pnpm-lock.yaml", "pnpm exec astro build"),
            ("yarn.lock", "yarn run astro build"),
            ("bun.lock", "bun run astro build"),
        ] {
            let plan = plan(&[
                ("package.json", r#"{"dependencies":{"astro":"4"}}"#),
                (lockfile, ""),
            ]);
            assert_eq!(plan.build_command.as_deref(), Some(command), "{lockfile}");
        }
        // `node` and `static` have no command of their own.
        let plan = plan(&[("package.json", r#"{"dependencies":{"a":"1"}}"#)]);
        assert_eq!(
            (plan.framework.as_str(), plan.build_command),
            ("static", None)
        );
    }

    #[test]
    fn nuxt_generates_when_it_can() {
        let generate = plan(&[(
            "package.json",
            r#"{"scripts":{"build":"nuxt build","generate":"nuxt generate"},"dependencies":{"nuxt":"3"}}"#,
        )]);
        assert_eq!(generate.build_command.as_deref(), Some("npm run generate"));
        let build = plan(&[(
            "package.json",
            r#"{"scripts":{"build":"nuxt build"},"dependencies":{"nuxt":"3"}}"#,
        )]);
        assert_eq!(build.build_command.as_deref(), Some("npm run build"));
        assert_eq!(build.output_dir, ".output/public");
        assert_eq!(build.immutable_folders, ["/_nuxt/"]);
    }

    #[test]
    fn generators_outside_node_name_their_tool() {
        let plan = plan(&[("mkdocs.yml", "site_name: x"), ("docs/index.md", "# x")]);
        assert_eq!(plan.framework, "mkdocs");
        assert_eq!(plan.framework_name, "MkDocs");
        assert_eq!(plan.package_manager, None);
        assert_eq!(plan.install_command, None);
        assert_eq!(plan.build_command.as_deref(), Some("mkdocs build"));
        assert_eq!(plan.tool.as_deref(), Some("mkdocs"));
        assert_eq!(plan.output_dir, "site");
    }

    #[test]
    fn plans_from_builders_without_presets_still_parse() {
        let old: BuildPlan = serde_json::from_str(
            r#"{"framework":"vite","package_manager":"npm","install_command":"npm ci",
                "build_command":"npm run build","output_dir":"dist"}"#,
        )
        .unwrap();
        assert_eq!(old.framework_name, "");
        assert!(old.immutable_folders.is_empty());
        assert_eq!(old.tool, None);
    }

    #[test]
    fn project_settings_beat_the_config_file_which_beats_detection() {
        let tree = Tree(
            [(
                "package.json",
                r#"{"scripts":{"build":"vite build"},"devDependencies":{"vite":"5"}}"#,
            )]
            .into_iter()
            .collect(),
        );
        let file = crate::project_config::parse_netlify_toml(
            "[build]\nbase = \"web\"\ncommand = \"npm run build:site\"\npublish = \"site\"\n",
        )
        .unwrap();
        let (plan, settings) =
            resolve_plan(&tree, None, &BuildSettings::default(), Some(&file)).unwrap();
        assert_eq!(plan.build_command.as_deref(), Some("npm run build:site"));
        assert_eq!(plan.output_dir, "site");
        let shown: Vec<String> = settings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "install command: npm install (detected)",
                "build command: npm run build:site (netlify.toml)",
                "output folder: site (netlify.toml)",
            ]
        );
        assert_eq!(
            resolve_root_dir(&BuildSettings::default(), Some(&file)).to_string(),
            "root folder: web (netlify.toml)"
        );

        let project = BuildSettings {
            root_dir: Some("app".into()),
            output_dir: Some("public".into()),
            build_command: Some(String::new()),
            ..Default::default()
        };
        let (plan, settings) = resolve_plan(&tree, None, &project, Some(&file)).unwrap();
        assert_eq!(plan.build_command, None);
        assert_eq!(plan.output_dir, "public");
        assert_eq!(
            settings[1].to_string(),
            "build command: (none) (project settings)"
        );
        assert_eq!(settings[2].origin, Origin::Project);
        assert_eq!(
            resolve_root_dir(&project, Some(&file)).to_string(),
            "root folder: app (project settings)"
        );

        let vercel = crate::project_config::parse_vercel_json(
            r#"{"outputDirectory": "build/web", "installCommand": ""}"#,
        )
        .unwrap();
        let (plan, settings) =
            resolve_plan(&tree, None, &BuildSettings::default(), Some(&vercel)).unwrap();
        assert_eq!(plan.output_dir, "build/web");
        assert_eq!(plan.install_command, None);
        assert_eq!(settings[0].origin, Origin::File(ConfigFile::VercelJson));
        assert_eq!(
            settings[1].to_string(),
            "build command: npm run build (detected)"
        );
    }

    #[test]
    fn an_app_of_a_workspace_installs_at_the_workspace_root_with_its_manager() {
        let app = Tree(
            [(
                "package.json",
                r#"{"name":"site","scripts":{"build":"vite build"},"devDependencies":{"vite":"5"}}"#,
            )]
            .into_iter()
            .collect(),
        );
        let root = Tree(
            [
                (
                    "package.json",
                    r#"{"private":true,"workspaces":["packages/*"]}"#,
                ),
                ("pnpm-lock.yaml", ""),
                ("pnpm-workspace.yaml", "packages:\n  - packages/*\n"),
            ]
            .into_iter()
            .collect(),
        );
        assert!(Workspace::declared_in(&root));
        assert!(!Workspace::declared_in(&app));
        let workspace = Workspace {
            tree: &root,
            path: ".".into(),
        };
        let plan = detect_plan_in(&app, Some(&workspace), &BuildSettings::default()).unwrap();
        assert_eq!(plan.framework, "vite");
        assert_eq!(plan.package_manager, Some(PackageManager::Pnpm));
        assert_eq!(
            plan.package_manager_source.as_deref(),
            Some("pnpm-lock.yaml")
        );
        assert_eq!(
            plan.install_command.as_deref(),
            Some("pnpm install --frozen-lockfile")
        );
        assert_eq!(plan.build_command.as_deref(), Some("pnpm run build"));
        assert_eq!(plan.install_dir.as_deref(), Some("."));
    }

    #[test]
    fn broken_package_json_is_an_error() {
        let tree = Tree([("package.json", "{nope")].into_iter().collect());
        assert!(detect_plan(&tree, &BuildSettings::default()).is_err());
    }
}
