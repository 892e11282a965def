//! An in-memory rig for benches and allocation tests: str0m client `Rtc`s negotiating real
//! ICE, DTLS and SRTP with the [`Sfu`] (or with bare str0m `Rtc`s, for the baseline) on a fake
//! network, on virtual time. Once set up, the publisher client produces real SRTP datagrams
//! ([`Net::publish`]) that the measured loop feeds to the relay.
//!
//! Trimmed from the core's test harness (`crates/sfu/tests/common/mod.rs`): no loss, no
//! latency, and only what the benches need.
//!
//! [`Net::run_live`] drives a room the way the relay's worker does, for benches of the
//! product's steady state: publishers ([`Sender`]) send audio and video at their real rates in
//! virtual time, every client is driven (it decrypts what it receives and sends its RTCP,
//! transport-cc feedback and keyframe requests back), and the relay's timers are served when
//! they come due, on the millisecond grid of the worker's timer. The wall time spent inside
//! the relay's calls is summed in [`RelayWork`]; the clients' work is not.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind, Sfu, SfuConfig, Transmit};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::format::{Codec, PayloadParams};
use str0m::ice::{StunMessage, TransId};
use str0m::media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer};
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::{Extension, ExtensionMap, ExtensionValues, RtpWrite};
use str0m::{Candidate, Input, Output, Rtc, RtcConfig};

/// The relay's (fake) worker socket.
pub const SFU_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

/// RTP payload of a bench audio packet (Opus, 20 ms, ~32 kbps).
pub const AUDIO_PAYLOAD: usize = 120;
/// RTP payload of a bench video packet (a full 720p packet).
pub const VIDEO_PAYLOAD: usize = 1_200;

/// Smallest step of virtual time while negotiating.
const MIN_STEP: Duration = Duration::from_millis(1);

/// `127.0.0.1:port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

/// Which packet the publisher sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Media {
    /// ~120 B Opus.
    Audio,
    /// ~1,200 B VP8.
    Video,
}

/// A str0m `Rtc` on the fake network: a client, or a bare relay-side `Rtc` (baseline).
pub struct Peer {
    pub addr: SocketAddr,
    pub rtc: Rtc,
    pub timeout: Instant,
    /// Mids this peer sends on, from its own offer or a received one.
    pub audio_mid: Option<Mid>,
    pub video_mid: Option<Mid>,
    /// Receiving m-lines added by the other side's offers.
    pub subscribed: usize,
    /// Keyframe requests (PLI/FIR) received, by m-line and simulcast layer, oldest first;
    /// a [`Sender`] takes them.
    pub keyframe_requests: Vec<(Mid, Option<Rid>)>,
    seq: u64,
}

impl Peer {
    fn new(addr: SocketAddr, rtc: Rtc, now: Instant) -> Self {
        Peer {
            addr,
            rtc,
            timeout: now,
            audio_mid: None,
            video_mid: None,
            subscribed: 0,
            keyframe_requests: Vec::new(),
            seq: 0,
        }
    }
}

/// Str0m client `Rtc`s around one [`Sfu`] (or around nothing, for bare str0m pairs).
pub struct Net {
    pub now: Instant,
    pub sfu: Sfu,
    pub peers: Vec<Peer>,
    /// Clients joining from now on negotiate NACK and transport-wide congestion control
    /// (`transport-cc` feedback and its header extension), as browsers do (the default).
    /// `false`: neither, like the load generator's sampled receivers (`--decrypt-sample`),
    /// towards which the relay has no bandwidth estimate and does not pace.
    pub client_twcc: bool,
    queue: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    /// The origin of virtual time: the worker's timer counts whole milliseconds from it.
    origin: Instant,
    /// [`Sfu::poll_timeout`] after the relay's last call ([`Net::run_live`]).
    relay_deadline: Option<Instant>,
    /// What the relay's last call produced, moved out of the timed region.
    transmits: Vec<Transmit>,
    events: Vec<Event>,
}

impl Net {
    /// An empty network with a relay using `config`.
    pub fn new(config: SfuConfig) -> Self {
        // The origin of virtual time; nothing measures it.
        let now = Instant::now();
        Net {
            now,
            sfu: Sfu::new(config, [7; 32]),
            peers: Vec::new(),
            client_twcc: true,
            queue: VecDeque::new(),
            origin: now,
            relay_deadline: None,
            transmits: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A relay config for benches: `max` participants per room, no idle removal during a run.
    pub fn config(max: usize) -> SfuConfig {
        let mut c = SfuConfig::new(SFU_ADDR);
        c.max_participants = max;
        c.idle_timeout = Duration::from_secs(24 * 3600);
        // Benches feed thousands of packets at one instant of virtual time, far above any
        // real sender's rate; the ingress budget would drop them.
        c.max_ingress_bitrate = None;
        c
    }

    /// A room of `size` in the relay: participant 0 publishes audio (and video in a video
    /// room), the others only subscribe. Returns once every subscriber is connected and has
    /// its subscription m-lines.
    pub fn room(size: usize, kind: RoomKind) -> Self {
        Net::room_with(size, kind, Net::config(size.max(32)))
    }

    /// [`Net::room`] with a relay using `config`.
    pub fn room_with(size: usize, kind: RoomKind, config: SfuConfig) -> Self {
        let mut net = Net::new(config);
        net.join(RoomKey(1), kind, true, kind == RoomKind::Video);
        for _ in 1..size {
            net.join(RoomKey(1), kind, false, false);
        }
        let expected = if kind == RoomKind::Video { 2 } else { 1 };
        net.drive_until(|n| {
            n.peers.iter().all(|p| p.rtc.is_connected())
                && n.peers[1..].iter().all(|p| p.subscribed >= expected)
        });
        // Let the last answers and keyframe requests settle.
        net.run_for(Duration::from_millis(100));
        net
    }

    /// A client joins `room` with an offer: sending audio/video, or (neither) one receive-only
    /// audio line so that it publishes nothing. Its participant id is its index.
    pub fn join(&mut self, room: RoomKey, kind: RoomKind, audio: bool, video: bool) -> usize {
        self.join_with(room, kind, audio, video, &[])
    }

    /// [`Net::join`], the video sent as simulcast with `layers` (rids, lowest first) if any.
    pub fn join_with(
        &mut self,
        room: RoomKey,
        kind: RoomKind,
        audio: bool,
        video: bool,
        layers: &[&str],
    ) -> usize {
        let i = self.peers.len();
        let addr = local(20_000 + i as u16);
        let mut config = Rtc::builder().set_rtp_mode(true);
        if !self.client_twcc {
            config = without_nack_and_twcc(config);
        }
        let mut rtc = config.build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
        let simulcast = (!layers.is_empty()).then(|| {
            let mut s = Simulcast::new();
            for l in layers {
                s.add_send_layer(SimulcastLayer::new(l));
            }
            s
        });
        let mut api = rtc.sdp_api();
        let audio_mid =
            audio.then(|| api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None));
        let video_mid = video
            .then(|| api.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast));
        if !audio && !video {
            api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        }
        let (offer, pending) = api.apply().expect("an offer with media");
        let answer = self
            .sfu
            .add_participant(
                self.now,
                room,
                ParticipantId(i as u64),
                kind,
                Some(&offer.to_sdp_string()),
            )
            .expect("the relay admits the client")
            .expect("an answer to the client's offer");
        rtc.sdp_api()
            .accept_answer(
                pending,
                SdpAnswer::from_sdp_string(&answer).expect("answer parses"),
            )
            .expect("client accepts the relay's answer");
        let mut p = Peer::new(addr, rtc, self.now);
        p.audio_mid = audio_mid;
        p.video_mid = video_mid;
        self.peers.push(p);
        self.pump();
        i
    }

    /// Drives everything until `done` holds; panics after 60 s of virtual time.
    pub fn drive_until(&mut self, mut done: impl FnMut(&Net) -> bool) {
        let end = self.now + Duration::from_secs(60);
        while !done(self) {
            assert!(self.now < end, "the rig did not settle within 60 s");
            self.step();
        }
    }

    /// Drives everything for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn step(&mut self) {
        if self.pump() {
            return;
        }
        let mut next = self.now + Duration::from_secs(1);
        if let Some(t) = self.sfu.poll_timeout() {
            next = next.min(t);
        }
        for p in &self.peers {
            next = next.min(p.timeout);
        }
        self.now = next.max(self.now + MIN_STEP);
        let now = self.now;
        if self.sfu.poll_timeout().is_some_and(|t| t <= now) {
            self.sfu.handle_timeout(now);
        }
        for p in &mut self.peers {
            if p.timeout <= now {
                p.rtc
                    .handle_input(Input::Timeout(now))
                    .expect("peer handles timeout");
            }
        }
    }

    /// Polls everyone and delivers what was sent; whether anything happened.
    fn pump(&mut self) -> bool {
        let mut progressed = false;
        loop {
            let mut any = false;
            while let Some(t) = self.sfu.poll_transmit() {
                self.queue.push_back((t.source, t.destination, t.contents));
                any = true;
            }
            while let Some(e) = self.sfu.poll_event() {
                any = true;
                if let Event::SdpOffer { participant, sdp } = e {
                    self.answer(participant, &sdp);
                }
            }
            for p in &mut self.peers {
                any |= poll_peer(p, &mut self.queue);
            }
            while let Some((source, destination, contents)) = self.queue.pop_front() {
                any = true;
                self.deliver(source, destination, &contents);
            }
            if !any {
                return progressed;
            }
            progressed = true;
        }
    }

    fn deliver(&mut self, source: SocketAddr, destination: SocketAddr, contents: &[u8]) {
        if destination == SFU_ADDR {
            self.sfu
                .handle_datagram(self.now, source, destination, contents);
            return;
        }
        let Some(p) = self.peers.iter_mut().find(|p| p.addr == destination) else {
            return;
        };
        let recv = Receive::new(Protocol::Udp, source, destination, contents).expect("datagram");
        p.rtc
            .handle_input(Input::Receive(self.now, recv))
            .expect("peer handles datagram");
        // An `Rtc` in RTP mode holds one received packet until polled.
        poll_peer(p, &mut self.queue);
    }

    fn answer(&mut self, participant: ParticipantId, sdp: &str) {
        let p = &mut self.peers[participant.0 as usize];
        let offer = SdpOffer::from_sdp_string(sdp).expect("relay offer parses");
        let answer = p
            .rtc
            .sdp_api()
            .accept_offer(offer)
            .expect("client accepts the relay's offer");
        self.sfu
            .handle_sdp_answer(self.now, participant, &answer.to_sdp_string())
            .expect("relay accepts the answer");
    }

    /// Advances virtual time by `d` outside any measurement and lets the relay and the
    /// publisher run their timers; what they send is dropped (the subscribers' clients are
    /// not driven any more: the relay's forwarded packets go nowhere).
    pub fn tick(&mut self, d: Duration) {
        self.now += d;
        self.sfu.handle_timeout(self.now);
        while self.sfu.poll_transmit().is_some() {}
        while self.sfu.poll_event().is_some() {}
        let now = self.now;
        let p = &mut self.peers[0];
        p.rtc
            .handle_input(Input::Timeout(now))
            .expect("publisher handles timeout");
        let mut sink = VecDeque::new();
        poll_peer(p, &mut sink);
    }

    /// Participant 0 (the publisher) sends `count` packets of `media`; their SRTP datagrams
    /// (fresh sequence numbers, so none is a replay) are appended to `out`. Anything else it
    /// sends (RTCP, STUN) is dropped.
    pub fn publish(&mut self, media: Media, count: usize, out: &mut Vec<Vec<u8>>) {
        let now = self.now;
        publish_from(&mut self.peers[0], now, media, count, out);
    }

    /// The publisher's address.
    pub fn publisher_addr(&self) -> SocketAddr {
        self.peers[0].addr
    }

    /// Subscribers of participant 0 (everyone else).
    pub fn subscribers(&self) -> usize {
        self.peers.len() - 1
    }

    /// A room of `size` where everyone publishes (audio, plus video in a video room) for
    /// `seconds` of virtual time: audio every 20 ms, video at `video_pps`; each receives the
    /// others. Returns the net at steady state (str0m's RTX cache keeps 3 s), clients and all.
    pub fn publishing_room(
        config: SfuConfig,
        size: usize,
        kind: RoomKind,
        video_pps: u32,
        seconds: u32,
    ) -> Self {
        let video = kind == RoomKind::Video;
        let mut net = Net::new(config);
        for _ in 0..size {
            net.join(RoomKey(1), kind, true, video);
        }
        let expected = if video { 2 } else { 1 } * (size - 1);
        net.drive_until(|n| {
            n.peers.iter().all(|p| p.rtc.is_connected())
                && n.peers.iter().all(|p| p.subscribed >= expected)
        });
        let tick = Duration::from_millis(20);
        let video_per_tick = video_pps / 50;
        let mut out = Vec::new();
        for _ in 0..seconds * 50 {
            let now = net.now;
            for i in 0..size {
                out.clear();
                publish_from(&mut net.peers[i], now, Media::Audio, 1, &mut out);
                if video {
                    publish_from(
                        &mut net.peers[i],
                        now,
                        Media::Video,
                        video_per_tick as usize,
                        &mut out,
                    );
                }
                let from = net.peers[i].addr;
                for d in &out {
                    net.sfu.handle_datagram(now, from, SFU_ADDR, d);
                }
            }
            net.run_for(tick);
        }
        assert_eq!(net.sfu.participant_count(), size);
        let forwarded = net.sfu.stats().rtp_forwarded;
        let per_tick = size * (size - 1) * (1 + if video { video_per_tick as usize } else { 0 });
        assert!(
            forwarded as usize >= per_tick * (seconds as usize * 50) * 9 / 10,
            "media flowed: {forwarded} copies"
        );
        net
    }
}

/// `peer` writes `count` RTP packets of `media` on its sending m-line at `now`; the SRTP
/// datagrams are appended to `out`, other datagrams dropped.
pub fn publish_from(
    peer: &mut Peer,
    now: Instant,
    media: Media,
    count: usize,
    out: &mut Vec<Vec<u8>>,
) {
    let (mid, codec, len) = match media {
        Media::Audio => (peer.audio_mid, Codec::Opus, AUDIO_PAYLOAD),
        Media::Video => (peer.video_mid, Codec::Vp8, VIDEO_PAYLOAD),
    };
    let mid = mid.expect("the peer publishes this media");
    let pt = peer
        .rtc
        .codec_config()
        .find(|p| p.spec().codec == codec)
        .expect("codec configured")
        .pt();
    let before = out.len();
    for _ in 0..count {
        let seq = peer.seq;
        peer.seq += 1;
        let mut payload = vec![0x5a; len];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        let ext = ExtensionValues {
            audio_level: (media == Media::Audio).then_some(-30),
            voice_activity: (media == Media::Audio).then_some(true),
            ..Default::default()
        };
        let ts = match media {
            Media::Audio => (seq as u32).wrapping_mul(960),
            Media::Video => (seq as u32 / 4).wrapping_mul(3000),
        };
        let mut api = peer.rtc.direct_api();
        let tx = api.stream_tx_by_mid(mid, None).expect("negotiated stream");
        tx.write_rtp(
            RtpWrite::new(pt, seq.into(), ts, now, payload)
                .marker(media == Media::Video && seq % 4 == 3)
                .ext_vals(ext)
                .nackable(media == Media::Video),
        );
        peer.rtc
            .handle_input(Input::Timeout(now))
            .expect("peer handles timeout");
        loop {
            match peer.rtc.poll_output().expect("peer polls") {
                Output::Timeout(t) => {
                    peer.timeout = t;
                    break;
                }
                Output::Transmit(t) if is_srtp(&t.contents) => out.push(t.contents.into()),
                _ => {}
            }
        }
    }
    assert_eq!(out.len() - before, count, "one SRTP datagram per packet");
}

/// Whether a datagram is SRTP (RTP version 2, payload type outside RTCP's 192–223).
pub fn is_srtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

/// Polls `p` until it reports a timeout: transmits to `queue`, m-lines noted.
fn poll_peer(p: &mut Peer, queue: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>) -> bool {
    let mut any = false;
    loop {
        match p.rtc.poll_output().expect("peer polls") {
            Output::Timeout(t) => {
                p.timeout = t;
                return any;
            }
            Output::Transmit(t) => {
                any = true;
                queue.push_back((t.source, t.destination, t.contents.into()));
            }
            Output::Event(e) => {
                any = true;
                match e {
                    str0m::Event::MediaAdded(m) => {
                        if m.direction.is_receiving() {
                            p.subscribed += 1;
                        } else if m.kind == MediaKind::Audio {
                            p.audio_mid.get_or_insert(m.mid);
                        } else {
                            p.video_mid.get_or_insert(m.mid);
                        }
                    }
                    str0m::Event::KeyframeRequest(r) => p.keyframe_requests.push((r.mid, r.rid)),
                    _ => {}
                }
            }
        }
    }
}

// ---- live: a room driven in virtual time as the relay's worker drives it ------------------

/// `config` for a client like the load generator's sampled receivers: no NACK and no
/// transport-wide congestion control on any payload type (PLI and FIR stay), and no transport
/// sequence number extension (as `callrelay-client` does for `--decrypt-sample` above 1).
fn without_nack_and_twcc(mut config: RtcConfig) -> RtcConfig {
    for p in config.codec_config().iter_mut() {
        p.set_fb_nack(false);
        p.set_fb_transport_cc(false);
    }
    let mut exts = ExtensionMap::empty();
    for (id, e) in config.extension_map().iter() {
        if !matches!(e, Extension::TransportSequenceNumber) {
            exts.set(id, e.clone());
        }
    }
    config.set_extension_map(exts)
}

/// One video stream of a [`Traffic`]: a simulcast layer (`rid`) or plain video (`None`).
#[derive(Debug, Clone)]
pub struct VideoStream {
    pub rid: Option<&'static str>,
    /// Payload bitrate of its delta frames, kbit/s.
    pub kbps: u32,
}

/// What a [`Sender`] publishes and how often: the load generator's model
/// (`loadtest/src/traffic.rs`) without its random sizes and phases.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// Opus-like audio: 50 packets/s of [`AUDIO_PAYLOAD`] bytes with an audio level.
    pub audio: bool,
    /// Video streams, lowest layer first.
    pub video: Vec<VideoStream>,
    /// Video frames per second; each frame of each stream is split into equal packets of at
    /// most [`VIDEO_PAYLOAD`] bytes, sent at the frame's instant.
    pub fps: u32,
    /// A keyframe (5 × a delta frame's size) on every stream this often, and on a stream
    /// whose keyframe was requested (PLI/FIR); `None`: keyframes only on request.
    pub keyframe_interval: Option<Duration>,
}

/// Keyframes are this many times a delta frame (as the load generator's).
const KEYFRAME_FACTOR: u64 = 5;
/// Audio packet interval (20 ms Opus frames).
const AUDIO_INTERVAL: Duration = Duration::from_millis(20);

impl Traffic {
    /// Audio only.
    pub fn audio() -> Self {
        Traffic {
            audio: true,
            video: Vec::new(),
            fps: 30,
            keyframe_interval: None,
        }
    }

    /// One plain video stream of `kbps` at 30 frames/s, no audio, no periodic keyframes.
    pub fn video(kbps: u32) -> Self {
        Traffic {
            audio: false,
            video: vec![VideoStream { rid: None, kbps }],
            fps: 30,
            keyframe_interval: None,
        }
    }

    /// What the load generator's participants send by default (`callrelay-loadgen`): audio
    /// and three simulcast layers `l`, `m`, `h` at 150, 500 and 2,500 kbit/s, 30 frames/s, a
    /// keyframe every 2 s.
    pub fn simulcast() -> Self {
        Traffic {
            audio: true,
            video: [("l", 150), ("m", 500), ("h", 2_500)]
                .into_iter()
                .map(|(rid, kbps)| VideoStream {
                    rid: Some(rid),
                    kbps,
                })
                .collect(),
            fps: 30,
            keyframe_interval: Some(Duration::from_secs(2)),
        }
    }

    /// The rids of the simulcast layers, lowest first (empty for plain video).
    pub fn rids(&self) -> Vec<&'static str> {
        self.video.iter().filter_map(|v| v.rid).collect()
    }

    /// Bytes and packets of one frame of stream `i`.
    fn frame(&self, i: usize, key: bool) -> (usize, usize) {
        let mut bytes = u64::from(self.video[i].kbps) * 1000 / 8 / u64::from(self.fps.max(1));
        if key {
            bytes *= KEYFRAME_FACTOR;
        }
        let bytes = (bytes as usize).max(16);
        let packets = bytes.div_ceil(VIDEO_PAYLOAD);
        (bytes.div_ceil(packets), packets)
    }

    /// RTP packets per second of stream `i` (`None`: audio), keyframes included.
    pub fn packets_per_second(&self, i: Option<usize>) -> f64 {
        match i {
            None => 1.0 / AUDIO_INTERVAL.as_secs_f64(),
            Some(i) => {
                let delta = self.frame(i, false).1 as f64;
                let key = self.frame(i, true).1 as f64;
                let kf = self
                    .keyframe_interval
                    .map_or(0.0, |k| 1.0 / k.as_secs_f64());
                delta * f64::from(self.fps) + (key - delta) * kf
            }
        }
    }
}

/// The send schedule of one publishing client (`peer`), in virtual time.
pub struct Sender {
    pub peer: usize,
    pub traffic: Traffic,
    /// RTP packets sent so far.
    pub sent: u64,
    /// Stop after this many packets (`None`: never).
    pub limit: Option<u64>,
    next_audio: Instant,
    next_frame: Instant,
    frame_interval: Duration,
    next_keyframe: Option<Instant>,
    keyframe_due: Vec<bool>,
    audio_seq: u64,
    video_seq: Vec<u64>,
    frames: u32,
    audio_pt: Option<Pt>,
    video_pt: Option<Pt>,
}

impl Sender {
    /// `net.peers[peer]` sends `traffic`, its first audio packet `audio_phase` and its first
    /// frame `video_phase` after now (spread them over the senders of a room).
    pub fn new(
        net: &Net,
        peer: usize,
        traffic: Traffic,
        audio_phase: Duration,
        video_phase: Duration,
    ) -> Self {
        let p = &net.peers[peer];
        let pt = |codec| {
            p.rtc
                .codec_config()
                .find(|c| c.spec().codec == codec)
                .map(|c| c.pt())
        };
        assert!(!traffic.audio || p.audio_mid.is_some(), "peer sends audio");
        assert!(
            traffic.video.is_empty() || p.video_mid.is_some(),
            "peer sends video"
        );
        let layers = traffic.video.len();
        let frame_interval = Duration::from_nanos(1_000_000_000 / u64::from(traffic.fps.max(1)));
        Sender {
            peer,
            sent: 0,
            limit: None,
            next_audio: net.now + audio_phase,
            next_frame: net.now + video_phase,
            frame_interval,
            next_keyframe: traffic.keyframe_interval.map(|_| net.now + video_phase),
            keyframe_due: vec![false; layers],
            audio_seq: 0,
            video_seq: vec![0; layers],
            frames: 0,
            audio_pt: pt(Codec::Opus),
            video_pt: pt(Codec::Vp8),
            traffic,
        }
    }

    fn exhausted(&self) -> bool {
        self.limit.is_some_and(|l| self.sent >= l)
    }

    /// When it sends next (far ahead once its limit is reached).
    pub fn due(&self) -> Instant {
        let far = self.next_audio.max(self.next_frame) + Duration::from_secs(3600);
        if self.exhausted() {
            return far;
        }
        let mut t = far;
        if self.traffic.audio {
            t = t.min(self.next_audio);
        }
        if !self.traffic.video.is_empty() {
            t = t.min(self.next_frame);
        }
        t
    }

    /// Continues from `now` without catching up on packets it would have sent while it was
    /// not driven (between bench samples).
    pub fn resume(&mut self, now: Instant) {
        while self.next_audio < now {
            self.next_audio += AUDIO_INTERVAL;
        }
        while self.next_frame < now {
            self.next_frame += self.frame_interval;
        }
    }

    /// Writes every packet due at `now` to the peer's `Rtc` and queues its datagrams.
    fn send(
        &mut self,
        peer: &mut Peer,
        now: Instant,
        queue: &mut VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        let mut wrote = false;
        while self.traffic.audio && self.next_audio <= now && !self.exhausted() {
            let seq = self.audio_seq;
            self.audio_seq += 1;
            let mut payload = vec![0x5a; AUDIO_PAYLOAD];
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            let ext = ExtensionValues {
                audio_level: Some(-30),
                voice_activity: Some(true),
                ..Default::default()
            };
            let mid = peer.audio_mid.expect("audio mid");
            let pt = self.audio_pt.expect("opus negotiated");
            let mut api = peer.rtc.direct_api();
            let tx = api.stream_tx_by_mid(mid, None).expect("audio stream");
            tx.write_rtp(
                RtpWrite::new(pt, seq.into(), (seq as u32).wrapping_mul(960), now, payload)
                    .ext_vals(ext),
            );
            self.sent += 1;
            wrote = true;
            self.next_audio += AUDIO_INTERVAL;
        }
        if !self.traffic.video.is_empty() && self.next_frame <= now && !self.exhausted() {
            let mid = peer.video_mid.expect("video mid");
            let pt = self.video_pt.expect("vp8 negotiated");
            // Keyframe requests since the last frame: the layers they name (all if none).
            for (m, rid) in peer.keyframe_requests.drain(..) {
                if m != mid {
                    continue;
                }
                for (i, v) in self.traffic.video.iter().enumerate() {
                    if rid.is_none() || v.rid.map(Rid::from) == rid {
                        self.keyframe_due[i] = true;
                    }
                }
            }
            let periodic = self.next_keyframe.is_some_and(|t| t <= self.next_frame);
            if periodic {
                let every = self.traffic.keyframe_interval.expect("periodic keyframes");
                self.next_keyframe = self.next_keyframe.map(|t| t + every);
            }
            let ts = self.frames.wrapping_mul(90_000 / self.traffic.fps.max(1));
            for i in 0..self.traffic.video.len() {
                let key = std::mem::take(&mut self.keyframe_due[i]) || periodic;
                let (len, packets) = self.traffic.frame(i, key);
                let rid = self.traffic.video[i].rid.map(Rid::from);
                for k in 0..packets {
                    if self.exhausted() {
                        break;
                    }
                    // VP8 payload descriptor (S=1 on a frame's first packet) and, there, the
                    // frame tag whose P bit says keyframe: what the relay parses.
                    let mut payload = vec![0xee; len];
                    payload[0] = if k == 0 { 0x10 } else { 0x00 };
                    payload[1] = if key { 0x00 } else { 0x01 };
                    let seq = self.video_seq[i];
                    payload[2..10].copy_from_slice(&seq.to_be_bytes());
                    self.video_seq[i] += 1;
                    let mut api = peer.rtc.direct_api();
                    let tx = api.stream_tx_by_mid(mid, rid).expect("video stream");
                    tx.write_rtp(
                        RtpWrite::new(pt, seq.into(), ts, now, payload)
                            .marker(k == packets - 1)
                            .nackable(true),
                    );
                    self.sent += 1;
                    wrote = true;
                }
            }
            self.frames += 1;
            self.next_frame += self.frame_interval;
        }
        if wrote {
            peer.rtc
                .handle_input(Input::Timeout(now))
                .expect("sender handles timeout");
            poll_peer(peer, queue);
        }
    }
}

/// Upper bounds (ms) of [`RelayWork::held`]'s buckets; the last bucket is everything above.
pub const HELD_BOUNDS_MS: [u64; 10] = [0, 1, 2, 5, 10, 20, 50, 100, 200, 500];

/// What the relay did in [`Net::run_live`], and the wall time it took.
#[derive(Debug, Clone, Default)]
pub struct RelayWork {
    /// Wall time inside the relay's calls: every `handle_datagram` and `handle_timeout`,
    /// each with the `poll_transmit`, `poll_event` and `poll_timeout` that follow it.
    pub busy: Duration,
    /// Datagrams handed to `handle_datagram` (media, RTCP, STUN).
    pub datagrams_in: u64,
    /// `handle_timeout` calls.
    pub timeouts: u64,
    /// Forwarded copies out of the relay (transmits with `received_at`).
    pub copies: u64,
    /// Everything else out of the relay: RTCP, retransmissions, padding, STUN replies.
    pub other_out: u64,
    /// Copies by how long after their packet's arrival they left the relay (str0m's pacer),
    /// in the buckets of [`HELD_BOUNDS_MS`] and one beyond.
    pub held: [u64; 11],
    /// The longest such wait.
    pub held_max: Duration,
}

impl RelayWork {
    fn copy(&mut self, held: Duration) {
        self.copies += 1;
        self.held_max = self.held_max.max(held);
        let ms = held.as_micros().div_ceil(1000) as u64;
        let i = HELD_BOUNDS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(HELD_BOUNDS_MS.len());
        self.held[i] += 1;
    }

    /// The bound (ms) of the bucket holding the `q` quantile of the copies' wait (`None`:
    /// above the last bound).
    pub fn held_quantile(&self, q: f64) -> Option<u64> {
        let rank = ((self.copies as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.held.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return HELD_BOUNDS_MS.get(i).copied();
            }
        }
        None
    }
}

impl Net {
    /// The next instant on the worker's timer grid (whole milliseconds of virtual time) at or
    /// after `t`: tokio's timer rounds a sleep up to its millisecond.
    fn timer_tick(&self, t: Instant) -> Instant {
        let d = t.saturating_duration_since(self.origin);
        self.origin + Duration::from_millis(d.as_nanos().div_ceil(1_000_000) as u64)
    }

    /// Runs the room for `d` of virtual time as the relay's worker would: see
    /// [`Net::run_live_until`].
    pub fn run_live(&mut self, d: Duration, senders: &mut [Sender], work: &mut RelayWork) {
        self.run_live_until(d, senders, work, |_, _| false);
    }

    /// Runs the room in virtual time until `stop` holds (checked after every instant) or for
    /// at most `max`; returns whether `stop` held.
    ///
    /// At each instant, in order: the senders' packets due are written by their clients; the
    /// clients' timers due are served; the relay's timer is served if its deadline has passed
    /// (the worker sleeps until [`Sfu::poll_timeout`], rounded up to the millisecond); then
    /// every datagram is delivered — to the relay (timed, with what it sends back) or to a
    /// client (not timed) — until none is left. The network has no latency and no loss.
    pub fn run_live_until(
        &mut self,
        max: Duration,
        senders: &mut [Sender],
        work: &mut RelayWork,
        mut stop: impl FnMut(&Net, &RelayWork) -> bool,
    ) -> bool {
        let end = self.now + max;
        self.relay_deadline = self.sfu.poll_timeout();
        // Turns at one instant in a row: a timer that keeps asking for the same instant
        // (the relay's when it has more to drive than one call does) is served again at once,
        // as the worker would, but not for ever.
        let mut same = 0;
        loop {
            if stop(self, work) {
                return true;
            }
            let mut next = end;
            for s in senders.iter() {
                next = next.min(s.due());
            }
            if let Some(t) = self.relay_deadline {
                next = next.min(self.timer_tick(t));
            }
            for p in &self.peers {
                next = next.min(p.timeout);
            }
            if next >= end {
                self.now = end;
                return false;
            }
            if next <= self.now {
                same += 1;
                if same > 64 {
                    next = self.now + MIN_STEP;
                    same = 0;
                }
            } else {
                same = 0;
            }
            self.now = next.max(self.now);
            let now = self.now;
            for s in senders.iter_mut() {
                if s.due() <= now {
                    s.send(&mut self.peers[s.peer], now, &mut self.queue);
                }
            }
            for p in &mut self.peers {
                if p.timeout <= now {
                    p.rtc
                        .handle_input(Input::Timeout(now))
                        .expect("client handles timeout");
                    poll_peer(p, &mut self.queue);
                }
            }
            if self.relay_deadline.is_some_and(|t| t <= now) {
                let start = Instant::now();
                self.sfu.handle_timeout(now);
                self.drain_relay(start, work);
                work.timeouts += 1;
            }
            while let Some((source, destination, contents)) = self.queue.pop_front() {
                if destination == SFU_ADDR {
                    let start = Instant::now();
                    self.sfu
                        .handle_datagram(now, source, destination, &contents);
                    self.drain_relay(start, work);
                    work.datagrams_in += 1;
                } else if let Some(p) = self.peers.iter_mut().find(|p| p.addr == destination) {
                    let recv = Receive::new(Protocol::Udp, source, destination, &contents)
                        .expect("datagram");
                    p.rtc
                        .handle_input(Input::Receive(now, recv))
                        .expect("client handles datagram");
                    poll_peer(p, &mut self.queue);
                }
            }
        }
    }

    /// Drains the relay after a call that began at `start` (wall clock), adds the time to
    /// `work`, then (not timed) counts and queues what it sent and answers its SDP offers.
    fn drain_relay(&mut self, start: Instant, work: &mut RelayWork) {
        let mut transmits = std::mem::take(&mut self.transmits);
        let mut events = std::mem::take(&mut self.events);
        while let Some(t) = self.sfu.poll_transmit() {
            transmits.push(t);
        }
        while let Some(e) = self.sfu.poll_event() {
            events.push(e);
        }
        self.relay_deadline = self.sfu.poll_timeout();
        work.busy += start.elapsed();
        for t in transmits.drain(..) {
            match t.received_at {
                Some(at) => work.copy(self.now.saturating_duration_since(at)),
                None => work.other_out += 1,
            }
            self.queue.push_back((t.source, t.destination, t.contents));
        }
        let mut answered = false;
        for e in events.drain(..) {
            if let Event::SdpOffer { participant, sdp } = e {
                self.answer(participant, &sdp);
                answered = true;
            }
        }
        self.transmits = transmits;
        self.events = events;
        if answered {
            // Renegotiation is not expected in a steady room; its output is drained (timed).
            let start = Instant::now();
            self.drain_relay(start, work);
        }
    }
}

// ---- extra participants that only hold a learned address (demux bench) -------------------

/// Adds `count` participants to the relay, in rooms of 8 (keys from 1,000), each with a
/// learned address `10.x.y.z:port` taught by a real authenticated STUN binding request, as
/// its first packet would. They never finish DTLS: only the address map matters.
pub fn add_address_holders(net: &mut Net, count: usize) {
    let template = Rtc::builder().set_rtp_mode(true).build(net.now);
    let mut template = template;
    template.add_local_candidate(Candidate::host(local(30_000), "udp").expect("host candidate"));
    let mut api = template.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let offer = offer.to_sdp_string();
    let client_ufrag = sdp_attr(&offer, "a=ice-ufrag:");
    let before = net.sfu.learned_address_count();
    let first = 1_000_000 + net.peers.len() as u64;
    for i in 0..count as u64 {
        let answer = net
            .sfu
            .add_participant(
                net.now,
                RoomKey(1_000 + i / 8),
                ParticipantId(first + i),
                RoomKind::Voice,
                Some(&offer),
            )
            .expect("admitted")
            .expect("an answer");
        let relay_ufrag = sdp_attr(&answer, "a=ice-ufrag:");
        let relay_pwd = sdp_attr(&answer, "a=ice-pwd:");
        let username = format!("{relay_ufrag}:{client_ufrag}");
        let msg = StunMessage::binding_request(&username, TransId::new(), true, i, 1, true);
        let mut buf = [0u8; 256];
        let n = msg
            .to_bytes(Some(relay_pwd.as_bytes()), &mut buf, hmac_sha1)
            .expect("STUN serialises");
        let addr = SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(10, (i >> 16) as u8, (i >> 8) as u8, i as u8)),
            50_000,
        );
        net.sfu.handle_datagram(net.now, addr, SFU_ADDR, &buf[..n]);
        while net.sfu.poll_transmit().is_some() {}
        while net.sfu.poll_event().is_some() {}
    }
    assert_eq!(
        net.sfu.learned_address_count(),
        before + count,
        "every holder's address learned"
    );
}

fn sdp_attr(sdp: &str, prefix: &str) -> String {
    sdp.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .expect("SDP attribute present")
        .trim()
        .to_string()
}

fn hmac_sha1(key: &[u8], parts: &[&[u8]]) -> [u8; 20] {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

// ---- bare str0m: the same forward without the core -------------------------------------

/// A subscriber leg of the bare relay: the relay-side `Rtc` sending to one client.
pub struct BareLeg {
    pub relay: Peer,
    pub client: Peer,
    mid: Mid,
    pt: Pt,
}

/// The baseline: a publisher leg and `n` subscriber legs of bare str0m `Rtc`s (ICE-lite, RTP
/// mode, like the core's), each pair negotiated and connected on its own. [`Bare::forward`]
/// does what the core does per packet with no room, no table and no demultiplexing.
pub struct Bare {
    pub now: Instant,
    /// The publishing client.
    pub publisher: Peer,
    /// The relay-side `Rtc` facing the publisher.
    pub ingress: Peer,
    pub legs: Vec<BareLeg>,
    params: Option<PayloadParams>,
}

impl Bare {
    /// A publisher of `media` and `n` subscribers.
    pub fn new(media: Media, n: usize) -> Self {
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let mut now = Instant::now();
        let relay_rtc = |now: Instant, addr: SocketAddr| {
            let mut rtc = Rtc::builder()
                .set_rtp_mode(true)
                .set_ice_lite(true)
                .set_crypto_provider(crypto.clone())
                .build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
            Peer::new(addr, rtc, now)
        };
        let client_rtc = |now: Instant, addr: SocketAddr| {
            let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
            rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
            Peer::new(addr, rtc, now)
        };
        let kind = match media {
            Media::Audio => MediaKind::Audio,
            Media::Video => MediaKind::Video,
        };

        // Publisher → ingress: the client offers to send.
        let mut publisher = client_rtc(now, local(21_000));
        let mut ingress = relay_rtc(now, local(41_000));
        let mut api = publisher.rtc.sdp_api();
        let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
        let (offer, pending) = api.apply().expect("offer");
        let answer = ingress.rtc.sdp_api().accept_offer(offer).expect("answer");
        publisher
            .rtc
            .sdp_api()
            .accept_answer(pending, answer)
            .expect("accepted");
        match media {
            Media::Audio => publisher.audio_mid = Some(mid),
            Media::Video => publisher.video_mid = Some(mid),
        }
        drive_pair(&mut now, &mut publisher, &mut ingress);

        // Ingress → subscribers: the relay offers to send.
        let mut legs = Vec::with_capacity(n);
        for i in 0..n {
            let mut relay = relay_rtc(now, local(42_000 + i as u16));
            let mut client = client_rtc(now, local(22_000 + i as u16));
            let mut api = relay.rtc.sdp_api();
            let mid = api.add_media(kind, Direction::SendOnly, None, None, None);
            let (offer, pending) = api.apply().expect("offer");
            let answer = client.rtc.sdp_api().accept_offer(offer).expect("answer");
            relay
                .rtc
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("accepted");
            drive_pair(&mut now, &mut relay, &mut client);
            legs.push(BareLeg {
                relay,
                client,
                mid,
                pt: Pt::from(0),
            });
        }
        let codec = match media {
            Media::Audio => Codec::Opus,
            Media::Video => Codec::Vp8,
        };
        let params = ingress
            .rtc
            .codec_config()
            .find(|p| p.spec().codec == codec)
            .copied();
        for leg in &mut legs {
            leg.pt = params
                .and_then(|p| leg.relay.rtc.codec_config().match_params(p))
                .expect("subscriber has the codec")
                .pt();
        }
        Bare {
            now,
            publisher,
            ingress,
            legs,
            params,
        }
    }

    /// The publisher sends `count` packets; SRTP datagrams to `out`.
    pub fn publish(&mut self, media: Media, count: usize, out: &mut Vec<Vec<u8>>) {
        publish_from(&mut self.publisher, self.now, media, count, out);
    }

    /// One SRTP datagram from the publisher through the ingress `Rtc` and written to every
    /// leg, each leg drained of its transmits (handed to `sent`). Returns the copies sent.
    pub fn forward(&mut self, datagram: &[u8], mut sent: impl FnMut(Vec<u8>)) -> usize {
        let now = self.now;
        let contents = DatagramRecv::try_from(datagram).expect("datagram");
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source: self.publisher.addr,
                destination: self.ingress.addr,
                contents,
            },
        );
        self.ingress.rtc.handle_input(input).expect("ingress input");
        let nackable = self.params.is_some_and(|p| p.spec().codec == Codec::Vp8);
        loop {
            match self.ingress.rtc.poll_output().expect("ingress polls") {
                Output::Timeout(_) => break,
                Output::Transmit(_) => {}
                Output::Event(str0m::Event::RtpPacket(pkt)) => {
                    let ext_vals = ExtensionValues {
                        audio_level: pkt.header.ext_vals.audio_level,
                        voice_activity: pkt.header.ext_vals.voice_activity,
                        ..Default::default()
                    };
                    for leg in &mut self.legs {
                        let mut api = leg.relay.rtc.direct_api();
                        let tx = api.stream_tx_by_mid(leg.mid, None).expect("leg stream");
                        tx.write_rtp(
                            RtpWrite::new(
                                leg.pt,
                                pkt.seq_no,
                                pkt.header.timestamp,
                                now,
                                pkt.payload.clone(),
                            )
                            .marker(pkt.header.marker)
                            .ext_vals(ext_vals.clone())
                            .nackable(nackable),
                        );
                    }
                }
                Output::Event(_) => {}
            }
        }
        let mut copies = 0;
        for leg in &mut self.legs {
            leg.relay
                .rtc
                .handle_input(Input::Timeout(now))
                .expect("leg timeout");
            loop {
                match leg.relay.rtc.poll_output().expect("leg polls") {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => {
                        copies += 1;
                        sent(t.contents.into());
                    }
                    Output::Event(_) => {}
                }
            }
        }
        copies
    }

    /// Advances virtual time outside any measurement; everything sent is dropped.
    pub fn tick(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        let mut sink = VecDeque::new();
        for p in std::iter::once(&mut self.publisher)
            .chain(std::iter::once(&mut self.ingress))
            .chain(self.legs.iter_mut().map(|l| &mut l.relay))
        {
            p.rtc.handle_input(Input::Timeout(now)).expect("timeout");
            poll_peer(p, &mut sink);
        }
    }
}

/// Drives two peers that talk only to each other until both are connected.
fn drive_pair(now: &mut Instant, a: &mut Peer, b: &mut Peer) {
    let end = *now + Duration::from_secs(60);
    let mut q = VecDeque::new();
    loop {
        let mut any = poll_peer(a, &mut q) | poll_peer(b, &mut q);
        while let Some((source, destination, contents)) = q.pop_front() {
            any = true;
            let to = if destination == a.addr {
                &mut *a
            } else {
                &mut *b
            };
            let recv =
                Receive::new(Protocol::Udp, source, destination, &contents).expect("datagram");
            to.rtc
                .handle_input(Input::Receive(*now, recv))
                .expect("peer handles datagram");
            poll_peer(to, &mut q);
        }
        if a.rtc.is_connected() && b.rtc.is_connected() && !any {
            return;
        }
        if !any {
            assert!(*now < end, "pair did not connect within 60 s");
            *now = a.timeout.min(b.timeout).max(*now + MIN_STEP);
            for p in [&mut *a, &mut *b] {
                if p.timeout <= *now {
                    p.rtc.handle_input(Input::Timeout(*now)).expect("timeout");
                }
            }
        }
    }
}
