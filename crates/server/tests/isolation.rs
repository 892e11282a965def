//! One participant can never hurt another's call (issue #12, findings 1–3), driven from outside:
//! the real relay process, raw signaling WebSockets for the hostile and the stalled clients, a
//! str0m client as a bystander.

use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientEvent};
use callrelay_proto::signal::{Join, MuteState, SessionDescription};
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/relay.rs"]
mod support;
use support::{audio_only, create_link, metric, send, token, Relay};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Joins over a raw signaling WebSocket (a real SDP offer from a str0m session, which is kept so
/// its UDP socket lives): returns the socket once `joined` arrived.
async fn raw_join(relay: &Relay, user: &str, link: &str) -> (Ws, callrelay_client::Offering) {
    let ticket = callrelay_client::http_join(&relay.base, &token(user, false), link)
        .await
        .unwrap();
    let (offering, sdp) = Client::offer(audio_only()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ticket.signal_url.as_str())
        .await
        .unwrap();
    let join = ClientMessage::from(client_message::Msg::Join(Join {
        grant: ticket.grant,
        sdp,
    }));
    ws.send(Message::Text(join.to_json().into())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("joined within 10 s")
            .expect("socket open")
            .unwrap();
        if let Message::Text(t) = frame {
            if let Ok(ServerMessage {
                msg: Some(server_message::Msg::Joined(_)),
            }) = ServerMessage::from_json(&t)
            {
                return (ws, offering);
            }
        }
    }
}

/// Sends `messages` as fast as the socket takes them while reading what comes back (a client
/// that only writes would fill its own buffers); returns what was read within `within`, and
/// whether the relay closed the socket.
async fn flood(
    ws: Ws,
    messages: impl Iterator<Item = ClientMessage> + Send + 'static,
    within: Duration,
) -> (Vec<server_message::Msg>, bool) {
    let (mut sink, mut stream) = ws.split();
    let sender = tokio::spawn(async move {
        for m in messages {
            if sink.send(Message::Text(m.to_json().into())).await.is_err() {
                break; // closed by the relay
            }
        }
        sink
    });
    let until = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(until, stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMessage { msg: Some(m) }) = ServerMessage::from_json(&t) {
                    out.push(m);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => {
                closed = true;
                break;
            }
            Ok(Some(Ok(_))) => {}
            Err(_) => break,
        }
    }
    sender.abort();
    (out, closed)
}

/// Every message readable on `ws` within `within` (stops early at a close).
async fn read_all(ws: &mut Ws, within: Duration) -> (Vec<server_message::Msg>, bool) {
    let until = tokio::time::Instant::now() + within;
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMessage { msg: Some(m) }) = ServerMessage::from_json(&t) {
                    out.push(m);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return (out, true),
            Ok(Some(Ok(_))) => {}
            Err(_) => return (out, false),
        }
    }
}

fn error_codes(msgs: &[server_message::Msg]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            server_message::Msg::Error(e) => Some(e.code.clone()),
            _ => None,
        })
        .collect()
}

fn removed_reason(msgs: &[server_message::Msg]) -> Option<String> {
    msgs.iter().find_map(|m| match m {
        server_message::Msg::Removed(r) => Some(r.reason.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mute_flood_never_removes_a_slow_receiver_and_removes_the_flooder() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    // A receiver that stopped reading its socket (a stalled phone), a bystander, a flooder.
    let (mut stalled, _stalled_media) = raw_join(&relay, "slow", &link).await;
    let mut bystander = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    let (flooder, _flooder_media) = raw_join(&relay, "mallory", &link).await;

    // 5,000 mute toggles as fast as the socket takes them: ~450 KB of fan-out per receiver on
    // a relay that relays them all, more than a stalled TCP connection buffers.
    let started = Instant::now();
    let mutes = (0..5000u32).map(|i| {
        ClientMessage::from(client_message::Msg::Mute(MuteState {
            audio_muted: i % 2 == 0,
            video_muted: false,
        }))
    });
    let (got, closed) = flood(flooder, mutes, Duration::from_secs(8)).await;
    let codes = error_codes(&got);
    assert!(
        codes.iter().any(|c| c == "rate_limited"),
        "the flooder is told to slow down: {codes:?}"
    );
    assert_eq!(
        removed_reason(&got).as_deref(),
        Some("rate_limited"),
        "the flooder is removed when it persists ({} errors, closed: {closed}, last: {:?})",
        codes.len(),
        got.last()
    );
    assert!(closed, "and its socket closed");
    // Let the relay write what it would to the stalled receiver.
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("flood of 5000 mutes handled in {:?}", started.elapsed());

    // The stalled receiver reads at last: still in the call, a handful of room updates (the
    // flooder's mutes it was told about, then that the flooder left), never `removed`.
    let (msgs, closed) = read_all(&mut stalled, Duration::from_secs(2)).await;
    assert!(!closed, "the stalled receiver's session is still open");
    assert_eq!(removed_reason(&msgs), None);
    let mutes = msgs
        .iter()
        .filter(|m| matches!(m, server_message::Msg::MuteChanged(_)))
        .count();
    assert!(
        mutes <= 64,
        "only what the flooder's budget let through reached it: {mutes} mute updates"
    );
    assert!(msgs.iter().any(|m| matches!(
        m,
        server_message::Msg::ParticipantLeft(l) if l.reason == "rate_limited"
    )));
    // The bystander too.
    let mut bystander_removed = None;
    while let Some(e) = bystander.try_next_event() {
        if let ClientEvent::Closed { reason } = e {
            bystander_removed = Some(reason);
        }
    }
    assert_eq!(bystander_removed, None);
    assert!(bystander.is_running());
    assert_eq!(
        metric(
            &relay,
            "callrelay_participants_removed_total{reason=\"error\"}"
        )
        .await,
        0.0,
        "nobody removed for a full queue"
    );
    assert!(
        metric(
            &relay,
            "callrelay_signaling_rate_limited_total{type=\"mute\"}"
        )
        .await
            > 0.0
    );
    drop((stalled, bystander));
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A flood is one line in the operator's log, not one per message (a log it could fill).
    let log = relay.stop();
    assert_eq!(
        log.matches("signaling flood: removing the sender").count(),
        1,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_flood_is_refused_before_the_media_worker() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let mut bystander = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    bystander
        .wait_connected(Duration::from_secs(10))
        .await
        .unwrap();
    let (flooder, _media) = raw_join(&relay, "mallory", &link).await;
    let started = Instant::now();
    let offers = (0..300).map(|_| {
        ClientMessage::from(client_message::Msg::Offer(SessionDescription {
            sdp: "v=0\r\n".repeat(50),
        }))
    });
    let (got, _) = flood(flooder, offers, Duration::from_secs(8)).await;
    let codes = error_codes(&got);
    // Only offers within the budget (10, then 1 a second) reach the worker (sdp_rejected:
    // these are not valid offers); the rest are refused at the socket.
    let processed = codes.iter().filter(|c| *c == "sdp_rejected").count();
    let refused = codes.iter().filter(|c| *c == "rate_limited").count();
    let allowed = 10 + started.elapsed().as_secs() as usize + 1;
    assert!(
        processed <= allowed,
        "{processed} offers reached the worker (budget {allowed})"
    );
    assert!(refused >= 40, "{refused} refused");
    assert_eq!(removed_reason(&got).as_deref(), Some("rate_limited"));
    // The bystander's call is untouched.
    assert!(bystander.is_running());
    let mut bystander_removed = None;
    while let Some(e) = bystander.try_next_event() {
        if let ClientEvent::Closed { reason } = e {
            bystander_removed = Some(reason);
        }
    }
    assert_eq!(bystander_removed, None);
    assert!(
        metric(
            &relay,
            "callrelay_signaling_rate_limited_total{type=\"offer\"}"
        )
        .await
            >= refused as f64
    );
    drop(bystander);
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seats_of_joins_that_never_connect_lapse_in_seconds_and_one_user_holds_few() {
    let relay = Relay::start(
        &[
            ("CALLRELAY_ROOMS_SEAT_HOLD", "1s"),
            ("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "6"),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let join = |user: &str| {
        http.post(format!("{}/v1/links/{link}/join", relay.base))
            .bearer_auth(token(user, false))
    };
    // A squatter joins over and over without ever opening signaling.
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (st, p) = send(join("mallory")).await;
        statuses.push((st, p["code"].as_str().map(str::to_owned)));
    }
    assert_eq!(
        statuses.iter().filter(|(st, _)| *st == 200).count(),
        4,
        "four seats per user: {statuses:?}"
    );
    assert!(statuses[4..]
        .iter()
        .all(|(st, c)| *st == 409 && c.as_deref() == Some("seat_limit")));
    // The preview counts people in the call, not granted seats.
    let (_, p) = send(http.get(format!("{}/v1/links/{link}", relay.base))).await;
    assert_eq!(p["participants"], 0);
    // A real user still gets in (6 seats, 4 squatted) and is counted once connected.
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    bob.wait_connected(Duration::from_secs(10)).await.unwrap();
    let (_, p) = send(http.get(format!("{}/v1/links/{link}", relay.base))).await;
    assert_eq!(p["participants"], 1);
    // The squatted seats lapse after rooms.seat_hold, not at the grant's expiry (60 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for user in ["carol", "dave", "erin", "frank"] {
        assert_eq!(send(join(user)).await.0, 200, "{user} gets a lapsed seat");
    }
    bob.leave().unwrap();
    drop(bob);
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}

/// Answers to the relay's own offers draw on no budget: when many people join at once, each
/// member owes the relay one answer per renegotiation, far more than the answer budget's
/// burst. Before, the excess answers were refused, the relay's offers stayed unanswered and
/// whole subscriptions never opened (the capacity run's "missing streams").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_to_the_relays_offers_are_never_rate_limited() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    // Joins 20 ms apart, as a load test or a popular call's start does: each one is a
    // renegotiation (one relay offer, one answer) for every member already in.
    let mut clients = Vec::new();
    for i in 0..16 {
        let c = Client::join(
            &relay.base,
            &token(&format!("u{i}"), false),
            &link,
            audio_only(),
        )
        .await
        .unwrap();
        clients.push(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for c in &mut clients {
        c.wait_connected(Duration::from_secs(20)).await.unwrap();
    }
    // Every member ends up subscribed to the 15 others' audio.
    let until = tokio::time::Instant::now() + Duration::from_secs(15);
    let subscribed = |relay: &Relay| {
        let relay = relay.base.clone();
        async move {
            let text = reqwest::get(format!("{relay}/metrics"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            text.contains("callrelay_participants 16")
        }
    };
    while !subscribed(&relay).await && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let refused = metric(
        &relay,
        "callrelay_signaling_rate_limited_total{type=\"answer\"}",
    )
    .await;
    let offers_unanswered = metric(
        &relay,
        "callrelay_signaling_errors_total{code=\"rate_limited\"}",
    )
    .await;
    assert_eq!(refused, 0.0, "no answer was refused");
    assert_eq!(offers_unanswered, 0.0);
    // Audio from the last to join reaches the first.
    let talker = std::sync::Arc::new(clients.pop().unwrap());
    let id = talker.participant_id().to_owned();
    let first = &mut clients[0];
    let sending = {
        let talker = talker.clone();
        tokio::spawn(async move {
            for i in 0..100u8 {
                let mut p = vec![0xC1, i];
                p.resize(60, 0);
                if talker.send_audio(p).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = 0;
    while got < 5 {
        match tokio::time::timeout_at(until, first.next_event()).await {
            Ok(Some(ClientEvent::Media(p))) if p.from.as_deref() == Some(&id) => got += 1,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    sending.abort();
    assert_eq!(got, 5, "the first member hears the last");
    drop((clients, talker));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}
