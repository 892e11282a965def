use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    call_log_lists_created_and_joined_links_newest_first,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let a1 = s.create(&alice, json!({"title": "first"})).await;
        s.clock.advance(chrono::Duration::minutes(1));
        let b1 = s.create(&bob, json!({"kind": "voice"})).await;
        s.clock.advance(chrono::Duration::minutes(1));
        assert_eq!(s.join(&alice, b1["id"].as_str().unwrap()).await.status, 200);
        s.clock.advance(chrono::Duration::minutes(1));
        let a2 = s.create(&alice, json!({})).await;

        let log = s
            .call(Method::GET, "/v1/me/links", Some(&alice), None)
            .await;
        assert_eq!(log.status, 200);
        let items = log.json["links"].as_array().unwrap();
        let ids: Vec<_> = items.iter().map(|i| i["link"]["id"].clone()).collect();
        assert_eq!(
            ids,
            vec![a2["id"].clone(), b1["id"].clone(), a1["id"].clone()]
        );
        assert_eq!(items[0]["role"], "creator");
        assert_eq!(items[0]["last_joined_at"], serde_json::Value::Null);
        assert_eq!(items[1]["role"], "participant");
        assert_eq!(items[1]["link"]["kind"], "voice");
        assert_eq!(items[1]["last_joined_at"], "2026-03-01T12:02:00.000Z");
        assert_eq!(items[1]["link"]["expires_at"], "2026-05-30T12:02:00.000Z");
        assert_eq!(items[2]["link"]["title"], "first");
        // Limit.
        let log = s
            .call(Method::GET, "/v1/me/links?limit=1", Some(&alice), None)
            .await;
        assert_eq!(log.json["links"].as_array().unwrap().len(), 1);
        s.call(Method::GET, "/v1/me/links?limit=0", Some(&alice), None)
            .await
            .assert_problem(400, "invalid_request");
        s.call(Method::GET, "/v1/me/links?limit=x", Some(&alice), None)
            .await
            .assert_problem(400, "invalid_request");
        // Bob sees only his link.
        let log = s.call(Method::GET, "/v1/me/links", Some(&bob), None).await;
        assert_eq!(log.json["links"].as_array().unwrap().len(), 1);
        s.stop().await;
    }
);
