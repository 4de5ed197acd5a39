//! The shared table of routing cases (`tests/fixtures/routing/cases.json`), run through
//! the native router's steps the way the local site router carries them out. The
//! Lambda@Edge handler runs the same table through the wasm build
//! (`functions/edge-wasm/tests/node_handler.rs`), so both must give these answers.

use std::collections::BTreeMap;

use deploysphere_core::Manifest;
use deploysphere_edge_router::{Decision, RouteOptions, decide, decide_host, messages};
use serde_json::Value;

const TABLE: &str = include_str!("../../../tests/fixtures/routing/cases.json");

fn route(table: &Value, request: &Value) -> Decision {
    let method = request["method"].as_str().unwrap_or("GET");
    let host = request["host"].as_str().unwrap_or("");
    let label = match decide_host(method, host, table["domain"].as_str().unwrap_or("")) {
        Ok(label) => label,
        Err(decision) => return decision,
    };
    let Some(record) = table["hosts"].get(&label) else {
        return Decision::plain(404, messages::NO_DEPLOYMENT);
    };
    let manifest_key = record["manifest_key"].as_str().unwrap_or("");
    let Some(manifest) = table["manifests"].get(manifest_key) else {
        return Decision::plain(404, messages::NO_FILES);
    };
    let manifest: Manifest = serde_json::from_value(manifest.clone()).expect("a manifest");
    decide(
        method,
        request["uri"].as_str().unwrap_or("/"),
        request["headers"]["if-none-match"].as_str(),
        record["deployment_id"].as_str().unwrap_or(""),
        &manifest,
        &RouteOptions::default(),
    )
}

#[test]
fn the_native_router_gives_every_answer_in_the_shared_table() {
    let table: Value = serde_json::from_str(TABLE).expect("the cases table");
    let cases = table["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "the table has its cases");
    let mut failures = Vec::new();
    for case in cases {
        let decision = route(&table, &case["request"]);
        let expect = &case["expect"];
        let headers: BTreeMap<&str, &str> = decision
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut wrong = Vec::new();
        if decision.status() as u64 != expect["status"].as_u64().unwrap_or(0) {
            wrong.push(format!("status {}", decision.status()));
        }
        match (&decision, expect.get("blob"), expect.get("body")) {
            (Decision::File { blob, .. }, Some(want), _) if want == blob.as_str() => {}
            (Decision::Plain { message, .. }, None, Some(want)) if want == message.as_str() => {}
            (Decision::NotModified { .. }, None, None) => {}
            (other, _, _) => wrong.push(format!("answer {other:?}")),
        }
        for (name, value) in expect["headers"].as_object().into_iter().flatten() {
            if headers.get(name.as_str()).copied() != value.as_str() {
                wrong.push(format!("header {name}: {:?}", headers.get(name.as_str())));
            }
        }
        if !wrong.is_empty() {
            failures.push(format!("{}: {}", case["name"], wrong.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
