//! Target `sdp`: SDP from signaling into the core (`join`'s offer, renegotiation offers and
//! answers to the relay's offers).

use std::time::Instant;

use callrelay_sfu::{Event, ParticipantId, RoomKey, RoomKind, Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer};
use str0m::Rtc;

use crate::datagram::{RELAY_ADDR, SEED};
use crate::input::{split_nul, text};

/// Input: a flags byte, then the first SDP, a NUL, and the second SDP (both as UTF-8 text,
/// invalid sequences replaced).
///
/// Flags: bit 0 voice room; bit 1 a publisher (a real str0m client, see [`publisher`]) is in
/// the room first, so the newcomer is offered its tracks; bit 2 the newcomer joins without an offer
/// and the first SDP is its answer to the relay's offer (otherwise the first SDP is the
/// offer `add_participant` gets); bit 3 the second SDP goes to `handle_sdp_answer` (otherwise
/// to `handle_sdp_offer`, a renegotiation).
///
/// Checks: no panic; a refused join changes nothing; every answer and offer the relay
/// produces parses again as SDP.
pub fn sdp(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = split_nul(rest);
    let (first, second) = (text(first), text(second));
    let kind = if flags & 1 == 1 {
        RoomKind::Voice
    } else {
        RoomKind::Video
    };
    let room = RoomKey(1);
    let mut sfu = Sfu::new(SfuConfig::new(RELAY_ADDR), SEED);
    let now = Instant::now();
    if flags & 2 == 2 {
        publisher(&mut sfu, now, room, kind);
    }
    let me = ParticipantId(2);
    let (participants, rooms) = (sfu.participant_count(), sfu.room_count());
    if flags & 4 == 0 {
        match sfu.add_participant(now, room, me, kind, Some(&first)) {
            Ok(answer) => check_answer(&answer.expect("an offer is answered")),
            Err(_) => {
                assert_eq!(sfu.participant_count(), participants, "refused: no change");
                assert_eq!(sfu.room_count(), rooms, "refused: no change");
                assert!(sfu.poll_event().is_none(), "refused: no event");
                assert!(sfu.poll_transmit().is_none(), "refused: nothing sent");
                return;
            }
        }
    } else {
        let answer = sfu.add_participant(now, room, me, kind, None);
        assert_eq!(answer, Ok(None), "without an offer the relay offers");
        drain(&mut sfu);
        let _ = sfu.handle_sdp_answer(now, me, &first);
    }
    drain(&mut sfu);
    if !second.is_empty() {
        if flags & 8 == 0 {
            if let Ok(answer) = sfu.handle_sdp_offer(now, me, &second) {
                check_answer(&answer);
            }
        } else {
            let _ = sfu.handle_sdp_answer(now, me, &second);
        }
        drain(&mut sfu);
    }
    assert!(sfu.participant_count() <= 2);
    assert!(sfu.room_count() <= 1);
}

/// Participant 1 joins `room` and publishes at once: the relay offers it receive-only lines
/// and a real client (str0m) answers, as a browser that joins without an offer does.
pub fn publisher(sfu: &mut Sfu, now: Instant, room: RoomKey, kind: RoomKind) {
    let id = ParticipantId(1);
    let joined = sfu.add_participant(now, room, id, kind, None);
    assert_eq!(joined, Ok(None), "the publisher joins");
    let offer = offers_to(sfu, id).pop().expect("the relay offers");
    let mut client = Rtc::builder().set_rtp_mode(true).build(now);
    let offer = SdpOffer::from_sdp_string(&offer).expect("the relay's offer parses");
    let answer = client
        .sdp_api()
        .accept_offer(offer)
        .expect("a client accepts the relay's offer");
    sfu.handle_sdp_answer(now, id, &answer.to_sdp_string())
        .expect("the relay takes the client's answer");
    drain(sfu);
}

/// Polls everything out, returning the relay's offers to `who`.
pub fn offers_to(sfu: &mut Sfu, who: ParticipantId) -> Vec<String> {
    let mut offers = Vec::new();
    while sfu.poll_transmit().is_some() {}
    while let Some(e) = sfu.poll_event() {
        if let Event::SdpOffer { participant, sdp } = e {
            if let Err(e) = SdpOffer::from_sdp_string(&sdp) {
                panic!("the relay's offer does not parse ({e}):\n{sdp}");
            }
            if participant == who {
                offers.push(sdp);
            }
        }
    }
    offers
}

fn check_answer(sdp: &str) {
    if let Err(e) = SdpAnswer::from_sdp_string(sdp) {
        panic!("the relay's answer does not parse ({e}):\n{sdp}");
    }
}

fn drain(sfu: &mut Sfu) {
    offers_to(sfu, ParticipantId(0));
}
