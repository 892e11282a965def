//! The sans-IO forwarding core of callrelay.
//!
//! One [`Sfu`] per worker socket. It owns one str0m [`Rtc`][str0m::Rtc] per participant (RTP
//! mode, ICE-lite) and forwards every RTP packet of a published track to every subscriber of
//! that track in the same room, payload bytes untouched.
//!
//! Nothing here does IO or reads a clock: datagrams come in through [`Sfu::handle_datagram`]
//! with their receive time, timers through [`Sfu::handle_timeout`], and what must happen next
//! is drained with [`Sfu::poll_transmit`], [`Sfu::poll_event`] and [`Sfu::poll_timeout`].
//!
//! After every `handle_*` call or command, drain `poll_transmit` and `poll_event` until they
//! return `None`, then sleep until `poll_timeout()`:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Instant;
//! use callrelay_sfu::{Event, Sfu};
//!
//! /// One turn of a worker: a datagram (or nothing) arrived at `now`.
//! fn turn(sfu: &mut Sfu, now: Instant, datagram: Option<(SocketAddr, SocketAddr, &[u8])>) {
//!     match datagram {
//!         Some((source, destination, bytes)) => {
//!             sfu.handle_datagram(now, source, destination, bytes)
//!         }
//!         None => sfu.handle_timeout(now),
//!     }
//!     while let Some(t) = sfu.poll_transmit() {
//!         // socket.send_to(&t.contents, t.destination)
//!         let _ = t;
//!     }
//!     while let Some(e) = sfu.poll_event() {
//!         match e {
//!             Event::SdpOffer { .. } => { /* send the offer over signaling */ }
//!             _ => { /* room events to signaling */ }
//!         }
//!     }
//!     let _sleep_until: Option<Instant> = sfu.poll_timeout();
//! }
//! ```
#![forbid(unsafe_code)]

// The code, by concern. The path of a packet: `route` (demux to the publisher's `Rtc`, its
// output dispatched) → `forward` (a copy into each subscriber's `Rtc`) → `timers` (each
// dirty `Rtc` driven, its datagrams out through `poll_transmit`).
mod api;
mod forward;
mod ingress;
mod membership;
mod negotiate;
mod payload_types;
mod route;
mod simulcast;
mod slab;
mod speaker;
mod ssrc;
mod table;
mod timers;
mod trunk;
mod viewer;

use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::SeedableRng;
use str0m::crypto::CryptoProvider;

pub use api::{
    Event, MediaBitrate, ParticipantId, RemoveReason, RoomKey, RoomKind, SfuConfig, SfuError,
    SfuStats, SubscriberLayer, TrackKind, DEFAULT_BWE_INITIAL_BITRATE, DEFAULT_SEND_HISTORY_VIDEO,
};
pub use str0m::media::{Mid, Pt, Rid};
pub use str0m::net::Protocol;
pub use trunk::{LegId, TrunkPacket, TrunkRtp};

use membership::{Participant, Room};
use slab::{Slab, Slot};
use table::{Subscriptions, Track, TrackKey};
use timers::Timers;

/// A datagram sent by the relay: hand `contents` to the socket at `source`, to `destination`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// How it leaves: [`Protocol::Udp`] on the worker's UDP socket, or [`Protocol::Tcp`] as
    /// one RFC 4571 frame on the ICE-TCP connection from `destination` (see
    /// [`Sfu::handle_tcp_frame`]). Other values do not occur.
    pub proto: Protocol,
    /// Local address to send from (the worker socket).
    pub source: SocketAddr,
    /// Remote address.
    pub destination: SocketAddr,
    /// Datagram bytes.
    pub contents: Vec<u8>,
    /// For a forwarded copy of a media packet: when the datagram it copies arrived (the `now`
    /// given to [`Sfu::handle_datagram`]), however long str0m's pacer held it. `None` for
    /// everything else (RTCP, retransmissions, DTLS, STUN, padding).
    pub received_at: Option<Instant>,
}

/// The forwarding core of one worker. See the crate documentation for the calling protocol.
pub struct Sfu {
    config: SfuConfig,
    rng: StdRng,
    crypto: Arc<CryptoProvider>,
    participants: Slab<Slot, Participant>,
    by_id: HashMap<ParticipantId, Slot>,
    /// Local ICE ufrag → participant, for the first STUN packet of a participant.
    by_ufrag: HashMap<String, Slot>,
    /// Learned remote 5-tuple → participant; only authenticated STUN adds entries.
    by_addr: HashMap<SocketAddr, Slot>,
    /// The same for ICE-TCP connections, by their remote address: kept apart from UDP peers.
    by_tcp_addr: HashMap<SocketAddr, Slot>,
    rooms: BTreeMap<RoomKey, Room>,
    /// The forwarding table: published tracks by `(publisher, mid)`.
    tracks: HashMap<TrackKey, Track>,
    /// Every subscription, reachable from its track, its subscriber and its m-line.
    subs: Subscriptions,
    /// Participants whose `Rtc` has pending input to process (forwarded packets, feedback).
    dirty: Vec<Slot>,
    /// Copies handed to subscribers' `Rtc`s since they were last driven (see
    /// [`Sfu::undriven_copies`]).
    undriven_copies: usize,
    /// Participants that may need an SDP offer from the relay.
    to_negotiate: Vec<Slot>,
    /// Rooms where a viewer's line lost its track: bound again at the next flush.
    rebind: Vec<RoomKey>,
    /// Every participant's next deadline.
    timers: Timers,
    transmits: VecDeque<Transmit>,
    /// Arrival time of each forwarded copy not yet polled out of its subscriber's `Rtc`, by
    /// (subscriber, outgoing SSRC, sequence number): the copy leaves when str0m's pacer lets it.
    forwarded_at: FxHashMap<(Slot, u32, u16), Instant>,
    /// When `forwarded_at` was last purged of copies older than the horizon.
    forwarded_purge: Option<Instant>,
    /// The RTP datagram being handed to its sender's `Rtc`, when its SSRC has no place in the
    /// sender's table yet: it gets one if str0m authenticates the packet (see `forward`).
    new_ssrc: Option<(Slot, str0m::rtp::Ssrc)>,
    events: VecDeque<Event>,
    /// Packets of local tracks for other legs of their calls (see `trunk.rs`).
    trunk_out: VecDeque<TrunkPacket>,
    stats: SfuStats,
}

impl Sfu {
    /// A core for one worker socket. `seed` feeds every random choice the core makes (ICE
    /// credentials); pass OS randomness in production and a constant in tests.
    pub fn new(config: SfuConfig, seed: [u8; 32]) -> Self {
        Sfu {
            config,
            rng: StdRng::from_seed(seed),
            crypto: Arc::new(str0m::crypto::from_feature_flags()),
            participants: Slab::new(),
            by_id: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_addr: HashMap::new(),
            by_tcp_addr: HashMap::new(),
            rooms: BTreeMap::new(),
            tracks: HashMap::new(),
            subs: Subscriptions::new(),
            dirty: Vec::new(),
            undriven_copies: 0,
            to_negotiate: Vec::new(),
            rebind: Vec::new(),
            timers: Timers::new(),
            transmits: VecDeque::new(),
            forwarded_at: FxHashMap::default(),
            forwarded_purge: None,
            new_ssrc: None,
            events: VecDeque::new(),
            trunk_out: VecDeque::new(),
            stats: SfuStats::default(),
        }
    }

    /// The configuration this core runs with.
    pub fn config(&self) -> &SfuConfig {
        &self.config
    }

    /// Drop counters, forwarding counters and work counters since creation.
    pub fn stats(&self) -> SfuStats {
        self.stats
    }

    /// Next datagram to send, if any.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Next event for the signaling layer, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

/// Runs `f`, turning a panic into `None`. A bug inside one participant's `Rtc` must cost
/// that participant only (THREATS 30); the caller removes it. The `Rtc` is dropped right after
/// a panic, so no broken invariant is observed again.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sfu_can_move_to_a_worker_thread() {
        fn assert_send<T: Send>() {}
        assert_send::<Sfu>();
    }
}
