//! Scheduled calls: the planned length, editing by the creator, and the calendar entry.

use crate::both_backends;
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(
    a_duration_needs_a_time_and_a_sane_length,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let alice = s.token("alice");
        for body in [
            json!({"duration": 1800}),
            json!({"scheduled_at": "2026-03-02T09:30:00Z", "duration": 59}),
            json!({"scheduled_at": "2026-03-02T09:30:00Z", "duration": 86401}),
            json!({"scheduled_at": "2026-03-02T09:30:00Z", "duration": -5}),
        ] {
            let r = s
                .call(Method::POST, "/v1/links", Some(&alice), Some(body.clone()))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}: {}", r.text);
            assert!(
                matches!(
                    r.json["code"].as_str(),
                    Some("invalid_request" | "invalid_body")
                ),
                "{}",
                r.text
            );
        }
        let l = s
            .create(
                &alice,
                json!({"scheduled_at": "2026-03-02T09:30:00Z", "duration": 2700}),
            )
            .await;
        assert_eq!(l["duration"], 2700);
        let id = l["id"].as_str().unwrap();
        let p = s
            .call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await;
        assert_eq!(p.json["scheduled_at"], "2026-03-02T09:30:00.000Z");
        assert_eq!(p.json["duration"], 2700, "the preview shows the length");
        let log = s
            .call(Method::GET, "/v1/me/links", Some(&alice), None)
            .await;
        assert_eq!(
            log.json["links"][0]["link"]["duration"], 2700,
            "and the call log"
        );
        s.stop().await;
    }
);

both_backends!(
    the_creator_edits_title_and_schedule_and_nobody_else_can,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let (alice, bob) = (s.token("alice"), s.token("bob"));
        let l = s
            .create(
                &alice,
                json!({"title": "Standup", "scheduled_at": "2026-03-02T09:30:00Z", "duration": 900}),
            )
            .await;
        let path = format!("/v1/links/{}", l["id"].as_str().unwrap());

        let r = s
            .call(
                Method::PATCH,
                &path,
                Some(&bob),
                Some(json!({"title": "Mine"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
        assert_eq!(r.json["code"], "not_creator");

        // Only what is present changes.
        let r = s
            .call(
                Method::PATCH,
                &path,
                Some(&alice),
                Some(json!({"scheduled_at": "2026-03-03T10:00:00Z"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["title"], "Standup");
        assert_eq!(r.json["scheduled_at"], "2026-03-03T10:00:00.000Z");
        assert_eq!(r.json["duration"], 900);

        // Null clears; no time means no length either.
        let r = s
            .call(
                Method::PATCH,
                &path,
                Some(&alice),
                Some(json!({"title": null, "scheduled_at": null})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["title"], serde_json::Value::Null);
        assert_eq!(r.json["scheduled_at"], serde_json::Value::Null);
        assert_eq!(r.json["duration"], serde_json::Value::Null);
        let p = s.call(Method::GET, &path, None, None).await;
        assert_eq!(p.json["scheduled_at"], serde_json::Value::Null, "stored");

        for bad in [
            json!({"duration": 600}),
            json!({"title": "x".repeat(101)}),
            json!({"when": "tomorrow"}),
            json!({"scheduled_at": "tomorrow"}),
        ] {
            let r = s
                .call(Method::PATCH, &path, Some(&alice), Some(bad.clone()))
                .await;
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}: {}", r.text);
        }
        let r = s.call(Method::PATCH, &path, None, Some(json!({}))).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);

        let admin = s.admin_token("ops");
        let revoke = format!("/v1/admin/links/{}/revoke", l["id"].as_str().unwrap());
        assert_eq!(
            s.call(Method::POST, &revoke, Some(&admin), None)
                .await
                .status,
            StatusCode::OK
        );
        let r = s
            .call(
                Method::PATCH,
                &path,
                Some(&alice),
                Some(json!({"title": "Late"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::GONE, "{}", r.text);
        assert_eq!(r.json["code"], "link_revoked");
        s.stop().await;
    }
);

both_backends!(
    a_scheduled_link_is_a_calendar_event_without_the_key,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[("CALLRELAY_LINKS_REMINDERS", "10m, 0s")]).await;
        let alice = s.token("alice");
        let plain = s.create(&alice, json!({})).await;
        let r = s
            .call(
                Method::GET,
                &format!("/v1/links/{}/calendar.ics", plain["id"].as_str().unwrap()),
                None,
                None,
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json["code"], "not_scheduled");

        let l = s
            .create(
                &alice,
                json!({"title": "Planning; Q2, all hands", "scheduled_at": "2026-03-02T09:30:00Z", "duration": 2700}),
            )
            .await;
        let id = l["id"].as_str().unwrap();
        let path = format!("/v1/links/{id}/calendar.ics");
        let r = s.call(Method::GET, &path, None, None).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(
            r.headers["content-type"], "text/calendar; charset=utf-8",
            "served as a calendar"
        );
        let ics = r.text.clone();
        assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
        let unfolded = ics.replace("\r\n ", "");
        assert!(
            unfolded.contains("\r\nDTSTART:20260302T093000Z\r\n"),
            "{ics}"
        );
        assert!(unfolded.contains("\r\nDTEND:20260302T101500Z\r\n"), "{ics}");
        assert!(
            unfolded.contains("\r\nSUMMARY:Planning\\; Q2\\, all hands\r\n"),
            "{ics}"
        );
        assert!(unfolded.contains(&format!("\r\nURL:https://calls.example.org/video/{id}\r\n")));
        assert!(
            unfolded.contains("\r\nTRIGGER:-PT10M\r\n")
                && unfolded.contains("\r\nTRIGGER:PT0S\r\n")
        );
        assert!(!ics.contains("#k="), "never the key");
        let uid = |t: &str| {
            t.replace("\r\n ", "")
                .lines()
                .find(|l| l.starts_with("UID:"))
                .map(str::to_owned)
                .unwrap()
        };
        assert!(
            !uid(&ics).contains(id),
            "the UID does not reveal the link id"
        );

        // Rescheduled: the same UID, so a calendar updates its event.
        let r = s
            .call(
                Method::PATCH,
                &format!("/v1/links/{id}"),
                Some(&alice),
                Some(json!({"scheduled_at": "2026-03-04T08:00:00Z"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let again = s.call(Method::GET, &path, None, None).await.text;
        assert!(again.contains("DTSTART:20260304T080000Z"), "{again}");
        assert_eq!(uid(&again), uid(&ics));
        s.stop().await;
    }
);

/// An endpoint on 127.0.0.1 that keeps every event it is sent (signatures are checked by the
/// browser suite's Standard Webhooks library and the media suite).
async fn endpoint() -> (
    String,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
    tokio::task::JoinHandle<()>,
) {
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let keep = keep.clone();
            async move {
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, task)
}

async fn wait_for(got: &std::sync::Mutex<Vec<serde_json::Value>>, kind: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(e) = got.lock().unwrap().iter().find(|e| e["type"] == kind) {
            return e.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {kind} event: {:?}",
            got.lock().unwrap()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

both_backends!(
    expiry_and_revocation_are_events_and_the_id_only_by_opt_in,
    |store: StoreHandle| async move {
        let (url, got, server) = endpoint().await;
        let s = TestServer::start(
            &store,
            &[
                ("CALLRELAY_WEBHOOKS_URLS", &url),
                (
                    "CALLRELAY_WEBHOOKS_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                ("CALLRELAY_WEBHOOKS_INCLUDE_LINK_ID", "true"),
            ],
        )
        .await;
        let alice = s.token("alice");
        let doomed = s.create(&alice, json!({"title": "old"})).await;
        s.clock.advance(chrono::Duration::days(45));
        let revoked = s.create(&alice, json!({"title": "revoked"})).await;
        let admin = s.admin_token("ops");
        let path = format!("/v1/admin/links/{}/revoke", revoked["id"].as_str().unwrap());
        let r = s
            .call(
                Method::POST,
                &path,
                Some(&admin),
                Some(json!({"reason": "abuse"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let e = wait_for(&got, "link.revoked").await;
        assert_eq!(e["data"]["reason"], "abuse");
        assert_eq!(e["data"]["link_id"], revoked["id"], "opted in: the id");
        assert_eq!(e["data"]["url"], revoked["url"]);
        // 91 days after the first link's creation it has expired; the revoked one is not
        // announced as expired, ever.
        s.clock.advance(chrono::Duration::days(46));
        let e = wait_for(&got, "link.expired").await;
        assert_eq!(e["data"]["link_id"], doomed["id"]);
        assert_eq!(e["data"]["title"], "old");
        s.clock.advance(chrono::Duration::days(60));
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let expired: Vec<_> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "link.expired")
            .cloned()
            .collect();
        assert_eq!(
            expired.len(),
            1,
            "once, and never the revoked link: {expired:?}"
        );
        s.stop().await;
        server.abort();
    }
);

both_backends!(
    an_endpoint_that_never_answers_slows_no_request,
    |store: StoreHandle| async move {
        // The endpoint takes every event and answers only when the test lets it.
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let held = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = held.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move || {
                let mut release = release_rx.clone();
                let count = count.clone();
                async move {
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let _ = release.wait_for(|r| *r).await;
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let s = TestServer::start(
            &store,
            &[
                ("CALLRELAY_WEBHOOKS_URLS", &url),
                (
                    "CALLRELAY_WEBHOOKS_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                ("CALLRELAY_WEBHOOKS_TIMEOUT", "60s"),
            ],
        )
        .await;
        let alice = s.token("alice");
        let first = s.create(&alice, json!({})).await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while held.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no delivery started"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        // The endpoint now holds a delivery open (for up to a minute): links are still created
        // and joined, each event queued behind it.
        for i in 0..10 {
            let l = s
                .create(&alice, json!({"title": format!("call {i}")}))
                .await;
            let r = s
                .join(&s.token(&format!("user{i}")), l["id"].as_str().unwrap())
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        let r = s.join(&alice, first["id"].as_str().unwrap()).await;
        assert_eq!(r.status, StatusCode::OK);
        // Had a request waited for the endpoint, it would have hit the client's 20 s timeout
        // (the endpoint answers only below, and webhooks.timeout is 60 s) and failed above.
        release_tx.send(true).unwrap();
        s.stop().await;
        server.abort();
    }
);

both_backends!(
    a_reminder_found_over_an_hour_late_is_dropped,
    |store: StoreHandle| async move {
        let (url, got, server) = endpoint().await;
        let s = TestServer::start(
            &store,
            &[
                ("CALLRELAY_WEBHOOKS_URLS", &url),
                (
                    "CALLRELAY_WEBHOOKS_SECRET",
                    "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                ),
                ("CALLRELAY_LINKS_REMINDERS", "0s"),
            ],
        )
        .await;
        let alice = s.token("alice");
        // t0 is 2026-03-01T12:00Z: one call at 13:00, one at 16:00.
        s.create(
            &alice,
            json!({"title": "early", "scheduled_at": "2026-03-01T13:00:00Z"}),
        )
        .await;
        s.create(
            &alice,
            json!({"title": "late", "scheduled_at": "2026-03-01T16:00:00Z"}),
        )
        .await;
        // The relay "wakes up" at 16:01: 13:00's reminder is 3 h late, 16:00's 1 min.
        s.clock.advance(chrono::Duration::minutes(4 * 60 + 1));
        let e = wait_for(&got, "link.reminder").await;
        assert_eq!(e["data"]["title"], "late");
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let reminders: Vec<_> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "link.reminder")
            .map(|e| e["data"]["title"].clone())
            .collect();
        assert_eq!(reminders, [json!("late")], "the 3 h late one was dropped");
        s.stop().await;
        server.abort();
    }
);
