//! Hostile SDP (THREATS 16, 30): offers with duplicate mids, without a fingerprint, or that
//! give a known payload type a new meaning are refused with a clear error and change nothing.
//! The participants already in the room carry on.

mod common;

use std::time::Duration;

use callrelay_sfu::{ParticipantId, RoomKey, RoomKind, SfuError};
use common::World;
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// An offer from a fresh client (id `n`) that sends audio and video.
fn fresh_offer(w: &World, n: u16) -> String {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    let addr = format!("127.0.0.1:{}", 29_000 + n).parse().unwrap();
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (offer, _pending) = api.apply().expect("an offer");
    offer.to_sdp_string()
}

/// Two participants in room 1 exchanging audio and video.
fn a_call() -> (World, usize, usize) {
    let mut w = World::new();
    let a = w.join(1, 1, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 1, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| w.settled(2));
    (w, a, b)
}

/// `a` and `b` still exchange audio and video both ways.
fn still_talking(w: &mut World, a: usize, b: usize) {
    w.pump(10);
    assert_eq!(w.received_from(b, a, 0xA0), 10, "a's audio reaches b");
    assert_eq!(w.received_from(b, a, 0xB0), 10, "a's video reaches b");
    assert_eq!(w.received_from(a, b, 0xA0), 10, "b's audio reaches a");
    assert_eq!(w.received_from(a, b, 0xB0), 10, "b's video reaches a");
}

fn join_refused(w: &mut World, id: u64, sdp: &str) -> SfuError {
    let events = w.events.len();
    let now = w.now;
    let err = w
        .sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(id),
            RoomKind::Video,
            Some(sdp),
        )
        .expect_err("the join is refused");
    assert_eq!(w.sfu.participant_count(), 2, "{err}: nobody added");
    assert_eq!(w.sfu.room_members(RoomKey(1)).len(), 2);
    w.drain();
    assert_eq!(w.events.len(), events, "{err}: no event for a refused join");
    err
}

#[test]
fn an_offer_with_duplicate_mids_is_refused_and_changes_nothing() {
    let (mut w, a, b) = a_call();
    let offer = fresh_offer(&w, 9);
    let mids: Vec<&str> = offer
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix("a=mid:"))
        .collect();
    assert_eq!(mids.len(), 2, "{offer}");
    // The video line takes the audio line's mid.
    let munged = offer.replace(
        &format!("a=mid:{}\r\n", mids[1]),
        &format!("a=mid:{}\r\n", mids[0]),
    );
    assert_ne!(munged, offer);
    let err = join_refused(&mut w, 9, &munged);
    assert!(matches!(err, SfuError::Sdp(_)), "{err:?}");
    assert!(err.to_string().starts_with("sdp rejected"), "{err}");
    still_talking(&mut w, a, b);
}

#[test]
fn an_offer_without_a_fingerprint_is_refused_and_changes_nothing() {
    let (mut w, a, b) = a_call();
    let offer = fresh_offer(&w, 9);
    let munged: String = offer
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=fingerprint:"))
        .collect();
    assert!(!munged.contains("fingerprint"), "{munged}");
    let err = join_refused(&mut w, 9, &munged);
    assert!(matches!(err, SfuError::Sdp(_)), "{err:?}");
    still_talking(&mut w, a, b);
}

#[test]
fn a_renegotiation_that_changes_a_payload_type_is_refused_and_the_call_carries_on() {
    let (mut w, a, b) = a_call();
    // a adds a microphone; the relay sees that re-offer with new format parameters for a's
    // Opus payload type.
    let c = &mut w.clients[a];
    let mut api = c.rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    let (offer, pending) = api.apply().expect("a re-offer");
    let offer = offer.to_sdp_string();
    let opus = offer
        .lines()
        .find_map(|l| {
            let rest = l.strip_prefix("a=rtpmap:")?;
            rest.to_ascii_lowercase()
                .contains("opus/48000")
                .then(|| rest.split(' ').next().unwrap().to_string())
        })
        .expect("opus in the offer");
    let fmtp = format!("a=fmtp:{opus} ");
    assert!(offer.contains(&fmtp), "{offer}");
    let munged = offer.replace(&fmtp, &format!("{fmtp}stereo=1;"));
    let now = w.now;
    let err = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &munged)
        .expect_err("the re-offer is refused");
    assert_eq!(
        err,
        SfuError::PayloadTypeChanged {
            pt: opus.parse().unwrap()
        }
    );
    assert!(
        err.to_string()
            .contains(&format!("payload type {opus} changed")),
        "{err}"
    );
    assert_eq!(w.sfu.participant_count(), 2, "nobody removed");
    // The same re-offer without the change is answered: the refusal left a's session as it was.
    let answer = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(1), &offer)
        .expect("the unchanged re-offer is answered");
    w.clients[a]
        .rtc
        .sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("the answer parses"),
        )
        .expect("a accepts the answer");
    w.drain();
    assert_eq!(w.sfu.participant_count(), 2);
    w.run_for(Duration::from_millis(200));
    still_talking(&mut w, a, b);
}

/// The `fuzz/corpus/sdp/crash-str0m-pt-claimed-twice` scenario: a join offer whose H.264
/// `a=fmtp:108` value ends in a vertical tab (str0m keeps the tab in the value, cannot read the
/// profile, and takes 108 for its Baseline entry), then a re-offer that adds a receive-only
/// video m-line with the clean line (108 is Constrained Baseline again, and str0m may not remap
/// the number of a line the client receives on). str0m would claim 108 twice and panic; the
/// relay refuses the re-offer, and the same re-offer with 108 unchanged is answered.
#[test]
fn a_payload_type_str0m_reads_differently_in_a_new_receiving_line_is_refused() {
    let mut w = World::new();
    let now = w.now;
    let offer = fresh_offer(&w, 9);
    let clean =
        "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n";
    assert!(offer.contains(clean), "{offer}");
    let joined = offer.replace(clean, &clean.replace("\r\n", "\x0b\r\n"));
    w.sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(9),
            RoomKind::Video,
            Some(&joined),
        )
        .expect("the join is answered");
    // The join offer again, plus a copy of its video m-line that receives (new mid, no SSRCs).
    let video = &joined[joined.find("m=video").expect("a video m-line")..];
    let received: String = video
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("a=ssrc") && !l.starts_with("a=msid:"))
        .map(|l| match l {
            "a=sendonly\r\n" => "a=recvonly\r\n",
            l if l.starts_with("a=mid:") => "a=mid:zz9\r\n",
            l => l,
        })
        .collect();
    let group = joined
        .lines()
        .find(|l| l.starts_with("a=group:BUNDLE "))
        .expect("a BUNDLE group");
    let reoffer = format!("{joined}{received}").replace(group, &format!("{group} zz9"));
    let err = w
        .sfu
        .handle_sdp_offer(now, ParticipantId(9), &reoffer.replace('\x0b', ""))
        .expect_err("108 means something else to str0m: refused");
    assert_eq!(err, SfuError::PayloadTypeChanged { pt: 108 });
    assert_eq!(w.sfu.stats().sessions_panicked, 0, "str0m never saw it");
    assert_eq!(w.sfu.participant_count(), 1, "nobody removed");
    w.sfu
        .handle_sdp_offer(now, ParticipantId(9), &reoffer)
        .expect("the re-offer with 108 unchanged is answered");
    assert_eq!(w.sfu.stats().sessions_panicked, 0);
    assert_eq!(w.sfu.participant_count(), 1);
}
