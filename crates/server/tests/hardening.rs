//! Hardening findings of issue #12 (4, 5, 7, 8, 10, 11), each driven from outside: the real relay
//! process on 127.0.0.1, raw TCP sockets, raw WebSockets (tokio-tungstenite) and reqwest.
//!
//! - 4: header, idle and body timeouts; a cap on connections per client address.
//! - 5: a percent-encoded link id is refused on every route that takes one, and renews nothing.
//! - 7: the relay answers a client's Close with a Close, and invalid UTF-8 with Close 1007.
//! - 8: throttled keyframe requests have their own counter, not a `datagrams_dropped` reason.
//! - 10: an unknown `CALLRELAY_*` variable exits 64 naming the nearest key.
//! - 11: `proto/openapi.json` lists 415 and the constraints the API enforces, and the relay
//!   answers 415 where it says so.

use std::process::Command;
use std::time::Duration;

use callrelay_client::{vp8_payload, Client, ClientConfig, SIMULCAST_RIDS};
use callrelay_proto::signal::Join;
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/relay.rs"]
mod support;
use support::{create_link_json, free_port, metric, send, token, Relay, BIN, SECRET};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long a test waits for something the relay must do within about a second.
const PATIENCE: Duration = Duration::from_secs(10);

async fn metrics_text(relay: &Relay) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", relay.base))
        .header("connection", "close")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits until the relay has closed `conn` (EOF or reset), reading and returning whatever it
/// sent before; panics if it is still open after `within`.
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(within, async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the relay kept the connection open for {within:?}; it sent {:?}",
        String::from_utf8_lossy(&got)
    );
    got
}

/// Reads one HTTP/1.1 response (head and a `content-length` body) from `conn`.
async fn read_response(conn: &mut TcpStream) -> (u16, String) {
    try_read_response(conn)
        .await
        .unwrap_or_else(|e| panic!("no response: {e}"))
}

/// [`read_response`], or why there was none: the connection was reset or closed first, or
/// nothing came within [`PATIENCE`].
async fn try_read_response(conn: &mut TcpStream) -> Result<(u16, String), String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if got.len() >= end + 4 + len {
                    return Ok(());
                }
            }
            match conn.read(&mut buf).await {
                Ok(0) => {
                    return Err(format!(
                        "closed mid-response: {:?}",
                        String::from_utf8_lossy(&got)
                    ))
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .map_err(|_| format!("nothing within {PATIENCE:?}"))??;
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text[9..12].parse().map_err(|_| text.clone())?;
    Ok((status, text))
}

async fn connect(relay: &Relay) -> TcpStream {
    TcpStream::connect(("127.0.0.1", relay.port)).await.unwrap()
}

/// One keep-alive `GET /healthz` on `conn`: answered 200.
async fn healthz_on(conn: &mut TcpStream) {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .unwrap();
    let (status, text) = read_response(conn).await;
    assert_eq!(status, 200, "{text}");
}

/// One keep-alive `GET /healthz` on `conn`; an error if the connection was reset or closed
/// before a full answer, or the answer is not 200.
async fn try_healthz_on(conn: &mut TcpStream) -> Result<(), String> {
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    match try_read_response(conn).await? {
        (200, _) => Ok(()),
        (_, text) => Err(text),
    }
}

/// Waits until only the scrape itself is open on the relay's HTTP port. A scrape may itself be
/// refused while the relay has not yet seen the test's last connections close (they count
/// against the per-address cap until it does): that is retried too.
async fn wait_connections_settle(relay: &Relay) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let scrape = || async {
        let text = reqwest::Client::new()
            .get(format!("{}/metrics", relay.base))
            .header("connection", "close")
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("callrelay_http_connections "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    while scrape().await != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never settled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Finding 4: HTTP timeouts and the per-address cap

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_requests_are_closed_after_the_header_timeout() {
    let relay = Relay::start(
        &[
            ("CALLRELAY_HTTP_HEADER_TIMEOUT", "1s"),
            ("CALLRELAY_HTTP_IDLE_TIMEOUT", "1h"),
        ],
        &[],
    );
    // Half a request line.
    let mut a = connect(&relay).await;
    a.write_all(b"GET /heal").await.unwrap();
    // The request line and some headers, trickled, never the blank line.
    let mut b = connect(&relay).await;
    b.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    b.write_all(b"host: relay\r\nx-slow: ").await.unwrap();
    // Nothing at all.
    let mut c = connect(&relay).await;
    for conn in [&mut a, &mut b, &mut c] {
        let sent = closed_within(conn, PATIENCE).await;
        assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    }
    // A later request on a keep-alive connection has the same deadline from its first byte.
    let mut d = connect(&relay).await;
    healthz_on(&mut d).await;
    d.write_all(b"GET /healthz HTTP/1.1\r\nhost: re")
        .await
        .unwrap();
    closed_within(&mut d, PATIENCE).await;
    assert!(
        metric(
            &relay,
            "callrelay_http_connections_timed_out_total{phase=\"header\"}"
        )
        .await
            >= 4.0
    );
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_and_websockets_are_not() {
    let relay = Relay::start(
        &[
            ("CALLRELAY_HTTP_HEADER_TIMEOUT", "1s"),
            ("CALLRELAY_HTTP_IDLE_TIMEOUT", "1s"),
        ],
        &[],
    );
    // A signaling WebSocket, open before and kept past both timeouts (its join deadline is 10 s).
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/signal", relay.port))
            .await
            .unwrap();
    let mut conn = connect(&relay).await;
    healthz_on(&mut conn).await;
    let sent = closed_within(&mut conn, PATIENCE).await;
    assert!(sent.is_empty());
    assert!(
        metric(
            &relay,
            "callrelay_http_connections_timed_out_total{phase=\"idle\"}"
        )
        .await
            >= 1.0
    );
    // Both timeouts have passed for the WebSocket too: it still answers a ping.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ws.send(Message::Ping(b"still there?".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(PATIENCE, ws.next())
        .await
        .expect("an answer to the ping")
        .expect("the socket is open")
        .expect("no error");
    assert_eq!(pong, Message::Pong(b"still there?".to_vec().into()));
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idle_timeout_is_not_the_header_timeout() {
    // With a long header timeout, an idle keep-alive connection still closes at the idle timeout;
    // with a long idle timeout, a half-sent request still closes at the header timeout (above).
    let relay = Relay::start(
        &[
            ("CALLRELAY_HTTP_HEADER_TIMEOUT", "1h"),
            ("CALLRELAY_HTTP_IDLE_TIMEOUT", "1s"),
        ],
        &[],
    );
    let mut conn = connect(&relay).await;
    healthz_on(&mut conn).await;
    closed_within(&mut conn, PATIENCE).await;
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_ends_gets_408_and_the_connection_closes() {
    let relay = Relay::start(&[("CALLRELAY_HTTP_BODY_TIMEOUT", "1s")], &[]);
    let mut conn = connect(&relay).await;
    let head = format!(
        "POST /v1/links HTTP/1.1\r\nhost: relay\r\nauthorization: Bearer {}\r\n\
         content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"kind\"",
        token("alice", false)
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let (status, text) = read_response(&mut conn).await;
    assert_eq!(status, 408, "{text}");
    assert!(text.contains("\"code\":\"request_timeout\""), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    closed_within(&mut conn, PATIENCE).await;
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_per_address_cap_are_closed_at_accept() {
    let relay = Relay::start(&[("CALLRELAY_HTTP_MAX_CONNECTIONS_PER_IP", "3")], &[]);
    wait_connections_settle(&relay).await;
    // Three keep-alive connections are served and stay open. The settling scrape's own
    // connection counts against the cap until the relay has seen it close: a connection that
    // comes before that is refused at accept (reset or closed), and is tried again.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while held.len() < 3 {
        let mut c = connect(&relay).await;
        match try_healthz_on(&mut c).await {
            Ok(()) => held.push(c),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "connection {} of 3 never served: {e}",
                    held.len() + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // The fourth is closed without an answer.
    let mut fourth = connect(&relay).await;
    let _ = fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\n\r\n")
        .await;
    let sent = closed_within(&mut fourth, PATIENCE).await;
    assert!(sent.is_empty(), "{:?}", String::from_utf8_lossy(&sent));
    // The held ones still work; once one closes, a new connection is served again.
    healthz_on(&mut held[0]).await;
    held.pop();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let mut c = connect(&relay).await;
        let _ = c
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: relay\r\nconnection: close\r\n\r\n")
            .await;
        if closed_within(&mut c, PATIENCE)
            .await
            .starts_with(b"HTTP/1.1 200")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a place under the cap never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(held);
    wait_connections_settle(&relay).await;
    assert!(
        metric(
            &relay,
            "callrelay_http_connections_refused_total{reason=\"per_ip_limit\"}"
        )
        .await
            >= 1.0
    );
    // The operator is told once (the refusals of the same minute go into the counter only),
    // with the cap and what to change behind a proxy.
    let log = relay.stop();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("HTTP connections refused"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    let w: serde_json::Value = serde_json::from_str(warnings[0]).expect("a JSON log line");
    assert_eq!(w["level"], "WARN", "{w}");
    assert_eq!(w["fields"]["cap"], 3, "{w}");
    assert_eq!(w["fields"]["address"], "127.0.0.1", "{w}");
    assert!(w["fields"]["refused"].as_u64() >= Some(1), "{w}");
    assert!(
        w["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("raise the cap or set 0")),
        "{w}"
    );
}

// ---------------------------------------------------------------------------------------------
// Finding 5: percent-encoded link ids

/// `id` with its character at `at` percent-encoded (`upper`: `%4A`, else `%4a`).
fn encode_at(id: &str, at: usize, upper: bool) -> String {
    let b = id.as_bytes()[at];
    let hex = if upper {
        format!("%{b:02X}")
    } else {
        format!("%{b:02x}")
    };
    format!("{}{hex}{}", &id[..at], &id[at + 1..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn percent_encoded_link_ids_are_refused_everywhere_and_renew_nothing() {
    let relay = Relay::start(&[], &[]);
    let http = reqwest::Client::new();
    let link = create_link_json(&http, &relay, "alice").await;
    let id = link["id"].as_str().unwrap().to_owned();
    let (bob, admin) = (token("bob", false), token("ops", true));
    // Any renewal from here on would move last_used_at (millisecond timestamps).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let base = &relay.base;
    for enc in [
        encode_at(&id, 0, true),
        encode_at(&id, 5, false),
        encode_at(&id, 21, true),
    ] {
        assert_ne!(enc, id);
        let problem = |(st, body): (u16, serde_json::Value)| {
            assert_eq!(st, 400, "{enc}: {body}");
            assert_eq!(body["code"], "invalid_link_id", "{enc}: {body}");
        };
        problem(send(http.get(format!("{base}/v1/links/{enc}"))).await);
        problem(send(http.get(format!("{base}/v1/links/{enc}/qr.svg"))).await);
        problem(
            send(
                http.post(format!("{base}/v1/links/{enc}/join"))
                    .bearer_auth(&bob),
            )
            .await,
        );
        problem(
            send(
                http.post(format!("{base}/v1/admin/links/{enc}/revoke"))
                    .bearer_auth(&admin)
                    .json(&serde_json::json!({"reason": "test"})),
            )
            .await,
        );
        for page in ["video", "voice"] {
            let r = http
                .get(format!("{base}/{page}/{enc}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "/{page}/{enc}");
        }
    }
    // Nothing was joined, renewed or revoked.
    let (st, log) = send(http.get(format!("{base}/v1/me/links")).bearer_auth(&bob)).await;
    assert_eq!(st, 200);
    assert_eq!(log["links"], serde_json::json!([]), "bob joined: {log}");
    let (st, log) = send(
        http.get(format!("{base}/v1/me/links"))
            .bearer_auth(token("alice", false)),
    )
    .await;
    assert_eq!(st, 200);
    let now = &log["links"][0]["link"];
    assert_eq!(now["id"], link["id"]);
    assert_eq!(now["last_used_at"], link["last_used_at"], "renewed: {now}");
    assert_eq!(now["expires_at"], link["expires_at"], "renewed: {now}");
    assert!(now.get("revoked_at").is_none(), "revoked: {now}");
    // The real spelling still works on every route.
    assert_eq!(send(http.get(format!("{base}/v1/links/{id}"))).await.0, 200);
    let r = http.get(format!("{base}/video/{id}")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (st, joined) = send(
        http.post(format!("{base}/v1/links/{id}/join"))
            .bearer_auth(&bob),
    )
    .await;
    assert_eq!(st, 200, "{joined}");
    assert_ne!(joined["link"]["last_used_at"], link["last_used_at"]);
    relay.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 7: the WebSocket close handshake

async fn open_signal(relay: &Relay) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/signal", relay.port))
        .await
        .unwrap()
        .0
}

/// The Close frame the relay sends next (skipping other messages); panics if the connection
/// ends without one.
async fn next_close(ws: &mut Ws) -> Option<CloseFrame> {
    loop {
        match tokio::time::timeout(PATIENCE, ws.next()).await {
            Ok(Some(Ok(Message::Close(frame)))) => return frame,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => panic!("the connection ended without a Close frame: {e}"),
            Ok(None) => panic!("the connection ended without a Close frame"),
            Err(_) => panic!("no Close frame within {PATIENCE:?}"),
        }
    }
}

/// Joins over a raw signaling WebSocket with a real SDP offer (the session is kept so its UDP
/// socket lives).
async fn raw_join(relay: &Relay, user: &str, link: &str) -> (Ws, callrelay_client::Offering) {
    let ticket = callrelay_client::http_join(&relay.base, &token(user, false), link)
        .await
        .unwrap();
    let config = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let (offering, sdp) = Client::offer(config).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ticket.signal_url.as_str())
        .await
        .unwrap();
    let join = ClientMessage::from(client_message::Msg::Join(Join {
        grant: ticket.grant,
        sdp,
    }));
    ws.send(Message::Text(join.to_json().into())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("joined in time")
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

/// A text frame whose payload is not UTF-8 (tungstenite would refuse to build a `Text` message).
fn invalid_utf8_text() -> Message {
    Message::Frame(Frame::message(
        vec![b'{', 0xff, 0xfe, b'}'],
        OpCode::Data(Data::Text),
        true,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_answers_a_close_with_a_close() {
    let relay = Relay::start(&[], &[]);
    // Before joining.
    let mut ws = open_signal(&relay).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let frame = next_close(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Library(4001));
    // In a call.
    let http = reqwest::Client::new();
    let link = create_link_json(&http, &relay, "alice").await;
    let (mut ws, _offering) = raw_join(&relay, "alice", link["id"].as_str().unwrap()).await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await
    .unwrap();
    let frame = next_close(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Normal);
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_gets_close_1007() {
    let relay = Relay::start(&[], &[]);
    let mut ws = open_signal(&relay).await;
    ws.send(invalid_utf8_text()).await.unwrap();
    let frame = next_close(&mut ws).await.expect("a close code");
    assert_eq!(frame.code, CloseCode::Invalid, "{frame:?}");
    assert_eq!(u16::from(frame.code), 1007);
    // In a call.
    let http = reqwest::Client::new();
    let link = create_link_json(&http, &relay, "alice").await;
    let (mut ws, _offering) = raw_join(&relay, "alice", link["id"].as_str().unwrap()).await;
    ws.send(invalid_utf8_text()).await.unwrap();
    let frame = next_close(&mut ws).await.expect("a close code");
    assert_eq!(u16::from(frame.code), 1007);
    relay.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 8: throttled keyframe requests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_keyframe_requests_have_their_own_counter() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let text = metrics_text(&relay).await;
    assert!(
        !text.contains("callrelay_datagrams_dropped_total{reason=\"rate_limited\"}"),
        "throttled keyframe requests are still counted as dropped datagrams"
    );
    assert!(text.contains("\ncallrelay_keyframe_requests_throttled_total 0\n"));

    // Alice publishes three simulcast layers but never a keyframe, so bob's layer switches keep
    // waiting for one; each preference he sends asks for a keyframe again: a PLI flood that the
    // per-layer throttle holds back.
    let http = reqwest::Client::new();
    let link = create_link_json(&http, &relay, "alice").await;
    let link = link["id"].as_str().unwrap();
    let publisher = ClientConfig {
        audio: false,
        simulcast: true,
        ..ClientConfig::default()
    };
    let mut alice = Client::join(&relay.base, &token("alice", false), link, publisher)
        .await
        .unwrap();
    alice.wait_connected(PATIENCE).await.unwrap();
    let viewer = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let mut bob = Client::join(&relay.base, &token("bob", false), link, viewer)
        .await
        .unwrap();
    bob.wait_connected(PATIENCE).await.unwrap();
    let alice_id = alice.participant_id().to_owned();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut n = 0u32;
    loop {
        tick.tick().await;
        for rid in SIMULCAST_RIDS {
            let mut body = vec![rid.as_bytes()[0]];
            body.extend_from_slice(&n.to_be_bytes());
            body.resize(300, 0x5a);
            alice
                .send_video(Some(rid), vp8_payload(false, &body))
                .unwrap();
        }
        // Within the preference budget (64 at once, then 32/s).
        if n.is_multiple_of(5) {
            bob.set_video_preference(&alice_id, if n.is_multiple_of(10) { 720 } else { 180 })
                .unwrap();
        }
        while bob.try_next_event().is_some() {}
        while alice.try_next_event().is_some() {}
        n += 1;
        if n.is_multiple_of(25)
            && metric(&relay, "callrelay_keyframe_requests_throttled_total ").await > 0.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no throttled keyframe request counted"
        );
    }
    let text = metrics_text(&relay).await;
    assert!(
        !text.contains("callrelay_datagrams_dropped_total{reason=\"rate_limited\"}"),
        "{text}"
    );
    drop(bob);
    drop(alice);
}

// ---------------------------------------------------------------------------------------------
// Finding 10: a typo in an environment variable

#[test]
fn an_unknown_environment_variable_exits_64_naming_the_nearest_key() {
    let port = free_port();
    let out = Command::new(BIN)
        .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("CALLRELAY_AUTH_SECRET", SECRET)
        .env("CALLRELAY_LINKS_TTLL", "3s")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("CALLRELAY_LINKS_TTLL"), "{err}");
    assert!(err.contains("did you mean CALLRELAY_LINKS_TTL?"), "{err}");
    // Nothing was bound.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    // The token command reads the same configuration.
    let out = Command::new(BIN)
        .args(["token", "--user", "alice"])
        .env_clear()
        .env("CALLRELAY_AUTH_SECRET", SECRET)
        .env("CALLRELAY_AUTH_SECRT", "x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CALLRELAY_AUTH_SECRET?"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variables_of_the_scripts_and_tests_do_not_stop_the_relay() {
    // What scripts/test, scripts/pg, the browser harness and the loadgen put in the environment
    // the relay inherits.
    let relay = Relay::start(
        &[
            (
                "CALLRELAY_TEST_DATABASE_URL",
                "postgres://u@127.0.0.1:1/postgres",
            ),
            ("CALLRELAY_PG_STATE", "/tmp/callrelay-pg"),
            ("CALLRELAY_BIN", "target/release/callrelay"),
            ("CALLRELAY_TOKEN", "x"),
            ("CALLRELAY_ADMIN_TOKEN", "x"),
            ("CALLRELAY_ANNOUNCE_IP", "203.0.113.7"),
        ],
        &[],
    );
    let (st, _) = send(reqwest::Client::new().get(format!("{}/healthz", relay.base))).await;
    assert_eq!(st, 200);
    relay.stop();
}

// ---------------------------------------------------------------------------------------------
// Finding 11: the contract and the code

fn openapi() -> serde_json::Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_contract_lists_415_and_the_enforced_constraints() {
    let doc = openapi();
    let mut with_body = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if op.get("requestBody").is_none() {
                continue;
            }
            with_body.push(format!("{method} {path}"));
            for status in ["400", "413", "415"] {
                assert!(
                    op["responses"].get(status).is_some(),
                    "{method} {path} takes a body but does not list {status}"
                );
            }
        }
    }
    for must in [
        "post /v1/links",
        "post /v1/links/{id}/join",
        "post /v1/admin/links/{id}/revoke",
        "post /v1/dev/token",
    ] {
        assert!(
            with_body.iter().any(|w| w == must),
            "{must} has no requestBody: {with_body:?}"
        );
    }

    let schemas = &doc["components"]["schemas"];
    let user = &schemas["DevTokenRequest"]["properties"]["user"];
    assert_eq!(user["maxLength"], 64, "{user}");
    assert_eq!(user["minLength"], 1, "{user}");
    assert_eq!(user["pattern"], "^[A-Za-z0-9._@+-]{1,64}$", "{user}");
    let reason = &schemas["RevokeLink"]["properties"]["reason"];
    assert_eq!(reason["maxLength"], 500, "{reason}");
    let title = &schemas["CreateLink"]["properties"]["title"];
    assert_eq!(title["maxLength"], 100, "{title}");
    let region = &schemas["JoinBody"]["properties"]["region"];
    assert_eq!(region["maxLength"], 64, "{region}");
    assert_eq!(region["minLength"], 1, "{region}");
    assert_eq!(region["pattern"], "^[A-Za-z0-9._:-]{1,64}$", "{region}");

    let param = |path: &str, method: &str, name: &str| -> serde_json::Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} has no parameters"))
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has no parameter {name}"))["schema"]
            .clone()
    };
    for method in ["put", "delete"] {
        let s = param("/v1/me/blocks/{user_id}", method, "user_id");
        assert_eq!(s["pattern"], "^[A-Za-z0-9._@+-]{1,64}$", "{method}: {s}");
        assert_eq!(s["maxLength"], 64, "{method}: {s}");
    }
    for (path, method) in [
        ("/v1/links/{id}", "get"),
        ("/v1/links/{id}/qr.svg", "get"),
        ("/v1/links/{id}/join", "post"),
        ("/v1/admin/links/{id}/revoke", "post"),
    ] {
        let s = param(path, method, "id");
        assert_eq!(s["pattern"], "^[0-9A-Za-z]{22}$", "{method} {path}: {s}");
    }
    let limit = param("/v1/me/links", "get", "limit");
    assert_eq!(limit["minimum"], 1, "{limit}");
    assert_eq!(limit["maximum"], 500, "{limit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_with_a_json_body_answers_415_to_another_type() {
    let relay = Relay::start(&[], &["--dev"]);
    let http = reqwest::Client::new();
    let link = create_link_json(&http, &relay, "alice").await;
    let id = link["id"].as_str().unwrap();
    let base = &relay.base;
    let alice = token("alice", false);
    let admin = token("ops", true);
    for (what, req) in [
        (
            "create",
            http.post(format!("{base}/v1/links")).bearer_auth(&alice),
        ),
        (
            "join",
            http.post(format!("{base}/v1/links/{id}/join"))
                .bearer_auth(&alice),
        ),
        (
            "revoke",
            http.post(format!("{base}/v1/admin/links/{id}/revoke"))
                .bearer_auth(&admin),
        ),
        ("dev token", http.post(format!("{base}/v1/dev/token"))),
    ] {
        for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
            let (st, body) = send(
                req.try_clone()
                    .unwrap()
                    .header("content-type", content_type)
                    .body("{\"user\":\"alice\"}"),
            )
            .await;
            assert_eq!(st, 415, "{what} with {content_type}: {body}");
            assert_eq!(body["code"], "unsupported_media_type", "{what}: {body}");
        }
    }
    // Nothing was revoked on the way.
    let (st, _) = send(http.get(format!("{base}/v1/links/{id}"))).await;
    assert_eq!(st, 200);
    relay.stop();
}
