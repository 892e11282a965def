use crate::both_backends;
use crate::common::*;
use reqwest::Method;

both_backends!(block_list_round_trip, |store: StoreHandle| async move {
    let s = TestServer::start(&store, &[]).await;
    let alice = s.token("alice");
    async fn list(s: &TestServer, token: &str) -> serde_json::Value {
        s.call(Method::GET, "/v1/me/blocks", Some(token), None)
            .await
            .json["blocked"]
            .clone()
    }
    assert_eq!(list(&s, &alice).await, serde_json::json!([]));
    for u in ["mallory", "eve", "mallory"] {
        assert_eq!(
            s.call(
                Method::PUT,
                &format!("/v1/me/blocks/{u}"),
                Some(&alice),
                None
            )
            .await
            .status,
            204
        );
    }
    assert_eq!(
        list(&s, &alice).await,
        serde_json::json!(["eve", "mallory"])
    );
    assert_eq!(
        s.call(Method::DELETE, "/v1/me/blocks/eve", Some(&alice), None)
            .await
            .status,
        204
    );
    assert_eq!(
        s.call(Method::DELETE, "/v1/me/blocks/eve", Some(&alice), None)
            .await
            .status,
        204,
        "idempotent"
    );
    assert_eq!(list(&s, &alice).await, serde_json::json!(["mallory"]));
    // Blocks are per user: bob's list is his own.
    let bob = s
        .call(Method::GET, "/v1/me/blocks", Some(&s.token("bob")), None)
        .await;
    assert_eq!(bob.json["blocked"], serde_json::json!([]));
    s.call(Method::PUT, "/v1/me/blocks/not%20valid", Some(&alice), None)
        .await
        .assert_problem(400, "invalid_user_id");
    s.call(Method::GET, "/v1/me/blocks", None, None)
        .await
        .assert_problem(401, "unauthorized");
    s.stop().await;
});

both_backends!(
    a_block_is_announced_to_the_media_plane,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let mut events = s.state.events.subscribe();
        assert_eq!(
            s.call(
                Method::PUT,
                "/v1/me/blocks/mallory",
                Some(&s.token("alice")),
                None
            )
            .await
            .status,
            204
        );
        let e = tokio::time::timeout(std::time::Duration::from_secs(1), events.recv())
            .await
            .expect("event within 1 s")
            .unwrap();
        assert_eq!(
            e,
            callrelay_server::app::ControlEvent::UserBlocked {
                blocker: callrelay_links::UserId::parse("alice").unwrap(),
                blocked: callrelay_links::UserId::parse("mallory").unwrap()
            }
        );
        s.stop().await;
    }
);
