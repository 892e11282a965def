//! [`Member`]: a participant that stays in its call when the call changes node.
//!
//! A cluster of relays answers a join on any node and points `signal_url` at the call's home.
//! When the home goes away the client joins again by itself, through any node:
//!
//! - `removed{moved}` (the call moved to another node) and `removed{drain}` (the node is
//!   shutting down) end the session politely;
//! - a session that ends with no `removed` at all (the signaling WebSocket or the media session
//!   died: the node crashed, was killed, or its network went) is `node_lost`.
//!
//! Every other end (`left`, `revoked`, `blocked`, `kicked`, `room_full`, `idle`, `error`,
//! `expired`, a reason this client does not know, and anything after [`Member::leave`]) is final.
//!
//! A join — the first one and every rejoin — goes through the relay URLs round robin with a
//! short backoff ([`RejoinPolicy`]): while a dead node's lease has not expired a join may still
//! point at it (connection refused) or be refused for a while (`503 store_unavailable`,
//! `no_node_available`, `node_draining`), so such failures are retried until the policy's
//! deadline; a refusal that retrying cannot change (`401`, `403`, `404`, a revoked or expired
//! link) ends at once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), callrelay_client::ClientError> {
//! use callrelay_client::{ClientConfig, ClientEvent, Member, MemberEvent};
//! let urls = ["http://10.0.0.1:7700".to_owned(), "http://10.0.0.2:7700".to_owned()];
//! let mut m = Member::join(&urls, "<user token>", "<link id>", ClientConfig::default()).await?;
//! while let Some(ev) = m.next_event().await {
//!     match ev {
//!         MemberEvent::Client(ClientEvent::Media(p)) => println!("{} bytes", p.payload.len()),
//!         MemberEvent::Rejoined { reason, via, took, .. } => {
//!             println!("{reason}: joined again through {via} in {took:?}")
//!         }
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::task::JoinHandle;

use crate::{Client, ClientConfig, ClientError, ClientEvent};

/// Why a session that ended with `Closed{reason}` calls for joining again: `Some("moved")`,
/// `Some("drain")`, or `Some("node_lost")` when the relay said nothing (`reason` is `None`);
/// `None` for every other reason (the end is final).
pub fn rejoin_reason(closed: Option<&str>) -> Option<&'static str> {
    match closed {
        None => Some("node_lost"),
        Some("moved") => Some("moved"),
        Some("drain") => Some("drain"),
        Some(_) => None,
    }
}

/// How a [`Member`] retries a join: attempt `k` (0-based) of a join goes through URL
/// `(first + k) % n` after a wait of 0 for `k = 0`, then `first_backoff` doubling up to
/// `max_backoff`; no attempt starts after `deadline` from the first, and each attempt (HTTP
/// join, WebSocket, `joined`) is cut after `attempt_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejoinPolicy {
    /// Wait before the second attempt (100 ms).
    pub first_backoff: Duration,
    /// Longest wait between attempts (500 ms): a rejoin after a node was lost waits for that
    /// node's lease to run out, and a shorter retry is back sooner after it.
    pub max_backoff: Duration,
    /// Give up when the next attempt would start this long after the first (30 s).
    pub deadline: Duration,
    /// Longest one attempt may take (10 s; a node that takes the connection and never answers
    /// must not hold the member).
    pub attempt_timeout: Duration,
}

impl Default for RejoinPolicy {
    fn default() -> Self {
        RejoinPolicy {
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
        }
    }
}

impl RejoinPolicy {
    /// Attempt `attempt` (0-based) of a join that starts at URL index `first` of `n`, `elapsed`
    /// after the first attempt started: the URL index to use and how long to wait before, or
    /// `None` when that attempt would start at or past the deadline. The first attempt is
    /// always made.
    pub fn attempt(
        &self,
        attempt: u32,
        first: usize,
        n: usize,
        elapsed: Duration,
    ) -> Option<(usize, Duration)> {
        let n = n.max(1);
        let index = (first % n + attempt as usize % n) % n;
        if attempt == 0 {
            return Some((index, Duration::ZERO));
        }
        let wait = self
            .first_backoff
            .saturating_mul(1u32 << (attempt - 1).min(20))
            .min(self.max_backoff);
        (elapsed.saturating_add(wait) < self.deadline).then_some((index, wait))
    }

    /// The time limit of an attempt starting `elapsed` after the first: `attempt_timeout`, cut
    /// to what is left before the deadline (the first attempt always gets `attempt_timeout`).
    fn limit(&self, attempt: u32, elapsed: Duration) -> Duration {
        if attempt == 0 {
            return self.attempt_timeout;
        }
        self.attempt_timeout
            .min(self.deadline.saturating_sub(elapsed))
            .max(Duration::from_millis(100))
    }
}

/// Whether a join that failed with `e` may work when tried again, through this node or
/// another: the node was unreachable, slow, busy or not ready (5xx, 429, a WebSocket that
/// cannot be opened, a timeout), or its grant went stale. On a rejoin `room_full` too: our own
/// seat from the lost session may still be held until the relay notices.
fn retryable(e: &ClientError, rejoin: bool) -> bool {
    match e {
        ClientError::Http(_) | ClientError::WebSocket(_) | ClientError::Timeout(_) => true,
        ClientError::Status { status, code, .. } => {
            *status >= 500 || *status == 429 || *status == 408 || (rejoin && code == "room_full")
        }
        ClientError::Refused { code, .. } => {
            matches!(
                code.as_str(),
                "grant_expired" | "invalid_grant" | "internal" | "rate_limited"
            ) || (rejoin && code == "room_full")
        }
        ClientError::Sdp(_)
        | ClientError::Io(_)
        | ClientError::Closed
        | ClientError::NoTrack(_) => false,
    }
}

/// What a [`Member`] reports: the current session's events, and its own.
#[derive(Debug, Clone)]
pub enum MemberEvent {
    /// An event of the current session, as [`Client::next_event`] gives it, except a
    /// `Closed` that leads to a rejoin (the `Signal` carrying `removed{moved | drain}` is
    /// passed on). A `Closed` passed on is final: [`Member::next_event`] returns `None` after.
    Client(ClientEvent),
    /// The member joined the call again after its session ended; the new session's events
    /// follow (its `Connected` first, once ICE and DTLS are up).
    Rejoined {
        /// `moved`, `drain` or `node_lost` ([`rejoin_reason`]).
        reason: String,
        /// The base URL the successful join went through.
        via: String,
        /// The new participant id.
        participant_id: String,
        /// From noticing the end of the old session to the new session's `joined` (media
        /// connects after).
        took: Duration,
    },
    /// Joining again did not work before the [`RejoinPolicy`] deadline, or was refused for
    /// good: the last event.
    RejoinFailed {
        /// `moved`, `drain` or `node_lost`.
        reason: String,
        /// The last join error.
        error: String,
        /// Join attempts made.
        attempts: u32,
    },
}

/// What a join needs, shared with the background rejoin task.
struct Target {
    urls: Vec<String>,
    token: String,
    link_id: String,
    config: ClientConfig,
    policy: RejoinPolicy,
}

/// A join's client, the URL index it went through and the attempts made; or the last error.
type Joined = Result<(Client, usize, u32), (ClientError, u32)>;

/// Joins through `t.urls` from index `first` on, as `t.policy` says.
async fn join_cycle(t: &Target, first: usize, rejoin: bool) -> Joined {
    let started = Instant::now();
    let mut attempt = 0u32;
    let mut last = ClientError::Timeout("join: no attempt made");
    while let Some((i, wait)) = t
        .policy
        .attempt(attempt, first, t.urls.len(), started.elapsed())
    {
        tokio::time::sleep(wait).await;
        let limit = t.policy.limit(attempt, started.elapsed());
        let url = &t.urls[i];
        let r = tokio::time::timeout(
            limit,
            Client::join(url, &t.token, &t.link_id, t.config.clone()),
        )
        .await;
        attempt += 1;
        match r {
            Ok(Ok(c)) => return Ok((c, i, attempt)),
            Ok(Err(e)) if retryable(&e, rejoin) => {
                tracing::debug!(url = %url, error = %e, attempt, "join failed, will retry");
                last = e;
            }
            Ok(Err(e)) => return Err((e, attempt)),
            Err(_) => {
                tracing::debug!(url = %url, attempt, "join attempt timed out, will retry");
                last = ClientError::Timeout("join attempt");
            }
        }
    }
    Err((last, attempt))
}

enum State {
    /// A session is running (or has just ended and its last events are still queued).
    Live(Client),
    /// The session ended for `reason` at `since`; the task joins again.
    Rejoining {
        reason: &'static str,
        since: Instant,
        task: JoinHandle<Joined>,
    },
    /// Over; the event still to give, if any.
    Ended(Option<MemberEvent>),
}

/// A participant that joins again by itself, through the next relay URL, when its session ends
/// with `removed{moved}`, `removed{drain}` or without any `removed` (the node was lost:
/// [`rejoin_reason`]), retrying as its [`RejoinPolicy`] says; every other end is final. Dropping
/// it ends the session abruptly, as dropping a [`Client`] does; [`Member::leave`] hangs up
/// politely.
///
/// While a rejoin is in progress there is no [`Client`]: [`Member::client`] is `None` and the
/// send methods return [`ClientError::Closed`] (what is sent then is lost, as it would be on a
/// phone changing networks). Every method is cancel-safe: the rejoin runs in a task of its own,
/// so dropping a [`Member::next_event`] future (e.g. in `select!`) loses nothing.
pub struct Member {
    target: Arc<Target>,
    state: State,
    /// Index of the URL the current (or last) session joined through.
    via: usize,
    rejoins: u64,
    leaving: bool,
    /// Events dropped by the sessions before the current one.
    dropped_before: u64,
}

impl Member {
    /// Joins the call of `link_id` through the first of `urls` that works, trying them in order
    /// from `urls[0]` with the default [`RejoinPolicy`] (see [`Member::join_from`]).
    pub async fn join(
        urls: &[String],
        token: &str,
        link_id: &str,
        config: ClientConfig,
    ) -> Result<Member, ClientError> {
        Member::join_from(urls, 0, token, link_id, config, RejoinPolicy::default()).await
    }

    /// Joins the call of `link_id` as the user of `token`, trying `urls` round robin from
    /// `urls[start % urls.len()]` (spread members over nodes with distinct `start`s) and
    /// retrying as `policy` says while the failures are ones retrying can cure. Returns once
    /// the relay answered `joined` (as [`Client::join`]); the error is the last attempt's. A
    /// rejoin starts at the URL after the one the ended session went through.
    pub async fn join_from(
        urls: &[String],
        start: usize,
        token: &str,
        link_id: &str,
        config: ClientConfig,
        policy: RejoinPolicy,
    ) -> Result<Member, ClientError> {
        if urls.is_empty() {
            return Err(ClientError::Http("no relay URL to join through".into()));
        }
        let target = Arc::new(Target {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_owned())
                .collect(),
            token: token.to_owned(),
            link_id: link_id.to_owned(),
            config,
            policy,
        });
        let (client, via, _) = join_cycle(&target, start % urls.len(), false)
            .await
            .map_err(|(e, _)| e)?;
        Ok(Member {
            target,
            state: State::Live(client),
            via,
            rejoins: 0,
            leaving: false,
            dropped_before: 0,
        })
    }

    /// The next event; `None` once the member's call is over and every event was read. A
    /// rejoinable end of the session is not passed on: the member joins again (this call waits
    /// for it) and yields [`MemberEvent::Rejoined`] or [`MemberEvent::RejoinFailed`].
    pub async fn next_event(&mut self) -> Option<MemberEvent> {
        loop {
            match &mut self.state {
                State::Live(c) => {
                    let e = c.next_event().await;
                    if let Some(ev) = self.on_client_event(e) {
                        return Some(ev);
                    }
                }
                State::Rejoining { task, .. } => {
                    let r = task.await;
                    return Some(self.on_rejoin_done(r));
                }
                State::Ended(ev) => return ev.take(),
            }
        }
    }

    /// The next event if one is ready (a queued session event, or the outcome of a finished
    /// rejoin); never waits.
    pub fn try_next_event(&mut self) -> Option<MemberEvent> {
        loop {
            match &mut self.state {
                State::Live(c) => {
                    let e = c.try_next_event()?;
                    if let Some(ev) = self.on_client_event(Some(e)) {
                        return Some(ev);
                    }
                }
                State::Rejoining { task, .. } => {
                    if !task.is_finished() {
                        return None;
                    }
                    let r = task.now_or_never()?;
                    return Some(self.on_rejoin_done(r));
                }
                State::Ended(ev) => return ev.take(),
            }
        }
    }

    /// Waits until the current session's ICE and DTLS are up (through rejoins, if any happen
    /// meanwhile), keeping the events read meanwhile out of the queue (returned, in order).
    /// [`ClientError::Closed`] if the call ended first.
    pub async fn wait_connected(
        &mut self,
        within: Duration,
    ) -> Result<Vec<MemberEvent>, ClientError> {
        let mut seen = Vec::new();
        if let State::Live(c) = &self.state {
            if c.connected {
                return Ok(seen);
            }
        }
        tokio::time::timeout(within, async {
            while let Some(e) = self.next_event().await {
                match e {
                    MemberEvent::Client(ClientEvent::Connected) => return Ok(()),
                    e @ (MemberEvent::Client(ClientEvent::Closed { .. })
                    | MemberEvent::RejoinFailed { .. }) => {
                        seen.push(e);
                        return Err(ClientError::Closed);
                    }
                    e => seen.push(e),
                }
            }
            Err(ClientError::Closed)
        })
        .await
        .map_err(|_| ClientError::Timeout("ice/dtls connection"))??;
        Ok(seen)
    }

    /// The current session; `None` while joining again and once the call is over.
    pub fn client(&self) -> Option<&Client> {
        match &self.state {
            State::Live(c) => Some(c),
            _ => None,
        }
    }

    /// The current session, mutably (see [`Member::client`]). Reading its events directly
    /// bypasses the rejoin logic until [`Member::next_event`] is called again.
    pub fn client_mut(&mut self) -> Option<&mut Client> {
        match &mut self.state {
            State::Live(c) => Some(c),
            _ => None,
        }
    }

    /// The current session's participant id (`None` while joining again or when over).
    pub fn participant_id(&self) -> Option<&str> {
        self.client().map(Client::participant_id)
    }

    /// The base URL the current (or last) session joined through.
    pub fn via(&self) -> &str {
        &self.target.urls[self.via]
    }

    /// Successful rejoins so far.
    pub fn rejoins(&self) -> u64 {
        self.rejoins
    }

    /// Whether a rejoin is in progress.
    pub fn is_rejoining(&self) -> bool {
        matches!(self.state, State::Rejoining { .. })
    }

    /// Events dropped because the queue was full, over every session.
    pub fn dropped_events(&self) -> u64 {
        self.dropped_before + self.client().map_or(0, Client::dropped_events)
    }

    /// [`Client::send_audio`] on the current session; [`ClientError::Closed`] while joining
    /// again or when over (the packet is dropped).
    pub fn send_audio(&self, payload: Vec<u8>) -> Result<(), ClientError> {
        self.client()
            .ok_or(ClientError::Closed)?
            .send_audio(payload)
    }

    /// [`Client::send_video`] on the current session; [`ClientError::Closed`] while joining
    /// again or when over.
    pub fn send_video(&self, rid: Option<&str>, payload: Vec<u8>) -> Result<(), ClientError> {
        self.client()
            .ok_or(ClientError::Closed)?
            .send_video(rid, payload)
    }

    /// [`Client::send_signal`] on the current session; [`ClientError::Closed`] while joining
    /// again or when over. Preferences and mute states are per session: send them again after
    /// [`MemberEvent::Rejoined`].
    pub fn send_signal(&self, msg: callrelay_proto::ClientMessage) -> Result<(), ClientError> {
        self.client().ok_or(ClientError::Closed)?.send_signal(msg)
    }

    /// [`Client::set_video_preference`] on the current session; [`ClientError::Closed`] while
    /// joining again or when over.
    pub fn set_video_preference(
        &self,
        participant_id: &str,
        max_height: u32,
    ) -> Result<(), ClientError> {
        self.client()
            .ok_or(ClientError::Closed)?
            .set_video_preference(participant_id, max_height)
    }

    /// Hangs up and never joins again: the current session leaves politely ([`Client::leave`];
    /// its final `Closed` follows). A rejoin in progress is cancelled (a session it had just
    /// opened leaves politely) and the next event is `Closed{reason: None}`.
    /// [`ClientError::Closed`] if the call was over already.
    pub fn leave(&mut self) -> Result<(), ClientError> {
        self.leaving = true;
        match std::mem::replace(&mut self.state, State::Ended(None)) {
            State::Live(c) => {
                let r = c.leave();
                self.state = State::Live(c);
                r
            }
            State::Rejoining { mut task, .. } => {
                let done = if task.is_finished() {
                    (&mut task).now_or_never()
                } else {
                    task.abort();
                    None
                };
                if let Some(Ok(Ok((c, i, _)))) = done {
                    self.via = i;
                    let r = c.leave();
                    self.state = State::Live(c);
                    return r;
                }
                self.state = State::Ended(Some(MemberEvent::Client(ClientEvent::Closed {
                    reason: None,
                })));
                Ok(())
            }
            ended @ State::Ended(_) => {
                self.state = ended;
                Err(ClientError::Closed)
            }
        }
    }

    /// Handles what the live session gave; `None` when a rejoin started instead.
    fn on_client_event(&mut self, e: Option<ClientEvent>) -> Option<MemberEvent> {
        let reason = match e {
            Some(ClientEvent::Closed { reason }) => reason,
            // The session's task ended without its `Closed` (aborted): as if the node went.
            None => None,
            Some(e) => return Some(MemberEvent::Client(e)),
        };
        match rejoin_reason(reason.as_deref()).filter(|_| !self.leaving) {
            Some(why) => {
                self.start_rejoin(why);
                None
            }
            None => {
                if let State::Live(c) = &self.state {
                    self.dropped_before += c.dropped_events();
                }
                self.state = State::Ended(None);
                Some(MemberEvent::Client(ClientEvent::Closed { reason }))
            }
        }
    }

    fn start_rejoin(&mut self, reason: &'static str) {
        if let State::Live(c) = &self.state {
            self.dropped_before += c.dropped_events();
        }
        let first = (self.via + 1) % self.target.urls.len();
        tracing::info!(reason, from = %self.via(), "session ended, joining again");
        let target = self.target.clone();
        let task = tokio::spawn(async move { join_cycle(&target, first, true).await });
        // The old session (already ended) goes now.
        self.state = State::Rejoining {
            reason,
            since: Instant::now(),
            task,
        };
    }

    fn on_rejoin_done(&mut self, r: Result<Joined, tokio::task::JoinError>) -> MemberEvent {
        let State::Rejoining { reason, since, .. } =
            std::mem::replace(&mut self.state, State::Ended(None))
        else {
            unreachable!("on_rejoin_done is called in the rejoining state only");
        };
        let failed = |error: String, attempts: u32| MemberEvent::RejoinFailed {
            reason: reason.to_owned(),
            error,
            attempts,
        };
        match r {
            Ok(Ok((client, i, attempts))) => {
                let took = since.elapsed();
                self.via = i;
                self.rejoins += 1;
                let participant_id = client.participant_id().to_owned();
                tracing::info!(reason, via = %self.via(), attempts, ?took, "joined again");
                self.state = State::Live(client);
                MemberEvent::Rejoined {
                    reason: reason.to_owned(),
                    via: self.via().to_owned(),
                    participant_id,
                    took,
                }
            }
            Ok(Err((e, attempts))) => {
                tracing::warn!(reason, attempts, error = %e, "could not join again");
                failed(e.to_string(), attempts)
            }
            Err(e) => failed(format!("rejoin task: {e}"), 0),
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let State::Rejoining { task, .. } = &self.state {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_moved_drain_and_silence_call_for_a_rejoin() {
        assert_eq!(rejoin_reason(Some("moved")), Some("moved"));
        assert_eq!(rejoin_reason(Some("drain")), Some("drain"));
        assert_eq!(rejoin_reason(None), Some("node_lost"));
        for final_reason in [
            "left",
            "revoked",
            "blocked",
            "kicked",
            "room_full",
            "idle",
            "error",
            "expired",
            "",
            "something-new",
        ] {
            assert_eq!(rejoin_reason(Some(final_reason)), None, "{final_reason}");
        }
    }

    #[test]
    fn attempts_cycle_through_the_urls_with_a_doubling_backoff_until_the_deadline() {
        let p = RejoinPolicy::default();
        let ms = Duration::from_millis;
        // Three URLs, starting at the second: 1, 2, 0, 1, …; waits 0, 100, 200, 400, 500, 500.
        let mut elapsed = Duration::ZERO;
        let mut seen = Vec::new();
        for k in 0..6 {
            let (i, wait) = p.attempt(k, 1, 3, elapsed).expect("within the deadline");
            elapsed += wait;
            seen.push((i, wait));
        }
        assert_eq!(
            seen,
            [
                (1, ms(0)),
                (2, ms(100)),
                (0, ms(200)),
                (1, ms(400)),
                (2, ms(500)),
                (0, ms(500)),
            ]
        );
        // A wait that would reach the deadline is not taken; the first attempt always is.
        assert_eq!(p.attempt(7, 0, 3, ms(29_500)), None);
        assert_eq!(p.attempt(7, 0, 3, ms(29_499)), Some((1, ms(500))));
        assert_eq!(p.attempt(0, 2, 3, ms(60_000)), Some((2, ms(0))));
        // One URL: always it. A start beyond the list wraps.
        assert_eq!(p.attempt(5, 0, 1, ms(0)), Some((0, ms(500))));
        assert_eq!(p.attempt(0, 7, 3, ms(0)), Some((1, ms(0))));
        // Huge attempt numbers neither overflow nor exceed the cap.
        assert_eq!(p.attempt(u32::MAX, 0, 2, ms(0)).map(|a| a.1), Some(ms(500)));
        // Over a 30 s deadline with the default policy: 0 + 0.1 + 0.2 + 0.4 then 0.5 s each.
        let mut n = 0;
        let mut elapsed = Duration::ZERO;
        while let Some((_, wait)) = p.attempt(n, 0, 2, elapsed) {
            elapsed += wait;
            n += 1;
        }
        assert_eq!(n, 62, "attempts in 30 s");
        assert!(elapsed < p.deadline);
    }

    #[test]
    fn an_attempt_is_cut_to_the_time_left() {
        let p = RejoinPolicy::default();
        assert_eq!(p.limit(0, Duration::from_secs(100)), p.attempt_timeout);
        assert_eq!(p.limit(3, Duration::ZERO), p.attempt_timeout);
        assert_eq!(p.limit(3, Duration::from_secs(27)), Duration::from_secs(3));
        assert_eq!(
            p.limit(3, Duration::from_secs(31)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn unreachable_or_busy_nodes_are_retried_final_refusals_are_not() {
        let status = |status: u16, code: &str| ClientError::Status {
            status,
            code: code.into(),
            body: String::new(),
        };
        let refused = |code: &str| ClientError::Refused {
            code: code.into(),
            message: String::new(),
        };
        for e in [
            ClientError::Http("connection refused".into()),
            ClientError::WebSocket("connection refused".into()),
            ClientError::Timeout("joined"),
            status(503, "store_unavailable"),
            status(503, "no_node_available"),
            status(503, "node_draining"),
            status(429, "rate_limited"),
            refused("grant_expired"),
            refused("invalid_grant"),
        ] {
            assert!(retryable(&e, false), "{e}");
            assert!(retryable(&e, true), "{e}");
        }
        for e in [
            status(401, "unauthorized"),
            status(403, "join_refused"),
            status(404, "link_not_found"),
            status(410, "link_revoked"),
            status(410, "link_expired"),
            refused("link_revoked"),
            refused("join_refused"),
            refused("video_not_allowed"),
            ClientError::Sdp("bad".into()),
        ] {
            assert!(!retryable(&e, false), "{e}");
            assert!(!retryable(&e, true), "{e}");
        }
        // Our own seat may outlive a lost session for a moment.
        for e in [status(409, "room_full"), refused("room_full")] {
            assert!(!retryable(&e, false), "{e}");
            assert!(retryable(&e, true), "{e}");
        }
    }
}
