//! Framework detection: a source tree in, a [`BuildPlan`] out. Planning is data;
//! running the plan is the builder's job.

use serde::{Deserialize, Serialize};

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
    /// `static`, `node`, `vite`, `create-react-app`, `nextjs`, `astro`.
    pub framework: String,
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
}

/// Read access to a checked-out source tree, paths relative to the app's root folder.
pub trait SourceTree {
    fn exists(&self, path: &str) -> bool;
    fn read_to_string(&self, path: &str) -> Option<String>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("package.json is not valid JSON: {0}")]
pub struct PlanError(pub String);

/// Detects the framework and package manager of the tree and returns the plan, with
/// `settings` overriding each detected field.
pub fn detect_plan(
    tree: &dyn SourceTree,
    settings: &BuildSettings,
) -> Result<BuildPlan, PlanError> {
    let mut plan = match tree.read_to_string("package.json") {
        None => BuildPlan {
            framework: "static".into(),
            package_manager: None,
            package_manager_version: None,
            package_manager_source: None,
            install_command: None,
            build_command: None,
            output_dir: ".".into(),
        },
        Some(text) => {
            let package: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| PlanError(e.to_string()))?;
            node_plan(tree, &package)
        }
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

fn node_plan(tree: &dyn SourceTree, package: &serde_json::Value) -> BuildPlan {
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
    let has_dep = |name: &str| {
        ["dependencies", "devDependencies"].iter().any(|section| {
            package
                .get(section)
                .and_then(|deps| deps.get(name))
                .is_some()
        })
    };
    let has_build_script = package
        .get("scripts")
        .and_then(|scripts| scripts.get("build"))
        .and_then(|script| script.as_str())
        .is_some_and(|script| !script.trim().is_empty());
    let has_dependencies = ["dependencies", "devDependencies"].iter().any(|section| {
        package
            .get(section)
            .and_then(|deps| deps.as_object())
            .is_some_and(|deps| !deps.is_empty())
    });

    let (framework, output_dir) = if has_dep("next") {
        ("nextjs", "out")
    } else if has_dep("astro") {
        ("astro", "dist")
    } else if has_dep("react-scripts") {
        ("create-react-app", "build")
    } else if has_dep("vite") {
        ("vite", "dist")
    } else if has_build_script {
        ("node", "dist")
    } else {
        ("static", ".")
    };
    let build_command = has_build_script.then(|| package_manager.run_command("build"));
    let install_command = (has_dependencies || has_lockfile).then(|| {
        package_manager
            .install_command(has_lockfile, version.as_deref())
            .to_string()
    });
    BuildPlan {
        framework: framework.into(),
        package_manager: Some(package_manager),
        package_manager_version: version,
        package_manager_source: Some(source),
        install_command,
        build_command,
        output_dir: output_dir.into(),
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
    fn broken_package_json_is_an_error() {
        let tree = Tree([("package.json", "{nope")].into_iter().collect());
        assert!(detect_plan(&tree, &BuildSettings::default()).is_err());
    }
}
