//! A call seen through webhooks: `call.started`, `participant.joined`, `participant.left` with
//! its reason (plus `participant.removed` / `participant.blocked` when the creator acted), and
//! `call.ended`, each signed, naming the link by its digest only.

use std::time::Duration;

use callrelay_client::ClientConfig;
use reqwest::Method;
use serde_json::Value;

use crate::common::Relay;

#[path = "../support/webhooks.rs"]
mod webhooks;
use webhooks::{endpoint, of_type, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_told_from_start_to_end_with_reasons() {
    let (url, got, server) = endpoint().await;
    let relay = Relay::start(&[
        ("CALLRELAY_WEBHOOKS_URLS", &url),
        ("CALLRELAY_WEBHOOKS_SECRET", SECRET),
        ("CALLRELAY_WEBHOOKS_RETRY_MIN", "200ms"),
    ])
    .await;
    let link = relay.create_link("alice", "video").await;
    let alice_t = relay.token("alice");
    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let mut carol = relay.join("carol", &link, ClientConfig::default()).await;
    let (bob_id, carol_id) = (bob.id(), carol.id());
    let act = |pid: &str, action: &str| format!("/v1/links/{link}/participants/{pid}/{action}");
    let (st, _) = relay
        .call(Method::POST, &act(&carol_id, "remove"), &alice_t, None)
        .await;
    assert_eq!(st, 200);
    carol
        .until("removed", |p| p.removed_reason().is_some())
        .await;
    let (st, _) = relay
        .call(Method::POST, &act(&bob_id, "block"), &alice_t, None)
        .await;
    assert_eq!(st, 200);
    bob.until("removed", |p| p.removed_reason().is_some()).await;
    alice.client.leave().unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if !of_type(&got.lock().unwrap(), "call.ended").is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no call.ended: {:#?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let stragglers of the same batch land.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = got.lock().unwrap().clone();

    let digest = callrelay_links::LinkId::parse(&link)
        .unwrap()
        .digest()
        .to_string();
    for e in &events {
        assert_eq!(e["data"]["link"], digest.as_str(), "{e}");
        assert!(!e.to_string().contains(&link), "never the link id: {e}");
    }
    assert_eq!(of_type(&events, "link.created").len(), 1);
    assert_eq!(of_type(&events, "link.used").len(), 3, "three joins");
    assert_eq!(of_type(&events, "call.started").len(), 1);
    let joined = of_type(&events, "participant.joined");
    let mut users: Vec<_> = joined
        .iter()
        .map(|e| e["data"]["user"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob", "carol"]);
    let left: Vec<_> = of_type(&events, "participant.left")
        .iter()
        .map(|e| {
            (
                e["data"]["user"].as_str().unwrap().to_owned(),
                e["data"]["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        left.contains(&("carol".into(), "kicked".into())),
        "{left:?}"
    );
    assert!(left.contains(&("bob".into(), "blocked".into())), "{left:?}");
    assert!(left.contains(&("alice".into(), "left".into())), "{left:?}");
    assert_eq!(left.len(), 3, "{left:?}");
    let removed = of_type(&events, "participant.removed");
    assert_eq!(removed.len(), 1);
    assert_eq!(removed[0]["data"]["participant_id"], carol_id.as_str());
    let blocked = of_type(&events, "participant.blocked");
    assert_eq!(blocked.len(), 1);
    assert_eq!(blocked[0]["data"]["participant_id"], bob_id.as_str());
    let ended = of_type(&events, "call.ended");
    assert_eq!(ended.len(), 1);
    assert!(ended[0]["data"]["length_s"].as_i64().is_some());
    // The call started before anyone joined it, and ended after everyone left.
    let at = |e: &Value| e["timestamp"].as_str().unwrap().to_owned();
    assert!(joined
        .iter()
        .all(|j| at(j) >= at(of_type(&events, "call.started")[0])));
    assert!(of_type(&events, "participant.left")
        .iter()
        .all(|l| at(l) <= at(ended[0])));

    relay.stop().await;
    server.abort();
}
