use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    links_revocations_and_blocks_survive_a_restart,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let alice = s.token("alice");
        let kept = s.create(&alice, json!({"title": "weekly"})).await;
        let revoked = s.create(&alice, json!({})).await;
        assert_eq!(
            s.call(Method::PUT, "/v1/me/blocks/mallory", Some(&alice), None)
                .await
                .status,
            204
        );
        let r = s
            .call(
                Method::POST,
                &format!("/v1/admin/links/{}/revoke", revoked["id"].as_str().unwrap()),
                Some(&s.admin_token("ops")),
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        let clock = s.clock.clone();
        s.stop().await;

        let s = TestServer::start_with_clock(&store, &[], clock).await;
        let p = s
            .call(
                Method::GET,
                &format!("/v1/links/{}", kept["id"].as_str().unwrap()),
                None,
                None,
            )
            .await;
        assert_eq!(p.status, 200);
        assert_eq!(p.json["title"], "weekly");
        s.call(
            Method::GET,
            &format!("/v1/links/{}", revoked["id"].as_str().unwrap()),
            None,
            None,
        )
        .await
        .assert_problem(410, "link_revoked");
        s.join(&s.token("mallory"), kept["id"].as_str().unwrap())
            .await
            .assert_problem(403, "join_refused");
        let blocks = s
            .call(Method::GET, "/v1/me/blocks", Some(&s.token("alice")), None)
            .await;
        assert_eq!(blocks.json["blocked"], json!(["mallory"]));
        s.stop().await;
    }
);
