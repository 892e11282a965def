//! Tracks that appear later are offered by the relay to everyone else (server-initiated
//! renegotiation), and end when their publisher stops sending on them; a client re-offer that
//! crosses a relay offer (glare) is handled.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
use common::World;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};

/// Client `i` adds a video track with its own offer, answered by the relay.
fn add_camera(w: &mut World, i: usize) {
    let c = &mut w.clients[i];
    let mut api = c.rtc.sdp_api();
    let mid = api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("offer");
    let id = c.id;
    let now = w.now;
    let answer = w
        .sfu
        .handle_sdp_offer(now, id, &offer.to_sdp_string())
        .expect("relay accepts the re-offer");
    let c = &mut w.clients[i];
    c.rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("parses"),
        )
        .expect("client accepts");
    c.video_mid = Some(mid);
    w.drain();
}

#[test]
fn a_track_added_later_reaches_the_others() {
    let mut w = World::new();
    let a = w.join(1, 21, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 21, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    assert_eq!(w.clients[b].subscribed_mids.len(), 1);

    add_camera(&mut w, a);
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[1].subscribed_mids.len() == 2
    });
    let published = w.events_matching(|e| {
        matches!(e, Event::TrackPublished { participant, kind: callrelay_sfu::TrackKind::Video, .. } if *participant == ParticipantId(1))
    });
    assert_eq!(published.len(), 1);

    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);
    assert_eq!(w.received_from(b, a, 0xA0), 10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
}

#[test]
fn client_offer_crossing_a_relay_offer_is_resolved() {
    let mut w = World::new();
    let a = w.join(1, 22, RoomKind::Video, true, false).expect("a");
    w.run_until(Duration::from_secs(5), |w| w.clients[0].rtc.is_connected());

    // b joins; hold the relay's offer to a (it would add b's audio) unanswered.
    w.hold_offers = true;
    let b = w.join(2, 22, RoomKind::Video, true, false).expect("b");
    w.run_for(Duration::from_millis(50));
    assert_eq!(
        w.held_offers.len(),
        2,
        "an offer to each: a gets b's audio, b gets a's"
    );

    // a renegotiates on its own meanwhile; the held offer is now stale and is dropped.
    w.held_offers.retain(|(p, _)| *p != ParticipantId(1));
    add_camera(&mut w, a);
    w.hold_offers = false;
    let held = std::mem::take(&mut w.held_offers);
    for (p, sdp) in held {
        w.answer_offer(p, &sdp);
    }
    w.drain();

    // The relay re-offers what the rolled-back offer carried: a still gets b's audio,
    // and b gets a's new camera.
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[0].subscribed_mids.len() == 1 && w.clients[1].subscribed_mids.len() == 2
    });
    w.pump(10);
    assert_eq!(w.received_from(a, b, 0xA0), 10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);
}

/// Client `i` changes the direction of its m-line `mid` with its own offer, answered by the
/// relay (what a browser's `removeTrack` then a re-offer does to a screen share).
fn set_direction(w: &mut World, i: usize, mid: str0m::media::Mid, dir: Direction) {
    let c = &mut w.clients[i];
    let mut api = c.rtc.sdp_api();
    api.set_direction(mid, dir);
    let (offer, pending) = api.apply().expect("offer");
    let id = c.id;
    let now = w.now;
    let answer = w
        .sfu
        .handle_sdp_offer(now, id, &offer.to_sdp_string())
        .expect("relay accepts the re-offer");
    w.clients[i]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("parses"),
        )
        .expect("client accepts");
    w.drain();
}

#[test]
fn a_track_its_publisher_stops_sending_is_unpublished_until_it_sends_again() {
    let mut w = World::new();
    let a = w.join(1, 23, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 23, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    add_camera(&mut w, a);
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[1].subscribed_mids.len() == 2
    });
    let screen = w.clients[a].video_mid.expect("a sends video");
    let at_b = w.clients[b].subscribed_mids[1];
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xB0), 10);

    // a stops sharing: its m-line goes inactive. The room hears it, and b's copy stops.
    set_direction(&mut w, a, screen, Direction::Inactive);
    w.clients[a].video_mid = None;
    let unpublished = |w: &World| {
        w.events_matching(|e| {
            matches!(e, Event::TrackUnpublished { participant, mid, .. } if *participant == ParticipantId(1) && *mid == screen)
        })
        .len()
    };
    assert_eq!(unpublished(&w), 1);
    w.run_for(Duration::from_millis(500));
    assert_eq!(
        w.clients[b].rtc.media(at_b).map(|m| m.direction()),
        Some(Direction::Inactive),
        "the relay stopped b's copy"
    );
    // Audio goes on both ways.
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 20);
    assert_eq!(w.received_from(a, b, 0xA0), 20);

    // a sends on it again: published again, and b receives it again.
    set_direction(&mut w, a, screen, Direction::SendOnly);
    w.clients[a].video_mid = Some(screen);
    let published = w.events_matching(|e| {
        matches!(e, Event::TrackPublished { participant, mid, .. } if *participant == ParticipantId(1) && *mid == screen)
    });
    assert_eq!(published.len(), 2, "published, then again");
    w.run_for(Duration::from_millis(500));
    w.pump(10);
    assert_eq!(w.clients[b].subscribed_mids.len(), 3, "a new m-line at b");
    assert_eq!(w.received_from(b, a, 0xB0), 20);
    assert_eq!(unpublished(&w), 1);
}
