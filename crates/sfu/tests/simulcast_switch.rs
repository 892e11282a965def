//! Simulcast: a subscriber gets one layer, starting on a keyframe of it; switching layers
//! waits for a keyframe of the new layer (requested from the publisher), and the subscriber
//! sees one contiguous stream across the switch.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKind};
use common::World;
use str0m::format::Codec;
use str0m::media::{Mid, Rid};
use str0m::rtp::RtpWrite;

const LAYERS: [&str; 2] = ["h", "l"];
const PACKETS_PER_FRAME: u8 = 3;

/// A simulcast publisher stand-in: it answers keyframe requests on the requested layer.
struct Encoder {
    frame: u16,
    seq: [u64; 2],
    keyframe_due: [bool; 2],
    handled_requests: usize,
}

impl Encoder {
    /// Sends one frame on each layer. VP8 payload descriptor: S=1 PID=0 on the first packet;
    /// the VP8 header's P bit is 0 for a keyframe. Then: layer, frame number, packet index.
    fn frame(&mut self, w: &mut World, publisher: usize, mid: Mid) {
        let c = &mut w.clients[publisher];
        for rid in c.keyframe_request_rids[self.handled_requests..]
            .iter()
            .flatten()
        {
            if let Some(i) = LAYERS.iter().position(|l| Rid::from(*l) == *rid) {
                self.keyframe_due[i] = true;
            }
        }
        self.handled_requests = c.keyframe_request_rids.len();
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8")
            .pt();
        let now = w.now;
        for (i, layer) in LAYERS.iter().enumerate() {
            let key = std::mem::take(&mut self.keyframe_due[i]);
            // Layers have unrelated timestamp bases, as real encoders do.
            let ts = (i as u32 * 1_000_000).wrapping_add(u32::from(self.frame) * 3000);
            for k in 0..PACKETS_PER_FRAME {
                let mut payload = if k == 0 {
                    vec![0x10, if key { 0x00 } else { 0x01 }]
                } else {
                    vec![0x00, 0x00]
                };
                payload.extend_from_slice(&[
                    layer.as_bytes()[0],
                    (self.frame >> 8) as u8,
                    self.frame as u8,
                    k,
                ]);
                payload.resize(300, 0xee);
                let mut api = c.rtc.direct_api();
                let tx = api
                    .stream_tx_by_mid(mid, Some(Rid::from(*layer)))
                    .expect("simulcast layer stream");
                tx.write_rtp(
                    RtpWrite::new(pt, self.seq[i].into(), ts, now, payload)
                        .marker(k == PACKETS_PER_FRAME - 1)
                        .nackable(true),
                );
                self.seq[i] += 1;
            }
        }
        self.frame += 1;
        c.rtc
            .handle_input(str0m::Input::Timeout(now))
            .expect("publisher timeout");
    }
}

fn frames(w: &mut World, enc: &mut Encoder, publisher: usize, mid: Mid, n: usize) {
    for _ in 0..n {
        enc.frame(w, publisher, mid);
        w.run_for(Duration::from_millis(33));
    }
}

#[test]
fn subscriber_switches_layer_on_keyframe() {
    let mut w = World::new();
    let a = w
        .join_with_layers(1, 6, RoomKind::Video, false, true, &LAYERS)
        .expect("simulcast publisher");
    let b = w
        .join(2, 6, RoomKind::Video, true, false)
        .expect("subscriber");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    let a_mid = w.clients[a].video_mid.expect("video mid");
    let published = w.events_matching(|e| {
        matches!(e, Event::TrackPublished { participant, .. } if *participant == ParticipantId(1))
    });
    assert_eq!(published.len(), 1);

    let mut enc = Encoder {
        frame: 0,
        seq: [0, 0],
        keyframe_due: [false, false],
        handled_requests: 0,
    };
    frames(&mut w, &mut enc, a, a_mid, 30);

    let layer_of = |r: &common::Received| r.payload[2];
    let got: Vec<common::Received> = w.clients[b].received.clone();
    assert!(!got.is_empty(), "the subscriber gets the default layer");
    assert!(
        got.iter().all(|r| layer_of(r) == b'h'),
        "only the first listed layer"
    );
    assert_eq!(got[0].payload[..2], [0x10, 0x00], "starts on a keyframe");
    assert!(w.clients[a]
        .keyframe_request_rids
        .contains(&Some(Rid::from("h"))));

    let now = w.now;
    w.sfu
        .set_subscriber_layer(
            now,
            ParticipantId(2),
            ParticipantId(1),
            a_mid,
            Rid::from("l"),
        )
        .expect("layer exists");
    w.drain();
    frames(&mut w, &mut enc, a, a_mid, 30);

    assert!(w.clients[a]
        .keyframe_request_rids
        .contains(&Some(Rid::from("l"))));
    let got = &w.clients[b].received;
    let first_l = got
        .iter()
        .position(|r| layer_of(r) == b'l')
        .expect("switched to the low layer");
    assert_eq!(
        got[first_l].payload[..2],
        [0x10, 0x00],
        "switch on a keyframe"
    );
    assert!(
        got[first_l..].iter().all(|r| layer_of(r) == b'l'),
        "no going back"
    );
    assert!(got.len() - first_l > 20, "the new layer flows");
    // One contiguous stream for the subscriber: no gap, no duplicate, time moving forward.
    for pair in got.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1, "contiguous sequence numbers");
        let dt = pair[1].timestamp.wrapping_sub(pair[0].timestamp);
        assert!(
            dt < 90_000,
            "timestamps move forward by less than a second: {dt}"
        );
    }
    assert!(
        got[first_l].timestamp != got[first_l - 1].timestamp,
        "the switch does not reuse the last frame's timestamp"
    );

    // An unknown layer is refused.
    assert!(w
        .sfu
        .set_subscriber_layer(
            now,
            ParticipantId(2),
            ParticipantId(1),
            a_mid,
            Rid::from("x")
        )
        .is_err());
}
