use crate::both_backends;
use crate::common::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

both_backends!(create_returns_the_link, |store: StoreHandle| async move {
    let s = TestServer::start(&store, &[]).await;
    let alice = s.token("alice");
    let l = s
        .create(
            &alice,
            json!({"kind": "voice", "title": " Standup ", "scheduled_at": "2026-03-02T09:30:00Z"}),
        )
        .await;
    let id = l["id"].as_str().unwrap();
    assert_eq!(id.len(), 22);
    assert!(id.bytes().all(|b| b.is_ascii_alphanumeric()));
    assert_eq!(l["kind"], "voice");
    assert_eq!(l["url"], format!("https://calls.example.org/voice/{id}"));
    assert_eq!(l["title"], "Standup");
    assert_eq!(l["scheduled_at"], "2026-03-02T09:30:00.000Z");
    assert_eq!(l["created_at"], "2026-03-01T12:00:00.000Z");
    assert_eq!(l["last_used_at"], "2026-03-01T12:00:00.000Z");
    assert_eq!(
        l["expires_at"], "2026-05-30T12:00:00.000Z",
        "90 days after creation"
    );
    assert_eq!(l["creator"], "alice");
    // Video is the default kind.
    let v = s.create(&alice, json!({})).await;
    assert_eq!(v["kind"], "video");
    assert_eq!(v["title"], serde_json::Value::Null);
    assert_ne!(v["id"], l["id"]);
    s.stop().await;
});

both_backends!(
    preview_shows_the_link_and_never_renews,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let l = s.create(&s.token("alice"), json!({"title": "Party"})).await;
        let id = l["id"].as_str().unwrap();
        s.clock.advance(chrono::Duration::days(10));
        let p = s
            .call(Method::GET, &format!("/v1/links/{id}"), None, None)
            .await;
        assert_eq!(p.status, StatusCode::OK, "{}", p.text);
        assert_eq!(p.json["id"], id);
        assert_eq!(p.json["kind"], "video");
        assert_eq!(p.json["title"], "Party");
        assert_eq!(p.json["participants"], 0);
        assert_eq!(
            p.json["expires_at"], l["expires_at"],
            "a preview does not renew"
        );
        assert!(
            p.json.get("creator").is_none(),
            "the preview does not reveal the creator"
        );
        s.stop().await;
    }
);

both_backends!(bad_requests_get_problems, |store: StoreHandle| async move {
    let s = TestServer::start(&store, &[]).await;
    let alice = s.token("alice");
    // Malformed ids: 400 before any lookup.
    for bad in [
        "short",
        "4bT9xQ2mZr7LpK0aW3cV1e0",
        "4bT9xQ2mZr7LpK0aW3cV1%2D",
        "4bT9xQ2mZr7LpK0aW3cV1%C3%A9",
    ] {
        s.call(Method::GET, &format!("/v1/links/{bad}"), None, None)
            .await
            .assert_problem(400, "invalid_link_id");
        s.join(&alice, bad)
            .await
            .assert_problem(400, "invalid_link_id");
    }
    // Unknown link.
    s.call(Method::GET, "/v1/links/4bT9xQ2mZr7LpK0aW3cV1e", None, None)
        .await
        .assert_problem(404, "link_not_found");
    s.join(&alice, "4bT9xQ2mZr7LpK0aW3cV1e")
        .await
        .assert_problem(404, "link_not_found");
    // Unknown fields, wrong types, bad values.
    s.call(
        Method::POST,
        "/v1/links",
        Some(&alice),
        Some(json!({"kind": "video", "colour": "red"})),
    )
    .await
    .assert_problem(400, "invalid_body");
    s.call(
        Method::POST,
        "/v1/links",
        Some(&alice),
        Some(json!({"kind": "hologram"})),
    )
    .await
    .assert_problem(400, "invalid_body");
    s.call(
        Method::POST,
        "/v1/links",
        Some(&alice),
        Some(json!({"scheduled_at": "tomorrow"})),
    )
    .await
    .assert_problem(400, "invalid_body");
    s.call(
        Method::POST,
        "/v1/links",
        Some(&alice),
        Some(json!({"title": "x".repeat(101)})),
    )
    .await
    .assert_problem(400, "invalid_request");
    // Not JSON.
    let r = s
        .client
        .post(format!("{}/v1/links", s.base))
        .bearer_auth(&alice)
        .body("kind=video")
        .send()
        .await
        .unwrap();
    Resp::from(r)
        .await
        .assert_problem(415, "unsupported_media_type");
    let r = s
        .client
        .post(format!("{}/v1/links", s.base))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .unwrap();
    Resp::from(r).await.assert_problem(400, "invalid_body");
    // Over 16 KiB.
    let big = json!({"title": "x".repeat(20_000)});
    s.call(Method::POST, "/v1/links", Some(&alice), Some(big))
        .await
        .assert_problem(413, "payload_too_large");
    // No delete route for users.
    s.call(
        Method::DELETE,
        "/v1/links/4bT9xQ2mZr7LpK0aW3cV1e",
        Some(&alice),
        None,
    )
    .await
    .assert_problem(405, "method_not_allowed");
    // Unknown route.
    s.call(Method::GET, "/v1/nothing", None, None)
        .await
        .assert_problem(404, "not_found");
    s.stop().await;
});

both_backends!(
    tokens_are_required_and_checked,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        s.call(Method::POST, "/v1/links", None, Some(json!({})))
            .await
            .assert_problem(401, "unauthorized");
        s.call(
            Method::POST,
            "/v1/links",
            Some("not.a.jwt"),
            Some(json!({})),
        )
        .await
        .assert_problem(401, "unauthorized");
        let other = callrelay_server::auth::Tokens::new(&[1u8; 32], std::time::Duration::ZERO);
        let forged = other.issue_user(
            &callrelay_links::UserId::parse("alice").unwrap(),
            None,
            true,
            chrono::Utc::now(),
            std::time::Duration::from_secs(60),
        );
        s.call(Method::POST, "/v1/links", Some(&forged), Some(json!({})))
            .await
            .assert_problem(401, "unauthorized");
        let expired = s.tokens.issue_user(
            &callrelay_links::UserId::parse("alice").unwrap(),
            None,
            false,
            chrono::Utc::now() - chrono::Duration::hours(3),
            std::time::Duration::from_secs(60),
        );
        s.call(Method::GET, "/v1/me/links", Some(&expired), None)
            .await
            .assert_problem(401, "unauthorized");
        // alg: none with the right claims.
        let b64 = |v: serde_json::Value| base64url(v.to_string().as_bytes());
        let none = format!(
            "{}.{}.",
            b64(json!({"alg": "none", "typ": "JWT"})),
            b64(
                json!({"sub": "alice", "aud": "callrelay", "exp": chrono::Utc::now().timestamp() + 600, "role": "admin"})
            )
        );
        s.call(Method::GET, "/v1/me/links", Some(&none), None)
            .await
            .assert_problem(401, "unauthorized");
        // Wrong audience.
        let hs = |claims: serde_json::Value| jsonwebtoken_like_hs256(SECRET.as_bytes(), &claims);
        let wrong_aud = hs(
            json!({"sub": "alice", "aud": "someone-else", "exp": chrono::Utc::now().timestamp() + 600}),
        );
        s.call(Method::GET, "/v1/me/links", Some(&wrong_aud), None)
            .await
            .assert_problem(401, "unauthorized");
        let right = hs(
            json!({"sub": "alice", "aud": "callrelay", "exp": chrono::Utc::now().timestamp() + 600}),
        );
        assert_eq!(
            s.call(Method::GET, "/v1/me/links", Some(&right), None)
                .await
                .status,
            200
        );
        // A join grant is not a user token.
        let l = s.create(&s.token("alice"), json!({})).await;
        let j = s.join(&s.token("bob"), l["id"].as_str().unwrap()).await;
        let grant = j.json["grant"].as_str().unwrap();
        s.call(Method::GET, "/v1/me/links", Some(grant), None)
            .await
            .assert_problem(401, "unauthorized");
        s.stop().await;
    }
);

both_backends!(
    qr_code_is_an_svg_of_the_url,
    |store: StoreHandle| async move {
        let s = TestServer::start(&store, &[]).await;
        let l = s.create(&s.token("alice"), json!({})).await;
        let id = l["id"].as_str().unwrap();
        let r = s
            .call(Method::GET, &format!("/v1/links/{id}/qr.svg"), None, None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["content-type"], "image/svg+xml");
        assert!(
            r.text.starts_with("<?xml") && r.text.contains("<svg"),
            "{}",
            &r.text[..100.min(r.text.len())]
        );
        // The SVG encodes the URL: the same renderer gives the same image.
        assert_eq!(
            r.text,
            callrelay_server::api::qr_svg(l["url"].as_str().unwrap()).unwrap()
        );
        s.call(
            Method::GET,
            "/v1/links/4bT9xQ2mZr7LpK0aW3cV1e/qr.svg",
            None,
            None,
        )
        .await
        .assert_problem(404, "link_not_found");
        s.stop().await;
    }
);

fn base64url(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, &x)| acc | (u32::from(x) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An HS256 JWT with arbitrary claims, built by hand (so tests can forge what the server must refuse).
fn jsonwebtoken_like_hs256(secret: &[u8], claims: &serde_json::Value) -> String {
    let header = base64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = base64url(claims.to_string().as_bytes());
    let signing_input = format!("{header}.{payload}");
    let sig = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", base64url(&sig))
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}
