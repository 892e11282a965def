//! The datagrams a worker has to send after a turn, laid out for one `sendmmsg` (see
//! [`callrelay_udp`]): back to back in one buffer, one [`Run`] per send entry. Consecutive
//! datagrams of one size to one destination — a keyframe burst or a run of retransmissions to
//! one subscriber — share a run, which leaves as one GSO entry (the kernel cuts it into
//! datagrams); a fan-out to many subscribers is one entry per destination, all in one syscall.
//!
//! Every buffer is allocated once, at its largest: [`Pending::push`] refuses what does not fit
//! (the worker sends what it has, then pushes again), so nothing here allocates per packet.

use std::net::SocketAddr;
use std::time::Instant;

use callrelay_udp::Entry;

/// Largest GSO run handed to the kernel in one entry (below the 64 KiB UDP limit).
const MAX_RUN_BYTES: usize = 60 * 1024;
/// Bytes held before a send is forced. Above any single datagram, so an empty [`Pending`]
/// takes any datagram UDP can carry.
const MAX_BYTES: usize = 512 * 1024;
/// Datagrams held before a send is forced (one receive batch fanned out to 16 subscribers).
const MAX_DATAGRAMS: usize = 512;

/// One send entry: a datagram, or a run of equal-size datagrams to one destination.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    entry: Entry,
    /// Index of its first datagram in [`Pending`]'s arrival times.
    first: usize,
    /// Datagrams in the run.
    count: usize,
    /// The size of each.
    segment: usize,
}

impl AsRef<Entry> for Run {
    fn as_ref(&self) -> &Entry {
        &self.entry
    }
}

impl Run {
    /// Datagrams it carries.
    pub fn datagrams(&self) -> usize {
        self.count
    }

    /// Whether it is a GSO run (more than one datagram).
    pub fn is_gso(&self) -> bool {
        self.count > 1
    }
}

/// Datagrams waiting to be sent, and how far sending has got.
#[derive(Debug)]
pub(super) struct Pending {
    /// Every datagram's bytes, back to back in push order.
    buf: Vec<u8>,
    runs: Vec<Run>,
    /// Per datagram: the arrival time of the packet it is a forwarded copy of (its
    /// forward latency is recorded when the kernel takes it), `None` for the rest.
    received: Vec<Option<Instant>>,
    /// Runs handed to the kernel or dropped: `runs[sent..]` are still to go.
    sent: usize,
}

impl Pending {
    /// An empty queue with every buffer at its final size.
    pub fn new() -> Pending {
        Pending {
            buf: Vec::with_capacity(MAX_BYTES),
            // Room for every datagram in a run of its own: what [`Pending::split_runs`] makes.
            runs: Vec::with_capacity(MAX_DATAGRAMS),
            received: Vec::with_capacity(MAX_DATAGRAMS),
            sent: 0,
        }
    }

    /// Adds a datagram, to the last run when it is the same size to the same destination and
    /// the run has room (`max_segments`: the socket's GSO limit, 1 without GSO), else as a new
    /// run. False, and nothing added, when the queue is full: send, [`Pending::clear`], push
    /// again (an empty queue takes any datagram of at most 64 KiB).
    pub fn push(
        &mut self,
        destination: SocketAddr,
        contents: &[u8],
        received_at: Option<Instant>,
        max_segments: usize,
    ) -> bool {
        if self.received.len() >= MAX_DATAGRAMS || self.buf.len() + contents.len() > MAX_BYTES {
            return false;
        }
        let start = self.buf.len();
        let index = self.received.len();
        // Only the last run can grow (its bytes end where the buffer ends), and only while it
        // has not been handed to the kernel.
        let growable = self.runs.len() > self.sent;
        match self.runs.last_mut() {
            Some(run)
                if growable
                    && run.entry.destination == destination
                    && run.segment == contents.len()
                    && run.count < max_segments.min(callrelay_udp::MAX_SEGMENTS)
                    && run.entry.len + contents.len() <= MAX_RUN_BYTES =>
            {
                run.count += 1;
                run.entry.len += contents.len();
                run.entry.segment_size = Some(run.segment);
            }
            _ => self.runs.push(Run {
                entry: Entry {
                    destination,
                    start,
                    len: contents.len(),
                    segment_size: None,
                },
                first: index,
                count: 1,
                segment: contents.len(),
            }),
        }
        self.buf.extend_from_slice(contents);
        self.received.push(received_at);
        true
    }

    /// The bytes the runs point into.
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// The runs still to be sent, in order.
    pub fn unsent(&self) -> &[Run] {
        &self.runs[self.sent..]
    }

    /// Whether every run has been sent or dropped.
    pub fn is_done(&self) -> bool {
        self.sent >= self.runs.len()
    }

    /// Marks the next `n` runs as sent; returns the arrival times of the forwarded copies
    /// among them.
    pub fn advance(&mut self, n: usize) -> impl Iterator<Item = Instant> + '_ {
        let from = self.sent;
        self.sent = (self.sent + n).min(self.runs.len());
        let datagrams = match (
            self.runs.get(from),
            self.runs.get(self.sent.wrapping_sub(1)),
        ) {
            (Some(a), Some(b)) if self.sent > from => a.first..b.first + b.count,
            _ => 0..0,
        };
        self.received[datagrams].iter().flatten().copied()
    }

    /// Gives up on the next run (the kernel refused it); returns how many datagrams it had.
    pub fn skip(&mut self) -> usize {
        let n = self.unsent().first().map_or(0, Run::datagrams);
        self.sent = (self.sent + 1).min(self.runs.len());
        n
    }

    /// Turns every unsent GSO run into single datagrams, in the same order: after the kernel
    /// refused a segment size (a driver without UDP GSO), they go one entry each.
    pub fn split_runs(&mut self) {
        let extra: usize = self.unsent().iter().map(|r| r.count - 1).sum();
        if extra == 0 {
            return;
        }
        let old = self.runs.len();
        let filler = self.runs[old - 1];
        // Within capacity: there are never more runs than datagrams.
        self.runs.resize(old + extra, filler);
        // From the back, so no run is overwritten before it is read.
        let mut write = self.runs.len();
        for read in (self.sent..old).rev() {
            let run = self.runs[read];
            for k in (0..run.count).rev() {
                let start = run.entry.start + k * run.segment;
                write -= 1;
                self.runs[write] = Run {
                    entry: Entry {
                        destination: run.entry.destination,
                        start,
                        len: run.segment.min(run.entry.start + run.entry.len - start),
                        segment_size: None,
                    },
                    first: run.first + k,
                    count: 1,
                    segment: run.segment,
                };
            }
        }
        debug_assert_eq!(write, self.sent, "every unsent run was rewritten in place");
    }

    /// Empties the queue, keeping its buffers.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.runs.clear();
        self.received.clear();
        self.sent = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Queues (destination port, size) datagrams the way the worker does (sending everything
    /// when the queue is full), returning (port, segment size, count) per send entry.
    fn plan(datagrams: &[(u16, usize)], max_segments: usize) -> Vec<(u16, Option<usize>, usize)> {
        let mut p = Pending::new();
        let mut entries = Vec::new();
        let mut flush = |p: &mut Pending| {
            for r in p.unsent() {
                let e = r.as_ref();
                assert_eq!(e.len, r.segment * r.count);
                assert_eq!(e.datagrams(), r.count);
                entries.push((e.destination.port(), e.segment_size, r.count));
            }
            let n = p.unsent().len();
            assert_eq!(
                p.advance(n).count(),
                p.received.len(),
                "each copy timed once"
            );
            assert!(p.is_done());
            p.clear();
        };
        for &(port, size) in datagrams {
            let contents = vec![port as u8; size];
            if !p.push(dest(port), &contents, Some(Instant::now()), max_segments) {
                flush(&mut p);
                assert!(p.push(dest(port), &contents, Some(Instant::now()), max_segments));
            }
        }
        flush(&mut p);
        entries
    }

    #[test]
    fn fan_out_is_one_entry_per_destination() {
        assert_eq!(
            plan(&[(1, 1200), (2, 1200), (3, 1200)], 64),
            vec![(1, None, 1), (2, None, 1), (3, None, 1)]
        );
    }

    #[test]
    fn a_burst_to_one_subscriber_is_one_gso_entry() {
        let burst: Vec<_> = std::iter::repeat_n((7, 1200), 30).collect();
        assert_eq!(plan(&burst, 64), vec![(7, Some(1200), 30)]);
        // The socket's limit splits it; without GSO (limit 1) every datagram goes alone.
        assert_eq!(
            plan(&burst, 16),
            vec![(7, Some(1200), 16), (7, Some(1200), 14)]
        );
        assert_eq!(
            plan(&burst[..3], 1),
            vec![(7, None, 1), (7, None, 1), (7, None, 1)]
        );
    }

    #[test]
    fn a_different_size_or_destination_starts_a_new_entry() {
        assert_eq!(
            plan(&[(7, 1200), (7, 1200), (7, 900), (7, 1200), (8, 1200)], 64),
            vec![(7, Some(1200), 2), (7, None, 1), (7, None, 1), (8, None, 1)]
        );
    }

    #[test]
    fn runs_stay_under_64_kib_and_never_over_the_kernel_segment_limit() {
        let burst: Vec<_> = std::iter::repeat_n((7, 1500), 60).collect();
        let sends = plan(&burst, 64);
        assert!(
            sends.iter().all(|&(_, _, n)| n * 1500 <= MAX_RUN_BYTES),
            "{sends:?}"
        );
        assert_eq!(sends.iter().map(|s| s.2).sum::<usize>(), 60);
        let tiny: Vec<_> = std::iter::repeat_n((7, 10), 100).collect();
        assert_eq!(
            plan(&tiny, 1000),
            vec![(7, Some(10), 64), (7, Some(10), 36)]
        );
    }

    #[test]
    fn a_full_queue_refuses_until_cleared() {
        let mut p = Pending::new();
        let mut pushed = 0;
        while p.push(dest(1 + (pushed % 7) as u16), &[0u8; 1200], None, 64) {
            pushed += 1;
        }
        assert_eq!(pushed, MAX_BYTES / 1200, "bytes bound it at this size");
        let cap = p.buf.capacity();
        p.clear();
        assert!(
            p.push(dest(1), &[0u8; 65_507], None, 64),
            "any datagram fits"
        );
        assert_eq!(p.buf.capacity(), cap, "no reallocation");
        p.clear();
        for i in 0..MAX_DATAGRAMS {
            assert!(p.push(dest(i as u16), &[0u8; 20], None, 64));
        }
        assert!(!p.push(dest(1), &[0u8; 20], None, 64), "datagrams bound it");
    }

    #[test]
    fn sending_in_parts_times_each_copy_when_its_entry_goes() {
        let t0 = Instant::now();
        let mut p = Pending::new();
        for port in 1..=4u16 {
            p.push(dest(port), &[0u8; 100], Some(t0), 64);
            // Not a forwarded copy (RTCP, DTLS): not timed.
            p.push(dest(port + 100), &[0u8; 50], None, 64);
        }
        assert_eq!(p.unsent().len(), 8);
        assert_eq!(p.advance(3).count(), 2);
        assert_eq!(p.unsent()[0].as_ref().destination, dest(102));
        assert_eq!(p.skip(), 1);
        assert_eq!(p.advance(100).count(), 2, "clamped to what is left");
        assert!(p.is_done());
        assert_eq!(p.advance(1).count(), 0);
        assert_eq!(p.skip(), 0);
    }

    #[test]
    fn split_runs_sends_each_datagram_alone_in_order() {
        let t0 = Instant::now();
        let mut p = Pending::new();
        for (port, size, n) in [(1u16, 100usize, 3usize), (2, 100, 1), (3, 80, 4)] {
            for k in 0..n {
                let contents = vec![(port as usize * 16 + k) as u8; size];
                p.push(dest(port), &contents, (k == 0).then_some(t0), 64);
            }
        }
        assert_eq!(p.unsent().len(), 3);
        // The first run went before GSO failed; the rest is split.
        assert_eq!(p.advance(1).count(), 1);
        p.split_runs();
        let got: Vec<_> = p
            .unsent()
            .iter()
            .map(|r| {
                let e = r.as_ref();
                assert_eq!(e.segment_size, None);
                assert!(!r.is_gso());
                (e.destination.port(), p.buf()[e.start], e.len)
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (2, 32, 100),
                (3, 48, 80),
                (3, 49, 80),
                (3, 50, 80),
                (3, 51, 80)
            ]
        );
        assert_eq!(
            p.advance(5).count(),
            2,
            "the first datagram of each later run"
        );
        assert!(p.is_done());
    }
}
