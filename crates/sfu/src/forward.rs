//! Forwarding: one RTP packet from a publisher to every subscriber of its track, and the
//! keyframe requests that go the other way.
//!
//! The path of a packet: [`Sfu::handle_datagram`] (`route.rs`) finds the publisher's `Rtc`
//! and drains it; its `RtpPacket` event arrives in [`Sfu::forward`] below, which writes one
//! copy into each subscriber's `Rtc` and marks it dirty; `Sfu::flush` (`timers.rs`) then
//! drives each dirty `Rtc`, whose datagrams come out of [`Sfu::poll_transmit`].

use std::time::{Duration, Instant};

use str0m::format::PayloadParams;
use str0m::format::{
    detect_av1_keyframe, detect_h264_keyframe, detect_vp8_keyframe, detect_vp9_keyframe, Codec,
};
use str0m::media::{KeyframeRequestKind, Mid, Pt, Rid};
use str0m::rtp::{ExtensionValues, RtpPacket, RtpWrite, VideoOrientation};

use crate::slab::Slot;
use crate::ssrc::Stream;
use crate::table::{OutState, TrackKey};
use crate::{Event, LegId, RoomKind, Sfu, TrackKind, TrunkPacket, TrunkRtp};

/// Bytes a forwarded RTP packet costs on the wire besides its payload: RTP header and
/// extensions, SRTP tag, UDP and IP headers. The bandwidth estimate counts them.
const PACKET_OVERHEAD: u64 = 60;

/// Resends queued for a video subscription are dropped while they would make more than this
/// share of what it sends (str0m's default, kept for video).
const RTX_RATIO_CAP: Option<f32> = Some(0.15);

impl Sfu {
    /// The hot path: one RTP packet from a publisher to all subscribers of its track. Costs
    /// one hash probe for the track and, per subscriber, one for its sending stream; nothing
    /// here depends on how many other tracks, rooms or participants the core holds.
    pub(crate) fn forward(&mut self, slot: Slot, now: Instant, pkt: RtpPacket) {
        self.stats.rtp_received += 1;
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        // This packet passed str0m's SRTP check: when it arrived on an SSRC outside its
        // sender's table (`route.rs` let it through on credit), that costs credit and the SSRC
        // may take a place.
        let arrived_on = match self.new_ssrc.take() {
            Some((s, ssrc)) if s == slot => Some(ssrc),
            _ => None,
        };
        if arrived_on.is_some() {
            p.ssrcs.spend();
        }
        let cap = self.config.max_ssrcs_per_participant;
        // The main SSRC: str0m rewrites a repair (RTX) packet to its main stream.
        let ssrc = pkt.header.ssrc;
        let (mid, rid) = match p.ssrcs.main(ssrc) {
            Some(v) => v,
            None => {
                let found = p
                    .rtc
                    .direct_api()
                    .stream_rx(&ssrc)
                    .map(|s| (s.mid(), s.rid()));
                let Some((mid, rid)) = found else {
                    self.stats.rtp_dropped_unknown_track += 1;
                    return;
                };
                let main = Stream {
                    mid,
                    rid,
                    repair: false,
                };
                if !p.ssrcs.admit(ssrc, main, cap) {
                    self.stats.rtp_dropped_ssrc_limit += 1;
                    return;
                }
                (mid, rid)
            }
        };
        if let Some(wire) = arrived_on.filter(|w| *w != ssrc) {
            // A repair SSRC. No place left: this packet still goes, the next ones on it are
            // dropped by `route.rs`.
            let repair = Stream {
                mid,
                rid,
                repair: true,
            };
            p.ssrcs.admit(wire, repair, cap);
        }
        let ext = &pkt.header.ext_vals;
        let rtp = TrunkRtp {
            pt: pkt.header.payload_type,
            seq: *pkt.seq_no,
            timestamp: pkt.header.timestamp,
            marker: pkt.header.marker,
            audio_level: ext.audio_level,
            voice_activity: ext.voice_activity,
            video_orientation: ext.video_orientation.map(|o| o as u8),
            payload: pkt.payload,
        };
        self.fan_out(slot, now, now, mid, rid, rtp);
    }

    /// One packet of the track `(slot, mid)`, layer `rid`, to every local subscriber of it,
    /// and across the trunk to every other leg of the call that wants that layer. `slot` is a
    /// local publisher (from [`Sfu::forward`]) or a remote one (from
    /// [`Sfu::handle_trunk_rtp`]: its leg already applied the ingress cap and exported it).
    /// `arrival`: when the packet reached the first node (`now` for a local publisher), what
    /// forwarded copies are timed from.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fan_out(
        &mut self,
        slot: Slot,
        now: Instant,
        arrival: Instant,
        mid: Mid,
        rid: Option<Rid>,
        pkt: TrunkRtp,
    ) {
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        let room_key = p.room;
        let publisher_id = p.id;
        let in_pt = pkt.pt;
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
        let payload_len = pkt.payload.len() as u64;
        if let Some(bitrate) = self.config.max_ingress_bitrate.filter(|_| !p.remote) {
            if !p.ingress.admit(now, payload_len + PACKET_OVERHEAD, bitrate) {
                self.stats.rtp_dropped_ingress_limit += 1;
                return;
            }
        }
        p.rx_rate.add(now, payload_len + PACKET_OVERHEAD);
        if !p.sent_media && !p.remote {
            p.sent_media = true;
            self.events.push_back(Event::FirstMedia {
                room: room_key,
                participant: p.id,
                at: now,
            });
        }
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
        // Only a simulcast track needs to know where keyframes start (the VP8 payload
        // descriptor and the other codecs' headers stay in clear under end-to-end encryption).
        let keyframe = !track.layers.is_empty()
            && in_params.is_some_and(|p| is_keyframe_start(p.spec().codec, &pkt.payload));

        if track.kind == TrackKind::Audio {
            if let (Some(level), Some(room)) = (pkt.audio_level, self.rooms.get_mut(&room_key)) {
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
            audio_level: pkt.audio_level,
            voice_activity: pkt.voice_activity,
            video_orientation: pkt.video_orientation.map(VideoOrientation::from),
            ..Default::default()
        };
        let in_seq = pkt.seq;
        let in_ts = pkt.timestamp;
        // The other legs that want this layer get it once each, before the local copies.
        if !track.demand.is_empty() && !p.remote {
            let legs: Vec<LegId> = track
                .demand
                .iter()
                .filter(|(_, layers)| layers.contains(&rid))
                .map(|(leg, _)| *leg)
                .collect();
            if !legs.is_empty() {
                self.stats.trunk_exported += 1;
                self.trunk_out.push_back(TrunkPacket {
                    room: room_key,
                    publisher: publisher_id,
                    mid,
                    rid,
                    legs,
                    received_at: arrival,
                    rtp: pkt.clone(),
                });
            }
        }
        let nackable = track.kind == TrackKind::Video;
        // A subscriber waits for a keyframe of its target layer that may never come unsolicited.
        let mut want_keyframe = false;

        for &sid in &track.subscribers {
            let Some(sub) = self.subs.get_mut(sid) else {
                continue;
            };
            let OutState::Open(out_mid) = sub.state else {
                continue;
            };
            let Some(s) = self.participants.get_mut(sub.subscriber) else {
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
                    let o = in_params.and_then(|ip| subscriber_pt(&s.rtc, out_mid, ip));
                    sub.pt_map.push((in_pt, o));
                    if o.is_none() {
                        // Said once per subscription and codec: the subscriber's answer
                        // took none of the codecs this publisher sends on this track.
                        self.events.push_back(Event::CodecUnsupported {
                            room: room_key,
                            participant: s.id,
                            publisher: publisher_id,
                            mid,
                            codec: in_params.map_or_else(
                                || format!("payload type {in_pt}"),
                                |ip| ip.spec().codec.to_string(),
                            ),
                        });
                    }
                    o
                }
            };
            let Some(out_pt) = out_pt else {
                self.stats.rtp_dropped_codec_unsupported += 1;
                continue;
            };
            let mut api = s.rtc.direct_api();
            // The sending stream: found by m-line once (a walk over the subscriber's streams
            // in str0m), then by its SSRC (a hash probe). str0m changes a sending stream's
            // SSRC only when asked to (`reset_stream_tx`, never called here) and removes it
            // when its m-line stops, which ends this subscription too.
            let out_ssrc = match sub.out_ssrc {
                Some(ssrc) => ssrc,
                None => match api.stream_tx_by_mid(out_mid, None) {
                    Some(tx) => {
                        // Forwarded as it comes, video too (see `SfuConfig::bwe_initial_bitrate`):
                        // the publisher paced it already.
                        tx.set_unpaced(true);
                        if nackable {
                            // Kept for NACKs as long as the operator asked (str0m: 3 s).
                            tx.set_rtx_cache(
                                self.config.send_buffer_video,
                                self.config.send_history_video,
                                RTX_RATIO_CAP,
                            );
                        } else {
                            // Audio is never resent (not nackable, see above): no RTX cache
                            // (an age of zero makes it inert) and no resend-ratio cap, whose
                            // history str0m otherwise keeps per packet sent, a second's worth
                            // per stream: ~3 KiB per audio subscription at 50 packets/s and a
                            // push per copy (see benches/README.md, "Where the heap goes").
                            tx.set_rtx_cache(0, Duration::ZERO, None);
                        }
                        tx.ssrc()
                    }
                    None => continue,
                },
            };
            let Some(tx) = api.stream_tx(&out_ssrc) else {
                sub.out_ssrc = None;
                continue;
            };
            sub.out_ssrc = Some(out_ssrc);
            if self.config.forward_timing {
                self.forwarded_at
                    .insert((sub.subscriber, *out_ssrc, out_seq as u16), arrival);
            }
            tx.write_rtp(
                RtpWrite::new(out_pt, out_seq.into(), out_ts, now, pkt.payload.clone())
                    .marker(pkt.marker)
                    .ext_vals(ext_vals.clone())
                    .nackable(nackable),
            );
            if sub.last_out.is_none_or(|(s, _, _)| out_seq > s) {
                sub.last_out = Some((out_seq, out_ts, now));
            }
            self.stats.rtp_forwarded += 1;
            self.undriven_copies += 1;
            s.tx_rate.add(now, payload_len + PACKET_OVERHEAD);
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

    /// A subscriber asked for a keyframe on one of its subscription m-lines: ask the
    /// publisher for the layer this subscriber gets (or is switching to).
    pub(crate) fn relay_keyframe_request(
        &mut self,
        now: Instant,
        slot: Slot,
        out_mid: Mid,
        kind: KeyframeRequestKind,
    ) {
        let Some(sub) = self
            .subs
            .on(slot, out_mid)
            .and_then(|sid| self.subs.get(sid))
        else {
            return;
        };
        if sub.state != OutState::Open(out_mid) {
            return;
        }
        let (key, rid) = (sub.track, sub.layer.or(sub.target));
        self.request_keyframe(now, key, rid, kind);
    }

    /// Asks the publisher of `key` for a keyframe on layer `rid`, throttled per layer.
    pub(crate) fn request_keyframe(
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
        let remote = self.participants.get(key.0).is_some_and(|p| p.remote);
        if remote && !track.wanted.contains(&rid) {
            // A layer of a remote track not asked of its leg yet: its keyframe would not cross.
            // The demand for it, next, asks for one (see `Sfu::set_trunk_demand`).
            return;
        }
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
        let Some(p) = self.participants.get_mut(key.0) else {
            return;
        };
        if p.remote {
            // The publisher is on another leg: the request goes there (see `trunk.rs`).
            self.events.push_back(Event::TrunkKeyframeRequest {
                room: p.room,
                publisher: p.id,
                mid: key.1,
                rid,
            });
            match last {
                Some((_, at)) => *at = now,
                None => track.last_keyframe_request.push((rid, now)),
            }
            self.stats.keyframe_requests_relayed += 1;
            return;
        }
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
}

/// The payload type on the subscriber's m-line `out_mid` that carries what the publisher sent
/// with `publisher`'s format: one the subscriber's answer accepted for that m-line. str0m's
/// own match looks at the whole session's codec list, which the answer may have narrowed (a
/// client that takes VP8 only answers without H264): a payload type outside the answer would
/// reach a subscriber that cannot decode it.
fn subscriber_pt(rtc: &str0m::Rtc, out_mid: Mid, publisher: PayloadParams) -> Option<Pt> {
    let accepted = rtc.media(out_mid)?.remote_pts();
    let codecs = rtc.codec_config();
    if let Some(best) = codecs.match_params(publisher) {
        if accepted.contains(&best.pt()) {
            return Some(best.pt());
        }
    }
    // Another entry of the same codec with the same parameters, if the answer took that one.
    codecs
        .params()
        .iter()
        .find(|p| accepted.contains(&p.pt()) && p.spec() == publisher.spec())
        .map(|p| p.pt())
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
