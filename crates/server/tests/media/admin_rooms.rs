//! The operator's room API: live calls with their load, a call's participants, and removing
//! one participant (who is told and may come back); operators only.

use std::time::Duration;

use callrelay_client::ClientConfig;
use reqwest::Method;
use serde_json::json;

use crate::common::{exchange, Relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_lists_calls_and_participants_and_removes_one() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let admin = relay.admin_token();
    let (status, empty) = relay
        .call(Method::GET, "/v1/admin/rooms", &admin, None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(empty["rooms"], json!([]), "{empty}");

    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let bob = relay.join("bob", &link, ClientConfig::default()).await;
    let (alice_id, bob_id) = (alice.id(), bob.id());
    let mut peers = [alice, bob];
    exchange(&mut peers, Duration::from_millis(1500)).await;

    // The list: one call, named by the link's digest (never the link id), with its load.
    let (status, list) = relay
        .call(Method::GET, "/v1/admin/rooms", &admin, None)
        .await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["cluster"], false);
    let rooms = list["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{list}");
    let room = &rooms[0];
    let digest = room["room"].as_str().expect("a digest").to_owned();
    assert_eq!(digest.len(), 8);
    assert!(!list.to_string().contains(&link), "the link id is a secret");
    assert_eq!(room["participants"], 2);
    assert_eq!(room["creator"], "alice");
    assert_eq!(room["node"], relay.state.settings.cluster.node_id);
    // Each sends audio and video every 20 ms: well over 50 kbit/s in and out.
    assert!(room["received_bps"].as_u64().unwrap() > 50_000, "{room}");
    assert!(room["forwarded_bps"].as_u64().unwrap() > 50_000, "{room}");

    // The participants, by digest and by link id alike.
    for name in [digest.as_str(), link.as_str()] {
        let (status, ps) = relay
            .call(
                Method::GET,
                &format!("/v1/admin/rooms/{name}/participants"),
                &admin,
                None,
            )
            .await;
        assert_eq!(status, 200, "{ps}");
        assert_eq!(ps["room"], digest);
        let ids: Vec<&str> = ps["participants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["participant_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, [alice_id.as_str(), bob_id.as_str()], "join order");
        let bob_row = &ps["participants"][1];
        assert_eq!(bob_row["user_id"], "bob");
        assert_eq!(bob_row["name"], "bob");
        assert!(bob_row["received_bps"].as_u64().unwrap() > 0, "{bob_row}");
    }

    // Nobody but an operator sees or does any of it.
    let alice_token = relay.token("alice");
    for (method, path) in [
        (Method::GET, "/v1/admin/rooms".to_owned()),
        (
            Method::GET,
            format!("/v1/admin/rooms/{digest}/participants"),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/rooms/{digest}/participants/{bob_id}"),
        ),
    ] {
        let (status, p) = relay.call(method, &path, &alice_token, None).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (403, Some("forbidden")),
            "{path}"
        );
    }

    // Removing bob: he is told he was removed, alice stays.
    let (status, done) = relay
        .call(
            Method::DELETE,
            &format!("/v1/admin/rooms/{digest}/participants/{bob_id}"),
            &admin,
            Some(json!({"reason": "spam"})),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["participant_id"], bob_id);
    assert_eq!(done["reason"], "spam");
    let [mut alice, mut bob] = peers;
    bob.until("removed", |p| p.removed_reason().is_some()).await;
    assert_eq!(bob.removed_reason().as_deref(), Some("kicked"));
    alice.drain();
    assert!(alice.closed.is_none(), "alice stays in the call");
    let (_, ps) = relay
        .call(
            Method::GET,
            &format!("/v1/admin/rooms/{digest}/participants"),
            &admin,
            None,
        )
        .await;
    assert_eq!(ps["participants"].as_array().map(Vec::len), Some(1), "{ps}");

    // Errors name what is wrong.
    for (method, path, status, code) in [
        (
            Method::DELETE,
            format!("/v1/admin/rooms/{digest}/participants/{bob_id}"),
            404,
            "participant_not_found",
        ),
        (
            Method::GET,
            "/v1/admin/rooms/00000000/participants".to_owned(),
            404,
            "room_not_found",
        ),
        (
            Method::GET,
            "/v1/admin/rooms/not-a-room/participants".to_owned(),
            400,
            "invalid_room",
        ),
        (
            Method::DELETE,
            format!("/v1/admin/rooms/{digest}/participants/bob"),
            400,
            "invalid_participant_id",
        ),
        (
            Method::GET,
            "/v1/admin/rooms?scope=planet".to_owned(),
            400,
            "invalid_request",
        ),
    ] {
        let (got, p) = relay.call(method, &path, &admin, None).await;
        assert_eq!(
            (got, p["code"].as_str()),
            (status, Some(code)),
            "{path}: {p}"
        );
    }
    drop((alice, bob));
    relay.stop().await;
}
