//! The `natter` binary: `natter serve` and the management commands.
//!
//! This is the only crate that picks concrete backends (from the database
//! URL) and the only place `anyhow` is used: everything below reports typed
//! errors, and this edge turns them into one line and an exit code.

mod commands;
mod dev;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use natter_core::Store;
use natter_store::{SqliteConfig, SqliteStore};

/// mimalloc instead of glibc's allocator: measured with `natter-bench idle`,
/// glibc kept the freed handshake buffers of concurrent connects as
/// fragmentation (2.2 KiB of RSS per idle connection instead of 1.7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "natter", version, about = "A real-time chat server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the chat server.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    User(commands::UserCommand),
    /// Manage conversations.
    #[command(subcommand)]
    Conversation(commands::ConversationCommand),
    /// Print a client token (JWT) for a user.
    Token(commands::TokenArgs),
    /// Load users and conversations from a JSON file, in one transaction.
    Import(commands::ImportArgs),
}

/// Where the data lives; shared by every command.
#[derive(Args, Clone)]
struct DatabaseArgs {
    /// `sqlite://PATH` (append `?synchronous=normal` to trade power-loss
    /// durability for speed; the default `full` survives it).
    // A URL may carry a password, so `--help` does not show the env value.
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        default_value = "sqlite://natter.db"
    )]
    database_url: String,
}

/// The token signing key. Its value never appears in `--help` or logs.
#[derive(Args, Clone)]
struct SecretArgs {
    /// HS256 secret for client tokens.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    secret: SecretArgs,
    /// HTTP and WebSocket port.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    host: String,
    /// Redis for several instances (also read from REDIS_URI).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Sends per user per minute; 0 disables the limit.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 60)]
    rate_limit_per_minute: u32,
    /// Sends a user may burst above the rate.
    #[arg(long, env = "RATE_LIMIT_BURST", default_value_t = 10)]
    rate_limit_burst: u32,
    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 64 * 1024)]
    max_message_bytes: usize,
    /// Largest message content, in bytes.
    #[arg(long, env = "MAX_CONTENT_BYTES", default_value_t = 16 * 1024)]
    max_content_bytes: usize,
    /// Server ping interval, in milliseconds.
    #[arg(long, env = "HEARTBEAT_MS", default_value_t = 30_000)]
    heartbeat_ms: u64,
    /// Seconds a graceful shutdown may take.
    #[arg(long, env = "SHUTDOWN_DEADLINE_SECS", default_value_t = 10)]
    shutdown_deadline_secs: u64,
    /// Connections one user may hold; one more closes the oldest (4008).
    #[arg(long, env = "MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    max_connections_per_user: usize,
    /// Bytes queued for one connection before it is closed as too slow (1013).
    #[arg(long, env = "OUTBOX_BYTES", default_value_t = 1024 * 1024)]
    outbox_bytes: usize,
    /// Milliseconds after a user's last connection closes before they are offline.
    #[arg(long, env = "PRESENCE_GRACE_MS", default_value_t = 5_000)]
    presence_grace_ms: u64,
    /// At most one typing indicator forwarded per user and conversation per this many ms.
    #[arg(long, env = "TYPING_THROTTLE_MS", default_value_t = 2_000)]
    typing_throttle_ms: u64,
    /// A typing indicator not renewed within this many ms ends by itself.
    #[arg(long, env = "TYPING_EXPIRY_MS", default_value_t = 6_000)]
    typing_expiry_ms: u64,
    /// Conversations with more members get no delivery receipts, read
    /// receipts only to the reader's devices, and no presence between members.
    #[arg(long, env = "LARGE_CONVERSATION_MEMBERS", default_value_t = 100)]
    large_conversation_members: usize,
    /// Under load, how many ms an ack may wait to leave in one write with its
    /// message's delivery receipts; 0 sends every ack at commit.
    #[arg(long, env = "ACK_WAIT_MS", default_value_t = 20)]
    ack_wait_ms: u64,
    /// Clock skew tolerated on token expiry, in seconds.
    #[arg(long, env = "JWT_LEEWAY_SECS", default_value_t = 5)]
    jwt_leeway_secs: u64,
    /// Enables the admin HTTP endpoints (`POST /api/users`, `POST
    /// /api/tokens`): clients present it as `Authorization: Bearer <token>`.
    /// Unset or empty: those endpoints answer 404.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Development mode: generate and keep a secret beside the database,
    /// create demo users and print their tokens.
    #[arg(long)]
    dev: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs its life at `info`; a management command prints one
    // result line on stdout or one `error:` line on stderr, so its logs stay
    // quiet unless RUST_LOG asks for them.
    let default_filter = match cli.command {
        Command::Serve(_) => "info",
        _ => "error",
    };
    init_logging(default_filter);
    // One worker per core this process may run on: tokio counts the
    // machine's cores, which oversubscribes a process pinned with taskset.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::User(cmd) => commands::user(cmd).await,
        Command::Conversation(cmd) => commands::conversation(cmd).await,
        Command::Token(args) => commands::token(args).await,
        Command::Import(args) => commands::import(args).await,
    }
}

fn init_logging(default_filter: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Opens the store a database URL names, applying its migrations.
async fn open_store(database: &DatabaseArgs) -> anyhow::Result<Arc<dyn Store>> {
    let url = &database.database_url;
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        bail!("PostgreSQL is not supported by this build yet; use sqlite://PATH");
    }
    let config = SqliteConfig::from_url(url)
        .with_context(|| format!("unsupported database URL {url:?}; expected sqlite://PATH"))?;
    let store = SqliteStore::open(config)
        .await
        .with_context(|| format!("cannot open the database {url}"))?;
    Ok(Arc::new(store))
}

/// The path of the database file, for files kept beside it.
fn database_path(database: &DatabaseArgs) -> Option<PathBuf> {
    SqliteConfig::from_url(&database.database_url).map(|c| c.path)
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let redis_url = args
        .redis_url
        .clone()
        .or_else(|| std::env::var("REDIS_URI").ok())
        .filter(|u| !u.is_empty());
    if redis_url.is_some() {
        bail!(
            "REDIS_URL is set, but this build supports only the in-process broker (one instance)"
        );
    }
    // Refuse a missing secret before touching the database or the network.
    let configured = args.secret.jwt_secret.clone().filter(|s| !s.is_empty());
    if configured.is_none() && !args.dev {
        bail!(
            "no JWT secret: set JWT_SECRET (or --jwt-secret), or run with --dev for a local setup"
        );
    }
    let store = open_store(&args.database).await?;
    match prepare_and_bind(&args, configured, store.as_ref()).await {
        Ok((secret, listener)) => run_server(args, secret, listener, store).await,
        Err(e) => {
            store.close().await;
            Err(e)
        }
    }
}

/// The listening socket and the secret (dev mode may create it). Binds
/// first so the dev URLs name the real port, also with `--port 0`.
async fn prepare_and_bind(
    args: &ServeArgs,
    configured: Option<String>,
    store: &dyn Store,
) -> anyhow::Result<(Vec<u8>, tokio::net::TcpListener)> {
    let address = format!("{}:{}", args.host, args.port);
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let secret = match configured {
        Some(secret) => secret.into_bytes(),
        None => {
            let port = listener.local_addr()?.port();
            dev::prepare(&args.database, store, port).await?
        }
    };
    Ok((secret, listener))
}

async fn run_server(
    args: ServeArgs,
    secret: Vec<u8>,
    listener: tokio::net::TcpListener,
    store: Arc<dyn Store>,
) -> anyhow::Result<()> {
    let mut config = natter_server::Config::new(secret);
    config.rate_limit_per_minute = args.rate_limit_per_minute;
    config.rate_limit_burst = args.rate_limit_burst;
    config.max_frame_bytes = args.max_message_bytes;
    config.limits.max_content_bytes = args.max_content_bytes;
    config.heartbeat = Duration::from_millis(args.heartbeat_ms.max(100));
    config.shutdown_deadline = Duration::from_secs(args.shutdown_deadline_secs);
    config.max_connections_per_user = args.max_connections_per_user;
    config.outbox_bytes = args.outbox_bytes.max(4096);
    config.presence_grace = Duration::from_millis(args.presence_grace_ms);
    config.typing_throttle = Duration::from_millis(args.typing_throttle_ms);
    config.typing_expiry = Duration::from_millis(args.typing_expiry_ms.max(10));
    config.jwt_leeway = Duration::from_secs(args.jwt_leeway_secs);
    config.large_conversation = args.large_conversation_members;
    config.ack_wait = Duration::from_millis(args.ack_wait_ms);
    config.admin_token = args.admin_token.filter(|t| !t.is_empty());
    tracing::info!(address = %listener.local_addr()?, "natter listening");
    let broker: natter_server::BrokerFactory =
        Box::new(|delivery| Arc::new(natter_broker::LocalBroker::new(delivery)));
    natter_server::run(listener, config, store, broker, shutdown_signal()).await?;
    tracing::info!("natter stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
    tracing::info!("shutdown requested");
}
