//! `callrelay`: the call-link relay.
//!
//! ```text
//! callrelay serve [--dev] [--config FILE] [--http-addr ADDR] [--public-url URL] [--data-dir DIR] [--database-url URL]
//! callrelay token --user alice [--name Alice] [--admin] [--ttl 1h] [--config FILE]
//! callrelay admin nodes [--url URL] [--config FILE] [--json]
//! callrelay openapi
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use callrelay_links::UserId;
use callrelay_server::app::{self, SystemClock};
use callrelay_server::auth::Tokens;
use callrelay_server::config::{
    Config, ConfigError, LogFormat, Overrides, Settings, StoreLocation,
};
use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for a configuration error (EX_USAGE of sysexits.h).
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(name = "callrelay", version, about = "A relay cluster for call links")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct ConfigArgs {
    /// A TOML configuration file (see callrelay.example.toml).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Development mode: loopback only, a generated secret if none is set, and
        /// POST /v1/dev/token so a browser page can get a token.
        #[arg(long)]
        dev: bool,
        /// Address the HTTP API, the web pages and /metrics listen on (config key http.addr;
        /// default 127.0.0.1:7700).
        #[arg(long, value_name = "ADDR")]
        http_addr: Option<String>,
        /// Base URL put in call-link URLs and signal_url, e.g. the public https:// address
        /// behind your proxy (http.public_url; default http://{http.addr}).
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Directory of the embedded SQLite database callrelay.db, created on start
        /// (store.data_dir; default ./callrelay-data).
        #[arg(long, value_name = "DIR")]
        data_dir: Option<String>,
        /// postgres://user:password@host:5432/db to share state between the nodes of a
        /// cluster, instead of the SQLite file (store.database_url; default: none).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Print a user (or operator) token signed with auth.secret.
    Token {
        #[command(flatten)]
        config: ConfigArgs,
        /// The user id (the token's `sub`).
        #[arg(long)]
        user: String,
        /// A display name.
        #[arg(long)]
        name: Option<String>,
        /// An operator token (`role: admin`).
        #[arg(long)]
        admin: bool,
        /// How long the token is valid, e.g. 1h, 30m, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Operator commands against a running node (signed with auth.secret).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the cluster's members: leases, load, draining state (GET /v1/admin/nodes).
    Nodes {
        #[command(flatten)]
        config: ConfigArgs,
        /// The node to ask; default http://{http.addr}.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Print the JSON answer instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn load(config: &ConfigArgs, overrides: &Overrides, dev: bool) -> Result<Settings, ConfigError> {
    Config::load(config.config.as_deref(), std::env::vars())?.validate(overrides, dev)
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("callrelay: {e}");
    ExitCode::from(EXIT_CONFIG)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Openapi => {
            print!("{}", callrelay_server::api::openapi_json());
            ExitCode::SUCCESS
        }
        Command::Admin {
            command: AdminCommand::Nodes { config, url, json },
        } => admin_nodes(&config, url, json),
        Command::Token {
            config,
            user,
            name,
            admin,
            ttl,
        } => {
            let settings = match load(&config, &Overrides::default(), false) {
                Ok(s) => s,
                Err(e) => return config_error(&e),
            };
            let Ok(user) = UserId::parse(&user) else {
                eprintln!("callrelay: --user must be 1 to 64 characters of [A-Za-z0-9._@+-]");
                return ExitCode::from(EXIT_CONFIG);
            };
            let ttl = match callrelay_server::config::duration("--ttl", &ttl) {
                Ok(t) => t,
                Err(e) => return config_error(&e),
            };
            let tokens = Tokens::new(&settings.auth_secret, settings.leeway);
            println!(
                "{}",
                tokens.issue_user(&user, name.as_deref(), admin, chrono::Utc::now(), ttl)
            );
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            dev,
            http_addr,
            public_url,
            data_dir,
            database_url,
        } => {
            let overrides = Overrides {
                http_addr,
                public_url,
                data_dir,
                database_url,
            };
            let settings = match load(&config, &overrides, dev) {
                Ok(s) => s,
                Err(e) => return config_error(&e),
            };
            init_tracing(&settings);
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("callrelay: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "callrelay stopped");
                    eprintln!("callrelay: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `callrelay admin nodes`: asks a node for the members and prints them.
fn admin_nodes(config: &ConfigArgs, url: Option<String>, json: bool) -> ExitCode {
    let settings = match load(config, &Overrides::default(), false) {
        Ok(s) => s,
        Err(e) => return config_error(&e),
    };
    let base = url.unwrap_or_else(|| {
        let a = settings.http_addr;
        let ip = if a.ip().is_unspecified() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            a.ip()
        };
        format!("http://{}", std::net::SocketAddr::new(ip, a.port()))
    });
    let operator = UserId::parse("callrelay-admin-cli").expect("a valid user id");
    let token = Tokens::new(&settings.auth_secret, settings.leeway).issue_user(
        &operator,
        None,
        true,
        chrono::Utc::now(),
        Duration::from_secs(60),
    );
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("callrelay: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = format!("{}/v1/admin/nodes", base.trim_end_matches('/'));
    let answer = runtime.block_on(async {
        let r = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?
            .get(&url)
            .bearer_auth(token)
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    let (status, body) = match answer {
        Ok(a) => a,
        Err(e) => {
            eprintln!("callrelay: cannot reach {url}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if !status.is_success() {
        eprintln!("callrelay: {url} answered {status}: {body}");
        return ExitCode::FAILURE;
    }
    if json {
        println!("{body}");
        return ExitCode::SUCCESS;
    }
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(v) => {
            print!("{}", callrelay_server::cluster::nodes_table(&v));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("callrelay: unexpected answer from {url}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match settings.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    // Signal handlers before the port is bound: once the relay accepts connections, SIGTERM
    // drains it instead of killing it; one that arrives while the store opens stops the start.
    let mut signals = install_signals();
    let registry = prometheus::Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    let listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind http.addr {}: {e}", settings.http_addr))?;
    let dev = settings.dev;
    let public_url = settings.public_url.clone();
    // Never print a database URL: it may carry a password.
    let store = match &settings.store {
        StoreLocation::Sqlite(path) => format!("SQLite file {}", path.display()),
        StoreLocation::Postgres(_) => "PostgreSQL (store.database_url)".to_owned(),
    };
    let build = app::build(settings, registry, Arc::new(SystemClock));
    let state = match signals.as_mut() {
        Some((term, int)) => tokio::select! {
            state = build => state?,
            _ = term.recv() => { stopped_while_starting(); return Ok(()) }
            _ = int.recv() => { stopped_while_starting(); return Ok(()) }
        },
        None => build.await?,
    };
    tracing::info!(addr = %listener.local_addr()?, public_url, backend = state.store.backend(), "callrelay serving");
    if dev {
        eprintln!("\n  callrelay (dev mode) is running: open {public_url}/ in a browser\n  store: {store}\n");
    }
    app::serve(state.clone(), listener, drained(state, signals)).await?;
    tracing::info!("callrelay stopped");
    Ok(())
}

fn stopped_while_starting() {
    tracing::warn!("signal received while starting: stopped before serving");
}

type Signals = (tokio::signal::unix::Signal, tokio::signal::unix::Signal);

/// SIGTERM and SIGINT streams; `None` if the OS refuses them (logged by [`drained`]).
fn install_signals() -> Option<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => Some((term, int)),
        _ => None,
    }
}

/// Completes when the node has drained: the first SIGTERM or SIGINT (or `POST /v1/admin/drain`)
/// starts a drain; it completes when the last room empties, or at `drain.deadline` after the
/// remaining participants were removed. A second signal forces exit at once (code 130).
async fn drained(state: Arc<app::AppState>, signals: Option<Signals>) {
    match signals {
        Some((mut term, mut int)) => {
            let signals = state.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::warn!("signal received: draining (a second signal forces exit)");
                signals.start_drain();
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                tracing::error!("second signal: exiting now");
                std::process::exit(130);
            });
        }
        None => tracing::error!(
            "cannot install signal handlers; use POST /v1/admin/drain to stop gracefully"
        ),
    }
    state.drained().await;
    // In-flight HTTP requests get a bounded time after the drain.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(10)).await;
        std::process::exit(0);
    });
}
