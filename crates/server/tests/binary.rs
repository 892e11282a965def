//! The `callrelay` binary as an operator runs it: configuration errors, the token command, and
//! link expiry end to end in real time with `CALLRELAY_LINKS_TTL=3s`.

use std::process::Command;
use std::time::{Duration, Instant};

#[path = "support/relay.rs"]
mod support;
use support::{free_port, send, token, Relay, BIN, SECRET};

/// `serve --help` says what each flag does and its default, beside its config key (it
/// listed the key alone).
#[test]
fn serve_help_explains_every_flag_with_its_default() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .expect("run callrelay serve --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, key, default) in [
        ("--http-addr", "http.addr", "default 127.0.0.1:7700"),
        (
            "--public-url",
            "http.public_url",
            "default http://{http.addr}",
        ),
        ("--data-dir", "store.data_dir", "default ./callrelay-data"),
        ("--database-url", "store.database_url", "default: none"),
    ] {
        // The flag's own entry: from its line to the next flag's.
        let at = help
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {help}"));
        let rest = &help[at + flag.len()..];
        let end = ["\n  -", "\n      --"]
            .iter()
            .filter_map(|next| rest.find(next))
            .min()
            .unwrap_or(rest.len());
        let entry = &rest[..end];
        let entry = entry.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(entry.contains(key), "{flag}: {entry}");
        assert!(entry.contains(default), "{flag}: {entry}");
        assert!(
            entry.split(key).next().is_some_and(|s| s.len() > 40),
            "{flag} has a sentence before its key: {entry}"
        );
    }
}

#[test]
fn invalid_configuration_exits_64_naming_the_key_before_binding() {
    let port = free_port();
    for (env, key) in [
        (("CALLRELAY_LINKS_TTL", "soon"), "links.ttl"),
        (
            ("CALLRELAY_ROOMS_MAX_PARTICIPANTS", "lots"),
            "rooms.max_participants",
        ),
        (
            ("CALLRELAY_STORE_DATABASE_URL", "mysql://x"),
            "store.database_url",
        ),
        (("CALLRELAY_LOG_FORMAT", "xml"), "log.format"),
    ] {
        let out = Command::new(BIN)
            .args(["serve", "--http-addr", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("CALLRELAY_AUTH_SECRET", SECRET)
            .env(env.0, env.1)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{env:?}: {err}");
        // Nothing was bound.
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }
    // No secret outside dev mode.
    let out = Command::new(BIN)
        .args(["serve"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth.secret"));
    // A missing config file.
    let out = Command::new(BIN)
        .args(["serve", "--dev", "--config", "/nonexistent/callrelay.toml"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_end_to_end_with_a_3s_ttl() {
    let relay = Relay::start(&[("CALLRELAY_LINKS_TTL", "3s")], &[]);
    let http = reqwest::Client::new();
    let alice = token("alice", false);
    let created = Instant::now();
    let (st, a) = send(
        http.post(format!("{}/v1/links", relay.base))
            .bearer_auth(&alice)
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, b) = send(
        http.post(format!("{}/v1/links", relay.base))
            .bearer_auth(&alice)
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(st, 201);
    let (a, b) = (
        a["id"].as_str().unwrap().to_owned(),
        b["id"].as_str().unwrap().to_owned(),
    );
    let at = |s: f64| created + Duration::from_secs_f64(s);
    let sleep_until = |t: Instant| tokio::time::sleep(t.saturating_duration_since(Instant::now()));

    // A join at 2 s keeps `a` alive until 5 s.
    sleep_until(at(2.0)).await;
    let (st, j) = send(
        http.post(format!("{}/v1/links/{a}/join", relay.base))
            .bearer_auth(token("bob", false)),
    )
    .await;
    assert_eq!(st, 200, "{j}");
    assert!(Instant::now() < at(2.9), "the join ran in time");
    // `b`, unused for 3 s, has expired.
    sleep_until(at(3.4)).await;
    let (st, p) = send(http.get(format!("{}/v1/links/{b}", relay.base))).await;
    assert_eq!((st, p["code"].as_str()), (410, Some("link_expired")));
    // `a` still answers at 4 s…
    sleep_until(at(4.0)).await;
    let (st, _) = send(http.get(format!("{}/v1/links/{a}", relay.base))).await;
    assert_eq!(st, 200);
    assert!(Instant::now() < at(4.9), "the preview ran in time");
    // …and has expired after 5 s.
    sleep_until(at(5.6)).await;
    let (st, p) = send(http.get(format!("{}/v1/links/{a}", relay.base))).await;
    assert_eq!((st, p["code"].as_str()), (410, Some("link_expired")));

    // An operator token from the CLI works; the log never carries a link id or a token.
    let (st, _) = send(
        http.post(format!("{}/v1/admin/links/{a}/revoke", relay.base))
            .bearer_auth(token("ops", true)),
    )
    .await;
    assert_eq!(st, 200);
    let log = relay.stop();
    assert!(log.contains("link created"), "{log}");
    for secret in [&a, &b, &alice] {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the log:\n{log}"
        );
    }
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_tokens_exist_only_in_dev_mode() {
    let http = reqwest::Client::new();
    let relay = Relay::start(&[], &[]);
    let (st, p) = send(
        http.post(format!("{}/v1/dev/token", relay.base))
            .json(&serde_json::json!({"user": "alice"})),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (404, Some("not_found")));
    relay.stop();

    let relay = Relay::start(&[("CALLRELAY_AUTH_SECRET", "")], &["--dev"]);
    let (st, t) = send(
        http.post(format!("{}/v1/dev/token", relay.base))
            .json(&serde_json::json!({"user": "alice", "name": "Alice"})),
    )
    .await;
    assert_eq!(st, 200);
    let tok = t["token"].as_str().unwrap();
    let (st, _) = send(
        http.post(format!("{}/v1/links", relay.base))
            .bearer_auth(tok)
            .json(&serde_json::json!({})),
    )
    .await;
    assert_eq!(st, 201);
    let (st, p) = send(
        http.post(format!("{}/v1/dev/token", relay.base))
            .json(&serde_json::json!({"user": "bad user"})),
    )
    .await;
    assert_eq!((st, p["code"].as_str()), (400, Some("invalid_user_id")));
    relay.stop();
}

#[test]
fn the_checked_in_openapi_document_is_current() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "proto/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p callrelay-server --test binary` and commit it"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/links",
        "/v1/links/{id}",
        "/v1/links/{id}/join",
        "/v1/me/links",
        "/v1/me/blocks/{user_id}",
        "/v1/admin/links/{id}/revoke",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
}
