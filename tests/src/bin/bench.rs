//! `make bench`: measures, in one run and on this machine,
//! 1. the site router's requests/s and p99 latency against nginx serving the same
//!    files, both driven by wrk with the same settings;
//! 2. the platform overhead of a deploy of a 100-file site: API call to READY, minus
//!    the build command's own time (median of 5).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use deploysphere_e2e::*;
use serde_json::json;

const BUILD_JS: &str = r#"
const fs = require('fs');
const seed = fs.readFileSync('seed.txt', 'utf8').trim();
const out = process.argv[2] || 'dist';
fs.mkdirSync(out + '/assets', { recursive: true });
const filler = 'Lorem ipsum dolor sit amet, consectetur adipiscing elit. '.repeat(20);
fs.writeFileSync(out + '/index.html', `<!doctype html><title>bench ${seed}</title><h1>Bench ${seed}</h1><p>${filler}</p>\n`);
for (let i = 1; i < 98; i++) fs.writeFileSync(`${out}/page-${i}.html`, `<!doctype html><h1>Page ${i} ${seed}</h1><p>${filler}</p>\n`);
fs.writeFileSync(out + '/assets/app.css', `body { color: #333 } /* ${seed} */\n`);
fs.writeFileSync(out + '/assets/app.js', `console.log(${JSON.stringify(seed)});\n`);
console.log('wrote 100 files');
"#;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

struct WrkResult {
    requests_per_sec: f64,
    p99_ms: f64,
}

fn parse_duration_ms(text: &str) -> f64 {
    let text = text.trim();
    let (number, factor) = if let Some(n) = text.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().unwrap_or(f64::NAN) * factor
}

fn wrk(url: &str, host: &str) -> WrkResult {
    let output = Command::new("wrk")
        .args([
            "-t2",
            "-c32",
            "-d8s",
            "--latency",
            "-H",
            &format!("Host: {host}"),
            url,
        ])
        .output()
        .expect("wrk (run `scripts/setup.sh bench`)");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut result = WrkResult {
        requests_per_sec: f64::NAN,
        p99_ms: f64::NAN,
    };
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            result.requests_per_sec = rest.trim().parse().unwrap_or(f64::NAN);
        } else if let Some(rest) = line.strip_prefix("99%") {
            result.p99_ms = parse_duration_ms(rest);
        } else if line.starts_with("Non-2xx") {
            panic!("wrk saw errors for {url}: {text}");
        }
    }
    result
}

#[tokio::main]
async fn main() {
    let started = Instant::now();
    eprintln!("bench: starting the platform (release build)...");
    let p = platform();
    let api = Api::new_account("bench").await;
    let repo = Repo::from_fixture("");
    repo.write(
        "package.json",
        r#"{"name": "bench", "private": true, "scripts": {"build": "node build.js"}}"#,
    )
    .write("build.js", BUILD_JS)
    .write("seed.txt", "0");
    repo.commit("bench site");
    let project = api
        .create_project(json!({"name": "bench site", "git_url": repo.url()}))
        .await;
    let project_id = project["id"].as_str().unwrap().to_string();

    // Warm-up deploy (first use of every connection and cache), not counted.
    let warm = api.deploy(&project_id).await;
    assert_eq!(
        api.wait_final(warm["id"].as_str().unwrap()).await["state"],
        "READY"
    );

    println!(
        "Deploy overhead, 100-file site (API call to READY minus the build command's own time)"
    );
    let (mut totals, mut overheads) = (Vec::new(), Vec::new());
    for run in 1..=5 {
        repo.write("seed.txt", &format!("run-{run}"));
        repo.commit(&format!("run {run}"));
        let t0 = Instant::now();
        let deployment = api.deploy(&project_id).await;
        let id = deployment["id"].as_str().unwrap().to_string();
        let done = api
            .wait_for_every(
                &id,
                Duration::from_secs(120),
                Duration::from_millis(5),
                |d| matches!(d["state"].as_str(), Some("READY" | "FAILED" | "CANCELED")),
            )
            .await;
        let total = t0.elapsed().as_secs_f64();
        assert_eq!(done["state"], "READY", "{done}");
        let lines = api
            .logs_containing(&id, "The build command finished in")
            .await;
        let build_secs: f64 = messages(&lines)
            .iter()
            .find_map(|m| {
                m.strip_prefix("The build command finished in ")
                    .and_then(|r| r.split(" s").next())
                    .and_then(|n| n.parse().ok())
            })
            .expect("build time line");
        println!(
            "  run {run}: total {:>7.1} ms, build command {:>7.1} ms, overhead {:>7.1} ms",
            total * 1e3,
            build_secs * 1e3,
            (total - build_secs) * 1e3
        );
        totals.push(total);
        overheads.push(total - build_secs);
    }
    println!(
        "  median: total {:.1} ms, platform overhead {:.1} ms",
        median(&mut totals) * 1e3,
        median(&mut overheads) * 1e3
    );

    build_cache(&api).await;

    // The same files for nginx: run the same build locally.
    let site_dir = tempfile::tempdir().unwrap();
    let out = site_dir.path().join("site");
    let status = Command::new("node")
        .arg("build.js")
        .arg(&out)
        .current_dir(repo.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let nginx_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let conf = site_dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n  include /etc/nginx/mime.types;\n  access_log off;\n  client_body_temp_path {dir}/tmp;\n  proxy_temp_path {dir}/tmp;\n  fastcgi_temp_path {dir}/tmp;\n  uwsgi_temp_path {dir}/tmp;\n  scgi_temp_path {dir}/tmp;\n  server {{ listen 127.0.0.1:{nginx_port}; root {root}; etag on; }}\n}}\n",
            dir = site_dir.path().display(),
            root = out.display(),
        ),
    )
    .unwrap();
    std::fs::create_dir_all(site_dir.path().join("tmp")).unwrap();
    let mut nginx = Command::new("nginx")
        .arg("-c")
        .arg(&conf)
        .spawn()
        .expect("nginx (run `scripts/setup.sh bench`)");
    std::thread::sleep(Duration::from_millis(500));

    let site_host = host("bench-site");
    let router_url = format!("http://127.0.0.1:{}/index.html", p.router_port);
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/index.html");
    wait_served(&site_host, "/index.html", "run-5").await;
    let nginx_body = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(nginx_body.contains("run-5"), "nginx serves the same file");

    println!(
        "\nSite router vs nginx, GET /index.html ({} bytes), wrk -t2 -c32 -d8s, same machine",
        nginx_body.len()
    );
    let _ = wrk(&router_url, &site_host); // warm-up
    let router = wrk(&router_url, &site_host);
    let reference = wrk(&nginx_url, "localhost");
    let _ = nginx.kill();
    let _ = nginx.wait();
    println!("  {:<12} {:>12} {:>12}", "", "requests/s", "p99 latency");
    println!(
        "  {:<12} {:>12.0} {:>9.2} ms",
        "router", router.requests_per_sec, router.p99_ms
    );
    println!(
        "  {:<12} {:>12.0} {:>9.2} ms",
        "nginx", reference.requests_per_sec, reference.p99_ms
    );
    println!(
        "  ratio router/nginx: throughput {:.2}x, p99 latency {:.2}x",
        router.requests_per_sec / reference.requests_per_sec,
        router.p99_ms / reference.p99_ms
    );
    eprintln!("bench: done in {:.0} s", started.elapsed().as_secs_f64());
}

/// The install phase of a real Vite project (vite 5 from the npm registry, npm ci)
/// without the build cache (a new project) and with it (its redeploy, same lockfile).
async fn build_cache(api: &Api) {
    println!(
        "Build cache, Vite project (install phase: first deploy vs redeploy of the same lockfile)"
    );
    let install_ms = |deployment: &serde_json::Value| {
        deployment["phases"]
            .as_array()
            .and_then(|phases| phases.iter().find(|p| p["name"] == "install"))
            .and_then(|p| p["ms"].as_f64())
            .expect("an install phase")
    };
    let (mut colds, mut warms) = (Vec::new(), Vec::new());
    for run in 1..=3 {
        let repo = Repo::from_fixture("vite-site");
        repo.commit("vite site");
        let project = api
            .create_project(json!({"name": format!("bench vite {run}"), "git_url": repo.url()}))
            .await;
        let project_id = project["id"].as_str().unwrap();
        let mut times = Vec::new();
        for _ in 0..2 {
            let deployment = api.deploy(project_id).await;
            let done = api.wait_final(deployment["id"].as_str().unwrap()).await;
            assert_eq!(done["state"], "READY", "{done}");
            times.push(install_ms(&done));
        }
        println!(
            "  run {run}: cold install {:>7.0} ms, warm install {:>7.0} ms, {:.1}x",
            times[0],
            times[1],
            times[0] / times[1]
        );
        colds.push(times[0]);
        warms.push(times[1]);
    }
    let (cold, warm) = (median(&mut colds), median(&mut warms));
    println!(
        "  median: cold {cold:.0} ms, warm {warm:.0} ms: the cache makes install {:.1}x faster (goal: at least 3x)",
        cold / warm
    );
}
