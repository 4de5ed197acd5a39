//! Framework presets as data, like Vercel's framework list: what DeploySphere
//! recognises, how it builds each, where the built site lands and which of its URL
//! folders hold only content-hashed files.
//!
//! Detection walks [`PRESETS`] in order and the first preset whose [`Signal`] holds
//! wins, so the specific come before the general: frameworks built on Vite or React
//! before Vite and Create React App; every Node framework before the generators that
//! are not Node, which match on their config files even beside a package.json (a Hugo
//! site that keeps one for Tailwind is still Hugo, a Next.js app with an `mkdocs.yml`
//! for its docs is still Next.js); the plain `node` and `static` presets last.
//!
//! This module reads nothing itself: a [`Preset`] asks an [`AppSource`].

use serde_json::Value;

use crate::validate;

/// What detection may ask of an app's source (paths relative to the app's root).
pub trait AppSource {
    /// `name` is a key of package.json's `dependencies` or `devDependencies`.
    fn has_dependency(&self, name: &str) -> bool;
    /// package.json has a non-empty `scripts.<name>`.
    fn has_script(&self, name: &str) -> bool;
    /// A file or folder exists.
    fn exists(&self, path: &str) -> bool;
    fn read(&self, path: &str) -> Option<String>;
}

/// Evidence that a project uses a framework, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Holds for any project: the last preset's.
    Always,
    Dependency(&'static str),
    AnyDependency(&'static [&'static str]),
    Script(&'static str),
    File(&'static str),
    AnyFile(&'static [&'static str]),
    /// `file` contains `needle`, ASCII case ignored (Hugo reads `baseurl` as `baseURL`).
    FileContains {
        file: &'static str,
        needle: &'static str,
    },
    AnyFileContains {
        files: &'static [&'static str],
        needle: &'static str,
    },
    All(&'static [Signal]),
    Any(&'static [Signal]),
    Not(&'static Signal),
}

impl Signal {
    pub fn holds(&self, app: &dyn AppSource) -> bool {
        let contains = |file: &str, needle: &str| {
            app.read(file).is_some_and(|text| {
                text.to_ascii_lowercase()
                    .contains(&needle.to_ascii_lowercase())
            })
        };
        match *self {
            Self::Always => true,
            Self::Dependency(name) => app.has_dependency(name),
            Self::AnyDependency(names) => names.iter().any(|name| app.has_dependency(name)),
            Self::Script(name) => app.has_script(name),
            Self::File(path) => app.exists(path),
            Self::AnyFile(paths) => paths.iter().any(|path| app.exists(path)),
            Self::FileContains { file, needle } => contains(file, needle),
            Self::AnyFileContains { files, needle } => {
                files.iter().any(|file| contains(file, needle))
            }
            Self::All(signals) => signals.iter().all(|signal| signal.holds(app)),
            Self::Any(signals) => signals.iter().any(|signal| signal.holds(app)),
            Self::Not(signal) => !signal.holds(app),
        }
    }

    /// The signal in words, for the docs: "`next` dependency".
    pub fn text(&self) -> String {
        match *self {
            Self::Always => "anything else".into(),
            Self::Dependency(name) => format!("`{name}` dependency"),
            Self::AnyDependency(names) => format!("{} dependency", either(names)),
            Self::Script(name) => format!("`{name}` script"),
            Self::File(path) => format!("`{path}`"),
            Self::AnyFile(paths) => either(paths),
            Self::FileContains { file, needle } => format!("`{file}` containing `{needle}`"),
            Self::AnyFileContains { files, needle } => {
                format!("{} containing `{needle}`", either(files))
            }
            Self::All(signals) => joined(signals, " and "),
            Self::Any(signals) => {
                // Alternatives that are lists themselves read better apart.
                let apart = signals.iter().any(|signal| signal.text().contains(" or "));
                joined(signals, if apart { ", or " } else { " or " })
            }
            Self::Not(signal) => format!("no {}", signal.text()),
        }
    }
}

/// "`a`, `b` or `c`".
fn either(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

fn joined(signals: &[Signal], with: &str) -> String {
    let parts: Vec<String> = signals
        .iter()
        .map(|signal| match signal {
            Signal::All(_) | Signal::Any(_) => format!("({})", signal.text()),
            _ => signal.text(),
        })
        .collect();
    parts.join(with)
}

/// How a preset builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// The first of `scripts` that package.json has, run through the package manager
    /// (`pnpm run build`); without one, `cli` from node_modules through the package
    /// manager (`npx next build`), as Vercel does, or nothing when the preset names none.
    Scripts {
        scripts: &'static [&'static str],
        cli: Option<&'static str>,
    },
    /// A command of the preset's [`Preset::tool`], whatever package.json says.
    Tool(&'static str),
    /// Nothing to build: the folder is the site.
    Nothing,
}

impl Build {
    /// The build in words, for the docs; `<pm>` stands for the package manager.
    pub fn text(&self) -> String {
        match *self {
            Self::Scripts { scripts, cli } => {
                let scripts: Vec<String> = scripts
                    .iter()
                    .map(|script| format!("`<pm> run {script}`"))
                    .collect();
                let scripts = scripts.join(" or ");
                match cli {
                    Some(cli) => format!("{scripts}, else `{cli}`"),
                    None => scripts,
                }
            }
            Self::Tool(command) => format!("`{command}`"),
            Self::Nothing => "none".into(),
        }
    }
}

/// Where a preset's build leaves the site, relative to the app's root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Dir(&'static str),
    /// `<folder>/<sub>` for the first of `folders` that exists (VitePress writes
    /// beside its config folder, `docs/.vitepress` or `.vitepress`); the first
    /// folder's when none does.
    InConfigFolder {
        folders: &'static [&'static str],
        sub: &'static str,
    },
    /// The browser build of angular.json's app: `<outputPath>/browser` for the
    /// application builder (Angular 17 and later), `<outputPath>` for the older
    /// `browser` builders, `dist/<project>/browser` without an `outputPath`; `dist`
    /// when angular.json does not say.
    Angular,
}

impl Output {
    pub fn resolve(&self, app: &dyn AppSource) -> String {
        match *self {
            Self::Dir(dir) => dir.into(),
            Self::InConfigFolder { folders, sub } => {
                let folder = folders
                    .iter()
                    .find(|folder| app.exists(folder))
                    .or(folders.first())
                    .copied()
                    .unwrap_or(".");
                format!("{folder}/{sub}")
            }
            Self::Angular => app
                .read("angular.json")
                .and_then(|text| serde_json::from_str::<Value>(&text).ok())
                .and_then(|config| angular_browser_dir(&config))
                .unwrap_or_else(|| "dist".into()),
        }
    }

    /// The output in words, for the docs.
    pub fn text(&self) -> String {
        match *self {
            Self::Dir(dir) => format!("`{dir}`"),
            Self::InConfigFolder { folders, sub } => {
                let dirs: Vec<String> = folders
                    .iter()
                    .map(|folder| format!("`{folder}/{sub}`"))
                    .collect();
                dirs.join(" or ")
            }
            Self::Angular => "`dist/<project>/browser` (from `angular.json`)".into(),
        }
    }
}

/// See [`Output::Angular`]. The app is `defaultProject`, else the one project that is
/// not a library (`ng build` too needs to know which); a folder that would leave the
/// repository counts as unknown.
fn angular_browser_dir(config: &Value) -> Option<String> {
    let projects = config.get("projects")?.as_object()?;
    let (name, project) = match config.get("defaultProject").and_then(Value::as_str) {
        Some(name) => (name, projects.get(name)?),
        None => {
            let mut apps = projects.iter().filter(|(_, project)| {
                project.get("projectType").and_then(Value::as_str) != Some("library")
            });
            match (apps.next(), apps.next()) {
                (Some((name, project)), None) => (name.as_str(), project),
                _ => return None,
            }
        }
    };
    let build = project
        .get("architect")
        .or_else(|| project.get("targets"))?
        .get("build")?;
    let builder = build.get("builder").and_then(Value::as_str).unwrap_or("");
    let application = builder.ends_with(":application");
    let dir = match build.get("options").and_then(|o| o.get("outputPath")) {
        Some(Value::String(path)) if application => {
            format!("{}/browser", path.trim_end_matches('/'))
        }
        Some(Value::String(path)) => path.trim_end_matches('/').to_string(),
        Some(Value::Object(path)) => {
            let base = path.get("base")?.as_str()?.trim_end_matches('/');
            match path.get("browser").and_then(Value::as_str) {
                Some("") => base.to_string(),
                Some(browser) => format!("{base}/{browser}"),
                None => format!("{base}/browser"),
            }
        }
        None if application => format!("dist/{name}/browser"),
        _ => return None,
    };
    let dir = dir.strip_prefix("./").unwrap_or(&dir).to_string();
    validate::relative_dir("outputPath", &dir).ok()?;
    Some(dir)
}

/// One framework DeploySphere recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Kebab-case, stable: plans and logs carry it as `framework`.
    pub id: &'static str,
    pub name: &'static str,
    pub signal: Signal,
    pub build: Build,
    pub output: Output,
    /// URL folders of the output that hold only content-hashed files, served as
    /// immutable for a year. Only where the framework writes nothing else there: a
    /// folder a project's own unhashed files can land in (Vite copies `public/assets/`
    /// into `assets/` as is) stays off the list, and its hashed names are recognised
    /// one by one instead.
    pub immutable_folders: &'static [&'static str],
    /// The program outside node_modules the build runs, which the builder must find
    /// installed.
    pub tool: Option<&'static str>,
    /// UI libraries that qualify the name, by the dependency that shows them, the first
    /// present winning: `Vite (React)`.
    pub flavors: &'static [(&'static str, &'static str)],
}

impl Preset {
    pub fn matches(&self, app: &dyn AppSource) -> bool {
        self.signal.holds(app)
    }

    pub fn signal_text(&self) -> String {
        self.signal.text()
    }

    /// `name`, with the UI library when the preset has flavors and one is found.
    pub fn display_name(&self, app: &dyn AppSource) -> String {
        match self
            .flavors
            .iter()
            .find(|(dependency, _)| app.has_dependency(dependency))
        {
            Some((_, flavor)) => format!("{} ({flavor})", self.name),
            None => self.name.to_string(),
        }
    }

    pub fn output_dir(&self, app: &dyn AppSource) -> String {
        self.output.resolve(app)
    }
}

/// The first preset that matches the app; [`STATIC`] when none does.
pub fn detect(app: &dyn AppSource) -> &'static Preset {
    PRESETS
        .iter()
        .find(|preset| preset.matches(app))
        .unwrap_or(&STATIC)
}

/// A Node framework built by its package.json `build` script, else by `cli`.
const fn build_script(cli: &'static str) -> Build {
    Build::Scripts {
        scripts: &["build"],
        cli: Some(cli),
    }
}

const NO_FLAVORS: &[(&str, &str)] = &[];

/// A plain folder, served as it is.
pub const STATIC: Preset = Preset {
    id: "static",
    name: "Static folder",
    signal: Signal::Always,
    build: Build::Nothing,
    output: Output::Dir("."),
    immutable_folders: &[],
    tool: None,
    flavors: NO_FLAVORS,
};

/// Every preset, in the order detection tries them (see the module doc).
pub static PRESETS: &[Preset] = &[
    Preset {
        id: "nextjs",
        name: "Next.js (static export)",
        signal: Signal::Dependency("next"),
        build: build_script("next build"),
        output: Output::Dir("out"),
        immutable_folders: &["/_next/static/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "nuxt",
        name: "Nuxt (generate)",
        signal: Signal::AnyDependency(&["nuxt", "nuxt3", "nuxt-edge", "nuxt-nightly"]),
        build: Build::Scripts {
            scripts: &["generate", "build"],
            cli: Some("nuxt generate"),
        },
        output: Output::Dir(".output/public"),
        // Less `/_nuxt/builds/`, which the manifest always revalidates.
        immutable_folders: &["/_nuxt/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "sveltekit",
        name: "SvelteKit (adapter-static)",
        signal: Signal::Dependency("@sveltejs/kit"),
        build: build_script("vite build"),
        output: Output::Dir("build"),
        immutable_folders: &["/_app/immutable/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "astro",
        name: "Astro",
        signal: Signal::Dependency("astro"),
        build: build_script("astro build"),
        output: Output::Dir("dist"),
        immutable_folders: &["/_astro/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "react-router",
        name: "React Router (SPA mode)",
        signal: Signal::Any(&[
            Signal::Dependency("@react-router/dev"),
            Signal::AnyFile(&["react-router.config.ts", "react-router.config.js"]),
        ]),
        build: build_script("react-router build"),
        output: Output::Dir("build/client"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "remix",
        name: "Remix (SPA mode)",
        signal: Signal::Dependency("@remix-run/dev"),
        build: build_script("remix vite:build"),
        output: Output::Dir("build/client"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "gatsby",
        name: "Gatsby",
        signal: Signal::Dependency("gatsby"),
        build: build_script("gatsby build"),
        output: Output::Dir("public"),
        // Gatsby names these folders by content (its caching guide: cache forever);
        // the project's own `static/` folder lands in the root, not here.
        immutable_folders: &["/static/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "docusaurus",
        name: "Docusaurus",
        signal: Signal::Dependency("@docusaurus/core"),
        build: build_script("docusaurus build"),
        output: Output::Dir("build"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "vitepress",
        name: "VitePress",
        signal: Signal::Dependency("vitepress"),
        build: Build::Scripts {
            scripts: &["docs:build", "build"],
            cli: None,
        },
        output: Output::InConfigFolder {
            folders: &["docs/.vitepress", ".vitepress"],
            sub: "dist",
        },
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "vuepress",
        name: "VuePress",
        signal: Signal::Dependency("vuepress"),
        build: Build::Scripts {
            scripts: &["docs:build", "build"],
            cli: None,
        },
        output: Output::InConfigFolder {
            folders: &["docs/.vuepress", "src/.vuepress", ".vuepress"],
            sub: "dist",
        },
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "eleventy",
        name: "Eleventy",
        signal: Signal::Dependency("@11ty/eleventy"),
        build: build_script("eleventy"),
        output: Output::Dir("_site"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "hexo",
        name: "Hexo",
        signal: Signal::Dependency("hexo"),
        build: build_script("hexo generate"),
        output: Output::Dir("public"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "solid-start",
        name: "SolidStart (static preset)",
        signal: Signal::AnyDependency(&["@solidjs/start", "solid-start"]),
        build: build_script("vinxi build"),
        output: Output::Dir(".output/public"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "qwik",
        name: "Qwik City (static adapter)",
        signal: Signal::AnyDependency(&[
            "@builder.io/qwik-city",
            "@builder.io/qwik",
            "@qwik.dev/router",
            "@qwik.dev/core",
        ]),
        build: build_script("qwik build"),
        output: Output::Dir("dist"),
        // Qwik's `q-<hash>` bundles; Qwik's own Vercel and Netlify starters cache it
        // for a year.
        immutable_folders: &["/build/"],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "angular",
        name: "Angular",
        signal: Signal::Dependency("@angular/cli"),
        build: build_script("ng build"),
        output: Output::Angular,
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "vue-cli",
        name: "Vue CLI",
        signal: Signal::Dependency("@vue/cli-service"),
        build: build_script("vue-cli-service build"),
        output: Output::Dir("dist"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "ember",
        name: "Ember.js",
        signal: Signal::AnyDependency(&["ember-cli", "ember-source"]),
        build: build_script("ember build --environment=production"),
        output: Output::Dir("dist"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "storybook",
        name: "Storybook",
        // Many apps carry Storybook beside what they deploy: only a project whose
        // one build is the storybook deploys it.
        signal: Signal::All(&[
            Signal::Script("build-storybook"),
            Signal::Not(&Signal::Script("build")),
        ]),
        build: Build::Scripts {
            scripts: &["build-storybook"],
            cli: None,
        },
        output: Output::Dir("storybook-static"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "create-react-app",
        name: "Create React App",
        signal: Signal::Dependency("react-scripts"),
        build: build_script("react-scripts build"),
        output: Output::Dir("build"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "vite",
        name: "Vite",
        signal: Signal::Dependency("vite"),
        build: build_script("vite build"),
        output: Output::Dir("dist"),
        immutable_folders: &[],
        tool: None,
        flavors: &[
            ("@preact/preset-vite", "Preact"),
            ("preact", "Preact"),
            ("react", "React"),
            ("vue", "Vue"),
            ("svelte", "Svelte"),
            ("solid-js", "Solid"),
            ("lit", "Lit"),
        ],
    },
    Preset {
        id: "parcel",
        name: "Parcel",
        signal: Signal::AnyDependency(&["parcel", "parcel-bundler"]),
        build: build_script("parcel build"),
        output: Output::Dir("dist"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "hugo",
        name: "Hugo",
        signal: Signal::Any(&[
            Signal::AnyFile(&["hugo.toml", "hugo.yaml", "hugo.json"]),
            Signal::AnyFileContains {
                files: &["config.toml", "config.yaml", "config.json"],
                needle: "baseURL",
            },
        ]),
        build: Build::Tool("hugo --minify"),
        output: Output::Dir("public"),
        immutable_folders: &[],
        tool: Some("hugo"),
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "zola",
        name: "Zola",
        signal: Signal::FileContains {
            file: "config.toml",
            needle: "base_url",
        },
        build: Build::Tool("zola build"),
        output: Output::Dir("public"),
        immutable_folders: &[],
        tool: Some("zola"),
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "mkdocs",
        name: "MkDocs",
        signal: Signal::AnyFile(&["mkdocs.yml", "mkdocs.yaml"]),
        build: Build::Tool("mkdocs build"),
        output: Output::Dir("site"),
        immutable_folders: &[],
        tool: Some("mkdocs"),
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "jekyll",
        name: "Jekyll",
        // GitHub Pages puts a `_config.yml` in many repositories that are not Jekyll
        // sites: beside a package.json it takes a Gemfile that names Jekyll.
        signal: Signal::All(&[
            Signal::File("_config.yml"),
            Signal::Any(&[
                Signal::FileContains {
                    file: "Gemfile",
                    needle: "jekyll",
                },
                Signal::Not(&Signal::File("package.json")),
            ]),
        ]),
        build: Build::Tool("jekyll build"),
        output: Output::Dir("_site"),
        immutable_folders: &[],
        tool: Some("jekyll"),
        flavors: NO_FLAVORS,
    },
    Preset {
        id: "node",
        name: "Node.js (build script)",
        signal: Signal::Script("build"),
        build: Build::Scripts {
            scripts: &["build"],
            cli: None,
        },
        output: Output::Dir("dist"),
        immutable_folders: &[],
        tool: None,
        flavors: NO_FLAVORS,
    },
    STATIC,
];

/// The presets as a markdown table (Framework, Detected by, Build command, Output
/// folder), in detection order, with a line on what `<pm>` means.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| Framework | Detected by | Build command | Output folder |\n\
         |---|---|---|---|\n",
    );
    for preset in PRESETS {
        let name = match preset.flavors {
            [] => preset.name.to_string(),
            flavors => {
                let mut names: Vec<&str> = flavors.iter().map(|(_, flavor)| *flavor).collect();
                names.dedup();
                let last = names.pop().unwrap_or_default();
                format!("{} ({} or {last})", preset.name, names.join(", "))
            }
        };
        table.push_str(&format!(
            "| {name} | {} | {} | {} |\n",
            preset.signal_text(),
            preset.build.text(),
            preset.output.text()
        ));
    }
    table.push_str(
        "\nThe first row that matches wins. `<pm>` is the package manager (npm, pnpm, \
         yarn or bun, from `packageManager` or the lockfile); a framework's own command \
         runs from node_modules through it (`npx`, `pnpm exec`, `yarn run`, `bun run`) \
         when package.json has no such script. Hugo, Zola, MkDocs and Jekyll are not \
         Node tools and the build image must have them; a package.json beside one \
         (Tailwind for Hugo) has its dependencies installed, its scripts are not run. \
         Each command, and the output folder, can be set in the project's build \
         settings.\n",
    );
    table
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default)]
    struct App {
        dependencies: Vec<&'static str>,
        scripts: Vec<&'static str>,
        files: BTreeMap<&'static str, &'static str>,
    }

    impl AppSource for App {
        fn has_dependency(&self, name: &str) -> bool {
            self.dependencies.contains(&name)
        }
        fn has_script(&self, name: &str) -> bool {
            self.scripts.contains(&name)
        }
        fn exists(&self, path: &str) -> bool {
            self.files.contains_key(path)
        }
        fn read(&self, path: &str) -> Option<String> {
            self.files.get(path).map(|text| text.to_string())
        }
    }

    fn app(dependencies: &[&'static str], files: &[(&'static str, &'static str)]) -> App {
        App {
            dependencies: dependencies.to_vec(),
            scripts: vec!["build"],
            files: files.iter().copied().collect(),
        }
    }

    #[test]
    fn the_table_is_well_formed() {
        let mut ids: Vec<&str> = PRESETS.iter().map(|preset| preset.id).collect();
        for id in &ids {
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{id} is not kebab-case"
            );
        }
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), PRESETS.len(), "ids repeat");
        assert_eq!(PRESETS.last(), Some(&STATIC));
        assert!(
            PRESETS[..PRESETS.len() - 1]
                .iter()
                .all(|preset| preset.signal != Signal::Always)
        );
        for preset in PRESETS {
            for folder in preset.immutable_folders {
                assert!(
                    folder.len() > 2 && folder.starts_with('/') && folder.ends_with('/'),
                    "{}: {folder}",
                    preset.id
                );
            }
            assert_eq!(
                preset.tool.is_some(),
                matches!(preset.build, Build::Tool(_)),
                "{}: a tool command names its tool",
                preset.id
            );
        }
    }

    #[test]
    fn specific_frameworks_win_over_what_they_are_built_on() {
        for (dependencies, id) in [
            (&["vitepress", "vite", "vue"][..], "vitepress"),
            (&["@sveltejs/kit", "vite"], "sveltekit"),
            (&["@remix-run/dev", "vite", "react"], "remix"),
            (&["@react-router/dev", "vite"], "react-router"),
            (&["@builder.io/qwik-city", "vite"], "qwik"),
            (&["@docusaurus/core", "react"], "docusaurus"),
            (&["gatsby", "react"], "gatsby"),
            (&["react-scripts", "vite"], "create-react-app"),
            (&["@11ty/eleventy", "vite"], "eleventy"),
        ] {
            assert_eq!(detect(&app(dependencies, &[])).id, id, "{dependencies:?}");
        }
    }

    #[test]
    fn generators_that_are_not_node_match_beside_a_package_json_without_a_framework() {
        let hugo = app(
            &["tailwindcss"],
            &[("package.json", "{}"), ("hugo.toml", "")],
        );
        assert_eq!(detect(&hugo).id, "hugo");
        let next_with_docs = app(&["next"], &[("mkdocs.yml", "site_name: x")]);
        assert_eq!(detect(&next_with_docs).id, "nextjs");
    }

    #[test]
    fn hugo_and_zola_share_config_toml_and_differ_by_its_keys() {
        let hugo = app(&[], &[("config.toml", "baseurl = 'https://example.org/'")]);
        assert_eq!(detect(&hugo).id, "hugo");
        let zola = app(
            &[],
            &[("config.toml", "base_url = \"https://example.org\"")],
        );
        assert_eq!(detect(&zola).id, "zola");
        let neither = app(&[], &[("config.toml", "title = 'x'")]);
        assert_eq!(detect(&neither).id, "node");
    }

    #[test]
    fn a_github_pages_config_beside_a_package_json_is_not_jekyll() {
        let files = [
            ("_config.yml", "theme: jekyll-theme-cayman"),
            ("package.json", "{}"),
        ];
        assert_eq!(detect(&app(&[], &files)).id, "node");
        let with_gemfile = [
            files[0],
            files[1],
            ("Gemfile", "gem \"jekyll\", \"~> 4.3\""),
        ];
        assert_eq!(detect(&app(&[], &with_gemfile)).id, "jekyll");
        assert_eq!(detect(&app(&[], &files[..1])).id, "jekyll");
    }

    #[test]
    fn storybook_only_when_it_is_the_only_build() {
        let mut library = app(&["storybook", "vite", "react"], &[]);
        library.scripts = vec!["build", "build-storybook"];
        assert_eq!(detect(&library).id, "vite");
        library.scripts = vec!["build-storybook"];
        assert_eq!(detect(&library).id, "storybook");
    }

    #[test]
    fn vite_names_its_ui_library() {
        let preset = detect(&app(&["vite", "react", "react-dom"], &[]));
        assert_eq!(
            preset.display_name(&app(&["vite", "react"], &[])),
            "Vite (React)"
        );
        assert_eq!(preset.display_name(&app(&["vite"], &[])), "Vite");
        assert_eq!(
            preset.display_name(&app(&["vite", "preact", "react"], &[])),
            "Vite (Preact)"
        );
    }

    #[test]
    fn vitepress_writes_beside_its_config_folder() {
        let preset = detect(&app(&["vitepress"], &[]));
        assert_eq!(
            preset.output_dir(&app(&[], &[(".vitepress", "")])),
            ".vitepress/dist"
        );
        assert_eq!(preset.output_dir(&app(&[], &[])), "docs/.vitepress/dist");
    }

    #[test]
    fn angular_output_follows_the_builder_and_output_path() {
        let output =
            |json: &'static str| Output::Angular.resolve(&app(&[], &[("angular.json", json)]));
        assert_eq!(
            output(
                r#"{"projects":{"shop":{"architect":{"build":{
                    "builder":"@angular-devkit/build-angular:application",
                    "options":{"outputPath":"dist/shop"}}}}}}"#
            ),
            "dist/shop/browser"
        );
        assert_eq!(
            output(
                r#"{"projects":{"shop":{"architect":{"build":{
                    "builder":"@angular/build:application","options":{}}}}}}"#
            ),
            "dist/shop/browser"
        );
        assert_eq!(
            output(
                r#"{"projects":{"shop":{"architect":{"build":{
                    "builder":"@angular/build:application",
                    "options":{"outputPath":{"base":"out","browser":""}}}}}}}"#
            ),
            "out"
        );
        assert_eq!(
            output(
                r#"{"defaultProject":"site","projects":{
                    "ui":{"projectType":"library"},
                    "site":{"architect":{"build":{
                        "builder":"@angular-devkit/build-angular:browser",
                        "options":{"outputPath":"dist/site/"}}}}}}"#
            ),
            "dist/site"
        );
        assert_eq!(
            output(
                r#"{"projects":{"x":{"architect":{"build":{
                    "builder":"@angular/build:application",
                    "options":{"outputPath":"../../etc"}}}}}}"#
            ),
            "dist"
        );
        assert_eq!(output("{nope"), "dist");
        assert_eq!(Output::Angular.resolve(&app(&[], &[])), "dist");
    }

    #[test]
    fn signals_read_as_docs() {
        let jekyll = PRESETS.iter().find(|p| p.id == "jekyll").unwrap();
        assert_eq!(
            jekyll.signal_text(),
            "`_config.yml` and (`Gemfile` containing `jekyll` or no `package.json`)"
        );
        let nuxt = PRESETS.iter().find(|p| p.id == "nuxt").unwrap();
        assert_eq!(
            nuxt.signal_text(),
            "`nuxt`, `nuxt3`, `nuxt-edge` or `nuxt-nightly` dependency"
        );
        assert_eq!(
            nuxt.build.text(),
            "`<pm> run generate` or `<pm> run build`, else `nuxt generate`"
        );
    }
}
