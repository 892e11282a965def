//! Configuration: one documented struct, read from a TOML file, every key overridable by an
//! environment variable (`CALLRELAY_<SECTION>_<KEY>`, e.g. `CALLRELAY_LINKS_TTL=3s`) and the main
//! ones by command-line flags. Precedence: flag > environment > file > default.
//!
//! `callrelay.example.toml` at the repository root documents every key; a test checks that it
//! lists exactly the keys of [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A configuration problem, naming the key at fault. The binary exits with code 64 on it.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {message}")]
pub struct ConfigError {
    /// The dotted key, e.g. `links.ttl` (or the file name for a syntax error).
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// The whole configuration as written (durations as text such as `90d` or `3s`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// HTTP API and web pages.
    pub http: HttpConfig,
    /// Where links, blocks and call logs are kept.
    pub store: StoreConfig,
    /// Link lifetime.
    pub links: LinksConfig,
    /// Rooms.
    pub rooms: RoomsConfig,
    /// The lobby of links that require approval.
    pub lobby: LobbyConfig,
    /// Tokens.
    pub auth: AuthConfig,
    /// Rate limits (GCRA).
    pub limits: LimitsConfig,
    /// The media plane: UDP workers.
    pub media: MediaConfig,
    /// STUN and TURN servers offered to clients.
    pub ice: IceConfig,
    /// Graceful drain on SIGTERM.
    pub drain: DrainConfig,
    /// The cluster (only with PostgreSQL).
    pub cluster: ClusterConfig,
    /// Web sign-in through an OpenID Connect provider.
    pub oidc: OidcConfig,
    /// Signed JSON events posted to the operator's endpoints.
    pub webhooks: WebhooksConfig,
    /// Logging.
    pub log: LogConfig,
}

/// `[media]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Worker threads, each with one UDP socket; 0 means one per CPU core.
    pub workers: u32,
    /// Address the UDP sockets bind (the IP part; ports come from `ports`). `::` (or `[::]`)
    /// binds dual-stack sockets that serve IPv4 and IPv6 clients alike.
    pub bind_ip: String,
    /// UDP ports, one per worker: a comma-separated list (`7710,7711`) or a base port (`7710`,
    /// then upward). Each must be reachable from clients.
    pub ports: String,
    /// The address put in ICE candidates (the public address under 1:1 NAT); empty means
    /// `bind_ip`. Comma-separated for both families, at most one IPv4 and one IPv6 address
    /// (`203.0.113.7,2001:db8::7`, with `bind_ip = "::"`): each worker then announces one host
    /// candidate per address, and each client uses the one of its own family.
    pub announce_ip: String,
    /// Datagrams larger than this many bytes are dropped before parsing.
    pub mtu: u32,
    /// A participant with no ICE activity for this long is removed.
    pub idle_timeout: String,
    /// Estimate each subscriber's bandwidth (TWCC) and choose its simulcast layer from it,
    /// under the size it asked for. Off: each subscriber gets the layer it asked for.
    pub bandwidth_estimation: bool,
    /// How long each forwarded video packet is kept to answer a subscriber's NACK (100ms to
    /// 10s). Longer repairs loss for subscribers far away (a NACK comes a round trip after the
    /// packet, and again about once per round trip); shorter costs less memory: ~0.42 KiB per
    /// kept packet per video subscription, at most 256 packets (~1 s of a 2.5 Mbit/s layer).
    pub video_resend_history: String,
    /// ICE-TCP (RFC 6544): each worker also listens on TCP on its UDP port number and every
    /// join's answer carries a passive TCP candidate there, for clients on networks that block
    /// UDP. On by default: its candidates rank below UDP, so clients that have UDP still use it.
    pub tcp: bool,
    /// Open ICE-TCP connections per worker at most (1 to 65536); more are closed at accept.
    pub tcp_max_connections: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            workers: 0,
            bind_ip: "127.0.0.1".into(),
            ports: "7710".into(),
            announce_ip: String::new(),
            mtu: 1500,
            idle_timeout: "30s".into(),
            bandwidth_estimation: true,
            video_resend_history: "1s".into(),
            tcp: true,
            tcp_max_connections: 256,
        }
    }
}

/// `[ice]`: the ICE servers a join answer offers. The relay itself needs none (it is ICE-lite with
/// a public candidate); TURN lets clients on networks that block UDP to it reach it anyway.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IceConfig {
    /// STUN URLs, comma-separated (`stun:stun.example.org:3478`). Empty: none.
    pub stun_urls: String,
    /// TURN URLs, comma-separated (`turn:turn.example.org:3478?transport=udp`,
    /// `turns:turn.example.org:5349?transport=tcp`). Each join gets time-limited credentials for
    /// them (the TURN REST scheme). Empty: none.
    pub turn_urls: String,
    /// The secret shared with the TURN server (coturn: `use-auth-secret` and
    /// `static-auth-secret`), at least 16 bytes. Required with `turn_urls`.
    pub turn_secret: String,
}

/// `[oidc]`: sign-in for the web pages through an OpenID Connect provider (authorization code
/// flow with PKCE). Apps and operators keep using bearer tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer URL (its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`). Empty: web sign-in is off.
    pub issuer: String,
    /// The client id registered with the provider.
    pub client_id: String,
    /// The client secret registered with the provider.
    pub client_secret: String,
    /// Where the provider sends the browser back; empty means `{http.public_url}/auth/callback`.
    /// Register exactly this URL with the provider.
    pub redirect_url: String,
    /// Scopes asked for besides `openid`, space-separated.
    pub scopes: String,
    /// User ids of people who sign in are `{sub}@{user_domain}`; empty means the issuer's host
    /// (with `-{port}` for a port other than the scheme's). Two issuers on one host need two
    /// different values. At most 40 characters of `[A-Za-z0-9.-]`.
    pub user_domain: String,
    /// How long a sign-in lasts; sign-out ends it earlier.
    pub session_ttl: String,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: String::new(),
            redirect_url: String::new(),
            scopes: "profile email".into(),
            user_domain: String::new(),
            session_ttl: "12h".into(),
        }
    }
}

/// `[oidc]`, validated.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    /// `oidc.issuer`, without a trailing slash.
    pub issuer: String,
    /// `oidc.client_id`
    pub client_id: String,
    /// `oidc.client_secret`
    pub client_secret: String,
    /// `oidc.redirect_url`, resolved.
    pub redirect_url: String,
    /// `oidc.scopes`, split.
    pub scopes: Vec<String>,
    /// `oidc.user_domain`, resolved.
    pub user_domain: String,
    /// `oidc.session_ttl`
    pub session_ttl: Duration,
}

impl OidcConfig {
    fn validate(&self, public_url: &str) -> Result<Option<OidcSettings>, ConfigError> {
        if self.issuer.is_empty() {
            return Ok(None);
        }
        let issuer = validate_url("oidc.issuer", &self.issuer)?;
        if self.client_id.is_empty() {
            return Err(ConfigError::new(
                "oidc.client_id",
                "required with oidc.issuer",
            ));
        }
        let redirect_url = if self.redirect_url.is_empty() {
            format!("{public_url}/auth/callback")
        } else {
            validate_url("oidc.redirect_url", &self.redirect_url)?
        };
        let scopes = self
            .scopes
            .split_whitespace()
            .filter(|s| *s != "openid")
            .map(str::to_owned)
            .collect();
        let user_domain = if self.user_domain.is_empty() {
            default_user_domain(&issuer)
        } else {
            self.user_domain.clone()
        };
        if user_domain.is_empty()
            || user_domain.len() > 40
            || !user_domain
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            return Err(ConfigError::new(
                "oidc.user_domain",
                format!("{user_domain:?} must be 1 to 40 characters of [A-Za-z0-9.-]"),
            ));
        }
        let session_ttl = duration("oidc.session_ttl", &self.session_ttl)?;
        if session_ttl < Duration::from_secs(1) || session_ttl > Duration::from_secs(90 * 86_400) {
            return Err(ConfigError::new(
                "oidc.session_ttl",
                "must be between 1s and 90d",
            ));
        }
        Ok(Some(OidcSettings {
            issuer,
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            redirect_url,
            scopes,
            user_domain,
            session_ttl,
        }))
    }
}

/// The issuer's host, lower case, with `-{port}` when it names one: `https://id.example.org:8443/x`
/// gives `id.example.org-8443`.
fn default_user_domain(issuer: &str) -> String {
    let rest = issuer.split_once("://").map_or(issuer, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    authority
        .trim_start_matches('[')
        .replace([']', ':'], "-")
        .replace("--", "-")
        .to_ascii_lowercase()
        .chars()
        .take(40)
        .collect()
}

/// `[drain]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DrainConfig {
    /// How long a draining node lets calls go on before removing the remaining participants.
    pub deadline: String,
}

impl Default for DrainConfig {
    fn default() -> Self {
        DrainConfig {
            deadline: "30m".into(),
        }
    }
}

/// `[cluster]`: used only with `store.database_url = postgres://…`, where every node sharing the
/// database is a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// This node's stable name in the cluster; empty means `{hostname}-{http port}`.
    pub node_id: String,
    /// The region this node serves; new rooms go to the least-loaded node of the caller's region.
    pub region: String,
    /// This node's own URL, reachable by clients: where its signaling WebSocket is (the join
    /// answer's `signal_url` for calls hosted here). Empty means `http.public_url`.
    pub advertise_url: String,
    /// How long a node stays a member without a heartbeat: a killed node's calls are placed
    /// again after this.
    pub lease: String,
    /// How often a node renews its lease and reports its load.
    pub heartbeat: String,
    /// How often a node checks its calls against the store (catches a lost notice, an expiry,
    /// a room placed elsewhere during a partition).
    pub reconcile: String,
    /// UDP address of the trunk between nodes (QUIC, mutual TLS); empty: no trunk.
    pub trunk_addr: String,
    /// `host:port` the other nodes dial for this node's trunk; empty means `trunk_addr`.
    pub trunk_advertise: String,
    /// Directory `callrelay cluster init` wrote: `ca.pem`, `{node_id}.pem`, `{node_id}.key`.
    pub trunk_certs: String,
    /// With trunks: once the home of a call reports this many participants (or is 90 % busy),
    /// further joins into its calls land on another node, as legs of the call. 0: no limit by
    /// count.
    pub node_capacity: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            node_id: String::new(),
            region: "default".into(),
            advertise_url: String::new(),
            lease: "5s".into(),
            heartbeat: "1s".into(),
            reconcile: "2s".into(),
            trunk_addr: String::new(),
            trunk_advertise: String::new(),
            trunk_certs: String::new(),
            node_capacity: 0,
        }
    }
}

/// The validated `[cluster]`.
#[derive(Clone, Debug)]
pub struct ClusterSettings {
    /// `cluster.node_id`, resolved.
    pub node_id: String,
    /// `cluster.region`
    pub region: String,
    /// `cluster.advertise_url` (or `http.public_url`), without a trailing slash.
    pub advertise_url: String,
    /// `cluster.lease`
    pub lease: Duration,
    /// `cluster.heartbeat`
    pub heartbeat: Duration,
    /// `cluster.reconcile`
    pub reconcile: Duration,
    /// The trunk, when `cluster.trunk_addr` is set.
    pub trunk: Option<TrunkSettings>,
    /// `cluster.node_capacity` (`None` for 0).
    pub node_capacity: Option<i64>,
}

/// The validated `cluster.trunk_*`.
#[derive(Clone, Debug)]
pub struct TrunkSettings {
    /// `cluster.trunk_addr`: the trunk's UDP socket.
    pub bind: SocketAddr,
    /// `cluster.trunk_advertise` (or `trunk_addr`): where the other nodes dial.
    pub advertise: SocketAddr,
    /// `cluster.trunk_certs`.
    pub certs: std::path::PathBuf,
}

/// `[http]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address the HTTP server binds.
    pub addr: String,
    /// Base URL put in link URLs; empty means `http://{addr}`.
    pub public_url: String,
    /// Take the client address from `X-Forwarded-For` (only behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// A request's head (request line and headers) must arrive within this, counted from the
    /// connection's start or from the first byte of a later request; otherwise the connection
    /// is closed.
    pub header_timeout: String,
    /// A keep-alive connection with no request in progress is closed after this. Signaling
    /// WebSockets are not HTTP requests any more once upgraded: this never cuts them.
    pub idle_timeout: String,
    /// A request body must be received in full within this (counted from the end of its head);
    /// otherwise `408 request_timeout` and the connection is closed.
    pub body_timeout: String,
    /// Most connections open at once from one client address (IPv6: one /64), signaling
    /// WebSockets included; more are closed at accept. 0 means no cap. Behind a proxy every
    /// connection comes from the proxy's address: raise it or set 0 there.
    pub max_connections_per_ip: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            addr: "127.0.0.1:7700".into(),
            public_url: String::new(),
            trust_forwarded_for: false,
            header_timeout: "10s".into(),
            idle_timeout: "60s".into(),
            body_timeout: "30s".into(),
            max_connections_per_ip: 256,
        }
    }
}

/// The validated `[http]` limits of connections and requests.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    /// `http.header_timeout`
    pub header_timeout: Duration,
    /// `http.idle_timeout`
    pub idle_timeout: Duration,
    /// `http.body_timeout`
    pub body_timeout: Duration,
    /// `http.max_connections_per_ip` (0: no cap).
    pub max_connections_per_ip: u32,
}

/// `[store]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the embedded SQLite database (`callrelay.db`).
    pub data_dir: String,
    /// `postgres://…` to share state between nodes; empty means the embedded SQLite file.
    pub database_url: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            data_dir: "./callrelay-data".into(),
            database_url: String::new(),
        }
    }
}

/// `[links]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinksConfig {
    /// How long a link stays valid after its last use (creation or join).
    pub ttl: String,
    /// How long an expired link still answers "expired" before it is deleted.
    pub purge_grace: String,
    /// How often expired links are purged.
    pub purge_interval: String,
    /// When `link.reminder` events fire before a scheduled call, comma-separated durations
    /// before its start (`0s`: at the start). Empty: none.
    pub reminders: String,
}

impl Default for LinksConfig {
    fn default() -> Self {
        LinksConfig {
            ttl: "90days".into(),
            purge_grace: "30days".into(),
            purge_interval: "1h".into(),
            reminders: "15m, 0s".into(),
        }
    }
}

/// `[webhooks]`: events posted as signed JSON (the Standard Webhooks scheme) from an outbox in
/// the store, at least once.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Endpoint URLs, comma-separated. Empty: no webhooks.
    pub urls: String,
    /// The signing secret, `whsec_` and base64 of 24 to 64 random bytes. Required with `urls`.
    pub secret: String,
    /// Put the full link id (a bearer secret) in events; by default only its digest.
    pub include_link_id: bool,
    /// How long one delivery attempt may take.
    pub timeout: String,
    /// The first retry's delay; each next one doubles, up to an hour.
    pub retry_min: String,
    /// How long after the event retries go on before the message is given up.
    pub retry_for: String,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            urls: String::new(),
            secret: String::new(),
            include_link_id: false,
            timeout: "10s".into(),
            retry_min: "5s".into(),
            retry_for: "24h".into(),
        }
    }
}

/// `[webhooks]`, validated.
#[derive(Clone, Debug)]
pub struct WebhookSettings {
    /// `webhooks.urls`, split.
    pub urls: Vec<String>,
    /// `webhooks.secret`, decoded.
    pub secret: Vec<u8>,
    /// `webhooks.include_link_id`
    pub include_link_id: bool,
    /// `webhooks.timeout`
    pub timeout: Duration,
    /// `webhooks.retry_min`
    pub retry_min: Duration,
    /// `webhooks.retry_for`
    pub retry_for: Duration,
}

impl WebhooksConfig {
    /// `None` when no endpoint is configured.
    fn validate(&self) -> Result<Option<WebhookSettings>, ConfigError> {
        let urls = self
            .urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| validate_url("webhooks.urls", u))
            .collect::<Result<Vec<_>, _>>()?;
        let timeout = duration("webhooks.timeout", &self.timeout)?;
        if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "webhooks.timeout",
                "must be between 100ms and 60s",
            ));
        }
        let retry_min = duration("webhooks.retry_min", &self.retry_min)?;
        if retry_min < Duration::from_millis(100) || retry_min > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "webhooks.retry_min",
                "must be between 100ms and 1h",
            ));
        }
        let retry_for = duration("webhooks.retry_for", &self.retry_for)?;
        if retry_for < Duration::from_secs(1) || retry_for > Duration::from_secs(7 * 86_400) {
            return Err(ConfigError::new(
                "webhooks.retry_for",
                "must be between 1s and 7days",
            ));
        }
        if urls.is_empty() {
            return Ok(None);
        }
        let secret = crate::webhooks::decode_secret(&self.secret)
            .map_err(|why| ConfigError::new("webhooks.secret", why))?;
        Ok(Some(WebhookSettings {
            urls,
            secret,
            include_link_id: self.include_link_id,
            timeout,
            retry_min,
            retry_for,
        }))
    }
}

/// `links.reminders`: durations before the start, largest first, without repeats.
fn validate_reminders(text: &str) -> Result<Vec<Duration>, ConfigError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let d = duration("links.reminders", part)?;
        if d > Duration::from_secs(30 * 86_400) {
            return Err(ConfigError::new(
                "links.reminders",
                "each reminder must be at most 30days before the start",
            ));
        }
        out.push(d);
    }
    if out.len() > 8 {
        return Err(ConfigError::new("links.reminders", "at most 8 reminders"));
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    out.dedup();
    Ok(out)
}

/// `[rooms]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomsConfig {
    /// Most participants in one room.
    pub max_participants: u32,
    /// Most seats one user holds in one room (several devices), connected or not.
    pub max_seats_per_user: u32,
    /// How long a seat taken by a join waits for its client to open signaling before it is
    /// given back (at most the grant's lifetime).
    pub seat_hold: String,
    /// How long a participant whose signaling socket closed without `leave` keeps its seat,
    /// media and tracks, waiting for a new socket to `resume` the session ("0s": never).
    pub resume_grace: String,
}

/// `[lobby]`: joins of links created with `require_approval`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LobbyConfig {
    /// How long a join waits in the lobby for the link's creator to let it in.
    pub timeout: String,
}

impl Default for LobbyConfig {
    fn default() -> Self {
        LobbyConfig {
            timeout: "5m".into(),
        }
    }
}

impl Default for RoomsConfig {
    fn default() -> Self {
        RoomsConfig {
            max_participants: 32,
            max_seats_per_user: 4,
            seat_hold: "10s".into(),
            resume_grace: "30s".into(),
        }
    }
}

/// `[auth]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret for user, admin and grant tokens (at least 32 bytes). Required outside dev mode.
    pub secret: String,
    /// Clock skew tolerated on token expiry (at most 60 s).
    pub leeway: String,
    /// How long a join grant is valid (at most 60 s).
    pub grant_ttl: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            secret: String::new(),
            leeway: "30s".into(),
            grant_ttl: "60s".into(),
        }
    }
}

/// `[limits]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Joins per minute from one client address (burst the same).
    pub join_per_ip_per_minute: u32,
    /// Joins per minute by one user.
    pub join_per_user_per_minute: u32,
    /// Previews (and QR codes) per minute from one client address.
    pub preview_per_ip_per_minute: u32,
    /// Links created per minute by one user.
    pub create_per_user_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            join_per_ip_per_minute: 60,
            join_per_user_per_minute: 30,
            preview_per_ip_per_minute: 120,
            create_per_user_per_minute: 30,
        }
    }
}

/// `[log]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `human` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `callrelay=debug,info` (`RUST_LOG` wins if set).
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "human".into(),
            level: "info".into(),
        }
    }
}

/// Flags that override the file and the environment.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--http-addr`
    pub http_addr: Option<String>,
    /// `--public-url`
    pub public_url: Option<String>,
    /// `--data-dir`
    pub data_dir: Option<String>,
    /// `--database-url`
    pub database_url: Option<String>,
}

/// Where the store lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL server.
    Postgres(String),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// The validated configuration the server runs with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `http.addr`
    pub http_addr: SocketAddr,
    /// `http.public_url`, without a trailing slash.
    pub public_url: String,
    /// `http.trust_forwarded_for`
    pub trust_forwarded_for: bool,
    /// `http.header_timeout`, `http.idle_timeout`, `http.body_timeout`,
    /// `http.max_connections_per_ip`
    pub http_limits: HttpLimits,
    /// `store.*`
    pub store: StoreLocation,
    /// `links.ttl`
    pub link_ttl: Duration,
    /// `links.purge_grace`
    pub purge_grace: Duration,
    /// `links.purge_interval`
    pub purge_interval: Duration,
    /// `rooms.max_participants`
    pub max_participants: usize,
    /// `rooms.max_seats_per_user`
    pub max_seats_per_user: usize,
    /// `rooms.seat_hold` (at most `auth.grant_ttl`).
    pub seat_hold: Duration,
    /// `rooms.resume_grace` (zero: a closed socket ends the session).
    pub resume_grace: Duration,
    /// `lobby.timeout`
    pub lobby_timeout: Duration,
    /// `auth.secret` (generated in dev mode when empty).
    pub auth_secret: Vec<u8>,
    /// `auth.leeway`
    pub leeway: Duration,
    /// `auth.grant_ttl`
    pub grant_ttl: Duration,
    /// `limits.*`
    pub limits: LimitsConfig,
    /// `media.workers`, resolved (at least 1).
    pub media_workers: usize,
    /// `media.bind_ip` + `media.ports`: one socket address per worker.
    pub media_addrs: Vec<SocketAddr>,
    /// `media.announce_ip` (or the bind IP): the host candidate IPs of every worker, at most
    /// one IPv4 and one IPv6 address, in the order listed.
    pub announce_ips: Vec<IpAddr>,
    /// `media.mtu`
    pub mtu: usize,
    /// `media.idle_timeout`
    pub idle_timeout: Duration,
    /// `media.bandwidth_estimation`
    pub bandwidth_estimation: bool,
    /// `media.video_resend_history`
    pub video_resend_history: Duration,
    /// `media.tcp_max_connections` when `media.tcp` is on; `None`: no ICE-TCP.
    pub tcp_max_connections: Option<usize>,
    /// `[ice]`: STUN and TURN servers offered with each join.
    pub ice: crate::ice::IceServers,
    /// `drain.deadline`
    pub drain_deadline: Duration,
    /// `cluster.*` (used only with PostgreSQL).
    pub cluster: ClusterSettings,
    /// `log.format`
    pub log_format: LogFormat,
    /// `log.level`
    pub log_level: String,
    /// `[oidc]`: web sign-in (`None`: off).
    pub oidc: Option<OidcSettings>,
    /// `[webhooks]` (`None`: no endpoint configured).
    pub webhooks: Option<WebhookSettings>,
    /// `links.reminders`, largest first.
    pub reminders: Vec<Duration>,
    /// `--dev`: loopback only, generated secret, `/v1/dev/token`.
    pub dev: bool,
}

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "CALLRELAY_";

/// `CALLRELAY_*` variables that are not configuration keys: the relay ignores these (a trailing
/// `*` matches any rest). Every other `CALLRELAY_*` variable must name a key, or the relay exits
/// with code 64 naming the nearest one, as it does for an unknown key in the file.
pub const NON_CONFIG_ENV: &[&str] = &[
    // The test suite and its scripts: CALLRELAY_TEST_DATABASE_URL (scripts/test, scripts/pg).
    "CALLRELAY_TEST_*",
    // scripts/pg: where the throwaway PostgreSQL keeps its state.
    "CALLRELAY_PG_STATE",
    // tests/browser: the binary the harness runs.
    "CALLRELAY_BIN",
    // callrelay-loadgen (loadtest/): its tokens.
    "CALLRELAY_TOKEN",
    "CALLRELAY_ADMIN_TOKEN",
    // deploy/docker-compose.yml interpolates these into the real keys (an operator exports them
    // in the shell that also runs `callrelay token`).
    "CALLRELAY_ANNOUNCE_IP",
    "CALLRELAY_PUBLIC_URL",
    "CALLRELAY_NODE1_URL",
    "CALLRELAY_NODE2_URL",
    "CALLRELAY_NODE3_URL",
    // Kubernetes service links (a Service named `callrelay`) and Docker links inject these
    // unless disabled (deploy/kubernetes sets enableServiceLinks: false).
    "CALLRELAY_SERVICE_*",
    "CALLRELAY_PORT",
    "CALLRELAY_PORT_*",
];

/// Whether `name` is one of [`NON_CONFIG_ENV`].
pub fn is_non_config_env(name: &str) -> bool {
    NON_CONFIG_ENV.iter().any(|p| match p.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == *p,
    })
}

/// Every configuration environment variable, `CALLRELAY_<SECTION>_<KEY>`.
pub fn env_names() -> Vec<String> {
    Config::keys()
        .iter()
        .map(|(s, k)| format!("{ENV_PREFIX}{s}_{k}").to_ascii_uppercase())
        .collect()
}

/// Levenshtein distance of two ASCII-ish strings (by bytes).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The error for a `CALLRELAY_*` variable that names no key: the nearest key if one is close.
fn unknown_env(name: &str) -> ConfigError {
    let upper = name.to_ascii_uppercase();
    let nearest = env_names()
        .into_iter()
        .map(|k| (edit_distance(&upper, &k), k))
        .min();
    let hint = match nearest {
        Some((d, k)) if d <= 3 || d * 4 <= upper.len() => format!("did you mean {k}?"),
        _ => "every CALLRELAY_* variable must name a key of callrelay.example.toml \
              (CALLRELAY_<SECTION>_<KEY>)"
            .to_owned(),
    };
    ConfigError::new(name, format!("unknown environment variable {name}: {hint}"))
}

impl Config {
    /// Reads the file (if any) and applies environment overrides from `env`.
    pub fn load(
        file: Option<&std::path::Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
                })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?
            }
            None => toml::Table::new(),
        };
        apply_env(&mut table, env)?;
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(toml::Value::Table(table), &mut track);
        Config::deserialize(de).map_err(|e| {
            let path = track.path().to_string();
            ConfigError::new(
                if path.is_empty() {
                    "config".into()
                } else {
                    path
                },
                e.to_string(),
            )
        })
    }

    /// Every key as `section.key`, in declaration order.
    pub fn keys() -> Vec<(String, String)> {
        let value = toml::Value::try_from(Config::default())
            .expect("the default configuration serialises to TOML");
        let mut out = Vec::new();
        if let toml::Value::Table(sections) = value {
            for (section, keys) in sections {
                if let toml::Value::Table(keys) = keys {
                    for key in keys.keys() {
                        out.push((section.clone(), key.clone()));
                    }
                }
            }
        }
        out
    }

    /// Validates and converts to [`Settings`]. `dev` is the `--dev` flag.
    pub fn validate(mut self, overrides: &Overrides, dev: bool) -> Result<Settings, ConfigError> {
        if let Some(v) = &overrides.http_addr {
            self.http.addr = v.clone();
        }
        if let Some(v) = &overrides.public_url {
            self.http.public_url = v.clone();
        }
        if let Some(v) = &overrides.data_dir {
            self.store.data_dir = v.clone();
        }
        if let Some(v) = &overrides.database_url {
            self.store.database_url = v.clone();
        }

        let http_addr: SocketAddr = self.http.addr.parse().map_err(|_| {
            ConfigError::new(
                "http.addr",
                format!(
                    "{:?} is not an address such as 127.0.0.1:7700",
                    self.http.addr
                ),
            )
        })?;
        if dev && !http_addr.ip().is_loopback() {
            return Err(ConfigError::new(
                "http.addr",
                "dev mode binds to a loopback address only",
            ));
        }
        let public_url = if self.http.public_url.is_empty() {
            let shown = if http_addr.ip().is_unspecified() {
                SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), http_addr.port())
            } else {
                http_addr
            };
            format!("http://{shown}")
        } else {
            let u = self.http.public_url.trim_end_matches('/');
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => u.to_owned(),
                _ => {
                    return Err(ConfigError::new(
                        "http.public_url",
                        "must be an http:// or https:// URL without query or fragment",
                    ))
                }
            }
        };

        let store = if self.store.database_url.is_empty() {
            if self.store.data_dir.is_empty() {
                return Err(ConfigError::new("store.data_dir", "must not be empty"));
            }
            StoreLocation::Sqlite(PathBuf::from(&self.store.data_dir).join("callrelay.db"))
        } else if self.store.database_url.starts_with("postgres://")
            || self.store.database_url.starts_with("postgresql://")
        {
            StoreLocation::Postgres(self.store.database_url.clone())
        } else {
            return Err(ConfigError::new(
                "store.database_url",
                "must start with postgres:// (or be empty for the embedded SQLite file)",
            ));
        };

        let link_ttl = duration("links.ttl", &self.links.ttl)?;
        let purge_grace = duration("links.purge_grace", &self.links.purge_grace)?;
        let purge_interval = duration("links.purge_interval", &self.links.purge_interval)?;
        if link_ttl.is_zero() {
            return Err(ConfigError::new("links.ttl", "must be longer than zero"));
        }
        if purge_interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "links.purge_interval",
                "must be at least 1s",
            ));
        }
        let max_participants = self.rooms.max_participants;
        if !(2..=1000).contains(&max_participants) {
            return Err(ConfigError::new(
                "rooms.max_participants",
                "must be between 2 and 1000",
            ));
        }

        let max_seats_per_user = self.rooms.max_seats_per_user;
        if max_seats_per_user == 0 {
            return Err(ConfigError::new(
                "rooms.max_seats_per_user",
                "must be at least 1",
            ));
        }
        // More than the room holds means no per-user cap.
        let max_seats_per_user = max_seats_per_user.min(max_participants);
        let seat_hold = duration("rooms.seat_hold", &self.rooms.seat_hold)?;
        if seat_hold < Duration::from_secs(1) {
            return Err(ConfigError::new("rooms.seat_hold", "must be at least 1s"));
        }
        let lobby_timeout = duration("lobby.timeout", &self.lobby.timeout)?;
        if lobby_timeout < Duration::from_secs(1) || lobby_timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "lobby.timeout",
                "must be between 1s and 1h",
            ));
        }
        let resume_grace = duration("rooms.resume_grace", &self.rooms.resume_grace)?;
        if resume_grace > Duration::from_secs(600) {
            return Err(ConfigError::new(
                "rooms.resume_grace",
                "must be at most 10m",
            ));
        }

        let auth_secret = if self.auth.secret.is_empty() {
            if !dev {
                return Err(ConfigError::new(
                    "auth.secret",
                    "required (at least 32 bytes; e.g. CALLRELAY_AUTH_SECRET) unless running with --dev",
                ));
            }
            let mut s = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut s);
            s
        } else if self.auth.secret.len() < 32 {
            return Err(ConfigError::new("auth.secret", "must be at least 32 bytes"));
        } else {
            self.auth.secret.clone().into_bytes()
        };
        let leeway = duration("auth.leeway", &self.auth.leeway)?;
        if leeway > Duration::from_secs(60) {
            return Err(ConfigError::new("auth.leeway", "must be at most 60s"));
        }
        let grant_ttl = duration("auth.grant_ttl", &self.auth.grant_ttl)?;
        if grant_ttl.is_zero() || grant_ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                "auth.grant_ttl",
                "must be between 1s and 60s",
            ));
        }

        for (key, v) in [
            (
                "limits.join_per_ip_per_minute",
                self.limits.join_per_ip_per_minute,
            ),
            (
                "limits.join_per_user_per_minute",
                self.limits.join_per_user_per_minute,
            ),
            (
                "limits.preview_per_ip_per_minute",
                self.limits.preview_per_ip_per_minute,
            ),
            (
                "limits.create_per_user_per_minute",
                self.limits.create_per_user_per_minute,
            ),
        ] {
            if v == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }

        let http_limits = validate_http_limits(&self.http)?;
        let media = validate_media(&self.media)?;
        let ice = crate::ice::IceServers::from_config(&self.ice)?;
        let oidc = self.oidc.validate(&public_url)?;
        let webhooks = self.webhooks.validate()?;
        let reminders = validate_reminders(&self.links.reminders)?;
        let drain_deadline = duration("drain.deadline", &self.drain.deadline)?;
        let cluster = validate_cluster(
            &self.cluster,
            &public_url,
            http_addr.port(),
            matches!(store, StoreLocation::Postgres(_)),
        )?;

        let log_format = match self.log.format.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            _ => {
                return Err(ConfigError::new(
                    "log.format",
                    "must be \"human\" or \"json\"",
                ))
            }
        };
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(ConfigError::new(
                "log.level",
                "is not a valid filter such as \"info\"",
            ));
        }

        Ok(Settings {
            http_addr,
            public_url,
            trust_forwarded_for: self.http.trust_forwarded_for,
            http_limits,
            store,
            link_ttl,
            purge_grace,
            purge_interval,
            max_participants: max_participants as usize,
            max_seats_per_user: max_seats_per_user as usize,
            seat_hold: seat_hold.min(grant_ttl),
            resume_grace,
            lobby_timeout,
            auth_secret,
            leeway,
            grant_ttl,
            limits: self.limits,
            media_workers: media.addrs.len(),
            media_addrs: media.addrs,
            announce_ips: media.announce_ips,
            mtu: media.mtu,
            idle_timeout: media.idle_timeout,
            bandwidth_estimation: self.media.bandwidth_estimation,
            video_resend_history: media.video_resend_history,
            tcp_max_connections: media.tcp_max_connections,
            ice,
            drain_deadline,
            cluster,
            log_format,
            log_level: self.log.level,
            oidc,
            webhooks,
            reminders,
            dev,
        })
    }
}

fn validate_url(key: &str, text: &str) -> Result<String, ConfigError> {
    let u = text.trim_end_matches('/');
    let rest = u
        .strip_prefix("https://")
        .or_else(|| u.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['?', '#', ' ']) => Ok(u.to_owned()),
        _ => Err(ConfigError::new(
            key,
            "must be an http:// or https:// URL without query or fragment",
        )),
    }
}

fn validate_http_limits(h: &HttpConfig) -> Result<HttpLimits, ConfigError> {
    let mut out = [Duration::ZERO; 3];
    for (slot, (key, text)) in out.iter_mut().zip([
        ("http.header_timeout", &h.header_timeout),
        ("http.idle_timeout", &h.idle_timeout),
        ("http.body_timeout", &h.body_timeout),
    ]) {
        let d = duration(key, text)?;
        if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
            return Err(ConfigError::new(key, "must be between 100ms and 1h"));
        }
        *slot = d;
    }
    let [header_timeout, idle_timeout, body_timeout] = out;
    Ok(HttpLimits {
        header_timeout,
        idle_timeout,
        body_timeout,
        max_connections_per_ip: h.max_connections_per_ip,
    })
}

fn validate_cluster(
    c: &ClusterConfig,
    public_url: &str,
    http_port: u16,
    postgres: bool,
) -> Result<ClusterSettings, ConfigError> {
    let node_id = if c.node_id.trim().is_empty() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "callrelay".into());
        format!("{host}-{http_port}")
    } else {
        c.node_id.trim().to_owned()
    };
    let id_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b))
    };
    if !id_ok(&node_id) {
        return Err(ConfigError::new(
            "cluster.node_id",
            format!("{node_id:?} must be 1 to 64 characters of [A-Za-z0-9._:-]"),
        ));
    }
    if !id_ok(&c.region) {
        return Err(ConfigError::new(
            "cluster.region",
            "must be 1 to 64 characters of [A-Za-z0-9._:-]",
        ));
    }
    let advertise_url = if c.advertise_url.is_empty() {
        public_url.to_owned()
    } else {
        validate_url("cluster.advertise_url", &c.advertise_url)?
    };
    let lease = duration("cluster.lease", &c.lease)?;
    let heartbeat = duration("cluster.heartbeat", &c.heartbeat)?;
    let reconcile = duration("cluster.reconcile", &c.reconcile)?;
    if heartbeat < Duration::from_millis(100) {
        return Err(ConfigError::new(
            "cluster.heartbeat",
            "must be at least 100ms",
        ));
    }
    if lease < heartbeat * 2 {
        return Err(ConfigError::new(
            "cluster.lease",
            "must be at least twice cluster.heartbeat (one lost heartbeat must not end a lease)",
        ));
    }
    if reconcile < Duration::from_millis(100) || reconcile > Duration::from_secs(60) {
        return Err(ConfigError::new(
            "cluster.reconcile",
            "must be between 100ms and 60s",
        ));
    }
    let trunk = validate_trunk(c, &node_id, postgres)?;
    Ok(ClusterSettings {
        node_id,
        region: c.region.clone(),
        advertise_url,
        lease,
        heartbeat,
        reconcile,
        trunk,
        node_capacity: (c.node_capacity > 0).then_some(i64::from(c.node_capacity)),
    })
}

/// `cluster.trunk_*`: the socket, where peers dial it, and certificates that name this node
/// under the cluster CA (read now, so a wrong file stops the start with its key named).
fn validate_trunk(
    c: &ClusterConfig,
    node_id: &str,
    postgres: bool,
) -> Result<Option<TrunkSettings>, ConfigError> {
    if c.trunk_addr.trim().is_empty() {
        for (key, v) in [
            ("cluster.trunk_advertise", &c.trunk_advertise),
            ("cluster.trunk_certs", &c.trunk_certs),
        ] {
            if !v.trim().is_empty() {
                return Err(ConfigError::new(
                    key,
                    "is set but cluster.trunk_addr is not",
                ));
            }
        }
        return Ok(None);
    }
    if !postgres {
        return Err(ConfigError::new(
            "cluster.trunk_addr",
            "needs store.database_url = postgres://… (the trunk joins the nodes of a cluster)",
        ));
    }
    let bind: SocketAddr = c.trunk_addr.trim().parse().map_err(|_| {
        ConfigError::new("cluster.trunk_addr", "must be IP:port, e.g. 0.0.0.0:7800")
    })?;
    let advertise: SocketAddr = if c.trunk_advertise.trim().is_empty() {
        if bind.ip().is_unspecified() || bind.port() == 0 {
            return Err(ConfigError::new(
                "cluster.trunk_advertise",
                "must be set (IP:port the other nodes reach) when cluster.trunk_addr binds \
                 every address or port 0",
            ));
        }
        bind
    } else {
        c.trunk_advertise.trim().parse().map_err(|_| {
            ConfigError::new(
                "cluster.trunk_advertise",
                "must be IP:port, e.g. 10.0.0.5:7800",
            )
        })?
    };
    if callrelay_trunk::pki::check_node_name(node_id).is_err() {
        return Err(ConfigError::new(
            "cluster.node_id",
            format!(
                "{node_id:?} cannot name a trunk certificate: with cluster.trunk_addr set it \
                 must be a DNS name (letters, digits, '-' and '.')"
            ),
        ));
    }
    if c.trunk_certs.trim().is_empty() {
        return Err(ConfigError::new(
            "cluster.trunk_certs",
            "must name the directory `callrelay cluster init` wrote",
        ));
    }
    let certs = std::path::PathBuf::from(c.trunk_certs.trim());
    callrelay_trunk::TrunkIdentity::from_dir(&certs, node_id)
        .map_err(|e| ConfigError::new("cluster.trunk_certs", e.to_string()))?;
    Ok(Some(TrunkSettings {
        bind,
        advertise,
        certs,
    }))
}

struct MediaSettings {
    addrs: Vec<SocketAddr>,
    announce_ips: Vec<IpAddr>,
    mtu: usize,
    idle_timeout: Duration,
    video_resend_history: Duration,
    tcp_max_connections: Option<usize>,
}

fn validate_media(m: &MediaConfig) -> Result<MediaSettings, ConfigError> {
    let bind_ip = ip_address("media.bind_ip", &m.bind_ip)?;
    let workers = if m.workers == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        m.workers as usize
    };
    if workers > 256 {
        return Err(ConfigError::new("media.workers", "must be at most 256"));
    }
    let ports: Vec<u16> = m
        .ports
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<u16>())
        .collect::<Result<_, _>>()
        .map_err(|_| {
            ConfigError::new(
                "media.ports",
                format!(
                    "{:?} is not a port or a comma-separated list of ports",
                    m.ports
                ),
            )
        })?;
    let ports: Vec<u16> = match ports.as_slice() {
        [] => {
            return Err(ConfigError::new(
                "media.ports",
                "must name at least one port",
            ))
        }
        // A base port: one per worker upward (0 means "any free port" for every worker).
        [0] => vec![0; workers],
        [base] => (0..workers)
            .map(|i| u16::try_from(usize::from(*base) + i))
            .collect::<Result<_, _>>()
            .map_err(|_| ConfigError::new("media.ports", "base port plus workers exceeds 65535"))?,
        list => {
            if m.workers != 0 && list.len() != workers {
                return Err(ConfigError::new(
                    "media.ports",
                    format!("lists {} ports for {workers} workers", list.len()),
                ));
            }
            list.to_vec()
        }
    };
    let announce_ips = announce_ips(bind_ip, &m.announce_ip)?;
    if !(576..=9000).contains(&m.mtu) {
        return Err(ConfigError::new(
            "media.mtu",
            "must be between 576 and 9000",
        ));
    }
    let idle_timeout = duration("media.idle_timeout", &m.idle_timeout)?;
    if idle_timeout < Duration::from_secs(1) {
        return Err(ConfigError::new(
            "media.idle_timeout",
            "must be at least 1s",
        ));
    }
    let video_resend_history = duration("media.video_resend_history", &m.video_resend_history)?;
    if !(Duration::from_millis(100)..=Duration::from_secs(10)).contains(&video_resend_history) {
        return Err(ConfigError::new(
            "media.video_resend_history",
            "must be between 100ms and 10s",
        ));
    }
    if m.tcp && !(1..=65_536).contains(&m.tcp_max_connections) {
        return Err(ConfigError::new(
            "media.tcp_max_connections",
            "must be between 1 and 65536",
        ));
    }
    Ok(MediaSettings {
        tcp_max_connections: m.tcp.then_some(m.tcp_max_connections as usize),
        addrs: ports
            .into_iter()
            .map(|p| SocketAddr::new(bind_ip, p))
            .collect(),
        announce_ips,
        mtu: m.mtu as usize,
        idle_timeout,
        video_resend_history,
    })
}

/// An IP address as written in a key: `::1`, or bracketed as in a URL (`[::1]`).
fn ip_address(key: &str, text: &str) -> Result<IpAddr, ConfigError> {
    let t = text.trim();
    let bare = t
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(t);
    bare.parse()
        .map_err(|_| ConfigError::new(key, format!("{text:?} is not an IP address")))
}

/// `media.announce_ip`: at most one address per family, each one the sockets bound to
/// `bind_ip` can receive on; empty means `bind_ip` itself. An IPv4-mapped IPv6 address is taken
/// as the IPv4 address (a client of that family sends to it as IPv4).
fn announce_ips(bind_ip: IpAddr, text: &str) -> Result<Vec<IpAddr>, ConfigError> {
    const KEY: &str = "media.announce_ip";
    let listed: Vec<&str> = text
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if listed.is_empty() {
        if bind_ip.is_unspecified() {
            return Err(ConfigError::new(
                KEY,
                "required when media.bind_ip is unspecified (0.0.0.0 or ::)",
            ));
        }
        return Ok(vec![bind_ip.to_canonical()]);
    }
    let mut ips: Vec<IpAddr> = Vec::with_capacity(listed.len());
    for a in listed {
        let ip = ip_address(KEY, a)?.to_canonical();
        if ip.is_unspecified() {
            return Err(ConfigError::new(
                KEY,
                format!("{ip} cannot be announced: clients need an address to send media to"),
            ));
        }
        if ips.iter().any(|o| o.is_ipv4() == ip.is_ipv4()) {
            return Err(ConfigError::new(
                KEY,
                format!(
                    "{text:?} lists two {} addresses: at most one IPv4 and one IPv6 address",
                    if ip.is_ipv4() { "IPv4" } else { "IPv6" }
                ),
            ));
        }
        // The sockets must receive what clients of this family send: an IPv4 socket takes no
        // IPv6, an IPv6 socket on one address takes no IPv4; `::` takes both.
        match (bind_ip.to_canonical(), ip) {
            (IpAddr::V4(_), IpAddr::V6(_)) => {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "{ip} is IPv6 but media.bind_ip ({bind_ip}) is IPv4: bind :: to serve both families"
                    ),
                ))
            }
            (IpAddr::V6(b), IpAddr::V4(_)) if !b.is_unspecified() => {
                return Err(ConfigError::new(
                    KEY,
                    format!(
                        "{ip} is IPv4 but media.bind_ip ({bind_ip}) is an IPv6 address: bind :: to serve both families"
                    ),
                ))
            }
            _ => {}
        }
        ips.push(ip);
    }
    Ok(ips)
}

/// Parses a duration such as `3s`, `90d`, `1h 30m`.
pub fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        ConfigError::new(
            key,
            format!("{text:?} is not a duration such as 3s, 1h or 90d ({e})"),
        )
    })
}

/// Applies `CALLRELAY_<SECTION>_<KEY>` variables to the table, typed like the defaults. Any
/// other `CALLRELAY_*` variable (a typo such as `CALLRELAY_LINKS_TTLL`) is an error naming the
/// nearest key, except the names of [`NON_CONFIG_ENV`].
fn apply_env(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let defaults = toml::Value::try_from(Config::default())
        .expect("the default configuration serialises to TOML");
    let keys = Config::keys();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if is_non_config_env(&name) {
            continue;
        }
        let rest = rest.to_ascii_lowercase();
        let Some((section, key)) = keys.iter().find(|(s, k)| {
            rest.strip_prefix(s.as_str())
                .and_then(|r| r.strip_prefix('_'))
                == Some(k.as_str())
        }) else {
            return Err(unknown_env(&name));
        };
        let dotted = format!("{section}.{key}");
        let typed = match &defaults[section.as_str()][key.as_str()] {
            toml::Value::Integer(_) => value
                .trim()
                .parse::<i64>()
                .map(toml::Value::Integer)
                .map_err(|_| {
                    ConfigError::new(&dotted, format!("{name}={value:?} is not a whole number"))
                })?,
            toml::Value::Boolean(_) => match value.trim() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => {
                    return Err(ConfigError::new(
                        &dotted,
                        format!("{name}={value:?} is not true or false"),
                    ))
                }
            },
            _ => toml::Value::String(value),
        };
        let section_table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section_table {
            toml::Value::Table(t) => {
                t.insert(key.clone(), typed);
            }
            _ => return Err(ConfigError::new(section.as_str(), "must be a table")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn oidc_is_off_by_default_and_checked_when_on() {
        let dev = |c: Config| c.validate(&Overrides::default(), true);
        assert!(dev(Config::default()).unwrap().oidc.is_none());

        let mut c = Config::default();
        c.oidc.issuer = "https://id.example.org:8443/realms/main/".into();
        c.oidc.client_id = "callrelay".into();
        c.oidc.scopes = "openid profile  email".into();
        let o = dev(c.clone()).unwrap().oidc.unwrap();
        assert_eq!(o.issuer, "https://id.example.org:8443/realms/main");
        assert_eq!(o.user_domain, "id.example.org-8443");
        assert_eq!(o.scopes, vec!["profile", "email"], "openid is always asked");
        assert!(
            o.redirect_url.ends_with("/auth/callback"),
            "{}",
            o.redirect_url
        );
        assert_eq!(o.session_ttl, Duration::from_secs(12 * 3600));

        let mut no_client = c.clone();
        no_client.oidc.client_id.clear();
        assert_eq!(dev(no_client).unwrap_err().key, "oidc.client_id");
        let mut bad_issuer = c.clone();
        bad_issuer.oidc.issuer = "id.example.org".into();
        assert_eq!(dev(bad_issuer).unwrap_err().key, "oidc.issuer");
        let mut bad_domain = c.clone();
        bad_domain.oidc.user_domain = "a/b".into();
        assert_eq!(dev(bad_domain).unwrap_err().key, "oidc.user_domain");
        let mut bad_ttl = c;
        bad_ttl.oidc.session_ttl = "0s".into();
        assert_eq!(dev(bad_ttl).unwrap_err().key, "oidc.session_ttl");
    }

    #[test]
    fn defaults_need_a_secret_outside_dev_mode() {
        let err = Config::default()
            .validate(&Overrides::default(), false)
            .unwrap_err();
        assert_eq!(err.key, "auth.secret");
        let s = Config::default()
            .validate(&Overrides::default(), true)
            .unwrap();
        assert_eq!(s.auth_secret.len(), 32);
        assert_eq!(s.public_url, "http://127.0.0.1:7700");
        assert_eq!(s.link_ttl, Duration::from_secs(90 * 24 * 3600));
        assert_eq!(s.max_participants, 32);
        assert_eq!(
            s.store,
            StoreLocation::Sqlite(PathBuf::from("./callrelay-data/callrelay.db"))
        );
    }

    #[test]
    fn environment_overrides_file_and_flags_override_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[links]\nttl = \"10d\"\n[rooms]\nmax_participants = 8\n[http]\naddr = \"127.0.0.1:1\"\n").unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("CALLRELAY_LINKS_TTL", "3s"),
                ("CALLRELAY_STORE_DATABASE_URL", "postgres://u@127.0.0.1/db"),
                ("CALLRELAY_HTTP_TRUST_FORWARDED_FOR", "true"),
                ("CALLRELAY_LIMITS_JOIN_PER_IP_PER_MINUTE", "5"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        let s = cfg
            .validate(
                &Overrides {
                    http_addr: Some("127.0.0.1:2".into()),
                    ..Overrides::default()
                },
                true,
            )
            .unwrap();
        assert_eq!(s.link_ttl, Duration::from_secs(3));
        assert_eq!(s.max_participants, 8);
        assert_eq!(
            s.store,
            StoreLocation::Postgres("postgres://u@127.0.0.1/db".into())
        );
        assert!(s.trust_forwarded_for);
        assert_eq!(s.limits.join_per_ip_per_minute, 5);
        assert_eq!(s.http_addr.port(), 2);
    }

    #[test]
    fn errors_name_the_key() {
        let bad = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs))
                .and_then(|c| c.validate(&Overrides::default(), true))
                .unwrap_err()
                .key
        };
        assert_eq!(bad(&[("CALLRELAY_LINKS_TTL", "soon")]), "links.ttl");
        assert_eq!(
            bad(&[("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "many")]),
            "rooms.max_participants"
        );
        assert_eq!(
            bad(&[("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "1")]),
            "rooms.max_participants"
        );
        assert_eq!(bad(&[("CALLRELAY_HTTP_ADDR", "nowhere")]), "http.addr");
        assert_eq!(bad(&[("CALLRELAY_HTTP_ADDR", "0.0.0.0:7700")]), "http.addr");
        assert_eq!(
            bad(&[("CALLRELAY_STORE_DATABASE_URL", "mysql://x")]),
            "store.database_url"
        );
        assert_eq!(bad(&[("CALLRELAY_AUTH_SECRET", "short")]), "auth.secret");
        assert_eq!(bad(&[("CALLRELAY_AUTH_LEEWAY", "2m")]), "auth.leeway");
        assert_eq!(bad(&[("CALLRELAY_LOG_FORMAT", "xml")]), "log.format");
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_PUBLIC_URL", "ftp://x")]),
            "http.public_url"
        );
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_TRUST_FORWARDED_FOR", "maybe")]),
            "http.trust_forwarded_for"
        );
        assert_eq!(bad(&[("CALLRELAY_MEDIA_PORTS", "77x")]), "media.ports");
        assert_eq!(
            bad(&[
                ("CALLRELAY_MEDIA_PORTS", "65535"),
                ("CALLRELAY_MEDIA_WORKERS", "2")
            ]),
            "media.ports"
        );
        assert_eq!(
            bad(&[
                ("CALLRELAY_MEDIA_PORTS", "7710,7711,7712"),
                ("CALLRELAY_MEDIA_WORKERS", "2")
            ]),
            "media.ports"
        );
        assert_eq!(
            bad(&[("CALLRELAY_MEDIA_BIND_IP", "0.0.0.0")]),
            "media.announce_ip"
        );
        assert_eq!(bad(&[("CALLRELAY_MEDIA_MTU", "100")]), "media.mtu");
        assert_eq!(
            bad(&[("CALLRELAY_MEDIA_TCP_MAX_CONNECTIONS", "0")]),
            "media.tcp_max_connections"
        );
        // Off, the limit is not looked at.
        let off = Config::load(
            None,
            env(&[
                ("CALLRELAY_MEDIA_TCP", "false"),
                ("CALLRELAY_MEDIA_TCP_MAX_CONNECTIONS", "0"),
            ]),
        )
        .and_then(|c| c.validate(&Overrides::default(), true))
        .expect("media.tcp off ignores its limit");
        assert_eq!(off.tcp_max_connections, None);
        assert_eq!(
            bad(&[("CALLRELAY_DRAIN_DEADLINE", "never")]),
            "drain.deadline"
        );
    }

    #[test]
    fn media_video_resend_history_is_a_bounded_duration() {
        let s = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs)).and_then(|c| c.validate(&Overrides::default(), true))
        };
        assert_eq!(s(&[]).unwrap().video_resend_history, Duration::from_secs(1));
        let half = s(&[("CALLRELAY_MEDIA_VIDEO_RESEND_HISTORY", "500ms")]).unwrap();
        assert_eq!(half.video_resend_history, Duration::from_millis(500));
        for bad in ["0s", "50ms", "11s", "soon"] {
            let e = s(&[("CALLRELAY_MEDIA_VIDEO_RESEND_HISTORY", bad)]).expect_err("refused");
            assert_eq!(e.key, "media.video_resend_history", "{bad}");
        }
    }

    #[test]
    fn media_ports_from_a_base_or_a_list() {
        let s = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs))
                .unwrap()
                .validate(&Overrides::default(), true)
                .unwrap()
        };
        let a = s(&[
            ("CALLRELAY_MEDIA_WORKERS", "3"),
            ("CALLRELAY_MEDIA_PORTS", "9000"),
        ]);
        assert_eq!(
            a.media_addrs.iter().map(|a| a.port()).collect::<Vec<_>>(),
            vec![9000, 9001, 9002]
        );
        let b = s(&[
            ("CALLRELAY_MEDIA_PORTS", "7000, 7005"),
            ("CALLRELAY_MEDIA_BIND_IP", "0.0.0.0"),
            ("CALLRELAY_MEDIA_ANNOUNCE_IP", "203.0.113.7"),
        ]);
        assert_eq!(b.media_workers, 2);
        assert_eq!(b.media_addrs[1].to_string(), "0.0.0.0:7005");
        assert_eq!(b.announce_ips, ["203.0.113.7".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn media_announces_one_address_per_family() {
        let s = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs)).and_then(|c| c.validate(&Overrides::default(), true))
        };
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|a| a.parse().unwrap()).collect() };
        // The default: IPv4 on loopback, announced as bound.
        let d = s(&[]).unwrap();
        assert_eq!(d.announce_ips, ips(&["127.0.0.1"]));
        assert!(d.media_addrs.iter().all(|a| a.is_ipv4()));
        // IPv6 only.
        let v6 = s(&[("CALLRELAY_MEDIA_BIND_IP", "::1")]).unwrap();
        assert_eq!(v6.announce_ips, ips(&["::1"]));
        // Dual stack: `::` (bracketed or not), one address per family, in the order listed.
        for bind in ["::", "[::]"] {
            let both = s(&[
                ("CALLRELAY_MEDIA_BIND_IP", bind),
                ("CALLRELAY_MEDIA_ANNOUNCE_IP", " 2001:db8::7 , 203.0.113.7 "),
                ("CALLRELAY_MEDIA_PORTS", "7710"),
                ("CALLRELAY_MEDIA_WORKERS", "1"),
            ])
            .unwrap();
            assert_eq!(both.announce_ips, ips(&["2001:db8::7", "203.0.113.7"]));
            assert_eq!(both.media_addrs[0].to_string(), "[::]:7710");
        }
        // An IPv4-mapped address is announced as the IPv4 address.
        let mapped = s(&[
            ("CALLRELAY_MEDIA_BIND_IP", "::"),
            ("CALLRELAY_MEDIA_ANNOUNCE_IP", "::ffff:203.0.113.7"),
        ])
        .unwrap();
        assert_eq!(mapped.announce_ips, ips(&["203.0.113.7"]));

        let bad = |pairs: &[(&str, &str)]| {
            let e = s(pairs).unwrap_err();
            (e.key.clone(), e.message)
        };
        for (pairs, key, says) in [
            (
                &[("CALLRELAY_MEDIA_BIND_IP", "localhost")][..],
                "media.bind_ip",
                "not an IP address",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "[::"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "::1"),
                ][..],
                "media.bind_ip",
                "not an IP address",
            ),
            (
                &[("CALLRELAY_MEDIA_BIND_IP", "::")][..],
                "media.announce_ip",
                "required",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "::"),
                    (
                        "CALLRELAY_MEDIA_ANNOUNCE_IP",
                        "203.0.113.7,calls.example.org",
                    ),
                ][..],
                "media.announce_ip",
                "\"calls.example.org\" is not an IP address",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "::"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "203.0.113.7,198.51.100.1"),
                ][..],
                "media.announce_ip",
                "two IPv4 addresses",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "::"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "2001:db8::7,::1"),
                ][..],
                "media.announce_ip",
                "two IPv6 addresses",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "::"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "::"),
                ][..],
                "media.announce_ip",
                "cannot be announced",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "0.0.0.0"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "203.0.113.7,2001:db8::7"),
                ][..],
                "media.announce_ip",
                "bind :: to serve both families",
            ),
            (
                &[("CALLRELAY_MEDIA_ANNOUNCE_IP", "::1")][..],
                "media.announce_ip",
                "media.bind_ip (127.0.0.1) is IPv4",
            ),
            (
                &[
                    ("CALLRELAY_MEDIA_BIND_IP", "::1"),
                    ("CALLRELAY_MEDIA_ANNOUNCE_IP", "127.0.0.1"),
                ][..],
                "media.announce_ip",
                "is an IPv6 address",
            ),
        ] {
            let (k, message) = bad(pairs);
            assert_eq!(k, key, "{pairs:?}: {message}");
            assert!(message.contains(says), "{pairs:?}: {message}");
        }
    }

    #[test]
    fn unknown_environment_variables_are_refused_with_the_nearest_key() {
        let err = Config::load(None, env(&[("CALLRELAY_LINKS_TTLL", "3s")])).unwrap_err();
        assert_eq!(err.key, "CALLRELAY_LINKS_TTLL");
        assert!(
            err.message.contains("did you mean CALLRELAY_LINKS_TTL?"),
            "{err}"
        );
        let err = Config::load(None, env(&[("CALLRELAY_HTTP_IDLE_TIMEOT", "1s")])).unwrap_err();
        assert!(err.message.contains("CALLRELAY_HTTP_IDLE_TIMEOUT"), "{err}");
        let err = Config::load(None, env(&[("CALLRELAY_WHATEVER", "1")])).unwrap_err();
        assert!(!err.message.contains("did you mean"), "{err}");
        // Names the scripts, the tests and the deploy files use are not configuration keys.
        Config::load(
            None,
            env(&[
                ("CALLRELAY_TEST_DATABASE_URL", "postgres://u@127.0.0.1/x"),
                ("CALLRELAY_PG_STATE", "/tmp/x"),
                ("CALLRELAY_BIN", "target/release/callrelay"),
                ("CALLRELAY_TOKEN", "t"),
                ("CALLRELAY_ADMIN_TOKEN", "t"),
                ("CALLRELAY_ANNOUNCE_IP", "203.0.113.7"),
                ("CALLRELAY_PUBLIC_URL", "https://calls.example.org"),
                ("CALLRELAY_NODE2_URL", "https://n2.example.org"),
                ("CALLRELAY_SERVICE_HOST", "10.0.0.1"),
                ("CALLRELAY_PORT_7700_TCP", "tcp://10.0.0.1:7700"),
                ("CALLRELAY_LINKS_TTL", "3s"),
            ]),
        )
        .expect("non-configuration names are ignored");
        // Every real key is accepted by its environment name.
        for name in env_names() {
            assert!(!is_non_config_env(&name), "{name} is excluded");
        }
    }

    #[test]
    fn http_limits_have_defaults_and_bounds() {
        let s = Config::default()
            .validate(&Overrides::default(), true)
            .unwrap();
        assert_eq!(s.http_limits.header_timeout, Duration::from_secs(10));
        assert_eq!(s.http_limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(s.http_limits.body_timeout, Duration::from_secs(30));
        assert_eq!(s.http_limits.max_connections_per_ip, 256);
        let bad = |pairs: &[(&str, &str)]| {
            Config::load(None, env(pairs))
                .and_then(|c| c.validate(&Overrides::default(), true))
                .unwrap_err()
                .key
        };
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_HEADER_TIMEOUT", "0s")]),
            "http.header_timeout"
        );
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_IDLE_TIMEOUT", "never")]),
            "http.idle_timeout"
        );
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_BODY_TIMEOUT", "2h")]),
            "http.body_timeout"
        );
        assert_eq!(
            bad(&[("CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP", "-1")]),
            "http.max_connections_per_ip"
        );
    }

    #[test]
    fn unknown_and_mistyped_file_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[links]\ntll = \"3s\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        assert!(err.key.starts_with("links"), "{err}");
        assert!(err.message.contains("tll"), "{err}");
        std::fs::write(&file, "[rooms]\nmax_participants = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), env(&[])).unwrap_err();
        assert_eq!(err.key, "rooms.max_participants", "{err}");
        std::fs::write(&file, "[rooms\n").unwrap();
        assert!(Config::load(Some(&file), env(&[])).is_err());
    }

    #[test]
    fn the_example_file_documents_every_key_and_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../callrelay.example.toml");
        let text =
            std::fs::read_to_string(path).expect("callrelay.example.toml at the repository root");
        let table: toml::Table = text.parse().expect("the example parses");
        for (section, key) in Config::keys() {
            assert!(
                table.get(&section).and_then(|s| s.get(&key)).is_some(),
                "callrelay.example.toml lacks {section}.{key}"
            );
        }
        let cfg =
            Config::load(Some(std::path::Path::new(path)), env(&[])).expect("the example loads");
        cfg.validate(&Overrides::default(), true)
            .expect("the example validates in dev mode");
    }

    #[test]
    fn the_trunk_needs_postgres_a_dns_node_id_and_certificates_that_name_it() {
        let certs = tempfile::tempdir().unwrap();
        callrelay_trunk::init_dir(certs.path(), &["eu-1".into(), "us-1".into()]).unwrap();
        let dir = certs.path().to_str().unwrap().to_owned();
        let validate = |pairs: &[(&str, &str)]| {
            let mut all = vec![
                ("CALLRELAY_STORE_DATABASE_URL", "postgres://u@127.0.0.1/db"),
                ("CALLRELAY_CLUSTER_NODE_ID", "eu-1"),
                ("CALLRELAY_CLUSTER_TRUNK_ADDR", "127.0.0.1:7800"),
                ("CALLRELAY_CLUSTER_TRUNK_CERTS", dir.as_str()),
            ];
            for (k, v) in pairs {
                all.retain(|(key, _)| key != k);
                if !v.is_empty() {
                    all.push((k, v));
                }
            }
            Config::load(None, env(&all))
                .unwrap()
                .validate(&Overrides::default(), true)
        };
        let s = validate(&[]).unwrap();
        let t = s.cluster.trunk.expect("a trunk");
        assert_eq!(t.bind.to_string(), "127.0.0.1:7800");
        assert_eq!(t.advertise, t.bind);

        let key_of = |pairs: &[(&str, &str)]| validate(pairs).unwrap_err().key;
        // Not on SQLite.
        assert_eq!(
            key_of(&[("CALLRELAY_STORE_DATABASE_URL", "")]),
            "cluster.trunk_addr"
        );
        // Every address: where peers dial must be said.
        assert_eq!(
            key_of(&[("CALLRELAY_CLUSTER_TRUNK_ADDR", "0.0.0.0:7800")]),
            "cluster.trunk_advertise"
        );
        let s = validate(&[
            ("CALLRELAY_CLUSTER_TRUNK_ADDR", "0.0.0.0:7800"),
            ("CALLRELAY_CLUSTER_TRUNK_ADVERTISE", "10.0.0.5:7800"),
        ])
        .unwrap();
        assert_eq!(
            s.cluster.trunk.unwrap().advertise.to_string(),
            "10.0.0.5:7800"
        );
        // A node id that cannot be a certificate's name.
        assert_eq!(
            key_of(&[("CALLRELAY_CLUSTER_NODE_ID", "eu:1")]),
            "cluster.node_id"
        );
        // Certificates that do not name this node (none for it in the directory).
        let err = validate(&[("CALLRELAY_CLUSTER_NODE_ID", "ap-1")]).unwrap_err();
        assert_eq!(err.key, "cluster.trunk_certs");
        assert!(err.message.contains("ap-1.pem"), "{}", err.message);
        // No directory at all.
        assert_eq!(
            key_of(&[("CALLRELAY_CLUSTER_TRUNK_CERTS", "")]),
            "cluster.trunk_certs"
        );
        // Trunk keys without the trunk.
        assert_eq!(
            key_of(&[("CALLRELAY_CLUSTER_TRUNK_ADDR", "")]),
            "cluster.trunk_certs"
        );
    }
}
