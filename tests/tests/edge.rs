//! The AWS shape's edge router against what the platform really publishes: deploy in
//! the local shape, then run the Lambda@Edge handler (`make edge`'s wasm and Node.js
//! code, on CloudFront event fixtures) over the host records, manifests and blobs the
//! platform wrote to S3. A rollback must move the edge's production record too.

use std::path::PathBuf;
use std::process::Command;

use deploysphere_e2e::*;
use serde_json::{Value, json};

fn root() -> PathBuf {
    manifest_dir().join("..")
}

/// An object the platform published. The local S3 server (s3s-fs) can fail a read
/// with "streaming error" while the platform rewrites that object (a writer re-checks
/// and rewrites the production record); S3 itself replaces objects atomically, so a
/// read that fails that way is tried again.
async fn object(key: &str) -> Value {
    let mut attempt = 0;
    let bytes = loop {
        match object_store().get(key).await {
            Ok(found) => break found.unwrap_or_else(|| panic!("{key} was not published")),
            Err(e) if attempt < 5 && e.to_string().contains("streaming error") => {
                attempt += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("s3: {e:?}"),
        }
    };
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

/// A proxy in front of the platform's S3 that holds the first PUT of `key` until the
/// test lets it through: `arrived` fires when it is held, `release` lets it go on.
/// Requests are forwarded with their Host header, so their signatures stay valid.
async fn holding_proxy(
    upstream: String,
    key: String,
) -> (
    String,
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Sender<()>,
) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Method, Uri};
    use std::sync::{Arc, Mutex};
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel::<()>();
    let (release, release_rx) = tokio::sync::oneshot::channel::<()>();
    let hold = Arc::new(Mutex::new(Some((arrived_tx, release_rx))));
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (upstream, key, hold) = (upstream.clone(), key.clone(), hold.clone());
        async move {
            if method == Method::PUT && uri.path().ends_with(&key) {
                let held = hold.lock().unwrap().take();
                if let Some((arrived, release)) = held {
                    arrived.send(()).unwrap();
                    release.await.unwrap();
                }
            }
            let mut request = reqwest::Client::new().request(
                reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
                format!("{upstream}{uri}"),
            );
            for (name, value) in &headers {
                request = request.header(name.as_str(), value.as_bytes());
            }
            let response = request.body(body.to_vec()).send().await.expect("s3");
            let status = axum::http::StatusCode::from_u16(response.status().as_u16()).unwrap();
            (status, response.bytes().await.expect("s3 body").to_vec())
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(handler))
            .await
            .unwrap();
    });
    (format!("http://{address}"), arrived, release)
}

/// Rollbacks clicked in quick succession run in two Lambdas at once. When the write of
/// the older alias lands after the newer one, the edge must still end up serving what
/// the platform says is production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_alias_write_does_not_leave_the_edge_on_an_older_deployment() {
    let api = Api::new_account("edge-race").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "edge race", "git_url": repo.url()}))
        .await;
    let project_id = project["id"].as_str().unwrap();
    let slug = project["slug"].as_str().unwrap();
    let mut ids = Vec::new();
    for version in ["one", "two"] {
        repo.write("index.html", &format!("<h1>Race {version}</h1>"));
        repo.commit(version);
        let deployment = api.deploy(project_id).await;
        let id = deployment["id"].as_str().unwrap().to_string();
        assert_eq!(api.wait_final(&id).await["state"], "READY");
        ids.push(id);
    }
    let promote = |target: String| {
        let api = api.clone();
        async move {
            let reply = api
                .post(
                    &format!("/v1/projects/{project_id}/promote"),
                    json!({ "deployment_id": target }),
                )
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
        }
    };
    promote(ids[0].clone()).await;

    // Writer A (a second events service, its S3 writes held by the proxy) reads the
    // alias (the first deployment) and starts writing it...
    let p = platform();
    let (endpoint, arrived, release) = holding_proxy(
        p.s3.endpoint.clone().expect("local S3"),
        format!("edge/hosts/{slug}.json"),
    )
    .await;
    let store = deploysphere_adapters::s3::ObjectStore::new(&deploysphere_adapters::s3::S3Config {
        endpoint: Some(endpoint),
        ..p.s3.clone()
    });
    let db = db();
    let edge = deploysphere_events::EdgeRoutes::new(store);
    let writer_a = tokio::spawn({
        let slug = slug.to_string();
        async move { edge.publish_production(&db, &slug).await }
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), arrived)
        .await
        .expect("writer A never wrote the alias")
        .unwrap();
    // ...meanwhile writer B promotes the second deployment and publishes it...
    promote(ids[1].clone()).await;
    assert_eq!(
        object(&format!("edge/hosts/{slug}.json")).await["deployment_id"],
        ids[1]
    );
    // ...and only then does A's write of the first deployment land.
    release.send(()).unwrap();
    writer_a.await.unwrap().expect("writer A published");

    let production =
        api.get(&format!("/v1/projects/{project_id}")).await.body["production_deployment_id"]
            .clone();
    assert_eq!(production, ids[1]);
    assert_eq!(
        object(&format!("edge/hosts/{slug}.json")).await["deployment_id"],
        production,
        "the edge's production record differs from the production alias"
    );
}
