//! The API's contract: authentication, isolation between accounts, validation.

use deploysphere_e2e::*;
use serde_json::json;

#[tokio::test]
async fn accounts_never_see_each_others_projects() {
    let alice = Api::new_account("alice").await;
    let bob = Api::new_account("bob").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = alice
        .create_project(json!({"name": "alice site", "git_url": repo.url()}))
        .await;
    let pid = project["id"].as_str().unwrap();
    let deployment = alice.deploy(pid).await;
    let did = deployment["id"].as_str().unwrap();
    assert_eq!(alice.wait_final(did).await["state"], "READY");

    for path in [
        format!("/v1/projects/{pid}"),
        "/v1/projects/alice-site".to_string(),
        format!("/v1/projects/{pid}/deployments"),
        format!("/v1/deployments/{did}"),
        format!("/v1/deployments/{did}/logs"),
    ] {
        let reply = bob.get(&path).await;
        assert_eq!(reply.status, 404, "{path}: {reply:?}");
        assert_eq!(reply.body["error"]["code"], "not_found");
    }
    assert_eq!(
        bob.post(&format!("/v1/projects/{pid}/deployments"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(
        bob.post(
            &format!("/v1/projects/{pid}/promote"),
            json!({"deployment_id": did})
        )
        .await
        .status,
        404
    );
    assert_eq!(
        bob.post(&format!("/v1/deployments/{did}/cancel"), json!({}))
            .await
            .status,
        404
    );
    assert_eq!(bob.get("/v1/projects").await.body["projects"], json!([]));
    // Bob cannot promote Alice's deployment into his own project either.
    let bobs = bob
        .create_project(json!({"name": "bob site", "git_url": repo.url()}))
        .await;
    let reply = bob
        .post(
            &format!("/v1/projects/{}/promote", bobs["id"].as_str().unwrap()),
            json!({"deployment_id": did}),
        )
        .await;
    assert_eq!(reply.status, 404);
    // Alice still sees hers.
    let listed = alice.get("/v1/projects").await.body;
    assert_eq!(listed["projects"][0]["id"], pid);
    assert_eq!(alice.get("/v1/projects/alice-site").await.body["id"], pid);
}

#[tokio::test]
async fn requests_without_a_valid_token_are_refused() {
    for token in [
        "",
        "dsp_0000000000000000000000000000000000000000000000000000000000000000",
        "nonsense",
    ] {
        let reply = Api::new(token).get("/v1/projects").await;
        assert_eq!(reply.status, 401, "{token:?}");
        assert_eq!(reply.body["error"]["code"], "unauthorized");
    }
    // Only the admin token creates accounts.
    let user = Api::new_account("not-admin").await;
    assert_eq!(
        user.post("/v1/accounts", json!({"name": "x"})).await.status,
        403
    );
}

#[tokio::test]
async fn bad_input_is_a_400_that_names_the_field_and_changes_nothing() {
    let api = Api::new_account("validation").await;
    let cases = [
        (r#"{"name": "x", "git_url": "#, "invalid JSON"),
        (r#"{"git_url": "/tmp/x"}"#, "name"),
        (r#"{"name": "x"}"#, "git_url"),
        (r#"{"name": "!!!", "git_url": "/tmp/x"}"#, "name"),
        (
            r#"{"name": "x", "git_url": "ssh://host/repo.git"}"#,
            "git_url",
        ),
        (
            r#"{"name": "x", "git_url": "--upload-pack=touch /tmp/pwned"}"#,
            "git_url",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "branch": "--evil"}"#,
            "branch",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "build": {"output_dir": "../../etc"}}"#,
            "build.output_dir",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "build": {"outputDir": "dist"}}"#,
            "outputDir",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "env": {"1BAD": "v"}}"#,
            "env.1BAD",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "env": {"A": 5}}"#,
            "invalid JSON",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "colour": "red"}"#,
            "colour",
        ),
        (
            r#"{"name": "x", "git_url": "/tmp/x", "build": {"timeout_seconds": 1}}"#,
            "build.timeout_seconds",
        ),
    ];
    for (body, field) in cases {
        let reply = api
            .send(
                reqwest::Method::POST,
                "/v1/projects",
                Some(body.to_string()),
            )
            .await;
        assert_eq!(reply.status, 400, "{body}: {reply:?}");
        let message = reply.error_message();
        assert!(
            message.contains(field),
            "{body}: message {message:?} should name {field}"
        );
    }
    assert_eq!(
        api.get("/v1/projects").await.body["projects"],
        json!([]),
        "nothing was created"
    );

    let project = api
        .create_project(json!({"name": "Valid One", "git_url": "/tmp/x"}))
        .await;
    let pid = project["id"].as_str().unwrap();
    assert_eq!(
        api.post(
            "/v1/projects",
            json!({"name": "valid one", "git_url": "/tmp/y"})
        )
        .await
        .status,
        409
    );
    let reply = api
        .post(
            &format!("/v1/projects/{pid}/deployments"),
            json!({"ref": "a b"}),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("ref")
    );
    assert_eq!(
        api.get(&format!("/v1/projects/{pid}/deployments"))
            .await
            .body["deployments"],
        json!([])
    );
    assert_eq!(api.get("/v1/deployments/not-a-uuid").await.status, 404);
    assert_eq!(
        api.get(&format!("/v1/deployments/{}", uuid::Uuid::new_v4()))
            .await
            .status,
        404
    );
    assert_eq!(
        api.get(&format!(
            "/v1/deployments/{}/logs?limit=0",
            uuid::Uuid::new_v4()
        ))
        .await
        .status,
        400
    );
    assert_eq!(api.get("/v1/nothing-here").await.status, 404);
}

#[tokio::test]
async fn slugs_are_unique_across_accounts_and_dns_safe() {
    let a = Api::new_account("slug-a").await;
    let b = Api::new_account("slug-b").await;
    let first = a
        .create_project(json!({"name": "Shared Name!", "git_url": "/tmp/x"}))
        .await;
    let second = b
        .create_project(json!({"name": "shared name", "git_url": "/tmp/x"}))
        .await;
    assert_eq!(first["slug"], "shared-name");
    assert_eq!(second["slug"], "shared-name-2");
    assert!(
        second["url"]
            .as_str()
            .unwrap()
            .starts_with("http://shared-name-2.localhost:")
    );
    let tricky = a
        .create_project(json!({"name": "shop-deadbeef", "git_url": "/tmp/x"}))
        .await;
    assert_eq!(
        tricky["slug"], "shop-deadbeef-site",
        "a slug never looks like a deployment host"
    );
}
