//! The relay's heap at steady state, left for a heap profiler to attribute:
//! `benches/scripts/heap-breakdown` runs this under heaptrack and prints the relay's heap per
//! participant by the str0m or callrelay function that allocated it.
//!
//! `heap_breakdown [voice|video] [size]`: a room of `size` (30 for voice, 5 for video) where
//! everyone publishes for 4 s of virtual time (as `tests/memory.rs`). The clients are then
//! dropped and the relay is leaked on purpose, so that what the profiler reports as leaked at
//! exit is the relay's heap and nothing else (the clients' heap is gone, the process's own is
//! a few KiB).

use callrelay_benches::rig::Net;
use callrelay_sfu::RoomKind;

fn main() {
    let mut args = std::env::args().skip(1);
    let kind = match args.next().as_deref() {
        None | Some("voice") => RoomKind::Voice,
        Some("video") => RoomKind::Video,
        Some(other) => {
            eprintln!("heap_breakdown: unknown room kind {other:?} (voice or video)");
            std::process::exit(2);
        }
    };
    let default_size = if kind == RoomKind::Voice { 30 } else { 5 };
    let size = match args.next().map(|s| s.parse::<usize>()) {
        None => default_size,
        Some(Ok(n)) if (2..=200).contains(&n) => n,
        Some(_) => {
            eprintln!("heap_breakdown: the room size is a number from 2 to 200");
            std::process::exit(2);
        }
    };
    let mut config = Net::config(size.max(32));
    config.bwe_initial_bitrate = Some(callrelay_sfu::DEFAULT_BWE_INITIAL_BITRATE);
    // 2 Mbit/s of video each in a video room (200 packets of 1,200 B a second).
    let video_pps = if kind == RoomKind::Video { 200 } else { 0 };
    let mut net = Net::publishing_room(config, size, kind, video_pps, 4);
    net.peers.clear();
    net.peers.shrink_to_fit();
    println!("participants {size}");
    // Leaked on purpose: see the module comment.
    std::mem::forget(net);
}
