//! Revoking a link removes everyone in its call within a second, with `removed{revoked}`.

use std::time::{Duration, Instant};

use callrelay_client::ClientConfig;

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_removes_both_participants_within_a_second() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let mut alice = relay.join("alice", &link, ClientConfig::default()).await;
    let mut bob = relay.join("bob", &link, ClientConfig::default()).await;
    assert_eq!(relay.state.media.participants(), 2);
    assert_eq!(relay.state.media.rooms(), 1);
    let t0 = Instant::now();
    relay.revoke(&link).await;
    for p in [&mut alice, &mut bob] {
        p.until("the session to end", |p| p.closed.is_some()).await;
        let (at, reason) = p.closed.clone().expect("closed");
        assert_eq!(reason.as_deref(), Some("revoked"));
        assert_eq!(
            p.removed_reason().as_deref(),
            Some("revoked"),
            "removed{{reason}} came before the close"
        );
        assert!(
            at - t0 < Duration::from_secs(1),
            "removed after {:?}",
            at - t0
        );
    }
    let id = callrelay_links::LinkId::parse(&link).unwrap();
    assert_eq!(
        relay.state.seats.held(&id, Instant::now()),
        0,
        "seats released"
    );
    relay.stop().await;
}
