use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    join_and_preview_floods_get_429,
    |store: StoreHandle| async move {
        let s = TestServer::start(
            &store,
            &[
                ("CALLRELAY_LIMITS_JOIN_PER_USER_PER_MINUTE", "3"),
                ("CALLRELAY_LIMITS_PREVIEW_PER_IP_PER_MINUTE", "5"),
            ],
        )
        .await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        let bob = s.token("bob");
        for _ in 0..3 {
            assert_eq!(s.join(&bob, id).await.status, 200);
        }
        let r = s.join(&bob, id).await;
        r.assert_problem(429, "rate_limited");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        // Another user is not limited by bob's flood.
        assert_eq!(s.join(&s.token("carol"), id).await.status, 200);
        // Link guessing from one address: previews of random ids hit the limit.
        let mut statuses = Vec::new();
        for _ in 0..7 {
            statuses.push(
                s.call(Method::GET, "/v1/links/4bT9xQ2mZr7LpK0aW3cV1e", None, None)
                    .await
                    .status
                    .as_u16(),
            );
        }
        assert_eq!(statuses, vec![404, 404, 404, 404, 404, 429, 429]);
        let metrics = s.call(Method::GET, "/metrics", None, None).await.text;
        assert!(
            metrics.contains("callrelay_rate_limited_total{scope=\"preview_ip\"} 2"),
            "{metrics}"
        );
        assert!(
            metrics.contains("callrelay_rate_limited_total{scope=\"join_user\"} 1"),
            "{metrics}"
        );
        s.stop().await;
    }
);

both_backends!(
    link_creation_is_limited_per_user,
    |store: StoreHandle| async move {
        let s = TestServer::start(
            &store,
            &[("CALLRELAY_LIMITS_CREATE_PER_USER_PER_MINUTE", "2")],
        )
        .await;
        let alice = s.token("alice");
        let mut created = Vec::new();
        for _ in 0..2 {
            created.push(
                s.create(&alice, json!({})).await["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        let r = s
            .call(Method::POST, "/v1/links", Some(&alice), Some(json!({})))
            .await;
        r.assert_problem(429, "rate_limited");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
        // The refused creation made no link: alice's call log holds the two she made.
        let log = s
            .call(Method::GET, "/v1/me/links", Some(&alice), None)
            .await;
        let mut ids: Vec<String> = log.json["links"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| i["link"]["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        created.sort();
        assert_eq!(ids, created, "{:?}", log.json);
        // Another user is not limited by alice's.
        s.create(&s.token("bob"), json!({})).await;
        let metrics = s.call(Method::GET, "/metrics", None, None).await.text;
        assert!(
            metrics.contains("callrelay_rate_limited_total{scope=\"create_user\"} 1"),
            "{metrics}"
        );
        s.stop().await;
    }
);
