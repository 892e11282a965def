//! Room seats held on this node: the control plane's view of how full each room is.
//!
//! A successful join takes a seat for its participant, so that `rooms.max_participants` is never
//! exceeded even when many joins race (the check and the take happen under one map-entry lock).
//! A seat is held until the join grant it came with expires; when the participant opens
//! signaling it becomes a live seat ([`Seats::hold_live`]), held until it is released (the
//! participant left or was removed).

use std::time::{Duration, Instant};

use callrelay_links::{LinkId, UserId};
use dashmap::DashMap;

/// Seats per link.
#[derive(Debug, Default)]
pub struct Seats {
    rooms: DashMap<LinkId, Room>,
}

#[derive(Debug, Default)]
struct Room {
    /// The link's creator, once a participant is live (for blocks made during the call).
    creator: Option<UserId>,
    seats: Vec<Seat>,
}

impl std::ops::Deref for Room {
    type Target = Vec<Seat>;
    fn deref(&self) -> &Vec<Seat> {
        &self.seats
    }
}

impl std::ops::DerefMut for Room {
    fn deref_mut(&mut self) -> &mut Vec<Seat> {
        &mut self.seats
    }
}

#[derive(Debug)]
struct Seat {
    participant: String,
    /// Who holds it, once live.
    user: Option<UserId>,
    /// `None`: a live seat, held until released.
    until: Option<Instant>,
}

/// The caps a seat is taken under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeatLimits {
    /// `rooms.max_participants`
    pub max: usize,
    /// `rooms.max_seats_per_user`
    pub per_user: usize,
}

/// Why no seat was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoSeat {
    /// The room holds `max` seats.
    RoomFull,
    /// The user holds `per_user` seats in this room.
    UserLimit,
}

/// A room with seats on this node, as [`Seats::snapshot`] copies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomSeats {
    /// The link.
    pub link: LinkId,
    /// The link's creator (known once someone is live).
    pub creator: Option<UserId>,
    /// Live participants: participant id and user.
    pub live: Vec<(String, UserId)>,
    /// Seats held, live or granted.
    pub held: usize,
}

impl Seat {
    fn held_at(&self, now: Instant) -> bool {
        self.until.is_none_or(|u| u > now)
    }
}

impl Seats {
    /// Seats held in the link's room at `now`.
    pub fn held(&self, link: &LinkId, now: Instant) -> usize {
        self.rooms
            .get(link)
            .map(|seats| seats.iter().filter(|s| s.held_at(now)).count())
            .unwrap_or(0)
    }

    /// Takes a seat for `participant` of `user` until `now + hold` (the time it has to open
    /// signaling) if fewer than `max` are held and `user` holds fewer than `per_user` there.
    pub fn try_take(
        &self,
        link: &LinkId,
        participant: &str,
        user: &UserId,
        limits: SeatLimits,
        now: Instant,
        hold: Duration,
    ) -> Result<(), NoSeat> {
        let mut seats = self.rooms.entry(*link).or_default();
        seats.retain(|s| s.held_at(now));
        if seats.len() >= limits.max {
            return Err(NoSeat::RoomFull);
        }
        if seats
            .iter()
            .filter(|s| s.user.as_ref() == Some(user))
            .count()
            >= limits.per_user
        {
            return Err(NoSeat::UserLimit);
        }
        seats.push(Seat {
            participant: participant.to_owned(),
            user: Some(user.clone()),
            until: Some(now + hold),
        });
        Ok(())
    }

    /// Turns `participant`'s seat into a live seat (held until released), taking a new one if
    /// its grant-time seat has expired and the room has room; false when the room is full.
    /// `user` is the participant's user and `creator` the link's creator (kept for enforcement).
    pub fn hold_live(
        &self,
        link: &LinkId,
        participant: &str,
        user: &UserId,
        creator: &UserId,
        limits: SeatLimits,
        now: Instant,
    ) -> Result<(), NoSeat> {
        let mut seats = self.rooms.entry(*link).or_default();
        seats.retain(|s| s.held_at(now));
        if let Some(seat) = seats.iter_mut().find(|s| s.participant == participant) {
            seat.until = None;
            seat.user = Some(user.clone());
            seats.creator = Some(creator.clone());
            return Ok(());
        }
        if seats.len() >= limits.max {
            return Err(NoSeat::RoomFull);
        }
        // A seat not taken here at the HTTP join (it went through another node of the cluster,
        // or its hold lapsed): the per-user cap applies here too.
        if seats
            .iter()
            .filter(|s| s.user.as_ref() == Some(user))
            .count()
            >= limits.per_user
        {
            return Err(NoSeat::UserLimit);
        }
        seats.push(Seat {
            participant: participant.to_owned(),
            user: Some(user.clone()),
            until: None,
        });
        seats.creator = Some(creator.clone());
        Ok(())
    }

    /// A copy of every room with seats, for reconciliation and enforcement (the map is not held
    /// while the caller does IO).
    pub fn snapshot(&self, now: Instant) -> Vec<RoomSeats> {
        self.rooms
            .iter()
            .map(|r| RoomSeats {
                link: *r.key(),
                creator: r.creator.clone(),
                live: r
                    .iter()
                    .filter(|s| s.until.is_none())
                    .filter_map(|s| Some((s.participant.clone(), s.user.clone()?)))
                    .collect(),
                held: r.iter().filter(|s| s.held_at(now)).count(),
            })
            .filter(|r| r.held > 0)
            .collect()
    }

    /// Live seats of `blocked` in rooms of links `blocker` created.
    pub fn live_seats_of(&self, blocker: &UserId, blocked: &UserId) -> usize {
        self.rooms
            .iter()
            .filter(|r| r.creator.as_ref() == Some(blocker))
            .map(|r| {
                r.iter()
                    .filter(|s| s.until.is_none() && s.user.as_ref() == Some(blocked))
                    .count()
            })
            .sum()
    }

    /// Live seats in the link's room.
    pub fn live(&self, link: &LinkId) -> usize {
        self.rooms
            .get(link)
            .map(|r| r.iter().filter(|s| s.until.is_none()).count())
            .unwrap_or(0)
    }

    /// Gives a seat back (the join failed after the seat was taken, or the participant left).
    pub fn release(&self, link: &LinkId, participant: &str) {
        if let Some(mut seats) = self.rooms.get_mut(link) {
            seats.retain(|s| s.participant != participant);
        }
        self.rooms.remove_if(link, |_, seats| seats.is_empty());
    }

    /// Drops expired seats and empty rooms (called periodically).
    pub fn sweep(&self, now: Instant) {
        self.rooms.retain(|_, seats| {
            seats.retain(|s| s.held_at(now));
            !seats.is_empty()
        });
    }

    /// Rooms with at least one held seat.
    pub fn rooms(&self) -> usize {
        self.rooms.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seats_cap_expire_and_release() {
        let seats = Seats::default();
        let link = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1e").unwrap();
        let t = Instant::now();
        let hold = Duration::from_secs(60);
        let u = UserId::parse("u").unwrap();
        let two = SeatLimits {
            max: 2,
            per_user: 2,
        };
        assert!(seats.try_take(&link, "a", &u, two, t, hold).is_ok());
        assert!(seats.try_take(&link, "b", &u, two, t, hold).is_ok());
        assert_eq!(
            seats.try_take(&link, "c", &u, two, t, hold),
            Err(NoSeat::RoomFull)
        );
        assert_eq!(seats.held(&link, t), 2);
        assert_eq!(seats.live(&link), 0, "nobody connected yet");
        seats.release(&link, "a");
        assert!(seats.try_take(&link, "c", &u, two, t, hold).is_ok());
        assert_eq!(
            seats.held(&link, t + hold),
            0,
            "seats expire with their grant"
        );
        assert!(seats.try_take(&link, "d", &u, two, t + hold, hold).is_ok());
        seats.sweep(t + hold * 3);
        assert_eq!(seats.rooms(), 0);
    }

    #[test]
    fn live_seats_last_until_released() {
        let seats = Seats::default();
        let link = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1e").unwrap();
        let t = Instant::now();
        let hold = Duration::from_secs(60);
        let (u, c) = (UserId::parse("u").unwrap(), UserId::parse("c").unwrap());
        let two = SeatLimits {
            max: 2,
            per_user: 2,
        };
        assert!(seats.try_take(&link, "a", &u, two, t, hold).is_ok());
        assert!(seats.hold_live(&link, "a", &u, &c, two, t).is_ok());
        assert_eq!(seats.live_seats_of(&c, &u), 1);
        assert_eq!(seats.live_seats_of(&u, &c), 0);
        assert_eq!(seats.snapshot(t)[0].live, vec![("a".to_owned(), u.clone())]);
        assert_eq!(
            seats.held(&link, t + hold * 10),
            1,
            "a live seat does not expire"
        );
        // An expired grant-time seat is replaced if there is room, refused if not.
        assert!(seats.try_take(&link, "b", &u, two, t, hold).is_ok());
        assert_eq!(
            seats.hold_live(&link, "c", &u, &c, two, t),
            Err(NoSeat::RoomFull)
        );
        assert!(seats
            .hold_live(&link, "c", &u, &c, two, t + hold * 2)
            .is_ok());
        seats.sweep(t + hold * 10);
        assert_eq!(seats.held(&link, t + hold * 10), 2);
        seats.release(&link, "a");
        seats.release(&link, "c");
        assert_eq!(seats.rooms(), 0);
    }

    #[test]
    fn one_user_holds_at_most_per_user_seats_in_a_room() {
        let seats = Seats::default();
        let link = LinkId::parse("4bT9xQ2mZr7LpK0aW3cV1e").unwrap();
        let t = Instant::now();
        let hold = Duration::from_secs(5);
        let (m, v) = (
            UserId::parse("mallory").unwrap(),
            UserId::parse("victim").unwrap(),
        );
        let limits = SeatLimits {
            max: 32,
            per_user: 4,
        };
        for i in 0..4 {
            assert!(seats
                .try_take(&link, &format!("m{i}"), &m, limits, t, hold)
                .is_ok());
        }
        assert_eq!(
            seats.try_take(&link, "m4", &m, limits, t, hold),
            Err(NoSeat::UserLimit)
        );
        assert_eq!(
            seats.hold_live(&link, "m5", &m, &v, limits, t),
            Err(NoSeat::UserLimit)
        );
        assert!(seats.try_take(&link, "v0", &v, limits, t, hold).is_ok());
        // The squatter's seats lapse after the hold: seconds, not the grant's lifetime.
        assert_eq!(seats.held(&link, t + hold), 0);
        assert!(seats
            .try_take(&link, "m6", &m, limits, t + hold, hold)
            .is_ok());
    }
}
