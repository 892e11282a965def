//! WHIP (RFC 9725): a strict WHIP client publishes into a call link with one POST of its SDP
//! offer; everyone in the call receives it, it is offered nothing, DELETE on its session URL
//! ends it, and the link's rules (revocation, blocks, approval) apply as for any join.

use std::time::Duration;

use callrelay_client::{Client, ClientConfig, ClientEvent, Offering, TrackKind, TrackSource};
use callrelay_proto::server_message::Msg;
use reqwest::header;
use serde_json::{json, Value};

use crate::common::{payload, Peer, Relay, PATIENCE};

/// POSTs `sdp` to the link's WHIP endpoint as `token`, with `content_type`.
async fn post_offer(
    relay: &Relay,
    link: &str,
    token: &str,
    content_type: &str,
    sdp: &str,
) -> reqwest::Response {
    relay
        .http
        .post(format!("{}/v1/links/{link}/whip", relay.base))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, content_type)
        .body(sdp.to_owned())
        .send()
        .await
        .expect("request sent")
}

/// A WHIP publisher as a strict client does it: our offer, POSTed; a 201 with the answer.
/// Returns the session and its URL.
async fn publish(relay: &Relay, link: &str, user: &str) -> (Client, String) {
    let (offering, sdp): (Offering, String) = Client::offer(ClientConfig::default())
        .await
        .expect("an offer");
    let r = post_offer(relay, link, &relay.token(user), "application/sdp", &sdp).await;
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "application/sdp"
    );
    let location = r.headers()[header::LOCATION]
        .to_str()
        .expect("Location")
        .to_owned();
    assert!(
        location.starts_with(&format!("{}/v1/whip/", relay.base)),
        "{location}"
    );
    let answer = r.text().await.expect("answer body");
    assert!(answer.starts_with("v=0"), "{answer}");
    let mut client = offering.accept_answer(&answer).expect("answer accepted");
    client
        .wait_connected(PATIENCE)
        .await
        .expect("ICE and DTLS with the relay");
    (client, location)
}

/// DELETE on a session URL as `user`.
async fn delete(relay: &Relay, url: impl reqwest::IntoUrl, user: &str) -> reqwest::Response {
    relay
        .http
        .delete(url)
        .bearer_auth(relay.token(user))
        .send()
        .await
        .expect("request sent")
}

/// One audio and one video packet from a WHIP publisher (sender tag 9), number `n`.
fn send_frame(client: &Client, n: u32) {
    client.send_audio(payload(9, 0xA0, n, 120)).unwrap();
    let video = callrelay_client::vp8_payload(true, &payload(9, 0xB0, n, 900));
    client.send_video(None, video).unwrap();
}

async fn problem(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    assert_eq!(
        r.headers()[header::CONTENT_TYPE].to_str().unwrap(),
        "application/problem+json"
    );
    let v: Value = r.json().await.expect("problem json");
    (status, v["code"].as_str().unwrap_or_default().to_owned())
}

fn joined_user(p: &Peer, user: &str) -> Option<String> {
    p.signals.iter().rev().find_map(|(_, m)| match m {
        Msg::ParticipantJoined(j) => j
            .participant
            .as_ref()
            .filter(|x| x.user_id == user)
            .map(|x| x.participant_id.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whip_client_publishes_into_a_call_and_delete_ends_it() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;

    let (mut obs, location) = publish(&relay, &link, "carol").await;
    bob.until("carol joins", |p| joined_user(p, "carol").is_some())
        .await;
    let carol = joined_user(&bob, "carol").unwrap();
    // Bob is told her media is not end-to-end encrypted (she has no link key).
    let clear = bob.signals.iter().find_map(|(_, m)| match m {
        Msg::ParticipantJoined(j) => j
            .participant
            .as_ref()
            .filter(|x| x.participant_id == carol)
            .map(|x| x.clear_media),
        _ => None,
    });
    assert_eq!(clear, Some(true));
    bob.until("carol's tracks in the model", |p| {
        p.client
            .remote_tracks()
            .iter()
            .filter(|t| t.participant_id == carol)
            .count()
            == 2
    })
    .await;
    let sources: Vec<TrackSource> = bob
        .client
        .remote_tracks()
        .iter()
        .filter(|t| t.participant_id == carol)
        .map(|t| t.source)
        .collect();
    assert_eq!(sources, [TrackSource::Microphone, TrackSource::Camera]);

    // Her media reaches Bob byte for byte; his reaches nobody on her side (publish-only).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u32;
    while bob.received_intact(&carol, TrackKind::Audio, 9) < 10
        || bob.received_intact(&carol, TrackKind::Video, 9) < 10
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bob got carol's media"
        );
        tick.tick().await;
        send_frame(&obs, n);
        n += 1;
        bob.send_media(2);
        bob.drain();
    }
    let mut got_media = false;
    while let Some(e) = obs.try_next_event() {
        got_media |= matches!(e, ClientEvent::Media(_) | ClientEvent::Signal(_));
    }
    assert!(!got_media, "a WHIP publisher is sent nothing");

    // Someone else's token cannot end it; hers can, and Bob sees her leave.
    let other = delete(&relay, &location, "bob").await;
    assert_eq!(problem(other).await, (404, "session_not_found".into()));
    let r = delete(&relay, &location, "carol").await;
    assert_eq!(r.status(), 200);
    bob.until("carol left", |p| {
        p.signals
            .iter()
            .any(|(_, m)| matches!(m, Msg::ParticipantLeft(l) if l.participant_id == carol))
    })
    .await;
    // DELETE is idempotent for a minute (a client that closed its connection first, which
    // ended the session, still gets 200); a session that never was is not found.
    let again = delete(&relay, &location, "carol").await;
    assert_eq!(again.status(), 200);
    let never = delete(
        &relay,
        format!("{}/v1/whip/{}", relay.base, "0".repeat(32)),
        "carol",
    )
    .await;
    assert_eq!(problem(never).await, (404, "session_not_found".into()));
    // Her seat is free again: only Bob holds one.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while relay.preview_participants(&link).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "carol's seat given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // PATCH (trickle, ICE restart) is not offered: the relay is ICE-lite.
    let patch = relay
        .http
        .patch(&location)
        .bearer_auth(relay.token("carol"))
        .header(header::CONTENT_TYPE, "application/trickle-ice-sdpfrag")
        .body("a=ice-ufrag:x\r\n")
        .send()
        .await
        .unwrap();
    assert_eq!(problem(patch).await, (405, "method_not_allowed".into()));
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_follows_the_links_rules() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let (_, sdp) = Client::offer(ClientConfig::default()).await.unwrap();
    let carol = relay.token("carol");

    // Not an SDP body; not an offer; no token.
    let r = post_offer(&relay, &link, &carol, "application/json", "{}").await;
    assert_eq!(problem(r).await, (415, "unsupported_media_type".into()));
    let r = post_offer(&relay, &link, &carol, "application/sdp", "hello").await;
    assert_eq!(problem(r).await, (400, "sdp_rejected".into()));
    let r = relay
        .http
        .post(format!("{}/v1/links/{link}/whip", relay.base))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(sdp.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(problem(r).await, (401, "unauthorized".into()));
    // Video into a voice link is refused with why.
    let voice = relay.create_link("alice", "voice").await;
    let r = post_offer(&relay, &voice, &carol, "application/sdp", &sdp).await;
    let (status, code) = problem(r).await;
    assert_eq!((status, code.as_str()), (400, "sdp_rejected"));
    assert_eq!(relay.preview_participants(&voice).await, 0, "no seat kept");

    // Blocked by the creator.
    relay.block("alice", "mallory").await;
    let r = post_offer(
        &relay,
        &link,
        &relay.token("mallory"),
        "application/sdp",
        &sdp,
    )
    .await;
    assert_eq!(problem(r).await, (403, "join_refused".into()));

    // A link that needs the creator's approval cannot be waited for over WHIP.
    let (status, v) = relay
        .call(
            reqwest::Method::POST,
            "/v1/links",
            &relay.token("alice"),
            Some(json!({"kind": "video", "require_approval": true})),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    let gated = v["id"].as_str().unwrap().to_owned();
    let r = post_offer(&relay, &gated, &carol, "application/sdp", &sdp).await;
    assert_eq!(problem(r).await, (403, "approval_required".into()));
    assert_eq!(relay.preview_participants(&gated).await, 0, "no seat kept");

    // A revocation ends a live WHIP session like any participant's; then the link refuses.
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let (mut obs, location) = publish(&relay, &link, "carol").await;
    bob.until("carol joins", |p| joined_user(p, "carol").is_some())
        .await;
    relay.revoke(&link).await;
    let closed = tokio::time::timeout(PATIENCE, async {
        loop {
            match obs.next_event().await {
                Some(ClientEvent::Closed { .. }) | None => return,
                Some(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the revocation closed the WHIP session");
    // Her DELETE after that is answered as for an ended session.
    let r = delete(&relay, &location, "carol").await;
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !relay.state.whip.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "session gone");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = post_offer(&relay, &link, &carol, "application/sdp", &sdp).await;
    assert_eq!(problem(r).await, (410, "link_revoked".into()));
    relay.stop().await;
}

/// A WHEP player as a strict client does it: a receive-only offer, POSTed to `path`; a 201
/// with the answer. Returns the player and its session URL.
async fn watch(relay: &Relay, path: &str, user: &str) -> (Peer, String) {
    let (offering, sdp) = Client::offer_to_receive(ClientConfig::default())
        .await
        .expect("an offer");
    let r = relay
        .http
        .post(format!("{}{path}", relay.base))
        .bearer_auth(relay.token(user))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(sdp)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let location = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{}/v1/whep/", relay.base)),
        "{location}"
    );
    let answer = r.text().await.unwrap();
    let mut client = offering.accept_answer(&answer).expect("answer accepted");
    client.wait_connected(PATIENCE).await.expect("connected");
    (Peer::new(client), location)
}

/// Packets `p` received of `kind` whose payload carries sender tag `tag` (see `payload`).
fn tagged(p: &Peer, kind: TrackKind, tag: u8) -> usize {
    p.media
        .iter()
        .filter(|((_, k), _)| *k == kind)
        .flat_map(|(_, l)| l.iter())
        .filter(|v| {
            let body = match kind {
                TrackKind::Audio => Some(v.as_slice()),
                TrackKind::Video => callrelay_client::vp8_body(v),
            };
            body.and_then(|b| b.first()) == Some(&tag)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_player_watches_one_participant_then_the_next() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    let (obs, _) = publish(&relay, &link, "carol").await;
    bob.until("carol joins", |p| joined_user(p, "carol").is_some())
        .await;
    let carol = joined_user(&bob, "carol").unwrap();

    // Dave watches whoever comes first (Bob); Erin asks for Carol.
    let (mut dave, dave_url) = watch(&relay, &format!("/v1/links/{link}/whep"), "dave").await;
    let (mut erin, _) = watch(
        &relay,
        &format!("/v1/links/{link}/whep?participant={carol}"),
        "erin",
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u32;
    let step = |bob: &mut Peer, obs: &Client, n: &mut u32| {
        bob.send_media(2);
        send_frame(obs, *n);
        *n += 1;
        bob.drain();
    };
    while tagged(&dave, TrackKind::Audio, 2) < 10
        || tagged(&dave, TrackKind::Video, 2) < 10
        || tagged(&erin, TrackKind::Video, 9) < 10
        || tagged(&erin, TrackKind::Audio, 9) < 10
    {
        assert!(tokio::time::Instant::now() < deadline, "players got media");
        tick.tick().await;
        step(&mut bob, &obs, &mut n);
        dave.drain();
        erin.drain();
    }
    assert_eq!(
        tagged(&dave, TrackKind::Video, 9),
        0,
        "one participant per line"
    );
    assert_eq!(tagged(&erin, TrackKind::Video, 2), 0);
    // Players publish nothing: Bob hears Carol only.
    assert!(bob
        .client
        .remote_tracks()
        .iter()
        .all(|t| t.participant_id == carol));

    // Bob leaves: Dave's lines carry Carol now.
    bob.client.leave().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tagged(&dave, TrackKind::Video, 9) < 10 || tagged(&dave, TrackKind::Audio, 9) < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "dave moved to carol"
        );
        tick.tick().await;
        send_frame(&obs, n);
        n += 1;
        dave.drain();
    }

    // A WHEP session is ended on its own path, by its owner.
    let wrong = delete(&relay, dave_url.replace("/v1/whep/", "/v1/whip/"), "dave").await;
    assert_eq!(problem(wrong).await, (404, "session_not_found".into()));
    let r = delete(&relay, &dave_url, "dave").await;
    assert_eq!(r.status(), 200);

    // An offer that sends, or a malformed participant, is refused.
    let (_, sending) = Client::offer(ClientConfig::default()).await.unwrap();
    let r = post_whep(&relay, &link, "", &sending).await;
    assert_eq!(problem(r).await, (400, "sdp_rejected".into()));
    let (_, recv) = Client::offer_to_receive(ClientConfig::default())
        .await
        .unwrap();
    let r = post_whep(&relay, &link, "?participant=bob", &recv).await;
    assert_eq!(problem(r).await, (400, "invalid_participant_id".into()));
    relay.stop().await;
}

async fn post_whep(relay: &Relay, link: &str, query: &str, sdp: &str) -> reqwest::Response {
    relay
        .http
        .post(format!("{}/v1/links/{link}/whep{query}", relay.base))
        .bearer_auth(relay.token("frank"))
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap()
}
