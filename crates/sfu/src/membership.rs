//! Membership: participants joining and leaving rooms, and everything a departure removes.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use str0m::bwe::Bitrate;
use str0m::change::SdpPendingOffer;
use str0m::media::{MediaKind, Mid, Rid};
use str0m::net::{Protocol, TcpType};
use str0m::rtp::{Extension, ExtensionMap};
use str0m::{Candidate, IceCreds, Output, Rtc};

use crate::ingress::IngressBudget;
use crate::negotiate::parse_offer;
use crate::payload_types::PayloadTypes;
use crate::simulcast::RateMeter;
use crate::slab::{Slot, SubId};
use crate::speaker::SpeakerDetector;
use crate::ssrc::SsrcTable;
use crate::table::{OutState, Track, TrackKey};
use crate::timers::TimerEntry;
use crate::{
    guarded, Event, ParticipantId, RemoveReason, RoomKey, RoomKind, Sfu, SfuError, Transmit,
};

/// A room: its members and what they publish.
pub(crate) struct Room {
    pub(crate) kind: RoomKind,
    pub(crate) members: Vec<Slot>,
    /// Published tracks, in publication order (drives the order of m-lines in offers).
    pub(crate) tracks: Vec<TrackKey>,
    pub(crate) speaker: SpeakerDetector,
}

/// One participant: its str0m `Rtc` and what the core keeps beside it.
pub(crate) struct Participant {
    pub(crate) id: ParticipantId,
    pub(crate) room: RoomKey,
    /// Subscribes to the room's tracks (false: publish-only, e.g. a WHIP client, which has no
    /// way to take the relay's offers).
    pub(crate) receives: bool,
    /// A viewer's lines (a WHEP player), see `viewer.rs`.
    pub(crate) viewer: Option<crate::viewer::Viewer>,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    pub(crate) addrs: Vec<(Protocol, SocketAddr)>,
    /// The `Rtc`'s own next timeout, from its last `Output::Timeout`.
    pub(crate) next_timeout: Instant,
    pub(crate) last_ice: Instant,
    /// When the layers of its simulcast subscriptions are chosen next; `None` while it has none.
    pub(crate) next_allocation: Option<Instant>,
    /// Its entry in the deadline heap (see [`crate::timers`]).
    pub(crate) timer: Option<TimerEntry>,
    /// Incoming SSRCs, capped (threat 13); the main ones map to their (mid, rid) in one hash
    /// probe per packet.
    pub(crate) ssrcs: SsrcTable,
    /// DTLS completed: str0m holds the SRTP keys, and SRTP from this participant can be read.
    pub(crate) keyed: bool,
    /// When it joined: its DTLS handshake must complete by `joined + handshake_timeout`.
    pub(crate) joined: Instant,
    /// Its subscriptions to the tracks of others, in the order those were published.
    pub(crate) subscriptions: Vec<SubId>,
    /// Outstanding relay-initiated offer.
    pub(crate) pending_offer: Option<SdpPendingOffer>,
    /// Subscription m-lines whose track is gone and which must be stopped.
    pub(crate) to_stop: Vec<Mid>,
    /// Subscription m-lines in an outstanding offer that stops them.
    pub(crate) stopping: Vec<Mid>,
    /// Receive-only m-lines to put in the relay's first offer (when the relay offers first).
    pub(crate) recv_to_offer: Vec<MediaKind>,
    /// Receive-only m-lines in the outstanding offer. str0m announces no `MediaAdded` for
    /// lines the local side offered, so they are published when the answer is accepted.
    pub(crate) recv_offered: Vec<Mid>,
    /// Own tracks unpublished because the client stopped sending on their m-line (a screen
    /// share that ended): kind and simulcast layers, to publish them again if it sends there
    /// again.
    pub(crate) stopped_tracks: Vec<(Mid, MediaKind, Vec<Rid>)>,
    pub(crate) dirty: bool,
    pub(crate) negotiate: bool,
    /// Latest egress bandwidth estimate towards this participant, bits/s (`None` until
    /// str0m's BWE can measure: BWE on, and TWCC negotiated on a sending m-line).
    pub(crate) estimate: Option<u64>,
    /// The desired bitrate last handed to this participant's BWE (what it probes towards).
    pub(crate) bwe_desired: u64,
    /// The minimum last given to its BWE (see [`Sfu::allocate_subscriber`]).
    pub(crate) bwe_minimum: u64,
    /// When its current probe interval began (see [`Sfu::allocate_subscriber`]).
    pub(crate) probe_from: Option<Instant>,
    /// When its first bandwidth estimate came.
    pub(crate) estimated_since: Option<Instant>,
    /// NACKs received per sending stream, as last reported by str0m's once-a-second stats
    /// (cumulative), so that [`SfuStats::nacks_received`][crate::SfuStats::nacks_received]
    /// adds only the difference.
    pub(crate) egress_nacks: HashMap<(Mid, Option<Rid>), u64>,
    /// What each payload type means in its accepted offers (see [`crate::payload_types`]).
    pub(crate) payload_types: PayloadTypes,
    /// The same for its accepted answers, kept apart: an answer uses the payload types of the
    /// relay's offer, which need not mean what the client's own offer gave them (Chromium's
    /// answers differ so), and only answers among themselves must agree.
    pub(crate) answered_types: PayloadTypes,
    /// Its media ingress budget (see [`crate::ingress`]).
    pub(crate) ingress: IngressBudget,
    /// [`Event::FirstMedia`] was raised for it.
    pub(crate) sent_media: bool,
    /// Media it sent that was admitted for fan-out, over the last second.
    pub(crate) rx_rate: RateMeter,
    /// Media forwarded to it, over the last second.
    pub(crate) tx_rate: RateMeter,
    /// A publisher on another leg of the call (see `trunk.rs`): its `Rtc` only holds what its
    /// offer negotiated (m-lines, payload types, layers); its media comes through
    /// [`Sfu::handle_trunk_rtp`], never from a socket, and it has no ICE, DTLS or idle timer.
    pub(crate) remote: bool,
    /// A remote publisher: when the layers its local subscribers want are looked at next.
    pub(crate) next_demand: Option<Instant>,
}

impl Sfu {
    /// Participants currently present, in all rooms.
    pub fn participant_count(&self) -> usize {
        self.by_id.len()
    }

    /// Rooms with at least one participant.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// The kind of a room with participants.
    pub fn room_kind(&self, room: RoomKey) -> Option<RoomKind> {
        self.rooms.get(&room).map(|r| r.kind)
    }

    /// Members of a room, in join order.
    pub fn room_members(&self, room: RoomKey) -> Vec<ParticipantId> {
        let Some(r) = self.rooms.get(&room) else {
            return Vec::new();
        };
        r.members
            .iter()
            .filter_map(|s| self.participants.get(*s).map(|p| p.id))
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
    /// Refused without any change when the room is full, the id is taken, the SDP is bad, a
    /// voice room is offered video, or the offer publishes more tracks than
    /// [`SfuConfig::max_tracks_per_participant`][crate::SfuConfig::max_tracks_per_participant].
    pub fn add_participant(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: Option<&str>,
    ) -> Result<Option<String>, SfuError> {
        self.add(now, room, participant, kind, offer_sdp, true, false)
    }

    /// Adds a participant that only publishes (a WHIP client, RFC 9725): its offer is answered
    /// as for [`Sfu::add_participant`], its tracks reach everyone, but it subscribes to nothing,
    /// so the relay never offers it anything (such a client has no channel for offers).
    pub fn add_publisher(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: &str,
    ) -> Result<String, SfuError> {
        self.add(now, room, participant, kind, Some(offer_sdp), false, false)
            .map(Option::unwrap_or_default)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: Option<&str>,
        receives: bool,
        remote: bool,
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
            .map(|sdp| parse_offer(sdp, room_kind, self.config.max_tracks_per_participant))
            .transpose()?;
        let payload_types = match offer_sdp {
            Some(sdp) => PayloadTypes::default().check(sdp)?,
            None => PayloadTypes::default(),
        };

        // A client whose offer has no TWCC (no transport-wide sequence number extension or no
        // `transport-cc` feedback: some gateways, the load generator's sampled receivers)
        // cannot give the feedback an estimate needs: its `Rtc` is built without BWE. Otherwise
        // str0m's estimator, prober and pacer would run for nothing on every packet sent to it
        // (a profile of 180 such receivers put 14 % of the relay's CPU in str0m's probe checks
        // alone). It gets what it asks for, unpaced, as with TWCC missing from its answers
        // (see `simulcast.rs`).
        //
        // In a voice room the estimate would choose nothing (there are no layers) and cost
        // per copy (transport-cc feedback, the estimator's and pacer's timers: 1.8× the relay
        // time per forwarded copy in the room bench's voice room): no BWE there either.
        let bwe = self
            .config
            .bwe_initial_bitrate
            .filter(|_| room_kind == RoomKind::Video)
            .filter(|_| offer_sdp.is_none_or(offers_twcc))
            .filter(|_| !remote);
        let ufrag = self.new_ufrag();
        let creds = IceCreds {
            ufrag: ufrag.clone(),
            pass: random_token(&mut self.rng, 24),
        };
        let mut builder = Rtc::builder();
        opus_with_dtx(builder.codec_config());
        let mut rtc = builder
            .set_rtp_mode(true)
            .set_ice_lite(true)
            .set_local_ice_credentials(creds)
            .set_crypto_provider(self.crypto.clone())
            .enable_bwe(bwe.map(Bitrate::bps))
            .set_send_buffer_video(self.config.send_buffer_video)
            .set_extension_map(header_extensions(room_kind))
            // Once-a-second stats carry the NACK counts behind `SfuStats::nacks_received`.
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        // One host candidate per announced address (an IPv4 and an IPv6 one on a dual-stack
        // socket); the client pairs its own address with the one of its family.
        // A remote publisher is reached through the trunk, never through ICE.
        for addr in self.config.local_addrs().filter(|_| !remote) {
            let candidate = Candidate::host(addr, "udp")
                .map_err(|e| SfuError::Sdp(format!("bad local address: {e}")))?;
            rtc.add_local_candidate(candidate);
        }
        // ICE-TCP (RFC 6544): a passive TCP host candidate at the same address and port, for
        // clients whose network blocks UDP. It pairs only with the client's active TCP
        // candidates; its priority (str0m's, lower for TCP) keeps UDP preferred when both work.
        if self.config.tcp_candidates && !remote {
            for addr in self.config.local_addrs() {
                let candidate = Candidate::builder()
                    .tcp()
                    .host(addr)
                    .tcptype(TcpType::Passive)
                    .build()
                    .map_err(|e| SfuError::Sdp(format!("bad local address: {e}")))?;
                rtc.add_local_candidate(candidate);
            }
        }
        // A panic in str0m on a hostile offer refuses the join (the Rtc is dropped here).
        let answer = match offer {
            Some(offer) => match guarded(|| rtc.sdp_api().accept_offer(offer)) {
                Some(answer) => Some(answer.map_err(|e| SfuError::Sdp(e.to_string()))?),
                None => {
                    self.stats.sessions_panicked += 1;
                    return Err(SfuError::Sdp("the offer could not be negotiated".into()));
                }
            },
            None => None,
        };
        let recv_to_offer = match (&answer, room_kind) {
            (Some(_), _) => Vec::new(),
            (None, RoomKind::Voice) => vec![MediaKind::Audio],
            (None, RoomKind::Video) => vec![MediaKind::Audio, MediaKind::Video],
        };

        let slot = self.participants.insert(Participant {
            id: participant,
            room,
            receives,
            viewer: None,
            rtc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            next_timeout: now,
            last_ice: now,
            next_allocation: None,
            timer: None,
            ssrcs: SsrcTable::default(),
            // No DTLS for a remote publisher: nothing to wait for.
            keyed: remote,
            joined: now,
            subscriptions: Vec::new(),
            pending_offer: None,
            to_stop: Vec::new(),
            stopping: Vec::new(),
            recv_to_offer,
            recv_offered: Vec::new(),
            stopped_tracks: Vec::new(),
            dirty: false,
            negotiate: false,
            estimate: None,
            bwe_desired: 0,
            bwe_minimum: 0,
            probe_from: None,
            estimated_since: None,
            egress_nacks: HashMap::new(),
            payload_types,
            answered_types: PayloadTypes::default(),
            ingress: IngressBudget::default(),
            sent_media: false,
            rx_rate: RateMeter::default(),
            tx_rate: RateMeter::default(),
            remote,
            next_demand: remote.then(|| now + crate::trunk::DEMAND_INTERVAL),
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
        let published: Vec<(TrackKey, Option<Rid>)> = r
            .tracks
            .iter()
            .filter(|_| receives)
            .filter_map(|key| Some((*key, self.tracks.get(key)?.layers.first().copied())))
            .collect();
        let any = !published.is_empty();
        for (key, target) in published {
            self.subscribe(now, key, slot, target);
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

    pub(crate) fn new_ufrag(&mut self) -> String {
        loop {
            let u = random_token(&mut self.rng, 8);
            if !self.by_ufrag.contains_key(&u) {
                return u;
            }
        }
    }

    /// Removes a participant and every reference to its slot: routes, its tracks (their
    /// subscribers' m-lines are stopped), its subscriptions, its room membership. Its entry
    /// in the deadline heap goes stale and is dropped when it surfaces.
    pub(crate) fn remove_slot(&mut self, slot: Slot, reason: RemoveReason) {
        let Some(mut p) = self.participants.remove(slot) else {
            return;
        };
        if reason == RemoveReason::Error || p.remote {
            // Its state is suspect (or, for a remote publisher, nobody is at the other end of
            // its `Rtc`): touch nothing more.
            p.rtc.disconnect();
        } else {
            // Tell the client at the media layer too (RTCP BYE, DTLS close_notify).
            let transmits = &mut self.transmits;
            guarded(|| close_rtc(&mut p.rtc, transmits));
        }
        self.by_id.remove(&p.id);
        self.by_ufrag.remove(&p.ufrag);
        for (proto, a) in &p.addrs {
            match proto {
                Protocol::Udp => self.by_addr.remove(a),
                _ => self.by_tcp_addr.remove(a),
            };
        }
        let room_key = p.room;
        // Its own tracks: unpublish, and stop the subscribers' m-lines.
        let own: Vec<TrackKey> = match self.rooms.get_mut(&room_key) {
            Some(room) => {
                room.members.retain(|s| *s != slot);
                room.speaker.forget(p.id);
                room.tracks
                    .iter()
                    .copied()
                    .filter(|k| k.0 == slot)
                    .collect()
            }
            None => Vec::new(),
        };
        for key in own {
            let track = self.unpublish(room_key, p.id, key);
            // A remote publisher's leg stops sending what was wanted here.
            if track.is_some_and(|t| p.remote && !t.wanted.is_empty()) {
                self.events.push_back(Event::TrunkDemand {
                    room: room_key,
                    publisher: p.id,
                    mid: key.1,
                    layers: Vec::new(),
                });
            }
        }
        // Its subscriptions to others.
        for sid in p.subscriptions.drain(..) {
            self.unsubscribe(sid);
        }
        if self
            .rooms
            .get(&room_key)
            .is_some_and(|r| r.members.is_empty())
        {
            self.rooms.remove(&room_key);
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

    /// Ends the published track `key` of `participant` (in `slot` `key.0`, room `room_key`):
    /// its subscribers' m-lines are stopped in their next relay offer, and the room hears
    /// [`Event::TrackUnpublished`]. Returns the track, if it was published.
    pub(crate) fn unpublish(
        &mut self,
        room_key: RoomKey,
        participant: ParticipantId,
        key: TrackKey,
    ) -> Option<Track> {
        if let Some(room) = self.rooms.get_mut(&room_key) {
            room.tracks.retain(|k| *k != key);
        }
        let mut t = self.tracks.remove(&key)?;
        for sid in std::mem::take(&mut t.subscribers) {
            let Some(sub) = self.unsubscribe(sid) else {
                continue;
            };
            // A viewer is never renegotiated: its line waits for another track.
            if self.viewer_line_ended(sub.subscriber, sid) {
                if !self.rebind.contains(&room_key) {
                    self.rebind.push(room_key);
                }
                continue;
            }
            if let OutState::Open(m) | OutState::Negotiating(m) = sub.state {
                if let Some(sp) = self.participants.get_mut(sub.subscriber) {
                    sp.to_stop.push(m);
                }
                self.mark_negotiate(sub.subscriber);
            }
        }
        self.events.push_back(Event::TrackUnpublished {
            room: room_key,
            participant,
            mid: key.1,
        });
        Some(t)
    }
}

/// Starts closing `rtc` and collects what it sends for that; bounded, events ignored.
fn close_rtc(rtc: &mut Rtc, transmits: &mut VecDeque<Transmit>) {
    if rtc.close().is_err() {
        return;
    }
    for _ in 0..32 {
        match rtc.poll_output() {
            Ok(Output::Transmit(t)) => transmits.push_back(Transmit {
                proto: t.proto,
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

/// A random string over the ICE-char alphabet.
pub(crate) fn random_token(rng: &mut StdRng, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Asks senders for Opus DTX (`usedtx=1` in our Opus `fmtp`, RFC 7587): a browser whose answer
/// or offer from us says so sends a few packets a second (Chromium: ~5) instead of fifty while
/// its microphone is silent or muted (`track.enabled = false` encodes silence). In a call where one
/// person talks, the others' silence then costs the relay, and every receiver, next to nothing.
/// The relay itself forwards what comes, DTX or not.
pub(crate) fn opus_with_dtx(config: &mut str0m::format::CodecConfig) {
    for p in config.iter_mut() {
        let mut spec = p.spec();
        // (A RED payload type folded onto Opus could not be carried over: none is configured.)
        if spec.codec != str0m::format::Codec::Opus || p.red().is_some() {
            continue;
        }
        spec.format.use_dtx = Some(true);
        let mut with = str0m::format::PayloadParams::new(p.pt(), p.resend(), spec);
        with.set_fb_transport_cc(p.fb_transport_cc());
        with.set_fb_nack(p.fb_nack());
        with.set_fb_pli(p.fb_pli());
        with.set_fb_fir(p.fb_fir());
        with.set_fb_remb(p.fb_remb());
        *p = with;
    }
}

/// The RTP header extensions a session negotiates: str0m's standard set, less transport-wide
/// sequence numbers (TWCC) in a voice room.
///
/// TWCC feeds a bandwidth estimate. A voice room has none on either side of the relay: its
/// sessions are built without BWE (nothing to choose between), and an audio sender has no
/// layers to adapt. Negotiated anyway, it costs per copy and per session for nothing: str0m
/// numbers every packet it sends and keeps 1,000 send records per session (~88 KiB) to match
/// the feedback against, the client sends that feedback every ~100 ms and the relay parses it,
/// and the relay sends the same feedback to every publisher. A video room keeps it: the
/// subscribers' estimates choose their layers, and a publisher's own estimate (how many
/// layers it sends) rests on the relay's feedback.
pub(crate) fn header_extensions(kind: RoomKind) -> ExtensionMap {
    let standard = ExtensionMap::standard();
    match kind {
        RoomKind::Video => standard,
        RoomKind::Voice => {
            let mut exts = ExtensionMap::empty();
            for (id, ext) in standard.iter() {
                if *ext != Extension::TransportSequenceNumber {
                    exts.set(id, ext.clone());
                }
            }
            exts
        }
    }
}

/// Whether an SDP offers transport-wide congestion control feedback: the transport-wide
/// sequence number header extension and `transport-cc` RTCP feedback (RFC 8888's predecessor,
/// draft-holmer-rmcat-transport-wide-cc-extensions), as browsers do.
pub(crate) fn offers_twcc(sdp: &str) -> bool {
    let (mut ext, mut fb) = (false, false);
    for line in sdp.lines() {
        let line = line.trim_end();
        if line.starts_with("a=extmap:") && line.contains("transport-wide-cc-extensions") {
            ext = true;
        } else if line.starts_with("a=rtcp-fb:") && line.ends_with(" transport-cc") {
            fb = true;
        }
    }
    ext && fb
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn tokens_are_seeded() {
        let a = random_token(&mut StdRng::from_seed([1; 32]), 8);
        let b = random_token(&mut StdRng::from_seed([1; 32]), 8);
        let c = random_token(&mut StdRng::from_seed([2; 32]), 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 8);
    }

    #[test]
    fn twcc_is_offered_only_with_the_extension_and_the_feedback() {
        let ext = "a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n";
        let fb = "a=rtcp-fb:96 transport-cc\r\n";
        assert!(super::offers_twcc(&format!("v=0\r\n{ext}{fb}")));
        assert!(!super::offers_twcc(&format!("v=0\r\n{ext}")));
        assert!(!super::offers_twcc(&format!("v=0\r\n{fb}")));
        assert!(!super::offers_twcc("v=0\r\na=rtcp-fb:96 nack\r\n"));
    }
}
