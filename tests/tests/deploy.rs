//! Deploying repositories end to end against the real local platform.

use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::json;

#[tokio::test]
async fn static_site_is_served_at_its_subdomain_with_types_and_ordered_logs() {
    let api = Api::new_account("static").await;
    let repo = Repo::from_fixture("static-site");
    let sha = repo.commit("v1");
    let project = api
        .create_project(json!({"name": "Static Fixture", "git_url": repo.url()}))
        .await;
    assert_eq!(project["slug"], "static-fixture");
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    assert_eq!(deployment["state"], "QUEUED");
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done}");
    assert_eq!(done["commit_sha"], sha.as_str());
    assert!(done["ready_at"].is_string() && done["started_at"].is_string());

    let site = host("static-fixture");
    let index = wait_served(&site, "/", "Static fixture v1").await;
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(
        index.header("cache-control"),
        "public, max-age=0, must-revalidate"
    );

    let css = get_page(&site, "/css/site.css").await;
    assert_eq!(
        (css.status, css.header("content-type")),
        (200, "text/css; charset=utf-8")
    );
    let js = get_page(&site, "/assets/app-4f3a2b1c.js").await;
    assert!(js.header("content-type").contains("javascript"), "{js:?}");
    assert_eq!(
        js.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    // Vite 5's hashes are base64url, often letters only: still immutable.
    let vite_css = get_page(&site, "/assets/index-BaNwpQDn.css").await;
    assert_eq!(
        vite_css.header("cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        css.header("cache-control"),
        "public, max-age=0, must-revalidate",
        "an unhashed name revalidates"
    );
    let svg = get_page(&site, "/logo.svg").await;
    assert!(
        svg.header("content-type").starts_with("image/svg+xml"),
        "{svg:?}"
    );

    // Clean URLs and folder indexes.
    assert!(
        get_page(&site, "/about")
            .await
            .body
            .contains("About this fixture")
    );
    assert!(get_page(&site, "/docs/").await.body.contains("Docs index"));
    assert!(get_page(&site, "/docs").await.body.contains("Docs index"));

    // The site's own 404 page, with status 404.
    let missing = get_page(&site, "/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Custom 404 page"));

    // Conditional GET and HEAD.
    let etag = index.header("etag").to_string();
    assert!(etag.starts_with('"'));
    let not_modified = fetch("GET", &site, "/", &[("If-None-Match", &etag)]).await;
    assert_eq!(not_modified.status, 304);
    assert!(not_modified.body.is_empty());
    let head = fetch("HEAD", &site, "/index.html", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), index.body.len().to_string());
    assert!(head.body.is_empty());

    // Escapes never leave the deployment.
    for path in [
        "/../../../etc/passwd",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/css/..%2f..%2f..%2fetc%2fpasswd",
        "/.git/config",
    ] {
        let page = get_page(&site, path).await;
        assert_eq!(page.status, 404, "{path}: {page:?}");
        assert!(!page.body.contains("root:"), "{path}");
    }

    // The immutable deployment host serves the same files.
    let immutable = host(&deployment_label("static-fixture", &deployment));
    assert!(
        get_page(&immutable, "/")
            .await
            .body
            .contains("Static fixture v1")
    );
    // An unknown host is a plain 404.
    assert_eq!(get_page(&host("no-such-project"), "/").await.status, 404);

    // The build log comes back from ClickHouse in order, gapless from 1.
    let lines = api
        .logs_containing(deployment["id"].as_str().unwrap(), "Deployed")
        .await;
    let seqs: Vec<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    let text = messages(&lines);
    assert!(text[0].starts_with("Cloning"), "{text:?}");
    assert!(
        text.iter().any(|m| m.contains("Detected static")),
        "{text:?}"
    );
    assert!(
        lines
            .iter()
            .all(|l| l["ts"].as_str().is_some_and(|t| t.ends_with('Z')))
    );
}

#[tokio::test]
async fn node_build_runs_sandboxed_without_platform_access_and_masks_secrets() {
    let p = platform();
    let api = Api::new_account("node").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("node build");
    let probes = format!(
        "{},{},169.254.169.254:80,10.0.2.2:{},192.168.0.1:80",
        p.postgres_port, p.api_port, p.api_port
    );
    let project = api
        .create_project(json!({
            "name": "node build",
            "git_url": repo.url(),
            "env": {
                "GREETING": "hello from env",
                "LINES": "40",
                "PROBES": probes,
                "API_KEY": {"value": "s3cr3t-value-123", "secret": true}
            }
        }))
        .await;
    assert_eq!(
        project["env"]["API_KEY"],
        json!({"secret": true}),
        "secret values are never returned"
    );
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "READY", "{done}");
    let page = wait_served(&host("node-build"), "/", "hello from env").await;
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let json_file = get_page(&host("node-build"), "/data.json").await;
    assert_eq!(
        json_file.header("content-type"),
        "application/json; charset=utf-8"
    );

    let lines = api.logs_containing(id, "Deployed").await;
    let text = messages(&lines);
    let build_lines: Vec<&String> = text
        .iter()
        .filter(|m| m.starts_with("build line "))
        .collect();
    assert_eq!(build_lines.len(), 40);
    for (i, line) in build_lines.iter().enumerate() {
        assert_eq!(**line, format!("build line {}", i + 1));
    }
    assert!(
        lines
            .iter()
            .any(|l| l["stream"] == "stderr" && l["message"] == "a line on stderr")
    );
    // Unprivileged, with only the project's variables (plus a few fixed ones).
    assert!(text.iter().any(|m| m == "uid=65534"), "{text:?}");
    let env_line = text
        .iter()
        .find(|m| m.starts_with("env-keys="))
        .expect("env line");
    for forbidden in [
        "DEPLOYSPHERE_S3",
        "DEPLOYSPHERE_KAFKA",
        "AWS_",
        "DATABASE",
        "TOKEN",
    ] {
        assert!(!env_line.contains(forbidden), "{env_line}");
    }
    assert!(env_line.contains("GREETING") && env_line.contains("API_KEY"));
    assert!(text.iter().any(|m| m == "open-fds=0,1,2,3"), "{text:?}");
    let userns = text
        .iter()
        .find(|m| m.starts_with("nested-userns="))
        .expect("userns probe");
    assert!(
        userns.starts_with("nested-userns=blocked") && userns.contains("unshare failed"),
        "{userns}"
    );
    // The secret is masked in every line.
    assert!(text.iter().any(|m| m == "secret-echo=***"), "{text:?}");
    assert!(!text.iter().any(|m| m.contains("s3cr3t-value-123")));
    // The platform's Postgres and API, the host's loopback through slirp's gateway, and
    // private or link-local networks (cloud metadata) are all out of reach.
    for probe in probes.split(',') {
        let line = text
            .iter()
            .find(|m| m.starts_with(&format!("probe {probe} ")))
            .unwrap_or_else(|| panic!("no probe line for {probe}: {text:?}"));
        assert!(line.contains("blocked"), "{line}");
    }
    for probe in ["169.254.169.254:80", "192.168.0.1:80"] {
        let line = text
            .iter()
            .find(|m| m.starts_with(&format!("probe {probe} ")))
            .unwrap();
        assert!(
            line.ends_with("EHOSTUNREACH"),
            "refused by the sandbox's routes, not timed out: {line}"
        );
    }
}

#[tokio::test]
async fn failed_build_keeps_the_previous_production_deployment_live() {
    let api = Api::new_account("failing").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "keeps live", "git_url": repo.url(), "branch": "main"}))
        .await;
    let project_id = project["id"].as_str().unwrap();
    let first = api.deploy(project_id).await;
    assert_eq!(
        api.wait_final(first["id"].as_str().unwrap()).await["state"],
        "READY"
    );
    wait_served(&host("keeps-live"), "/", "Static fixture v1").await;

    // The next commit's build fails.
    repo.write("package.json", r#"{"scripts": {"build": "node build.js"}}"#);
    repo.write(
        "build.js",
        &std::fs::read_to_string(manifest_dir().join("fixtures/failing-build/build.js")).unwrap(),
    );
    repo.write("index.html", "<h1>v2 must never be served</h1>");
    repo.commit("broken v2");
    let second = api.deploy(project_id).await;
    let second_id = second["id"].as_str().unwrap();
    let failed = api.wait_final(second_id).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("build command exited with status 3"),
        "{failed}"
    );
    let lines = api.logs_containing(second_id, "Build failed").await;
    assert!(
        messages(&lines)
            .iter()
            .any(|m| m.contains("the build broke on purpose"))
    );

    // Production still serves v1; the failed deployment uploaded nothing.
    let page = get_page(&host("keeps-live"), "/").await;
    assert!(page.body.contains("Static fixture v1"), "{page:?}");
    assert_eq!(
        get_page(&host(&deployment_label("keeps-live", &second)), "/")
            .await
            .status,
        404
    );
    let store = object_store();
    assert!(
        !store
            .exists(&format!("manifests/{second_id}.json"))
            .await
            .unwrap()
    );
    let project = api.get(&format!("/v1/projects/{project_id}")).await.body;
    assert_eq!(project["production_deployment_id"], first["id"]);
}

#[tokio::test]
async fn symlink_out_of_the_output_fails_the_build_and_uploads_nothing() {
    let api = Api::new_account("symlink").await;
    let repo = Repo::from_fixture("");
    repo.write("site/index.html", "<h1>hi</h1>")
        .symlink("/etc/passwd", "site/passwd.txt");
    repo.commit("escape");
    let project = api
        .create_project(json!({"name": "symlink escape", "git_url": repo.url(), "build": {"output_dir": "site"}}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "FAILED");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("symlink that points outside the output folder"),
        "{error}"
    );
    assert!(error.contains("passwd.txt -> /etc/passwd"), "{error}");
    assert!(
        !object_store()
            .exists(&format!("manifests/{id}.json"))
            .await
            .unwrap()
    );
    assert_eq!(
        get_page(&host("symlink-escape"), "/passwd.txt")
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn uncloneable_git_url_fails_with_gits_reason_in_the_logs() {
    let api = Api::new_account("badgit").await;
    let project = api
        .create_project(json!({"name": "bad git", "git_url": "/tmp/deploysphere-no-such-repo"}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "FAILED");
    assert!(
        done["error"].as_str().unwrap().contains("could not clone"),
        "{done}"
    );
    let lines = api.logs_containing(id, "Build failed").await;
    let text = messages(&lines);
    assert!(
        text.iter().any(
            |m| m.contains("does not appear to be a git repository") || m.contains("not found")
        ),
        "{text:?}"
    );
    // A ref that does not exist fails the same way.
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "bad ref", "git_url": repo.url()}))
        .await;
    let reply = api
        .post(
            &format!(
                "/v1/projects/{}/deployments",
                project["id"].as_str().unwrap()
            ),
            json!({"ref": "no-such-branch"}),
        )
        .await;
    assert_eq!(reply.status, 202);
    let done = api.wait_final(reply.body["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED");
    assert!(
        done["error"].as_str().unwrap().contains("no-such-branch"),
        "{done}"
    );
}

#[tokio::test]
async fn promote_rolls_back_to_an_earlier_ready_deployment_without_rebuilding() {
    let api = Api::new_account("rollback").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "rollback site", "git_url": repo.url()}))
        .await;
    let project_id = project["id"].as_str().unwrap();
    let v1 = api.deploy(project_id).await;
    assert_eq!(
        api.wait_final(v1["id"].as_str().unwrap()).await["state"],
        "READY"
    );
    repo.write("index.html", "<h1>Version two</h1>");
    repo.commit("v2");
    let v2 = api.deploy(project_id).await;
    let v2_done = api.wait_final(v2["id"].as_str().unwrap()).await;
    assert_eq!(v2_done["state"], "READY");
    assert_eq!(v2_done["is_production"], true);
    let site = host("rollback-site");
    wait_served(&site, "/", "Version two").await;

    let reply = api
        .post(
            &format!("/v1/projects/{project_id}/promote"),
            json!({"deployment_id": v1["id"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["project"]["production_deployment_id"], v1["id"]);
    wait_served(&site, "/", "Static fixture v1").await;
    // Both deployments stay reachable at their own hosts.
    assert!(
        get_page(&host(&deployment_label("rollback-site", &v2)), "/")
            .await
            .body
            .contains("Version two")
    );
    let listed = api
        .get(&format!("/v1/projects/{project_id}/deployments"))
        .await
        .body;
    let ids: Vec<&str> = listed["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [v2["id"].as_str().unwrap(), v1["id"].as_str().unwrap()],
        "newest first"
    );

    // Only READY deployments of this project can be promoted.
    let failing = api
        .create_project(json!({"name": "other", "git_url": "/tmp/deploysphere-no-such-repo"}))
        .await;
    let bad = api.deploy(failing["id"].as_str().unwrap()).await;
    api.wait_final(bad["id"].as_str().unwrap()).await;
    let reply = api
        .post(
            &format!("/v1/projects/{}/promote", failing["id"].as_str().unwrap()),
            json!({"deployment_id": bad["id"]}),
        )
        .await;
    assert_eq!(reply.status, 409, "{reply:?}");
    let reply = api
        .post(
            &format!("/v1/projects/{project_id}/promote"),
            json!({"deployment_id": bad["id"]}),
        )
        .await;
    assert_eq!(
        reply.status, 404,
        "a deployment of another project: {reply:?}"
    );
}

#[tokio::test]
async fn cancel_kills_every_process_of_the_build() {
    let api = Api::new_account("cancel").await;
    let repo = Repo::from_fixture("");
    repo.write("index.html", "<h1>x</h1>");
    repo.commit("slow");
    let marker = format!("sleep 3{}", std::process::id() % 1000 + 1000);
    let project = api
        .create_project(json!({
            "name": "slow build",
            "git_url": repo.url(),
            "build": {"build_command": format!("echo build-started; {marker} & {marker}; echo never")}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    api.logs_containing(id, "build-started").await;
    assert!(
        count_processes(&marker) >= 2,
        "the build's processes should be running"
    );
    let reply = api
        .post(&format!("/v1/deployments/{id}/cancel"), json!({}))
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["state"], "CANCELED");
    let start = std::time::Instant::now();
    while count_processes(&marker) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "build processes survived the cancel"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It stays canceled, and cannot be canceled twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.get(&format!("/v1/deployments/{id}")).await.body["state"],
        "CANCELED"
    );
    assert_eq!(
        api.post(&format!("/v1/deployments/{id}/cancel"), json!({}))
            .await
            .status,
        409
    );
}

fn count_processes(cmdline: &str) -> usize {
    command_lines().iter().filter(|c| *c == cmdline).count()
}

#[tokio::test]
async fn a_build_past_its_time_limit_is_stopped_and_failed() {
    let api = Api::new_account("timeout").await;
    let repo = Repo::from_fixture("");
    repo.write("index.html", "<h1>x</h1>");
    repo.commit("forever");
    let project = api
        .create_project(json!({
            "name": "too slow",
            "git_url": repo.url(),
            "build": {"build_command": "echo waiting; sleep 600", "timeout_seconds": 10}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api
        .wait_for(
            deployment["id"].as_str().unwrap(),
            Duration::from_secs(60),
            |d| d["state"] != "QUEUED" && d["state"] != "BUILDING",
        )
        .await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(
        done["error"].as_str().unwrap().contains("time limit"),
        "{done}"
    );
}

#[tokio::test]
async fn builds_beyond_the_account_limit_wait_queued_and_start_when_a_slot_frees() {
    let api = Api::new_account("queue").await;
    let repo = Repo::from_fixture("");
    repo.write("index.html", "<h1>q</h1>");
    repo.commit("slow");
    let project = api
        .create_project(json!({
            "name": "queued builds",
            "git_url": repo.url(),
            "build": {"build_command": "echo queued-build-running; sleep 120"}
        }))
        .await;
    let pid = project["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(api.deploy(pid).await["id"].as_str().unwrap().to_string());
    }
    // Two builds per account at once: the first two build, the third waits.
    for id in &ids[..2] {
        api.logs_containing(id, "queued-build-running").await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        api.get(&format!("/v1/deployments/{}", ids[2])).await.body["state"],
        "QUEUED"
    );
    // Canceling a running build frees its slot for the waiting one.
    assert_eq!(
        api.post(&format!("/v1/deployments/{}/cancel", ids[0]), json!({}))
            .await
            .status,
        200
    );
    api.logs_containing(&ids[2], "queued-build-running").await;
    assert_eq!(
        api.get(&format!("/v1/deployments/{}", ids[2])).await.body["state"],
        "BUILDING"
    );
    for id in &ids[1..] {
        assert_eq!(
            api.post(&format!("/v1/deployments/{id}/cancel"), json!({}))
                .await
                .status,
            200
        );
    }
    // A QUEUED deployment can be canceled too.
    let waiting: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(api.deploy(pid).await["id"].as_str().unwrap().to_string());
        }
        v
    };
    let last = &waiting[2];
    assert_eq!(
        api.get(&format!("/v1/deployments/{last}")).await.body["state"],
        "QUEUED"
    );
    let reply = api
        .post(&format!("/v1/deployments/{last}/cancel"), json!({}))
        .await;
    assert_eq!(reply.body["state"], "CANCELED", "{reply:?}");
    for id in &waiting[..2] {
        api.post(&format!("/v1/deployments/{id}/cancel"), json!({}))
            .await;
    }
}

#[tokio::test]
async fn an_output_folder_replaced_by_a_link_out_of_the_repository_fails_the_build() {
    let api = Api::new_account("outlink").await;
    let repo = Repo::from_fixture("");
    repo.write("index.html", "<h1>x</h1>");
    repo.commit("link");
    let project = api
        .create_project(json!({
            "name": "output link",
            "git_url": repo.url(),
            "build": {"build_command": "ln -s /etc dist", "output_dir": "dist"}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("points outside the repository"),
        "{done}"
    );
    assert!(
        !object_store()
            .exists(&format!("manifests/{id}.json"))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn builds_hit_their_process_and_memory_limits() {
    let api = Api::new_account("limits").await;
    let repo = Repo::from_fixture("");
    repo.write("index.html", "<h1>x</h1>");
    repo.commit("limits");

    // More processes than the build's cgroup allows (512): forking fails.
    let forks = api
        .create_project(json!({
            "name": "fork bomb",
            "git_url": repo.url(),
            "build": {"build_command": "i=0; while [ $i -lt 700 ]; do sleep 30 & i=$((i+1)); done; echo started-all"}
        }))
        .await;
    let forks_deployment = api.deploy(forks["id"].as_str().unwrap()).await;

    // More memory than the build's cgroup allows (2048 MB): the command is killed.
    let hog = api
        .create_project(json!({
            "name": "memory hog",
            "git_url": repo.url(),
            "build": {"build_command": "node -e 'const a = []; for (;;) a.push(Buffer.alloc(64 << 20, 1))'"}
        }))
        .await;
    let hog_deployment = api.deploy(hog["id"].as_str().unwrap()).await;

    let done = api
        .wait_final(forks_deployment["id"].as_str().unwrap())
        .await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let lines = api
        .logs_containing(forks_deployment["id"].as_str().unwrap(), "Build failed")
        .await;
    assert!(!messages(&lines).iter().any(|m| m == "started-all"));
    assert!(
        messages(&lines).iter().any(|m| m.contains("fork")),
        "{:?}",
        messages(&lines)
    );

    let done = api.wait_final(hog_deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("ran out of memory") && error.contains("2048 MB"),
        "{error}"
    );
}

#[tokio::test]
async fn a_redeploy_of_the_same_content_uploads_no_blob_again() {
    let api = Api::new_account("dedup").await;
    let repo = Repo::from_fixture("static-site");
    // Content no other test deploys, so no concurrent build uploads these blobs.
    let unique = uuid::Uuid::new_v4();
    for file in ["index.html", "about.html", "css/site.css", "logo.svg"] {
        let text = std::fs::read_to_string(repo.path().join(file)).unwrap();
        repo.write(file, &format!("{text}<!-- {unique} -->\n"));
    }
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "dedup site", "git_url": repo.url()}))
        .await;
    let pid = project["id"].as_str().unwrap();
    let first = api.deploy(pid).await;
    assert_eq!(
        api.wait_final(first["id"].as_str().unwrap()).await["state"],
        "READY"
    );
    let store = object_store();
    let manifest = store
        .get_manifest(&format!("manifests/{}.json", first["id"].as_str().unwrap()))
        .await
        .unwrap()
        .expect("manifest");
    let mut before = Vec::new();
    for entry in manifest.files.values() {
        before.push(
            store
                .last_modified(&format!("blobs/{}", entry.blob))
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let second = api.deploy(pid).await;
    assert_eq!(
        api.wait_final(second["id"].as_str().unwrap()).await["state"],
        "READY"
    );
    let again = store
        .get_manifest(&format!(
            "manifests/{}.json",
            second["id"].as_str().unwrap()
        ))
        .await
        .unwrap()
        .expect("manifest");
    assert_eq!(again.files, manifest.files, "same paths, blobs, types");
    for (entry, then) in manifest.files.values().zip(before) {
        let now = store
            .last_modified(&format!("blobs/{}", entry.blob))
            .await
            .unwrap();
        assert_eq!(now, then, "blob {} was uploaded again", entry.blob);
    }
}

/// A pnpm project as a user's repository has it: `packageManager` pins pnpm 9.1.1 and
/// a pnpm lockfile is there. It builds with no settings, with the pnpm it pins (fetched
/// by corepack), and the log says which manager and why.
#[tokio::test]
async fn a_pnpm_project_builds_with_the_pnpm_it_pins() {
    let api = Api::new_account("pnpm user").await;
    let repo = Repo::from_fixture("pnpm-site");
    repo.commit("pnpm site");
    let project = api
        .create_project(json!({"name": "pnpm site", "git_url": repo.url()}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    let log = messages(&api.logs(id).await);
    assert_eq!(done["state"], "READY", "{done} {log:#?}");
    assert!(
        log.iter().any(|m| m
            == "Package manager: pnpm 9.1.1 (packageManager in package.json), run through corepack"),
        "{log:#?}"
    );
    assert!(log.iter().any(|m| m == "built by pnpm/9.1.1"), "{log:#?}");
    let slug = project["slug"].as_str().unwrap();
    wait_served(&host(slug), "/", "pnpm fixture").await;
}
