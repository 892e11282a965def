//! `callrelay`: the call-link relay.
//!
//! ```text
//! callrelay serve [--dev] [--config FILE] [--http-addr ADDR] [--public-url URL] [--data-dir DIR] [--database-url URL]
//! callrelay token --user alice [--name Alice] [--admin] [--ttl 1h] [--config FILE]
//! callrelay admin nodes|rooms [--url URL] [--config FILE] [--json]
//! callrelay admin participants ROOM | remove ROOM PARTICIPANT [--reason R] | revoke LINK [--reason R]
//! callrelay link create [--voice] [--title T] [--user U] [--url URL]
//! callrelay cluster init [--out DIR] NODE...
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
    /// Operator commands against a running node: with CALLRELAY_ADMIN_TOKEN, or a token signed
    /// with auth.secret.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Call links from the command line.
    Link {
        #[command(subcommand)]
        command: LinkCommand,
    },
    /// The cluster's own commands.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Write the certificates of the trunk between nodes (mutual TLS): a cluster CA (ca.pem,
    /// ca.key) and, for each NODE, NODE.pem and NODE.key naming it. Run it again with more
    /// nodes to add them: existing files are never overwritten. Keep ca.key off the nodes.
    Init {
        /// The directory to write to (created if missing).
        #[arg(long, value_name = "DIR", default_value = "cluster-certs")]
        out: PathBuf,
        /// The nodes' ids, as their cluster.node_id (DNS names: letters, digits, '-', '.').
        #[arg(required = true, value_name = "NODE")]
        nodes: Vec<String>,
    },
}

/// Where an operator command is sent, and how its answer is printed.
#[derive(clap::Args, Clone, Default)]
struct NodeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// The node to ask; default http://{http.addr}.
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// Print the JSON answer instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// List the cluster's members: leases, load, draining state (GET /v1/admin/nodes).
    Nodes {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List the live calls of the whole cluster: room digest, node, participants, age,
    /// bitrates (GET /v1/admin/rooms).
    Rooms {
        #[command(flatten)]
        node: NodeArgs,
    },
    /// List a live call's participants (GET /v1/admin/rooms/{room}/participants).
    Participants {
        /// The room: its digest as `admin rooms` shows it, or the link id.
        room: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Remove one participant from a call; they may join again (block them, or revoke the
    /// link, to keep them out) (DELETE /v1/admin/rooms/{room}/participants/{pid}).
    Remove {
        /// The room: its digest as `admin rooms` shows it, or the link id.
        room: String,
        /// The participant id (p-…), as `admin participants` shows it.
        participant: String,
        /// Why (logged with the operator's id).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Revoke a link for good: everyone in its call is removed, nobody joins it again
    /// (POST /v1/admin/links/{id}/revoke).
    Revoke {
        /// The 22-character link id.
        link: String,
        /// Why (kept with the link).
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        node: NodeArgs,
    },
}

#[derive(Subcommand)]
enum LinkCommand {
    /// Create a call link and print its share URL, with a fresh end-to-end key in the fragment
    /// (`#k=…`). The key is made here and never sent to the relay: whoever opens the URL can
    /// see and hear the others. Uses CALLRELAY_TOKEN, or a token for --user signed with
    /// auth.secret.
    Create {
        /// A voice link (no video); default video.
        #[arg(long)]
        voice: bool,
        /// A title shown on the link's page.
        #[arg(long)]
        title: Option<String>,
        /// The creator, when no CALLRELAY_TOKEN is set.
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        node: NodeArgs,
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
        Command::Admin { command } => admin(command),
        Command::Cluster {
            command: ClusterCommand::Init { out, nodes },
        } => cluster_init(&out, &nodes),
        Command::Link {
            command:
                LinkCommand::Create {
                    voice,
                    title,
                    user,
                    node,
                },
        } => link_create(voice, title, user, &node),
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

/// `callrelay cluster init`: the CA if missing, then each node's certificate and key.
fn cluster_init(out: &std::path::Path, nodes: &[String]) -> ExitCode {
    let report = match callrelay_trunk::init_dir(out, nodes) {
        Ok(r) => r,
        Err(e @ callrelay_trunk::PkiError::BadNodeName(_)) => {
            eprintln!("callrelay: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(e) => {
            eprintln!("callrelay: {e}");
            return ExitCode::FAILURE;
        }
    };
    let d = out.display();
    if report.created_ca {
        println!("created the cluster CA: {d}/ca.pem (its key {d}/ca.key stays with the operator, not on the nodes)");
    } else {
        println!("reused the cluster CA in {d}/ca.pem");
    }
    for n in &report.issued {
        println!("issued {n}: {d}/{n}.pem and {d}/{n}.key");
    }
    for n in &report.kept {
        println!("kept {n}: {d}/{n}.pem was already there");
    }
    ExitCode::SUCCESS
}

/// Where a command goes and with which token.
struct Target {
    base: String,
    token: String,
    json: bool,
}

/// The node to ask (`--url`, else `http.addr`) and the bearer token: `token_env` if set, else
/// one signed with `auth.secret` for `user` (an operator's when `admin`).
fn target(
    node: &NodeArgs,
    token_env: &str,
    user: Option<&str>,
    admin: bool,
) -> Result<Target, ExitCode> {
    let given = std::env::var(token_env).ok().filter(|t| !t.is_empty());
    // With a token and a URL, no configuration is needed.
    let settings = if given.is_some() && node.url.is_some() {
        None
    } else {
        Some(load(&node.config, &Overrides::default(), false).map_err(|e| config_error(&e))?)
    };
    let base = match (&node.url, &settings) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(settings)) => {
            let a = settings.http_addr;
            let ip = if a.ip().is_unspecified() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                a.ip()
            };
            format!("http://{}", std::net::SocketAddr::new(ip, a.port()))
        }
        (None, None) => unreachable!("settings are loaded when no --url is given"),
    };
    let token = match (given, &settings) {
        (Some(t), _) => t,
        (None, Some(settings)) => {
            let Some(user) = user else {
                eprintln!("callrelay: set {token_env}, or --user to sign a token with auth.secret");
                return Err(ExitCode::from(EXIT_CONFIG));
            };
            let Ok(user) = UserId::parse(user) else {
                eprintln!("callrelay: --user must be 1 to 64 characters of [A-Za-z0-9._@+-]");
                return Err(ExitCode::from(EXIT_CONFIG));
            };
            Tokens::new(&settings.auth_secret, settings.leeway).issue_user(
                &user,
                None,
                admin,
                chrono::Utc::now(),
                Duration::from_secs(60),
            )
        }
        (None, None) => unreachable!("settings are loaded when no token is given"),
    };
    Ok(Target {
        base,
        token,
        json: node.json,
    })
}

/// Sends one request and returns the JSON answer of a 2xx; anything else is printed (with the
/// problem's code and detail) and becomes the exit code 1.
fn call(
    t: &Target,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, ExitCode> {
    let url = format!("{}{path}", t.base);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("callrelay: cannot start the runtime: {e}");
            ExitCode::FAILURE
        })?;
    let answer = runtime.block_on(async {
        let mut req = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?
            .request(method, &url)
            .bearer_auth(&t.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    let (status, body) = answer.map_err(|e| {
        eprintln!("callrelay: cannot reach {url}: {e}");
        ExitCode::FAILURE
    })?;
    let v = serde_json::from_str::<serde_json::Value>(&body);
    if !status.is_success() {
        match &v {
            Ok(p) if p["code"].is_string() => eprintln!(
                "callrelay: {url} answered {status}: {} ({})",
                p["detail"].as_str().or(p["title"].as_str()).unwrap_or(""),
                p["code"].as_str().unwrap_or("")
            ),
            _ => eprintln!("callrelay: {url} answered {status}: {body}"),
        }
        return Err(ExitCode::FAILURE);
    }
    v.map_err(|e| {
        eprintln!("callrelay: unexpected answer from {url}: {e}");
        ExitCode::FAILURE
    })
}

/// Prints `v` as JSON (`--json`) or as `table` renders it.
fn print_answer(
    t: &Target,
    v: &serde_json::Value,
    table: impl FnOnce(&serde_json::Value) -> String,
) {
    if t.json {
        println!("{v}");
    } else {
        print!("{}", table(v));
    }
}

/// `callrelay admin …`: one request to a node, its answer as a table.
fn admin(command: AdminCommand) -> ExitCode {
    let node = match &command {
        AdminCommand::Nodes { node }
        | AdminCommand::Rooms { node }
        | AdminCommand::Participants { node, .. }
        | AdminCommand::Remove { node, .. }
        | AdminCommand::Revoke { node, .. } => node,
    };
    let t = match target(
        node,
        "CALLRELAY_ADMIN_TOKEN",
        Some("callrelay-admin-cli"),
        true,
    ) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let done = match &command {
        AdminCommand::Nodes { .. } => call(&t, reqwest::Method::GET, "/v1/admin/nodes", None)
            .map(|v| print_answer(&t, &v, callrelay_server::cluster::nodes_table)),
        AdminCommand::Rooms { .. } => call(&t, reqwest::Method::GET, "/v1/admin/rooms", None)
            .map(|v| print_answer(&t, &v, callrelay_server::cli::rooms_table)),
        AdminCommand::Participants { room, .. } => call(
            &t,
            reqwest::Method::GET,
            &format!("/v1/admin/rooms/{}/participants", path_segment(room)),
            None,
        )
        .map(|v| print_answer(&t, &v, callrelay_server::cli::participants_table)),
        AdminCommand::Remove {
            room,
            participant,
            reason,
            ..
        } => call(
            &t,
            reqwest::Method::DELETE,
            &format!(
                "/v1/admin/rooms/{}/participants/{}",
                path_segment(room),
                path_segment(participant)
            ),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(|v| {
            print_answer(&t, &v, |v| {
                format!(
                    "removed {} from room {} on {}\n",
                    v["participant_id"].as_str().unwrap_or("?"),
                    v["room"].as_str().unwrap_or("?"),
                    v["node"].as_str().unwrap_or("?")
                )
            })
        }),
        AdminCommand::Revoke { link, reason, .. } => call(
            &t,
            reqwest::Method::POST,
            &format!("/v1/admin/links/{}/revoke", path_segment(link)),
            Some(serde_json::json!({ "reason": reason })),
        )
        .map(|v| {
            print_answer(&t, &v, |v| {
                format!(
                    "revoked link:{} at {}\n",
                    callrelay_links::LinkId::parse(v["id"].as_str().unwrap_or(""))
                        .map(|l| l.digest().to_string())
                        .unwrap_or_else(|_| "?".into()),
                    v["revoked_at"].as_str().unwrap_or("?")
                )
            })
        }),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// A command-line value as one path segment: anything but the characters link ids, digests and
/// participant ids use is percent-encoded, so a stray `/` or `?` cannot change the request.
fn path_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `callrelay link create`: creates the link and prints the URL to share, key included.
fn link_create(
    voice: bool,
    title: Option<String>,
    user: Option<String>,
    node: &NodeArgs,
) -> ExitCode {
    let t = match target(node, "CALLRELAY_TOKEN", user.as_deref(), false) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let mut body = serde_json::json!({ "kind": if voice { "voice" } else { "video" } });
    if let Some(title) = title {
        body["title"] = title.into();
    }
    let link = match call(&t, reqwest::Method::POST, "/v1/links", Some(body)) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let Some(url) = link["url"].as_str() else {
        eprintln!("callrelay: the relay's answer has no url: {link}");
        return ExitCode::FAILURE;
    };
    let share = callrelay_server::cli::share_url(url, &callrelay_server::cli::new_link_key());
    if t.json {
        let mut v = link.clone();
        v["share_url"] = share.into();
        println!("{v}");
    } else {
        println!("{share}");
    }
    ExitCode::SUCCESS
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
