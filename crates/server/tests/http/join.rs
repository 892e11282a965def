use crate::both_backends;
use crate::common::*;
use reqwest::Method;
use serde_json::json;

both_backends!(
    join_renews_and_answers_a_grant,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        s.clock.advance(chrono::Duration::days(30));
        let j = s.join(&s.token("bob"), id).await;
        assert_eq!(j.status, 200, "{}", j.text);
        assert!(j.json["participant_id"].as_str().unwrap().starts_with("p-"));
        assert_eq!(j.json["signal_url"], "wss://calls.example.org/v1/signal");
        assert_eq!(j.json["ice_servers"], json!([]));
        assert_eq!(j.json["link"]["last_used_at"], "2026-03-31T12:00:00.000Z");
        assert_eq!(
            j.json["link"]["expires_at"], "2026-06-29T12:00:00.000Z",
            "renewed for 90 days from the join"
        );
        // The grant is accepted by the media plane's check, for this link and participant, ≤ 60 s.
        let g = s
            .tokens
            .verify_grant(j.json["grant"].as_str().unwrap())
            .expect("a valid grant");
        assert_eq!(g.link, id);
        assert_eq!(g.sub, "bob");
        assert_eq!(g.pid, j.json["participant_id"].as_str().unwrap());
        assert!(g.exp - g.iat <= 60);
        // The preview shows the renewal; a seat held by a join that has not connected is not a
        // participant.
        let p = s
            .call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await;
        assert_eq!(p.json["expires_at"], "2026-06-29T12:00:00.000Z");
        assert_eq!(p.json["participants"], 0);
        s.stop().await;
    }
);

both_backends!(
    blocked_users_learn_only_that_they_cannot_join,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let alice = s.token("alice");
        let l = s.create(&alice, json!({})).await;
        let id = l["id"].as_str().unwrap();
        assert_eq!(
            s.call(Method::PUT, "/v1/me/blocks/mallory", Some(&alice), None)
                .await
                .status,
            204
        );
        let r = s.join(&s.token("mallory"), id).await;
        r.assert_problem(403, "join_refused");
        assert!(
            !r.text.contains("block"),
            "the refusal does not say why: {}",
            r.text
        );
        // Others still join; the creator can never be blocked from their own link.
        assert_eq!(s.join(&s.token("bob"), id).await.status, 200);
        s.call(Method::PUT, "/v1/me/blocks/alice", Some(&alice), None)
            .await
            .assert_problem(400, "invalid_request");
        assert_eq!(s.join(&alice, id).await.status, 200);
        // Unblocked: admitted again.
        assert_eq!(
            s.call(Method::DELETE, "/v1/me/blocks/mallory", Some(&alice), None)
                .await
                .status,
            204
        );
        assert_eq!(s.join(&s.token("mallory"), id).await.status, 200);
        s.stop().await;
    }
);

both_backends!(
    room_full_never_over_admits,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap().to_owned();
        // 50 concurrent joins of one link into a room of 32.
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let client = s.client.clone();
                let url = format!("{}/v1/links/{id}/join", s.base);
                let token = s.token(&format!("user{i}"));
                tokio::spawn(async move {
                    client
                        .post(url)
                        .bearer_auth(token)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                })
            })
            .collect();
        let mut admitted = 0;
        let mut full = 0;
        for t in tasks {
            match t.await.unwrap() {
                200 => admitted += 1,
                409 => full += 1,
                other => panic!("unexpected status {other}"),
            }
        }
        assert_eq!((admitted, full), (32, 18));
        let r = s.join(&s.token("late"), &id).await;
        r.assert_problem(409, "room_full");
        // Every admitted join is in the store: 32 call-log entries, one per admitted user.
        let mut logged = 0;
        for i in 0..50 {
            let log = s
                .call(
                    Method::GET,
                    "/v1/me/links",
                    Some(&s.token(&format!("user{i}"))),
                    None,
                )
                .await;
            logged += log.json["links"].as_array().unwrap().len();
        }
        assert_eq!(logged, 32);
        s.stop().await;
    }
);

both_backends!(small_rooms_fill_up, |store: StoreHandle| async move {
    let s = TestServer::start(&store, &[("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "2")]).await;
    let l = s.create(&s.token("alice"), json!({})).await;
    let id = l["id"].as_str().unwrap();
    assert_eq!(s.join(&s.token("alice"), id).await.status, 200);
    assert_eq!(s.join(&s.token("bob"), id).await.status, 200);
    let r = s.join(&s.token("carol"), id).await;
    r.assert_problem(409, "room_full");
    assert_eq!(r.json["detail"], "the call is full");
    s.stop().await;
});
