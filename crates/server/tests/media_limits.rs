//! Media-plane limits, driven from outside (issue #12, findings 6 and 9): the real relay
//! process, raw signaling WebSockets, a raw UDP socket on 127.0.0.1 that speaks STUN, and str0m
//! clients as participants.
//!
//! - Finding 6 (THREATS 8): RTP and RTCP from an address that passed ICE but never DTLS are
//!   dropped and counted as `callrelay_datagrams_dropped_total{reason="before_keys"}`.
//! - Finding 9 (THREATS 13, 22): an offer that publishes more tracks than the cap is refused
//!   with `sdp_rejected` and a clear message, at join and in a renegotiation; the participant's
//!   call and the others' carry on.

use std::net::SocketAddr;
use std::time::Duration;

use callrelay_client::{Client, ClientEvent};
use callrelay_proto::signal::{Join, SessionDescription};
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use str0m::ice::{StunMessage, TransId};
use tokio::net::UdpSocket;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/relay.rs"]
mod support;
use support::{audio_only, create_link, metric, token, Relay};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The cap the relay runs with (`SfuConfig::max_tracks_per_participant`).
const MAX_TRACKS: usize = 4;

/// Polls `line_start` until it reaches `at_least` or `within` passes; returns the last value.
async fn metric_reaches(relay: &Relay, line_start: &str, at_least: f64, within: Duration) -> f64 {
    let until = tokio::time::Instant::now() + within;
    loop {
        let v = metric(relay, line_start).await;
        if v >= at_least || tokio::time::Instant::now() >= until {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next decodable server message within `within`; `None` on timeout or close.
async fn next_msg(ws: &mut Ws, within: Duration) -> Option<server_message::Msg> {
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                if let Ok(ServerMessage { msg: Some(m) }) = ServerMessage::from_json(&t) {
                    return Some(m);
                }
            }
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Opens signaling for `user` on `link` and sends `join` with `sdp`; returns the socket.
async fn open_and_join(relay: &Relay, user: &str, link: &str, sdp: String) -> Ws {
    let ticket = callrelay_client::http_join(&relay.base, &token(user, false), link)
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ticket.signal_url.as_str())
        .await
        .unwrap();
    let join = ClientMessage::from(client_message::Msg::Join(Join {
        grant: ticket.grant,
        sdp,
    }));
    ws.send(Message::Text(join.to_json().into())).await.unwrap();
    ws
}

/// A join whose media session is a str0m client but whose signaling is ours: returns the
/// socket, the session waiting for its answer, our offer, and `joined` (the relay's answer
/// and our participant id).
async fn raw_join(
    relay: &Relay,
    user: &str,
    link: &str,
) -> (
    Ws,
    callrelay_client::Offering,
    String,
    callrelay_proto::signal::Joined,
) {
    let (offering, sdp) = Client::offer(audio_only()).await.unwrap();
    let mut ws = open_and_join(relay, user, link, sdp.clone()).await;
    loop {
        match next_msg(&mut ws, Duration::from_secs(10)).await {
            Some(server_message::Msg::Joined(j)) => return (ws, offering, sdp, j),
            Some(_) => {}
            None => panic!("no joined within 10 s"),
        }
    }
}

/// The first value of an SDP attribute (`a=ice-ufrag:` …).
fn attr(sdp: &str, prefix: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("{prefix} in {sdp}"))
        .trim()
        .to_owned()
}

/// The relay's host candidate in its answer.
fn candidate(sdp: &str) -> SocketAddr {
    let line = attr(sdp, "a=candidate:");
    let f: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", f[4], f[5])
        .parse()
        .expect("candidate address")
}

/// `offer` with `extra` more copies of its first audio m-line (new mids, in the BUNDLE group,
/// without the SSRC and msid lines of the original): a client publishing more microphones.
fn with_more_audio(offer: &str, extra: usize) -> String {
    let sections: Vec<&str> = offer.split("\r\nm=").collect();
    let audio = sections
        .iter()
        .skip(1)
        .find(|s| s.starts_with("audio "))
        .expect("an audio m-line");
    let mut out = offer.trim_end().to_owned();
    let mut mids = Vec::new();
    for i in 0..extra {
        let mid = format!("x{i}");
        out.push_str("\r\nm=");
        for line in audio.trim_end().split("\r\n") {
            if line.starts_with("a=ssrc") || line.starts_with("a=msid") {
                continue;
            }
            if line.starts_with("a=mid:") {
                out.push_str(&format!("a=mid:{mid}\r\n"));
            } else {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        out.truncate(out.trim_end().len());
        mids.push(mid);
    }
    out.push_str("\r\n");
    let bundle = attr(offer, "a=group:BUNDLE ");
    out.replacen(
        &format!("a=group:BUNDLE {bundle}"),
        &format!("a=group:BUNDLE {bundle} {}", mids.join(" ")),
        1,
    )
}

/// A STUN binding request from a full ICE agent (controlling, nominating), signed with the
/// relay's password as ICE requires.
fn binding_request(relay_ufrag: &str, our_ufrag: &str, relay_pwd: &str) -> Vec<u8> {
    let username = format!("{relay_ufrag}:{our_ufrag}");
    let msg = StunMessage::binding_request(
        &username,
        TransId::new(),
        true,
        0x00c0_ffee,
        1_845_501_695,
        true,
    );
    let crypto = str0m::crypto::from_feature_flags();
    let mut buf = vec![0u8; 1500];
    let n = msg
        .to_bytes(Some(relay_pwd.as_bytes()), &mut buf, |key, parts| {
            crypto.sha1_hmac_provider.sha1_hmac(key, parts)
        })
        .expect("stun serializes");
    buf.truncate(n);
    buf
}

/// RTP-looking bytes (version 2, Opus PT) and an RTCP sender report header.
fn fake_rtp(seq: u16) -> Vec<u8> {
    let mut v = vec![0x80, 111];
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1, 0x12, 0x34, 0x56, 0x78]);
    v.extend_from_slice(&[0xab; 100]);
    v
}

fn fake_rtcp() -> Vec<u8> {
    let mut v = vec![0x80, 200, 0, 6, 0x12, 0x34, 0x56, 0x78];
    v.extend_from_slice(&[0; 20]);
    v
}

const BEFORE_KEYS: &str = "callrelay_datagrams_dropped_total{reason=\"before_keys\"}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_after_ice_but_before_dtls_is_dropped_and_counted() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let (mut ws, offering, offer, joined) = raw_join(&relay, "mallory", &link).await;
    // The str0m session behind the offer is never started: no DTLS will ever come.
    drop(offering);
    let (relay_ufrag, relay_pwd) = (
        attr(&joined.sdp, "a=ice-ufrag:"),
        attr(&joined.sdp, "a=ice-pwd:"),
    );
    let our_ufrag = attr(&offer, "a=ice-ufrag:");
    let media = candidate(&joined.sdp);
    assert!(media.ip().is_loopback(), "tests stay on 127.0.0.1: {media}");
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(metric(&relay, BEFORE_KEYS).await, 0.0);

    // ICE: authenticated binding requests until the relay answers one (bounded).
    let mut buf = vec![0u8; 2048];
    let mut answered = false;
    for _ in 0..25 {
        let req = binding_request(&relay_ufrag, &our_ufrag, &relay_pwd);
        socket.send_to(&req, media).await.unwrap();
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv_from(&mut buf)).await
        {
            if StunMessage::parse(&buf[..n]).is_ok_and(|m| m.is_successful_binding_response()) {
                answered = true;
                break;
            }
        }
    }
    assert!(answered, "the relay answers authenticated STUN: ICE passed");

    // Media without keys: 30 RTP and 10 RTCP datagrams.
    let unknown_before = metric(
        &relay,
        "callrelay_datagrams_dropped_total{reason=\"unknown_source\"}",
    )
    .await;
    for seq in 0..30u16 {
        socket.send_to(&fake_rtp(seq), media).await.unwrap();
        if seq % 3 == 0 {
            socket.send_to(&fake_rtcp(), media).await.unwrap();
        }
    }
    let counted = metric_reaches(&relay, BEFORE_KEYS, 40.0, Duration::from_secs(5)).await;
    assert_eq!(counted, 40.0, "every RTP and RTCP datagram, once");
    assert_eq!(
        metric(
            &relay,
            "callrelay_datagrams_dropped_total{reason=\"unknown_source\"}"
        )
        .await,
        unknown_before,
        "they came from the address ICE validated"
    );
    assert_eq!(
        metric(&relay, "callrelay_packets_received_total{kind=\"audio\"}").await,
        0.0
    );
    // The participant is still there (it may still complete DTLS), and nothing came back.
    assert_eq!(metric(&relay, "callrelay_participants ").await, 1.0);
    // Whatever comes back within 300 ms (STUN, a DTLS retry), never media.
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), socket.recv_from(&mut buf)).await
    {
        assert!(
            n > 0 && !(128..192).contains(&buf[0]),
            "no RTP or RTCP sent to a peer without keys"
        );
    }

    ws.close(None).await.ok();
    drop(ws);
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}

/// Waits until `bystander` has received at least `n` audio packets from `from` whose payload
/// starts with `tag`; returns how many it got.
async fn received_from(
    bystander: &mut Client,
    from: &str,
    tag: u8,
    n: usize,
    within: Duration,
) -> usize {
    let until = tokio::time::Instant::now() + within;
    let mut got = 0;
    while got < n {
        match tokio::time::timeout_at(until, bystander.next_event()).await {
            Ok(Some(ClientEvent::Media(p)))
                if p.from.as_deref() == Some(from) && p.payload.first() == Some(&tag) =>
            {
                got += 1;
            }
            Ok(Some(ClientEvent::Closed { reason })) => panic!("bystander closed: {reason:?}"),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
    got
}

/// Sends `count` audio packets tagged `tag`, 20 ms apart, from a task; returns its handle.
fn talk(client: std::sync::Arc<Client>, tag: u8, count: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 0..count {
            let mut payload = vec![tag, i as u8];
            payload.resize(60, 0x33);
            if client.send_audio(payload).is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renegotiation_over_the_track_cap_is_refused_and_the_call_carries_on() {
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
    // The participant: our signaling, a str0m session for its media.
    let (mut ws, offering, offer, joined) = raw_join(&relay, "carol", &link).await;
    let carol = offering.accept_answer(&joined.sdp).unwrap();
    let mut carol = carol;
    carol.wait_connected(Duration::from_secs(10)).await.unwrap();
    let carol = std::sync::Arc::new(carol);
    let id = joined.participant_id.clone();

    let talking = talk(carol.clone(), 0xA1, 100);
    let before = received_from(&mut bystander, &id, 0xA1, 5, Duration::from_secs(10)).await;
    assert_eq!(before, 5, "carol's audio reaches bob");
    talking.abort();

    // Carol offers four more microphones: five sending m-lines, one over the cap.
    let bad = with_more_audio(&offer, MAX_TRACKS);
    let msg = ClientMessage::from(client_message::Msg::Offer(SessionDescription { sdp: bad }));
    ws.send(Message::Text(msg.to_json().into())).await.unwrap();
    let error = loop {
        match next_msg(&mut ws, Duration::from_secs(5)).await {
            Some(server_message::Msg::Error(e)) => break e,
            Some(server_message::Msg::Answer(_)) => panic!("the offer over the cap was answered"),
            Some(server_message::Msg::Removed(r)) => panic!("carol removed: {}", r.reason),
            Some(_) => {}
            None => panic!("no reply to the offer within 5 s"),
        }
    };
    assert_eq!(error.code, "sdp_rejected", "{}", error.message);
    assert!(
        error.message.contains("5 tracks") && error.message.contains("at most 4"),
        "a clear message: {}",
        error.message
    );

    // The call carries on: carol's audio still reaches bob, and nobody was removed.
    let talking = talk(carol.clone(), 0xA2, 100);
    let after = received_from(&mut bystander, &id, 0xA2, 10, Duration::from_secs(10)).await;
    assert_eq!(
        after, 10,
        "carol's audio still reaches bob after the refusal"
    );
    talking.abort();
    assert!(carol.is_running() && bystander.is_running());
    assert_eq!(metric(&relay, "callrelay_participants ").await, 2.0);
    let mut removed = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
        if let Ok(Message::Text(t)) = m {
            if let Ok(ServerMessage {
                msg: Some(server_message::Msg::Removed(r)),
            }) = ServerMessage::from_json(&t)
            {
                removed.push(r.reason);
            }
        }
    }
    assert!(removed.is_empty(), "carol was not removed: {removed:?}");
    assert!(
        metric(
            &relay,
            "callrelay_signaling_errors_total{code=\"sdp_rejected\"}"
        )
        .await
            >= 1.0
    );

    ws.close(None).await.ok();
    drop((ws, carol, bystander));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_over_the_track_cap_is_refused_and_the_user_can_join_normally() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let (_offering, offer) = Client::offer(audio_only()).await.unwrap();
    let mut ws = open_and_join(&relay, "dave", &link, with_more_audio(&offer, MAX_TRACKS)).await;
    let error = loop {
        match next_msg(&mut ws, Duration::from_secs(10)).await {
            Some(server_message::Msg::Error(e)) => break e,
            Some(server_message::Msg::Joined(_)) => panic!("joined with too many tracks"),
            Some(_) => {}
            None => panic!("no reply to the join within 10 s"),
        }
    };
    assert_eq!(error.code, "sdp_rejected", "{}", error.message);
    assert!(error.message.contains("at most 4"), "{}", error.message);
    drop(ws);
    assert_eq!(metric(&relay, "callrelay_participants ").await, 0.0);

    // Nothing was kept: the same user joins with a normal offer and connects.
    let mut dave = Client::join(&relay.base, &token("dave", false), &link, audio_only())
        .await
        .unwrap();
    dave.wait_connected(Duration::from_secs(10)).await.unwrap();
    dave.leave().unwrap();
    drop(dave);
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}

/// The input the `sdp` fuzz target found (fuzz/corpus/sdp/): a flags byte, a join offer, a
/// NUL, and a renegotiation offer that gives payload type 114 new format parameters — on which
/// str0m 0.25 panics ("Pt locked multiple times") unless the relay refuses it first.
const PT_LOCKED_TWICE: &[u8] =
    include_bytes!("../../../fuzz/corpus/sdp/crash-str0m-pt-locked-multiple-times");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renegotiation_that_changes_a_payload_type_is_refused_and_the_call_carries_on() {
    let (first, second) = {
        let rest = &PT_LOCKED_TWICE[1..];
        let nul = rest.iter().position(|&b| b == 0).expect("two SDPs");
        (
            String::from_utf8_lossy(&rest[..nul]).into_owned(),
            String::from_utf8_lossy(&rest[nul + 1..]).into_owned(),
        )
    };
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    // Two real participants talking, on the same (only) media worker as the hostile one.
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    bob.wait_connected(Duration::from_secs(10)).await.unwrap();
    let mut carol = Client::join(&relay.base, &token("carol", false), &link, audio_only())
        .await
        .unwrap();
    carol.wait_connected(Duration::from_secs(10)).await.unwrap();
    let carol = std::sync::Arc::new(carol);
    let carol_id = carol.participant_id().to_owned();

    // Mallory joins with the fuzzer's first offer, then sends its second.
    let mut ws = open_and_join(&relay, "mallory", &link, first).await;
    loop {
        match next_msg(&mut ws, Duration::from_secs(10)).await {
            Some(server_message::Msg::Joined(_)) => break,
            Some(server_message::Msg::Error(e)) => panic!("join refused: {} {}", e.code, e.message),
            Some(_) => {}
            None => panic!("no joined within 10 s"),
        }
    }
    let msg = ClientMessage::from(client_message::Msg::Offer(SessionDescription {
        sdp: second,
    }));
    ws.send(Message::Text(msg.to_json().into())).await.unwrap();
    let error = loop {
        match next_msg(&mut ws, Duration::from_secs(5)).await {
            Some(server_message::Msg::Error(e)) => break e,
            Some(server_message::Msg::Answer(_)) => panic!("the offer was answered"),
            Some(server_message::Msg::Removed(r)) => panic!("mallory removed: {}", r.reason),
            Some(_) => {}
            None => panic!("no reply to the offer within 5 s"),
        }
    };
    assert_eq!(error.code, "sdp_rejected", "{}", error.message);
    assert!(
        error.message.contains("payload type 114"),
        "a clear message: {}",
        error.message
    );

    // Nobody was removed, nothing panicked, and the others' call carries on.
    let talking = talk(carol.clone(), 0xB1, 100);
    let got = received_from(&mut bob, &carol_id, 0xB1, 10, Duration::from_secs(10)).await;
    assert_eq!(got, 10, "carol's audio still reaches bob");
    talking.abort();
    assert_eq!(metric(&relay, "callrelay_participants ").await, 3.0);
    assert_eq!(
        metric(
            &relay,
            "callrelay_datagrams_dropped_total{reason=\"error\"}"
        )
        .await,
        0.0,
        "no session broke (a panic counts here)"
    );

    ws.close(None).await.ok();
    drop((ws, carol, bob));
    tokio::time::sleep(Duration::from_millis(300)).await;
    relay.stop();
}
