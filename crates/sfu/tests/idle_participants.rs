//! Thousands of idle participants on one worker cost nothing per datagram: forwarding one
//! packet, and the timer calls that follow it, do the same work as with ten participants; and
//! the timers of the idle ones cost what comes due, not a walk over everyone per loop turn.
//! Work is counted ([`SfuStats::rtc_drives`], [`SfuStats::timer_entries_visited`]), never
//! timed.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use callrelay_sfu::{ParticipantId, RoomKey, RoomKind, SfuConfig, SfuStats};
use common::{World, SFU_ADDR};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// Idle participants in the crowd.
const CROWD: usize = 2_000;

/// Idle participants per room (they fill rooms of their own).
const IDLE_ROOM: usize = 8;

/// Work done between two snapshots of the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Work {
    rtc_drives: u64,
    timer_entries_visited: u64,
    forwarded: u64,
}

impl Work {
    fn between(before: SfuStats, after: SfuStats) -> Self {
        Work {
            rtc_drives: after.rtc_drives - before.rtc_drives,
            timer_entries_visited: after.timer_entries_visited - before.timer_entries_visited,
            forwarded: after.rtp_forwarded - before.rtp_forwarded,
        }
    }
}

/// An SDP offer to publish audio and video, as a browser sends; the same text for every idle
/// participant (the relay side of each is its own `Rtc` all the same).
fn idle_offer(now: Instant) -> String {
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)), 9);
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer with media");
    offer.to_sdp_string()
}

/// A room of ten connected participants publishing audio and video, exchanging media, plus
/// `idle` participants that joined with an offer, one per millisecond, and never connected
/// (their rooms publish, their offers wait for answers).
fn world(idle: usize, bwe: bool) -> World {
    let mut config = SfuConfig::new(SFU_ADDR);
    config.bwe_initial_bitrate = bwe.then_some(1_000_000);
    // Idle participants stay for the whole test (they never send STUN, nor finish DTLS).
    config.idle_timeout = Duration::from_secs(3_600);
    config.handshake_timeout = Duration::from_secs(3_600);
    let mut w = World::with_config(config);
    for id in 1..=10 {
        w.join(id, 1, RoomKind::Video, true, true).expect("join");
    }
    w.run_until(Duration::from_secs(10), |w| w.settled(18));
    let offer = idle_offer(w.now);
    for i in 0..idle {
        let room = RoomKey(1_000 + (i / IDLE_ROOM) as u64);
        w.sfu
            .add_participant(
                w.now,
                room,
                ParticipantId(100_000 + i as u64),
                RoomKind::Video,
                Some(&offer),
            )
            .expect("idle participant admitted");
        w.run_for(Duration::from_millis(1));
    }
    assert_eq!(w.sfu.participant_count(), 10 + idle);
    w.pump(5);
    w
}

/// Participant 1 sends one packet; the relay handles its datagram, then the timer calls an IO
/// layer makes after it. What that costs.
fn one_datagram(w: &mut World, video: bool) -> Work {
    // A quiet instant: whatever is due now is done first, outside the count.
    let now = w.now;
    if w.sfu.poll_timeout().is_some_and(|t| t <= now) {
        w.sfu.handle_timeout(now);
    }
    w.drain();
    w.net.clear();

    let sender = w.client(1);
    if video {
        w.send_video(sender);
    } else {
        w.send_audio(sender, -30);
    }
    w.drain();
    let source = w.clients[sender].addr;
    let datagram = w
        .net
        .iter()
        .position(|p| p.source == source && p.destination == SFU_ADDR && is_rtp(&p.contents))
        .and_then(|i| w.net.remove(i))
        .expect("the media datagram is in flight");

    let before = w.sfu.stats();
    w.sfu
        .handle_datagram(now, datagram.source, SFU_ADDR, &datagram.contents);
    while w.sfu.poll_transmit().is_some() {}
    if w.sfu.poll_timeout().is_some_and(|t| t <= now) {
        w.sfu.handle_timeout(now);
        while w.sfu.poll_transmit().is_some() {}
    }
    let next = w.sfu.poll_timeout().expect("participants have deadlines");
    assert!(next > now, "nothing is left due after the datagram");
    Work::between(before, w.sfu.stats())
}

/// RTP (not RTCP, STUN or DTLS): version 2, payload type outside RTCP's 192–223.
fn is_rtp(d: &[u8]) -> bool {
    d.len() >= 12 && d[0] >> 6 == 2 && !(192..=223).contains(&d[1])
}

fn assert_same_work(media: &str, ten: Work, crowd: Work) {
    eprintln!("{media}: 10 participants {ten:?}; 10 + {CROWD} idle {crowd:?}");
    assert_eq!(ten.forwarded, 9, "one copy per other member of the room");
    assert_eq!(crowd.forwarded, 9, "one copy per other member of the room");
    // One drive per subscriber that got a copy, give or take what str0m asks for at once.
    assert!(ten.rtc_drives <= 2 * ten.forwarded, "{ten:?}");
    assert!(
        crowd.rtc_drives <= ten.rtc_drives + 2,
        "idle participants were driven: {crowd:?} against {ten:?}"
    );
    assert!(
        crowd.timer_entries_visited <= ten.timer_entries_visited + 4,
        "idle participants' timers were visited: {crowd:?} against {ten:?}"
    );
}

#[test]
fn one_datagram_costs_the_same_with_two_thousand_idle_participants() {
    let mut ten = world(0, false);
    let mut crowd = world(CROWD, false);
    let (t, c) = (
        one_datagram(&mut ten, false),
        one_datagram(&mut crowd, false),
    );
    assert_same_work("audio", t, c);
    let (t, c) = (one_datagram(&mut ten, true), one_datagram(&mut crowd, true));
    assert_same_work("video", t, c);

    // Their own timers cost what comes due: over a quiet second every idle participant is
    // woken by its own deadlines (str0m's once-a-second stats), a few times at most, and each
    // wake-up takes a handful of heap entries; a walk over everyone per loop turn would take
    // thousands per turn.
    let before = crowd.sfu.stats();
    crowd.run_for(Duration::from_secs(1));
    let crowd_second = Work::between(before, crowd.sfu.stats());
    let before = ten.sfu.stats();
    ten.run_for(Duration::from_secs(1));
    let ten_second = Work::between(before, ten.sfu.stats());
    eprintln!("a quiet second: 10 participants {ten_second:?}; 10 + {CROWD} idle {crowd_second:?}");
    let idle_drives = crowd_second
        .rtc_drives
        .saturating_sub(ten_second.rtc_drives);
    assert!(
        idle_drives <= 3 * CROWD as u64,
        "idle participants driven {idle_drives} times in a second"
    );
    assert!(
        crowd_second.timer_entries_visited <= 4 * crowd_second.rtc_drives,
        "heap entries visited per drive: {crowd_second:?}"
    );
}

#[test]
fn the_pacer_leaves_nothing_due_after_a_datagram() {
    // With BWE on, str0m paces what it sends each subscriber; its immediate re-polls are
    // served within the call, so the IO layer gets a deadline in the future.
    let mut w = world(0, true);
    for video in [false, true] {
        let work = one_datagram(&mut w, video);
        assert_eq!(work.forwarded, 9, "{work:?}");
        assert!(work.rtc_drives <= 2 * work.forwarded, "{work:?}");
        w.run_for(Duration::from_millis(100));
    }
}
