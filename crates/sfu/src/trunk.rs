//! Legs: one call spanning several nodes, each node (leg) serving its own participants.
//!
//! Each leg's core holds its local participants as usual, and a **remote publisher** for each
//! participant of another leg that publishes: a participant without a client, whose `Rtc` only
//! accepted that participant's own SDP offer (so it knows its m-lines, payload types and
//! simulcast layers, as the publisher's leg negotiated them), and whose packets arrive through
//! [`Sfu::handle_trunk_rtp`]. Local subscribers subscribe to its tracks like to any other;
//! their BWE, layer choice and payload-type mapping are the leg's own.
//!
//! Between the legs, per published track:
//! - the subscribing leg says which layers its subscribers want ([`Event::TrunkDemand`], fed
//!   to the publisher's leg with [`Sfu::set_trunk_demand`]);
//! - the publisher's leg exports each packet of a wanted layer once, naming every leg that
//!   wants it ([`Sfu::poll_trunk_packet`]): the IO layer sends it once per trunk;
//! - keyframe requests go upstream ([`Event::TrunkKeyframeRequest`], fed to the publisher's
//!   leg with [`Sfu::handle_trunk_keyframe_request`]), throttled on both legs by
//!   [`SfuConfig::keyframe_request_interval`][crate::SfuConfig::keyframe_request_interval].
//!
//! What crosses is the packet after the ingress leg's SRTP decrypt: its payload is still
//! end-to-end encrypted by the clients.

use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Pt, Rid, Rids};

use crate::slab::Slot;
use crate::table::OutState;
use crate::{Event, ParticipantId, RoomKey, RoomKind, Sfu, SfuError};

/// How often a remote publisher's tracks are looked at for a change in the layers their
/// local subscribers want (a new subscriber, a layer switch): the delay before a newly
/// wanted layer is asked for, at most.
pub(crate) const DEMAND_INTERVAL: Duration = Duration::from_millis(100);

/// Another leg of a call, as the IO layer numbers the trunks it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u32);

/// One RTP packet of a published track as it crosses between legs: its fields as the ingress
/// leg's `Rtc` read them (the sequence number extended to 64 bits), payload untouched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkRtp {
    /// Payload type, as the publisher's offer numbered it.
    pub pt: Pt,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub timestamp: u32,
    /// The marker bit.
    pub marker: bool,
    /// Audio level (RFC 6464), -dBov.
    pub audio_level: Option<i8>,
    /// Voice activity flag of the audio level extension.
    pub voice_activity: Option<bool>,
    /// Coordination of video orientation (3GPP TS 26.114), its two rotation bits.
    pub video_orientation: Option<u8>,
    /// The payload (end-to-end encrypted by the client), shared by every copy made of it.
    pub payload: Arc<[u8]>,
}

/// A packet of a local publisher's track for other legs: send `rtp` once to each of `legs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkPacket {
    /// The call.
    pub room: RoomKey,
    /// The publisher.
    pub publisher: ParticipantId,
    /// The publisher's m-line carrying the track.
    pub mid: Mid,
    /// The simulcast layer (`None` without simulcast).
    pub rid: Option<Rid>,
    /// Every leg that wants this layer, each once.
    pub legs: Vec<LegId>,
    /// When the datagram carrying it reached this node (for the forward latency across hops).
    pub received_at: Instant,
    /// The packet.
    pub rtp: TrunkRtp,
}

impl Sfu {
    /// Adds a publisher of another leg to `room`: `offer_sdp` is the offer that participant
    /// made to its own leg (its latest one). Its tracks are published here at once, and local
    /// participants subscribe to them (relay offers follow); their packets come through
    /// [`Sfu::handle_trunk_rtp`]. It subscribes to nothing and has no ICE, DTLS or idle
    /// timeout: it leaves by [`Sfu::remove_participant`] (its leg said so, or the leg is gone).
    /// A later offer of the same participant goes to [`Sfu::handle_sdp_offer`], whose answer
    /// is then not needed.
    ///
    /// Refused as [`Sfu::add_participant`] refuses an offer.
    pub fn add_remote_publisher(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: &str,
    ) -> Result<(), SfuError> {
        self.add(now, room, participant, kind, Some(offer_sdp), false, true)?;
        if let Some(&slot) = self.by_id.get(&participant) {
            self.publish_offered(now, slot, offer_sdp);
        }
        self.flush(now);
        Ok(())
    }

    /// A remote publisher's tracks: every m-line of its offer it sends on. (str0m announces
    /// a local participant's m-lines once DTLS is up, which never happens here.)
    pub(crate) fn publish_offered(&mut self, now: Instant, slot: Slot, offer_sdp: &str) {
        let mids: Vec<Mid> = offer_sdp
            .lines()
            .filter_map(|l| l.strip_prefix("a=mid:"))
            .map(|m| Mid::from(m.trim()))
            .collect();
        for mid in mids {
            let Some(p) = self.participants.get(slot) else {
                return;
            };
            let Some(media) = p.rtc.media(mid).filter(|m| m.direction().is_receiving()) else {
                continue;
            };
            let layers = match media.rids_rx() {
                Rids::Specific(v) => v.clone(),
                _ => Vec::new(),
            };
            let kind = media.kind();
            self.publish(now, slot, mid, kind, layers);
        }
    }

    /// Whether `participant` is a publisher of another leg ([`Sfu::add_remote_publisher`]).
    pub fn is_remote(&self, participant: ParticipantId) -> bool {
        self.by_id
            .get(&participant)
            .and_then(|s| self.participants.get(*s))
            .is_some_and(|p| p.remote)
    }

    /// A packet of a remote publisher's track `mid`, layer `rid`, from its leg: forwarded to
    /// every local subscriber of that track. `arrival` is when it reached the first node (on
    /// this node's clock; `now` if unknown): forwarded copies are timed from it
    /// ([`Transmit::received_at`][crate::Transmit::received_at]). Dropped and counted
    /// ([`SfuStats::trunk_dropped`][crate::SfuStats::trunk_dropped]) when no such remote
    /// publisher or track is here.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_trunk_rtp(
        &mut self,
        now: Instant,
        arrival: Instant,
        publisher: ParticipantId,
        mid: Mid,
        rid: Option<Rid>,
        rtp: TrunkRtp,
    ) {
        let slot = self.by_id.get(&publisher).copied();
        let known = slot.filter(|s| {
            self.participants.get(*s).is_some_and(|p| p.remote)
                && self.tracks.contains_key(&(*s, mid))
        });
        let Some(slot) = known else {
            self.stats.trunk_dropped += 1;
            return;
        };
        self.stats.trunk_received += 1;
        self.fan_out(slot, now, arrival.min(now), mid, rid, rtp);
        self.flush(now);
    }

    /// The layers the leg `leg` wants of the local track `(publisher, mid)` (`None` in the
    /// list: the track's only stream, without simulcast). An empty list: none any more. A
    /// layer newly wanted is asked of the publisher as a keyframe (throttled), for the remote
    /// subscribers waiting to start on it.
    pub fn set_trunk_demand(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        mid: Mid,
        leg: LegId,
        layers: &[Option<Rid>],
    ) -> Result<(), SfuError> {
        let slot = *self
            .by_id
            .get(&publisher)
            .ok_or(SfuError::UnknownParticipant)?;
        if self.participants.get(slot).is_none_or(|p| p.remote) {
            return Err(SfuError::UnknownParticipant);
        }
        let track = self
            .tracks
            .get_mut(&(slot, mid))
            .ok_or(SfuError::UnknownTrack)?;
        let before = track
            .demand
            .iter()
            .position(|(l, _)| *l == leg)
            .map(|i| track.demand.remove(i).1)
            .unwrap_or_default();
        // In the track's own order, each once: a layer it does not have is ignored.
        let wanted: Vec<Option<Rid>> = if track.layers.is_empty() {
            layers
                .iter()
                .copied()
                .filter(Option::is_none)
                .take(1)
                .collect()
        } else {
            track
                .layers
                .iter()
                .map(|r| Some(*r))
                .filter(|r| layers.contains(r))
                .collect()
        };
        let new: Vec<Option<Rid>> = wanted
            .iter()
            .copied()
            .filter(|r| !before.contains(r))
            .collect();
        if !wanted.is_empty() {
            track.demand.push((leg, wanted));
        }
        if track.kind == crate::TrackKind::Video {
            for rid in new {
                self.request_keyframe(
                    now,
                    (slot, mid),
                    rid,
                    str0m::media::KeyframeRequestKind::Pli,
                );
            }
        }
        self.flush(now);
        Ok(())
    }

    /// Forgets every demand of `leg` (its trunk is gone): nothing is exported to it any more.
    pub fn drop_trunk_leg(&mut self, leg: LegId) {
        for t in self.tracks.values_mut() {
            t.demand.retain(|(l, _)| *l != leg);
        }
    }

    /// Another leg's subscriber needs a keyframe of the local track `(publisher, mid)`, layer
    /// `rid`: asked of the publisher, throttled per layer as a local request is.
    pub fn handle_trunk_keyframe_request(
        &mut self,
        now: Instant,
        publisher: ParticipantId,
        mid: Mid,
        rid: Option<Rid>,
    ) {
        let Some(&slot) = self.by_id.get(&publisher) else {
            return;
        };
        if self.participants.get(slot).is_none_or(|p| p.remote) {
            return;
        }
        self.request_keyframe(
            now,
            (slot, mid),
            rid,
            str0m::media::KeyframeRequestKind::Pli,
        );
        self.flush(now);
    }

    /// The simulcast layers of `participant`'s track on `mid`, in the order it sends them
    /// (empty without simulcast); `None` for no such track. The trunk numbers layers by it.
    pub fn track_layers(&self, participant: ParticipantId, mid: Mid) -> Option<Vec<Rid>> {
        let slot = self.by_id.get(&participant)?;
        self.tracks.get(&(*slot, mid)).map(|t| t.layers.clone())
    }

    /// Next packet to send to other legs, if any. Drain it with [`Sfu::poll_transmit`].
    pub fn poll_trunk_packet(&mut self) -> Option<TrunkPacket> {
        self.trunk_out.pop_front()
    }

    /// For a remote publisher: the layers its local subscribers want of each of its tracks;
    /// a change is told as [`Event::TrunkDemand`]. Wanted: the layer each subscriber gets and
    /// the one it is moving to (it needs that one's next keyframe).
    pub(crate) fn update_demand(&mut self, now: Instant, slot: Slot) {
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        p.next_demand = Some(now + DEMAND_INTERVAL);
        let (room_key, id) = (p.room, p.id);
        let Some(room) = self.rooms.get(&room_key) else {
            return;
        };
        for key in room.tracks.iter().filter(|k| k.0 == slot) {
            let Some(track) = self.tracks.get_mut(key) else {
                continue;
            };
            let mut any = false;
            let mut layers: Vec<Rid> = Vec::new();
            for sid in &track.subscribers {
                let Some(sub) = self.subs.get(*sid) else {
                    continue;
                };
                if sub.state == OutState::ToOpen {
                    continue;
                }
                any = true;
                layers.extend([sub.layer, sub.target].into_iter().flatten());
            }
            // In the track's own order, each once.
            let wanted: Vec<Option<Rid>> = if track.layers.is_empty() {
                if any {
                    vec![None]
                } else {
                    Vec::new()
                }
            } else {
                track
                    .layers
                    .iter()
                    .filter(|r| layers.contains(r))
                    .map(|r| Some(*r))
                    .collect()
            };
            if wanted != track.wanted {
                track.wanted = wanted.clone();
                self.events.push_back(Event::TrunkDemand {
                    room: room_key,
                    publisher: id,
                    mid: key.1,
                    layers: wanted,
                });
            }
        }
    }
}
