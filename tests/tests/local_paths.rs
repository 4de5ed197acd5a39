//! Repositories on the platform's own machine: the builder reads them as root, so by
//! default only the admin token may deploy a path or a `file://` URL, and nobody may
//! deploy from inside the platform's data folder.

use deploysphere_e2e::*;
use serde_json::json;

#[tokio::test]
async fn only_the_admin_deploys_local_paths_and_never_from_the_data_folder() {
    let p = platform_with_default_local_paths();
    let user = Api::new_account_on(p, "no paths").await;
    let admin = Api::on(p, &p.admin_token);
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");

    let file_url = format!("file://{}", repo.url());
    for url in [repo.url(), file_url] {
        let reply = user
            .post("/v1/projects", json!({"name": "mine", "git_url": url}))
            .await;
        assert_eq!(reply.status, 403, "{url}: {reply:?}");
        let message = reply.error_message();
        assert!(
            message.starts_with("git_url:") && message.contains("admin token only"),
            "{message}"
        );
    }
    assert_eq!(user.get("/v1/projects").await.body["projects"], json!([]));
    // A public https repository is every account's to deploy.
    let reply = user
        .post(
            "/v1/projects",
            json!({"name": "public", "git_url": "https://github.com/withastro/astro.git"}),
        )
        .await;
    assert_eq!(reply.status, 201, "{reply:?}");

    // The admin may, and the build runs.
    let project = admin
        .create_project(json!({"name": "admin path", "git_url": repo.url()}))
        .await;
    let deployment = admin.deploy(project["id"].as_str().unwrap()).await;
    let done = admin.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done}");

    // Not even the admin reads the data folder, however the path is spelled.
    let links = tempfile::tempdir().unwrap();
    let link = links.path().join("innocent");
    std::os::unix::fs::symlink(&p.home, &link).unwrap();
    let home = p.home.display().to_string();
    let parent = p.home.parent().unwrap().display().to_string();
    let home_name = p.home.file_name().unwrap().to_string_lossy().to_string();
    for url in [
        home.clone(),
        format!("{home}/s3"),
        format!("file://{home}/postgres/not-yet"),
        format!("/tmp/not-there/../..{home}"),
        format!("{}/s3", link.display()),
        format!(
            "{parent}/../{}/{home_name}/logs",
            p.home
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
        ),
    ] {
        let reply = admin
            .post(
                "/v1/projects",
                json!({"name": "data folder", "git_url": url}),
            )
            .await;
        assert_eq!(reply.status, 400, "{url}: {reply:?}");
        assert!(reply.error_message().contains("data folder"), "{reply:?}");
    }
}
