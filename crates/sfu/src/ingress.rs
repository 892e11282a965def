//! A publisher's ingress budget (threat 12: ingress above what a call needs). Every forwarded
//! packet costs each subscriber's downlink, so one participant sending far more than any
//! real client would could crowd everyone else's. Authenticated RTP on a published track
//! is charged here, with its wire overhead, against a token bucket that refills at
//! [`SfuConfig::max_ingress_bitrate`][crate::SfuConfig::max_ingress_bitrate] and holds one
//! second of it (a keyframe burst of all layers fits). Packets over budget are dropped before
//! fan-out and counted; the sender is not removed. Charged after SRTP authentication, so
//! packets spoofed from a participant's address cannot spend its budget.

use std::time::Instant;

#[derive(Debug, Default)]
pub(crate) struct IngressBudget {
    /// Bytes that may still pass now.
    tokens: f64,
    /// The last refill; `None` before the first packet (the bucket then starts full).
    last: Option<Instant>,
}

impl IngressBudget {
    /// Charges `bytes` at `now` against a budget of `bitrate` bits/s; `false` if over it.
    pub(crate) fn admit(&mut self, now: Instant, bytes: u64, bitrate: u64) -> bool {
        let rate = bitrate as f64 / 8.0;
        let full = rate; // one second of burst
        self.tokens = match self.last {
            None => full,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                (self.tokens + elapsed * rate).min(full)
            }
        };
        self.last = Some(now);
        if self.tokens >= bytes as f64 {
            self.tokens -= bytes as f64;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_second_of_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = IngressBudget::default();
        // 80 kbit/s = 10,000 bytes/s; 1,000-byte packets.
        let passed = (0..20).filter(|_| b.admit(t0, 1_000, 80_000)).count();
        assert_eq!(passed, 10, "one second of burst");
        // Then 10 packets a second, whatever is offered.
        let mut passed = 0;
        for ms in (1..=2_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            passed += usize::from(b.admit(now, 1_000, 80_000));
            passed += usize::from(b.admit(now, 1_000, 80_000));
        }
        assert!((19..=21).contains(&passed), "{passed}");
    }

    #[test]
    fn a_sender_under_the_rate_never_loses_a_packet() {
        let t0 = Instant::now();
        let mut b = IngressBudget::default();
        for i in 0..10_000u64 {
            // 5,000 bytes/s against 10,000.
            let now = t0 + Duration::from_millis(i * 100);
            assert!(b.admit(now, 500, 80_000));
        }
    }

    #[test]
    fn time_going_backwards_grants_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = IngressBudget::default();
        assert!(b.admit(t0, 10_000, 80_000));
        assert!(!b.admit(t0 - Duration::from_secs(5), 1, 80_000));
    }
}
