//! Coalescing of outgoing datagrams for UDP GSO (generic segmentation offload): consecutive
//! datagrams of one size to one destination — a keyframe burst or a run of retransmissions to one
//! subscriber — leave in one `sendmsg` with a segment size, instead of one syscall each.
//! A fan-out to many subscribers (different destinations) is sent one datagram per destination.

use std::net::SocketAddr;
use std::time::Instant;

/// Largest GSO payload handed to the kernel in one call (below the 64 KiB UDP limit).
const MAX_BATCH_BYTES: usize = 60 * 1024;

/// A run of equal-size datagrams to one destination, being collected.
#[derive(Debug)]
pub(super) struct Batch {
    /// The segments, back to back.
    pub buf: Vec<u8>,
    /// Where they go (`None`: empty).
    pub destination: Option<SocketAddr>,
    /// The size of each segment.
    pub segment: usize,
    /// How many segments.
    pub count: usize,
    /// Arrival times of the forwarded copies among them, whose latency is recorded when the
    /// batch leaves.
    pub received: Vec<Instant>,
}

impl Batch {
    /// An empty batch; its buffer is reused from run to run.
    pub fn new() -> Batch {
        Batch {
            buf: Vec::with_capacity(MAX_BATCH_BYTES),
            destination: None,
            segment: 0,
            count: 0,
            received: Vec::with_capacity(64),
        }
    }

    /// An empty batch without a buffer (a placeholder while the real one is borrowed out).
    pub fn new_empty() -> Batch {
        Batch {
            buf: Vec::new(),
            destination: None,
            segment: 0,
            count: 0,
            received: Vec::new(),
        }
    }

    /// Whether `contents` for `destination` can join this batch: same destination, same size,
    /// room left, and `max_segments` (the socket's GSO limit; 1 without GSO) not reached.
    pub fn fits(&self, destination: SocketAddr, contents: &[u8], max_segments: usize) -> bool {
        self.count == 0
            || (self.destination == Some(destination)
                && self.segment == contents.len()
                && self.count < max_segments
                && self.buf.len() + contents.len() <= MAX_BATCH_BYTES)
    }

    /// Adds a datagram (call only when [`Batch::fits`]).
    pub fn push(&mut self, destination: SocketAddr, contents: &[u8], received_at: Option<Instant>) {
        if self.count == 0 {
            self.destination = Some(destination);
            self.segment = contents.len();
        }
        self.buf.extend_from_slice(contents);
        self.count += 1;
        self.received.extend(received_at);
    }

    /// The segment size to give the kernel: `None` for a single datagram.
    pub fn segment_size(&self) -> Option<usize> {
        (self.count > 1).then_some(self.segment)
    }

    /// Empties the batch, keeping its buffer.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.destination = None;
        self.segment = 0;
        self.count = 0;
        self.received.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays a sequence of (destination port, size) through the batcher the way the worker
    /// does, returning (port, segment size, count) per send call.
    fn plan(datagrams: &[(u16, usize)], max_segments: usize) -> Vec<(u16, Option<usize>, usize)> {
        let mut b = Batch::new();
        let mut sends = Vec::new();
        let flush = |b: &mut Batch, sends: &mut Vec<_>| {
            if b.count > 0 {
                sends.push((b.destination.unwrap().port(), b.segment_size(), b.count));
                assert_eq!(b.buf.len(), b.segment * b.count);
                assert_eq!(
                    b.received.len(),
                    b.count,
                    "every copy keeps its arrival time"
                );
                b.clear();
            }
        };
        for &(port, size) in datagrams {
            let dest = SocketAddr::from(([127, 0, 0, 1], port));
            let contents = vec![port as u8; size];
            if !b.fits(dest, &contents, max_segments) {
                flush(&mut b, &mut sends);
            }
            b.push(dest, &contents, Some(Instant::now()));
        }
        flush(&mut b, &mut sends);
        sends
    }

    #[test]
    fn fan_out_is_one_send_per_destination() {
        assert_eq!(
            plan(&[(1, 1200), (2, 1200), (3, 1200)], 64),
            vec![(1, None, 1), (2, None, 1), (3, None, 1)]
        );
    }

    #[test]
    fn a_burst_to_one_subscriber_is_one_gso_send() {
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
    fn a_different_size_or_destination_starts_a_new_send() {
        assert_eq!(
            plan(&[(7, 1200), (7, 1200), (7, 900), (7, 1200), (8, 1200)], 64),
            vec![(7, Some(1200), 2), (7, None, 1), (7, None, 1), (8, None, 1)]
        );
    }

    #[test]
    fn batches_stay_under_64_kib() {
        let burst: Vec<_> = std::iter::repeat_n((7, 1500), 60).collect();
        let sends = plan(&burst, 64);
        assert!(
            sends.iter().all(|&(_, _, n)| n * 1500 <= MAX_BATCH_BYTES),
            "{sends:?}"
        );
        assert_eq!(sends.iter().map(|s| s.2).sum::<usize>(), 60);
    }
}
