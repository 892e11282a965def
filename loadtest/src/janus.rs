//! `--target janus`: the same synthetic participants in a Janus VideoRoom (Janus's HTTP API),
//! so one run shape can be measured on callrelay and on a peer SFU.
//!
//! Each participant is what a Janus web client is: one Janus session (its events read by HTTP
//! long-poll), a publisher handle that joins the room (and, for a publisher, publishes with
//! `configure` + our SDP offer) and a subscriber handle whose one peer connection carries every
//! other publisher's streams (`join` as subscriber, Janus offers, we `start` with our answer;
//! publishers arriving later are added with `subscribe` and a renegotiation). Media flows through
//! the same [`callrelay_client::Client`] (str0m: ICE, DTLS, SRTP over UDP) as against callrelay.
//! The control half (Janus events, subscriptions) runs in a task of its own per participant.
//! Video subscriptions ask for the substream of `--subscribe-layer` (default `l`, the layer
//! callrelay sends a subscriber that states no preference).

use std::collections::{HashSet, VecDeque};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use callrelay_client::{Client, ClientConfig, ClientError, ClientEvent, Offering, Renegotiator};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How long one Janus request or awaited event may take.
const EVENT_TIMEOUT: Duration = Duration::from_secs(10);
/// Events the long-poll asks for at once.
const MAX_EVENTS: usize = 16;
/// The VideoRoom plugin's package name.
const VIDEOROOM: &str = "janus.plugin.videoroom";

/// Janus's HTTP API at `base` (`http://127.0.0.1:8088/janus`).
#[derive(Debug, Clone)]
pub struct Janus {
    http: reqwest::Client,
    base: String,
}

impl Janus {
    /// A client for the API at `base`.
    pub fn new(base: &str) -> anyhow::Result<Janus> {
        let http = reqwest::Client::builder()
            // A long-poll waits up to 30 s for an event before Janus answers `keepalive`.
            .timeout(Duration::from_secs(45))
            .build()?;
        Ok(Janus {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// `POST` one Janus request to `path` (under the base) and returns the answer, which must be
    /// `success` or `ack`; Janus's `error` becomes an error with its code and reason.
    async fn post(&self, path: &str, mut body: Value) -> anyhow::Result<Value> {
        body["transaction"] = Value::from(transaction());
        let verb = body["janus"].as_str().unwrap_or("?").to_owned();
        let url = format!("{}{path}", self.base);
        let v: Value = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .with_context(|| format!("janus {verb}: POST {url}"))?
            .error_for_status()
            .with_context(|| format!("janus {verb}"))?
            .json()
            .await
            .with_context(|| format!("janus {verb}: answer is not JSON"))?;
        check(&verb, v)
    }

    /// `create`: a new session; returns its id.
    pub async fn create_session(&self) -> anyhow::Result<u64> {
        let v = self.post("", json!({"janus": "create"})).await?;
        id_of(&v)
    }

    /// `attach` the VideoRoom plugin to `session`; returns the handle id.
    pub async fn attach(&self, session: u64) -> anyhow::Result<u64> {
        let v = self
            .post(
                &format!("/{session}"),
                json!({"janus": "attach", "plugin": VIDEOROOM}),
            )
            .await?;
        id_of(&v)
    }

    /// A plugin `message` (with a `jsep` if given). Synchronous requests answer `success` with
    /// the plugin's data (returned); asynchronous ones answer `ack` (returned as is) and their
    /// result comes as an event.
    pub async fn message(
        &self,
        session: u64,
        handle: u64,
        body: Value,
        jsep: Option<Value>,
    ) -> anyhow::Result<Value> {
        let request = body["request"].as_str().unwrap_or("?").to_owned();
        let mut req = json!({"janus": "message", "body": body});
        if let Some(j) = jsep {
            req["jsep"] = j;
        }
        let v = self.post(&format!("/{session}/{handle}"), req).await?;
        if let Some(err) = plugin_error(&v) {
            bail!("videoroom {request}: {err}");
        }
        Ok(v)
    }

    /// One long-poll for the events of `session` (a `keepalive` when idle for 30 s).
    pub async fn poll(&self, session: u64) -> anyhow::Result<Vec<Value>> {
        let url = format!("{}/{session}?maxev={MAX_EVENTS}", self.base);
        let v: Value = self
            .http
            .get(&url)
            .send()
            .await
            .context("janus long-poll")?
            .error_for_status()
            .context("janus long-poll")?
            .json()
            .await
            .context("janus long-poll: answer is not JSON")?;
        Ok(match v {
            Value::Array(events) => events,
            other => vec![other],
        })
    }

    /// `destroy` a session: its handles hang up and leave their rooms.
    pub async fn destroy_session(&self, session: u64) -> anyhow::Result<()> {
        self.post(&format!("/{session}"), json!({"janus": "destroy"}))
            .await
            .map(|_| ())
    }

    /// Creates room `room` for up to `publishers` publishers, set up like callrelay: VP8 and
    /// Opus, no bitrate cap (no REMB), no periodic keyframe requests, no join notifications.
    pub async fn create_room(&self, room: u64, publishers: usize) -> anyhow::Result<()> {
        let (session, handle) = self.admin_handle().await?;
        let r = self
            .message(
                session,
                handle,
                json!({
                    "request": "create",
                    "room": room,
                    "description": "callrelay-loadgen",
                    "publishers": publishers.max(1),
                    "bitrate": 0,
                    "fir_freq": 0,
                    "audiocodec": "opus",
                    "videocodec": "vp8",
                    "notify_joining": false,
                }),
                None,
            )
            .await;
        let _ = self.destroy_session(session).await;
        let v = r?;
        match v["plugindata"]["data"]["videoroom"].as_str() {
            Some("created") => Ok(()),
            _ => bail!("videoroom create: unexpected answer {v}"),
        }
    }

    /// Destroys room `room` (its participants are kicked).
    pub async fn destroy_room(&self, room: u64) -> anyhow::Result<()> {
        let (session, handle) = self.admin_handle().await?;
        let r = self
            .message(
                session,
                handle,
                json!({"request": "destroy", "room": room}),
                None,
            )
            .await;
        let _ = self.destroy_session(session).await;
        r.map(|_| ())
    }

    async fn admin_handle(&self) -> anyhow::Result<(u64, u64)> {
        let session = self.create_session().await?;
        match self.attach(session).await {
            Ok(h) => Ok((session, h)),
            Err(e) => {
                let _ = self.destroy_session(session).await;
                Err(e)
            }
        }
    }
}

/// A random transaction id.
fn transaction() -> String {
    format!("t{:016x}", rand::random::<u64>())
}

/// `success` / `ack` pass; `error` becomes an error.
fn check(verb: &str, v: Value) -> anyhow::Result<Value> {
    match v["janus"].as_str() {
        Some("success") | Some("ack") => Ok(v),
        Some("error") => bail!(
            "janus {verb}: error {}: {}",
            v["error"]["code"],
            v["error"]["reason"].as_str().unwrap_or("")
        ),
        _ => bail!("janus {verb}: unexpected answer {v}"),
    }
}

/// `data.id` of a `create` / `attach` answer.
fn id_of(v: &Value) -> anyhow::Result<u64> {
    v["data"]["id"]
        .as_u64()
        .ok_or_else(|| anyhow!("janus: no id in {v}"))
}

/// The VideoRoom's own error in a plugin answer or event (`videoroom: "event"` with
/// `error_code` and `error`).
fn plugin_error(v: &Value) -> Option<String> {
    let data = &v["plugindata"]["data"];
    data.get("error_code").map(|code| {
        format!(
            "error {code}: {}",
            data["error"].as_str().unwrap_or("(no reason)")
        )
    })
}

/// Feed ids listed in a VideoRoom `publishers` array (entries `{id, display, streams…}`).
pub fn feeds_in(data: &Value) -> Vec<u64> {
    data["publishers"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["id"].as_u64()).collect())
        .unwrap_or_default()
}

/// One synthetic participant in a Janus VideoRoom.
///
/// Media is read by the participant task ([`Peer::next_event`]), which the load generator
/// cancels and restarts all the time (it selects between reading and its send timer); Janus's
/// events are handled by a task of their own, so a half-done subscription is never abandoned.
pub struct Peer {
    janus: Janus,
    session: u64,
    /// Sends, and receives nothing (Janus sends nothing on the publisher connection).
    publisher: Option<Client>,
    /// Receives every other publisher's streams.
    subscriber: Option<Client>,
    /// The subscriber connection, when the control task creates it after the join.
    new_subscriber: mpsc::Receiver<Client>,
    new_subscriber_open: bool,
    control: JoinHandle<()>,
}

/// The Janus side of one participant: its session's events, its handles and subscriptions.
struct Control {
    janus: Janus,
    session: u64,
    room: u64,
    publisher_handle: u64,
    subscriber_handle: Option<u64>,
    /// Our own feed id (never subscribed to).
    own_feed: u64,
    /// Renegotiates the subscriber connection once it exists.
    subscriber: Option<Renegotiator>,
    /// Where a new subscriber connection goes.
    new_subscriber: mpsc::Sender<Client>,
    /// The subscriber connection's local address, event queue and receive mode.
    client_config: ClientConfig,
    /// Simulcast substream subscriptions ask for: 0 is `l`, 2 is `h` (with `rid_order: lmh`).
    substream: u8,
    /// Feeds subscribed to (or asked for).
    subscribed: HashSet<u64>,
    /// Feeds announced but not yet subscribed to.
    waiting: Vec<u64>,
    /// Events from the long-poll task.
    events: mpsc::Receiver<anyhow::Result<Value>>,
    /// Events read while waiting for another one.
    backlog: VecDeque<Value>,
    poll_task: JoinHandle<()>,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.poll_task.abort();
    }
}

impl Peer {
    /// Joins `room`: session, publisher handle, `join`; a publisher also publishes with
    /// `publish`; subscribes to the feeds already there, receiving as `receive` says (its
    /// local address, event queue, [`ClientConfig::decrypt_sample`] and counts). Returns once
    /// every peer connection is connected (ICE + DTLS), with the client events read meanwhile.
    pub async fn join(
        janus: Janus,
        room: u64,
        display: String,
        publish: Option<ClientConfig>,
        receive: ClientConfig,
        substream: u8,
        within: Duration,
    ) -> anyhow::Result<(Peer, Vec<ClientEvent>)> {
        let session = janus.create_session().await?;
        let (tx, events) = mpsc::channel(1024);
        let poll_task = tokio::spawn(long_poll(janus.clone(), session, tx));
        let (new_tx, new_subscriber) = mpsc::channel(1);
        let mut control = Control {
            janus: janus.clone(),
            session,
            room,
            publisher_handle: 0,
            subscriber_handle: None,
            own_feed: 0,
            subscriber: None,
            new_subscriber: new_tx,
            client_config: receive,
            substream,
            subscribed: HashSet::new(),
            waiting: Vec::new(),
            events,
            backlog: VecDeque::new(),
            poll_task,
        };
        let mut peer = Peer {
            janus,
            session,
            publisher: None,
            subscriber: None,
            new_subscriber,
            new_subscriber_open: true,
            control: tokio::spawn(async {}),
        };
        let setup = async {
            let mut early = Vec::new();
            peer.publisher = control.join(display, publish).await?;
            if let Some(p) = peer.publisher.as_mut() {
                early.extend(p.wait_connected(EVENT_TIMEOUT).await?);
            }
            control.subscribe_waiting().await?;
            if let Ok(mut s) = peer.new_subscriber.try_recv() {
                early.extend(s.wait_connected(EVENT_TIMEOUT).await?);
                peer.subscriber = Some(s);
            }
            Ok::<_, anyhow::Error>(early)
        };
        match tokio::time::timeout(within, setup).await {
            Ok(Ok(early)) => {
                peer.control = tokio::spawn(control.run());
                Ok((peer, early))
            }
            Ok(Err(e)) => {
                let _ = peer.janus.destroy_session(session).await;
                Err(e)
            }
            Err(_) => {
                let _ = peer.janus.destroy_session(session).await;
                bail!("janus join timed out")
            }
        }
    }

    /// The next client event (media, keyframe request, connection state) from either peer
    /// connection. Cancel-safe. `None` once both connections are closed.
    pub async fn next_event(&mut self) -> Option<ClientEvent> {
        loop {
            if self.publisher.is_none() && self.subscriber.is_none() && !self.new_subscriber_open {
                return None;
            }
            tokio::select! {
                e = next_of(&mut self.publisher) => match e {
                    Some(e) => return Some(e),
                    None => self.publisher = None,
                },
                e = next_of(&mut self.subscriber) => match e {
                    Some(e) => return Some(e),
                    None => self.subscriber = None,
                },
                c = self.new_subscriber.recv(), if self.new_subscriber_open => match c {
                    Some(c) => self.subscriber = Some(c),
                    None => self.new_subscriber_open = false,
                },
            }
        }
    }

    /// A queued client event, if any, without waiting.
    pub fn try_next_event(&mut self) -> Option<ClientEvent> {
        if let Some(e) = self.publisher.as_mut().and_then(Client::try_next_event) {
            return Some(e);
        }
        self.subscriber.as_mut().and_then(Client::try_next_event)
    }

    /// Sends one audio packet on the publisher connection.
    pub fn send_audio(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        match &self.publisher {
            Some(c) => c.send_audio(payload),
            None => Err(ClientError::NoTrack("audio")),
        }
    }

    /// Sends one video packet on the publisher connection.
    pub fn send_video(&self, rid: Option<&str>, payload: Vec<u8>) -> Result<(), ClientError> {
        match &self.publisher {
            Some(c) => c.send_video(rid, payload),
            None => Err(ClientError::NoTrack("video")),
        }
    }

    /// Client events dropped for a slow reader, both connections.
    pub fn dropped_events(&self) -> u64 {
        self.publisher.as_ref().map_or(0, Client::dropped_events)
            + self.subscriber.as_ref().map_or(0, Client::dropped_events)
    }

    /// Hangs up: both connections close (DTLS close_notify) and the Janus session is destroyed.
    pub async fn leave(&mut self) {
        self.control.abort();
        for c in [&self.publisher, &self.subscriber].into_iter().flatten() {
            let _ = c.leave();
        }
        let _ = self.janus.destroy_session(self.session).await;
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.control.abort();
    }
}

impl Control {
    /// Publisher handle, `join`, and for a publisher `configure` with our offer; returns the
    /// publisher connection (not yet connected).
    async fn join(
        &mut self,
        display: String,
        publish: Option<ClientConfig>,
    ) -> anyhow::Result<Option<Client>> {
        self.publisher_handle = self.janus.attach(self.session).await?;
        let handle = self.publisher_handle;
        self.janus
            .message(
                self.session,
                handle,
                json!({"request": "join", "ptype": "publisher", "room": self.room, "display": display}),
                None,
            )
            .await?;
        let joined = self
            .wait_event(handle, |d, _| d["videoroom"] == "joined")
            .await?;
        let data = &joined["plugindata"]["data"];
        self.own_feed = data["id"]
            .as_u64()
            .ok_or_else(|| anyhow!("videoroom joined without an id: {data}"))?;
        self.waiting.extend(feeds_in(data));
        let Some(config) = publish else {
            return Ok(None);
        };
        let (offering, offer): (Offering, String) = Client::offer(config).await?;
        self.janus
            .message(
                self.session,
                handle,
                json!({"request": "configure", "audio": true, "video": true}),
                // str0m lists the rids l, m, h: lowest first (Janus assumes the opposite
                // unless told).
                Some(json!({"type": "offer", "sdp": offer, "rid_order": "lmh"})),
            )
            .await?;
        let ev = self
            .wait_event(handle, |d, e| {
                d["configured"] == "ok" && e.get("jsep").is_some()
            })
            .await?;
        let answer = ev["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("configure answered without an SDP"))?;
        Ok(Some(offering.accept_answer(answer)?))
    }

    /// Handles the session's events until it ends: new publishers are subscribed to; an offer
    /// Janus sends on its own (a feed left, or a deferred renegotiation) is answered.
    async fn run(mut self) {
        loop {
            let ev = match self.backlog.pop_front() {
                Some(ev) => ev,
                None => match self.events.recv().await {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => {
                        report_failure(&e);
                        return;
                    }
                    None => return,
                },
            };
            if let Err(e) = self.handle_event(ev).await {
                report_failure(&e);
            }
        }
    }

    async fn handle_event(&mut self, ev: Value) -> anyhow::Result<()> {
        if ev["janus"] != "event" {
            return Ok(());
        }
        let sender = ev["sender"].as_u64();
        if sender == Some(self.publisher_handle) {
            let feeds = feeds_in(&ev["plugindata"]["data"]);
            if !feeds.is_empty() {
                self.waiting.extend(feeds);
                self.subscribe_waiting().await?;
            }
        } else if let (Some(h), Some(_)) = (self.subscriber_handle, ev.get("jsep")) {
            if sender == Some(h) && ev["plugindata"]["data"]["videoroom"] == "updated" {
                self.answer_offer(h, &ev).await?;
            }
        }
        Ok(())
    }

    /// Subscribes to the feeds announced and not yet subscribed to: the first time with a
    /// subscriber `join`, later with `subscribe`; either way Janus offers and we `start` with
    /// our answer. Each feed is asked for at the low simulcast substream.
    async fn subscribe_waiting(&mut self) -> anyhow::Result<()> {
        let own = self.own_feed;
        let mut feeds: Vec<u64> = std::mem::take(&mut self.waiting);
        feeds.retain(|f| *f != own && !self.subscribed.contains(f));
        feeds.sort_unstable();
        feeds.dedup();
        if feeds.is_empty() {
            return Ok(());
        }
        let streams: Vec<Value> = feeds
            .iter()
            .map(|f| json!({"feed": f, "substream": self.substream}))
            .collect();
        self.subscribed.extend(feeds.iter().copied());
        let (handle, request, reply) = match self.subscriber_handle {
            None => {
                let handle = self.janus.attach(self.session).await?;
                self.subscriber_handle = Some(handle);
                let join = json!({"request": "join", "ptype": "subscriber", "room": self.room, "streams": streams});
                (handle, join, "attached")
            }
            Some(handle) => (
                handle,
                json!({"request": "subscribe", "streams": streams}),
                "updated",
            ),
        };
        self.janus
            .message(self.session, handle, request, None)
            .await?;
        let ev = self
            .wait_event(handle, |d, e| {
                d["videoroom"] == reply && e.get("jsep").is_some()
            })
            .await?;
        self.answer_offer(handle, &ev).await
    }

    /// Answers a subscription offer from Janus (the first one, or a renegotiation) with
    /// `start`.
    async fn answer_offer(&mut self, handle: u64, offer_event: &Value) -> anyhow::Result<()> {
        let offer = offer_event["jsep"]["sdp"]
            .as_str()
            .ok_or_else(|| anyhow!("subscription offer without an SDP"))?
            .to_owned();
        let answer = match self.subscriber.as_ref() {
            None => {
                let (client, answer) = Client::answer(&offer, self.client_config.clone()).await?;
                self.subscriber = Some(client.renegotiator());
                self.new_subscriber
                    .send(client)
                    .await
                    .map_err(|_| anyhow!("participant gone"))?;
                answer
            }
            Some(r) => r.apply_offer(offer).await?,
        };
        self.janus
            .message(
                self.session,
                handle,
                json!({"request": "start"}),
                Some(json!({"type": "answer", "sdp": answer})),
            )
            .await?;
        self.wait_event(handle, |d, _| d["started"] == "ok").await?;
        Ok(())
    }

    /// Waits for an event from `handle` whose plugin data (and whole event) satisfy `pred`;
    /// other events are kept for later. A VideoRoom error event from `handle` fails the wait.
    async fn wait_event(
        &mut self,
        handle: u64,
        pred: impl Fn(&Value, &Value) -> bool,
    ) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + EVENT_TIMEOUT;
        loop {
            let ev = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(Ok(ev))) => ev,
                Ok(Some(Err(e))) => return Err(e),
                Ok(None) => bail!("janus session ended"),
                Err(_) => bail!("no answer from janus in {EVENT_TIMEOUT:?}"),
            };
            if ev["sender"].as_u64() == Some(handle) {
                if let Some(err) = plugin_error(&ev) {
                    bail!("videoroom: {err}");
                }
                if pred(&ev["plugindata"]["data"], &ev) {
                    return Ok(ev);
                }
            }
            self.backlog.push_back(ev);
        }
    }
}

/// A failure while handling a Janus event mid-run: reported, the run goes on (what was not
/// subscribed to shows up as missing streams in the report).
fn report_failure(e: &anyhow::Error) {
    eprintln!("callrelay-loadgen: janus: {e:#}");
}

async fn next_of(c: &mut Option<Client>) -> Option<ClientEvent> {
    match c.as_mut() {
        Some(c) => c.next_event().await,
        None => std::future::pending().await,
    }
}

/// Reads `session`'s events until the session or the receiver goes.
async fn long_poll(janus: Janus, session: u64, tx: mpsc::Sender<anyhow::Result<Value>>) {
    loop {
        match janus.poll(session).await {
            Ok(events) => {
                for ev in events {
                    if ev["janus"] == "keepalive" {
                        continue;
                    }
                    let gone = ev["janus"] == "error";
                    if tx.send(Ok(ev)).await.is_err() || gone {
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_are_read_from_videoroom_events() {
        let joined = json!({"videoroom": "joined", "id": 7, "publishers": [
            {"id": 11, "display": "a", "streams": []},
            {"id": 18446744073709551615u64, "display": "b"}
        ]});
        assert_eq!(feeds_in(&joined), vec![11, u64::MAX]);
        assert!(feeds_in(&json!({"videoroom": "event"})).is_empty());
    }

    #[test]
    fn janus_errors_carry_code_and_reason() {
        let e = check(
            "attach",
            json!({"janus": "error", "error": {"code": 458, "reason": "No such session"}}),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "janus attach: error 458: No such session");
        assert!(check("create", json!({"janus": "success", "data": {"id": 1}})).is_ok());
        let v = json!({"plugindata": {"data": {"videoroom": "event", "error_code": 426, "error": "No such room"}}});
        assert_eq!(plugin_error(&v).unwrap(), "error 426: No such room");
        assert_eq!(
            id_of(&json!({"data": {"id": 2714305302151129u64}})).unwrap(),
            2_714_305_302_151_129
        );
    }
}
