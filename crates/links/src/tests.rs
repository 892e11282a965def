use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeSet, HashMap};

const TTL: Duration = Duration::from_secs(90 * 24 * 3600);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

fn user(s: &str) -> UserId {
    UserId::parse(s).unwrap()
}

fn link_at(now: DateTime<Utc>, ttl: Duration) -> Link {
    Link::create(
        LinkId::generate(&mut StdRng::seed_from_u64(7)),
        NewLink {
            creator: user("alice"),
            kind: LinkKind::Video,
            title: None,
            scheduled_at: None,
            duration: None,
            require_approval: false,
        },
        now,
        ttl,
    )
}

fn decide(
    link: Option<&Link>,
    joiner: &UserId,
    blocked: bool,
    participants: usize,
    now: DateTime<Utc>,
) -> Result<(), Refusal> {
    decide_join(&JoinRequest {
        link,
        joiner,
        blocked_by_creator: blocked,
        participants,
        max_participants: 32,
        now,
    })
}

#[test]
fn generated_ids_have_22_chars_of_the_alphabet_and_differ() {
    let mut seen = BTreeSet::new();
    for _ in 0..1000 {
        let id = LinkId::random();
        assert_eq!(id.as_str().len(), 22);
        assert!(id.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(seen.insert(id.as_str().to_owned()), "duplicate id");
        assert_eq!(LinkId::parse(id.as_str()).unwrap(), id);
    }
}

#[test]
fn generation_is_uniform_over_the_alphabet() {
    // 62 symbols × 22 positions × 2000 ids = 44,000 draws; each symbol expects ~709.7.
    // A modulo-biased generator (byte % 62 without rejection) gives symbols 0..8 about 5/4 of
    // the others (~870 vs ~700); this bound catches that while leaving ±15 % for chance
    // (more than 6 standard deviations).
    let mut rng = StdRng::seed_from_u64(42);
    let mut counts: HashMap<u8, u32> = HashMap::new();
    for _ in 0..2000 {
        for b in LinkId::generate(&mut rng).as_str().bytes() {
            *counts.entry(b).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), 62);
    let expected = 44_000.0 / 62.0;
    for (b, c) in counts {
        let ratio = f64::from(c) / expected;
        assert!(
            (0.85..1.15).contains(&ratio),
            "symbol {} drawn {c} times",
            b as char
        );
    }
}

#[test]
fn parse_rejects_everything_but_22_alphanumerics() {
    let good = "4bT9xQ2mZr7LpK0aW3cV1e";
    assert!(LinkId::parse(good).is_ok());
    assert_eq!(LinkId::parse(""), Err(InvalidLinkId::Length));
    assert_eq!(LinkId::parse(&good[..21]), Err(InvalidLinkId::Length));
    assert_eq!(
        LinkId::parse(&format!("{good}a")),
        Err(InvalidLinkId::Length)
    );
    assert_eq!(
        LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1-"),
        Err(InvalidLinkId::Alphabet)
    );
    assert_eq!(
        LinkId::parse("4bT9xQ2mZr7LpK0aW3cV%41"),
        Err(InvalidLinkId::Length)
    );
    assert_eq!(
        LinkId::parse("4bT9xQ2mZr7LpK0aW3c%41"),
        Err(InvalidLinkId::Alphabet)
    );
    assert_eq!(
        LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1 "),
        Err(InvalidLinkId::Alphabet)
    );
    // 20 ASCII + one 2-byte character = 22 bytes.
    assert_eq!(
        LinkId::parse("4bT9xQ2mZr7LpK0aW3cVé"),
        Err(InvalidLinkId::Alphabet)
    );
    // Full-width digits are alphanumeric in Unicode but not ASCII.
    assert!(LinkId::parse("４bT9xQ2mZr7LpK0aW3").is_err());
}

#[test]
fn display_and_debug_never_show_the_id() {
    let id = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1e").unwrap();
    for shown in [
        format!("{id}"),
        format!("{id:?}"),
        format!("{:?}", Some(id)),
    ] {
        assert!(!shown.contains("4bT9xQ2mZr7LpK0aW3cV1e"), "{shown}");
        assert!(!shown.contains("4bT9xQ"), "{shown}");
        assert!(shown.contains(&id.digest().to_string()), "{shown}");
    }
    assert_eq!(id.digest().to_string().len(), 8);
}

#[test]
fn user_ids_are_validated() {
    assert!(UserId::parse("alice").is_ok());
    assert!(UserId::parse("a.b-c_d@example.org").is_ok());
    assert!(UserId::parse(&"x".repeat(64)).is_ok());
    assert!(UserId::parse(&"x".repeat(65)).is_err());
    assert!(UserId::parse("").is_err());
    assert!(UserId::parse("a b").is_err());
    assert!(UserId::parse("a/b").is_err());
    assert!(UserId::parse("ä").is_err());
}

#[test]
fn titles_are_normalised() {
    assert_eq!(normalize_title(None), Ok(None));
    assert_eq!(normalize_title(Some("   ")), Ok(None));
    assert_eq!(
        normalize_title(Some(" Standup ")),
        Ok(Some("Standup".into()))
    );
    assert_eq!(
        normalize_title(Some(&"é".repeat(100)))
            .unwrap()
            .unwrap()
            .chars()
            .count(),
        100
    );
    assert_eq!(
        normalize_title(Some(&"é".repeat(101))),
        Err(InvalidInput::Title)
    );
    assert_eq!(normalize_title(Some("a\u{0}b")), Err(InvalidInput::Title));
}

#[test]
fn kind_parses_and_defaults_to_video() {
    assert_eq!(LinkKind::default(), LinkKind::Video);
    assert_eq!("voice".parse::<LinkKind>(), Ok(LinkKind::Voice));
    assert!("Video".parse::<LinkKind>().is_err());
    assert!(!LinkKind::Voice.allows_video());
}

#[test]
fn expiry_boundaries() {
    let link = link_at(t0(), TTL);
    let expiry = t0() + chrono::Duration::from_std(TTL).unwrap();
    assert_eq!(link.expires_at, expiry);
    let alice = user("alice");
    let bob = user("bob");
    assert_eq!(link.status(expiry - secs(1)), LinkStatus::Active);
    assert_eq!(
        decide(Some(&link), &bob, false, 0, expiry - secs(1)),
        Ok(())
    );
    assert_eq!(
        link.status(expiry),
        LinkStatus::Expired,
        "exactly at expiry it is expired"
    );
    assert_eq!(
        decide(Some(&link), &bob, false, 0, expiry),
        Err(Refusal::Expired)
    );
    assert_eq!(
        decide(Some(&link), &alice, false, 0, expiry + secs(1)),
        Err(Refusal::Expired)
    );
}

#[test]
fn renewal_moves_the_boundary() {
    let ttl = Duration::from_secs(3);
    let mut link = link_at(t0(), ttl);
    // A join at 2 s keeps it alive until 5 s.
    link.renew(t0() + secs(2), ttl);
    assert_eq!(link.last_used_at, t0() + secs(2));
    assert_eq!(link.status(t0() + secs(4)), LinkStatus::Active);
    assert_eq!(
        link.status(t0() + chrono::Duration::milliseconds(4999)),
        LinkStatus::Active
    );
    assert_eq!(link.status(t0() + secs(5)), LinkStatus::Expired);
}

#[test]
fn revoked_beats_expired_and_never_admits() {
    let mut link = link_at(t0(), TTL);
    link.revoked = Some(Revocation {
        at: t0(),
        reason: "abuse".into(),
    });
    assert_eq!(link.status(t0()), LinkStatus::Revoked);
    assert_eq!(
        link.status(t0() + secs(100 * 24 * 3600)),
        LinkStatus::Revoked
    );
    assert_eq!(
        decide(Some(&link), &user("alice"), false, 0, t0()),
        Err(Refusal::Revoked)
    );
}

#[test]
fn refusal_reasons() {
    let link = link_at(t0(), TTL);
    let bob = user("bob");
    assert_eq!(decide(None, &bob, false, 0, t0()), Err(Refusal::NotFound));
    assert_eq!(
        decide(Some(&link), &bob, true, 0, t0()),
        Err(Refusal::Blocked)
    );
    assert_eq!(decide(Some(&link), &bob, false, 31, t0()), Ok(()));
    assert_eq!(
        decide(Some(&link), &bob, false, 32, t0()),
        Err(Refusal::RoomFull)
    );
    // The creator can never be blocked from their own link.
    assert_eq!(decide(Some(&link), &user("alice"), true, 0, t0()), Ok(()));
    assert_eq!(
        check_block(&user("alice"), &user("alice")),
        Err(InvalidInput::SelfBlock)
    );
    assert_eq!(check_block(&user("alice"), &bob), Ok(()));
}

#[test]
fn purge_only_after_grace() {
    let link = link_at(t0(), Duration::from_secs(10));
    let grace = Duration::from_secs(30 * 24 * 3600);
    assert!(!link.is_purgeable(t0() + secs(11), grace));
    assert!(!link.is_purgeable(t0() + secs(10 + 30 * 24 * 3600 - 1), grace));
    assert!(link.is_purgeable(t0() + secs(10 + 30 * 24 * 3600), grace));
}

#[test]
fn huge_ttl_saturates() {
    let link = link_at(t0(), Duration::from_secs(u64::MAX));
    assert_eq!(link.status(t0() + secs(1_000_000_000)), LinkStatus::Active);
}

// ---- property tests: random sequences of operations against the invariants ----

#[derive(Clone, Debug)]
enum Op {
    Join(u8),
    Preview,
    Revoke,
    Block(u8),
    Unblock(u8),
    Advance(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..4).prop_map(Op::Join),
        2 => Just(Op::Preview),
        1 => Just(Op::Revoke),
        2 => (1u8..4).prop_map(Op::Block),
        2 => (0u8..4).prop_map(Op::Unblock),
        3 => (0u32..200).prop_map(Op::Advance),
    ]
}

fn uid(n: u8) -> UserId {
    // user 0 is the creator.
    user(&format!("u{n}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_over_any_sequence(ops in proptest::collection::vec(op(), 1..60), ttl_s in 1u64..120) {
        let ttl = Duration::from_secs(ttl_s);
        let mut now = t0();
        let mut link = Link::create(
            LinkId::generate(&mut StdRng::seed_from_u64(1)),
            NewLink { creator: uid(0), kind: LinkKind::Voice, title: None, scheduled_at: None, duration: None, require_approval: false },
            now,
            ttl,
        );
        let mut blocks: BTreeSet<u8> = BTreeSet::new();
        let mut revoked = false;
        for op in ops {
            let before = link.clone();
            match op {
                Op::Join(u) => {
                    let joiner = uid(u);
                    let decision = decide(Some(&link), &joiner, blocks.contains(&u), 0, now);
                    if revoked { prop_assert_eq!(decision, Err(Refusal::Revoked)); }
                    else if now >= link.expires_at { prop_assert_eq!(decision, Err(Refusal::Expired)); }
                    else if u != 0 && blocks.contains(&u) { prop_assert_eq!(decision, Err(Refusal::Blocked)); }
                    else { prop_assert_eq!(decision, Ok(())); }
                    if decision.is_ok() {
                        link.renew(now, ttl);
                        prop_assert_eq!(link.last_used_at, now);
                        prop_assert_eq!(link.status(now), LinkStatus::Active);
                    } else {
                        prop_assert_eq!(&link, &before, "a refused join changes nothing");
                    }
                }
                Op::Preview => {
                    let _ = link.status(now);
                    prop_assert_eq!(&link, &before, "a preview never renews");
                }
                Op::Revoke => {
                    if link.revoked.is_none() {
                        link.revoked = Some(Revocation { at: now, reason: String::new() });
                    }
                    revoked = true;
                }
                Op::Block(u) => { blocks.insert(u); }
                Op::Unblock(u) => { blocks.remove(&u); }
                Op::Advance(s) => { now += secs(i64::from(s)); }
            }
            // Invariants after every step.
            prop_assert!(link.last_used_at <= now);
            prop_assert_eq!(link.expires_at, add_duration(link.last_used_at, ttl));
            if revoked {
                prop_assert_eq!(link.status(now), LinkStatus::Revoked);
                for u in 0..4 { prop_assert_eq!(decide(Some(&link), &uid(u), false, 0, now), Err(Refusal::Revoked)); }
            } else if now >= link.expires_at {
                for u in 0..4 { prop_assert_eq!(decide(Some(&link), &uid(u), false, 0, now), Err(Refusal::Expired)); }
            }
            for &u in &blocks {
                if u != 0 {
                    prop_assert!(decide(Some(&link), &uid(u), true, 0, now).is_err());
                }
            }
        }
    }

    #[test]
    fn parse_never_panics_and_roundtrips(s in "\\PC{0,30}") {
        if let Ok(id) = LinkId::parse(&s) {
            prop_assert_eq!(id.as_str(), s.as_str());
        }
    }
}
