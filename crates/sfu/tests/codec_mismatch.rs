//! A subscriber whose answer takes none of the codecs a publisher sends (a client that decodes
//! H264 only, a publisher sending VP8) is told so once, with the codec, and the copies it
//! cannot decode are counted as dropped instead of being sent under a payload type its answer
//! never accepted. The other subscribers, and its audio, are not affected.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
use common::World;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};

#[test]
fn a_subscriber_that_cannot_decode_the_publishers_codec_is_told_and_the_copies_are_counted() {
    let mut w = World::new();
    let a = w.join(1, 7, RoomKind::Video, true, true).expect("a (VP8)");
    // b takes Opus and H264 only: its answer to the relay's offer of a's video has no VP8.
    let b = w
        .join_custom(2, 7, RoomKind::Video, true, false, &[], |c| {
            let mut c = c.clear_codecs();
            let cc = c.codec_config();
            cc.add_config(
                Pt::new_with_value(111),
                None,
                Codec::Opus,
                Frequency::FORTY_EIGHT_KHZ,
                Some(2),
                FormatParams {
                    min_p_time: Some(10),
                    use_inband_fec: Some(true),
                    ..Default::default()
                },
            );
            cc.add_config(
                Pt::new_with_value(102),
                Some(Pt::new_with_value(103)),
                Codec::H264,
                Frequency::NINETY_KHZ,
                None,
                FormatParams {
                    level_asymmetry_allowed: Some(true),
                    packetization_mode: Some(1),
                    profile_level_id: Some(0x42e01f),
                    ..Default::default()
                },
            );
            c
        })
        .expect("b (H264 only)");
    // c takes the defaults, VP8 among them.
    let c = w.join(3, 7, RoomKind::Video, true, false).expect("c");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    w.pump(20);

    assert!(
        w.received_from(c, a, 0xB0) >= 15,
        "c decodes VP8 and gets a's video: {}",
        w.received_from(c, a, 0xB0)
    );
    assert!(
        w.received_from(b, a, 0xA0) >= 15,
        "b still gets a's audio: {}",
        w.received_from(b, a, 0xA0)
    );
    assert_eq!(w.received_from(b, a, 0xB0), 0, "b cannot decode VP8");

    let told = w.events_matching(|e| matches!(e, Event::CodecUnsupported { .. }));
    assert_eq!(told.len(), 1, "said once, to b only: {told:?}");
    let Event::CodecUnsupported {
        participant,
        publisher,
        codec,
        ..
    } = &told[0]
    else {
        unreachable!()
    };
    assert_eq!(*participant, ParticipantId(2));
    assert_eq!(*publisher, ParticipantId(1));
    assert_eq!(codec.to_ascii_lowercase(), "vp8");
    let dropped = w.sfu.stats().rtp_dropped_codec_unsupported;
    assert!(
        dropped >= 15,
        "every copy b could not take is counted: {dropped}"
    );
    assert!(
        w.sfu.stats().rtp_dropped_codec_unsupported as usize <= w.clients[a].sent_video.len(),
        "one count per copy"
    );
}

/// The `kind` m-section of `sdp` whose `a=msid:` names `stream`.
fn section_of<'a>(sdp: &'a str, kind: &str, stream: &str) -> Option<&'a str> {
    sdp.split("\r\nm=")
        .find(|s| s.starts_with(kind) && s.contains(&format!("a=msid:{stream} ")))
}

#[test]
fn a_subscriber_is_offered_only_the_codecs_its_publisher_negotiated() {
    let mut w = World::new();
    // a publishes VP8 only (and Opus); b decodes everything str0m knows.
    let a = w
        .join_custom(1, 8, RoomKind::Video, true, true, &[], |c| {
            c.clear_codecs().enable_opus(true, false).enable_vp8(true)
        })
        .expect("a (VP8 only)");
    let b = w.join(2, 8, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| {
        w.settled(1) && w.clients[b].subscribed_mids.len() == 2
    });
    let offers = w.events_matching(
        |e| matches!(e, Event::SdpOffer { participant, .. } if *participant == ParticipantId(2)),
    );
    let stream = ParticipantId(1).to_string();
    let video = offers
        .iter()
        .find_map(|e| match e {
            Event::SdpOffer { sdp, .. } => section_of(sdp, "video", &stream),
            _ => None,
        })
        .expect("b was offered a's video");
    assert!(video.contains(" VP8/90000"), "{video}");
    for other in ["VP9/", "H264/", "AV1/", "H265/"] {
        assert!(
            !video.contains(other),
            "{other} offered for a VP8 publisher:\n{video}"
        );
    }
    // Every format on the m= line is VP8 or its retransmission.
    let formats: Vec<&str> = video.lines().next().unwrap().split(' ').skip(3).collect();
    assert!(formats.len() <= 2, "{formats:?}");
    w.pump(20);
    assert!(w.received_from(b, a, 0xB0) >= 15, "b gets a's video");
}
