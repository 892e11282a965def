//! What a synthetic participant sends and when: Opus-like audio (50 packets/s, 100–160 B) and
//! simulcast video layers at a fixed frame rate, each frame packetized into payloads of at most
//! [`MAX_PAYLOAD`] bytes, with a keyframe every keyframe interval or on request. Sizes and
//! phases come from a seeded RNG, so a run replays.
//!
//! Video leaves through a pacer, as it does from a browser: WebRTC's pacer sends at a multiple
//! (2.5 by default) of the target bitrate in bursts every 5 ms, so a keyframe five times a frame's
//! size is spread over tens of milliseconds instead of leaving as one burst. Audio is not paced.
//! [`TrafficConfig::pace`] 0 turns the pacer off (every frame leaves at once).

use std::collections::VecDeque;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::header::{Header, Stream, FLAG_KEYFRAME_START, HEADER_LEN};

/// Largest RTP payload sent (VP8 descriptor included), as real encoders packetize for a 1,200 B MTU budget.
pub const MAX_PAYLOAD: usize = 1_200;
/// The VP8 payload descriptor + header bytes in front of our header (at most).
const VP8_PREFIX: usize = callrelay_client::VP8_KEYFRAME_PREFIX;
/// Audio frame interval (20 ms Opus frames).
pub const AUDIO_INTERVAL_NS: u64 = 20_000_000;
/// A silent microphone's audio interval: Chromium, asked for Opus DTX by the relay, sent ~5
/// packets a second with its microphone muted (`tests/browser/call.test.mjs`, "a muted
/// microphone sends next to nothing").
pub const SILENT_AUDIO_INTERVAL_NS: u64 = 200_000_000;
/// Frame rate of a shared screen (slides and documents change seldom).
pub const SCREEN_FPS: u32 = 5;
const SCREEN_INTERVAL_NS: u64 = 1_000_000_000 / SCREEN_FPS as u64;
/// Keyframes are this many times a delta frame's mean size.
const KEYFRAME_FACTOR: f64 = 5.0;
/// At most this many late frames of one kind are sent at once after a stall (the rest dropped,
/// as an encoder would skip them).
const MAX_CATCH_UP: u32 = 3;
/// The pacer's period: it wakes at most this often and sends what is due (WebRTC's 5 ms).
pub const PACE_TICK_NS: u64 = 5_000_000;
/// Bytes a packet costs on the wire beyond its payload (RTP, SRTP tag, UDP, IP), for pacing.
const PACE_OVERHEAD: usize = 60;
/// WebRTC's default pacing factor: video leaves at up to 2.5× the target bitrate.
pub const DEFAULT_PACE: f64 = 2.5;

/// What each participant publishes.
#[derive(Debug, Clone, PartialEq)]
pub struct TrafficConfig {
    /// Publish audio.
    pub audio: bool,
    /// Number of simulcast video layers (0 = no video; 1 = `l`, 2 = `l,m`, 3 = `l,m,h`).
    pub video_layers: usize,
    /// Bitrate per layer (l, m, h), kbit/s.
    pub layer_kbps: [u32; 3],
    /// Video frame rate.
    pub fps: u32,
    /// Keyframe period.
    pub keyframe_interval: Duration,
    /// A shared screen as a second video track, kbit/s (0: none), at [`SCREEN_FPS`]; its
    /// keyframes come with the camera's period.
    pub screen_kbps: u32,
    /// Video is paced at this multiple of its total bitrate, in bursts every
    /// [`PACE_TICK_NS`]; 0 sends each frame at once.
    pub pace: f64,
    /// Publishers per room that talk (0: all of them). The others' microphones are silent:
    /// see `silent`.
    pub talkers: usize,
    /// This participant's microphone is silent: its audio leaves as Opus DTX sends it, one
    /// small packet every [`SILENT_AUDIO_INTERVAL_NS`] (set per participant from `talkers`).
    pub silent: bool,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            audio: true,
            video_layers: 3,
            layer_kbps: [150, 500, 2_500],
            fps: 30,
            keyframe_interval: Duration::from_secs(2),
            screen_kbps: 0,
            pace: DEFAULT_PACE,
            talkers: 0,
            silent: false,
        }
    }
}

impl TrafficConfig {
    /// Time between two audio packets: 20 ms, or [`SILENT_AUDIO_INTERVAL_NS`] when silent.
    pub fn audio_interval_ns(&self) -> u64 {
        if self.silent {
            SILENT_AUDIO_INTERVAL_NS
        } else {
            AUDIO_INTERVAL_NS
        }
    }

    /// The video layers published, lowest first.
    pub fn layers(&self) -> &'static [Stream] {
        let all: &'static [Stream] = &[Stream::VideoL, Stream::VideoM, Stream::VideoH];
        &all[..self.video_layers.min(3)]
    }

    /// Mean packets per second one publisher sends (keyframes included).
    pub fn packets_per_second(&self) -> f64 {
        let mut pps = if self.audio {
            1e9 / self.audio_interval_ns() as f64
        } else {
            0.0
        };
        let kf_per_s = 1.0 / self.keyframe_interval.as_secs_f64().max(0.001);
        for i in 0..self.layers().len() {
            let frame = f64::from(self.layer_kbps[i]) * 1000.0 / 8.0 / f64::from(self.fps.max(1));
            let per = (MAX_PAYLOAD - VP8_PREFIX) as f64;
            let delta = (frame / per).ceil();
            let key = (frame * KEYFRAME_FACTOR / per).ceil();
            pps += delta * f64::from(self.fps) + (key - delta) * kf_per_s;
        }
        if self.screen_kbps > 0 {
            let frame = f64::from(self.screen_kbps) * 1000.0 / 8.0 / f64::from(SCREEN_FPS);
            let per = (MAX_PAYLOAD - VP8_PREFIX) as f64;
            let delta = (frame / per).ceil();
            let key = (frame * KEYFRAME_FACTOR / per).ceil();
            pps += delta * f64::from(SCREEN_FPS) + (key - delta) * kf_per_s;
        }
        pps
    }
}

/// One payload to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    /// The stream.
    pub stream: Stream,
    /// Part of a keyframe (video).
    pub keyframe: bool,
    /// Header to write (send time filled in by [`Packet::payload`]).
    pub header: Header,
    /// Bytes of our payload: header + filler (the VP8 prefix comes on top for video).
    pub len: usize,
}

impl Packet {
    /// The payload bytes to hand to the client, stamped with `sent_ns`.
    pub fn payload(&self, sent_ns: u64) -> Vec<u8> {
        let mut body = vec![0u8; self.len];
        let h = Header {
            sent_ns,
            ..self.header
        };
        h.write(&mut body);
        if self.stream == Stream::Audio {
            body
        } else {
            callrelay_client::vp8_payload(self.keyframe, &body)
        }
    }
}

/// The send schedule of one participant.
#[derive(Debug)]
pub struct Schedule {
    config: TrafficConfig,
    sender: u32,
    rng: StdRng,
    next_audio_ns: u64,
    next_frame_ns: u64,
    frame_interval_ns: u64,
    next_keyframe_ns: u64,
    keyframe_requested: [bool; 3],
    next_screen_ns: u64,
    next_screen_keyframe_ns: u64,
    screen_keyframe_requested: bool,
    seqs: [u32; 5],
    /// Video waiting for the pacer, oldest first.
    paced: VecDeque<Packet>,
    /// When the head of `paced` may leave (its slot at the pacing rate).
    pace_slot_ns: u64,
    /// When the pacer wakes next while `paced` is not empty.
    pace_wake_ns: u64,
    /// Nanoseconds of pacing per wire byte (0: no pacing).
    pace_ns_per_byte: f64,
    /// Scratch for the frames of one poll.
    frames: Vec<(u64, Packet)>,
    /// Until the first periodic keyframe: how long after it the second comes (a random phase
    /// within one period, so that the period is not the same for every publisher).
    keyframe_phase_ns: Option<u64>,
}

impl Schedule {
    /// A schedule for sender `sender` starting at `start_ns`, its random phase drawn from `seed`.
    pub fn new(config: TrafficConfig, sender: u32, seed: u64, start_ns: u64) -> Schedule {
        let mut rng = StdRng::seed_from_u64(seed ^ (u64::from(sender) << 32 | u64::from(sender)));
        let frame_interval_ns = 1_000_000_000 / u64::from(config.fps.max(1));
        let next_audio_ns = start_ns + rng.gen_range(0..config.audio_interval_ns());
        let next_frame_ns = start_ns + rng.gen_range(0..frame_interval_ns);
        let next_screen_ns = start_ns + rng.gen_range(0..SCREEN_INTERVAL_NS);
        let period = (config.keyframe_interval.as_nanos() as u64).max(1);
        let keyframe_phase_ns = Some(rng.gen_range(0..period).max(frame_interval_ns));
        let video_kbps: u32 = config.layer_kbps[..config.layers().len()]
            .iter()
            .sum::<u32>()
            + config.screen_kbps;
        let pace_ns_per_byte = if config.pace > 0.0 && video_kbps > 0 {
            8.0 * 1e9 / (config.pace * f64::from(video_kbps) * 1000.0)
        } else {
            0.0
        };
        Schedule {
            paced: VecDeque::new(),
            pace_slot_ns: 0,
            pace_wake_ns: 0,
            pace_ns_per_byte,
            frames: Vec::new(),
            keyframe_phase_ns,
            next_screen_ns,
            next_screen_keyframe_ns: next_screen_ns,
            screen_keyframe_requested: false,
            // The first frame is a keyframe.
            next_keyframe_ns: next_frame_ns,
            config,
            sender,
            rng,
            next_audio_ns,
            next_frame_ns,
            frame_interval_ns,
            keyframe_requested: [false; 3],
            seqs: [0; 5],
        }
    }

    /// When the next packet is due (ns on the loadgen clock).
    pub fn next_due_ns(&self) -> u64 {
        let mut t = u64::MAX;
        if self.config.audio {
            t = t.min(self.next_audio_ns);
        }
        if !self.config.layers().is_empty() {
            t = t.min(self.next_frame_ns);
        }
        if self.config.screen_kbps > 0 {
            t = t.min(self.next_screen_ns);
        }
        if !self.paced.is_empty() {
            t = t.min(self.pace_wake_ns);
        }
        t
    }

    /// Video packets waiting for the pacer.
    pub fn paced_len(&self) -> usize {
        self.paced.len()
    }

    /// A receiver asked for a keyframe of the screen: its next frame is one.
    pub fn request_screen_keyframe(&mut self) {
        self.screen_keyframe_requested = true;
    }

    /// The receiver asked for a keyframe of `layer` (or of every layer): the next frame is one.
    pub fn request_keyframe(&mut self, layer: Option<Stream>) {
        for (i, s) in self.config.layers().iter().enumerate() {
            if layer.is_none() || layer == Some(*s) {
                self.keyframe_requested[i] = true;
            }
        }
    }

    /// Appends to `out` every packet due at `now_ns`.
    pub fn poll(&mut self, now_ns: u64, out: &mut Vec<Packet>) {
        let mut frames = std::mem::take(&mut self.frames);
        self.poll_unpaced(now_ns, out, &mut frames);
        if self.pace_ns_per_byte > 0.0 {
            // Video frames go to the pacer's queue, each from its own due time.
            for (at, p) in frames.drain(..) {
                if self.paced.is_empty() {
                    self.pace_slot_ns = self.pace_slot_ns.max(at);
                }
                self.paced.push_back(p);
            }
            self.drain_paced(now_ns, out);
        } else {
            out.extend(frames.drain(..).map(|(_, p)| p));
        }
        self.frames = frames;
    }

    /// Sends what the pacer has let through by `now_ns`, and sets when it wakes next: at the
    /// head's slot, but no sooner than one tick from now.
    fn drain_paced(&mut self, now_ns: u64, out: &mut Vec<Packet>) {
        while self.pace_slot_ns <= now_ns {
            let Some(p) = self.paced.pop_front() else {
                break;
            };
            let wire = p.len + VP8_PREFIX + PACE_OVERHEAD;
            self.pace_slot_ns += (wire as f64 * self.pace_ns_per_byte) as u64;
            out.push(p);
        }
        if !self.paced.is_empty() {
            self.pace_wake_ns = self.pace_slot_ns.max(now_ns + PACE_TICK_NS);
        }
    }

    /// Audio due at `now_ns` into `out`; video frames due, with their due times, into `video`.
    fn poll_unpaced(&mut self, now_ns: u64, out: &mut Vec<Packet>, video: &mut Vec<(u64, Packet)>) {
        if self.config.screen_kbps > 0 {
            let mut n = 0;
            while self.next_screen_ns <= now_ns {
                if n < MAX_CATCH_UP {
                    let periodic = self.next_screen_ns >= self.next_screen_keyframe_ns;
                    if periodic {
                        self.next_screen_keyframe_ns =
                            self.next_screen_ns + self.config.keyframe_interval.as_nanos() as u64;
                    }
                    let key = periodic || self.screen_keyframe_requested;
                    self.screen_keyframe_requested = false;
                    let mean =
                        f64::from(self.config.screen_kbps) * 1000.0 / 8.0 / f64::from(SCREEN_FPS);
                    let at = self.next_screen_ns;
                    self.frame_of(Stream::Screen, mean, key, at, video);
                }
                n += 1;
                self.next_screen_ns += SCREEN_INTERVAL_NS;
            }
        }
        if self.config.audio {
            let mut n = 0;
            let interval = self.config.audio_interval_ns();
            while self.next_audio_ns <= now_ns {
                if n < MAX_CATCH_UP {
                    // A DTX frame is a few bytes of Opus; ours carries the payload header.
                    let len = if self.config.silent {
                        self.rng.gen_range(HEADER_LEN..=HEADER_LEN + 6)
                    } else {
                        self.rng.gen_range(100..=160)
                    };
                    out.push(self.packet(Stream::Audio, false, false, len));
                }
                n += 1;
                self.next_audio_ns += interval;
            }
        }
        let layers = self.config.layers();
        if layers.is_empty() {
            return;
        }
        let mut n = 0;
        while self.next_frame_ns <= now_ns {
            if n < MAX_CATCH_UP {
                let periodic = self.next_frame_ns >= self.next_keyframe_ns;
                if periodic {
                    // After the first keyframe, the period starts at a random phase: publishers
                    // that joined together must not send their keyframes together forever.
                    let period = self.config.keyframe_interval.as_nanos() as u64;
                    let wait = match self.keyframe_phase_ns.take() {
                        Some(phase) => phase,
                        None => period,
                    };
                    self.next_keyframe_ns = self.next_frame_ns + wait;
                }
                for (i, &layer) in layers.iter().enumerate() {
                    let key = periodic || self.keyframe_requested[i];
                    self.keyframe_requested[i] = false;
                    let at = self.next_frame_ns;
                    self.frame(i, layer, key, at, video);
                }
            }
            n += 1;
            self.next_frame_ns += self.frame_interval_ns;
        }
    }

    fn frame(&mut self, i: usize, layer: Stream, key: bool, at: u64, out: &mut Vec<(u64, Packet)>) {
        let mean =
            f64::from(self.config.layer_kbps[i]) * 1000.0 / 8.0 / f64::from(self.config.fps.max(1));
        self.frame_of(layer, mean, key, at, out);
    }

    /// One frame of `mean` bytes on average (five times that for a keyframe), packetized, due at
    /// `at`.
    fn frame_of(
        &mut self,
        layer: Stream,
        mean: f64,
        key: bool,
        at: u64,
        out: &mut Vec<(u64, Packet)>,
    ) {
        let size = if key {
            mean * self.rng.gen_range(0.8..1.2) * KEYFRAME_FACTOR
        } else {
            mean * self.rng.gen_range(0.7..1.3)
        };
        let size = (size as usize).max(HEADER_LEN);
        let per = MAX_PAYLOAD - VP8_PREFIX;
        let count = size.div_ceil(per);
        let each = size.div_ceil(count).max(HEADER_LEN);
        for k in 0..count {
            out.push((at, self.packet(layer, key, key && k == 0, each)));
        }
    }

    fn packet(&mut self, stream: Stream, keyframe: bool, start: bool, len: usize) -> Packet {
        let seq = &mut self.seqs[usize::from(stream.to_byte())];
        let header = Header {
            sender: self.sender,
            stream,
            flags: if start { FLAG_KEYFRAME_START } else { 0 },
            seq: *seq,
            sent_ns: 0,
        };
        *seq += 1;
        Packet {
            stream,
            keyframe,
            header,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: TrafficConfig, secs: u64, seed: u64) -> Vec<Packet> {
        let mut s = Schedule::new(config, 7, seed, 0);
        let mut out = Vec::new();
        let end = secs * 1_000_000_000;
        loop {
            let t = s.next_due_ns();
            if t > end {
                break;
            }
            s.poll(t, &mut out);
        }
        out
    }

    #[test]
    fn a_screen_is_five_frames_a_second_at_its_rate() {
        let config = TrafficConfig {
            screen_kbps: 400,
            ..TrafficConfig::default()
        };
        let p = run(config.clone(), 10, 3);
        let screen: Vec<_> = p.iter().filter(|x| x.stream == Stream::Screen).collect();
        // 50 frames, a keyframe every 2 s, dense sequence numbers, a VP8 header first.
        let starts = screen.iter().filter(|x| x.header.keyframe_start()).count();
        assert_eq!(starts, 5);
        let seqs: Vec<u32> = screen.iter().map(|x| x.header.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
        assert!(screen
            .iter()
            .all(|x| crate::header::find(&x.payload(7), true).is_some()));
        let kbps = screen.iter().map(|x| x.len).sum::<usize>() as f64 * 8.0 / 10.0 / 1000.0;
        assert!((350.0..700.0).contains(&kbps), "screen {kbps} kbps");
        let total = p.len() as f64 / 10.0;
        let model = config.packets_per_second();
        assert!((total - model).abs() / model < 0.1, "{total} vs {model}");
        // Without a screen rate, no screen.
        let none = run(TrafficConfig::default(), 2, 3);
        assert!(none.iter().all(|x| x.stream != Stream::Screen));
    }

    #[test]
    fn a_silent_microphone_sends_five_small_audio_packets_a_second() {
        let config = TrafficConfig {
            video_layers: 0,
            silent: true,
            ..TrafficConfig::default()
        };
        let p = run(config.clone(), 10, 5);
        assert!(p.iter().all(|x| x.stream == Stream::Audio));
        assert!((49..=51).contains(&p.len()), "{} packets in 10 s", p.len());
        assert!(p
            .iter()
            .all(|x| (HEADER_LEN..=HEADER_LEN + 6).contains(&x.len)));
        // Each still carries the payload header, with dense sequence numbers (loss is counted).
        assert!(p
            .iter()
            .all(|x| crate::header::find(&x.payload(9), false).map(|h| h.sent_ns) == Some(9)));
        let seqs: Vec<u32> = p.iter().map(|x| x.header.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
        assert_eq!(config.packets_per_second(), 5.0);
        // A talking one: fifty.
        let talking = TrafficConfig {
            silent: false,
            ..config
        };
        assert_eq!(run(talking, 10, 5).len(), 500);
    }

    #[test]
    fn rates_sizes_and_keyframes_match_the_model() {
        let p = run(TrafficConfig::default(), 10, 1);
        let count = |st: Stream| p.iter().filter(|x| x.stream == st).count();
        assert!((499..=501).contains(&count(Stream::Audio)));
        let audio: Vec<_> = p.iter().filter(|x| x.stream == Stream::Audio).collect();
        assert!(audio.iter().all(|x| (100..=160).contains(&x.len)));
        for x in &p {
            let len = x.payload(1).len();
            assert!(len <= MAX_PAYLOAD, "{len}");
            assert_eq!(
                crate::header::find(&x.payload(42), x.stream != Stream::Audio).map(|h| h.sent_ns),
                Some(42)
            );
        }
        // ~300 frames per layer in 10 s; the first frame is a keyframe, then one every 2 s
        // from a random phase: 5 or 6 in 10 s.
        let starts = p
            .iter()
            .filter(|x| x.stream == Stream::VideoH && x.header.keyframe_start())
            .count();
        assert!((5..=6).contains(&starts), "{starts} keyframes");
        let h_bytes: usize = p
            .iter()
            .filter(|x| x.stream == Stream::VideoH)
            .map(|x| x.len)
            .sum();
        let kbps = h_bytes as f64 * 8.0 / 10.0 / 1000.0;
        assert!((2_300.0..3_800.0).contains(&kbps), "h layer {kbps} kbps");
        let total = p.len() as f64 / 10.0;
        let model = TrafficConfig::default().packets_per_second();
        assert!((total - model).abs() / model < 0.1, "{total} vs {model}");
        // Sequence numbers are dense per stream.
        let seqs: Vec<u32> = audio.iter().map(|x| x.header.seq).collect();
        assert_eq!(seqs, (0..seqs.len() as u32).collect::<Vec<_>>());
    }

    #[test]
    fn same_seed_same_traffic_and_audio_only_has_no_video() {
        assert_eq!(
            run(TrafficConfig::default(), 3, 9),
            run(TrafficConfig::default(), 3, 9)
        );
        assert_ne!(
            run(TrafficConfig::default(), 3, 9),
            run(TrafficConfig::default(), 3, 10)
        );
        let a = run(
            TrafficConfig {
                video_layers: 0,
                ..TrafficConfig::default()
            },
            2,
            1,
        );
        assert!(a.iter().all(|x| x.stream == Stream::Audio));
    }

    #[test]
    fn a_keyframe_request_makes_the_next_frame_a_keyframe() {
        let mut s = Schedule::new(TrafficConfig::default(), 0, 3, 0);
        let mut out = Vec::new();
        // Past the first (periodic) keyframe.
        s.poll(200_000_000, &mut out);
        out.clear();
        s.request_keyframe(Some(Stream::VideoM));
        let t = s.next_due_ns().max(s.next_frame_ns);
        s.poll(t, &mut out);
        // The pacer lets the frame out within a few ticks.
        while s.paced_len() > 0 {
            let t = s.next_due_ns();
            s.poll(t, &mut out);
        }
        assert!(out
            .iter()
            .any(|x| x.stream == Stream::VideoM && x.header.keyframe_start()));
        assert!(!out
            .iter()
            .any(|x| x.stream == Stream::VideoL && x.header.keyframe_start()));
    }

    /// Every packet of `secs` seconds with the time it left.
    fn run_timed(config: TrafficConfig, secs: u64, seed: u64) -> Vec<(u64, Packet)> {
        let mut s = Schedule::new(config, 7, seed, 0);
        let mut out = Vec::new();
        let mut timed = Vec::new();
        let end = secs * 1_000_000_000;
        let mut last = 0;
        loop {
            let t = s.next_due_ns();
            if t > end {
                break;
            }
            assert!(t >= last, "time went back");
            last = t;
            s.poll(t, &mut out);
            timed.extend(out.drain(..).map(|p| (t, p)));
        }
        timed
    }

    /// The most video bytes (payload) that left within any `window_ns`.
    fn densest(timed: &[(u64, Packet)], window_ns: u64) -> usize {
        let video: Vec<_> = timed
            .iter()
            .filter(|(_, p)| p.stream != Stream::Audio)
            .collect();
        let mut best = 0;
        let mut j = 0;
        let mut sum = 0;
        for i in 0..video.len() {
            sum += video[i].1.len;
            while video[i].0 - video[j].0 >= window_ns {
                sum -= video[j].1.len;
                j += 1;
            }
            best = best.max(sum);
        }
        best
    }

    #[test]
    fn a_paced_keyframe_is_spread_at_the_pacing_rate() {
        let config = TrafficConfig::default();
        let paced = run_timed(config.clone(), 6, 5);
        let unpaced = run_timed(
            TrafficConfig {
                pace: 0.0,
                ..config.clone()
            },
            6,
            5,
        );
        // Same packets either way, in the same order per stream.
        assert_eq!(paced.len(), unpaced.len());
        for st in [
            Stream::VideoL,
            Stream::VideoM,
            Stream::VideoH,
            Stream::Audio,
        ] {
            let a: Vec<u32> = paced
                .iter()
                .filter(|x| x.1.stream == st)
                .map(|x| x.1.header.seq)
                .collect();
            let b: Vec<u32> = unpaced
                .iter()
                .filter(|x| x.1.stream == st)
                .map(|x| x.1.header.seq)
                .collect();
            assert_eq!(a, b, "{st:?}");
        }
        // Unpaced, a keyframe (~52 kB of `h`) leaves in one go; paced at 2.5 × 3,150 kbit/s,
        // 20 ms carry at most ~20 kB (one tick's burst of slack on top).
        let rate_bytes_per_ms = 2.5 * 3_150.0 / 8.0;
        let window = 20_000_000;
        let limit = (rate_bytes_per_ms * 25.0) as usize + MAX_PAYLOAD;
        assert!(
            densest(&unpaced, window) > 40_000,
            "{}",
            densest(&unpaced, window)
        );
        assert!(
            densest(&paced, window) <= limit,
            "{} > {limit}",
            densest(&paced, window)
        );
        // The keyframe of `h` took tens of milliseconds to leave, and nothing waited long.
        let kf: Vec<u64> = paced
            .iter()
            .filter(|x| x.1.stream == Stream::VideoH && x.1.keyframe)
            .map(|x| x.0)
            .take_while({
                let mut prev = None::<u64>;
                move |t| {
                    let ok = prev.is_none_or(|p| t - p < 30_000_000);
                    prev = Some(*t);
                    ok
                }
            })
            .collect();
        let spread = kf.last().unwrap() - kf.first().unwrap();
        assert!(
            (15_000_000..120_000_000).contains(&spread),
            "keyframe over {spread} ns"
        );
        // Audio is not paced: every 20 ms, to the tick.
        let audio: Vec<u64> = paced
            .iter()
            .filter(|x| x.1.stream == Stream::Audio)
            .map(|x| x.0)
            .collect();
        assert!(audio.windows(2).all(|w| w[1] - w[0] == AUDIO_INTERVAL_NS));
        // Wakeups stay bounded: the pacer adds at most one per tick.
        let mut wakes: Vec<u64> = paced.iter().map(|x| x.0).collect();
        wakes.dedup();
        assert!(wakes.len() < 6 * (50 + 200 + 30), "{} wakeups", wakes.len());
    }

    #[test]
    fn publishers_that_start_together_do_not_keyframe_together() {
        // Eight publishers starting at the same instant: after the first keyframe, each keeps
        // its own phase, 2 s apart (on the first frame due at or after that).
        let mut seconds = Vec::new();
        for sender in 0..8 {
            let mut s = Schedule::new(
                TrafficConfig {
                    pace: 0.0,
                    ..TrafficConfig::default()
                },
                sender,
                1,
                0,
            );
            let mut out = Vec::new();
            let mut starts = Vec::new();
            while s.next_due_ns() < 6_000_000_000 {
                let t = s.next_due_ns();
                s.poll(t, &mut out);
                if out
                    .iter()
                    .any(|x| x.stream == Stream::VideoH && x.header.keyframe_start())
                {
                    starts.push(t);
                }
                out.clear();
            }
            assert!(starts.len() >= 3, "{starts:?}");
            assert!(
                starts
                    .windows(2)
                    .skip(1)
                    .all(|w| (2_000_000_000..2_040_000_000).contains(&(w[1] - w[0]))),
                "{starts:?}"
            );
            seconds.push(starts[1] / 100_000_000);
        }
        seconds.sort_unstable();
        seconds.dedup();
        assert!(
            seconds.len() >= 5,
            "second keyframes at {seconds:?} × 100 ms"
        );
    }

    #[test]
    fn a_stall_sends_at_most_a_few_late_frames() {
        let mut s = Schedule::new(TrafficConfig::default(), 0, 3, 0);
        let mut out = Vec::new();
        s.poll(1_000_000_000, &mut out);
        let audio = out.iter().filter(|x| x.stream == Stream::Audio).count();
        assert_eq!(audio, MAX_CATCH_UP as usize);
        assert!(s.next_due_ns() > 1_000_000_000);
    }
}
