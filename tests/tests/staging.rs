//! Build tasks upload new files under their own deployment (`staging/<id>/`), never to
//! the shared `blobs/`; the control plane publishes a file only if S3 verified that its
//! bytes have the SHA-256 its name claims. Run against the platform's real S3 server.

use aws_sdk_s3::primitives::ByteStream;
use deploysphere_core::manifest::{blob_key, manifest_key, staged_key};
use deploysphere_core::{Manifest, ManifestEntry};
use deploysphere_e2e::*;
use deploysphere_events::{StagedError, publish_staged_blobs};
use sha2::{Digest, Sha256};

fn sha(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

fn entry(blob: &str) -> ManifestEntry {
    ManifestEntry {
        blob: blob.to_string(),
        size: 1,
        content_type: "text/html; charset=utf-8".into(),
        cache_control: "no-cache".into(),
    }
}

async fn manifest(deployment: &str, files: &[(&str, &str)]) -> String {
    let manifest = Manifest {
        deployment_id: deployment.to_string(),
        files: files
            .iter()
            .map(|(path, blob)| (path.to_string(), entry(blob)))
            .collect(),
    };
    object_store()
        .put_manifest(&manifest)
        .await
        .expect("manifest")
}

async fn stage(deployment: &str, content: &str, claimed: &str) {
    object_store()
        .put_checked(
            &staged_key(deployment, claimed),
            ByteStream::from(content.as_bytes().to_vec()),
            &sha(content),
            "text/html",
            "no-cache",
        )
        .await
        .expect("staged");
}

#[tokio::test]
async fn verified_uploads_are_published_to_the_shared_blobs() {
    let store = object_store();
    let deployment = uuid::Uuid::new_v4().to_string();
    let content = format!("<h1>{deployment}</h1>");
    let blob = sha(&content);
    stage(&deployment, &content, &blob).await;
    let key = manifest(&deployment, &[("/index.html", &blob)]).await;
    assert!(!store.blob_exists(&blob).await.unwrap());

    publish_staged_blobs(&store, &deployment, &key)
        .await
        .expect("published");
    assert_eq!(
        store.get(&blob_key(&blob)).await.unwrap().unwrap(),
        content.as_bytes()
    );
    assert!(
        !store.exists(&staged_key(&deployment, &blob)).await.unwrap(),
        "staging emptied"
    );
    // Again (a replayed report): nothing to do, still fine.
    publish_staged_blobs(&store, &deployment, &key)
        .await
        .expect("idempotent");
}

#[tokio::test]
async fn an_upload_under_another_files_hash_is_refused_and_the_shared_blob_kept() {
    let store = object_store();
    let deployment = uuid::Uuid::new_v4().to_string();
    let victim = format!("<h1>someone else's page {deployment}</h1>");
    let target = sha(&victim);
    // A hostile build stages its own bytes under the victim file's hash.
    stage(&deployment, "<script>steal()</script>", &target).await;
    let key = manifest(&deployment, &[("/index.html", &target)]).await;

    match publish_staged_blobs(&store, &deployment, &key).await {
        Err(StagedError::Content(reason)) => {
            assert!(
                reason.contains("/index.html") && reason.contains("hash"),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(
        !store.blob_exists(&target).await.unwrap(),
        "nothing was published"
    );
}

#[tokio::test]
async fn a_missing_upload_or_a_foreign_manifest_fails_the_build() {
    let store = object_store();
    let deployment = uuid::Uuid::new_v4().to_string();
    let key = manifest(&deployment, &[("/app.js", &sha("never uploaded"))]).await;
    match publish_staged_blobs(&store, &deployment, &key).await {
        Err(StagedError::Content(reason)) => {
            assert!(reason.contains("/app.js was not uploaded"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let other = uuid::Uuid::new_v4().to_string();
    match publish_staged_blobs(&store, &deployment, &manifest_key(&other)).await {
        Err(StagedError::Content(reason)) => assert!(reason.contains("not its own"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_build_reads_its_spec_from_s3_and_the_spec_is_gone_once_it_ends() {
    let api = Api::new_account("spec").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(serde_json::json!({
            "name": "spec site",
            "git_url": repo.url(),
            "env": {"TOKEN": {"value": "hunter2-spec", "secret": true}}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    assert_eq!(api.wait_final(id).await["state"], "READY");
    let key = deploysphere_core::manifest::build_spec_key(id);
    let start = std::time::Instant::now();
    while object_store().exists(&key).await.unwrap() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the spec (with the project's secrets) outlived the build"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
