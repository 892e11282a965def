//! Active speaker from the RFC 6464 audio level: announced when it changes, with hysteresis so
//! two similar talkers do not make it flap.

mod common;

use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind};
use common::World;

/// Everyone sends 20 ms audio frames for `d` at the given levels (-dBov, 0 loudest).
fn talk(w: &mut World, levels: &[i8], d: Duration) {
    let end = w.now + d;
    while w.now < end {
        for (i, level) in levels.iter().enumerate() {
            w.send_audio(i, *level);
        }
        w.drain();
        w.run_for(Duration::from_millis(20));
    }
}

fn speakers(w: &World) -> Vec<ParticipantId> {
    w.events_matching(|e| matches!(e, Event::ActiveSpeaker { .. }))
        .into_iter()
        .map(|e| match e {
            Event::ActiveSpeaker { room, participant } => {
                assert_eq!(room, RoomKey(11));
                participant
            }
            _ => unreachable!("filtered on ActiveSpeaker"),
        })
        .collect()
}

#[test]
fn active_speaker_follows_the_loudest_with_hysteresis() {
    let mut w = World::new();
    for id in 1..=3 {
        w.join(id, 11, RoomKind::Voice, true, false).expect("joins");
    }
    w.run_until(Duration::from_secs(5), |w| w.settled(2));

    talk(&mut w, &[-127, -127, -127], Duration::from_secs(1));
    assert!(speakers(&w).is_empty(), "silence has no speaker");

    talk(&mut w, &[-20, -127, -127], Duration::from_secs(2));
    assert_eq!(speakers(&w), vec![ParticipantId(1)]);

    // Participant 2 joins in only slightly louder: no change.
    talk(&mut w, &[-20, -18, -127], Duration::from_secs(2));
    assert_eq!(speakers(&w), vec![ParticipantId(1)]);

    // Participant 1 falls silent: 2 takes over, once.
    talk(&mut w, &[-127, -18, -127], Duration::from_secs(2));
    assert_eq!(speakers(&w), vec![ParticipantId(1), ParticipantId(2)]);

    // The audio level reaches the listeners too.
    let levels: Vec<Option<i8>> = w.clients[2]
        .received
        .iter()
        .map(|r| r.audio_level)
        .collect();
    assert!(levels.contains(&Some(-20)) && levels.contains(&Some(-18)));
}
