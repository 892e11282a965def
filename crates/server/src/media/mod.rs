//! The media plane: `media.workers` OS threads, each owning one UDP socket and one
//! [`callrelay_sfu::Sfu`] with the rooms pinned to it.
//!
//! A room lives on the worker chosen by a stable hash of its link id ([`room_key`],
//! [`MediaPlane::worker_for`]), so every packet of a room is handled by one thread without a lock
//! or a cross-thread hop. Signaling and the control plane talk to a worker through its command
//! channel ([`Command`]), polled in the same loop as the socket; what a worker has to tell a
//! participant goes to that participant's bounded signaling queue.

mod gso;
mod tcp;
mod worker;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use callrelay_links::{LinkId, UserId};
use callrelay_proto::signal::Participant;
use callrelay_proto::ServerMessage;
use callrelay_sfu::{
    MediaBitrate, ParticipantId, RemoveReason, RoomKey, RoomKind, SfuConfig, SfuError,
};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::config::Settings;
use crate::metrics::MediaMetrics;

/// Capacity of a participant's signaling queue. A client that lets it fill is removed.
pub const SESSION_QUEUE: usize = 256;

/// The room of a call link: the first 8 bytes of SHA-256 of the link id.
pub fn room_key(link: &LinkId) -> RoomKey {
    let d = Sha256::digest(link.as_str().as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    RoomKey(u64::from_be_bytes(b))
}

/// Parses the control plane's `p-<16 hex>` participant id.
pub fn parse_participant_id(s: &str) -> Option<ParticipantId> {
    let hex = s.strip_prefix("p-")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(ParticipantId)
}

/// A participant being added to a room.
#[derive(Debug)]
pub struct JoinRequest {
    /// The room (from the link).
    pub room: RoomKey,
    /// The link (for events).
    pub link: callrelay_links::LinkId,
    /// Video or voice (from the link).
    pub kind: RoomKind,
    /// The link's creator (for blocks made during the call).
    pub creator: UserId,
    /// The participant.
    pub participant: ParticipantId,
    /// Its user.
    pub user: UserId,
    /// Its display name.
    pub name: String,
    /// The client's SDP offer.
    pub offer: String,
    /// When the grant was presented (for join-to-first-packet).
    pub started: Instant,
    /// Where the worker sends this participant's signaling messages.
    pub session: mpsc::Sender<ServerMessage>,
    /// A call participant, or a WHIP publisher / WHEP viewer.
    pub mode: JoinMode,
    /// This node serves the call as a leg (its home is another node): the call's own webhooks
    /// (`call.started`, `call.ended`) are the home's to send.
    pub leg: bool,
}

/// How a participant takes part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinMode {
    /// Publishes and subscribes, renegotiated over signaling (apps, the web page).
    Call,
    /// Publishes only (a WHIP client): subscribed to nothing, offered nothing.
    Publish,
    /// Receives one publisher on the lines of its own offer (a WHEP player): `watch`, or the
    /// first one with media.
    View {
        /// The publisher asked for.
        watch: Option<ParticipantId>,
    },
}

/// What a successful join answers.
#[derive(Debug)]
pub struct JoinReply {
    /// The relay's SDP answer.
    pub sdp: String,
    /// Everyone else already in the room.
    pub participants: Vec<Participant>,
}

/// A request to a worker.
#[derive(Debug)]
pub enum Command {
    /// Adds a participant; the reply carries the answer or why not.
    Join(
        Box<JoinRequest>,
        oneshot::Sender<Result<JoinReply, SfuError>>,
    ),
    /// A client (re)negotiation offer; the reply carries the answer.
    Offer(
        ParticipantId,
        String,
        oneshot::Sender<Result<String, SfuError>>,
    ),
    /// The client's answer to a relay offer.
    Answer(ParticipantId, String, oneshot::Sender<Result<(), SfuError>>),
    /// The participant's own mute state, relayed to the room.
    Mute {
        /// Who.
        participant: ParticipantId,
        /// Audio muted.
        audio: bool,
        /// Video muted.
        video: bool,
    },
    /// Which size of `publisher`'s video `subscriber` wants.
    VideoPreference {
        /// Who asks.
        subscriber: ParticipantId,
        /// Whose video.
        publisher: ParticipantId,
        /// Largest height wanted (0: pause, i.e. the lowest layer).
        max_height: u32,
    },
    /// Removes one participant.
    Remove(ParticipantId, RemoveReason),
    /// Removes one participant of `room` (reason `kicked`: an operator or the link's creator
    /// did it); the reply says whether it was there.
    Kick(RoomKey, ParticipantId, oneshot::Sender<bool>),
    /// Tells one participant of `room` that the link's creator muted its microphone; the
    /// reply says whether it was there.
    RequestMute(RoomKey, ParticipantId, oneshot::Sender<bool>),
    /// A participant claims (`active`) or gives back its room's screen share; the reply is
    /// `Err(name of the sharer)` when someone else holds it.
    ScreenShare {
        /// Who.
        participant: ParticipantId,
        /// Claim or give back.
        active: bool,
        /// `Ok` or who shares now.
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// The worker's rooms (only `Some` room's, if given), for the operator's room API.
    Inspect(Option<RoomKey>, oneshot::Sender<Vec<RoomReport>>),
    /// Removes everyone in a room.
    RemoveRoom(RoomKey, RemoveReason),
    /// Removes everyone on the worker (e.g. `drain` at the drain deadline).
    RemoveAll(RemoveReason),
    /// `blocked` is removed from the rooms of links `blocker` created.
    RemoveBlocked {
        /// Who blocked.
        blocker: UserId,
        /// Who is blocked.
        blocked: UserId,
    },
    /// Removes everyone (reason `drain`) and ends the worker.
    /// A media datagram from another leg of a call (see `crate::cascade`).
    TrunkMedia {
        /// The leg it came from.
        from: callrelay_sfu::LegId,
        /// Its header.
        header: callrelay_trunk::MediaHeader,
        /// The packet after the header.
        rtp: bytes::Bytes,
    },
    /// A control message from another leg about a call of this worker.
    Remote {
        /// The leg it came from.
        from: callrelay_sfu::LegId,
        /// The message.
        message: Box<crate::cascade::Control>,
    },
    /// The trunk to a leg is gone: its participants leave the calls here.
    LegDown(callrelay_sfu::LegId),
    Shutdown,
}

/// A room as its worker sees it ([`MediaPlane::inspect`]).
#[derive(Clone, Debug)]
pub struct RoomReport {
    /// The room.
    pub room: RoomKey,
    /// When its first participant of this run joined (wall clock).
    pub since: DateTime<Utc>,
    /// Its participants, in join order.
    pub participants: Vec<ParticipantReport>,
}

/// A participant as its worker sees it.
#[derive(Clone, Debug)]
pub struct ParticipantReport {
    /// Its id.
    pub participant: ParticipantId,
    /// Its user.
    pub user: UserId,
    /// Its display name.
    pub name: String,
    /// When it joined (wall clock).
    pub joined_at: DateTime<Utc>,
    /// Its own microphone mute.
    pub audio_muted: bool,
    /// Its own camera mute.
    pub video_muted: bool,
    /// What it sends and is sent, over the last second.
    pub bitrate: MediaBitrate,
}

struct WorkerHandle {
    commands: mpsc::UnboundedSender<Command>,
    /// Its host candidates: one per announced IP, on the port it bound.
    addrs: Vec<SocketAddr>,
}

/// Node-wide totals the workers keep up to date (each adds its own changes).
#[derive(Debug, Default)]
pub(crate) struct Totals {
    rooms: AtomicI64,
    participants: AtomicI64,
}

/// The running workers.
pub struct MediaPlane {
    workers: Vec<WorkerHandle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    totals: Arc<Totals>,
}

impl MediaPlane {
    /// Binds one UDP socket per configured address and starts a worker thread on each. A bind
    /// failure is returned (naming the address) before anything is started.
    pub fn start(
        settings: &Settings,
        metrics: MediaMetrics,
        webhooks: Option<Arc<crate::webhooks::Webhooks>>,
        cascade: Option<crate::cascade::CascadeLink>,
    ) -> anyhow::Result<MediaPlane> {
        let serves_ipv4 = settings.announce_ips.iter().any(|ip| ip.is_ipv4());
        let mut sockets = Vec::with_capacity(settings.media_addrs.len());
        for addr in &settings.media_addrs {
            sockets.push(bind_pair(
                *addr,
                serves_ipv4,
                settings.tcp_max_connections.is_some(),
            )?);
        }
        let tcp_limits = settings
            .tcp_max_connections
            .map(|max_connections| tcp::TcpLimits {
                max_connections,
                max_frame: settings.mtu,
                idle_timeout: settings.idle_timeout,
            });
        let totals = Arc::new(Totals::default());
        let mut workers = Vec::with_capacity(sockets.len());
        let mut threads = Vec::with_capacity(sockets.len());
        for (i, (socket, listener)) in sockets.into_iter().enumerate() {
            let bound = socket.local_addr()?;
            // The candidates str0m announces: each announce IP with the port actually bound
            // (at most one per family, checked by the configuration).
            let addrs: Vec<SocketAddr> = settings
                .announce_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect();
            let Some((&first, rest)) = addrs.split_first() else {
                anyhow::bail!("media.announce_ip: no address to announce");
            };
            let mut config = SfuConfig::new(first);
            config.dual_stack_addr = rest.first().copied();
            config.mtu = settings.mtu;
            config.max_participants = settings.max_participants;
            config.idle_timeout = settings.idle_timeout;
            config.send_history_video = settings.video_resend_history;
            config.tcp_candidates = listener.is_some();
            let tcp = listener.zip(tcp_limits);
            // Subscribers' simulcast layers follow their bandwidth estimate (str0m TWCC), capped
            // by the size each asked for; the starting estimate is what str0m's first probes
            // scale from (see DEFAULT_BWE_INITIAL_BITRATE).
            config.bwe_initial_bitrate = settings
                .bandwidth_estimation
                .then_some(callrelay_sfu::DEFAULT_BWE_INITIAL_BITRATE);
            let (tx, rx) = mpsc::unbounded_channel();
            let metrics = metrics.clone();
            let t = totals.clone();
            let w = webhooks.clone();
            let c = cascade.clone();
            let thread = std::thread::Builder::new()
                .name(format!("media-{i}"))
                .spawn(move || worker::run(i, socket, tcp, config, rx, metrics, t, w, c))?;
            workers.push(WorkerHandle {
                commands: tx,
                addrs,
            });
            threads.push(thread);
        }
        tracing::info!(
            workers = workers.len(),
            addrs = ?workers.iter().flat_map(|w| w.addrs.iter()).collect::<Vec<_>>(),
            "media workers started"
        );
        Ok(MediaPlane {
            workers,
            threads: Mutex::new(threads),
            totals,
        })
    }

    /// The announced addresses of every worker (its ICE host candidates: one per announced
    /// IP), worker by worker.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.workers
            .iter()
            .flat_map(|w| w.addrs.iter().copied())
            .collect()
    }

    /// Rooms with at least one participant, over all workers.
    pub fn rooms(&self) -> usize {
        usize::try_from(self.totals.rooms.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Participants in calls, over all workers.
    pub fn participants(&self) -> usize {
        usize::try_from(self.totals.participants.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// Removes every participant on every worker with `reason` (`removed{reason}` is sent
    /// before their sockets close); the workers keep running.
    pub fn remove_all(&self, reason: RemoveReason) {
        self.broadcast(|| Command::RemoveAll(reason));
    }

    /// The worker index hosting `room`.
    pub fn worker_for(&self, room: RoomKey) -> usize {
        (room.0 % self.workers.len().max(1) as u64) as usize
    }

    /// Sends a command to the worker of `room`; false if that worker has stopped.
    pub fn send(&self, room: RoomKey, command: Command) -> bool {
        let i = self.worker_for(room);
        self.workers
            .get(i)
            .is_some_and(|w| w.commands.send(command).is_ok())
    }

    /// The rooms of every worker (or only `room`, from its worker), ordered by age; a worker
    /// that has stopped contributes nothing.
    pub async fn inspect(&self, room: Option<RoomKey>) -> Vec<RoomReport> {
        let mut waiting = Vec::new();
        for (i, w) in self.workers.iter().enumerate() {
            if room.is_some_and(|r| self.worker_for(r) != i) {
                continue;
            }
            let (tx, rx) = oneshot::channel();
            if w.commands.send(Command::Inspect(room, tx)).is_ok() {
                waiting.push(rx);
            }
        }
        let mut rooms = Vec::new();
        for rx in waiting {
            rooms.extend(rx.await.unwrap_or_default());
        }
        rooms.sort_by_key(|r| (r.since, r.room.0));
        rooms
    }

    /// Tells `participant` of `room` that its microphone was muted by the link's creator; false
    /// if it is not there.
    pub async fn request_mute(&self, room: RoomKey, participant: ParticipantId) -> bool {
        let (tx, rx) = oneshot::channel();
        self.send(room, Command::RequestMute(room, participant, tx)) && rx.await.unwrap_or(false)
    }

    /// Removes `participant` from `room` with reason `kicked`; false if it is not there.
    pub async fn kick(&self, room: RoomKey, participant: ParticipantId) -> bool {
        let (tx, rx) = oneshot::channel();
        self.send(room, Command::Kick(room, participant, tx)) && rx.await.unwrap_or(false)
    }

    /// Sends a command built by `f` to every worker.
    pub fn broadcast(&self, f: impl Fn() -> Command) {
        for w in &self.workers {
            let _ = w.commands.send(f());
        }
    }

    /// Stops every worker (participants are removed with reason `drain`) and waits for the
    /// threads. Blocking: call from a blocking context.
    pub fn shutdown(&self) {
        self.broadcast(|| Command::Shutdown);
        let threads = std::mem::take(
            &mut *self
                .threads
                .lock()
                .expect("the thread list mutex is never poisoned: nothing panics under it"),
        );
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a media worker thread panicked");
            }
        }
    }
}

/// Binds one worker's UDP socket and, with ICE-TCP on, its TCP listener on the same port
/// number. With port 0 (any free port) the UDP port the kernel picks may be taken for TCP: a
/// few other ports are tried before giving up.
fn bind_pair(
    addr: SocketAddr,
    serves_ipv4: bool,
    tcp: bool,
) -> anyhow::Result<(UdpSocket, Option<TcpListener>)> {
    let attempts = if addr.port() == 0 { 16 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = bind(addr, serves_ipv4)
            .map_err(|e| anyhow::anyhow!("cannot bind media UDP socket {addr}: {e}"))?;
        if !tcp {
            return Ok((udp, None));
        }
        let on = SocketAddr::new(addr.ip(), udp.local_addr()?.port());
        match bind_tcp(on, serves_ipv4) {
            Ok(l) => return Ok((udp, Some(l))),
            Err(e) => last = Some((on, e)),
        }
    }
    let (on, e) = last.expect("at least one attempt was made");
    anyhow::bail!("cannot listen on media TCP port {on} (media.tcp): {e}")
}

/// The ICE-TCP listener of one worker: non-blocking, same IPv6-only choice as [`bind`].
fn bind_tcp(addr: SocketAddr, serves_ipv4: bool) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!serves_ipv4)?;
    }
    // A restarted relay binds again while its old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(128)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Binds one worker socket, non-blocking. An IPv6 socket takes IPv4 as well (IPV6_V6ONLY off;
/// IPv4 peers then show up as IPv4-mapped addresses) when an IPv4 address is announced, which
/// the configuration allows only on the wildcard `[::]`, and IPv6 only otherwise: set either
/// way, so the host's default (`net.ipv6.bindv6only`) decides nothing. A system that cannot
/// turn it off fails here, naming the address, rather than leave IPv4 clients unanswered.
fn bind(addr: SocketAddr, serves_ipv4: bool) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(!serves_ipv4).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot set IPV6_V6ONLY to {}: {e}", !serves_ipv4),
            )
        })?;
    }
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids_round_trip_through_the_sfu_display() {
        let p = parse_participant_id("p-0f3a00000000beef").expect("valid id");
        assert_eq!(p.to_string(), "p-0f3a00000000beef");
        for bad in [
            "",
            "p-",
            "p-123",
            "q-0f3a00000000beef",
            "p-0f3a00000000beeg",
            "p-+f3a00000000beef",
        ] {
            assert!(parse_participant_id(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn room_keys_are_stable_per_link() {
        let a = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1e").unwrap();
        let b = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1f").unwrap();
        assert_eq!(room_key(&a), room_key(&a));
        assert_ne!(room_key(&a), room_key(&b));
    }
}
