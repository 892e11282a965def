//! The signaling messages of `proto/signal.proto`, generated with prost, with the JSON encoding
//! used on the WebSocket (one text frame per message, `{"<oneof field>": {...}}`).

#![allow(missing_docs, clippy::all)]

/// Generated from `proto/signal.proto` (package `callrelay.signal.v1`).
pub mod signal {
    include!(concat!(env!("OUT_DIR"), "/callrelay.signal.v1.rs"));
}

pub use signal::{client_message, server_message, ClientMessage, ServerMessage};

/// The proto3 JSON form of 64-bit integers: emitted as a JSON string (JavaScript's numbers lose
/// precision above 2^53), accepted as a string or a number.
pub(crate) mod json_int64 {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + Deserialize<'de>,
        D: Deserializer<'de>,
    {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<'a, T> {
            Number(T),
            Text(std::borrow::Cow<'a, str>),
        }
        match Either::<T>::deserialize(d)? {
            Either::Number(n) => Ok(n),
            Either::Text(t) => t.parse().map_err(|_| {
                serde::de::Error::custom(format!("{t:?} is not a 64-bit integer in range"))
            }),
        }
    }
}

/// Largest signaling frame accepted, in bytes; larger frames close the socket.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why a frame is not a valid message.
#[derive(Debug)]
pub struct DecodeError(pub String);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn decode<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, DecodeError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(DecodeError("frame larger than 64 KiB".into()));
    }
    // Exactly one key at the top level, counted on the text itself, so that
    // `{"join":…, "leave":…}` and `{"join":A, "join":B}` are refused rather than silently keeping
    // one of them (a JSON object model keeps the last of two equal keys).
    match serde_json::from_str::<TopLevelKeys>(text) {
        Ok(TopLevelKeys(1)) => {}
        Ok(_) => {
            return Err(DecodeError(
                "a message is an object with exactly one key".into(),
            ))
        }
        Err(e) if e.is_data() => {
            return Err(DecodeError(
                "a message is an object with exactly one key".into(),
            ))
        }
        Err(e) => return Err(DecodeError(e.to_string())),
    }
    // Straight from the text: a field given twice inside the message is an error too.
    serde_json::from_str(text).map_err(|e| DecodeError(e.to_string()))
}

/// The number of keys of a JSON object, duplicates included.
struct TopLevelKeys(usize);

impl<'de> serde::Deserialize<'de> for TopLevelKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Count;
        impl<'de> serde::de::Visitor<'de> for Count {
            type Value = TopLevelKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<TopLevelKeys, A::Error> {
                let mut n = 0;
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {
                    n += 1;
                }
                Ok(TopLevelKeys(n))
            }
        }
        d.deserialize_map(Count)
    }
}

impl ClientMessage {
    /// Parses one text frame.
    pub fn from_json(text: &str) -> Result<ClientMessage, DecodeError> {
        Ok(ClientMessage {
            msg: Some(decode(text)?),
        })
    }

    /// Encodes as one text frame (`{}` for an empty message).
    pub fn to_json(&self) -> String {
        match &self.msg {
            Some(m) => serde_json::to_string(m).expect("generated messages always serialise"),
            None => "{}".into(),
        }
    }
}

impl ServerMessage {
    /// Parses one text frame.
    pub fn from_json(text: &str) -> Result<ServerMessage, DecodeError> {
        Ok(ServerMessage {
            msg: Some(decode(text)?),
        })
    }

    /// Encodes as one text frame (`{}` for an empty message).
    pub fn to_json(&self) -> String {
        match &self.msg {
            Some(m) => serde_json::to_string(m).expect("generated messages always serialise"),
            None => "{}".into(),
        }
    }
}

impl From<client_message::Msg> for ClientMessage {
    fn from(msg: client_message::Msg) -> Self {
        ClientMessage { msg: Some(msg) }
    }
}

impl From<server_message::Msg> for ServerMessage {
    fn from(msg: server_message::Msg) -> Self {
        ServerMessage { msg: Some(msg) }
    }
}

#[cfg(test)]
mod tests {
    use super::signal::*;
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_not_collapsed() {
        for frame in [
            r#"{"leave":{},"leave":{}}"#,
            r#"{"join":{"grant":"a","sdp":"v=0"},"join":{"grant":"b","sdp":"v=0"}}"#,
            r#"{"join":{"grant":"a","grant":"b","sdp":"v=0"}}"#,
            r#"{}"#,
            r#"[]"#,
            r#""join""#,
        ] {
            assert!(ClientMessage::from_json(frame).is_err(), "{frame}");
        }
        assert!(ClientMessage::from_json(r#"{"leave":{}}"#).is_ok());
    }

    #[test]
    fn json_form_is_one_key_per_message() {
        let m = ClientMessage::from(client_message::Msg::Join(Join {
            grant: "g".into(),
            sdp: "v=0".into(),
        }));
        assert_eq!(m.to_json(), r#"{"join":{"grant":"g","sdp":"v=0"}}"#);
        assert_eq!(ClientMessage::from_json(&m.to_json()).unwrap(), m);
        let s = ServerMessage::from(server_message::Msg::Removed(Removed {
            reason: "revoked".into(),
        }));
        assert_eq!(s.to_json(), r#"{"removed":{"reason":"revoked"}}"#);
        let leave = ClientMessage::from_json(r#"{"leave":{}}"#).unwrap();
        assert_eq!(leave.msg, Some(client_message::Msg::Leave(Leave {})));
        let mute = ClientMessage::from_json(r#"{"mute":{"audio_muted":true}}"#).unwrap();
        assert_eq!(
            mute.msg,
            Some(client_message::Msg::Mute(MuteState {
                audio_muted: true,
                video_muted: false
            }))
        );
        let joined = ServerMessage::from(server_message::Msg::Joined(Joined {
            participant_id: "p-1".into(),
            participants: vec![Participant {
                participant_id: "p-2".into(),
                ..Default::default()
            }],
            link_kind: "video".into(),
            sdp: "v=0".into(),
            resume_token: "3q2-7w".into(),
        }));
        assert_eq!(ServerMessage::from_json(&joined.to_json()).unwrap(), joined);
    }

    #[test]
    fn bad_frames_are_refused() {
        for bad in [
            "",
            "null",
            "[]",
            "{}",
            r#"{"nonsense":{}}"#,
            r#"{"join":{"grant":"g"},"leave":{}}"#,
            r#"{"join":{"grant":5}}"#,
            r#"{"join":"x"}"#,
            r#"{"join":{"grant":"g","extra":1}}"#,
            "{\"join\":",
        ] {
            assert!(
                ClientMessage::from_json(bad).is_err(),
                "{bad:?} was accepted"
            );
        }
        let big = format!(
            r#"{{"join":{{"grant":"{}"}}}}"#,
            "x".repeat(MAX_FRAME_BYTES)
        );
        assert!(ClientMessage::from_json(&big).is_err());
    }

    #[test]
    fn field_names_are_accepted_in_both_spellings() {
        let snake = ServerMessage::from_json(
            r#"{"participant_joined":{"participant":{"participant_id":"p-2","user_id":"u-1","audio_muted":true}}}"#,
        )
        .unwrap();
        let camel = ServerMessage::from_json(
            r#"{"participantJoined":{"participant":{"participantId":"p-2","userId":"u-1","audioMuted":true}}}"#,
        )
        .unwrap();
        assert_eq!(snake, camel);
        let Some(server_message::Msg::ParticipantJoined(j)) = &camel.msg else {
            panic!("{camel:?}");
        };
        assert_eq!(j.participant.as_ref().unwrap().participant_id, "p-2");
        let pref = ClientMessage::from_json(
            r#"{"videoPreference":{"participantId":"p-2","maxHeight":180}}"#,
        )
        .unwrap();
        assert_eq!(
            pref.msg,
            Some(client_message::Msg::VideoPreference(VideoPreference {
                participant_id: "p-2".into(),
                max_height: 180,
            }))
        );
        // The relay emits the .proto's names.
        assert_eq!(
            camel.to_json(),
            r#"{"participant_joined":{"participant":{"participant_id":"p-2","user_id":"u-1","name":"","audio_muted":true,"video_muted":false,"clear_media":false}}}"#
        );
    }

    #[test]
    fn a_field_given_in_both_spellings_is_refused() {
        for frame in [
            r#"{"mute":{"audio_muted":true,"audioMuted":false}}"#,
            r#"{"video_preference":{"participant_id":"a","participantId":"b"}}"#,
        ] {
            assert!(ClientMessage::from_json(frame).is_err(), "{frame}");
        }
    }

    #[test]
    fn sixty_four_bit_integers_are_strings_and_numbers_are_accepted() {
        let big = u64::MAX - 1;
        let ping = ClientMessage::from(client_message::Msg::Ping(Ping { nonce: big }));
        assert_eq!(ping.to_json(), format!(r#"{{"ping":{{"nonce":"{big}"}}}}"#));
        assert_eq!(ClientMessage::from_json(&ping.to_json()).unwrap(), ping);
        let as_number = ClientMessage::from_json(r#"{"ping":{"nonce":42}}"#).unwrap();
        assert_eq!(
            as_number.msg,
            Some(client_message::Msg::Ping(Ping { nonce: 42 }))
        );
        for bad in [
            r#"{"ping":{"nonce":"18446744073709551616"}}"#,
            r#"{"ping":{"nonce":"-1"}}"#,
            r#"{"ping":{"nonce":"12x"}}"#,
            r#"{"ping":{"nonce":-1}}"#,
            r#"{"ping":{"nonce":1.5}}"#,
            r#"{"ping":{"nonce":true}}"#,
        ] {
            assert!(ClientMessage::from_json(bad).is_err(), "{bad}");
        }
    }
}
