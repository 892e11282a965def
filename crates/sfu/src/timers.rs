//! Timers and driving: which `Rtc` runs when.
//!
//! Each participant has one deadline: the soonest of its `Rtc`'s next timeout, its idle
//! removal (last authenticated STUN plus the idle timeout) and, while it has simulcast
//! subscriptions, its next allocation. The deadlines sit in a min-heap of
//! `(deadline, sequence, slot)`, and each participant remembers the `(deadline, sequence)` of
//! its one live entry. Entries are invalidated lazily:
//!
//! - a deadline that moves earlier pushes a new entry; the old one goes stale (its sequence
//!   no longer matches) and is dropped when it surfaces;
//! - a deadline that moves later (an `Rtc` just driven, a binding request that postpones idle
//!   removal) pushes nothing: the entry, now early, is pushed again at the right time when it
//!   surfaces;
//! - a removed participant leaves its entry behind, stale (sequences are never reused, so a
//!   reused slot does not revive it).
//!
//! After every call the top of the heap is cleaned ([`Sfu::settle_timers`]), so
//! [`Sfu::poll_timeout`] is a peek and exact. [`Sfu::handle_timeout`] pops only the entries
//! that are due, each in O(log n).
//!
//! An `Rtc` is driven until its next timeout is in the future. str0m's pacer asks for an
//! immediate timeout after every packet it lets out; served in the same call, a burst no
//! longer costs the IO layer one loop turn per packet (its sleep until a deadline already in
//! the past). What comes due a fraction of a millisecond later is left to the IO layer's
//! timer, which counts milliseconds and so serves such deadlines together, late rather than
//! early. Handing an `Rtc` a time ahead of `now` to serve them early was tried and cost more:
//! a copy forwarded to it before its clock catches up waits for its next timeout, one more
//! drive per copy (measured with BWE on, six participants sending video, wake-ups simulated
//! at their exact deadlines: 80 % more drives for 8 × fewer wake-ups).
//!
//! [`SfuStats::timer_entries_visited`][crate::SfuStats::timer_entries_visited] and
//! [`SfuStats::rtc_drives`][crate::SfuStats::rtc_drives] count this work.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use str0m::Input;

use crate::membership::Participant;
use crate::slab::Slot;
use crate::{guarded, RemoveReason, Sfu};

/// A participant's live heap entry: its deadline and sequence number.
pub(crate) type TimerEntry = (Instant, u64);

/// Most times one `Rtc` is driven in a row at one instant while it keeps reporting a timeout
/// that is already due (one paced packet per drive; str0m bursts at most 63 kB). What is left
/// stays due: [`Sfu::poll_timeout`] says so, and the next call carries on.
const MAX_DRIVES: usize = 64;

/// How long a forwarded copy is remembered for [`Transmit::received_at`][crate::Transmit]:
/// copies str0m holds longer (or drops) are forgotten.
const FORWARD_TIMING_HORIZON: Duration = Duration::from_secs(2);

/// The deadline heap.
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Slot)>>,
    next_seq: u64,
    /// Participants found due by one `handle_timeout`; kept to reuse its buffer.
    due: Vec<Slot>,
}

impl Timers {
    pub(crate) fn new() -> Self {
        Timers {
            heap: BinaryHeap::new(),
            next_seq: 0,
            due: Vec::new(),
        }
    }
}

impl Participant {
    /// When this participant needs the core next.
    fn deadline(&self, idle: Duration, handshake: Duration) -> Instant {
        if self.remote {
            // No ICE, no DTLS, no subscriptions: its `Rtc`, and the look at what its local
            // subscribers want.
            return self
                .next_demand
                .map_or(self.next_timeout, |d| d.min(self.next_timeout));
        }
        let mut t = self.next_timeout.min(self.last_ice + idle);
        if !self.keyed {
            t = t.min(self.joined + handshake);
        }
        self.next_allocation.map_or(t, |a| t.min(a))
    }

    /// Past its idle deadline, or past its handshake deadline without keys.
    fn expired(&self, now: Instant, idle: Duration, handshake: Duration) -> bool {
        // A remote publisher leaves when its leg says so (or the IO layer loses the leg).
        !self.remote && now >= self.last_ice + idle
            || (!self.keyed && now >= self.joined + handshake)
    }
}

impl Sfu {
    /// Advances timers to `now`: the participants whose deadline has passed, and nobody else,
    /// have their `Rtc` driven, their idle removal checked and their simulcast layers chosen.
    pub fn handle_timeout(&mut self, now: Instant) {
        let (idle, handshake) = (self.config.idle_timeout, self.config.handshake_timeout);
        let mut due = std::mem::take(&mut self.timers.due);
        while let Some(&Reverse((at, seq, slot))) = self.timers.heap.peek() {
            if at > now {
                break;
            }
            self.timers.heap.pop();
            self.stats.timer_entries_visited += 1;
            if let Some(p) = self.participants.get_mut(slot) {
                if p.timer == Some((at, seq)) {
                    p.timer = None;
                    due.push(slot);
                }
            }
        }
        for &slot in &due {
            let Some(p) = self.participants.get(slot) else {
                continue;
            };
            if p.expired(now, idle, handshake) {
                self.remove_slot(slot, RemoveReason::Idle);
                continue;
            }
            if p.next_allocation.is_some_and(|t| t <= now) {
                self.allocate_due(now, slot);
            }
            if self
                .participants
                .get(slot)
                .is_some_and(|p| p.next_demand.is_some_and(|t| t <= now))
            {
                self.update_demand(now, slot);
            }
            if self
                .participants
                .get(slot)
                .is_some_and(|p| p.next_timeout <= now)
            {
                self.drive(slot, now);
            }
            self.schedule(slot);
        }
        due.clear();
        self.timers.due = due;
        if !self.forwarded_at.is_empty()
            && self
                .forwarded_purge
                .is_none_or(|t| now >= t + FORWARD_TIMING_HORIZON / 2)
        {
            self.forwarded_purge = Some(now);
            self.forwarded_at
                .retain(|_, t| now.saturating_duration_since(*t) < FORWARD_TIMING_HORIZON);
        }
        self.flush(now);
    }

    /// When [`Sfu::handle_timeout`] must be called next, at the latest: the soonest deadline
    /// of any participant (a peek at the deadline heap). `None` when there is nobody to serve.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    pub(crate) fn mark_dirty(&mut self, slot: Slot) {
        if let Some(p) = self.participants.get_mut(slot) {
            if !p.dirty {
                p.dirty = true;
                self.dirty.push(slot);
            }
        }
    }

    /// After input to `slot`'s `Rtc` was drained: drive it if something is due at once,
    /// otherwise put its deadline on the heap.
    pub(crate) fn after_input(&mut self, slot: Slot, now: Instant) {
        match self.participants.get(slot) {
            Some(p) if p.next_timeout <= now => self.mark_dirty(slot),
            Some(_) => self.schedule(slot),
            None => {}
        }
    }

    /// Drives every `Rtc` with pending work until it has nothing due, sends pending offers,
    /// and cleans the top of the deadline heap. Ends every call that changes anything.
    pub(crate) fn flush(&mut self, now: Instant) {
        self.undriven_copies = 0;
        loop {
            if let Some(slot) = self.dirty.pop() {
                // Skipped when driven since it was marked (by `handle_timeout`).
                if self.participants.get(slot).is_some_and(|p| p.dirty) {
                    self.drive(slot, now);
                }
                continue;
            }
            if let Some(slot) = self.to_negotiate.pop() {
                self.negotiate(slot);
                continue;
            }
            if let Some(room) = self.rebind.pop() {
                self.bind_viewers(now, room);
                continue;
            }
            break;
        }
        self.settle_timers();
    }

    /// Hands `slot`'s `Rtc` the time and drains it, again while its next timeout is already
    /// due (at most [`MAX_DRIVES`] times), then puts its deadline on the heap.
    fn drive(&mut self, slot: Slot, now: Instant) {
        for _ in 0..MAX_DRIVES {
            let Some(p) = self.participants.get_mut(slot) else {
                return;
            };
            p.dirty = false;
            self.stats.rtc_drives += 1;
            match guarded(|| p.rtc.handle_input(Input::Timeout(now))) {
                Some(Ok(())) => {}
                Some(Err(_)) => {
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
                None => {
                    self.stats.sessions_panicked += 1;
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
            }
            self.poll_rtc(slot, now);
            if self
                .participants
                .get(slot)
                .is_none_or(|p| p.next_timeout > now)
            {
                break;
            }
        }
        self.schedule(slot);
    }

    /// Puts `slot`'s deadline on the heap if it is earlier than its live entry (or it has
    /// none). A later deadline is left to [`Sfu::settle_timers`] and `handle_timeout`.
    pub(crate) fn schedule(&mut self, slot: Slot) {
        let (idle, handshake) = (self.config.idle_timeout, self.config.handshake_timeout);
        let Some(p) = self.participants.get_mut(slot) else {
            return;
        };
        let deadline = p.deadline(idle, handshake);
        if p.timer.is_some_and(|(at, _)| at <= deadline) {
            return;
        }
        let seq = self.timers.next_seq;
        self.timers.next_seq += 1;
        self.timers.heap.push(Reverse((deadline, seq, slot)));
        p.timer = Some((deadline, seq));
    }

    /// Cleans the top of the heap: stale entries are dropped, an early live one is pushed
    /// again at its participant's deadline, until the top is a live entry at its exact
    /// deadline. Each entry is handled once, so this costs O(log n) per entry ever pushed.
    pub(crate) fn settle_timers(&mut self) {
        let (idle, handshake) = (self.config.idle_timeout, self.config.handshake_timeout);
        while let Some(&Reverse((at, seq, slot))) = self.timers.heap.peek() {
            let live = self
                .participants
                .get(slot)
                .filter(|p| p.timer == Some((at, seq)));
            if live.is_some_and(|p| p.deadline(idle, handshake) == at) {
                break;
            }
            self.timers.heap.pop();
            self.stats.timer_entries_visited += 1;
            if live.is_some() {
                if let Some(p) = self.participants.get_mut(slot) {
                    p.timer = None;
                }
                self.schedule(slot);
            }
        }
    }
}
