//! Build logs: ordered paging and search, served from ClickHouse.

use deploysphere_e2e::*;
use serde_json::{Value, json};

fn seqs(lines: &[Value]) -> Vec<u64> {
    lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect()
}

#[tokio::test]
async fn deployment_and_project_logs_can_be_searched() {
    let api = Api::new_account("search").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("node build");
    let project = api
        .create_project(
            json!({"name": "log search", "git_url": repo.url(), "env": {"LINES": "40"}}),
        )
        .await;
    let pid = project["id"].as_str().unwrap();
    let first = api.deploy(pid).await;
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(api.wait_final(first_id).await["state"], "READY");
    let all = api.logs_containing(first_id, "Deployed").await;
    let base = format!("/v1/deployments/{first_id}/logs");

    // Text search is a case-insensitive substring match, in seq order.
    let reply = api.get(&format!("{base}?q=BUILD%20LINE%203")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let found = reply.body["lines"].as_array().unwrap().clone();
    let expected: Vec<String> = std::iter::once(3)
        .chain(30..=39)
        .map(|i| format!("build line {i}"))
        .collect();
    assert_eq!(messages(&found), expected);
    let s = seqs(&found);
    assert!(s.windows(2).all(|w| w[0] < w[1]));

    // Paging a search with after_seq continues where the last page ended.
    let page = api
        .get(&format!("{base}?q=build%20line&limit=15"))
        .await
        .body;
    assert_eq!(page["lines"].as_array().unwrap().len(), 15);
    let next = page["next_after_seq"].as_u64().unwrap();
    let rest = api
        .get(&format!("{base}?q=build%20line&after_seq={next}&limit=100"))
        .await
        .body;
    assert_eq!(
        page["lines"].as_array().unwrap().len() + rest["lines"].as_array().unwrap().len(),
        40
    );

    // By stream.
    let stderr = api.get(&format!("{base}?stream=stderr")).await.body["lines"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!stderr.is_empty());
    assert!(stderr.iter().all(|l| l["stream"] == "stderr"));
    assert!(messages(&stderr).contains(&"a line on stderr".to_string()));

    // By time: since the 20th line's timestamp, nothing older comes back.
    let line20 = all
        .iter()
        .find(|l| l["message"] == "build line 20")
        .unwrap();
    let since = line20["ts"].as_str().unwrap();
    let recent = api.get(&format!("{base}?since={since}")).await.body["lines"]
        .as_array()
        .unwrap()
        .clone();
    assert!(recent.iter().any(|l| l["message"] == "build line 40"));
    assert!(recent.iter().all(|l| l["ts"].as_str().unwrap() >= since));
    assert!(recent.len() < all.len());
    let none = api
        .get(&format!("{base}?until=2000-01-01T00:00:00Z"))
        .await
        .body;
    assert_eq!(none["lines"], json!([]));

    // Across the project's deployments, newest first, each line naming its deployment.
    let second = api.deploy(pid).await;
    let second_id = second["id"].as_str().unwrap();
    api.wait_final(second_id).await;
    api.logs_containing(second_id, "Deployed").await;
    let reply = api.get(&format!("/v1/projects/{pid}/logs?q=cloning")).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let cloning = reply.body["lines"].as_array().unwrap().clone();
    let ids: Vec<&str> = cloning
        .iter()
        .map(|l| l["deployment_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second_id, first_id]);

    // Bad filters are 400s naming the parameter; others' projects are 404s.
    for (query, field) in [
        ("stream=stdin", "stream"),
        ("since=yesterday", "since"),
        ("limit=0", "limit"),
        ("colour=red", "colour"),
    ] {
        let reply = api.get(&format!("{base}?{query}")).await;
        assert_eq!(reply.status, 400, "{query}: {reply:?}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{query}: {message}");
    }
    assert_eq!(
        api.get(&format!("/v1/projects/{pid}/logs?after_seq=3"))
            .await
            .status,
        400
    );
    let other = Api::new_account("search-other").await;
    assert_eq!(
        other
            .get(&format!("/v1/projects/{pid}/logs?q=build"))
            .await
            .status,
        404
    );
    assert_eq!(other.get(&format!("{base}?q=build")).await.status, 404);
}
