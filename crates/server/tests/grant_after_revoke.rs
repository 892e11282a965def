//! A grant obtained before the link was revoked, or before the creator blocked its user, is
//! refused when it is presented at signaling (THREATS 20, 18): the relay checks the link and the
//! blocks again at the WebSocket stage. Driven from outside: the real relay process, HTTP joins,
//! then raw signaling joins with the grants.

use std::time::Duration;

use callrelay_client::{Client, JoinTicket};
use callrelay_proto::signal::Join;
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

#[path = "support/relay.rs"]
mod support;
use support::{audio_only, create_link, send, token, Relay};

/// The HTTP join: a valid grant (and its signaling URL) for `user`.
async fn grant(relay: &Relay, user: &str, link: &str) -> JoinTicket {
    callrelay_client::http_join(&relay.base, &token(user, false), link)
        .await
        .expect("the HTTP join admits")
}

/// Presents `ticket`'s grant at signaling with a real offer. Returns `Ok(())` on `joined`, or
/// the error's code and message when the relay refuses (and then closes the socket).
async fn signal_join(ticket: &JoinTicket) -> Result<(), (String, String)> {
    let (_offering, sdp) = Client::offer(audio_only()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(ticket.signal_url.as_str())
        .await
        .unwrap();
    let join = ClientMessage::from(client_message::Msg::Join(Join {
        grant: ticket.grant.clone(),
        sdp,
    }));
    ws.send(Message::Text(join.to_json().into())).await.unwrap();
    let mut error = None;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an answer within 10 s");
        match frame {
            Some(Ok(Message::Text(t))) => match ServerMessage::from_json(&t) {
                Ok(ServerMessage {
                    msg: Some(server_message::Msg::Joined(_)),
                }) => {
                    assert!(error.is_none(), "joined after an error: {error:?}");
                    let _ = ws.close(None).await;
                    return Ok(());
                }
                Ok(ServerMessage {
                    msg: Some(server_message::Msg::Error(e)),
                }) => error = Some((e.code, e.message)),
                _ => {}
            },
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                return Err(error.expect("an error before the close"));
            }
            Some(Ok(_)) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_presented_after_the_link_was_revoked_is_refused() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;

    // Two valid grants, both obtained before the revocation.
    let bob = grant(&relay, "bob", &link).await;
    let carol = grant(&relay, "carol", &link).await;
    // The link works: carol's grant joins.
    assert_eq!(signal_join(&carol).await, Ok(()));

    let (st, body) = send(
        http.post(format!("{}/v1/admin/links/{link}/revoke", relay.base))
            .bearer_auth(token("ops", true)),
    )
    .await;
    assert!((200..300).contains(&st), "revoke: {st} {body}");

    // bob's grant is still within its 60 s and unused, but the link is revoked.
    let (code, message) = signal_join(&bob).await.expect_err("refused");
    assert_eq!(code, "link_revoked", "{message}");
    assert!(message.contains("revoked"), "{message}");
    // And the HTTP join is refused too, for good.
    let (st, body) = send(
        http.post(format!("{}/v1/links/{link}/join", relay.base))
            .bearer_auth(token("bob", false)),
    )
    .await;
    assert_eq!(st, 410, "{body}");
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_presented_after_the_creator_blocked_its_user_is_refused() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;

    // mallory and bob both get a valid grant; then alice blocks mallory.
    let mallory = grant(&relay, "mallory", &link).await;
    let bob = grant(&relay, "bob", &link).await;
    let (st, body) = send(
        http.put(format!("{}/v1/me/blocks/mallory", relay.base))
            .bearer_auth(token("alice", false)),
    )
    .await;
    assert_eq!(st, 204, "block: {body}");

    let (code, message) = signal_join(&mallory).await.expect_err("refused");
    assert_eq!(code, "join_refused", "{message}");
    assert_eq!(message, "you cannot join this call");
    // bob, who is not blocked, still joins with his grant.
    assert_eq!(signal_join(&bob).await, Ok(()));
    relay.stop();
}
