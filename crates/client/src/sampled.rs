//! Sampled receive mode ([`ClientConfig::decrypt_sample`][crate::ClientConfig::decrypt_sample]
//! above 1): a receiver that counts every RTP packet from its clear-text header and hands only
//! one in `N` per stream to str0m, so that a load generator costs a fraction of what the relay
//! it measures costs per packet.
//!
//! Every datagram is classified by its first byte (RFC 7983): STUN, DTLS and RTCP always go to
//! str0m, as do RTP packets with a payload type that is not a negotiated media codec (RTX,
//! anything unknown) or with the padding bit (probes). Media RTP is counted per SSRC — the
//! SRTP header is in clear: sequence number, timestamp, SSRC — and the first packet of each
//! SSRC, then every `N`th, also goes to str0m, which decrypts it and emits it as usual
//! ([`ClientEvent::Media`][crate::ClientEvent::Media]). The counts are published into an
//! [`RtpCounts`] handle at most every [`PUBLISH_INTERVAL`] and when the session ends.
//!
//! The counts are per SSRC of the *receiving* side, so they count what the relay sent this
//! receiver: a relay that rewrites sequence numbers per receiver and keeps one SSRC per
//! subscription across simulcast layer switches (callrelay, Janus) gives one contiguous
//! sequence per subscription, and a layer switch is neither a gap nor a duplicate in it.
//!
//! With [`ClientConfig::decrypt_video_until`][crate::ClientConfig::decrypt_video_until] a new
//! *video* SSRC is not sampled at first: every one of its packets goes to str0m until one whose
//! decrypted payload passes the [`DecryptUntil`] test (a load generator waiting for the
//! simulcast layer it asked for sees the first packet of that layer, not the first sample of
//! it); from the next packet on the SSRC is sampled one in `N` like any other.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Largest [`ClientConfig::decrypt_sample`][crate::ClientConfig::decrypt_sample]. str0m infers
/// the SRTP rollover counter of a packet from the highest sequence number it has decrypted on
/// that SSRC (RFC 3711 §3.3.1), which is right while the two are less than 2^15 apart; 1 in
/// 1,000 leaves room for 31,000 packets lost in a row between two samples. Beyond a few
/// hundred, latency percentiles rest on too few packets anyway.
pub const MAX_DECRYPT_SAMPLE: u32 = 1_000;

/// How often a session publishes its counts into its [`RtpCounts`] while packets arrive.
pub const PUBLISH_INTERVAL: Duration = Duration::from_millis(250);

/// Counts below this many sequence numbers behind the highest one received tell duplicates
/// from late packets; an older packet counts as late (reordered), never as a duplicate.
const WINDOW: u64 = 4096;

/// A test on the decrypted payload of a received video packet
/// ([`ClientConfig::decrypt_video_until`][crate::ClientConfig::decrypt_video_until]): a sampled
/// session decrypts every packet of a video SSRC until one passes it. Called on the session's
/// task for each of those packets, so it should be cheap and must not block.
#[derive(Clone)]
pub struct DecryptUntil(Arc<PayloadTest>);

/// The function behind a [`DecryptUntil`].
type PayloadTest = dyn Fn(&[u8]) -> bool + Send + Sync;

impl DecryptUntil {
    /// A test from a function of the payload (RTP payload, exactly as received).
    pub fn new(test: impl Fn(&[u8]) -> bool + Send + Sync + 'static) -> DecryptUntil {
        DecryptUntil(Arc::new(test))
    }

    /// Whether `payload` passes.
    pub fn test(&self, payload: &[u8]) -> bool {
        (self.0)(payload)
    }
}

impl std::fmt::Debug for DecryptUntil {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecryptUntil(..)")
    }
}

/// What one receiving session counted on one SSRC, from RTP headers alone.
#[derive(Debug, Clone, PartialEq)]
pub struct RtpStreamCounts {
    /// The client session (unique within the process; a [`Member`][crate::Member] that joins
    /// again starts a new one).
    pub session: u64,
    /// The SSRC the packets came on.
    pub ssrc: u32,
    /// Payload type of the last packet.
    pub pt: u8,
    /// Packets received, duplicates included.
    pub received: u64,
    /// Packets that went through str0m (the sample).
    pub decrypted: u64,
    /// Payload bytes: the SRTP payload less the authentication tag (its length learnt from
    /// the first decrypted packet).
    pub bytes: u64,
    /// Sequence numbers from the lowest to the highest received (extended over 16-bit wraps).
    pub expected: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// RFC 3550 interarrival jitter from the RTP timestamps, ns.
    pub jitter_ns: f64,
    /// First and last arrival.
    pub first_arrival: Instant,
    /// Last arrival.
    pub last_arrival: Instant,
}

impl RtpStreamCounts {
    /// Distinct packets received.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Sequence numbers in the expected range that never arrived.
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique())
    }
}

/// Where sessions publish their RTP counts: shared by every session of one participant (pass
/// the same handle in each [`ClientConfig`][crate::ClientConfig]; a
/// [`Member`][crate::Member] reuses its config for every rejoin), read whenever the caller
/// likes. Counts are cumulative per (session, SSRC).
#[derive(Debug, Clone, Default)]
pub struct RtpCounts(Arc<Mutex<BTreeMap<(u64, u32), RtpStreamCounts>>>);

impl RtpCounts {
    /// A new, empty handle.
    pub fn new() -> RtpCounts {
        RtpCounts::default()
    }

    /// Every (session, SSRC) counted so far, in that order.
    pub fn snapshot(&self) -> Vec<RtpStreamCounts> {
        match self.0.lock() {
            Ok(m) => m.values().cloned().collect(),
            Err(p) => p.into_inner().values().cloned().collect(),
        }
    }

    fn publish(&self, counts: impl Iterator<Item = RtpStreamCounts>) {
        let mut m = match self.0.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        for c in counts {
            m.insert((c.session, c.ssrc), c);
        }
    }
}

/// What an incoming datagram is, from its first bytes (RFC 7983; RTP and RTCP told apart by
/// the second byte, as RFC 5761 §4 does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Datagram {
    /// RTP, with the fields of its clear-text header.
    Rtp(RtpHeader),
    /// RTCP, STUN, DTLS, or anything too short or unknown: str0m's business.
    Other,
}

/// The fields of an RTP header a sampled receiver uses (the marker bit is not: a count does
/// not need frame boundaries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RtpHeader {
    pub(crate) ssrc: u32,
    pub(crate) seq: u16,
    pub(crate) timestamp: u32,
    pub(crate) pt: u8,
    pub(crate) padding: bool,
    /// Bytes after the header (extensions included in the header): the SRTP payload and tag.
    pub(crate) payload_len: usize,
}

impl Datagram {
    pub(crate) fn classify(b: &[u8]) -> Datagram {
        let (Some(&b0), Some(&b1)) = (b.first(), b.get(1)) else {
            return Datagram::Other;
        };
        // 128..=191: RTP or RTCP (version 2); RTCP packet types 192..=223 put 64..=95 in the
        // low seven bits of the second byte.
        if !(128..192).contains(&b0) || (64..96).contains(&(b1 & 0x7f)) || b.len() < 12 {
            return Datagram::Other;
        }
        let mut len = 12 + 4 * usize::from(b0 & 0x0f);
        if b0 & 0x10 != 0 {
            // Header extension: 4 bytes, then its length in 32-bit words.
            let Some(words) = b.get(len + 2..len + 4) else {
                return Datagram::Other;
            };
            len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
        }
        if len > b.len() {
            return Datagram::Other;
        }
        Datagram::Rtp(RtpHeader {
            ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
            seq: u16::from_be_bytes([b[2], b[3]]),
            timestamp: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            pt: b1 & 0x7f,
            padding: b0 & 0x20 != 0,
            payload_len: b.len() - len,
        })
    }
}

/// Sequence accounting of one SSRC: received, duplicates, reordering and the expected range,
/// with 16-bit sequence numbers extended across wraps (RFC 3711 §3.3.1 style: the candidate
/// closest to the highest seen), and RFC 3550 jitter.
#[derive(Debug, Clone)]
pub(crate) struct SeqCounter {
    /// Extended sequence numbers start here so that packets older than the first still have a
    /// place below it.
    min: u64,
    max: u64,
    /// A ring over the last [`WINDOW`] sequence numbers: bit `ext % WINDOW` is set when `ext`
    /// (at most `WINDOW - 1` below `max`) was received. Advancing `max` clears the bits it
    /// passes, so an in-order packet costs one bit, not a shift of the whole window.
    seen: [u64; (WINDOW / 64) as usize],
    pub(crate) received: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    wire_bytes: u64,
    /// RFC 3550 jitter in RTP clock ticks, and the previous transit time.
    jitter: f64,
    transit: Option<i64>,
    clock_rate: u32,
    first_arrival: Instant,
    last_arrival: Instant,
    /// Arrival count, for choosing the sample.
    pub(crate) arrivals: u64,
    pub(crate) decrypted: u64,
    pt: u8,
    /// NACKs for this SSRC are switched off in str0m (once it knows the stream).
    pub(crate) nack_suppressed: bool,
    /// Every packet goes to str0m, not one in `N`: a video SSRC until a decrypted packet
    /// passes the session's [`DecryptUntil`].
    pub(crate) decrypt_all: bool,
}

/// The extended sequence numbers of every SSRC start at this offset plus the first packet's,
/// so that going below the first stays positive.
const BASE: u64 = 1 << 32;

impl SeqCounter {
    pub(crate) fn new(h: &RtpHeader, clock_rate: u32, now: Instant) -> SeqCounter {
        let first = BASE + u64::from(h.seq);
        SeqCounter {
            min: first,
            // One below, so that the first packet extends the range like any other.
            max: first - 1,
            seen: [0; (WINDOW / 64) as usize],
            received: 0,
            duplicates: 0,
            reordered: 0,
            wire_bytes: 0,
            jitter: 0.0,
            transit: None,
            clock_rate,
            first_arrival: now,
            last_arrival: now,
            arrivals: 0,
            decrypted: 0,
            pt: h.pt,
            nack_suppressed: false,
            decrypt_all: false,
        }
    }

    /// The extended sequence number of `seq`: the one closest to the highest seen.
    fn extend(&self, seq: u16) -> u64 {
        let roc = self.max >> 16;
        let candidates = [roc.wrapping_sub(1), roc, roc + 1].map(|r| (r << 16) | u64::from(seq));
        candidates
            .into_iter()
            .min_by_key(|c| c.abs_diff(self.max))
            .unwrap_or(self.max)
    }

    /// Counts one packet.
    pub(crate) fn record(&mut self, h: &RtpHeader, wire_bytes: usize, now: Instant) {
        self.received += 1;
        self.wire_bytes += wire_bytes as u64;
        self.last_arrival = self.last_arrival.max(now);
        self.pt = h.pt;
        let ext = self.extend(h.seq);
        if ext > self.max {
            self.advance(ext);
            self.set(ext);
        } else {
            let back = self.max - ext;
            if back < WINDOW {
                if self.is_set(ext) {
                    self.duplicates += 1;
                    return;
                }
                self.set(ext);
            }
            // Older than the window: late, and taken as new (a duplicate that late is not
            // told apart).
            self.reordered += 1;
            self.min = self.min.min(ext);
        }
        // RFC 3550 §6.4.1 / A.8, in clock ticks.
        if self.clock_rate > 0 {
            let elapsed = now.saturating_duration_since(self.first_arrival);
            // In u64 (ns fit for 584 years; times the clock rate, for over 2 days at 90 kHz):
            // a u128 division cost more than the rest of counting a packet.
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            let arrival = match ns.checked_mul(u64::from(self.clock_rate)) {
                Some(ticks) => (ticks / 1_000_000_000) as i64,
                None => {
                    ((ns / 1_000).saturating_mul(u64::from(self.clock_rate)) / 1_000_000) as i64
                }
            };
            let transit = arrival.wrapping_sub(i64::from(h.timestamp));
            if let Some(prev) = self.transit {
                // Timestamps wrap at 2^32: the difference is taken modulo that.
                let d = (transit.wrapping_sub(prev) as i32).unsigned_abs();
                self.jitter += (f64::from(d) - self.jitter) / 16.0;
            }
            self.transit = Some(transit);
        }
    }

    /// Moves the highest sequence number up to `to`, clearing the ring's bits for the
    /// numbers it passes (all of them after a jump of a whole window or more).
    fn advance(&mut self, to: u64) {
        if to - self.max >= WINDOW {
            self.seen = [0; (WINDOW / 64) as usize];
        } else {
            for ext in self.max + 1..=to {
                let i = ext % WINDOW;
                self.seen[(i / 64) as usize] &= !(1 << (i % 64));
            }
        }
        self.max = to;
    }

    fn is_set(&self, ext: u64) -> bool {
        let i = ext % WINDOW;
        self.seen[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    fn set(&mut self, ext: u64) {
        let i = ext % WINDOW;
        self.seen[(i / 64) as usize] |= 1 << (i % 64);
    }

    pub(crate) fn expected(&self) -> u64 {
        (self.max + 1).saturating_sub(self.min)
    }

    fn counts(&self, session: u64, ssrc: u32, srtp_overhead: usize) -> RtpStreamCounts {
        RtpStreamCounts {
            session,
            ssrc,
            pt: self.pt,
            received: self.received,
            decrypted: self.decrypted,
            bytes: self
                .wire_bytes
                .saturating_sub(self.received * srtp_overhead as u64),
            expected: self.expected(),
            duplicates: self.duplicates,
            reordered: self.reordered,
            jitter_ns: if self.clock_rate > 0 {
                self.jitter * 1e9 / f64::from(self.clock_rate)
            } else {
                0.0
            },
            first_arrival: self.first_arrival,
            last_arrival: self.last_arrival,
        }
    }
}

/// Hashes an SSRC (already random) with one multiplication: the default SipHash was the
/// sampler's largest cost per packet.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SsrcHasher(u64);

impl Hasher for SsrcHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (self.0 ^ u64::from(n)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What the sampler decided for a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Counted; str0m does not see it.
    Counted,
    /// Goes to str0m; `Some(ssrc)` if it is a counted RTP packet (its NACKs are to be
    /// switched off once str0m knows the stream).
    ToRtc(Option<u32>),
}

/// The receive side of a sampled session.
#[derive(Debug)]
pub(crate) struct Sampler {
    every: u64,
    session: u64,
    /// RTP clock rate of each negotiated media payload type; 0: not media (always to str0m).
    clock: [u32; 128],
    /// Which negotiated media payload types are video.
    video: [bool; 128],
    /// A new video SSRC is decrypted in full until one of its packets passes this.
    until: Option<DecryptUntil>,
    streams: HashMap<u32, SeqCounter, BuildHasherDefault<SsrcHasher>>,
    /// SRTP payload minus decrypted payload (the authentication tag), from the first decrypted
    /// packet.
    srtp_overhead: Option<usize>,
    /// The last sample handed to str0m: (SSRC, sequence number, SRTP payload length).
    pending: Option<(u32, u16, usize)>,
    sink: RtpCounts,
    dirty: bool,
    next_publish: Instant,
}

impl Sampler {
    pub(crate) fn new(
        every: u32,
        session: u64,
        sink: RtpCounts,
        now: Instant,
        until: Option<DecryptUntil>,
    ) -> Sampler {
        Sampler {
            every: u64::from(every.clamp(1, MAX_DECRYPT_SAMPLE)),
            session,
            clock: [0; 128],
            video: [false; 128],
            until,
            streams: HashMap::default(),
            srtp_overhead: None,
            pending: None,
            sink,
            dirty: false,
            next_publish: now,
        }
    }

    /// Sets the payload types counted, with their RTP clock rates and whether they are video
    /// (after each negotiation).
    pub(crate) fn set_media_pts(&mut self, pts: impl Iterator<Item = (u8, u32, bool)>) {
        self.clock = [0; 128];
        self.video = [false; 128];
        for (pt, rate, video) in pts {
            if let Some(c) = self.clock.get_mut(usize::from(pt)) {
                // 0 would read as "not media": a rate is never 0, but keep it counted.
                *c = rate.max(1);
                self.video[usize::from(pt)] = video;
            }
        }
    }

    /// Classifies and counts one datagram that arrived at `now`.
    pub(crate) fn handle(&mut self, datagram: &[u8], now: Instant) -> Verdict {
        let Datagram::Rtp(h) = Datagram::classify(datagram) else {
            return Verdict::ToRtc(None);
        };
        let rate = self.clock[usize::from(h.pt)];
        if rate == 0 || h.padding {
            return Verdict::ToRtc(None);
        }
        let decrypt_all = self.until.is_some() && self.video[usize::from(h.pt)];
        let s = self.streams.entry(h.ssrc).or_insert_with(|| {
            let mut s = SeqCounter::new(&h, rate, now);
            s.decrypt_all = decrypt_all;
            s
        });
        s.clock_rate = rate;
        let sample = s.decrypt_all || s.arrivals.is_multiple_of(self.every);
        s.arrivals += 1;
        s.record(&h, h.payload_len, now);
        self.dirty = true;
        if sample {
            s.decrypted += 1;
            self.pending = Some((h.ssrc, h.seq, h.payload_len));
            Verdict::ToRtc(Some(h.ssrc))
        } else {
            Verdict::Counted
        }
    }

    /// str0m emitted the RTP packet (`ssrc`, `seq`) with this decrypted `payload`.
    pub(crate) fn decrypted(&mut self, ssrc: u32, seq: u16, payload: &[u8]) {
        if let Some(until) = &self.until {
            if let Some(s) = self.streams.get_mut(&ssrc) {
                if s.decrypt_all && until.test(payload) {
                    // Sampled from the next packet on.
                    s.decrypt_all = false;
                }
            }
        }
        if self.srtp_overhead.is_some() {
            return;
        }
        if let Some((s, q, wire)) = self.pending {
            if s == ssrc && q == seq {
                self.srtp_overhead = Some(wire.saturating_sub(payload.len()));
            }
        }
    }

    /// Whether NACKs of `ssrc` still have to be switched off; marks them done.
    pub(crate) fn take_nack_to_suppress(&mut self, ssrc: u32) -> bool {
        self.streams
            .get_mut(&ssrc)
            .is_some_and(|s| !std::mem::replace(&mut s.nack_suppressed, true))
    }

    /// Undoes [`Sampler::take_nack_to_suppress`] when str0m did not know the stream yet.
    pub(crate) fn nack_not_suppressed(&mut self, ssrc: u32) {
        if let Some(s) = self.streams.get_mut(&ssrc) {
            s.nack_suppressed = false;
        }
    }

    /// When the counts should be published next, if there is anything new.
    pub(crate) fn publish_due(&self) -> Option<Instant> {
        self.dirty.then_some(self.next_publish)
    }

    /// Publishes the counts if due (or `force`d).
    pub(crate) fn publish(&mut self, now: Instant, force: bool) {
        if !self.dirty || (!force && now < self.next_publish) {
            return;
        }
        let overhead = self.srtp_overhead.unwrap_or(0);
        let session = self.session;
        self.sink.publish(
            self.streams
                .iter()
                .map(|(ssrc, s)| s.counts(session, *ssrc, overhead)),
        );
        self.dirty = false;
        self.next_publish = now + PUBLISH_INTERVAL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(seq: u16, ts: u32) -> RtpHeader {
        RtpHeader {
            ssrc: 7,
            seq,
            timestamp: ts,
            pt: 111,
            padding: false,
            payload_len: 100,
        }
    }

    fn feed(seqs: &[u16]) -> SeqCounter {
        let t = Instant::now();
        let mut c = SeqCounter::new(&h(seqs[0], 0), 48_000, t);
        for (i, &q) in seqs.iter().enumerate() {
            c.record(
                &h(q, u32::from(q) * 960),
                100,
                t + Duration::from_millis(20 * i as u64),
            );
        }
        c
    }

    fn summary(c: &SeqCounter) -> (u64, u64, u64, u64, u64) {
        let k = c.counts(1, 7, 0);
        (k.received, k.expected, k.lost(), k.duplicates, k.reordered)
    }

    #[test]
    fn in_order_packets_lose_nothing() {
        let c = feed(&[5, 6, 7, 8, 9]);
        assert_eq!(summary(&c), (5, 5, 0, 0, 0));
        assert!(c.jitter < 1e-9, "steady 20 ms spacing: {}", c.jitter);
    }

    #[test]
    fn gaps_are_loss_duplicates_and_reordering_are_counted() {
        // 3 and 6 never arrive; 2 arrives twice; 5 after 7.
        let c = feed(&[0, 1, 2, 2, 4, 7, 5, 8]);
        assert_eq!(summary(&c), (8, 9, 2, 1, 1));
        // A packet older than the first widens the range and is reordered.
        let c = feed(&[10, 11, 9, 12]);
        assert_eq!(summary(&c), (4, 4, 0, 0, 1));
    }

    #[test]
    fn sequence_numbers_wrap_at_65535() {
        let c = feed(&[65_533, 65_534, 65_535, 0, 1, 2]);
        assert_eq!(summary(&c), (6, 6, 0, 0, 0));
        // A gap across the wrap, a late packet from before it, a duplicate after it.
        let c = feed(&[65_534, 0, 65_535, 2, 2, 3]);
        assert_eq!(summary(&c), (6, 6, 1, 1, 1), "1 is lost");
        // Several wraps in a row: 3 × 65,536 + 10 packets, every 7th lost.
        let t = Instant::now();
        let mut c = SeqCounter::new(&h(0, 0), 48_000, t);
        let total = 3 * 65_536 + 10;
        for i in 0..total {
            if i % 7 != 3 {
                c.record(&h(i as u16, 0), 100, t);
            }
        }
        let lost = (0..total).filter(|i| i % 7 == 3).count() as u64;
        assert_eq!(c.expected(), total);
        assert_eq!(c.counts(1, 7, 0).lost(), lost);
    }

    #[test]
    fn duplicates_are_told_apart_within_the_window_only() {
        let mut seqs: Vec<u16> = (0..5_000).collect();
        seqs.push(4_990); // a duplicate inside the window
        seqs.push(10); // older than the window: late, not a duplicate
        let c = feed(&seqs);
        assert_eq!(summary(&c), (5_002, 5_000, 0, 1, 1));
    }

    #[test]
    fn a_jump_forgets_what_it_passed_and_never_calls_a_first_arrival_a_duplicate() {
        // 0..=9, then a jump of 300 (290 lost so far), then 150 arrives late for the first
        // time, then 150 again, and 9 again (still in the window: a duplicate).
        let c = feed(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 300, 150, 150, 9]);
        assert_eq!(summary(&c), (14, 301, 301 - 12, 2, 1));
        // A jump past the whole window: the ring is cleared, and the numbers the ring slots
        // held before (here 0..=9 + WINDOW) are new when they come.
        let w = WINDOW as u16;
        let c = feed(&[0, 1, 2, w + 20, w + 1, w + 2, w + 1]);
        assert_eq!(
            summary(&c),
            (7, u64::from(w) + 21, u64::from(w) + 21 - 6, 1, 2)
        );
    }

    #[test]
    fn jitter_follows_rfc3550_on_rtp_timestamps() {
        let t = Instant::now();
        let mut c = SeqCounter::new(&h(0, 0), 48_000, t);
        // Sent every 20 ms (960 ticks); every other packet arrives 8 ms late.
        for i in 0..200u32 {
            let late = if i % 2 == 1 { 8 } else { 0 };
            c.record(
                &h(i as u16, i * 960),
                100,
                t + Duration::from_millis(u64::from(i) * 20 + late),
            );
        }
        let jitter_ms = c.counts(1, 7, 0).jitter_ns / 1e6;
        assert!((jitter_ms - 8.0).abs() < 0.1, "{jitter_ms}");
    }

    #[test]
    fn datagrams_are_classified_by_their_first_bytes() {
        let mut rtp = vec![0x80, 0x80 | 111, 0x12, 0x34, 0, 0, 0x03, 0xe8, 0, 0, 0, 42];
        rtp.extend_from_slice(&[0xaa; 20]);
        assert_eq!(
            Datagram::classify(&rtp),
            Datagram::Rtp(RtpHeader {
                ssrc: 42,
                seq: 0x1234,
                timestamp: 1000,
                pt: 111,
                padding: false,
                payload_len: 20,
            })
        );
        // One-byte header extension of 2 words, one CSRC.
        let mut ext = vec![0x91, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 5];
        ext.extend_from_slice(&[0xbe, 0xde, 0, 2, 1, 2, 3, 4, 5, 6, 7, 8]);
        ext.extend_from_slice(&[0xcc; 30]);
        match Datagram::classify(&ext) {
            Datagram::Rtp(h) => assert_eq!((h.ssrc, h.payload_len, h.pt), (9, 30, 96)),
            d => panic!("{d:?}"),
        }
        // RTCP (sender report, 200), STUN, DTLS, runts, a truncated extension.
        assert_eq!(Datagram::classify(&[0x80, 200, 0, 6]), Datagram::Other);
        let mut sr = vec![0x80, 200];
        sr.extend_from_slice(&[0; 26]);
        assert_eq!(Datagram::classify(&sr), Datagram::Other);
        assert_eq!(Datagram::classify(&[0x00, 0x01, 0, 0]), Datagram::Other);
        assert_eq!(Datagram::classify(&[22, 0xfe, 0xfd]), Datagram::Other);
        assert_eq!(Datagram::classify(&rtp[..11]), Datagram::Other);
        assert_eq!(Datagram::classify(&ext[..18]), Datagram::Other);
    }

    #[test]
    fn one_in_n_per_ssrc_goes_to_str0m_the_first_included() {
        let t = Instant::now();
        let sink = RtpCounts::new();
        let mut s = Sampler::new(10, 3, sink.clone(), t, None);
        s.set_media_pts([(111u8, 48_000u32, false)].into_iter());
        let packet = |ssrc: u8, seq: u16, pt: u8, padding: bool| {
            let mut p = vec![if padding { 0xa0 } else { 0x80 }, pt];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, ssrc]);
            p.extend_from_slice(&[0; 40]);
            p
        };
        let mut to_rtc = 0;
        for seq in 0..100u16 {
            for ssrc in [1, 2] {
                match s.handle(&packet(ssrc, seq, 111, false), t) {
                    Verdict::ToRtc(Some(x)) => {
                        assert_eq!(x, u32::from(ssrc));
                        assert_eq!(seq % 10, 0, "the first, then every 10th");
                        to_rtc += 1;
                    }
                    Verdict::Counted => {}
                    v => panic!("{v:?}"),
                }
            }
        }
        assert_eq!(to_rtc, 20);
        // Unknown payload types (RTX) and padding go to str0m uncounted.
        assert_eq!(
            s.handle(&packet(1, 100, 97, false), t),
            Verdict::ToRtc(None)
        );
        assert_eq!(
            s.handle(&packet(1, 100, 111, true), t),
            Verdict::ToRtc(None)
        );
        // The tag length is learnt from a decrypted sample and taken off the byte count.
        s.decrypted(2, 90, &[0; 30]);
        s.publish(t, false);
        let counts = sink.snapshot();
        assert_eq!(counts.len(), 2);
        for c in &counts {
            assert_eq!((c.session, c.received, c.decrypted), (3, 100, 10));
            assert_eq!((c.expected, c.lost(), c.bytes), (100, 0, 100 * 30));
        }
        // Not again before the interval, unless forced.
        s.handle(&packet(1, 100, 111, false), t);
        s.publish(t, false);
        assert_eq!(sink.snapshot()[0].received, 100);
        s.publish(t, true);
        assert_eq!(sink.snapshot()[0].received, 101);
    }

    #[test]
    fn a_video_ssrc_is_decrypted_in_full_until_a_packet_passes_the_test() {
        let t = Instant::now();
        let until = DecryptUntil::new(|payload: &[u8]| payload.first() == Some(&b'h'));
        let mut s = Sampler::new(16, 1, RtpCounts::new(), t, Some(until));
        // 96 is video (VP8), 111 audio (Opus).
        s.set_media_pts([(96u8, 90_000u32, true), (111, 48_000, false)].into_iter());
        let packet = |ssrc: u8, seq: u16, pt: u8| {
            let mut p = vec![0x80, pt];
            p.extend_from_slice(&seq.to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, ssrc]);
            p.extend_from_slice(&[0; 40]);
            p
        };
        // Video SSRC 1 carries l, then h from its 40th packet (seq 39): every packet up to that
        // one is decrypted, then one in 16 counting from the stream's first arrival.
        let mut decrypted = Vec::new();
        for seq in 0..100u16 {
            if let Verdict::ToRtc(Some(1)) = s.handle(&packet(1, seq, 96), t) {
                decrypted.push(seq);
                let layer: &[u8] = if seq < 39 { b"l" } else { b"h" };
                s.decrypted(1, seq, layer);
            }
        }
        let mut expected: Vec<u16> = (0..40).collect();
        expected.extend([48, 64, 80, 96]);
        assert_eq!(decrypted, expected);
        // Audio is sampled from its first packet.
        let audio = (0..40u16)
            .filter(|&q| s.handle(&packet(2, q, 111), t) == Verdict::ToRtc(Some(2)))
            .count();
        assert_eq!(audio, 3, "0, 16 and 32");
        // A payload that never passes keeps its SSRC decrypted in full.
        for seq in 0..40u16 {
            assert_eq!(s.handle(&packet(3, seq, 96), t), Verdict::ToRtc(Some(3)));
            s.decrypted(3, seq, b"m");
        }
        // Without a test, video is sampled like audio.
        let mut plain = Sampler::new(16, 2, RtpCounts::new(), t, None);
        plain.set_media_pts([(96u8, 90_000u32, true)].into_iter());
        let sampled = (0..40u16)
            .filter(|&q| plain.handle(&packet(1, q, 96), t) != Verdict::Counted)
            .count();
        assert_eq!(sampled, 3);
    }
}
