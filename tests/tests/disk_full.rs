//! Fault drill: the disk under the builds folder full (its own test binary, as it
//! mounts a small tmpfs over the platform's builds folder). The build fails saying so;
//! the platform keeps serving sites and accepting deployments, and builds succeed again
//! once there is room.

use std::process::Command;

use deploysphere_e2e::*;
use serde_json::{Value, json};

/// A 4 MiB tmpfs over the builds folder; unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path) -> SmallDisk {
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=4m,mode=0711", "tmpfs"])
            .arg(path)
            .status()
            .expect("mount");
        assert!(status.success(), "mount a tmpfs over {}", path.display());
        SmallDisk(path.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

async fn deploy(api: &Api, project_id: &str) -> Value {
    let deployment = api.deploy(project_id).await;
    api.wait_final(deployment["id"].as_str().unwrap()).await
}

#[tokio::test]
async fn a_full_build_disk_fails_the_build_saying_so_and_nothing_else() {
    let p = platform();
    let api = Api::new_account("disk full").await;
    let live = Repo::from_fixture("static-site");
    live.commit("v1");
    let site = api
        .create_project(json!({"name": "still served", "git_url": live.url()}))
        .await;
    let site_id = site["id"].as_str().unwrap();
    assert_eq!(deploy(&api, site_id).await["state"], "READY");

    // A build that writes 10 MB into its checkout.
    let repo = Repo::from_fixture("static-site");
    repo.commit("big");
    let big = api
        .create_project(json!({
            "name": "fills the disk",
            "git_url": repo.url(),
            "build": {"build_command": "head -c 10000000 /dev/zero > big.bin"}
        }))
        .await;
    let big_id = big["id"].as_str().unwrap();

    let disk = SmallDisk::mount(&p.builds_dir);
    let failed = deploy(&api, big_id).await;
    assert_eq!(failed["state"], "FAILED", "{failed}");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(error.contains("No space left on device"), "{error}");

    // Still serving, still accepting deployments.
    let page = get_page(&host("still-served"), "/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Static fixture v1"));
    let accepted = api
        .post(&format!("/v1/projects/{site_id}/deployments"), json!({}))
        .await;
    assert_eq!(accepted.status, 202, "{accepted:?}");
    api.wait_final(accepted.body["id"].as_str().unwrap()).await;

    // Room again: builds succeed.
    drop(disk);
    let again = deploy(&api, site_id).await;
    assert_eq!(again["state"], "READY", "{again}");
}
