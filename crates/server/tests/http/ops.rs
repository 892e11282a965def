use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    health_readiness_and_metrics,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let h = s.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(
            (h.status.as_u16(), h.json["status"].as_str()),
            (200, Some("ok"))
        );
        let r = s.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            without_cluster_lease(&r.json),
            json!({"ready": true, "store": "ok", "draining": false})
        );
        // On PostgreSQL the node is a cluster member and holds its lease; SQLite has no cluster.
        assert!(matches!(
            r.json.get("cluster_lease"),
            None | Some(serde_json::Value::Bool(true))
        ));
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        s.join(&s.token("bob"), id).await;
        s.join(&s.token("bob"), "4bT9xQ2mZr7LpK0aW3cV1e").await;
        let m = s.call(Method::GET, "/metrics", None, None).await;
        assert_eq!(m.status, 200);
        assert!(m.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        for line in [
        "callrelay_joins_total{result=\"admitted\"} 1",
        "callrelay_joins_total{result=\"not_found\"} 1",
        "callrelay_joins_total{result=\"room_full\"} 0",
        "callrelay_links_created_total 1",
        "callrelay_store_up 1",
        "callrelay_http_requests_total{method=\"POST\",route=\"/v1/links/{id}/join\",status=\"200\"} 1",
    ] {
        assert!(m.text.contains(line), "missing {line:?} in\n{}", m.text);
    }
        assert!(m
            .text
            .contains("callrelay_store_operation_duration_seconds_bucket{op=\"record_join\""));
        // The link id never appears in metrics.
        assert!(!m.text.contains(id));
        s.stop().await;
    }
);

both_backends!(
    a_dead_store_fails_joins_fast_and_readiness,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap().to_owned();
        // Kill the store from under the server: close its pools.
        s.state.store.close().await;
        let started = std::time::Instant::now();
        s.join(&s.token("bob"), &id)
            .await
            .assert_problem(503, "store_unavailable");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "fails fast"
        );
        let r = s.call(Method::GET, "/readyz", None, None).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            without_cluster_lease(&r.json),
            json!({"ready": false, "store": "unavailable", "draining": false})
        );
        assert_eq!(
            s.call(Method::GET, "/healthz", None, None).await.status,
            200
        );
        s.stop().await;
    }
);

/// A readiness answer without its `cluster_lease` field (present on PostgreSQL only).
fn without_cluster_lease(v: &serde_json::Value) -> serde_json::Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("cluster_lease");
    }
    v
}
