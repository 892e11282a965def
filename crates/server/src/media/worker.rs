//! One media worker: a thread with a current-thread tokio runtime, one UDP socket (received
//! through `quinn-udp`: recvmmsg/GRO; sent through [`callrelay_udp`]: sendmmsg, GSO runs as one
//! entry each), one [`Sfu`], and its command channel.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_links::UserId;
use callrelay_proto::server_message::Msg;
use callrelay_proto::signal::{
    ActiveSpeaker, Error as ErrorMsg, MuteChanged, MuteRequested, Participant, ParticipantJoined,
    ParticipantLeft, Removed, ScreenShared, SessionDescription, TrackPublished, TrackUnpublished,
};
use callrelay_proto::ServerMessage;
use callrelay_sfu::{
    Event, LegId, ParticipantId, Protocol, RemoveReason, Rid, RoomKey, Sfu, SfuConfig, TrackKind,
};
use callrelay_udp::Sender;
use prometheus::local::LocalHistogram;
use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::gso::{Pending, Run};
use super::tcp::{TcpInput, TcpLimits, TcpPlane};
use super::{Command, JoinReply, ParticipantReport, RoomReport, Totals};
use crate::cascade::{CascadeLink, Control, LegParticipant, LegTrack, Update};
use crate::metrics::{MediaMetrics, WorkerCounts, WorkerCountsCell};

/// Socket receive and send buffer asked for, bytes (the kernel caps it at rmem_max/wmem_max).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Datagrams read per receive call (recvmmsg batch).
const BATCH: usize = 32;
/// Bytes per receive buffer: room for a GRO batch of full-size datagrams.
const BUF: usize = 16 * 1024;
/// Commands handled per loop turn, so a command burst cannot starve the socket.
const COMMAND_BUDGET: usize = 64;
/// Receive batches per loop turn before commands and timers get a look.
const RECV_BUDGET: usize = 16;
/// Forwarded copies waiting (see `Sfu::handle_datagram_deferred`) that make the worker drive
/// their sessions before the end of a receive batch: a bound on how long the first copies of
/// a batch wait for the rest, while a subscriber that gets several packets of one batch (a
/// video frame, one room's talkers) is still driven once for them. At a fan-out of 30 a
/// subscriber is driven about once per four of its packets.
const DRIVE_AT: usize = 128;
/// ICE-TCP frames per loop turn.
const TCP_BUDGET: usize = 64;

/// Runs the worker until [`Command::Shutdown`] or until every command sender is gone.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    index: usize,
    socket: std::net::UdpSocket,
    tcp: Option<(std::net::TcpListener, TcpLimits)>,
    config: SfuConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    metrics: MediaMetrics,
    totals: Arc<Totals>,
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    cascade: Option<CascadeLink>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(worker = index, error = %e, "media worker runtime failed to start");
            return;
        }
    };
    rt.block_on(async move {
        let socket = match tokio::net::UdpSocket::from_std(socket) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "media socket unusable");
                return;
            }
        };
        let state = match UdpSocketState::new((&socket).into()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "media socket state failed");
                return;
            }
        };
        // Room for a burst while the worker is busy fanning out the previous one: at the
        // default (~208 KiB on Linux) a few hundred datagrams queued in the kernel overflow
        // it, and what is lost there is lost for every subscriber. The kernel caps the size
        // at net.core.{r,w}mem_max; what it grants is logged.
        if let Err(e) = state.set_recv_buffer_size((&socket).into(), SOCKET_BUFFER) {
            tracing::debug!(worker = index, error = %e, "media socket receive buffer not enlarged");
        }
        if let Err(e) = state.set_send_buffer_size((&socket).into(), SOCKET_BUFFER) {
            tracing::debug!(worker = index, error = %e, "media socket send buffer not enlarged");
        }
        tracing::debug!(
            worker = index,
            receive = state.recv_buffer_size((&socket).into()).ok(),
            send = state.send_buffer_size((&socket).into()).ok(),
            "media socket buffers"
        );
        // The socket's own address (not the announced one): its family decides how
        // destinations are written for the kernel.
        let bound = match socket.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "media socket has no address");
                return;
            }
        };
        // ICE-TCP: the listener on the same port number (see `tcp.rs`).
        let tcp = match tcp.map(|(l, limits)| TcpPlane::new(l, limits)).transpose() {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(worker = index, error = %e, "media TCP listener unusable");
                return;
            }
        };
        let mut seed = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
        let worker = Worker {
            index,
            label: index.to_string(),
            sfu: Sfu::new(config, seed),
            socket,
            state,
            tcp,
            metrics: metrics.clone(),
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            busy: Duration::ZERO,
            totals,
            reported: (0, 0),
            pending: Pending::new(),
            sender: Sender::new(bound),
            gso_refused: false,
            backlogged: Vec::new(),
            counts: metrics.workers.add_worker(),
            send_failed: 0,
            latency: metrics.forward_latency.local(),
            webhooks,
            cascade,
            track_numbers: HashMap::new(),
            next_track: 0,
            remote_tracks: HashMap::new(),
            pending_demand: HashMap::new(),
        };
        worker.run(commands).await;
    });
}

struct Session {
    room: RoomKey,
    user: UserId,
    name: String,
    tx: mpsc::Sender<ServerMessage>,
    audio_muted: bool,
    video_muted: bool,
    /// When the grant was presented; `None` once the first packet arrived.
    started: Option<Instant>,
    /// Its published tracks, in the order published (told to each newcomer after `joined`).
    tracks: Vec<PublishedTrack>,
    /// Room updates waiting for room in `tx`, the latest per key (see [`Worker::tell`]).
    backlog: Vec<(Coalesce, Msg)>,
    /// When it joined.
    joined_at: chrono::DateTime<chrono::Utc>,
    /// A WHIP publisher: its media is not end-to-end encrypted.
    clear_media: bool,
    /// Its latest SDP offer (what the other legs of a call spanning nodes build it from).
    offer: String,
    /// A participant of another leg of the call (see `crate::cascade`): its leg, and the
    /// source of each of its tracks as that leg named it. Nothing is sent to it here.
    remote: Option<(LegId, Vec<(callrelay_sfu::Mid, String)>)>,
}

/// A track a session publishes, as `track_published` describes it.
#[derive(Clone, Copy, Debug)]
struct PublishedTrack {
    mid: callrelay_sfu::Mid,
    video: bool,
    /// "microphone", "camera" or "screen".
    source: &'static str,
}

impl PublishedTrack {
    fn message(&self, participant: ParticipantId) -> Msg {
        Msg::TrackPublished(TrackPublished {
            participant_id: participant.to_string(),
            kind: if self.video { "video" } else { "audio" }.into(),
            mid: self.mid.to_string(),
            source: self.source.into(),
        })
    }
}

/// Room updates a slow receiver only needs the latest of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Coalesce {
    /// A participant's mute state.
    Mute(ParticipantId),
    /// The room's active speaker.
    Speaker,
}

/// Room updates are held back (coalesced) once a receiver's queue has no more than this many
/// free places, which stay for what it must get in full (joins, leaves, tracks, SDP, removal).
const COALESCE_BELOW: usize = super::SESSION_QUEUE / 4;

fn coalesce_key(msg: &Msg) -> Option<Coalesce> {
    match msg {
        Msg::MuteChanged(m) => super::parse_participant_id(&m.participant_id).map(Coalesce::Mute),
        Msg::ActiveSpeaker(_) => Some(Coalesce::Speaker),
        _ => None,
    }
}

struct RoomInfo {
    /// The call's link (events name it by digest unless the operator opted in).
    link: callrelay_links::LinkId,
    creator: UserId,
    /// When its first participant joined.
    since: chrono::DateTime<chrono::Utc>,
    /// Who shares their screen (one at a time).
    sharer: Option<ParticipantId>,
    /// This node serves the call as a leg of it: `call.started` and `call.ended` are the
    /// home's to send.
    leg: bool,
}

struct Worker {
    index: usize,
    label: String,
    sfu: Sfu,
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    /// ICE-TCP connections on the same port, if `media.tcp` is on.
    tcp: Option<TcpPlane>,
    metrics: MediaMetrics,
    /// Where call and participant events go (`None`: no webhooks configured).
    webhooks: Option<Arc<crate::webhooks::Webhooks>>,
    sessions: HashMap<ParticipantId, Session>,
    rooms: HashMap<RoomKey, RoomInfo>,
    busy: Duration,
    totals: Arc<Totals>,
    /// (rooms, participants) last added to `totals`.
    reported: (i64, i64),
    /// Outgoing datagrams of this turn, laid out for `sendmmsg`; its buffers are reused.
    pending: Pending,
    /// Sends `pending`; counts its syscalls and datagrams.
    sender: Sender,
    /// The kernel refused a GSO send on this socket (a driver without UDP GSO): no more runs.
    gso_refused: bool,
    /// Sessions with a non-empty `backlog`.
    backlogged: Vec<ParticipantId>,
    /// Where this worker publishes its counts for the scrape-time collector.
    counts: WorkerCountsCell,
    /// Outgoing datagrams the kernel refused.
    send_failed: u64,
    /// `callrelay_forward_latency_seconds`, observed locally per copy and flushed to the shared
    /// histogram once per burst.
    latency: LocalHistogram,
    /// Calls across nodes (`None` without a trunk).
    cascade: Option<CascadeLink>,
    /// The trunk numbers of the tracks published here, and their layers.
    track_numbers: HashMap<(ParticipantId, callrelay_sfu::Mid), (u32, Vec<Rid>)>,
    next_track: u32,
    /// The tracks of other legs' participants, by (leg, trunk number).
    remote_tracks: HashMap<(LegId, u32), (ParticipantId, callrelay_sfu::Mid, Vec<Rid>)>,
    /// Layers other legs asked for of a local track not published yet (the other legs publish
    /// it from the participant's offer, before its DTLS is up here): applied when it is.
    pending_demand: HashMap<(ParticipantId, callrelay_sfu::Mid), Vec<LegDemand>>,
}

impl Worker {
    /// The event loop. Priorities, in order: received datagrams (media is latency-bound), then
    /// ICE-TCP frames (the same, for the few clients that cannot use UDP), then commands
    /// (joins, SDP, removals), then timers; each with a budget per turn.
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF]).collect();
        let mut meta = [RecvMeta::default(); BATCH];
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_tick = Instant::now();
        // Backlogged room updates are retried this often while there are any.
        let mut backlog_tick = tokio::time::interval(Duration::from_millis(50));
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .sfu
                .poll_timeout()
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
            let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(deadline));
            tokio::select! {
                biased;
                r = self.socket.readable() => {
                    if r.is_err() {
                        continue;
                    }
                    let started = Instant::now();
                    for _ in 0..RECV_BUDGET {
                        if !self.receive_batch(&mut bufs, &mut meta).await {
                            break;
                        }
                    }
                    // Under sustained input the socket is readable at every turn and, biased,
                    // the timer branch below would never run (str0m's RTCP, pacing and DTLS
                    // timers, idle removal): serve a deadline that has passed here as well
                    // (the one computed for this turn; no second walk over the participants).
                    let now = Instant::now();
                    if deadline <= now {
                        self.sfu.handle_timeout(now);
                        self.flush().await;
                    }
                    // Counters once per burst, not per packet.
                    self.update_stats();
                    self.busy += started.elapsed();
                }
                input = TcpPlane::next(&mut self.tcp) => {
                    let started = Instant::now();
                    self.tcp_input(input).await;
                    for _ in 1..TCP_BUDGET {
                        match self.tcp.as_mut().and_then(TcpPlane::try_next) {
                            Some(input) => self.tcp_input(input).await,
                            None => break,
                        }
                    }
                    let now = Instant::now();
                    if deadline <= now {
                        self.sfu.handle_timeout(now);
                    }
                    self.flush().await;
                    self.update_stats();
                    self.busy += started.elapsed();
                }
                cmd = commands.recv() => {
                    let started = Instant::now();
                    let Some(cmd) = cmd else { break };
                    if !self.command(cmd).await {
                        break;
                    }
                    for _ in 1..COMMAND_BUDGET {
                        match commands.try_recv() {
                            Ok(cmd) => {
                                if !self.command(cmd).await {
                                    self.finish().await;
                                    return;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    // What media from the trunk queued leaves together.
                    self.flush().await;
                    self.update_stats();
                    self.busy += started.elapsed();
                }
                _ = sleep => {
                    let started = Instant::now();
                    self.sfu.handle_timeout(Instant::now());
                    self.flush().await;
                    self.update_stats();
                    self.busy += started.elapsed();
                }
                _ = backlog_tick.tick(), if !self.backlogged.is_empty() => {
                    self.flush_backlogs();
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    let span = now.saturating_duration_since(last_tick).as_secs_f64();
                    if span > 0.0 {
                        let ratio = (self.busy.as_secs_f64() / span).min(1.0);
                        self.metrics.worker_busy.with_label_values(&[&self.label]).set(ratio);
                    }
                    self.busy = Duration::ZERO;
                    last_tick = now;
                }
            }
        }
        self.finish().await;
    }

    async fn finish(&mut self) {
        self.sfu.remove_all(Instant::now(), RemoveReason::Drain);
        self.flush().await;
        self.update_stats();
        self.gauges();
        tracing::debug!(worker = self.index, "media worker stopped");
    }

    /// Reads one batch; false when the socket has nothing more now.
    async fn receive_batch(&mut self, bufs: &mut [Vec<u8>], meta: &mut [RecvMeta]) -> bool {
        let n = {
            let mut it = bufs.iter_mut();
            let mut iovs: [IoSliceMut<'_>; BATCH] = std::array::from_fn(|_| {
                IoSliceMut::new(
                    it.next()
                        .expect("run() allocates BATCH buffers")
                        .as_mut_slice(),
                )
            });
            let state = &self.state;
            let socket = &self.socket;
            match socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut iovs, meta)
            }) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) => {
                    tracing::debug!(worker = self.index, error = %e, "media receive failed");
                    return false;
                }
            }
        };
        // When the batch left the kernel: every datagram of it arrived by then, and what its
        // copies wait for from there (the datagrams before it in the batch included) counts
        // in `callrelay_forward_latency_seconds`. Read once per batch, not per datagram: a
        // datagram's own processing start would hide the wait behind those before it.
        let read_at = Instant::now();
        for (m, buf) in meta.iter().zip(bufs.iter()).take(n) {
            let stride = m.stride.max(1);
            let mut off = 0;
            while off < m.len {
                let end = (off + stride).min(m.len);
                self.datagram(read_at, m.addr, &buf[off..end]);
                off = end;
                // Copies leave as soon as enough of them wait and a full sendmmsg's worth is
                // out, not at the end of the batch: the first datagrams' copies do not wait
                // for the whole batch's fan-out (at a fan-out of 29, a batch of 32 is ~900
                // copies, ~7 ms of work).
                if self.sfu.undriven_copies() >= DRIVE_AT {
                    self.sfu.drive_pending(Instant::now());
                }
                self.queue_transmits().await;
                if self.pending.unsent().len() >= callrelay_udp::MAX_ENTRIES {
                    self.send_pending().await;
                }
            }
        }
        // Work per burst: the whole batch is in the core; each session it copied packets
        // into is driven once for all of them, and what it has to send for all of it (the
        // fan-out of every packet to every subscriber) leaves together.
        self.sfu.drive_pending(Instant::now());
        self.flush().await;
        true
    }

    /// Feeds one ICE-TCP frame to the core (a close needs nothing: the core forgets the
    /// address when its participant leaves or moves); its output waits for [`Worker::flush`].
    async fn tcp_input(&mut self, input: TcpInput) {
        let TcpInput::Frame { source, at, bytes } = input else {
            return;
        };
        tracing::trace!(worker = self.index, len = bytes.len(), "ICE-TCP frame");
        // The passive TCP candidate has the address of the UDP one of the source's family.
        let destination = self.sfu.config().local_addr_for(source);
        self.sfu.handle_tcp_frame(at, source, destination, &bytes);
        self.queue_transmits().await;
    }

    /// Feeds one datagram of a receive batch to the core; the sessions it copies media into
    /// wait for `Sfu::drive_pending`, their output for [`Worker::flush`].
    fn datagram(&mut self, now: Instant, source: SocketAddr, bytes: &[u8]) {
        tracing::trace!(worker = self.index, len = bytes.len(), "datagram");
        // Sent to the candidate of the source's family (a dual-stack socket serves an IPv4 and
        // an IPv6 one); the core unmaps an IPv4-mapped source itself.
        let destination = self.sfu.config().local_addr_for(source);
        // Driven at the end of the batch (or sooner, see `DRIVE_AT`).
        self.sfu
            .handle_datagram_deferred(now, source, destination, bytes);
    }

    /// Sends every pending datagram and dispatches every event. What the core has queued (after
    /// a receive batch: every packet's copies for every subscriber) leaves together, many
    /// destinations per `sendmmsg`, a run of equal-size datagrams to one destination as one GSO
    /// entry (see [`super::gso`]). A forwarded copy (it carries the arrival time of the datagram
    /// it copies, however long str0m's pacer held it) is timed when the call that carries it
    /// returns.
    async fn flush(&mut self) {
        self.queue_transmits().await;
        while let Some(e) = self.sfu.poll_event() {
            self.event(e);
        }
        // Events may have queued transmits (removals close DTLS).
        self.queue_transmits().await;
        self.send_pending().await;
    }

    /// Moves the core's transmits into `pending`, sending first whenever it is full.
    async fn queue_transmits(&mut self) {
        self.send_trunk();
        let max_segments = if self.gso_refused {
            1
        } else {
            self.state.max_gso_segments().max(1)
        };
        while let Some(t) = self.sfu.poll_transmit() {
            if t.proto != Protocol::Udp {
                // An ICE-TCP peer: one frame on its connection, never waited on.
                match self.tcp.as_mut() {
                    Some(tcp) => tcp.send(t.destination, &t.contents),
                    None => self.count_send_failed(1),
                }
                continue;
            }
            if self
                .pending
                .push(t.destination, &t.contents, t.received_at, max_segments)
            {
                continue;
            }
            self.send_pending().await;
            if !self
                .pending
                .push(t.destination, &t.contents, t.received_at, max_segments)
            {
                // An empty queue takes any datagram UDP can carry: this one it cannot.
                self.count_send_failed(1);
            }
        }
    }

    /// Hands `pending` to the kernel, as few `sendmmsg` calls as it takes, then empties it.
    ///
    /// Nothing is dropped silently: a full socket buffer (`WouldBlock`, also what the kernel
    /// ends a partial send on) is waited out; a GSO entry the path refuses is resent datagram
    /// by datagram, and GSO stays off for this socket (as quinn-udp does); any other error is
    /// that entry's (UDP is lossy anyway): logged at debug, counted as dropped
    /// (`send_failed`), and the rest goes on.
    async fn send_pending(&mut self) {
        while !self.pending.is_done() {
            let result = {
                let (sender, pending, socket) = (&mut self.sender, &self.pending, &self.socket);
                socket.try_io(Interest::WRITABLE, || {
                    sender.send(socket, pending.buf(), pending.unsent())
                })
            };
            match result {
                Ok(n) => {
                    let sent = Instant::now();
                    for t in self.pending.advance(n) {
                        self.latency
                            .observe(sent.saturating_duration_since(t).as_secs_f64());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // `try_io` cleared the readiness the failed call used up: this sleeps
                    // until the kernel has room, it does not spin.
                    if let Err(e) = self.socket.writable().await {
                        tracing::warn!(worker = self.index, error = %e, "media socket unusable for sending");
                        let lost = self.pending.unsent().iter().map(Run::datagrams).sum();
                        self.count_send_failed(lost);
                        break;
                    }
                }
                Err(e)
                    if self.pending.unsent().first().is_some_and(Run::is_gso)
                        && callrelay_udp::gso_refused(&e) =>
                {
                    if !self.gso_refused {
                        tracing::info!(worker = self.index, error = %e, "the kernel refused a GSO send: one datagram per entry from now on");
                        self.gso_refused = true;
                    }
                    self.pending.split_runs();
                }
                Err(e) => {
                    tracing::debug!(worker = self.index, error = %e, "media send failed");
                    let lost = self.pending.skip();
                    self.count_send_failed(lost);
                }
            }
        }
        self.pending.clear();
    }

    /// Counts datagrams the kernel would not take (rare: not per packet in a healthy run).
    fn count_send_failed(&mut self, datagrams: usize) {
        self.send_failed += datagrams as u64;
    }

    /// Publishes this worker's counts for the scrape-time collector and flushes the latencies
    /// observed since the last call: once per burst, not per packet.
    fn update_stats(&mut self) {
        let tcp = self.tcp.as_ref().map(|t| t.drops).unwrap_or_default();
        let counts = WorkerCounts {
            sfu: self.sfu.stats(),
            sends: self.sender.stats(),
            send_failed: self.send_failed + tcp.no_connection,
            tcp_bad_frame: tcp.bad_frame,
            tcp_overflow: tcp.overflow,
            tcp_refused: tcp.refused,
        };
        *self.counts.lock().unwrap_or_else(|e| e.into_inner()) = counts;
        self.latency.flush();
    }

    /// Queues a message to one participant.
    ///
    /// Room updates that only matter in their latest form (mute states, the active speaker) are
    /// coalesced per receiver: once its queue is nearly full they wait in its backlog, a newer
    /// one replacing an older one, and go out as it reads ([`Worker::flush_backlogs`]). So one
    /// participant's traffic never fills another's queue. Everything else must arrive in full:
    /// a receiver that lets its queue fill with those (it stopped reading) is removed.
    fn tell(&mut self, to: ParticipantId, msg: Msg) {
        let Some(s) = self.sessions.get_mut(&to) else {
            return;
        };
        if s.remote.is_some() {
            // Told on its own leg.
            return;
        }
        if let Some(key) = coalesce_key(&msg) {
            if !s.backlog.is_empty() || s.tx.capacity() <= COALESCE_BELOW {
                if let Some(slot) = s.backlog.iter_mut().find(|(k, _)| *k == key) {
                    slot.1 = msg;
                    self.metrics.signaling_coalesced.inc();
                } else {
                    if s.backlog.is_empty() {
                        self.backlogged.push(to);
                    }
                    s.backlog.push((key, msg));
                }
                return;
            }
        } else if let Msg::ParticipantLeft(left) = &msg {
            // No stale mute state of someone who left.
            if let Some(gone) = super::parse_participant_id(&left.participant_id) {
                s.backlog.retain(|(k, _)| *k != Coalesce::Mute(gone));
            }
        }
        match s.tx.try_send(ServerMessage::from(msg)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::info!(worker = self.index, participant = %to, "signaling queue full: removing the participant");
                let _ = self
                    .sfu
                    .remove_participant(Instant::now(), to, RemoveReason::Error);
            }
            Err(TrySendError::Closed(_)) => {
                let _ = self
                    .sfu
                    .remove_participant(Instant::now(), to, RemoveReason::Left);
            }
        }
    }

    /// Moves backlogged room updates into the queues that have room again.
    fn flush_backlogs(&mut self) {
        if self.backlogged.is_empty() {
            return;
        }
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.backlogged) {
            let Some(s) = self.sessions.get_mut(&p) else {
                continue;
            };
            while s.tx.capacity() > COALESCE_BELOW && !s.backlog.is_empty() {
                let (_, msg) = s.backlog.remove(0);
                if s.tx.try_send(ServerMessage::from(msg)).is_err() {
                    break;
                }
            }
            if !s.backlog.is_empty() {
                still.push(p);
            }
        }
        self.backlogged = still;
    }

    /// Tells the whole room (the sharer included) who shares now.
    fn screen_shared(&mut self, room: RoomKey, participant: ParticipantId, active: bool) {
        self.tell_room(
            room,
            None,
            Msg::ScreenShare(ScreenShared {
                participant_id: participant.to_string(),
                active,
            }),
        );
    }

    /// The sharer gave the screen share back or left.
    fn stop_share(&mut self, room: RoomKey, participant: ParticipantId) {
        let held = self
            .rooms
            .get_mut(&room)
            .filter(|r| r.sharer == Some(participant))
            .map(|r| r.sharer = None)
            .is_some();
        if held {
            self.screen_shared(room, participant, false);
        }
    }

    /// `participant.left` (with the reason), and `participant.removed` or `participant.blocked`
    /// when the creator or an operator removed or blocked them.
    fn participant_left_event(
        &self,
        room: RoomKey,
        participant: ParticipantId,
        reason: RemoveReason,
    ) {
        let (Some(w), Some(r)) = (&self.webhooks, self.rooms.get(&room)) else {
            return;
        };
        // Another leg's participant: its own node sends its webhooks.
        if self
            .sessions
            .get(&participant)
            .is_some_and(|s| s.remote.is_some())
        {
            return;
        }
        let user = self
            .sessions
            .get(&participant)
            .map(|s| s.user.as_str().to_owned());
        let fields = || {
            crate::fields! {
                "participant_id" => participant.to_string(),
                "user" => user.clone(),
                "reason" => reason.as_str(),
            }
        };
        w.emit_call("participant.left", &r.link, fields());
        match reason {
            RemoveReason::Kicked => w.emit_call("participant.removed", &r.link, fields()),
            RemoveReason::Blocked => w.emit_call("participant.blocked", &r.link, fields()),
            _ => {}
        }
    }

    /// Sends `msg` to every member of `room` except `except`.
    fn tell_room(&mut self, room: RoomKey, except: Option<ParticipantId>, msg: Msg) {
        for p in self.sfu.room_members(room) {
            if Some(p) != except {
                self.tell(p, msg.clone());
            }
        }
    }

    fn event(&mut self, e: Event) {
        match e {
            Event::TrunkDemand {
                room,
                publisher,
                mid,
                layers,
            } => {
                let message = Control::Demand {
                    call: room.0,
                    participant: publisher.to_string(),
                    mid: mid.to_string(),
                    layers: layers.iter().map(|l| l.map(|r| r.to_string())).collect(),
                };
                self.to_leg_of(publisher, message);
            }
            Event::TrunkKeyframeRequest {
                room,
                publisher,
                mid,
                rid,
            } => {
                let message = Control::Keyframe {
                    call: room.0,
                    participant: publisher.to_string(),
                    mid: mid.to_string(),
                    rid: rid.map(|r| r.to_string()),
                };
                self.to_leg_of(publisher, message);
            }
            Event::FirstMedia {
                participant, at, ..
            } => {
                if let Some(t) = self
                    .sessions
                    .get_mut(&participant)
                    .and_then(|s| s.started.take())
                {
                    self.metrics
                        .join_to_first_packet
                        .observe(at.saturating_duration_since(t).as_secs_f64());
                }
            }
            Event::ParticipantJoined { room, participant } => {
                let Some(info) = self.participant_info(participant) else {
                    return;
                };
                // Another leg's participant: its own node sends its webhooks.
                let local = self
                    .sessions
                    .get(&participant)
                    .is_some_and(|s| s.remote.is_none());
                if let (Some(w), Some(r), true) = (&self.webhooks, self.rooms.get(&room), local) {
                    w.emit_call(
                        "participant.joined",
                        &r.link,
                        crate::fields! {
                            "participant_id" => participant.to_string(),
                            "user" => info.user_id.clone(),
                            "name" => info.name.clone(),
                        },
                    );
                }
                self.tell_room(
                    room,
                    Some(participant),
                    Msg::ParticipantJoined(ParticipantJoined {
                        participant: Some(info),
                    }),
                );
                self.leg_update(participant);
            }
            Event::ParticipantLeft {
                room,
                participant,
                reason,
            } => {
                self.metrics
                    .participants_removed
                    .with_label_values(&[reason.as_str()])
                    .inc();
                self.participant_left_event(room, participant, reason);
                self.stop_share(room, participant);
                self.tell_room(
                    room,
                    Some(participant),
                    Msg::ParticipantLeft(ParticipantLeft {
                        participant_id: participant.to_string(),
                        reason: reason.as_str().into(),
                    }),
                );
            }
            Event::Removed {
                room,
                participant,
                reason,
            } => {
                if reason != RemoveReason::Left {
                    self.tell(
                        participant,
                        Msg::Removed(Removed {
                            reason: reason.as_str().into(),
                        }),
                    );
                }
                // Dropping the sender ends the session once it has sent what is queued.
                if let Some(s) = self.sessions.remove(&participant) {
                    for t in s.tracks.iter().filter(|_| s.remote.is_none()) {
                        self.metrics
                            .published_tracks
                            .with_label_values(&[if t.video { "video" } else { "audio" }])
                            .dec();
                    }
                    self.track_numbers.retain(|(p, _), _| *p != participant);
                    self.pending_demand.retain(|(p, _), _| *p != participant);
                    match s.remote {
                        Some((leg, _)) => {
                            self.remote_tracks
                                .retain(|(l, _), (p, _, _)| !(*l == leg && *p == participant));
                        }
                        None => self.local_left(room, participant),
                    }
                }
                if self.sfu.room_members(room).is_empty() {
                    if let Some(r) = self.rooms.remove(&room).filter(|r| !r.leg) {
                        if let Some(w) = &self.webhooks {
                            let secs = (chrono::Utc::now() - r.since).num_seconds().max(0);
                            w.emit_call(
                                "call.ended",
                                &r.link,
                                crate::fields! { "length_s" => secs },
                            );
                        }
                    }
                }
                self.gauges();
            }
            Event::TrackPublished {
                room,
                participant,
                mid,
                kind,
            } => {
                let video = kind == TrackKind::Video;
                let sharing = self
                    .rooms
                    .get(&room)
                    .is_some_and(|r| r.sharer == Some(participant));
                let Some(s) = self.sessions.get_mut(&participant) else {
                    return;
                };
                // A sharer's video beyond its camera is the screen; another leg's participant
                // has the source its leg gave.
                let remote = s.remote.is_some();
                let source = match (&s.remote, video) {
                    (Some((_, sources)), _) => source_name(
                        sources
                            .iter()
                            .find(|(m, _)| *m == mid)
                            .map_or(if video { "camera" } else { "microphone" }, |(_, src)| {
                                src.as_str()
                            }),
                    ),
                    (None, false) => "microphone",
                    (None, true) if sharing && s.tracks.iter().any(|t| t.video) => "screen",
                    (None, true) => "camera",
                };
                let track = PublishedTrack { mid, video, source };
                s.tracks.push(track);
                if !remote {
                    self.metrics
                        .published_tracks
                        .with_label_values(&[if video { "video" } else { "audio" }])
                        .inc();
                }
                self.tell_room(room, Some(participant), track.message(participant));
                self.leg_update(participant);
                for (leg, layers) in self
                    .pending_demand
                    .remove(&(participant, mid))
                    .unwrap_or_default()
                {
                    let _ =
                        self.sfu
                            .set_trunk_demand(Instant::now(), participant, mid, leg, &layers);
                }
            }
            Event::TrackUnpublished {
                room,
                participant,
                mid,
            } => {
                let Some(s) = self.sessions.get_mut(&participant) else {
                    return;
                };
                let Some(i) = s.tracks.iter().position(|t| t.mid == mid) else {
                    return;
                };
                let t = s.tracks.remove(i);
                if s.remote.is_none() {
                    self.metrics
                        .published_tracks
                        .with_label_values(&[if t.video { "video" } else { "audio" }])
                        .dec();
                }
                self.track_numbers.remove(&(participant, mid));
                self.leg_update(participant);
                self.tell_room(
                    room,
                    Some(participant),
                    Msg::TrackUnpublished(TrackUnpublished {
                        participant_id: participant.to_string(),
                        mid: mid.to_string(),
                    }),
                );
            }
            Event::ActiveSpeaker { room, participant } => {
                self.tell_room(
                    room,
                    None,
                    Msg::ActiveSpeaker(ActiveSpeaker {
                        participant_id: participant.to_string(),
                    }),
                );
            }
            Event::SdpOffer { participant, sdp } => {
                self.tell(participant, Msg::Offer(SessionDescription { sdp }));
            }
            Event::CodecUnsupported {
                participant,
                publisher,
                mid,
                codec,
                ..
            } => {
                self.metrics
                    .signaling_errors
                    .with_label_values(&["codec_unsupported"])
                    .inc();
                self.tell(
                    participant,
                    Msg::Error(ErrorMsg {
                        code: "codec_unsupported".into(),
                        message: format!(
                            "participant {publisher} sends {codec} on track {mid} and your answer \
                             accepts no codec it can be forwarded as: you will not receive that \
                             track"
                        ),
                    }),
                );
            }
        }
    }

    /// Its rooms (or only `only`) with their participants, for the operator's room API.
    fn inspect(&self, only: Option<RoomKey>, now: Instant) -> Vec<RoomReport> {
        self.rooms
            .iter()
            .filter(|(k, _)| only.is_none_or(|o| o == **k))
            .map(|(room, info)| RoomReport {
                room: *room,
                since: info.since,
                participants: self
                    .sfu
                    .room_members(*room)
                    .into_iter()
                    .filter_map(|p| {
                        // Another leg's participant is reported by its own node.
                        let s = self.sessions.get(&p).filter(|s| s.remote.is_none())?;
                        Some(ParticipantReport {
                            participant: p,
                            user: s.user.clone(),
                            name: s.name.clone(),
                            joined_at: s.joined_at,
                            audio_muted: s.audio_muted,
                            video_muted: s.video_muted,
                            bitrate: self.sfu.media_bitrate(p, now).unwrap_or_default(),
                        })
                    })
                    .collect(),
            })
            .filter(|r| !r.participants.is_empty())
            .collect()
    }

    fn participant_info(&self, p: ParticipantId) -> Option<Participant> {
        let s = self.sessions.get(&p)?;
        Some(Participant {
            participant_id: p.to_string(),
            user_id: s.user.as_str().to_owned(),
            name: s.name.clone(),
            audio_muted: s.audio_muted,
            video_muted: s.video_muted,
            clear_media: s.clear_media,
        })
    }

    /// Adds this worker's change in rooms and participants to the node-wide totals (gauges
    /// and [`Totals`]); every worker contributes its own share.
    fn gauges(&mut self) {
        let rooms = self.sfu.room_count() as i64;
        // This node's own: another leg's participants are counted by their node.
        let remote = self
            .sessions
            .values()
            .filter(|s| s.remote.is_some())
            .count();
        let participants = self.sfu.participant_count().saturating_sub(remote) as i64;
        let (dr, dp) = (rooms - self.reported.0, participants - self.reported.1);
        self.reported = (rooms, participants);
        if dr != 0 {
            self.metrics.rooms.add(dr);
            self.totals.rooms.fetch_add(dr, Ordering::Relaxed);
        }
        if dp != 0 {
            self.metrics.participants.add(dp);
            self.totals.participants.fetch_add(dp, Ordering::Relaxed);
        }
    }

    /// Handles one command; false to stop the worker.
    async fn command(&mut self, c: Command) -> bool {
        let now = Instant::now();
        match c {
            Command::Join(req, reply) => {
                let req = *req;
                let participants: Vec<Participant> = self
                    .sfu
                    .room_members(req.room)
                    .into_iter()
                    .filter_map(|p| self.participant_info(p))
                    .collect();
                // The session exists before the core emits its join events.
                self.sessions.insert(
                    req.participant,
                    Session {
                        room: req.room,
                        user: req.user.clone(),
                        name: req.name.clone(),
                        tx: req.session,
                        audio_muted: false,
                        video_muted: false,
                        started: Some(req.started),
                        tracks: Vec::new(),
                        backlog: Vec::new(),
                        joined_at: chrono::Utc::now(),
                        clear_media: req.mode == super::JoinMode::Publish,
                        offer: req.offer.clone(),
                        remote: None,
                    },
                );
                let added = match req.mode {
                    super::JoinMode::Call => self.sfu.add_participant(
                        now,
                        req.room,
                        req.participant,
                        req.kind,
                        Some(&req.offer),
                    ),
                    super::JoinMode::Publish => self
                        .sfu
                        .add_publisher(now, req.room, req.participant, req.kind, &req.offer)
                        .map(Some),
                    super::JoinMode::View { watch } => self
                        .sfu
                        .add_viewer(now, req.room, req.participant, req.kind, &req.offer, watch)
                        .map(Some),
                };
                match added {
                    Ok(answer) => {
                        if let std::collections::hash_map::Entry::Vacant(v) =
                            self.rooms.entry(req.room)
                        {
                            if let (Some(w), false) = (&self.webhooks, req.leg) {
                                w.emit_call("call.started", &req.link, crate::fields! {});
                            }
                            v.insert(RoomInfo {
                                link: req.link,
                                creator: req.creator,
                                since: chrono::Utc::now(),
                                sharer: None,
                                leg: req.leg,
                            });
                        }
                        let sdp = answer.unwrap_or_default();
                        let _ = reply.send(Ok(JoinReply { sdp, participants }));
                        // Queued behind `joined` (the session sends that first).
                        if let Some(sharer) = self.rooms.get(&req.room).and_then(|r| r.sharer) {
                            self.tell(
                                req.participant,
                                Msg::ScreenShare(ScreenShared {
                                    participant_id: sharer.to_string(),
                                    active: true,
                                }),
                            );
                        }
                        // And every track already published: its model of the call starts
                        // complete (the relay's offers carry the m-lines, not their source).
                        let published: Vec<Msg> = self
                            .sfu
                            .room_members(req.room)
                            .into_iter()
                            .filter(|p| *p != req.participant)
                            .filter_map(|p| Some((p, self.sessions.get(&p)?)))
                            .flat_map(|(p, s)| s.tracks.iter().map(move |t| t.message(p)))
                            .collect();
                        for m in published {
                            self.tell(req.participant, m);
                        }
                    }
                    Err(e) => {
                        self.sessions.remove(&req.participant);
                        let _ = reply.send(Err(e));
                    }
                }
                self.gauges();
            }
            Command::Offer(p, sdp, reply) => {
                let answer = self.sfu.handle_sdp_offer(now, p, &sdp);
                if answer.is_ok() {
                    if let Some(s) = self.sessions.get_mut(&p) {
                        s.offer = sdp;
                    }
                    self.leg_update(p);
                }
                let _ = reply.send(answer);
            }
            Command::Answer(p, sdp, reply) => {
                let _ = reply.send(self.sfu.handle_sdp_answer(now, p, &sdp));
            }
            Command::Mute {
                participant,
                audio,
                video,
            } => {
                let Some(s) = self.sessions.get_mut(&participant) else {
                    return true;
                };
                s.audio_muted = audio;
                s.video_muted = video;
                let room = s.room;
                self.tell_room(
                    room,
                    Some(participant),
                    Msg::MuteChanged(MuteChanged {
                        participant_id: participant.to_string(),
                        audio_muted: audio,
                        video_muted: video,
                    }),
                );
                self.leg_update(participant);
            }
            Command::VideoPreference {
                subscriber,
                publisher,
                max_height,
            } => {
                // ≤ 180 → l, ≤ 360 → m, else h; 0 (pause) gets the lowest layer, as the core
                // cannot pause a single subscription.
                let rid = match max_height {
                    0..=180 => "l",
                    181..=360 => "m",
                    _ => "h",
                };
                let mids: Vec<_> = self
                    .sessions
                    .get(&publisher)
                    .map(|s| s.tracks.iter().filter(|t| t.video).map(|t| t.mid).collect())
                    .unwrap_or_default();
                for mid in mids {
                    let _ = self.sfu.set_subscriber_layer(
                        now,
                        subscriber,
                        publisher,
                        mid,
                        Rid::from(rid),
                    );
                }
            }
            Command::Remove(p, reason) => {
                let _ = self.sfu.remove_participant(now, p, reason);
            }
            Command::Kick(room, p, reply) => {
                let here = self.sessions.get(&p).is_some_and(|s| s.room == room);
                let removed = here
                    && self
                        .sfu
                        .remove_participant(now, p, RemoveReason::Kicked)
                        .is_ok();
                let _ = reply.send(removed);
            }
            Command::ScreenShare {
                participant,
                active,
                reply,
            } => {
                let Some(room) = self.sessions.get(&participant).map(|s| s.room) else {
                    let _ = reply.send(Ok(()));
                    return true;
                };
                let holder = self.rooms.get(&room).and_then(|r| r.sharer);
                match (active, holder) {
                    (true, Some(h)) if h != participant => {
                        let name = self
                            .sessions
                            .get(&h)
                            .map(|s| s.name.clone())
                            .filter(|n| !n.is_empty())
                            .unwrap_or_else(|| "someone".into());
                        let _ = reply.send(Err(name));
                    }
                    (true, _) => {
                        if let Some(r) = self.rooms.get_mut(&room) {
                            r.sharer = Some(participant);
                        }
                        let _ = reply.send(Ok(()));
                        self.screen_shared(room, participant, true);
                    }
                    (false, Some(h)) if h == participant => {
                        let _ = reply.send(Ok(()));
                        self.stop_share(room, participant);
                    }
                    (false, _) => {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Command::RequestMute(room, p, reply) => {
                let here = self.sessions.get(&p).is_some_and(|s| s.room == room);
                if here {
                    self.tell(p, Msg::MuteRequested(MuteRequested {}));
                }
                let _ = reply.send(here);
            }
            Command::Inspect(only, reply) => {
                let _ = reply.send(self.inspect(only, now));
                return true;
            }
            Command::RemoveAll(reason) => {
                self.sfu.remove_all(now, reason);
            }
            Command::RemoveRoom(room, reason) => {
                self.sfu.remove_room(now, room, reason);
            }
            Command::RemoveBlocked { blocker, blocked } => {
                let targets: Vec<ParticipantId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| {
                        s.user == blocked
                            && self
                                .rooms
                                .get(&s.room)
                                .is_some_and(|r| r.creator == blocker)
                    })
                    .map(|(p, _)| *p)
                    .collect();
                for p in targets {
                    let _ = self.sfu.remove_participant(now, p, RemoveReason::Blocked);
                }
            }
            Command::TrunkMedia { from, header, rtp } => {
                self.trunk_media(now, from, header, &rtp);
                // Sent with the rest of the batch (see `run`): one `sendmmsg` for many.
                return true;
            }
            Command::Remote { from, message } => self.remote(now, from, *message),
            Command::LegDown(leg) => {
                self.sfu.drop_trunk_leg(leg);
                let gone: Vec<ParticipantId> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.remote.as_ref().is_some_and(|(l, _)| *l == leg))
                    .map(|(p, _)| *p)
                    .collect();
                for p in gone {
                    let _ = self.sfu.remove_participant(now, p, RemoveReason::Left);
                }
            }
            Command::Shutdown => return false,
        }
        self.flush().await;
        self.update_stats();
        true
    }

    /// Tells the other legs of `participant`'s call (a local one) what it is now: its offer,
    /// its tracks (numbered for the trunk here) and its mute state.
    fn leg_update(&mut self, participant: ParticipantId) {
        let Some(c) = &self.cascade else { return };
        let Some(s) = self.sessions.get(&participant) else {
            return;
        };
        if s.remote.is_some() {
            return;
        }
        let Some(info) = self.rooms.get(&s.room) else {
            return;
        };
        let Some(kind) = self.sfu.room_kind(s.room) else {
            return;
        };
        let mut tracks = Vec::with_capacity(s.tracks.len());
        for t in &s.tracks {
            let key = (participant, t.mid);
            let (number, layers) = match self.track_numbers.get(&key) {
                Some(v) => v.clone(),
                None => {
                    let layers = self
                        .sfu
                        .track_layers(participant, t.mid)
                        .unwrap_or_default();
                    let n = self.next_track;
                    self.next_track = self.next_track.wrapping_add(1);
                    self.track_numbers.insert(key, (n, layers.clone()));
                    (n, layers)
                }
            };
            tracks.push(LegTrack {
                mid: t.mid.to_string(),
                track: number,
                layers: layers.iter().map(|r| r.to_string()).collect(),
                source: t.source.into(),
            });
        }
        let _ = c.updates.send(Update::Local {
            call: s.room,
            link: info.link,
            kind,
            participant: LegParticipant {
                id: participant.to_string(),
                user: s.user.as_str().to_owned(),
                name: s.name.clone(),
                offer: s.offer.clone(),
                audio_muted: s.audio_muted,
                video_muted: s.video_muted,
                tracks,
            },
        });
    }

    /// A local participant of `room` is gone: the other legs are told; when it was the last
    /// one here, the call's other legs' participants are taken out of it and the legs told
    /// this node no longer serves it.
    fn local_left(&mut self, room: RoomKey, participant: ParticipantId) {
        let Some(c) = self.cascade.clone() else {
            return;
        };
        let _ = c.updates.send(Update::LocalLeft {
            call: room,
            participant: participant.to_string(),
        });
        let local_left = self
            .sessions
            .values()
            .any(|s| s.room == room && s.remote.is_none());
        if local_left {
            return;
        }
        let remotes: Vec<ParticipantId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.room == room)
            .map(|(p, _)| *p)
            .collect();
        let _ = c.updates.send(Update::Ended { call: room });
        let now = Instant::now();
        for p in remotes {
            let _ = self.sfu.remove_participant(now, p, RemoveReason::Left);
        }
    }

    /// A message for the leg of the remote publisher `publisher`.
    fn to_leg_of(&self, publisher: ParticipantId, message: Control) {
        let (Some(c), Some(s)) = (&self.cascade, self.sessions.get(&publisher)) else {
            return;
        };
        if let Some((leg, _)) = &s.remote {
            let _ = c.updates.send(Update::Send { to: *leg, message });
        }
    }

    /// Sends what the core exported to other legs: each packet once per leg that wants it.
    fn send_trunk(&mut self) {
        let Some(c) = &self.cascade else {
            // Without a trunk nothing is ever exported (no leg asks).
            return;
        };
        // Read once per call, and only when something is exported: this runs after every
        // datagram.
        let mut clocks: Option<(u64, Instant)> = None;
        while let Some(pkt) = self.sfu.poll_trunk_packet() {
            let (wall_us, now) = *clocks.get_or_insert_with(|| {
                let wall = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_micros();
                (u64::try_from(wall).unwrap_or(0), Instant::now())
            });
            let Some((track, layers)) = self.track_numbers.get(&(pkt.publisher, pkt.mid)) else {
                // Not told to the other legs yet: they could not place it.
                continue;
            };
            let layer = match pkt.rid {
                Some(r) => match layers.iter().position(|l| *l == r) {
                    Some(i) => u8::try_from(i).ok(),
                    None => continue,
                },
                None => None,
            };
            let age = now.saturating_duration_since(pkt.received_at);
            let header = callrelay_trunk::MediaHeader {
                call: pkt.room.0,
                track: *track,
                layer,
                arrival_us: wall_us.saturating_sub(u64::try_from(age.as_micros()).unwrap_or(0)),
            };
            let rtp = callrelay_trunk::RtpFields {
                marker: pkt.rtp.marker,
                pt: *pkt.rtp.pt,
                seq: pkt.rtp.seq,
                timestamp: pkt.rtp.timestamp,
                audio_level: pkt.rtp.audio_level,
                voice_activity: pkt.rtp.voice_activity,
                video_orientation: pkt.rtp.video_orientation,
            }
            .encode(&pkt.rtp.payload);
            for leg in &pkt.legs {
                if let Some(peer) = c.legs.peer(*leg) {
                    // Dropped packets are counted by the trunk, by reason.
                    let _ = peer.send_media(&header, &rtp);
                }
            }
        }
    }

    /// A media datagram from another leg: to the local subscribers of its track.
    fn trunk_media(
        &mut self,
        now: Instant,
        from: LegId,
        header: callrelay_trunk::MediaHeader,
        rtp: &[u8],
    ) {
        let Some(c) = &self.cascade else { return };
        let Some((fields, payload)) = callrelay_trunk::RtpFields::decode(rtp) else {
            c.counters.drop_one("malformed");
            return;
        };
        let Some((publisher, mid, layers)) = self.remote_tracks.get(&(from, header.track)) else {
            // Its publication has not arrived yet, or it left: counted by the core.
            self.sfu.handle_trunk_rtp(
                now,
                now,
                ParticipantId(0),
                callrelay_sfu::Mid::from("-"),
                None,
                trunk_rtp(fields, payload),
            );
            return;
        };
        let rid = match header.layer {
            Some(i) => match layers.get(usize::from(i)) {
                Some(r) => Some(*r),
                None => {
                    c.counters.drop_one("malformed");
                    return;
                }
            },
            None => None,
        };
        // Arrival at the first node, on this node's clock (the cluster's clocks are
        // NTP-synced): the forward latency is timed from it across the hop.
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let age = Duration::from_micros(
            u64::try_from(wall_us)
                .unwrap_or(u64::MAX)
                .saturating_sub(header.arrival_us)
                .min(10_000_000),
        );
        let arrival = now.checked_sub(age).unwrap_or(now);
        let (publisher, mid) = (*publisher, *mid);
        self.sfu.handle_trunk_rtp(
            now,
            arrival,
            publisher,
            mid,
            rid,
            trunk_rtp(fields, payload),
        );
    }

    /// A control message from another leg about a call on this worker.
    fn remote(&mut self, now: Instant, from: LegId, message: Control) {
        let call = RoomKey(message.call());
        // Only calls with participants here.
        let local_here = self
            .sessions
            .values()
            .any(|s| s.room == call && s.remote.is_none());
        if !local_here {
            return;
        }
        match message {
            Control::Joined {
                kind, participant, ..
            } => self.remote_joined(now, from, call, &kind, participant),
            Control::Left { participant, .. } => {
                if let Some(p) = super::parse_participant_id(&participant)
                    .filter(|p| self.remote_from(*p) == Some(from))
                {
                    let _ = self.sfu.remove_participant(now, p, RemoveReason::Left);
                }
            }
            Control::Present { participants, .. } => {
                let keep: Vec<ParticipantId> = participants
                    .iter()
                    .filter_map(|p| super::parse_participant_id(p))
                    .collect();
                let gone: Vec<ParticipantId> = self
                    .sessions
                    .iter()
                    .filter(|(p, s)| {
                        s.room == call
                            && s.remote.as_ref().is_some_and(|(l, _)| *l == from)
                            && !keep.contains(p)
                    })
                    .map(|(p, _)| *p)
                    .collect();
                for p in gone {
                    let _ = self.sfu.remove_participant(now, p, RemoveReason::Left);
                }
            }
            Control::Demand {
                participant,
                mid,
                layers,
                ..
            } => {
                let Some(p) = super::parse_participant_id(&participant) else {
                    return;
                };
                let layers: Vec<Option<Rid>> =
                    layers.iter().map(|l| l.as_deref().map(Rid::from)).collect();
                let mid = callrelay_sfu::Mid::from(mid.as_str());
                let local = self.sessions.get(&p).is_some_and(|s| s.remote.is_none());
                if let Err(callrelay_sfu::SfuError::UnknownTrack) =
                    self.sfu.set_trunk_demand(now, p, mid, from, &layers)
                {
                    if local {
                        // Published here once its DTLS is up: the demand waits for it.
                        let pending = self.pending_demand.entry((p, mid)).or_default();
                        pending.retain(|(l, _)| *l != from);
                        pending.push((from, layers));
                    }
                }
            }
            Control::Keyframe {
                participant,
                mid,
                rid,
                ..
            } => {
                if let Some(p) = super::parse_participant_id(&participant) {
                    self.sfu.handle_trunk_keyframe_request(
                        now,
                        p,
                        callrelay_sfu::Mid::from(mid.as_str()),
                        rid.as_deref().map(Rid::from),
                    );
                }
            }
            Control::Hello { .. } => {}
        }
    }

    /// The leg of a remote participant.
    fn remote_from(&self, p: ParticipantId) -> Option<LegId> {
        self.sessions
            .get(&p)
            .and_then(|s| s.remote.as_ref().map(|(l, _)| *l))
    }

    /// Another leg's participant joined or changed: added as a remote publisher (its tracks
    /// published here, local participants told), or its offer, tracks and mute state updated.
    fn remote_joined(
        &mut self,
        now: Instant,
        from: LegId,
        call: RoomKey,
        kind: &str,
        lp: LegParticipant,
    ) {
        let Some(p) = super::parse_participant_id(&lp.id) else {
            return;
        };
        let kind = match kind {
            "voice" => callrelay_sfu::RoomKind::Voice,
            _ => callrelay_sfu::RoomKind::Video,
        };
        let sources: Vec<(callrelay_sfu::Mid, String)> = lp
            .tracks
            .iter()
            .map(|t| (callrelay_sfu::Mid::from(t.mid.as_str()), t.source.clone()))
            .collect();
        self.remote_tracks
            .retain(|(l, _), (q, _, _)| !(*l == from && *q == p));
        for t in &lp.tracks {
            self.remote_tracks.insert(
                (from, t.track),
                (
                    p,
                    callrelay_sfu::Mid::from(t.mid.as_str()),
                    t.layers.iter().map(|r| Rid::from(r.as_str())).collect(),
                ),
            );
        }
        match self.sessions.get_mut(&p) {
            Some(s) if s.remote.as_ref().is_some_and(|(l, _)| *l == from) => {
                s.remote = Some((from, sources));
                let changed_mute =
                    s.audio_muted != lp.audio_muted || s.video_muted != lp.video_muted;
                s.audio_muted = lp.audio_muted;
                s.video_muted = lp.video_muted;
                let new_offer = s.offer != lp.offer;
                s.offer = lp.offer.clone();
                if new_offer {
                    if let Err(e) = self.sfu.handle_sdp_offer(now, p, &lp.offer) {
                        tracing::warn!(worker = self.index, participant = %p, error = %e, "cascade: another leg's participant's new offer refused here");
                    }
                }
                if changed_mute {
                    self.tell_room(
                        call,
                        Some(p),
                        Msg::MuteChanged(MuteChanged {
                            participant_id: p.to_string(),
                            audio_muted: lp.audio_muted,
                            video_muted: lp.video_muted,
                        }),
                    );
                }
            }
            // A local participant (or another leg's) by that id: not this one.
            Some(_) => {}
            None => {
                let Ok(user) = UserId::parse(&lp.user) else {
                    return;
                };
                // The session exists before the core emits its join events.
                self.sessions.insert(
                    p,
                    Session {
                        room: call,
                        user,
                        name: lp.name.clone(),
                        tx: mpsc::channel(1).0,
                        audio_muted: lp.audio_muted,
                        video_muted: lp.video_muted,
                        started: None,
                        tracks: Vec::new(),
                        backlog: Vec::new(),
                        joined_at: chrono::Utc::now(),
                        clear_media: false,
                        offer: lp.offer.clone(),
                        remote: Some((from, sources)),
                    },
                );
                if let Err(e) = self.sfu.add_remote_publisher(now, call, p, kind, &lp.offer) {
                    tracing::warn!(worker = self.index, participant = %p, error = %e, "cascade: another leg's participant refused here");
                    self.sessions.remove(&p);
                    self.remote_tracks.retain(|(_, _), (q, _, _)| *q != p);
                }
            }
        }
    }
}

/// The layers one leg asked for of a track.
type LegDemand = (LegId, Vec<Option<Rid>>);

/// The `source` names of `track_published`, as a static string.
fn source_name(s: &str) -> &'static str {
    match s {
        "screen" => "screen",
        "camera" => "camera",
        _ => "microphone",
    }
}

/// A packet from the trunk as the core takes it.
fn trunk_rtp(f: callrelay_trunk::RtpFields, payload: &[u8]) -> callrelay_sfu::TrunkRtp {
    callrelay_sfu::TrunkRtp {
        pt: f.pt.into(),
        seq: f.seq,
        timestamp: f.timestamp,
        marker: f.marker,
        audio_level: f.audio_level,
        voice_activity: f.voice_activity,
        video_orientation: f.video_orientation,
        payload: payload.into(),
    }
}
