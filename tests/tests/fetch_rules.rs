//! How a build fetches its source: the host is resolved once, refused when it is on
//! this machine or a private network (unless the account is trusted with this
//! machine), and git is pinned to the checked address; redirects are not followed;
//! the fetch is capped in size.
//!
//! The platform here has the default local-paths rule (the admin only) and a 1 MB
//! fetch limit. The machine's own host name stands for "a public-looking name that
//! resolves to a private address" (Debian maps it to 127.0.1.1, this machine to
//! 127.0.0.1).

use std::io::{Read, Write};
use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use deploysphere_e2e::*;
use serde_json::{Value, json};

fn fetch_platform() -> &'static Platform {
    platform_with(Options {
        allow_local_paths: false,
        args: vec!["--max-fetch-mb".into(), "1".into()],
        ..Options::default()
    })
}

/// This machine's host name, checked to resolve to a loopback address.
fn loopback_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("host name")
        .trim()
        .to_string();
    let resolved: Vec<_> = (name.as_str(), 80)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("the host name {name:?} does not resolve: {e}"))
        .collect();
    assert!(
        resolved.iter().all(|a| a.ip().is_loopback()),
        "the host name {name:?} resolves to {resolved:?}, not only to loopback"
    );
    name
}

/// A TCP server on 127.0.0.1 that counts its connections and answers each with
/// `response` (or closes it, for `None`).
fn counting_server(response: Option<String>) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            if let Some(response) = &response {
                let _ = stream.write_all(response.as_bytes());
            }
        }
    });
    (port, seen)
}

async fn deploy_and_fail(api: &Api, name: &str, git_url: &str) -> String {
    let project = api
        .create_project(json!({"name": name, "git_url": git_url}))
        .await;
    let deployment = api.deploy(project["id"].as_str().unwrap()).await;
    let done: Value = api.wait_final(deployment["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "FAILED", "{done}");
    done["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_name_that_resolves_to_a_private_address_is_never_connected_to() {
    let p = fetch_platform();
    let user = Api::new_account_on(p, "resolver").await;
    let (port, seen) = counting_server(None);

    // Spelled as a private address, it is the local-paths rule's: the admin's only.
    let reply = user
        .post(
            "/v1/projects",
            json!({"name": "literal", "git_url": format!("http://127.0.0.1:{port}/site.git")}),
        )
        .await;
    assert_eq!(reply.status, 403, "{reply:?}");
    assert!(
        reply.error_message().contains("private network"),
        "{}",
        reply.error_message()
    );

    // Spelled as a name, the API cannot tell; the builder resolves it and refuses.
    let url = format!("http://{}:{port}/site.git", loopback_name());
    let error = deploy_and_fail(&user, "by name", &url).await;
    assert!(
        error.contains("resolves to 127.") && error.contains("only from public hosts"),
        "{error}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0, "git connected to it");
}

#[tokio::test]
async fn a_redirect_from_the_git_host_is_not_followed() {
    let p = fetch_platform();
    let admin = Api::on(p, &p.admin_token);
    let (elsewhere, seen_elsewhere) = counting_server(None);
    let redirect = format!(
        "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:{elsewhere}/other.git/info/refs?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let (port, seen) = counting_server(Some(redirect));
    // The admin may fetch from this machine: the fetch happens, pinned, and stops at
    // the redirect.
    let url = format!("http://{}:{port}/site.git", loopback_name());
    let error = deploy_and_fail(&admin, "redirected", &url).await;
    assert!(error.contains("302"), "{error}");
    assert!(seen.load(Ordering::SeqCst) >= 1, "the git host was asked");
    assert_eq!(
        seen_elsewhere.load(Ordering::SeqCst),
        0,
        "git followed the redirect"
    );
}

#[tokio::test]
async fn a_repository_over_the_fetch_limit_fails_saying_so() {
    let p = fetch_platform();
    let admin = Api::on(p, &p.admin_token);
    let repo = Repo::from_fixture("static-site");
    // 3 MB that do not compress: the pack git receives is over the 1 MB limit.
    let mut noise = vec![0u8; 3 * 1024 * 1024];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut noise))
        .expect("random bytes");
    std::fs::write(repo.path().join("noise.bin"), &noise).expect("write");
    repo.commit("big");
    let error = deploy_and_fail(&admin, "too big", &repo.url()).await;
    assert!(
        error.contains("larger than the 1 MB fetch limit"),
        "{error}"
    );
}
