//! Per-participant cap on published tracks (THREATS 22, issue #12 finding 9): an offer that
//! sends on more audio and video m-lines than `max_tracks_per_participant` is refused with
//! `SfuError::TooManyTracks`, at join and in a renegotiation, without changing anything: the
//! participant's call and everyone else's carry on. The relay's own m-lines in a client's offer
//! (its subscriptions, which the client only receives on) do not count.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind, SfuError};
use common::World;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// An offer from a fresh client that sends on `audio` audio and `video` video m-lines.
fn offer(w: &World, audio: usize, video: usize) -> String {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:29999".parse().unwrap(), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    for _ in 0..audio {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    for _ in 0..video {
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    }
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

#[test]
fn a_join_offering_more_tracks_than_the_cap_is_refused_and_changes_nothing() {
    let mut w = World::new();
    let a = w.join(1, 1, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 1, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    let events = w.events.len();

    let sdp = offer(&w, 3, 2);
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
        .expect_err("five tracks are over the cap of four");
    assert_eq!(err, SfuError::TooManyTracks { offered: 5, max: 4 });
    assert!(err.to_string().contains("at most 4"), "{err}");
    assert_eq!(w.sfu.participant_count(), 2);
    assert_eq!(w.sfu.room_members(RoomKey(1)).len(), 2);
    w.drain();
    assert_eq!(w.events.len(), events, "no event for a refused join");

    // Four is fine (a fresh room, so the room's own size does not matter).
    let sdp = offer(&w, 2, 2);
    let now = w.now;
    w.sfu
        .add_participant(
            now,
            RoomKey(2),
            ParticipantId(10),
            RoomKind::Video,
            Some(&sdp),
        )
        .expect("four tracks are within the cap");

    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
}

#[test]
fn a_renegotiation_over_the_cap_is_refused_and_the_call_carries_on() {
    let mut w = World::new();
    let a = w.join(1, 3, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 3, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(5);

    // a offers three more microphones: five sending lines, next to the two of b it receives.
    let c = &mut w.clients[a];
    let mut api = c.rtc.sdp_api();
    for _ in 0..3 {
        api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    }
    let (sdp, pending) = api.apply().expect("offer");
    let now = w.now;
    let err = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &sdp.to_sdp_string())
        .expect_err("over the cap");
    assert_eq!(err, SfuError::TooManyTracks { offered: 5, max: 4 });
    // The client drops its offer (str0m applies changes only with an answer).
    drop(pending);
    w.drain();
    assert!(
        w.events_matching(|e| matches!(e, Event::TrackPublished { participant, .. } if *participant == ParticipantId(1)))
            .len()
            == 2,
        "only the two tracks a joined with"
    );
    assert!(w
        .events_matching(|e| matches!(e, Event::Removed { .. } | Event::ParticipantLeft { .. }))
        .is_empty());

    // Both calls carry on, both ways.
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 15);
    assert_eq!(w.received_from(b, a, 0xB0), 15);
    assert_eq!(w.received_from(a, b, 0xA0), 15);
    assert_eq!(w.received_from(a, b, 0xB0), 15);

    // Within the cap, a renegotiation still publishes.
    let c = &mut w.clients[a];
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (sdp, pending) = api.apply().expect("offer");
    let now = w.now;
    let answer = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &sdp.to_sdp_string())
        .expect("three tracks are within the cap");
    w.clients[a]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("parses"),
        )
        .expect("client accepts");
    w.drain();
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[b].subscribed_mids.len() == 3
    });
}

#[test]
fn subscriptions_in_a_client_offer_do_not_count() {
    // Five publishers of audio and video: the last one receives on eight m-lines.
    let mut w = World::new();
    for id in 1..=5 {
        w.join(id, 5, RoomKind::Video, true, true).expect("join");
    }
    w.run_until(Duration::from_secs(10), |w| w.settled(8));
    let e = w.client(5);
    // It adds a screen share with its own offer: ten m-lines, three of them sending.
    let c = &mut w.clients[e];
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (sdp, pending) = api.apply().expect("offer");
    let now = w.now;
    let answer = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(5), &sdp.to_sdp_string())
        .expect("three sending lines are within the cap");
    w.clients[e]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("parses"),
        )
        .expect("client accepts");
    w.drain();
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[0].subscribed_mids.len() == 9
    });
}
