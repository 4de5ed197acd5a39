//! Builds with Redis (the live path) frozen: the build and its stored log do not
//! notice, and a client that reconnects afterwards catches up by `after_seq`. Its own
//! test binary, because it freezes the platform's Redis.

use deploysphere_e2e::*;
use serde_json::json;

#[tokio::test]
async fn a_build_succeeds_and_keeps_its_whole_log_while_redis_is_down() {
    let p = platform();
    let port = p.redis_url.rsplit(':').next().unwrap().to_string();
    let api = Api::new_account("no-redis").await;
    let repo = Repo::from_fixture("node-build");
    repo.commit("node build");
    let project = api
        .create_project(json!({"name": "no redis", "git_url": repo.url(), "env": {"LINES": "500"}}))
        .await;

    let pid = server_pid("redis-server", &format!(":{port}")).expect("the platform's redis");
    let frozen = Frozen::new(pid);
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let id = deployment["id"].as_str().unwrap();
    let done = api.wait_final(id).await;
    assert_eq!(done["state"], "READY", "{done}");
    let lines = api.logs_containing(id, "Deployed").await;
    assert_gapless(&lines);
    assert_eq!(
        messages(&lines)
            .iter()
            .filter(|m| m.starts_with("build line "))
            .count(),
        500
    );
    drop(frozen);

    // Redis is back: a client that had seen the first 100 lines catches up from there.
    let seen = watch(&api.token, id, 100).await;
    assert_eq!(
        seen.lines.first().and_then(|l| l["seq"].as_u64()),
        Some(101)
    );
    assert_eq!(seen.lines.len(), lines.len() - 100);
    assert_eq!(seen.order.last().map(String::as_str), Some("state:READY"));
}
