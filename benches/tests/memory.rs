//! Heap held by the relay per participant (issue #11: ≤ 300 KiB audio-only, ≤ 1 MiB with
//! video), counted by allocator, not read from RSS: a voice room of 30 and a video room of 5,
//! everyone publishing, run in virtual time until str0m's buffers are at steady state (the RTX
//! caches keep 1 s of video, `SfuConfig::send_history_video`). The relay's share is measured by dropping the clients
//! first and then the `Sfu`: the heap released by the second drop is the relay's.
//!
//! `cargo test -p callrelay-benches --test memory -- --nocapture` prints the figures.
//! One `#[test]` only: the counter is process-wide.

use std::sync::atomic::Ordering;

use callrelay_benches::rig::Net;
use std::time::Duration;

use callrelay_sfu::{RoomKind, DEFAULT_SEND_HISTORY_VIDEO};

// The crate's lints deny `unsafe` (lowered from the workspace's `forbid` for this module only,
// see Cargo.toml): `GlobalAlloc` is an `unsafe trait`, so counting live bytes needs this one
// `unsafe impl`. Each method only forwards to `System` with the caller's arguments, whose
// safety contract is the caller's, unchanged.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicI64, Ordering};

    /// Bytes allocated and not yet freed.
    pub static LIVE: AtomicI64 = AtomicI64::new(0);

    pub struct Counting;

    // SAFETY: forwards every call to `System` unchanged; the counter is an atomic.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: as for `alloc`.
            unsafe { System.alloc_zeroed(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
            // SAFETY: `ptr` came from this allocator, i.e. from `System`, with `layout`.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
            // SAFETY: `ptr` came from `System` with `layout`; the caller checks `new_size`.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

fn live() -> i64 {
    counting::LIVE.load(Ordering::Relaxed)
}

/// Everyone in a room of `size` publishes (audio, plus video in a video room) for `seconds`
/// of virtual time (see `Net::publishing_room`). Returns the relay's heap per participant,
/// bytes.
fn relay_bytes_per_participant(
    size: usize,
    kind: RoomKind,
    video_pps: u32,
    seconds: u32,
    bwe: bool,
    send_buffer_video: usize,
    send_history_video: Duration,
) -> f64 {
    let mut config = Net::config(size.max(32));
    config.bwe_initial_bitrate = bwe.then_some(callrelay_sfu::DEFAULT_BWE_INITIAL_BITRATE);
    config.send_buffer_video = send_buffer_video;
    config.send_history_video = send_history_video;
    let mut net = Net::publishing_room(config, size, kind, video_pps, seconds);
    // The clients go first; what the relay then gives back when it goes is its heap.
    net.peers.clear();
    net.peers.shrink_to_fit();
    let with_relay = live();
    drop(net);
    let without = live();
    (with_relay - without) as f64 / size as f64
}

/// The relay's default RTX cache per video stream (`SfuConfig::send_buffer_video`).
const RTX: usize = 256;
/// The relay's default resend history (`SfuConfig::send_history_video`).
const AGE: Duration = DEFAULT_SEND_HISTORY_VIDEO;

#[test]
fn relay_heap_per_participant() {
    let voice = relay_bytes_per_participant(30, RoomKind::Voice, 0, 4, true, RTX, AGE) / 1024.0;
    // What a session costs and what each subscription adds: heap per participant in a room of
    // n is a + b·(n − 1); two room sizes give a and b.
    let voice10 = relay_bytes_per_participant(10, RoomKind::Voice, 0, 4, true, RTX, AGE) / 1024.0;
    let per_subscription = (voice - voice10) / 20.0;
    let per_session = voice10 - 9.0 * per_subscription;
    eprintln!(
        "voice: {voice10:.0} KiB per participant in a room of 10, {voice:.0} in a room of 30: \
         {per_session:.0} KiB per session + {per_subscription:.1} KiB per subscription"
    );
    // 5 people, each sending audio and ~2 Mbit/s of video (200 packets of 1,200 B a second),
    // each receiving the 4 others' (8 Mbit/s: more than the estimate reaches in 4 s, so with
    // BWE on, str0m's pacer also holds a queue; without it, the structural cost).
    let meeting = relay_bytes_per_participant(5, RoomKind::Video, 200, 4, true, RTX, AGE) / 1024.0;
    let meeting_no_bwe =
        relay_bytes_per_participant(5, RoomKind::Video, 200, 4, false, RTX, AGE) / 1024.0;
    // What str0m's RTX cache costs: the same video room with a smaller and a larger cache
    // (BWE off, so no pacer queue), each kept full by str0m's own 3 s history; each
    // participant holds 4 video subscriptions.
    let long = Duration::from_secs(3);
    let small = relay_bytes_per_participant(5, RoomKind::Video, 200, 4, false, 64, long) / 1024.0;
    let large = relay_bytes_per_participant(5, RoomKind::Video, 200, 4, false, 512, long) / 1024.0;
    let per_packet = (large - small) / (4.0 * (512.0 - 64.0));
    eprintln!(
        "video, BWE off, 3 s history: {small:.0} KiB per participant with a 64-packet RTX \
         cache, {large:.0} with 512: {per_packet:.2} KiB per cached packet"
    );
    // What the resend history costs at 200 packets/s: the cache grows to what it holds within
    // it (by a third at a time, up to `send_buffer_video`), so 1 s (the default) fills the
    // 256 packets and str0m's own 3 s would too, while 500 ms keeps ~150.
    let history = |age: Duration| {
        relay_bytes_per_participant(5, RoomKind::Video, 200, 4, false, RTX, age) / 1024.0
    };
    let (h3, h05, h02) = (
        history(Duration::from_secs(3)),
        history(Duration::from_millis(500)),
        history(Duration::from_millis(200)),
    );
    eprintln!(
        "video, BWE off, by resend history: 3 s {h3:.0} KiB per participant, {AGE:?} \
         {meeting_no_bwe:.0}, 500 ms {h05:.0}, 200 ms {h02:.0}"
    );
    assert!(
        h05 < meeting_no_bwe && h02 < h05,
        "a shorter history costs less: {h3:.0}, {meeting_no_bwe:.0}, {h05:.0}, {h02:.0} KiB"
    );
    eprintln!(
        "relay heap per participant: voice room of 30 (audio only) {voice:.0} KiB; video room \
         of 5 (audio + 2 Mbit/s video each) {meeting:.0} KiB, {meeting_no_bwe:.0} KiB without \
         BWE"
    );
    // Regression guards at the figures measured (+10 %). Issue #11's voice target (300 KiB
    // audio-only) str0m's per-stream state (a StreamTx held by value in a hash map and an RTX
    // cache preallocated with 10 packets per subscription, its RTCP queues) does not allow
    // yet: see benches/README.md. Voice: 501 KiB on
    // 2026-12-07, since voice rooms negotiate no transport-wide feedback (614 before: str0m's
    // 1,000 TWCC send records per session) and audio subscriptions keep no resend history.
    assert!(voice < 550.0, "voice: {voice:.0} KiB per participant");
    assert!(
        per_session < 100.0,
        "voice: {per_session:.0} KiB per session (86 on 2026-12-07, 178 with TWCC)"
    );
    // Video: 1,070 KiB with str0m's 3 s of resend history, 822 with the relay's 1 s
    // (2026-12-08).
    assert!(
        meeting_no_bwe < 905.0,
        "video: {meeting_no_bwe:.0} KiB per participant"
    );
    // With BWE on, 836 KiB on 2026-12-08 (1,066 with a 3 s history; 2.1 MiB while str0m's
    // pacer queued forwarded media).
    assert!(
        meeting < 920.0,
        "video with BWE: {meeting:.0} KiB per participant"
    );
}
