//! End-to-end test harness: starts the whole platform (`deploysphere dev`) once per
//! test binary on free ports with a fresh data folder, and helpers to drive it
//! through its public API and site router, as a user would.

pub mod msk;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_adapters::signing::{BuildKey, PlatformKey};
use serde_json::{Value, json};

pub struct Platform {
    pub api: String,
    pub router_port: u16,
    pub postgres_port: u16,
    pub api_port: u16,
    pub admin_token: String,
    pub home: PathBuf,
    pub kafka_brokers: String,
    pub clickhouse_url: String,
    pub redis_url: String,
    pub ws_url: String,
    pub s3: S3Config,
    /// Where builds' work folders live.
    pub builds_dir: PathBuf,
    /// The platform key builds' signing keys derive from (0600, in the data folder).
    pub build_signing_key_file: PathBuf,
    ports: Vec<u16>,
    options: Options,
    /// Held open for the life of the test process: the platform stops when it closes.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    _dir: tempfile::TempDir,
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/<test> -> target/debug; target/release/bench -> target/release
    let dir = exe.parent().expect("binary folder");
    if dir.ends_with("deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// This package's folder, read at run time (cargo sets it for tests): a test binary
/// reused from another checkout of the same sources must not read that checkout.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string()),
    )
}

static PLATFORM: OnceLock<Platform> = OnceLock::new();
static ADMIN_PATHS_PLATFORM: OnceLock<Platform> = OnceLock::new();

/// The platform of this test process, started on first use. Its accounts may deploy
/// the fixture repositories by path (`DEPLOYSPHERE_ALLOW_LOCAL_PATHS=1`), as tests
/// make an account each.
pub fn platform() -> &'static Platform {
    PLATFORM.get_or_init(|| start(&OPTIONS.get().cloned().unwrap_or_default()))
}

static OPTIONS: OnceLock<Options> = OnceLock::new();

/// A platform with the default rule for local paths: the admin token's only.
pub fn platform_with_default_local_paths() -> &'static Platform {
    ADMIN_PATHS_PLATFORM.get_or_init(|| {
        start(&Options {
            allow_local_paths: false,
            ..Options::default()
        })
    })
}

/// How a test's platform differs from the default one.
#[derive(Debug, Clone)]
pub struct Options {
    /// `DEPLOYSPHERE_ALLOW_LOCAL_PATHS` (the fixtures are deployed by path).
    pub allow_local_paths: bool,
    /// `--max-builds`.
    pub max_builds: u32,
    /// More `deploysphere dev` arguments.
    pub args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            allow_local_paths: true,
            max_builds: 4,
            args: Vec::new(),
        }
    }
}

/// This test process's platform, started with `options` (so that every helper,
/// which uses [`platform`], talks to it). Panics if it already runs with others.
pub fn platform_with(options: Options) -> &'static Platform {
    let chosen = OPTIONS.get_or_init(|| options.clone());
    assert_eq!(
        (chosen.allow_local_paths, chosen.max_builds, &chosen.args),
        (options.allow_local_paths, options.max_builds, &options.args),
        "this test process's platform runs with other options"
    );
    platform()
}

/// Starts the platform. The ports are picked free but released before the platform
/// binds them, so another process can take one in between: a platform that exits
/// while starting is started again on new ports (twice at most).
fn start(options: &Options) -> Platform {
    let bin = target_dir().join("deploysphere");
    assert!(
        bin.exists() && target_dir().join("builder").exists(),
        "build the binaries first (`cargo build --workspace`, as `make test` does): {} is missing",
        bin.display()
    );
    let mut attempt = 1;
    loop {
        match start_once(&bin, options) {
            Ok(platform) => return platform,
            Err(log) if attempt < 3 => {
                eprintln!(
                    "[platform] exited while starting (attempt {attempt}), trying new ports; its log:\n{log}"
                );
                attempt += 1;
            }
            Err(log) => panic!("the platform did not start ({attempt} attempts); its log:\n{log}"),
        }
    }
}

/// Starts `deploysphere dev` on `home` and `ports` and waits until it is ready; the
/// platform's log (in `dir`, as `log_name`) when it exits before that.
fn run_platform(
    bin: &Path,
    dir: &Path,
    home: &Path,
    ports: &[u16],
    options: &Options,
    log_name: &str,
) -> Result<(Child, ChildStdin), String> {
    let log_path = dir.join(log_name);
    let mut child = Command::new(bin)
        .arg("dev")
        .arg("--home")
        .arg(home)
        .args(["--api-port", &ports[0].to_string()])
        .args(["--router-port", &ports[1].to_string()])
        .args(["--postgres-port", &ports[2].to_string()])
        .args(["--redis-port", &ports[3].to_string()])
        .args(["--kafka-port", &ports[4].to_string()])
        .args(["--clickhouse-port", &ports[5].to_string()])
        .args(["--clickhouse-tcp-port", &ports[6].to_string()])
        .args(["--s3-port", &ports[7].to_string()])
        .args(["--ws-port", &ports[8].to_string()])
        .args(["--max-builds", &options.max_builds.to_string()])
        .args(&options.args)
        .arg("--exit-with-stdin")
        .arg("--ephemeral")
        .env("RUST_LOG", "warn,deploysphere=info")
        .env(
            "DEPLOYSPHERE_ALLOW_LOCAL_PATHS",
            if options.allow_local_paths { "1" } else { "0" },
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(&log_path).expect("log file"),
        ))
        .spawn()
        .expect("start deploysphere dev");
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    // Echo the banner and wait for "Press Ctrl-C", which comes once everything is up.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut ready = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[platform] {line}");
            if line.contains("Press Ctrl-C")
                && let Some(tx) = ready.take()
            {
                let _ = tx.send(());
            }
        }
    });
    if let Err(waited) = rx.recv_timeout(Duration::from_secs(180)) {
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        if waited == std::sync::mpsc::RecvTimeoutError::Disconnected {
            // It exited: wait for its last words.
            let status = child.wait();
            return Err(format!("(exit: {status:?})\n{}", log()));
        }
        let status = child.try_wait();
        panic!(
            "the platform did not start within 180 s (process: {status:?}); its log:\n{}",
            log()
        );
    }
    Ok((child, stdin))
}

impl Platform {
    /// The `deploysphere dev` process.
    pub fn pid(&self) -> u32 {
        self._child.lock().expect("child lock").id()
    }

    /// Its resident memory now, in bytes (its in-process S3 server and router
    /// included).
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// Kills the platform process with SIGKILL, as a crash would (its servers stop
    /// with it), and starts it again on the same data folder and ports.
    pub fn kill_and_restart(&self) {
        let mut child = self._child.lock().expect("child lock");
        send_signal(child.id() as i32, 9);
        let _ = child.wait();
        // Its servers stop when it dies (parent-death signal): wait for their ports.
        let start = Instant::now();
        while self
            .ports
            .iter()
            .any(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok())
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "the killed platform's servers still listen"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let bin = target_dir().join("deploysphere");
        let (new_child, stdin) = run_platform(
            &bin,
            self._dir.path(),
            &self.home,
            &self.ports,
            &self.options,
            "platform-restarted.log",
        )
        .unwrap_or_else(|log| panic!("the platform did not start again; its log:\n{log}"));
        *child = new_child;
        *self._stdin.lock().expect("stdin lock") = stdin;
    }
}

/// One start; the platform's log when it exits before it is ready.
fn start_once(bin: &Path, options: &Options) -> Result<Platform, String> {
    let dir = tempfile::Builder::new()
        .prefix("deploysphere-e2e-")
        .tempdir_in("/tmp")
        .expect("temp dir");
    let home = dir.path().join("home");
    let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
    let (child, stdin) = run_platform(bin, dir.path(), &home, &ports, options, "platform.log")?;
    let info: Value =
        serde_json::from_slice(&std::fs::read(home.join("platform.json")).expect("platform.json"))
            .expect("platform.json is JSON");
    let s3 = S3Config {
        endpoint: info["s3"]["endpoint"].as_str().map(str::to_string),
        region: "us-east-1".into(),
        bucket: info["s3"]["bucket"].as_str().unwrap_or_default().into(),
        access_key: info["s3"]["access_key"].as_str().unwrap_or_default().into(),
        secret_key: info["s3"]["secret_key"].as_str().unwrap_or_default().into(),
        session_token: None,
    };
    Ok(Platform {
        api: format!("http://127.0.0.1:{}", ports[0]),
        router_port: ports[1],
        postgres_port: ports[2],
        api_port: ports[0],
        admin_token: info["token"].as_str().expect("token").to_string(),
        home,
        kafka_brokers: info["kafka_brokers"]
            .as_str()
            .expect("kafka_brokers")
            .to_string(),
        redis_url: info["redis_url"].as_str().expect("redis_url").to_string(),
        ws_url: info["ws_url"].as_str().expect("ws_url").to_string(),
        clickhouse_url: info["clickhouse_url"]
            .as_str()
            .expect("clickhouse_url")
            .to_string(),
        s3,
        builds_dir: PathBuf::from(info["builds_dir"].as_str().expect("builds_dir")),
        build_signing_key_file: PathBuf::from(
            info["build_signing_key_file"]
                .as_str()
                .expect("build_signing_key_file"),
        ),
        ports,
        options: options.clone(),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
        _dir: dir,
    })
}

/// Every process's command line, its arguments joined by spaces, as any local user
/// can read them in `/proc/<pid>/cmdline`.
pub fn command_lines() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .trim_end_matches('\0')
                .replace('\0', " ")
        })
        .collect()
}

/// A response: status and JSON body (Null when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

impl Reply {
    /// The message of a JSON error body (empty when there is none).
    pub fn error_message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or_default()
    }
}

/// An API client holding one account's token.
#[derive(Clone)]
pub struct Api {
    pub token: String,
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(token: &str) -> Api {
        Api::on(platform(), token)
    }

    /// A client of `platform` holding `token`.
    pub fn on(platform: &Platform, token: &str) -> Api {
        Api {
            token: token.to_string(),
            http: reqwest::Client::new(),
            base: platform.api.clone(),
        }
    }

    pub fn admin() -> Api {
        Api::new(&platform().admin_token)
    }

    /// A fresh account of its own (tests never share accounts).
    pub async fn new_account(name: &str) -> Api {
        Api::new_account_on(platform(), name).await
    }

    /// A fresh account on `platform`, made with its admin token.
    pub async fn new_account_on(platform: &Platform, name: &str) -> Api {
        let reply = Api::on(platform, &platform.admin_token)
            .post("/v1/accounts", json!({ "name": name }))
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        Api::on(platform, reply.body["token"].as_str().expect("token"))
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<String>) -> Reply {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("API request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        Reply {
            status,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body.to_string()))
            .await
    }

    pub async fn create_project(&self, body: Value) -> Value {
        let reply = self.post("/v1/projects", body).await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply.body
    }

    pub async fn deploy(&self, project_id: &str) -> Value {
        let reply = self
            .post(&format!("/v1/projects/{project_id}/deployments"), json!({}))
            .await;
        assert_eq!(reply.status, 202, "{reply:?}");
        reply.body
    }

    /// Polls a deployment until `done` holds for it, or panics after `timeout`.
    pub async fn wait_for(
        &self,
        deployment_id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_every(deployment_id, timeout, Duration::from_millis(100), done)
            .await
    }

    /// [`Api::wait_for`], polling every `interval`.
    pub async fn wait_for_every(
        &self,
        deployment_id: &str,
        timeout: Duration,
        interval: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let reply = self.get(&format!("/v1/deployments/{deployment_id}")).await;
            assert_eq!(reply.status, 200, "{reply:?}");
            if done(&reply.body) {
                return reply.body;
            }
            assert!(
                start.elapsed() < timeout,
                "deployment did not get there in {timeout:?}: {}",
                reply.body
            );
            tokio::time::sleep(interval).await;
        }
    }

    /// Waits for a final state (READY, FAILED, CANCELED).
    pub async fn wait_final(&self, deployment_id: &str) -> Value {
        self.wait_for(deployment_id, Duration::from_secs(120), |d| {
            matches!(d["state"].as_str(), Some("READY" | "FAILED" | "CANCELED"))
        })
        .await
    }

    /// Every log line of a deployment, paging with `after_seq`.
    pub async fn logs(&self, deployment_id: &str) -> Vec<Value> {
        let mut lines = Vec::new();
        let mut after = 0;
        loop {
            let reply = self
                .get(&format!(
                    "/v1/deployments/{deployment_id}/logs?after_seq={after}&limit=500"
                ))
                .await;
            assert_eq!(reply.status, 200, "{reply:?}");
            let page = reply.body["lines"].as_array().cloned().unwrap_or_default();
            if page.is_empty() {
                return lines;
            }
            after = reply.body["next_after_seq"]
                .as_u64()
                .expect("next_after_seq");
            lines.extend(page);
        }
    }

    /// Waits until the log holds a line containing `needle` (logs reach ClickHouse in
    /// batches of up to a second), and returns all lines.
    pub async fn logs_containing(&self, deployment_id: &str, needle: &str) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let lines = self.logs(deployment_id).await;
            if lines
                .iter()
                .any(|l| l["message"].as_str().is_some_and(|m| m.contains(needle)))
            {
                return lines;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "no log line contains {needle:?}; lines: {:#?}",
                lines
                    .iter()
                    .map(|l| l["message"].clone())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A response from the site router.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// Requests `path` (sent as is, not normalized) from the site router for `host`.
pub async fn fetch(method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Page {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A raw request, so that paths like `/%2e%2e/` reach the router unchanged.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", platform().router_port))
        .await
        .expect("router");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut map = reqwest::header::HeaderMap::new();
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && let (Ok(name), Ok(value)) = (
                reqwest::header::HeaderName::from_bytes(name.trim().as_bytes()),
                reqwest::header::HeaderValue::from_str(value.trim()),
            )
        {
            map.append(name, value);
        }
    }
    Page {
        status,
        headers: map,
        body: body.to_string(),
    }
}

pub async fn get_page(host: &str, path: &str) -> Page {
    fetch("GET", host, path, &[]).await
}

/// The site host of a project slug or a deployment label.
pub fn host(label: &str) -> String {
    format!("{label}.localhost:{}", platform().router_port)
}

/// The immutable host label of a deployment: `<slug>-<first 8 of id>`.
pub fn deployment_label(slug: &str, deployment: &Value) -> String {
    format!("{slug}-{}", &deployment["id"].as_str().expect("id")[..8])
}

/// Waits until the production host serves a body containing `needle`.
pub async fn wait_served(host: &str, path: &str, needle: &str) -> Page {
    let start = Instant::now();
    loop {
        let page = get_page(host, path).await;
        if page.body.contains(needle) {
            return page;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{host}{path} never served {needle:?}; last: {page:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The platform's Postgres database.
pub fn postgres_url() -> String {
    format!(
        "postgres://postgres@127.0.0.1:{}/deploysphere",
        platform().postgres_port
    )
}

/// A small pool on the platform's Postgres.
pub fn db() -> deploysphere_adapters::pg::Db {
    deploysphere_adapters::pg::Db::new(
        deploysphere_adapters::pg::connect(&postgres_url(), 2).expect("postgres"),
    )
}

pub fn object_store() -> ObjectStore {
    ObjectStore::new(&platform().s3)
}

/// A git repository made from a fixture folder of `tests/fixtures/`, plus extra files.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

impl Repo {
    pub fn from_fixture(name: &str) -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("ds-fixture-")
            .tempdir_in("/tmp")
            .expect("temp dir");
        if !name.is_empty() {
            let source = manifest_dir().join("fixtures").join(name);
            copy_dir(&source, dir.path());
        }
        let repo = Repo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        self.path().display().to_string()
    }

    pub fn write(&self, path: &str, content: &str) -> &Repo {
        let full = self.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write");
        self
    }

    pub fn symlink(&self, target: &str, link: &str) -> &Repo {
        let full = self.path().join(link);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, full).expect("symlink");
        self
    }

    /// Commits everything; returns the commit SHA.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&[
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.com",
            "commit",
            "-q",
            "-m",
            message,
        ]);
        self.git(&["rev-parse", "HEAD"]).trim().to_string()
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(self.path())
            .output()
            .expect("git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).to_string()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}

/// A project of the `slow-lines` fixture whose builds print `lines` lines over
/// `seconds`; its id, and its repository (keep it while builds clone it).
pub async fn slow_project(api: &Api, name: &str, lines: u64, seconds: u64) -> (String, Repo) {
    let repo = Repo::from_fixture("slow-lines");
    repo.commit("slow");
    let project = api
        .create_project(json!({
            "name": name,
            "git_url": repo.url(),
            "env": {"LINES": lines.to_string(), "SECONDS": seconds.to_string()}
        }))
        .await;
    let id = project["id"].as_str().expect("project id").to_string();
    (id, repo)
}

/// Starts a build of the `slow-lines` fixture that prints `lines` lines over
/// `seconds`, and returns its deployment id once line `wait_for_line` is stored.
pub async fn start_slow_build(
    api: &Api,
    name: &str,
    lines: u64,
    seconds: u64,
    wait_for_line: u64,
) -> String {
    let (project_id, _repo) = slow_project(api, name, lines, seconds).await;
    let deployment = api.deploy(&project_id).await;
    let id = deployment["id"]
        .as_str()
        .expect("deployment id")
        .to_string();
    api.logs_containing(&id, &format!("slow line {wait_for_line}"))
        .await;
    id
}

/// Waits for a `slow-lines` build to be READY and checks that its stored log holds
/// `slow line 1` to `slow line {lines}`, gapless and each once.
pub async fn assert_slow_build_complete(api: &Api, id: &str, lines: u64) {
    let done = api
        .wait_for(id, Duration::from_secs(180), |d| {
            matches!(d["state"].as_str(), Some("READY" | "FAILED" | "CANCELED"))
        })
        .await;
    assert_eq!(done["state"], "READY", "{done}");
    let stored = api.logs_containing(id, "Deployed").await;
    assert_gapless(&stored);
    let slow: Vec<String> = messages(&stored)
        .into_iter()
        .filter(|m| m.starts_with("slow line "))
        .collect();
    assert_eq!(slow.len() as u64, lines);
    assert!(
        slow.iter()
            .enumerate()
            .all(|(i, m)| *m == format!("slow line {}", i + 1)),
        "slow lines out of order"
    );
}

/// Panics, with the first offending `seq`, unless the lines are numbered 1, 2, 3...
/// (gapless, each once, in order).
pub fn assert_gapless(lines: &[Value]) {
    for (index, line) in lines.iter().enumerate() {
        let seq = line["seq"].as_u64().unwrap_or(0);
        assert_eq!(
            seq,
            index as u64 + 1,
            "line {} of {} has seq {seq}: lines are missing, repeated or out of order",
            index + 1,
            lines.len()
        );
    }
}

/// The pid of one of the platform's servers: its command name starts with `comm` and
/// its command line contains `needle`.
pub fn server_pid(comm: &str, needle: &str) -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_string_lossy().parse().ok()?;
            let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            (name.starts_with(comm) && String::from_utf8_lossy(&cmdline).contains(needle))
                .then_some(pid)
        })
}

/// Sends a signal to a process.
pub fn send_signal(pid: i32, signal: i32) {
    unsafe extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, signal) };
}

pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;

/// Freezes a process (SIGSTOP) until dropped, even when a test fails half-way.
pub struct Frozen(pub i32);

impl Frozen {
    pub fn new(pid: i32) -> Frozen {
        send_signal(pid, SIGSTOP);
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        send_signal(self.0, SIGCONT);
    }
}

/// Messages of log lines, in order.
pub fn messages(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Live logs: subscribes to a deployment over the WebSocket gateway and collects
/// frames until the final state.
/// What one client saw: log lines in arrival order and state frames.
pub struct Seen {
    pub lines: Vec<Value>,
    pub states: Vec<String>,
    /// Frame kinds in order ("log" / "state:READY" / ...), to check the last one.
    pub order: Vec<String>,
}

pub async fn watch(token: &str, deployment_id: &str, after_seq: u64) -> Seen {
    let url = format!("{}/?token={token}", platform().ws_url);
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .expect("connect");
    let subscribe =
        json!({"action": "subscribe", "deployment_id": deployment_id, "after_seq": after_seq});
    futures::SinkExt::send(
        &mut socket,
        tokio_tungstenite::tungstenite::Message::text(subscribe.to_string()),
    )
    .await
    .unwrap();
    let mut seen = Seen {
        lines: Vec::new(),
        states: Vec::new(),
        order: Vec::new(),
    };
    loop {
        let frame = tokio::time::timeout(
            Duration::from_secs(120),
            futures::StreamExt::next(&mut socket),
        )
        .await
        .expect("a frame within 120 s")
        .expect("the socket stays open")
        .expect("a frame");
        let tokio_tungstenite::tungstenite::Message::Text(text) = frame else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        match value["type"].as_str() {
            Some("log") => {
                seen.lines
                    .extend(value["lines"].as_array().unwrap().iter().cloned());
                seen.order.push("log".into());
            }
            Some("state") => {
                let state = value["state"].as_str().unwrap().to_string();
                seen.order.push(format!("state:{state}"));
                seen.states.push(state.clone());
                if matches!(state.as_str(), "READY" | "FAILED" | "CANCELED") {
                    return seen;
                }
            }
            _ => panic!("unexpected frame {text}"),
        }
    }
}

impl Platform {
    /// The key the build of `deployment_id` signs with, as the platform derives it
    /// (from the key file only the platform's owner can read).
    pub fn build_key(&self, deployment_id: &str) -> BuildKey {
        let secret = std::fs::read_to_string(&self.build_signing_key_file).expect("the key file");
        PlatformKey::new(secret.trim().as_bytes())
            .expect("a platform key")
            .build_key(deployment_id)
    }
}

/// The platform key the event fixtures (`tests/fixtures/events/msk-*.json`) are
/// signed with.
pub fn fixture_build_keys() -> PlatformKey {
    PlatformKey::new(fixture_signing_key().as_bytes()).expect("the fixture key")
}

/// The fixtures' platform key, as a Lambda reads it from `DEPLOYSPHERE_BUILD_SIGNING_KEY`.
pub fn fixture_signing_key() -> String {
    std::fs::read_to_string(manifest_dir().join("fixtures/events/build-signing-key.txt"))
        .expect("the fixture key")
        .trim()
        .to_string()
}

/// Reads `topic` (a dead-letter topic) from the start until a record whose payload
/// contains `marker` shows up; returns its payload and `reason` header.
pub async fn find_dead_letter(topic: &str, marker: &str) -> (String, String) {
    find_dead_letters(topic, &[marker]).await.remove(0)
}

/// As [`find_dead_letter`] for several markers in one read of the topic: the payload
/// and reason of the first record containing each, in the order of `markers`.
pub async fn find_dead_letters(topic: &str, markers: &[&str]) -> Vec<(String, String)> {
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::Headers;
    let group = format!("test-{}", uuid::Uuid::new_v4());
    let consumer: StreamConsumer =
        deploysphere_adapters::kafka::consumer_config(&platform().kafka_brokers, &group)
            .create()
            .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let mut found: Vec<Option<(String, String)>> = vec![None; markers.len()];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if found.iter().all(Option::is_some) {
            return found.into_iter().flatten().collect();
        }
        let Ok(Ok(message)) = tokio::time::timeout(Duration::from_secs(2), consumer.recv()).await
        else {
            continue;
        };
        let payload = String::from_utf8_lossy(message.payload().unwrap_or_default()).to_string();
        for (slot, marker) in found.iter_mut().zip(markers) {
            if slot.is_none() && payload.contains(marker) {
                let reason = message
                    .headers()
                    .and_then(|h| {
                        h.iter()
                            .find(|h| h.key == "reason")
                            .and_then(|h| h.value.map(|v| String::from_utf8_lossy(v).to_string()))
                    })
                    .unwrap_or_default();
                *slot = Some((payload.clone(), reason));
            }
        }
    }
    if found.iter().all(Option::is_some) {
        return found.into_iter().flatten().collect();
    }
    let missing: Vec<&&str> = markers
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|(m, _)| m)
        .collect();
    panic!("no record containing {missing:?} on {topic}");
}
