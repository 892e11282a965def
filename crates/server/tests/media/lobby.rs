//! The lobby of a link created with `require_approval`: joiners wait with no media until the
//! creator, in the call, admits or declines them; nobody else may decide; a wait ends after
//! `lobby.timeout`.

use std::time::Duration;

use callrelay_client::{Client, ClientConfig, ClientError, TrackKind};
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::LobbyDecision;
use callrelay_proto::{client_message, ClientMessage};
use reqwest::Method;
use serde_json::json;

use crate::common::{Peer, Relay};

fn decision(pids: &[String], all: bool, admit: bool) -> ClientMessage {
    ClientMessage::from(client_message::Msg::LobbyDecision(LobbyDecision {
        participant_ids: pids.to_vec(),
        all,
        admit,
    }))
}

/// The participant ids of the `lobby_request`s `peer` got so far.
fn requests(peer: &Peer) -> Vec<String> {
    peer.signals
        .iter()
        .filter_map(|(_, m)| match m {
            Msg::LobbyRequest(r) => Some(r.participant_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_admits_and_declines_and_only_admitted_people_get_media() {
    let relay = Relay::start(&[("CALLRELAY_LOBBY_TIMEOUT", "3s")]).await;
    let (st, l) = relay
        .call(
            Method::POST,
            "/v1/links",
            &relay.token("alice"),
            Some(json!({"require_approval": true})),
        )
        .await;
    assert_eq!(st, 201, "{l}");
    assert_eq!(l["require_approval"], true);
    let link = l["id"].as_str().unwrap().to_owned();

    // The join answer says who will wait.
    let (_, a) = relay
        .call(
            Method::POST,
            &format!("/v1/links/{link}/join"),
            &relay.token("alice"),
            None,
        )
        .await;
    assert_eq!(a["lobby"], false, "the creator never waits");
    let (_, b) = relay
        .call(
            Method::POST,
            &format!("/v1/links/{link}/join"),
            &relay.token("bob"),
            None,
        )
        .await;
    assert_eq!(b["lobby"], true);

    // Bob waits before the creator is there; then alice joins and hears of him.
    let (base, bob_t, l2) = (relay.base.clone(), relay.token("bob"), link.clone());
    let bob_join =
        tokio::spawn(
            async move { Client::join(&base, &bob_t, &l2, ClientConfig::default()).await },
        );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while relay
        .metrics_text()
        .await
        .lines()
        .all(|l| l != "callrelay_lobby_waiting 1")
    {
        assert!(tokio::time::Instant::now() < deadline, "bob never waited");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    alice
        .until("bob's lobby_request", |p| requests(p).len() == 1)
        .await;
    // Waiting is not being in the call: the media worker has alice only.
    assert_eq!(relay.state.media.participants(), 1);

    // Carol comes too; alice declines her and admits bob.
    let (base, carol_t, l3) = (relay.base.clone(), relay.token("carol"), link.clone());
    let carol_join =
        tokio::spawn(
            async move { Client::join(&base, &carol_t, &l3, ClientConfig::default()).await },
        );
    alice
        .until("carol's lobby_request", |p| requests(p).len() == 2)
        .await;
    let ids = requests(&alice);
    alice
        .client
        .send_signal(decision(&ids[1..], false, false))
        .unwrap();
    match carol_join.await.unwrap() {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "lobby_declined"),
        other => panic!("carol: {:?}", other.map(|c| c.participant_id().to_owned())),
    }
    alice
        .client
        .send_signal(decision(&ids[..1], false, true))
        .unwrap();
    let bob = bob_join.await.unwrap().expect("bob admitted");
    assert_eq!(bob.participant_id(), ids[0], "the id the lobby announced");
    let mut bob = Peer::new(bob);
    bob.client
        .wait_connected(Duration::from_secs(10))
        .await
        .expect("bob connects");
    alice
        .until("lobby_left for both", |p| {
            p.signals
                .iter()
                .filter(|(_, m)| matches!(m, Msg::LobbyLeft(_)))
                .count()
                == 2
        })
        .await;

    // Bob is in the call and gets alice's media. Alice keeps sending, as a client does: a
    // single packet could leave before bob's subscription to her tracks is negotiated (one CI
    // run lost it that way and waited in vain).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let from = alice.id();
    while bob.received_intact(&from, TrackKind::Audio, 1) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob got none of alice's audio within 10 s"
        );
        tick.tick().await;
        alice.send_media(1);
        alice.drain();
        bob.drain();
    }

    // Bob is not the creator: his decision is refused.
    bob.client.send_signal(decision(&[], true, true)).unwrap();
    bob.until("not_creator", |p| {
        p.signals
            .iter()
            .any(|(_, m)| matches!(m, Msg::Error(e) if e.code == "not_creator"))
    })
    .await;

    // Nobody decides on dave: after lobby.timeout he is told so.
    let r = Client::join(
        &relay.base,
        &relay.token("dave"),
        &link,
        ClientConfig::default(),
    )
    .await;
    match r {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "lobby_timeout"),
        other => panic!("dave: {:?}", other.map(|c| c.participant_id().to_owned())),
    }
    let m = relay.metrics_text().await;
    for (outcome, n) in [("admitted", 1), ("declined", 1), ("timeout", 1)] {
        assert!(
            m.contains(&format!(
                "callrelay_lobby_outcomes_total{{outcome=\"{outcome}\"}} {n}"
            )),
            "{outcome}: {m}"
        );
    }
    relay.stop().await;
}
