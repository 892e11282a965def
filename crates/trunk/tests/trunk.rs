//! The trunk over real QUIC on 127.0.0.1, with certificates from `init_dir`: who may connect, one
//! connection per pair, media through, drops counted, peers going away seen.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use callrelay_trunk::{
    init_dir, Counters, Dropped, IdentityError, MediaHeader, Trunk, TrunkError, TrunkEvent,
    TrunkIdentity,
};
use tokio::sync::mpsc::Receiver;

const LOOPBACK: &str = "127.0.0.1:0";

fn node(dir: &Path, name: &str) -> (Trunk, Receiver<TrunkEvent>) {
    let id = TrunkIdentity::from_dir(dir, name).expect("identity");
    Trunk::bind(
        LOOPBACK.parse().unwrap(),
        &id,
        Arc::new(Counters::default()),
    )
    .expect("bind")
}

fn addr(t: &Trunk) -> SocketAddr {
    t.local_addr().unwrap()
}

fn cluster(nodes: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = nodes.iter().map(|s| s.to_string()).collect();
    init_dir(dir.path(), &names).unwrap();
    dir
}

/// The next event that is not `Up`, within 5 s.
async fn next_non_up(rx: &mut Receiver<TrunkEvent>) -> TrunkEvent {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await.expect("events open") {
                TrunkEvent::Up { .. } => continue,
                e => return e,
            }
        }
    })
    .await
    .expect("an event within 5 s")
}

fn refused(c: &Counters, reason: &str) -> u64 {
    c.refused()
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap()
}

fn dropped(c: &Counters, reason: &str) -> u64 {
    c.dropped()
        .iter()
        .find(|(r, _)| *r == reason)
        .map(|(_, n)| *n)
        .unwrap()
}

fn header(seq: u64) -> MediaHeader {
    MediaHeader {
        call: 42,
        track: 3,
        layer: Some(1),
        arrival_us: 1_000_000 + seq,
    }
}

#[tokio::test]
async fn two_nodes_of_one_cluster_connect_once_and_carry_media() {
    let dir = cluster(&["a", "b"]);
    let (a, _a_rx) = node(dir.path(), "a");
    let (b, mut b_rx) = node(dir.path(), "b");

    let to_b = a.connect("b", addr(&b)).await.expect("a dials b");
    assert_eq!(to_b.node(), "b");
    // The accepting end names the dialer from its certificate.
    match tokio::time::timeout(Duration::from_secs(5), b_rx.recv()).await {
        Ok(Some(TrunkEvent::Up { peer })) => assert_eq!(peer, "a"),
        other => panic!("b should see a come up, saw {other:?}"),
    }
    // Dialing again reuses the pair's connection.
    let again = a.connect("b", addr(&b)).await.unwrap();
    assert!(again.is_up());
    assert_eq!(a.counters().connections.load(Ordering::Relaxed), 1);

    let rtp = [0x80u8, 0x60, 0, 1, 0, 0, 0, 9, 0, 0, 0, 7, 0xde, 0xad];
    for seq in 0..10 {
        to_b.send_media(&header(seq), &rtp).unwrap();
    }
    for seq in 0..10 {
        match next_non_up(&mut b_rx).await {
            TrunkEvent::Media {
                peer,
                header: h,
                rtp: got,
            } => {
                assert_eq!(peer, "a");
                assert_eq!(h.call, 42);
                assert_eq!(h.layer, Some(1));
                assert!(
                    h.arrival_us >= 1_000_000 && h.arrival_us < 1_000_010,
                    "{h:?} ({seq})"
                );
                assert_eq!(&got[..], &rtp[..]);
            }
            e => panic!("expected media, got {e:?}"),
        }
    }
    assert_eq!(a.counters().packets_out.load(Ordering::Relaxed), 10);
    assert_eq!(b.counters().packets_in.load(Ordering::Relaxed), 10);
    assert_eq!(
        b.counters().bytes_in.load(Ordering::Relaxed),
        10 * (23 + rtp.len() as u64)
    );
    assert!(to_b.rtt() < Duration::from_secs(1));

    b.shutdown().await;
    a.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_shuts_down_is_reported_down() {
    let dir = cluster(&["a", "b"]);
    let (a, mut a_rx) = node(dir.path(), "a");
    let (b, _b_rx) = node(dir.path(), "b");
    a.connect("b", addr(&b)).await.unwrap();
    b.shutdown().await;
    match next_non_up(&mut a_rx).await {
        TrunkEvent::Down { peer, .. } => assert_eq!(peer, "b"),
        e => panic!("expected b down, got {e:?}"),
    }
    assert!(a.peer("b").is_none());
    assert_eq!(a.counters().connections.load(Ordering::Relaxed), 0);
    a.shutdown().await;
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_both_ways_and_counted() {
    let ours = cluster(&["a", "b"]);
    let theirs = cluster(&["c"]);
    let (a, _a_rx) = node(ours.path(), "a");
    let (c, _c_rx) = node(theirs.path(), "c");

    // c dials a: a does not know c's CA. Both ends count the refusal.
    let err = c.connect("a", addr(&a)).await.unwrap_err();
    assert!(
        matches!(err, TrunkError::Refused { .. }),
        "c should be refused, got {err}"
    );
    // The acceptor counts it when its handshake task ends; give it a moment.
    for _ in 0..50 {
        if refused(a.counters(), "unknown_ca") > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        refused(a.counters(), "unknown_ca"),
        1,
        "{:?}",
        a.counters().refused()
    );
    assert_eq!(
        refused(c.counters(), "unknown_ca"),
        1,
        "{:?}",
        c.counters().refused()
    );

    // a dials c: c's certificate is not from a's CA.
    let err = a.connect("c", addr(&c)).await.unwrap_err();
    assert!(
        matches!(
            err,
            TrunkError::Refused {
                reason: "unknown_ca",
                ..
            }
        ),
        "{err}"
    );
    assert!(a.peer("c").is_none() && c.peer("a").is_none());
    assert_eq!(a.counters().connections.load(Ordering::Relaxed), 0);
    a.shutdown().await;
    c.shutdown().await;
}

#[tokio::test]
async fn a_node_answering_for_another_name_is_refused() {
    let dir = cluster(&["a", "b", "c"]);
    let (a, _a_rx) = node(dir.path(), "a");
    let (b, _b_rx) = node(dir.path(), "b");
    // a means to reach c, but b answers at that address with b's (valid) certificate.
    let err = a.connect("c", addr(&b)).await.unwrap_err();
    assert!(
        matches!(
            err,
            TrunkError::Refused {
                reason: "bad_certificate",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(refused(a.counters(), "bad_certificate"), 1);
    assert!(a.peer("c").is_none() && a.peer("b").is_none());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn both_nodes_dialing_at_once_end_with_one_connection() {
    let dir = cluster(&["a", "b"]);
    let (a, _a_rx) = node(dir.path(), "a");
    let (b, _b_rx) = node(dir.path(), "b");
    let (ab, ba) = tokio::join!(a.connect("b", addr(&b)), b.connect("a", addr(&a)));
    ab.unwrap();
    ba.unwrap();
    // Both ends keep the connection a (the smaller id) dialed; the other closes.
    let mut settled = false;
    for _ in 0..100 {
        if a.counters().connections.load(Ordering::Relaxed) == 1
            && b.counters().connections.load(Ordering::Relaxed) == 1
            && a.peer("b").is_some()
            && b.peer("a").is_some()
        {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        settled,
        "a: {} connections, b: {}",
        a.counters().connections.load(Ordering::Relaxed),
        b.counters().connections.load(Ordering::Relaxed)
    );
    // And media flows on what remains.
    let p = a.peer("b").unwrap();
    p.send_media(&header(0), b"\x80rtp").unwrap();
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn media_past_the_buffer_or_the_path_is_dropped_and_counted() {
    let dir = cluster(&["a", "b"]);
    let (a, _a_rx) = node(dir.path(), "a");
    let (b, _b_rx) = node(dir.path(), "b");
    let p = a.connect("b", addr(&b)).await.unwrap();

    let too_big = vec![0u8; p.max_rtp_size() + 1];
    assert_eq!(p.send_media(&header(0), &too_big), Err(Dropped::TooLarge));
    assert_eq!(dropped(a.counters(), "too_large"), 1);

    // 4,000 packets of 1 kB at once: far past the 256 KiB datagram buffer. What does not fit is
    // dropped and counted, nothing waits, and every packet is either sent or counted.
    let rtp = vec![0x80u8; 1000.min(p.max_rtp_size())];
    let mut sent = 0u64;
    let mut congested = 0u64;
    for seq in 0..4000 {
        match p.send_media(&header(seq), &rtp) {
            Ok(()) => sent += 1,
            Err(Dropped::Congested) => congested += 1,
            Err(d) => panic!("unexpected drop {d:?}"),
        }
    }
    assert!(
        congested > 0,
        "nothing was dropped: the buffer is not bounded"
    );
    assert_eq!(dropped(a.counters(), "congested"), congested);
    assert_eq!(a.counters().packets_out.load(Ordering::Relaxed), sent);
    a.shutdown().await;
    b.shutdown().await;
}

#[test]
fn an_identity_that_does_not_match_is_refused_at_load() {
    let dir = cluster(&["a", "b"]);
    let d = dir.path();
    // b's certificate loaded as a's: it does not name a.
    let err = TrunkIdentity::load("a", &d.join("ca.pem"), &d.join("b.pem"), &d.join("b.key"))
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotThisNode { .. }), "{err}");
    // a's certificate with b's key.
    let err = TrunkIdentity::load("a", &d.join("ca.pem"), &d.join("a.pem"), &d.join("b.key"))
        .unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
    // A certificate from another cluster.
    let other = cluster(&["a"]);
    let err = TrunkIdentity::load(
        "a",
        &d.join("ca.pem"),
        &other.path().join("a.pem"),
        &other.path().join("a.key"),
    )
    .unwrap_err();
    assert!(matches!(err, IdentityError::NotThisNode { .. }), "{err}");
    // A missing file names its path.
    let err = TrunkIdentity::from_dir(d, "zz").unwrap_err();
    assert!(err.to_string().contains("zz.pem"), "{err}");
}

/// The next control message within 5 s, skipping `Up` and media.
async fn next_control(rx: &mut Receiver<TrunkEvent>) -> (String, bytes::Bytes) {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match rx.recv().await.expect("events open") {
                TrunkEvent::Control { peer, message } => return (peer, message),
                TrunkEvent::Down { peer, why } => panic!("{peer} went down: {why}"),
                _ => continue,
            }
        }
    })
    .await
    .expect("a control message within 5 s")
}

#[tokio::test]
async fn control_messages_arrive_whole_and_in_order_both_ways() {
    let dir = cluster(&["a", "b"]);
    let (a, mut a_rx) = node(dir.path(), "a");
    let (b, mut b_rx) = node(dir.path(), "b");
    let to_b = a.connect("b", addr(&b)).await.unwrap();
    // The accepting side answers on the same connection.
    let mut to_a = None;
    for _ in 0..100 {
        to_a = b.peer("a");
        if to_a.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let to_a = to_a.expect("b sees a");
    let big = bytes::Bytes::from(vec![7u8; callrelay_trunk::endpoint::MAX_CONTROL]);
    for i in 0..200u32 {
        to_b.send_control(bytes::Bytes::from(format!("a{i}")))
            .unwrap();
        to_a.send_control(bytes::Bytes::from(format!("b{i}")))
            .unwrap();
    }
    to_b.send_control(big.clone()).unwrap();
    for i in 0..200u32 {
        let (peer, m) = next_control(&mut b_rx).await;
        assert_eq!(peer, "a");
        assert_eq!(&m[..], format!("a{i}").as_bytes());
        let (peer, m) = next_control(&mut a_rx).await;
        assert_eq!(peer, "b");
        assert_eq!(&m[..], format!("b{i}").as_bytes());
    }
    assert_eq!(next_control(&mut b_rx).await.1, big);
    assert_eq!(
        to_b.send_control(bytes::Bytes::from(vec![
            0u8;
            callrelay_trunk::endpoint::MAX_CONTROL
                + 1
        ])),
        Err(callrelay_trunk::ControlError::TooLarge(
            callrelay_trunk::endpoint::MAX_CONTROL + 1
        ))
    );
    assert_eq!(a.counters().control_out.load(Ordering::Relaxed), 201);
    assert_eq!(b.counters().control_in.load(Ordering::Relaxed), 201);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_does_not_read_control_gets_the_connection_closed_not_a_growing_queue() {
    let dir = cluster(&["a", "b"]);
    let (a, mut a_rx) = node(dir.path(), "a");
    // b never reads its events: its channel fills, then QUIC flow control holds a back.
    let (b, _b_rx) = node(dir.path(), "b");
    let to_b = a.connect("b", addr(&b)).await.unwrap();
    let m = bytes::Bytes::from(vec![1u8; 1024]);
    let mut refused = None;
    for i in 0..100_000u32 {
        match to_b.send_control(m.clone()) {
            Ok(()) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
        if i % 256 == 0 {
            // Let the writer drain what flow control allows.
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let (at, e) = refused.expect("sending stopped being accepted");
    assert_eq!(
        e,
        callrelay_trunk::ControlError::Backlog,
        "after {at} messages"
    );
    match next_non_up(&mut a_rx).await {
        TrunkEvent::Down { peer, .. } => assert_eq!(peer, "b"),
        ev => panic!("expected b down, got {ev:?}"),
    }
    assert!(a.peer("b").is_none());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn a_node_started_again_replaces_its_stale_connection_at_once() {
    let dir = cluster(&["a", "b"]);
    let (a, _a_rx) = node(dir.path(), "a");
    let (b_old, _b_old_rx) = node(dir.path(), "b");
    a.connect("b", addr(&b_old)).await.unwrap();
    // b starts again (elsewhere; the old one has not even gone away) and dials a. b is not the
    // node whose dial wins between two connections of one start; a new start wins anyway.
    let (b_new, mut b_new_rx) = node(dir.path(), "b");
    b_new.connect("a", addr(&a)).await.unwrap();
    let mut replaced = false;
    for _ in 0..100 {
        if a.peer("b")
            .is_some_and(|p| p.remote_address() == addr(&b_new))
            && a.counters().connections.load(Ordering::Relaxed) == 1
        {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(replaced, "a still talks to the old b");
    a.peer("b")
        .unwrap()
        .send_media(&header(1), b"\x80rtp")
        .unwrap();
    match next_non_up(&mut b_new_rx).await {
        TrunkEvent::Media { peer, .. } => assert_eq!(peer, "a"),
        e => panic!("expected media at the new b, got {e:?}"),
    }
    a.shutdown().await;
    b_old.shutdown().await;
    b_new.shutdown().await;
}
