use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    expiry_boundaries_through_the_api,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[("CALLRELAY_LINKS_TTL", "3s")]).await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        let other = s.create(&s.token("alice"), json!({})).await;
        let other = other["id"].as_str().unwrap();
        async fn preview(s: &TestServer, id: &str) -> Resp {
            s.call(Method::GET, &format!("/v1/links/{id}"), None, None)
                .await
        }
        // A join at 2 s keeps it alive until 5 s.
        s.clock.advance(chrono::Duration::seconds(2));
        assert_eq!(s.join(&s.token("bob"), id).await.status, 200);
        s.clock.advance(chrono::Duration::milliseconds(999));
        assert_eq!(preview(&s, other).await.status, 200, "2.999 s: still valid");
        s.clock.advance(chrono::Duration::milliseconds(1));
        preview(&s, other).await.assert_problem(410, "link_expired");
        s.join(&s.token("bob"), other)
            .await
            .assert_problem(410, "link_expired");
        s.clock.advance(chrono::Duration::seconds(1));
        assert_eq!(
            preview(&s, id).await.status,
            200,
            "4 s: renewed by the join at 2 s"
        );
        s.clock.advance(chrono::Duration::milliseconds(999));
        assert_eq!(preview(&s, id).await.status, 200);
        s.clock.advance(chrono::Duration::milliseconds(1));
        preview(&s, id).await.assert_problem(410, "link_expired");
        s.join(&s.token("alice"), id)
            .await
            .assert_problem(410, "link_expired");
        s.stop().await;
    }
);

both_backends!(
    expired_links_are_purged_after_the_grace_period,
    |store: StoreHandle| async move {
        let s = TestServer::start(
            &store,
            &[
                ("CALLRELAY_LINKS_TTL", "1h"),
                ("CALLRELAY_LINKS_PURGE_GRACE", "1d"),
            ],
        )
        .await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        s.clock.advance(chrono::Duration::hours(2));
        assert_eq!(
            s.state
                .store
                .purge_expired(s.state.now(), s.state.settings.purge_grace)
                .await
                .unwrap(),
            0
        );
        s.call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await
            .assert_problem(410, "link_expired");
        s.clock.advance(chrono::Duration::days(1));
        // The relay's own maintenance task purges once at start-up (then every
        // `links.purge_interval`); on a slow machine that first run can come after the clock
        // moved, and purge the link first. Either way it is purged exactly once.
        let here = s
            .state
            .store
            .purge_expired(s.state.now(), s.state.settings.purge_grace)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while here + s.state.metrics.links_purged.get() < 1 && std::time::Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            here + s.state.metrics.links_purged.get(),
            1,
            "purged once, here or by the maintenance task"
        );
        s.call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await
            .assert_problem(404, "link_not_found");
        s.stop().await;
    }
);
