//! What a receiver counts: per (sender, stream) loss, duplicates, reordering, jitter and bytes,
//! and a latency histogram over every packet.
//!
//! Two ways to count, one per receive mode (`--decrypt-sample`):
//! - every packet decrypted (`1`): [`StreamRx`], from the loadgen header in each payload: its
//!   per-(sender, stream) sequence number, send time (latency, jitter) and keyframe flag;
//! - sampled (`N` > 1): [`RtpRx`], from the RTP header counts `callrelay_client` keeps per SSRC
//!   ([`callrelay_client::RtpStreamCounts`]) — the sequence numbers the relay gives this
//!   receiver — attributed to a (sender, stream) by [`SsrcAttribution`] from the loadgen header
//!   of the decrypted sample; latency from the sample only.

use std::collections::HashMap;

use callrelay_client::RtpStreamCounts;
use hdrhistogram::Histogram;

use crate::header::{Header, Stream};

/// Highest latency the histograms record (larger values are clamped): 60 s in ns.
pub const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds, 3 significant figures.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("1 ns..60 s at 3 digits is valid")
}

/// Accounting for one (sender, stream) at one receiver.
#[derive(Debug, Clone, Default)]
pub struct StreamRx {
    /// Sequence number of the first packet received; the bitmap starts here.
    base: u32,
    /// Lowest and highest sequence number received.
    min_seq: u32,
    max_seq: u32,
    /// Bit per sequence number from `base` (received or not).
    seen: Vec<u64>,
    started: bool,
    /// Packets received (duplicates included).
    pub received: u64,
    /// Packets received more than once.
    pub duplicates: u64,
    /// Packets that arrived after one with a higher sequence number.
    pub reordered: u64,
    /// Sequence numbers skipped on purpose: a gap that ends on a keyframe start is a simulcast
    /// layer the relay stopped and resumed sending, not loss.
    pub skipped: u64,
    /// Payload bytes received.
    pub bytes: u64,
    /// RFC 3550 interarrival jitter, ns.
    pub jitter_ns: f64,
    last: Option<(u64, u64)>,
    /// First and last arrival, ns on the loadgen clock.
    pub first_arrival_ns: u64,
    /// Last arrival.
    pub last_arrival_ns: u64,
}

impl StreamRx {
    /// Counts one packet with header `h`, `len` payload bytes, arriving at `arrival_ns`.
    pub fn record(&mut self, h: &Header, len: usize, arrival_ns: u64) {
        self.received += 1;
        self.bytes += len as u64;
        if !self.started {
            self.started = true;
            self.base = h.seq;
            self.min_seq = h.seq;
            self.max_seq = h.seq;
            self.first_arrival_ns = arrival_ns;
            self.mark(h.seq);
        } else if h.seq < self.base {
            // Older than the first packet we saw: it cannot be a duplicate of anything tracked.
            self.reordered += 1;
            self.min_seq = self.min_seq.min(h.seq);
        } else if self.mark(h.seq) {
            self.duplicates += 1;
        } else if h.seq < self.max_seq {
            self.reordered += 1;
        } else {
            let gap = h.seq - self.max_seq - 1;
            if gap > 0 && h.stream != Stream::Audio && h.keyframe_start() {
                self.skipped += u64::from(gap);
            }
            self.max_seq = h.seq;
        }
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);
        // RFC 3550 §6.4.1, on the send and arrival times of consecutive arrivals.
        if let Some((prev_arrival, prev_sent)) = self.last {
            let d =
                (arrival_ns as f64 - prev_arrival as f64) - (h.sent_ns as f64 - prev_sent as f64);
            self.jitter_ns += (d.abs() - self.jitter_ns) / 16.0;
        }
        self.last = Some((arrival_ns, h.sent_ns));
    }

    /// Marks `seq` seen; true if it already was.
    fn mark(&mut self, seq: u32) -> bool {
        let i = (seq - self.base) as usize;
        let (word, bit) = (i / 64, i % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let was = self.seen[word] & (1 << bit) != 0;
        self.seen[word] |= 1 << bit;
        was
    }

    /// Packets expected: the sequence range received, minus the deliberately skipped gaps.
    pub fn expected(&self) -> u64 {
        if !self.started {
            return 0;
        }
        (u64::from(self.max_seq) - u64::from(self.min_seq) + 1).saturating_sub(self.skipped)
    }

    /// Distinct packets received.
    pub fn unique(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Packets missing from the expected range.
    pub fn lost(&self) -> u64 {
        self.expected().saturating_sub(self.unique())
    }

    /// What the report takes from it.
    pub fn summary(&self) -> StreamSummary {
        StreamSummary {
            received: self.received,
            expected: self.expected(),
            lost: self.lost(),
            duplicates: self.duplicates,
            reordered: self.reordered,
            skipped: self.skipped,
            bytes: self.bytes,
            jitter_ns: self.jitter_ns,
            first_arrival_ns: self.first_arrival_ns,
            last_arrival_ns: self.last_arrival_ns,
        }
    }
}

/// One (sender, stream) at one receiver as the report sums it, whichever way it was counted.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamSummary {
    /// Packets received, duplicates included.
    pub received: u64,
    /// Packets expected from the sequence range.
    pub expected: u64,
    /// Packets missing from it.
    pub lost: u64,
    /// Received more than once.
    pub duplicates: u64,
    /// Received after a later one.
    pub reordered: u64,
    /// Sequence numbers skipped by simulcast layer switches (header counting only).
    pub skipped: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// RFC 3550 jitter, ns.
    pub jitter_ns: f64,
    /// First arrival, ns on the loadgen clock.
    pub first_arrival_ns: u64,
    /// Last arrival.
    pub last_arrival_ns: u64,
}

/// Sampled mode: what the RTP header counts of one receiver's subscriptions give one
/// (sender, stream), as the sum of the increments attributed to it (see [`SsrcAttribution`]).
/// Increments are signed: a gap that opens while a subscription carries one layer and is
/// filled by a late packet after it moved to another lowers the first layer's loss and
/// raises nothing — the totals over layers are exact, a layer's own share is not.
#[derive(Debug, Clone, Copy, Default)]
pub struct RtpRx {
    received: i64,
    expected: i64,
    lost: i64,
    duplicates: i64,
    reordered: i64,
    bytes: i64,
    jitter_ns: f64,
    first_arrival_ns: Option<u64>,
    last_arrival_ns: u64,
}

impl RtpRx {
    /// Received packets attributed so far.
    pub fn received(&self) -> u64 {
        self.received.max(0) as u64
    }

    /// What the report takes from it (negative shares read as 0).
    pub fn summary(&self) -> StreamSummary {
        let u = |v: i64| v.max(0) as u64;
        StreamSummary {
            received: u(self.received),
            expected: u(self.expected),
            lost: u(self.lost),
            duplicates: u(self.duplicates),
            reordered: u(self.reordered),
            skipped: 0,
            bytes: u(self.bytes),
            jitter_ns: self.jitter_ns,
            first_arrival_ns: self.first_arrival_ns.unwrap_or(0),
            last_arrival_ns: self.last_arrival_ns,
        }
    }

    /// Adds the increment from `before` (`None`: nothing counted yet) to `now`, which arrived
    /// from `first_ns` (the earliest arrival the increment covers) to `last_ns`.
    fn add(
        &mut self,
        before: Option<&RtpStreamCounts>,
        now: &RtpStreamCounts,
        first_ns: u64,
        last_ns: u64,
    ) {
        let d = |f: fn(&RtpStreamCounts) -> u64| f(now) as i64 - before.map_or(0, |b| f(b) as i64);
        self.received += d(|c| c.received);
        self.expected += d(|c| c.expected);
        self.lost += d(RtpStreamCounts::lost);
        self.duplicates += d(|c| c.duplicates);
        self.reordered += d(|c| c.reordered);
        self.bytes += d(|c| c.bytes);
        self.jitter_ns = now.jitter_ns;
        self.first_arrival_ns = Some(self.first_arrival_ns.map_or(first_ns, |f| f.min(first_ns)));
        self.last_arrival_ns = self.last_arrival_ns.max(last_ns);
    }
}

/// Sampled mode: which (sender, stream) each (session, SSRC) a receiver counts carries, learnt
/// from the loadgen header of its decrypted packets, and the counts already attributed.
///
/// The relay keeps one SSRC and one sequence of numbers per subscription when it switches
/// simulcast layers, so loss, duplicates and reordering are counted per subscription and a
/// switch is no gap. Counts are attributed to a layer in increments, each time they are read
/// (every 250 ms), to the layer of the latest decrypted packet: after a switch, up to one
/// sampling period (`N` packets) and one read interval go to the old layer. Counts of an SSRC
/// with no decrypted packet yet wait until it has one.
#[derive(Debug, Default)]
pub struct SsrcAttribution {
    carries: HashMap<(u64, u32), (u32, Stream)>,
    attributed: HashMap<(u64, u32), RtpStreamCounts>,
}

impl SsrcAttribution {
    /// A decrypted packet of (`session`, `ssrc`) carried header `h`.
    pub fn learn(&mut self, session: u64, ssrc: u32, h: &Header) {
        self.carries.insert((session, ssrc), (h.sender, h.stream));
    }

    /// Attributes what `counts` (cumulative per (session, SSRC)) added since the last call to
    /// `stats.rtp`; returns the packets attributed. `clock_ns` turns arrivals into loadgen
    /// clock time.
    pub fn absorb(
        &mut self,
        counts: &[RtpStreamCounts],
        stats: &mut ReceiverStats,
        clock_ns: impl Fn(std::time::Instant) -> u64,
    ) -> u64 {
        let mut packets = 0;
        for c in counts {
            let key = (c.session, c.ssrc);
            let Some(&carries) = self.carries.get(&key) else {
                continue;
            };
            let before = self.attributed.get(&key);
            if before == Some(c) {
                continue;
            }
            let first = match before {
                Some(b) => clock_ns(b.last_arrival),
                None => clock_ns(c.first_arrival),
            };
            packets += c.received - before.map_or(0, |b| b.received);
            stats
                .rtp
                .entry(carries)
                .or_default()
                .add(before, c, first, clock_ns(c.last_arrival));
            self.attributed.insert(key, c.clone());
        }
        packets
    }

    /// Packets counted on SSRCs that never had a decrypted packet of ours (so no sender).
    pub fn unattributed(&self, counts: &[RtpStreamCounts]) -> u64 {
        counts
            .iter()
            .filter(|c| !self.carries.contains_key(&(c.session, c.ssrc)))
            .map(|c| c.received)
            .sum()
    }
}

/// Everything one receiving participant measured.
#[derive(Debug, Clone)]
pub struct ReceiverStats {
    /// Per (sender index, stream), from the loadgen header (every packet decrypted).
    pub streams: HashMap<(u32, Stream), StreamRx>,
    /// Per (sender index, stream), from RTP header counts (sampled mode).
    pub rtp: HashMap<(u32, Stream), RtpRx>,
    /// Wire-to-wire latency of every packet decrypted, ns.
    pub latency: Histogram<u64>,
    /// Media packets without our header (not counted elsewhere), and in sampled mode packets
    /// counted on an SSRC none of whose packets was decrypted.
    pub foreign: u64,
}

impl Default for ReceiverStats {
    fn default() -> Self {
        ReceiverStats {
            streams: HashMap::new(),
            rtp: HashMap::new(),
            latency: latency_histogram(),
            foreign: 0,
        }
    }
}

impl ReceiverStats {
    /// Every (sender, stream) received, with its summary, however it was counted.
    pub fn summaries(&self) -> impl Iterator<Item = ((u32, Stream), StreamSummary)> + '_ {
        let header = self.streams.iter().map(|(k, s)| (*k, s.summary()));
        let rtp = self
            .rtp
            .iter()
            .filter(|(_, s)| s.received() > 0)
            .map(|(k, s)| (*k, s.summary()));
        header.chain(rtp)
    }

    /// Records the latency of a decrypted packet only (sampled mode: loss and the rest come
    /// from RTP counts); returns it in ns.
    pub fn record_latency(&mut self, h: &Header, arrival_ns: u64) -> u64 {
        let latency = arrival_ns
            .saturating_sub(h.sent_ns)
            .clamp(1, MAX_LATENCY_NS);
        self.latency.saturating_record(latency);
        latency
    }

    /// Counts one received packet; returns its latency in ns.
    pub fn record(&mut self, h: &Header, len: usize, arrival_ns: u64) -> u64 {
        let latency = self.record_latency(h, arrival_ns);
        self.streams
            .entry((h.sender, h.stream))
            .or_default()
            .record(h, len, arrival_ns);
        latency
    }
}

/// One video subscription at one receiver (one SSRC of one client session: callrelay and
/// Janus keep it across simulcast layer switches), waiting for the layer it asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerWait {
    /// The publisher (sender index).
    pub sender: u32,
    /// Arrival of the subscription's first video packet, ns on the loadgen clock.
    pub first_ns: u64,
    /// Arrival of its first packet of the requested layer (`None`: never during the run).
    pub reached_ns: Option<u64>,
    /// When both ends were connected (the later of the receiver's and the publisher's ICE +
    /// DTLS up, as their loadgen tasks saw it), read when the layer arrived.
    pub connected_ns: Option<u64>,
    /// Video packets of ours seen on it before the first of the requested layer.
    pub before: u64,
    /// RTP sequence numbers (as the relay numbers the subscription) of the first video packet
    /// seen and of the first of the requested layer: with nothing lost and every packet
    /// decrypted until the layer arrived, `before` is their difference.
    pub first_seq: u64,
    /// Of the first packet of the requested layer.
    pub reached_seq: Option<u64>,
}

impl LayerWait {
    /// First video packet → first packet of the requested layer, ns.
    pub fn from_first_ns(&self) -> Option<u64> {
        self.reached_ns.map(|r| r.saturating_sub(self.first_ns))
    }

    /// Packets between the first video packet seen and the first of the requested layer that
    /// were not seen (lost, or not decrypted): 0 when the time is exact to the packet.
    pub fn unseen_before(&self) -> u64 {
        self.reached_seq.map_or(0, |r| {
            r.saturating_sub(self.first_seq).saturating_sub(self.before)
        })
    }

    /// Both ends connected → first packet of the requested layer, ns.
    pub fn from_connected_ns(&self) -> Option<u64> {
        self.reached_ns
            .zip(self.connected_ns)
            .map(|(r, c)| r.saturating_sub(c))
    }
}

/// Per video subscription of one receiver: how long it took to get the simulcast layer the
/// receiver asked for. Fed every decrypted video packet; in sampled mode the client decrypts
/// every packet of a video SSRC until the requested layer has arrived once
/// ([`callrelay_client::ClientConfig::decrypt_video_until`]), so the time is exact to the
/// packet in both receive modes.
#[derive(Debug)]
pub struct LayerClock {
    want: Stream,
    subs: HashMap<(u64, u32), LayerWait>,
}

impl LayerClock {
    /// Waits for `want` on every video subscription.
    pub fn new(want: Stream) -> LayerClock {
        LayerClock {
            want,
            subs: HashMap::new(),
        }
    }

    /// A decrypted video packet with header `h` and (extended) RTP sequence number `seq`
    /// arrived at `arrival_ns` on (`session`, `ssrc`). `connected_ns(sender)` gives the later
    /// of both ends' connection times; it is asked once per subscription, when the layer
    /// arrives. True if this is the first packet of the requested layer on its subscription.
    pub fn record(
        &mut self,
        session: u64,
        ssrc: u32,
        seq: u64,
        h: &Header,
        arrival_ns: u64,
        connected_ns: impl FnOnce(u32) -> Option<u64>,
    ) -> bool {
        // A shared screen has no layers to wait for: it is no camera subscription.
        if h.stream == Stream::Screen {
            return false;
        }
        let w = self.subs.entry((session, ssrc)).or_insert(LayerWait {
            sender: h.sender,
            first_ns: arrival_ns,
            reached_ns: None,
            connected_ns: None,
            before: 0,
            first_seq: seq,
            reached_seq: None,
        });
        if w.reached_ns.is_some() {
            return false;
        }
        // A reordered packet may be older than the first one seen.
        w.first_ns = w.first_ns.min(arrival_ns);
        w.first_seq = w.first_seq.min(seq);
        if h.stream != self.want {
            w.before += 1;
            return false;
        }
        w.reached_ns = Some(arrival_ns);
        w.reached_seq = Some(seq);
        w.connected_ns = connected_ns(w.sender);
        true
    }

    /// Sampled mode: moves each subscription's start to its SSRC's first arrival as counted
    /// from RTP headers, when that is earlier than its first decrypted packet (str0m drops a
    /// packet it cannot map to an m-line yet).
    pub fn first_arrivals(
        &mut self,
        counts: &[RtpStreamCounts],
        clock_ns: impl Fn(std::time::Instant) -> u64,
    ) {
        for c in counts {
            if let Some(w) = self.subs.get_mut(&(c.session, c.ssrc)) {
                w.first_ns = w.first_ns.min(clock_ns(c.first_arrival));
            }
        }
    }

    /// Every subscription seen, reached or not.
    pub fn waits(&self) -> impl Iterator<Item = &LayerWait> + '_ {
        self.subs.values()
    }
}

/// Totals over many streams of one kind.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct StreamTotals {
    /// (sender, receiver) streams with at least one packet.
    pub streams: u64,
    /// Packets received, duplicates included.
    pub received: u64,
    /// Packets expected from the sequence ranges.
    pub expected: u64,
    /// Packets lost.
    pub lost: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Reordered packets.
    pub reordered: u64,
    /// Sequence numbers skipped by simulcast layer switches.
    pub skipped: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Mean received bitrate per stream, kbit/s (over each stream's first to last arrival).
    pub kbps_per_stream: f64,
    /// Mean and max RFC 3550 jitter, ms.
    pub jitter_ms_mean: f64,
    /// Max jitter over the streams, ms.
    pub jitter_ms_max: f64,
}

impl StreamTotals {
    /// Adds one (sender, stream) of one receiver.
    pub fn add(&mut self, s: &StreamSummary) {
        let n = self.streams as f64;
        let span_ns = s.last_arrival_ns.saturating_sub(s.first_arrival_ns);
        let kbps = if span_ns > 0 {
            s.bytes as f64 * 8.0 / (span_ns as f64 / 1e9) / 1000.0
        } else {
            0.0
        };
        let jitter = s.jitter_ns / 1e6;
        self.kbps_per_stream = (self.kbps_per_stream * n + kbps) / (n + 1.0);
        self.jitter_ms_mean = (self.jitter_ms_mean * n + jitter) / (n + 1.0);
        self.jitter_ms_max = self.jitter_ms_max.max(jitter);
        self.streams += 1;
        self.received += s.received;
        self.expected += s.expected;
        self.lost += s.lost;
        self.duplicates += s.duplicates;
        self.reordered += s.reordered;
        self.skipped += s.skipped;
        self.bytes += s.bytes;
    }

    /// Lost / expected (0 when nothing was expected).
    pub fn loss_ratio(&self) -> f64 {
        if self.expected == 0 {
            0.0
        } else {
            self.lost as f64 / self.expected as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::FLAG_KEYFRAME_START;

    fn h(stream: Stream, seq: u32, sent_ns: u64, key: bool) -> Header {
        Header {
            sender: 0,
            stream,
            flags: if key { FLAG_KEYFRAME_START } else { 0 },
            seq,
            sent_ns,
        }
    }

    fn feed(seqs: &[u32]) -> StreamRx {
        let mut s = StreamRx::default();
        for (i, &q) in seqs.iter().enumerate() {
            s.record(
                &h(Stream::Audio, q, u64::from(q) * 1000, false),
                100,
                i as u64 * 1000 + 500,
            );
        }
        s
    }

    #[test]
    fn in_order_stream_has_no_loss() {
        let s = feed(&[5, 6, 7, 8, 9]);
        assert_eq!(
            (s.expected(), s.lost(), s.duplicates, s.reordered),
            (5, 0, 0, 0)
        );
        assert_eq!(s.bytes, 500);
    }

    #[test]
    fn gaps_are_loss_duplicates_and_reordering_are_counted() {
        // 3 and 6 never arrive; 2 arrives twice; 5 arrives after 7.
        let s = feed(&[0, 1, 2, 2, 4, 7, 5, 8]);
        assert_eq!(s.expected(), 9);
        assert_eq!(s.unique(), 7);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.duplicates, 1);
        assert_eq!(s.reordered, 1);
    }

    #[test]
    fn a_late_packet_older_than_the_first_counts_and_widens_the_range() {
        let s = feed(&[10, 11, 9, 12]);
        assert_eq!((s.expected(), s.lost(), s.reordered), (4, 0, 1));
    }

    #[test]
    fn a_video_gap_ending_on_a_keyframe_is_a_layer_switch_not_loss() {
        let mut s = StreamRx::default();
        s.record(&h(Stream::VideoH, 0, 0, true), 1000, 10);
        s.record(&h(Stream::VideoH, 1, 1, false), 1000, 20);
        // The relay switched away and back: resumes at a keyframe 100 packets later.
        s.record(&h(Stream::VideoH, 102, 2, true), 1000, 30);
        s.record(&h(Stream::VideoH, 104, 3, false), 1000, 40);
        assert_eq!(s.skipped, 100);
        assert_eq!(s.expected(), 5, "0, 1, 102, 103, 104");
        assert_eq!(s.lost(), 1, "103 is lost");
        // The same gap on audio is loss.
        let a = feed(&[0, 1, 50]);
        assert_eq!(a.lost(), 48);
    }

    #[test]
    fn jitter_follows_rfc3550() {
        let mut s = StreamRx::default();
        // Sent every 20 ms; arrivals alternate 0 and +8 ms late.
        for i in 0..200u64 {
            let sent = i * 20_000_000;
            let late = if i % 2 == 1 { 8_000_000 } else { 0 };
            s.record(&h(Stream::Audio, i as u32, sent, false), 100, sent + late);
        }
        // |D| is always 8 ms, so J converges to 8 ms.
        assert!((s.jitter_ns / 1e6 - 8.0).abs() < 0.01, "{}", s.jitter_ns);
        let steady = feed(&(0..50).collect::<Vec<_>>());
        assert!(steady.jitter_ns < 1.0);
    }

    fn counts(ssrc: u32, received: u64, expected: u64, t: std::time::Instant) -> RtpStreamCounts {
        RtpStreamCounts {
            session: 1,
            ssrc,
            pt: 96,
            received,
            decrypted: received / 16,
            bytes: received * 1000,
            expected,
            duplicates: 0,
            reordered: 0,
            jitter_ns: 1e6,
            first_arrival: t,
            last_arrival: t + std::time::Duration::from_millis(received * 10),
        }
    }

    #[test]
    fn rtp_counts_go_to_the_layer_of_the_latest_decrypted_packet() {
        let t = std::time::Instant::now();
        let ns = |i: std::time::Instant| i.duration_since(t).as_nanos() as u64;
        let mut a = SsrcAttribution::default();
        let mut r = ReceiverStats::default();
        // Nothing decrypted yet on SSRC 5: its counts wait.
        assert_eq!(a.absorb(&[counts(5, 10, 10, t)], &mut r, ns), 0);
        assert!(r.rtp.is_empty());
        a.learn(1, 5, &h(Stream::VideoL, 0, 0, true));
        assert_eq!(a.absorb(&[counts(5, 10, 10, t)], &mut r, ns), 10);
        // The subscription moved to m; 3 packets missing so far (filled in later).
        let mut m = h(Stream::VideoM, 0, 0, true);
        m.sender = 0;
        a.learn(1, 5, &m);
        assert_eq!(a.absorb(&[counts(5, 40, 43, t)], &mut r, ns), 30);
        assert_eq!(
            a.absorb(&[counts(5, 40, 43, t)], &mut r, ns),
            0,
            "no change"
        );
        // The late three arrive: loss goes back to 0 in total.
        assert_eq!(a.absorb(&[counts(5, 43, 43, t)], &mut r, ns), 3);
        let l = r.rtp[&(0, Stream::VideoL)].summary();
        let m = r.rtp[&(0, Stream::VideoM)].summary();
        assert_eq!((l.received, l.expected, l.lost), (10, 10, 0));
        assert_eq!((m.received, m.expected, m.lost), (33, 33, 0));
        assert_eq!(l.bytes + m.bytes, 43_000);
        assert_eq!(m.first_arrival_ns, 100_000_000, "from where l stopped");
        assert_eq!(m.last_arrival_ns, 430_000_000);
        let mut t2 = StreamTotals::default();
        for (_, s) in r.summaries() {
            t2.add(&s);
        }
        assert_eq!((t2.streams, t2.received, t2.lost), (2, 43, 0));
        // An SSRC never decrypted is counted as unattributed.
        assert_eq!(
            a.unattributed(&[counts(5, 43, 43, t), counts(6, 7, 7, t)]),
            7
        );
    }

    #[test]
    fn receiver_latency_is_arrival_minus_send() {
        let mut r = ReceiverStats::default();
        assert_eq!(
            r.record(&h(Stream::Audio, 0, 1_000, false), 10, 251_000),
            250_000
        );
        assert_eq!(
            r.record(&h(Stream::Audio, 1, 9_000, false), 10, 5_000),
            1,
            "clamped"
        );
        assert_eq!(r.latency.len(), 2);
        let mut t = StreamTotals::default();
        t.add(&r.streams[&(0, Stream::Audio)].summary());
        assert_eq!((t.streams, t.received, t.lost), (1, 2, 0));
    }

    #[test]
    fn the_time_to_the_requested_layer_is_that_of_its_first_packet() {
        let ms = 1_000_000u64;
        let mut c = LayerClock::new(Stream::VideoH);
        let mut asked = 0;
        let mut connected = |_sender: u32| {
            asked += 1;
            Some(40 * ms)
        };
        let video = |stream, sender| Header {
            sender,
            ..h(stream, 0, 0, false)
        };
        // Subscription (1, 10) from sender 4: l, l, m, h, h (sequence numbers 1000..=1004).
        let a = [
            (Stream::VideoL, 100),
            (Stream::VideoL, 110),
            (Stream::VideoM, 120),
            (Stream::VideoH, 150),
            (Stream::VideoH, 160),
        ];
        let mut firsts = Vec::new();
        for (seq, (stream, at)) in (1000..).zip(a) {
            firsts.push(c.record(1, 10, seq, &video(stream, 4), at * ms, &mut connected));
        }
        assert_eq!(firsts, [false, false, false, true, false]);
        // Subscription (1, 11) from sender 5: l, m, m, never h (sequence number 2 not seen).
        let b = [
            (0, Stream::VideoL, 105),
            (1, Stream::VideoM, 115),
            (3, Stream::VideoM, 900),
        ];
        for (seq, stream, at) in b {
            assert!(!c.record(1, 11, seq, &video(stream, 5), at * ms, &mut connected));
        }
        assert_eq!(
            asked, 1,
            "the connection time is read once, when the layer arrives"
        );
        let mut waits: Vec<LayerWait> = c.waits().copied().collect();
        waits.sort_by_key(|w| w.sender);
        assert_eq!(
            waits[0],
            LayerWait {
                sender: 4,
                first_ns: 100 * ms,
                reached_ns: Some(150 * ms),
                connected_ns: Some(40 * ms),
                before: 3,
                first_seq: 1000,
                reached_seq: Some(1003),
            }
        );
        assert_eq!(
            waits[0].from_first_ns(),
            Some(50 * ms),
            "the first h, not the second"
        );
        assert_eq!(waits[0].from_connected_ns(), Some(110 * ms));
        assert_eq!(
            waits[0].unseen_before(),
            0,
            "every packet before h was seen"
        );
        assert_eq!((waits[1].reached_ns, waits[1].before), (None, 3));
        assert_eq!(waits[1].from_first_ns(), None);
        assert_eq!(
            waits[1].unseen_before(),
            0,
            "never reached: nothing to time"
        );
        // Had only a sample been seen before h (1 of the 3), two would be unseen.
        let mut sampled = LayerClock::new(Stream::VideoH);
        sampled.record(2, 10, 1000, &video(Stream::VideoL, 4), 100 * ms, |_| None);
        sampled.record(2, 10, 1003, &video(Stream::VideoH, 4), 150 * ms, |_| None);
        let w = sampled.waits().next().copied().unwrap();
        assert_eq!((w.before, w.unseen_before()), (1, 2));

        // Sampled: the SSRC's first arrival counted from RTP headers may be earlier than its
        // first decrypted packet (str0m dropped it); the other subscription is not touched.
        let t = std::time::Instant::now();
        let mut early = counts(10, 1, 1, t);
        early.first_arrival = t + std::time::Duration::from_millis(90);
        let ns = |i: std::time::Instant| i.duration_since(t).as_nanos() as u64;
        c.first_arrivals(&[early], ns);
        let w = c.waits().find(|w| w.sender == 4).copied().unwrap();
        assert_eq!(w.from_first_ns(), Some(60 * ms));
        let other = c.waits().find(|w| w.sender == 5).copied().unwrap();
        assert_eq!(other.first_ns, 105 * ms);

        // The report: two subscriptions, one reached, one never; a third stream delivered no
        // video at all.
        let r = crate::report::LayerReport::new("h", c.waits(), 1);
        assert_eq!(
            (r.subscriptions, r.reached, r.never_reached, r.without_video),
            (2, 1, 1, 1)
        );
        assert_eq!((r.packets_before, r.packets_unseen_before), (6, 0));
        assert_eq!(r.from_first_packet_ms.p50, Some(60.0));
        assert_eq!(r.from_first_packet_ms.max, Some(60.0));
        assert_eq!(r.from_connected_ms.p90, Some(110.0));
    }
}
