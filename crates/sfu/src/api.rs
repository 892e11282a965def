//! Public types of the core: configuration, identifiers, events, errors and counters.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};

/// The starting bandwidth estimate an IO layer should give
/// [`SfuConfig::bwe_initial_bitrate`] (bits/s). It is what layers are chosen with until str0m
/// has measured (its first probes, at 3× and 6× this, report within about a second), and
/// what those probes scale from: from 2.5 Mbit/s they measured ~9 Mbit/s on an unlimited
/// link in the room bench, not enough for four `h` layers (~13 Mbit/s with keyframes), so a
/// meeting subscriber stayed on `m`; from 5 Mbit/s they measured ~16 Mbit/s and it had `h`
/// within a second. A subscriber whose link carries less is moved down as its estimate falls
/// (delay- and loss-based, within about a second).
pub const DEFAULT_BWE_INITIAL_BITRATE: u64 = 5_000_000;

/// The default [`SfuConfig::send_history_video`].
pub const DEFAULT_SEND_HISTORY_VIDEO: Duration = Duration::from_secs(1);

/// Configuration of one [`Sfu`][crate::Sfu] (one worker socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuConfig {
    /// The worker's UDP socket address as clients reach it, announced as its host candidate.
    pub local_addr: SocketAddr,
    /// A second host candidate, in the other address family than `local_addr`, for a
    /// dual-stack worker socket (bound to `[::]` and announced on an IPv4 and an IPv6 address).
    /// `None` (the default): `local_addr` is the only candidate. See
    /// [`SfuConfig::local_addrs`] and [`SfuConfig::local_addr_for`].
    pub dual_stack_addr: Option<SocketAddr>,
    /// Datagrams longer than this are dropped before any parsing.
    pub mtu: usize,
    /// Most participants in one room; `add_participant` refuses more.
    pub max_participants: usize,
    /// A participant that sends no authenticated STUN for this long is removed (reason `idle`).
    pub idle_timeout: Duration,
    /// A participant whose DTLS handshake has not completed this long after it joined is
    /// removed (reason `idle`), even if it keeps ICE alive: an endless handshake holds no seat
    /// and no session (threat 6). Browsers finish in well under a second; the default (20 s)
    /// leaves room for DTLS retransmissions on a lossy path.
    pub handshake_timeout: Duration,
    /// At most one keyframe request per published layer is relayed per this interval.
    pub keyframe_request_interval: Duration,
    /// Sender-side bandwidth estimation (str0m BWE over TWCC feedback) towards every
    /// participant, starting from this estimate in bits/s (1 Mbit/s is a good start); it
    /// drives the simulcast layer each subscriber gets. `None` (the default) turns it off:
    /// subscribers then get their requested layer (the cap set by
    /// [`Sfu::set_subscriber_layer`][crate::Sfu::set_subscriber_layer]).
    ///
    /// Forwarded media is not paced (publishers pace what they send; str0m's pacer, at 1.1×
    /// the estimate, held a 50 KB keyframe for ~100 ms). The estimate is kept honest by the
    /// layer choice and by padding while a subscriber probes for its next layer (see
    /// [`Sfu::set_subscriber_layer`][crate::Sfu::set_subscriber_layer]). Off by default so that
    /// turning it on is a deliberate choice of the IO layer.
    pub bwe_initial_bitrate: Option<u64>,
    /// A subscriber moves to a higher simulcast layer only after its estimate has covered
    /// that layer for this long (moving down is immediate), so layers do not flap.
    pub layer_up_hold: Duration,
    /// Remember each forwarded copy's arrival and hand it back on its
    /// [`Transmit::received_at`][crate::Transmit::received_at] (one hash-map insert and one
    /// removal per copy), for the IO layer's forwarding-latency histogram. On by default; off
    /// only to measure what it costs.
    pub forward_timing: bool,
    /// Most audio and video m-lines one participant may publish on at once (threat 22). An
    /// SDP offer that sends on more is refused with [`SfuError::TooManyTracks`], and no more
    /// than this many of a participant's m-lines become published tracks. The web page
    /// publishes two (audio, and video with three simulcast layers); four leaves room for a
    /// screen share and a second microphone.
    pub max_tracks_per_participant: usize,
    /// Most incoming RTP streams (SSRCs, main and repair) one participant may send on (threat
    /// 13); RTP on the SSRC of a further stream is dropped
    /// ([`SfuStats::rtp_dropped_ssrc_limit`]). A stream that changes its SSRC keeps its place.
    /// Packets on SSRCs not yet in the table reach str0m at a bounded rate: a burst of this
    /// many, then two a second (spoofed ones cost nothing). The web page sends seven (audio,
    /// three video layers and their three repair streams); the default covers
    /// `max_tracks_per_participant` video tracks of three layers with repair.
    pub max_ssrcs_per_participant: usize,
    /// Most bits per second of media one participant may send to be forwarded (threat 12),
    /// RTP headers and wire overhead included, with one second of burst: packets over it are
    /// dropped before fan-out ([`SfuStats::rtp_dropped_ingress_limit`]) and the sender stays.
    /// The web page sends ~2.6 Mbit/s (three simulcast layers and audio); the default (10
    /// Mbit/s) leaves room for a screen share. `None` turns the cap off.
    pub max_ingress_bitrate: Option<u64>,
    /// Packets str0m keeps per sending video stream to answer NACKs (and to pad with when it
    /// probes), at most [`SfuConfig::send_history_video`] old. str0m's default (1,000) is ~4 s
    /// of a 2.5 Mbit/s layer, and at ~1.3 KB a packet it made the relay hold ~1 MB per video
    /// subscription. 256 is ~1 s of that layer, well beyond any round trip a NACK needs. Measured by
    /// `benches/tests/memory.rs` (5 people each sending 2 Mbit/s of video, BWE on): 2,770 KiB
    /// of relay heap per participant with 1,000, 2,060 with 256, 1,759 with 128.
    pub send_buffer_video: usize,
    /// How long a forwarded video packet stays in its subscription's RTX cache to answer
    /// NACKs (at most [`SfuConfig::send_buffer_video`] packets). A NACK comes a round trip
    /// after the copy left, and a receiver asks again about once per round trip: 1 s answers
    /// three asks at a 300 ms round trip, and is the least a browser keeps of what it sent
    /// itself (libwebrtc's `RtpPacketHistory`: max(1 s, 3 × RTT)). str0m's own is 3 s; the
    /// cache grows only to what it holds within this age, so a shorter one makes a
    /// subscription cost less (~0.42 KiB per cached packet, and the payloads it keeps alive;
    /// `benches/tests/memory.rs`) and a long-RTT subscriber recover less.
    pub send_history_video: Duration,
    /// ICE-TCP (RFC 6544): every participant's `Rtc` also announces a passive TCP host
    /// candidate at each of [`SfuConfig::local_addrs`] (same IP and port number, TCP), and
    /// the IO layer must accept TCP connections there and feed their RFC 4571 frames to
    /// [`Sfu::handle_tcp_frame`][crate::Sfu::handle_tcp_frame]. Off by default: announcing a
    /// candidate nobody listens on only delays clients.
    pub tcp_candidates: bool,
}

impl SfuConfig {
    /// Defaults for a worker bound to `local_addr`.
    pub fn new(local_addr: SocketAddr) -> Self {
        SfuConfig {
            local_addr,
            dual_stack_addr: None,
            mtu: 1500,
            max_participants: 32,
            idle_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(20),
            keyframe_request_interval: Duration::from_millis(500),
            bwe_initial_bitrate: None,
            layer_up_hold: Duration::from_millis(2_500),
            forward_timing: true,
            max_tracks_per_participant: 4,
            max_ssrcs_per_participant: 32,
            max_ingress_bitrate: Some(10_000_000),
            send_buffer_video: 256,
            send_history_video: DEFAULT_SEND_HISTORY_VIDEO,
            tcp_candidates: false,
        }
    }

    /// Every host candidate: `local_addr`, then `dual_stack_addr` if set. Each participant's
    /// `Rtc` announces all of them; a client pairs its own address with the one of its family.
    pub fn local_addrs(&self) -> impl Iterator<Item = SocketAddr> {
        std::iter::once(self.local_addr).chain(self.dual_stack_addr)
    }

    /// The host candidate a datagram from `remote` was sent to: the one in `remote`'s address
    /// family (an IPv4-mapped IPv6 address counts as IPv4), else `local_addr`. An IO layer
    /// passes it as the `destination` of [`Sfu::handle_datagram`][crate::Sfu::handle_datagram]:
    /// str0m pairs a remote address only with a local candidate of its own family.
    pub fn local_addr_for(&self, remote: SocketAddr) -> SocketAddr {
        let v4 = remote.ip().to_canonical().is_ipv4();
        match self.dual_stack_addr {
            Some(other) if self.local_addr.is_ipv4() != v4 && other.is_ipv4() == v4 => other,
            _ => self.local_addr,
        }
    }
}

/// Opaque key of a room (the server maps a call link to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey(pub u64);

/// Identifier of a participant, unique within one [`Sfu`][crate::Sfu]. Displayed as `p-` and 16
/// hex digits, the form the control plane hands out: it is the msid stream id of the
/// participant's tracks in the SDP subscribers receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p-{:016x}", self.0)
    }
}

/// Kind of a room, from the kind of its call link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomKind {
    /// Audio and video.
    Video,
    /// Audio only: video m-lines are refused and video is never forwarded.
    Voice,
}

/// Kind of a published track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackKind {
    /// An audio track.
    Audio,
    /// A video track.
    Video,
}

/// Why a participant left or was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemoveReason {
    /// The call link was revoked by the operator.
    Revoked,
    /// The link's creator blocked this user.
    Blocked,
    /// The room is full.
    RoomFull,
    /// No ICE activity for the idle timeout, or no completed DTLS handshake within the
    /// handshake timeout.
    Idle,
    /// The node is draining.
    Drain,
    /// Removed by a moderator.
    Kicked,
    /// The participant hung up.
    Left,
    /// The participant's session failed (its `Rtc` errored).
    Error,
    /// The call moved to another node of the cluster (a stale copy merged back after a
    /// partition): the client joins again through any node.
    Moved,
    /// The call link expired during the call.
    Expired,
    /// The participant kept sending signaling over its budget.
    RateLimited,
}

impl RemoveReason {
    /// Stable lowercase name, usable as a metric label or on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::Revoked => "revoked",
            RemoveReason::Blocked => "blocked",
            RemoveReason::RoomFull => "room_full",
            RemoveReason::Idle => "idle",
            RemoveReason::Drain => "drain",
            RemoveReason::Kicked => "kicked",
            RemoveReason::Left => "left",
            RemoveReason::Error => "error",
            RemoveReason::Moved => "moved",
            RemoveReason::Expired => "expired",
            RemoveReason::RateLimited => "rate_limited",
        }
    }
}

/// Something the signaling layer must act on. Drained with [`Sfu::poll_event`][crate::Sfu::poll_event].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A participant was added to a room.
    ParticipantJoined {
        /// The room.
        room: RoomKey,
        /// Who joined.
        participant: ParticipantId,
    },
    /// A participant is gone; tell the rest of the room.
    ParticipantLeft {
        /// The room.
        room: RoomKey,
        /// Who left.
        participant: ParticipantId,
        /// Why.
        reason: RemoveReason,
    },
    /// Addressed to the removed participant itself: close its signaling with this reason.
    Removed {
        /// The room it was in.
        room: RoomKey,
        /// Who was removed.
        participant: ParticipantId,
        /// Why.
        reason: RemoveReason,
    },
    /// A participant started publishing a track.
    TrackPublished {
        /// The room.
        room: RoomKey,
        /// The publisher.
        participant: ParticipantId,
        /// The publisher's m-line carrying the track.
        mid: Mid,
        /// Audio or video.
        kind: TrackKind,
    },
    /// A published track is gone (its publisher left).
    TrackUnpublished {
        /// The room.
        room: RoomKey,
        /// The publisher.
        participant: ParticipantId,
        /// The publisher's m-line.
        mid: Mid,
    },
    /// The first RTP packet of a participant's media reached the relay (authenticated, on a
    /// published track), at `at`: once per participant, for the IO layer's join-to-first-media
    /// time without looking at every datagram.
    FirstMedia {
        /// The room.
        room: RoomKey,
        /// The publisher.
        participant: ParticipantId,
        /// When the datagram carrying it arrived.
        at: Instant,
    },
    /// The loudest participant of a room changed.
    ActiveSpeaker {
        /// The room.
        room: RoomKey,
        /// The new active speaker.
        participant: ParticipantId,
    },
    /// A subscriber's answer accepted none of the codecs a publisher sends on a track it
    /// subscribed to, so that track's packets are not forwarded to it (each one is counted in
    /// [`SfuStats::rtp_dropped_codec_unsupported`]). Once per subscription and codec: tell
    /// the subscriber, whose client would otherwise show a track that never plays.
    CodecUnsupported {
        /// The room.
        room: RoomKey,
        /// The subscriber.
        participant: ParticipantId,
        /// The publisher of the track.
        publisher: ParticipantId,
        /// The publisher's m-line carrying the track.
        mid: Mid,
        /// The codec the publisher sends (as in `a=rtpmap`, e.g. `H264`).
        codec: String,
    },
    /// The layers the local subscribers of a remote publisher's track want changed: tell
    /// the publisher's leg (its [`Sfu::set_trunk_demand`][crate::Sfu::set_trunk_demand]).
    /// Empty: nobody here wants the track any more.
    TrunkDemand {
        /// The room.
        room: RoomKey,
        /// The remote publisher.
        publisher: ParticipantId,
        /// Its m-line carrying the track.
        mid: Mid,
        /// The layers wanted (`None`: the only stream of a track without simulcast), in the
        /// track's order.
        layers: Vec<Option<Rid>>,
    },
    /// A local subscriber needs a keyframe of a remote publisher's track (throttled here per
    /// layer): tell the publisher's leg (its
    /// [`Sfu::handle_trunk_keyframe_request`][crate::Sfu::handle_trunk_keyframe_request]).
    TrunkKeyframeRequest {
        /// The room.
        room: RoomKey,
        /// The remote publisher.
        publisher: ParticipantId,
        /// Its m-line carrying the track.
        mid: Mid,
        /// The layer.
        rid: Option<Rid>,
    },
    /// An SDP offer from the relay to send to the participant over signaling; answer with
    /// [`Sfu::handle_sdp_answer`][crate::Sfu::handle_sdp_answer].
    SdpOffer {
        /// Recipient.
        participant: ParticipantId,
        /// The offer, as SDP text.
        sdp: String,
    },
}

/// Why `add_participant` or an SDP exchange was refused. Nothing was changed when this is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SfuError {
    /// The room already has `max_participants`.
    #[error("room is full")]
    RoomFull,
    /// The participant id is already in use.
    #[error("participant already present")]
    DuplicateParticipant,
    /// No such participant.
    #[error("unknown participant")]
    UnknownParticipant,
    /// No such published track, simulcast layer or subscription.
    #[error("unknown track or layer")]
    UnknownTrack,
    /// A voice room was offered a video m-line.
    #[error("video is not allowed in a voice room")]
    VideoNotAllowed,
    /// The SDP is larger than the relay accepts.
    #[error("sdp too large")]
    SdpTooLarge,
    /// The SDP could not be parsed or negotiated.
    #[error("sdp rejected: {0}")]
    Sdp(String),
    /// An SDP answer arrived while no offer was outstanding.
    #[error("no offer outstanding")]
    NoPendingOffer,
    /// The SDP offer sends on more audio and video m-lines than
    /// [`SfuConfig::max_tracks_per_participant`] allows.
    #[error("sdp rejected: the offer publishes {offered} tracks, at most {max} are allowed")]
    TooManyTracks {
        /// Sending audio and video m-lines in the offer.
        offered: usize,
        /// The cap.
        max: usize,
    },
    /// The SDP offer has an `m=application` line: the relay carries no data channels.
    #[error("sdp rejected: this relay carries no data channels")]
    DataChannelsRefused,
    /// The SDP gives a payload type a meaning (codec or format parameters) other than the one
    /// it had in this participant's earlier SDPs or in another m-section of the same SDP
    /// (RFC 3264 §8.3.2, RFC 8843 §9.1).
    #[error("sdp rejected: payload type {pt} changed its codec or format parameters")]
    PayloadTypeChanged {
        /// The payload type number.
        pt: u8,
    },
}

/// A participant's media bitrates ([`Sfu::media_bitrate`][crate::Sfu::media_bitrate]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MediaBitrate {
    /// What it sends that is admitted for fan-out, bits/s.
    pub received_bps: u64,
    /// What is forwarded to it, bits/s.
    pub forwarded_bps: u64,
    /// The egress bandwidth estimate towards it, bits/s, once str0m's BWE measures one.
    pub estimate_bps: Option<u64>,
}

/// Plain counters; the IO layer turns them into metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SfuStats {
    /// Every datagram passed to `handle_datagram`.
    pub datagrams_received: u64,
    /// Longer than the MTU, dropped before parsing.
    pub dropped_oversized: u64,
    /// Too short to be any of STUN, DTLS, RTP or RTCP.
    pub dropped_runt: u64,
    /// Not recognisable as STUN, DTLS, RTP or RTCP.
    pub dropped_malformed: u64,
    /// Not STUN and from a 5-tuple no authenticated STUN validated.
    pub dropped_unknown_source: u64,
    /// STUN with an unknown ufrag, bad integrity or that does not parse. Never answered.
    pub dropped_bad_stun: u64,
    /// The participant's `Rtc` refused the datagram with an error (the participant is removed).
    pub dropped_rtc_error: u64,
    /// SRTP or SRTCP from an address that passed ICE, before DTLS gave the keys to read it.
    pub dropped_before_keys: u64,
    /// Participants whose `Rtc` panicked (a str0m bug); each was removed alone.
    pub sessions_panicked: u64,
    /// Client offers that restarted ICE (new ICE credentials: a client that changed network).
    pub ice_restarts: u64,
    /// RTP packets received from publishers.
    pub rtp_received: u64,
    /// RTP copies handed to subscribers.
    pub rtp_forwarded: u64,
    /// RTP on an SSRC or m-line that is not a published track.
    pub rtp_dropped_unknown_track: u64,
    /// RTP on an SSRC beyond [`SfuConfig::max_ssrcs_per_participant`] of its sender, or on a
    /// new SSRC while its sender is out of credit for new SSRCs.
    pub rtp_dropped_ssrc_limit: u64,
    /// Video RTP arriving in a voice room.
    pub rtp_dropped_video_in_voice: u64,
    /// RTP copies not forwarded to a subscriber whose answer accepted none of the codecs the
    /// publisher sends on that track (see [`Event::CodecUnsupported`]), one per copy.
    pub rtp_dropped_codec_unsupported: u64,
    /// RTP over its sender's [`SfuConfig::max_ingress_bitrate`], dropped before fan-out.
    pub rtp_dropped_ingress_limit: u64,
    /// Keyframe requests relayed to publishers.
    pub keyframe_requests_relayed: u64,
    /// Keyframe requests suppressed by the per-layer throttle.
    pub keyframe_requests_throttled: u64,
    /// Audio RTP packets received on published tracks.
    pub audio_received: u64,
    /// Payload bytes of those.
    pub audio_bytes_received: u64,
    /// Video RTP packets received on published tracks.
    pub video_received: u64,
    /// Payload bytes of those.
    pub video_bytes_received: u64,
    /// SRTCP datagrams from participants with keys (before str0m authenticates them).
    pub rtcp_received: u64,
    /// Bytes of those datagrams.
    pub rtcp_bytes_received: u64,
    /// Audio RTP copies handed to subscribers.
    pub audio_forwarded: u64,
    /// Payload bytes of those.
    pub audio_bytes_forwarded: u64,
    /// Video RTP copies handed to subscribers.
    pub video_forwarded: u64,
    /// Payload bytes of those.
    pub video_bytes_forwarded: u64,
    /// Simulcast subscriptions moved to a lower layer (bandwidth estimate or cap fell).
    pub layer_switches_down: u64,
    /// Simulcast subscriptions moved to a higher layer (estimate or cap rose).
    pub layer_switches_up: u64,
    /// NACKs received from subscribers (counted from str0m's once-a-second stats).
    pub nacks_received: u64,
    /// Packets of local tracks exported to other legs (each once, whatever the legs).
    pub trunk_exported: u64,
    /// Packets of remote publishers' tracks received from their legs.
    pub trunk_received: u64,
    /// Packets from other legs for a remote publisher or track not here (it left, or its
    /// publication has not arrived yet), dropped.
    pub trunk_dropped: u64,
    /// Work counter: times a participant's `Rtc` was handed the time and drained (a
    /// subscriber after forwarded copies were written to it, a due timer, a command). Grows
    /// with the traffic and the due timers, not with the participants present.
    pub rtc_drives: u64,
    /// Work counter: entries taken off the deadline heap (due, stale, or early and pushed
    /// again), each O(log participants). Grows with the deadlines that come due, not with
    /// the participants present.
    pub timer_entries_visited: u64,
}

/// Which simulcast layer a subscriber gets of one published track, from
/// [`Sfu::subscriber_layer`][crate::Sfu::subscriber_layer].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubscriberLayer {
    /// The layer being forwarded now (`None` before the first keyframe).
    pub current: Option<Rid>,
    /// The layer chosen from the bandwidth estimate; forwarding switches to it on its next
    /// keyframe.
    pub target: Option<Rid>,
    /// The highest layer the subscriber asked for.
    pub cap: Option<Rid>,
}
