//! Seeded random sequences of joins, leaves, blocks, revocations and idle time, checked
//! against a simple model after every step. The seeds are fixed so failures replay.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind, SfuConfig, SfuError};
use common::{World, SFU_ADDR};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const ROOMS: u64 = 3;
const MAX: usize = 3;

fn run(seed: u64) {
    let mut config = SfuConfig::new(SFU_ADDR);
    config.max_participants = MAX;
    let mut w = World::with_config(config);
    let mut rng = StdRng::seed_from_u64(seed);
    // Model: room → (kind, members in join order).
    let mut model: BTreeMap<u64, (RoomKind, Vec<u64>)> = BTreeMap::new();
    let mut next_id = 1;

    for step in 0..40 {
        let before_events = w.events.len();
        match rng.gen_range(0..10) {
            0..=3 => {
                let room = rng.gen_range(0..ROOMS);
                let kind = if rng.gen_bool(0.5) {
                    RoomKind::Video
                } else {
                    RoomKind::Voice
                };
                let video = rng.gen_bool(0.5);
                let id = next_id;
                next_id += 1;
                let result = w.join(id, room, kind, true, video);
                let room_kind = model.get(&room).map(|(k, _)| *k).unwrap_or(kind);
                let full = model.get(&room).is_some_and(|(_, m)| m.len() >= MAX);
                match result {
                    Ok(_) => {
                        assert!(!full, "seed {seed} step {step}: joined a full room");
                        assert!(!(video && room_kind == RoomKind::Voice), "video in voice");
                        model
                            .entry(room)
                            .or_insert((room_kind, Vec::new()))
                            .1
                            .push(id);
                    }
                    Err(SfuError::RoomFull) => assert!(full, "seed {seed} step {step}"),
                    Err(SfuError::VideoNotAllowed) => {
                        assert!(
                            video && room_kind == RoomKind::Voice,
                            "seed {seed} step {step}"
                        )
                    }
                    Err(e) => panic!("seed {seed} step {step}: unexpected {e}"),
                }
            }
            4..=5 => {
                let present: Vec<u64> = model.values().flat_map(|(_, m)| m.clone()).collect();
                if present.is_empty() {
                    continue;
                }
                let id = present[rng.gen_range(0..present.len())];
                let reason = [
                    RemoveReason::Left,
                    RemoveReason::Blocked,
                    RemoveReason::Kicked,
                ][rng.gen_range(0..3)];
                let now = w.now;
                w.sfu
                    .remove_participant(now, ParticipantId(id), reason)
                    .expect("present in the model");
                w.drain();
                offline(&mut w, id);
                for (_, m) in model.values_mut() {
                    m.retain(|x| *x != id);
                }
                let removed: Vec<&Event> = w.events[before_events..]
                    .iter()
                    .map(|(_, e)| e)
                    .filter(|e| matches!(e, Event::Removed { .. }))
                    .collect();
                assert_eq!(removed.len(), 1, "seed {seed} step {step}");
                assert!(
                    matches!(removed[0], Event::Removed { participant, reason: r, .. } if *participant == ParticipantId(id) && *r == reason)
                );
            }
            6 => {
                let room = rng.gen_range(0..ROOMS);
                let now = w.now;
                w.sfu.remove_room(now, RoomKey(room), RemoveReason::Revoked);
                w.drain();
                let gone = model.remove(&room).map(|(_, m)| m).unwrap_or_default();
                for id in &gone {
                    offline(&mut w, *id);
                }
                let revoked = w.events[before_events..]
                    .iter()
                    .filter(|(_, e)| {
                        matches!(
                            e,
                            Event::Removed {
                                reason: RemoveReason::Revoked,
                                ..
                            }
                        )
                    })
                    .count();
                assert_eq!(revoked, gone.len(), "seed {seed} step {step}");
            }
            _ => {
                // Someone's network dies, then time passes.
                if rng.gen_bool(0.3) {
                    let online: Vec<usize> = (0..w.clients.len())
                        .filter(|i| w.clients[*i].online)
                        .collect();
                    if !online.is_empty() {
                        let i = online[rng.gen_range(0..online.len())];
                        w.clients[i].online = false;
                    }
                }
                w.run_for(Duration::from_secs(rng.gen_range(1..40)));
                // Idle removals the model must follow.
                for (_, e) in &w.events[before_events..] {
                    if let Event::Removed {
                        participant,
                        reason,
                        ..
                    } = e
                    {
                        assert_eq!(*reason, RemoveReason::Idle, "seed {seed} step {step}");
                        let offline_client =
                            w.clients.iter().any(|c| c.id == *participant && !c.online);
                        assert!(offline_client, "only silent clients go idle");
                        for (_, m) in model.values_mut() {
                            m.retain(|x| ParticipantId(*x) != *participant);
                        }
                    }
                }
            }
        }
        model.retain(|_, (_, m)| !m.is_empty());

        // The relay agrees with the model.
        let total: usize = model.values().map(|(_, m)| m.len()).sum();
        assert_eq!(w.sfu.participant_count(), total, "seed {seed} step {step}");
        assert_eq!(w.sfu.room_count(), model.len(), "seed {seed} step {step}");
        for (room, (_, members)) in &model {
            let expected: Vec<ParticipantId> = members.iter().map(|i| ParticipantId(*i)).collect();
            assert_eq!(
                w.sfu.room_members(RoomKey(*room)),
                expected,
                "seed {seed} step {step}"
            );
        }
        assert!(w.sfu.learned_address_count() <= 4 * total);
    }
}

fn offline(w: &mut World, id: u64) {
    if let Some(c) = w.clients.iter_mut().find(|c| c.id == ParticipantId(id)) {
        c.online = false;
    }
}

#[test]
fn membership_sequences_match_the_model() {
    for seed in [1, 2, 3, 4] {
        run(seed);
    }
}
