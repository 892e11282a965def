//! Viewers: participants that only receive, on the receive-only m-lines of their own offer
//! (a WHEP player, which has no channel for the relay's offers). Each of its lines carries one
//! track of one publisher: the one it asked for, else the first in the room with a track of
//! that kind. When that track ends, the line is bound again to what is there, on the same
//! m-line: the viewer is never renegotiated.

use std::time::Instant;

use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

use crate::slab::{Slot, SubId};
use crate::table::{OutState, TrackKey};
use crate::{ParticipantId, RoomKey, RoomKind, Sfu, SfuError, TrackKind};

/// A viewer's lines and whom it watches.
#[derive(Debug, Default)]
pub(crate) struct Viewer {
    /// The publisher asked for (`None`: the first one with media).
    pub(crate) watch: Option<ParticipantId>,
    /// Its receive-only m-lines, with the subscription each carries (`None`: unbound).
    pub(crate) lines: Vec<(Mid, MediaKind, Option<SubId>)>,
}

impl Sfu {
    /// Adds a viewer (a WHEP player, draft-ietf-wish-whep): its offer may only receive. The
    /// answer sends on its lines what `watch` publishes (or, without `watch`, the first
    /// participant of the room with media); it is never offered anything. Refused when the
    /// offer sends on any line.
    pub fn add_viewer(
        &mut self,
        now: Instant,
        room: RoomKey,
        participant: ParticipantId,
        kind: RoomKind,
        offer_sdp: &str,
        watch: Option<ParticipantId>,
    ) -> Result<String, SfuError> {
        if offer_sends(offer_sdp) {
            return Err(SfuError::Sdp(
                "a viewer's offer only receives (recvonly m-lines)".into(),
            ));
        }
        let answer = self
            .add(now, room, participant, kind, Some(offer_sdp), false, false)?
            .unwrap_or_default();
        let Some(&slot) = self.by_id.get(&participant) else {
            return Ok(answer);
        };
        if let Some(p) = self.participants.get_mut(slot) {
            let lines = offer_mids(offer_sdp)
                .into_iter()
                .filter_map(|mid| {
                    let m = p.rtc.media(mid)?;
                    m.direction().is_sending().then(|| (mid, m.kind(), None))
                })
                .collect();
            p.viewer = Some(Viewer { watch, lines });
        }
        self.bind_viewers(now, room);
        self.flush(now);
        Ok(answer)
    }

    /// Binds the unbound lines of every viewer in `room` to tracks that are there.
    pub(crate) fn bind_viewers(&mut self, now: Instant, room_key: RoomKey) {
        let Some(room) = self.rooms.get(&room_key) else {
            return;
        };
        let members = room.members.clone();
        let tracks = room.tracks.clone();
        for &slot in &members {
            let Some(v) = self.participants.get(slot).and_then(|p| p.viewer.as_ref()) else {
                continue;
            };
            if v.lines.iter().all(|l| l.2.is_some()) {
                continue;
            }
            // Whom it watches: whom its bound lines show, else whom it asked for, else the
            // first member (in join order) that publishes.
            let bound: Option<Slot> = v
                .lines
                .iter()
                .filter_map(|l| l.2)
                .find_map(|sid| self.subs.get(sid).map(|s| s.track.0));
            let asked = v.watch.and_then(|id| self.by_id.get(&id).copied());
            let publisher = bound.or(asked).or_else(|| {
                members
                    .iter()
                    .copied()
                    .find(|m| *m != slot && tracks.iter().any(|k| k.0 == *m))
            });
            let Some(publisher) = publisher else {
                continue;
            };
            let unbound: Vec<(usize, MediaKind)> = v
                .lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.2.is_none())
                .map(|(i, l)| (i, l.1))
                .collect();
            let taken: Vec<TrackKey> = v
                .lines
                .iter()
                .filter_map(|l| l.2)
                .filter_map(|sid| self.subs.get(sid).map(|s| s.track))
                .collect();
            let mut used = taken;
            for (i, kind) in unbound {
                let want = if kind == MediaKind::Audio {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                };
                let Some(key) = tracks.iter().copied().find(|k| {
                    k.0 == publisher
                        && !used.contains(k)
                        && self.tracks.get(k).is_some_and(|t| t.kind == want)
                }) else {
                    continue;
                };
                let target = self
                    .tracks
                    .get(&key)
                    .and_then(|t| t.layers.first().copied());
                let Some(sid) = self.subscribe(now, key, slot, target) else {
                    continue;
                };
                let mid = match self
                    .participants
                    .get_mut(slot)
                    .and_then(|p| p.viewer.as_mut())
                {
                    Some(v) => {
                        v.lines[i].2 = Some(sid);
                        v.lines[i].0
                    }
                    None => continue,
                };
                // Its m-line is negotiated already: it carries media at once.
                self.subs.set_state(sid, OutState::Open(mid));
                used.push(key);
                if want == TrackKind::Video {
                    self.request_keyframe(now, key, target, KeyframeRequestKind::Pli);
                }
            }
        }
    }

    /// The subscription `sid` of viewer `slot` ended with its track: its line waits for the
    /// next binding (see [`Sfu::bind_viewers`]).
    pub(crate) fn viewer_line_ended(&mut self, slot: Slot, sid: SubId) -> bool {
        let Some(v) = self
            .participants
            .get_mut(slot)
            .and_then(|p| p.viewer.as_mut())
        else {
            return false;
        };
        for l in &mut v.lines {
            if l.2 == Some(sid) {
                l.2 = None;
            }
        }
        true
    }
}

/// The `a=mid` of each m-section of an SDP, in order.
fn offer_mids(sdp: &str) -> Vec<Mid> {
    sdp.lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .map(|m| Mid::from(m.trim()))
        .collect()
}

/// Whether an audio or video section of the offer sends (`sendonly`, `sendrecv`, or no
/// direction, which means `sendrecv`).
fn offer_sends(sdp: &str) -> bool {
    let mut sections: Vec<(bool, Option<&str>)> = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let media = m.starts_with("audio") || m.starts_with("video");
            let port_zero = m.split_whitespace().nth(1) == Some("0");
            sections.push((media && !port_zero, None));
        } else if let Some(last) = sections.last_mut() {
            if let Some(d) = line
                .strip_prefix("a=")
                .filter(|d| matches!(*d, "sendonly" | "recvonly" | "sendrecv" | "inactive"))
            {
                last.1 = Some(d);
            }
        }
    }
    sections
        .iter()
        .any(|(media, dir)| *media && matches!(dir, None | Some("sendonly" | "sendrecv")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_viewer_offer_only_receives() {
        let recv = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\n";
        assert!(!offer_sends(recv));
        assert_eq!(offer_mids(recv), vec![Mid::from("0"), Mid::from("1")]);
        assert!(offer_sends(
            &recv.replace("a=mid:1\r\na=recvonly", "a=mid:1\r\na=sendrecv")
        ));
        assert!(offer_sends(
            "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n"
        ));
        // A stopped line and a data channel do not count.
        assert!(!offer_sends(
            "v=0\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na=sendonly\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\na=mid:1\r\n"
        ));
    }
}
