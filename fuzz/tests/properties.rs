//! Properties (proptest) of the parsers whose input has a spec, beside the fuzz targets: the
//! signaling decoder takes back every message the encoder writes and refuses a frame with two,
//! and a join grant is accepted exactly when its claims meet the spec, over the whole range of
//! `exp` and `iat`. (Link and user ids: `crates/links/src/tests.rs`.)

use std::time::Duration;

use callrelay_fuzz::{sign, SECRET};
use callrelay_proto::client_message::Msg;
use callrelay_proto::signal::{Join, Leave, MuteState, Ping, SessionDescription, VideoPreference};
use callrelay_proto::ClientMessage;
use callrelay_server::auth::Tokens;
use proptest::prelude::*;

fn client_message() -> impl Strategy<Value = Msg> {
    let text = || any::<String>();
    prop_oneof![
        (text(), text()).prop_map(|(grant, sdp)| Msg::Join(Join { grant, sdp })),
        text().prop_map(|sdp| Msg::Offer(SessionDescription { sdp })),
        text().prop_map(|sdp| Msg::Answer(SessionDescription { sdp })),
        (any::<bool>(), any::<bool>()).prop_map(|(audio_muted, video_muted)| {
            Msg::Mute(MuteState {
                audio_muted,
                video_muted,
            })
        }),
        (text(), any::<u32>()).prop_map(|(participant_id, max_height)| {
            Msg::VideoPreference(VideoPreference {
                participant_id,
                max_height,
            })
        }),
        Just(Msg::Leave(Leave {})),
        any::<u64>().prop_map(|nonce| Msg::Ping(Ping { nonce })),
    ]
}

/// The top-level key of a frame `{"<key>":…}`.
fn key(frame: &str) -> &str {
    frame[2..].split('"').next().unwrap_or_default()
}

const LEEWAY: Duration = Duration::from_secs(30);
const LINK: &str = "4bT9xQ2mZr7LpK0aW3cV1e";

/// Times anywhere in i64, and near now (where expiry is decided).
fn time(now: i64) -> impl Strategy<Value = i64> {
    prop_oneof![any::<i64>(), (now - 200)..(now + 200)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_client_message_round_trips(msg in client_message()) {
        let m = ClientMessage::from(msg);
        let frame = m.to_json();
        prop_assert_eq!(ClientMessage::from_json(&frame).ok(), Some(m), "{}", frame);
    }

    #[test]
    fn two_messages_in_one_frame_are_refused(a in client_message(), b in client_message()) {
        let (a, b) = (ClientMessage::from(a).to_json(), ClientMessage::from(b).to_json());
        // Two of the same key are one JSON member (the last wins); not what this is about.
        prop_assume!(key(&a) != key(&b));
        let both = format!("{},{}", &a[..a.len() - 1], &b[1..]);
        prop_assert!(ClientMessage::from_json(&both).is_err(), "{} was accepted", both);
    }

    #[test]
    fn a_grant_is_accepted_exactly_when_its_claims_meet_the_spec(
        (exp, iat) in time(chrono::Utc::now().timestamp()).prop_flat_map(|exp| {
            (Just(exp), prop_oneof![any::<i64>(), Just(exp.saturating_sub(60)), Just(exp.saturating_sub(61)), (exp.saturating_sub(70))..=exp])
        }),
        good_link in any::<bool>(),
    ) {
        let link = if good_link { LINK } else { "4bT9xQ2mZr7LpK0aW3cV1" };
        let claims = format!(
            r#"{{"sub":"alice","aud":"callrelay-grant","exp":{exp},"iat":{iat},"link":"{link}","pid":"p1","kind":"video"}}"#
        );
        let token = sign(br#"{"alg":"HS256","typ":"JWT"}"#, claims.as_bytes(), SECRET);
        let now = chrono::Utc::now().timestamp();
        let deadline = now - LEEWAY.as_secs() as i64;
        // Expiry is checked against the clock: stay clear of the second it changes.
        prop_assume!((i128::from(exp) - i128::from(deadline)).abs() > 2);
        let spec = exp >= deadline && i128::from(exp) - i128::from(iat) <= 60 && good_link;
        let verdict = Tokens::new(SECRET, LEEWAY).verify_grant(&token);
        prop_assert_eq!(verdict.is_ok(), spec, "exp {} iat {} link {}: {:?}", exp, iat, link, verdict);
    }
}
