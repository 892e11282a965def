//! Signaling: `GET /v1/signal`, one WebSocket per participant (`proto/signal.proto`).
//!
//! The first frame must be `join{grant, sdp}` within 10 s. The grant is checked (signature,
//! audience, ≤ 60 s, used once), the link and the creator's blocks are checked again in the
//! store, the seat taken at the HTTP join becomes a live seat, and the room's worker answers the
//! SDP offer. Then the socket relays SDP and room events both ways until the participant leaves,
//! closes the socket, or is removed (`removed{reason}` is sent before the socket closes).
//!
//! A socket that closes without `leave` parks its session for `rooms.resume_grace`: the
//! participant stays in its worker (seat, media, tracks), what the worker says meanwhile is
//! queued, and a new socket whose first message is `resume{resume_token}` takes it over
//! ([`Resumable`]). When the grace passes, or the worker removes the participant meanwhile, the
//! session ends as a close would have ended it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use callrelay_links::{LinkId, LinkKind, LinkStatus, UserId};
use callrelay_proto::signal::{Error as ErrorMsg, Joined, Pong, Resumed, SessionDescription};
use callrelay_proto::{client_message, server_message, ClientMessage, ServerMessage};
use callrelay_sfu::{ParticipantId, RemoveReason, RoomKey, RoomKind, SfuError};
use tokio::sync::{mpsc, oneshot};

use crate::budget::{Budgets, Kind as BudgetKind, Verdict};
use crate::media::{self, Command, JoinRequest, SESSION_QUEUE};
use crate::state::AppState;

/// How long a client has to send `join` after the socket opens.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(10);

/// Largest message the WebSocket layer buffers; frames over
/// [`callrelay_proto::MAX_FRAME_BYTES`] are refused with close code 1009 by this module.
const WS_BUFFER_LIMIT: usize = 256 * 1024;
/// What each signaling connection allocates up front to read into (tungstenite's default is
/// 128 KiB, allocated per connection, i.e. per participant: the largest single allocation of
/// a voice participant's heap in the capacity run, heaptrack 2026-12-07). Signaling frames are
/// a few KiB; a larger one is read in several calls.
const WS_READ_BUFFER: usize = 16 * 1024;

/// Close code for a message that is too big (RFC 6455).
const CLOSE_TOO_BIG: u16 = 1009;
/// Close code for a data type the endpoint does not accept (binary frames).
const CLOSE_UNSUPPORTED: u16 = 1003;
/// Close code for a policy violation (a refused join).
const CLOSE_POLICY: u16 = 1008;
/// Normal closure.
const CLOSE_NORMAL: u16 = 1000;
/// Close code for a protocol error (RFC 6455).
const CLOSE_PROTOCOL: u16 = 1002;
/// Close code for data inconsistent with the message type: a text frame that is not UTF-8.
const CLOSE_INVALID_DATA: u16 = 1007;

/// Most messages queued for a parked session; beyond, the session ends (a client that stays
/// away while its room is this busy would not catch up anyway).
const PARKED_QUEUE: usize = 1024;

/// Sessions whose socket closed without `leave`, by resume token, each waiting (in its own
/// task, see `park`) for a new socket to claim it within `rooms.resume_grace`.
#[derive(Default)]
pub struct Resumable {
    waiting: Mutex<HashMap<String, oneshot::Sender<oneshot::Sender<Parked>>>>,
}

impl Resumable {
    fn insert(&self, token: String, claim: oneshot::Sender<oneshot::Sender<Parked>>) {
        self.lock().insert(token, claim);
    }

    fn take(&self, token: &str) -> Option<oneshot::Sender<oneshot::Sender<Parked>>> {
        self.lock().remove(token)
    }

    /// Sessions waiting to be resumed now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<oneshot::Sender<Parked>>>> {
        // A panic while holding it cannot leave the map inconsistent: take it back.
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A parked session, handed to the socket that resumes it.
struct Parked {
    admitted: Admitted,
    rx: mpsc::Receiver<ServerMessage>,
    /// What the worker said while no socket was there, in order.
    queued: VecDeque<ServerMessage>,
    owed_answers: u32,
}

/// A fresh resume token: 128 random bits, base64url.
fn resume_token() -> String {
    use base64::Engine as _;
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// The `/v1/signal` route.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/signal", get(upgrade))
        .with_state(state)
}

async fn upgrade(State(s): State<Arc<AppState>>, ws: WebSocketUpgrade) -> Response {
    ws.max_message_size(WS_BUFFER_LIMIT)
        .max_frame_size(WS_BUFFER_LIMIT)
        .read_buffer_size(WS_READ_BUFFER)
        .on_upgrade(move |socket| session(s, socket))
}

/// Why a frame or a join was refused: a code of `proto/signal.proto` and a message.
pub(crate) struct Refusal {
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

enum Incoming {
    Message(ClientMessage),
    Invalid(String),
    TooBig,
    Binary,
    /// The client closed the socket (a Close frame) or broke the protocol: the session ends.
    Closed,
    /// The connection ended without a Close frame (reset, cut): the session may be resumed.
    Lost,
}

async fn next_incoming(socket: &mut WebSocket) -> Incoming {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => {
                if t.len() > callrelay_proto::MAX_FRAME_BYTES {
                    return Incoming::TooBig;
                }
                return match ClientMessage::from_json(t.as_str()) {
                    Ok(m) => Incoming::Message(m),
                    Err(e) => Incoming::Invalid(e.to_string()),
                };
            }
            Some(Ok(Message::Binary(_))) => return Incoming::Binary,
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) => {
                // The client closed first: answer with a Close echoing its code (RFC 6455
                // §5.5.1). The WebSocket layer queued that answer; flushing sends it.
                let _ = futures::SinkExt::flush(socket).await;
                return Incoming::Closed;
            }
            None => return Incoming::Lost,
            // Over the buffer limit, a text frame that is not UTF-8, a protocol error, or the
            // connection failing.
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    return Incoming::TooBig;
                }
                if text.contains("without closing handshake") {
                    // The TCP connection ended under the WebSocket: cut, not closed.
                    return Incoming::Lost;
                }
                if text.contains("UTF-8") {
                    close(socket, CLOSE_INVALID_DATA, "invalid UTF-8").await;
                } else if text.contains("protocol error") {
                    close(socket, CLOSE_PROTOCOL, "protocol error").await;
                } else {
                    return Incoming::Lost;
                }
                return Incoming::Closed;
            }
        }
    }
}

async fn send(socket: &mut WebSocket, msg: server_message::Msg) -> bool {
    socket
        .send(Message::Text(ServerMessage::from(msg).to_json().into()))
        .await
        .is_ok()
}

async fn send_error(s: &AppState, socket: &mut WebSocket, r: &Refusal) -> bool {
    s.media_metrics
        .signaling_errors
        .with_label_values(&[r.code])
        .inc();
    send(
        socket,
        server_message::Msg::Error(ErrorMsg {
            code: r.code.into(),
            message: r.message.clone(),
        }),
    )
    .await
}

/// How long a closing socket waits for the client's Close frame.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Sends a Close frame, then reads (and discards) what the client still sends until its own
/// Close arrives, for at most [`CLOSE_LINGER`] (RFC 6455 §7.1.1). Dropping a TCP connection with
/// unread input makes the kernel reset it, and a reset discards what the client has not read
/// yet: the last messages — an error, `removed{reason}`, the Close itself — would be lost.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    if socket
        .send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        })))
        .await
        .is_err()
    {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

/// Counts a session while it lives.
struct SessionGauge<'a>(&'a AppState);

impl Drop for SessionGauge<'_> {
    fn drop(&mut self) {
        self.0.media_metrics.signaling_sessions.dec();
    }
}

/// An admitted participant.
pub(crate) struct Admitted {
    pub(crate) link: LinkId,
    pub(crate) room: RoomKey,
    pub(crate) pid: ParticipantId,
    pub(crate) pid_text: String,
    /// Picks the session up from a new socket (see [`Resumable`]).
    resume_token: String,
    /// The link's creator: hosts the lobby, may decide on who waits.
    host: bool,
}

async fn session(s: Arc<AppState>, mut socket: WebSocket) {
    s.media_metrics.signaling_sessions.inc();
    let _gauge = SessionGauge(&s);
    let first = match tokio::time::timeout(JOIN_DEADLINE, next_incoming(&mut socket)).await {
        Ok(i) => i,
        Err(_) => {
            let r = Refusal::new("invalid_message", "no join within 10 s");
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_POLICY, "join timeout").await;
            return;
        }
    };
    let join = match first {
        Incoming::Message(ClientMessage {
            msg: Some(client_message::Msg::Join(j)),
        }) => j,
        Incoming::Message(ClientMessage {
            msg: Some(client_message::Msg::Resume(r)),
        }) => {
            resume(&s, socket, &r.resume_token).await;
            return;
        }
        Incoming::Message(_) => {
            let r = Refusal::new("not_joined", "the first message must be join");
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_POLICY, "not joined").await;
            return;
        }
        Incoming::Invalid(e) => {
            let r = Refusal::new("invalid_message", e);
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_POLICY, "invalid message").await;
            return;
        }
        Incoming::TooBig => {
            s.media_metrics
                .signaling_errors
                .with_label_values(&["invalid_message"])
                .inc();
            close(&mut socket, CLOSE_TOO_BIG, "frame larger than 64 KiB").await;
            return;
        }
        Incoming::Binary => {
            let r = Refusal::new("invalid_message", "binary frames are not accepted");
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_UNSUPPORTED, "binary frame").await;
            return;
        }
        Incoming::Closed | Incoming::Lost => return,
    };

    let started = Instant::now();
    let (tx, rx) = mpsc::channel(SESSION_QUEUE);
    let checked = match check(&s, &join.grant).await {
        Ok(c) => c,
        Err(r) => {
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_POLICY, "join refused").await;
            return;
        }
    };
    if checked.link.require_approval
        && checked.user != checked.link.creator
        && !s
            .lobby
            .was_admitted(&checked.link_id, &checked.user, Instant::now())
    {
        match lobby_wait(&s, &mut socket, &checked).await {
            LobbyOutcome::Admitted => {}
            LobbyOutcome::Refused(r) => {
                send_error(&s, &mut socket, &r).await;
                close(&mut socket, CLOSE_POLICY, "not admitted").await;
                return;
            }
            LobbyOutcome::Gone => return,
        }
    }
    // The lobby reaches a creator's session through this (weak: it keeps nothing open).
    let weak = tx.downgrade();
    let admitted = match enter(&s, checked, join.sdp, tx, started, media::JoinMode::Call).await {
        Ok(a) => a,
        Err(r) => {
            send_error(&s, &mut socket, &r).await;
            close(&mut socket, CLOSE_POLICY, "join refused").await;
            return;
        }
    };
    let (adm, joined) = admitted;
    if !send(&mut socket, server_message::Msg::Joined(joined)).await {
        leave(&s, &adm, RemoveReason::Left);
        return;
    }
    if adm.host {
        s.lobby.add_host(&adm.link, &adm.pid_text, weak);
    }
    tracing::info!(link = %adm.link, participant = %adm.pid_text, "signaling joined");
    if let Some(parked) = run_session(&s, &adm, socket, rx, 0).await {
        park(s.clone(), adm, parked);
    }
}

/// A new socket that asks to pick up a parked session.
async fn resume(s: &Arc<AppState>, mut socket: WebSocket, token: &str) {
    let claimed = match s.resumable.take(token) {
        Some(claim) => {
            let (tx, rx) = oneshot::channel();
            match claim.send(tx) {
                Ok(()) => rx.await.ok(),
                Err(_) => None,
            }
        }
        None => None,
    };
    let Some(mut p) = claimed else {
        let r = Refusal::new(
            "resume_failed",
            "no session to resume (it ended, or its grace passed): join the link again",
        );
        send_error(s, &mut socket, &r).await;
        close(&mut socket, CLOSE_POLICY, "resume failed").await;
        return;
    };
    let a = p.admitted;
    s.media_metrics.signaling_resumed.inc();
    tracing::info!(link = %a.link, participant = %a.pid_text, queued = p.queued.len(), "signaling resumed");
    let resumed = server_message::Msg::Resumed(Resumed {
        participant_id: a.pid_text.clone(),
    });
    let mut ok = send(&mut socket, resumed).await;
    while let (true, Some(m)) = (ok, p.queued.pop_front()) {
        if matches!(m.msg, Some(server_message::Msg::Offer(_))) {
            p.owed_answers = p.owed_answers.saturating_add(1);
        }
        ok = socket.send(Message::Text(m.to_json().into())).await.is_ok();
    }
    let parked = if ok {
        run_session(s, &a, socket, p.rx, p.owed_answers).await
    } else {
        // Broken again before it caught up: park what is left, in order.
        let mut rx = p.rx;
        let mut queued = p.queued;
        while let Ok(m) = rx.try_recv() {
            queued.push_back(m);
        }
        Some(ParkedState {
            rx,
            queued,
            owed_answers: p.owed_answers,
        })
    };
    if let Some(parked) = parked {
        park(s.clone(), a, parked);
    }
}

/// What `run_session` hands back when its socket broke without `leave`.
struct ParkedState {
    rx: mpsc::Receiver<ServerMessage>,
    queued: VecDeque<ServerMessage>,
    owed_answers: u32,
}

/// Keeps a session whose socket broke for `rooms.resume_grace`, queueing what its worker says,
/// until a new socket claims it ([`resume`]); otherwise ends it as a close would.
fn park(s: Arc<AppState>, a: Admitted, p: ParkedState) {
    let grace = s.settings.resume_grace;
    if grace.is_zero() {
        leave(&s, &a, RemoveReason::Left);
        tracing::info!(link = %a.link, participant = %a.pid_text, "signaling closed");
        return;
    }
    let (claim_tx, mut claim_rx) = oneshot::channel::<oneshot::Sender<Parked>>();
    s.resumable.insert(a.resume_token.clone(), claim_tx);
    tracing::info!(link = %a.link, participant = %a.pid_text, grace_s = grace.as_secs_f64(), "signaling lost: waiting for the client to resume");
    s.media_metrics.signaling_parked.inc();
    tokio::spawn(async move {
        // However the wait ends.
        struct Unpark<'a>(&'a AppState);
        impl Drop for Unpark<'_> {
            fn drop(&mut self) {
                self.0.media_metrics.signaling_parked.dec();
            }
        }
        let _unpark = Unpark(&s);
        let ParkedState {
            mut rx,
            mut queued,
            owed_answers,
        } = p;
        let deadline = tokio::time::Instant::now() + grace;
        // A draining node resumes nothing: its calls end as their people go, and a parked
        // session has nobody left to go.
        let mut drain = s.drain.subscribe();
        // Why it ends unclaimed: for the log.
        let why;
        loop {
            if drain.borrow_and_update().draining() {
                why = "node draining";
                break;
            }
            tokio::select! {
                _ = drain.changed() => continue,
                claim = &mut claim_rx => {
                    if let Ok(reply) = claim {
                        let parked = Parked { admitted: a, rx, queued, owed_answers };
                        if let Err(back) = reply.send(parked) {
                            // The resuming socket went away meanwhile: end the session.
                            leave(&s, &back.admitted, RemoveReason::Left);
                        }
                    }
                    return;
                }
                out = rx.recv() => match out {
                    Some(m) if queued.len() < PARKED_QUEUE => queued.push_back(m),
                    Some(_) => { why = "too much queued while away"; break; }
                    // The worker removed it (revoked, idle, drained…) while away.
                    None => { why = "removed while away"; break; }
                },
                _ = tokio::time::sleep_until(deadline) => { why = "grace passed"; break; }
            }
        }
        if s.resumable.take(&a.resume_token).is_none() {
            // A resume took the token first: hand the session over after all.
            if let Ok(reply) = claim_rx.await {
                let parked = Parked {
                    admitted: a,
                    rx,
                    queued,
                    owed_answers,
                };
                if let Err(back) = reply.send(parked) {
                    leave(&s, &back.admitted, RemoveReason::Left);
                }
            }
            return;
        }
        leave(&s, &a, RemoveReason::Left);
        tracing::info!(link = %a.link, participant = %a.pid_text, why, "signaling closed");
    });
}

/// A join whose grant, link and blocks checked out, before its seat and media.
pub(crate) struct Checked {
    claims: crate::auth::GrantClaims,
    pid: ParticipantId,
    link_id: LinkId,
    user: UserId,
    link: callrelay_links::Link,
}

/// Checks the grant, the link and the blocks.
pub(crate) async fn check(s: &AppState, grant: &str) -> Result<Checked, Refusal> {
    let claims = s.tokens.verify_grant(grant).map_err(|e| {
        if e.to_string().contains("Expired") {
            Refusal::new("grant_expired", "the grant has expired")
        } else {
            Refusal::new("invalid_grant", "the grant is not valid")
        }
    })?;
    let pid = media::parse_participant_id(&claims.pid)
        .ok_or_else(|| Refusal::new("invalid_grant", "bad participant id in grant"))?;
    let link_id = LinkId::parse(&claims.link)
        .map_err(|_| Refusal::new("invalid_grant", "bad link in grant"))?;
    let user = UserId::parse(&claims.sub)
        .map_err(|_| Refusal::new("invalid_grant", "bad user in grant"))?;
    // In a cluster a grant names the call's home: only that node admits it.
    let me = s.cluster.as_ref().map(|c| c.node_id());
    if claims.node.as_deref() != me {
        return Err(Refusal::new(
            "wrong_node",
            "this grant is for another relay node: join the link again",
        ));
    }
    if !s
        .signal_grants
        .try_use(&claims.pid, claims.exp, chrono::Utc::now().timestamp())
    {
        return Err(Refusal::new(
            "already_joined",
            "this grant was already used",
        ));
    }
    // Re-check the link and the blocks: they may have changed since the HTTP join.
    let link = s
        .timed("get_link", s.store.get_link(&link_id))
        .await
        .map_err(|_| Refusal::new("internal", "store unavailable"))?
        .ok_or_else(|| Refusal::new("join_refused", "no such link"))?;
    match link.status(s.now()) {
        LinkStatus::Active => {}
        LinkStatus::Expired => return Err(Refusal::new("link_expired", "the link has expired")),
        LinkStatus::Revoked => return Err(Refusal::new("link_revoked", "the link was revoked")),
    }
    if link.creator != user
        && s.timed("is_blocked", s.store.is_blocked(&link.creator, &user))
            .await
            .map_err(|_| Refusal::new("internal", "store unavailable"))?
    {
        return Err(Refusal::new("join_refused", "you cannot join this call"));
    }
    Ok(Checked {
        claims,
        pid,
        link_id,
        user,
        link,
    })
}

/// Takes the seat and adds the participant to its worker (`mode`: a WHIP or WHEP client).
pub(crate) async fn enter(
    s: &AppState,
    c: Checked,
    sdp: String,
    tx: mpsc::Sender<ServerMessage>,
    started: Instant,
    mode: media::JoinMode,
) -> Result<(Admitted, Joined), Refusal> {
    let Checked {
        claims,
        pid,
        link_id,
        user,
        link,
    } = c;
    let host = user == link.creator;
    // Whether this node serves the call as a leg (its home is another node).
    let mut leg = false;
    if let Some(c) = &s.cluster {
        // The room must still be placed here (a partition may have moved it meanwhile).
        let held = i64::try_from(s.seats.held(&link_id, Instant::now())).unwrap_or(i64::MAX);
        match c.claim(&link_id, held.max(1)).await {
            Ok(callrelay_cluster::Claim::Elsewhere { .. }) => {
                return Err(Refusal::new(
                    "wrong_node",
                    "this call runs on another relay node: join the link again",
                ))
            }
            Ok(callrelay_cluster::Claim::Leg { .. }) => leg = true,
            Ok(_) => {}
            Err(_) => return Err(Refusal::new("internal", "store unavailable")),
        }
    }
    let limits = crate::seats::SeatLimits {
        max: s.settings.max_participants,
        per_user: s.settings.max_seats_per_user,
    };
    match s.seats.hold_live(
        &link_id,
        &claims.pid,
        &user,
        &link.creator,
        limits,
        Instant::now(),
    ) {
        Ok(()) => {}
        Err(crate::seats::NoSeat::RoomFull) => {
            return Err(Refusal::new("room_full", "the room is full"))
        }
        Err(crate::seats::NoSeat::UserLimit) => {
            return Err(Refusal::new(
                "seat_limit",
                "you already hold the most seats one user may hold in this call",
            ))
        }
    }
    let room = media::room_key(&link_id);
    let kind = match link.kind {
        LinkKind::Voice => RoomKind::Voice,
        _ => RoomKind::Video,
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    let req = JoinRequest {
        room,
        link: link_id,
        kind,
        creator: link.creator.clone(),
        participant: pid,
        user,
        name: claims.name.clone().unwrap_or_default(),
        offer: sdp,
        started,
        session: tx,
        mode,
        leg,
    };
    let release = || s.seats.release(&link_id, &claims.pid);
    if !s.media.send(room, Command::Join(Box::new(req), reply_tx)) {
        release();
        return Err(Refusal::new("internal", "media worker unavailable"));
    }
    let reply = match reply_rx.await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            release();
            return Err(match e {
                SfuError::RoomFull => Refusal::new("room_full", "the room is full"),
                SfuError::VideoNotAllowed => {
                    Refusal::new("video_not_allowed", "this is a voice link: no video")
                }
                SfuError::DuplicateParticipant => {
                    Refusal::new("already_joined", "this participant is already in the call")
                }
                e => Refusal::new("sdp_rejected", e.to_string()),
            });
        }
        Err(_) => {
            release();
            return Err(Refusal::new("internal", "media worker unavailable"));
        }
    };
    let token = resume_token();
    let joined = Joined {
        participant_id: claims.pid.clone(),
        participants: reply.participants,
        link_kind: link.kind.as_str().into(),
        sdp: reply.sdp,
        resume_token: token.clone(),
    };
    Ok((
        Admitted {
            link: link_id,
            room,
            pid,
            pid_text: claims.pid,
            resume_token: token,
            host,
        },
        joined,
    ))
}

/// Ends a participant: out of its worker (no-op if already removed) and its seat released.
pub(crate) fn leave(s: &AppState, a: &Admitted, reason: RemoveReason) {
    s.media.send(a.room, Command::Remove(a.pid, reason));
    s.seats.release(&a.link, &a.pid_text);
    if a.host {
        s.lobby.remove_host(&a.link, &a.pid_text);
    }
}

/// Relays one socket. Returns the session's state when the socket broke without `leave`
/// (to be parked for a resume); `None` when the session is over (and left).
async fn run_session(
    s: &AppState,
    a: &Admitted,
    mut socket: WebSocket,
    mut rx: mpsc::Receiver<ServerMessage>,
    owed: u32,
) -> Option<ParkedState> {
    let mut budgets = Budgets::new(Instant::now());
    // The sender's removal was asked of the worker (it answers through `rx`).
    let mut removing = false;
    // Offers the relay sent that the client has not answered yet. An answer to one of them
    // draws on no budget: the relay caused it, and when many people join at once a client
    // owes one answer per renegotiation, far beyond the budget. Only answers beyond what is
    // owed (a flood) are counted and refused.
    let mut owed_answers: u32 = owed;
    // A message that could not be sent on a broken socket: the first to replay on resume.
    let mut unsent: Option<ServerMessage> = None;
    // The socket broke (closed without `leave`, or failed): the session may be resumed.
    let mut broken = false;
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(m) => {
                    if matches!(m.msg, Some(server_message::Msg::Offer(_))) {
                        owed_answers = owed_answers.saturating_add(1);
                    }
                    if socket.send(Message::Text(m.to_json().into())).await.is_err() {
                        unsent = Some(m);
                        broken = true;
                        break;
                    }
                }
                // The worker removed us (after queueing `removed{reason}`) or stopped.
                None => {
                    // The seat is free before the client sees the close.
                    leave(s, a, RemoveReason::Left);
                    close(&mut socket, CLOSE_NORMAL, "removed").await;
                    return None;
                }
            },
            incoming = next_incoming(&mut socket) => match incoming {
                Incoming::Message(m) => {
                    // `leave` always goes through: it ends the session.
                    let leaving = matches!(m.msg, Some(client_message::Msg::Leave(_)));
                    let owed = owed_answers > 0 && matches!(m.msg, Some(client_message::Msg::Answer(_)));
                    if owed {
                        owed_answers -= 1;
                    }
                    let verdict = if leaving || owed { Verdict::Allow } else { budgets.take(budget_kind(&m), Instant::now()) };
                    match verdict {
                        Verdict::Allow => {
                            if !handle_message(s, a, &mut socket, m).await {
                                // A failed send broke the socket; `leave` closed it.
                                broken = !leaving;
                                break;
                            }
                        }
                        verdict => {
                            let kind = budget_kind(&m);
                            s.media_metrics.signaling_rate_limited.with_label_values(&[kind.as_str()]).inc();
                            let r = Refusal::new("rate_limited", format!("too many {} messages: slow down", kind.as_str()));
                            if !send_error(s, &mut socket, &r).await {
                                break;
                            }
                            if verdict == Verdict::Remove && !removing {
                                // Once: a flood goes on until the removal lands, and a line (or a
                                // command) per message would let it flood the log too.
                                removing = true;
                                tracing::info!(link = %a.link, participant = %a.pid_text, kind = kind.as_str(), "signaling flood: removing the sender");
                                // `removed{rate_limited}` comes back through `rx`, then the close.
                                s.media.send(a.room, Command::Remove(a.pid, RemoveReason::RateLimited));
                            }
                        }
                    }
                }
                Incoming::Invalid(e) => {
                    if budgets.take(BudgetKind::Other, Instant::now()) == Verdict::Remove && !removing {
                        removing = true;
                        tracing::info!(link = %a.link, participant = %a.pid_text, "invalid signaling messages: removing the sender");
                        s.media.send(a.room, Command::Remove(a.pid, RemoveReason::RateLimited));
                    }
                    let r = Refusal::new("invalid_message", e);
                    if !send_error(s, &mut socket, &r).await {
                        break;
                    }
                }
                Incoming::TooBig => {
                    s.media_metrics.signaling_errors.with_label_values(&["invalid_message"]).inc();
                    close(&mut socket, CLOSE_TOO_BIG, "frame larger than 64 KiB").await;
                    break;
                }
                Incoming::Binary => {
                    let r = Refusal::new("invalid_message", "binary frames are not accepted");
                    send_error(s, &mut socket, &r).await;
                    close(&mut socket, CLOSE_UNSUPPORTED, "binary frame").await;
                    break;
                }
                // "Closing the socket does the same" as `leave`.
                Incoming::Closed => break,
                Incoming::Lost => {
                    broken = !removing;
                    break;
                }
            },
        }
    }
    if broken && !s.settings.resume_grace.is_zero() && !s.drain.is_draining() {
        let mut queued: VecDeque<ServerMessage> = unsent.into_iter().collect();
        while let Ok(m) = rx.try_recv() {
            queued.push_back(m);
        }
        return Some(ParkedState {
            rx,
            queued,
            owed_answers,
        });
    }
    leave(s, a, RemoveReason::Left);
    tracing::info!(link = %a.link, participant = %a.pid_text, "signaling closed");
    None
}

/// The budget a client message draws on.
fn budget_kind(m: &ClientMessage) -> BudgetKind {
    use client_message::Msg;
    match &m.msg {
        Some(Msg::Offer(_)) => BudgetKind::Offer,
        Some(Msg::Answer(_)) => BudgetKind::Answer,
        Some(Msg::Mute(_)) => BudgetKind::Mute,
        Some(Msg::VideoPreference(_)) => BudgetKind::Preference,
        Some(Msg::Ping(_)) => BudgetKind::Ping,
        // Lobby decisions are rare (a few per joiner): the general budget.
        Some(Msg::Leave(_))
        | Some(Msg::Join(_))
        | Some(Msg::Resume(_))
        | Some(Msg::LobbyDecision(_))
        | Some(Msg::ScreenShare(_))
        | None => BudgetKind::Other,
    }
}

/// How a wait in the lobby ended.
enum LobbyOutcome {
    /// The creator let them in: join as usual.
    Admitted,
    /// Declined or timed out: say so and close.
    Refused(Refusal),
    /// The client left or the socket broke while waiting.
    Gone,
}

/// Keeps a join of a `require_approval` link waiting, with no seat and no media, until the
/// creator decides or `lobby.timeout` passes; answers pings meanwhile.
async fn lobby_wait(s: &AppState, socket: &mut WebSocket, c: &Checked) -> LobbyOutcome {
    let name = c.claims.name.clone().unwrap_or_default();
    let (mut decision, host_present) = s.lobby.wait(&c.link_id, &c.claims.pid, &c.user, &name);
    s.metrics.lobby_waiting.inc();
    struct Waiting<'a>(&'a AppState);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.metrics.lobby_waiting.dec();
        }
    }
    let _waiting = Waiting(s);
    let outcome = |o: &str| s.metrics.lobby_outcomes.with_label_values(&[o]).inc();
    tracing::info!(link = %c.link_id, participant = %c.claims.pid, host_present, "waiting in the lobby");
    let timeout = s.settings.lobby_timeout;
    let lobby = server_message::Msg::Lobby(callrelay_proto::signal::Lobby {
        timeout_s: u32::try_from(timeout.as_secs()).unwrap_or(u32::MAX),
        host_present,
    });
    if !send(socket, lobby).await {
        s.lobby.cancel(&c.link_id, &c.claims.pid, "left");
        outcome("left");
        return LobbyOutcome::Gone;
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            d = &mut decision => {
                return match d {
                    Ok(crate::lobby::Decision::Admit) => {
                        outcome("admitted");
                        LobbyOutcome::Admitted
                    }
                    _ => {
                        outcome("declined");
                        LobbyOutcome::Refused(Refusal::new("lobby_declined", "the host did not let you in"))
                    }
                };
            }
            _ = &mut deadline => {
                s.lobby.cancel(&c.link_id, &c.claims.pid, "timeout");
                outcome("timeout");
                return LobbyOutcome::Refused(Refusal::new(
                    "lobby_timeout",
                    format!("nobody let you in within {} s: the host may not be in the call", timeout.as_secs()),
                ));
            }
            incoming = next_incoming(socket) => match incoming {
                Incoming::Message(ClientMessage { msg: Some(client_message::Msg::Ping(p)) }) => {
                    if !send(socket, server_message::Msg::Pong(Pong { nonce: p.nonce })).await {
                        s.lobby.cancel(&c.link_id, &c.claims.pid, "left");
                        outcome("left");
                        return LobbyOutcome::Gone;
                    }
                }
                Incoming::Message(ClientMessage { msg: Some(client_message::Msg::Leave(_)) })
                | Incoming::Closed
                | Incoming::Lost
                | Incoming::TooBig
                | Incoming::Binary => {
                    s.lobby.cancel(&c.link_id, &c.claims.pid, "left");
                    outcome("left");
                    return LobbyOutcome::Gone;
                }
                Incoming::Message(_) | Incoming::Invalid(_) => {
                    let r = Refusal::new("not_admitted", "wait until the host lets you in");
                    if !send_error(s, socket, &r).await {
                        s.lobby.cancel(&c.link_id, &c.claims.pid, "left");
                        outcome("left");
                        return LobbyOutcome::Gone;
                    }
                }
            },
        }
    }
}

/// One message from a joined client; false to end the session.
async fn handle_message(
    s: &AppState,
    a: &Admitted,
    socket: &mut WebSocket,
    m: ClientMessage,
) -> bool {
    use client_message::Msg;
    let Some(msg) = m.msg else {
        return send_error(s, socket, &Refusal::new("invalid_message", "empty message")).await;
    };
    match msg {
        Msg::Join(_) | Msg::Resume(_) => {
            send_error(s, socket, &Refusal::new("already_joined", "already joined")).await
        }
        Msg::Offer(o) => {
            let (tx, rx) = oneshot::channel();
            s.media.send(a.room, Command::Offer(a.pid, o.sdp, tx));
            match rx.await {
                Ok(Ok(sdp)) => {
                    send(
                        socket,
                        server_message::Msg::Answer(SessionDescription { sdp }),
                    )
                    .await
                }
                Ok(Err(SfuError::VideoNotAllowed)) => {
                    send_error(
                        s,
                        socket,
                        &Refusal::new("video_not_allowed", "this is a voice link: no video"),
                    )
                    .await
                }
                Ok(Err(e)) => {
                    send_error(s, socket, &Refusal::new("sdp_rejected", e.to_string())).await
                }
                Err(_) => false,
            }
        }
        Msg::Answer(ans) => {
            let (tx, rx) = oneshot::channel();
            s.media.send(a.room, Command::Answer(a.pid, ans.sdp, tx));
            match rx.await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    send_error(s, socket, &Refusal::new("sdp_rejected", e.to_string())).await
                }
                Err(_) => false,
            }
        }
        Msg::Mute(m) => {
            s.media.send(
                a.room,
                Command::Mute {
                    participant: a.pid,
                    audio: m.audio_muted,
                    video: m.video_muted,
                },
            );
            true
        }
        Msg::VideoPreference(v) => match media::parse_participant_id(&v.participant_id) {
            Some(publisher) => {
                s.media.send(
                    a.room,
                    Command::VideoPreference {
                        subscriber: a.pid,
                        publisher,
                        max_height: v.max_height,
                    },
                );
                true
            }
            None => {
                send_error(
                    s,
                    socket,
                    &Refusal::new("invalid_message", "bad participant_id"),
                )
                .await
            }
        },
        Msg::Leave(_) => {
            close(socket, CLOSE_NORMAL, "left").await;
            false
        }
        Msg::Ping(p) => send(socket, server_message::Msg::Pong(Pong { nonce: p.nonce })).await,
        Msg::ScreenShare(ss) => {
            let (tx, rx) = oneshot::channel();
            s.media.send(
                a.room,
                Command::ScreenShare {
                    participant: a.pid,
                    active: ss.active,
                    reply: tx,
                },
            );
            match rx.await {
                Ok(Err(name)) => {
                    send_error(
                        s,
                        socket,
                        &Refusal::new(
                            "screen_share_busy",
                            format!("{name} is sharing their screen: one person at a time"),
                        ),
                    )
                    .await
                }
                Ok(Ok(())) => true,
                Err(_) => false,
            }
        }
        Msg::LobbyDecision(d) => {
            if !a.host {
                return send_error(
                    s,
                    socket,
                    &Refusal::new("not_creator", "only the link's creator lets people in"),
                )
                .await;
            }
            let decision = if d.admit {
                crate::lobby::Decision::Admit
            } else {
                crate::lobby::Decision::Decline
            };
            let n = s
                .lobby
                .decide(&a.link, &d.participant_ids, d.all, decision, Instant::now());
            tracing::info!(link = %a.link, admit = d.admit, people = n, "lobby decision");
            true
        }
    }
}
