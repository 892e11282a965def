//! Bad signaling gets the documented error or close, and is counted.

use callrelay_client::{Client, ClientConfig, ClientError};
use callrelay_proto::server_message::Msg;
use callrelay_proto::ServerMessage;
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Relay, PATIENCE};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(relay: &Relay) -> Ws {
    let url = relay.base.replace("http://", "ws://") + "/v1/signal";
    tokio_tungstenite::connect_async(url)
        .await
        .expect("websocket opens")
        .0
}

/// What the server did after our frame: the error code it sent (if any) and the close code.
async fn outcome(ws: &mut Ws) -> (Option<String>, Option<CloseCode>) {
    let mut code = None;
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("the server answers in time");
        match frame {
            Some(Ok(Message::Text(t))) => {
                if let Ok(ServerMessage {
                    msg: Some(Msg::Error(e)),
                }) = ServerMessage::from_json(&t)
                {
                    code = Some(e.code);
                }
            }
            Some(Ok(Message::Close(c))) => return (code, c.map(|c| c.code)),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (code, None),
        }
    }
}

fn errors(relay: &Relay, code: &str) -> u64 {
    relay
        .state
        .media_metrics
        .signaling_errors
        .with_label_values(&[code])
        .get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signaling_gets_the_right_error_or_close() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;

    // A forged grant.
    let mut ws = open(&relay).await;
    ws.send(Message::Text(
        r#"{"join":{"grant":"eyJhbGciOiJub25lIn0.e30.","sdp":"v=0"}}"#.into(),
    ))
    .await
    .unwrap();
    assert_eq!(outcome(&mut ws).await.0.as_deref(), Some("invalid_grant"));
    assert_eq!(errors(&relay, "invalid_grant"), 1);

    // A frame larger than a connection's read buffer (16 KiB) and within the 64 KiB limit is
    // read whole: this 40 KiB forged grant gets the grant's error, not a close.
    let mut ws = open(&relay).await;
    let long = format!(
        r#"{{"join":{{"grant":"{}","sdp":"v=0"}}}}"#,
        "x".repeat(40 * 1024)
    );
    ws.send(Message::Text(long.into())).await.unwrap();
    assert_eq!(outcome(&mut ws).await.0.as_deref(), Some("invalid_grant"));
    assert_eq!(errors(&relay, "invalid_grant"), 2);

    // Malformed JSON as the first frame.
    let mut ws = open(&relay).await;
    ws.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(outcome(&mut ws).await.0.as_deref(), Some("invalid_message"));

    // An unknown message type.
    let mut ws = open(&relay).await;
    ws.send(Message::Text(r#"{"nonsense":{}}"#.into()))
        .await
        .unwrap();
    assert_eq!(outcome(&mut ws).await.0.as_deref(), Some("invalid_message"));
    assert_eq!(errors(&relay, "invalid_message"), 2);

    // Something other than join first.
    let mut ws = open(&relay).await;
    ws.send(Message::Text(r#"{"ping":{"nonce":1}}"#.into()))
        .await
        .unwrap();
    assert_eq!(outcome(&mut ws).await.0.as_deref(), Some("not_joined"));

    // A frame over 64 KiB closes the socket with 1009.
    let mut ws = open(&relay).await;
    let big = format!(
        r#"{{"join":{{"grant":"{}","sdp":""}}}}"#,
        "x".repeat(70 * 1024)
    );
    ws.send(Message::Text(big.into())).await.unwrap();
    assert_eq!(outcome(&mut ws).await.1, Some(CloseCode::Size));

    // Binary frames are refused.
    let mut ws = open(&relay).await;
    ws.send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    let (code, close) = outcome(&mut ws).await;
    assert_eq!(code.as_deref(), Some("invalid_message"));
    assert_eq!(close, Some(CloseCode::Unsupported));

    // A grant opens one session only.
    let ticket = callrelay_client::http_join(&relay.base, &relay.token("bob"), &link)
        .await
        .expect("http join");
    let first = Client::join_with_ticket(&ticket, ClientConfig::default())
        .await
        .expect("the grant's first use");
    match Client::join_with_ticket(&ticket, ClientConfig::default()).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "already_joined"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("a grant was used twice"),
    }

    // Once joined, a bad frame is an error but the session goes on.
    let mut peer = crate::common::Peer::new(first);
    peer.client
        .send_signal(callrelay_proto::ClientMessage::from(
            callrelay_proto::client_message::Msg::VideoPreference(
                callrelay_proto::signal::VideoPreference {
                    participant_id: "nobody".into(),
                    max_height: 180,
                },
            ),
        ))
        .unwrap();
    peer.until("an error", |p| {
        p.signals
            .iter()
            .any(|(_, m)| matches!(m, Msg::Error(e) if e.code == "invalid_message"))
    })
    .await;
    assert!(peer.closed.is_none());
    drop(peer);
    relay.stop().await;
}
