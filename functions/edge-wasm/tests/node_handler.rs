//! The Lambda@Edge package (`make edge`, which `make test` runs first): its Node.js
//! handler with the wasm router, run with `node` on real CloudFront event fixtures over
//! the shared table of routing cases that the native router passes too
//! (`functions/edge-router/tests/routing_cases.rs`).

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    // At run time: a binary reused from another checkout of the same commit must not
    // look into that checkout.
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
    .join("../..")
}

fn built(path: &str) -> PathBuf {
    let path = root().join(path);
    assert!(
        path.exists(),
        "{} is missing: run `make edge` (`make test` does)",
        path.display()
    );
    path
}

#[test]
fn the_wasm_handler_gives_every_answer_in_the_shared_table_on_cloudfront_events() {
    let wasm = built("dist/edge/router.wasm");
    let root = root();
    let output = Command::new("node")
        .arg(root.join("functions/edge-wasm/node/cases.mjs"))
        .arg(wasm)
        .arg(root.join("tests/fixtures/routing/cases.json"))
        .arg(root.join("tests/fixtures/events/cloudfront-origin-request.json"))
        .arg(root.join("tests/fixtures/events/cloudfront-origin-response.json"))
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(" 0 failed"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_edge_package_is_under_lambda_at_edge_s_1_mb_limit() {
    let zip = built("dist/edge.zip");
    let size = std::fs::metadata(&zip).expect("zip").len();
    assert!(size < 1024 * 1024, "dist/edge.zip is {size} bytes");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(built("dist/edge/config.json")).expect("config"))
            .expect("config.json is JSON");
    assert!(config["domain"].is_string() && config["bucket"].is_string());
}
