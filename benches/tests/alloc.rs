//! The core allocates nothing per forwarded packet beyond what str0m itself does.
//!
//! A counting global allocator counts allocations while real SRTP datagrams are forwarded
//! through the `Sfu` (`handle_datagram` + `poll_transmit` drained), and while the same
//! number of datagrams is forwarded by bare str0m `Rtc`s doing the same work without the core
//! (`rig::Bare`). Ours must stay within str0m's count plus [`SLACK_PER_PACKET`].
//!
//! One `#[test]` only: the counter is process-wide, and tests in one binary run on parallel
//! threads.

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::time::Duration;

use callrelay_benches::rig::{is_srtp, Bare, Media, Net, SFU_ADDR};
use callrelay_sfu::RoomKind;

/// Allocations per incoming packet the core may add to str0m's.
const SLACK_PER_PACKET: f64 = 0.05;

/// Packets per measured batch, and batches per case.
const BATCH: usize = 256;
const BATCHES: usize = 4;

// The crate's lints deny `unsafe` (lowered from the workspace's `forbid` for this module only,
// see Cargo.toml): `GlobalAlloc` is an `unsafe trait`, so counting allocations needs this one
// `unsafe impl`. Each method only forwards to `System` with the caller's arguments, whose
// safety contract is the caller's, unchanged.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Allocations (alloc, alloc_zeroed, realloc) since start.
    pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

    pub struct Counting;

    // SAFETY: forwards every call to `System` unchanged; the counter is an atomic.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            // SAFETY: `ptr` came from `System` with `layout`; the caller checks `new_size`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

fn allocations() -> u64 {
    counting::ALLOCATIONS.load(Ordering::Relaxed)
}

/// Allocations per incoming packet through the core, after a warm-up.
fn through_sfu(media: Media, size: usize, kind: RoomKind) -> f64 {
    let mut net = Net::room(size, kind);
    let subs = net.subscribers();
    let source = net.publisher_addr();
    let mut counted = 0;
    let mut batch = Vec::with_capacity(BATCH);
    // The first batch warms up (first-packet RTCP, queues reaching their capacity).
    for round in 0..=BATCHES {
        net.tick(Duration::from_millis(1));
        batch.clear();
        net.publish(media, BATCH, &mut batch);
        let now = net.now;
        let mut sent = 0;
        let before = allocations();
        for d in &batch {
            net.sfu.handle_datagram(now, source, SFU_ADDR, d);
            while let Some(t) = net.sfu.poll_transmit() {
                sent += usize::from(is_srtp(&t.contents));
                black_box(t);
            }
        }
        let n = allocations() - before;
        assert_eq!(sent, BATCH * subs, "every packet forwarded");
        if round > 0 {
            counted += n;
        }
    }
    counted as f64 / (BATCH * BATCHES) as f64
}

/// Allocations per incoming packet through bare str0m, after a warm-up.
fn through_bare(media: Media, subs: usize) -> f64 {
    let mut bare = Bare::new(media, subs);
    let mut counted = 0;
    let mut batch = Vec::with_capacity(BATCH);
    for round in 0..=BATCHES {
        bare.tick(Duration::from_millis(1));
        batch.clear();
        bare.publish(media, BATCH, &mut batch);
        let mut sent = 0;
        let before = allocations();
        for d in &batch {
            bare.forward(d, |t| {
                sent += usize::from(is_srtp(&t));
                black_box(t);
            });
        }
        let n = allocations() - before;
        assert_eq!(sent, BATCH * subs, "every packet forwarded");
        if round > 0 {
            counted += n;
        }
    }
    counted as f64 / (BATCH * BATCHES) as f64
}

#[test]
fn core_allocates_no_more_than_str0m_per_forwarded_packet() {
    let cases = [
        ("audio, room of 10", Media::Audio, 10, RoomKind::Video),
        ("video, room of 10", Media::Video, 10, RoomKind::Video),
        ("audio, voice room of 50", Media::Audio, 50, RoomKind::Voice),
    ];
    for (name, media, size, kind) in cases {
        let ours = through_sfu(media, size, kind);
        let str0m = through_bare(media, size - 1);
        eprintln!(
            "{name}: {ours:.2} allocations per incoming packet through the core, \
             {str0m:.2} through bare str0m ({} subscribers)",
            size - 1
        );
        assert!(
            ours <= str0m + SLACK_PER_PACKET,
            "{name}: the core allocates {ours:.2} per packet, str0m alone {str0m:.2}"
        );
        // str0m's own count (WORKLOAD.md: 1 + N audio, 2 + N video) is what remains.
        assert!(
            str0m >= (size - 1) as f64,
            "str0m allocates at least once per copy"
        );
    }
}
