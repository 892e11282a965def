//! Simulcast and allocation: which layer of a track each subscriber gets, from its request
//! and its bandwidth estimate, and the incoming bitrate of each layer that the choice uses.
//!
//! Each subscriber with a simulcast subscription has its own allocation deadline
//! ([`ALLOCATION_INTERVAL`] apart) in the deadline heap; nobody else is visited for it.

use std::time::{Duration, Instant};

use str0m::bwe::Bitrate;
use str0m::media::{KeyframeRequestKind, MediaKind, Mid, Rid};
use str0m::rtp::Extension;
use str0m::Rtc;

use crate::slab::Slot;
use crate::table::TrackKey;
use crate::{MediaBitrate, ParticipantId, Sfu, SfuError, SubscriberLayer};

/// Incoming bitrates are measured over `RATE_BUCKETS - 1` completed buckets of this length
/// (one second), plus the bucket being filled, which is not counted.
const RATE_BUCKET: Duration = Duration::from_millis(250);
const RATE_BUCKETS: usize = 5;

/// A layer fits a subscriber's share of its estimate when its bitrate times this does.
const LAYER_HEADROOM: f64 = 1.1;

/// The bandwidth estimator probes up to what the subscriber's caps need times this.
const PROBE_MARGIN: f64 = 1.5;

/// A subscriber below its cap whose estimate does not cover the next step up is padded
/// towards that step (never above its estimate) for [`PROBE_WINDOW`] every this often.
/// Without it the estimate follows what is sent (str0m, like libwebrtc, caps it near 1.5×
/// the acknowledged bitrate), so a subscriber moved down never came back up: in the room
/// bench, meeting subscribers sat on `m` with the estimate decaying from 9 to 4.4 Mbit/s.
const PROBE_INTERVAL: Duration = Duration::from_secs(4);
/// How long each probe of [`PROBE_INTERVAL`] pads.
const PROBE_WINDOW: Duration = Duration::from_secs(1);

/// How often the layers of one subscriber's simulcast subscriptions are chosen again.
pub(crate) const ALLOCATION_INTERVAL: Duration = Duration::from_millis(250);

/// Most simulcast layers of a track that take part in the choice (browsers send three).
const MAX_LAYERS: usize = 8;

/// What the BWE of a subscriber that cannot give TWCC feedback is reset to, so that str0m's
/// pacer (which paces at the estimate times 1.1) lets its media through as it comes.
const UNPACED: Bitrate = Bitrate::gbps(10);

/// `Participant::bwe_desired` of a subscriber whose BWE was reset to [`UNPACED`].
const BWE_UNPACED: u64 = u64::MAX;

impl Sfu {
    /// Sets the highest simulcast layer of `publisher`'s track `mid` the `subscriber` may
    /// receive (from the size it asked for). Without a call, the cap is the first layer the
    /// publisher listed.
    ///
    /// Below the cap, the layer is chosen from the subscriber's bandwidth estimate: the
    /// highest layer whose measured incoming bitrate (times 1.1) fits the subscriber's
    /// estimate, less what it receives without simulcast (audio), shared equally among its
    /// simulcast subscriptions. Moving down is immediate, moving up waits for
    /// [`SfuConfig::layer_up_hold`][crate::SfuConfig::layer_up_hold]. Without an estimate (BWE
    /// off, or no TWCC towards this subscriber) or before layer bitrates are known, the
    /// subscriber gets the cap; a subscriber that negotiated no TWCC is also not paced (see
    /// [`Sfu::allocate_subscriber`]). During the first hold after its first estimate, moving
    /// up is immediate too: str0m's first probes are still raising the estimate from the
    /// configured start. A subscriber below its cap whose estimate does not cover one layer
    /// more is padded towards it, one second in four, so that its estimate can grow.
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
        let track = self.tracks.get(&key).ok_or(SfuError::UnknownTrack)?;
        if !track.layers.contains(&rid) {
            return Err(SfuError::UnknownTrack);
        }
        let sub = self
            .subscription_of(key, sub_slot)
            .and_then(|sid| self.subs.get_mut(sid))
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
        let sub = self
            .subs
            .get(self.subscription_of((pub_slot, mid), sub_slot)?)?;
        Some(SubscriberLayer {
            current: sub.layer,
            target: sub.target,
            cap: sub.cap,
        })
    }

    /// The latest egress bandwidth estimate towards `participant`, in bits/s, once str0m's
    /// BWE measures it (see
    /// [`SfuConfig::bwe_initial_bitrate`][crate::SfuConfig::bwe_initial_bitrate]).
    pub fn bandwidth_estimate(&self, participant: ParticipantId) -> Option<u64> {
        let slot = *self.by_id.get(&participant)?;
        self.participants.get(slot)?.estimate
    }

    /// The media bitrates of `participant` as of `now`, over the last second: what it sends
    /// that is admitted for fan-out, and what is forwarded to it (RTP payload plus headers,
    /// as on the wire). 0 before a quarter-second of either has been measured.
    pub fn media_bitrate(&self, participant: ParticipantId, now: Instant) -> Option<MediaBitrate> {
        let slot = *self.by_id.get(&participant)?;
        let p = self.participants.get(slot)?;
        Some(MediaBitrate {
            received_bps: p.rx_rate.bps(now).unwrap_or(0),
            forwarded_bps: p.tx_rate.bps(now).unwrap_or(0),
            estimate_bps: p.estimate,
        })
    }

    /// The allocation deadline of `slot` has passed: choose its layers, and set the next
    /// deadline while it still has a simulcast subscription.
    pub(crate) fn allocate_due(&mut self, now: Instant, slot: Slot) {
        self.allocate_subscriber(now, slot, None);
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        let simulcast = p.subscriptions.iter().any(|sid| {
            self.subs
                .get(*sid)
                .and_then(|s| self.tracks.get(&s.track))
                .is_some_and(|t| !t.layers.is_empty())
        });
        p.next_allocation = simulcast.then(|| now + ALLOCATION_INTERVAL);
    }

    /// Chooses the layer of each simulcast subscription of `slot` from its bandwidth estimate
    /// (see [`Sfu::set_subscriber_layer`]), requests keyframes for the switches, and tells its
    /// BWE how far to probe. A new cap on `recapped` applies without the hold: the hold
    /// damps the estimate, not the subscriber's request. Returns whether any target changed.
    ///
    /// A subscriber none of whose open subscription m-lines negotiated TWCC (no
    /// `transport-cc` feedback or no transport sequence number extension: some gateways,
    /// the load generator's sampled receivers) never gets an estimate, so it gets its cap —
    /// but with BWE on, str0m would still pace everything sent to it at the initial estimate
    /// (1 Mbit/s by default) for good, queueing a 2.5 Mbit/s layer for seconds. Its BWE is
    /// reset to [`UNPACED`] instead: like Janus, the relay then sends such a subscriber what
    /// it asked for as it comes. Should TWCC appear later, the BWE starts again from the
    /// configured initial bitrate.
    pub(crate) fn allocate_subscriber(
        &mut self,
        now: Instant,
        slot: Slot,
        recapped: Option<TrackKey>,
    ) -> bool {
        let Some(p) = self.participants.get(slot) else {
            return false;
        };
        // Moving up waits for the hold, except while the estimate is new: str0m's first
        // probes take it from the configured start to a measurement within about a second.
        let hold = match p.estimated_since {
            Some(t) if now < t + self.config.layer_up_hold => Duration::ZERO,
            _ => self.config.layer_up_hold,
        };
        // What is not simulcast (audio first) is taken from the estimate before layers.
        let mut fixed = 0u64;
        let mut simulcast = 0u64;
        // Whether it has open subscriptions, and whether any of them can carry TWCC.
        let (mut open, mut twcc) = (false, false);
        for &sid in &p.subscriptions {
            let Some(sub) = self.subs.get(sid).filter(|s| s.is_open()) else {
                continue;
            };
            open = true;
            twcc = twcc
                || sub
                    .state
                    .mid()
                    .is_some_and(|mid| twcc_feedback(&p.rtc, mid));
            let Some(t) = self.tracks.get(&sub.track) else {
                continue;
            };
            if t.layers.is_empty() {
                fixed += t.rates.first().and_then(|r| r.bps(now)).unwrap_or(0);
            } else {
                simulcast += 1;
            }
        }
        let estimate = self.pace_by_feedback(slot, open, twcc);
        let Some(p) = self.participants.get(slot) else {
            return false;
        };
        let share = estimate.map(|e| e.saturating_sub(fixed) / simulcast.max(1));
        let mut desired = fixed as f64;
        // What the next step up would take: every subscription on its target, those below
        // their cap one layer higher. The pacer pads up to it (never above the estimate), so
        // the estimate can grow while the media sent is less than the estimate allows.
        let mut next_step = fixed as f64;
        let mut below_cap = false;
        let mut switches: Vec<(TrackKey, Option<Rid>)> = Vec::new();
        for &sid in &p.subscriptions {
            let Some(sub) = self.subs.get_mut(sid).filter(|s| s.is_open()) else {
                continue;
            };
            let key = sub.track;
            let Some(t) = self.tracks.get(&key) else {
                continue;
            };
            if t.layers.is_empty() {
                continue;
            }
            let layers = LayerRates::new(&t.layers, &t.rates, sub.cap, now);
            if let Some(c) = layers.cap.or(layers.highest()) {
                desired += layers.rate(c) as f64 * LAYER_HEADROOM;
            }
            let target = t.layers.iter().position(|l| Some(*l) == sub.target);
            let chosen = match (share, layers.any_flowing()) {
                (Some(share), true) => {
                    let hold = if recapped == Some(key) {
                        Duration::ZERO
                    } else {
                        hold
                    };
                    layers.choose(target, share, &mut sub.up_since, now, hold)
                }
                // No estimate or no measured layer yet: the requested layer.
                _ => layers.cap.or(target),
            };
            if let Some(c) = chosen {
                let up = layers.next_up(c);
                below_cap |= up != c;
                next_step += layers.rate(up) as f64 * LAYER_HEADROOM;
            }
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
                switches.push((key, sub.target));
            }
        }
        // Probe towards what the caps would take, with a margin: an estimate that only just
        // covers the top layer would dip under it and flap.
        let desired = (desired * PROBE_MARGIN) as u64;
        // Padding towards the next step, during a probe window (see PROBE_INTERVAL).
        let short = estimate.is_some_and(|e| (e as f64) < next_step);
        let minimum = match self.participants.get_mut(slot) {
            Some(p) if below_cap && short => {
                let from = match p.probe_from {
                    Some(t) if now < t + PROBE_INTERVAL => t,
                    _ => now,
                };
                p.probe_from = Some(from);
                if now < from + PROBE_WINDOW {
                    next_step as u64
                } else {
                    0
                }
            }
            Some(p) => {
                p.probe_from = None;
                0
            }
            None => 0,
        };
        if let Some(p) = self
            .participants
            .get_mut(slot)
            .filter(|p| p.bwe_desired != BWE_UNPACED)
        {
            let differs = desired.abs_diff(p.bwe_desired) > p.bwe_desired / 10
                || minimum.abs_diff(p.bwe_minimum) > p.bwe_minimum / 10;
            if estimate.is_some() && desired > 0 && differs {
                p.bwe_desired = desired;
                p.bwe_minimum = minimum;
                p.rtc
                    .bwe()
                    .set_bitrate(Bitrate::bps(minimum), Bitrate::bps(desired));
                self.mark_dirty(slot);
            }
        }
        let changed = !switches.is_empty();
        for (key, rid) in switches {
            self.request_keyframe(now, key, rid, KeyframeRequestKind::Pli);
        }
        changed
    }

    /// With BWE on, resets the BWE of `slot` to [`UNPACED`] when it has `open` subscriptions
    /// and none can carry TWCC, and back to the configured start once one can (see
    /// [`Sfu::allocate_subscriber`]). Returns the estimate to allocate with.
    fn pace_by_feedback(&mut self, slot: Slot, open: bool, twcc: bool) -> Option<u64> {
        let initial = self.config.bwe_initial_bitrate;
        let p = self.participants.get_mut(slot)?;
        let unpaced = p.bwe_desired == BWE_UNPACED;
        match (initial, open && !twcc, unpaced) {
            (Some(_), true, false) => {
                p.rtc.bwe().reset(UNPACED);
                p.bwe_desired = BWE_UNPACED;
            }
            (Some(initial), false, true) if twcc => {
                // TWCC after all: estimate from the configured start, not from UNPACED (an
                // estimate str0m may have reported from it since is void).
                p.rtc.bwe().reset(Bitrate::bps(initial));
                p.bwe_desired = 0;
                p.estimate = None;
            }
            _ => return p.estimate,
        }
        self.mark_dirty(slot);
        None
    }
}

/// Whether the m-line `mid` of `rtc` (a subscription: the relay sends on it) can carry TWCC:
/// the subscriber's SDP accepted the transport sequence number extension and `transport-cc`
/// feedback on a payload type of its kind. The test str0m makes before it probes.
fn twcc_feedback(rtc: &Rtc, mid: Mid) -> bool {
    let Some(m) = rtc.media(mid) else {
        return false;
    };
    if m.remote_extmap()
        .id_of(Extension::TransportSequenceNumber)
        .is_none()
    {
        return false;
    }
    let audio = m.kind() == MediaKind::Audio;
    let pts = m.remote_pts();
    rtc.codec_config().params().iter().any(|p| {
        p.fb_transport_cc()
            && p.spec().codec.is_audio() == audio
            && (pts.is_empty() || pts.contains(&p.pt()))
    })
}

/// Bytes received over a sliding window of [`RATE_BUCKETS`] buckets, on the time passed in.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RateMeter {
    buckets: [u64; RATE_BUCKETS],
    /// Index of the bucket being filled.
    idx: usize,
    /// When that bucket started; `None` before the first packet.
    started: Option<Instant>,
    /// Completed buckets so far, up to `RATE_BUCKETS - 1`.
    completed: usize,
}

impl RateMeter {
    /// Counts `bytes` received at `now`.
    pub(crate) fn add(&mut self, now: Instant, bytes: u64) {
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
    pub(crate) fn bps(&self, now: Instant) -> Option<u64> {
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

    /// The lowest allowed layer above `i`, or `i` itself at the top (or the cap).
    fn next_up(&self, i: usize) -> usize {
        (0..self.len)
            .filter(|&j| self.allowed(j) && self.key(j) > self.key(i))
            .min_by_key(|&j| self.key(j))
            .unwrap_or(i)
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
