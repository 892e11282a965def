//! A synthetic callrelay participant, for integration tests and the load generator.
//!
//! [`Client::join`] does what an app does: `POST /v1/links/{id}/join` with the user's token, opens
//! the signaling WebSocket at the answer's `signal_url`, sends `join{grant, sdp offer}` and applies
//! the relay's answer. From then on a background task owns a str0m [`Rtc`] (RTP mode, normal
//! non-lite ICE, one host candidate on the client's own UDP socket) and the socket: it answers the
//! relay's renegotiation offers, sends the RTP packets the caller hands it
//! ([`Client::send_audio`], [`Client::send_video`]) with the caller's payload bytes, and surfaces
//! every received RTP packet (arrival time, publisher's participant id, payload) and every
//! signaling message through [`Client::next_event`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), callrelay_client::ClientError> {
//! use callrelay_client::{Client, ClientConfig, ClientEvent};
//! let mut c = Client::join("http://127.0.0.1:7700", "<user token>", "<link id>",
//!     ClientConfig::default()).await?;
//! c.wait_connected(std::time::Duration::from_secs(5)).await?;
//! c.send_audio(vec![1, 2, 3])?;
//! while let Some(ev) = c.next_event().await {
//!     if let ClientEvent::Media(p) = ev {
//!         println!("{} bytes from {:?}", p.payload.len(), p.from);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! [`Member`] wraps a `Client` for calls that outlive a node: it joins through a list of relay
//! URLs and joins again by itself when the relay moves the call, drains, or is lost.
//!
//! With [`ClientConfig::decrypt_sample`] above 1 a client receives in *sampled* mode (see
//! [`sampled`]): it counts every RTP packet from its clear-text header into [`RtpCounts`] and
//! decrypts only one in `N` per stream, and it negotiates neither NACK nor transport-wide
//! congestion control, which both need every packet to go through str0m.
#![forbid(unsafe_code)]

mod ice_tcp;
mod member;
pub mod model;
pub mod sampled;

pub use member::{rejoin_reason, Member, MemberEvent, RejoinPolicy};
pub use model::{CallModel, RemoteTrack, TrackSource};
pub use sampled::{DecryptUntil, RtpCounts, RtpStreamCounts, MAX_DECRYPT_SAMPLE};
/// The codecs of [`ClientConfig::video_codec`].
pub use str0m::format::Codec;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callrelay_proto::signal::{
    Join, Joined, Resume, ScreenShare, SessionDescription, VideoPreference,
};
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};

use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite, SeqNo};
use str0m::{Candidate, Event, Input, Output, Rtc, RtcConfig};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::ice_tcp::IceTcp;
use crate::sampled::{Sampler, Verdict};

/// The simulcast layers a client publishes when [`ClientConfig::simulcast`] is set, lowest first.
pub const SIMULCAST_RIDS: [&str; 3] = ["l", "m", "h"];

/// How long [`Client::join`] waits for the relay's `joined`.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a session goes on after [`Client::leave`].
const LEAVE_GRACE: Duration = Duration::from_secs(2);
/// Most datagrams a sampled session reads from its socket per wake-up.
const RECV_BATCH: usize = 64;

/// What a client publishes and where it listens.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Publish an audio track (Opus). With neither `audio` nor `video` the client publishes
    /// nothing: its join offer carries one receive-only audio line (an offer needs an m-line),
    /// and what it receives comes on the lines the relay offers, as for everyone.
    pub audio: bool,
    /// Publish a video track (VP8).
    pub video: bool,
    /// Publish video as three simulcast layers with rids `l`, `m`, `h`.
    pub simulcast: bool,
    /// Local IP of the client's UDP socket and host candidate.
    pub local_ip: IpAddr,
    /// Capacity of the event queue; events beyond it are dropped and counted
    /// ([`Client::dropped_events`]) so a slow reader never grows memory without bound.
    pub event_capacity: usize,
    /// Hand one received RTP packet in this many per stream (SSRC) to str0m — the first of
    /// each stream always — and only count the others from their clear-text RTP header into
    /// [`ClientConfig::rtp_counts`] (see [`sampled`]). 1 (the default): every packet goes
    /// through str0m and nothing is counted. At most [`MAX_DECRYPT_SAMPLE`].
    ///
    /// Above 1 the session also negotiates no NACK (str0m would ask for every packet it did
    /// not see, and the relay would resend them all) — PLI and FIR stay — and no
    /// transport-wide congestion control (`transport-cc` feedback and its header extension:
    /// feedback built from the sample would report the rest as lost, and the relay's
    /// bandwidth estimate towards us would collapse). The relay then has no estimate towards
    /// this client and sends it the layers it asks for.
    pub decrypt_sample: u32,
    /// Where a sampled session publishes its counts; `None`: a handle of the client's own
    /// ([`Client::rtp_counts`]). Share one handle between the sessions of one participant.
    pub rtp_counts: Option<RtpCounts>,
    /// Sampled mode only: hand *every* packet of each received video stream (SSRC) to str0m,
    /// not one in [`ClientConfig::decrypt_sample`], until one whose decrypted payload passes
    /// this test; from the next packet on, that stream is sampled like the others. A load
    /// generator uses it to see the first packet of the simulcast layer it asked for (the
    /// layer is only in the encrypted payload). `None` (the default): video is sampled from
    /// its first packet.
    pub decrypt_video_until: Option<DecryptUntil>,
    /// The one video codec this client offers, accepts in its answers and sends (`Vp8`,
    /// `Vp9`, `H264`, `H265` or `Av1`), like a device that decodes only that one. `None` (the
    /// default): str0m's default codecs, sending VP8. Audio is Opus either way.
    pub video_codec: Option<Codec>,
    /// ICE-TCP (RFC 6544) instead of UDP: the offer carries one active TCP host candidate (no
    /// UDP one), and the client connects to the relay's passive TCP candidate and sends every
    /// datagram there as an RFC 4571 frame. For networks that block UDP. `false` (the
    /// default): UDP only. [`Client::move_network`] moves the UDP socket only.
    pub tcp: bool,
    /// The region the client says it is in when it joins (`region` of the HTTP join): in a
    /// cluster whose nodes run trunks, a node of that region serves it, as a leg of the call
    /// when the call's home is elsewhere. `None` (the default): no hint.
    pub region: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            audio: true,
            video: true,
            simulcast: false,
            local_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            event_capacity: 65_536,
            decrypt_sample: 1,
            rtp_counts: None,
            decrypt_video_until: None,
            video_codec: None,
            tcp: false,
            region: None,
        }
    }
}

/// Why a client could not join or act.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The HTTP join failed before an answer (connection refused, reset, unreadable body).
    #[error("http join failed: {0}")]
    Http(String),
    /// The HTTP join was answered with a non-2xx status.
    #[error("http join failed: {status}: {body}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The problem's stable `code` (`link_revoked`, `store_unavailable`, …), empty if the
        /// body is not a problem document.
        code: String,
        /// The body as received.
        body: String,
    },
    /// The WebSocket could not be opened or broke during the join.
    #[error("websocket: {0}")]
    WebSocket(String),
    /// The relay refused the signaling join with `error{code, message}`.
    #[error("refused by the relay: {code}: {message}")]
    Refused {
        /// The error code (see `proto/signal.proto`).
        code: String,
        /// The relay's message.
        message: String,
    },
    /// An SDP could not be produced or applied.
    #[error("sdp: {0}")]
    Sdp(String),
    /// A socket error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// No answer in time.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// The client's session has ended.
    #[error("session closed")]
    Closed,
    /// The client publishes no such track or layer.
    #[error("no such track: {0}")]
    NoTrack(&'static str),
}

/// Kind of a received track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// Audio.
    Audio,
    /// Video.
    Video,
}

/// One RTP packet received from the relay.
#[derive(Debug, Clone)]
pub struct ReceivedPacket {
    /// When the datagram carrying it was read from the socket.
    pub arrival: Instant,
    /// The publisher's participant id (`p-<16 hex>`, the msid stream id of the m-line), if the
    /// relay announced one.
    pub from: Option<String>,
    /// Audio or video.
    pub kind: TrackKind,
    /// The subscription m-line it came on.
    pub mid: String,
    /// Extended RTP sequence number (as rewritten by the relay).
    pub seq: u64,
    /// The SSRC it came on.
    pub ssrc: u32,
    /// The client session that received it (as [`RtpStreamCounts::session`]).
    pub session: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// RTP marker bit.
    pub marker: bool,
    /// The payload bytes, exactly as received.
    pub payload: Vec<u8>,
}

/// Something that happened to a client.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// ICE and DTLS are up: media can flow.
    Connected,
    /// An RTP packet arrived.
    Media(ReceivedPacket),
    /// A signaling message other than SDP (which the client handles itself): participants,
    /// tracks, active speaker, mute changes, `removed`, `error`, `pong`.
    Signal(ServerMessage),
    /// The relay asked for a keyframe of our video (`rid` for a simulcast layer).
    KeyframeRequest {
        /// The layer, if simulcast.
        rid: Option<String>,
    },
    /// The signaling socket broke without a `removed`: the client is resuming the session on a
    /// new socket (`resume`) while media goes on. [`ClientEvent::SignalingResumed`] follows, or
    /// [`ClientEvent::Closed`] when the relay cannot be reached or refuses.
    SignalingLost,
    /// A new signaling socket took the session over: same participant, seat and tracks.
    SignalingResumed,
    /// The session ended: the last event. `reason` is the relay's `removed{reason}` if any.
    Closed {
        /// Why the relay removed us, if it said.
        reason: Option<String>,
    },
}

/// A participant in a call. Dropping it ends the session abruptly (like a crashed app: the
/// relay keeps its seat for `rooms.resume_grace`, waiting for a `resume` that never comes);
/// [`Client::leave`] hangs up politely. A signaling socket that breaks while the client runs is
/// resumed by the client itself ([`ClientEvent::SignalingLost`]).
pub struct Client {
    participant_id: String,
    joined: Joined,
    local_addr: SocketAddr,
    commands: mpsc::UnboundedSender<Command>,
    events: mpsc::Receiver<ClientEvent>,
    dropped: Arc<AtomicU64>,
    task: JoinHandle<()>,
    connected: bool,
    rtp_counts: RtpCounts,
    model: Arc<Mutex<CallModel>>,
}

/// Applies renegotiation offers to a [`Client`] from another task ([`Client::renegotiator`]).
/// It does not keep the session alive: dropping the `Client` ends the session, and the
/// handle then answers [`ClientError::Closed`].
#[derive(Debug, Clone)]
pub struct Renegotiator {
    commands: mpsc::UnboundedSender<Command>,
}

impl Renegotiator {
    /// Applies a remote offer; returns our answer.
    pub async fn apply_offer(&self, offer_sdp: String) -> Result<String, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ApplyOffer {
                sdp: offer_sdp,
                reply,
            })
            .map_err(|_| ClientError::Closed)?;
        answer.await.map_err(|_| ClientError::Closed)?
    }
}

/// The HTTP join answer (the fields a client needs).
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JoinTicket {
    /// The participant id allotted by the control plane.
    pub participant_id: String,
    /// The signed join grant for the WebSocket.
    pub grant: String,
    /// The signaling WebSocket URL.
    pub signal_url: String,
}

enum Command {
    Audio {
        payload: Vec<u8>,
        level: i8,
    },
    Video {
        rid: Option<Rid>,
        payload: Vec<u8>,
    },
    Signal(ClientMessage),
    /// Claim the call's screen share, then publish the screen track (see
    /// [`Client::share_screen`]); reply once the relay answered its offer.
    ShareScreen {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// Stop sending the screen track and give the claim back.
    StopScreen {
        reply: oneshot::Sender<Result<(), ClientError>>,
    },
    /// One packet of the screen track.
    Screen {
        payload: Vec<u8>,
    },
    /// Apply a remote offer that arrived by other means; reply with our answer.
    ApplyOffer {
        sdp: String,
        reply: oneshot::Sender<Result<String, ClientError>>,
    },
    Leave,
    /// Move to a new UDP socket and restart ICE over signaling (see [`Client::move_network`]).
    MoveNetwork {
        reply: oneshot::Sender<Result<SocketAddr, ClientError>>,
    },
}

/// Bytes [`vp8_payload`] puts before the body of a keyframe packet (the most it adds).
pub const VP8_KEYFRAME_PREFIX: usize = 4 + 10;

/// Builds a VP8 RTP payload laid out as Chrome's encoder does, then `body`:
/// - the payload descriptor with X=1, S=1, partition 0 and a 15-bit picture id (4 bytes);
/// - the VP8 payload header: the 3-byte frame tag (P bit clear for a keyframe), and for a
///   keyframe the start code `9d 01 2a` and a 640×360 frame size (10 bytes in all; 3 for an
///   interframe).
///
/// SFUs find keyframes, which simulcast layer switches wait for, in these clear-text bytes:
/// callrelay (str0m's parser) from the P bit, Janus only with the extended descriptor and the
/// start code. [`vp8_body`] gives `body` back.
///
/// Unlike Chrome, which starts only the first packet of a frame this way (S=1, payload header)
/// and counts picture ids up, a synthetic sender puts this on every packet, with picture id 0:
/// every packet then carries the body a receiver measures, and to an SFU every packet of a
/// keyframe looks like the start of one (a layer switch may begin at any of them).
pub fn vp8_payload(keyframe: bool, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(body.len() + VP8_KEYFRAME_PREFIX);
    // X=1, S=1, PID=0 | I=1 | M=1, picture id 0.
    v.extend_from_slice(&[0x90, 0x80, 0x80, 0x00]);
    if keyframe {
        // Frame tag: P=0 (key), version 0, show_frame; start code; 640 × 360, no scaling.
        v.extend_from_slice(&[0x10, 0x00, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]);
    } else {
        v.extend_from_slice(&[0x11, 0x00, 0x00]);
    }
    v.extend_from_slice(body);
    v
}

/// The body of a payload built by [`vp8_payload`] (`None` if it is not one). The payload
/// descriptor is parsed, not matched, since an SFU may rewrite its picture id (Janus does when
/// it switches simulcast layers).
pub fn vp8_body(payload: &[u8]) -> Option<&[u8]> {
    let b0 = *payload.first()?;
    // S=1, partition 0: our packets all carry the payload header.
    if b0 & 0x17 != 0x10 {
        return None;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let ext = *payload.get(i)?;
        i += 1;
        if ext & 0x80 != 0 {
            i += if payload.get(i)? & 0x80 != 0 { 2 } else { 1 };
        }
        if ext & 0x40 != 0 {
            i += 1;
        }
        if ext & 0x30 != 0 {
            i += 1;
        }
    }
    let header = payload.get(i..)?;
    match header.first()? & 0x01 {
        0 if header.get(3..6)? == [0x9d, 0x01, 0x2a] => header.get(10..),
        1 => header.get(3..),
        _ => None,
    }
}

/// `POST {base_url}/v1/links/{link_id}/join` with the user's bearer token.
pub async fn http_join(
    base_url: &str,
    token: &str,
    link_id: &str,
) -> Result<JoinTicket, ClientError> {
    http_join_in(base_url, token, link_id, None).await
}

/// [`http_join`] with the caller's region, if any (see [`ClientConfig::region`]).
pub async fn http_join_in(
    base_url: &str,
    token: &str,
    link_id: &str,
    region: Option<&str>,
) -> Result<JoinTicket, ClientError> {
    let url = format!("{}/v1/links/{link_id}/join", base_url.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(url).bearer_auth(token);
    if let Some(r) = region {
        req = req.json(&serde_json::json!({ "region": r }));
    }
    let resp = req
        .send()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        let code = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["code"].as_str().map(str::to_owned))
            .unwrap_or_default();
        return Err(ClientError::Status {
            status: status.as_u16(),
            code,
            body,
        });
    }
    resp.json::<JoinTicket>()
        .await
        .map_err(|e| ClientError::Http(e.to_string()))
}

/// A publishing session waiting for the remote answer to its offer ([`Client::offer`]).
pub struct Offering {
    session: Session,
    pending: SdpPendingOffer,
}

impl Offering {
    async fn new(config: &ClientConfig) -> Result<(Offering, SdpOffer), ClientError> {
        let mut session = Session::new(config).await?;
        let mut api = session.rtc.sdp_api();
        let audio_mid = config
            .audio
            .then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let video_mid = config.video.then(|| {
            let simulcast = config.simulcast.then(|| {
                let mut s = Simulcast::new();
                for rid in SIMULCAST_RIDS {
                    s.add_send_layer(SimulcastLayer::new(rid));
                }
                s
            });
            api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast)
        });
        if audio_mid.is_none() && video_mid.is_none() {
            // Publishes nothing: the one line of the offer only receives, so the relay opens
            // no subscription for it in anyone else's session (a send-only line without a
            // track would be a published track that never sends).
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api
            .apply()
            .ok_or(ClientError::Sdp("str0m made no offer".into()))?;
        session.audio_mid = audio_mid;
        session.video_mid = video_mid;
        Ok((Offering { session, pending }, offer))
    }

    /// Applies the remote answer and starts the session; ICE and DTLS proceed in the background
    /// ([`ClientEvent::Connected`]).
    pub fn accept_answer(self, answer_sdp: &str) -> Result<Client, ClientError> {
        let Offering {
            mut session,
            pending,
        } = self;
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
        session
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Sdp(e.to_string()))?;
        Ok(session.spawn(String::new(), Joined::default(), None))
    }
}

/// A str0m session before its driver task starts.
struct Session {
    rtc: Rtc,
    socket: UdpSocket,
    /// ICE-TCP instead of the socket ([`ClientConfig::tcp`]).
    tcp: Option<IceTcp>,
    local_addr: SocketAddr,
    start: Instant,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    /// The codec our video is sent in ([`ClientConfig::video_codec`]).
    video_codec: Codec,
    event_capacity: usize,
    /// Unique within the process ([`ReceivedPacket::session`]).
    id: u64,
    /// Sampled receive mode ([`ClientConfig::decrypt_sample`] above 1).
    sampler: Option<Sampler>,
    rtp_counts: RtpCounts,
}

/// Numbers the sessions of this process.
static NEXT_SESSION: AtomicU64 = AtomicU64::new(1);

/// The receive buffer asked for on a session's UDP socket (the kernel caps it at
/// `net.core.rmem_max`). The default (~208 KiB) holds fewer than 100 full-size datagrams; a load
/// generator running hundreds of sessions on one core can leave a socket unread longer than
/// that at a 2.5 Mbit/s layer, and the kernel then drops what the relay forwarded.
pub const SOCKET_RECV_BUFFER: usize = 1 << 20;

/// A UDP socket for a session's media on `ip`, any port, with [`SOCKET_RECV_BUFFER`].
async fn bind_media(ip: IpAddr) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
    if let Err(e) = socket2::SockRef::from(&socket).set_recv_buffer_size(SOCKET_RECV_BUFFER) {
        tracing::debug!(error = %e, "client socket: receive buffer not enlarged");
    }
    Ok(socket)
}

impl Session {
    /// An `Rtc` (RTP mode, one host candidate) and its UDP socket.
    async fn new(config: &ClientConfig) -> Result<Session, ClientError> {
        let socket = bind_media(config.local_ip).await?;
        let local_addr = socket.local_addr()?;
        let start = Instant::now();
        let id = NEXT_SESSION.fetch_add(1, Ordering::Relaxed);
        let rtp_counts = config.rtp_counts.clone().unwrap_or_default();
        let every = config.decrypt_sample.clamp(1, MAX_DECRYPT_SAMPLE);
        let builder = Rtc::builder().set_rtp_mode(true);
        let builder = match config.video_codec {
            None => builder,
            Some(c) => builder
                .enable_vp8(c == Codec::Vp8)
                .enable_vp9(c == Codec::Vp9)
                .enable_h264(c == Codec::H264)
                .enable_h265(c == Codec::H265)
                .enable_av1(c == Codec::Av1),
        };
        let video_codec = config.video_codec.unwrap_or(Codec::Vp8);
        let (builder, sampler) = if every > 1 {
            let sampler = Sampler::new(
                every,
                id,
                rtp_counts.clone(),
                start,
                config.decrypt_video_until.clone(),
            );
            (without_nack_and_twcc(builder), Some(sampler))
        } else {
            (builder, None)
        };
        let mut rtc = builder.build(start);
        let tcp = config.tcp.then(|| IceTcp::new(config.local_ip));
        let candidate = match &tcp {
            Some(t) => Candidate::builder()
                .tcp()
                .host(t.candidate)
                .tcptype(TcpType::Active)
                .build(),
            None => Candidate::host(local_addr, "udp"),
        }
        .map_err(|e| ClientError::Sdp(e.to_string()))?;
        rtc.add_local_candidate(candidate);
        Ok(Session {
            rtc,
            socket,
            tcp,
            local_addr,
            start,
            audio_mid: None,
            video_mid: None,
            video_codec,
            event_capacity: config.event_capacity,
            id,
            sampler,
            rtp_counts,
        })
    }

    /// Starts the driver task; `ws` is callrelay's signaling, if the session has it.
    fn spawn(
        self,
        participant_id: String,
        joined: Joined,
        ws: Option<(WsSink, WsStream, String)>,
    ) -> Client {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (event_tx, events) = mpsc::channel(self.event_capacity.max(16));
        let dropped = Arc::new(AtomicU64::new(0));
        let local_addr = self.local_addr;
        let (sink, stream, signal_url) = match ws {
            Some((sink, stream, url)) => (Some(sink), Some(stream), url),
            None => (None, None, String::new()),
        };
        let resume_token = joined.resume_token.clone();
        let rtp_counts = self.rtp_counts.clone();
        let model = Arc::new(Mutex::new(CallModel::new(&joined)));
        let mut driver = Driver {
            participant_id: participant_id.clone(),
            model: model.clone(),
            screen_mid: None,
            screen_claim: None,
            screen_answer: None,
            rtc: self.rtc,
            socket: self.socket,
            tcp: self.tcp,
            local_addr,
            start: self.start,
            audio_mid: self.audio_mid,
            video_mid: self.video_mid,
            video_codec: self.video_codec,
            seqs: HashMap::new(),
            streams: HashMap::new(),
            pending_offer: None::<SdpPendingOffer>,
            restart_candidate: None,
            events: event_tx,
            dropped: dropped.clone(),
            removed: None,
            sink,
            signal_url,
            resume_token,
            outbox: Vec::new(),
            last_from_relay: Arc::new(AtomicU64::new(0)),
            session: self.id,
            sampler: self.sampler,
        };
        driver.refresh_media_pts();
        let task = tokio::spawn(driver.run(stream, command_rx));
        Client {
            participant_id,
            joined,
            local_addr,
            commands,
            events,
            dropped,
            task,
            connected: false,
            rtp_counts,
            model,
        }
    }
}

impl Client {
    /// Joins the call of `link_id` on the relay at `base_url` (`http://host:port`) as the user of
    /// `token`: HTTP join, WebSocket, SDP offer/answer. Returns once the relay answered `joined`;
    /// ICE/DTLS then proceed in the background ([`ClientEvent::Connected`]).
    pub async fn join(
        base_url: &str,
        token: &str,
        link_id: &str,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let ticket = http_join_in(base_url, token, link_id, config.region.as_deref()).await?;
        Client::join_with_ticket(&ticket, config).await
    }

    /// The signaling half of [`Client::join`], with a ticket obtained elsewhere (e.g. to reuse
    /// a grant on purpose).
    pub async fn join_with_ticket(
        ticket: &JoinTicket,
        config: ClientConfig,
    ) -> Result<Client, ClientError> {
        let (Offering { session, pending }, offer) = Offering::new(&config).await?;
        let mut rtc = session.rtc;

        let (ws, _) = tokio_tungstenite::connect_async(ticket.signal_url.as_str())
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let (mut sink, mut stream) = ws.split();
        let join = ClientMessage::from(client_message::Msg::Join(Join {
            grant: ticket.grant.clone(),
            sdp: offer.to_sdp_string(),
        }));
        sink.send(Message::Text(join.to_json().into()))
            .await
            .map_err(|e| ClientError::WebSocket(e.to_string()))?;
        let joined = tokio::time::timeout(JOIN_TIMEOUT, async {
            while let Some(frame) = stream.next().await {
                let frame = frame.map_err(|e| ClientError::WebSocket(e.to_string()))?;
                let Message::Text(text) = frame else {
                    if let Message::Close(c) = frame {
                        return Err(ClientError::WebSocket(format!("closed: {c:?}")));
                    }
                    continue;
                };
                let msg = ServerMessage::from_json(&text)
                    .map_err(|e| ClientError::WebSocket(e.to_string()))?;
                match msg.msg {
                    Some(server_message::Msg::Joined(j)) => return Ok(j),
                    Some(server_message::Msg::Error(e)) => {
                        return Err(ClientError::Refused {
                            code: e.code,
                            message: e.message,
                        })
                    }
                    _ => {}
                }
            }
            Err(ClientError::WebSocket("closed before joined".into()))
        })
        .await
        .map_err(|_| ClientError::Timeout("joined"))??;

        let answer =
            SdpAnswer::from_sdp_string(&joined.sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
        rtc.sdp_api()
            .accept_answer(pending, answer)
            .map_err(|e| ClientError::Sdp(e.to_string()))?;
        let session = Session { rtc, ..session };
        let participant_id = joined.participant_id.clone();
        let url = ticket.signal_url.clone();
        Ok(session.spawn(participant_id, joined, Some((sink, stream, url))))
    }

    /// Starts a publishing session whose SDP travels by other means (another SFU's signaling,
    /// e.g. Janus VideoRoom): returns our offer; [`Offering::accept_answer`] then starts the
    /// session. Such a client has no callrelay signaling: [`Client::participant_id`] is empty and
    /// [`Client::send_signal`] goes nowhere.
    pub async fn offer(config: ClientConfig) -> Result<(Offering, String), ClientError> {
        let (o, sdp) = Offering::new(&config).await?;
        Ok((o, sdp.to_sdp_string()))
    }

    /// Like [`Client::offer`], for a player that only receives (WHEP): one receive-only audio
    /// line (with `config.audio`) and one video line (with `config.video`), nothing sent.
    pub async fn offer_to_receive(config: ClientConfig) -> Result<(Offering, String), ClientError> {
        let mut session = Session::new(&config).await?;
        let mut api = session.rtc.sdp_api();
        if config.audio {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        if config.video {
            api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().ok_or(ClientError::Sdp(
            "nothing to offer: enable audio or video".into(),
        ))?;
        Ok((Offering { session, pending }, offer.to_sdp_string()))
    }

    /// Starts a receiving session from a remote offer that travelled by other means; returns
    /// the session and our answer. Later offers go to [`Client::apply_offer`]. `config` gives
    /// the local address and event queue (its audio / video flags do not apply: we answer what
    /// is offered, receive-only).
    pub async fn answer(
        offer_sdp: &str,
        config: ClientConfig,
    ) -> Result<(Client, String), ClientError> {
        let offer =
            SdpOffer::from_sdp_string(offer_sdp).map_err(|e| ClientError::Sdp(e.to_string()))?;
        let mut session = Session::new(&config).await?;
        let answer = session
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| ClientError::Sdp(e.to_string()))?;
        let client = session.spawn(String::new(), Joined::default(), None);
        Ok((client, answer.to_sdp_string()))
    }

    /// Applies a renegotiation offer that travelled by other means (see [`Client::answer`]);
    /// returns our answer.
    pub async fn apply_offer(&self, offer_sdp: String) -> Result<String, ClientError> {
        self.renegotiator().apply_offer(offer_sdp).await
    }

    /// A cloneable handle that applies renegotiation offers to this session from another task
    /// (the one that talks to the remote SFU) while this one reads events.
    pub fn renegotiator(&self) -> Renegotiator {
        Renegotiator {
            commands: self.commands.clone(),
        }
    }

    /// Our participant id (`p-<16 hex>`), as the relay and the other participants see it.
    pub fn participant_id(&self) -> &str {
        &self.participant_id
    }

    /// The relay's `joined` message: who was already there, the link kind, the SDP answer.
    pub fn joined(&self) -> &Joined {
        &self.joined
    }

    /// The client's UDP address (its host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Events dropped because the queue was full.
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Where this session publishes its RTP counts in sampled mode
    /// ([`ClientConfig::decrypt_sample`]; the handle of [`ClientConfig::rtp_counts`] if one
    /// was given). Published every [`sampled::PUBLISH_INTERVAL`] while packets arrive and
    /// when the session ends.
    pub fn rtp_counts(&self) -> &RtpCounts {
        &self.rtp_counts
    }

    /// Sends one audio RTP packet (Opus payload type) carrying `payload`, with an RFC 6464
    /// audio level of -30 dBov (speaking).
    pub fn send_audio(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        self.send_audio_with_level(payload, -30)
    }

    /// Like [`Client::send_audio`] with an explicit audio level (0 loudest, -127 silence).
    pub fn send_audio_with_level(&self, payload: Vec<u8>, level: i8) -> Result<(), ClientError> {
        self.command(Command::Audio { payload, level })
    }

    /// Sends one video RTP packet (VP8 payload type, marker set) carrying `payload` on simulcast
    /// layer `rid` (`None` without simulcast). Build keyframes with [`vp8_payload`].
    pub fn send_video(&self, rid: Option<&str>, payload: Vec<u8>) -> Result<(), ClientError> {
        self.command(Command::Video {
            rid: rid.map(Rid::from),
            payload,
        })
    }

    /// Sends any signaling message (mute, video preference, ping, leave…).
    pub fn send_signal(&self, msg: ClientMessage) -> Result<(), ClientError> {
        self.command(Command::Signal(msg))
    }

    /// Asks for `participant_id`'s video at most `max_height` pixels high.
    pub fn set_video_preference(
        &self,
        participant_id: &str,
        max_height: u32,
    ) -> Result<(), ClientError> {
        self.send_signal(ClientMessage::from(client_message::Msg::VideoPreference(
            VideoPreference {
                participant_id: participant_id.to_owned(),
                max_height,
            },
        )))
    }

    /// The next event; `None` once the session has ended and every event was read.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        let e = self.events.recv().await;
        if matches!(e, Some(ClientEvent::Connected)) {
            self.connected = true;
        }
        e
    }

    /// The next event if one is queued.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        let e = self.events.try_recv().ok();
        if matches!(e, Some(ClientEvent::Connected)) {
            self.connected = true;
        }
        e
    }

    /// Waits for [`ClientEvent::Connected`], keeping the events read meanwhile out of the
    /// queue (returned, in order).
    pub async fn wait_connected(
        &mut self,
        within: Duration,
    ) -> Result<Vec<ClientEvent>, ClientError> {
        let mut seen = Vec::new();
        if self.connected {
            return Ok(seen);
        }
        tokio::time::timeout(within, async {
            while let Some(e) = self.next_event().await {
                match e {
                    ClientEvent::Connected => return Ok(()),
                    ClientEvent::Closed { .. } => {
                        seen.push(e);
                        return Err(ClientError::Closed);
                    }
                    e => seen.push(e),
                }
            }
            Err(ClientError::Closed)
        })
        .await
        .map_err(|_| ClientError::Timeout("ice/dtls connection"))??;
        Ok(seen)
    }

    /// Shares a screen, as the web page's "Share screen" does: claims the call's screen share
    /// (`screen_share{active:true}`; one sharer at a time), then publishes a second video
    /// track, which the others see as `track_published{source:"screen"}`. Returns once the
    /// relay answered the offer that adds it; [`ClientError::Refused`] with code
    /// `screen_share_busy` when someone else shares. Send on it with [`Client::send_screen`].
    pub async fn share_screen(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::ShareScreen { reply })?;
        tokio::time::timeout(JOIN_TIMEOUT, rx)
            .await
            .map_err(|_| ClientError::Timeout("screen share"))?
            .map_err(|_| ClientError::Closed)?
    }

    /// Stops sharing: the screen's m-line goes inactive (the others hear
    /// `track_unpublished`) and the claim is given back (`screen_share{active:false}`).
    /// Returns once the relay answered. [`Client::share_screen`] shares again on the same line.
    pub async fn stop_screen(&self) -> Result<(), ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::StopScreen { reply })?;
        tokio::time::timeout(JOIN_TIMEOUT, rx)
            .await
            .map_err(|_| ClientError::Timeout("screen share stop"))?
            .map_err(|_| ClientError::Closed)?
    }

    /// Sends one RTP packet (one frame, marker set) of the shared screen, in the client's
    /// video codec; nothing while no screen is shared.
    pub fn send_screen(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        self.command(Command::Screen { payload })
    }

    /// The others' published tracks as signaling announced them: microphone, camera, screen.
    /// A newcomer learns the tracks already published right after `joined`.
    pub fn remote_tracks(&self) -> Vec<RemoteTrack> {
        self.model().tracks().to_vec()
    }

    /// Everyone else in the call now.
    pub fn participants(&self) -> Vec<String> {
        self.model().participants().to_vec()
    }

    /// Who shares their screen now (our own id when we do).
    pub fn screen_sharer(&self) -> Option<String> {
        self.model().screen_sharer().map(str::to_owned)
    }

    fn model(&self) -> std::sync::MutexGuard<'_, CallModel> {
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hangs up: `leave` on signaling, DTLS close, then the session ends
    /// ([`ClientEvent::Closed`]).
    pub fn leave(&self) -> Result<(), ClientError> {
        self.command(Command::Leave)
    }

    /// What an app does when its network changes (Wi-Fi to mobile data): moves to a new UDP
    /// socket on a new port (the old one is closed: what arrives there is lost) and restarts
    /// ICE over signaling, an `offer` with new ICE credentials whose answer makes the new
    /// address this client's only candidate. Same participant, same tracks; media flows again
    /// once ICE has checked the new path. Returns the new local address.
    pub async fn move_network(&mut self) -> Result<SocketAddr, ClientError> {
        let (reply, rx) = oneshot::channel();
        self.command(Command::MoveNetwork { reply })?;
        let addr = rx.await.map_err(|_| ClientError::Closed)??;
        self.local_addr = addr;
        Ok(addr)
    }

    /// Whether the background session is still running.
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }

    fn command(&self, c: Command) -> Result<(), ClientError> {
        self.commands.send(c).map_err(|_| ClientError::Closed)
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type WsSink = futures::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    Message,
>;
type WsStream = futures::stream::SplitStream<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
>;

/// The background half: owns the `Rtc`, the UDP socket and the WebSocket.
struct Driver {
    /// Ours (empty without callrelay signaling).
    participant_id: String,
    /// The call as signaling describes it, shared with the [`Client`].
    model: Arc<Mutex<CallModel>>,
    /// The screen's m-line, once shared (kept, inactive, between shares).
    screen_mid: Option<Mid>,
    /// A screen-share claim waiting for the relay's verdict.
    screen_claim: Option<oneshot::Sender<Result<(), ClientError>>>,
    /// An offer that starts or stops the screen, waiting for the relay's answer.
    screen_answer: Option<oneshot::Sender<Result<(), ClientError>>>,
    rtc: Rtc,
    socket: UdpSocket,
    /// ICE-TCP instead of the socket ([`ClientConfig::tcp`]).
    tcp: Option<IceTcp>,
    local_addr: SocketAddr,
    start: Instant,
    audio_mid: Option<Mid>,
    video_mid: Option<Mid>,
    video_codec: Codec,
    /// Next sequence number per (mid, rid) we send on.
    seqs: HashMap<(Mid, Option<Rid>), u64>,
    /// Subscription m-lines: mid → (publisher's participant id, kind).
    streams: HashMap<Mid, (Option<String>, TrackKind)>,
    pending_offer: Option<SdpPendingOffer>,
    /// The new local address of an ICE restart, a candidate once the relay answered.
    restart_candidate: Option<SocketAddr>,
    events: mpsc::Sender<ClientEvent>,
    dropped: Arc<AtomicU64>,
    removed: Option<String>,
    /// callrelay signaling (`None` when SDP travels elsewhere, or while resuming).
    sink: Option<WsSink>,
    /// Where signaling is, and the token that resumes this session there (empty: no resume).
    signal_url: String,
    resume_token: String,
    /// Signaling messages written while the socket was being resumed, sent once it is back.
    outbox: Vec<ClientMessage>,
    /// When a datagram last came from the relay (ns since `start`): while it sends, it is up,
    /// and a broken socket is worth resuming.
    last_from_relay: Arc<AtomicU64>,
    session: u64,
    /// Sampled receive mode: classifies and counts datagrams before str0m.
    sampler: Option<Sampler>,
}

enum Flow {
    Continue,
    Stop,
}

impl Driver {
    async fn run(
        mut self,
        stream: Option<WsStream>,
        mut commands: mpsc::UnboundedReceiver<Command>,
    ) {
        // Signaling is read by a task of its own: polling the WebSocket in the loop below, on
        // every datagram, made tungstenite zero its 128 KiB read buffer each time, which cost
        // more than receiving the datagram.
        // The reader goes with this future, however it ends (a dropped `Client` aborts it):
        // it holds half of the WebSocket, which must close with the session.
        let (mut frames, mut _reader) = match stream {
            Some(stream) => {
                let (tx, rx) = mpsc::channel(64);
                (
                    Some(rx),
                    Some(AbortOnDrop(tokio::spawn(read_frames(stream, tx)))),
                )
            }
            None => (None, None),
        };
        let mut buf = vec![0u8; 2048];
        let mut leaving = false;
        // After `leave`, the session ends at the latest this late (a peer that never answers
        // our close_notify must not keep it open).
        let mut leave_by: Option<Instant> = None;
        // One timer, reset only when the deadline moves (a new one per turn costs a timer
        // wheel insertion and removal per datagram).
        let sleep = tokio::time::sleep_until(tokio::time::Instant::now());
        tokio::pin!(sleep);
        let mut armed: Option<Instant> = None;
        // A new signaling socket being opened to resume the session (see `resume_signaling`).
        let mut resuming: Option<std::pin::Pin<Box<ResumeFuture>>> = None;
        // The Rtc's next timeout, or `None` when it must be driven: it had input since (only
        // a datagram that was just counted leaves it untouched).
        let mut rtc_deadline: Option<Instant> = None;
        loop {
            let mut deadline = match rtc_deadline {
                Some(t) if Instant::now() < t => t,
                _ => {
                    let Some(t) = self.drive().await else {
                        break;
                    };
                    rtc_deadline = Some(t);
                    t
                }
            };
            if let Some(s) = self.sampler.as_mut() {
                s.publish(Instant::now(), false);
                if let Some(t) = s.publish_due() {
                    deadline = deadline.min(t);
                }
            }
            if let Some(t) = leave_by {
                if Instant::now() >= t {
                    break;
                }
                deadline = deadline.min(t);
            }
            if armed != Some(deadline) {
                sleep
                    .as_mut()
                    .reset(tokio::time::Instant::from_std(deadline));
                armed = Some(deadline);
            }
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let now = Instant::now();
                    match r {
                        Ok((n, source)) => {
                            let Ok(handed) = self.receive(&buf[..n], source, now) else {
                                break;
                            };
                            if handed {
                                rtc_deadline = None;
                            }
                            // Sampled mode: read what else is queued in one go, so that a
                            // counted packet costs neither a wake-up nor a drive of the Rtc.
                            // In RTP mode the Rtc holds one received packet until polled.
                            if self.sampler.is_some() {
                                if handed && self.drive().await.is_none() {
                                    break;
                                }
                                match self.receive_queued(&mut buf).await {
                                    None => break,
                                    Some(true) => rtc_deadline = None,
                                    Some(false) => {}
                                }
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "client socket receive failed"),
                    }
                }
                (source, frame) = IceTcp::next(&mut self.tcp) => {
                    let destination = self.tcp.as_ref().map_or(self.local_addr, |t| t.candidate);
                    let Ok(handed) = self.receive_on(Protocol::Tcp, &frame, source, destination, Instant::now()) else {
                        break;
                    };
                    if handed {
                        rtc_deadline = None;
                    }
                }
                frame = next_frame(&mut frames) => {
                    rtc_deadline = None;
                    match frame {
                        Some(Ok(Message::Text(text))) => {
                            if let Flow::Stop = self.handle_signal(&text).await {
                                break;
                            }
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                            // Removed, leaving, or no way to resume: the session is over.
                            if leaving || self.removed.is_some() || self.resume_token.is_empty() || self.signal_url.is_empty() {
                                break;
                            }
                            tracing::debug!("signaling lost: resuming");
                            frames = None;
                            _reader = None;
                            self.sink = None;
                            self.emit(ClientEvent::SignalingLost);
                            resuming = Some(Box::pin(resume_signaling(
                                self.signal_url.clone(),
                                self.resume_token.clone(),
                                self.last_from_relay.clone(),
                                self.start,
                            )));
                        }
                        Some(Ok(_)) => {}
                    }
                }
                resumed = async { resuming.as_mut().expect("guarded").await }, if resuming.is_some() => {
                    resuming = None;
                    rtc_deadline = None;
                    match resumed {
                        Ok((sink, stream)) => {
                            let (tx, rx) = mpsc::channel(64);
                            frames = Some(rx);
                            _reader = Some(AbortOnDrop(tokio::spawn(read_frames(stream, tx))));
                            self.sink = Some(sink);
                            self.emit(ClientEvent::SignalingResumed);
                            for m in std::mem::take(&mut self.outbox) {
                                if !self.signal(m).await {
                                    break;
                                }
                            }
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "signaling not resumed");
                            break;
                        }
                    }
                }
                cmd = commands.recv(), if !leaving => {
                    rtc_deadline = None;
                    match cmd {
                        None => break,
                        Some(Command::Leave) => {
                            leaving = true;
                            leave_by = Some(Instant::now() + LEAVE_GRACE);
                            let leave = ClientMessage::from(client_message::Msg::Leave(Default::default()));
                            self.signal(leave).await;
                            // DTLS close_notify to the relay; the relay then closes signaling.
                            let _ = self.rtc.close();
                        }
                        Some(c) => self.command(c).await,
                    }
                }
                _ = &mut sleep => {
                    armed = None;
                    rtc_deadline = None;
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        break;
                    }
                }
            }
        }
        // Flush what the Rtc still has to say (DTLS close_notify) before the socket goes.
        let _ = self.drive().await;
        if let Some(s) = self.sampler.as_mut() {
            s.publish(Instant::now(), true);
        }
        // The relay closes DTLS and signaling together: read signaling to its end (bounded)
        // so `removed{reason}` is not lost to the race. SDP still queued is skipped: the
        // session is over, and answering on a closing socket would end the read before a
        // `removed` behind it.
        let tail = tokio::time::Instant::now() + Duration::from_secs(2);
        if let (false, Some(frames)) = (leaving, frames.as_mut()) {
            loop {
                match tokio::time::timeout_at(tail, frames.recv()).await {
                    Ok(Some(Ok(Message::Text(text)))) => {
                        let sdp = ServerMessage::from_json(&text).is_ok_and(|m| {
                            matches!(
                                m.msg,
                                Some(
                                    server_message::Msg::Offer(_) | server_message::Msg::Answer(_)
                                )
                            )
                        });
                        if !sdp {
                            let _ = self.handle_signal(&text).await;
                        }
                    }
                    Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => break,
                    Ok(Some(Ok(_))) => {}
                }
            }
        }
        if let Some(sink) = self.sink.as_mut() {
            let _ = sink.close().await;
        }
        let reason = self.removed.take();
        // The last event is never dropped: wait for room if needed.
        let _ = self.events.send(ClientEvent::Closed { reason }).await;
    }

    /// One datagram that arrived at `now`: counted only (sampled mode, `Ok(false)`) or handed
    /// to the `Rtc` (`Ok(true)`); `Err` when the `Rtc` failed and the session is over.
    fn receive(&mut self, data: &[u8], source: SocketAddr, now: Instant) -> Result<bool, ()> {
        self.receive_on(Protocol::Udp, data, source, self.local_addr, now)
    }

    /// [`Driver::receive`] for a datagram that came over `proto` to our candidate `destination`.
    fn receive_on(
        &mut self,
        proto: Protocol,
        data: &[u8],
        source: SocketAddr,
        destination: SocketAddr,
        now: Instant,
    ) -> Result<bool, ()> {
        let since = now.saturating_duration_since(self.start).as_nanos();
        self.last_from_relay
            .store(u64::try_from(since).unwrap_or(u64::MAX), Ordering::Relaxed);
        // Sampled mode: most media RTP is only counted from its header; str0m never sees it.
        let verdict = match self.sampler.as_mut() {
            Some(s) => s.handle(data, now),
            None => Verdict::ToRtc(None),
        };
        let Verdict::ToRtc(counted) = verdict else {
            return Ok(false);
        };
        let Ok(r) = Receive::new(proto, source, destination, data) else {
            return Ok(false);
        };
        self.rtc
            .handle_input(Input::Receive(now, r))
            .map_err(|_| ())?;
        if let Some(ssrc) = counted {
            self.suppress_nack(ssrc);
        }
        Ok(true)
    }

    /// Reads the datagrams already queued on the socket, at most [`RECV_BATCH`], driving the
    /// `Rtc` after each it was handed; whether it was handed any, `None` when the session is
    /// over.
    async fn receive_queued(&mut self, buf: &mut [u8]) -> Option<bool> {
        let mut handed = false;
        for _ in 0..RECV_BATCH {
            let Ok((n, source)) = self.socket.try_recv_from(buf) else {
                break;
            };
            if self.receive(&buf[..n], source, Instant::now()).ok()? {
                handed = true;
                // In RTP mode the Rtc holds one received packet until polled.
                self.drive().await?;
            }
        }
        Some(handed)
    }

    /// Drains the `Rtc`; returns its next timeout, or `None` when the session is over.
    async fn drive(&mut self) -> Option<Instant> {
        loop {
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::debug!(error = %e, "client rtc failed");
                    return None;
                }
            };
            match out {
                Output::Timeout(t) => return Some(t),
                Output::Transmit(t) if t.proto != Protocol::Udp => {
                    if let Some(tcp) = self.tcp.as_mut() {
                        tcp.send(t.destination, &t.contents);
                    }
                }
                Output::Transmit(t) => {
                    if let Err(e) = self.socket.send_to(&t.contents, t.destination).await {
                        tracing::debug!(error = %e, "client socket send failed");
                    }
                }
                Output::Event(e) => {
                    if !self.handle_rtc_event(e) {
                        return None;
                    }
                }
            }
        }
    }

    fn handle_rtc_event(&mut self, e: Event) -> bool {
        match e {
            Event::Connected => self.emit(ClientEvent::Connected),
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                let kind = if m.kind == MediaKind::Audio {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                };
                let from = self
                    .rtc
                    .media(m.mid)
                    .map(|md| md.stream_id().to_owned())
                    .filter(|s| !s.is_empty() && s != "-");
                self.streams.insert(m.mid, (from, kind));
            }
            Event::RtpPacket(p) => {
                let mid = self
                    .rtc
                    .direct_api()
                    .stream_rx(&p.header.ssrc)
                    .map(|s| s.mid());
                let Some(mid) = mid else { return true };
                let (from, kind) = match self.streams.get(&mid) {
                    Some((from, kind)) => (from.clone(), *kind),
                    None => {
                        let kind = match self.rtc.media(mid).map(|m| m.kind()) {
                            Some(MediaKind::Audio) => TrackKind::Audio,
                            _ => TrackKind::Video,
                        };
                        (None, kind)
                    }
                };
                if let Some(s) = self.sampler.as_mut() {
                    s.decrypted(*p.header.ssrc, p.header.sequence_number, &p.payload);
                }
                self.emit(ClientEvent::Media(ReceivedPacket {
                    arrival: p.timestamp,
                    from,
                    kind,
                    mid: mid.to_string(),
                    seq: *p.seq_no,
                    ssrc: *p.header.ssrc,
                    session: self.session,
                    timestamp: p.header.timestamp,
                    marker: p.header.marker,
                    payload: p.payload.to_vec(),
                }));
            }
            Event::KeyframeRequest(r) => self.emit(ClientEvent::KeyframeRequest {
                rid: r.rid.map(|r| r.to_string()),
            }),
            Event::Closed => return false,
            _ => {}
        }
        true
    }

    async fn handle_signal(&mut self, text: &str) -> Flow {
        let Ok(msg) = ServerMessage::from_json(text) else {
            tracing::debug!("client got an unparseable signaling frame");
            return Flow::Continue;
        };
        match msg.msg {
            Some(server_message::Msg::Offer(o)) => {
                let Ok(offer) = SdpOffer::from_sdp_string(&o.sdp) else {
                    tracing::debug!("relay offer does not parse");
                    return Flow::Continue;
                };
                // Glare: the relay yields to our outstanding offer (an ICE restart) and offers
                // again after answering it (proto/CLIENTS.md): ignore its crossed offer.
                if self.pending_offer.is_some() {
                    return Flow::Continue;
                }
                let accepted = self.rtc.sdp_api().accept_offer(offer);
                self.refresh_media_pts();
                match accepted {
                    Ok(answer) => {
                        let m =
                            ClientMessage::from(client_message::Msg::Answer(SessionDescription {
                                sdp: answer.to_sdp_string(),
                            }));
                        if !self.signal(m).await {
                            return Flow::Stop;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "relay offer rejected"),
                }
            }
            Some(server_message::Msg::Answer(a)) => {
                if let (Some(pending), Ok(answer)) = (
                    self.pending_offer.take(),
                    SdpAnswer::from_sdp_string(&a.sdp),
                ) {
                    let accepted = self.rtc.sdp_api().accept_answer(pending, answer);
                    if let Err(e) = &accepted {
                        tracing::debug!(error = %e, "relay answer rejected");
                    }
                    if let Some(reply) = self.screen_answer.take() {
                        let _ = reply.send(accepted.map_err(|e| ClientError::Sdp(e.to_string())));
                    }
                    // The restart took effect with the answer and dropped the old local
                    // candidates: the new socket's address is the one now.
                    if let Some(addr) = self.restart_candidate.take() {
                        match Candidate::host(addr, "udp") {
                            Ok(c) => {
                                self.rtc.add_local_candidate(c);
                            }
                            Err(e) => tracing::debug!(error = %e, "bad local candidate"),
                        }
                    }
                    self.refresh_media_pts();
                }
            }
            Some(server_message::Msg::Removed(r)) => {
                self.removed = Some(r.reason.clone());
                self.emit(ClientEvent::Signal(ServerMessage::from(
                    server_message::Msg::Removed(r),
                )));
            }
            Some(m) => {
                self.model
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .handle(&m);
                match &m {
                    server_message::Msg::ScreenShare(s)
                        if s.active && s.participant_id == self.participant_id =>
                    {
                        if let Some(reply) = self.screen_claim.take() {
                            self.offer_screen(Direction::SendOnly, reply).await;
                        }
                    }
                    server_message::Msg::Error(e) if e.code == "screen_share_busy" => {
                        if let Some(reply) = self.screen_claim.take() {
                            let _ = reply.send(Err(ClientError::Refused {
                                code: e.code.clone(),
                                message: e.message.clone(),
                            }));
                        }
                    }
                    _ => {}
                }
                self.emit(ClientEvent::Signal(ServerMessage::from(m)))
            }
            None => {}
        }
        Flow::Continue
    }

    /// Offers the screen's m-line sending (adding it the first time) or inactive; `reply`
    /// hears how the relay's answer went.
    async fn offer_screen(
        &mut self,
        direction: Direction,
        reply: oneshot::Sender<Result<(), ClientError>>,
    ) {
        if self.pending_offer.is_some() || self.screen_answer.is_some() {
            let _ = reply.send(Err(ClientError::Sdp(
                "an offer of ours is still outstanding".into(),
            )));
            return;
        }
        let mut api = self.rtc.sdp_api();
        match self.screen_mid {
            Some(mid) => api.set_direction(mid, direction),
            None => {
                self.screen_mid =
                    Some(api.add_media(MediaKind::Video, direction, None, None, None));
            }
        }
        let Some((offer, pending)) = api.apply() else {
            // Nothing changed (already in that direction).
            let _ = reply.send(Ok(()));
            return;
        };
        self.pending_offer = Some(pending);
        self.screen_answer = Some(reply);
        let m = ClientMessage::from(client_message::Msg::Offer(SessionDescription {
            sdp: offer.to_sdp_string(),
        }));
        self.signal(m).await;
    }

    async fn command(&mut self, c: Command) {
        let now = Instant::now();
        match c {
            Command::Audio { payload, level } => {
                let Some(mid) = self.audio_mid else { return };
                let Some(pt) = self.pt_for(Codec::Opus) else {
                    return;
                };
                let ts = media_time(now, self.start, 48_000);
                let seq = self.next_seq(mid, None);
                let ext = ExtensionValues {
                    audio_level: Some(level),
                    voice_activity: Some(level > -60),
                    ..Default::default()
                };
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return;
                };
                tx.write_rtp(RtpWrite::new(pt, seq, ts, now, payload).ext_vals(ext));
            }
            Command::Video { rid, payload } => {
                let Some(mid) = self.video_mid else { return };
                let Some(pt) = self.pt_for(self.video_codec) else {
                    return;
                };
                let ts = media_time(now, self.start, 90_000);
                let seq = self.next_seq(mid, rid);
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, rid) else {
                    return;
                };
                tx.write_rtp(
                    RtpWrite::new(pt, seq, ts, now, payload)
                        .marker(true)
                        .nackable(true),
                );
            }
            Command::Signal(m) => {
                self.signal(m).await;
            }
            Command::ShareScreen { reply } => {
                if self.participant_id.is_empty() || self.screen_claim.is_some() {
                    let _ = reply.send(Err(ClientError::WebSocket(
                        "no signaling to claim the screen share over, or a claim is pending".into(),
                    )));
                    return;
                }
                self.screen_claim = Some(reply);
                let claim = ClientMessage::from(client_message::Msg::ScreenShare(ScreenShare {
                    active: true,
                }));
                self.signal(claim).await;
            }
            Command::StopScreen { reply } => {
                if self.screen_mid.is_none() {
                    let _ = reply.send(Err(ClientError::NoTrack("screen")));
                    return;
                }
                self.offer_screen(Direction::Inactive, reply).await;
                let give_back =
                    ClientMessage::from(client_message::Msg::ScreenShare(ScreenShare {
                        active: false,
                    }));
                self.signal(give_back).await;
            }
            Command::Screen { payload } => {
                let Some(mid) = self.screen_mid else { return };
                let Some(pt) = self.pt_for(self.video_codec) else {
                    return;
                };
                let ts = media_time(now, self.start, 90_000);
                let seq = self.next_seq(mid, None);
                let mut api = self.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else {
                    return;
                };
                tx.write_rtp(
                    RtpWrite::new(pt, seq, ts, now, payload)
                        .marker(true)
                        .nackable(true),
                );
            }
            Command::ApplyOffer { sdp, reply } => {
                let answer = SdpOffer::from_sdp_string(&sdp)
                    .map_err(|e| ClientError::Sdp(e.to_string()))
                    .and_then(|offer| {
                        self.rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .map_err(|e| ClientError::Sdp(e.to_string()))
                    })
                    .map(|a| a.to_sdp_string());
                self.refresh_media_pts();
                let _ = reply.send(answer);
            }
            Command::Leave => {}
            Command::MoveNetwork { reply } => {
                let r = self.move_network().await;
                let _ = reply.send(r);
            }
        }
        // Let the Rtc packetize what was written now rather than at its next timer.
        let _ = self.rtc.handle_input(Input::Timeout(now));
    }

    /// A new UDP socket on a new port, and an ICE-restart offer to the relay.
    async fn move_network(&mut self) -> Result<SocketAddr, ClientError> {
        if self.sink.is_none() {
            return Err(ClientError::WebSocket(
                "no signaling to restart ICE over".into(),
            ));
        }
        let socket = bind_media(self.local_addr.ip()).await?;
        let addr = socket.local_addr()?;
        let mut api = self.rtc.sdp_api();
        api.ice_restart(false);
        let Some((offer, pending)) = api.apply() else {
            return Err(ClientError::Sdp("no ICE-restart offer".into()));
        };
        self.socket = socket;
        self.local_addr = addr;
        self.pending_offer = Some(pending);
        self.restart_candidate = Some(addr);
        let m = ClientMessage::from(client_message::Msg::Offer(SessionDescription {
            sdp: offer.to_sdp_string(),
        }));
        if !self.signal(m).await {
            return Err(ClientError::Closed);
        }
        Ok(addr)
    }

    /// Tells the sampler which payload types are media, and their clock rates (after each SDP
    /// change: payload types are fixed by negotiation).
    fn refresh_media_pts(&mut self) {
        let Some(s) = self.sampler.as_mut() else {
            return;
        };
        s.set_media_pts(self.rtc.codec_config().params().iter().map(|p| {
            (
                *p.pt(),
                p.spec().clock_rate.get(),
                p.spec().codec.is_video(),
            )
        }));
    }

    /// Switches off str0m's NACKs for the stream of `ssrc` once str0m knows it. They depend on
    /// an RTX stream being negotiated, not on `nack` in the SDP, and with only a sample of the
    /// packets str0m would ask for every other one.
    fn suppress_nack(&mut self, ssrc: u32) {
        let Some(s) = self.sampler.as_mut() else {
            return;
        };
        if !s.take_nack_to_suppress(ssrc) {
            return;
        }
        match self.rtc.direct_api().stream_rx(&ssrc.into()) {
            Some(rx) => rx.suppress_nack(true),
            None => s.nack_not_suppressed(ssrc),
        }
    }

    /// Sends a signaling message if the session has callrelay signaling; false if sending failed.
    async fn signal(&mut self, m: ClientMessage) -> bool {
        match self.sink.as_mut() {
            Some(sink) => sink.send(Message::Text(m.to_json().into())).await.is_ok(),
            None if !self.resume_token.is_empty() && !self.signal_url.is_empty() => {
                // Resuming: sent once the new socket is there (bounded: a client that keeps
                // talking to a relay it cannot reach loses the oldest).
                if self.outbox.len() >= OUTBOX_LIMIT {
                    self.outbox.remove(0);
                }
                self.outbox.push(m);
                true
            }
            None => true,
        }
    }

    fn pt_for(&self, codec: Codec) -> Option<str0m::media::Pt> {
        self.rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
    }

    fn next_seq(&mut self, mid: Mid, rid: Option<Rid>) -> SeqNo {
        let n = self.seqs.entry((mid, rid)).or_insert(0);
        let s = *n;
        *n += 1;
        SeqNo::from(s)
    }

    fn emit(&self, e: ClientEvent) {
        if self.events.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `config` for a sampled receiver: no NACK and no transport-wide congestion control on any
/// payload type (PLI and FIR stay: they are how a receiver asks for a keyframe), and no
/// transport sequence number extension. See [`ClientConfig::decrypt_sample`].
fn without_nack_and_twcc(mut config: RtcConfig) -> RtcConfig {
    for p in config.codec_config().iter_mut() {
        p.set_fb_nack(false);
        p.set_fb_transport_cc(false);
    }
    let mut exts = ExtensionMap::empty();
    for (id, e) in config.extension_map().iter() {
        if !matches!(e, Extension::TransportSequenceNumber) {
            exts.set(id, e.clone());
        }
    }
    config.set_extension_map(exts)
}

/// A signaling frame as read, or why reading failed.
type Frame = Result<Message, tokio_tungstenite::tungstenite::Error>;

/// Forwards `stream`'s frames to the driver until either ends.
async fn read_frames(mut stream: WsStream, frames: mpsc::Sender<Frame>) {
    loop {
        let f = tokio::select! {
            f = stream.next() => f,
            _ = frames.closed() => return,
        };
        let Some(f) = f else { return };
        if frames.send(f).await.is_err() {
            return;
        }
    }
}

/// A signaling socket that took a session over ([`resume_signaling`]), or why not.
type ResumeFuture = dyn std::future::Future<Output = Result<(WsSink, WsStream), String>> + Send;

/// Most client messages kept while signaling is being resumed.
const OUTBOX_LIMIT: usize = 64;

/// How long a client keeps trying to resume while the relay's datagrams still arrive (the
/// relay's `rooms.resume_grace` defaults to 30 s).
const RESUME_FOR: Duration = Duration::from_secs(30);

/// The relay counts as gone when nothing came from it over UDP for this long: resuming is
/// then given up after [`RESUME_SILENT_TRIES`] attempts, and the caller joins again (a lost
/// node; see `member.rs`).
const RELAY_SILENT: Duration = Duration::from_secs(1);
const RESUME_SILENT_TRIES: u32 = 2;

/// Opens a new signaling socket at `url` and sends `resume{token}` until the relay answers
/// `resumed` (`Ok`), refuses (`resume_failed`), [`RESUME_FOR`] passes, or the relay looks gone
/// (no datagram from it for [`RELAY_SILENT`]). Retries back off from 200 ms to 2 s.
async fn resume_signaling(
    url: String,
    token: String,
    last_from_relay: Arc<AtomicU64>,
    start: Instant,
) -> Result<(WsSink, WsStream), String> {
    let began = Instant::now();
    let mut delay = Duration::from_millis(200);
    let mut tries = 0u32;
    loop {
        tries += 1;
        match tokio::time::timeout(Duration::from_secs(3), resume_once(&url, &token)).await {
            Ok(Ok(ws)) => return Ok(ws),
            Ok(Err(ResumeError::Refused(e))) => return Err(e),
            Ok(Err(ResumeError::Transport(e))) => {
                tracing::debug!(error = %e, tries, "resume attempt failed")
            }
            Err(_) => tracing::debug!(tries, "resume attempt timed out"),
        }
        let heard = Duration::from_nanos(last_from_relay.load(Ordering::Relaxed));
        let silent = start.elapsed().saturating_sub(heard) > RELAY_SILENT;
        if began.elapsed() > RESUME_FOR || (silent && tries >= RESUME_SILENT_TRIES) {
            return Err(format!(
                "the relay could not be reached for {:?}",
                began.elapsed()
            ));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

enum ResumeError {
    /// The relay answered and refused (`resume_failed`): no point in trying again.
    Refused(String),
    /// No answer: try again.
    Transport(String),
}

async fn resume_once(url: &str, token: &str) -> Result<(WsSink, WsStream), ResumeError> {
    let (ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(|e| ResumeError::Transport(e.to_string()))?;
    let (mut sink, mut stream) = ws.split();
    let resume = ClientMessage::from(client_message::Msg::Resume(Resume {
        resume_token: token.to_string(),
    }));
    sink.send(Message::Text(resume.to_json().into()))
        .await
        .map_err(|e| ResumeError::Transport(e.to_string()))?;
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|e| ResumeError::Transport(e.to_string()))?;
        let Message::Text(text) = frame else {
            if let Message::Close(c) = frame {
                return Err(ResumeError::Transport(format!("closed: {c:?}")));
            }
            continue;
        };
        let msg =
            ServerMessage::from_json(&text).map_err(|e| ResumeError::Transport(e.to_string()))?;
        match msg.msg {
            Some(server_message::Msg::Resumed(_)) => return Ok((sink, stream)),
            Some(server_message::Msg::Error(e)) => {
                return Err(ResumeError::Refused(format!("{}: {}", e.code, e.message)))
            }
            _ => {}
        }
    }
    Err(ResumeError::Transport("closed before resumed".into()))
}

/// Aborts its task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The next signaling frame, or never when the session has no callrelay signaling.
async fn next_frame(frames: &mut Option<mpsc::Receiver<Frame>>) -> Option<Frame> {
    match frames.as_mut() {
        Some(f) => f.recv().await,
        None => std::future::pending().await,
    }
}

/// RTP timestamp at `now` for a clock of `rate` Hz started at `start`.
fn media_time(now: Instant, start: Instant, rate: u64) -> u32 {
    let us = now.saturating_duration_since(start).as_micros() as u64;
    (us.saturating_mul(rate) / 1_000_000) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_payloads_give_their_body_back() {
        for key in [true, false] {
            let p = vp8_payload(key, &[1, 2, 3]);
            assert_eq!(vp8_body(&p), Some(&[1u8, 2, 3][..]));
        }
        assert_eq!(vp8_payload(true, &[]).len(), VP8_KEYFRAME_PREFIX);
        // An SFU may rewrite the picture id.
        let mut p = vp8_payload(false, &[7]);
        p[2..4].copy_from_slice(&[0xAB, 0xCD]);
        assert_eq!(vp8_body(&p), Some(&[7u8][..]));
        // A keyframe without the start code, a continuation packet, truncated ones.
        assert_eq!(vp8_body(&[0x10, 0x00, 1, 2, 3]), None);
        assert_eq!(vp8_body(&[0x80, 0x80, 0x80, 0x00, 0x11, 0, 0, 1]), None);
        assert_eq!(vp8_body(&[0x90, 0x80, 0x80]), None);
    }

    #[test]
    fn vp8_payloads_are_keyframes_only_when_asked() {
        assert!(str0m::format::detect_vp8_keyframe(&vp8_payload(
            true,
            &[9, 9]
        )));
        assert!(!str0m::format::detect_vp8_keyframe(&vp8_payload(
            false,
            &[9, 9]
        )));
    }

    #[test]
    fn media_time_counts_in_clock_ticks() {
        let t = Instant::now();
        assert_eq!(media_time(t + Duration::from_millis(20), t, 48_000), 960);
        assert_eq!(media_time(t + Duration::from_secs(1), t, 90_000), 90_000);
    }
}
