//! A viewer (a WHEP player, which has no channel for the relay's offers) receives one
//! publisher's audio and video on the receive-only lines of its own offer: the first publisher
//! of the room, or the one it asked for; when that one leaves, the next one on the same lines.
//! It is never offered anything.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use callrelay_sfu::{Event, ParticipantId, RemoveReason, RoomKey, RoomKind, SfuError};
use common::{Client, World};
use str0m::change::SdpAnswer;
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};

/// A viewer joins `room` with one receive-only audio and one video line.
fn join_viewer(
    w: &mut World,
    id: u64,
    room: u64,
    watch: Option<ParticipantId>,
) -> Result<usize, SfuError> {
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 20_000 + id as u16);
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().expect("an offer");
    let answer = w.sfu.add_viewer(
        w.now,
        RoomKey(room),
        ParticipantId(id),
        RoomKind::Video,
        &offer.to_sdp_string(),
        watch,
    )?;
    let relay_ufrag = answer
        .lines()
        .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
        .expect("ufrag")
        .trim()
        .to_string();
    rtc.sdp_api()
        .accept_answer(
            pending,
            SdpAnswer::from_sdp_string(&answer).expect("parses"),
        )
        .expect("accepted");
    w.clients.push(Client {
        id: ParticipantId(id),
        addr,
        rtc,
        timeout: w.now,
        online: true,
        audio_mid: None,
        video_mid: None,
        audio_seq: 0,
        video_seq: 0,
        sent_audio: Vec::new(),
        sent_video: Vec::new(),
        received: Vec::new(),
        keyframe_requests: 0,
        keyframe_request_rids: Vec::new(),
        closed: false,
        relay_ufrag,
        subscribed_mids: Vec::new(),
    });
    w.drain();
    Ok(w.clients.len() - 1)
}

fn offers_to(w: &World, id: u64) -> usize {
    w.events_matching(
        |e| matches!(e, Event::SdpOffer { participant, .. } if *participant == ParticipantId(id)),
    )
    .len()
}

#[test]
fn a_viewer_watches_the_first_publisher_then_the_next_on_the_same_lines() {
    let mut w = World::new();
    let a = w.join(1, 50, RoomKind::Video, true, true).expect("a");
    let v = join_viewer(&mut w, 9, 50, None).expect("viewer");
    let b = w.join(2, 50, RoomKind::Video, true, true).expect("b");
    w.run_until(Duration::from_secs(5), |w| {
        w.clients[v].rtc.is_connected() && w.clients[a].subscribed_mids.len() == 2
    });
    w.pump(10);
    assert_eq!(w.received_from(v, a, 0xA0), 10, "a's audio");
    assert_eq!(w.received_from(v, a, 0xB0), 10, "a's video");
    assert_eq!(w.received_from(v, b, 0xA0), 0, "one publisher per line");
    // The viewer publishes nothing: a and b hear only each other.
    assert_eq!(w.clients[b].subscribed_mids.len(), 2);

    // a leaves: the viewer's lines carry b from now on.
    w.sfu
        .remove_participant(w.now, ParticipantId(1), RemoveReason::Left)
        .expect("a leaves");
    w.clients[a].online = false;
    w.drain();
    w.pump(10);
    assert_eq!(w.received_from(v, b, 0xA0), 10, "b's audio");
    assert!(w.received_from(v, b, 0xB0) >= 9, "b's video");
    let mids: std::collections::BTreeSet<_> = w.clients[v].received.iter().map(|r| r.mid).collect();
    assert_eq!(mids.len(), 2, "the same two lines throughout");
    assert_eq!(offers_to(&w, 9), 0, "a viewer is offered nothing");
}

#[test]
fn a_viewer_may_ask_for_one_publisher_and_may_not_send() {
    let mut w = World::new();
    let a = w.join(1, 51, RoomKind::Video, true, true).expect("a");
    let b = w.join(2, 51, RoomKind::Video, true, true).expect("b");
    let v = join_viewer(&mut w, 9, 51, Some(ParticipantId(2))).expect("viewer");
    w.run_until(Duration::from_secs(5), |w| w.clients[v].rtc.is_connected());
    w.pump(10);
    assert_eq!(w.received_from(v, b, 0xB0), 10);
    assert_eq!(w.received_from(v, a, 0xB0), 0);
    assert_eq!(offers_to(&w, 9), 0);

    // An offer that sends is no viewer's.
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(w.now);
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    let (offer, _) = api.apply().expect("offer");
    let r = w.sfu.add_viewer(
        w.now,
        RoomKey(51),
        ParticipantId(10),
        RoomKind::Video,
        &offer.to_sdp_string(),
        None,
    );
    assert!(matches!(r, Err(SfuError::Sdp(_))), "{r:?}");
    assert_eq!(w.sfu.room_members(RoomKey(51)).len(), 3);
}
