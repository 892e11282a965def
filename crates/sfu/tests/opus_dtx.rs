//! The relay asks senders for Opus DTX (RFC 7587 `usedtx=1`): a browser then sends a few packets
//! a second (Chromium: ~5) instead of fifty while its microphone is silent or muted. The answer to a
//! client's offer carries it on Opus (and only there); audio still flows between two clients
//! that did not ask for it themselves. The browser's side (a muted microphone's packet rate) is
//! in `tests/browser/call.test.mjs`.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKey, RoomKind};
use common::World;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// The `a=fmtp` lines of `sdp` for the payload types `a=rtpmap` names `codec`.
fn fmtp_of(sdp: &str, codec: &str) -> Vec<String> {
    let pts: Vec<&str> = sdp
        .lines()
        .filter_map(|l| l.strip_prefix("a=rtpmap:"))
        .filter(|l| l.to_ascii_lowercase().contains(&format!(" {codec}/")))
        .filter_map(|l| l.split(' ').next())
        .collect();
    sdp.lines()
        .filter_map(|l| l.strip_prefix("a=fmtp:"))
        .filter(|l| pts.iter().any(|pt| l.starts_with(&format!("{pt} "))))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_answer_asks_for_opus_dtx_and_audio_flows() {
    let mut w = World::new();
    // A client offer as a browser's: Opus with `minptime=10;useinbandfec=1`, no `usedtx`.
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    rtc.add_local_candidate(
        Candidate::host("127.0.0.1:29998".parse().unwrap(), "udp").expect("candidate"),
    );
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    let offer = offer.to_sdp_string();
    let offered = fmtp_of(&offer, "opus");
    assert!(
        !offered.is_empty() && offered.iter().all(|l| !l.contains("usedtx")),
        "{offered:?}"
    );
    let now = w.now;
    let answer = w
        .sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(9),
            RoomKind::Video,
            Some(&offer),
        )
        .expect("joined")
        .expect("an answer");
    let opus = fmtp_of(&answer, "opus");
    assert!(
        !opus.is_empty() && opus.iter().all(|l| l.contains("usedtx=1")),
        "{opus:?}\n{answer}"
    );
    // Only Opus: no other format line asks for it.
    let dtx_lines = answer
        .lines()
        .filter(|l| l.starts_with("a=fmtp:") && l.contains("usedtx"))
        .count();
    assert_eq!(dtx_lines, opus.len(), "{answer}");

    // Two clients that never asked for DTX themselves hear each other through the relay.
    let a = w.join(1, 2, RoomKind::Video, true, false).expect("a");
    let b = w.join(2, 2, RoomKind::Video, true, false).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(1));
    w.pump(20);
    assert_eq!(w.received_from(b, a, 0xA0), 20);
    assert_eq!(w.received_from(a, b, 0xA0), 20);
}
