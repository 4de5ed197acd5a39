//! The AWS shape's edge router against what the platform really publishes: deploy in
//! the local shape, then run the Lambda@Edge handler (`make edge`'s wasm and Node.js
//! code, on CloudFront event fixtures) over the host records, manifests and blobs the
//! platform wrote to S3. A rollback must move the edge's production record too.

use std::path::PathBuf;
use std::process::Command;

use deploysphere_e2e::*;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

async fn object(key: &str) -> Value {
    let bytes = object_store()
        .get(key)
        .await
        .expect("s3")
        .unwrap_or_else(|| panic!("{key} was not published"));
    serde_json::from_slice(&bytes).expect("JSON")
}

/// A routing table of the published objects for `labels`, with one case per label
/// expecting `/` to be the given deployment's `index.html`.
async fn table(labels: &[(&str, &Value)]) -> Value {
    let (mut hosts, mut manifests, mut blobs, mut cases) =
        (json!({}), json!({}), json!({}), vec![]);
    for (label, expected) in labels {
        let record = object(&format!("edge/hosts/{label}.json")).await;
        let key = record["manifest_key"]
            .as_str()
            .expect("manifest key")
            .to_string();
        let manifest = object(&key).await;
        let index = manifest["files"]["/index.html"]["blob"].clone();
        let content = object_store()
            .get(&format!("blobs/{}", index.as_str().unwrap()))
            .await
            .expect("s3")
            .expect("the blob");
        blobs[index.as_str().unwrap()] = json!(String::from_utf8_lossy(&content));
        cases.push(json!({
            "name": format!("{label} serves its deployment"),
            "request": {"method": "GET", "host": format!("{label}.localhost"), "uri": "/", "headers": {}},
            "expect": {"status": 200, "blob": index, "headers": {
                "x-deploysphere-deployment": expected["id"],
                "content-type": "text/html; charset=utf-8"}}
        }));
        hosts[*label] = record;
        manifests[key] = manifest;
    }
    json!({"domain": "localhost", "hosts": hosts, "manifests": manifests, "blobs": blobs, "cases": cases})
}

fn run_edge_handler(table: &Value) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("cases.json");
    std::fs::write(&path, table.to_string()).expect("write the table");
    let wasm = root().join("dist/edge/router.wasm");
    assert!(wasm.exists(), "run `make edge` first (`make test` does)");
    let output = Command::new("node")
        .arg(root().join("functions/edge-wasm/node/cases.mjs"))
        .arg(wasm)
        .arg(&path)
        .arg(root().join("tests/fixtures/events/cloudfront-origin-request.json"))
        .arg(root().join("tests/fixtures/events/cloudfront-origin-response.json"))
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn the_edge_handler_serves_what_the_platform_published_and_follows_a_rollback() {
    let api = Api::new_account("edge").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "edge site", "git_url": repo.url()}))
        .await;
    let project_id = project["id"].as_str().unwrap();
    let v1 = api.deploy(project_id).await;
    assert_eq!(
        api.wait_final(v1["id"].as_str().unwrap()).await["state"],
        "READY"
    );
    repo.write("index.html", "<h1>Edge two</h1>");
    repo.commit("v2");
    let v2 = api.deploy(project_id).await;
    assert_eq!(
        api.wait_final(v2["id"].as_str().unwrap()).await["state"],
        "READY"
    );

    let (v1_label, v2_label) = (
        deployment_label("edge-site", &v1),
        deployment_label("edge-site", &v2),
    );
    run_edge_handler(&table(&[("edge-site", &v2), (&v1_label, &v1), (&v2_label, &v2)]).await);

    let reply = api
        .post(
            &format!("/v1/projects/{project_id}/promote"),
            json!({"deployment_id": v1["id"]}),
        )
        .await;
    assert_eq!(reply.status, 200, "{reply:?}");
    run_edge_handler(&table(&[("edge-site", &v1)]).await);
}
