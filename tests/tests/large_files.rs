//! Large files through the site router: bodies are streamed, never held whole, and
//! `Range` requests are answered as S3 and CloudFront answer them (206, 416). Its own
//! test binary: it deploys a 500 MB file and measures the platform's memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::json;

const BIG: u64 = 500 * 1024 * 1024;

/// GET of `path` on the site `host` through the router, streamed: (status, bytes,
/// whether every byte was zero).
async fn download(host: &str, path: &str) -> (u16, u64, bool) {
    let client = reqwest::Client::new();
    let response = client
        .get(format!("http://127.0.0.1:{}{path}", platform().router_port))
        .header("host", host)
        .send()
        .await
        .expect("router");
    let status = response.status().as_u16();
    let mut response = response;
    let (mut total, mut zeros) = (0u64, true);
    while let Some(chunk) = response.chunk().await.expect("body chunk") {
        zeros &= chunk.iter().all(|b| *b == 0);
        total += chunk.len() as u64;
    }
    (status, total, zeros)
}

#[tokio::test]
async fn a_500_mb_file_is_streamed_to_8_clients_in_under_300_mb_and_ranges_work() {
    let p = platform();
    let api = Api::new_account("large files").await;
    let repo = Repo::from_fixture("static-site");
    repo.commit("v1");
    let project = api
        .create_project(json!({
            "name": "big files",
            "git_url": repo.url(),
            "build": {"build_command": format!("head -c {BIG} /dev/zero > big.bin")}
        }))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "READY", "{done}");
    let site = host("big-files");

    // Eight clients at once, while the platform's memory is sampled.
    let peak = Arc::new(AtomicU64::new(p.rss_bytes()));
    let downloading = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (peak, downloading) = (peak.clone(), downloading.clone());
        tokio::spawn(async move {
            while downloading.load(Ordering::SeqCst) {
                peak.fetch_max(platform().rss_bytes(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let downloads: Vec<_> = (0..8)
        .map(|_| {
            let site = site.clone();
            tokio::spawn(async move { download(&site, "/big.bin").await })
        })
        .collect();
    for download in downloads {
        let (status, bytes, zeros) = download.await.expect("download task");
        assert_eq!((status, bytes, zeros), (200, BIG, true));
    }
    downloading.store(false, Ordering::SeqCst);
    sampler.await.expect("sampler");
    let peak_mb = peak.load(Ordering::SeqCst) / (1024 * 1024);
    eprintln!("platform RSS peak while 8 clients fetched 500 MB each: {peak_mb} MB");
    assert!(peak_mb < 300, "the platform's RSS reached {peak_mb} MB");

    // The end of the big file, from S3 by range.
    let tail = fetch("GET", &site, "/big.bin", &[("range", "bytes=-10")]).await;
    assert_eq!(tail.status, 206);
    assert_eq!(
        tail.header("content-range"),
        format!("bytes {}-{}/{BIG}", BIG - 10, BIG - 1)
    );
    assert_eq!(tail.header("content-length"), "10");
    assert_eq!(tail.body, "\0".repeat(10));

    // A small file's ranges (served from memory).
    let index = std::fs::read_to_string(repo.path().join("index.html")).unwrap();
    let size = index.len();
    let head = fetch("GET", &site, "/", &[("range", "bytes=0-14")]).await;
    assert_eq!(head.status, 206);
    assert_eq!(head.body, "<!doctype html>");
    assert_eq!(head.header("content-range"), format!("bytes 0-14/{size}"));
    let middle = fetch("GET", &site, "/", &[("range", "bytes=16-")]).await;
    assert_eq!(middle.status, 206);
    assert_eq!(middle.body, index[16..]);
    let past = fetch("GET", &site, "/", &[("range", "bytes=999999-")]).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{size}"));
    // An If-Range that no longer matches gets the whole file; HEAD says ranges work.
    let stale = fetch(
        "GET",
        &site,
        "/",
        &[("range", "bytes=0-14"), ("if-range", "\"an-old-etag\"")],
    )
    .await;
    assert_eq!((stale.status, stale.body.len()), (200, size));
    let described = fetch("HEAD", &site, "/big.bin", &[]).await;
    assert_eq!(described.header("accept-ranges"), "bytes");
    assert_eq!(described.header("content-length"), BIG.to_string());
}
