//! What a client knows of the call from signaling: who is in it, the tracks each of them
//! publishes (microphone, camera, screen), and who shares their screen. Sans-IO: fed the relay's
//! messages in order ([`CallModel::handle`]); [`crate::Client`] keeps one up to date.

use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::Joined;

use crate::TrackKind;

/// What a published track carries, as the relay's `track_published{source}` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TrackSource {
    /// Audio from a microphone.
    Microphone,
    /// Video from a camera.
    Camera,
    /// A shared screen: the second video track of the call's screen sharer.
    Screen,
}

impl TrackSource {
    /// The wire name: `microphone`, `camera` or `screen`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrackSource::Microphone => "microphone",
            TrackSource::Camera => "camera",
            TrackSource::Screen => "screen",
        }
    }

    /// From the wire; a source this client does not know is taken by its kind (a newer relay
    /// may name more).
    fn parse(source: &str, kind: TrackKind) -> TrackSource {
        match (source, kind) {
            ("screen", _) => TrackSource::Screen,
            ("camera", _) | (_, TrackKind::Video) => TrackSource::Camera,
            _ => TrackSource::Microphone,
        }
    }
}

/// A track another participant publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteTrack {
    /// The publisher (`p-<16 hex>`): the msid stream id of the m-lines it comes on.
    pub participant_id: String,
    /// Audio or video.
    pub kind: TrackKind,
    /// The publisher's own mid for it (not the subscriber's m-line).
    pub mid: String,
    /// Microphone, camera or screen.
    pub source: TrackSource,
}

/// The call as signaling has described it so far.
#[derive(Debug, Clone, Default)]
pub struct CallModel {
    /// Everyone else in the call, in the order they were announced.
    participants: Vec<String>,
    /// Their tracks, in the order published.
    tracks: Vec<RemoteTrack>,
    /// Who shares their screen (ourselves included).
    sharer: Option<String>,
}

impl CallModel {
    /// The model at `joined`: who was already there (their tracks follow as `track_published`).
    pub fn new(joined: &Joined) -> CallModel {
        CallModel {
            participants: joined
                .participants
                .iter()
                .map(|p| p.participant_id.clone())
                .collect(),
            ..CallModel::default()
        }
    }

    /// Applies one signaling message from the relay (others than the ones below change nothing).
    pub fn handle(&mut self, msg: &Msg) {
        match msg {
            Msg::ParticipantJoined(j) => {
                if let Some(p) = &j.participant {
                    if !self.participants.contains(&p.participant_id) {
                        self.participants.push(p.participant_id.clone());
                    }
                }
            }
            Msg::ParticipantLeft(l) => {
                self.participants.retain(|p| *p != l.participant_id);
                self.tracks.retain(|t| t.participant_id != l.participant_id);
                if self.sharer.as_ref() == Some(&l.participant_id) {
                    self.sharer = None;
                }
            }
            Msg::TrackPublished(t) => {
                let kind = if t.kind == "audio" {
                    TrackKind::Audio
                } else {
                    TrackKind::Video
                };
                let track = RemoteTrack {
                    participant_id: t.participant_id.clone(),
                    kind,
                    mid: t.mid.clone(),
                    source: TrackSource::parse(&t.source, kind),
                };
                // The same track announced again replaces the old entry.
                match self
                    .tracks
                    .iter_mut()
                    .find(|o| o.participant_id == track.participant_id && o.mid == track.mid)
                {
                    Some(old) => *old = track,
                    None => self.tracks.push(track),
                }
            }
            Msg::TrackUnpublished(t) => self
                .tracks
                .retain(|o| !(o.participant_id == t.participant_id && o.mid == t.mid)),
            Msg::ScreenShare(s) => {
                if s.active {
                    self.sharer = Some(s.participant_id.clone());
                } else if self.sharer.as_ref() == Some(&s.participant_id) {
                    self.sharer = None;
                }
            }
            _ => {}
        }
    }

    /// Everyone else in the call.
    pub fn participants(&self) -> &[String] {
        &self.participants
    }

    /// The others' published tracks.
    pub fn tracks(&self) -> &[RemoteTrack] {
        &self.tracks
    }

    /// Who shares their screen now, if anyone (our own id when we do).
    pub fn screen_sharer(&self) -> Option<&str> {
        self.sharer.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callrelay_proto::signal::{
        Participant, ParticipantJoined, ParticipantLeft, ScreenShared, TrackPublished,
        TrackUnpublished,
    };

    fn published(p: &str, kind: &str, mid: &str, source: &str) -> Msg {
        Msg::TrackPublished(TrackPublished {
            participant_id: p.into(),
            kind: kind.into(),
            mid: mid.into(),
            source: source.into(),
        })
    }

    #[test]
    fn follows_tracks_shares_and_leaves() {
        let joined = Joined {
            participants: vec![Participant {
                participant_id: "p-a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut m = CallModel::new(&joined);
        m.handle(&published("p-a", "audio", "0", "microphone"));
        m.handle(&published("p-a", "video", "1", "camera"));
        m.handle(&Msg::ParticipantJoined(ParticipantJoined {
            participant: Some(Participant {
                participant_id: "p-b".into(),
                ..Default::default()
            }),
        }));
        m.handle(&Msg::ScreenShare(ScreenShared {
            participant_id: "p-a".into(),
            active: true,
        }));
        m.handle(&published("p-a", "video", "2", "screen"));
        assert_eq!(m.participants(), ["p-a", "p-b"]);
        let sources: Vec<_> = m
            .tracks()
            .iter()
            .map(|t| (t.mid.as_str(), t.source))
            .collect();
        assert_eq!(
            sources,
            [
                ("0", TrackSource::Microphone),
                ("1", TrackSource::Camera),
                ("2", TrackSource::Screen)
            ]
        );
        assert_eq!(m.screen_sharer(), Some("p-a"));

        // The share ends: the claim and the track go; a stale "inactive" from another changes
        // nothing.
        m.handle(&Msg::ScreenShare(ScreenShared {
            participant_id: "p-b".into(),
            active: false,
        }));
        assert_eq!(m.screen_sharer(), Some("p-a"));
        m.handle(&Msg::TrackUnpublished(TrackUnpublished {
            participant_id: "p-a".into(),
            mid: "2".into(),
        }));
        m.handle(&Msg::ScreenShare(ScreenShared {
            participant_id: "p-a".into(),
            active: false,
        }));
        assert_eq!(m.tracks().len(), 2);
        assert_eq!(m.screen_sharer(), None);

        // Leaving takes the participant's tracks.
        m.handle(&Msg::ParticipantLeft(ParticipantLeft {
            participant_id: "p-a".into(),
            reason: "left".into(),
        }));
        assert_eq!(m.participants(), ["p-b"]);
        assert!(m.tracks().is_empty());
    }

    #[test]
    fn an_unknown_source_is_taken_by_kind() {
        let mut m = CallModel::default();
        m.handle(&published("p-a", "video", "1", "hologram"));
        m.handle(&published("p-a", "audio", "0", ""));
        assert_eq!(m.tracks()[0].source, TrackSource::Camera);
        assert_eq!(m.tracks()[1].source, TrackSource::Microphone);
    }
}
