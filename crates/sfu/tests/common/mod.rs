//! Deterministic in-process harness: str0m client `Rtc`s and the [`Sfu`] exchanging datagrams
//! in memory on fake 127.0.0.1 addresses, on virtual time, always advancing to whichever event
//! comes first (like str0m's `tests/common.rs` `progress()`), with optional seeded loss.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind, Sfu, SfuConfig, SfuError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive, TcpType};
use str0m::rtp::{ExtensionValues, RtpWrite};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

/// The relay's (fake) worker socket.
pub const SFU_ADDR: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 40_000);

/// One-way latency of the fake network.
pub const LATENCY: Duration = Duration::from_millis(5);

/// Smallest step of virtual time, so that a timer that is already due cannot stall the loop.
const MIN_STEP: Duration = Duration::from_millis(1);

/// A packet in flight.
pub struct InFlight {
    pub at: Instant,
    /// UDP, or TCP for an RFC 4571 frame on an ICE-TCP connection (delivered whole and in
    /// order here: the harness models the framing, not TCP's stream).
    pub proto: Protocol,
    pub source: SocketAddr,
    pub destination: SocketAddr,
    pub contents: Vec<u8>,
}

/// A rate cap on the path towards one address: a FIFO link of `bps` (IP and UDP headers
/// counted) whose queue holds at most `max_queue` of sending time; what does not fit is
/// dropped (drop-tail). The queue delays packets, so delay-based estimators see it building.
pub struct Bottleneck {
    pub to: SocketAddr,
    pub bps: u64,
    pub max_queue: Duration,
    busy_until: Option<Instant>,
    /// Datagrams dropped because the queue was full.
    pub dropped: usize,
}

/// What a client received on one of its subscription m-lines.
#[derive(Debug, Clone)]
pub struct Received {
    pub mid: Mid,
    pub seq: u64,
    pub timestamp: u32,
    pub payload: Vec<u8>,
    pub audio_level: Option<i8>,
}

/// A participant's browser stand-in: a normal (non-lite) str0m `Rtc` in RTP mode.
pub struct Client {
    pub id: ParticipantId,
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub timeout: Instant,
    /// When false the client is frozen: not driven, and packets to it vanish.
    pub online: bool,
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    pub audio_seq: u64,
    pub video_seq: u64,
    pub sent_audio: Vec<Vec<u8>>,
    pub sent_video: Vec<Vec<u8>>,
    pub received: Vec<Received>,
    pub keyframe_requests: usize,
    /// The layer of each keyframe request the client received.
    pub keyframe_request_rids: Vec<Option<Rid>>,
    /// The relay closed the connection (DTLS close_notify).
    pub closed: bool,
    /// The relay's ICE ufrag towards this client, from its answer.
    pub relay_ufrag: String,
    /// Mids of m-lines the relay added towards this client (its subscriptions).
    pub subscribed_mids: Vec<Mid>,
}

/// The relay plus its clients on one fake network.
pub struct World {
    pub now: Instant,
    pub sfu: Sfu,
    pub clients: Vec<Client>,
    pub net: VecDeque<InFlight>,
    pub loss: f64,
    /// When not empty, `loss` applies only to UDP datagrams to these addresses.
    pub lossy_destinations: Vec<SocketAddr>,
    rng: StdRng,
    /// Every event the relay emitted except the SDP offers the harness answers itself.
    pub events: Vec<(Instant, Event)>,
    /// Datagrams the relay sent, counted.
    pub sfu_transmits: usize,
    /// When set, relay offers are kept in `held_offers` instead of being answered.
    pub hold_offers: bool,
    pub held_offers: Vec<(ParticipantId, String)>,
    /// Rate caps per destination (see [`World::set_capacity`]).
    pub bottlenecks: Vec<Bottleneck>,
    /// For each transmit that is a forwarded copy: its destination and how long after the
    /// arrival of the datagram it copies it was polled out of the relay.
    pub forward_delays: Vec<(SocketAddr, Duration)>,
    /// When set, DTLS datagrams (either way) vanish: ICE completes, the keys never come.
    pub block_dtls: bool,
    /// Extra delay per datagram, uniform in `0..=jitter`: with more than the sending interval,
    /// datagrams arrive out of order.
    pub jitter: Duration,
    /// Joins of these ids are publish-only ([`Sfu::add_publisher`], a WHIP client).
    pub publish_only: Vec<ParticipantId>,
    /// Joins of these ids offer only an active ICE-TCP candidate (RFC 6544), no UDP one.
    pub tcp_only: Vec<ParticipantId>,
    /// UDP datagrams from or to these addresses vanish (a firewall that blocks UDP).
    pub udp_blocked: Vec<SocketAddr>,
    /// Frames the relay sent over ICE-TCP, counted (also in `sfu_transmits`).
    pub sfu_tcp_transmits: usize,
    /// When set, the datagrams that reach the relay at one instant are one receive batch, as
    /// the media worker feeds a `recvmmsg` batch: each through
    /// [`Sfu::handle_datagram_deferred`], then one [`Sfu::drive_pending`].
    pub batch: bool,
}

impl World {
    pub fn new() -> Self {
        Self::with_config(SfuConfig::new(SFU_ADDR))
    }

    pub fn with_config(config: SfuConfig) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        // The one read of the real clock: an origin for virtual time. Nothing measures it.
        let now = Instant::now();
        World {
            now,
            sfu: Sfu::new(config, [7; 32]),
            clients: Vec::new(),
            net: VecDeque::new(),
            loss: 0.0,
            lossy_destinations: Vec::new(),
            rng: StdRng::seed_from_u64(42),
            events: Vec::new(),
            sfu_transmits: 0,
            hold_offers: false,
            held_offers: Vec::new(),
            bottlenecks: Vec::new(),
            forward_delays: Vec::new(),
            block_dtls: false,
            tcp_only: Vec::new(),
            udp_blocked: Vec::new(),
            sfu_tcp_transmits: 0,
            batch: false,
            jitter: Duration::ZERO,
            publish_only: Vec::new(),
        }
    }

    /// Client index by participant id.
    pub fn client(&self, id: u64) -> usize {
        self.clients
            .iter()
            .position(|c| c.id == ParticipantId(id))
            .expect("known client")
    }

    /// A client joins `room`, offering to publish audio and/or video.
    pub fn join(
        &mut self,
        id: u64,
        room: u64,
        kind: RoomKind,
        audio: bool,
        video: bool,
    ) -> Result<usize, SfuError> {
        self.join_with_layers(id, room, kind, audio, video, &[])
    }

    /// Like [`World::join`], publishing video as simulcast with `layers` (rids) if not empty.
    pub fn join_with_layers(
        &mut self,
        id: u64,
        room: u64,
        kind: RoomKind,
        audio: bool,
        video: bool,
        layers: &[&str],
    ) -> Result<usize, SfuError> {
        self.join_custom(id, room, kind, audio, video, layers, |c| c)
    }

    /// The general join: `configure` adjusts the client's `RtcConfig` (codecs, PTs).
    #[allow(clippy::too_many_arguments)]
    pub fn join_custom(
        &mut self,
        id: u64,
        room: u64,
        kind: RoomKind,
        audio: bool,
        video: bool,
        layers: &[&str],
        configure: impl FnOnce(RtcConfig) -> RtcConfig,
    ) -> Result<usize, SfuError> {
        self.join_munged(id, room, kind, audio, video, layers, configure, |sdp| sdp)
    }

    /// Like [`World::join_custom`], with `munge` rewriting the client's offer before the relay
    /// sees it (the client's own `Rtc` keeps what it really offered).
    #[allow(clippy::too_many_arguments)]
    pub fn join_munged(
        &mut self,
        id: u64,
        room: u64,
        kind: RoomKind,
        audio: bool,
        video: bool,
        layers: &[&str],
        configure: impl FnOnce(RtcConfig) -> RtcConfig,
        munge: impl FnOnce(String) -> String,
    ) -> Result<usize, SfuError> {
        let simulcast = (!layers.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for l in layers {
                s.add_send_layer(SimulcastLayer::new(l));
            }
            s
        });
        let addr = SocketAddr::new(
            std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            20_000 + id as u16,
        );
        let mut rtc = configure(Rtc::builder().set_rtp_mode(true)).build(self.now);
        if self.tcp_only.contains(&ParticipantId(id)) {
            let active = Candidate::builder()
                .tcp()
                .host(addr)
                .tcptype(TcpType::Active)
                .build()
                .expect("active TCP candidate");
            rtc.add_local_candidate(active);
        } else {
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        }
        let mut api = rtc.sdp_api();
        let audio_mid =
            audio.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let video_mid = video
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
        let (offer, pending) = api.apply().expect("an offer with media");
        let offer = munge(offer.to_sdp_string());
        let answer = if self.publish_only.contains(&ParticipantId(id)) {
            self.sfu
                .add_publisher(self.now, RoomKey(room), ParticipantId(id), kind, &offer)?
        } else {
            let answer = self.sfu.add_participant(
                self.now,
                RoomKey(room),
                ParticipantId(id),
                kind,
                Some(&offer),
            )?;
            answer.expect("an answer to the client's offer")
        };
        let relay_ufrag = answer
            .lines()
            .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
            .expect("answer carries an ufrag")
            .trim()
            .to_string();
        rtc.sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
            )
            .expect("client accepts the relay's answer");
        self.clients.push(Client {
            id: ParticipantId(id),
            addr,
            rtc,
            timeout: self.now,
            online: true,
            audio_mid,
            video_mid,
            audio_seq: 0,
            video_seq: 0,
            sent_audio: Vec::new(),
            sent_video: Vec::new(),
            received: Vec::new(),
            keyframe_requests: 0,
            keyframe_request_rids: Vec::new(),
            subscribed_mids: Vec::new(),
            relay_ufrag,
            closed: false,
        });
        self.drain();
        Ok(self.clients.len() - 1)
    }

    /// A client joins without an offer: the relay offers first and the client answers.
    pub fn join_relay_offers(
        &mut self,
        id: u64,
        room: u64,
        kind: RoomKind,
    ) -> Result<usize, SfuError> {
        let addr = SocketAddr::new(
            std::net::IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)),
            20_000 + id as u16,
        );
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        let answer =
            self.sfu
                .add_participant(self.now, RoomKey(room), ParticipantId(id), kind, None)?;
        assert!(answer.is_none(), "the relay offers instead of answering");
        self.clients.push(Client {
            id: ParticipantId(id),
            addr,
            rtc,
            timeout: self.now,
            online: true,
            audio_mid: None,
            video_mid: None,
            audio_seq: 0,
            video_seq: 0,
            sent_audio: Vec::new(),
            sent_video: Vec::new(),
            received: Vec::new(),
            keyframe_requests: 0,
            keyframe_request_rids: Vec::new(),
            subscribed_mids: Vec::new(),
            relay_ufrag: String::new(),
            closed: false,
        });
        // The relay's offer is among the events: the client answers it here.
        self.drain();
        Ok(self.clients.len() - 1)
    }

    /// Advances virtual time to the next event (at least [`MIN_STEP`]) and processes it.
    pub fn step(&mut self) {
        let next = self.next_time();
        self.advance_to(next);
    }

    /// When [`World::step`] would move to: the next event of the relay, a client or the
    /// network, at most a second and at least [`MIN_STEP`] ahead.
    pub fn next_time(&self) -> Instant {
        let mut next = self.now + Duration::from_secs(1);
        if let Some(t) = self.sfu.poll_timeout() {
            next = next.min(t);
        }
        for c in self.clients.iter().filter(|c| c.online) {
            next = next.min(c.timeout);
        }
        if let Some(p) = self.net.front() {
            next = next.min(p.at);
        }
        next.max(self.now + MIN_STEP)
    }

    /// Moves virtual time to `now` (not before the present) and processes what is due then:
    /// several worlds (legs of one call) keep one clock this way.
    pub fn advance_to(&mut self, now: Instant) {
        self.now = now.max(self.now);
        let now = self.now;

        while self.net.front().is_some_and(|p| p.at <= now) {
            let p = self.net.pop_front().expect("front checked");
            self.deliver(p);
            // A str0m `Rtc` in RTP mode holds one received packet until polled: drain after
            // every datagram.
            self.drain();
        }
        if self.batch {
            self.sfu.drive_pending(now);
            self.drain();
        }
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        for c in self.clients.iter_mut().filter(|c| c.online) {
            if c.timeout <= now {
                c.rtc
                    .handle_input(Input::Timeout(now))
                    .expect("client handles timeout");
            }
        }
        self.drain();
    }

    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            // Not past `end`: with nothing due for a while (no transport-wide feedback in a
            // voice room), a step would jump up to a second and a test's 20 ms audio cadence
            // with it.
            let next = self.next_time().min(end);
            self.advance_to(next);
        }
    }

    /// Runs until `done` holds, failing the test after `max` of virtual time.
    pub fn run_until(&mut self, max: Duration, mut done: impl FnMut(&World) -> bool) {
        let end = self.now + max;
        while !done(self) {
            assert!(self.now < end, "condition not reached within {max:?}");
            self.step();
        }
    }

    fn deliver(&mut self, p: InFlight) {
        if p.destination == SFU_ADDR {
            match p.proto {
                Protocol::Udp if self.batch => {
                    self.sfu
                        .handle_datagram_deferred(p.at, p.source, p.destination, &p.contents)
                }
                Protocol::Udp => {
                    self.sfu
                        .handle_datagram(p.at, p.source, p.destination, &p.contents)
                }
                _ => self
                    .sfu
                    .handle_tcp_frame(p.at, p.source, p.destination, &p.contents),
            }
            return;
        }
        let Some(c) = self
            .clients
            .iter_mut()
            .find(|c| c.addr == p.destination && c.online)
        else {
            return;
        };
        let Ok(recv) = Receive::new(p.proto, p.source, p.destination, &p.contents) else {
            panic!("client got an unparseable datagram from {}", p.source);
        };
        c.rtc
            .handle_input(Input::Receive(p.at, recv))
            .expect("client handles datagram");
    }

    /// Caps the path towards `to` at `bps` with a queue of `max_queue`, or lifts the cap.
    /// Packets already queued keep their delivery time.
    pub fn set_capacity(&mut self, to: SocketAddr, cap: Option<(u64, Duration)>) {
        let existing = self.bottlenecks.iter().position(|b| b.to == to);
        match (cap, existing) {
            (Some((bps, max_queue)), Some(i)) => {
                self.bottlenecks[i].bps = bps;
                self.bottlenecks[i].max_queue = max_queue;
            }
            (Some((bps, max_queue)), None) => self.bottlenecks.push(Bottleneck {
                to,
                bps,
                max_queue,
                busy_until: None,
                dropped: 0,
            }),
            (None, Some(i)) => {
                self.bottlenecks.remove(i);
            }
            (None, None) => {}
        }
    }

    fn send(
        &mut self,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        contents: Vec<u8>,
    ) {
        if proto == Protocol::Udp
            && (self.udp_blocked.contains(&source) || self.udp_blocked.contains(&destination))
        {
            return;
        }
        // TCP retransmits what is lost: no loss on an ICE-TCP connection.
        if proto == Protocol::Udp
            && self.loss > 0.0
            && (self.lossy_destinations.is_empty()
                || self.lossy_destinations.contains(&destination))
            && self.rng.gen_bool(self.loss)
        {
            return;
        }
        if self.block_dtls && contents.first().is_some_and(|b| (20..64).contains(b)) {
            return;
        }
        let now = self.now;
        let mut at = now + LATENCY;
        if !self.jitter.is_zero() {
            let extra = self.rng.gen_range(0..=self.jitter.as_micros() as u64);
            at += Duration::from_micros(extra);
        }
        if let Some(b) = self.bottlenecks.iter_mut().find(|b| b.to == destination) {
            let start = b.busy_until.map_or(now, |t| t.max(now));
            if start - now > b.max_queue {
                b.dropped += 1;
                return;
            }
            // IPv4 and UDP headers take capacity too.
            let bits = (contents.len() + 28) as f64 * 8.0;
            let done = start + Duration::from_secs_f64(bits / b.bps as f64);
            b.busy_until = Some(done);
            at = done + LATENCY;
        }
        // Kept in delivery order; without a bottleneck this is a push to the back.
        let pos = self.net.partition_point(|p| p.at <= at);
        self.net.insert(
            pos,
            InFlight {
                at,
                proto,
                source,
                destination,
                contents,
            },
        );
    }

    /// Drains the relay and every online client until all are waiting on a timer.
    pub fn drain(&mut self) {
        loop {
            let mut progressed = false;
            while let Some(t) = self.sfu.poll_transmit() {
                self.sfu_transmits += 1;
                if let Some(at) = t.received_at {
                    self.forward_delays
                        .push((t.destination, self.now.saturating_duration_since(at)));
                }
                if t.proto != Protocol::Udp {
                    self.sfu_tcp_transmits += 1;
                }
                self.send(t.proto, t.source, t.destination, t.contents);
                progressed = true;
            }
            while let Some(e) = self.sfu.poll_event() {
                progressed = true;
                // Offers are recorded too (tests look at what was offered, and to whom).
                if let Event::SdpOffer { .. } = &e {
                    self.events.push((self.now, e.clone()));
                }
                match e {
                    Event::SdpOffer { participant, sdp } if self.hold_offers => {
                        self.held_offers.push((participant, sdp));
                    }
                    Event::SdpOffer { participant, sdp } => self.answer_offer(participant, &sdp),
                    e => self.events.push((self.now, e)),
                }
            }
            for i in 0..self.clients.len() {
                if !self.clients[i].online {
                    continue;
                }
                loop {
                    let out = self.clients[i].rtc.poll_output().expect("client polls");
                    match out {
                        Output::Timeout(t) => {
                            self.clients[i].timeout = t;
                            break;
                        }
                        Output::Transmit(t) => {
                            progressed = true;
                            self.send(t.proto, t.source, t.destination, t.contents.into());
                        }
                        Output::Event(e) => {
                            let c = &mut self.clients[i];
                            match e {
                                str0m::Event::RtpPacket(p) => {
                                    let mid = c
                                        .rtc
                                        .direct_api()
                                        .stream_rx(&p.header.ssrc)
                                        .map(|s| s.mid())
                                        .expect("rtp on a declared stream");
                                    c.received.push(Received {
                                        mid,
                                        seq: *p.seq_no,
                                        timestamp: p.header.timestamp,
                                        payload: p.payload.to_vec(),
                                        audio_level: p.header.ext_vals.audio_level,
                                    });
                                }
                                str0m::Event::Closed => c.closed = true,
                                str0m::Event::KeyframeRequest(r) => {
                                    c.keyframe_requests += 1;
                                    c.keyframe_request_rids.push(r.rid);
                                }
                                str0m::Event::MediaAdded(m) if m.direction.is_receiving() => {
                                    c.subscribed_mids.push(m.mid);
                                }
                                // The relay offered first: publish on its receive-only lines.
                                str0m::Event::MediaAdded(m) if m.direction.is_sending() => {
                                    if m.kind == MediaKind::Audio && c.audio_mid.is_none() {
                                        c.audio_mid = Some(m.mid);
                                    }
                                    if m.kind == MediaKind::Video && c.video_mid.is_none() {
                                        c.video_mid = Some(m.mid);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            if !progressed {
                return;
            }
        }
    }

    pub fn answer_offer(&mut self, participant: ParticipantId, sdp: &str) {
        let Some(c) = self
            .clients
            .iter_mut()
            .find(|c| c.id == participant && c.online)
        else {
            return;
        };
        let offer = SdpOffer::from_sdp_string(sdp).expect("relay offer parses");
        let answer = c
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("client accepts relay offer");
        self.sfu
            .handle_sdp_answer(self.now, participant, &answer.to_sdp_string())
            .expect("relay accepts the answer");
    }

    /// Whether every online client is connected and subscribed to `expected` m-lines.
    pub fn settled(&self, expected: usize) -> bool {
        self.clients
            .iter()
            .filter(|c| c.online)
            .all(|c| c.rtc.is_connected() && c.subscribed_mids.len() >= expected)
    }

    /// Client `i` sends one audio packet (if it publishes audio) with a unique payload.
    pub fn send_audio(&mut self, i: usize, level: i8) {
        let now = self.now;
        let c = &mut self.clients[i];
        let Some(mid) = c.audio_mid else { return };
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Opus)
            .expect("opus configured")
            .pt();
        let n = c.sent_audio.len();
        let payload = payload(0xA0, c.id.0, n, 80);
        let seq = c.audio_seq;
        c.audio_seq += 1;
        let ext = ExtensionValues {
            audio_level: Some(level),
            voice_activity: Some(level > -60),
            ..Default::default()
        };
        let mut api = c.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, None)
            .expect("negotiated audio stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), (n as u32) * 960, now, payload.clone()).ext_vals(ext),
        );
        c.sent_audio.push(payload);
        c.rtc
            .handle_input(Input::Timeout(now))
            .expect("client timeout");
    }

    /// Client `i` sends one video packet (if it publishes video) with a unique payload.
    pub fn send_video(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let Some(mid) = c.video_mid else { return };
        let pt = c
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == Codec::Vp8)
            .expect("vp8 configured")
            .pt();
        let n = c.sent_video.len();
        let payload = payload(0xB0, c.id.0, n, 900);
        let seq = c.video_seq;
        c.video_seq += 1;
        let mut api = c.rtc.direct_api();
        let tx = api
            .stream_tx_by_mid(mid, None)
            .expect("negotiated video stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), (n as u32) * 3000, now, payload.clone())
                .marker(true)
                .nackable(true),
        );
        c.sent_video.push(payload);
        c.rtc
            .handle_input(Input::Timeout(now))
            .expect("client timeout");
    }

    /// Every online client sends `packets` audio and video packets, 20 ms apart.
    pub fn pump(&mut self, packets: usize) {
        for _ in 0..packets {
            for i in 0..self.clients.len() {
                if self.clients[i].online {
                    self.send_audio(i, -30);
                    self.send_video(i);
                }
            }
            self.drain();
            self.run_for(Duration::from_millis(20));
        }
        // Let the last packets land.
        self.run_for(Duration::from_millis(200));
    }

    /// Payloads client `to` received that came from client `from` with tag 0xA0 (audio) or
    /// 0xB0 (video). Each one is checked to be byte-identical to one `from` sent.
    pub fn received_from(&self, to: usize, from: usize, tag: u8) -> usize {
        let sender = &self.clients[from];
        let sent = if tag == 0xA0 {
            &sender.sent_audio
        } else {
            &sender.sent_video
        };
        let mut n = 0;
        for r in &self.clients[to].received {
            if r.payload.first() != Some(&tag) || r.payload.get(1) != Some(&(sender.id.0 as u8)) {
                continue;
            }
            let idx = u16::from_be_bytes([r.payload[2], r.payload[3]]) as usize;
            assert_eq!(
                sent.get(idx),
                Some(&r.payload),
                "payload bytes changed in transit"
            );
            n += 1;
        }
        n
    }

    /// Relay events matching `f`.
    pub fn events_matching(&self, f: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(_, e)| f(e))
            .map(|(_, e)| e.clone())
            .collect()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

/// A recognisable payload: tag, sender, index, then filler that depends on all three.
pub fn payload(tag: u8, sender: u64, index: usize, len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.push(tag);
    v.push(sender as u8);
    v.extend_from_slice(&(index as u16).to_be_bytes());
    let mut x = (sender as u32).wrapping_mul(2_654_435_761) ^ (index as u32) ^ u32::from(tag);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}
