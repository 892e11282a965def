//! Writes the seed inputs of `corpus/` and the client offers of `data/` from real peers: str0m
//! clients talking to the core, tokens signed with the target's secret, the example config.
//!
//! Not part of the normal run (the files are checked in); after a change of the wire formats:
//! `cargo test -p callrelay-fuzz --test seeds -- --ignored`, then `cargo test -p callrelay-fuzz`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use callrelay_fuzz::{offers_to, publisher, record, sign, wait, RELAY_ADDR, SECRET, SEED};
use callrelay_sfu::{ParticipantId, RoomKey, RoomKind, Sfu, SfuConfig};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Input, Output, Rtc};

/// 2100-01-01: seed tokens stay unexpired.
const FAR_FUTURE: i64 = 4_102_444_800;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = root().join("corpus").join(target);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn client_addr(i: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 20_000 + i))
}

/// A browser stand-in offering to send audio (and video).
struct Client {
    rtc: Rtc,
    pending: SdpPendingOffer,
    offer: String,
    audio: Mid,
}

fn client(i: u16, video: bool, now: Instant) -> Client {
    let mut rtc = Rtc::builder().set_rtp_mode(true).build(now);
    rtc.add_local_candidate(Candidate::host(client_addr(i), "udp").unwrap());
    let mut api = rtc.sdp_api();
    let audio = api.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
    if video {
        api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    }
    let (offer, pending) = api.apply().unwrap();
    Client {
        rtc,
        pending,
        offer: offer.to_sdp_string(),
        audio,
    }
}

fn answer(rtc: &mut Rtc, offer_sdp: &str) -> String {
    let offer = SdpOffer::from_sdp_string(offer_sdp).unwrap();
    rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string()
}

fn seed_with(flags: u8, first: &str, second: Option<&str>) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(first.as_bytes());
    if let Some(s) = second {
        v.push(0);
        v.extend_from_slice(s.as_bytes());
    }
    v
}

#[test]
#[ignore = "rewrites the checked-in seeds"]
fn regenerate_seeds() {
    let now = Instant::now();
    let data = root().join("data");
    std::fs::create_dir_all(&data).unwrap();

    // The offers the `datagram` target joins with (client i sends from 127.0.0.1:2000i).
    let mut video_clients = Vec::new();
    for (room, video) in [("video", true), ("voice", false)] {
        for i in 1..=2u16 {
            let c = client(i, video, now);
            std::fs::write(data.join(format!("offer-{room}-{i}.sdp")), &c.offer).unwrap();
            if video {
                video_clients.push(c);
            }
        }
    }

    let first_offer = video_clients[0].offer.clone();
    sdp_seeds(now, &first_offer);
    datagram_seeds(now, video_clients);
    signal_seeds();
    id_seeds();
    token_seeds();
    config_seeds();
}

fn sdp_seeds(now: Instant, offer: &str) {
    write("sdp", "seed-video-offer", &seed_with(0, offer, None));
    let voice = std::fs::read_to_string(root().join("data/offer-voice-1.sdp")).unwrap();
    write("sdp", "seed-voice-offer", &seed_with(1, &voice, None));
    write(
        "sdp",
        "seed-video-offer-in-voice-room",
        &seed_with(1, offer, None),
    );

    // With a publisher in the room (as the target sets it up), the newcomer's answer to the
    // relay's first offer.
    let mut sfu = Sfu::new(SfuConfig::new(RELAY_ADDR), SEED);
    publisher(&mut sfu, now, RoomKey(1), RoomKind::Video);
    sfu.add_participant(now, RoomKey(1), ParticipantId(2), RoomKind::Video, None)
        .unwrap();
    let relay_offer = offers_to(&mut sfu, ParticipantId(2))
        .pop()
        .expect("the relay offers");
    // A client that joins without an offer of its own.
    let mut newcomer = Rtc::builder().set_rtp_mode(true).build(now);
    newcomer.add_local_candidate(Candidate::host(client_addr(3), "udp").unwrap());
    let ans = answer(&mut newcomer, &relay_offer);
    write(
        "sdp",
        "seed-answer-to-relay-offer",
        &seed_with(4 | 2, &ans, None),
    );

    // A newcomer with an offer, then its answer to the relay's offer of the publisher's tracks.
    let mut sfu = Sfu::new(SfuConfig::new(RELAY_ADDR), SEED);
    publisher(&mut sfu, now, RoomKey(1), RoomKind::Video);
    let Client {
        mut rtc,
        pending,
        offer: own,
        ..
    } = client(3, true, now);
    let relay_answer = sfu
        .add_participant(
            now,
            RoomKey(1),
            ParticipantId(2),
            RoomKind::Video,
            Some(&own),
        )
        .unwrap()
        .unwrap();
    rtc.sdp_api()
        .accept_answer(pending, SdpAnswer::from_sdp_string(&relay_answer).unwrap())
        .unwrap();
    let relay_offer = offers_to(&mut sfu, ParticipantId(2))
        .pop()
        .expect("the relay offers");
    let ans = answer(&mut rtc, &relay_offer);
    write(
        "sdp",
        "seed-offer-then-answer",
        &seed_with(8 | 2, &own, Some(&ans)),
    );

    // A renegotiation: the client offers again, adding a second video track.
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
    let (reoffer, _) = api.apply().unwrap();
    write(
        "sdp",
        "seed-offer-then-reoffer",
        &seed_with(2, &own, Some(&reoffer.to_sdp_string())),
    );
}

/// A real session recorded as `datagram` records: the two clients' STUN, DTLS and SRTP as
/// they reached the relay, with the time between them.
fn datagram_seeds(start: Instant, clients: Vec<Client>) {
    let mut sfu = Sfu::new(SfuConfig::new(RELAY_ADDR), SEED);
    let mut peers: Vec<(Rtc, Instant, Option<Mid>)> = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        let Client {
            mut rtc,
            pending,
            offer,
            audio,
        } = c;
        let ans = sfu
            .add_participant(
                start,
                RoomKey(1),
                ParticipantId(i as u64 + 1),
                RoomKind::Video,
                Some(&offer),
            )
            .unwrap()
            .unwrap();
        rtc.sdp_api()
            .accept_answer(pending, SdpAnswer::from_sdp_string(&ans).unwrap())
            .unwrap();
        peers.push((rtc, start, Some(audio)));
    }
    let mut rec = vec![2u8];
    let mut first_hello: Option<Vec<u8>> = None;
    let mut now = start;
    let mut sent = 0u16;
    while now < start + Duration::from_secs(3) && sent < 20 {
        for (i, (rtc, timeout, _)) in peers.iter_mut().enumerate() {
            loop {
                match rtc.poll_output().unwrap() {
                    Output::Timeout(t) => {
                        *timeout = t;
                        break;
                    }
                    Output::Transmit(t) => {
                        let bytes: Vec<u8> = t.contents.into();
                        if bytes.first() == Some(&0x16) && first_hello.is_none() {
                            first_hello = Some(bytes.clone());
                        }
                        rec.extend(record(0, i as u8, &bytes));
                        sfu.handle_datagram(now, t.source, RELAY_ADDR, &bytes);
                    }
                    Output::Event(_) => {}
                }
            }
        }
        while let Some(t) = sfu.poll_transmit() {
            if let Some((rtc, _, _)) = peers
                .iter_mut()
                .zip([client_addr(1), client_addr(2)])
                .find(|(_, a)| *a == t.destination)
                .map(|(p, _)| p)
            {
                let r = Receive::new(Protocol::Udp, t.source, t.destination, &t.contents).unwrap();
                rtc.handle_input(Input::Receive(now, r)).unwrap();
            }
        }
        while sfu.poll_event().is_some() {}
        // Once connected, each client sends an audio packet every 20 ms.
        for (rtc, _, audio) in peers.iter_mut() {
            let (true, Some(mid)) = (rtc.is_connected(), *audio) else {
                continue;
            };
            let pt = rtc
                .codec_config()
                .find(|p| p.spec().codec == Codec::Opus)
                .unwrap()
                .pt();
            if let Some(tx) = rtc.direct_api().stream_tx_by_mid(mid, None) {
                tx.write_rtp(RtpWrite::new(
                    pt,
                    u64::from(sent).into(),
                    u32::from(sent) * 960,
                    now,
                    vec![0xa0; 80],
                ));
                sent += 1;
            }
            rtc.handle_input(Input::Timeout(now)).unwrap();
        }
        let mut next = now + Duration::from_millis(20);
        if let Some(t) = sfu.poll_timeout() {
            next = next.min(t);
        }
        for (_, t, _) in &peers {
            next = next.min(*t);
        }
        let next = next.max(now + Duration::from_millis(1));
        let ms = (next - now).as_millis() as u16;
        rec.extend(wait(ms));
        now += Duration::from_millis(u64::from(ms));
        if sfu.poll_timeout().is_some_and(|t| t <= now) {
            sfu.handle_timeout(now);
        }
        for (rtc, t, _) in peers.iter_mut() {
            if *t <= now {
                rtc.handle_input(Input::Timeout(now)).unwrap();
            }
        }
    }
    assert!(sent > 0, "the recorded session got to media");
    write("datagram", "seed-recorded-session", &rec);

    // Signed STUN from the first client's address, its ClientHello, then noise.
    let mut stun = vec![0x00, 0x01];
    stun.extend_from_slice(&[0x42; 12]);
    // PRIORITY, USE-CANDIDATE, ICE-CONTROLLING.
    stun.extend_from_slice(&[0x00, 0x24, 0, 4, 0x6e, 0x00, 0x1e, 0xff]);
    stun.extend_from_slice(&[0x00, 0x25, 0, 0]);
    stun.extend_from_slice(&[0x80, 0x2a, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
    let mut v = vec![0u8];
    v.extend(record(1, 0, &stun));
    v.extend(wait(50));
    v.extend(record(0, 0, &first_hello.expect("a ClientHello was sent")));
    let mut rtp = vec![0x80, 111, 0, 1, 0, 0, 0, 1, 0, 0, 0, 42];
    rtp.extend_from_slice(&[0xab; 60]);
    v.extend(record(0, 0, &rtp));
    v.extend(record(0, 2, &rtp));
    v.extend(record(1, 2 | 0x10, &stun));
    v.extend(record(3, 0, &[]));
    write("datagram", "seed-signed-stun-then-dtls", &v);

    // Runts and bad STUN from a stranger into a voice room of two.
    let mut v = vec![3u8];
    v.extend(record(0, 2, &[0x00, 0x01, 0x00, 0x00]));
    v.extend(record(0, 2, &[0x16; 13]));
    v.extend(record(0, 7, &[0x81, 0xc9, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2]));
    v.extend(record(1, 1 | 0x08 | 0x40, &stun));
    write("datagram", "seed-voice-strangers", &v);
}

fn signal_seeds() {
    let frames = [
        (
            "join",
            r#"{"join":{"grant":"eyJhbGciOiJIUzI1NiJ9.e30.c2ln","sdp":"v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"}}"#,
        ),
        ("offer", r#"{"offer":{"sdp":"v=0\r\n"}}"#),
        ("answer", r#"{"answer":{"sdp":"v=0\r\n"}}"#),
        (
            "mute",
            r#"{"mute":{"audio_muted":true,"video_muted":false}}"#,
        ),
        (
            "video-preference",
            r#"{"video_preference":{"participant_id":"p1","max_height":360}}"#,
        ),
        ("leave", r#"{"leave":{}}"#),
        ("ping", r#"{"ping":{"nonce":18446744073709551615}}"#),
        (
            "joined",
            r#"{"joined":{"participant_id":"p2","participants":[{"participant_id":"p1","user_id":"alice","name":"Alice","audio_muted":false,"video_muted":true}],"link_kind":"video","sdp":"v=0\r\n"}}"#,
        ),
        (
            "participant-left",
            r#"{"participant_left":{"participant_id":"p1","reason":"left"}}"#,
        ),
        (
            "track-published",
            r#"{"track_published":{"participant_id":"p1","kind":"video","mid":"1"}}"#,
        ),
        ("removed", r#"{"removed":{"reason":"revoked"}}"#),
        (
            "error",
            r#"{"error":{"code":"rate_limited","message":"slow down"}}"#,
        ),
        (
            "mute-changed",
            r#"{"mute_changed":{"participant_id":"p1","audio_muted":true,"video_muted":true}}"#,
        ),
        ("two-keys", r#"{"leave":{},"ping":{"nonce":1}}"#),
    ];
    for (name, frame) in frames {
        write("signal", &format!("seed-{name}"), frame.as_bytes());
    }
}

fn id_seeds() {
    for (name, id) in [
        ("link-id", "4bT9xQ2mZr7LpK0aW3cV1e"),
        ("link-id-short", "4bT9xQ2mZr7LpK0aW3cV1"),
        ("link-id-percent", "4bT9xQ2mZr7LpK0aW3cV%31"),
        ("user-id", "alice.smith+work@example.org"),
    ] {
        write("link_id", &format!("seed-{name}"), id.as_bytes());
    }
}

fn token_seeds() {
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let user = format!(
        r#"{{"sub":"alice","aud":"callrelay","exp":{FAR_FUTURE},"iat":1700000000,"name":"Alice"}}"#
    );
    let admin = format!(r#"{{"sub":"ops","aud":"callrelay","exp":{FAR_FUTURE},"role":"admin"}}"#);
    let grant = format!(
        r#"{{"sub":"alice","aud":"callrelay-grant","exp":{FAR_FUTURE},"iat":{},"link":"4bT9xQ2mZr7LpK0aW3cV1e","pid":"p1","kind":"video","node":"node-1"}}"#,
        FAR_FUTURE - 60
    );
    for (name, claims) in [("user", &user), ("admin", &admin), ("grant", &grant)] {
        let mut raw = vec![0u8];
        raw.extend_from_slice(sign(header, claims.as_bytes(), SECRET).as_bytes());
        write("token", &format!("seed-{name}-token"), &raw);
        for mode in [1u8, 2] {
            let mut v = vec![mode];
            v.extend_from_slice(header);
            v.push(0);
            v.extend_from_slice(claims.as_bytes());
            let key = if mode == 1 { "signed" } else { "other-key" };
            write("token", &format!("seed-{name}-claims-{key}"), &v);
        }
    }
    let mut none = vec![1u8];
    none.extend_from_slice(br#"{"alg":"none","typ":"JWT"}"#);
    none.push(0);
    none.extend_from_slice(user.as_bytes());
    write("token", "seed-alg-none", &none);
}

fn config_seeds() {
    let example = std::fs::read(root().join("../callrelay.example.toml")).unwrap();
    let mut v = example.clone();
    v.push(0);
    v.extend_from_slice(b"AUTH_SECRET=0123456789abcdef0123456789abcdef\nLINKS_TTL=3s\nMEDIA_WORKERS=2\nHTTP_TRUST_FORWARDED_FOR=yes");
    write("config", "seed-example-and-env", &v);
    write("config", "seed-example", &example);
    write(
        "config",
        "seed-env-only",
        b"\0CALLRELAY_AUTH_SECRET=0123456789abcdef0123456789abcdef\nSTORE_DATABASE_URL=postgres://u@h/db\nCLUSTER_HEARTBEAT=1s\nCLUSTER_LEASE=3s\nMEDIA_PORTS=40000,40001\nMEDIA_WORKERS=2",
    );
    write(
        "config",
        "seed-sections",
        b"[http]\naddr = \"127.0.0.1:7700\"\npublic_url = \"https://calls.example.org/\"\n[media]\nbind_ip = \"0.0.0.0\"\nannounce_ip = \"203.0.113.7\"\nports = \"40000\"\nmtu = 1200\n[cluster]\nlease = \"10s\"\nheartbeat = \"2s\"\n[auth]\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
    );
}

#[test]
fn regenerating_writes_where_replay_reads() {
    assert!(Path::new(&root().join("corpus")).is_dir());
}
