//! The operator's and the link creator's command line, run as a person would: `callrelay link
//! create` against a running relay, then `callrelay admin rooms | participants | remove |
//! revoke` on the call that link starts.

use std::process::{Command, Output};
use std::time::Duration;

use callrelay_client::{Client, ClientEvent};

#[path = "support/relay.rs"]
mod support;
use support::{audio_only, send, token, Relay, BIN, SECRET};

/// Runs `callrelay ARGS` with the relay's secret (or `env` instead).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_clear();
    if env.is_empty() {
        cmd.env("CALLRELAY_AUTH_SECRET", SECRET);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run callrelay")
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8")
}

async fn join(relay: &Relay, user: &str, link: &str) -> Client {
    let mut c = Client::join(&relay.base, &token(user, false), link, audio_only())
        .await
        .unwrap_or_else(|e| panic!("{user} joins: {e}"));
    c.wait_connected(Duration::from_secs(10))
        .await
        .expect("connected");
    c
}

async fn removed(c: &mut Client) -> Option<String> {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(until, c.next_event()).await {
            Ok(Some(ClientEvent::Closed { reason })) => return reason,
            Ok(Some(_)) => {}
            Ok(None) => return None,
            Err(_) => panic!("not removed within 5 s"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_create_then_admin_rooms_participants_remove_and_revoke() {
    let relay = Relay::start(&[], &[]);
    let http = reqwest::Client::new();

    // A share URL with a fresh key in its fragment; the relay has the link, titled.
    let out = stdout(&run(
        &[
            "link",
            "create",
            "--user",
            "alice",
            "--title",
            "Standup",
            "--url",
            &relay.base,
        ],
        &[],
    ));
    let share = out.trim();
    let rest = share
        .strip_prefix(&format!("{}/video/", relay.base))
        .unwrap_or_else(|| panic!("a video link URL: {share}"));
    let (link, key) = rest.split_once("#k=").expect("a key in the fragment");
    assert_eq!((link.len(), key.len()), (22, 22), "{share}");
    let (st, preview) = send(http.get(format!("{}/v1/links/{link}", relay.base))).await;
    assert_eq!(
        (st, preview["title"].as_str()),
        (200, Some("Standup")),
        "{preview}"
    );
    let again = stdout(&run(
        &["link", "create", "--user", "alice", "--url", &relay.base],
        &[],
    ));
    assert_ne!(
        again.split_once("#k=").unwrap().1.trim(),
        key,
        "a new key per link"
    );
    // A voice link, with the creator's own token from the environment.
    let alice = token("alice", false);
    let voice = stdout(&run(
        &["link", "create", "--voice", "--url", &relay.base],
        &[("CALLRELAY_TOKEN", &alice)],
    ));
    assert!(
        voice.starts_with(&format!("{}/voice/", relay.base)),
        "{voice}"
    );
    // Neither a token nor a user: told what to do.
    let o = run(&["link", "create", "--url", &relay.base], &[]);
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CALLRELAY_TOKEN"));

    // No call yet.
    let t = stdout(&run(&["admin", "rooms", "--url", &relay.base], &[]));
    assert_eq!(t.lines().nth(1), Some("no live calls"), "{t}");

    let a = join(&relay, "alice", link).await;
    let mut b = join(&relay, "bob", link).await;
    let t = stdout(&run(&["admin", "rooms", "--url", &relay.base], &[]));
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 2, "{t}");
    assert!(lines[0].starts_with("ROOM "), "{t}");
    assert!(!t.contains(link), "the table never shows the link id: {t}");
    let digest = lines[1].split_whitespace().next().unwrap().to_owned();
    assert_eq!(digest.len(), 8, "{t}");
    assert!(
        lines[1].contains(" 2 ") && lines[1].ends_with("alice"),
        "{t}"
    );

    let t = stdout(&run(
        &["admin", "participants", &digest, "--url", &relay.base],
        &[],
    ));
    assert!(
        t.contains(a.participant_id()) && t.contains(b.participant_id()),
        "{t}"
    );
    let json = stdout(&run(
        &[
            "admin",
            "participants",
            link,
            "--json",
            "--url",
            &relay.base,
        ],
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&json).expect("--json prints JSON");
    assert_eq!(v["participants"][1]["user_id"], "bob", "{v}");

    // An operator token is needed: a user's is refused, and the command says why.
    let o = run(
        &["admin", "rooms", "--url", &relay.base],
        &[("CALLRELAY_ADMIN_TOKEN", &alice)],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("403") && err.contains("forbidden"), "{err}");

    // Remove bob: he is told, alice stays; removing him again says he is not there.
    let bob_id = b.participant_id().to_owned();
    let t = stdout(&run(
        &[
            "admin",
            "remove",
            &digest,
            &bob_id,
            "--reason",
            "spam",
            "--url",
            &relay.base,
        ],
        &[],
    ));
    assert!(
        t.starts_with(&format!("removed {bob_id} from room {digest}")),
        "{t}"
    );
    assert_eq!(removed(&mut b).await.as_deref(), Some("kicked"));
    let o = run(
        &["admin", "remove", &digest, &bob_id, "--url", &relay.base],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("participant_not_found"));

    // Revoke: alice is removed, and the link refuses joins.
    let mut a = a;
    let t = stdout(&run(
        &[
            "admin",
            "revoke",
            link,
            "--reason",
            "abuse",
            "--url",
            &relay.base,
        ],
        &[],
    ));
    assert!(t.starts_with(&format!("revoked link:{digest}")), "{t}");
    assert_eq!(removed(&mut a).await.as_deref(), Some("revoked"));
    let (st, p) = send(
        http.post(format!("{}/v1/links/{link}/join", relay.base))
            .bearer_auth(token("carol", false)),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (410, Some("link_revoked")));
    drop(relay);
}

/// `callrelay cluster init` writes certificates two nodes' trunks accept from each other; run
/// again it adds a node without touching the others; a name that cannot be a certificate's is
/// refused with a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_init_writes_certificates_the_trunk_accepts() {
    use callrelay_trunk::{Counters, Trunk, TrunkIdentity};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();
    let out = stdout(&run(&["cluster", "init", "--out", d, "eu-1", "us-1"], &[]));
    assert!(out.contains("created the cluster CA"), "{out}");
    assert!(
        out.contains("issued eu-1") && out.contains("issued us-1"),
        "{out}"
    );
    let ca_before = std::fs::read(dir.join("ca.pem")).unwrap();

    let out = stdout(&run(&["cluster", "init", "--out", d, "us-1", "ap-1"], &[]));
    assert!(out.contains("reused the cluster CA"), "{out}");
    assert!(
        out.contains("issued ap-1") && out.contains("kept us-1"),
        "{out}"
    );
    assert_eq!(std::fs::read(dir.join("ca.pem")).unwrap(), ca_before);

    // The node added later and a first one trust each other over a real trunk.
    let bind = |node: &str| {
        let id = TrunkIdentity::from_dir(&dir, node).expect("identity");
        Trunk::bind(
            "127.0.0.1:0".parse().unwrap(),
            &id,
            Arc::new(Counters::default()),
        )
        .expect("bind")
    };
    let (eu, _eu_rx) = bind("eu-1");
    let (ap, _ap_rx) = bind("ap-1");
    let peer = ap
        .connect("eu-1", eu.local_addr().unwrap())
        .await
        .expect("ap-1 dials eu-1");
    assert_eq!(peer.node(), "eu-1");
    eu.shutdown().await;
    ap.shutdown().await;

    let bad = run(&["cluster", "init", "--out", d, "relay:7700"], &[]);
    assert_eq!(bad.status.code(), Some(64));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("\"relay:7700\" cannot name a trunk certificate"),
        "{err}"
    );
}
