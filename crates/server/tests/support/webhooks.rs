//! A webhook endpoint for tests: keeps every event whose Standard Webhooks signature checks out
//! against [`SECRET`].

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// The signing secret the relay under test is given (`CALLRELAY_WEBHOOKS_SECRET`).
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Starts the endpoint on 127.0.0.1; returns its URL, the events kept so far and its task.
pub async fn endpoint() -> (String, Arc<Mutex<Vec<Value>>>, tokio::task::JoinHandle<()>) {
    let got = Arc::new(Mutex::new(Vec::new()));
    let keep = got.clone();
    let key = callrelay_server::webhooks::decode_secret(SECRET).unwrap();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let (keep, key) = (keep.clone(), key.clone());
            async move {
                let h = |n: &str| headers[n].to_str().unwrap().to_owned();
                let ts: i64 = h("webhook-timestamp").parse().unwrap();
                let expected = callrelay_server::webhooks::sign(&key, &h("webhook-id"), ts, &body);
                if h("webhook-signature") != expected {
                    return StatusCode::UNAUTHORIZED;
                }
                keep.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, got, task)
}

/// The events of type `t` in `events`.
pub fn of_type<'a>(events: &'a [Value], t: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == t).collect()
}
