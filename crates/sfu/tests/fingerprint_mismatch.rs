//! Peer certificate not matching the SDP fingerprint (THREATS 7): a participant whose offer
//! names a certificate fingerprint other than that of the certificate it presents in DTLS. str0m
//! refuses the handshake, so the relay never gets keys for it: none of its media is forwarded,
//! it gets nobody's media, and it is removed alone (reason `error`, counted in
//! `dropped_rtc_error`). The call of the others in the same room goes on.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind};
use common::World;

/// Flips the first byte of the offer's `a=fingerprint` (the certificate stays the same).
fn wrong_fingerprint(sdp: String) -> String {
    let mut found = false;
    let out: Vec<String> = sdp
        .split("\r\n")
        .map(|l| match l.strip_prefix("a=fingerprint:sha-256 ") {
            Some(hex) => {
                found = true;
                let (first, rest) = hex.split_at(2);
                let byte = u8::from_str_radix(first, 16).expect("hex") ^ 0xFF;
                format!("a=fingerprint:sha-256 {byte:02X}{rest}")
            }
            None => l.to_string(),
        })
        .collect();
    assert!(found, "the offer has a sha-256 fingerprint: {sdp}");
    let out = out.join("\r\n");
    assert_ne!(out, sdp);
    out
}

#[test]
fn a_participant_whose_certificate_does_not_match_its_fingerprint_is_removed_alone() {
    let mut w = World::new();
    let a = w.join(1, 7, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 7, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));

    // m joins the same room; its offer carries a fingerprint that is not its certificate's.
    let m = w
        .join_munged(
            3,
            7,
            RoomKind::Video,
            true,
            true,
            &[],
            |c| c,
            wrong_fingerprint,
        )
        .expect("the offer itself is well formed");
    w.run_for(Duration::from_secs(3));
    w.pump(20);
    w.run_for(Duration::from_secs(1));

    // m alone is removed, with reason `error`, at once (the handshake fails within tens of
    // milliseconds); no idle timeout is needed.
    let removed = w.events_matching(|e| matches!(e, Event::Removed { .. }));
    assert_eq!(
        removed,
        vec![Event::Removed {
            room: RoomKey(7),
            participant: ParticipantId(3),
            reason: RemoveReason::Error,
        }]
    );
    let removed_at = w
        .events
        .iter()
        .find(|(_, e)| matches!(e, Event::Removed { .. }))
        .map(|(t, _)| *t)
        .expect("removed");
    let joined_at = w
        .events
        .iter()
        .find(|(_, e)| {
            matches!(e, Event::ParticipantJoined { participant, .. } if *participant == ParticipantId(3))
        })
        .map(|(t, _)| *t)
        .expect("m joined");
    assert!(removed_at - joined_at < Duration::from_secs(1));
    assert_eq!(w.sfu.participant_count(), 2);
    assert_eq!(
        w.sfu.room_members(RoomKey(7)),
        vec![ParticipantId(1), ParticipantId(2)]
    );
    assert!(w
        .events_matching(|e| matches!(e, Event::TrackPublished { participant, .. } if *participant == ParticipantId(3)))
        .is_empty(), "m never publishes");

    // No media of m reached anyone, and m received nobody's media.
    for (i, tag) in [(a, 0xA0), (a, 0xB0), (b, 0xA0), (b, 0xB0)] {
        assert_eq!(w.received_from(i, m, tag), 0);
    }
    assert!(w.clients[m].received.is_empty(), "m gets no media");
    // A refused handshake is an error, not a panic.
    assert_eq!(w.sfu.stats().sessions_panicked, 0);

    // The call of a and b is unaffected: every packet arrives, both ways.
    assert_eq!(w.received_from(b, a, 0xA0), 20);
    assert_eq!(w.received_from(b, a, 0xB0), 20);
    assert_eq!(w.received_from(a, b, 0xA0), 20);
    assert_eq!(w.received_from(a, b, 0xB0), 20);
}
