//! A voice link refuses video, on join and on renegotiation, and still carries audio; its
//! participants get no bandwidth estimate (there is no layer to choose with one).

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKind, SfuConfig, SfuError, DEFAULT_BWE_INITIAL_BITRATE};
use common::World;
use str0m::media::{Direction, MediaKind};
use str0m::rtp::Extension;

#[test]
fn voice_room_refuses_video_offer_on_join() {
    let mut w = World::new();
    let err = w.join(1, 3, RoomKind::Voice, true, true).unwrap_err();
    assert_eq!(err, SfuError::VideoNotAllowed);
    assert_eq!(w.sfu.participant_count(), 0);
    assert_eq!(w.sfu.room_count(), 0, "a refused join creates no room");

    // The room's kind is fixed by the room, not by later joiners.
    w.join(2, 3, RoomKind::Voice, true, false)
        .expect("audio-only joins");
    let err = w.join(3, 3, RoomKind::Video, true, true).unwrap_err();
    assert_eq!(err, SfuError::VideoNotAllowed);
}

#[test]
fn voice_room_carries_audio_and_refuses_video_renegotiation() {
    let mut w = World::new();
    let a = w.join(1, 3, RoomKind::Voice, true, false).expect("a");
    w.join(2, 3, RoomKind::Voice, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(10);
    assert_eq!(w.received_from(0, 1, 0xA0), 10);
    assert_eq!(w.received_from(1, 0, 0xA0), 10);

    // Client a tries to add a camera later.
    let mut api = w.clients[a].rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("offer");
    let now = w.now;
    let err = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &offer.to_sdp_string())
        .unwrap_err();
    assert_eq!(err, SfuError::VideoNotAllowed);
    assert_eq!(w.sfu.participant_count(), 2);
}

#[test]
fn voice_participants_run_no_bandwidth_estimation_where_video_ones_do() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    config.bwe_initial_bitrate = Some(DEFAULT_BWE_INITIAL_BITRATE);
    let mut w = World::with_config(config);
    // Two voice participants and, in another room of the same relay, two video ones.
    w.join(1, 3, RoomKind::Voice, true, false).expect("voice a");
    w.join(2, 3, RoomKind::Voice, true, false).expect("voice b");
    w.join(3, 4, RoomKind::Video, true, true).expect("video c");
    w.join(4, 4, RoomKind::Video, true, true).expect("video d");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(10);
    assert_eq!(w.received_from(0, 1, 0xA0), 10, "voice audio flows");
    assert_eq!(w.received_from(1, 0, 0xA0), 10);
    for voice in [1, 2] {
        assert_eq!(w.sfu.bandwidth_estimate(ParticipantId(voice)), None);
    }
    for video in [3, 4] {
        assert!(
            w.sfu.bandwidth_estimate(ParticipantId(video)).is_some(),
            "the video room's participants have an estimate"
        );
    }
}

#[test]
fn voice_participants_negotiate_no_transport_wide_feedback_where_video_ones_do() {
    let mut config = SfuConfig::new(common::SFU_ADDR);
    config.bwe_initial_bitrate = Some(DEFAULT_BWE_INITIAL_BITRATE);
    let mut w = World::with_config(config);
    // Every client offers the transport sequence number extension (str0m's standard set).
    let voice = w.join(1, 3, RoomKind::Voice, true, false).expect("voice a");
    w.join(2, 3, RoomKind::Voice, true, false).expect("voice b");
    let video = w.join(3, 4, RoomKind::Video, true, true).expect("video c");
    w.join(4, 4, RoomKind::Video, true, true).expect("video d");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(10);
    assert_eq!(w.received_from(0, 1, 0xA0), 10, "voice audio flows");
    assert_eq!(w.received_from(1, 0, 0xA0), 10);

    let twcc_id = |w: &World, client: usize| {
        let c = &w.clients[client];
        let mid = c.audio_mid.expect("publishes audio");
        c.rtc
            .media(mid)
            .expect("the audio m-line")
            .remote_extmap()
            .id_of(Extension::TransportSequenceNumber)
    };
    assert_eq!(
        twcc_id(&w, voice),
        None,
        "the relay's answer in a voice room leaves out transport-cc"
    );
    assert!(
        twcc_id(&w, video).is_some(),
        "a video room keeps it: the estimates choose layers"
    );
}
