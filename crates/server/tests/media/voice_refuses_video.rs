//! A voice link refuses video at the signaling join, and admits audio.

use callrelay_client::{Client, ClientConfig, ClientError};

use crate::common::Relay;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_link_refuses_video() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "voice").await;
    let err = Client::join(
        &relay.base,
        &relay.token("bob"),
        &link,
        ClientConfig::default(),
    )
    .await
    .err()
    .expect("video is refused");
    match err {
        ClientError::Refused { code, .. } => assert_eq!(code, "video_not_allowed"),
        e => panic!("unexpected {e}"),
    }
    assert_eq!(
        relay.preview_participants(&link).await,
        0,
        "the seat was given back"
    );
    let audio_only = ClientConfig {
        video: false,
        ..ClientConfig::default()
    };
    let alice = relay.join("alice", &link, audio_only).await;
    assert_eq!(alice.client.joined().link_kind, "voice");
    drop(alice);
    relay.stop().await;
}
