//! The room-size cap holds at the signaling stage too (a grant whose seat has lapsed).

use callrelay_client::{Client, ClientConfig, ClientError, JoinTicket};
use callrelay_links::LinkKind;
use callrelay_server::auth::{GrantClaims, GRANT_AUDIENCE};

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_full_at_the_websocket_stage() {
    let relay = Relay::start(&[("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "2")]).await;
    let link = relay.create_link("alice", "video").await;
    let alice = relay.join("alice", &link, ClientConfig::default()).await;
    let carol = relay.join("carol", &link, ClientConfig::default()).await;
    // The HTTP join is refused: alice and carol hold both seats, now live ones.
    assert!(
        callrelay_client::http_join(&relay.base, &relay.token("bob"), &link)
            .await
            .is_err()
    );
    // A valid grant without a seat (as when its seat lapsed) is refused at signaling.
    let iat = chrono::Utc::now().timestamp();
    let grant = relay.tokens.issue_grant(&GrantClaims {
        sub: "bob".into(),
        aud: GRANT_AUDIENCE.into(),
        iat,
        exp: iat + 60,
        link: link.clone(),
        pid: "p-00000000000000b0".into(),
        kind: LinkKind::Video,
        name: None,
        node: None,
    });
    let ticket = JoinTicket {
        participant_id: "p-00000000000000b0".into(),
        grant,
        signal_url: relay.base.replace("http://", "ws://") + "/v1/signal",
    };
    match Client::join_with_ticket(&ticket, ClientConfig::default()).await {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, "room_full"),
        Err(e) => panic!("unexpected {e}"),
        Ok(_) => panic!("a second participant entered a room of one"),
    }
    assert_eq!(relay.preview_participants(&link).await, 2);
    drop(alice);
    drop(carol);
    relay.stop().await;
}
