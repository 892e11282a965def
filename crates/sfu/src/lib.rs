//! The sans-IO forwarding core of callrelay.
//!
//! One [`Sfu`] per worker socket. It owns one str0m [`Rtc`] per participant (RTP mode,
//! ICE-lite) and forwards every RTP packet of a published track to every subscriber of that
//! track in the same room, payload bytes untouched.
//!
//! Nothing here does IO or reads a clock: datagrams come in through [`Sfu::handle_datagram`]
//! with their receive time, timers through [`Sfu::handle_timeout`], and what must happen next
//! is drained with [`Sfu::poll_transmit`], [`Sfu::poll_event`] and [`Sfu::poll_timeout`].
//!
//! After every `handle_*` call or command, drain `poll_transmit` and `poll_event` until they
//! return `None`, then sleep until `poll_timeout()`:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use callrelay_sfu::{Event, Sfu};
//!
//! /// One turn of a worker: a datagram (or nothing) arrived at `now`.
//! fn turn(sfu: &mut Sfu, now: Instant, datagram: Option<(SocketAddr, SocketAddr, &[u8])>) {
//!     match datagram {
//!         Some((source, destination, bytes)) => {
//!             sfu.handle_datagram(now, source, destination, bytes)
//!         }
//!         None => sfu.handle_timeout(now),
//!     }
//!     while let Some(t) = sfu.poll_transmit() {
//!         // socket.send_to(&t.contents, t.destination)
//!         let _ = t;
//!     }
//!     while let Some(e) = sfu.poll_event() {
//!         match e {
//!             Event::SdpOffer { .. } => { /* send the offer over signaling */ }
//!             _ => { /* room events to signaling */ }
//!         }
//!     }
//!     let _sleep_until: Option<Instant> = sfu.poll_timeout();
//! }
//! ```
#![forbid(unsafe_code)]

mod api;
mod speaker;

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::crypto::CryptoProvider;
use str0m::format::{
    detect_av1_keyframe, detect_h264_keyframe, detect_vp8_keyframe, detect_vp9_keyframe, Codec,
};
use str0m::ice::StunMessage;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Pt};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, Ssrc};
use str0m::{Candidate, IceCreds, Input, Output, Rtc};

pub use api::{
    Event, ParticipantId, RemoveReason, RoomKey, RoomKind, SfuConfig, SfuError, SfuStats,
    SubscriberLayer, TrackKind,
};
pub use str0m::media::{Mid, Rid};

use speaker::SpeakerDetector;

/// Shortest datagram worth looking at: an RTP header is 12 bytes, and SRTP, SRTCP, DTLS and
/// STUN are all longer. Anything shorter is dropped before any length arithmetic.
const MIN_DATAGRAM: usize = 12;

/// Most remote addresses learned per participant (ICE may validate a few candidate pairs).
const MAX_ADDRS_PER_PARTICIPANT: usize = 4;

/// Most incoming SSRCs tracked per participant (threat 13: SSRC spoofing, too many SSRCs).
const MAX_SSRCS_PER_PARTICIPANT: usize = 16;

/// Largest SDP accepted from signaling (threat 16).
const MAX_SDP_LEN: usize = 64 * 1024;

/// Incoming bitrates are measured over `RATE_BUCKETS - 1` completed buckets of this length
/// (one second), plus the bucket being filled, which is not counted.
const RATE_BUCKET: Duration = Duration::from_millis(250);
const RATE_BUCKETS: usize = 5;

/// Bytes a forwarded RTP packet costs on the wire besides its payload: RTP header and
/// extensions, SRTP tag, UDP and IP headers. The bandwidth estimate counts them.
const PACKET_OVERHEAD: u64 = 60;

/// A layer fits a subscriber's share of its estimate when its bitrate times this does.
const LAYER_HEADROOM: f64 = 1.1;

/// The bandwidth estimator probes up to what the subscriber's caps need times this.
const PROBE_MARGIN: f64 = 1.5;

/// How often the layer of every simulcast subscription is chosen again.
const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// A datagram sent by the relay: hand `contents` to the socket at `source`, to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Local address to send from (the worker socket).
    pub source: SocketAddr,
    /// Remote address.
    pub destination: SocketAddr,
    /// Datagram bytes.
    pub contents: Vec<u8>,
    /// For a forwarded copy of a media packet: when the datagram it copies arrived (the `now`
    /// given to [`Sfu::handle_datagram`]), however long str0m's pacer held it. `None` for
    /// everything else (RTCP, retransmissions, DTLS, STUN, padding).
    pub received_at: Option<Instant>,
}

/// How long a forwarded copy is remembered for [`Transmit::received_at`]: copies str0m holds
/// longer (or drops) are forgotten.
const FORWARD_TIMING_HORIZON: Duration = Duration::from_secs(2);

/// Index of a participant slot. Every reference to a slot is removed with the participant,
/// so a reused slot never receives another participant's traffic.
type Slot = usize;

/// A published track: `(publisher slot, publisher's mid)`.
type TrackKey = (Slot, Mid);

/// The forwarding core of one worker. See the crate documentation for the calling protocol.
pub struct Sfu {
    config: SfuConfig,
    rng: StdRng,
    crypto: Arc<CryptoProvider>,
    participants: Vec<Option<Participant>>,
    free_slots: Vec<Slot>,
    by_id: HashMap<ParticipantId, Slot>,
    /// Local ICE ufrag → participant, for the first STUN packet of a participant.
    by_ufrag: HashMap<String, Slot>,
    /// Learned remote 5-tuple → participant; only authenticated STUN adds entries.
    by_addr: HashMap<SocketAddr, Slot>,
    rooms: BTreeMap<RoomKey, Room>,
    /// The forwarding table.
    tracks: HashMap<TrackKey, Track>,
    /// Participants whose `Rtc` has pending input to process (forwarded packets, feedback).
    dirty: Vec<Slot>,
    /// Participants that may need an SDP offer from the relay.
    to_negotiate: Vec<Slot>,
    transmits: VecDeque<Transmit>,
    /// Arrival time of each forwarded copy not yet polled out of its subscriber's `Rtc`, by
    /// (subscriber, outgoing SSRC, sequence number): the copy leaves when str0m's pacer lets it.
    forwarded_at: FxHashMap<(Slot, u32, u16), Instant>,
    /// When `forwarded_at` was last purged of copies older than the horizon.
    forwarded_purge: Option<Instant>,
    events: VecDeque<Event>,
    stats: SfuStats,
    /// Published simulcast tracks; while there are any, layers are chosen every
    /// [`ALLOCATION_INTERVAL`], at `next_allocation`.
    simulcast_tracks: usize,
    next_allocation: Option<Instant>,
}

struct Room {
    kind: RoomKind,
    members: Vec<Slot>,
    /// Published tracks, in publication order (drives the order of m-lines in offers).
    tracks: Vec<TrackKey>,
    speaker: SpeakerDetector,
}

struct Participant {
    id: ParticipantId,
    room: RoomKey,
    rtc: Rtc,
    ufrag: String,
    addrs: Vec<SocketAddr>,
    next_timeout: Instant,
    last_ice: Instant,
    /// Incoming SSRC → (mid, rid): our own index so the per-packet lookup is one hash probe.
    ssrcs: HashMap<Ssrc, (Mid, Option<Rid>)>,
    /// Outstanding relay-initiated offer.
    pending_offer: Option<SdpPendingOffer>,
    /// Subscription m-lines whose track is gone and which must be stopped.
    to_stop: Vec<Mid>,
    /// Subscription m-lines in an outstanding offer that stops them.
    stopping: Vec<Mid>,
    /// Receive-only m-lines to put in the relay's first offer (when the relay offers first).
    recv_to_offer: Vec<MediaKind>,
    /// Receive-only m-lines in the outstanding offer. str0m announces no `MediaAdded` for
    /// lines the local side offered, so they are published when the answer is accepted.
    recv_offered: Vec<Mid>,
    dirty: bool,
    negotiate: bool,
    /// Latest egress bandwidth estimate towards this participant, bits/s (`None` until
    /// str0m's BWE can measure: BWE on, and TWCC negotiated on a sending m-line).
    estimate: Option<u64>,
    /// The desired bitrate last handed to this participant's BWE (what it probes towards).
    bwe_desired: u64,
    /// NACKs received per sending stream, as last reported by str0m's once-a-second stats
    /// (cumulative), so that [`SfuStats::nacks_received`] adds only the difference.
    egress_nacks: HashMap<(Mid, Option<Rid>), u64>,
}

/// A published track and its subscribers (one entry of the forwarding table).
struct Track {
    kind: TrackKind,
    /// Simulcast layers the publisher sends, in its order; empty without simulcast.
    layers: Vec<Rid>,
    subscribers: Vec<Subscription>,
    /// Last keyframe request relayed to the publisher, per layer.
    last_keyframe_request: Vec<(Option<Rid>, Instant)>,
    /// Incoming bitrate per layer, in the order of `layers` (one meter without simulcast).
    rates: Vec<RateMeter>,
}

/// Bytes received over a sliding window of [`RATE_BUCKETS`] buckets, on the time passed in.
#[derive(Debug, Clone, Copy, Default)]
struct RateMeter {
    buckets: [u64; RATE_BUCKETS],
    /// Index of the bucket being filled.
    idx: usize,
    /// When that bucket started; `None` before the first packet.
    started: Option<Instant>,
    /// Completed buckets so far, up to `RATE_BUCKETS - 1`.
    completed: usize,
}

struct Subscription {
    subscriber: Slot,
    state: OutState,
    /// The simulcast layer being forwarded (`None` without simulcast, or before the first
    /// keyframe of the target layer).
    layer: Option<Rid>,
    /// The layer wanted; the switch happens on its next keyframe.
    target: Option<Rid>,
    /// The highest layer the subscriber asked for (its size preference); `target` is chosen
    /// at or below it from the bandwidth estimate.
    cap: Option<Rid>,
    /// Since when the estimate has had room for a layer above `target` (moving up waits for
    /// [`SfuConfig::layer_up_hold`]).
    up_since: Option<Instant>,
    /// Added to the publisher's extended sequence number. Fixed at the first packet to
    /// `-(first & !0xffff)` so the subscriber's stream starts with rollover counter 0 and the
    /// low 16 bits are unchanged; recomputed at a layer switch to keep numbering contiguous.
    seq_offset: Option<i64>,
    /// Added (wrapping) to the publisher's RTP timestamp; non-zero only after a layer switch.
    ts_offset: u32,
    /// Packets of the current layer older than the switch point are not forwarded.
    min_in_seq: u64,
    /// Last forwarded (sequence number, timestamp, time).
    last_out: Option<(u64, u32, Instant)>,
    /// Publisher PT → subscriber PT, filled on first use.
    pt_map: Vec<(Pt, Option<Pt>)>,
}

/// Negotiation state of one subscription m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    /// Needs an m-line in the next relay offer.
    ToOpen,
    /// In an outstanding offer.
    Negotiating(Mid),
    /// Negotiated: packets are forwarded.
    Open(Mid),
}

impl Sfu {
    /// A core for one worker socket. `seed` feeds every random choice the core makes (ICE
    /// credentials); pass OS randomness in production and a constant in tests.
    pub fn new(config: SfuConfig, seed: [u8; 32]) -> Self {
        Sfu {
            config,
            rng: StdRng::from_seed(seed),
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            participants: Vec::new(),
            free_slots: Vec::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            rooms: BTreeMap::new(),
            tracks: HashMap::new(),
            dirty: Vec::new(),
            to_negotiate: Vec::new(),
            transmits: VecDeque::new(),
            forwarded_at: FxHashMap::default(),
            forwarded_purge: None,
            events: VecDeque::new(),
            stats: SfuStats::default(),
            simulcast_tracks: 0,
            next_allocation: None,
        }
    }

    /// The configuration this core runs with.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Drop counters and forwarding counters since creation.
    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    /// Participants currently present, in all rooms.
    pub fn participant_count(&self) -> usize {
        self.by_id.len()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Remote addresses learned from authenticated STUN, over all participants.
    pub fn learned_address_count(&self) -> usize {
        self.by_addr.len()
    }

    /// The participant whose authenticated address is `addr`, if any (one hash probe).
    pub fn participant_at(&self, addr: SocketAddr) -> Option<ParticipantId> {
        let slot = *self.by_addr.get(&addr)?;
        self.participants.get(slot)?.as_ref().map(|p| p.id)
    }

    /// Members of a room, in join order.
    pub fn room_members(&self, room: RoomKey) -> Vec<ParticipantId> {
        let Some(r) = self.rooms.get(&room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|s| self.participants[*s].as_ref().map(|p| p.id))
            .collect()
    }

    /// Adds a participant to `room` (created if absent).
    ///
    /// With the client's SDP offer, returns `Some(answer)` to send back; tracks already
    /// published in the room are then offered to the newcomer through an [`Event::SdpOffer`].
    /// Without an offer, the relay offers first: one [`Event::SdpOffer`] with a receive-only
    /// audio m-line (and video, in a video room) for the client to publish on, plus the
    /// room's tracks; returns `None`, and the client's answer comes to
    /// [`Sfu::handle_sdp_answer`].
    ///
    /// Refused without any change when the room is full, the id is taken, the SDP is bad, or
    /// a voice room is offered video.
    pub fn add_participant(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: Option<&str>,
    ) -> Result<Option<String>, SfuError> {
        if self.by_id.contains_key(&participant) {
            return Err(SfuError::DuplicateParticipant);
        }
        let room_kind = match self.rooms.get(&room) {
            Some(r) if r.members.len() >= self.config.max_participants => {
                return Err(SfuError::RoomFull);
            }
            Some(r) => r.kind,
            None => kind,
        };
        let offer = offer_sdp
            .map(|sdp| parse_offer(sdp, room_kind))
            .transpose()?;

        let ufrag = self.new_ufrag();
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: random_token(&mut self.rng, 24),
        };
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .set_crypto_provider(self.crypto.clone())
            .enable_bwe(self.config.bwe_initial_bitrate.map(Bitrate::bps))
            // Once-a-second stats carry the NACK counts behind `SfuStats::nacks_received`.
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let candidate = Candidate::host(self.config.local_addr, "udp")
            .map_err(|e| SfuError::Sdp(format!("bad local address: {e}")))?;
        rtc.add_local_candidate(candidate);
        let answer = offer
            .map(|offer| rtc.sdp_api().accept_offer(offer))
            .transpose()
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        let recv_to_offer = match (&answer, room_kind) {
            (Some(_), _) => Vec::new(),
            (None, RoomKind::Voice) => vec![MediaKind::Audio],
            (None, RoomKind::Video) => vec![MediaKind::Audio, MediaKind::Video],
        };

        let slot = match self.free_slots.pop() {
            Some(s) => s,
            None => {
                self.participants.push(None);
                self.participants.len() - 1
            }
        };
        self.participants[slot] = Some(Participant {
            id: participant,
            room,
            rtc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            next_timeout: now,
            last_ice: now,
            ssrcs: HashMap::new(),
            pending_offer: None,
            to_stop: Vec::new(),
            stopping: Vec::new(),
            recv_to_offer,
            recv_offered: Vec::new(),
            dirty: false,
            negotiate: false,
            estimate: None,
            bwe_desired: 0,
            egress_nacks: HashMap::new(),
        });
        self.by_id.insert(participant, slot);
        self.by_ufrag.insert(ufrag, slot);

        let r = self.rooms.entry(room).or_insert_with(|| Room {
            kind: room_kind,
            members: Vec::new(),
            tracks: Vec::new(),
            speaker: SpeakerDetector::default(),
        });
        r.members.push(slot);
        // Subscribe the newcomer to everything already published.
        let mut any = false;
        for key in &r.tracks {
            if let Some(t) = self.tracks.get_mut(key) {
                let target = t.layers.first().copied();
                t.subscribers.push(Subscription::new(slot, target));
                any = true;
            }
        }
        if any || answer.is_none() {
            self.mark_negotiate(slot);
        }
        self.events
            .push_back(Event::ParticipantJoined { room, participant });
        self.mark_dirty(slot);
        self.flush(now);
        Ok(answer.map(|a| a.to_sdp_string()))
    }

    /// Removes a participant (hang-up, revocation, block, kick, drain). Emits
    /// [`Event::ParticipantLeft`] for the room and [`Event::Removed`] for the participant,
    /// and renegotiates the others to drop its tracks.
    pub fn remove_participant(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        reason: RemoveReason,
    ) -> Result<(), SfuError> {
        let slot = *self
            .by_id
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant)?;
        self.remove_slot(slot, reason);
        self.flush(now);
        Ok(())
    }

    /// Removes everyone in `room` with `reason` (e.g. the link was revoked).
    pub fn remove_room(&mut self, now: Instant, room: RoomKey, reason: RemoveReason) {
        let members = self
            .rooms
            .get(&room)
            .map(|r| r.members.clone())
            .unwrap_or_default();
        for slot in members {
            self.remove_slot(slot, reason);
        }
        self.flush(now);
    }

    /// Removes everyone, room by room, with `reason` (e.g. `drain` when the node shuts down).
    pub fn remove_all(&mut self, now: Instant, reason: RemoveReason) {
        let rooms: Vec<RoomKey> = self.rooms.keys().copied().collect();
        for room in rooms {
            self.remove_room(now, room, reason);
        }
    }

    /// A renegotiation offer from the client; returns the answer to send back.
    pub fn handle_sdp_offer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        let slot = *self
            .by_id
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant)?;
        let p = self.participants[slot]
            .as_mut()
            .expect("by_id only holds occupied slots");
        let room_kind = self.rooms.get(&p.room).map(|r| r.kind);
        let offer = parse_offer(offer_sdp, room_kind.unwrap_or(RoomKind::Video))?;
        let answer = p
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| SfuError::Sdp(e.to_string()))?;
        // accept_offer rolled back our own outstanding offer: redo it after this exchange.
        if p.pending_offer.take().is_some() {
            p.recv_offered.clear();
            let mut stopping = std::mem::take(&mut p.stopping);
            p.to_stop.append(&mut stopping);
            let room = p.room;
            self.for_each_subscription(room, slot, |sub| {
                if let OutState::Negotiating(_) = sub.state {
                    sub.state = OutState::ToOpen;
                }
            });
            self.mark_negotiate(slot);
        }
        self.mark_dirty(slot);
        self.flush(now);
        Ok(answer.to_sdp_string())
    }

    /// The client's answer to the last [`Event::SdpOffer`] it was sent.
    pub fn handle_sdp_answer(
        &mut self,
        now: Instant,
        participant: ParticipantId,
        answer_sdp: &str,
    ) -> Result<(), SfuError> {
        let slot = *self
            .by_id
            .get(&participant)
            .ok_or(SfuError::UnknownParticipant)?;
        if answer_sdp.len() > MAX_SDP_LEN {
            return Err(SfuError::SdpTooLarge);
        }
        let answer =
            SdpAnswer::from_sdp_string(answer_sdp).map_err(|e| SfuError::Sdp(e.to_string()))?;
        let p = self.participants[slot]
            .as_mut()
            .expect("by_id only holds occupied slots");
        let pending = p.pending_offer.take().ok_or(SfuError::NoPendingOffer)?;
        if let Err(e) = p.rtc.sdp_api().accept_answer(pending, answer) {
            // A broken answer costs this participant only.
            self.remove_slot(slot, RemoveReason::Error);
            self.flush(now);
            return Err(SfuError::Sdp(e.to_string()));
        }
        p.stopping.clear();
        let published: Vec<(Mid, MediaKind)> = p
            .recv_offered
            .drain(..)
            .filter_map(|mid| {
                let m = p.rtc.media(mid)?;
                m.direction().is_receiving().then(|| (mid, m.kind()))
            })
            .collect();
        let room = p.room;
        for (mid, kind) in published {
            self.publish(now, slot, mid, kind, Vec::new());
        }
        let mut opened: Vec<(TrackKey, Option<Rid>)> = Vec::new();
        if let Some(r) = self.rooms.get(&room) {
            for key in &r.tracks {
                let Some(t) = self.tracks.get_mut(key) else {
                    continue;
                };
                for sub in t.subscribers.iter_mut().filter(|s| s.subscriber == slot) {
                    if let OutState::Negotiating(m) = sub.state {
                        sub.state = OutState::Open(m);
                        if t.kind == TrackKind::Video {
                            opened.push((*key, sub.target));
                        }
                    }
                }
            }
        }
        // A new video subscriber needs a keyframe to start decoding.
        for (key, rid) in opened {
            self.request_keyframe(now, key, rid, KeyframeRequestKind::Pli);
        }
        self.mark_negotiate(slot);
        self.mark_dirty(slot);
        self.flush(now);
        Ok(())
    }

    /// Sets the highest simulcast layer of `publisher`'s track `mid` the `subscriber` may
    /// receive (from the size it asked for). Without a call, the cap is the first layer the
    /// publisher listed.
    ///
    /// Below the cap, the layer is chosen from the subscriber's bandwidth estimate: the
    /// highest layer whose measured incoming bitrate (times 1.1) fits the subscriber's
    /// estimate, less what it receives without simulcast (audio), shared equally among its
    /// simulcast subscriptions. Moving down is immediate, moving up waits for
    /// [`SfuConfig::layer_up_hold`]. Without an estimate (BWE off, or no TWCC towards this
    /// subscriber) or before layer bitrates are known, the subscriber gets the cap.
    ///
    /// A switch happens on the new layer's next keyframe, which is requested (throttled);
    /// until then the current layer keeps flowing. See [`Sfu::subscriber_layer`].
    pub fn set_subscriber_layer(
        &mut self,
        now: Instant,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        mid: Mid,
        rid: Rid,
    ) -> Result<(), SfuError> {
        let sub_slot = *self
            .by_id
            .get(&subscriber)
            .ok_or(SfuError::UnknownParticipant)?;
        let pub_slot = *self
            .by_id
            .get(&publisher)
            .ok_or(SfuError::UnknownParticipant)?;
        let key = (pub_slot, mid);
        let track = self.tracks.get_mut(&key).ok_or(SfuError::UnknownTrack)?;
        if !track.layers.contains(&rid) {
            return Err(SfuError::UnknownTrack);
        }
        let sub = track
            .subscribers
            .iter_mut()
            .find(|s| s.subscriber == sub_slot)
            .ok_or(SfuError::UnknownTrack)?;
        sub.cap = Some(rid);
        let target = sub.target;
        let layer = sub.layer;
        if !self.allocate_subscriber(now, sub_slot, Some(key)) && layer != target {
            // Asked again while the switch waits for its keyframe: ask again (throttled).
            self.request_keyframe(now, key, target, KeyframeRequestKind::Pli);
        }
        self.flush(now);
        Ok(())
    }

    /// Which layer of `publisher`'s track `mid` the `subscriber` gets, is switching to, and
    /// asked for at most. `None` for an unknown participant, track or subscription.
    pub fn subscriber_layer(
        &self,
        subscriber: ParticipantId,
        publisher: ParticipantId,
        mid: Mid,
    ) -> Option<SubscriberLayer> {
        let sub_slot = *self.by_id.get(&subscriber)?;
        let pub_slot = *self.by_id.get(&publisher)?;
        let track = self.tracks.get(&(pub_slot, mid))?;
        let sub = track
            .subscribers
            .iter()
            .find(|s| s.subscriber == sub_slot)?;
        Some(SubscriberLayer {
            current: sub.layer,
            target: sub.target,
            cap: sub.cap,
        })
    }

    /// The latest egress bandwidth estimate towards `participant`, in bits/s, once str0m's
    /// BWE measures it (see [`SfuConfig::bwe_initial_bitrate`]).
    pub fn bandwidth_estimate(&self, participant: ParticipantId) -> Option<u64> {
        let slot = *self.by_id.get(&participant)?;
        self.participants.get(slot)?.as_ref()?.estimate
    }

    /// A datagram received on the worker socket at `now` from `source`, sent to `destination`.
    ///
    /// `destination` must be the address announced as host candidate
    /// ([`SfuConfig::local_addr`]), even when the socket is bound to a wildcard address:
    /// str0m matches ICE traffic against its local candidates.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.stats.datagrams_received += 1;
        if bytes.len() > self.config.mtu {
            self.stats.dropped_oversized += 1;
            return;
        }
        if bytes.len() < MIN_DATAGRAM {
            self.stats.dropped_runt += 1;
            return;
        }
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            // Also covers STUN-looking datagrams that do not parse as STUN.
            if bytes[0] < 2 {
                self.stats.dropped_bad_stun += 1;
            } else {
                self.stats.dropped_malformed += 1;
            }
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination,
                contents,
            },
        );

        let slot = if bytes[0] < 2 {
            // STUN: route by our ufrag, the first half of USERNAME; never answer a stranger.
            let Some(slot) = self.route_stun(source, bytes) else {
                self.stats.dropped_bad_stun += 1;
                return;
            };
            let p = self.participants[slot]
                .as_mut()
                .expect("routes only point at occupied slots");
            // Checks MESSAGE-INTEGRITY against this participant's credentials.
            if !p.rtc.accepts(&input) {
                self.stats.dropped_bad_stun += 1;
                return;
            }
            p.last_ice = now;
            self.learn_addr(slot, source);
            slot
        } else {
            let Some(&slot) = self.by_addr.get(&source) else {
                self.stats.dropped_unknown_source += 1;
                return;
            };
            slot
        };

        let p = self.participants[slot]
            .as_mut()
            .expect("routes only point at occupied slots");
        match guarded(|| p.rtc.handle_input(input)) {
            Some(Ok(())) => self.poll_rtc(slot, now),
            Some(Err(_)) => {
                self.stats.dropped_rtc_error += 1;
                self.remove_slot(slot, RemoveReason::Error);
            }
            None => {
                self.stats.sessions_panicked += 1;
                self.remove_slot(slot, RemoveReason::Error);
            }
        }
        self.flush(now);
    }

    /// Advances timers to `now`: str0m timers of every due participant, and idle removal.
    pub fn handle_timeout(&mut self, now: Instant) {
        let idle = self.config.idle_timeout;
        for slot in 0..self.participants.len() {
            let Some(p) = self.participants[slot].as_mut() else {
                continue;
            };
            if now >= p.last_ice + idle {
                self.remove_slot(slot, RemoveReason::Idle);
            } else if now >= p.next_timeout {
                self.mark_dirty(slot);
            }
        }
        if self
            .forwarded_purge
            .is_none_or(|t| now >= t + FORWARD_TIMING_HORIZON / 2)
        {
            self.forwarded_purge = Some(now);
            self.forwarded_at
                .retain(|_, t| now.saturating_duration_since(*t) < FORWARD_TIMING_HORIZON);
        }
        if self.simulcast_tracks > 0 && self.next_allocation.is_some_and(|t| now >= t) {
            self.next_allocation = Some(now + ALLOCATION_INTERVAL);
            for slot in 0..self.participants.len() {
                self.allocate_subscriber(now, slot, None);
            }
        }
        self.flush(now);
    }

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the signaling layer, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`Sfu::handle_timeout`] must be called next, at the latest. `None` when there is
    /// nobody to serve.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let idle = self.config.idle_timeout;
        let allocation = self.next_allocation.filter(|_| self.simulcast_tracks > 0);
        self.participants
            .iter()
            .flatten()
            .map(|p| p.next_timeout.min(p.last_ice + idle))
            .min()
            .map(|t| allocation.map_or(t, |a| t.min(a)))
    }

    // ---- private -------------------------------------------------------------------------

    fn new_ufrag(&mut self) -> String {
        loop {
            let u = random_token(&mut self.rng, 8);
            if !self.by_ufrag.contains_key(&u) {
                return u;
            }
        }
    }

    fn route_stun(&self, source: SocketAddr, bytes: &[u8]) -> Option<Slot> {
        let msg = StunMessage::parse(bytes).ok()?;
        if let Some((local, _remote)) = msg.split_username() {
            return self.by_ufrag.get(local).copied();
        }
        // Binding indications and responses carry no USERNAME: only from a known address.
        self.by_addr.get(&source).copied()
    }

    fn learn_addr(&mut self, slot: Slot, addr: SocketAddr) {
        match self.by_addr.get(&addr) {
            Some(&s) if s == slot => return,
            Some(&other) => {
                // Authenticated STUN moved this address to another participant (port reuse).
                if let Some(o) = self.participants[other].as_mut() {
                    o.addrs.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        let p = self.participants[slot]
            .as_mut()
            .expect("learn_addr on an occupied slot");
        if p.addrs.len() >= MAX_ADDRS_PER_PARTICIPANT {
            let oldest = p.addrs.remove(0);
            self.by_addr.remove(&oldest);
        }
        p.addrs.push(addr);
        self.by_addr.insert(addr, slot);
    }

    fn mark_dirty(&mut self, slot: Slot) {
        if let Some(p) = self.participants[slot].as_mut() {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    fn mark_negotiate(&mut self, slot: Slot) {
        if let Some(p) = self.participants[slot].as_mut() {
            if !p.negotiate {
                p.negotiate = true;
                self.to_negotiate.push(slot);
            }
        }
    }

    /// Runs every `Rtc` with pending work until all are idle, and sends pending offers.
    fn flush(&mut self, now: Instant) {
        loop {
            if let Some(slot) = self.dirty.pop() {
                let Some(p) = self.participants[slot].as_mut() else {
                    continue;
                };
                p.dirty = false;
                match guarded(|| p.rtc.handle_input(Input::Timeout(now))) {
                    Some(Ok(())) => {}
                    Some(Err(_)) => {
                        self.remove_slot(slot, RemoveReason::Error);
                        continue;
                    }
                    None => {
                        self.stats.sessions_panicked += 1;
                        self.remove_slot(slot, RemoveReason::Error);
                        continue;
                    }
                }
                self.poll_rtc(slot, now);
                continue;
            }
            if let Some(slot) = self.to_negotiate.pop() {
                self.negotiate(slot);
                continue;
            }
            break;
        }
    }

    /// Drains one `Rtc` until it reports its next timeout.
    fn poll_rtc(&mut self, slot: Slot, now: Instant) {
        loop {
            let Some(p) = self.participants[slot].as_mut() else {
                return;
            };
            let out = match guarded(|| p.rtc.poll_output()) {
                Some(Ok(o)) => o,
                Some(Err(_)) => {
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
                None => {
                    self.stats.sessions_panicked += 1;
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    p.next_timeout = t;
                    return;
                }
                Output::Transmit(t) => {
                    let received_at = match rtp_ssrc_seq(&t.contents) {
                        Some((ssrc, seq)) if !self.forwarded_at.is_empty() => {
                            self.forwarded_at.remove(&(slot, ssrc, seq))
                        }
                        _ => None,
                    };
                    self.transmits.push_back(Transmit {
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                        received_at,
                    })
                }
                Output::Event(e) => self.handle_rtc_event(slot, now, e),
            }
        }
    }

    fn handle_rtc_event(&mut self, slot: Slot, now: Instant, e: str0m::Event) {
        match e {
            str0m::Event::RtpPacket(pkt) => self.forward(slot, now, pkt),
            str0m::Event::MediaAdded(m) if m.direction.is_receiving() => {
                let layers = m
                    .simulcast
                    .map(|s| {
                        let l = if s.recv.is_empty() { s.send } else { s.recv };
                        l.into_iter().map(|l| l.rid).collect()
                    })
                    .unwrap_or_default();
                self.publish(now, slot, m.mid, m.kind, layers);
            }
            // The client closed DTLS: it hung up.
            str0m::Event::Closed => self.remove_slot(slot, RemoveReason::Left),
            str0m::Event::KeyframeRequest(req) => {
                self.relay_keyframe_request(now, slot, req.mid, req.kind);
            }
            // Once a second per sending stream: count the NACKs the subscriber sent us (str0m
            // answers them from its own resend buffer).
            str0m::Event::MediaEgressStats(s) => {
                if let Some(p) = self.participants.get_mut(slot).and_then(Option::as_mut) {
                    let last = p.egress_nacks.entry((s.mid, s.rid)).or_insert(0);
                    self.stats.nacks_received += s.nacks.saturating_sub(*last);
                    *last = s.nacks;
                }
            }
            str0m::Event::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                // Without probing (no TWCC on a sending m-line yet) it is only the initial
                // guess: the requested layer stands until there is a measurement.
                if let Some(p) = self.participants[slot].as_mut() {
                    p.estimate = can_probe.then(|| estimate.as_u64());
                }
            }
            _ => {}
        }
    }

    fn publish(&mut self, now: Instant, slot: Slot, mid: Mid, kind: MediaKind, layers: Vec<Rid>) {
        let p = self.participants[slot]
            .as_ref()
            .expect("publish from an occupied slot");
        let (room_key, id) = (p.room, p.id);
        let Some(room) = self.rooms.get_mut(&room_key) else {
            return;
        };
        let kind = if kind.is_audio() {
            TrackKind::Audio
        } else {
            TrackKind::Video
        };
        if kind == TrackKind::Video && room.kind == RoomKind::Voice {
            return;
        }
        let key = (slot, mid);
        if self.tracks.contains_key(&key) {
            return;
        }
        let subscribers: Vec<Subscription> = room
            .members
            .iter()
            .filter(|s| **s != slot)
            .map(|s| Subscription::new(*s, layers.first().copied()))
            .collect();
        let to_negotiate: Vec<Slot> = subscribers.iter().map(|s| s.subscriber).collect();
        room.tracks.push(key);
        if !layers.is_empty() {
            self.simulcast_tracks += 1;
            self.next_allocation
                .get_or_insert(now + ALLOCATION_INTERVAL);
        }
        let rates = vec![RateMeter::default(); layers.len().max(1)];
        self.tracks.insert(
            key,
            Track {
                kind,
                layers,
                subscribers,
                last_keyframe_request: Vec::new(),
                rates,
            },
        );
        for s in to_negotiate {
            self.mark_negotiate(s);
        }
        self.events.push_back(Event::TrackPublished {
            room: room_key,
            participant: id,
            mid,
            kind,
        });
    }

    /// Sends a relay offer to `slot` if subscriptions wait for m-lines or must be stopped,
    /// unless an offer is already outstanding (then this runs again when it is answered).
    fn negotiate(&mut self, slot: Slot) {
        let Some(p) = self.participants[slot].as_mut() else {
            return;
        };
        p.negotiate = false;
        if p.pending_offer.is_some() {
            return;
        }
        let room_key = p.room;
        // Tracks waiting for an m-line towards this subscriber, with their publisher's id.
        let mut to_open: Vec<(TrackKey, TrackKind, ParticipantId)> = Vec::new();
        if let Some(room) = self.rooms.get(&room_key) {
            for key in &room.tracks {
                let Some(t) = self.tracks.get(key) else {
                    continue;
                };
                let waiting = t
                    .subscribers
                    .iter()
                    .any(|s| s.subscriber == slot && s.state == OutState::ToOpen);
                let publisher = self.participants[key.0].as_ref().map(|p| p.id);
                if let (true, Some(publisher)) = (waiting, publisher) {
                    to_open.push((*key, t.kind, publisher));
                }
            }
        }
        let p = self.participants[slot]
            .as_mut()
            .expect("checked occupied above");
        let mut api = p.rtc.sdp_api();
        // If a client offer rolls this offer back, its own offer defines what it publishes.
        for kind in p.recv_to_offer.drain(..) {
            let mid = api.add_media(kind, Direction::RecvOnly, None, None, None);
            p.recv_offered.push(mid);
        }
        for mid in p.to_stop.drain(..) {
            api.stop_media(mid);
            p.stopping.push(mid);
        }
        let mut opened: Vec<(TrackKey, Mid)> = Vec::with_capacity(to_open.len());
        for (key, kind, publisher) in to_open {
            let media_kind = match kind {
                TrackKind::Audio => MediaKind::Audio,
                TrackKind::Video => MediaKind::Video,
            };
            let stream_id = publisher.to_string();
            let track_id = format!("{publisher}-{}", key.1);
            let mid = api.add_media(
                media_kind,
                Direction::SendOnly,
                Some(stream_id),
                Some(track_id),
                None,
            );
            opened.push((key, mid));
        }
        if !api.has_changes() {
            return;
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let id = p.id;
        p.pending_offer = Some(pending);
        for (key, mid) in opened {
            if let Some(t) = self.tracks.get_mut(&key) {
                for sub in t.subscribers.iter_mut().filter(|s| s.subscriber == slot) {
                    sub.state = OutState::Negotiating(mid);
                }
            }
        }
        self.events.push_back(Event::SdpOffer {
            participant: id,
            sdp: offer.to_sdp_string(),
        });
        self.mark_dirty(slot);
    }

    fn for_each_subscription(
        &mut self,
        room: RoomKey,
        slot: Slot,
        mut f: impl FnMut(&mut Subscription),
    ) {
        let Some(r) = self.rooms.get(&room) else {
            return;
        };
        for key in &r.tracks {
            if let Some(t) = self.tracks.get_mut(key) {
                t.subscribers
                    .iter_mut()
                    .filter(|s| s.subscriber == slot)
                    .for_each(&mut f);
            }
        }
    }

    /// The hot path: one RTP packet from a publisher to all subscribers of its track.
    fn forward(&mut self, slot: Slot, now: Instant, pkt: RtpPacket) {
        self.stats.rtp_received += 1;
        let Some(p) = self.participants[slot].as_mut() else {
            return;
        };
        let ssrc = pkt.header.ssrc;
        let (mid, rid) = match p.ssrcs.get(&ssrc) {
            Some(v) => *v,
            None => {
                let found = p
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|s| (s.mid(), s.rid()));
                match found {
                    Some(v) if p.ssrcs.len() < MAX_SSRCS_PER_PARTICIPANT => {
                        p.ssrcs.insert(ssrc, v);
                        v
                    }
                    _ => {
                        self.stats.rtp_dropped_unknown_track += 1;
                        return;
                    }
                }
            }
        };
        let room_key = p.room;
        let in_pt = pkt.header.payload_type;
        let in_params = p.rtc.codec_config().find(|c| c.pt() == in_pt).copied();

        let Some(track) = self.tracks.get_mut(&(slot, mid)) else {
            let voice = self.rooms.get(&room_key).map(|r| r.kind) == Some(RoomKind::Voice);
            if voice && p.rtc.media(mid).map(|m| m.kind().is_video()) == Some(true) {
                self.stats.rtp_dropped_video_in_voice += 1;
            } else {
                self.stats.rtp_dropped_unknown_track += 1;
            }
            return;
        };
        // Only a simulcast track needs to know where keyframes start (the VP8 payload
        // descriptor and the other codecs' headers stay in clear under end-to-end encryption).
        let payload_len = pkt.payload.len() as u64;
        match track.kind {
            TrackKind::Audio => {
                self.stats.audio_received += 1;
                self.stats.audio_bytes_received += payload_len;
            }
            TrackKind::Video => {
                self.stats.video_received += 1;
                self.stats.video_bytes_received += payload_len;
            }
        }
        // Wire bytes per layer, for choosing layers against subscribers' estimates.
        let layer_idx = match rid {
            Some(r) => track.layers.iter().position(|l| *l == r),
            None => Some(0),
        };
        if let Some(meter) = layer_idx.and_then(|i| track.rates.get_mut(i)) {
            meter.add(now, payload_len + PACKET_OVERHEAD);
        }
        let keyframe = !track.layers.is_empty()
            && in_params.is_some_and(|p| is_keyframe_start(p.spec().codec, &pkt.payload));

        if track.kind == TrackKind::Audio {
            if let (Some(level), Some(room)) = (
                pkt.header.ext_vals.audio_level,
                self.rooms.get_mut(&room_key),
            ) {
                let id = p.id;
                if let Some(speaker) = room.speaker.update(now, id, level) {
                    self.events.push_back(Event::ActiveSpeaker {
                        room: room_key,
                        participant: speaker,
                    });
                }
            }
        }

        let ext_vals = ExtensionValues {
            audio_level: pkt.header.ext_vals.audio_level,
            voice_activity: pkt.header.ext_vals.voice_activity,
            video_orientation: pkt.header.ext_vals.video_orientation,
            ..Default::default()
        };
        let in_seq = *pkt.seq_no;
        let in_ts = pkt.header.timestamp;
        let nackable = track.kind == TrackKind::Video;
        // A subscriber waits for a keyframe of its target layer that may never come unsolicited.
        let mut want_keyframe = false;

        for sub in &mut track.subscribers {
            let OutState::Open(out_mid) = sub.state else {
                continue;
            };
            let Some(s) = self.participants[sub.subscriber].as_mut() else {
                continue;
            };
            if sub.layer != rid {
                if sub.target != rid || !keyframe {
                    want_keyframe |= sub.target == rid;
                    continue;
                }
                sub.switch_layer(rid, in_seq, in_ts, now);
            }
            let offset = *sub.seq_offset.get_or_insert(-((in_seq & !0xffff) as i64));
            let out_seq = in_seq as i64 + offset;
            if in_seq < sub.min_in_seq || out_seq < 0 {
                // Reordered from before this subscriber's first packet or layer switch.
                continue;
            }
            let out_seq = out_seq as u64;
            let out_ts = in_ts.wrapping_add(sub.ts_offset);
            let out_pt = match sub.pt_map.iter().find(|(i, _)| *i == in_pt) {
                Some((_, o)) => *o,
                None => {
                    let o = in_params
                        .and_then(|ip| s.rtc.codec_config().match_params(ip))
                        .map(|op| op.pt());
                    sub.pt_map.push((in_pt, o));
                    o
                }
            };
            let Some(out_pt) = out_pt else {
                continue;
            };
            let mut api = s.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            if self.config.forward_timing {
                self.forwarded_at
                    .insert((sub.subscriber, *tx.ssrc(), out_seq as u16), now);
            }
            tx.write_rtp(
                RtpWrite::new(out_pt, out_seq.into(), out_ts, now, pkt.payload.clone())
                    .marker(pkt.header.marker)
                    .ext_vals(ext_vals.clone())
                    .nackable(nackable),
            );
            if sub.last_out.is_none_or(|(s, _, _)| out_seq > s) {
                sub.last_out = Some((out_seq, out_ts, now));
            }
            self.stats.rtp_forwarded += 1;
            match track.kind {
                TrackKind::Audio => {
                    self.stats.audio_forwarded += 1;
                    self.stats.audio_bytes_forwarded += payload_len;
                }
                TrackKind::Video => {
                    self.stats.video_forwarded += 1;
                    self.stats.video_bytes_forwarded += payload_len;
                }
            }
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(sub.subscriber);
            }
        }
        if want_keyframe {
            self.request_keyframe(now, (slot, mid), rid, KeyframeRequestKind::Pli);
        }
    }

    /// Chooses the layer of each simulcast subscription of `slot` from its bandwidth estimate
    /// (see [`Sfu::set_subscriber_layer`]), requests keyframes for the switches, and tells its
    /// BWE how far to probe. A new cap on `recapped` applies without the hold: the hold
    /// damps the estimate, not the subscriber's request. Returns whether any target changed.
    fn allocate_subscriber(
        &mut self,
        now: Instant,
        slot: Slot,
        recapped: Option<TrackKey>,
    ) -> bool {
        let Some(p) = self.participants.get(slot).and_then(|p| p.as_ref()) else {
            return false;
        };
        let estimate = p.estimate;
        let Some(room) = self.rooms.get(&p.room) else {
            return false;
        };
        let hold = self.config.layer_up_hold;
        // What is not simulcast (audio first) is taken from the estimate before layers.
        let mut fixed = 0u64;
        let mut simulcast = 0u64;
        for key in &room.tracks {
            let Some(t) = self.tracks.get(key) else {
                continue;
            };
            if !t
                .subscribers
                .iter()
                .any(|s| s.subscriber == slot && s.is_open())
            {
                continue;
            }
            if t.layers.is_empty() {
                fixed += t.rates.first().and_then(|r| r.bps(now)).unwrap_or(0);
            } else {
                simulcast += 1;
            }
        }
        let share = estimate.map(|e| e.saturating_sub(fixed) / simulcast.max(1));
        let mut desired = fixed as f64;
        let mut switches: Vec<(TrackKey, Option<Rid>)> = Vec::new();
        for key in &room.tracks {
            let Some(t) = self.tracks.get_mut(key) else {
                continue;
            };
            if t.layers.is_empty() {
                continue;
            }
            let Some(sub) = t
                .subscribers
                .iter_mut()
                .find(|s| s.subscriber == slot && s.is_open())
            else {
                continue;
            };
            let layers = LayerRates::new(&t.layers, &t.rates, sub.cap, now);
            if let Some(c) = layers.cap.or(layers.highest()) {
                desired += layers.rate(c) as f64 * LAYER_HEADROOM;
            }
            let target = t.layers.iter().position(|l| Some(*l) == sub.target);
            let chosen = match (share, layers.any_flowing()) {
                (Some(share), true) => {
                    let hold = if recapped == Some(*key) {
                        Duration::ZERO
                    } else {
                        hold
                    };
                    layers.choose(target, share, &mut sub.up_since, now, hold)
                }
                // No estimate or no measured layer yet: the requested layer.
                _ => layers.cap.or(target),
            };
            if chosen == target {
                continue;
            }
            match (chosen, target) {
                (Some(c), Some(t)) if layers.key(c) < layers.key(t) => {
                    self.stats.layer_switches_down += 1;
                }
                _ => self.stats.layer_switches_up += 1,
            }
            sub.target = chosen.map(|i| t.layers[i]);
            sub.up_since = None;
            if sub.layer != sub.target {
                switches.push((*key, sub.target));
            }
        }
        // Probe towards what the caps would take, with a margin: an estimate that only just
        // covers the top layer would dip under it and flap.
        let desired = (desired * PROBE_MARGIN) as u64;
        if let Some(p) = self.participants[slot].as_mut() {
            let differs = desired.abs_diff(p.bwe_desired) > p.bwe_desired / 10;
            if estimate.is_some() && desired > 0 && differs {
                p.bwe_desired = desired;
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::ZERO, Bitrate::bps(desired));
                self.mark_dirty(slot);
            }
        }
        let changed = !switches.is_empty();
        for (key, rid) in switches {
            self.request_keyframe(now, key, rid, KeyframeRequestKind::Pli);
        }
        changed
    }

    /// A subscriber asked for a keyframe on one of its subscription m-lines: ask the
    /// publisher for the layer this subscriber gets (or is switching to).
    fn relay_keyframe_request(
        &mut self,
        now: Instant,
        slot: Slot,
        out_mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(room) = self
            .participants
            .get(slot)
            .and_then(|p| p.as_ref())
            .and_then(|p| self.rooms.get(&p.room))
        else {
            return;
        };
        let found = room.tracks.iter().find_map(|k| {
            let t = self.tracks.get(k)?;
            let sub = t
                .subscribers
                .iter()
                .find(|s| s.subscriber == slot && s.state == OutState::Open(out_mid))?;
            Some((*k, sub.layer.or(sub.target)))
        });
        if let Some((key, rid)) = found {
            self.request_keyframe(now, key, rid, kind);
        }
    }

    /// Asks the publisher of `key` for a keyframe on layer `rid`, throttled per layer.
    fn request_keyframe(
        &mut self,
        now: Instant,
        key: TrackKey,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let interval = self.config.keyframe_request_interval;
        let Some(track) = self.tracks.get_mut(&key) else {
            return;
        };
        let last = track
            .last_keyframe_request
            .iter_mut()
            .find(|(r, _)| *r == rid);
        if let Some((_, at)) = &last {
            if now < *at + interval {
                self.stats.keyframe_requests_throttled += 1;
                return;
            }
        }
        let Some(p) = self.participants[key.0].as_mut() else {
            return;
        };
        let mut api = p.rtc.direct_api();
        let Some(rx) = api.stream_rx_by_mid(key.1, rid) else {
            // Nothing received on that m-line yet: the first keyframe is on its way anyway.
            return;
        };
        rx.request_keyframe(kind);
        match last {
            Some((_, at)) => *at = now,
            None => track.last_keyframe_request.push((rid, now)),
        }
        self.stats.keyframe_requests_relayed += 1;
        self.mark_dirty(key.0);
    }

    /// Removes a participant and every reference to its slot.
    fn remove_slot(&mut self, slot: Slot, reason: RemoveReason) {
        let Some(mut p) = self.participants[slot].take() else {
            return;
        };
        if reason == RemoveReason::Error {
            // Its state is suspect: touch nothing more.
            p.rtc.disconnect();
        } else {
            // Tell the client at the media layer too (RTCP BYE, DTLS close_notify).
            let transmits = &mut self.transmits;
            guarded(|| close_rtc(&mut p.rtc, transmits));
        }
        self.free_slots.push(slot);
        self.by_id.remove(&p.id);
        self.by_ufrag.remove(&p.ufrag);
        for a in &p.addrs {
            self.by_addr.remove(a);
        }
        let room_key = p.room;
        if let Some(room) = self.rooms.get_mut(&room_key) {
            room.members.retain(|s| *s != slot);
            room.speaker.forget(p.id);
            // Its own tracks: unpublish, and stop the subscribers' m-lines.
            let mut stops: Vec<(Slot, Mid)> = Vec::new();
            room.tracks.retain(|key| {
                if key.0 != slot {
                    return true;
                }
                if let Some(t) = self.tracks.remove(key) {
                    if !t.layers.is_empty() {
                        self.simulcast_tracks -= 1;
                    }
                    for sub in t.subscribers {
                        if let OutState::Open(m) | OutState::Negotiating(m) = sub.state {
                            stops.push((sub.subscriber, m));
                        }
                    }
                }
                self.events.push_back(Event::TrackUnpublished {
                    room: room_key,
                    participant: p.id,
                    mid: key.1,
                });
                false
            });
            // Its subscriptions to others.
            for key in &room.tracks {
                if let Some(t) = self.tracks.get_mut(key) {
                    t.subscribers.retain(|s| s.subscriber != slot);
                }
            }
            let empty = room.members.is_empty();
            for (s, m) in stops {
                if let Some(sp) = self.participants[s].as_mut() {
                    sp.to_stop.push(m);
                }
                self.mark_negotiate(s);
            }
            if empty {
                self.rooms.remove(&room_key);
            }
        }
        self.events.push_back(Event::ParticipantLeft {
            room: room_key,
            participant: p.id,
            reason,
        });
        self.events.push_back(Event::Removed {
            room: room_key,
            participant: p.id,
            reason,
        });
    }
}

impl RateMeter {
    /// Counts `bytes` received at `now`.
    fn add(&mut self, now: Instant, bytes: u64) {
        match self.started {
            None => self.started = Some(now),
            Some(start) => {
                let elapsed =
                    now.saturating_duration_since(start).as_nanos() / RATE_BUCKET.as_nanos();
                let elapsed = u32::try_from(elapsed).unwrap_or(u32::MAX);
                if elapsed > 0 {
                    for _ in 0..(elapsed as usize).min(RATE_BUCKETS) {
                        self.idx = (self.idx + 1) % RATE_BUCKETS;
                        self.buckets[self.idx] = 0;
                    }
                    self.completed = (self.completed + elapsed as usize).min(RATE_BUCKETS - 1);
                    self.started = Some(start + RATE_BUCKET.saturating_mul(elapsed));
                }
            }
        }
        self.buckets[self.idx] += bytes;
    }

    /// Bits/s over the completed buckets as of `now`; `None` before one bucket completed.
    fn bps(&self, now: Instant) -> Option<u64> {
        let start = self.started?;
        let elapsed = now.saturating_duration_since(start).as_nanos() / RATE_BUCKET.as_nanos();
        let elapsed = usize::try_from(elapsed).unwrap_or(usize::MAX);
        let completed = self.completed.saturating_add(elapsed).min(RATE_BUCKETS - 1);
        if completed == 0 {
            return None;
        }
        // The bucket `back` places behind the current one is `back + elapsed` buckets old now;
        // the window holds ages 1..RATE_BUCKETS.
        let bytes: u64 = (0..RATE_BUCKETS)
            .filter(|back| (1..RATE_BUCKETS).contains(&back.saturating_add(elapsed)))
            .map(|back| self.buckets[(self.idx + RATE_BUCKETS - back) % RATE_BUCKETS])
            .sum();
        let window = RATE_BUCKET.as_secs_f64() * completed as f64;
        Some((bytes as f64 * 8.0 / window) as u64)
    }
}

impl Subscription {
    /// Starts forwarding layer `rid` at this packet (a keyframe), continuing the sequence
    /// numbers and timestamps the subscriber has seen so far.
    fn switch_layer(&mut self, rid: Option<Rid>, in_seq: u64, in_ts: u32, now: Instant) {
        self.layer = rid;
        self.min_in_seq = in_seq;
        match self.last_out {
            Some((seq, ts, at)) => {
                self.seq_offset = Some(seq as i64 + 1 - in_seq as i64);
                // Video clock: 90 kHz. Advance by the wall time since the last packet sent.
                let ms = now.saturating_duration_since(at).as_millis();
                let ticks = u32::try_from(ms.saturating_mul(90))
                    .unwrap_or(u32::MAX)
                    .max(1);
                self.ts_offset = ts.wrapping_add(ticks).wrapping_sub(in_ts);
            }
            None => {
                self.seq_offset = None;
                self.ts_offset = 0;
            }
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.state, OutState::Open(_))
    }

    fn new(subscriber: Slot, target: Option<Rid>) -> Self {
        Subscription {
            subscriber,
            state: OutState::ToOpen,
            layer: None,
            target,
            cap: target,
            up_since: None,
            seq_offset: None,
            ts_offset: 0,
            min_in_seq: 0,
            last_out: None,
            pt_map: Vec::new(),
        }
    }
}

/// Most simulcast layers of a track that take part in the choice (browsers send three).
const MAX_LAYERS: usize = 8;

/// The measured bitrates of a track's layers, ordered for choosing one.
struct LayerRates {
    rates: [u64; MAX_LAYERS],
    len: usize,
    /// Index of the subscriber's cap.
    cap: Option<usize>,
}

impl LayerRates {
    fn new(layers: &[Rid], meters: &[RateMeter], cap: Option<Rid>, now: Instant) -> Self {
        let mut rates = [0; MAX_LAYERS];
        let len = layers.len().min(meters.len()).min(MAX_LAYERS);
        for (r, m) in rates.iter_mut().zip(&meters[..len]) {
            *r = m.bps(now).unwrap_or(0);
        }
        let cap = cap.and_then(|c| layers[..len].iter().position(|l| *l == c));
        LayerRates { rates, len, cap }
    }

    fn rate(&self, i: usize) -> u64 {
        self.rates[i]
    }

    /// Order of layers, lowest first: by bitrate; among equal rates the cap ranks highest,
    /// then the layer listed first.
    fn key(&self, i: usize) -> (u64, bool, std::cmp::Reverse<usize>) {
        (self.rates[i], Some(i) == self.cap, std::cmp::Reverse(i))
    }

    fn flowing(&self, i: usize) -> bool {
        self.rates[i] > 0
    }

    fn any_flowing(&self) -> bool {
        (0..self.len).any(|i| self.flowing(i))
    }

    fn highest(&self) -> Option<usize> {
        (0..self.len).max_by_key(|i| self.key(*i))
    }

    /// Flowing and not above the cap (a cap that is not flowing caps nothing).
    fn allowed(&self, i: usize) -> bool {
        self.flowing(i)
            && self
                .cap
                .is_none_or(|c| !self.flowing(c) || self.key(i) <= self.key(c))
    }

    /// The layer to target given the current `target` and the subscriber's `share` of its
    /// estimate: down at once, up only once the room for a higher layer has lasted `hold`.
    fn choose(
        &self,
        target: Option<usize>,
        share: u64,
        up_since: &mut Option<Instant>,
        now: Instant,
        hold: Duration,
    ) -> Option<usize> {
        let fits = |i: usize| self.rates[i] as f64 * LAYER_HEADROOM <= share as f64;
        let allowed = (0..self.len).filter(|i| self.allowed(*i));
        let best = allowed
            .clone()
            .filter(|i| fits(*i))
            .max_by_key(|i| self.key(*i));
        let candidate = best.or_else(|| allowed.min_by_key(|i| self.key(*i)));
        match (candidate, target) {
            (Some(c), Some(t)) if self.allowed(t) && self.key(c) > self.key(t) => {
                let since = *up_since.get_or_insert(now);
                if now >= since + hold {
                    Some(c)
                } else {
                    Some(t)
                }
            }
            (c, t) => {
                *up_since = None;
                c.or(t)
            }
        }
    }
}

/// SSRC and sequence number of an RTP packet (SRTP leaves the header in clear); `None` for
/// RTCP (payload types 192–223 in the second byte), DTLS, STUN and runts.
fn rtp_ssrc_seq(datagram: &[u8]) -> Option<(u32, u16)> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 || (192..=223).contains(&datagram[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, seq))
}

/// Starts closing `rtc` and collects what it sends for that; bounded, events ignored.
fn close_rtc(rtc: &mut Rtc, transmits: &mut VecDeque<Transmit>) {
    if rtc.close().is_err() {
        return;
    }
    for _ in 0..32 {
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => transmits.push_back(Transmit {
                source: t.source,
                destination: t.destination,
                contents: t.contents.into(),
                received_at: None,
            }),
            Ok(Output::Event(_)) => {}
            Ok(Output::Timeout(_)) | Err(_) => return,
        }
    }
}

/// Runs `f`, turning a panic into `None`. A bug inside one participant's `Rtc` must cost
/// that participant only (THREATS 30); the caller removes it. The `Rtc` is dropped right after
/// a panic, so no broken invariant is observed again.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

/// Whether an RTP payload starts a keyframe, from what the codec leaves in clear.
fn is_keyframe_start(codec: Codec, payload: &[u8]) -> bool {
    match codec {
        Codec::Vp8 => detect_vp8_keyframe(payload),
        Codec::Vp9 => detect_vp9_keyframe(payload),
        Codec::H264 => detect_h264_keyframe(payload),
        Codec::Av1 => detect_av1_keyframe(payload),
        _ => false,
    }
}

/// Size check, parse, and the voice-room rule, before anything is created.
fn parse_offer(sdp: &str, room_kind: RoomKind) -> Result<SdpOffer, SfuError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SfuError::SdpTooLarge);
    }
    if room_kind == RoomKind::Voice && has_active_video(sdp) {
        return Err(SfuError::VideoNotAllowed);
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))
}

/// Whether an SDP has a video m-line that is not disabled (port 0).
fn has_active_video(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.strip_prefix("m=video ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|port| port != "0")
    })
}

/// A random string over the ICE-char alphabet.
fn random_token(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn video_detection_ignores_disabled_lines() {
        assert!(has_active_video(
            "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
        assert!(!has_active_video(
            "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n"
        ));
        assert!(!has_active_video(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
        ));
    }

    #[test]
    fn sfu_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Sfu>();
    }

    #[test]
    fn rate_meter_measures_a_sliding_second() {
        let t0 = Instant::now();
        let mut m = RateMeter::default();
        m.add(t0, 1_000);
        assert_eq!(
            m.bps(t0 + Duration::from_millis(200)),
            None,
            "no bucket done yet"
        );
        // 1,000 bytes every 10 ms: 800 kbit/s.
        for i in 1..200 {
            m.add(t0 + Duration::from_millis(10 * i), 1_000);
        }
        let bps = m.bps(t0 + Duration::from_millis(2_000)).expect("measured");
        assert!((780_000..=820_000).contains(&bps), "{bps}");
        // Silence empties the window bucket by bucket.
        let half = m.bps(t0 + Duration::from_millis(2_500)).expect("measured");
        assert!((380_000..=420_000).contains(&half), "{half}");
        assert_eq!(m.bps(t0 + Duration::from_secs(10)), Some(0));
        m.add(t0 + Duration::from_secs(10), 500);
        assert_eq!(m.bps(t0 + Duration::from_secs(10)), Some(0));
        let after = m.bps(t0 + Duration::from_millis(10_250)).expect("measured");
        assert_eq!(after, 4_000, "500 bytes over the one-second window");
    }

    #[test]
    fn tokens_are_seeded() {
        let a = random_token(&mut StdRng::from_seed([1; 32]), 8);
        let b = random_token(&mut StdRng::from_seed([1; 32]), 8);
        let c = random_token(&mut StdRng::from_seed([2; 32]), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 8);
    }
}
