//! A receive batch, as the media worker reads it with `recvmmsg`: each datagram through
//! `handle_datagram_deferred`, then one `drive_pending`. Every copy arrives byte for byte, as when
//! each datagram is handled on its own; each subscriber's `Rtc` is driven once per batch
//! instead of once per packet it was handed, so str0m's per-drive housekeeping is paid per
//! batch. Work is counted ([`SfuStats::rtc_drives`]), never timed.

mod common;

use std::time::Duration;

use callrelay_sfu::{RoomKind, SfuStats};
use common::World;

const PARTIES: u64 = 5;
const ROUNDS: usize = 20;

/// Five participants publishing audio and video in one room, settled; `batch` as the worker
/// feeds datagrams or one by one.
fn room(batch: bool) -> World {
    let mut w = World::new();
    w.batch = batch;
    for id in 1..=PARTIES {
        w.join(id, 1, RoomKind::Video, true, true).expect("join");
    }
    w.run_until(Duration::from_secs(10), |w| {
        w.settled(2 * (PARTIES as usize - 1))
    });
    w
}

/// Every round all five send a packet of audio and one of video at one instant (one batch
/// of ten datagrams at the relay); what the relay did for it.
fn exchange(w: &mut World) -> (SfuStats, SfuStats) {
    let before = w.sfu.stats();
    w.pump(ROUNDS);
    (before, w.sfu.stats())
}

/// Every participant got every packet the four others sent, intact.
fn everyone_got_everything(w: &World, what: &str) {
    let n = PARTIES as usize;
    for to in 0..n {
        for from in (0..n).filter(|f| *f != to) {
            for (tag, sent) in [
                (0xA0, w.clients[from].sent_audio.len()),
                (0xB0, w.clients[from].sent_video.len()),
            ] {
                assert_eq!(
                    w.received_from(to, from, tag),
                    sent,
                    "{what}: client {to} got {tag:#x} packets of client {from}"
                );
            }
        }
    }
}

#[test]
fn a_batch_drives_each_subscriber_once_and_every_copy_arrives() {
    let mut single = room(false);
    let mut batched = room(true);
    let (s0, s1) = exchange(&mut single);
    let (b0, b1) = exchange(&mut batched);
    everyone_got_everything(&single, "one by one");
    everyone_got_everything(&batched, "batched");

    // The same copies: 20 rounds x 5 senders x 2 packets x 4 subscribers.
    let copies = (ROUNDS * PARTIES as usize * 2 * (PARTIES as usize - 1)) as u64;
    assert_eq!(s1.rtp_forwarded - s0.rtp_forwarded, copies);
    assert_eq!(b1.rtp_forwarded - b0.rtp_forwarded, copies);

    // One by one, a drive per copy (and the timers' own); batched, a drive per subscriber per
    // round (and the timers').
    let single_drives = s1.rtc_drives - s0.rtc_drives;
    let batched_drives = b1.rtc_drives - b0.rtc_drives;
    eprintln!(
        "{copies} copies: {single_drives} drives one datagram at a time, {batched_drives} batched"
    );
    assert!(
        single_drives >= copies,
        "one by one, every copy drives its subscriber: {single_drives} drives for {copies}"
    );
    // The timers' drives are about the same either way; batching saves most of the copies'
    // (a round's two packets from each of four senders reach a subscriber in one drive).
    assert!(
        batched_drives + copies / 2 <= single_drives,
        "batched: {batched_drives} drives, one by one: {single_drives}, for {copies} copies"
    );
}
