//! The trunk endpoint of one node: one UDP socket, mutual TLS, one QUIC connection per peer node.
//!
//! Either node of a pair may dial. Each side starts its control stream with a hello naming its
//! incarnation (random per start of the trunk). A second connection with a node is settled on
//! both ends the same way: from a new incarnation of the node, the new connection wins (the node
//! restarted; the old one is stale and would otherwise linger until its idle timeout); from the
//! same incarnation (both dialed at once), the one the smaller node id dialed wins. The loser is
//! closed with [`CLOSE_DUPLICATE`], so every pair ends up with exactly one connection.
//!
//! Media goes out with [`Peer::send_media`] as one QUIC datagram per RTP packet, never queued
//! beyond the connection's datagram buffer: past it a packet is dropped and counted. Media in, and
//! peers coming and going, arrive as [`TrunkEvent`]s on a bounded channel; when its reader lags,
//! media is dropped and counted (`receiver_busy`) and the peer events still get through.
//!
//! Control messages (opaque to the trunk; the node defines them) go with [`Peer::send_control`]
//! on one ordered, reliable QUIC stream per direction and connection, each framed by its length
//! (at most [`MAX_CONTROL`] bytes). They are never dropped: a peer that does not keep up holds
//! them back by QUIC flow control, and once [`CONTROL_QUEUE`] messages wait on this side the
//! connection is closed (`Down`) rather than letting the queue grow. A connection that went down
//! may have lost what was in flight, so on `Up` a node sends its whole state again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, SendDatagramError, VarInt};
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;

use crate::identity::{node_of, IdentityError, TrunkIdentity};
use crate::wire::MediaHeader;

/// Application close code: the pair already has a connection (the other one is kept).
pub const CLOSE_DUPLICATE: u32 = 1;
/// Application close code: the peer's certificate names no single node.
pub const CLOSE_NO_NODE: u32 = 2;
/// Application close code: this node is shutting its trunk down.
pub const CLOSE_SHUTDOWN: u32 = 3;
/// Application close code: a node dialed itself.
pub const CLOSE_SELF: u32 = 4;

/// How many events wait for the reader before media is dropped.
const EVENT_QUEUE: usize = 4096;
/// The largest control message.
pub const MAX_CONTROL: usize = 64 * 1024;
/// Control messages that may wait to be written before the connection is given up.
pub const CONTROL_QUEUE: usize = 1024;
/// Application close code: control messages backed up past [`CONTROL_QUEUE`].
pub const CLOSE_CONTROL_BACKLOG: u32 = 5;
/// Application close code: the peer broke the control stream's framing or sent no hello.
pub const CLOSE_PROTOCOL: u32 = 6;
/// Application close code: the peer's node is gone from the cluster (see [`Peer::close_gone`]).
pub const CLOSE_GONE: u32 = 7;
/// The hello's first bytes: the trunk protocol, version 1.
const HELLO_MAGIC: &[u8; 4] = b"CRT1";
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dial may take before it is given up.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a trunk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TrunkError {
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("binding the trunk socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("dialing node {node:?} at {addr}: {why}")]
    Dial {
        node: String,
        addr: SocketAddr,
        why: String,
    },
    #[error("dialing node {node:?} at {addr}: refused ({reason}): {why}")]
    Refused {
        node: String,
        addr: SocketAddr,
        reason: &'static str,
        why: String,
    },
}

/// Why a media packet was not sent (it is counted under this reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Larger than the path's datagram size.
    TooLarge,
    /// The connection's datagram buffer is full: the trunk is slower than the media.
    Congested,
    /// The connection is gone.
    Closed,
}

impl Dropped {
    /// The `reason` label.
    pub fn reason(self) -> &'static str {
        match self {
            Dropped::TooLarge => "too_large",
            Dropped::Congested => "congested",
            Dropped::Closed => "closed",
        }
    }
}

/// Why a control message was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("a control message of {0} bytes is over the {MAX_CONTROL}-byte limit")]
    TooLarge(usize),
    #[error("{CONTROL_QUEUE} control messages were waiting: the connection was closed")]
    Backlog,
    #[error("the connection is gone")]
    Closed,
}

/// What the trunk tells its node.
#[derive(Debug)]
pub enum TrunkEvent {
    /// A connection to `peer` is up (dialed or accepted).
    Up { peer: String },
    /// The connection to `peer` is gone.
    Down { peer: String, why: String },
    /// A media packet from `peer`.
    Media {
        peer: String,
        header: MediaHeader,
        rtp: Bytes,
    },
    /// A control message from `peer`, in the order it was sent.
    Control { peer: String, message: Bytes },
}

/// The reasons a handshake is refused, as counted.
pub const REFUSED_REASONS: [&str; 6] = [
    "unknown_ca",
    "bad_certificate",
    "bad_signature",
    "certificate_required",
    "no_node",
    "handshake",
];
/// The reasons a datagram is dropped, as counted.
pub const DROP_REASONS: [&str; 7] = [
    "too_large",
    "congested",
    "closed",
    "malformed",
    "version",
    "unknown_kind",
    "receiver_busy",
];

/// The trunk's counters, plain atomics a metrics collector reads at scrape time.
#[derive(Debug, Default)]
pub struct Counters {
    /// Live connections.
    pub connections: AtomicI64,
    /// Control messages, out (written to the stream) and in.
    pub control_out: AtomicU64,
    pub control_in: AtomicU64,
    /// Media datagrams and their bytes (header included), out and in.
    pub packets_out: AtomicU64,
    pub bytes_out: AtomicU64,
    pub packets_in: AtomicU64,
    pub bytes_in: AtomicU64,
    refused: [AtomicU64; REFUSED_REASONS.len()],
    dropped: [AtomicU64; DROP_REASONS.len()],
}

impl Counters {
    /// Handshakes refused (either end), by reason, in [`REFUSED_REASONS`] order.
    pub fn refused(&self) -> [(&'static str, u64); REFUSED_REASONS.len()] {
        std::array::from_fn(|i| (REFUSED_REASONS[i], self.refused[i].load(Ordering::Relaxed)))
    }

    /// Datagrams dropped, by reason, in [`DROP_REASONS`] order.
    pub fn dropped(&self) -> [(&'static str, u64); DROP_REASONS.len()] {
        std::array::from_fn(|i| (DROP_REASONS[i], self.dropped[i].load(Ordering::Relaxed)))
    }

    fn refuse(&self, reason: &'static str) {
        let i = REFUSED_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REFUSED_REASONS.len() - 1);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one datagram dropped for `reason` (one of [`DROP_REASONS`]; another is ignored):
    /// the node counts here what it drops after the trunk handed it over (`malformed`).
    pub fn drop_one(&self, reason: &'static str) {
        if let Some(i) = DROP_REASONS.iter().position(|r| *r == reason) {
            self.dropped[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The reason a handshake error is counted under: the TLS alert it carries.
fn refusal_reason(e: &ConnectionError) -> &'static str {
    let code = match e {
        ConnectionError::TransportError(t) => u64::from(t.code),
        ConnectionError::ConnectionClosed(c) => u64::from(c.error_code),
        ConnectionError::ApplicationClosed(c)
            if c.error_code == VarInt::from_u32(CLOSE_NO_NODE) =>
        {
            return "no_node"
        }
        _ => return "handshake",
    };
    // QUIC carries a TLS alert as CRYPTO_ERROR 0x100 + alert (RFC 9001, 4.8).
    match code.checked_sub(0x100) {
        Some(48) => "unknown_ca",
        Some(42) => "bad_certificate",
        Some(51) => "bad_signature",
        Some(116) => "certificate_required",
        _ => "handshake",
    }
}

struct Shared {
    node: String,
    /// This start of the trunk, told to peers in the hello.
    incarnation: u64,
    peers: Mutex<HashMap<String, Peer>>,
    counters: Arc<Counters>,
    events: mpsc::Sender<TrunkEvent>,
}

/// One node's trunk endpoint.
pub struct Trunk {
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

/// The connection to one peer node.
#[derive(Clone)]
pub struct Peer {
    node: String,
    conn: quinn::Connection,
    dialed_by: String,
    /// The peer's incarnation, from its hello.
    incarnation: u64,
    counters: Arc<Counters>,
    control: mpsc::Sender<Bytes>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("node", &self.node)
            .field("remote", &self.conn.remote_address())
            .finish()
    }
}

impl Peer {
    /// The peer's node id, from its certificate.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The peer's address on this connection.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The connection's current round-trip time estimate.
    pub fn rtt(&self) -> Duration {
        self.conn.rtt()
    }

    /// UDP datagrams received on this connection so far (keep-alives included): a count that
    /// stops moving means the peer went silent.
    pub fn datagrams_received(&self) -> u64 {
        self.conn.stats().udp_rx.datagrams
    }

    /// Closes the connection because the peer's node is gone (its lease ended and it went
    /// silent), without waiting for the idle timeout; the node is told [`TrunkEvent::Down`].
    pub fn close_gone(&self) {
        self.conn
            .close(VarInt::from_u32(CLOSE_GONE), b"node gone from the cluster");
    }

    /// Whether the connection is still up.
    pub fn is_up(&self) -> bool {
        self.conn.close_reason().is_none()
    }

    /// The largest RTP packet [`Peer::send_media`] can carry now.
    pub fn max_rtp_size(&self) -> usize {
        self.conn
            .max_datagram_size()
            .map_or(0, |m| m.saturating_sub(crate::wire::HEADER_LEN))
    }

    /// Queues one control message for the peer: reliable and in order on this connection.
    pub fn send_control(&self, message: Bytes) -> Result<(), ControlError> {
        if message.len() > MAX_CONTROL {
            return Err(ControlError::TooLarge(message.len()));
        }
        match self.control.try_send(message) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(peer = %self.node, "trunk: control messages backed up, closing");
                self.conn
                    .close(VarInt::from_u32(CLOSE_CONTROL_BACKLOG), b"control backlog");
                Err(ControlError::Backlog)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(ControlError::Closed),
        }
    }

    /// Sends one RTP packet with its header as a datagram, or drops it (counted) when it is too
    /// large, the connection's datagram buffer is full, or the connection is gone.
    pub fn send_media(&self, header: &MediaHeader, rtp: &[u8]) -> Result<(), Dropped> {
        let datagram = header.encode(rtp);
        let len = datagram.len();
        let result = if self.conn.datagram_send_buffer_space() < len {
            // quinn would make room by dropping the oldest queued datagrams; the newest packet is
            // the one to drop, and it is counted.
            Err(Dropped::Congested)
        } else {
            match self.conn.send_datagram(datagram) {
                Ok(()) => Ok(()),
                Err(SendDatagramError::TooLarge) => Err(Dropped::TooLarge),
                Err(SendDatagramError::ConnectionLost(_)) => Err(Dropped::Closed),
                Err(SendDatagramError::UnsupportedByPeer | SendDatagramError::Disabled) => {
                    Err(Dropped::Closed)
                }
            }
        };
        match result {
            Ok(()) => {
                self.counters.packets_out.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_out
                    .fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(d) => self.counters.drop_one(d.reason()),
        }
        result
    }
}

impl Trunk {
    /// Binds the trunk's UDP socket and starts accepting peers. Events arrive on the receiver.
    pub fn bind(
        addr: SocketAddr,
        identity: &TrunkIdentity,
        counters: Arc<Counters>,
    ) -> Result<(Trunk, mpsc::Receiver<TrunkEvent>), TrunkError> {
        let mut endpoint = quinn::Endpoint::server(identity.server_config()?, addr)
            .map_err(|source| TrunkError::Bind { addr, source })?;
        endpoint.set_default_client_config(identity.client_config()?);
        let (events, rx) = mpsc::channel(EVENT_QUEUE);
        let shared = Arc::new(Shared {
            node: identity.node().to_owned(),
            incarnation: incarnation(),
            peers: Mutex::new(HashMap::new()),
            counters,
            events,
        });
        let accept = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        Ok((
            Trunk {
                endpoint,
                shared,
                accept,
            },
            rx,
        ))
    }

    /// The address the trunk listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.shared.node
    }

    /// The counters.
    pub fn counters(&self) -> &Arc<Counters> {
        &self.shared.counters
    }

    /// The live connection to `node`, if there is one.
    pub fn peer(&self, node: &str) -> Option<Peer> {
        let peers = self.shared.peers.lock().expect("peers lock");
        peers.get(node).filter(|p| p.is_up()).cloned()
    }

    /// Every live connection, one per peer node.
    pub fn peers(&self) -> Vec<Peer> {
        let peers = self.shared.peers.lock().expect("peers lock");
        peers.values().filter(|p| p.is_up()).cloned().collect()
    }

    /// The connection to `node` at `addr`: the live one if the pair has one, else a new one. The
    /// peer's certificate must be the cluster CA's and name `node`.
    pub async fn connect(&self, node: &str, addr: SocketAddr) -> Result<Peer, TrunkError> {
        if let Some(p) = self.peer(node) {
            return Ok(p);
        }
        let dial_err = |why: String| TrunkError::Dial {
            node: node.to_owned(),
            addr,
            why,
        };
        if node == self.shared.node {
            return Err(dial_err("that is this node".into()));
        }
        let connecting = self
            .endpoint
            .connect(addr, node)
            .map_err(|e| dial_err(e.to_string()))?;
        let conn = match tokio::time::timeout(DIAL_TIMEOUT, connecting).await {
            Err(_) => return Err(dial_err(format!("no answer in {DIAL_TIMEOUT:?}"))),
            Ok(Err(e)) => {
                let reason = refusal_reason(&e);
                self.shared.counters.refuse(reason);
                tracing::warn!(peer = node, %addr, reason, error = %e, "trunk: dial refused");
                return Err(TrunkError::Refused {
                    node: node.to_owned(),
                    addr,
                    reason,
                    why: e.to_string(),
                });
            }
            Ok(Ok(conn)) => conn,
        };
        let streams = hello(&conn, self.shared.incarnation).await.map_err(|why| {
            conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no hello");
            dial_err(format!("no hello: {why}"))
        })?;
        let me = self.shared.node.clone();
        Ok(register(&self.shared, node.to_owned(), conn, me, streams))
    }

    /// Closes every connection and stops accepting; peers see the trunk close at once (the
    /// close is sent within a second).
    pub async fn close(&self) {
        self.accept.abort();
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    /// [`Trunk::close`], consuming the trunk.
    pub async fn shutdown(self) {
        self.close().await;
    }
}

async fn accept_loop(endpoint: quinn::Endpoint, shared: Arc<Shared>) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    let reason = refusal_reason(&e);
                    shared.counters.refuse(reason);
                    tracing::warn!(%remote, reason, error = %e, "trunk: a dialer was refused");
                    return;
                }
            };
            let node = conn
                .peer_identity()
                .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
                .and_then(|certs| node_of(&certs));
            let Some(node) = node else {
                shared.counters.refuse("no_node");
                tracing::warn!(%remote, "trunk: a dialer's certificate names no single node");
                conn.close(
                    VarInt::from_u32(CLOSE_NO_NODE),
                    b"certificate names no node",
                );
                return;
            };
            if node == shared.node {
                conn.close(VarInt::from_u32(CLOSE_SELF), b"this node");
                return;
            }
            let streams = match hello(&conn, shared.incarnation).await {
                Ok(s) => s,
                Err(why) => {
                    tracing::warn!(peer = %node, %remote, %why, "trunk: no hello");
                    conn.close(VarInt::from_u32(CLOSE_PROTOCOL), b"no hello");
                    return;
                }
            };
            let dialer = node.clone();
            register(&shared, node, conn, dialer, streams);
        });
    }
}

/// A random number for this start of the trunk (std's hasher keys are seeded from the OS).
fn incarnation() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// The control streams of a new connection, after each side's hello: ours to write on, the
/// peer's to read, and the peer's incarnation.
type Streams = (quinn::SendStream, quinn::RecvStream, u64);

/// Opens this side's control stream with a hello and reads the peer's.
async fn hello(conn: &quinn::Connection, incarnation: u64) -> Result<Streams, String> {
    let send = async {
        let mut s = conn.open_uni().await.map_err(|e| e.to_string())?;
        let mut h = [0u8; 12];
        h[..4].copy_from_slice(HELLO_MAGIC);
        h[4..].copy_from_slice(&incarnation.to_be_bytes());
        s.write_all(&h).await.map_err(|e| e.to_string())?;
        Ok::<_, String>(s)
    };
    let recv = async {
        let mut r = conn.accept_uni().await.map_err(|e| e.to_string())?;
        let mut h = [0u8; 12];
        r.read_exact(&mut h).await.map_err(|e| e.to_string())?;
        if &h[..4] != HELLO_MAGIC {
            return Err("not a trunk hello".to_owned());
        }
        let inc = u64::from_be_bytes(h[4..].try_into().expect("8 bytes"));
        Ok((r, inc))
    };
    let (s, (r, inc)) = tokio::time::timeout(HELLO_TIMEOUT, async { tokio::try_join!(send, recv) })
        .await
        .map_err(|_| format!("none within {HELLO_TIMEOUT:?}"))??;
    Ok((s, r, inc))
}

/// Records a new connection with `node`, keeping one per pair, and starts reading it.
fn register(
    shared: &Arc<Shared>,
    node: String,
    conn: quinn::Connection,
    dialed_by: String,
    (send, recv, incarnation): Streams,
) -> Peer {
    let (control, control_rx) = mpsc::channel(CONTROL_QUEUE);
    let peer = Peer {
        node: node.clone(),
        conn,
        dialed_by,
        incarnation,
        counters: shared.counters.clone(),
        control,
    };
    let preferred_dialer = std::cmp::min(shared.node.as_str(), node.as_str()).to_owned();
    let mut peers = shared.peers.lock().expect("peers lock");
    if let Some(existing) = peers.get(&node).filter(|p| p.is_up()).cloned() {
        // Two connections for one pair, settled the same way on both ends: a new incarnation of
        // the peer wins (it restarted; the old connection is stale); within one incarnation the
        // connection the smaller node dialed wins.
        let keep_new = existing.incarnation != peer.incarnation
            || (existing.dialed_by != preferred_dialer && peer.dialed_by == preferred_dialer);
        if !keep_new {
            peer.conn
                .close(VarInt::from_u32(CLOSE_DUPLICATE), b"duplicate");
            return existing;
        }
        existing
            .conn
            .close(VarInt::from_u32(CLOSE_DUPLICATE), b"duplicate");
    }
    peers.insert(node.clone(), peer.clone());
    drop(peers);
    shared.counters.connections.fetch_add(1, Ordering::Relaxed);
    tracing::info!(peer = %node, remote = %peer.conn.remote_address(), "trunk: up");
    let _ = shared.events.try_send(TrunkEvent::Up { peer: node });
    tokio::spawn(read_loop(shared.clone(), peer.clone()));
    tokio::spawn(write_control(peer.clone(), send, control_rx));
    tokio::spawn(read_control(shared.clone(), peer.clone(), recv));
    peer
}

/// Writes the queued control messages on this side's stream, each after its length.
async fn write_control(peer: Peer, mut stream: quinn::SendStream, mut rx: mpsc::Receiver<Bytes>) {
    while let Some(m) = rx.recv().await {
        let len = (m.len() as u32).to_be_bytes();
        if stream.write_all(&len).await.is_err() || stream.write_all(&m).await.is_err() {
            return;
        }
        peer.counters.control_out.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reads the peer's control stream and hands each message on, waiting for room (so a node that
/// does not read holds the peer back by flow control instead of losing messages).
async fn read_control(shared: Arc<Shared>, peer: Peer, mut stream: quinn::RecvStream) {
    loop {
        let mut len = [0u8; 4];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_CONTROL {
            tracing::warn!(peer = %peer.node, len, "trunk: a control message over the limit, closing");
            peer.conn.close(
                VarInt::from_u32(CLOSE_PROTOCOL),
                b"control message too large",
            );
            return;
        }
        let mut buf = vec![0u8; len];
        if stream.read_exact(&mut buf).await.is_err() {
            return;
        }
        shared.counters.control_in.fetch_add(1, Ordering::Relaxed);
        let ev = TrunkEvent::Control {
            peer: peer.node.clone(),
            message: Bytes::from(buf),
        };
        if shared.events.send(ev).await.is_err() {
            return;
        }
    }
}

async fn read_loop(shared: Arc<Shared>, peer: Peer) {
    let why = loop {
        match peer.conn.read_datagram().await {
            Ok(d) => {
                let c = &shared.counters;
                c.packets_in.fetch_add(1, Ordering::Relaxed);
                c.bytes_in.fetch_add(d.len() as u64, Ordering::Relaxed);
                match MediaHeader::decode(&d) {
                    Ok((header, rtp)) => {
                        let ev = TrunkEvent::Media {
                            peer: peer.node.clone(),
                            header,
                            rtp,
                        };
                        if shared.events.try_send(ev).is_err() {
                            c.drop_one("receiver_busy");
                        }
                    }
                    Err(e) => c.drop_one(e.reason()),
                }
            }
            Err(e) => break e,
        }
    };
    shared.counters.connections.fetch_sub(1, Ordering::Relaxed);
    let same = {
        let mut peers = shared.peers.lock().expect("peers lock");
        let same = peers
            .get(&peer.node)
            .is_some_and(|p| p.conn.stable_id() == peer.conn.stable_id());
        if same {
            peers.remove(&peer.node);
        }
        same
    };
    // A connection closed as a duplicate is not a peer going down: the pair's other connection
    // stays (or comes) up. One this side replaced is no longer in the map (`same` is false).
    let duplicate = matches!(&why, ConnectionError::ApplicationClosed(c) if c.error_code == VarInt::from_u32(CLOSE_DUPLICATE));
    if same && !duplicate {
        tracing::info!(peer = %peer.node, error = %why, "trunk: down");
        // Down must reach the node even when media is backed up.
        let _ = shared
            .events
            .send(TrunkEvent::Down {
                peer: peer.node.clone(),
                why: why.to_string(),
            })
            .await;
    }
}
