//! `deploysphere`: the whole platform on one machine. `deploysphere dev` starts the
//! real servers (Postgres, Redis, the tansu Kafka broker, ClickHouse, an embedded S3),
//! then the API, the site router, the consumers and the build launcher.

mod consumers;
mod gateway;
mod launcher;
mod s3server;
mod services;
mod sites;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use deploysphere_adapters::clickhouse::LogStore;
use deploysphere_adapters::pg::{self, Db};
use deploysphere_adapters::s3::{ObjectStore, S3Config};
use deploysphere_api::{ApiConfig, AppState, LocalSources, SitesConfig, hash_token, new_token};
use deploysphere_core::{BuildCredentials, DeploymentState, Launcher};
use deploysphere_events::{Deployments, PlatformKey, PrivateSources, SchedulerConfig};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tracing::{error, info};

use crate::services::write_private;

#[derive(Parser)]
#[command(
    name = "deploysphere",
    about = "The DeploySphere platform on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every part of the platform locally until Ctrl-C.
    Dev(DevArgs),
}

#[derive(Args, Clone)]
struct DevArgs {
    /// Data folder (Postgres, ClickHouse, S3 objects, logs, the admin token).
    #[arg(long, env = "DEPLOYSPHERE_HOME", default_value = ".deploysphere")]
    home: PathBuf,
    #[arg(long, env = "DEPLOYSPHERE_API_PORT", default_value_t = 3000)]
    api_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_ROUTER_PORT", default_value_t = 8000)]
    router_port: u16,
    /// The WebSocket gateway for live build logs.
    #[arg(long, env = "DEPLOYSPHERE_WS_PORT", default_value_t = 3001)]
    ws_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_POSTGRES_PORT", default_value_t = 15432)]
    postgres_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_REDIS_PORT", default_value_t = 16379)]
    redis_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_KAFKA_PORT", default_value_t = 19092)]
    kafka_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_CLICKHOUSE_PORT", default_value_t = 18123)]
    clickhouse_port: u16,
    #[arg(
        long,
        env = "DEPLOYSPHERE_CLICKHOUSE_TCP_PORT",
        default_value_t = 19001
    )]
    clickhouse_tcp_port: u16,
    #[arg(long, env = "DEPLOYSPHERE_S3_PORT", default_value_t = 19000)]
    s3_port: u16,
    /// Domain under which sites are served (`<slug>.<domain>`).
    #[arg(long, env = "DEPLOYSPHERE_DOMAIN", default_value = "localhost")]
    domain: String,
    /// Days build log lines are kept (on ClickHouse servers with TTL, 19.6+).
    #[arg(long, env = "DEPLOYSPHERE_LOG_RETENTION_DAYS", default_value_t = 30)]
    log_retention_days: u32,
    /// Builds running at once on this machine.
    #[arg(long, env = "DEPLOYSPHERE_MAX_BUILDS", default_value_t = 2)]
    max_builds: i64,
    /// Builds one account may run at once. With several accounts, free slots go
    /// round-robin to the accounts with builds waiting.
    #[arg(long, env = "DEPLOYSPHERE_MAX_BUILDS_PER_ACCOUNT", default_value_t = 2, value_parser = clap::value_parser!(i64).range(1..))]
    max_builds_per_account: i64,
    /// Seconds a launched build has to report that it started before it is failed and
    /// its slot freed.
    #[arg(long, env = "DEPLOYSPHERE_BUILD_START_TIMEOUT", default_value_t = 1200, value_parser = clap::value_parser!(i64).range(1..))]
    build_start_timeout: i64,
    /// The S3 endpoint builds upload to, when they reach the platform's S3 by another
    /// address (a proxy; default: the platform's own S3).
    #[arg(long, env = "DEPLOYSPHERE_BUILDS_S3_ENDPOINT")]
    builds_s3_endpoint: Option<String>,
    /// The most a build's fetch of its source may write, in MiB.
    #[arg(long, env = "DEPLOYSPHERE_MAX_FETCH_MB", default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..))]
    max_fetch_mb: u64,
    /// Deployments one account may have waiting for a slot; more are refused (429).
    #[arg(long, env = "DEPLOYSPHERE_MAX_QUEUED_PER_ACCOUNT", default_value_t = 25, value_parser = clap::value_parser!(i64).range(1..))]
    max_queued_per_account: i64,
    /// The `builder` binary (default: next to this one).
    #[arg(long, env = "DEPLOYSPHERE_BUILDER_BIN")]
    builder_bin: Option<PathBuf>,
    /// Let every account deploy local paths and `file://` URLs (default: the admin only).
    #[arg(
        long,
        env = "DEPLOYSPHERE_ALLOW_LOCAL_PATHS",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    allow_local_paths: bool,
    /// Stop when standard input closes (for test harnesses that own the platform).
    #[arg(long)]
    exit_with_stdin: bool,
    /// Delete the data folder on exit (tests).
    #[arg(long)]
    ephemeral: bool,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,deploysphere=info,deadpool=error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| match cli.command {
            Command::Dev(args) => runtime.block_on(dev(args)),
        });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const S3_ACCESS_KEY: &str = "deploysphere";
const S3_BUCKET: &str = "deploysphere-sites";
/// The platform key builds' signing keys derive from, in the data folder (0600).
const BUILD_SIGNING_KEY_FILE: &str = "build-signing-key";

/// Reuses the admin token of an earlier run if it is still valid, else makes one.
async fn admin_token(db: &Db, home: &Path) -> anyhow::Result<String> {
    let path = home.join("token");
    if let Ok(token) = std::fs::read_to_string(&path) {
        let token = token.trim().to_string();
        if db
            .account_by_token_hash(&hash_token(&token))
            .await?
            .is_some_and(|a| a.is_admin)
        {
            narrow_to_owner(&path)?;
            return Ok(token);
        }
    }
    let token = new_token();
    db.create_account("admin", true, &hash_token(&token))
        .await?;
    write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// A secret of this installation, made once and kept in the home folder.
fn local_secret(home: &Path, name: &str) -> anyhow::Result<String> {
    let path = home.join(name);
    if let Ok(secret) = std::fs::read_to_string(&path) {
        narrow_to_owner(&path)?;
        return Ok(secret.trim().to_string());
    }
    // 64 hex characters (256 random bits).
    let secret = deploysphere_adapters::new_token("");
    write_private(&path, secret.as_bytes())?;
    Ok(secret)
}

/// A file of an older version, written with a wider mode, becomes its owner's alone.
fn narrow_to_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))
}

/// Creates the data folder for its owner alone (0700). A folder from an older version
/// that holds the Postgres cluster stays traversable (0711) for the `postgres` user,
/// without letting anyone list it; its secrets are 0600 either way.
fn create_home(home: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)
        .with_context(|| format!("cannot create {}", home.display()))?;
    // As another user than root, Postgres runs as that user and needs nothing more.
    let legacy_postgres = services::is_root() && home.join("postgres").join("PG_VERSION").exists();
    let mode = if legacy_postgres { 0o711 } else { 0o700 };
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict {}", home.display()))?;
    Ok(())
}

async fn bind(name: &str, port: u16) -> anyhow::Result<TcpListener> {
    TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .with_context(|| {
            format!("{name} cannot listen on 127.0.0.1:{port}: the port is in use or not allowed")
        })
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    create_home(&args.home)?;
    let home = args.home.canonicalize()?;
    let logs = home.join("logs");
    std::fs::create_dir_all(&logs)?;
    for (name, port, setting) in [
        ("api", args.api_port, "DEPLOYSPHERE_API_PORT"),
        ("router", args.router_port, "DEPLOYSPHERE_ROUTER_PORT"),
        ("websocket gateway", args.ws_port, "DEPLOYSPHERE_WS_PORT"),
        ("s3", args.s3_port, "DEPLOYSPHERE_S3_PORT"),
    ] {
        services::ensure_free(name, port, setting).await?;
    }

    let mut started = Vec::new();
    let result = run(&args, &home, &logs, &mut started).await;
    eprintln!("Stopping DeploySphere...");
    futures::future::join_all(started.into_iter().map(services::Service::stop)).await;
    if args.ephemeral {
        let postgres = services::postgres_dir(&home);
        let _ = std::fs::remove_dir_all(&home);
        let _ = std::fs::remove_dir_all(postgres);
        let _ = std::fs::remove_dir_all(services::builds_dir(&home));
    }
    result
}

async fn run(
    args: &DevArgs,
    home: &Path,
    logs: &Path,
    started: &mut Vec<services::Service>,
) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    let (pg_dir, redis_dir, clickhouse_dir) = (
        services::postgres_dir(home),
        home.join("redis"),
        home.join("clickhouse"),
    );
    // The platform logs in to Redis as `default`, builds as `build` (see RedisUsers).
    let redis_users = services::RedisUsers {
        platform_password: local_secret(home, "redis-password")?,
        build_password: local_secret(home, "redis-build-password")?,
    };
    let (pg, redis, kafka, clickhouse) = tokio::join!(
        services::start_postgres(&pg_dir, logs, args.postgres_port),
        services::start_redis(&redis_dir, logs, args.redis_port, &redis_users),
        services::start_kafka(logs, args.kafka_port),
        services::start_clickhouse(
            &clickhouse_dir,
            logs,
            args.clickhouse_port,
            args.clickhouse_tcp_port
        ),
    );
    let mut failure = None;
    let kafka = match kafka {
        Ok(kafka) => Some(kafka),
        Err(e) => {
            failure = Some(e);
            None
        }
    };
    for result in [pg, redis, clickhouse] {
        match result {
            Ok(service) => started.push(service),
            Err(e) => failure = failure.or(Some(e)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let kafka = kafka.context("the kafka broker did not start")?;

    let database_url = format!(
        "postgres://postgres@127.0.0.1:{}/deploysphere",
        args.postgres_port
    );
    let pool = pg::connect(&database_url, 32)?;
    pg::migrate(&pool)
        .await
        .context("postgres migrations failed")?;
    let db = Db::new(pool);
    let clickhouse_url = format!("http://127.0.0.1:{}", args.clickhouse_port);
    let log_store = LogStore::new(&clickhouse_url, "deploysphere", "default", "");
    log_store
        .migrate()
        .await
        .context("clickhouse migrations failed")?;
    match log_store.apply_retention(args.log_retention_days).await {
        Ok(Ok(())) => info!(days = args.log_retention_days, "build log retention set"),
        Ok(Err(version)) => info!(
            %version,
            "this ClickHouse has no TTL: build logs are kept without a retention limit"
        ),
        Err(e) => return Err(anyhow::anyhow!("setting the log retention failed: {e}")),
    }
    let brokers = format!("127.0.0.1:{}", args.kafka_port);
    consumers::create_local_topics(&brokers)
        .await
        .context("creating the kafka topics failed")?;

    let s3_secret = local_secret(home, "s3-secret")?;
    let s3_listener = bind("s3", args.s3_port).await?;
    let s3_root = home.join("s3");
    let s3_task = {
        let (root, secret) = (s3_root.clone(), s3_secret.clone());
        tokio::spawn(
            async move { s3server::serve(&root, s3_listener, S3_ACCESS_KEY, &secret).await },
        )
    };
    let s3_config = S3Config {
        endpoint: Some(format!("http://127.0.0.1:{}", args.s3_port)),
        region: "us-east-1".into(),
        bucket: S3_BUCKET.into(),
        access_key: S3_ACCESS_KEY.into(),
        secret_key: s3_secret.clone(),
        session_token: None,
    };
    let store = ObjectStore::new(&s3_config);
    store
        .ensure_bucket()
        .await
        .context("creating the S3 bucket failed")?;

    let builder_bin = match &args.builder_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("builder"),
    };
    anyhow::ensure!(
        builder_bin.exists(),
        "the builder binary is missing at {} (run `cargo build`)",
        builder_bin.display()
    );
    let (stopped_tx, mut stopped_rx) = mpsc::unbounded_channel();
    let builder_env = vec![
        ("DEPLOYSPHERE_KAFKA_BROKERS".to_string(), brokers.clone()),
        (
            "DEPLOYSPHERE_REDIS_URL".to_string(),
            redis_users.build_url(args.redis_port),
        ),
        (
            "DEPLOYSPHERE_S3_ENDPOINT".to_string(),
            args.builds_s3_endpoint
                .clone()
                .or_else(|| s3_config.endpoint.clone())
                .unwrap_or_default(),
        ),
        ("DEPLOYSPHERE_S3_BUCKET".to_string(), S3_BUCKET.to_string()),
        // No keys: the build exchanges its grant at the API, as on AWS.
        (
            "DEPLOYSPHERE_API_URL".to_string(),
            format!("http://127.0.0.1:{}", args.api_port),
        ),
        (
            "DEPLOYSPHERE_WORK_DIR".to_string(),
            services::prepare_builds_dir(home)
                .context("cannot create the builds folder")?
                .display()
                .to_string(),
        ),
        (
            "DEPLOYSPHERE_ALLOW_LOCAL_SOURCES".to_string(),
            "1".to_string(),
        ),
    ];
    let launcher = Arc::new(launcher::LocalLauncher::new(
        builder_bin,
        builder_env,
        logs.join("builds"),
        stopped_tx,
        store.clone(),
        BuildCredentials {
            access_key_id: S3_ACCESS_KEY.to_string(),
            secret_access_key: s3_secret.clone(),
            session_token: None,
            expires_at_ms: None,
            next_grant: String::new(),
            build_key: String::new(),
        },
    ));
    let scheduler = SchedulerConfig {
        max_concurrent_builds: args.max_builds,
        max_concurrent_builds_per_account: args.max_builds_per_account,
        max_queued_per_account: args.max_queued_per_account,
        start_timeout_secs: args.build_start_timeout,
        limits: deploysphere_core::Limits {
            max_fetch_mb: args.max_fetch_mb,
            ..deploysphere_core::Limits::default()
        },
        private_sources: if args.allow_local_paths {
            PrivateSources::Everyone
        } else {
            PrivateSources::AdminOnly
        },
    };
    // Each build signs its events and log lines with a key derived from this one.
    let build_keys = PlatformKey::new(local_secret(home, BUILD_SIGNING_KEY_FILE)?.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", home.join(BUILD_SIGNING_KEY_FILE).display()))?;
    let deployments = Deployments::new(
        db.clone(),
        launcher.clone() as Arc<dyn Launcher>,
        scheduler,
        build_keys.clone(),
    )
    .with_sites_bucket(store.clone());

    // Builds that were running when the platform last stopped have no process now.
    for id in db.launched_unfinished().await? {
        let _ = deployments
            .apply_state(
                id,
                DeploymentState::Failed,
                Some("the platform stopped while this build ran"),
                None,
            )
            .await;
        deployments.build_ended(&id.to_string()).await;
        // Its processes died with the platform; their cgroups stay until removed.
        launcher::remove_cgroups(&id.to_string());
    }

    let token = admin_token(&db, home).await?;
    let api_state = AppState {
        db: db.clone(),
        logs: log_store.clone(),
        deployments: deployments.clone(),
        config: Arc::new(ApiConfig {
            sites: SitesConfig {
                scheme: "http".into(),
                domain: args.domain.clone(),
                port: Some(args.router_port),
            },
            local_sources: if args.allow_local_paths {
                LocalSources::Everyone {
                    data_dir: home.to_path_buf(),
                }
            } else {
                LocalSources::AdminOnly {
                    data_dir: home.to_path_buf(),
                }
            },
        }),
    };
    // Live logs: the WebSocket gateway (API Gateway's local stand-in) and the relay,
    // both pushing through the same PostToConnection client.
    let redis_url = redis_users.platform_url(args.redis_port);
    let redis = redis::Client::open(redis_url.as_str())?
        .get_multiplexed_async_connection()
        .await
        .context("connecting to redis failed")?;
    let ws_context = deploysphere_ws::WsContext {
        db: db.clone(),
        logs: log_store.clone(),
        redis,
        poster: Arc::new(deploysphere_ws::ApiGatewayPoster::new(
            &format!("http://127.0.0.1:{}", args.ws_port),
            "us-east-1",
            "local",
            "local",
        )),
        hash_token,
        build_keys: build_keys.clone(),
    };
    let ws_listener = bind("websocket gateway", args.ws_port).await?;
    let gateway_router = gateway::Gateway::new(ws_context.clone()).router();
    let ws_task = tokio::spawn(async move { axum::serve(ws_listener, gateway_router).await });
    let relay_task = {
        let (ctx, url) = (ws_context.clone(), redis_url.clone());
        tokio::spawn(async move { deploysphere_relay::run(ctx, &url).await })
    };
    let api_listener = bind("api", args.api_port).await?;
    let router_listener = bind("router", args.router_port).await?;
    let api = tokio::spawn(async move {
        axum::serve(api_listener, deploysphere_api::router(api_state)).await
    });
    let sites = sites::Sites::new(db.clone(), store.clone(), &args.domain);
    let site_router = axum::Router::new()
        .fallback(sites::serve_site)
        .with_state(sites);
    let router = tokio::spawn(async move { axum::serve(router_listener, site_router).await });
    let (stop_kafka, kafka_shutdown) = tokio::sync::watch::channel(false);
    let kafka_task = tokio::spawn(consumers::supervise_kafka(
        kafka,
        logs.to_path_buf(),
        args.kafka_port,
        deployments.clone(),
        log_store.clone(),
        build_keys,
        kafka_shutdown,
    ));
    let stopped_task = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            while let Some(event) = stopped_rx.recv().await {
                consumers::apply_with_retry(&deployments, &event).await;
            }
        })
    };
    // The safety net: schedule what waits, fail builds that went silent.
    let tick_task = {
        let deployments = deployments.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(10));
            loop {
                tick.tick().await;
                if let Err(e) = deployments.tick().await {
                    error!(error = %e, "the periodic sweep failed; trying again in 10 s");
                }
            }
        })
    };
    deployments.schedule().await?;

    let platform = serde_json::json!({
        "api_url": format!("http://127.0.0.1:{}", args.api_port),
        "ws_url": format!("ws://127.0.0.1:{}", args.ws_port),
        "router_url": format!("http://127.0.0.1:{}", args.router_port),
        "domain": args.domain,
        "token": token,
        "postgres_url": database_url,
        "redis_url": redis_url,
        "kafka_brokers": brokers,
        "clickhouse_url": clickhouse_url,
        "builds_dir": services::builds_dir(home),
        "build_signing_key_file": home.join(BUILD_SIGNING_KEY_FILE),
        "s3": {"endpoint": s3_config.endpoint, "bucket": S3_BUCKET, "access_key": S3_ACCESS_KEY, "secret_key": s3_secret},
    });
    write_private(
        &home.join("platform.json"),
        &serde_json::to_vec_pretty(&platform)?,
    )?;
    println!(
        "\nDeploySphere is running (started in {:.1} s; data in {})\n\n  API          http://127.0.0.1:{}\n  Live logs    ws://127.0.0.1:{}/?token=<token>\n  Sites        http://<project-slug>.{}:{}\n  Admin token  {}\n               (also in {})\n\n  Postgres     {}\n  Redis        redis://127.0.0.1:{} (password in platform.json)\n  Kafka        {} (tansu)\n  ClickHouse   {}\n  S3           http://127.0.0.1:{} (bucket {})\n\nPress Ctrl-C to stop.",
        t0.elapsed().as_secs_f64(),
        home.display(),
        args.api_port,
        args.ws_port,
        args.domain,
        args.router_port,
        token,
        home.join("token").display(),
        database_url,
        args.redis_port,
        brokers,
        clickhouse_url,
        args.s3_port,
        S3_BUCKET,
    );
    info!("platform ready");

    let stdin_closed = async {
        if args.exit_with_stdin {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 64];
                while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
                let _ = tx.send(());
            });
            let _ = rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (mut api, mut router, mut s3_task, mut kafka_task) = (api, router, s3_task, kafka_task);
    let (mut ws_task, mut relay_task) = (ws_task, relay_task);
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminate.recv() => Ok(()),
        _ = stdin_closed => Ok(()),
        r = &mut api => Err(anyhow::anyhow!("the API server stopped: {r:?}")),
        r = &mut router => Err(anyhow::anyhow!("the site router stopped: {r:?}")),
        r = &mut s3_task => Err(anyhow::anyhow!("the S3 server stopped: {r:?}")),
        r = &mut kafka_task => Err(anyhow::anyhow!("the kafka broker or its consumers stopped: {r:?}")),
        r = &mut ws_task => Err(anyhow::anyhow!("the websocket gateway stopped: {r:?}")),
        r = &mut relay_task => Err(anyhow::anyhow!("the log relay stopped: {r:?}")),
    };
    // Stop our own parts before the servers they talk to.
    api.abort();
    router.abort();
    // The broker stops as the other servers do (SIGINT), after its consumers.
    let _ = stop_kafka.send(true);
    if !kafka_task.is_finished()
        && tokio::time::timeout(std::time::Duration::from_secs(12), &mut kafka_task)
            .await
            .is_err()
    {
        kafka_task.abort();
    }
    s3_task.abort();
    ws_task.abort();
    relay_task.abort();
    // Let the aborted clients close before the servers they talk to go away.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    launcher.kill_all();
    stopped_task.abort();
    tick_task.abort();
    outcome
}
