//! Fault drill: a rollback racing a build that becomes READY a moment later. An
//! explicit promote or rollback pins production (as Vercel does after an instant
//! rollback): later READY builds do not take it over until the user promotes one
//! with `"pin": false`; the project says it is pinned and since when.

use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::{Value, json};

async fn ready(api: &Api, project_id: &str) -> Value {
    let deployment = api.deploy(project_id).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done}");
    done
}

async fn project(api: &Api, id: &str) -> Value {
    api.get(&format!("/v1/projects/{id}")).await.body
}

#[tokio::test]
async fn a_rollback_racing_a_build_keeps_production_pinned_until_promoted_again() {
    let api = Api::new_account("rollback race").await;
    let repo = Repo::from_fixture("static-site");
    repo.write("index.html", "<h1>Version one</h1>");
    repo.commit("v1");
    // Every build takes a couple of seconds: the window the rollback lands in.
    let created = api
        .create_project(json!({
            "name": "race site",
            "git_url": repo.url(),
            "build": {"build_command": "sleep 2"}
        }))
        .await;
    let project_id = created["id"].as_str().unwrap().to_string();
    let promote_path = format!("/v1/projects/{project_id}/promote");
    let promote = |deployment: &Value, pin: Option<bool>| {
        let mut body = json!({"deployment_id": deployment["id"]});
        if let Some(pin) = pin {
            body["pin"] = json!(pin);
        }
        api.post(&promote_path, body)
    };

    let v1 = ready(&api, &project_id).await;
    repo.write("index.html", "<h1>Version two</h1>");
    repo.commit("v2");
    let v2 = ready(&api, &project_id).await;
    assert_eq!(
        project(&api, &project_id).await["production_deployment_id"],
        v2["id"]
    );
    assert_eq!(
        project(&api, &project_id).await["production_pinned_at"],
        Value::Null,
        "not pinned while builds move production"
    );

    // v3 builds; the user rolls back to v1 again and again until v3 is READY, so the
    // last rollback lands a moment before v3's READY commits.
    repo.write("index.html", "<h1>Version three</h1>");
    repo.commit("v3");
    let v3 = api.deploy(&project_id).await;
    let v3_id = v3["id"].as_str().unwrap().to_string();
    api.wait_for(&v3_id, Duration::from_secs(60), |d| d["state"] != "QUEUED")
        .await;
    let mut rollbacks = 0;
    loop {
        let reply = promote(&v1, None).await;
        assert_eq!(reply.status, 200, "{reply:?}");
        rollbacks += 1;
        let state = api.get(&format!("/v1/deployments/{v3_id}")).await.body["state"].clone();
        if state == "READY" {
            break;
        }
        assert!(
            matches!(state.as_str(), Some("BUILDING" | "UPLOADING")),
            "v3 ended {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rollbacks > 1, "the rollbacks overlapped the build");

    // Settled on the rollback: v3 is READY but not production.
    let pinned = project(&api, &project_id).await;
    assert_eq!(pinned["production_deployment_id"], v1["id"], "{pinned}");
    let since = pinned["production_pinned_at"].as_str().unwrap_or_default();
    assert!(
        chrono::DateTime::parse_from_rfc3339(since).is_ok(),
        "pinned since: {pinned}"
    );
    let v3_done = api.get(&format!("/v1/deployments/{v3_id}")).await.body;
    assert_eq!(v3_done["is_production"], false, "{v3_done}");
    let site = host("race-site");
    wait_served(&site, "/", "Version one").await;
    assert!(
        get_page(&host(&deployment_label("race-site", &v3_done)), "/")
            .await
            .body
            .contains("Version three"),
        "v3 stays reachable at its own host"
    );

    // A later build does not take a pinned production over either.
    repo.write("index.html", "<h1>Version four</h1>");
    repo.commit("v4");
    let v4 = ready(&api, &project_id).await;
    assert_eq!(v4["is_production"], false);
    assert_eq!(
        project(&api, &project_id).await["production_deployment_id"],
        v1["id"]
    );

    // Promoting with "pin": false hands production back to the builds.
    let reply = promote(&v4, Some(false)).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.body["project"]["production_pinned_at"], Value::Null);
    wait_served(&site, "/", "Version four").await;
    repo.write("index.html", "<h1>Version five</h1>");
    repo.commit("v5");
    let v5 = ready(&api, &project_id).await;
    assert_eq!(v5["is_production"], true, "{v5}");
    wait_served(&site, "/", "Version five").await;
}
