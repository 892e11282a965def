//! Negotiation: SDP from and to the clients, publication of their tracks, and the relay's own
//! offers that open and stop subscription m-lines.

use std::collections::HashSet;
use std::time::Instant;

use str0m::change::{SdpAnswer, SdpOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid, Rid};

use crate::simulcast::RateMeter;
use crate::slab::{Slot, SubId};
use crate::table::{OutState, Track, TrackKey};
use crate::{guarded, Event, ParticipantId, RemoveReason, RoomKind, Sfu, SfuError, TrackKind};

/// Largest SDP accepted from signaling (threat 16).
const MAX_SDP_LEN: usize = 64 * 1024;

impl Sfu {
    /// A renegotiation offer from the client; returns the answer to send back. Refused
    /// without any change (the call goes on as negotiated before) when the SDP is bad, a voice
    /// room is offered video, the offer sends on more m-lines than
    /// [`SfuConfig::max_tracks_per_participant`][crate::SfuConfig::max_tracks_per_participant],
    /// it has an `m=application` line ([`SfuError::DataChannelsRefused`]), or it changes what
    /// a payload type means ([`SfuError::PayloadTypeChanged`]).
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
        let p = self
            .participants
            .get_mut(slot)
            .expect("by_id only holds occupied slots");
        let room_kind = self.rooms.get(&p.room).map(|r| r.kind);
        let offer = parse_offer(
            offer_sdp,
            room_kind.unwrap_or(RoomKind::Video),
            self.config.max_tracks_per_participant,
        )?;
        let (payload_types, answered_types) =
            p.payload_types.check_offer(&p.answered_types, offer_sdp)?;
        // str0m panics on some hostile offers (e.g. a renegotiation that changes the format
        // parameters of a payload type it already locked, found by the `sdp` fuzz target): that
        // costs this participant only, never the worker thread and everyone on it.
        let answer = match guarded(|| p.rtc.sdp_api().accept_offer(offer)) {
            Some(answer) => answer.map_err(|e| SfuError::Sdp(e.to_string()))?,
            None => {
                self.stats.sessions_panicked += 1;
                self.remove_slot(slot, RemoveReason::Error);
                self.flush(now);
                return Err(SfuError::Sdp("the offer could not be negotiated".into()));
            }
        };
        p.payload_types.commit(payload_types);
        p.answered_types.commit(answered_types);
        // An ICE restart (the offer carries new ICE credentials: a client that moved to another
        // network) gives this side new credentials too (RFC 8445 §9): STUN is routed by our
        // ufrag, so the route follows. The learned addresses stay until ICE replaces them.
        let ufrag = p.rtc.direct_api().local_ice_credentials().ufrag;
        if ufrag != p.ufrag {
            self.by_ufrag.remove(&p.ufrag);
            self.by_ufrag.insert(ufrag.clone(), slot);
            p.ufrag = ufrag;
            self.stats.ice_restarts += 1;
        }
        // SSRCs of m-lines the client stopped or no longer sends on give their places back.
        let rtc = &p.rtc;
        p.ssrcs
            .retain_mids(|mid| rtc.media(mid).is_some_and(|m| m.direction().is_receiving()));
        // accept_offer rolled back our own outstanding offer: redo it after this exchange.
        if p.pending_offer.take().is_some() {
            p.recv_offered.clear();
            let mut stopping = std::mem::take(&mut p.stopping);
            p.to_stop.append(&mut stopping);
            for &sid in &p.subscriptions {
                if let Some(OutState::Negotiating(_)) = self.subs.get(sid).map(|s| s.state) {
                    self.subs.set_state(sid, OutState::ToOpen);
                }
            }
            self.mark_negotiate(slot);
        }
        self.sending_changed(now, slot);
        if self.participants.get(slot).is_some_and(|p| p.remote) {
            self.publish_offered(now, slot, offer_sdp);
        }
        self.mark_dirty(slot);
        self.flush(now);
        Ok(answer.to_sdp_string())
    }

    /// After the client's offer: its tracks on m-lines it no longer sends on (`inactive`,
    /// `recvonly`: a screen share that ended) are unpublished, so the others' m-lines for them
    /// stop and the room hears `TrackUnpublished`; a track it sends on again is published again.
    fn sending_changed(&mut self, now: Instant, slot: Slot) {
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        let (room_key, id) = (p.room, p.id);
        let sends = |rtc: &str0m::Rtc, mid: Mid| {
            rtc.media(mid).is_some_and(|m| m.direction().is_receiving())
        };
        let mut again = Vec::new();
        p.stopped_tracks.retain(|(mid, kind, layers)| {
            let on = sends(&p.rtc, *mid);
            if on {
                again.push((*mid, *kind, layers.clone()));
            }
            !on
        });
        let ended: Vec<TrackKey> = self
            .rooms
            .get(&room_key)
            .map(|r| {
                r.tracks
                    .iter()
                    .copied()
                    .filter(|k| k.0 == slot && !sends(&p.rtc, k.1))
                    .collect()
            })
            .unwrap_or_default();
        for key in ended {
            if let Some(t) = self.unpublish(room_key, id, key) {
                let kind = match t.kind {
                    TrackKind::Audio => MediaKind::Audio,
                    TrackKind::Video => MediaKind::Video,
                };
                if let Some(p) = self.participants.get_mut(slot) {
                    p.stopped_tracks.push((key.1, kind, t.layers));
                }
            }
        }
        for (mid, kind, layers) in again {
            self.publish(now, slot, mid, kind, layers);
        }
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
        let p = self
            .participants
            .get_mut(slot)
            .expect("by_id only holds occupied slots");
        if p.pending_offer.is_none() {
            return Err(SfuError::NoPendingOffer);
        }
        // Checked before the pending offer is taken: a refused answer leaves the offer
        // outstanding, so a corrected answer can still complete it.
        let answered_types = p.answered_types.check(answer_sdp)?;
        let pending = p.pending_offer.take().ok_or(SfuError::NoPendingOffer)?;
        match guarded(|| p.rtc.sdp_api().accept_answer(pending, answer)) {
            Some(Ok(())) => p.answered_types.commit(answered_types),
            // A broken answer costs this participant only.
            Some(Err(e)) => {
                self.remove_slot(slot, RemoveReason::Error);
                self.flush(now);
                return Err(SfuError::Sdp(e.to_string()));
            }
            None => {
                self.stats.sessions_panicked += 1;
                self.remove_slot(slot, RemoveReason::Error);
                self.flush(now);
                return Err(SfuError::Sdp("the answer could not be negotiated".into()));
            }
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
        for (mid, kind) in published {
            self.publish(now, slot, mid, kind, Vec::new());
        }
        // The subscriptions in the answered offer are open.
        let mut opened: Vec<(TrackKey, Option<Rid>)> = Vec::new();
        if let Some(p) = self.participants.get(slot) {
            for &sid in &p.subscriptions {
                let Some(sub) = self.subs.get(sid) else {
                    continue;
                };
                let OutState::Negotiating(m) = sub.state else {
                    continue;
                };
                let (track, target) = (sub.track, sub.target);
                self.subs.set_state(sid, OutState::Open(m));
                if self.tracks.get(&track).map(|t| t.kind) == Some(TrackKind::Video) {
                    opened.push((track, target));
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

    /// The payload types, in `subscriber`'s numbering, of the codecs the publisher of `key`
    /// negotiated on its m-line, with their RTX (empty when unknown: offer everything).
    fn forwardable_pts(&self, subscriber: Slot, key: TrackKey) -> Vec<u8> {
        let (Some(s), Some(p)) = (
            self.participants.get(subscriber),
            self.participants.get(key.0),
        ) else {
            return Vec::new();
        };
        let Some(media) = p.rtc.media(key.1) else {
            return Vec::new();
        };
        let published = media.remote_pts();
        let theirs = p.rtc.codec_config();
        let ours = s.rtc.codec_config();
        let mut keep = Vec::new();
        for pp in theirs
            .params()
            .iter()
            .filter(|pp| published.contains(&pp.pt()))
        {
            let matched = ours.match_params(*pp).map(|m| m.pt());
            for sp in ours.params() {
                if Some(sp.pt()) == matched || sp.spec() == pp.spec() {
                    keep.push(*sp.pt());
                    if let Some(rtx) = sp.resend() {
                        keep.push(*rtx);
                    }
                }
            }
        }
        keep
    }

    pub(crate) fn mark_negotiate(&mut self, slot: Slot) {
        if let Some(p) = self.participants.get_mut(slot) {
            if !p.negotiate {
                p.negotiate = true;
                self.to_negotiate.push(slot);
            }
        }
    }

    /// A participant's receiving m-line became a published track: everyone else in the
    /// room subscribes to it (their next relay offer opens it).
    pub(crate) fn publish(
        &mut self,
        now: Instant,
        slot: Slot,
        mid: Mid,
        kind: MediaKind,
        layers: Vec<Rid>,
    ) {
        let p = self
            .participants
            .get(slot)
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
        // Offers over the cap are refused before str0m sees them (`parse_offer`); this holds
        // whatever str0m makes of an offer: no more tracks than the cap on m-lines that are
        // still received. A walk over the room's tracks, once per new m-line.
        let live = room
            .tracks
            .iter()
            .filter(|k| k.0 == slot)
            .filter(|k| {
                p.rtc
                    .media(k.1)
                    .is_some_and(|m| m.direction().is_receiving())
            })
            .count();
        if live >= self.config.max_tracks_per_participant {
            return;
        }
        let others: Vec<Slot> = room
            .members
            .iter()
            .copied()
            .filter(|s| *s != slot)
            .filter(|s| self.participants.get(*s).is_some_and(|p| p.receives))
            .collect();
        room.tracks.push(key);
        let target = layers.first().copied();
        let rates = vec![RateMeter::default(); layers.len().max(1)];
        self.tracks.insert(
            key,
            Track {
                kind,
                layers,
                subscribers: Vec::with_capacity(others.len()),
                last_keyframe_request: Vec::new(),
                rates,
                demand: Vec::new(),
                wanted: Vec::new(),
            },
        );
        for s in others {
            self.subscribe(now, key, s, target);
            self.mark_negotiate(s);
        }
        // A viewer waiting for this publisher (or for anyone) gets it on its lines.
        self.bind_viewers(now, room_key);
        self.events.push_back(Event::TrackPublished {
            room: room_key,
            participant: id,
            mid,
            kind,
        });
    }

    /// Sends a relay offer to `slot` if subscriptions wait for m-lines or must be stopped,
    /// unless an offer is already outstanding (then this runs again when it is answered).
    pub(crate) fn negotiate(&mut self, slot: Slot) {
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        p.negotiate = false;
        if p.pending_offer.is_some() {
            return;
        }
        // Subscriptions waiting for an m-line, with their track's kind and publisher's id.
        let mut to_open: Vec<(SubId, TrackKey, TrackKind, ParticipantId)> = Vec::new();
        let p = self.participants.get(slot).expect("checked occupied above");
        for &sid in &p.subscriptions {
            let Some(sub) = self.subs.get(sid) else {
                continue;
            };
            if sub.state != OutState::ToOpen {
                continue;
            }
            let Some(t) = self.tracks.get(&sub.track) else {
                continue;
            };
            if let Some(publisher) = self.participants.get(sub.track.0) {
                to_open.push((sid, sub.track, t.kind, publisher.id));
            }
        }
        let p = self
            .participants
            .get_mut(slot)
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
        let mut opened: Vec<(SubId, Mid, TrackKey)> = Vec::with_capacity(to_open.len());
        for (sid, key, kind, publisher) in to_open {
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
            opened.push((sid, mid, key));
        }
        if !api.has_changes() {
            return;
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        let id = p.id;
        p.pending_offer = Some(pending);
        let mut sdp = offer.to_sdp_string();
        for &(sid, mid, key) in &opened {
            self.subs.set_state(sid, OutState::Negotiating(mid));
            // Each subscription's m-line offers only the codecs its publisher negotiated: str0m
            // fills every m-line from the session's codecs, and a subscriber that picked one the
            // publisher never sends would get nothing (`Event::CodecUnsupported`).
            let keep = self.forwardable_pts(slot, key);
            if !keep.is_empty() {
                sdp = restrict_pts(&sdp, mid, &keep);
            }
        }
        self.events.push_back(Event::SdpOffer {
            participant: id,
            sdp,
        });
        self.mark_dirty(slot);
    }
}

/// Size check, parse, the voice-room rule and the track cap, before anything is created.
pub(crate) fn parse_offer(
    sdp: &str,
    room_kind: RoomKind,
    max_tracks: usize,
) -> Result<SdpOffer, SfuError> {
    if sdp.len() > MAX_SDP_LEN {
        return Err(SfuError::SdpTooLarge);
    }
    if room_kind == RoomKind::Voice && has_active_video(sdp) {
        return Err(SfuError::VideoNotAllowed);
    }
    let offered = sending_media_lines(sdp);
    if offered > max_tracks {
        return Err(SfuError::TooManyTracks {
            offered,
            max: max_tracks,
        });
    }
    // The relay carries no data channels (threat 15): no SCTP association is ever negotiated.
    if has_application_line(sdp) {
        return Err(SfuError::DataChannelsRefused);
    }
    SdpOffer::from_sdp_string(sdp).map_err(|e| SfuError::Sdp(e.to_string()))
}

/// Audio and video m-lines the offerer sends on, as str0m reads them: the first direction
/// attribute of the section is `sendrecv` or `sendonly` (none means inactive), and the line is
/// not rejected (port 0 counts when the line is in a BUNDLE group: a bundle-only line).
fn sending_media_lines(sdp: &str) -> usize {
    let bundled: HashSet<&str> = sdp
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=group:BUNDLE"))
        .flat_map(str::split_whitespace)
        .collect();
    let mut count = 0;
    // Each section: its m= line and the lines up to the next one.
    for section in sdp.split("\nm=").skip(1) {
        let mut lines = section.lines().map(str::trim_end);
        let mut fields = lines.next().unwrap_or_default().split_whitespace();
        let (kind, port) = (fields.next(), fields.next());
        if !matches!(kind, Some("audio" | "video")) {
            continue;
        }
        let mut mid = None;
        let mut direction = None;
        for l in lines {
            if let Some(m) = l.strip_prefix("a=mid:") {
                mid.get_or_insert(m.trim());
            }
            let d = l.strip_prefix("a=").unwrap_or_default();
            if direction.is_none() && matches!(d, "sendrecv" | "sendonly" | "recvonly" | "inactive")
            {
                direction = Some(d);
            }
        }
        let enabled = port != Some("0") || mid.is_some_and(|m| bundled.contains(&m));
        if enabled && matches!(direction, Some("sendrecv" | "sendonly")) {
            count += 1;
        }
    }
    count
}

/// Whether an SDP has an `m=application` line (a data channel), enabled or not.
fn has_application_line(sdp: &str) -> bool {
    sdp.lines().any(|l| l.starts_with("m=application"))
}

/// Whether an SDP has a video m-line that is not disabled (port 0).
fn has_active_video(sdp: &str) -> bool {
    sdp.lines().any(|l| {
        l.strip_prefix("m=video ")
            .and_then(|rest| rest.split_whitespace().next())
            .is_some_and(|port| port != "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// THREATS 30: a panic inside str0m costs its participant only. The relay no longer lets
    /// the one known panicking input reach str0m (see `crate::payload_types`), so this test
    /// forgets the participant's payload-type history to let it through, as an unknown str0m
    /// bug would.
    #[test]
    fn a_panic_in_str0m_removes_only_its_participant() {
        use crate::{RoomKey, SfuConfig};
        let input = include_bytes!("../../../fuzz/corpus/sdp/crash-str0m-pt-locked-multiple-times");
        let rest = &input[1..];
        let nul = rest.iter().position(|&b| b == 0).expect("two SDPs");
        let first = String::from_utf8_lossy(&rest[..nul]).into_owned();
        let second = String::from_utf8_lossy(&rest[nul + 1..]).into_owned();
        let now = Instant::now();
        let mut sfu = Sfu::new(SfuConfig::new("127.0.0.1:3478".parse().unwrap()), [7; 32]);
        let (room, kind) = (RoomKey(1), RoomKind::Video);
        sfu.add_participant(now, room, ParticipantId(1), kind, None)
            .expect("the first participant joins");
        sfu.add_participant(now, room, ParticipantId(2), kind, Some(&first))
            .expect("the second joins with the first SDP");
        while sfu.poll_event().is_some() {}
        while sfu.poll_transmit().is_some() {}
        // Checked, it is refused without reaching str0m.
        assert_eq!(
            sfu.handle_sdp_offer(now, ParticipantId(2), &second),
            Err(SfuError::PayloadTypeChanged { pt: 114 })
        );
        assert_eq!(sfu.stats().sessions_panicked, 0);
        // Unchecked, str0m panics; the panic is caught and costs participant 2 alone.
        let slot = sfu.by_id[&ParticipantId(2)];
        sfu.participants.get_mut(slot).unwrap().payload_types = Default::default();
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let result = sfu.handle_sdp_offer(now, ParticipantId(2), &second);
        std::panic::set_hook(hook);
        assert!(matches!(result, Err(SfuError::Sdp(_))), "{result:?}");
        assert_eq!(sfu.stats().sessions_panicked, 1, "str0m panicked");
        assert_eq!(sfu.room_members(room), vec![ParticipantId(1)]);
        let removed: Vec<Event> = std::iter::from_fn(|| sfu.poll_event())
            .filter(|e| matches!(e, Event::Removed { .. }))
            .collect();
        assert_eq!(
            removed.len(),
            1,
            "only participant 2 is removed: {removed:?}"
        );
        assert_eq!(sfu.participant_count(), 1);
    }

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
    fn sending_lines_are_counted_as_str0m_reads_them() {
        let sdp = "v=0\r\n\
            a=group:BUNDLE 0 1 2 3 4 6\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendonly\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=recvonly\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:3\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:4\r\na=inactive\r\na=sendonly\r\n\
            m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:5\r\na=sendonly\r\n\
            m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=mid:6\r\na=bundle-only\r\na=sendonly\r\n\
            m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:7\r\na=sendrecv\r\n";
        // 0 and 1 send; 2 receives; 3 has no direction (inactive); 4's first direction wins;
        // 5 is rejected; 6 is bundle-only; 7 is no track.
        assert_eq!(sending_media_lines(sdp), 3);
        assert!(matches!(
            parse_offer(sdp, RoomKind::Video, 2),
            Err(SfuError::TooManyTracks { offered: 3, max: 2 })
        ));
    }
}

/// `sdp` with the m-section of `mid` offering only the payload types in `keep` (its `m=` format
/// list, and the `rtpmap`, `fmtp` and `rtcp-fb` lines of the others dropped). Unchanged when
/// that would leave the section with none.
fn restrict_pts(sdp: &str, mid: Mid, keep: &[u8]) -> String {
    let lines: Vec<&str> = sdp.split("\r\n").collect();
    let starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("m="))
        .map(|(i, _)| i)
        .collect();
    let want = format!("a=mid:{mid}");
    let Some((start, end)) = starts.iter().enumerate().find_map(|(k, &i)| {
        let end = starts.get(k + 1).copied().unwrap_or(lines.len());
        lines[i..end].contains(&want.as_str()).then_some((i, end))
    }) else {
        return sdp.to_owned();
    };
    let mut m = lines[start].split(' ');
    let head: Vec<&str> = m.by_ref().take(3).collect();
    let formats: Vec<&str> = m.collect();
    let kept: Vec<&str> = formats
        .iter()
        .copied()
        .filter(|f| f.parse::<u8>().is_ok_and(|pt| keep.contains(&pt)))
        .collect();
    if kept.is_empty() || kept.len() == formats.len() || head.len() < 3 {
        return sdp.to_owned();
    }
    let dropped = |line: &str| {
        ["a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"].iter().any(|p| {
            line.strip_prefix(p)
                .and_then(|rest| rest.split([' ', '/']).next())
                .and_then(|pt| pt.parse::<u8>().ok())
                .is_some_and(|pt| !keep.contains(&pt))
        })
    };
    let mut out: Vec<String> = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if i == start {
            out.push(format!("{} {}", head.join(" "), kept.join(" ")));
        } else if i > start && i < end && dropped(line) {
            continue;
        } else {
            out.push((*line).to_owned());
        }
    }
    out.join("\r\n")
}

#[cfg(test)]
mod restrict_tests {
    use super::*;

    #[test]
    fn only_the_kept_payload_types_stay_in_that_section() {
        let sdp =
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 102 103\r\na=mid:1\r\na=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 nack\r\na=rtpmap:97 rtx/90000\r\na=fmtp:97 apt=96\r\na=rtpmap:102 H264/90000\r\n\
a=fmtp:102 packetization-mode=1\r\na=rtpmap:103 rtx/90000\r\na=fmtp:103 apt=102\r\n";
        let out = restrict_pts(sdp, Mid::from("1"), &[102, 103]);
        assert!(
            out.contains("m=video 9 UDP/TLS/RTP/SAVPF 102 103\r\n"),
            "{out}"
        );
        assert!(!out.contains("VP8") && !out.contains("apt=96") && !out.contains("rtcp-fb:96"));
        assert!(out.contains("a=fmtp:103 apt=102") && out.contains("opus/48000/2"));
        // Nothing in common, or another mid: unchanged.
        assert_eq!(restrict_pts(sdp, Mid::from("1"), &[45]), sdp);
        assert_eq!(restrict_pts(sdp, Mid::from("7"), &[102]), sdp);
    }
}
