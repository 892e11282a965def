//! IPv6: a relay on `::1` carries a call between IPv6 clients, and a dual-stack relay (bound to
//! `[::]`, announcing `127.0.0.1` and `::1`) carries one call between a client on `::1` and a
//! client on `127.0.0.1`, real DTLS/SRTP both ways. Loopback traffic only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use callrelay_client::{ClientConfig, TrackKind};

use crate::common::{exchange, until_all_received, Relay};

fn on(ip: IpAddr) -> ClientConfig {
    ClientConfig {
        local_ip: ip,
        ..ClientConfig::default()
    }
}

/// The host candidate addresses of an SDP (`a=candidate:… udp <prio> <ip> <port> typ host`).
fn candidate_ips(sdp: &str) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = sdp
        .lines()
        .filter_map(|l| l.trim().strip_prefix("a=candidate:"))
        .filter_map(|c| c.split_whitespace().nth(4)?.parse().ok())
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_on_ipv6_loopback_exchange_audio_and_video() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_BIND_IP", "::1")]).await;
    let addrs = relay.state.media.addrs();
    assert!(
        addrs.iter().all(|a| a.ip() == Ipv6Addr::LOCALHOST),
        "{addrs:?}"
    );
    let link = relay.create_link("alice", "video").await;
    let alice = relay
        .join("alice", &link, on(Ipv6Addr::LOCALHOST.into()))
        .await;
    let bob = relay
        .join("bob", &link, on(Ipv6Addr::LOCALHOST.into()))
        .await;
    assert_eq!(
        candidate_ips(&bob.client.joined().sdp),
        [IpAddr::from(Ipv6Addr::LOCALHOST)]
    );
    let mut peers = [alice, bob];
    exchange(&mut peers, Duration::from_secs(2)).await;
    until_all_received(&mut peers, 50).await;
    drop(peers);
    relay.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ipv6_client_and_an_ipv4_client_share_a_call_on_a_dual_stack_relay() {
    let relay = Relay::start(&[
        ("CALLRELAY_MEDIA_BIND_IP", "::"),
        ("CALLRELAY_MEDIA_ANNOUNCE_IP", "127.0.0.1,::1"),
    ])
    .await;
    // Two workers, each with one candidate per family on its own port.
    let addrs = relay.state.media.addrs();
    assert_eq!(addrs.len(), 4, "{addrs:?}");
    for pair in addrs.chunks(2) {
        assert_eq!(pair[0].ip(), Ipv4Addr::LOCALHOST, "{addrs:?}");
        assert_eq!(pair[1].ip(), Ipv6Addr::LOCALHOST, "{addrs:?}");
        assert_eq!(pair[0].port(), pair[1].port(), "{addrs:?}");
    }

    let link = relay.create_link("alice", "video").await;
    let alice = relay
        .join("alice", &link, on(Ipv6Addr::LOCALHOST.into()))
        .await;
    let bob = relay
        .join("bob", &link, on(Ipv4Addr::LOCALHOST.into()))
        .await;
    assert!(alice.client.local_addr().is_ipv6());
    assert!(bob.client.local_addr().is_ipv4());
    for p in [&alice, &bob] {
        assert_eq!(
            candidate_ips(&p.client.joined().sdp),
            [
                IpAddr::from(Ipv4Addr::LOCALHOST),
                IpAddr::from(Ipv6Addr::LOCALHOST)
            ],
            "the relay answers with a host candidate per family"
        );
    }

    let mut peers = [alice, bob];
    // ~100 packets of each kind each way; the first few may precede the subscription.
    exchange(&mut peers, Duration::from_secs(2)).await;
    until_all_received(&mut peers, 50).await;
    let [alice, bob] = &peers;
    for kind in [TrackKind::Audio, TrackKind::Video] {
        assert!(alice.received_intact(&bob.id(), kind, 2) >= 50, "{kind:?}");
        assert!(bob.received_intact(&alice.id(), kind, 1) >= 50, "{kind:?}");
    }
    drop(peers);
    relay.stop().await;
}
