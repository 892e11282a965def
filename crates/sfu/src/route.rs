//! Routing and demux: from a datagram to its participant's `Rtc` in O(1), and from an `Rtc`'s
//! output to the socket (transmits) or to the rest of the core (events).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use str0m::bwe::BweKind;
use str0m::ice::StunMessage;
use str0m::net::{DatagramRecv, Protocol, Receive};
use str0m::rtp::Ssrc;
use str0m::{Input, Output};

use crate::slab::Slot;
use crate::{guarded, ParticipantId, RemoveReason, Sfu, Transmit};

/// Shortest datagram worth looking at: an RTP header is 12 bytes, and SRTP, SRTCP, DTLS and
/// STUN are all longer. Anything shorter is dropped before any length arithmetic.
const MIN_DATAGRAM: usize = 12;

/// Most remote addresses learned per participant (ICE may validate a few candidate pairs).
const MAX_ADDRS_PER_PARTICIPANT: usize = 4;

impl Sfu {
    /// A datagram received on the worker socket at `now` from `source`, sent to `destination`.
    ///
    /// `destination` must be an address announced as host candidate, the one in `source`'s
    /// family ([`SfuConfig::local_addr_for`][crate::SfuConfig::local_addr_for]), even when the
    /// socket is bound to a wildcard address: str0m matches ICE traffic against its local
    /// candidates.
    ///
    /// An IPv4-mapped IPv6 `source` (`::ffff:a.b.c.d`, how a dual-stack socket reports an IPv4
    /// peer) is taken as the IPv4 address it maps: the peer pairs with the IPv4 candidate, is
    /// learned and answered at one address, and transmits to it carry the IPv4 form.
    ///
    /// The work done does not grow with the participants the core holds: one hash probe to
    /// find the sender, then its `Rtc` and, for media, the subscribers of that one track.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.handle_packet(now, Protocol::Udp, source, destination, bytes, true);
    }

    /// [`Sfu::handle_datagram`] for one datagram of a batch the IO layer read at once
    /// (`recvmmsg`): the same checks and counters, and the sender's `Rtc` handles it at once,
    /// but the sessions its packet was copied into are driven later, by [`Sfu::drive_pending`], once
    /// for every copy they got since. A subscriber that got copies of five packets of a batch
    /// is driven once, not five times: str0m's timer and poll housekeeping per drive is paid
    /// per batch. Call [`Sfu::drive_pending`] at the end of the batch (or sooner, when
    /// [`Sfu::undriven_copies`] grows large, to bound the wait of the first copies); nothing
    /// of those copies comes out of [`Sfu::poll_transmit`] before.
    pub fn handle_datagram_deferred(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.handle_packet(now, Protocol::Udp, source, destination, bytes, false);
    }

    /// Drives every session with pending input (the copies [`Sfu::handle_datagram_deferred`]
    /// handed them, feedback to send): each once, until it has nothing due at `now`.
    pub fn drive_pending(&mut self, now: Instant) {
        self.flush(now);
    }

    /// Forwarded copies waiting for [`Sfu::drive_pending`]: what the first of them waits for
    /// grows with this (the rest of the batch's input, then every copy's encryption).
    pub fn undriven_copies(&self) -> usize {
        self.undriven_copies
    }

    /// One RFC 4571 frame (its 2-byte length prefix already removed) received at `now` on a
    /// TCP connection the IO layer accepted from `source` on its passive ICE-TCP candidate
    /// `destination` ([`SfuConfig::tcp_candidates`][crate::SfuConfig::tcp_candidates]).
    ///
    /// The same checks and counters as [`Sfu::handle_datagram`]; a participant reached over
    /// TCP is learned and answered as `(TCP, source)`, apart from any UDP peer at the same
    /// address, and transmits to it carry [`Protocol::Tcp`] in [`Transmit::proto`]: the IO
    /// layer frames them onto the connection from `source`.
    pub fn handle_tcp_frame(
        &mut self,
        now: Instant,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
    ) {
        self.handle_packet(now, Protocol::Tcp, source, destination, bytes, true);
    }

    fn handle_packet(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        bytes: &[u8],
        drive: bool,
    ) {
        let source = canonical(source);
        self.stats.datagrams_received += 1;
        if bytes.len() > self.config.mtu {
            self.stats.dropped_oversized += 1;
            return;
        }
        if bytes.len() < MIN_DATAGRAM {
            self.stats.dropped_runt += 1;
            return;
        }
        let Ok(contents) = DatagramRecv::try_from(bytes) else {
            // Also covers STUN-looking datagrams that do not parse as STUN.
            if bytes[0] < 2 {
                self.stats.dropped_bad_stun += 1;
            } else {
                self.stats.dropped_malformed += 1;
            }
            return;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto,
                source,
                destination,
                contents,
            },
        );

        let slot = if bytes[0] < 2 {
            // STUN: route by our ufrag, the first half of USERNAME; never answer a stranger.
            let Some(slot) = self.route_stun(proto, source, bytes) else {
                self.stats.dropped_bad_stun += 1;
                return;
            };
            let p = self
                .participants
                .get_mut(slot)
                .expect("routes only point at occupied slots");
            // Checks MESSAGE-INTEGRITY against this participant's credentials.
            if !p.rtc.accepts(&input) {
                self.stats.dropped_bad_stun += 1;
                return;
            }
            // Moves the idle deadline later: its heap entry, now early, is put right when it
            // surfaces (see `timers.rs`), not here on every binding request.
            p.last_ice = now;
            self.learn_addr(slot, proto, source);
            slot
        } else {
            let Some(&slot) = self.routes(proto).get(&source) else {
                self.stats.dropped_unknown_source += 1;
                return;
            };
            if let Some(kind) = srtp_kind(bytes) {
                let p = self
                    .participants
                    .get(slot)
                    .expect("routes only point at occupied slots");
                if !p.keyed {
                    // ICE passed, DTLS did not (yet): nothing could read it (threat 8). Dropped
                    // here rather than in str0m, which would drop it silently after looking up
                    // its streams.
                    self.stats.dropped_before_keys += 1;
                    return;
                }
                if kind == Srtp::Rtcp {
                    self.stats.rtcp_received += 1;
                    self.stats.rtcp_bytes_received += bytes.len() as u64;
                }
                if let Srtp::Rtp(ssrc) = kind {
                    if !p.ssrcs.contains(ssrc) {
                        let cap = self.config.max_ssrcs_per_participant;
                        let p = self
                            .participants
                            .get_mut(slot)
                            .expect("routes only point at occupied slots");
                        if !p.ssrcs.may_try_new(now, cap) {
                            // Out of credit for new SSRCs (see `ssrc.rs`).
                            self.stats.rtp_dropped_ssrc_limit += 1;
                            return;
                        }
                        // Gets a place if str0m authenticates it and there is room (`forward`).
                        self.new_ssrc = Some((slot, ssrc));
                    }
                }
            }
            slot
        };

        let p = self
            .participants
            .get_mut(slot)
            .expect("routes only point at occupied slots");
        match guarded(|| p.rtc.handle_input(input)) {
            Some(Ok(())) => {
                self.poll_rtc(slot, now);
                self.after_input(slot, now);
            }
            Some(Err(_)) => {
                self.stats.dropped_rtc_error += 1;
                self.remove_slot(slot, RemoveReason::Error);
            }
            None => {
                self.stats.sessions_panicked += 1;
                self.remove_slot(slot, RemoveReason::Error);
            }
        }
        // Only the packet of this datagram may claim the place.
        self.new_ssrc = None;
        if drive {
            self.flush(now);
        }
    }

    /// Remote addresses learned from authenticated STUN, over all participants (UDP and TCP).
    pub fn learned_address_count(&self) -> usize {
        self.by_addr.len() + self.by_tcp_addr.len()
    }

    /// The participant whose authenticated UDP address is `addr` (an IPv4-mapped address
    /// counts as its IPv4 address), if any (one hash probe).
    pub fn participant_at(&self, addr: SocketAddr) -> Option<ParticipantId> {
        let slot = *self.by_addr.get(&canonical(addr))?;
        self.participants.get(slot).map(|p| p.id)
    }

    /// The participant whose authenticated ICE-TCP connection comes from `addr`, if any.
    pub fn participant_at_tcp(&self, addr: SocketAddr) -> Option<ParticipantId> {
        let slot = *self.by_tcp_addr.get(&canonical(addr))?;
        self.participants.get(slot).map(|p| p.id)
    }

    /// The learned-address table of `proto`: UDP and TCP peers never share an entry, as the
    /// same address may be a UDP peer and, separately, a TCP connection.
    fn routes(&self, proto: Protocol) -> &HashMap<SocketAddr, Slot> {
        match proto {
            Protocol::Udp => &self.by_addr,
            _ => &self.by_tcp_addr,
        }
    }

    fn routes_mut(&mut self, proto: Protocol) -> &mut HashMap<SocketAddr, Slot> {
        match proto {
            Protocol::Udp => &mut self.by_addr,
            _ => &mut self.by_tcp_addr,
        }
    }

    fn route_stun(&self, proto: Protocol, source: SocketAddr, bytes: &[u8]) -> Option<Slot> {
        let msg = StunMessage::parse(bytes).ok()?;
        if let Some((local, _remote)) = msg.split_username() {
            return self.by_ufrag.get(local).copied();
        }
        // Binding indications and responses carry no USERNAME: only from a known address.
        self.routes(proto).get(&source).copied()
    }

    fn learn_addr(&mut self, slot: Slot, proto: Protocol, addr: SocketAddr) {
        match self.routes(proto).get(&addr) {
            Some(&s) if s == slot => return,
            Some(&other) => {
                // Authenticated STUN moved this address to another participant (port reuse).
                if let Some(o) = self.participants.get_mut(other) {
                    o.addrs.retain(|a| *a != (proto, addr));
                }
            }
            None => {}
        }
        let p = self
            .participants
            .get_mut(slot)
            .expect("learn_addr on an occupied slot");
        let oldest = (p.addrs.len() >= MAX_ADDRS_PER_PARTICIPANT).then(|| p.addrs.remove(0));
        p.addrs.push((proto, addr));
        if let Some((oldest_proto, oldest)) = oldest {
            self.routes_mut(oldest_proto).remove(&oldest);
        }
        self.routes_mut(proto).insert(addr, slot);
    }

    /// Drains one `Rtc` until it reports its next timeout (kept in `next_timeout`; the
    /// caller puts it on the deadline heap).
    pub(crate) fn poll_rtc(&mut self, slot: Slot, now: Instant) {
        loop {
            let Some(p) = self.participants.get_mut(slot) else {
                return;
            };
            let out = match guarded(|| p.rtc.poll_output()) {
                Some(Ok(o)) => o,
                Some(Err(_)) => {
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
                None => {
                    self.stats.sessions_panicked += 1;
                    self.remove_slot(slot, RemoveReason::Error);
                    return;
                }
            };
            match out {
                Output::Timeout(t) => {
                    p.next_timeout = t;
                    return;
                }
                // A remote publisher's `Rtc` has no peer: whatever it would send goes nowhere.
                Output::Transmit(_) if p.remote => {}
                Output::Transmit(t) => {
                    let received_at = match rtp_ssrc_seq(&t.contents) {
                        Some((ssrc, seq)) if !self.forwarded_at.is_empty() => {
                            self.forwarded_at.remove(&(slot, ssrc, seq))
                        }
                        _ => None,
                    };
                    self.transmits.push_back(Transmit {
                        proto: t.proto,
                        source: t.source,
                        destination: t.destination,
                        contents: t.contents.into(),
                        received_at,
                    })
                }
                Output::Event(e) => self.handle_rtc_event(slot, now, e),
            }
        }
    }

    fn handle_rtc_event(&mut self, slot: Slot, now: Instant, e: str0m::Event) {
        match e {
            str0m::Event::RtpPacket(pkt) => self.forward(slot, now, pkt),
            str0m::Event::MediaAdded(m) if m.direction.is_receiving() => {
                let layers = m
                    .simulcast
                    .map(|s| {
                        let l = if s.recv.is_empty() { s.send } else { s.recv };
                        l.into_iter().map(|l| l.rid).collect()
                    })
                    .unwrap_or_default();
                self.publish(now, slot, m.mid, m.kind, layers);
            }
            // DTLS is done and the SRTP keys are in place.
            str0m::Event::Connected => {
                if let Some(p) = self.participants.get_mut(slot) {
                    p.keyed = true;
                }
            }
            // The client closed DTLS: it hung up.
            str0m::Event::Closed => self.remove_slot(slot, RemoveReason::Left),
            str0m::Event::KeyframeRequest(req) => {
                self.relay_keyframe_request(now, slot, req.mid, req.kind);
            }
            // Once a second per sending stream: count the NACKs the subscriber sent us (str0m
            // answers them from its own resend buffer).
            str0m::Event::MediaEgressStats(s) => {
                if let Some(p) = self.participants.get_mut(slot) {
                    let last = p.egress_nacks.entry((s.mid, s.rid)).or_insert(0);
                    self.stats.nacks_received += s.nacks.saturating_sub(*last);
                    *last = s.nacks;
                }
            }
            str0m::Event::EgressBitrateEstimate(BweKind::Twcc {
                estimate,
                can_probe,
            }) => {
                // Without probing (no TWCC on a sending m-line yet) it is only the initial
                // guess: the requested layer stands until there is a measurement.
                if let Some(p) = self.participants.get_mut(slot) {
                    p.estimate = can_probe.then(|| estimate.as_u64());
                    if p.estimate.is_some() && p.estimated_since.is_none() {
                        p.estimated_since = Some(now);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `addr` with an IPv4-mapped IPv6 address replaced by the IPv4 address (port kept; the flow
/// label and scope of a mapped address mean nothing for IPv4).
fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// What an SRTP-range datagram (first byte 128–191, RFC 7983) is, told apart as str0m does:
/// payload types 64–95 in the second byte are RTCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Srtp {
    /// RTP, with its SSRC (in clear under SRTP).
    Rtp(Ssrc),
    /// RTCP.
    Rtcp,
}

/// `None` for STUN, DTLS and anything else; `bytes` is at least [`MIN_DATAGRAM`] long.
fn srtp_kind(bytes: &[u8]) -> Option<Srtp> {
    let (&[first, second, ..], Some(ssrc)) = (bytes, bytes.get(8..12)) else {
        return None;
    };
    if !(128..192).contains(&first) {
        return None;
    }
    if (64..96).contains(&(second & 0x7f)) {
        return Some(Srtp::Rtcp);
    }
    let ssrc = u32::from_be_bytes([ssrc[0], ssrc[1], ssrc[2], ssrc[3]]);
    Some(Srtp::Rtp(ssrc.into()))
}

/// SSRC and sequence number of an RTP packet (SRTP leaves the header in clear); `None` for
/// RTCP (payload types 192–223 in the second byte), DTLS, STUN and runts.
fn rtp_ssrc_seq(datagram: &[u8]) -> Option<(u32, u16)> {
    if datagram.len() < 12 || datagram[0] >> 6 != 2 || (192..=223).contains(&datagram[1]) {
        return None;
    }
    let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
    let ssrc = u32::from_be_bytes([datagram[8], datagram[9], datagram[10], datagram[11]]);
    Some((ssrc, seq))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SfuConfig;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("a socket address")
    }

    #[test]
    fn only_ipv4_mapped_addresses_are_unmapped() {
        assert_eq!(
            canonical(addr("[::ffff:127.0.0.1]:5000")),
            addr("127.0.0.1:5000")
        );
        assert_eq!(
            canonical(addr("[::ffff:203.0.113.7]:1")),
            addr("203.0.113.7:1")
        );
        for same in [
            "127.0.0.1:5000",
            "[::1]:5000",
            "[2001:db8::7]:5000",
            // IPv4-compatible (deprecated, RFC 4291 2.5.5.1) is not how a socket reports IPv4.
            "[::127.0.0.1]:5000",
        ] {
            assert_eq!(canonical(addr(same)), addr(same), "{same}");
        }
    }

    #[test]
    fn the_destination_is_the_candidate_of_the_peer_family() {
        let mut c = SfuConfig::new(addr("203.0.113.7:7710"));
        // One candidate: it is the destination whatever the peer.
        assert_eq!(c.local_addr_for(addr("[2001:db8::9]:1")), c.local_addr);
        assert_eq!(c.local_addrs().collect::<Vec<_>>(), [c.local_addr]);

        c.dual_stack_addr = Some(addr("[2001:db8::7]:7710"));
        assert_eq!(
            c.local_addrs().collect::<Vec<_>>(),
            [addr("203.0.113.7:7710"), addr("[2001:db8::7]:7710")]
        );
        assert_eq!(
            c.local_addr_for(addr("198.51.100.1:4000")),
            addr("203.0.113.7:7710")
        );
        assert_eq!(
            c.local_addr_for(addr("[::ffff:198.51.100.1]:4000")),
            addr("203.0.113.7:7710"),
            "a mapped IPv4 peer is an IPv4 peer"
        );
        assert_eq!(
            c.local_addr_for(addr("[2001:db8::9]:4000")),
            addr("[2001:db8::7]:7710")
        );

        // The IPv6 address first: the same choice.
        let mut c = SfuConfig::new(addr("[2001:db8::7]:7710"));
        c.dual_stack_addr = Some(addr("203.0.113.7:7710"));
        assert_eq!(
            c.local_addr_for(addr("[::ffff:198.51.100.1]:4000")),
            addr("203.0.113.7:7710")
        );
        assert_eq!(
            c.local_addr_for(addr("[2001:db8::9]:4000")),
            addr("[2001:db8::7]:7710")
        );
    }
}
