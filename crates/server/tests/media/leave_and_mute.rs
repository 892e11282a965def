//! Mute states are relayed; leaving tells the room `left` at once, and an app that just goes
//! away (its socket broken, no Close frame) is told `left` once `rooms.resume_grace` passes
//! without a `resume` (1 s here).

use std::time::Instant;

use callrelay_client::ClientConfig;
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::MuteState;
use callrelay_proto::{client_message, ClientMessage};

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mute_is_relayed_and_leaving_tells_the_room() {
    let relay = Relay::start(&[("CALLRELAY_ROOMS_RESUME_GRACE", "1s")]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let carol = relay.join("carol", &link, ClientConfig::default()).await;
    let (bob_id, carol_id) = (bob.id(), carol.id());

    bob.client
        .send_signal(ClientMessage::from(client_message::Msg::Mute(MuteState {
            audio_muted: true,
            video_muted: false,
        })))
        .unwrap();
    alice
        .until("mute_changed(bob)", |p| {
            p.signals.iter().any(|(_, m)| {
                matches!(m, Msg::MuteChanged(c) if c.participant_id == bob_id && c.audio_muted && !c.video_muted)
            })
        })
        .await;

    // Bob hangs up politely; carol's app just goes away.
    bob.client.leave().unwrap();
    bob.until("the session to end", |p| p.closed.is_some())
        .await;
    assert_eq!(
        bob.closed.as_ref().and_then(|c| c.1.clone()),
        None,
        "no removal reason for a hang-up"
    );
    drop(carol);
    let carol_gone = Instant::now();
    alice
        .until("participant_left(bob) and (carol)", |p| {
            let left = |id: &str| {
                p.signals.iter().any(|(_, m)| {
                    matches!(m, Msg::ParticipantLeft(l) if l.participant_id == id && l.reason == "left")
                })
            };
            left(&bob_id) && left(&carol_id)
        })
        .await;
    assert!(
        carol_gone.elapsed() >= std::time::Duration::from_millis(900),
        "carol's session waited for a resume first: left after {:?}",
        carol_gone.elapsed()
    );
    let id = callrelay_links::LinkId::parse(&link).unwrap();
    assert_eq!(
        relay.state.seats.held(&id, Instant::now()),
        1,
        "only alice's seat is held"
    );
    assert!(alice.closed.is_none());
    drop(alice);
    relay.stop().await;
}
