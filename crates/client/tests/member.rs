//! [`Member`] against real relays in-process on 127.0.0.1 (HTTP on free ports, one media worker
//! each on a free UDP port, one SQLite data dir shared by the relays so a link outlives a
//! relay): a member joins again by itself when its node is lost or drains, and not when the
//! operator revokes the link.
//!
//! "Node lost" is made as a `kill -9` looks from a client: the relay's HTTP and signaling go
//! through a TCP proxy (the relay's public URL), and the proxy drops every connection at once,
//! without a WebSocket close or a `removed`; then the relay itself stops (media included) and a
//! second relay starts on the same data dir.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use callrelay_client::{ClientConfig, ClientError, ClientEvent, Member, MemberEvent};
use callrelay_server::app::SystemClock;
use callrelay_server::config::Overrides;
use callrelay_server::testing::{self, InProcess};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const SECRET: &str = "member-test-secret-member-test-secret";
/// Upper bound for anything a test waits for.
const PATIENCE: Duration = Duration::from_secs(15);

/// Audio only: light for unoptimised builds, and enough to see media flow.
fn audio() -> ClientConfig {
    ClientConfig {
        video: false,
        ..ClientConfig::default()
    }
}

async fn bind() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().unwrap());
    (l, url)
}

/// A relay in dev mode (`/v1/dev/token`) with the shared secret, serving on `listener` and
/// announcing `public_url` (its own, or a proxy's) as `signal_url`.
async fn relay(listener: TcpListener, public_url: &str, dir: &Path) -> InProcess {
    let addr = listener.local_addr().unwrap();
    let env = [
        ("CALLRELAY_AUTH_SECRET", SECRET),
        ("CALLRELAY_HTTP_PUBLIC_URL", public_url),
        ("CALLRELAY_MEDIA_WORKERS", "1"),
    ];
    let overrides = Overrides {
        http_addr: Some(addr.to_string()),
        data_dir: Some(dir.to_string_lossy().into_owned()),
        ..Overrides::default()
    };
    InProcess::start(
        listener,
        testing::settings(&env, &overrides),
        prometheus::Registry::new(),
        Arc::new(SystemClock),
    )
    .await
}

async fn post(url: String, token: Option<&str>, body: serde_json::Value) -> serde_json::Value {
    let mut req = reqwest::Client::new().post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = tokio::time::timeout(PATIENCE, req.send())
        .await
        .expect("answered in time")
        .expect("request sent");
    let status = r.status();
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    assert!(status.is_success(), "{status}: {v}");
    v
}

async fn token(base: &str, user: &str, admin: bool) -> String {
    let v = post(
        format!("{base}/v1/dev/token"),
        None,
        serde_json::json!({"user": user, "admin": admin}),
    )
    .await;
    v["token"].as_str().expect("a token").to_owned()
}

async fn create_link(base: &str, token: &str) -> String {
    let v = post(
        format!("{base}/v1/links"),
        Some(token),
        serde_json::json!({"kind": "video"}),
    )
    .await;
    v["id"].as_str().expect("a link id").to_owned()
}

/// A TCP proxy to `upstream` that can drop every connection at once.
struct Proxy {
    url: String,
    accept: JoinHandle<()>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(listener: TcpListener, upstream: std::net::SocketAddr) -> Proxy {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let conns = conns.clone();
            async move {
                while let Ok((mut down, _)) = listener.accept().await {
                    let conn = tokio::spawn(async move {
                        if let Ok(mut up) = TcpStream::connect(upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                        }
                    });
                    conns.lock().unwrap().push(conn);
                }
            }
        });
        Proxy { url, accept, conns }
    }

    /// Closes the listener and every connection (both ends), as a crashed process would.
    async fn kill(self) {
        self.accept.abort();
        let _ = self.accept.await;
        let conns = std::mem::take(&mut *self.conns.lock().unwrap());
        for c in &conns {
            c.abort();
        }
        for c in conns {
            let _ = c.await;
        }
    }
}

/// Sends audio from every member (20 ms ticks) and reads every member's events until each has
/// heard each other one, or `PATIENCE` passes; returns the member events seen, per member.
async fn hear_each_other(members: &mut [&mut Member], tag: u8) -> Vec<Vec<MemberEvent>> {
    let ids: Vec<String> = members
        .iter()
        .map(|m| m.participant_id().expect("in a session").to_owned())
        .collect();
    let mut heard = vec![std::collections::BTreeSet::new(); members.len()];
    let mut seen = vec![Vec::new(); members.len()];
    let deadline = Instant::now() + PATIENCE;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while heard.iter().any(|h| h.len() < members.len() - 1) {
        assert!(
            Instant::now() < deadline,
            "media did not flow both ways: heard {heard:?} of {ids:?}"
        );
        tick.tick().await;
        for (i, m) in members.iter_mut().enumerate() {
            let _ = m.send_audio(vec![tag, i as u8, 1, 2, 3]);
            while let Some(e) = m.try_next_event() {
                if let MemberEvent::Client(ClientEvent::Media(p)) = &e {
                    if p.payload.first() == Some(&tag) {
                        if let Some(from) = &p.from {
                            assert!(ids.contains(from), "{from} is not one of {ids:?}");
                            heard[i].insert(from.clone());
                        }
                    }
                    continue;
                }
                assert!(
                    !matches!(
                        e,
                        MemberEvent::Client(ClientEvent::Closed { .. })
                            | MemberEvent::RejoinFailed { .. }
                    ),
                    "member {i} ended: {e:?}"
                );
                seen[i].push(e);
            }
        }
    }
    seen
}

/// Reads `m` until it has joined again (bounded); checks that sending meanwhile is refused
/// without a panic. Returns the `Rejoined` fields.
async fn until_rejoined(m: &mut Member) -> (String, String, String, Duration) {
    let r = tokio::time::timeout(PATIENCE, async {
        loop {
            if m.is_rejoining() {
                assert!(m.client().is_none());
                assert!(matches!(m.send_audio(vec![0]), Err(ClientError::Closed)));
            }
            match m.next_event().await {
                Some(MemberEvent::Rejoined {
                    reason,
                    via,
                    participant_id,
                    took,
                }) => {
                    eprintln!("rejoined: {reason} via {via} as {participant_id} in {took:?}");
                    return (reason, via, participant_id, took);
                }
                Some(MemberEvent::Client(ClientEvent::Closed { reason })) => {
                    panic!("ended without a rejoin: {reason:?}")
                }
                Some(e @ MemberEvent::RejoinFailed { .. }) => panic!("{e:?}"),
                Some(_) => {}
                None => panic!("ended without a rejoin"),
            }
        }
    })
    .await;
    r.expect("joined again in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_node_is_lost_joins_again_through_another() {
    let dir = tempfile::tempdir().unwrap();
    let (la, _) = bind().await;
    let upstream = la.local_addr().unwrap();
    let (lp, _) = bind().await;
    let proxy = Proxy::start(lp, upstream).await;
    // B's port is taken now (its URL goes in the list) and served only after A is gone; a
    // URL where nothing listens at all sits between them.
    let (lb, b_url) = bind().await;
    let dead_url = bind().await.1;
    let a = relay(la, &proxy.url, dir.path()).await;

    let owner = token(&a.base, "alice", false).await;
    let link = create_link(&a.base, &owner).await;
    let urls = vec![proxy.url.clone(), dead_url, b_url.clone()];
    let mut members = Vec::new();
    for user in ["alice", "bob"] {
        let t = token(&a.base, user, false).await;
        let mut m = Member::join(&urls, &t, &link, audio()).await.expect("join");
        assert_eq!(m.via(), proxy.url);
        m.wait_connected(PATIENCE).await.expect("connected");
        members.push(m);
    }
    let [m1, m2] = &mut members[..] else {
        unreachable!()
    };
    hear_each_other(&mut [&mut *m1, &mut *m2], 1).await;
    let before = [
        m1.participant_id().unwrap().to_owned(),
        m2.participant_id().unwrap().to_owned(),
    ];

    // The node goes: connections cut without a word, then HTTP and media stop for good.
    proxy.kill().await;
    a.stop(PATIENCE).await;
    let b = relay(lb, &b_url, dir.path()).await;

    for (m, old) in [(&mut *m1, &before[0]), (&mut *m2, &before[1])] {
        let (reason, via, pid, took) = until_rejoined(m).await;
        assert_eq!(reason, "node_lost");
        assert_eq!(via, b_url, "the dead URLs were skipped");
        assert_eq!(m.via(), b_url);
        assert_ne!(&pid, old, "a new session");
        assert_eq!(m.participant_id(), Some(pid.as_str()));
        assert!(took < PATIENCE, "{took:?}");
        assert_eq!(m.rejoins(), 1);
    }
    m1.wait_connected(PATIENCE)
        .await
        .expect("m1 connected again");
    m2.wait_connected(PATIENCE)
        .await
        .expect("m2 connected again");
    hear_each_other(&mut [&mut *m1, &mut *m2], 2).await;

    // Leaving is final: no rejoin after it.
    for m in [&mut *m1, &mut *m2] {
        m.leave().expect("leave");
        let end = tokio::time::timeout(PATIENCE, async {
            let mut last = None;
            while let Some(e) = m.next_event().await {
                last = Some(e);
            }
            last
        })
        .await
        .expect("ends in time");
        assert!(
            matches!(end, Some(MemberEvent::Client(ClientEvent::Closed { .. }))),
            "{end:?}"
        );
        assert_eq!(m.rejoins(), 1);
    }
    b.stop(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_a_draining_node_joins_again_through_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let (la, a_url) = bind().await;
    let (lb, b_url) = bind().await;
    let a = relay(la, &a_url, dir.path()).await;
    let b = relay(lb, &b_url, dir.path()).await;
    let owner = token(&a_url, "alice", false).await;
    let link = create_link(&a_url, &owner).await;
    let urls = vec![a_url.clone(), b_url.clone()];
    let mut members = Vec::new();
    for user in ["alice", "bob"] {
        let t = token(&a_url, user, false).await;
        let mut m = Member::join(&urls, &t, &link, audio()).await.expect("join");
        m.wait_connected(PATIENCE).await.expect("connected");
        members.push(m);
    }
    let [m1, m2] = &mut members[..] else {
        unreachable!()
    };
    hear_each_other(&mut [&mut *m1, &mut *m2], 1).await;

    // Stopping the in-process relay removes everyone with `removed{drain}`.
    let stop = tokio::spawn(a.stop(PATIENCE));
    for m in [&mut *m1, &mut *m2] {
        let (reason, via, _, _) = until_rejoined(m).await;
        assert_eq!(reason, "drain");
        assert_eq!(via, b_url);
    }
    stop.await.expect("A stopped");
    m1.wait_connected(PATIENCE)
        .await
        .expect("m1 connected again");
    m2.wait_connected(PATIENCE)
        .await
        .expect("m2 connected again");
    hear_each_other(&mut [&mut *m1, &mut *m2], 2).await;
    drop(members);
    b.stop(PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_link_ends_the_member_without_a_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let (l, url) = bind().await;
    let r = relay(l, &url, dir.path()).await;
    let owner = token(&url, "alice", false).await;
    let link = create_link(&url, &owner).await;
    let mut m = Member::join(std::slice::from_ref(&url), &owner, &link, audio())
        .await
        .expect("join");
    m.wait_connected(PATIENCE).await.expect("connected");

    let admin = token(&url, "operator", true).await;
    post(
        format!("{url}/v1/admin/links/{link}/revoke"),
        Some(&admin),
        serde_json::json!({"reason": "test"}),
    )
    .await;
    let events = tokio::time::timeout(PATIENCE, async {
        let mut v = Vec::new();
        while let Some(e) = m.next_event().await {
            v.push(e);
        }
        v
    })
    .await
    .expect("the member ends in time");
    assert!(
        !events.iter().any(|e| matches!(
            e,
            MemberEvent::Rejoined { .. } | MemberEvent::RejoinFailed { .. }
        )),
        "{events:?}"
    );
    match events.last() {
        Some(MemberEvent::Client(ClientEvent::Closed { reason })) => {
            assert_eq!(reason.as_deref(), Some("revoked"))
        }
        e => panic!("the last event is {e:?}"),
    }
    assert_eq!(m.rejoins(), 0);
    assert!(m.next_event().await.is_none());
    assert!(matches!(m.send_audio(vec![1]), Err(ClientError::Closed)));
    assert!(matches!(m.leave(), Err(ClientError::Closed)));

    // A join that retrying cannot cure fails at once, not after the rejoin deadline.
    let started = Instant::now();
    let err = Member::join(std::slice::from_ref(&url), &owner, &link, audio())
        .await
        .err()
        .expect("a revoked link refuses joins");
    assert!(
        matches!(&err, ClientError::Status { status: 410, code, .. } if code == "link_revoked"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    r.stop(PATIENCE).await;
}
