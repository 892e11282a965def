//! Per-participant signaling budgets: one token bucket per message type, time passed in.
//!
//! A participant that sends faster than its budget gets `error{rate_limited}` for each message
//! over it (the message is not acted on); one that keeps at it — [`STRIKES`] refusals within
//! [`STRIKE_WINDOW`] — is removed. Nobody else's call pays for it: the worker never sees the
//! refused messages, and what it fans out is coalesced per receiver (`media::worker`).

use std::time::{Duration, Instant};

/// Refusals within [`STRIKE_WINDOW`] after which the sender is removed.
pub const STRIKES: u32 = 50;
/// See [`STRIKES`].
pub const STRIKE_WINDOW: Duration = Duration::from_secs(10);

/// The kinds of message a joined client sends, each with its own budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `offer` (renegotiation: runs SDP on the media worker).
    Offer,
    /// `answer` to a relay offer.
    Answer,
    /// `mute` (fanned out to the room).
    Mute,
    /// `video_preference`.
    Preference,
    /// `ping`.
    Ping,
    /// Anything else (refused messages, `join` again, …).
    Other,
}

impl Kind {
    /// Every kind, in label order.
    pub const ALL: [Kind; 6] = [
        Kind::Offer,
        Kind::Answer,
        Kind::Mute,
        Kind::Preference,
        Kind::Ping,
        Kind::Other,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Offer => "offer",
            Kind::Answer => "answer",
            Kind::Mute => "mute",
            Kind::Preference => "video_preference",
            Kind::Ping => "ping",
            Kind::Other => "other",
        }
    }

    /// (burst, per second): generous for what a real client does — a renegotiation when a
    /// track is added, a mute toggle, a preference per visible tile on every layout change —
    /// and far below what a flood needs.
    fn quota(self) -> (f64, f64) {
        match self {
            Kind::Offer | Kind::Answer => (10.0, 1.0),
            Kind::Mute => (20.0, 5.0),
            Kind::Preference => (64.0, 32.0),
            Kind::Ping => (10.0, 2.0),
            Kind::Other => (20.0, 5.0),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// What [`Budgets::take`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within budget: act on the message.
    Allow,
    /// Over budget: refuse this message with `error{rate_limited}`.
    Refuse,
    /// Over budget again and again: remove the sender.
    Remove,
}

/// One participant's budgets.
#[derive(Debug)]
pub struct Budgets {
    buckets: [Bucket; 6],
    strikes: u32,
    window_start: Instant,
}

impl Budgets {
    /// Full buckets at `now`.
    pub fn new(now: Instant) -> Budgets {
        Budgets {
            buckets: Kind::ALL.map(|k| Bucket {
                tokens: k.quota().0,
                at: now,
            }),
            strikes: 0,
            window_start: now,
        }
    }

    /// Takes one token of `kind` at `now`.
    pub fn take(&mut self, kind: Kind, now: Instant) -> Verdict {
        let (burst, rate) = kind.quota();
        let i = Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is in ALL");
        let b = &mut self.buckets[i];
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Verdict::Allow;
        }
        if now.saturating_duration_since(self.window_start) > STRIKE_WINDOW {
            self.window_start = now;
            self.strikes = 0;
        }
        self.strikes += 1;
        if self.strikes >= STRIKES {
            Verdict::Remove
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_then_removal_for_persisting() {
        let t = Instant::now();
        let mut b = Budgets::new(t);
        for _ in 0..20 {
            assert_eq!(b.take(Kind::Mute, t), Verdict::Allow);
        }
        assert_eq!(b.take(Kind::Mute, t), Verdict::Refuse);
        // Other kinds have their own buckets.
        assert_eq!(b.take(Kind::Ping, t), Verdict::Allow);
        // 5 per second come back.
        let t1 = t + Duration::from_secs(1);
        for _ in 0..5 {
            assert_eq!(b.take(Kind::Mute, t1), Verdict::Allow);
        }
        assert_eq!(b.take(Kind::Mute, t1), Verdict::Refuse);
        // Keep flooding: removed at the 50th refusal within the window.
        let mut last = Verdict::Refuse;
        for _ in 0..48 {
            last = b.take(Kind::Mute, t1);
        }
        assert_eq!(last, Verdict::Remove);
    }

    #[test]
    fn strikes_are_forgotten_after_the_window() {
        let t = Instant::now();
        let mut b = Budgets::new(t);
        for _ in 0..10 {
            b.take(Kind::Offer, t);
        }
        for _ in 0..40 {
            assert_eq!(b.take(Kind::Offer, t), Verdict::Refuse);
        }
        let later = t + STRIKE_WINDOW + Duration::from_millis(1);
        // The bucket refilled (10 s at 1/s: full again).
        for _ in 0..10 {
            assert_eq!(b.take(Kind::Offer, later), Verdict::Allow);
        }
        for _ in 0..40 {
            assert_eq!(b.take(Kind::Offer, later), Verdict::Refuse);
        }
    }

    #[test]
    fn a_steady_client_is_never_refused() {
        let t = Instant::now();
        let mut b = Budgets::new(t);
        // A mute toggle every 250 ms for a minute, a ping every second, an offer every 2 s.
        for i in 0..240u32 {
            let now = t + Duration::from_millis(250) * i;
            assert_eq!(b.take(Kind::Mute, now), Verdict::Allow);
            if i % 4 == 0 {
                assert_eq!(b.take(Kind::Ping, now), Verdict::Allow);
            }
            if i % 8 == 0 {
                assert_eq!(b.take(Kind::Offer, now), Verdict::Allow);
            }
        }
    }
}
