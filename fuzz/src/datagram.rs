//! Target `datagram`: the worker socket's input, `Sfu::handle_datagram`.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use callrelay_sfu::{ParticipantId, RemoveReason, RoomKey, RoomKind, Sfu, SfuConfig};
use str0m::ice::StunMessage;

use crate::input::Reader;
use crate::stun;

/// The relay's (fake) worker socket, announced as its host candidate.
pub const RELAY_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 40_000);

/// The core's random seed: with it the relay's ICE credentials are the same on every run, so
/// a recorded client datagram (a seed) authenticates again.
pub const SEED: [u8; 32] = [7; 32];

/// Real offers of two str0m clients (RTP mode, send-only), as a browser sends them in `join`:
/// audio and video for video rooms, audio only for voice rooms. Regenerated, with the seeds,
/// by `cargo test -p callrelay-fuzz --test seeds -- --ignored`.
pub const OFFERS: [[&str; 2]; 2] = [
    [
        include_str!("../data/offer-video-1.sdp"),
        include_str!("../data/offer-video-2.sdp"),
    ],
    [
        include_str!("../data/offer-voice-1.sdp"),
        include_str!("../data/offer-voice-2.sdp"),
    ],
];

/// Record kinds (the first byte of a record, modulo 4).
const OP_RAW: u8 = 0;
const OP_STUN: u8 = 1;
const OP_TIME: u8 = 2;
const OP_REMOVE: u8 = 3;

/// Where datagrams come from: the two clients' addresses, a stranger, the same client over
/// IPv6 and IPv4-mapped IPv6, a private, an unspecified and a multicast address.
fn source(i: u8) -> SocketAddr {
    let v4 = |a, b, c, d, port| SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port);
    match i % 8 {
        0 => v4(127, 0, 0, 1, 20_001),
        1 => v4(127, 0, 0, 1, 20_002),
        2 => v4(127, 0, 0, 1, 9_999),
        3 => SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), 20_001),
        4 => SocketAddr::new(IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()), 20_001),
        5 => v4(10, 1, 2, 3, 20_001),
        6 => v4(0, 0, 0, 0, 0),
        _ => v4(224, 0, 0, 251, 5_353),
    }
}

/// A participant as the harness knows it: its id and ICE credentials on both sides.
struct Peer {
    id: ParticipantId,
    relay_ufrag: String,
    relay_pwd: String,
    client_ufrag: String,
}

fn sdp_attr<'a>(sdp: &'a str, name: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.strip_prefix(name))
        .map(str::trim)
}

/// Encodes a raw (`op` 0), signed STUN (1) or remove (3) record of the [`datagram`] input
/// (used to write the seeds).
pub fn record(op: u8, arg: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![op, arg];
    out.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Encodes a time record of the [`datagram`] input: `ms` milliseconds pass.
pub fn wait(ms: u16) -> Vec<u8> {
    let mut out = vec![OP_TIME, 0];
    out.extend_from_slice(&ms.to_le_bytes());
    out
}

/// Feeds datagrams from several source addresses into an [`Sfu`] holding one or two
/// participants that joined with [`OFFERS`] (ICE not yet done, as right after `join`).
///
/// Input: one header byte (bit 0: voice room; bit 1: a second participant; bit 2: bandwidth
/// estimation on), then records `[op, arg, len_lo, len_hi, payload…]`, the last one cut short
/// by the end of the input:
/// - `op % 4 == 0`, raw: `payload` as one datagram from source `arg % 8` (see `source`), to
///   the relay's address (or, with `arg & 8`, to another local address).
/// - `1`, signed STUN: from source `arg % 8`, to participant `(arg >> 3) & 1`: message type
///   `payload[0..2]` (big-endian), transaction id `payload[2..14]`, then raw attributes;
///   the harness puts USERNAME first (by `(arg >> 4) & 3`: `relay:client`, `client:relay`,
///   `relay:` or `relay`), MESSAGE-INTEGRITY with the participant's real password last, and
///   FINGERPRINT after it unless `arg & 0x40`. This is how the fuzzer gets past ICE into the
///   relay's answer, address learning, and DTLS and SRTP parsing from a learned address.
/// - `2`, time: virtual time moves on `len` milliseconds and due timers run.
/// - `3`, remove participant `arg & 1`.
///
/// Checks that it never panics, that the relay only ever sends from its own address to an
/// address that sent authenticated STUN (no reflection, THREATS 3–4), and that its state stays
/// bounded (no participant or room appears, at most 4 learned addresses per participant).
pub fn datagram(data: &[u8]) {
    let mut r = Reader::new(data);
    let header = r.u8().unwrap_or(0);
    let kind = if header & 1 == 1 {
        RoomKind::Voice
    } else {
        RoomKind::Video
    };
    let count = if header & 2 == 2 { 2 } else { 1 };
    let mut config = SfuConfig::new(RELAY_ADDR);
    if header & 4 == 4 {
        config.bwe_initial_bitrate = Some(1_000_000);
    }
    let mut sfu = Sfu::new(config, SEED);
    let mut now = Instant::now();

    let offers = OFFERS[usize::from(kind == RoomKind::Voice)];
    let mut peers = Vec::new();
    for (i, offer) in offers.iter().take(count).enumerate() {
        let id = ParticipantId(i as u64 + 1);
        let answer = sfu
            .add_participant(now, RoomKey(1), id, kind, Some(offer))
            .expect("a fresh room takes the seed participants")
            .expect("an offer is answered");
        let cred = |sdp: &str, name: &str| sdp_attr(sdp, name).unwrap_or_default().to_owned();
        peers.push(Peer {
            id,
            relay_ufrag: cred(&answer, "a=ice-ufrag:"),
            relay_pwd: cred(&answer, "a=ice-pwd:"),
            client_ufrag: cred(offer, "a=ice-ufrag:"),
        });
    }

    // Addresses the relay may send to: those that sent STUN signed with a relay password.
    let mut authenticated: HashSet<SocketAddr> = HashSet::new();
    drain(&mut sfu, &authenticated);

    while !r.is_empty() {
        let op = r.u8().unwrap_or(0);
        let arg = r.u8().unwrap_or(0);
        let len = usize::from(r.u16().unwrap_or(0));
        match op % 4 {
            OP_RAW => {
                let bytes = r.take(len);
                let from = source(arg);
                let to = if arg & 8 == 8 {
                    SocketAddr::new(RELAY_ADDR.ip(), RELAY_ADDR.port() + 1)
                } else {
                    RELAY_ADDR
                };
                // A recorded client datagram replays valid STUN: that source is authenticated.
                if signed_by_relay_pwd(bytes, &peers) {
                    authenticated.insert(from);
                }
                sfu.handle_datagram(now, from, to, bytes);
            }
            OP_STUN => {
                let payload = r.take(len);
                let from = source(arg);
                let Some(peer) = peers.get(usize::from((arg >> 3) & 1)) else {
                    continue;
                };
                let typ = u16::from_be_bytes([
                    payload.first().copied().unwrap_or(0),
                    payload.get(1).copied().unwrap_or(1),
                ]);
                let mut trans_id = [0u8; 12];
                for (t, b) in trans_id.iter_mut().zip(payload.iter().skip(2)) {
                    *t = *b;
                }
                let attrs = payload.get(14..).unwrap_or(&[]);
                let username = match (arg >> 4) & 3 {
                    0 => format!("{}:{}", peer.relay_ufrag, peer.client_ufrag),
                    1 => format!("{}:{}", peer.client_ufrag, peer.relay_ufrag),
                    2 => format!("{}:", peer.relay_ufrag),
                    _ => peer.relay_ufrag.clone(),
                };
                let msg = stun::signed(
                    typ,
                    trans_id,
                    username.as_bytes(),
                    attrs,
                    peer.relay_pwd.as_bytes(),
                    arg & 0x40 == 0,
                );
                authenticated.insert(from);
                sfu.handle_datagram(now, from, RELAY_ADDR, &msg);
            }
            OP_TIME => {
                now += Duration::from_millis(len as u64);
            }
            OP_REMOVE => {
                if let Some(p) = peers.get(usize::from(arg & 1)) {
                    let _ = sfu.remove_participant(now, p.id, RemoveReason::Left);
                }
            }
            _ => {}
        }
        // Timers that are due run before the next datagram, as in a worker.
        for _ in 0..8 {
            match sfu.poll_timeout() {
                Some(t) if t <= now => sfu.handle_timeout(now),
                _ => break,
            }
        }
        drain(&mut sfu, &authenticated);
        assert!(
            sfu.participant_count() <= peers.len(),
            "no participant appears"
        );
        assert!(sfu.room_count() <= 1, "no room appears");
        assert!(
            sfu.learned_address_count() <= 4 * peers.len(),
            "learned addresses are capped"
        );
    }
}

/// Whether `bytes` is STUN whose MESSAGE-INTEGRITY verifies with a relay password.
fn signed_by_relay_pwd(bytes: &[u8], peers: &[Peer]) -> bool {
    let Ok(msg) = StunMessage::parse(bytes) else {
        return false;
    };
    peers
        .iter()
        .any(|p| msg.verify(p.relay_pwd.as_bytes(), stun::hmac_sha1))
}

/// Polls everything out of the relay, checking where its datagrams go.
fn drain(sfu: &mut Sfu, authenticated: &HashSet<SocketAddr>) {
    while let Some(t) = sfu.poll_transmit() {
        assert_eq!(t.source, RELAY_ADDR, "the relay sends from its own address");
        assert!(
            authenticated.contains(&t.destination),
            "the relay sent {} bytes to {}, which never sent authenticated STUN",
            t.contents.len(),
            t.destination
        );
    }
    while sfu.poll_event().is_some() {}
}
