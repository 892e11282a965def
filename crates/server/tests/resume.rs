//! Signaling resume (issue #13): a participant whose signaling socket breaks keeps its seat,
//! media and tracks; its client opens a new socket with `resume{resume_token}` and carries on,
//! and the others never see it leave. Driven from outside: the real relay process, str0m
//! clients over real UDP, and a TCP proxy on 127.0.0.1 in front of one client's signaling that
//! the test cuts (every connection dropped without a WebSocket close, new ones refused).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_client::{Client, ClientEvent};
use callrelay_proto::signal::{MuteState, Resume};
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

#[path = "support/relay.rs"]
mod support;
use support::{audio_only, create_link, metric, token, Relay};

/// A TCP proxy to `upstream` that can be cut: [`Proxy::cut`] drops every connection (no
/// WebSocket close: as a network change does) and refuses new ones until [`Proxy::restore`].
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    kill: broadcast::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (kill, _) = broadcast::channel(4);
        let (up2, kill2) = (up.clone(), kill.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if !up2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let mut killed = kill2.subscribe();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut cr, &mut sw) => {}
                        _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        _ = killed.recv() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            up,
            kill,
            task,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        let _ = self.kill.send(());
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}

/// The relay's HTTP address (its `base` is `http://host:port`).
fn http_addr(relay: &Relay) -> SocketAddr {
    relay
        .base
        .trim_start_matches("http://")
        .parse()
        .expect("base is http://ip:port")
}

/// Joins through `proxy`: the ticket's signaling URL is rewritten to go through it.
async fn join_via(relay: &Relay, proxy: &Proxy, user: &str, link: &str) -> Client {
    let mut ticket = callrelay_client::http_join(&relay.base, &token(user, false), link)
        .await
        .unwrap();
    let direct = http_addr(relay).to_string();
    ticket.signal_url = ticket.signal_url.replace(&direct, &proxy.addr.to_string());
    assert!(ticket.signal_url.contains(&proxy.addr.to_string()));
    Client::join_with_ticket(&ticket, audio_only())
        .await
        .unwrap()
}

/// Sends an audio packet from `from` every 20 ms while reading `to`'s events for `d`; returns
/// the audio packets `to` received and every other event, in order.
async fn talk_for(from: &Client, to: &mut Client, d: Duration) -> (usize, Vec<ClientEvent>) {
    let until = tokio::time::Instant::now() + d;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let (mut audio, mut other) = (0, Vec::new());
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return (audio, other),
            _ = tick.tick() => { let _ = from.send_audio(vec![7; 80]); }
            e = to.next_event() => match e {
                Some(ClientEvent::Media(_)) => audio += 1,
                Some(e) => other.push(e),
                None => return (audio, other),
            },
        }
    }
}

fn left(events: &[ClientEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            ClientEvent::Signal(ServerMessage {
                msg: Some(server_message::Msg::ParticipantLeft(l)),
            }) => Some(l.participant_id.clone()),
            _ => None,
        })
        .collect()
}

/// The last video mute state `who` was seen to announce.
fn mute_of(events: &[ClientEvent], who: &str) -> Option<bool> {
    events.iter().rev().find_map(|e| match e {
        ClientEvent::Signal(ServerMessage {
            msg: Some(server_message::Msg::MuteChanged(m)),
        }) if m.participant_id == who => Some(m.video_muted),
        _ => None,
    })
}

/// Camera off (`video_muted`), microphone on: the audio these tests count keeps flowing.
fn mute(video: bool) -> ClientMessage {
    ClientMessage::from(client_message::Msg::Mute(MuteState {
        audio_muted: false,
        video_muted: video,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5s_signaling_cut_keeps_the_seat_and_the_media_and_the_session_resumes() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let proxy = Proxy::start(http_addr(&relay)).await;
    let mut alice = join_via(&relay, &proxy, "alice", &link).await;
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    let timeout = Duration::from_secs(10);
    alice.wait_connected(timeout).await.unwrap();
    bob.wait_connected(timeout).await.unwrap();
    assert!(
        !alice.joined().resume_token.is_empty(),
        "joined has a resume token"
    );
    let (heard, _) = talk_for(&bob, &mut alice, Duration::from_secs(1)).await;
    assert!(heard > 20, "alice hears bob before the cut: {heard}");

    // The cut: alice's signaling is gone for 5 s; her UDP media path is untouched.
    proxy.cut();
    let cut_at = Instant::now();
    // Meanwhile bob turns his camera off: alice learns it once she is back.
    bob.send_signal(mute(true)).unwrap();
    let (heard, alice_saw) = talk_for(&bob, &mut alice, Duration::from_secs(5)).await;
    assert!(
        heard > 150,
        "alice kept hearing bob during the cut: {heard} packets in 5 s"
    );
    assert!(
        alice_saw
            .iter()
            .any(|e| matches!(e, ClientEvent::SignalingLost)),
        "alice's client noticed: {alice_saw:?}"
    );
    assert_eq!(metric(&relay, "callrelay_signaling_parked ").await, 1.0);
    let (_, bob_saw) = talk_for(&alice, &mut bob, Duration::from_millis(200)).await;
    assert!(
        left(&bob_saw).is_empty(),
        "bob saw nobody leave: {bob_saw:?}"
    );

    proxy.restore();
    let restored_at = Instant::now();
    // Alice's client retries with a back-off of at most 2 s: back within 3 s of the restore.
    let mut alice_saw = Vec::new();
    let mut resumed_after = None;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while resumed_after.is_none() {
        match tokio::time::timeout_at(until, alice.next_event()).await {
            Ok(Some(ClientEvent::Media(_))) => {}
            Ok(Some(e)) => {
                if matches!(e, ClientEvent::SignalingResumed) {
                    resumed_after = Some(restored_at.elapsed());
                }
                alice_saw.push(e);
            }
            Ok(None) | Err(_) => panic!("not resumed within 3 s of the restore: {alice_saw:?}"),
        }
    }
    let (_, after) = talk_for(&bob, &mut alice, Duration::from_millis(500)).await;
    assert_eq!(
        mute_of(&after, bob.participant_id()),
        Some(true),
        "what the relay said while alice was away came after `resumed`: {after:?}"
    );
    assert_eq!(
        mute_of(&alice_saw, bob.participant_id()),
        None,
        "{alice_saw:?}"
    );
    eprintln!(
        "cut for {:?}; resumed {:?} after the restore",
        restored_at - cut_at,
        resumed_after.unwrap()
    );

    // Signaling works both ways on the new socket, and it is the same participant.
    alice.send_signal(mute(true)).unwrap();
    let (heard, bob_saw) = talk_for(&alice, &mut bob, Duration::from_secs(1)).await;
    assert_eq!(mute_of(&bob_saw, alice.participant_id()), Some(true));
    assert!(heard > 20, "bob hears alice after the resume: {heard}");
    assert!(left(&bob_saw).is_empty(), "{bob_saw:?}");
    assert_eq!(
        metric(&relay, "callrelay_signaling_resumed_total ").await,
        1.0
    );
    assert_eq!(metric(&relay, "callrelay_signaling_parked ").await, 0.0);
    assert_eq!(metric(&relay, "callrelay_participants ").await, 2.0);
    alice.leave().unwrap();
    bob.leave().unwrap();
    for c in [&mut alice, &mut bob] {
        while tokio::time::timeout(Duration::from_secs(5), c.next_event())
            .await
            .is_ok_and(|e| e.is_some())
        {}
    }
    relay.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_grace_the_others_see_the_participant_leave_and_resume_is_refused() {
    let relay = Relay::start(
        &[
            ("CALLRELAY_MEDIA_WORKERS", "1"),
            ("CALLRELAY_ROOMS_RESUME_GRACE", "1s"),
        ],
        &[],
    );
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let proxy = Proxy::start(http_addr(&relay)).await;
    let alice = join_via(&relay, &proxy, "alice", &link).await;
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    bob.wait_connected(Duration::from_secs(10)).await.unwrap();
    let token_of_alice = alice.joined().resume_token.clone();
    let alice_id = alice.participant_id().to_string();
    // Alice's client is gone for good (its signaling cut, its process dropped).
    proxy.cut();
    drop(alice);
    let cut_at = Instant::now();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut gone_after = None;
    while gone_after.is_none() {
        match tokio::time::timeout_at(until, bob.next_event()).await {
            Ok(Some(ClientEvent::Signal(ServerMessage {
                msg: Some(server_message::Msg::ParticipantLeft(l)),
            }))) if l.participant_id == alice_id => gone_after = Some(cut_at.elapsed()),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("alice never left for bob"),
        }
    }
    let gone_after = gone_after.unwrap();
    assert!(
        gone_after >= Duration::from_millis(900) && gone_after < Duration::from_secs(4),
        "alice left for bob after the 1 s grace, not before: {gone_after:?}"
    );

    // Her token no longer resumes anything, and an unknown one never did.
    for t in [token_of_alice.as_str(), "AAAAAAAAAAAAAAAAAAAAAA"] {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/signal", http_addr(&relay)))
                .await
                .unwrap();
        let resume = ClientMessage::from(client_message::Msg::Resume(Resume {
            resume_token: t.to_string(),
        }));
        ws.send(Message::Text(resume.to_json().into()))
            .await
            .unwrap();
        let mut code = None;
        let mut closed = false;
        while let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            match frame {
                Ok(Message::Text(text)) => {
                    if let Ok(ServerMessage {
                        msg: Some(server_message::Msg::Error(e)),
                    }) = ServerMessage::from_json(&text)
                    {
                        code = Some(e.code);
                    }
                }
                Ok(Message::Close(_)) | Err(_) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
            }
        }
        assert_eq!(code.as_deref(), Some("resume_failed"), "token {t}");
        assert!(closed, "the socket closes after resume_failed");
    }
    assert_eq!(
        metric(&relay, "callrelay_signaling_resumed_total ").await,
        0.0
    );
    assert_eq!(metric(&relay, "callrelay_participants ").await, 1.0);
    bob.leave().unwrap();
    while tokio::time::timeout(Duration::from_secs(5), bob.next_event())
        .await
        .is_ok_and(|e| e.is_some())
    {}
    relay.stop();
}

/// Media both ways (`a` hears `b` and `b` hears `a`, `n` audio packets each) within `within`,
/// both talking every 20 ms; returns how long it took.
async fn both_ways(a: &mut Client, b: &mut Client, n: usize, within: Duration) -> Duration {
    let start = Instant::now();
    let (mut a_heard, mut b_heard) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut seen = Vec::new();
    while a_heard < n || b_heard < n {
        assert!(
            start.elapsed() < within,
            "not both ways within {within:?}: a heard {a_heard}, b heard {b_heard}; {seen:?}"
        );
        tokio::select! {
            _ = tick.tick() => {
                let _ = a.send_audio(vec![1; 80]);
                let _ = b.send_audio(vec![2; 80]);
            }
            e = a.next_event() => match e {
                Some(ClientEvent::Media(_)) => a_heard += 1,
                Some(e) => seen.push(e),
                None => panic!("a's session ended"),
            },
            e = b.next_event() => match e {
                Some(ClientEvent::Media(_)) => b_heard += 1,
                Some(e) => seen.push(e),
                None => panic!("b's session ended"),
            },
        }
    }
    assert!(left(&seen).is_empty(), "nobody left: {seen:?}");
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_moves_to_a_new_port_restarts_ice_and_talks_again_within_2s() {
    let relay = Relay::start(&[("CALLRELAY_MEDIA_WORKERS", "1")], &[]);
    let http = reqwest::Client::new();
    let link = create_link(&http, &relay, "alice").await;
    let mut alice = Client::join(&relay.base, &token("alice", false), &link, audio_only())
        .await
        .unwrap();
    let mut bob = Client::join(&relay.base, &token("bob", false), &link, audio_only())
        .await
        .unwrap();
    let timeout = Duration::from_secs(10);
    alice.wait_connected(timeout).await.unwrap();
    bob.wait_connected(timeout).await.unwrap();
    both_ways(&mut alice, &mut bob, 10, Duration::from_secs(5)).await;
    let (alice_id, old_addr) = (alice.participant_id().to_string(), alice.local_addr());

    // Alice's network changes: her old socket is closed, she restarts ICE from a new port.
    let new_addr = alice.move_network().await.unwrap();
    assert_ne!(new_addr.port(), old_addr.port());
    let took = both_ways(&mut alice, &mut bob, 10, Duration::from_secs(2)).await;
    eprintln!("talking both ways again {took:?} after the move to {new_addr}");
    assert_eq!(alice.participant_id(), alice_id, "the same participant");
    assert_eq!(metric(&relay, "callrelay_ice_restarts_total ").await, 1.0);
    assert_eq!(metric(&relay, "callrelay_participants ").await, 2.0);
    alice.leave().unwrap();
    bob.leave().unwrap();
    for c in [&mut alice, &mut bob] {
        while tokio::time::timeout(Duration::from_secs(5), c.next_event())
            .await
            .is_ok_and(|e| e.is_some())
        {}
    }
    relay.stop();
}
