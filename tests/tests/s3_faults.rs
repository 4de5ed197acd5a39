//! Fault drill: S3 answering errors while builds upload (its own test binary, with a
//! fault-injecting proxy between the builders and the platform's S3). With every 5th
//! PUT answered 503, uploads are retried and builds succeed; during a 30 s upload
//! outage a build fails naming the S3 error; production keeps serving the previous deployment,
//! and no manifest ever points at a missing blob.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use deploysphere_e2e::*;
use serde_json::{Value, json};

#[derive(Default)]
struct Faults {
    upstream: OnceLock<String>,
    puts: AtomicU64,
    injected: AtomicU64,
    outage: AtomicBool,
}

fn faults() -> &'static Faults {
    static FAULTS: OnceLock<Faults> = OnceLock::new();
    FAULTS.get_or_init(Faults::default)
}

fn unavailable() -> Response {
    Response::builder()
        .status(StatusCode::SERVICE_UNAVAILABLE)
        .header("content-type", "application/xml")
        .body(Body::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>ServiceUnavailable</Code><Message>injected by the test proxy</Message></Error>",
        ))
        .unwrap()
}

/// Forwards a request to the platform's S3 as it came (the Host header too, which
/// the SigV4 signature covers), unless it is one to fail.
async fn forward(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let f = faults();
    // The outage: every upload fails (the build spec can still be read, so the build
    // gets as far as its upload).
    if f.outage.load(Ordering::SeqCst) && (method == Method::PUT || method == Method::POST) {
        f.injected.fetch_add(1, Ordering::SeqCst);
        return unavailable();
    }
    if method == Method::PUT && f.puts.fetch_add(1, Ordering::SeqCst) % 5 == 4 {
        f.injected.fetch_add(1, Ordering::SeqCst);
        return unavailable();
    }
    let upstream = f.upstream.get().expect("upstream set");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let client = reqwest::Client::new();
    let mut request = client
        .request(method, format!("{upstream}{path}"))
        .body(body);
    for (name, value) in &headers {
        request = request.header(name, value);
    }
    let Ok(answer) = request.send().await else {
        return unavailable();
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}

/// The proxy's port (it forwards once the platform's S3 is known).
fn start_proxy() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let app = axum::Router::new().fallback(forward);
            axum::serve(listener, app).await.expect("proxy");
        });
    });
    port
}

fn faulty_platform() -> &'static Platform {
    static PROXY_PORT: OnceLock<u16> = OnceLock::new();
    let port = *PROXY_PORT.get_or_init(start_proxy);
    let p = platform_with(Options {
        args: vec![
            "--builds-s3-endpoint".into(),
            format!("http://127.0.0.1:{port}"),
        ],
        ..Options::default()
    });
    let _ = faults()
        .upstream
        .set(p.s3.endpoint.clone().expect("the platform's S3 endpoint"));
    p
}

async fn deploy(api: &Api, project_id: &str) -> Value {
    let deployment = api.deploy(project_id).await;
    api.wait_final(deployment["id"].as_str().unwrap()).await
}

/// Every blob every manifest names exists.
async fn assert_no_manifest_points_at_a_missing_blob(p: &Platform) {
    let store = deploysphere_adapters::s3::ObjectStore::new(&p.s3);
    for key in store.list("manifests/").await.expect("list manifests") {
        let Some(manifest) = store.get_manifest(&key).await.expect("manifest") else {
            continue;
        };
        for entry in manifest.files.values() {
            let blob = deploysphere_core::manifest::blob_key(&entry.blob);
            assert!(
                store.exists(&blob).await.expect("head"),
                "{key} points at a missing {blob}"
            );
        }
    }
}

#[tokio::test]
async fn uploads_are_retried_an_outage_fails_the_build_and_production_keeps_serving() {
    let p = faulty_platform();
    let api = Api::new_account("s3 faults").await;
    let repo = Repo::from_fixture("static-site");
    for i in 0..30 {
        repo.write(
            &format!("pages/page-{i}.html"),
            &format!("<p>page {i} v1</p>"),
        );
    }
    repo.write("index.html", "<h1>Version one</h1>");
    repo.commit("v1");
    let project = api
        .create_project(json!({"name": "faulty s3", "git_url": repo.url()}))
        .await;
    let project_id = project["id"].as_str().unwrap().to_string();

    // Every 5th PUT fails: the uploads are retried and the builds succeed.
    let v1 = deploy(&api, &project_id).await;
    assert_eq!(v1["state"], "READY", "{v1}");
    for i in 0..30 {
        repo.write(
            &format!("pages/page-{i}.html"),
            &format!("<p>page {i} v2</p>"),
        );
    }
    repo.write("index.html", "<h1>Version two</h1>");
    repo.commit("v2");
    let v2 = deploy(&api, &project_id).await;
    assert_eq!(v2["state"], "READY", "{v2}");
    let injected = faults().injected.load(Ordering::SeqCst);
    assert!(injected >= 6, "only {injected} PUTs were failed");
    let site = host("faulty-s3");
    wait_served(&site, "/", "Version two").await;
    wait_served(&site, "/pages/page-7.html", "page 7 v2").await;

    // A 30 s outage of uploads: the build fails, naming S3's error.
    for i in 0..30 {
        repo.write(
            &format!("pages/page-{i}.html"),
            &format!("<p>page {i} v3</p>"),
        );
    }
    repo.write("index.html", "<h1>Version three</h1>");
    repo.commit("v3");
    faults().outage.store(true, Ordering::SeqCst);
    let outage_ends = tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        faults().outage.store(false, Ordering::SeqCst);
    });
    let v3 = deploy(&api, &project_id).await;
    assert_eq!(v3["state"], "FAILED", "{v3}");
    let error = v3["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("S3") && error.contains("ServiceUnavailable"),
        "{error}"
    );
    // Production keeps serving v2.
    let page = get_page(&site, "/").await;
    assert!(page.body.contains("Version two"), "{}", page.body);
    assert_no_manifest_points_at_a_missing_blob(p).await;

    // After the outage, builds succeed again.
    outage_ends.await.unwrap();
    let v4 = deploy(&api, &project_id).await;
    assert_eq!(v4["state"], "READY", "{v4}");
    wait_served(&site, "/", "Version three").await;
    wait_served(&site, "/pages/page-29.html", "page 29 v3").await;
    assert_no_manifest_points_at_a_missing_blob(p).await;
}
