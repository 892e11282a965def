use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    operators_revoke_links_for_good,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let mut events = s.state.events.subscribe();
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        let path = format!("/v1/admin/links/{id}/revoke");
        // Users cannot revoke (not even the creator) nor delete.
        s.call(
            Method::POST,
            &path,
            Some(&s.token("alice")),
            Some(json!({"reason": "mine"})),
        )
        .await
        .assert_problem(403, "forbidden");
        s.call(
            Method::DELETE,
            &format!("/v1/links/{id}"),
            Some(&s.token("alice")),
            None,
        )
        .await
        .assert_problem(405, "method_not_allowed");
        s.call(Method::POST, &path, None, None)
            .await
            .assert_problem(401, "unauthorized");
        let admin = s.admin_token("ops");
        let r = s
            .call(
                Method::POST,
                &path,
                Some(&admin),
                Some(json!({"reason": "abuse report 17"})),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert_eq!(r.json["id"], id);
        assert_eq!(r.json["revoked_at"], "2026-03-01T12:00:00.000Z");
        assert_eq!(r.json["revoke_reason"], "abuse report 17");
        let e = tokio::time::timeout(std::time::Duration::from_secs(1), events.recv())
            .await
            .expect("event within 1 s")
            .unwrap();
        assert_eq!(
            e,
            callrelay_server::app::ControlEvent::LinkRevoked {
                link: callrelay_links::LinkId::parse(id).unwrap()
            }
        );
        // Idempotent: the first revocation stands.
        s.clock.advance(chrono::Duration::minutes(5));
        let again = s.call(Method::POST, &path, Some(&admin), None).await;
        assert_eq!(again.status, 200);
        assert_eq!(again.json["revoked_at"], "2026-03-01T12:00:00.000Z");
        assert_eq!(again.json["revoke_reason"], "abuse report 17");
        // Revoked everywhere.
        s.call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await
            .assert_problem(410, "link_revoked");
        s.join(&s.token("bob"), id)
            .await
            .assert_problem(410, "link_revoked");
        s.join(&s.token("alice"), id)
            .await
            .assert_problem(410, "link_revoked");
        s.call(Method::GET, &format!("/v1/links/{id}/qr.svg"), None, None)
            .await
            .assert_problem(410, "link_revoked");
        // Unknown and malformed ids.
        s.call(
            Method::POST,
            "/v1/admin/links/4bT9xQ2mZr7LpK0aW3cV1e/revoke",
            Some(&admin),
            None,
        )
        .await
        .assert_problem(404, "link_not_found");
        s.call(
            Method::POST,
            "/v1/admin/links/nope/revoke",
            Some(&admin),
            None,
        )
        .await
        .assert_problem(400, "invalid_link_id");
        s.call(Method::POST, &path, Some(&admin), Some(json!({"why": "x"})))
            .await
            .assert_problem(400, "invalid_body");
        s.stop().await;
    }
);
