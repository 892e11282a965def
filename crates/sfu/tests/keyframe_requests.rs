//! A late joiner gets a keyframe request relayed to the publisher; subscribers' PLIs are
//! relayed to the publisher throttled to one per 500 ms per layer.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;
use str0m::media::KeyframeRequestKind;

/// Publisher sends video for `d`, 20 ms apart.
fn video_for(w: &mut World, publisher: usize, d: Duration) {
    let end = w.now + d;
    while w.now < end {
        w.send_video(publisher);
        w.run_for(Duration::from_millis(20));
    }
}

#[test]
fn late_joiner_triggers_one_keyframe_request_to_the_publisher() {
    let mut w = World::new();
    let a = w
        .join(1, 2, RoomKind::Video, false, true)
        .expect("publisher");
    w.run_until(Duration::from_secs(5), |w| w.clients[a].rtc.is_connected());
    video_for(&mut w, a, Duration::from_secs(1));
    assert_eq!(w.clients[a].keyframe_requests, 0, "nobody asked yet");

    let b = w
        .join(2, 2, RoomKind::Video, true, false)
        .expect("late joiner");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    video_for(&mut w, a, Duration::from_millis(300));
    assert_eq!(
        w.clients[a].keyframe_requests, 1,
        "the join asked for a keyframe"
    );
    assert_eq!(w.sfu.stats().keyframe_requests_relayed, 1);
    assert!(
        w.received_from(b, a, 0xB0) > 0,
        "the late joiner gets video"
    );
}

#[test]
fn subscriber_keyframe_requests_are_relayed_throttled() {
    let mut w = World::new();
    let a = w
        .join(1, 2, RoomKind::Video, false, true)
        .expect("publisher");
    let b = w
        .join(2, 2, RoomKind::Video, true, false)
        .expect("subscriber");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    video_for(&mut w, a, Duration::from_secs(1));
    let baseline = w.clients[a].keyframe_requests;

    // A burst of PLIs from the subscriber within 250 ms.
    let mid = w.clients[b].subscribed_mids[0];
    for _ in 0..5 {
        w.clients[b]
            .rtc
            .direct_api()
            .stream_rx_by_mid(mid, None)
            .expect("subscribed stream")
            .request_keyframe(KeyframeRequestKind::Pli);
        video_for(&mut w, a, Duration::from_millis(60));
    }
    video_for(&mut w, a, Duration::from_millis(100));
    assert_eq!(
        w.clients[a].keyframe_requests,
        baseline + 1,
        "one per 500 ms"
    );
    assert!(w.sfu.stats().keyframe_requests_throttled >= 1);

    // After the interval, the next one goes through.
    video_for(&mut w, a, Duration::from_millis(400));
    w.clients[b]
        .rtc
        .direct_api()
        .stream_rx_by_mid(mid, None)
        .expect("subscribed stream")
        .request_keyframe(KeyframeRequestKind::Pli);
    video_for(&mut w, a, Duration::from_millis(100));
    assert_eq!(w.clients[a].keyframe_requests, baseline + 2);
}
