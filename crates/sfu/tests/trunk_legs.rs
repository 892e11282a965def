//! Legs of one call on several cores (nodes): a publisher on one leg reaches subscribers on
//! the others through the trunk interface of the core (`add_remote_publisher`,
//! `poll_trunk_packet`, `handle_trunk_rtp`, `TrunkDemand`, `TrunkKeyframeRequest`). Each leg
//! is a whole [`World`] (its own relay core, clients and network) on one virtual clock; the
//! test carries what crosses between them, as the IO layer does over QUIC.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, LegId, Mid, ParticipantId, Rid, RoomKey, RoomKind};
use common::World;
use str0m::format::Codec;
use str0m::rtp::RtpWrite;

const ROOM: u64 = 9;
const LAYERS: [&str; 2] = ["h", "l"];
const PUBLISHER: u64 = 1;

/// Legs of one call, on one clock. Leg `i` is `LegId(i)` to the others.
struct Legs {
    worlds: Vec<World>,
    /// Events of each world already looked at.
    seen: Vec<usize>,
    /// What crossed: (from leg, to leg, rid, payload).
    crossed: Vec<(usize, usize, Option<Rid>, Vec<u8>)>,
    /// The remote publishers on each leg: (leg, participant) → its home leg.
    homes: Vec<(usize, ParticipantId, usize)>,
}

impl Legs {
    fn new(n: usize) -> Self {
        let mut worlds: Vec<World> = (0..n).map(|_| World::new()).collect();
        let origin = worlds[0].now;
        for w in &mut worlds {
            w.now = origin;
        }
        Legs {
            worlds,
            seen: vec![0; n],
            crossed: Vec::new(),
            homes: Vec::new(),
        }
    }

    /// Publisher `id` of leg `home` becomes a remote publisher on leg `on`, from its offer.
    fn add_remote(&mut self, on: usize, id: u64, home: usize, offer: &str) {
        let w = &mut self.worlds[on];
        w.sfu
            .add_remote_publisher(
                w.now,
                RoomKey(ROOM),
                ParticipantId(id),
                RoomKind::Video,
                offer,
            )
            .expect("the remote publisher is added");
        w.drain();
        self.homes.push((on, ParticipantId(id), home));
    }

    fn home_of(&self, on: usize, id: ParticipantId) -> usize {
        self.homes
            .iter()
            .find(|(l, p, _)| *l == on && *p == id)
            .map(|(_, _, h)| *h)
            .expect("a known remote publisher")
    }

    /// Carries packets, demands and keyframe requests between the legs until none is left.
    fn shuttle(&mut self) {
        loop {
            let mut moved = false;
            for from in 0..self.worlds.len() {
                while let Some(pkt) = self.worlds[from].sfu.poll_trunk_packet() {
                    moved = true;
                    for leg in &pkt.legs {
                        let to = leg.0 as usize;
                        self.crossed
                            .push((from, to, pkt.rid, pkt.rtp.payload.to_vec()));
                        let w = &mut self.worlds[to];
                        w.sfu.handle_trunk_rtp(
                            w.now,
                            pkt.received_at,
                            pkt.publisher,
                            pkt.mid,
                            pkt.rid,
                            pkt.rtp.clone(),
                        );
                        w.drain();
                    }
                }
                let events: Vec<Event> = self.worlds[from].events[self.seen[from]..]
                    .iter()
                    .map(|(_, e)| e.clone())
                    .collect();
                self.seen[from] = self.worlds[from].events.len();
                for e in events {
                    match e {
                        Event::TrunkDemand {
                            publisher,
                            mid,
                            layers,
                            ..
                        } => {
                            moved = true;
                            let home = self.home_of(from, publisher);
                            let w = &mut self.worlds[home];
                            w.sfu
                                .set_trunk_demand(
                                    w.now,
                                    publisher,
                                    mid,
                                    LegId(from as u32),
                                    &layers,
                                )
                                .expect("the home leg has the track");
                            w.drain();
                        }
                        Event::TrunkKeyframeRequest {
                            publisher,
                            mid,
                            rid,
                            ..
                        } => {
                            moved = true;
                            let home = self.home_of(from, publisher);
                            let w = &mut self.worlds[home];
                            w.sfu
                                .handle_trunk_keyframe_request(w.now, publisher, mid, rid);
                            w.drain();
                        }
                        _ => {}
                    }
                }
            }
            if !moved {
                return;
            }
        }
    }

    /// One step of the shared clock: every leg moves to the soonest event of any.
    fn step(&mut self) {
        let next = self
            .worlds
            .iter()
            .map(World::next_time)
            .min()
            .expect("at least one leg");
        for w in &mut self.worlds {
            w.advance_to(next);
        }
        self.shuttle();
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.worlds[0].now + d;
        while self.worlds[0].now < end {
            self.step();
        }
    }

    fn run_until(&mut self, max: Duration, mut done: impl FnMut(&Legs) -> bool) {
        let end = self.worlds[0].now + max;
        while !done(self) {
            assert!(
                self.worlds[0].now < end,
                "condition not reached within {max:?}"
            );
            self.step();
        }
    }

    /// Layers of the packets that crossed from `from` to `to` since `since` (an index into
    /// `crossed`).
    /// Audio (no layer) is "-".
    fn layers_crossed(&self, from: usize, to: usize, since: usize) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for (f, t, rid, _) in &self.crossed[since..] {
            let name = rid.map_or_else(|| "-".to_string(), |r| r.to_string());
            if *f == from && *t == to && !v.contains(&name) {
                v.push(name);
            }
        }
        v.sort();
        v
    }
}

/// A simulcast publisher stand-in on `LAYERS` that answers keyframe requests on the layer
/// asked. Payload: VP8 descriptor (keyframe bit), then the layer's letter, frame, packet.
struct Encoder {
    frame: u16,
    seq: [u64; 2],
    keyframe_due: [bool; 2],
    handled: usize,
}

impl Encoder {
    fn new() -> Self {
        Encoder {
            frame: 0,
            seq: [0, 0],
            keyframe_due: [true, true],
            handled: 0,
        }
    }

    fn frame(&mut self, w: &mut World, publisher: usize, mid: Mid) {
        let c = &mut w.clients[publisher];
        for rid in c.keyframe_request_rids[self.handled..].iter().flatten() {
            if let Some(i) = LAYERS.iter().position(|l| Rid::from(*l) == *rid) {
                self.keyframe_due[i] = true;
            }
        }
        self.handled = c.keyframe_request_rids.len();
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8")
            .pt();
        let now = w.now;
        for (i, layer) in LAYERS.iter().enumerate() {
            let key = std::mem::take(&mut self.keyframe_due[i]);
            let ts = (i as u32 * 1_000_000).wrapping_add(u32::from(self.frame) * 3000);
            for k in 0..2u8 {
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
                        .marker(k == 1)
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

/// Sends `n` frames of video and one audio packet per frame from the publisher (client 0 of
/// leg 0), 33 ms apart.
fn media(legs: &mut Legs, enc: &mut Encoder, mid: Mid, n: usize) {
    for _ in 0..n {
        enc.frame(&mut legs.worlds[0], 0, mid);
        legs.worlds[0].send_audio(0, -20);
        legs.worlds[0].drain();
        legs.run_for(Duration::from_millis(33));
    }
    legs.run_for(Duration::from_millis(200));
}

/// Received payloads with this first byte after the VP8 descriptor's two (video), or this tag
/// (audio, 0xA0 from `World::send_audio`).
fn video_layers(w: &World, client: usize) -> Vec<u8> {
    w.clients[client]
        .received
        .iter()
        .filter(|r| r.payload.first() != Some(&0xA0))
        .map(|r| r.payload[2])
        .collect()
}

#[test]
fn a_publisher_reaches_subscribers_on_two_other_legs_with_each_packet_crossing_each_trunk_once() {
    let mut legs = Legs::new(3);
    // The publisher on leg 0, with a local subscriber there too.
    let mut offer = String::new();
    let p = legs.worlds[0]
        .join_munged(
            PUBLISHER,
            ROOM,
            RoomKind::Video,
            true,
            true,
            &LAYERS,
            |c| c,
            |sdp| {
                offer = sdp.clone();
                sdp
            },
        )
        .expect("publisher joins leg 0");
    legs.worlds[0]
        .join(2, ROOM, RoomKind::Video, true, false)
        .expect("a local subscriber on leg 0");
    // One subscriber on each other leg; the publisher is a remote publisher there.
    legs.worlds[1]
        .join(3, ROOM, RoomKind::Video, true, false)
        .expect("a subscriber on leg 1");
    legs.worlds[2]
        .join(4, ROOM, RoomKind::Video, true, false)
        .expect("a subscriber on leg 2");
    legs.add_remote(1, PUBLISHER, 0, &offer);
    legs.add_remote(2, PUBLISHER, 0, &offer);
    for leg in 1..3 {
        assert!(legs.worlds[leg].sfu.is_remote(ParticipantId(PUBLISHER)));
        let published = legs.worlds[leg].events_matching(|e| {
            matches!(e, Event::TrackPublished { participant, .. } if *participant == ParticipantId(PUBLISHER))
        });
        assert_eq!(published.len(), 2, "audio and video published on leg {leg}");
    }
    // Everyone connected and subscribed (the publisher's two tracks: 2 m-lines each).
    legs.run_until(Duration::from_secs(5), |l| {
        l.worlds.iter().all(|w| {
            w.clients.iter().all(|c| c.rtc.is_connected())
                && w.clients[1..].iter().all(|c| c.subscribed_mids.len() >= 2)
        })
    });
    let mid = legs.worlds[0].clients[p].video_mid.expect("video mid");

    let mut enc = Encoder::new();
    media(&mut legs, &mut enc, mid, 40);

    let sent_audio = legs.worlds[0].clients[p].sent_audio.clone();
    for (leg, client) in [(0, 1), (1, 0), (2, 0)] {
        let w = &legs.worlds[leg];
        let audio: Vec<&Vec<u8>> = w.clients[client]
            .received
            .iter()
            .filter(|r| r.payload.first() == Some(&0xA0))
            .map(|r| &r.payload)
            .collect();
        assert!(
            audio.len() > 30,
            "leg {leg}: the subscriber hears the publisher ({} of {} packets)",
            audio.len(),
            sent_audio.len()
        );
        for a in &audio {
            assert!(sent_audio.contains(a), "leg {leg}: audio bytes unchanged");
        }
        let video = video_layers(w, client);
        assert!(
            video.len() > 40,
            "leg {leg}: video arrives ({})",
            video.len()
        );
        assert!(
            video.iter().all(|l| *l == b'h'),
            "leg {leg}: the first layer only"
        );
        let first = w.clients[client]
            .received
            .iter()
            .find(|r| r.payload.first() != Some(&0xA0))
            .expect("video");
        assert_eq!(
            first.payload[..2],
            [0x10, 0x00],
            "leg {leg} starts on a keyframe"
        );
    }

    // Each packet crossed each trunk once: as many copies to leg 1 as to leg 2, each payload
    // once per leg, and never a layer nobody remote wants.
    for to in 1..3 {
        let mut payloads: Vec<&Vec<u8>> = legs
            .crossed
            .iter()
            .filter(|(f, t, _, _)| *f == 0 && *t == to)
            .map(|(_, _, _, p)| p)
            .collect();
        let n = payloads.len();
        payloads.sort();
        payloads.dedup();
        assert_eq!(payloads.len(), n, "no packet crossed to leg {to} twice");
        assert_eq!(
            legs.layers_crossed(0, to, 0),
            ["-", "h"],
            "audio and the wanted layer only; `l` never crossed to leg {to}"
        );
    }
    let to = |leg: usize| legs.crossed.iter().filter(|c| c.1 == leg).count();
    assert_eq!(to(1), to(2), "the same packets to both legs");
    let stats = legs.worlds[0].sfu.stats();
    assert_eq!(
        stats.trunk_exported as usize,
        to(1),
        "each packet exported once, naming both legs"
    );
    assert_eq!(legs.worlds[1].sfu.stats().trunk_received as usize, to(1));
}

#[test]
fn a_layer_switch_on_a_remote_leg_moves_the_demand_and_asks_the_publisher_for_a_keyframe() {
    let mut legs = Legs::new(2);
    let mut offer = String::new();
    let p = legs.worlds[0]
        .join_munged(
            PUBLISHER,
            ROOM,
            RoomKind::Video,
            true,
            true,
            &LAYERS,
            |c| c,
            |sdp| {
                offer = sdp.clone();
                sdp
            },
        )
        .expect("publisher joins leg 0");
    // Before anyone on leg 1 subscribes, nothing crosses.
    legs.add_remote(1, PUBLISHER, 0, &offer);
    legs.run_until(Duration::from_secs(5), |l| {
        l.worlds[0].clients[0].rtc.is_connected()
    });
    let mid = legs.worlds[0].clients[p].video_mid.expect("video mid");
    let mut enc = Encoder::new();
    media(&mut legs, &mut enc, mid, 10);
    assert!(
        legs.crossed.is_empty(),
        "no remote subscriber: nothing crosses"
    );

    legs.worlds[1]
        .join(3, ROOM, RoomKind::Video, true, false)
        .expect("a subscriber on leg 1");
    legs.run_until(Duration::from_secs(5), |l| {
        l.worlds[1].clients[0].rtc.is_connected()
            && l.worlds[1].clients[0].subscribed_mids.len() >= 2
    });
    media(&mut legs, &mut enc, mid, 30);
    assert!(video_layers(&legs.worlds[1], 0).iter().all(|l| *l == b'h'));
    assert_eq!(legs.layers_crossed(0, 1, 0), ["-", "h"]);

    // The subscriber asks for the low layer: the demand moves to `l`, the publisher is asked
    // for a keyframe of it, the subscriber switches on it and `h` stops crossing.
    let requests_before = legs.worlds[0].clients[p].keyframe_request_rids.len();
    let w = &mut legs.worlds[1];
    let now = w.now;
    w.sfu
        .set_subscriber_layer(
            now,
            ParticipantId(3),
            ParticipantId(PUBLISHER),
            mid,
            Rid::from("l"),
        )
        .expect("the remote track has the layer");
    w.drain();
    media(&mut legs, &mut enc, mid, 30);
    assert!(
        legs.worlds[0].clients[p].keyframe_request_rids[requests_before..]
            .contains(&Some(Rid::from("l"))),
        "the keyframe request reached the publisher's client on the other leg"
    );
    let video = video_layers(&legs.worlds[1], 0);
    let first_l = video
        .iter()
        .position(|l| *l == b'l')
        .expect("switched to the low layer");
    assert!(video[first_l..].iter().all(|l| *l == b'l'), "no going back");
    let since = legs.crossed.len();
    media(&mut legs, &mut enc, mid, 10);
    assert_eq!(
        legs.layers_crossed(0, 1, since),
        ["-", "l"],
        "once switched, `h` no longer crosses"
    );

    // A remote publisher has no ICE to keep alive: past the idle timeout it is still there.
    legs.run_for(Duration::from_secs(35));
    assert!(legs.worlds[1].sfu.is_remote(ParticipantId(PUBLISHER)));
    assert!(legs.worlds[1]
        .events_matching(|e| matches!(e, Event::Removed { .. }))
        .is_empty());

    // The publisher leaves its leg: leg 1 removes its remote publisher, and the subscriber's
    // m-lines for it stop.
    let w = &mut legs.worlds[1];
    let now = w.now;
    w.sfu
        .remove_participant(
            now,
            ParticipantId(PUBLISHER),
            callrelay_sfu::RemoveReason::Left,
        )
        .expect("the remote publisher is there");
    w.drain();
    let unpublished = legs.worlds[1].events_matching(|e| {
        matches!(e, Event::TrackUnpublished { participant, .. } if *participant == ParticipantId(PUBLISHER))
    });
    assert_eq!(unpublished.len(), 2);
    // Its leg is told nothing is wanted any more.
    let last_demand = legs.worlds[1]
        .events_matching(|e| matches!(e, Event::TrunkDemand { mid: m, .. } if *m == mid))
        .pop();
    assert!(
        matches!(&last_demand, Some(Event::TrunkDemand { layers, .. }) if layers.is_empty()),
        "{last_demand:?}"
    );
    // So its leg stops sending: nothing crosses any more.
    let since = legs.crossed.len();
    media(&mut legs, &mut enc, mid, 5);
    assert_eq!(
        legs.crossed.len(),
        since,
        "nothing crosses once nobody wants it"
    );
    // A packet still in flight when it left is dropped and counted.
    let w = &mut legs.worlds[1];
    let before = w.sfu.stats();
    w.sfu.handle_trunk_rtp(
        w.now,
        w.now,
        ParticipantId(PUBLISHER),
        mid,
        Some(Rid::from("l")),
        callrelay_sfu::TrunkRtp {
            pt: 96.into(),
            seq: 1,
            timestamp: 0,
            marker: false,
            audio_level: None,
            voice_activity: None,
            video_orientation: None,
            payload: vec![0u8; 10].into(),
        },
    );
    assert_eq!(w.sfu.stats().trunk_dropped, before.trunk_dropped + 1);
    assert_eq!(w.sfu.stats().rtp_forwarded, before.rtp_forwarded);
}
