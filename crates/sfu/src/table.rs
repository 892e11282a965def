//! The forwarding table: published tracks, their subscriptions, and the indexes that find a
//! subscription without a scan.
//!
//! A subscription lives once, in [`Subscriptions`], and is reachable from its track (the
//! forwarding path: all subscribers of one track), from its subscriber (negotiation and
//! allocation: all subscriptions of one participant, in publication order) and from the
//! subscriber's m-line (a keyframe request from that subscriber). `Sfu::subscribe` and
//! `Sfu::unsubscribe` keep the three in step.

use std::time::Instant;

use rustc_hash::FxHashMap;

use str0m::media::{Mid, Pt, Rid};
use str0m::rtp::Ssrc;

use crate::simulcast::{RateMeter, ALLOCATION_INTERVAL};
use crate::slab::{Slab, Slot, SubId};
use crate::{Sfu, TrackKind};

/// A published track: `(publisher slot, publisher's mid)`.
pub(crate) type TrackKey = (Slot, Mid);

/// A published track and its subscribers (one entry of the forwarding table).
pub(crate) struct Track {
    pub(crate) kind: TrackKind,
    /// Simulcast layers the publisher sends, in its order; empty without simulcast.
    pub(crate) layers: Vec<Rid>,
    /// Its subscriptions, in the order the subscribers joined.
    pub(crate) subscribers: Vec<SubId>,
    /// Last keyframe request relayed to the publisher, per layer.
    pub(crate) last_keyframe_request: Vec<(Option<Rid>, Instant)>,
    /// Incoming bitrate per layer, in the order of `layers` (one meter without simulcast).
    pub(crate) rates: Vec<RateMeter>,
    /// A local track: the layers each other leg of the call wants across the trunk (see
    /// `trunk.rs`); empty when no leg wants any.
    pub(crate) demand: Vec<(crate::LegId, Vec<Option<Rid>>)>,
    /// A remote publisher's track: the layers last asked of its leg
    /// ([`Event::TrunkDemand`][crate::Event::TrunkDemand]).
    pub(crate) wanted: Vec<Option<Rid>>,
}

/// One subscriber's copy of one published track.
pub(crate) struct Subscription {
    /// The track.
    pub(crate) track: TrackKey,
    pub(crate) subscriber: Slot,
    pub(crate) state: OutState,
    /// The simulcast layer being forwarded (`None` without simulcast, or before the first
    /// keyframe of the target layer).
    pub(crate) layer: Option<Rid>,
    /// The layer wanted; the switch happens on its next keyframe.
    pub(crate) target: Option<Rid>,
    /// The highest layer the subscriber asked for (its size preference); `target` is chosen
    /// at or below it from the bandwidth estimate.
    pub(crate) cap: Option<Rid>,
    /// Since when the estimate has had room for a layer above `target` (moving up waits for
    /// [`SfuConfig::layer_up_hold`][crate::SfuConfig::layer_up_hold]).
    pub(crate) up_since: Option<Instant>,
    /// Added to the publisher's extended sequence number. Fixed at the first packet to
    /// `-(first & !0xffff)` so the subscriber's stream starts with rollover counter 0 and the
    /// low 16 bits are unchanged; recomputed at a layer switch to keep numbering contiguous.
    pub(crate) seq_offset: Option<i64>,
    /// Added (wrapping) to the publisher's RTP timestamp; non-zero only after a layer switch.
    pub(crate) ts_offset: u32,
    /// Packets of the current layer older than the switch point are not forwarded.
    pub(crate) min_in_seq: u64,
    /// Last forwarded (sequence number, timestamp, time).
    pub(crate) last_out: Option<(u64, u32, Instant)>,
    /// Publisher PT → subscriber PT, filled on first use.
    pub(crate) pt_map: Vec<(Pt, Option<Pt>)>,
    /// SSRC of the sending stream on the subscriber's `Rtc`, found by m-line at the first
    /// packet (a walk over its streams in str0m) and then looked up by hash.
    pub(crate) out_ssrc: Option<Ssrc>,
}

/// Negotiation state of one subscription m-line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutState {
    /// Needs an m-line in the next relay offer.
    ToOpen,
    /// In an outstanding offer.
    Negotiating(Mid),
    /// Negotiated: packets are forwarded.
    Open(Mid),
}

impl OutState {
    /// The subscriber's m-line, once offered.
    pub(crate) fn mid(self) -> Option<Mid> {
        match self {
            OutState::ToOpen => None,
            OutState::Negotiating(m) | OutState::Open(m) => Some(m),
        }
    }
}

impl Subscription {
    fn new(track: TrackKey, subscriber: Slot, target: Option<Rid>) -> Self {
        Subscription {
            track,
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
            out_ssrc: None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, OutState::Open(_))
    }

    /// Starts forwarding layer `rid` at this packet (a keyframe), continuing the sequence
    /// numbers and timestamps the subscriber has seen so far.
    pub(crate) fn switch_layer(&mut self, rid: Option<Rid>, in_seq: u64, in_ts: u32, now: Instant) {
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
}

/// Every subscription, and the index by the subscriber's m-line. The index is kept in step
/// by [`Subscriptions::set_state`] and [`Subscriptions::remove`].
pub(crate) struct Subscriptions {
    entries: Slab<SubId, Subscription>,
    /// (subscriber, its m-line) → subscription, for keyframe requests from subscribers.
    by_out_mid: FxHashMap<(Slot, Mid), SubId>,
}

impl Subscriptions {
    pub(crate) fn new() -> Self {
        Subscriptions {
            entries: Slab::new(),
            by_out_mid: FxHashMap::default(),
        }
    }

    pub(crate) fn get(&self, sid: SubId) -> Option<&Subscription> {
        self.entries.get(sid)
    }

    pub(crate) fn get_mut(&mut self, sid: SubId) -> Option<&mut Subscription> {
        self.entries.get_mut(sid)
    }

    /// Moves a subscription to `state`, keeping the index by m-line in step.
    pub(crate) fn set_state(&mut self, sid: SubId, state: OutState) {
        let Some(sub) = self.entries.get_mut(sid) else {
            return;
        };
        if let Some(m) = sub.state.mid() {
            self.by_out_mid.remove(&(sub.subscriber, m));
        }
        if let Some(m) = state.mid() {
            self.by_out_mid.insert((sub.subscriber, m), sid);
        }
        sub.state = state;
    }

    /// The subscription on `subscriber`'s m-line `mid` (one hash probe).
    pub(crate) fn on(&self, subscriber: Slot, mid: Mid) -> Option<SubId> {
        self.by_out_mid.get(&(subscriber, mid)).copied()
    }

    fn insert(&mut self, sub: Subscription) -> SubId {
        self.entries.insert(sub)
    }

    fn remove(&mut self, sid: SubId) -> Option<Subscription> {
        let sub = self.entries.remove(sid)?;
        if let Some(m) = sub.state.mid() {
            self.by_out_mid.remove(&(sub.subscriber, m));
        }
        Some(sub)
    }
}

impl Sfu {
    /// Subscribes `subscriber` to the published track `key`, starting on layer `target`
    /// (state [`OutState::ToOpen`]: the next relay offer carries its m-line). A subscription
    /// to a simulcast track puts the subscriber on the allocation timer.
    pub(crate) fn subscribe(
        &mut self,
        now: Instant,
        key: TrackKey,
        subscriber: Slot,
        target: Option<Rid>,
    ) -> Option<SubId> {
        let track = self.tracks.get_mut(&key)?;
        let p = self.participants.get_mut(subscriber)?;
        let sid = self.subs.insert(Subscription::new(key, subscriber, target));
        track.subscribers.push(sid);
        p.subscriptions.push(sid);
        if !track.layers.is_empty() && p.next_allocation.is_none() {
            p.next_allocation = Some(now + ALLOCATION_INTERVAL);
            self.schedule(subscriber);
        }
        Some(sid)
    }

    /// Removes a subscription from its track, its subscriber and the m-line index (a removed
    /// track or subscriber is skipped), and returns it.
    pub(crate) fn unsubscribe(&mut self, sid: SubId) -> Option<Subscription> {
        let sub = self.subs.remove(sid)?;
        if let Some(t) = self.tracks.get_mut(&sub.track) {
            t.subscribers.retain(|s| *s != sid);
        }
        if let Some(p) = self.participants.get_mut(sub.subscriber) {
            p.subscriptions.retain(|s| *s != sid);
        }
        Some(sub)
    }

    /// The subscription of `subscriber` to the track `key`: a walk over that subscriber's
    /// subscriptions only (at most one per track of its room). For signaling requests; the
    /// media path never needs it.
    pub(crate) fn subscription_of(&self, key: TrackKey, subscriber: Slot) -> Option<SubId> {
        let p = self.participants.get(subscriber)?;
        p.subscriptions
            .iter()
            .copied()
            .find(|sid| self.subs.get(*sid).is_some_and(|s| s.track == key))
    }
}
