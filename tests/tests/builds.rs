//! Real projects build the first time, against the real local platform: the build in
//! phases with their timings, the build cache, project config files, and package
//! managers other than npm.

use deploysphere_e2e::*;
use serde_json::{Value, json};

/// The whole log of a finished deployment: its lines reach ClickHouse in batches, so
/// this waits for the builder's last line ("Deployed …" or "Build failed: …").
async fn final_log(api: &Api, id: &str) -> Vec<String> {
    let started = std::time::Instant::now();
    loop {
        let log = messages(&api.logs(id).await);
        let ended = log
            .iter()
            .any(|m| m.starts_with("Deployed ") || m.starts_with("Build failed: "));
        if ended || started.elapsed() > std::time::Duration::from_secs(30) {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Deploys the project and waits for the end: the final deployment and its whole log.
async fn deployed(api: &Api, project_id: &str) -> (Value, Vec<String>) {
    let deployment = api.deploy(project_id).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    let log = final_log(api, id).await;
    (done, log)
}

/// The phase names of a finished deployment, in order.
fn phase_names(deployment: &Value) -> Vec<String> {
    deployment["phases"]
        .as_array()
        .map(|phases| {
            phases
                .iter()
                .map(|p| p["name"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn phase_ms(deployment: &Value, name: &str) -> Option<u64> {
    deployment["phases"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["ms"]
        .as_u64()
}

/// A real Vite project (vite 5 from the npm registry, a package-lock.json): the first
/// deploy installs from scratch and saves the build cache; the second, with the same
/// lockfile, restores it before its install; `{"no_cache": true}` skips it. Each
/// deployment reports its phases with their durations, and the log ends each phase.
#[tokio::test]
async fn a_redeploy_of_an_unchanged_vite_project_restores_the_build_cache() {
    let api = Api::new_account("vite cache user").await;
    let repo = Repo::from_fixture("vite-site");
    repo.commit("vite site");
    let project = api
        .create_project(json!({"name": "vite cache", "git_url": repo.url()}))
        .await;
    let pid = project["id"].as_str().unwrap();

    let (first, log) = deployed(&api, pid).await;
    assert_eq!(first["state"], "READY", "{first} {log:#?}");
    assert!(
        log.iter()
            .any(|m| m == "No build cache for this lockfile yet: installing from scratch"),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|m| m.starts_with("Saved build cache (")),
        "{log:#?}"
    );
    for done in [
        "Fetched the source in ",
        "Installed dependencies in ",
        "Built the site in ",
        "Uploaded the output in ",
    ] {
        assert!(log.iter().any(|m| m.starts_with(done)), "{done}: {log:#?}");
    }
    assert_eq!(
        phase_names(&first),
        [
            "fetch",
            "plan",
            "restore_cache",
            "install",
            "build",
            "collect",
            "upload",
            "save_cache"
        ],
        "{first}"
    );
    assert_eq!(first["plan"]["framework"], "vite", "{first}");
    let cached = object_store()
        .list(&format!("build-cache/{pid}/"))
        .await
        .unwrap();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(
        cached[0].ends_with(".tar") && cached[0].contains("/npm-"),
        "{cached:?}"
    );

    let (second, log) = deployed(&api, pid).await;
    assert_eq!(second["state"], "READY", "{second} {log:#?}");
    let restored = log
        .iter()
        .find(|m| m.starts_with("Restored build cache ("))
        .unwrap_or_else(|| panic!("no restore in {log:#?}"));
    assert!(
        restored.contains(" MB) in ") && restored.ends_with(" s"),
        "{restored}"
    );
    assert!(
        log.iter().any(|m| m.starts_with("Restored node_modules")
            && m.ends_with("running npm install --prefer-offline --no-audit --no-fund over it instead of npm ci")),
        "{log:#?}"
    );
    assert!(phase_ms(&second, "install").is_some(), "{second}");

    // The site is the Vite build: its hashed CSS and JS are served immutable.
    let slug = project["slug"].as_str().unwrap();
    let page = wait_served(&host(slug), "/", "Vite fixture").await;
    let asset = page
        .body
        .split('"')
        .find(|part| part.starts_with("/assets/index-") && part.ends_with(".js"))
        .unwrap_or_else(|| panic!("no script in {}", page.body))
        .to_string();
    let script = get_page(&host(slug), &asset).await;
    assert_eq!(script.status, 200);
    assert_eq!(
        script.header("cache-control"),
        "public, max-age=31536000, immutable",
        "{asset}"
    );

    let third = api
        .post(
            &format!("/v1/projects/{pid}/deployments"),
            json!({"no_cache": true}),
        )
        .await;
    assert_eq!(third.status, 202, "{third:?}");
    assert_eq!(third.body["no_cache"], true);
    let third_id = third.body["id"].as_str().unwrap();
    let third = api.wait_final(third_id).await;
    let log = final_log(&api, third_id).await;
    assert_eq!(third["state"], "READY", "{third} {log:#?}");
    assert!(
        log.iter()
            .any(|m| m
                == "Build cache skipped: this deployment asked for a build without it (no_cache)"),
        "{log:#?}"
    );
    assert!(
        !phase_names(&third).iter().any(|p| p.ends_with("_cache")),
        "{third}"
    );
}

/// A build that fails reports the phases that ran, the failed one last.
#[tokio::test]
async fn a_failed_build_reports_its_phases_up_to_the_failure() {
    let api = Api::new_account("failing phases user").await;
    let repo = Repo::from_fixture("failing-build");
    repo.commit("fails");
    let project = api
        .create_project(json!({"name": "failing phases", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let names = phase_names(&done);
    assert_eq!(names.first().map(String::as_str), Some("fetch"), "{done}");
    assert_eq!(names.last().map(String::as_str), Some("build"), "{done}");
    assert!(!names.contains(&"upload".to_string()), "{done}");
}

/// A repository with a netlify.toml as Netlify users write it: its `[build]` command,
/// its `publish` folder and its `[build.environment]` variables are used, with no
/// project settings, and the log says where each setting came from.
#[tokio::test]
async fn netlify_toml_publish_folder_is_deployed() {
    let api = Api::new_account("netlify toml user").await;
    let repo = Repo::from_fixture("netlify-site");
    repo.commit("netlify site");
    let project = api
        .create_project(json!({"name": "netlify toml", "git_url": repo.url()}))
        .await;
    let (done, log) = deployed(&api, project["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    for line in [
        "Reading build settings from netlify.toml",
        "Build setting build command: node build.js (netlify.toml)",
        "Build setting output folder: site (netlify.toml)",
        "Build setting root folder: . (detected)",
    ] {
        assert!(log.iter().any(|m| m == line), "{line}: {log:#?}");
    }
    assert!(
        log.iter()
            .any(|m| m.starts_with("Warning: netlify.toml:") && m.contains("plugins")),
        "{log:#?}"
    );
    let slug = project["slug"].as_str().unwrap();
    wait_served(&host(slug), "/", "netlify fixture: hello from netlify.toml").await;
}

/// vercel.json's `buildCommand` and `outputDirectory` are used; a project setting
/// still beats the file (API > config file > detection).
#[tokio::test]
async fn vercel_json_output_directory_is_deployed_and_project_settings_win() {
    let api = Api::new_account("vercel json user").await;
    let repo = Repo::from_fixture("vercel-site");
    repo.commit("vercel site");
    let project = api
        .create_project(json!({"name": "vercel json", "git_url": repo.url()}))
        .await;
    let pid = project["id"].as_str().unwrap();
    let (done, log) = deployed(&api, pid).await;
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    for line in [
        "Reading build settings from vercel.json",
        "Build setting build command: node make.js (vercel.json)",
        "Build setting output folder: out/web (vercel.json)",
    ] {
        assert!(log.iter().any(|m| m == line), "{line}: {log:#?}");
    }
    assert!(
        log.iter()
            .any(|m| m.starts_with("Warning: vercel.json:") && m.contains("functions")),
        "{log:#?}"
    );
    let slug = project["slug"].as_str().unwrap();
    wait_served(&host(slug), "/", "vercel fixture").await;

    // A project whose own settings say otherwise wins over the file: no build, the
    // repository root.
    let own = api
        .create_project(json!({
            "name": "vercel json own settings",
            "git_url": repo.url(),
            "build": {"build_command": "", "output_dir": "."}
        }))
        .await;
    let pid = own["id"].as_str().unwrap();
    let slug = own["slug"].as_str().unwrap();
    let (done, log) = deployed(&api, pid).await;
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    assert!(
        log.iter()
            .any(|m| m == "Build setting output folder: . (project settings)"),
        "{log:#?}"
    );
    wait_served(&host(slug), "/", "not the output").await;
}

/// A broken config file fails the build with the file, the line and what is wrong.
#[tokio::test]
async fn a_broken_netlify_toml_fails_with_its_line() {
    let api = Api::new_account("broken toml user").await;
    let repo = Repo::from_fixture("static-site");
    repo.write("netlify.toml", "[build]\npublish = 5\n");
    repo.commit("broken toml");
    let project = api
        .create_project(json!({"name": "broken toml", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("netlify.toml:2: ") && error.contains("publish"),
        "{error}"
    );
}

/// Builds a fixture project with no settings and returns its log, asserting READY and
/// that the site serves `needle`.
async fn builds_ready(fixture: &str, needle: &str) -> Vec<String> {
    let api = Api::new_account(&format!("{fixture} user")).await;
    let repo = Repo::from_fixture(fixture);
    repo.commit(fixture);
    let project = api
        .create_project(json!({"name": fixture, "git_url": repo.url()}))
        .await;
    let (done, log) = deployed(&api, project["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    wait_served(&host(project["slug"].as_str().unwrap()), "/", needle).await;
    log
}

/// Yarn 4 ("berry"), pinned by `packageManager`: corepack fetches it from the npm
/// registry, it installs `--immutable`, and the build runs under it.
#[tokio::test]
async fn a_yarn_berry_project_builds_with_the_yarn_it_pins() {
    let log = builds_ready("yarn-berry-site", "yarn berry fixture").await;
    for line in [
        "Package manager: yarn 4.5.3 (packageManager in package.json), run through corepack",
        "Running install command: yarn install --immutable",
        "built by yarn/4.5.3",
    ] {
        assert!(log.iter().any(|m| m == line), "{line}: {log:#?}");
    }
}

/// A bun project (`bun.lock`, `packageManager: bun@1.2.19`): bun comes from its npm
/// package, installs the dependency, and runs the build script (`bun build.js`).
#[tokio::test]
async fn a_bun_project_builds_with_the_bun_it_pins() {
    let log = builds_ready("bun-site", "bun fixture: true").await;
    for line in [
        "Package manager: bun 1.2.19 (packageManager in package.json)",
        "Running install command: bun install --frozen-lockfile",
        "built by bun/1.2.19",
    ] {
        assert!(log.iter().any(|m| m == line), "{line}: {log:#?}");
    }
    assert!(
        log.iter()
            .any(|m| m.starts_with("Installed bun 1.2.19 from the npm registry (@oven/bun-linux-")),
        "{log:#?}"
    );
}

/// Non-Node generators are detected and run with the tool the platform installs
/// (scripts/setup.sh installs Hugo and MkDocs from Debian).
#[tokio::test]
async fn hugo_and_mkdocs_sites_build_with_no_settings() {
    let log = builds_ready("hugo-site", "Rendered by Hugo.").await;
    assert!(log.iter().any(|m| m == "Detected hugo (Hugo)"), "{log:#?}");
    assert!(
        log.iter()
            .any(|m| m == "Build setting build command: hugo --minify (detected)"),
        "{log:#?}"
    );
    let log = builds_ready("mkdocs-site", "MkDocs fixture").await;
    assert!(
        log.iter()
            .any(|m| m == "Build setting output folder: site (detected)"),
        "{log:#?}"
    );
}

/// A generator this platform does not have fails at once with its name, not with
/// "command not found" from the shell.
#[tokio::test]
async fn a_zola_site_fails_saying_zola_is_not_installed() {
    let api = Api::new_account("zola user").await;
    let repo = Repo::from_fixture("zola-site");
    repo.commit("zola");
    let project = api
        .create_project(json!({"name": "zola", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("zola is not installed on this platform"),
        "{error}"
    );
    assert_eq!(done["plan"]["framework"], "zola", "{done}");
}

/// An npm workspace (monorepo) deployed with `root_dir` set to one package: the
/// install runs at the workspace root with its lockfile (so the sibling package is
/// linked), the build in the package, and the package's output is deployed. The
/// redeploy restores the root's node_modules, links included.
#[tokio::test]
async fn an_npm_workspace_package_builds_with_root_dir() {
    let api = Api::new_account("npm workspace user").await;
    let repo = Repo::from_fixture("npm-workspace");
    repo.commit("monorepo");
    let project = api
        .create_project(json!({
            "name": "npm workspace",
            "git_url": repo.url(),
            "build": {"root_dir": "packages/site"}
        }))
        .await;
    let pid = project["id"].as_str().unwrap();
    for round in ["first", "cached"] {
        let (done, log) = deployed(&api, pid).await;
        assert_eq!(done["state"], "READY", "{round}: {done} {log:#?}");
        for line in [
            "Workspace root: . (the monorepo the app belongs to): the install runs there",
            "Package manager: npm (package-lock.json)",
            "Build setting root folder: packages/site (project settings)",
            "built the site package",
        ] {
            assert!(log.iter().any(|m| m == line), "{round}: {line}: {log:#?}");
        }
        assert_eq!(done["plan"]["install_dir"], ".", "{done}");
        if round == "cached" {
            assert!(
                log.iter().any(|m| m.starts_with("Restored node_modules")),
                "{log:#?}"
            );
        }
        wait_served(
            &host(project["slug"].as_str().unwrap()),
            "/",
            "hello from the greeting workspace, site",
        )
        .await;
    }
}

/// The Node.js of this machine is used locally, and the log warns when the project
/// asks for another (`.nvmrc`).
#[tokio::test]
async fn a_node_version_this_platform_lacks_is_warned_about_locally() {
    let api = Api::new_account("nvmrc user").await;
    let repo = Repo::from_fixture("node-build");
    repo.write(".nvmrc", "99\n");
    repo.commit("asks for node 99");
    let project = api
        .create_project(json!({"name": "nvmrc", "git_url": repo.url()}))
        .await;
    let (done, log) = deployed(&api, project["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    let local = std::process::Command::new("node")
        .arg("--version")
        .output()
        .expect("node");
    let local = String::from_utf8_lossy(&local.stdout)
        .trim()
        .trim_start_matches('v')
        .to_string();
    let warning = format!(
        "Warning: Node.js {local} on this platform does not satisfy .nvmrc \"99\"; the build runs on it anyway"
    );
    assert!(log.contains(&warning), "{warning}: {log:#?}");
}

/// A build that swaps its app folder for a link (so that the builder's cache and
/// output steps would act somewhere else) fails, and nothing is uploaded.
#[tokio::test]
async fn a_build_that_replaces_its_app_folder_by_a_link_fails() {
    let api = Api::new_account("folder swap user").await;
    let repo = Repo::from_fixture("");
    repo.write("app/index.html", "<h1>app</h1>\n")
        .write("app/package.json", r#"{"name": "swap", "private": true}"#);
    repo.commit("app in a folder");
    let project = api
        .create_project(json!({
            "name": "folder swap",
            "git_url": repo.url(),
            "build": {
                "root_dir": "app",
                "install_command": "cd .. && mv app real && ln -s real app",
                "build_command": ""
            }
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert_eq!(
        done["error"],
        "the install command replaced the app folder (or a folder above it) by a link; nothing was uploaded",
        "{done}"
    );
    let staged = object_store()
        .list(&format!("staging/{id}/"))
        .await
        .unwrap();
    assert!(
        staged.iter().all(|key| key.ends_with("build-spec.json")),
        "{staged:?}"
    );
    assert!(
        object_store()
            .list(&format!("manifests/{id}"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// A lockfile that disagrees with package.json fails the frozen install, and the
/// deployment's error is npm's own reason, not only an exit code.
#[tokio::test]
async fn a_lockfile_out_of_sync_fails_with_the_managers_own_message() {
    let api = Api::new_account("stale lockfile user").await;
    let repo = Repo::from_fixture("vite-site");
    let package = std::fs::read_to_string(repo.path().join("package.json")).unwrap();
    repo.write(
        "package.json",
        &package.replace(
            r#""vite": "5.4.11""#,
            r#""vite": "5.4.11", "is-number": "7.0.0""#,
        ),
    );
    repo.commit("a dependency the lockfile lacks");
    let project = api
        .create_project(json!({"name": "stale lockfile", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let error = done["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the install command exited with status 1: npm error `npm ci` can only install packages when your package.json and package-lock.json"),
        "{error}"
    );
}
