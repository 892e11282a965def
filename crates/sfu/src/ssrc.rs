//! A participant's table of incoming SSRCs (threat 13: undeclared, spoofed or too many SSRCs).
//!
//! An SSRC enters the table only once str0m has authenticated a packet on it (SRTP) and mapped
//! it to one of the participant's m-lines, so a datagram spoofed from the participant's address
//! cannot take a place. The table holds at most
//! [`SfuConfig::max_ssrcs_per_participant`][crate::SfuConfig::max_ssrcs_per_participant] entries,
//! one per stream (m-line, layer, main or repair): a new SSRC for a stream already in the table
//! takes over its place (a publisher that resets an SSRC; str0m too keeps one SSRC per stream).
//! RTP on an SSRC of a further stream is dropped.
//!
//! str0m keeps some state for every SSRC it authenticates, streams or not. So that a participant
//! cannot grow it by cycling SSRCs, RTP on an SSRC outside the table reaches str0m only while the
//! participant has credit: a burst of one per place, then one per [`NEW_SSRC_INTERVAL`]. A packet
//! str0m authenticates on such an SSRC spends one; packets it refuses (spoofed) spend nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use str0m::media::{Mid, Rid};
use str0m::rtp::Ssrc;

/// Which stream of the participant an SSRC carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stream {
    pub(crate) mid: Mid,
    pub(crate) rid: Option<Rid>,
    /// A repair (RTX) stream: str0m rewrites its packets to the main SSRC before we see them.
    pub(crate) repair: bool,
}

/// Once its burst is spent, a participant may bring a packet on a new SSRC to str0m this often.
pub(crate) const NEW_SSRC_INTERVAL: Duration = Duration::from_millis(500);

/// The incoming SSRCs of one participant; see the module documentation.
#[derive(Debug, Default)]
pub(crate) struct SsrcTable {
    by_ssrc: HashMap<Ssrc, Stream>,
    /// New SSRCs that may still reach str0m, and when it was last topped up (`None` before
    /// the first packet on a new SSRC: the burst is full).
    credit: usize,
    credit_at: Option<Instant>,
}

impl SsrcTable {
    /// Whether RTP on an SSRC outside the table may reach str0m at `now` (tops the credit up,
    /// to at most `cap`, by one per [`NEW_SSRC_INTERVAL`] since the last top-up).
    pub(crate) fn may_try_new(&mut self, now: Instant, cap: usize) -> bool {
        match self.credit_at {
            None => {
                self.credit = cap;
                self.credit_at = Some(now);
            }
            Some(at) => {
                let intervals =
                    now.saturating_duration_since(at).as_millis() / NEW_SSRC_INTERVAL.as_millis();
                if intervals > 0 {
                    let n = usize::try_from(intervals).unwrap_or(usize::MAX);
                    self.credit = self.credit.saturating_add(n).min(cap);
                    let step = NEW_SSRC_INTERVAL * u32::try_from(intervals).unwrap_or(u32::MAX);
                    self.credit_at = Some(at.checked_add(step).unwrap_or(now).min(now));
                }
            }
        }
        self.credit > 0
    }

    /// str0m authenticated a packet on an SSRC outside the table.
    pub(crate) fn spend(&mut self) {
        self.credit = self.credit.saturating_sub(1);
    }

    /// Whether `ssrc` has a place (one hash probe).
    pub(crate) fn contains(&self, ssrc: Ssrc) -> bool {
        self.by_ssrc.contains_key(&ssrc)
    }

    /// The m-line and layer of a main (not repair) SSRC, for forwarding (one hash probe).
    pub(crate) fn main(&self, ssrc: Ssrc) -> Option<(Mid, Option<Rid>)> {
        self.by_ssrc
            .get(&ssrc)
            .filter(|s| !s.repair)
            .map(|s| (s.mid, s.rid))
    }

    /// Places taken.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.by_ssrc.len()
    }

    /// Gives `ssrc` a place for `stream`: the place of the stream's previous SSRC if it has
    /// one, else a new place if fewer than `cap` are taken. False when the table is full.
    /// A walk over the table, at most `cap` entries: runs once per new SSRC, not per packet.
    pub(crate) fn admit(&mut self, ssrc: Ssrc, stream: Stream, cap: usize) -> bool {
        let known = self.by_ssrc.remove(&ssrc).is_some();
        // At most one SSRC per stream is kept, so this finds one entry or none whatever the
        // order of the walk.
        let previous = self
            .by_ssrc
            .iter()
            .find(|(_, s)| **s == stream)
            .map(|(k, _)| *k);
        if let Some(old) = previous {
            self.by_ssrc.remove(&old);
        } else if !known && self.by_ssrc.len() >= cap {
            return false;
        }
        self.by_ssrc.insert(ssrc, stream);
        true
    }

    /// Frees the places of the m-lines for which `keep` is false (stopped, or no longer sent
    /// on, after a renegotiation).
    pub(crate) fn retain_mids(&mut self, mut keep: impl FnMut(Mid) -> bool) {
        self.by_ssrc.retain(|_, s| keep(s.mid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(mid: &str, rid: Option<&str>, repair: bool) -> Stream {
        Stream {
            mid: Mid::from(mid),
            rid: rid.map(Rid::from),
            repair,
        }
    }

    #[test]
    fn a_full_table_refuses_new_streams_but_not_new_ssrcs_of_its_streams() {
        let mut t = SsrcTable::default();
        assert!(t.admit(1.into(), stream("0", None, false), 2));
        assert!(t.admit(2.into(), stream("1", Some("h"), false), 2));
        assert!(!t.admit(3.into(), stream("1", Some("l"), false), 2));
        assert_eq!(t.len(), 2);
        // The audio stream resets its SSRC: it keeps its place.
        assert!(t.admit(4.into(), stream("0", None, false), 2));
        assert!(!t.contains(1.into()));
        assert_eq!(t.main(4.into()), Some((Mid::from("0"), None)));
        assert_eq!(t.len(), 2);
        // Known SSRCs stay admitted.
        assert!(t.admit(2.into(), stream("1", Some("h"), false), 2));
    }

    #[test]
    fn new_ssrcs_have_a_burst_then_a_rate() {
        let mut t = SsrcTable::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.may_try_new(t0, 3));
            t.spend();
        }
        assert!(!t.may_try_new(t0, 3), "burst spent");
        assert!(!t.may_try_new(t0 + NEW_SSRC_INTERVAL / 2, 3));
        assert!(
            t.may_try_new(t0 + NEW_SSRC_INTERVAL, 3),
            "one more per interval"
        );
        t.spend();
        assert!(!t.may_try_new(t0 + NEW_SSRC_INTERVAL * 3 / 2, 3));
        // Refused packets spend nothing; the credit never exceeds the burst.
        assert!(t.may_try_new(t0 + NEW_SSRC_INTERVAL * 100, 3));
        for _ in 0..3 {
            assert!(t.may_try_new(t0 + NEW_SSRC_INTERVAL * 100, 3));
            t.spend();
        }
        assert!(!t.may_try_new(t0 + NEW_SSRC_INTERVAL * 100, 3));
    }

    #[test]
    fn repair_ssrcs_are_not_forwarding_keys_and_stopped_lines_free_their_places() {
        let mut t = SsrcTable::default();
        assert!(t.admit(1.into(), stream("1", Some("h"), false), 4));
        assert!(t.admit(2.into(), stream("1", Some("h"), true), 4));
        assert_eq!(t.main(2.into()), None, "a repair ssrc");
        assert!(t.contains(2.into()));
        assert!(t.admit(3.into(), stream("0", None, false), 4));
        t.retain_mids(|m| m != Mid::from("1"));
        assert_eq!(t.len(), 1);
        assert!(t.contains(3.into()));
    }
}
