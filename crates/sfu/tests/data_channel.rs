//! Data channels (THREATS 15): the relay carries none. An offer with an `m=application` line
//! is refused with `SfuError::DataChannelsRefused` ("this relay carries no data channels"), at
//! join and in a renegotiation, before str0m sees it, so no SCTP association is ever
//! negotiated. The refusal changes nothing: the participant's call and everyone else's carry on.
//! Neither the web page, `callrelay-client` nor the load generator opens a data channel.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind, SfuError};
use common::World;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// An offer from a fresh client that sends audio and opens a data channel (str0m's own
/// `add_channel`, as a browser's `createDataChannel` would).
fn offer_with_channel(w: &World) -> String {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:29999".parse().unwrap(), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_channel("chat".into());
    let (offer, _pending) = api.apply().expect("an offer");
    let sdp = offer.to_sdp_string();
    assert!(sdp.contains("m=application"), "{sdp}");
    sdp
}

#[test]
fn a_join_offering_a_data_channel_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let a = w.join(1, 1, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 1, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    let events = w.events.len();

    let sdp = offer_with_channel(&w);
    let now = w.now;
    let err = w
        .sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(9),
            RoomKind::Video,
            Some(&sdp),
        )
        .expect_err("an offer with a data channel is refused");
    assert_eq!(err, SfuError::DataChannelsRefused);
    assert!(
        err.to_string()
            .contains("this relay carries no data channels"),
        "{err}"
    );
    assert_eq!(w.sfu.participant_count(), 2);
    assert_eq!(w.sfu.room_members(RoomKey(1)).len(), 2);
    w.drain();
    assert_eq!(w.events.len(), events, "no event for a refused join");

    // A munged offer (an m=application line added by hand) is refused the same way.
    let mut munged = offer_with_channel(&w);
    let start = munged.find("m=application").expect("application line");
    munged.truncate(start);
    assert!(!munged.contains("m=application"));
    munged.push_str("m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:5\r\na=sctp-port:5000\r\n");
    let now = w.now;
    let err = w
        .sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(10),
            RoomKind::Video,
            Some(&munged),
        )
        .expect_err("a munged data channel is refused");
    assert_eq!(err, SfuError::DataChannelsRefused);
    assert_eq!(w.sfu.participant_count(), 2);

    // The call of a and b carries on, both ways.
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
    assert!(w
        .events_matching(|e| matches!(e, Event::Removed { .. } | Event::ParticipantLeft { .. }))
        .is_empty());
}

#[test]
fn a_renegotiation_adding_a_data_channel_is_refused_and_the_call_carries_on() {
    let mut w = World::new();
    let a = w.join(1, 3, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 3, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(5);

    // a opens a data channel in the middle of the call.
    let c = &mut w.clients[a];
    let mut api = c.rtc.sdp_api();
    api.add_channel("chat".into());
    let (sdp, pending) = api.apply().expect("offer");
    let sdp = sdp.to_sdp_string();
    assert!(sdp.contains("m=application"), "{sdp}");
    let now = w.now;
    let err = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &sdp)
        .expect_err("a data channel is refused");
    assert_eq!(err, SfuError::DataChannelsRefused);
    assert!(
        err.to_string()
            .contains("this relay carries no data channels"),
        "{err}"
    );
    // The client drops its offer (str0m applies changes only with an answer).
    drop(pending);
    w.drain();
    assert!(w
        .events_matching(|e| matches!(e, Event::Removed { .. } | Event::ParticipantLeft { .. }))
        .is_empty());
    assert_eq!(w.sfu.participant_count(), 2);

    // Both calls carry on, both ways.
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 15);
    assert_eq!(w.received_from(b, a, 0xB0), 15);
    assert_eq!(w.received_from(a, b, 0xA0), 15);
    assert_eq!(w.received_from(a, b, 0xB0), 15);
}
