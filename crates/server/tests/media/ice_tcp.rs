//! ICE-TCP (RFC 6544, RFC 4571 framing): a client that offers only an active TCP candidate (as
//! on a network that blocks UDP) reaches the relay's passive TCP candidate on the media port
//! and exchanges audio and video with a UDP client; garbage on the TCP port is counted and
//! harms nobody.

use std::time::Duration;

use callrelay_client::{ClientConfig, TrackKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{exchange, until_all_received, Relay};

fn over_tcp() -> ClientConfig {
    ClientConfig {
        tcp: true,
        ..ClientConfig::default()
    }
}

/// `callrelay_datagrams_dropped_total{reason="<reason>"}` as scraped.
async fn dropped(relay: &Relay, reason: &str) -> u64 {
    let text = relay.metrics_text().await;
    let prefix = format!("callrelay_datagrams_dropped_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{prefix} is on /metrics"))
        .trim()
        .parse()
        .expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_only_client_and_a_udp_client_exchange_audio_and_video() {
    let relay = Relay::start(&[]).await;
    let link = relay.create_link("alice", "video").await;
    let alice = relay.join("alice", &link, over_tcp()).await;
    let bob = relay.join("bob", &link, ClientConfig::default()).await;
    // The relay offers a passive TCP candidate on its UDP candidate's address and port.
    let sdp = &alice.client.joined().sdp;
    let candidates: Vec<&str> = sdp
        .lines()
        .filter(|l| l.starts_with("a=candidate:"))
        .collect();
    let udp = candidates
        .iter()
        .find(|c| c.contains(" udp "))
        .expect("a UDP candidate");
    let tcp = candidates
        .iter()
        .find(|c| c.contains(" tcp ") && c.contains("tcptype passive"))
        .unwrap_or_else(|| panic!("a passive TCP candidate in {sdp}"));
    let addr = |c: &str| {
        c.split_whitespace()
            .skip(4)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(addr(udp), addr(tcp), "same IP and port");

    // Alice offered only a TCP candidate: ICE pairs only same-protocol candidates, so every
    // packet she sends and gets went over the TCP connection.
    let mut peers = [alice, bob];
    exchange(&mut peers, Duration::from_secs(2)).await;
    until_all_received(&mut peers, 50).await;
    let [alice, bob] = &peers;
    assert!(alice.received_intact(&bob.id(), TrackKind::Audio, 2) >= 50);
    assert!(alice.received_intact(&bob.id(), TrackKind::Video, 2) >= 50);
    assert!(bob.received_intact(&alice.id(), TrackKind::Audio, 1) >= 50);
    assert!(bob.received_intact(&alice.id(), TrackKind::Video, 1) >= 50);
    for reason in ["tcp_bad_frame", "tcp_overflow", "tcp_refused"] {
        assert_eq!(dropped(&relay, reason).await, 0, "{reason}");
    }
    drop(peers);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_on_the_tcp_port_are_counted_and_close_only_their_connection() {
    let relay = Relay::start(&[]).await;
    let media = relay.state.media.addrs()[0];
    let before = dropped(&relay, "tcp_bad_frame").await;

    // An oversized length; a zero length; half a frame, then the end of the stream.
    for bytes in [
        &[0xff_u8, 0xff, 1, 2, 3][..],
        &[0, 0][..],
        &[0, 200, 1, 2, 3][..],
    ] {
        let mut s = tokio::net::TcpStream::connect(media)
            .await
            .expect("the media port takes TCP");
        s.write_all(bytes).await.expect("write");
        s.shutdown().await.expect("shutdown");
        // The relay closes it: the read ends (EOF or reset), within the patience of the test.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
            .await
            .expect("the relay closes the connection");
        assert!(rest.is_empty(), "nothing is answered to garbage");
    }
    // Well-framed garbage (not STUN from a participant) is dropped by the core, not answered.
    let mut s = tokio::net::TcpStream::connect(media)
        .await
        .expect("connect");
    s.write_all(&[
        0, 20, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ])
    .await
    .expect("write");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while dropped(&relay, "tcp_bad_frame").await < before + 3 {
        assert!(tokio::time::Instant::now() < deadline, "bad frames counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(dropped(&relay, "tcp_bad_frame").await, before + 3);

    // The relay still serves calls over TCP.
    let link = relay.create_link("alice", "video").await;
    let alice = relay.join("alice", &link, over_tcp()).await;
    let bob = relay.join("bob", &link, over_tcp()).await;
    let mut peers = [alice, bob];
    exchange(&mut peers, Duration::from_secs(1)).await;
    until_all_received(&mut peers, 20).await;
    drop(peers);
    drop(s);
    relay.stop().await;
}
