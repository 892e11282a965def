//! The link's creator moderates its call by participant id: mute someone's microphone (they
//! are told), remove someone (they may come back), block someone (removed and refused after).
//! Nobody else may.

use callrelay_client::ClientConfig;
use callrelay_proto::server_message::Msg;
use reqwest::Method;

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_creator_mutes_removes_and_blocks_by_participant_id_and_nobody_else_can() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let (alice_t, bob_t) = (relay.token("alice"), relay.token("bob"));
    // The join answer says who moderates.
    let join = format!("/v1/links/{link}/join");
    let (_, a) = relay.call(Method::POST, &join, &alice_t, None).await;
    let (_, b) = relay.call(Method::POST, &join, &bob_t, None).await;
    assert_eq!(
        (a["moderator"].as_bool(), b["moderator"].as_bool()),
        (Some(true), Some(false))
    );

    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let mut carol = relay.join("carol", &link, ClientConfig::default()).await;
    let act = |pid: &str, action: &str| format!("/v1/links/{link}/participants/{pid}/{action}");

    // Bob did not create the link: refused, and carol is still there.
    for action in ["remove", "block", "mute"] {
        let (st, p) = relay
            .call(Method::POST, &act(&carol.id(), action), &bob_t, None)
            .await;
        assert_eq!(
            (st, p["code"].as_str()),
            (403, Some("not_creator")),
            "{action}: {p}"
        );
    }

    // Mute: bob is asked to mute, and nobody is removed.
    let (st, p) = relay
        .call(Method::POST, &act(&bob.id(), "mute"), &alice_t, None)
        .await;
    assert_eq!((st, p["action"].as_str()), (200, Some("mute")), "{p}");
    bob.until("mute_requested", |p| {
        p.signals
            .iter()
            .any(|(_, m)| matches!(m, Msg::MuteRequested(_)))
    })
    .await;

    // Remove carol: she is told `kicked`, and may join again.
    let (st, p) = relay
        .call(Method::POST, &act(&carol.id(), "remove"), &alice_t, None)
        .await;
    assert_eq!(st, 200, "{p}");
    carol
        .until("removed", |p| p.removed_reason().is_some())
        .await;
    assert_eq!(carol.removed_reason().as_deref(), Some("kicked"));
    let (st, _) = relay
        .call(Method::POST, &join, &relay.token("carol"), None)
        .await;
    assert_eq!(st, 200, "a removed person may come back");

    // Block bob: removed with `blocked`, refused from now on, and on alice's block list although
    // she never saw his user id.
    let (st, p) = relay
        .call(Method::POST, &act(&bob.id(), "block"), &alice_t, None)
        .await;
    assert_eq!(st, 200, "{p}");
    bob.until("removed", |p| p.removed_reason().is_some()).await;
    assert_eq!(bob.removed_reason().as_deref(), Some("blocked"));
    let (st, p) = relay.call(Method::POST, &join, &bob_t, None).await;
    assert_eq!((st, p["code"].as_str()), (403, Some("join_refused")), "{p}");
    let (_, blocks) = relay
        .call(Method::GET, "/v1/me/blocks", &alice_t, None)
        .await;
    assert_eq!(blocks["blocked"], serde_json::json!(["bob"]));

    // Errors name what is wrong.
    let (st, p) = relay
        .call(Method::POST, &act(&bob.id(), "remove"), &alice_t, None)
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (404, Some("participant_not_found")),
        "{p}"
    );
    let (st, p) = relay
        .call(Method::POST, &act(&alice.id(), "block"), &alice_t, None)
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (400, Some("invalid_request")),
        "not yourself: {p}"
    );
    let (st, p) = relay
        .call(Method::POST, &act(&alice.id(), "ban"), &alice_t, None)
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (400, Some("invalid_request")),
        "{p}"
    );
    let (st, p) = relay
        .call(Method::POST, &act("bob", "mute"), &alice_t, None)
        .await;
    assert_eq!(
        (st, p["code"].as_str()),
        (400, Some("invalid_participant_id")),
        "{p}"
    );
    drop((alice, bob, carol));
    relay.stop().await;
}
