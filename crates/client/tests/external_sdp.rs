//! A session whose SDP travels outside callrelay's signaling (as with Janus): two clients on
//! 127.0.0.1 connect to each other directly, one offering what it publishes, the other
//! answering receive-only, and media flows over real ICE, DTLS and SRTP.

use std::time::Duration;

use callrelay_client::{
    vp8_body, vp8_payload, Client, ClientConfig, ClientError, ClientEvent, TrackKind,
};

const PATIENCE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offer_and_an_answer_exchanged_elsewhere_carry_audio_and_video() {
    let (offering, offer) = Client::offer(ClientConfig::default()).await.unwrap();
    assert!(
        offer.contains("m=audio") && offer.contains("m=video"),
        "{offer}"
    );
    let (mut receiver, answer) = Client::answer(&offer, ClientConfig::default())
        .await
        .unwrap();
    assert!(answer.contains("a=recvonly"), "{answer}");
    let mut sender = offering.accept_answer(&answer).unwrap();
    assert_eq!(
        sender.participant_id(),
        "",
        "no callrelay signaling, no participant id"
    );
    sender.wait_connected(PATIENCE).await.unwrap();
    receiver.wait_connected(PATIENCE).await.unwrap();

    // Send until one audio and one video packet arrived intact (bounded: at most 5 s of 20 ms
    // ticks, 2 packets each).
    let (mut audio, mut video) = (false, false);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for n in 0u8..250 {
        tick.tick().await;
        sender.send_audio(vec![0xA0, n, 1, 2, 3]).unwrap();
        sender
            .send_video(None, vp8_payload(true, &[0xB0, n, 4, 5, 6]))
            .unwrap();
        while let Some(e) = receiver.try_next_event() {
            if let ClientEvent::Media(p) = e {
                match p.kind {
                    TrackKind::Audio => {
                        assert_eq!(p.payload[0], 0xA0);
                        assert_eq!(&p.payload[2..], &[1, 2, 3]);
                        audio = true;
                    }
                    TrackKind::Video => {
                        let body = vp8_body(&p.payload).expect("a VP8 payload");
                        assert_eq!(body[0], 0xB0);
                        assert_eq!(&body[2..], &[4, 5, 6]);
                        video = true;
                    }
                }
            }
        }
        if audio && video {
            break;
        }
    }
    assert!(audio && video, "audio {audio} video {video}");

    // Hanging up ends each session (DTLS close_notify, then `Closed`).
    sender.leave().unwrap();
    receiver.leave().unwrap();
    let closed = |mut c: Client| async move {
        tokio::time::timeout(PATIENCE, async {
            while let Some(e) = c.next_event().await {
                if matches!(e, ClientEvent::Closed { .. }) {
                    return true;
                }
            }
            false
        })
        .await
    };
    assert_eq!(closed(sender).await, Ok(true));
    assert_eq!(closed(receiver).await, Ok(true));
}

#[tokio::test]
async fn a_bad_remote_description_is_an_sdp_error() {
    let err = Client::answer("not sdp", ClientConfig::default())
        .await
        .err()
        .expect("garbage is refused");
    assert!(matches!(err, ClientError::Sdp(_)), "{err}");
    let (offering, _) = Client::offer(ClientConfig::default()).await.unwrap();
    assert!(matches!(
        offering.accept_answer("v=0"),
        Err(ClientError::Sdp(_))
    ));

    // A running session refuses a bad renegotiation offer and goes on.
    let (_o, offer) = Client::offer(ClientConfig::default()).await.unwrap();
    let (receiver, _) = Client::answer(&offer, ClientConfig::default())
        .await
        .unwrap();
    let err = receiver.apply_offer("v=0\r\n".into()).await.unwrap_err();
    assert!(matches!(err, ClientError::Sdp(_)), "{err}");
    assert!(receiver.is_running());
}

#[tokio::test]
async fn a_renegotiator_does_not_keep_its_session_alive() {
    let (_o, offer) = Client::offer(ClientConfig::default()).await.unwrap();
    let (receiver, _) = Client::answer(&offer, ClientConfig::default())
        .await
        .unwrap();
    let renegotiator = receiver.renegotiator();
    // While the client lives, the handle reaches its session (which refuses a bad offer).
    let err = renegotiator
        .apply_offer("v=0\r\n".into())
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Sdp(_)), "{err}");

    drop(receiver);
    let (_o2, offer2) = Client::offer(ClientConfig::default()).await.unwrap();
    let err = tokio::time::timeout(PATIENCE, renegotiator.apply_offer(offer2))
        .await
        .expect("answers at once")
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed), "{err}");
}
