//! Participants that number their codecs differently still hear and see each other: the
//! relay maps payload types per receiver by codec, not by number.

mod common;

use std::time::Duration;

use callrelay_sfu::RoomKind;
use common::World;
use str0m::format::{Codec, FormatParams};
use str0m::media::{Frequency, Pt};

#[test]
fn payload_types_are_mapped_per_receiver() {
    let mut w = World::new();
    let a = w
        .join_custom(1, 41, RoomKind::Video, true, true, &[], |c| {
            let mut c = c.clear_codecs();
            let cc = c.codec_config();
            cc.add_config(
                Pt::new_with_value(100),
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
                Pt::new_with_value(120),
                Some(Pt::new_with_value(121)),
                Codec::Vp8,
                Frequency::NINETY_KHZ,
                None,
                FormatParams::default(),
            );
            c
        })
        .expect("a");
    let b = w.join(2, 41, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));

    let opus = |w: &World, i: usize| {
        w.clients[i]
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("opus")
            .pt()
    };
    let vp8 = |w: &World, i: usize| {
        w.clients[i]
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8")
            .pt()
    };
    assert_ne!(opus(&w, a), opus(&w, b), "the clients really differ");
    assert_ne!(vp8(&w, a), vp8(&w, b), "the clients really differ");

    w.pump(20);
    assert_eq!(w.received_from(b, a, 0xA0), 20);
    assert_eq!(w.received_from(b, a, 0xB0), 20);
    assert_eq!(w.received_from(a, b, 0xA0), 20);
    assert_eq!(w.received_from(a, b, 0xB0), 20);
}
